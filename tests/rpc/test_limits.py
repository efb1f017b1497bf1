"""Limits and backpressure: every setting has a test that fails without it."""

from __future__ import annotations

import asyncio
import time

import pytest

import fastrpc
from fastrpc import MsgType

from rpc_support import Arith, hostport


class Gate:
    """Async handlers that wait for the test to open a gate."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.running = 0
        self.peak = 0

    async def wait(self, value):
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return value

    def big(self, n):
        return b"x" * n

    def quick(self):
        return "quick"


async def _raw(address, handshake=True):
    reader, writer = await asyncio.open_connection(*hostport(address))
    w = fastrpc.FrameWriter()
    w.write_preface()
    if handshake:
        w.write_frame(MsgType.HANDSHAKE, 0, {})
    writer.write(w.take())
    return reader, writer, w


async def _read_until_closed(reader, timeout=5.0):
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return data
        data += chunk


def test_max_in_flight_pauses_reading_and_loses_nothing(run):
    async def main():
        gate = Gate()
        server = fastrpc.Server(max_in_flight=8)
        server.register(gate)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            reader, writer, w = await _raw(address)
            for i in range(1, 201):  # one write: all 200 arrive in one or two reads
                w.write_request(i, "Gate.wait", [i])
            writer.write(w.take())
            await asyncio.sleep(0.2)
            assert gate.running == 8  # the rest were read but not started
            conn = next(iter(server._connections))
            assert conn._read_paused
            gate.gate.set()
            parser = fastrpc.FrameParser()
            answers = {}
            while len(answers) < 200:
                for f in parser.feed(await asyncio.wait_for(reader.read(65536), 5)):
                    if f.type == MsgType.RESPONSE:
                        assert f.request_id not in answers  # never answered twice
                        answers[f.request_id] = f.value
            assert answers == {i: i for i in range(1, 201)}
            assert gate.peak == 8
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_slow_reader_does_not_slow_others_and_is_bounded(run):
    async def main():
        gate = Gate()
        server = fastrpc.Server()
        server.register(gate)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            # A client that asks for 1 MiB answers and never reads them.
            reader, writer, w = await _raw(address)
            for i in range(1, 201):
                w.write_request(i, "Gate.big", [1 << 20])
            writer.write(w.take())
            await asyncio.sleep(0.3)
            conn = next(iter(server._connections))
            assert conn._read_paused  # it stopped reading the hog
            buffered = conn._transport.get_write_buffer_size()
            assert buffered < 64 * (1 << 20)  # not 200 MiB: the rest was never read
            # Everyone else is served at full speed meanwhile.
            async with fastrpc.AsyncClient(address) as c:
                t0 = time.monotonic()
                for _ in range(200):
                    assert await c.call("Gate.quick") == "quick"
                assert time.monotonic() - t0 < 2.0
            # When the hog reads, it gets every answer exactly once.
            parser = fastrpc.FrameParser()
            got = []
            while len(got) < 200:
                got += [f for f in parser.feed(await asyncio.wait_for(reader.read(1 << 20), 10)) if f.type == MsgType.RESPONSE]
            assert sorted(f.request_id for f in got) == list(range(1, 201))
            assert all(len(f.value) == 1 << 20 for f in got)
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_max_connections_refuses_cleanly(run):
    async def main():
        server = fastrpc.Server(max_connections=2)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            a = await fastrpc.connect(address)
            b = await fastrpc.connect(address)
            with pytest.raises(fastrpc.Unavailable, match="too many connections"):
                await fastrpc.connect(address)
            assert server.connections == 2
            assert await a.call("Arith.multiply", 7, 8) == 56
            await b.close()
            for _ in range(100):
                if server.connections < 2:
                    break
                await asyncio.sleep(0.01)
            c = await fastrpc.connect(address)  # a slot is free again
            assert await c.call("Arith.multiply", 6, 7) == 42
            await a.close()
            await c.close()
        finally:
            await server.shutdown()

    run(main())


def test_handshake_timeout_drops_silent_and_partial_peers(run):
    async def main():
        server = fastrpc.Server(handshake_timeout=0.3)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            silent = await asyncio.open_connection(*hostport(address))
            partial = await asyncio.open_connection(*hostport(address))
            partial[1].write(b"FRP")  # a slowloris: part of the preface, then nothing
            preface_only = await _raw(address, handshake=False)
            t0 = time.monotonic()
            for reader, writer in (silent, partial, preface_only[:2]):
                await _read_until_closed(reader, timeout=5)  # the server hangs up
                writer.close()
            assert 0.25 <= time.monotonic() - t0 < 3
            assert server.connections == 0
            # a well-behaved client is unaffected by the timer
            async with fastrpc.AsyncClient(address) as c:
                await asyncio.sleep(0.5)
                assert await c.call("Arith.multiply", 7, 8) == 56
        finally:
            await server.shutdown()

    run(main())


def test_idle_timeout_closes_quiet_connections_and_client_reconnects(run):
    async def main():
        server = fastrpc.Server(idle_timeout=0.3)
        server.register(Arith())
        server.register(Gate())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            c = await fastrpc.connect(address)
            first = c.endpoint.connection
            # a call running longer than the idle timeout is not cut off
            assert await c.call("Arith.multiply", 7, 8) == 56
            for _ in range(100):
                if server.connections == 0 and not c.connected:
                    break
                await asyncio.sleep(0.02)
            assert server.connections == 0
            # Once the client has seen the GOAWAY, the next call reconnects
            # transparently.  (A call made in the instant between the
            # server's close and the client reading it is resent:
            # test_goaway.py.)
            assert await c.call("Arith.multiply", 6, 7) == 42
            assert c.endpoint.connection is not first
            await c.close()
        finally:
            await server.shutdown()

    run(main())


def test_idle_timeout_spares_connections_with_calls_in_flight(run):
    async def main():
        gate = Gate()
        server = fastrpc.Server(idle_timeout=0.2)
        server.register(gate)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                call = asyncio.ensure_future(c.call("Gate.wait", "late"))
                await asyncio.sleep(0.6)
                gate.gate.set()
                assert await call == "late"
        finally:
            await server.shutdown()

    run(main())


def test_server_keepalive_detects_half_open_peer(run):
    async def main():
        server = fastrpc.Server(keepalive_interval=0.2, keepalive_timeout=0.2)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            # a live client answers pings and stays
            async with fastrpc.AsyncClient(address) as live:
                # a "half-open" peer: handshake done, then it never answers
                reader, writer, _ = await _raw(address)
                t0 = time.monotonic()
                data = await _read_until_closed(reader, timeout=5)
                assert 0.35 <= time.monotonic() - t0 < 3
                frames = fastrpc.FrameParser().feed(data)
                assert any(f.type == MsgType.PING for f in frames)
                writer.close()
                assert await live.call("Arith.multiply", 7, 8) == 56
                assert server.connections == 1
        finally:
            await server.shutdown()

    run(main())


def _frozen_server(release, received):
    async def frozen(reader, writer):
        # answers the handshake, then goes silent without closing; what the
        # client sends is read (into ``received``) but never answered
        w = fastrpc.FrameWriter()
        w.write_preface()
        w.write_frame(MsgType.HANDSHAKE, 0, {"methods": ["X.y"]})
        writer.write(w.take())
        parser = fastrpc.FrameParser()

        async def read():
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                received.extend(f.type for f in parser.feed(data))

        reading = asyncio.ensure_future(read())
        try:
            await release.wait()
        finally:
            reading.cancel()
            writer.close()

    return frozen


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_client_keepalive_fails_calls_to_a_vanished_server(run, client_kind, timeout):
    # A server that answered the handshake and then went silent: the client
    # pings it while the call waits and, with no answer, drops the
    # connection and fails the call UNAVAILABLE long before its deadline
    # (timeout None: no deadline at all; on the sync client also the plain
    # fast path, 30.0 its general path).
    async def main():
        release = asyncio.Event()
        received = []
        srv = await asyncio.start_server(_frozen_server(release, received), "127.0.0.1", 0)
        address = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        try:
            c = await client_kind.open(address, keepalive_interval=0.2, keepalive_timeout=0.2)
            try:
                with pytest.raises(fastrpc.Unavailable, match="keepalive"):
                    # bounded only so that a broken keepalive fails the
                    # test instead of hanging it
                    await asyncio.wait_for(c.call("X.y", timeout=timeout), 10)
            finally:
                await c.close()
            # It asked before giving up: after its handshake and the call,
            # at least one PING, which the server never answered.
            assert received[:2] == [MsgType.HANDSHAKE, MsgType.REQUEST] and MsgType.PING in received[2:], received
        finally:
            release.set()
            srv.close()
            await asyncio.sleep(0.05)

    run(main())


def test_decode_limits_answer_invalid_argument(run):
    async def main():
        server = fastrpc.Server(max_str_len=100, max_depth=8, max_array_len=1000)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.InvalidArgument, match="max_str_len"):
                    await c.call("Arith.echo", "x" * 101)
                nested = 1
                for _ in range(10):
                    nested = [nested]
                with pytest.raises(fastrpc.InvalidArgument, match="max_depth"):
                    await c.call("Arith.echo", nested)
                with pytest.raises(fastrpc.InvalidArgument, match="max_array_len"):
                    await c.call("Arith.echo", list(range(1001)))
                assert await c.call("Arith.echo", "x" * 100) == "x" * 100
        finally:
            await server.shutdown()

    run(main())


def test_max_frame_size_is_enforced_without_hurting_others(run):
    async def main():
        server = fastrpc.Server(max_frame_size=4096)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                # the client learned the limit at handshake and refuses locally
                with pytest.raises(fastrpc.FrameTooLarge):
                    await c.call("Arith.echo", b"x" * 5000)
                assert await c.call("Arith.echo", b"x" * 1000) == b"x" * 1000
                # a raw peer announcing a huge frame is cut off before buffering
                reader, writer, _ = await _raw(address)
                writer.write(b"\xff\xff\xff\xff" + b"\x01\x00\x00\x00\x00\x00\x00\x01")
                data = await _read_until_closed(reader)
                frames = fastrpc.FrameParser().feed(data)
                assert frames[-1].type == MsgType.GOAWAY and "max_frame_size" in frames[-1].value[1]
                writer.close()
                # an answer that would be too large becomes an error, not a broken connection
                with pytest.raises(fastrpc.ResourceExhausted, match="too large"):
                    await c.call("Arith.multiply", "y" * 2100, 2)  # 2.1 KB in, 4.2 KB out
                assert await c.call("Arith.multiply", 7, 8) == 56
        finally:
            await server.shutdown()

    run(main())


def test_sync_client_keepalive_keeps_a_slow_call_to_a_live_server(run):
    # The server answers pings while a call runs, so a call longer than
    # interval + timeout completes; without keepalive plain calls keep the
    # blocking fast path.
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")

        def sync_side():
            with fastrpc.Client(address, keepalive_interval=0.1, keepalive_timeout=0.1) as c:
                assert c.call("Arith.sleep_echo", 0.8, "late") == "late"
                assert c.call("Arith.add", 2, 3) == 5
            with fastrpc.Client(address) as c:
                assert c.call("Arith.add", 2, 3) == 5
                assert c._conn._timeout_mode is None  # blocking socket: no keepalive cost
            return True

        try:
            assert await asyncio.get_running_loop().run_in_executor(None, sync_side)
        finally:
            await server.shutdown()

    run(main())
