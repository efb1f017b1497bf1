"""The connection cores (``core/_cores.pyx`` and its twin ``core/_cores_py.py``).

Each test drives a real ``ServerConnection`` / ``ClientProtocol`` through a
fake transport, once on the compiled core and once on the pure one (the
``impl`` fixture): the core's fast path and the Python path behind it must
answer every frame of a read exactly once, in order, whatever the mix.
"""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

from fastrpc.wire import constants as W
from fastrpc.client._aio import ClientProtocol
from fastrpc.client.options import ClientOptions
from fastrpc.server import server as S
from fastrpc.server.connection import ServerConnection
from fastrpc._impl import FrameParser, FrameWriter
from fastrpc.errors import StatusCode


class FakeTransport:
    def __init__(self) -> None:
        self.writes: List[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.writes.append(b"".join(bytes(c) for c in chunks))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def _with_core(cls: type, core: type) -> type:
    # The class under test on the given core (the active one is already
    # its base; the other is put in front of it in the MRO).
    if core in cls.__mro__:
        return cls
    return type(f"{cls.__name__}_{core.__module__.rsplit('.', 1)[-1]}", (core, cls), {})


class Service:
    def __init__(self) -> None:
        self.seen: List[Any] = []

    def add(self, a: int, b: int) -> int:
        self.seen.append(("add", a, b))
        return a + b

    def fail(self) -> None:
        raise ValueError("boom")

    def big(self, n: int) -> bytes:
        return b"x" * n

    def unencodable(self) -> Any:
        return object()

    async def slow(self, value: Any) -> Any:
        await asyncio.sleep(0.01)
        self.seen.append(("slow", value))
        return value

    def seen_call(self, a: int, b: int = 0) -> Any:
        from fastrpc import current_call

        return [a, b, dict(current_call().metadata)]


def _frames(data: bytes) -> List[Any]:
    parser = FrameParser()
    return parser.feed(data)


class ServerHarness:
    def __init__(self, impl: Any, **options: Any) -> None:
        self.service = Service()
        self.server = S.Server(handshake_timeout=None, **options)
        self.server.register(self.service, "S")
        self.server._freeze()
        self.server._loop = asyncio.get_running_loop()
        cls = _with_core(ServerConnection, impl.cores.ServerSessionCore)
        self.conn = cls(self.server)
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)
        self.index = {name: i for i, name in enumerate(self.server.methods)}
        w = FrameWriter()
        w.write_preface()
        w.write_frame(W.MsgType.HANDSHAKE, 0, {"client": "test"})
        self.feed(w.take())
        self.out = FrameParser()
        self.answers()  # preface and handshake answer

    def feed(self, data: bytes, chunk: int = 0) -> None:
        pos = 0
        while pos < len(data):
            buf = self.conn.get_buffer(-1)
            part = data[pos:pos + min(chunk or len(data), len(buf))]
            buf[:len(part)] = part
            self.conn.buffer_updated(len(part))
            pos += len(part)

    def answers(self) -> List[Any]:
        data = b"".join(self.transport.writes)
        self.transport.writes.clear()
        return self.out.feed(data)


def _summary(frames: List[Any]) -> List[Any]:
    return [(W.MsgType(f.type).name, f.request_id, f.value if f.type != W.MsgType.ERROR else f.value[0]) for f in frames]


def test_sync_calls_in_one_read_leave_in_one_write(impl):
    async def main():
        h = ServerHarness(impl)
        w = FrameWriter()
        for i in range(1, 101):
            w.write_request(i, h.index["S.add"], [i, 1])
        h.feed(w.take())
        assert len(h.transport.writes) == 1
        got = h.answers()
        assert [(f.request_id, f.value) for f in got] == [(i, i + 1) for i in range(1, 101)]

    asyncio.run(main())


def test_mixed_read_is_answered_in_order_exactly_once(impl):
    async def main():
        h = ServerHarness(impl)
        add, slow = h.index["S.add"], h.index["S.slow"]
        w = FrameWriter()
        w.write_request(1, add, [1, 1])
        w.write_request(2, slow, ["a"])  # async: answered later
        w.write_request(3, add, [3, 1])
        w.write_frame(W.MsgType.PING, 0, 7)
        w.write_request(4, "S.add", [4, 1])  # by name
        w.write_request(5, add, [], {"a": 5, "b": 1})  # kwargs
        w.write_request(0, add, [6, 1], notify=True)
        w.write_request(6, add, [7, 1], deadline=0)  # already expired
        w.write_request(7, add, [8, 1], deadline=5_000_000)
        w.write_request(8, add, [9, 1], metadata={"k": "v"})
        w.write_request(9, 999, [1, 1])  # no such method
        w.write_request(10, add, [10, 1])
        h.feed(w.take())
        got = _summary(h.answers())
        assert got == [
            ("RESPONSE", 1, 2),
            ("RESPONSE", 3, 4),
            ("PONG", 0, 7),
            ("RESPONSE", 4, 5),
            ("RESPONSE", 5, 6),
            ("ERROR", 6, int(StatusCode.DEADLINE_EXCEEDED)),
            ("RESPONSE", 7, 9),
            ("RESPONSE", 8, 10),
            ("ERROR", 9, int(StatusCode.NOT_FOUND)),
            ("RESPONSE", 10, 11),
        ]
        assert ("add", 6, 1) in h.service.seen  # the notification ran
        await asyncio.sleep(0.05)
        assert _summary(h.answers()) == [("RESPONSE", 2, "a")]

    asyncio.run(main())


def test_split_reads_and_fast_path_after_slow_frames(impl):
    async def main():
        h = ServerHarness(impl)
        add = h.index["S.add"]
        w = FrameWriter()
        w.write_frame(W.MsgType.PING, 0, 1)
        for i in range(1, 21):
            w.write_request(i, add, [i, i])
        h.feed(w.take(), chunk=7)
        got = _summary(h.answers())
        assert got == [("PONG", 0, 1)] + [("RESPONSE", i, 2 * i) for i in range(1, 21)]

    asyncio.run(main())


def test_handler_errors_become_statuses_and_the_read_goes_on(impl):
    async def main():
        h = ServerHarness(impl)
        add, fail, unenc = h.index["S.add"], h.index["S.fail"], h.index["S.unencodable"]
        w = FrameWriter()
        w.write_request(1, fail, [])
        w.write_request(2, add, [1])  # missing an argument
        w.write_request(3, unenc, [])
        w.write_request(4, add, [2, 2])
        w.write_request(5, add, {"not": "a list"})
        w.write_request(6, add, [3, 3])
        h.feed(w.take())
        assert _summary(h.answers()) == [
            ("ERROR", 1, int(StatusCode.UNKNOWN)),
            ("ERROR", 2, int(StatusCode.INVALID_ARGUMENT)),
            ("ERROR", 3, int(StatusCode.INTERNAL)),
            ("RESPONSE", 4, 4),
            ("ERROR", 5, int(StatusCode.INVALID_ARGUMENT)),
            ("RESPONSE", 6, 6),
        ]
        assert not h.transport.closed

    asyncio.run(main())


def test_request_id_reused_while_in_flight_is_a_protocol_error(impl):
    async def main():
        h = ServerHarness(impl)
        w = FrameWriter()
        w.write_request(1, h.index["S.slow"], ["x"])
        h.feed(w.take())  # the async call is in flight when the next read comes
        w.write_request(2, h.index["S.add"], [1, 1])
        w.write_request(1, h.index["S.add"], [1, 2])  # id 1 still in flight
        h.feed(w.take())
        got = h.answers()
        assert _summary(got)[0] == ("RESPONSE", 2, 2)
        assert got[-1].type == W.MsgType.GOAWAY and "reused" in got[-1].value[1]
        assert h.transport.closed

    asyncio.run(main())


def test_draining_connection_refuses_sync_calls(impl):
    async def main():
        h = ServerHarness(impl)
        h.conn.start_draining()
        h.answers()
        w = FrameWriter()
        w.write_request(1, h.index["S.add"], [1, 1])
        h.feed(w.take())
        assert _summary(h.answers()) == [("ERROR", 1, int(StatusCode.UNAVAILABLE))]
        assert h.service.seen == []

    asyncio.run(main())


def test_bad_frame_after_good_ones(impl):
    async def main():
        h = ServerHarness(impl)
        w = FrameWriter()
        w.write_request(1, h.index["S.add"], [1, 1])
        data = w.take() + b"\x00\x00\x00\x08\x63\x00\x00\x00\x00\x00\x00\x00"  # unknown type 0x63
        h.feed(data)
        got = h.answers()
        assert _summary(got)[0] == ("RESPONSE", 1, 2)
        assert got[-1].type == W.MsgType.GOAWAY
        assert h.transport.closed

    asyncio.run(main())


def test_large_answers_are_flushed_and_backpressure_holds_the_rest(impl):
    async def main():
        h = ServerHarness(impl)
        w = FrameWriter()
        for i in range(1, 6):
            w.write_request(i, h.index["S.big"], [100 * 1024])
        original_write, original_writelines = h.transport.write, h.transport.writelines

        def write(data: Any) -> None:
            original_write(data)
            h.conn.pause_writing()  # the peer stops reading after the first batch

        def writelines(chunks: Any) -> None:
            original_writelines(chunks)
            h.conn.pause_writing()

        h.transport.write, h.transport.writelines = write, writelines
        h.feed(w.take())
        first = h.answers()
        assert [f.request_id for f in first] == [1, 2, 3]  # 256 KiB reached, then paused
        assert h.transport.paused
        assert h.conn._backlog is not None
        h.transport.write, h.transport.writelines = original_write, original_writelines
        h.conn.resume_writing()
        rest = h.answers()
        assert [f.request_id for f in rest] == [4, 5]
        assert not h.transport.paused

    asyncio.run(main())


@pytest.mark.parametrize("tracked", [False, True])
def test_last_seen_is_read_only_when_a_timer_needs_it(impl, tracked):
    async def main():
        options = {"idle_timeout": 30.0} if tracked else {}
        h = ServerHarness(impl, **options)
        assert bool(h.conn._track_seen) is tracked
        h.conn._last_seen = 1.0
        w = FrameWriter()
        w.write_request(1, h.index["S.add"], [1, 1])
        h.feed(w.take())
        assert (h.conn._last_seen != 1.0) is tracked
        h.conn.abort()

    asyncio.run(main())


# --------------------------------------------------------------------------
# client core


class ClientHarness:
    def __init__(self, impl: Any, **options: Any) -> None:
        loop = asyncio.get_running_loop()
        cls = _with_core(ClientProtocol, impl.cores.AsyncClientCore)
        self.proto = cls(loop, ClientOptions(**options))
        self.transport = FakeTransport()
        self.proto.connection_made(self.transport)
        self.writer = FrameWriter()
        self.writer.write_preface()
        self.writer.write_frame(W.MsgType.HANDSHAKE, 0, {"methods": ["S.add"], "max_frame_size": 1 << 20})
        self.feed(self.writer.take())

    def feed(self, data: bytes) -> None:
        buf = self.proto.get_buffer(-1)
        buf[:len(data)] = data
        self.proto.buffer_updated(len(data))


def test_client_core_resolves_calls_and_leaves_the_rest_to_the_glue(impl):
    async def main():
        h = ClientHarness(impl)
        assert h.proto.methods == {"S.add": 0}
        calls = [asyncio.ensure_future(h.proto.call("S.add", [i, 1])) for i in range(1, 6)]
        await asyncio.sleep(0)
        w = h.writer
        w.write_response(2, "two")
        w.write_response(999, "nobody asked")  # unknown id: ignored
        w.write_error(1, int(StatusCode.NOT_FOUND), "no")
        w.write_response(3, "three")
        w.write_frame(W.MsgType.PING, 0, 5)
        w.write_response(4, "four")
        h.feed(w.take())
        await asyncio.sleep(0)
        assert calls[1].result() == "two" and calls[2].result() == "three" and calls[3].result() == "four"
        with pytest.raises(Exception) as info:
            calls[0].result()
        assert getattr(info.value, "code", None) == StatusCode.NOT_FOUND
        assert not calls[4].done()
        sent = _frames(b"".join(h.transport.writes))
        assert any(f.type == W.MsgType.PONG and f.value == 5 for f in sent)
        # a broken frame after a good one: the good one is delivered first
        w.write_response(5, "five")
        h.feed(w.take() + b"\x00\x00\x00\x08\x63\x00\x00\x00\x00\x00\x00\x00")
        await asyncio.sleep(0)
        assert calls[4].result() == "five"
        assert h.transport.closed

    asyncio.run(main())


@pytest.mark.parametrize("keepalive", [None, 30.0])
def test_client_reads_the_clock_only_for_keepalive(impl, keepalive):
    async def main():
        h = ClientHarness(impl, keepalive_interval=keepalive)
        assert bool(h.proto._track_seen) is (keepalive is not None)
        h.proto._last_seen = 1.0
        h.writer.write_frame(W.MsgType.PONG, 0, 0)
        h.feed(h.writer.take())
        assert (h.proto._last_seen != 1.0) is (keepalive is not None)
        h.proto.abort()

    asyncio.run(main())


# --------------------------------------------------------------------------
# sync client core


@pytest.fixture(scope="module")
def live_server():
    """A fastrpc server on a loop in a background thread."""
    import threading

    loop = asyncio.new_event_loop()
    server = S.Server()
    server.register(Service(), "S")
    address = loop.run_until_complete(server.start("tcp://127.0.0.1:0"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield address
    asyncio.run_coroutine_threadsafe(server.shutdown(grace=0), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _sync_client(impl: Any, address: str) -> Any:
    from fastrpc.client._sync import SyncConnection
    from fastrpc.client.sync_client import Client
    from fastrpc.transport.address import parse_address

    cls = _with_core(SyncConnection, impl.cores.SyncClientCore)
    client = Client(address, lazy=True)
    client._conn = cls(parse_address(address), ClientOptions(connect_timeout=5.0))
    return client


def _in_thread(fn: Any, timeout: float = 10.0) -> Any:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout)  # a deadlock fails here, not forever


def test_sync_plain_calls_from_many_threads(impl, live_server):
    import concurrent.futures

    client = _sync_client(impl, live_server)
    try:
        def worker(k: int) -> List[Any]:
            return [client.call("S.add", k, i) == k + i for i in range(1000)]

        import sys

        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
        try:
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                results = list(pool.map(worker, range(6), timeout=60))
        finally:
            sys.setswitchinterval(old)
        assert all(all(r) for r in results)
        assert client._conn._pending == {}
    finally:
        client.close()


def test_sync_plain_call_carries_kwargs_and_metadata(impl, live_server):
    # The plain path takes kwargs and metadata (what an inherited trace
    # context adds); with keepalive on (or another thread reading) the same
    # call goes the general way and gives the same answer.
    client = _sync_client(impl, live_server)
    try:
        conn = client._conn
        md = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

        def calls() -> Any:
            return [
                conn.call_plain("S.seen_call", (1,), {"b": 2}, md),
                conn.call_plain("S.seen_call", (3,), None, md),
                conn.call_plain("S.seen_call", (4,), {"b": 5}, None),
            ]

        want = [[1, 2, md], [3, 0, md], [4, 5, {}]]
        assert _in_thread(calls) == want
        conn._timeout_mode = 30.0  # as with keepalive: the general path
        conn.sock.settimeout(30.0)
        assert _in_thread(calls) == want
        assert conn._pending == {}
    finally:
        client.close()


def test_sync_connection_lost_between_the_locks_raises_unavailable(impl, live_server):
    from fastrpc.errors import Unavailable

    client = _sync_client(impl, live_server)
    conn = client._conn
    real = conn.send_lock

    class BreakingLock:
        # The connection dies while the caller waits for the send lock.
        def acquire(self, *args: Any) -> bool:
            conn.broken("gone")
            return real.acquire(*args)

        def release(self) -> None:
            real.release()

        __enter__ = acquire

        def __exit__(self, *exc: Any) -> None:
            real.release()

    conn.send_lock = BreakingLock()

    def call() -> Any:
        with pytest.raises(Unavailable):
            conn.call_plain("S.add", (1, 2))
        return True

    assert _in_thread(call)
    assert not conn.recv_lock.locked() and not real.locked()


class FaultySocket:
    """The real socket, with some of its methods replaced (fault injection);
    everything else goes to the real one."""

    def __init__(self, real: Any, **methods: Any) -> None:
        self._real = real
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_sync_send_failure_fails_the_call_at_once(impl, live_server):
    from fastrpc.errors import Unavailable

    client = _sync_client(impl, live_server)
    conn = client._conn
    real = conn.sock

    def sendall(data: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    conn.sock = FaultySocket(real, sendall=sendall)

    def call() -> Any:
        with pytest.raises(Unavailable, match="while sending"):
            client.call("S.add", 1, 1)
        return True

    try:
        assert _in_thread(call)  # not a hang waiting for an answer
        assert not conn.alive and conn._pending == {} and not conn.recv_lock.locked()
        assert client.call("S.add", 2, 1) == 3  # a new connection
    finally:
        conn.sock = real
        client.close()


def test_sync_interrupted_read_leaves_no_stale_slot(impl, live_server):
    client = _sync_client(impl, live_server)
    conn = client._conn
    real = conn.sock

    armed = [True]

    def recv_into(buf: Any, *args: Any) -> int:
        if armed:  # the first read only
            armed.clear()
            raise KeyboardInterrupt
        return real.recv_into(buf, *args)

    conn.sock = FaultySocket(real, recv_into=recv_into)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.call("S.add", 1, 1)
        assert conn._pending == {}
        assert not conn.recv_lock.locked()
        # The interrupted call's answer arrives first and must be dropped,
        # not handed to the next call.
        assert client.call("S.add", 20, 1) == 21
        assert client.call("S.add", 30, 1) == 31
    finally:
        conn.sock = real
        client.close()


def test_sync_plain_call_falls_back_when_the_socket_is_busy(impl, live_server):
    client = _sync_client(impl, live_server)
    conn = client._conn
    try:
        assert client.call("S.add", 1, 2, timeout=5.0) == 3  # deadline: general path
        assert client.call("S.add", 2, 2) == 4
        conn.recv_lock.acquire()  # another thread is the reader
        fut = client.go("S.add", 3, 2)  # answered by the go() reader once it can read
        conn.recv_lock.release()
        assert fut.result(10) == 5
        assert client.call("S.add", 4, 2) == 6
    finally:
        client.close()


def test_client_core_call_is_a_coroutine_and_cancel_reaches_the_server(impl):
    async def main():
        h = ClientHarness(impl)
        h.transport.writes.clear()
        coro = h.proto.call("S.add", [1, 2])
        assert asyncio.iscoroutine(coro)
        task = asyncio.create_task(coro)
        await asyncio.sleep(0)
        sent = _frames_after_preface(h.transport.writes)
        assert [(f.type, f.method, f.value) for f in sent] == [(W.MsgType.REQUEST, 0, [1, 2])]
        rid = sent[0].request_id
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        sent = _frames_after_preface(h.transport.writes)
        assert (sent[-1].type, sent[-1].request_id) == (W.MsgType.CANCEL, rid)
        assert h.proto.in_flight == 0
        # a late answer for the cancelled call is dropped
        h.writer.write_response(rid, 3)
        h.feed(h.writer.take())
        # calls with a deadline take the Python path, and time out
        from fastrpc.errors import DeadlineExceeded

        with pytest.raises(DeadlineExceeded):
            await h.proto.call("S.add", [1, 2], None, 0.01)
        assert h.proto.in_flight == 0

    asyncio.run(main())


def _frames_after_preface(writes: List[bytes]) -> List[Any]:
    parser = FrameParser(expect_preface=False)
    return parser.feed(b"".join(writes))
