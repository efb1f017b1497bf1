"""asyncio glue between a transport and the wire layer.

:class:`BaseProtocol` owns the transport, the frame parser and the frame
writer, coalesces writes (everything produced in one loop tick leaves in
one ``transport.write``) and handles flow control.  :class:`ClientProtocol`
adds the client side of a connection: request ids, the futures of calls in
flight, deadlines and cancellation.  The server side lives in ``server.py``.

Only this layer resolves call futures; the wire layer below it only parses
and builds frames.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Awaitable, Callable, Dict, Optional

from ..wire import constants as W
from .._impl import ClientCore, FrameParser, FrameWriter, ReadProtocol
from ..errors import (
    DeadlineExceeded,
    FrameError,
    Internal,
    NotProcessed,
    RpcError,
    StatusCode,
    Unavailable,
    error_from_payload,
)

__all__ = ["BaseProtocol", "ClientProtocol"]

# Plain ints: comparing a frame's type against an IntEnum member is slower.
REQUEST = int(W.MsgType.REQUEST)
RESPONSE = int(W.MsgType.RESPONSE)
ERROR = int(W.MsgType.ERROR)
NOTIFY = int(W.MsgType.NOTIFY)
CANCEL = int(W.MsgType.CANCEL)
PING = int(W.MsgType.PING)
PONG = int(W.MsgType.PONG)
GOAWAY = int(W.MsgType.GOAWAY)
HANDSHAKE = int(W.MsgType.HANDSHAKE)

try:
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("fastrpc")
except Exception:  # noqa: BLE001 - running from a source tree
    _VERSION = "0"
AGENT = f"fastrpc/{_VERSION}"


def goaway_last_call(value: Any) -> Optional[int]:
    """The last accepted request id a GOAWAY payload
    ``[code, message, last]`` names (``0``: none), or None when it names
    none (a peer that sends only ``[code, message]``)."""
    if type(value) is list and len(value) >= 3 and type(value[2]) is int and 0 <= value[2] <= 0xFFFFFFFF:
        return value[2]
    return None


def sent_after(rid: int, last: int, newest: int) -> bool:
    """Whether request ``rid`` was sent after request ``last`` on a
    connection whose newest request id is ``newest``.

    Ids are handed out in increasing order, wrapping from 2**32-1 to 1, so
    the one sent later is the one fewer steps behind the newest.  ``last``
    0 means the server accepted none.
    """
    if last == 0:
        return True
    return (newest - rid) & 0xFFFFFFFF < (newest - last) & 0xFFFFFFFF


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle on TCP transports: RPC frames are small and latency-bound."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - socket already gone
            pass


class BaseProtocol(ReadProtocol):  # type: ignore[misc,valid-type]
    """Transport, parser, writer and write coalescing for one connection.

    An ``asyncio.BufferedProtocol`` with the compiled parser (large frames
    are received in place), a plain ``asyncio.Protocol`` with the pure one.
    Subclasses put a connection core first among their bases (it reads and
    handles the frames of plain calls) and handle the rest in
    ``_received``.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        decoder: Optional[Any] = None,
    ) -> None:
        self._loop = loop
        self._max_frame_size = max_frame_size
        self._parser = FrameParser(max_frame_size=max_frame_size, decoder=decoder)
        self._writer = FrameWriter(max_frame_size=max_frame_size)
        self._transport: Optional[asyncio.Transport] = None
        self._flush_handle: Optional[asyncio.Handle] = None
        self._closing = False
        self._write_paused = False
        self._drain_waiter: Optional[asyncio.Future] = None
        #: set when the peer said GOAWAY
        self.peer_goaway = False

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    # Reads (get_buffer, buffer_updated, data_received) are the connection
    # core's (ServerCore / ClientCore from _impl), which a subclass puts
    # first among its bases; what the core does not handle comes here.

    def _received(self, frames: Any, error: Optional[BaseException]) -> None:
        raise NotImplementedError

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._closing = True
        self._transport = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            self._drain_waiter = None
            waiter.set_exception(Unavailable("connection lost"))

    # -- writing -------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        transport = self._transport
        w = self._writer
        if transport is not None and len(w):
            if w.chunked:
                # Large bytes values go out by reference (uvloop writes
                # them with one writev, no copy).
                transport.writelines(w.take_chunks())
            else:
                transport.write(w.take_buffer())

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._write_paused:
            return
        if self._transport is None:
            raise Unavailable("connection lost")
        if self._drain_waiter is None:
            self._drain_waiter = self._loop.create_future()
        await asyncio.shield(self._drain_waiter)

    def _last_call_accepted(self) -> int:
        # GOAWAY's third field: the id of the last request this side
        # accepted; the peer may resend every call it sent after that one.
        # A client accepts no calls.
        return 0

    def send_goaway(self, code: int, message: str) -> None:
        """Tell the peer this side accepts no new calls."""
        if self._transport is not None:
            self._writer.write_frame(GOAWAY, 0, (int(code), message, self._last_call_accepted()))
            self._flush()

    def _protocol_error(self, exc: BaseException) -> None:
        """The peer broke the protocol: say why (best effort), then close."""
        if self._transport is None:
            return
        try:
            self._writer.write_frame(GOAWAY, 0, (int(Internal.default_code), f"protocol error: {exc}", self._last_call_accepted()))
        except Exception:  # noqa: BLE001 - nothing more to say
            self._writer.clear()
        self._flush()
        self._closing = True
        self._transport.close()

    @property
    def is_open(self) -> bool:
        """True while the connection is usable."""
        return self._transport is not None and not self._closing

    def close(self) -> None:
        """Close the connection (buffered frames are still sent)."""
        if self._transport is not None:
            self._flush()
            self._closing = True
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._closing = True
            self._transport.abort()


class ClientProtocol(ClientCore, BaseProtocol):
    """The client end of one connection: many calls in flight, matched by id.

    Reads land in :class:`ClientCore` (compiled, or its pure twin), which
    resolves the futures of answered calls itself and hands every other
    frame to :meth:`_received`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        on_lost: Optional[Callable[["ClientProtocol", Optional[BaseException]], None]] = None,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
        resend: Optional[Callable[..., Awaitable[Any]]] = None,
    ) -> None:
        super().__init__(loop, max_frame_size=max_frame_size)
        #: ``await resend(method, args, kwargs, timeout, metadata)`` sends a
        #: call once more on another connection: used for a call the server
        #: said (GOAWAY) it never read.  None: such a call fails with
        #: NotProcessed.
        self._resend = resend
        #: GOAWAY's last accepted request id, once the server said it
        self._goaway_last: Optional[int] = None
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._keepalive_timer: Optional[asyncio.TimerHandle] = None
        # Only keepalive reads _last_seen: without it a read does not even
        # look at the clock.
        self._track_seen = keepalive_interval is not None
        self._last_seen = 0.0
        self._ping_sent = False
        self._pending: Dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._on_lost = on_lost
        self._pings: Dict[int, asyncio.Future] = {}
        self._ping_seq = 0
        self.handshake: asyncio.Future = loop.create_future()
        #: method name -> index, from the server's handshake
        self.methods: Dict[str, int] = {}
        self.server_info: Dict[str, Any] = {}
        self.lost_reason: Optional[str] = None

    @property
    def in_flight(self) -> int:
        """Number of calls waiting for an answer on this connection."""
        return len(self._pending)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        w = self._writer
        w.write_preface()
        w.write_frame(HANDSHAKE, 0, {"client": AGENT, "max_frame_size": self._max_frame_size})
        self._flush()
        self._last_seen = self._loop.time()
        if self._keepalive_interval is not None:
            self._keepalive_timer = self._loop.call_later(self._keepalive_interval / 2, self._keepalive)

    def _keepalive(self) -> None:
        # Ping a silent server; abort the connection when it stays silent
        # (half-open: the peer vanished without a FIN), which fails every
        # call in flight with UNAVAILABLE instead of letting it hang.
        self._keepalive_timer = None
        if self._transport is None:
            return
        silent = self._loop.time() - self._last_seen
        interval = self._keepalive_interval or 0.0
        if self._ping_sent and silent >= interval + self._keepalive_timeout:
            self.lost_reason = f"no answer from the server for {silent:.1f}s (keepalive)"
            self.abort()
            return
        if not self._ping_sent and silent >= interval:
            self._ping_sent = True
            self._writer.write_frame(PING, 0, 0)
            self._schedule_flush()
        self._keepalive_timer = self._loop.call_later(interval / 2, self._keepalive)

    def _received(self, frames: Any, error: Optional[BaseException]) -> None:
        pending = self._pending
        for f in frames:
            t = f.type
            if t == RESPONSE:
                fut = pending.pop(f.request_id, None)
                if fut is not None and not fut.done():
                    if f.error is None:
                        fut.set_result(f.value)
                    else:
                        fut.set_exception(Internal(f"undecodable response: {f.error}"))
            elif t == ERROR:
                self._on_error_frame(f)
            elif t == PING:
                self._writer.write_frame(PONG, 0, f.value)
                self._schedule_flush()
            elif t == PONG:
                waiter = self._pings.pop(f.value, None) if type(f.value) is int else None
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif t == HANDSHAKE:
                self._on_handshake(f)
            elif t == GOAWAY:
                self.peer_goaway = True
                v = f.value
                if type(v) is list and len(v) >= 2:
                    self.lost_reason = f"server said goaway: {v[1]}"
                    self._goaway_last = goaway_last_call(v)
                if self._on_lost is not None:
                    # The owner stops sending new calls here; the calls in
                    # flight still complete.
                    self._on_lost(self, None)
            else:
                error = FrameError(f"unexpected {W.MsgType(t).name} frame from server")
                break
        if error is not None:
            self.lost_reason = f"protocol error: {error}"
            if not self.handshake.done():
                self.handshake.set_exception(error)
            self._protocol_error(error)

    def _on_error_frame(self, f: Any) -> None:
        err = error_from_payload(f.value)
        if f.request_id == 0:
            # Connection-level error: fail everything.
            self.lost_reason = str(err)
            self._fail_all(err)
            return
        fut = self._pending.pop(f.request_id, None)
        if fut is not None and not fut.done():
            if err.code == StatusCode.UNAVAILABLE and self._not_read(f.request_id):
                # Refused after the server's GOAWAY: it did not run.
                err = NotProcessed(err.message)
            fut.set_exception(err)

    def _not_read(self, rid: int) -> bool:
        # True when call ``rid`` was sent after the last call the server's
        # GOAWAY says it accepted: the server never ran it.
        last = self._goaway_last
        return last is not None and sent_after(rid, last, self._next_id)

    def _on_handshake(self, f: Any) -> None:
        info = f.value if type(f.value) is dict else {}
        methods = info.get("methods")
        if type(methods) is list:
            self.methods = {name: i for i, name in enumerate(methods) if type(name) is str}
        self.server_info = info
        peer_max = info.get("max_frame_size")
        if type(peer_max) is int and W.HEADER_SIZE <= peer_max < self._max_frame_size:
            # Never send a frame the server would refuse (and close the
            # connection for): the writer raises FrameTooLarge instead.
            self._flush()
            self._writer = FrameWriter(max_frame_size=peer_max)
        if not self.handshake.done():
            self.handshake.set_result(info)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        reason = self.lost_reason or (f"connection lost: {exc}" if exc else "connection closed by peer")
        err = Unavailable(reason)
        if not self.handshake.done():
            self.handshake.set_exception(err)
            self.handshake.exception()  # mark retrieved: nobody may be waiting
        self._fail_all(err)
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(Unavailable(reason))
        self._pings.clear()
        if self._on_lost is not None:
            self._on_lost(self, exc)

    def _fail_all(self, err: RpcError) -> None:
        pending, self._pending = self._pending, {}
        for rid, fut in pending.items():
            if not fut.done():
                if self._not_read(rid):
                    fut.set_exception(NotProcessed(f"{err.message} (after GOAWAY; the server never read this call)"))
                else:
                    fut.set_exception(type(err)(err.code, err.message, err.details))

    # -- calls -------------------------------------------------------------------

    def notify(self, method: str, args: Any, kwargs: Optional[dict] = None, metadata: Optional[dict] = None) -> None:
        """Send a one-way call (no answer, no error report)."""
        if self._closing or self._transport is None:
            raise Unavailable(self.lost_reason or "connection is closed")
        self._writer.write_request(0, self.methods.get(method, method), args, kwargs, metadata=metadata, notify=True)
        self._schedule_flush()

    def _cancel_call(self, rid: int, fut: asyncio.Future) -> None:
        if self._pending.get(rid) is fut:
            del self._pending[rid]
            if self._transport is not None:
                self._writer.write_frame(CANCEL, rid, None)
                self._schedule_flush()

    def _expire(self, rid: int, fut: asyncio.Future, method: str, timeout: float) -> None:
        if self._pending.get(rid) is fut:
            del self._pending[rid]
            if not fut.done():
                fut.set_exception(DeadlineExceeded(f"{method} did not complete within {timeout}s"))
            if self._transport is not None:
                self._writer.write_frame(CANCEL, rid, None)
                self._schedule_flush()

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Round trip a PING; return the seconds it took."""
        if self._transport is None:
            raise Unavailable(self.lost_reason or "connection is closed")
        self._ping_seq = (self._ping_seq + 1) & 0x7FFFFFFF
        seq = self._ping_seq
        waiter = self._loop.create_future()
        self._pings[seq] = waiter
        start = self._loop.time()
        self._writer.write_frame(PING, 0, seq)
        self._schedule_flush()
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no pong within {timeout}s") from None
        finally:
            self._pings.pop(seq, None)
        return self._loop.time() - start


__all__ += ["AGENT", "goaway_last_call", "sent_after", "set_nodelay"]
