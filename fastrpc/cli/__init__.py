"""The ``fastrpc`` command line (also ``python -m fastrpc``): the top layer,
a user of the public API only.

Commands (``docs/cli.md``): ``serve``, ``call``, ``list``, ``health``,
``bench`` and ``demo``.  Exit codes: 0 success; 1 a call failed (an
RpcError), a service is not serving, or a benchmark made no successful
call; 2 a usage error, a bad or unreachable target, a ``MODULE:OBJECT``
that cannot be served, an address that cannot be bound; 130 Ctrl+C.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

EPILOG = """\
targets: HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT, unix:/PATH, a comma-separated
list of those, dns:///NAME:PORT or etcd://HOST:PORT/NAME.
exit codes: 0 ok; 1 the call failed / not serving; 2 usage, bad or unreachable target; 130 interrupted.
see docs/cli.md for every command with examples."""


def _call_options(p: argparse.ArgumentParser, timeout: float = 10.0) -> None:
    p.add_argument("--timeout", type=float, default=timeout, metavar="S",
                   help=f"deadline of each call in seconds, enforced by the server too (default {timeout:g}; 0: none)")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="limit for connecting and the handshake (default 5)")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="ARG",
                   help="positional arguments: each a JSON value; text that is not valid JSON is a string")
    p.add_argument("--kw", action="append", metavar="NAME=JSON", help="a keyword argument (repeatable)")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE", help="call metadata, a string value (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    import fastrpc

    parser = argparse.ArgumentParser(
        prog="fastrpc",
        description="fastrpc command line",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fastrpc {fastrpc.__version__} ({fastrpc.IMPLEMENTATION})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # serve ------------------------------------------------------------------
    from .serve import DEFAULT_BIND, DEFAULT_METRICS

    p = sub.add_parser(
        "serve",
        help="serve MODULE:OBJECT until SIGINT/SIGTERM",
        description="Import OBJECT from MODULE (the app directory first on sys.path) and serve it: "
        "a fastrpc.Server as it is; a class instantiated with no arguments and registered; a function "
        "called with no arguments, returning a Server or a service object; any other object registered "
        "(its public methods become Service.method).",
    )
    p.add_argument("app", metavar="MODULE:OBJECT", help="for instance myapp.services:Arith")
    p.add_argument("--bind", "-b", action="append", metavar="ADDR",
                   help=f"address to listen on, repeatable (default {DEFAULT_BIND}; port 0 picks a free one)")
    p.add_argument("--workers", "-w", type=int, default=1, metavar="N",
                   help="serve from N forked processes sharing the port (default 1; 0: one per CPU)")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="seconds calls in flight get to finish after SIGTERM (default 5)")
    p.add_argument("--service", metavar="NAME", help="service name for a class or object (default: its class name)")
    p.add_argument("--registry", metavar="URL", help="register with this registry while serving (etcd://HOST:PORT)")
    p.add_argument("--name", metavar="NAME", help="the name the registry lists the server under (needs --registry)")
    p.add_argument("--version", dest="version", default="", metavar="V", help="the registry record's version")
    p.add_argument("--weight", type=int, default=1, metavar="W", help="the registry record's weight (default 1)")
    p.add_argument("--access-log", action="store_true", help="log every call on stderr (fastrpc.access, INFO)")
    p.add_argument("--metrics", nargs="?", const=DEFAULT_METRICS, metavar="ADDR",
                   help=f"serve Prometheus metrics at http://ADDR/metrics (default ADDR {DEFAULT_METRICS}; "
                   "needs prometheus-client; only with --workers 1)")
    p.add_argument("--debug", action="store_true", help="send handler tracebacks to callers in UNKNOWN errors")
    p.add_argument("--app-dir", default=".", metavar="DIR", help="put DIR first on sys.path (default: the current directory)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="level of fastrpc's log on stderr (default warning)")

    # call ---------------------------------------------------------------------
    p = sub.add_parser("call", help="call a method and print its result as JSON",
                       description="Call Service.method on TARGET and print the result as JSON.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("method", metavar="Service.method")
    _arguments(p)
    _call_options(p)
    p.add_argument("--compact", action="store_true", help="print the result on one line")
    p.add_argument("--bytes", choices=["base64", "hex", "repr"], default="base64",
                   help="how bytes in the result are printed (default base64)")

    # list ---------------------------------------------------------------------
    p = sub.add_parser("list", help="list a server's methods (reflection)",
                       description="List the methods TARGET serves: name, how it runs, signature, docstring.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--all", action="store_true", help="include the built-in fastrpc.* methods")
    _call_options(p)

    # health -------------------------------------------------------------------
    p = sub.add_parser("health", help="check a server's (or a service's) health",
                       description="Print SERVING, NOT_SERVING or SERVICE_UNKNOWN; exit 0 only when SERVING.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("service", nargs="?", default="", metavar="SERVICE", help="a service name (default: the whole server)")
    p.add_argument("--json", action="store_true", help='print {"target", "service", "status"}')
    _call_options(p, timeout=5.0)

    # bench --------------------------------------------------------------------
    p = sub.add_parser("bench", help="load a method and report calls/s, latency percentiles and a histogram",
                       description="Call Service.method from --concurrency tasks over --connections AsyncClients "
                       "for --duration seconds after --warmup, and report calls/s, latency percentiles, errors "
                       "and a latency histogram.")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("method", metavar="Service.method")
    _arguments(p)
    p.add_argument("--connections", "-c", type=int, default=1, metavar="C", help="client connections (default 1)")
    p.add_argument("--concurrency", "-n", type=int, default=16, metavar="N",
                   help="calls in flight, spread over the connections (default 16)")
    p.add_argument("--duration", "-d", type=float, default=5.0, metavar="S", help="seconds measured (default 5)")
    p.add_argument("--warmup", type=float, default=0.5, metavar="S", help="seconds of warm-up not counted (default 0.5)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the report")
    p.add_argument("--progress", action="store_true", default=None,
                   help="draw the progress bar on stderr even when it is not a terminal")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="never draw the progress bar")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop (default auto: uvloop when installed)")
    _call_options(p)

    # demo (unchanged) -------------------------------------------------------------
    demo = sub.add_parser("demo", help="run a server and clients on loopback and print a short benchmark table")
    demo.add_argument("--duration", type=float, default=1.0, help="seconds per measurement (default 1)")
    demo.add_argument(
        "--impl",
        choices=["both", "cython", "python"],
        default="both",
        help="wire implementation(s) to measure (default: every one available)",
    )
    demo.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``fastrpc`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import demo as run_demo

        impls = None if args.impl == "both" else [args.impl]
        return run_demo(args.duration, impls, args.json)

    from .common import EXIT_INTERRUPTED, CliError, report

    try:
        if args.command == "serve":
            from .serve import serve

            return serve(args)
        if args.command == "call":
            from .calls import call

            return call(args)
        if args.command == "list":
            from .calls import list_methods

            return list_methods(args)
        if args.command == "health":
            from .calls import health

            return health(args)
        if args.command == "bench":
            from .bench import bench

            return bench(args)
    except CliError as exc:
        report(exc.message, exc.hint)
        return exc.code
    except KeyboardInterrupt:
        print("fastrpc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (| head): no traceback, and nothing more to flush
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 2  # pragma: no cover - argparse requires a command
