"""What hedging does to tail latency when one of two servers is sometimes slow.

Usage::

    python -m benchmarks.hedging            # full run (~1 min)
    python -m benchmarks.hedging --quick    # CI smoke run

Two server processes on loopback serve ``Svc.get`` (idempotent); one of
them adds 50 ms to 10% of its calls (drawn at random), so 5% of all calls
are slow.  A ``Pool`` over both (one connection each, round robin) makes
the same calls, a few at a time, in rounds that alternate between the
policies compared (no hedging, and hedging with each delay), so that every
policy sees the same machine.  For each: p50, p99 and p99.9 latency, and
the extra calls hedging sent (attempts beyond the first, per call).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import fastrpc

from benchmarks.harness import Running, Server, _py

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


class Svc:
    def __init__(self, slow_fraction: float, slow_seconds: float, seed: int) -> None:
        self.slow_fraction = slow_fraction
        self.slow_seconds = slow_seconds
        self.rng = random.Random(seed)
        self.calls = 0

    @fastrpc.idempotent
    async def get(self, value: int) -> int:
        self.calls += 1
        if self.slow_fraction and self.rng.random() < self.slow_fraction:
            await asyncio.sleep(self.slow_seconds)
        return value

    def count(self) -> int:
        return self.calls


def serve(slow_fraction: float, port: int) -> None:
    """The server process (``harness.Running``'s protocol): says ``READY
    <address>``, serves until stdin closes."""

    async def main() -> None:
        server = fastrpc.Server()
        server.register(Svc(slow_fraction, 0.05, os.getpid()), "Svc")
        address = await server.start(f"tcp://127.0.0.1:{port}")
        print("READY", address, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await server.shutdown(grace=0)

    if uvloop is not None:
        uvloop.install()
    asyncio.run(main())


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100.0))]


async def _round(pool: fastrpc.Pool, n: int, concurrency: int, hedge: Optional[fastrpc.HedgePolicy]) -> List[float]:
    latencies: List[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            if hedge is None:
                await pool.call("Svc.get", i)
            else:
                await pool.call("Svc.get", i, hedge=hedge)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(addresses: List[str], policies: List[Tuple[str, Optional[fastrpc.HedgePolicy]]], n: int, rounds: int, concurrency: int) -> Dict[str, Any]:
    results: Dict[str, Any] = {name: {"latencies": [], "calls": 0, "extra": 0} for name, _ in policies}
    pools = {}
    for name, policy in policies:
        pool = fastrpc.Pool(addresses, size=1)
        await pool.start()
        while pool.connected < pool.size:
            await asyncio.sleep(0.01)
        pools[name] = pool
        # Warm up (and, for a percentile delay, learn the latencies).
        await _round(pool, 200, concurrency, policy)
        pool.hedge_stats.calls = pool.hedge_stats.extra = pool.hedge_stats.won = 0
    for _ in range(rounds):
        for name, policy in policies:
            pool = pools[name]
            results[name]["latencies"] += await _round(pool, n // rounds, concurrency, policy)
    for name, _ in policies:
        stats = pools[name].hedge_stats
        results[name]["calls"] = len(results[name]["latencies"])
        results[name]["extra"] = stats.extra
        results[name]["won"] = stats.won
        await pools[name].close()
    return results


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls (CI smoke run)")
    ap.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port)
        return 0
    n, rounds = (600, 3) if args.quick else (8000, 8)
    concurrency = 4
    procs: List[Running] = []
    try:
        for slow in (0.10, 0.0):
            procs.append(Running(Server(f"slow {slow}", _py("benchmarks.hedging", "--serve", str(slow)))))
        addresses = [p.address for p in procs]
        policies: List[Tuple[str, Optional[fastrpc.HedgePolicy]]] = [
            ("no hedging", None),
            ("hedge p95", fastrpc.HedgePolicy(delay="p95")),
            ("hedge p90", fastrpc.HedgePolicy(delay="p90")),
            ("hedge 5 ms", fastrpc.HedgePolicy(delay=0.005)),
        ]
        loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        try:
            results = loop.run_until_complete(measure(addresses, policies, n, rounds, concurrency))
        finally:
            loop.close()
    finally:
        for proc in procs:
            proc.stop()
    print(f"hedging: 2 servers, one adds 50 ms to 10% of its calls; Pool round robin, {concurrency} calls at a time, "
          f"{n:,} calls per policy in {rounds} alternating rounds ({fastrpc.IMPLEMENTATION} build)")
    print(f"{'policy':<12}{'p50':>10}{'p99':>10}{'p99.9':>10}{'extra calls':>14}{'hedge won':>12}")
    base = results["no hedging"]["latencies"]
    for name, _ in policies:
        r = results[name]
        lat = r["latencies"]
        print(
            f"{name:<12}{_percentile(lat, 50) * 1e3:>8.2f}ms{_percentile(lat, 99) * 1e3:>8.2f}ms"
            f"{_percentile(lat, 99.9) * 1e3:>8.2f}ms{r['extra'] / max(1, r['calls']):>13.1%}{r['won']:>12,}"
        )
    print(f"(p99 with hedging p95 / without: {_percentile(results['hedge p95']['latencies'], 99) / _percentile(base, 99):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
