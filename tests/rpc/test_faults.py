"""Connection faults: vanished clients, killed servers, reconnection, pools,
and peers that do not speak the protocol."""

from __future__ import annotations

import asyncio
import time

import pytest

import fastrpc
from fastrpc import MsgType

from rpc_support import Arith


class Tracked:
    def __init__(self):
        self.started = 0
        self.cancelled = 0

    async def hang(self):
        self.started += 1
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def ok(self):
        return "ok"


def test_client_disconnecting_mid_call_does_not_disturb_the_server(run):
    async def main():
        tracked = Tracked()
        server = fastrpc.Server()
        server.register(tracked)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            steady = await fastrpc.connect(address)
            for _ in range(5):
                leaver = await fastrpc.connect(address)
                calls = [asyncio.ensure_future(leaver.call("Tracked.hang")) for _ in range(10)]
                while tracked.started < 10 * (_ + 1):
                    await asyncio.sleep(0.01)
                leaver.endpoint.connection._transport.abort()  # vanish without a goodbye
                results = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(r, fastrpc.Unavailable) for r in results)
                assert await steady.call("Tracked.ok") == "ok"
            for _ in range(200):
                if tracked.cancelled == 50 and server.connections == 1:
                    break
                await asyncio.sleep(0.01)
            assert tracked.cancelled == 50  # handlers of vanished clients are cancelled
            assert server.connections == 1
            assert next(iter(server._connections)).in_flight == 0
            await steady.close()
        finally:
            await server.shutdown()

    run(main())


def test_killed_server_fails_pending_calls_then_client_reconnects(run, server_process):
    async def main():
        sp = server_process()
        client = fastrpc.AsyncClient(sp.address, backoff=fastrpc.Backoff(base=0.01, maximum=0.05))
        await client.connect()
        assert await client.call("Arith.multiply", 7, 8) == 56
        pending = [asyncio.ensure_future(client.call("Arith.sleep_echo", 30, i)) for i in range(20)]
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        sp.kill()
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert time.monotonic() - t0 < 2.0  # promptly, not at some timeout
        assert all(isinstance(r, fastrpc.Unavailable) for r in results), results
        with pytest.raises(fastrpc.Unavailable):
            await client.call("Arith.multiply", 1, 1)
        server_process(sp.port)  # back on the same port
        for _ in range(200):
            try:
                assert await client.call("Arith.multiply", 6, 7) == 42
                break
            except fastrpc.Unavailable:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("client did not reconnect")
        await client.close()

    run(main())


def test_sync_client_killed_server_and_reconnect(server_process):
    sp = server_process()
    client = fastrpc.Client(sp.address, backoff=fastrpc.Backoff(base=0.01, maximum=0.05))
    assert client.call("Arith.multiply", 7, 8) == 56
    futs = [client.go("Arith.sleep_echo", 30, i) for i in range(10)]
    time.sleep(0.1)
    t0 = time.monotonic()
    sp.kill()
    for f in futs:
        with pytest.raises(fastrpc.Unavailable):
            f.result(timeout=5)
    assert time.monotonic() - t0 < 2.0
    server_process(sp.port)
    for _ in range(200):
        try:
            assert client.call("Arith.multiply", 6, 7) == 42
            break
        except fastrpc.Unavailable:
            time.sleep(0.02)
    else:
        pytest.fail("sync client did not reconnect")
    client.close()


def test_pool_spreads_calls_and_replaces_broken_connections(run, server_process):
    async def main():
        sp1 = server_process()
        sp2 = server_process()
        pool = fastrpc.Pool([sp1.address, sp2.address], size=2, backoff_base=0.01, backoff_max=0.05)
        await pool.start()
        for _ in range(100):
            if pool.connected == 4:
                break
            await asyncio.sleep(0.01)
        assert pool.connected == 4
        used = set()
        for i in range(40):
            assert await pool.call("Arith.multiply", i, 2) == 2 * i
        for ep in pool.endpoints:
            assert ep.connection._next_id == 10  # round robin: 40 calls over 4 connections
            used.add(id(ep.connection))
        assert len(used) == 4
        sp1.kill()
        for _ in range(200):
            if pool.connected == 2:
                break
            await asyncio.sleep(0.01)
        assert pool.connected == 2
        # calls go to the survivors only
        assert await asyncio.gather(*[pool.call("Arith.multiply", i, 3) for i in range(100)]) == [
            3 * i for i in range(100)
        ]
        server_process(sp1.port)
        for _ in range(300):
            if pool.connected == 4:
                break
            await asyncio.sleep(0.02)
        assert pool.connected == 4  # replaced in the background
        assert await pool.proxy("Arith").multiply(7, 8) == 56
        await pool.close()
        with pytest.raises(fastrpc.Unavailable):
            await pool.call("Arith.multiply", 1, 1)

    run(main())


def test_client_gets_clear_error_from_non_fastrpc_peer(run):
    async def main():
        async def http_like(reader, writer):
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(http_like, "127.0.0.1", 0)
        address = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        try:
            with pytest.raises(fastrpc.PrefaceError):
                await fastrpc.connect(address)

            def sync_side():
                with pytest.raises(fastrpc.PrefaceError):
                    fastrpc.Client(address)

            await asyncio.get_running_loop().run_in_executor(None, sync_side)
        finally:
            srv.close()

    run(main())


def test_version_mismatch_is_reported_to_both_sides(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            host, port = address[6:].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"FRPC\x02\x00\r\n")  # a future major version
            data = b""
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    break
                data += chunk
            # the server sent its own preface (so the peer can tell), then
            # a GOAWAY naming the problem, then closed
            assert data.startswith(fastrpc.wire.constants.PREFACE)
            parser = fastrpc.FrameParser()
            frames = parser.feed(data)
            assert frames[-1].type == MsgType.GOAWAY
            assert "protocol 2.0" in frames[-1].value[1]
            writer.close()
            # and the server goes on serving others
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("Arith.multiply", 7, 8) == 56
        finally:
            await server.shutdown()

    run(main())


def test_garbage_from_a_client_closes_only_that_connection(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            good = await fastrpc.connect(address)
            host, port = address[6:].rsplit(":", 1)
            for garbage in (b"SSH-2.0-OpenSSH_9.6\r\n", b"\x00" * 64, fastrpc.wire.constants.PREFACE + b"\xff" * 32):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(garbage)
                while await asyncio.wait_for(reader.read(65536), 5):
                    pass  # until the server closes its end
                writer.close()
                assert await good.call("Arith.multiply", 7, 8) == 56
            await good.close()
        finally:
            await server.shutdown()

    run(main())


def test_response_frames_sent_to_a_server_are_a_protocol_error(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            host, port = address[6:].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            w = fastrpc.FrameWriter()
            w.write_preface()
            w.write_request(1, "Arith.multiply", [2, 3])
            w.write_response(99, "unsolicited")
            writer.write(w.take())
            data = b""
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    break
                data += chunk
            frames = fastrpc.FrameParser().feed(data)
            # the request before the bad frame was still answered, exactly once
            assert [f.value for f in frames if f.type == MsgType.RESPONSE] == [6]
            assert frames[-1].type == MsgType.GOAWAY
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_server_run_serves_until_sigterm_then_exits_cleanly():
    import os
    import signal
    import subprocess
    import sys

    from rpc_support import HERE, free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "run_server.py"), str(port)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout.readline().startswith(b"starting")
        for _ in range(200):
            try:
                client = fastrpc.Client(f"127.0.0.1:{port}")
                break
            except fastrpc.Unavailable:
                time.sleep(0.02)
        else:
            pytest.fail("server did not come up")
        assert client.call("Arith.multiply", 7, 8) == 56
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout.read().startswith(b"stopped")
        with pytest.raises(fastrpc.Unavailable):
            client.call("Arith.multiply", 1, 2)
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
