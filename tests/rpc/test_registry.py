"""The etcd registry against a real etcd (Debian's etcd-server, started on
loopback ports by the fixture): a server lists itself while it serves and
goes before it drains; a lost lease is put back at once; an instance that
dies is gone within the TTL; etcd restarting without its data; a registry
that cannot be reached at start."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from rpc_support import Arith, free_port

import fastrpc
from fastrpc.discovery import EtcdRegistry, ServiceRecord


async def _eventually(predicate: Any, timeout: float = 15.0) -> Any:
    # (etcd just restarted may refuse a moment longer: tried again)
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await predicate()
        except Exception:
            if time.monotonic() > deadline:
                raise
            value = None
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


def test_server_lists_itself_while_it_serves(run, etcd):
    async def main():
        reader = EtcdRegistry(etcd.endpoint)
        server = fastrpc.Server(
            registry=f"etcd://{etcd.endpoint}", name="arith", weight=3, version="v2", tags={"zone": "a"}, service_metadata={"team": "x"}
        )
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            [rec] = await reader.instances("arith")
            assert (rec.name, rec.address, rec.weight, rec.version, rec.tags, rec.metadata) == ("arith", address, 3, "v2", {"zone": "a"}, {"team": "x"})
            assert rec.pid == os.getpid() and rec.id == server.record.id and rec.started <= time.time()
            assert await reader.instances("other") == []
        finally:
            await server.shutdown()
        # Gone before the server drained: at once, not after the TTL.
        assert await reader.instances("arith") == []
        await reader.close()

    run(main())


def test_a_lost_lease_is_registered_again(run, etcd):
    async def main():
        registry = EtcdRegistry(etcd.endpoint, ttl=3)
        reader = EtcdRegistry(etcd.endpoint)
        server = fastrpc.Server(registry=registry, name="arith")
        server.register(Arith())
        await server.start("tcp://127.0.0.1:0")
        try:
            # Someone revokes the lease: the record goes with it ...
            client = await reader._connected()
            await client.revoke_lease(registry._lease_id)
            assert await reader.instances("arith") == []
            # ... and the heartbeat puts it back (within ttl/3 and a bit).
            back = await _eventually(lambda: reader.instances("arith"), 10)
            assert [r.id for r in back] == [server.record.id]
            assert registry.reregistered == 1
        finally:
            await server.shutdown()
            await reader.close()

    run(main())


def test_etcd_restarted_without_its_data(run, etcd):
    async def main():
        registry = EtcdRegistry(etcd.endpoint, ttl=3)
        server = fastrpc.Server(registry=registry, name="arith")
        server.register(Arith())
        await server.start("tcp://127.0.0.1:0")
        try:
            etcd.stop()
            await asyncio.sleep(1.5)  # the heartbeat finds it unreachable
            etcd.start()  # empty: the record and its lease are gone
            reader = EtcdRegistry(etcd.endpoint)
            back = await _eventually(lambda: reader.instances("arith"), 15)
            assert [r.id for r in back] == [server.record.id]
            await reader.close()
        finally:
            await server.shutdown()

    run(main())


def test_a_dead_instance_is_gone_within_the_ttl(run, etcd):
    code = (
        "import asyncio, fastrpc\n"
        "from fastrpc.discovery import EtcdRegistry\n"
        "async def main():\n"
        f"    s = fastrpc.Server(registry=EtcdRegistry('{etcd.endpoint}', ttl=2), name='doomed')\n"
        "    s.register_function(lambda: 1, 'f')\n"
        "    print(await s.start('tcp://127.0.0.1:0'), flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(main())\n"
    )

    async def main():
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
        reader = EtcdRegistry(etcd.endpoint)
        try:
            address = (await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)).decode().strip()
            assert [r.address for r in await reader.instances("doomed")] == [address]
            os.kill(proc.pid, signal.SIGKILL)
            killed = time.monotonic()

            async def gone() -> bool:
                return not await reader.instances("doomed")

            assert await _eventually(gone, 10)
            assert time.monotonic() - killed < 2 + 2  # the TTL, and etcd's expiry check
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            await reader.close()

    run(main())


def test_unreachable_registry_fails_the_start(run):
    pytest.importorskip("aetcd", reason="aetcd is not installed (pip install .[etcd])")

    async def main():
        server = fastrpc.Server(registry=EtcdRegistry(f"127.0.0.1:{free_port()}", timeout=1.0), name="arith")
        server.register(Arith())
        with pytest.raises(Exception):
            await server.start("tcp://127.0.0.1:0")
        assert server.connections == 0 and server._shutting_down  # not left serving unlisted

    run(main())


def test_records_and_urls():
    rec = ServiceRecord("arith", "tcp://10.0.0.1:9000", weight=2, version="v1", tags={"zone": "b"}, id="i-1", started=5.0, pid=7)
    assert rec.key() == "/fastrpc/services/arith/i-1"
    again = ServiceRecord.from_json(rec.to_json())
    assert again == rec
    newer = ServiceRecord.from_json(rec.to_json()[:-1] + b',"future":1}')
    assert newer.extra == {"future": 1} and b'"future":1' in newer.to_json()
    for bad in (b"[]", b'{"name": 1}', b"not json"):
        with pytest.raises(ValueError):
            ServiceRecord.from_json(bad)
    with pytest.raises(ValueError):
        ServiceRecord("bad name", "tcp://x:1")
    from fastrpc.discovery import parse_etcd_url

    assert parse_etcd_url("etcd://10.1.2.3:2379/arith") == ("10.1.2.3", 2379, "arith")
    assert parse_etcd_url("etcd://host") == ("host", 2379, "")
    with pytest.raises(ValueError):
        fastrpc.Server(registry="zookeeper://x", name="a")
    with pytest.raises(ValueError):
        fastrpc.Server(registry=object())  # no name
