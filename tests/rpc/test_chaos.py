"""Fault injection through a chaos proxy: every call gets its correct answer
or a typed error (UNAVAILABLE / DEADLINE_EXCEEDED); none is lost, none is
answered twice, none hangs."""

from __future__ import annotations

import asyncio
import random

import pytest

import fastrpc

from chaos import ChaosProxy
from rpc_support import Arith

TYPED = (fastrpc.Unavailable, fastrpc.DeadlineExceeded)


class Counting(Arith):
    def __init__(self):
        self.calls = 0

    def echo(self, value):
        self.calls += 1
        return value


async def _setup():
    service = Counting()
    server = fastrpc.Server()
    server.register(service, name="Arith")
    address = await server.start("tcp://127.0.0.1:0")
    host, port = address[6:].rsplit(":", 1)
    proxy = ChaosProxy(host, int(port))
    return service, server, proxy, await proxy.start()


async def _calls(client, n, timeout=None, size=50):
    values = [[i, "v" * (i % size)] for i in range(n)]
    results = await asyncio.gather(
        *[client.call("Arith.echo", v, timeout=timeout) for v in values], return_exceptions=True
    )
    return values, results


def _check(values, results, allow=()):
    ok = 0
    for v, r in zip(values, results):
        if isinstance(r, BaseException):
            assert isinstance(r, allow), repr(r)
        else:
            assert r == v  # never someone else's answer
            ok += 1
    return ok


def test_one_byte_fragments_both_ways(run):
    async def main():
        service, server, proxy, address = await _setup()
        proxy.up.fragment = True
        proxy.down.fragment = True
        try:
            async with fastrpc.AsyncClient(address) as c:
                values, results = await _calls(c, 100)
                assert _check(values, results) == 100
            # the sync client through the same proxy
            def sync_side():
                with fastrpc.Client(address) as sc:
                    return [sc.call("Arith.echo", [i, "abc"]) for i in range(20)]

            got = await asyncio.get_running_loop().run_in_executor(None, sync_side)
            assert got == [[i, "abc"] for i in range(20)]
        finally:
            await proxy.close()
            await server.shutdown()

    run(main())


def test_delay_and_deadlines(run):
    async def main():
        service, server, proxy, address = await _setup()
        try:
            async with fastrpc.AsyncClient(address) as c:
                proxy.down.delay = 0.05
                values, results = await _calls(c, 50, timeout=5)
                assert _check(values, results) == 50
                values, results = await _calls(c, 50, timeout=0.01)
                assert _check(values, results, allow=fastrpc.DeadlineExceeded) == 0
                proxy.down.delay = 0
                await asyncio.sleep(0.2)  # late answers of expired calls arrive and are dropped
                values, results = await _calls(c, 50, timeout=5)
                assert _check(values, results) == 50
        finally:
            await proxy.close()
            await server.shutdown()

    run(main())


def test_stall_then_resume(run):
    async def main():
        service, server, proxy, address = await _setup()
        try:
            async with fastrpc.AsyncClient(address) as c:
                proxy.down.stall()
                values, results = await _calls(c, 30, timeout=0.3)
                assert _check(values, results, allow=fastrpc.DeadlineExceeded) == 0
                proxy.down.resume()
                values, results = await _calls(c, 30, timeout=5)
                assert _check(values, results) == 30
                # stall the request direction: the server never sees the calls
                proxy.up.stall()
                values, results = await _calls(c, 30, timeout=0.3)
                assert _check(values, results, allow=fastrpc.DeadlineExceeded) == 0
                proxy.up.resume()
                values, results = await _calls(c, 30, timeout=5)
                assert _check(values, results) == 30
        finally:
            await proxy.close()
            await server.shutdown()

    run(main())


@pytest.mark.parametrize("direction", ["up", "down"])
def test_cut_mid_frame(run, direction):
    async def main():
        service, server, proxy, address = await _setup()
        rng = random.Random(7)
        try:
            c = fastrpc.AsyncClient(address, backoff=fastrpc.Backoff(base=0.001, maximum=0.01))
            for _ in range(15):
                getattr(proxy, direction).cut_after = rng.randrange(30, 3000)
                try:
                    await c.connect()
                except fastrpc.Unavailable:
                    await asyncio.sleep(0.02)
                    continue
                values, results = await _calls(c, 60, timeout=5)
                _check(values, results, allow=TYPED)
                # after a cut every call in flight has ended, none hangs
                if c.endpoint.connection is not None:
                    assert c.endpoint.connection.in_flight <= 60
            getattr(proxy, direction).cut_after = None
            await asyncio.sleep(0.05)
            for _ in range(50):
                try:
                    values, results = await _calls(c, 20, timeout=5)
                    if _check(values, results, allow=TYPED) == 20:
                        break
                except fastrpc.Unavailable:
                    pass
                await asyncio.sleep(0.02)
            else:
                pytest.fail("never recovered after the cuts")
            assert proxy.cuts >= 5
            await c.close()
        finally:
            await proxy.close()
            await server.shutdown()
        assert server.connections == 0

    run(main())


def test_cut_mid_frame_sync_client(run):
    async def main():
        service, server, proxy, address = await _setup()
        rng = random.Random(11)

        def sync_side():
            client = fastrpc.Client(address, lazy=True, backoff=fastrpc.Backoff(base=0.001, maximum=0.01))
            outcomes = {"ok": 0, "typed": 0}
            for i in range(300):
                if i % 20 == 0:
                    proxy.down.cut_after = rng.randrange(30, 2000)
                try:
                    assert client.call("Arith.echo", [i, "x" * (i % 40)], timeout=5) == [i, "x" * (i % 40)]
                    outcomes["ok"] += 1
                except TYPED:
                    outcomes["typed"] += 1
            client.close()
            return outcomes

        try:
            outcomes = await asyncio.get_running_loop().run_in_executor(None, sync_side)
            assert outcomes["ok"] + outcomes["typed"] == 300
            assert outcomes["ok"] > 0 and outcomes["typed"] > 0
        finally:
            await proxy.close()
            await server.shutdown()

    run(main())
