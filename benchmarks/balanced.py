"""What balancing costs and does: W2 through a client over three servers
against W2 to one server directly, and how calls spread when one server
is slow.

Usage::

    python -m benchmarks.balanced            # full run (~1 min)
    python -m benchmarks.balanced --quick    # CI smoke run (~10 s)
    python -m benchmarks.balanced --pure     # the pure-Python build

Part 1, cost: three fastrpc server processes on loopback
(``benchmarks.peers.fastrpc_peer``).  W2 (64 calls in flight, each task
calling ``Bench.add`` in a loop) runs through an ``AsyncClient`` to the
first server, and through ``AsyncClient([three servers])`` with each
balancer; rounds alternate between the clients so that every ratio
compares figures taken seconds apart.  Reported: the median calls/s and
the ratio to the direct client (the issue asks >= 0.9x).

Part 2, behaviour: three in-process servers of which one takes 5 ms more
per call; 8 callers at a time through ``round_robin`` and ``p2c``; the
slow server's share of the calls.

Pick costs alone (no I/O): ``python -m benchmarks.balancing``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import time
from typing import Any, Dict, List

from benchmarks.harness import Running, Server, _env, _py

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None

IN_FLIGHT = 64
CLIENTS = ("direct", "round_robin", "p2c", "random", "weighted", "consistent_hash")


async def _w2(client: Any, seconds: float) -> float:
    # 64 tasks, each calling in a loop until the time is up: calls/s.
    stop = time.monotonic() + seconds
    done = 0

    async def task() -> None:
        nonlocal done
        add = client.call
        n = 0
        while time.monotonic() < stop:
            await add("Bench.add", n, 1)
            n += 1
        done += n

    start = time.monotonic()
    await asyncio.gather(*(task() for _ in range(IN_FLIGHT)))
    return done / (time.monotonic() - start)


async def cost(addresses: List[str], rounds: int, seconds: float) -> Dict[str, List[float]]:
    import fastrpc

    clients: Dict[str, Any] = {}
    for name in CLIENTS:
        if name == "direct":
            clients[name] = fastrpc.AsyncClient(addresses[0])
        else:
            clients[name] = fastrpc.AsyncClient(addresses, balancer=name)
        await clients[name].connect()
        if name != "direct":
            while clients[name].pool.connected < 3:
                await asyncio.sleep(0.01)
        await _w2(clients[name], seconds / 2)  # warm up
    rates: Dict[str, List[float]] = {name: [] for name in CLIENTS}
    for r in range(rounds):
        order = CLIENTS if r % 2 == 0 else tuple(reversed(CLIENTS))
        for name in order:
            rates[name].append(await _w2(clients[name], seconds))
    for client in clients.values():
        await client.close()
    return rates


class Who:
    def __init__(self, name: str, delay: float) -> None:
        self.name = name
        self.delay = delay

    async def who(self) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.name


async def spread(calls: int) -> Dict[str, Dict[str, float]]:
    import fastrpc

    servers, addresses = [], []
    for i, delay in enumerate((0.0, 0.0, 0.005)):
        server = fastrpc.Server()
        server.register(Who(f"s{i}", delay), name="Who")
        addresses.append(await server.start("127.0.0.1:0"))
        servers.append(server)
    out = {}
    try:
        for balancer in ("round_robin", "p2c"):
            got: collections.Counter = collections.Counter()
            async with fastrpc.AsyncClient(addresses, balancer=balancer) as client:

                async def caller(n: int) -> None:
                    for _ in range(n):
                        got[await client.call("Who.who")] += 1

                start = time.monotonic()
                await asyncio.gather(*(caller(calls // 8) for _ in range(8)))
                elapsed = time.monotonic() - start
            total = sum(got.values())
            out[balancer] = {"slow share": got["s2"] / total, "fast share": (got["s0"] + got["s1"]) / 2 / total, "calls/s": total / elapsed}
    finally:
        for server in servers:
            await server.shutdown(grace=0.5)
    return out


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (CI smoke run)")
    ap.add_argument("--pure", action="store_true", help="measure the pure-Python build")
    args = ap.parse_args(argv)
    if args.pure:
        os.environ["FASTRPC_NO_EXTENSIONS"] = "1"
    import fastrpc

    rounds, seconds, calls = (3, 0.4, 1200) if args.quick else (9, 1.0, 6000)
    procs: List[Running] = []
    try:
        for i in range(3):
            procs.append(Running(Server(f"fastrpc {i}", _py("benchmarks.peers.fastrpc_peer", "server"), _env(args.pure))))
        loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        try:
            rates = loop.run_until_complete(cost([p.address for p in procs], rounds, seconds))
            behaviour = loop.run_until_complete(spread(calls))
        finally:
            loop.close()
    finally:
        for proc in procs:
            proc.stop()
    print(f"balanced W2 ({IN_FLIGHT} in flight), 3 server processes, {rounds} alternating rounds of {seconds} s ({fastrpc.IMPLEMENTATION} build)")
    print(f"{'client':<34}{'calls/s':>12}{'vs direct':>12}")
    base = statistics.median(rates["direct"])
    for name in CLIENTS:
        rate = statistics.median(rates[name])
        label = "AsyncClient(one server)" if name == "direct" else f"AsyncClient(3 servers, {name})"
        print(f"{label:<34}{rate:>12,.0f}{rate / base:>11.2f}x")
    print(f"\none of 3 servers 5 ms slower, 8 callers, {calls:,} calls each")
    print(f"{'balancer':<14}{'slow share':>12}{'each fast':>12}{'fast/slow':>12}")
    for name, r in behaviour.items():
        print(f"{name:<14}{r['slow share']:>12.1%}{r['fast share']:>12.1%}{r['fast share'] / max(r['slow share'], 1e-9):>11.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
