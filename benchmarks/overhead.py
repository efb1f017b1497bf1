"""Per-call CPU of fastrpc's own code against the floor's, with no syscalls.

Usage::

    python -m benchmarks.overhead            # full run (~20 s)
    python -m benchmarks.overhead --quick    # CI smoke run

On loopback a sequential call (W1) costs some 50 us, nearly all of it in the
kernel (send, wake-up, epoll, recv on both sides), and on shared cores that
part drifts by more than the whole of fastrpc's own work.  This script takes
the kernel out: each side of a call runs in one process against a fake
socket or transport that hands back prepared bytes at once, so what is timed
is the user-space work per call that W1's latency adds to the kernel's, for
fastrpc and for the floor clients and server of ``benchmarks/peers/
floor_peer.py`` (which only move bytes), measured alternately in one run:

* server: one request read and answered (``ServerConnection`` reading into
  the parser's memory, or from ``data_received`` with the pure build, vs
  the floor's ``data_received`` echo);
* sync client: ``Client.call("Bench.add", i, 1)`` vs the floor's blocking
  socket round trip (``sendall`` + ``recv_into``);
* async client: ``await AsyncClient.call(...)`` vs the floor's future per
  call, on uvloop, the answer arriving one loop iteration after the write.

Figures are the best of several repeats, in ns per call, with fastrpc's
extra cost over the floor (the +us that W1's p50 pays) and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from typing import Any, Callable, List

import fastrpc
from fastrpc.server.connection import ServerConnection
from fastrpc._impl import IMPLEMENTATION, FrameWriter

from benchmarks.peers import floor_peer

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


class Bench:
    def add(self, a: int, b: int) -> int:
        return a + b


def _responses(first_rid: int, n: int) -> List[bytes]:
    w = FrameWriter()
    out = []
    for rid in range(first_rid, first_rid + n):
        w.write_response(rid, rid + 1)
        out.append(w.take())
    return out


class FakeSocket:
    """A connected socket whose peer answers at once with prepared frames."""

    def __init__(self, answers: List[bytes]) -> None:
        self.answers = answers
        self.next = 0

    def sendall(self, data: Any) -> None:
        pass

    def recv_into(self, buf: Any, nbytes: int = 0) -> int:
        data = self.answers[self.next]
        self.next += 1
        n = len(data)
        buf[:n] = data
        return n

    def settimeout(self, timeout: Any) -> None:
        pass

    def close(self) -> None:
        pass


class FakeTransport:
    """A transport whose peer answers one loop iteration after each write."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[], None]) -> None:
        self.loop = loop
        self.deliver = deliver

    def write(self, data: Any) -> None:
        self.loop.call_soon(self.deliver)

    def writelines(self, chunks: Any) -> None:
        self.loop.call_soon(self.deliver)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def buffered(proto: Any) -> bool:
    """Whether a transport hands ``proto`` its reads in the protocol's own
    memory (``get_buffer``/``buffer_updated``: an ``asyncio.BufferedProtocol``,
    fastrpc's compiled build) or as bytes objects (``data_received``: the
    pure build)."""
    return isinstance(proto, asyncio.BufferedProtocol)


def best(fn: Callable[[int], None], n: int, repeat: int) -> float:
    """Best ns per call of ``fn(n)`` over ``repeat`` runs (``fn.prepare(n)``,
    when there is one, sets up each run untimed)."""
    out = float("inf")
    prepare = getattr(fn, "prepare", None)
    for _ in range(repeat):
        if prepare is not None:
            prepare(n)
        t0 = time.perf_counter_ns()
        fn(n)
        out = min(out, (time.perf_counter_ns() - t0) / n)
    return out


# -- server --------------------------------------------------------------------


def fastrpc_server_case(loop: asyncio.AbstractEventLoop, metadata: Any = None, **options: Any) -> Callable[[int], None]:
    """``fn(n)``: n requests (carrying ``metadata``) read and answered by a
    ServerConnection made with ``options`` (as a transport feeds them, no
    syscalls)."""
    srv = fastrpc.Server(handshake_timeout=None, **options)
    srv.register(Bench())
    srv._loop = loop
    srv._freeze()

    class Sink:
        def write(self, data: Any) -> None:
            pass

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

    conn = ServerConnection(srv)
    conn.connection_made(Sink())
    w = FrameWriter()
    w.write_preface()
    w.write_frame(fastrpc.MsgType.HANDSHAKE, 0, {"client": "bench"})
    hello = w.take()
    w.write_request(1, srv.methods.index("Bench.add"), [12345, 1], metadata=metadata)
    request = w.take()
    size = len(request)
    # Each loop as a transport reads, with no extra call layer timed.
    if buffered(conn):
        get_buffer, buffer_updated = conn.get_buffer, conn.buffer_updated
        get_buffer(-1)[:len(hello)] = hello
        buffer_updated(len(hello))

        def fastrpc_server(n: int) -> None:
            for _ in range(n):
                get_buffer(-1)[:size] = request
                buffer_updated(size)
    else:
        data_received = conn.data_received
        data_received(hello)

        def fastrpc_server(n: int) -> None:
            for _ in range(n):
                data_received(request)

    return fastrpc_server


def server_cases(loop: asyncio.AbstractEventLoop):
    fastrpc_server = fastrpc_server_case(loop)
    w = FrameWriter()
    w.write_request(1, 0, [12345, 1])
    request = w.take()

    class Sink:
        def write(self, data: Any) -> None:
            pass

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

    echo = floor_peer._Echo()
    echo.connection_made(Sink())

    def floor_server(n: int) -> None:
        data_received = echo.data_received
        for _ in range(n):
            data_received(request)

    return fastrpc_server, floor_server


# -- sync client -----------------------------------------------------------------


def fastrpc_sync_case(address: str, parent: Any = None, **options: Any) -> Any:
    """``(fn, close)``: ``fn(k)`` makes k ``Client.call``s (made with
    ``options``) against a socket that answers at once; ``fn.prepare(k)``
    loads its answers.  ``parent``: a CallContext the calls are made in (as
    in a handler), for what they inherit."""
    from fastrpc.core.context import reset_current, serving, set_current

    client = fastrpc.Client(address, **options)
    conn = client._connection()
    real_sock = conn.sock

    def fastrpc_sync(k: int) -> None:
        call = client.call
        if parent is None:
            for i in range(k):
                call("Bench.add", i, 1)
            return
        token = set_current(parent)
        serving[0] += 1  # a handler's process has a server
        try:
            for i in range(k):
                call("Bench.add", i, 1)
        finally:
            serving[0] -= 1
            reset_current(token)

    def prepare_sync(k: int) -> None:
        conn.sock = FakeSocket(_responses(conn._next_id + 1, k))

    fastrpc_sync.prepare = prepare_sync  # type: ignore[attr-defined]

    def close() -> None:
        conn.sock = real_sock
        client.close()

    return fastrpc_sync, close


def sync_cases(address: str, n: int, repeat: int):
    fastrpc_sync, fastrpc_close = fastrpc_sync_case(address)
    add_frame, echo_frame = floor_peer._frames(16)
    floor = floor_peer._SocketFloorConn(address.replace("tcp://", ""), add_frame, echo_frame)
    floor_sock = floor._sock
    floor._sock = FakeSocket([add_frame] * (n * (repeat + 1)))

    def floor_sync(k: int) -> None:
        add = floor.add
        for i in range(k):
            add(i, 1)

    def close() -> None:
        fastrpc_close()
        floor_sock.close()

    return fastrpc_sync, floor_sync, close


# -- async client ----------------------------------------------------------------


def fastrpc_async_case(loop: asyncio.AbstractEventLoop, parent: Any = None, **options: Any) -> Callable[[int], None]:
    """``fn(k)``: k ``await AsyncClient.call``s (a client made with
    ``options``) on a transport whose peer answers one loop iteration after
    each write; ``fn.prepare(k)`` loads the answers.  ``parent``: a
    CallContext the calls are made in (as in a handler)."""
    from fastrpc.core.context import serving, set_current

    from fastrpc.client._aio import ClientProtocol

    proto = ClientProtocol(loop, fastrpc.ClientOptions())
    state = {"answers": [], "next": 0}

    if buffered(proto):
        get_buffer, buffer_updated = proto.get_buffer, proto.buffer_updated

        def deliver() -> None:
            data = state["answers"][state["next"]]
            state["next"] += 1
            get_buffer(-1)[:len(data)] = data
            buffer_updated(len(data))
    else:
        data_received = proto.data_received

        def deliver() -> None:
            data = state["answers"][state["next"]]
            state["next"] += 1
            data_received(data)

    transport = FakeTransport(loop, lambda: None)  # the preface and handshake need no answer
    proto.connection_made(transport)
    transport.deliver = deliver
    w = FrameWriter()
    w.write_preface()
    w.write_frame(fastrpc.MsgType.HANDSHAKE, 0, {"methods": ["Bench.add"]})
    state["answers"] = [w.take()]
    deliver()
    client = fastrpc.AsyncClient("tcp://127.0.0.1:1", **options)
    client.endpoint.connection = proto  # as if connected

    def prepare_async(k: int) -> None:
        state["answers"] = _responses(proto._next_id + 1, k)
        state["next"] = 0

    def fastrpc_async(k: int) -> None:
        async def run() -> None:
            call = client.call
            if parent is not None:
                set_current(parent)  # this task's context only
            for i in range(k):
                await call("Bench.add", i, 1)

        if parent is not None:
            serving[0] += 1  # a handler's process has a server
        try:
            loop.run_until_complete(run())
        finally:
            if parent is not None:
                serving[0] -= 1

    fastrpc_async.prepare = prepare_async  # type: ignore[attr-defined]
    return fastrpc_async


def async_cases(loop: asyncio.AbstractEventLoop):
    fastrpc_async = fastrpc_async_case(loop)
    add_frame, echo_frame = floor_peer._frames(16)
    fproto = floor_peer._FloorProtocol.__new__(floor_peer._FloorProtocol)

    def fdeliver() -> None:
        fproto.data_received(add_frame)

    async def setup() -> None:
        floor_peer._FloorProtocol.__init__(fproto)

    loop.run_until_complete(setup())
    fproto.connection_made(FakeTransport(loop, fdeliver))
    fconn = floor_peer._AsyncFloorConn(fproto, add_frame, echo_frame)

    def floor_async(k: int) -> None:
        async def run() -> None:
            add = fconn.add
            for i in range(k):
                await add(i, 1)

        loop.run_until_complete(run())

    return fastrpc_async, floor_async


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (CI smoke run)")
    args = ap.parse_args(argv)
    n, repeat = (5_000, 3) if args.quick else (50_000, 7)
    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = fastrpc.Server()
    server.register(Bench())
    address = loop.run_until_complete(server.start("tcp://127.0.0.1:0"))
    import threading

    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        sync_fast, sync_floor, sync_close = sync_cases(address, n, repeat)
        rows = [("sync client", sync_fast, sync_floor)]
        results = []
        for name, ours, floor in rows:
            a = b = float("inf")
            for _ in range(repeat):  # alternate, so that drift hits both
                a = min(a, best(ours, n, 1))
                b = min(b, best(floor, n, 1))
            results.append((name, a, b))
        sync_close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        time.sleep(0.2)
    loop.run_until_complete(server.shutdown(grace=0))
    for name, ours, floor in [("server", *server_cases(loop)), ("async client", *async_cases(loop))]:
        a = b = float("inf")
        for _ in range(repeat):
            a = min(a, best(ours, n, 1))
            b = min(b, best(floor, n, 1))
        results.append((name, a, b))
    loop.close()
    print(f"fastrpc per-call CPU vs the floor, no syscalls ({IMPLEMENTATION} build; "
          f"{platform.machine()}, CPython {platform.python_version()}; best of {repeat} x {n:,})")
    print(f"{'path':<14} {'fastrpc ns':>11} {'floor ns':>9} {'extra us':>9} {'ratio':>6}")
    for name, ours, floor in results:
        print(f"{name:<14} {ours:>11.0f} {floor:>9.0f} {(ours - floor) / 1000:>+9.2f} {ours / floor:>5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
