"""What the client commands share: arguments from the command line,
results to JSON, clients that fail with one line, error reports.

Exit codes (``docs/cli.md``): 0 success; 1 the call failed (an
:class:`~fastrpc.RpcError`, a service that is not serving, a benchmark
whose calls all failed); 2 a usage error, a bad or unreachable target, a
``MODULE:OBJECT`` that cannot be loaded, an address that cannot be bound;
130 interrupted (Ctrl+C).
"""

from __future__ import annotations

import base64
import difflib
import json
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import fastrpc

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: keyword names ``Client.call`` keeps for itself: they cannot reach a handler
RESERVED_KEYWORDS = ("method", "timeout", "metadata", "retry", "hedge", "compress")


class CliError(Exception):
    """A failure reported as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint


def report(message: str, hint: str = "") -> None:
    """``fastrpc: error: MESSAGE`` (and ``hint: ...``) on stderr."""
    print(f"fastrpc: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


# --------------------------------------------------------------------------
# arguments


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses as JSON, else the text
    itself as a string (``42`` is a number, ``'"42"'`` the string, ``ada``
    the string ``"ada"``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(items: Optional[Iterable[str]], option: str, json_values: bool) -> Dict[str, Any]:
    """``name=value`` pairs of a repeatable option, in order."""
    out: Dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"{option} {item!r}: expected NAME=VALUE")
        out[name] = parse_value(value) if json_values else value
    return out


def call_arguments(args: Any) -> Tuple[List[Any], Dict[str, Any], Optional[Dict[str, str]]]:
    """Positional arguments, keyword arguments and metadata of ``call`` and
    ``bench`` (``ARGS...``, ``--kw``, ``--meta``)."""
    positional = [parse_value(a) for a in args.args]
    keywords = parse_pairs(args.kw, "--kw", True)
    clash = sorted(set(keywords) & set(RESERVED_KEYWORDS))
    if clash:
        raise CliError(
            f"--kw {clash[0]}=...: the client keeps the keyword {clash[0]!r} for itself "
            f"(reserved: {', '.join(RESERVED_KEYWORDS)}); pass it positionally"
        )
    metadata = parse_pairs(args.meta, "--meta", False)
    return positional, keywords, metadata or None


def seconds_or_none(value: Optional[float]) -> Optional[float]:
    """A ``--timeout``: 0 (or less) means no deadline."""
    if value is None or value <= 0:
        return None
    return value


def check_method(method: str) -> None:
    service, dot, name = method.rpartition(".")
    if not dot or not service or not name:
        raise CliError(f"method {method!r}: expected Service.method (for instance Arith.multiply)")


# --------------------------------------------------------------------------
# results


def to_json(value: Any, bytes_as: str = "base64") -> Any:
    """``value`` (a decoded result) as something :func:`json.dumps` takes:
    ``bytes`` as base64 (or hex, or their repr), map keys as strings,
    tuples as lists, anything else JSON cannot say as its ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if bytes_as == "hex":
            return raw.hex()
        if bytes_as == "repr":
            return repr(raw)
        return base64.b64encode(raw).decode("ascii")
    if isinstance(value, fastrpc.ExtType):
        return repr(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = to_json(k, bytes_as)
            out[key if isinstance(key, str) else json.dumps(key)] = to_json(v, bytes_as)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v, bytes_as) for v in value]
    return repr(value)


def dumps(value: Any, compact: bool = False, bytes_as: str = "base64") -> str:
    value = to_json(value, bytes_as)
    if compact:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False, indent=2)


# --------------------------------------------------------------------------
# clients and errors


def open_client(target: str, connect_timeout: float, timeout: Optional[float]) -> Any:
    """A connected :class:`fastrpc.Client` for ``target``, or a
    :class:`CliError` (exit 2) saying in one line why there is none."""
    try:
        return fastrpc.Client(target, connect_timeout=connect_timeout, timeout=timeout)
    except (ValueError, TypeError) as exc:
        raise CliError(f"bad target {target!r}: {exc}", hint=TARGET_FORMS) from None
    except ImportError as exc:
        raise CliError(f"target {target!r} needs an optional dependency: {exc}") from None
    except fastrpc.RpcError as exc:
        raise CliError(f"cannot reach {target}: {exc.message or exc}") from None
    except OSError as exc:
        raise CliError(f"cannot reach {target}: {exc.strerror or exc}") from None


TARGET_FORMS = "a target is HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT, unix:/PATH, a comma-separated list, dns:///NAME:PORT or etcd://HOST:PORT/NAME"


def method_hint(method: str, methods: List[str], target: str) -> str:
    """The hint after an unknown method: the closest names the server has
    (the service's own methods first, when the service exists)."""
    public = [m for m in methods if not m.startswith("fastrpc.")] or list(methods)
    service, _, name = method.rpartition(".")
    siblings = {m.rpartition(".")[2]: m for m in methods if m.rpartition(".")[0] == service}
    if siblings:
        close = [siblings[n] for n in difflib.get_close_matches(name, list(siblings), n=3, cutoff=0.6)]
    else:
        close = difflib.get_close_matches(method, methods, n=3, cutoff=0.7)
        if not close:
            # the same method under another service
            close = [m for m in public if m.rpartition(".")[2] == name][:3]
    if close:
        return "did you mean " + " or ".join(close) + "?"
    if public:
        shown = ", ".join(public[:8]) + (", ..." if len(public) > 8 else "")
        return f"the server has {shown} (fastrpc list {target})"
    return f"fastrpc list {target} lists the server's methods"


def rpc_failure(exc: Any, method: str, methods: List[str], target: str) -> CliError:
    """A call's :class:`~fastrpc.RpcError` as a :class:`CliError` (exit 1):
    ``CODE: message``, the details, and for an unknown method the closest
    names the server has."""
    name = fastrpc.code_name(exc.code)
    text = f"{name}: {exc.message}" if exc.message else name
    if exc.details is not None:
        text += f"\ndetails: {dumps(exc.details, compact=True)}"
    hint = ""
    if exc.code == fastrpc.StatusCode.NOT_FOUND and methods and method not in methods:
        hint = method_hint(method, methods, target)
    return CliError(text, EXIT_FAILED, hint)


__all__ = [
    "CliError",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "call_arguments",
    "dumps",
    "open_client",
    "parse_value",
    "report",
    "rpc_failure",
    "to_json",
]
