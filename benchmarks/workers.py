"""W4 (fan-in: 8 connections x 16 calls in flight) against ``Server.run(workers=1)``
and ``Server.run(workers=2)``.

Usage::

    python -m benchmarks.workers            # 7 runs of 2 s per server
    python -m benchmarks.workers --quick    # 3 runs of 1 s (under 20 s)
    python -m benchmarks.workers --pure     # the pure-Python build

Both servers stay up for the whole measurement and the runs alternate
(workers=1 first in even rounds, workers=2 first in odd ones), so that the
ratio compares figures taken seconds apart.  The client is the benchmark
table's fastrpc AsyncClient (``benchmarks.peers.fastrpc_peer``), one
process with 8 connections; it runs on the same cores as the servers, so
on a machine with few cores it takes CPU the workers would use: read the
ratio with the core count printed beside it.

The module is also the server: ``python -m benchmarks.workers serve
--workers N --port 0`` prints ``READY 127.0.0.1:PORT`` once every worker
listens and stops on SIGTERM or when its stdin closes (the contract of
``benchmarks/peers/README.md``, so that the harness starts and stops it).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import time

from benchmarks.harness import Running, Server, System, _env, _py, run_client

WORKERS = (1, 2)


def serve(argv: list[str]) -> int:
    import fastrpc
    from benchmarks.peers import _common
    from benchmarks.peers.fastrpc_peer import Bench

    ap = argparse.ArgumentParser(prog="python -m benchmarks.workers serve")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    _common.setup_logging()

    def ready(addresses: list[str]) -> None:
        _common.print_ready(int(addresses[0].rsplit(":", 1)[1]))
        # Started here, after the workers are forked: no thread crosses a fork.
        _common.watch_stdin(lambda: os.kill(os.getpid(), signal.SIGTERM))

    server = fastrpc.Server()
    server.register(Bench())
    server.run(f"tcp://{_common.HOST}:{args.port}", workers=args.workers, grace=1, ready=ready)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 runs of 1 s per server (under 20 s)")
    ap.add_argument("--runs", type=int, default=7, help="runs per server (median; default 7)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per run (default 2)")
    ap.add_argument("--pure", action="store_true", help="the pure-Python build (FASTRPC_NO_EXTENSIONS=1) on both sides")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 3, 1.0

    env = _env(args.pure)
    build = "pure Python" if args.pure else "Cython"
    client = System(f"fastrpc {build}: AsyncClient", _py("benchmarks.peers.fastrpc_peer", "client", "--client", "async"))
    print(
        f"W4 fan-in (8 conns x 16 in flight), fastrpc {build}, {args.runs} runs x {args.duration:g}s per server; "
        f"{os.cpu_count()} CPUs shared by client and server; {platform.python_implementation()} {platform.python_version()}",
        flush=True,
    )
    started = time.monotonic()
    live: dict[int, Running] = {}
    rates: dict[int, list[float]] = {n: [] for n in WORKERS}
    ratios: list[float] = []
    try:
        for n in WORKERS:
            live[n] = Running(Server(f"workers-{n}", _py("benchmarks.workers", "serve", "--workers", str(n)), env))
        for k in range(args.runs):
            order = WORKERS if k % 2 == 0 else WORKERS[::-1]
            this: dict[int, float] = {}
            for n in order:
                result = run_client(client, live[n], "fanin", args.duration, env)
                if result.get("error") or not result.get("calls"):
                    raise RuntimeError(f"workers={n}: {result.get('error') or 'no calls'}")
                this[n] = result["calls_per_s"]
                rates[n].append(this[n])
            ratios.append(this[2] / this[1])
            print(f"  run {k + 1}: workers=1 {this[1]:,.0f} calls/s, workers=2 {this[2]:,.0f} calls/s", flush=True)
    finally:
        for running in live.values():
            running.stop()

    for n in WORKERS:
        med = statistics.median(rates[n])
        print(f"workers={n}: {med:,.0f} calls/s (median; min {min(rates[n]):,.0f}, max {max(rates[n]):,.0f})")
    print(
        f"ratio workers=2 / workers=1: {statistics.median(ratios):.2f}x "
        f"(median of per-round ratios; min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )
    print(f"({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
