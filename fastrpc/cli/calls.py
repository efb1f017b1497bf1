"""``fastrpc call``, ``fastrpc list`` and ``fastrpc health``: one call each,
made with the blocking :class:`fastrpc.Client`."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

import fastrpc

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    call_arguments,
    check_method,
    dumps,
    open_client,
    rpc_failure,
    seconds_or_none,
)

HEALTH = "fastrpc.Health.check"
REFLECTION = "fastrpc.Reflection.methods"


def call(args: Any) -> int:
    """``fastrpc call TARGET Service.method ARGS...``: print the result as JSON."""
    check_method(args.method)
    positional, keywords, metadata = call_arguments(args)
    timeout = seconds_or_none(args.timeout)
    client = open_client(args.target, args.connect_timeout, timeout)
    try:
        try:
            result = client.call(args.method, *positional, timeout=timeout, metadata=metadata, **keywords)
        except fastrpc.RpcError as exc:
            raise rpc_failure(exc, args.method, client.methods, args.target) from None
    finally:
        client.close()
    print(dumps(result, compact=args.compact, bytes_as=args.bytes))
    return EXIT_OK


# --------------------------------------------------------------------------
# list


def methods_of(args: Any) -> List[Dict[str, Any]]:
    """The server's methods, from reflection (or from its handshake's method
    table, names only, when it does not serve reflection)."""
    timeout = seconds_or_none(args.timeout)
    client = open_client(args.target, args.connect_timeout, timeout)
    try:
        try:
            return list(client.call(REFLECTION, timeout=timeout))
        except fastrpc.NotFound:
            names = client.methods
            if not names:
                raise
            print(
                "fastrpc: note: the server does not serve reflection (Server(builtins=False)); "
                "method names from its handshake only",
                file=sys.stderr,
            )
            return [{"name": n, "kind": "", "signature": "", "doc": "", "idempotent": False} for n in names]
        except fastrpc.RpcError as exc:
            raise rpc_failure(exc, REFLECTION, [], args.target) from None
    finally:
        client.close()


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        # the last column is not padded (no trailing spaces)
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1])] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def list_methods(args: Any) -> int:
    """``fastrpc list TARGET``: methods, how they run, signatures, docs."""
    methods = methods_of(args)
    if not args.all:
        methods = [m for m in methods if not str(m.get("name", "")).startswith("fastrpc.")]
    if args.json:
        print(json.dumps(methods, indent=2))
        return EXIT_OK
    if not methods:
        print("(no methods; --all shows the built-in ones)")
        return EXIT_OK
    rows = [
        [
            str(m.get("name", "")),
            str(m.get("kind", "")) + (", idempotent" if m.get("idempotent") else ""),
            str(m.get("signature", "")),
            str(m.get("doc", "")),
        ]
        for m in methods
    ]
    print(_table(rows, ["METHOD", "KIND", "SIGNATURE", "DESCRIPTION"]))
    return EXIT_OK


# --------------------------------------------------------------------------
# health


def health(args: Any) -> int:
    """``fastrpc health TARGET [SERVICE]``: SERVING (exit 0) or not (exit 1)."""
    timeout = seconds_or_none(args.timeout)
    client = open_client(args.target, args.connect_timeout, timeout)
    try:
        try:
            status = client.call(HEALTH, args.service, timeout=timeout)
        except fastrpc.NotFound as exc:
            if HEALTH in client.methods:
                raise rpc_failure(exc, HEALTH, [], args.target) from None
            raise CliError(
                "the server does not serve the health service (it runs with Server(builtins=False))", EXIT_FAILED
            ) from None
        except fastrpc.RpcError as exc:
            raise rpc_failure(exc, HEALTH, [], args.target) from None
    finally:
        client.close()
    if args.json:
        print(json.dumps({"target": args.target, "service": args.service, "status": status}))
    else:
        print(status)
    return EXIT_OK if status == "SERVING" else EXIT_FAILED
