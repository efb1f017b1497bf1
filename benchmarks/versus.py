"""Two systems of the benchmark table head to head, on one workload.

Usage::

    python -m benchmarks.versus "fastrpc pure Python: Client (sync)" "aiorpc (msgpack-rpc)"
    python -m benchmarks.versus A B --workload payload --pairs 30

The table compares every system with its floor, so comparing two systems
there means comparing two noisy medians.  When two systems are close (within
the few microseconds by which this machine's W1 p50 moves from one run to
the next), this settles which is ahead: it runs A and B alternately (A
first in even pairs, B first in odd ones, so that whatever favours the first
or second of two runs cancels out), with each system's server up for the
whole run, and reports the median per-pair difference of p50 and ratio of
throughput, each with a bootstrap 90% interval, and how many pairs A won.
System names are the table's (``python -m benchmarks.harness --help`` lists
the workloads; the names are the rows of ``benchmarks/results/table.txt``).

``--baseline DIR`` adds every fastrpc system of another checkout (an older
commit, extensions built in place), named ``baseline <name>``: a change is
measured against the code before it, in the same run::

    git worktree add /tmp/before HEAD~3 && (cd /tmp/before && python setup.py build_ext --inplace)
    python -m benchmarks.versus "fastrpc Cython: Client (sync)" "baseline fastrpc Cython: Client (sync)" --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.harness import WORKLOADS, Running, Server, System, _env, build_servers, run_client

#: bootstrap resamples for the intervals
RESAMPLES = 4000


def interval(values: Sequence[float], seed: int = 1) -> Tuple[float, float, float]:
    """(median, low, high): the median and its bootstrap 90% interval."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(RESAMPLES))
    return statistics.median(values), meds[int(RESAMPLES * 0.05)], meds[int(RESAMPLES * 0.95) - 1]


def baseline_servers(root: str) -> List[Server]:
    """The fastrpc servers and systems of the checkout at ``root``, renamed
    ``baseline <name>``: their processes run that checkout's code."""
    out = []
    for server in build_servers():
        if not server.speaks_fastrpc:
            continue
        env = _env("FASTRPC_NO_EXTENSIONS" in (server.env or {}), root)
        copy = Server(f"baseline-{server.key}", server.argv, env, speaks_fastrpc=True)
        copy.cwd = root
        copy.clients = [System(f"baseline {c.name}", c.argv, c.workloads, c.floor) for c in server.clients]
        out.append(copy)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="a system name from the table")
    ap.add_argument("b", help="another system name from the table")
    ap.add_argument(
        "--workload", default="seq", choices=WORKLOADS, help="seq (W1, default), pipelined (W2), payload (W3) or fanin (W4)"
    )
    ap.add_argument("--pairs", type=int, default=30, help="runs of each system (default 30)")
    ap.add_argument("--duration", type=float, default=0.4, help="seconds per run (default 0.4)")
    ap.add_argument("--baseline", metavar="DIR", help="another fastrpc checkout whose systems join as 'baseline <name>'")
    args = ap.parse_args(argv)
    if args.pairs < 2:
        ap.error("--pairs must be at least 2")

    servers = build_servers()
    if args.baseline:
        servers += baseline_servers(os.path.abspath(args.baseline))
    found: Dict[str, Any] = {}
    for server in servers:
        for system in server.clients:
            if system.name in (args.a, args.b):
                found[system.name] = (server, system)
    missing = [n for n in (args.a, args.b) if n not in found]
    if missing:
        names = [c.name for s in servers for c in s.clients]
        ap.error(f"unknown system(s) {missing}; choose from: {names}")
    for name in (args.a, args.b):
        if args.workload not in found[name][1].workloads:
            ap.error(f"{name} does not run the {args.workload} workload")

    live: Dict[str, Running] = {}
    diffs: List[float] = []
    ratios: List[float] = []
    key = "mb_per_s" if args.workload == "payload" else "calls_per_s"
    try:
        for name in (args.a, args.b):
            server = found[name][0]
            if server.key not in live:
                live[server.key] = Running(server)

        def one(name: str) -> Dict[str, Any]:
            server, system = found[name]
            result = run_client(system, live[server.key], args.workload, args.duration, server.env or _env(False))
            if result.get("error") or not result.get("calls"):
                raise RuntimeError(f"{name}: {result.get('error') or 'no calls'}")
            return result

        for k in range(args.pairs):
            if k % 2 == 0:
                ra, rb = one(args.a), one(args.b)
            else:
                rb = one(args.b)
                ra = one(args.a)
            diffs.append(ra["p50_us"] - rb["p50_us"])
            ratios.append(ra[key] / rb[key])
    finally:
        for running in live.values():
            running.stop()

    unit = "MB/s" if key == "mb_per_s" else "calls/s"
    d, dlo, dhi = interval(diffs)
    r, rlo, rhi = interval(ratios)
    wins = sum(1 for x in diffs if x < 0)
    print(f"{args.a} vs {args.b}, {args.workload}, {args.pairs} pairs of {args.duration}s runs:")
    print(f"  p50 difference (A - B): {d:+.2f} us (90% interval {dlo:+.2f} to {dhi:+.2f})")
    print(f"  {unit} ratio (A / B): {r:.3f}x (90% interval {rlo:.3f}x to {rhi:.3f}x)")
    print(f"  A had the lower p50 in {wins} of {args.pairs} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
