"""Hedging: a late call sent again to another endpoint, the first answer
winning and the loser cancelled on its server; only idempotent methods;
fatal errors end the call; the deadline bounds it; the percentile delay."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List

import pytest

import fastrpc
from fastrpc.client.hedge import LatencyTracker


class Slowable:
    def __init__(self, name: str) -> None:
        self.name = name
        self.delay = 0.0
        self.started: List[str] = []
        self.cancelled = 0
        self.error: Any = None
        self.slow_first = 0  # the first N calls take `delay`, the rest are quick

    async def _run(self) -> str:
        self.started.append(self.name)
        slow = self.delay if (not self.slow_first or len(self.started) <= self.slow_first) else 0.0
        try:
            await asyncio.sleep(slow)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.name

    @fastrpc.idempotent
    async def get(self) -> str:
        return await self._run()

    async def put(self) -> str:
        return await self._run()


async def _servers(*svcs: Slowable) -> Any:
    out = []
    for svc in svcs:
        server = fastrpc.Server()
        server.register(svc, "S")
        out.append((server, await server.start("tcp://127.0.0.1:0")))
    return out


async def _ready(pool: fastrpc.Pool) -> None:
    for _ in range(500):
        if pool.connected == pool.size:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("pool not connected")


async def _eventually(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def test_pool_hedges_to_the_other_server_and_cancels_the_loser(run):
    async def main():
        slow, fast = Slowable("slow"), Slowable("fast")
        slow.delay = 5.0
        servers = await _servers(slow, fast)
        pool = fastrpc.Pool([a for _, a in servers], size=1, hedge={"S.get": fastrpc.HedgePolicy(delay=0.05, max_extra=None)})
        try:
            await pool.start()
            await _ready(pool)
            start = time.monotonic()
            results = [await pool.call("S.get") for _ in range(6)]
            assert time.monotonic() - start < 4.0  # nobody waited for the slow one
            assert results == ["fast"] * 6
            stats = pool.hedge_stats
            assert stats.calls == 6
            assert stats.extra == len(slow.started)  # a hedge for each call the slow server got first
            assert stats.won == stats.extra >= 1
            # Every losing attempt was cancelled on the slow server.
            await _eventually(lambda: slow.cancelled == len(slow.started))
        finally:
            await pool.close()
            for server, _ in servers:
                await server.shutdown(grace=0)

    run(main())


def test_non_idempotent_methods_are_not_hedged(run):
    async def main():
        slow, fast = Slowable("slow"), Slowable("fast")
        slow.delay = 0.3
        servers = await _servers(slow, fast)
        policy = fastrpc.HedgePolicy(delay=0.02, max_extra=None)
        pool = fastrpc.Pool([a for _, a in servers], size=1, hedge={"S.put": policy})
        try:
            await pool.start()
            await _ready(pool)
            results = [await pool.call("S.put") for _ in range(4)]
            assert sorted(results) == ["fast", "fast", "slow", "slow"]  # each ran once, where sent
            assert pool.hedge_stats.extra == 0 and slow.cancelled == 0
            # Unless the policy says so.
            unsafe = fastrpc.HedgePolicy(delay=0.02, max_extra=None, non_idempotent=True)
            results = [await pool.call("S.put", hedge=unsafe) for _ in range(4)]
            assert results == ["fast"] * 4
            assert pool.hedge_stats.extra >= 1
        finally:
            await pool.close()
            for server, _ in servers:
                await server.shutdown(grace=0)

    run(main())


def test_fatal_error_ends_the_call_and_retryable_one_hedges_at_once(run):
    async def main():
        a, b = Slowable("a"), Slowable("b")
        servers = await _servers(a, b)
        pool = fastrpc.Pool([x for _, x in servers], size=1)
        policy = fastrpc.HedgePolicy(delay=10.0, max_extra=None)  # only an error starts the next attempt
        try:
            await pool.start()
            await _ready(pool)
            a.error = b.error = fastrpc.NotFound("gone")
            with pytest.raises(fastrpc.NotFound):
                await pool.call("S.get", hedge=policy)
            assert len(a.started) + len(b.started) == 1  # no second attempt
            a.error = fastrpc.Unavailable("busy")
            b.error = None
            a.started.clear()
            b.started.clear()
            start = time.monotonic()
            for _ in range(2):  # one of the two calls goes to a first
                assert await pool.call("S.get", hedge=policy) == "b"
            assert time.monotonic() - start < 5.0  # without the 10 s delay
            assert len(a.started) == 1 and len(b.started) == 2
            # Every attempt failing: the last error.
            b.error = fastrpc.Unavailable("busy too")
            with pytest.raises(fastrpc.Unavailable):
                await pool.call("S.get", hedge=policy)
        finally:
            await pool.close()
            for server, _ in servers:
                await server.shutdown(grace=0)

    run(main())


def test_hedged_call_keeps_its_deadline(run):
    async def main():
        a, b = Slowable("a"), Slowable("b")
        a.delay = b.delay = 5.0
        servers = await _servers(a, b)
        pool = fastrpc.Pool([x for _, x in servers], size=1, hedge={"S.get": fastrpc.HedgePolicy(delay=0.05, max_extra=None, max_attempts=3)})
        try:
            await pool.start()
            await _ready(pool)
            start = time.monotonic()
            with pytest.raises(fastrpc.DeadlineExceeded):
                await pool.call("S.get", timeout=0.3)
            assert time.monotonic() - start < 3.0
            # Three attempts (the third back on one of the two servers), all
            # cancelled when the deadline passed.
            assert len(a.started) + len(b.started) == 3 and a.started and b.started
            await _eventually(lambda: a.cancelled + b.cancelled == 3)
        finally:
            await pool.close()
            for server, _ in servers:
                await server.shutdown(grace=0)

    run(main())


def test_async_client_hedges_on_its_connection(run):
    async def main():
        svc = Slowable("one")
        svc.delay, svc.slow_first = 5.0, 1  # the first call stalls, later ones do not
        [(server, address)] = await _servers(svc)
        try:
            async with fastrpc.AsyncClient(address, hedge={"S.get": fastrpc.HedgePolicy(delay=0.05, max_extra=None)}) as c:
                assert await asyncio.wait_for(c.call("S.get"), 3) == "one"
                assert c.hedge_stats.won == 1
                await _eventually(lambda: svc.cancelled == 1)
        finally:
            await server.shutdown(grace=0)

    run(main())


def test_extra_attempts_stay_within_budget(run):
    # Every call is late on one server: with max_extra=0.25 at most about a
    # quarter of the calls get a hedge (plus the starting token).
    async def main():
        slow, fast = Slowable("slow"), Slowable("fast")
        slow.delay = 0.1
        servers = await _servers(slow, fast)
        pool = fastrpc.Pool([a for _, a in servers], size=1, hedge={"S.get": fastrpc.HedgePolicy(delay=0.005, max_extra=0.25)})
        try:
            await pool.start()
            await _ready(pool)
            for _ in range(40):
                await pool.call("S.get")
            stats = pool.hedge_stats
            assert stats.calls == 40
            assert stats.extra <= 1 + 40 * 0.25
            assert stats.extra >= 5 and stats.skipped >= 5  # it hedged, and it held back
        finally:
            await pool.close()
            for server, _ in servers:
                await server.shutdown(grace=0)

    run(main())


def test_percentile_delay():
    t = LatencyTracker(window=100, min_samples=10)
    assert t.percentile(95) is None
    for i in range(100):
        t.add(i / 1000)
    assert t.percentile(95) == pytest.approx(0.095)
    assert t.percentile(50) == pytest.approx(0.050)
    for _ in range(100):  # the window moves on
        t.add(0.5)
    assert t.percentile(50) == 0.5
    policy = fastrpc.HedgePolicy(delay="p95", initial_delay=0.2)
    assert policy.delay_for(None) == 0.2
    assert policy.delay_for(t) == 0.5
    assert fastrpc.HedgePolicy(delay=0.01, max_extra=None).delay_for(t) == 0.01
    for bad in ("95", "p", "p100", "fast"):
        with pytest.raises(ValueError):
            fastrpc.HedgePolicy(delay=bad)


def test_blocking_client_says_it_does_not_hedge(run):
    async def main():
        [(server, address)] = await _servers(Slowable("one"))
        loop = asyncio.get_running_loop()

        def call() -> None:
            with fastrpc.Client(address) as c:
                with pytest.raises(TypeError, match="hedge"):
                    c.call("S.get", hedge=fastrpc.HedgePolicy())
                # retry= and compress= are options of the call, not the handler's
                assert c.call("S.get", retry=None, compress=False) == "one"
                with pytest.raises(TypeError, match="go"):
                    c.go("S.get", retry=None)
                with pytest.raises(TypeError, match="notify"):
                    c.notify("S.get", compress=False)

        try:
            await loop.run_in_executor(None, call)
        finally:
            await server.shutdown(grace=0)

    run(main())
