"""The ``fastrpc`` command line (also ``python -m fastrpc``): the top layer,
a user of the public API only."""

from __future__ import annotations

import argparse
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``fastrpc`` command."""
    parser = argparse.ArgumentParser(prog="fastrpc", description="fastrpc command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a server and clients on loopback and print a short benchmark table")
    demo.add_argument("--duration", type=float, default=1.0, help="seconds per measurement (default 1)")
    demo.add_argument(
        "--impl",
        choices=["both", "cython", "python"],
        default="both",
        help="wire implementation(s) to measure (default: every one available)",
    )
    demo.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import demo as run_demo

        impls = None if args.impl == "both" else [args.impl]
        return run_demo(args.duration, impls, args.json)
    return 2  # pragma: no cover - argparse requires a command

