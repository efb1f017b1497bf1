"""GOAWAY names the last call the server accepted; clients resend the later
ones (which never ran) once, on a new connection.

The real server is checked for what its GOAWAY says (idle timeout,
shutdown); the clients are driven by a server written at the frame level,
which makes each race (a call sent just as the server leaves) happen every
time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, List, Optional

import pytest

import fastrpc
from fastrpc import MsgType
from fastrpc.errors import DeadlineExceeded, NotProcessed, Unavailable
from fastrpc.core.session import sent_after

from rpc_support import Arith, hostport

UNAVAILABLE = int(fastrpc.StatusCode.UNAVAILABLE)


# -- the rule --------------------------------------------------------------------


def test_sent_after_orders_ids_across_the_wrap():
    assert sent_after(5, 4, 9) and not sent_after(4, 4, 9) and not sent_after(3, 4, 9)
    assert sent_after(1, 0, 1)  # last 0: the server accepted none
    # ids wrap from 2**32-1 to 1
    top = 0xFFFFFFFF
    assert sent_after(1, top, 3) and sent_after(3, top - 1, 3)
    assert not sent_after(top, 2, 3) and not sent_after(top - 5, top, 3)


# -- what the real server says ------------------------------------------------------


async def _raw_client(address: str):
    reader, writer = await asyncio.open_connection(*hostport(address))
    w = fastrpc.FrameWriter()
    w.write_preface()
    w.write_frame(MsgType.HANDSHAKE, 0, {})
    writer.write(w.take())
    return reader, writer, w, fastrpc.FrameParser()


async def _frames_until(reader, parser, want: Callable[[List[Any]], bool], timeout: float = 5.0) -> List[Any]:
    got: List[Any] = []
    deadline = time.monotonic() + timeout
    while not want(got):
        chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
        if not chunk:
            break
        got += parser.feed(chunk)
    return got


def test_idle_goaway_names_the_last_call(run):
    async def main():
        server = fastrpc.Server(idle_timeout=0.2)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            reader, writer, w, parser = await _raw_client(address)
            index = server.methods.index("Arith.multiply")
            got: List[Any] = []
            # by name (the Python path), then by index (the core's fast path)
            for rid, method, args in ((7, "Arith.multiply", [2, 3]), (9, index, [4, 5])):
                w.write_request(rid, method, args)
                writer.write(w.take())
                got += await _frames_until(reader, parser, lambda fs: any(f.request_id == rid for f in fs))
            got += await _frames_until(reader, parser, lambda fs: any(f.type == MsgType.GOAWAY for f in fs))
            answers = {f.request_id: f.value for f in got if f.type == MsgType.RESPONSE}
            assert answers == {7: 6, 9: 20}
            goaway = [f for f in got if f.type == MsgType.GOAWAY][0]
            assert goaway.value[0] == UNAVAILABLE and goaway.value[2] == 9
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_shutdown_goaway_names_the_last_call_and_refuses_later_ones(run):
    async def main():
        gate = asyncio.Event()

        class Slow:
            async def wait(self):
                await gate.wait()
                return "done"

        server = fastrpc.Server()
        server.register(Slow())
        address = await server.start("tcp://127.0.0.1:0")
        reader, writer, w, parser = await _raw_client(address)
        w.write_request(3, "Slow.wait", [])
        writer.write(w.take())
        await asyncio.sleep(0.1)
        stopping = asyncio.ensure_future(server.shutdown(grace=5))
        got = await _frames_until(reader, parser, lambda fs: any(f.type == MsgType.GOAWAY for f in fs))
        goaway = [f for f in got if f.type == MsgType.GOAWAY][0]
        assert goaway.value[2] == 3
        # a call that crossed the GOAWAY is answered UNAVAILABLE, not run
        w.write_request(4, "Slow.wait", [])
        writer.write(w.take())
        got = await _frames_until(reader, parser, lambda fs: any(f.request_id == 4 for f in fs))
        assert [(f.type, f.value[0]) for f in got if f.request_id == 4] == [(MsgType.ERROR, UNAVAILABLE)]
        gate.set()
        got = await _frames_until(reader, parser, lambda fs: any(f.request_id == 3 for f in fs))
        assert [(f.type, f.value) for f in got if f.request_id == 3] == [(MsgType.RESPONSE, "done")]
        await stopping
        writer.close()

    run(main())


def test_sync_client_resends_a_call_the_idle_server_never_read(run):
    # The blocking client reads only while it calls: after an idle close it
    # sends its next call into the closed connection, then finds the GOAWAY.
    async def main():
        server = fastrpc.Server(idle_timeout=0.2)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")

        def quiet_then_call(c, *call, **options):
            # Stay quiet past the idle timeout, then call: the call goes into
            # the connection the server has closed, which the client has not
            # read since, and comes back NotProcessed; it is sent again.
            conn = c._conn
            time.sleep(0.6)
            assert conn.alive and not conn.peer_goaway  # nothing read yet
            result = c.call(*call, **options)
            assert conn.peer_goaway and conn._goaway_last == 1 and not conn.alive
            assert c._conn is not conn
            return result

        def sync_side():
            with fastrpc.Client(address) as c:
                assert c.call("Arith.multiply", 7, 8) == 56
                return quiet_then_call(c, "Arith.multiply", 6, 7), quiet_then_call(c, "Arith.add", 2, 3, timeout=5.0)

        try:
            assert await asyncio.get_running_loop().run_in_executor(None, sync_side) == (42, 5)
        finally:
            await server.shutdown()

    run(main())


# -- clients against a scripted server ---------------------------------------------------


class ScriptedServer:
    """A fastrpc server at the frame level.  Each request goes to
    ``on_request(conn, frame)``; ``conn.number`` counts connections from 0."""

    def __init__(self, on_request: Callable[["ScriptedConn", Any], Awaitable[None]]) -> None:
        self.on_request = on_request
        #: called with each connection once its client has closed it
        self.on_close: Callable[["ScriptedConn"], Any] = lambda conn: None
        self.connections = 0
        #: the connections, by number
        self.live: List["ScriptedConn"] = []
        self.requests: List[Any] = []
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"tcp://{host}:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ScriptedConn(self.connections, writer)
        self.connections += 1
        self.live.append(conn)
        parser = fastrpc.FrameParser()
        conn.w.write_preface()
        conn.w.write_frame(MsgType.HANDSHAKE, 0, {"methods": ["Arith.multiply"]})
        conn.flush()
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    self.on_close(conn)
                    break
                for f in parser.feed(data):
                    if f.type == MsgType.REQUEST and not conn.closed:
                        self.requests.append((conn.number, f.request_id))
                        await self.on_request(conn, f)
        finally:
            conn.close()


class ScriptedConn:
    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.w = fastrpc.FrameWriter()
        self.closed = False

    def flush(self) -> None:
        if not self.closed:
            self.writer.write(self.w.take())

    def answer(self, f: Any) -> None:
        a, b = f.value
        self.w.write_response(f.request_id, a * b)
        self.flush()

    def goaway(self, *payload: Any) -> None:
        self.w.write_frame(MsgType.GOAWAY, 0, payload)
        self.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


def _goaway_on_connection(n: int, last: Callable[[Any], Any], then_close: bool = True):
    """Connection ``n`` answers its first request, then says GOAWAY (with
    ``last(frame)`` as its third field, or no third field for None) on the
    next and closes; every other connection answers everything."""

    async def on_request(conn: ScriptedConn, f: Any) -> None:
        if conn.number == n and getattr(conn, "answered", False):
            value = last(f)
            conn.goaway(UNAVAILABLE, "idle", *(() if value is None else (value,)))
            if then_close:
                conn.close()
            else:
                conn.w.write_error(f.request_id, UNAVAILABLE, "server shutting down")
                conn.flush()
            return
        conn.answered = True
        conn.answer(f)

    return on_request


# Every client; a Pool is opened with both of its connections up, so that
# a resent call has another one to go to.
ALL_CLIENTS = pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)


async def _calls(client: Any, n: int = 4, timeout: Optional[float] = None) -> List[Any]:
    # n calls one after another, round robin over a Pool's connections:
    # connection 0's second request arrives within the first four.
    out: List[Any] = []
    for i in range(n):
        try:
            out.append(await client.call("Arith.multiply", i, 5, timeout=timeout))
        except Unavailable as exc:
            out.append(exc)
    return out


@ALL_CLIENTS
@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("then", ["close", "refuse"])
def test_call_not_read_is_resent(run, client_kind, timeout, then):
    # Connection 0 leaves just as its second call reaches it, naming the
    # call before as its last: the second call never ran and goes again on
    # another connection.  "refuse": the server keeps the connection open
    # and answers the call UNAVAILABLE after its GOAWAY.  (timeout None:
    # the sync client's plain fast path; 5.0: its general path.)
    async def main():
        srv = ScriptedServer(_goaway_on_connection(0, lambda f: f.request_id - 1, then_close=then == "close"))
        address = await srv.start()
        client = await client_kind.open(address)
        try:
            assert await _calls(client, timeout=timeout) == [0, 5, 10, 15]
            conns = [c for c, _ in srv.requests]
            assert conns.count(0) == 2 and len(srv.requests) == 5
            if client_kind.name != "pool":  # one connection at a time: in order
                assert conns == [0, 0, 1, 1, 1]
        finally:
            await client.close()
            await srv.stop()

    run(main())


@ALL_CLIENTS
@pytest.mark.parametrize("last", ["this call", "no field"])
def test_call_the_server_may_have_run_is_not_resent(run, client_kind, last):
    # GOAWAY names this very call as accepted (or, from an older peer, names
    # none): it may have run, so it fails UNAVAILABLE and is not resent.
    async def main():
        pick = (lambda f: f.request_id) if last == "this call" else (lambda f: None)
        srv = ScriptedServer(_goaway_on_connection(0, pick))
        address = await srv.start()
        client = await client_kind.open(address)
        try:
            results = await _calls(client)
            failed = [r for r in results if isinstance(r, BaseException)]
            assert len(failed) == 1 and type(failed[0]) is Unavailable
            assert len(srv.requests) == 4
            if client_kind.name != "pool":  # the second call, on connection 0
                assert results[1] is failed[0] and [c for c, _ in srv.requests] == [0, 0, 1, 1]
        finally:
            await client.close()
            await srv.stop()

    run(main())


async def _always_leave(conn: ScriptedConn, f: Any) -> None:
    # A server that says GOAWAY (having accepted nothing) to every request.
    conn.goaway(UNAVAILABLE, "leaving", 0)
    conn.close()


def test_resend_happens_once(run, client_kind):
    # Every connection says GOAWAY (having accepted nothing) to its request:
    # a call and a go() call are each sent twice, then fail NotProcessed.
    async def main():
        srv = ScriptedServer(_always_leave)
        address = await srv.start()
        client = await client_kind.open(address)
        try:
            with pytest.raises(NotProcessed):
                await client.call("Arith.multiply", 4, 5)
            assert len(srv.requests) == 2
            with pytest.raises(NotProcessed):
                await client.go("Arith.multiply", 4, 5)
            assert len(srv.requests) == 4
        finally:
            await client.close()
            await srv.stop()

    run(main())


def test_async_resend_keeps_the_deadline(run):
    async def main():
        async def on_request(conn: ScriptedConn, f: Any) -> None:
            if conn.number == 0:
                await asyncio.sleep(0.3)  # the call's time runs here
                conn.goaway(UNAVAILABLE, "leaving", 0)
                conn.close()
            # the second connection never answers

        srv = ScriptedServer(on_request)
        address = await srv.start()
        client = await fastrpc.connect(address)
        try:
            t0 = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await client.call("Arith.multiply", 4, 5, timeout=0.6)
            took = time.monotonic() - t0
            assert 0.5 <= took < 0.85, took  # the original deadline, not a fresh one
            assert len(srv.requests) == 2
        finally:
            await client.close()
            await srv.stop()

    run(main())


def test_sync_go_call_not_read_is_resent(run):
    async def main():
        srv = ScriptedServer(_goaway_on_connection(0, lambda f: f.request_id - 1))
        address = await srv.start()

        def sync_side():
            with fastrpc.Client(address) as c:
                assert c.go("Arith.multiply", 2, 3).result(5) == 6
                assert c.go("Arith.multiply", 4, 5, timeout=5.0).result(5) == 20
                assert c.go("Arith.multiply", 6, 7).result(5) == 42

        try:
            await asyncio.get_running_loop().run_in_executor(None, sync_side)
            assert [c for c, _ in srv.requests] == [0, 0, 1, 1]
        finally:
            await srv.stop()

    run(main())


class HoldFirst:
    """A scripted server's policy: connection 0's first request is held
    (``await held()`` gives its connection and frame); the rest are answered."""

    def __init__(self) -> None:
        self._held: List[Any] = []
        self._got = asyncio.Event()

    async def __call__(self, conn: ScriptedConn, f: Any) -> None:
        if conn.number == 0 and not self._held:
            self._held.append((conn, f))
            self._got.set()
            return
        conn.answer(f)

    async def held(self) -> Any:
        await asyncio.wait_for(self._got.wait(), 5)
        return self._held[0]


async def _until(predicate: Callable[[], bool]) -> None:
    # Poll (bounded) until the client side has seen what the test sent.
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for the client")


@pytest.mark.parametrize("client_kind", ["sync", "async"], indirect=True)
def test_calls_in_flight_survive_the_switch_and_the_old_connection_closes_once_idle(run, client_kind):
    # After connection 0's GOAWAY (naming the call in flight as accepted),
    # another call opens connection 1.  The call in flight on connection 0
    # still gets its answer, and the client closes connection 0 once nothing
    # is left on it; a connection told GOAWAY with nothing in flight is
    # closed at once.  Both clients follow the same session rules here.
    async def main():
        policy = HoldFirst()
        closed = {0: asyncio.Event(), 1: asyncio.Event(), 2: asyncio.Event()}
        srv = ScriptedServer(policy)
        srv.on_close = lambda conn: closed[conn.number].set()
        address = await srv.start()
        client = await client_kind.open(address)

        def switched() -> bool:  # the client saw the GOAWAY (its reader did)
            conn = client.connection()
            return conn is None or conn.peer_goaway

        try:
            first = asyncio.ensure_future(client.call("Arith.multiply", 2, 3))
            conn0, f = await policy.held()
            conn0.goaway(UNAVAILABLE, "going away", f.request_id)
            await _until(switched)
            assert await client.call("Arith.multiply", 4, 5) == 20  # on connection 1
            assert srv.connections == 2 and not closed[0].is_set()  # a call in flight: left open
            conn0.answer(f)  # the accepted call is answered after all
            assert await asyncio.wait_for(first, 5) == 6
            await asyncio.wait_for(closed[0].wait(), 5)  # closed once its last call was answered
            srv.live[1].goaway(UNAVAILABLE, "going away", 0)
            if client_kind.name == "async":
                await _until(switched)
            # (the blocking client reads only while a call waits: it learns
            # of this GOAWAY with the next call, which is then sent again)
            assert await client.call("Arith.multiply", 6, 7) == 42  # on connection 2
            await asyncio.wait_for(closed[1].wait(), 5)  # nothing in flight: closed at once
        finally:
            await client.close()
            await srv.stop()

    run(main())


def test_async_close_closes_a_draining_connection_with_calls_in_flight(run):
    async def main():
        policy = HoldFirst()
        closed = {0: asyncio.Event(), 1: asyncio.Event()}
        srv = ScriptedServer(policy)
        srv.on_close = lambda conn: closed[conn.number].set()
        address = await srv.start()
        client = await fastrpc.connect(address)
        try:
            first = asyncio.ensure_future(client.call("Arith.multiply", 2, 3))
            conn0, f = await policy.held()
            conn0.goaway(UNAVAILABLE, "going away", f.request_id)
            await _until(lambda: client.endpoint.state is fastrpc.EndpointState.DRAINING)
            await client.close()
            await asyncio.wait_for(closed[0].wait(), 5)  # the draining one, by close()
            with pytest.raises(fastrpc.Unavailable):
                await first
        finally:
            await client.close()
            await srv.stop()

    run(main())
