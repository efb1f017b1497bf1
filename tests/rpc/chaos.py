"""An asyncio chaos proxy for fault-injection tests.

It sits between a client and a server on loopback and, per direction,
can fragment every write into 1-byte pieces, delay each chunk, stall
(stop forwarding until told to go on), or cut the connection after a given
number of bytes, mid-frame.
"""

from __future__ import annotations

import asyncio
import socket
from typing import List, Optional, Tuple


class Direction:
    """Fault settings for one direction of every proxied connection."""

    def __init__(self) -> None:
        self.fragment = False
        self.delay = 0.0
        self.cut_after: Optional[int] = None
        self.stalled = asyncio.Event()
        self.stalled.set()  # set = flowing

    def stall(self) -> None:
        self.stalled.clear()

    def resume(self) -> None:
        self.stalled.set()


class ChaosProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = Direction()  # client -> server
        self.down = Direction()  # server -> client
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: List[asyncio.Task] = []
        self._writers: List[asyncio.StreamWriter] = []
        self.connections = 0
        self.cuts = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.append(w)
        pair = (cwriter, swriter)
        t1 = asyncio.ensure_future(self._pump(creader, swriter, self.up, pair))
        t2 = asyncio.ensure_future(self._pump(sreader, cwriter, self.down, pair))
        self._tasks += [t1, t2]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, d: Direction, pair: Tuple) -> None:
        sent = 0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await d.stalled.wait()
                if d.delay:
                    await asyncio.sleep(d.delay)
                if d.cut_after is not None and sent + len(data) >= d.cut_after:
                    data = data[: max(0, d.cut_after - sent)]
                    self._write(writer, data, d)
                    self.cuts += 1
                    for w in pair:
                        w.transport.abort()
                    return
                await self._write_async(writer, data, d)
                sent += len(data)
            writer.close()
        except (ConnectionError, OSError, asyncio.CancelledError):
            for w in pair:
                w.transport.abort()

    def _write(self, writer: asyncio.StreamWriter, data: bytes, d: Direction) -> None:
        writer.write(data)

    async def _write_async(self, writer: asyncio.StreamWriter, data: bytes, d: Direction) -> None:
        if d.fragment:
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)  # separate segments, separate reads
        else:
            writer.write(data)
            await writer.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.up.resume()
        self.down.resume()
        for w in self._writers:
            w.transport.abort()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
