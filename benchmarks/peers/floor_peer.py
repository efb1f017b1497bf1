"""The floor: a raw asyncio echo of fastrpc's own frame bytes (same contract).

No RPC layer can beat the work this does per call, so every other system
is also shown as a ratio to it.

Server: an ``asyncio.Protocol`` that writes back every chunk it receives
(on uvloop, or plain asyncio with ``--loop asyncio``).

Clients, each sending the exact bytes of a fastrpc request frame
(``add(i, 1)``) or of a fastrpc ``echo`` request frame carrying the payload,
and counting the same number of bytes back (echoes return in order, so no
ids and no parsing are needed):

* ``--client asyncio``: one future per call on an asyncio ``Protocol``,
  calls multiplexed on one connection like fastrpc's AsyncClient;
* ``--client socket``: a blocking socket, ``sendall`` then ``recv`` until
  the echo is complete (``seq`` and ``payload``, one call at a time).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys

from fastrpc.wire._framing_py import FrameWriter

from . import _common

SYSTEM = "floor"


class _Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve(args) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, _common.HOST, args.port, backlog=4096)
    _common.print_ready(server.sockets[0].getsockname()[1])
    await _common.wait_for_stop_async()
    server.close()


def serve(args) -> int:
    _common.run_async(lambda: _serve(args), args.loop)
    return 0


def _frames(payload_size: int):
    w = FrameWriter()
    w.write_request(1, 0, [12345, 1])
    add_frame = w.take()
    w.write_request(1, 1, [b"\0" * payload_size])
    return add_frame, w.take()


class _FloorProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.waiters = collections.deque()  # (bytes still expected, future)
        self.lost = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.lost = exc or ConnectionError("closed")
        while self.waiters:
            _, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))

    def call(self, frame: bytes) -> "asyncio.Future":
        fut = self.loop.create_future()
        self.waiters.append([len(frame), fut])
        self.transport.write(frame)
        return fut

    def data_received(self, data: bytes) -> None:
        n = len(data)
        waiters = self.waiters
        while n and waiters:
            head = waiters[0]
            if head[0] <= n:
                n -= head[0]
                waiters.popleft()
                head[1].set_result(None)
            else:
                head[0] -= n
                n = 0


class _AsyncFloorConn:
    def __init__(self, proto: _FloorProtocol, add_frame: bytes, echo_frame: bytes):
        self._proto = proto
        self._add_frame = add_frame
        self._echo_frame = echo_frame

    async def add(self, a, b):
        await self._proto.call(self._add_frame)
        return a + b  # the floor does not decode: it only waits for the bytes

    async def echo(self, data):
        await self._proto.call(self._echo_frame)
        return data

    async def close(self) -> None:
        self._proto.transport.close()


class _SocketFloorConn:
    def __init__(self, address: str, add_frame: bytes, echo_frame: bytes):
        host, port = _common.split_address(address)
        self._sock = socket.create_connection((host, port), timeout=_common.CALL_TIMEOUT)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        self._add_frame = add_frame
        self._echo_frame = echo_frame
        self._buf = bytearray(max(len(add_frame), len(echo_frame)))

    def _roundtrip(self, frame: bytes) -> None:
        self._sock.sendall(frame)
        need = len(frame)
        view = memoryview(self._buf)
        while need:
            n = self._sock.recv_into(view, need)
            if not n:
                raise ConnectionError("connection closed")
            need -= n

    def add(self, a, b):
        self._roundtrip(self._add_frame)
        return a + b

    def echo(self, data):
        self._roundtrip(self._echo_frame)
        return data

    def close(self) -> None:
        self._sock.close()


def client(args) -> int:
    add_frame, echo_frame = _frames(args.payload_size)
    if args.client == "socket":
        system = f"{SYSTEM}-socket"
        _common.start_watchdog(system, args.workload, args.duration)
        if args.workload not in ("seq", "payload"):
            result = _common.make_result(system, args.workload,
                                         error="the blocking-socket floor runs seq and payload only")
        else:
            result = _common.run_threaded(
                system, args, lambda: _SocketFloorConn(args.address, add_frame, echo_frame))
        _common.finish(result)
        return 0

    loop_name = _common.pick_loop(args.loop)
    system = f"{SYSTEM}-{loop_name}"
    extra = {"loop": loop_name}
    _common.start_watchdog(system, args.workload, args.duration, extra=extra)

    async def run():
        host, port = _common.split_address(args.address)

        async def connect():
            loop = asyncio.get_running_loop()
            _, proto = await loop.create_connection(_FloorProtocol, host, port)
            return _AsyncFloorConn(proto, add_frame, echo_frame)

        return await _common.run_asyncio(system, args, connect, multiplexed=True, extra=extra)

    result, _ = _common.run_async(run, loop_name)
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()

    def client_args(p):
        _common.add_loop_arg(p)
        p.add_argument("--client", choices=("asyncio", "socket"), default="asyncio")

    args = _common.parse_args(SYSTEM, argv, add_server_args=_common.add_loop_arg, add_client_args=client_args)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
