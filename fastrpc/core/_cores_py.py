"""Pure-Python connection cores: the state of a connection and the per-call
fast path of both ends.

The twin of the compiled ``_cores.pyx`` (same classes, same behaviour);
``fastrpc/_impl.py`` picks one of the two.  A core holds the state that the
fast path and the session rules share (``session.py`` subclasses
:class:`ClientSessionCore` and :class:`ServerSessionCore`) and takes the
bytes a transport read; the frames that make up nearly all traffic (a
request for a sync handler, by index; a response) are handled in one tight
loop, and the first frame that needs anything else and every frame after it
go to ``_received(frames, error)``, in order.
"""

from __future__ import annotations

import asyncio
from time import monotonic as _monotonic
from typing import Any, List, Optional

from ..errors import DeadlineExceeded, EncodeError, FrameError, FrameTooLarge, NotProcessed, Unavailable
from ..wire import constants as W

__all__ = [
    "AsyncClientCore",
    "CallSlot",
    "ClientSessionCore",
    "ServerSessionCore",
    "SessionCore",
    "SyncClientCore",
    "free_request_id",
]

_REQUEST = int(W.MsgType.REQUEST)
_RESPONSE = int(W.MsgType.RESPONSE)
# Requests with these flags take the Python path (name lookup, kwargs).
_SLOW_FLAGS = W.FLAG_METHOD_NAME | W.FLAG_KWARGS
# Answers buffered past this are written before the next request is handled
# (server/connection.py's FLUSH_AT, same value).
_FLUSH_AT = 256 * 1024


def free_request_id(last: int, in_flight: dict) -> int:
    """The request id after ``last`` (1..2**32-1, wrapping) not in
    ``in_flight``: ids go up, so GOAWAY's ``last`` can tell which calls were
    sent after it (docs/protocol.md §3.1)."""
    rid = last + 1
    while rid > 0xFFFFFFFF or rid in in_flight:
        rid = 1 if rid > 0xFFFFFFFF else rid + 1
    return rid


_free_id = free_request_id


class SessionCore:
    """Bytes in, for either end of a connection: ``get_buffer`` and
    ``buffer_updated`` (the asyncio ``BufferedProtocol`` calls, also used by
    the blocking client after ``recv_into``) or ``data_received``; the
    frames go to ``_dispatch``, and a read that breaks the protocol goes,
    with the frames before the break, to ``_received(frames, error)``.

    The fields the compiled twin declares in ``_cores.pxd`` start, as there,
    at their zero values: here as class attributes, so that an instance's
    ``__dict__`` holds only what was set.  (CPython shares the key table of
    instance dicts of up to 30 keys and specializes attribute access on
    them; a connection with more attributes loses that on every access.)
    """

    _track_seen = False
    _last_seen = 0.0
    _ping_sent = False

    def get_buffer(self, sizehint: int) -> Any:
        return self._parser.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self._track_seen:
            self._last_seen = self._clock()
            self._ping_sent = False
        try:
            frames = self._parser.buffer_updated(nbytes)
        except FrameError as exc:
            self._received(exc.frames, exc)
        else:
            self._dispatch(frames)

    def data_received(self, data: bytes) -> None:
        if self._track_seen:
            self._last_seen = self._clock()
            self._ping_sent = False
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            self._received(exc.frames, exc)
        else:
            self._dispatch(frames)

    def _dispatch(self, frames: List[Any]) -> None:
        self._received(frames, None)


class ClientSessionCore(SessionCore):
    """The state of the client end of a connection (rules: session.py)."""

    _next_id = 0
    peer_goaway = False
    lost_reason: Optional[str] = None


class ServerSessionCore(SessionCore):
    """The server end of a connection: requests for sync handlers, by
    index, run inline as they are read, and their answers leave in one
    write per read.

    The session rules (``session.ServerSession``) and the server's
    connection provide the Python side: ``_received(frames, error)`` (the
    whole of a read the core does not handle), ``_process(frames, i,
    error)`` (the rest of a read, from frame ``i``), ``_write_exception``,
    ``_write_result`` and ``_flush``.  Without a transport (sans IO) the
    answers stay in the writer.
    """

    _transport: Any = None
    _backlog: Optional[List[Any]] = None
    _draining = False
    _last_call = 0
    _read_paused = False
    _inline: Optional[List[Any]] = None
    _slot: Optional[List[Any]] = None

    def _dispatch(self, frames: List[Any]) -> None:
        inline = self._inline
        if self._backlog is not None or self._draining or inline is None:
            self._received(frames, None)
            return
        calls = self._calls
        w = self._writer
        slot = self._slot
        if slot is not None:
            # current_call(): this connection's inline call, noted while it
            # runs (see core/context.py)
            slot[1] = self
        ninline = len(inline)
        i = 0
        n = len(frames)
        try:
            while i < n:
                f = frames[i]
                if f.type != _REQUEST or f.error is not None or f.flags & _SLOW_FLAGS:
                    break
                idx = f.method
                if idx >= ninline:
                    break
                fn = inline[idx]
                args = f.value
                if fn is None or type(args) is not list or (f.deadline is not None and f.deadline == 0):
                    break
                rid = f.request_id
                if calls and rid in calls:
                    break  # protocol error, reported by the Python path
                i += 1
                self._last_call = rid
                if slot is not None:
                    slot[0] = f
                    if f.deadline is not None:
                        slot[2] = _monotonic()
                try:
                    result = fn(*args)
                except Exception as exc:  # noqa: BLE001 - becomes an error status
                    self._write_exception(rid, self._methods[idx], exc, args, None)
                else:
                    try:
                        w.write_response(rid, result)
                    except (FrameTooLarge, EncodeError, OverflowError):
                        self._write_result(rid, self._methods[idx], result)
                if len(w) >= _FLUSH_AT:
                    # Large answers leave at once, so that the transport can
                    # say (pause_writing) that the peer is not reading them.
                    self._flush()
                    if self._read_paused:
                        if i < n:
                            self._backlog = frames[i:]
                        return
        finally:
            if slot is not None:
                slot[0] = slot[1] = None
        if i < n:
            self._process(frames, i, None)
        elif self._transport is not None:
            if w.chunked:
                self._write_chunks(w.take_chunks())
            else:
                data = w.take_buffer()  # b"" when nothing was answered (notifications)
                if data:
                    self._transport.write(data)


class AsyncClientCore(ClientSessionCore):
    """The per-call path of the asyncio client end of a connection.

    The session rules and the asyncio driver provide ``_received(frames,
    error)``, which handles every frame the core does not (errors, control
    frames, protocol errors), and ``_expire``, ``_cancel_call``,
    ``_schedule_flush`` and ``drain`` for :meth:`call`.
    """

    _transport: Any = None
    _flush_handle: Any = None
    _resend: Any = None
    _closing = False
    _write_paused = False

    async def call(
        self,
        method: str,
        args: Any,
        kwargs: Optional[dict] = None,
        timeout: Optional[float] = None,
        metadata: Optional[dict] = None,
        resend: bool = True,
    ) -> Any:
        """Send one call and wait for its result.

        A call the server ended the connection without reading
        (:class:`NotProcessed`) goes once more, with the time left, to
        ``self._resend`` (set by the client that owns this connection)
        unless ``resend`` is false.
        """
        if self._closing or self._transport is None:
            raise Unavailable(self.lost_reason or "connection is closed")
        if self.peer_goaway:
            raise Unavailable(self.lost_reason or "server is shutting down (goaway)")
        deadline = None
        if timeout is not None:
            if timeout <= 0:
                raise DeadlineExceeded(f"deadline of {timeout}s already passed before {method} was sent")
            deadline = int(timeout * 1_000_000)  # the server enforces it too
        pending = self._pending
        rid = self._next_id + 1
        if rid > 0xFFFFFFFF or rid in pending:
            rid = _free_id(self._next_id, pending)  # wrapped, or in flight still
        self._next_id = rid
        writer = self._writer
        writer.write_request(rid, self.methods.get(method, method), args, kwargs, deadline=deadline, metadata=metadata)
        if not pending and self._flush_handle is None:
            # Nothing in flight: a sequential caller.  Send now rather than
            # one loop iteration later; with calls in flight, writes made in
            # the same tick are coalesced into one.
            if writer.chunked:
                self._write_chunks(writer.take_chunks())
            else:
                self._transport.write(writer.take_buffer())
            # The future goes in after the write, off the path the answer
            # waits on: the answer (and connection_lost, which transports
            # schedule with call_soon) comes in a later loop iteration.
            fut = self._loop.create_future()
            pending[rid] = fut
        else:
            fut = self._loop.create_future()
            pending[rid] = fut
            self._schedule_flush()
        if self._write_paused:
            await self.drain()
        if timeout is None:
            try:
                return await fut
            except asyncio.CancelledError:
                self._cancel_call(rid, fut)
                raise
            except NotProcessed:
                if not resend or self._resend is None:
                    raise
            return await self._resend(method, args, kwargs, None, metadata)
        timer = self._loop.call_later(timeout, self._expire, rid, fut, method, timeout)
        try:
            return await fut
        except asyncio.CancelledError:
            self._cancel_call(rid, fut)
            raise
        except NotProcessed:
            if not resend or self._resend is None:
                raise
        finally:
            timer.cancel()
        return await self._resend(method, args, kwargs, timer.when() - self._loop.time(), metadata)

    def _dispatch(self, frames: List[Any]) -> None:
        pending = self._pending
        i = 0
        n = len(frames)
        while i < n:
            f = frames[i]
            if f.type != _RESPONSE or f.error is not None:
                break
            i += 1
            fut = pending.pop(f.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(f.value)
        if i < n:
            self._received(frames[i:], None)


class CallSlot:
    """One call in flight on a blocking-socket connection: its answer (or
    error) once ``finished``, and the ``concurrent.futures.Future`` of a
    ``go()`` call (with ``resend``: what sends it again if the server never
    reads it)."""

    __slots__ = ("finished", "value", "error", "future", "deadline", "method", "resend")

    def __init__(self, method: Any, future: Any, deadline: Any) -> None:
        self.finished = False
        self.value: Any = None
        self.error: Optional[BaseException] = None
        self.future = future
        self.deadline = deadline
        self.method = method
        self.resend: Any = None


class SyncClientCore(ClientSessionCore):
    """The per-call path of the blocking-socket client.

    :meth:`call_plain` makes a call with no deadline (kwargs and metadata
    allowed) when no other thread is reading the socket: it sends, then reads until
    its answer is in, completing any other thread's answers on the way
    through the session rules (``_received``).  Anything else takes the
    general path (``_call``).
    """

    def call_plain(self, method: str, args: Any, kwargs: Any = None, metadata: Any = None) -> Any:
        """Call ``method`` with ``args`` (and ``kwargs``, ``metadata``: None
        or non-empty); return its result."""
        if not self.alive or self._timeout_mode is not None or not self.recv_lock.acquire(False):
            return self._call(method, args, kwargs, metadata)
        slot = self._plain_slot
        try:
            # recv_lock, then send_lock: the order every path takes both in.
            with self.send_lock:
                if not self.alive:
                    raise Unavailable(self.lost_reason or "connection is closed")
                pending = self._pending
                rid = self._next_id + 1
                if rid > 0xFFFFFFFF or rid in pending:
                    rid = _free_id(self._next_id, pending)  # wrapped, or in flight still
                self._next_id = rid
                writer = self._writer
                writer.write_request(rid, self.methods.get(method, method), args, kwargs, metadata=metadata)
                try:
                    try:
                        if writer.chunked:
                            self._send_chunks(writer.take_chunks())
                        else:
                            self.sock.sendall(writer.take_buffer())
                    finally:
                        # After the send, off the path the answer waits on:
                        # this thread holds recv_lock, so nobody reads the
                        # answer before the slot is in.
                        slot.finished = False
                        slot.value = None
                        slot.error = None
                        slot.method = method
                        pending[rid] = slot
                except OSError as exc:
                    self.broken(f"connection lost while sending: {exc}")
            try:
                while not slot.finished:
                    self._read_plain()
                # Taken while recv_lock is held: the next plain call resets
                # the slot as soon as it is released.
                value = slot.value
                error = slot.error
            except BaseException:
                # Interrupted: this slot is reused, so no later answer may
                # find it under this id.
                if self._pending.get(rid) is slot:
                    del self._pending[rid]
                raise
        finally:
            self.recv_lock.release()
            if self.waiters:
                self._wake()
        if self.retiring and not self._pending:
            self.close()  # replaced after GOAWAY, and now idle
        if error is not None:
            raise error
        return value

    def _read_plain(self) -> None:
        parser = self._parser
        buf = parser.get_buffer(-1)
        try:
            got = self.sock.recv_into(buf)
        except OSError as exc:
            self.broken(f"connection lost: {exc}")
            return
        if not got:
            self.broken("connection closed by the server")
            return
        error = None
        try:
            frames = parser.buffer_updated(got)
        except FrameError as exc:
            frames = exc.frames
            error = exc
        pending = self._pending
        slot = self._plain_slot
        i = 0
        n = len(frames)
        while i < n:
            f = frames[i]
            if f.type != _RESPONSE or f.error is not None or pending.get(f.request_id) is not slot:
                break
            del pending[f.request_id]
            slot.value = f.value
            slot.finished = True
            i += 1
        if i < n or error is not None:
            self._received(frames[i:] if i else frames, error)
