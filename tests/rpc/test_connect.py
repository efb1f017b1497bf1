"""Connecting and saying goodbye: both clients follow the same session rules.

The review's findings against the blocking client, each a test that fails
on the code it found: a 1.0-style goodbye, only the first ``getaddrinfo``
result tried, the server's GOAWAY reason overwritten by the EOF after it,
and a refusal (``max_connections``) reported as a bare "connection closed".
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, List

import pytest

import fastrpc
from fastrpc import MsgType

from rpc_support import Arith, free_port, hostport

UNAVAILABLE = int(fastrpc.StatusCode.UNAVAILABLE)


class RecordingServer:
    """A fastrpc server written by hand: answers the handshake, then does
    what the test says with each request, and records every frame."""

    def __init__(self, on_request: Any = None) -> None:
        self.frames: List[Any] = []
        self.on_request = on_request
        self.closed = asyncio.Event()
        self._server: Any = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return "127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: Any, writer: Any) -> None:
        parser = fastrpc.FrameParser()
        w = fastrpc.FrameWriter()
        w.write_preface()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for f in parser.feed(data):
                    self.frames.append(f)
                    if f.type == MsgType.HANDSHAKE:
                        w.write_frame(MsgType.HANDSHAKE, 0, {"methods": ["Arith.multiply"], "max_frame_size": 1 << 20})
                    elif f.type == MsgType.REQUEST and self.on_request is not None:
                        if self.on_request(f, w) == "close":
                            writer.write(w.take())
                            await writer.drain()
                            writer.close()
                            return
                writer.write(w.take())
        finally:
            writer.close()
            self.closed.set()

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


def test_sync_client_says_a_1_1_goaway_when_it_closes(run):
    async def main():
        srv = RecordingServer(lambda f, w: w.write_response(f.request_id, 56))
        address = await srv.start()
        loop = asyncio.get_running_loop()
        try:

            def use() -> Any:
                with fastrpc.Client(address) as c:
                    return c.call("Arith.multiply", 7, 8)

            assert await loop.run_in_executor(None, use) == 56
            await asyncio.wait_for(srv.closed.wait(), 5)
            goaways = [f.value for f in srv.frames if f.type == MsgType.GOAWAY]
            assert goaways == [[0, "client closing", 0]]  # [code, message, last]: the client accepted no calls
        finally:
            await srv.stop()

    run(main())


def test_async_client_says_the_same_goaway(run):
    async def main():
        srv = RecordingServer(lambda f, w: w.write_response(f.request_id, 56))
        address = await srv.start()
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("Arith.multiply", 7, 8) == 56
            await asyncio.wait_for(srv.closed.wait(), 5)
            assert [f.value for f in srv.frames if f.type == MsgType.GOAWAY] == [[0, "client closing", 0]]
        finally:
            await srv.stop()

    run(main())


def test_the_servers_goaway_reason_survives_the_eof_after_it(run):
    # The server takes the call (last = its id: it may have run), says why
    # it leaves, and closes: the call fails with the server's reason.
    def leave(f: Any, w: Any) -> str:
        w.write_frame(MsgType.GOAWAY, 0, [UNAVAILABLE, "maintenance window", f.request_id])
        return "close"

    async def main():
        srv = RecordingServer(leave)
        address = await srv.start()
        loop = asyncio.get_running_loop()
        try:
            c = await loop.run_in_executor(None, fastrpc.Client, address)
            try:
                with pytest.raises(fastrpc.Unavailable) as info:
                    await loop.run_in_executor(None, c.call, "Arith.multiply", 7, 8)
            finally:
                c.close()
            assert type(info.value) is fastrpc.Unavailable  # may have run: not NotProcessed
            assert "maintenance window" in str(info.value)
            async with fastrpc.AsyncClient(address) as ac:
                with pytest.raises(fastrpc.Unavailable) as ainfo:
                    await ac.call("Arith.multiply", 7, 8)
            assert "maintenance window" in str(ainfo.value)
        finally:
            await srv.stop()

    run(main())


def test_a_refused_connection_says_why_in_both_clients(run):
    async def main():
        server = fastrpc.Server(max_connections=1)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        loop = asyncio.get_running_loop()
        try:
            async with fastrpc.AsyncClient(address):
                with pytest.raises(fastrpc.Unavailable) as ainfo:
                    await fastrpc.AsyncClient(address).connect()
                with pytest.raises(fastrpc.Unavailable) as sinfo:
                    await loop.run_in_executor(None, fastrpc.Client, address)
            for info in (ainfo, sinfo):
                assert str(info.value) == f"[UNAVAILABLE] cannot connect to {address}: server said goaway: too many connections"
        finally:
            await server.shutdown()

    run(main())


def test_sync_client_tries_every_address_a_name_resolves_to(run, monkeypatch):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        _, port = hostport(address)
        dead = free_port()  # nothing listens there: refused
        real = socket.getaddrinfo

        def resolve(host: Any, p: Any, *args: Any, **kw: Any) -> Any:
            if host == "rpc.test":
                tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
                return [tcp + (("127.0.0.1", dead),), tcp + (("127.0.0.1", port),)]
            return real(host, p, *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        loop = asyncio.get_running_loop()
        try:

            def use() -> Any:
                with fastrpc.Client(f"rpc.test:{port}", connect_timeout=5) as c:
                    return c.call("Arith.multiply", 6, 7)

            assert await loop.run_in_executor(None, use) == 42
        finally:
            await server.shutdown()

    run(main())
