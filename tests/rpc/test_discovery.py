"""Clients of an ``etcd://`` target against a real etcd (started by the
fixture): the set of servers followed live, the last set kept while etcd
is down, and the scenario of the issue: three servers, a client under load
with p2c, one server SIGKILLed (only its calls in flight fail, the dead
instance leaves etcd within the TTL, a restarted one gets calls again)."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest

import fastrpc
from fastrpc.discovery import EtcdRegistry


class Who:
    def __init__(self, name: str) -> None:
        self.name = name

    def who(self) -> str:
        return self.name


async def _until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return bool(predicate())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_clients_follow_the_registry(run, etcd, kind, caplog):
    async def main():
        servers: Dict[str, fastrpc.Server] = {}

        async def serve(name: str, version: str = "v1") -> None:
            server = fastrpc.Server(registry=EtcdRegistry(etcd.endpoint, ttl=3), name="who", version=version)
            server.register(Who(name))
            await server.start("tcp://127.0.0.1:0")
            servers[name] = server

        loop = asyncio.get_running_loop()
        target = f"etcd://{etcd.endpoint}/who"
        await serve("a")
        await serve("b")
        if kind == "async":
            client: Any = await fastrpc.AsyncClient(target).connect()
            known = lambda: client.pool.servers  # noqa: E731
            versions = lambda: sorted(ep.version for ep in client.pool.endpoints)  # noqa: E731

            async def names(n: int) -> collections.Counter:
                return collections.Counter([await client.call("Who.who") for _ in range(n)])

        else:
            client = await loop.run_in_executor(None, fastrpc.Client, target)
            known = lambda: client.servers  # noqa: E731
            versions = lambda: sorted(s.version for s in client._servers.values())  # noqa: E731

            async def names(n: int) -> collections.Counter:
                return await loop.run_in_executor(None, lambda: collections.Counter(client.call("Who.who") for _ in range(n)))

        try:
            assert set(await names(20)) == {"a", "b"}
            # A new instance is called within moments, not after a TTL.
            await serve("c", version="v2")
            assert await _until(lambda: len(known()) == 3)
            assert versions() == ["v1", "v1", "v2"]
            assert set(await names(30)) == {"a", "b", "c"}
            # One deregisters (it drains): no new call reaches it.
            await servers.pop("a").shutdown()
            assert await _until(lambda: len(known()) == 2)
            assert set(await names(30)) == {"b", "c"}
            # etcd goes away: the client keeps its last set, says so once.
            caplog.set_level(logging.WARNING, logger="fastrpc.discovery")
            etcd.stop()
            await asyncio.sleep(1.5)
            assert len(known()) == 2 and set(await names(30)) == {"b", "c"}
            assert any("keeping the last 2" in r.getMessage() for r in caplog.records)
            # etcd comes back empty: the servers register again, the client
            # reads the set again.
            etcd.start()
            for _ in range(50):  # (etcd just restarted may refuse a moment longer)
                try:
                    await serve("d")
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.2)
            assert await _until(lambda: len(known()) == 3, 20)
            assert set(await names(60)) == {"b", "c", "d"}
        finally:
            if kind == "async":
                await client.close()
            else:
                await loop.run_in_executor(None, client.close)
            for server in servers.values():
                await server.shutdown(grace=0.5)

    run(main(), 90)


SERVER = """
import asyncio, os, sys, fastrpc
from fastrpc.discovery import EtcdRegistry

class Who:
    @fastrpc.idempotent
    async def who(self):
        await asyncio.sleep(0.001)
        return os.getpid()

async def main():
    server = fastrpc.Server(registry=EtcdRegistry(sys.argv[1], ttl=2), name="who")
    server.register(Who())
    print(await server.start("tcp://127.0.0.1:0"), flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def test_sigkill_one_of_three_under_p2c(run, etcd, tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs: List[subprocess.Popen] = []

    def spawn() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), etcd.endpoint], stdout=subprocess.PIPE, env=env)
        procs.append(proc)
        return proc

    async def main():
        loop = asyncio.get_running_loop()
        reader = EtcdRegistry(etcd.endpoint)
        for _ in range(3):
            proc = spawn()
            await loop.run_in_executor(None, proc.stdout.readline)  # listening and registered
        client = fastrpc.AsyncClient(
            f"etcd://{etcd.endpoint}/who",
            balancer="p2c",
            # A budget that lets every call in flight on the dead server be
            # retried (the default throttles retries once 5 fail together).
            retry=fastrpc.RetryPolicy(max_attempts=3, initial_backoff=0.01, budget=fastrpc.RetryBudget(max_tokens=100)),
            timeout=5.0,
        )
        plain = fastrpc.AsyncClient(f"etcd://{etcd.endpoint}/who", balancer="p2c", timeout=5.0)
        await client.connect()
        await plain.connect()
        got: collections.Counter = collections.Counter()
        failed: List[BaseException] = []
        stop = asyncio.Event()

        async def load(c: Any, retried: bool) -> None:
            while not stop.is_set():
                try:
                    got[await c.call("Who.who")] += 1
                except fastrpc.RpcError as exc:
                    if retried:
                        raise  # an idempotent call is retried elsewhere: none may fail
                    failed.append(exc)

        try:
            workers = [asyncio.ensure_future(load(client, True)) for _ in range(8)]
            workers += [asyncio.ensure_future(load(plain, False)) for _ in range(4)]
            await asyncio.sleep(1.0)
            victim = procs[0]
            assert got[victim.pid] > 0  # it had its share before
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.sleep(1.0)
            before = got[victim.pid]
            # Gone from etcd within the TTL (2 s) and etcd's expiry check.
            while victim.stdout and time.monotonic() - killed < 10:
                if len(await reader.instances("who")) == 2:
                    break
                await asyncio.sleep(0.1)
            assert len(await reader.instances("who")) == 2
            assert time.monotonic() - killed < 4.5
            # A restarted instance gets calls again.
            fresh = spawn()
            await loop.run_in_executor(None, fresh.stdout.readline)
            await _until(lambda: got[fresh.pid] > 50, 10)
            stop.set()
            await asyncio.gather(*workers)
        finally:
            stop.set()
            await client.close()
            await plain.close()
            await reader.close()
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:  # pragma: no cover
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
        # The dead one took no call after its death was seen; the plain
        # client lost at most the calls it had in flight there (4 workers).
        assert got[victim.pid] == before
        assert len(failed) <= 4, failed
        assert all(isinstance(e, fastrpc.Unavailable) for e in failed), failed
        assert got[fresh.pid] > 50
        assert sum(got.values()) > 1000

    run(main(), 90)
