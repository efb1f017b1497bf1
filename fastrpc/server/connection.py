"""The server end of one client connection: the asyncio driver of a
:class:`~fastrpc.core.session.ServerSession`, and the running of calls.

Requests for sync handlers, by index, are answered by the core as they are
read (``_cores.pyx``); this module runs everything else: calls by name or
with kwargs, async handlers (a task each), blocking handlers (the thread
pool), deadlines, cancellation, backpressure, and the timers the session
asks for.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set

from .._impl import Decoder
from ..core.context import CallContext, inline_slot, reset_current, set_current
from ..core.session import (
    NOTIFY,
    REQUEST,
    TIMER_HALF_OPEN,
    TIMER_IDLE,
    TIMER_NO_HANDSHAKE,
    CancelReceived,
    ProtocolViolation,
    ServerSession,
)
from ..errors import DeadlineExceeded, EncodeError, FrameTooLarge, RpcError, StatusCode
from ..middleware.metrics import CountingTransport
from ..transport.address import peer_text
from ..transport.aio import BaseProtocol
from ..wire import constants as W
from .dispatch import ASYNC, SYNC, Method

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

__all__ = ["MeteredServerConnection", "ServerConnection"]

log = logging.getLogger("fastrpc.server")

_KWARGS = W.FLAG_KWARGS
_INVALID_ARGUMENT = int(StatusCode.INVALID_ARGUMENT)
_NOT_FOUND = int(StatusCode.NOT_FOUND)
_UNKNOWN = int(StatusCode.UNKNOWN)
_INTERNAL = int(StatusCode.INTERNAL)
_UNAVAILABLE = int(StatusCode.UNAVAILABLE)
_DEADLINE_EXCEEDED = int(StatusCode.DEADLINE_EXCEEDED)
_RESOURCE_EXHAUSTED = int(StatusCode.RESOURCE_EXHAUSTED)
_CANCELLED = int(StatusCode.CANCELLED)
#: answers buffered past this are written before the next request is handled
FLUSH_AT = 256 * 1024


class _Call:
    """State of one async or blocking call in flight on a connection."""

    __slots__ = ("conn", "rid", "method", "notify", "future", "timer", "reason")

    def __init__(self, conn: "ServerConnection", rid: int, method: Method, notify: bool) -> None:
        self.conn = conn
        self.rid = rid
        self.method = method
        self.notify = notify
        self.future: Optional[asyncio.Future] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        #: why it was cancelled: "client", "deadline", "shutdown", "lost"
        self.reason: Optional[str] = None

    def cancel(self, reason: str) -> None:
        """Cancel the call; ``done`` then answers according to ``reason``.

        A blocking call's thread cannot be interrupted: cancelling its
        asyncio future answers at once and its eventual result is dropped
        (the handler can see ``current_call().cancelled`` and stop early).
        """
        if self.reason is None:
            self.reason = reason
        fut = self.future
        if fut is not None and not fut.done():
            fut.cancel()

    def deadline_passed(self) -> None:
        self.timer = None
        self.cancel("deadline")

    def done(self, fut: Any) -> None:
        conn = self.conn
        try:
            self._answer(conn, fut)
        finally:
            conn._wake_idle()

    def _answer(self, conn: "ServerConnection", fut: Any) -> None:
        if conn._calls.get(self.rid) is not self and self not in conn._notifications:
            return  # already answered, or the connection is gone
        if self.notify:
            conn._notifications.discard(self)
        else:
            del conn._calls[self.rid]
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.notify:
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("notification %s failed: %r", self.method.name, fut.exception())
            return
        if conn._transport is None:
            return
        if self.reason is not None:
            if self.reason == "deadline":
                conn._write_error(self.rid, _DEADLINE_EXCEEDED, f"{self.method.name}: deadline exceeded on the server")
            elif self.reason == "shutdown":
                conn._write_error(self.rid, _UNAVAILABLE, f"{self.method.name}: server shut down before the call completed")
            else:
                return  # the client cancelled it and expects no answer
        elif fut.cancelled():
            conn._write_error(self.rid, _CANCELLED, f"{self.method.name}: cancelled on the server")
        else:
            exc = fut.exception()
            if exc is None:
                conn._write_result(self.rid, self.method, fut.result())
            else:
                conn._write_exception(self.rid, self.method, exc, None, None)
        conn._schedule_flush()


def _run_blocking(ctx: CallContext, fn: Callable[[], Any], deadline: Optional[float]) -> Any:
    # In a pool thread.  A blocking call that waited in the pool queue past
    # its deadline is not started at all.
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"{ctx.method}: deadline passed before the call started")
    token = set_current(ctx)
    try:
        return fn()
    finally:
        reset_current(token)


class ServerConnection(ServerSession, BaseProtocol):  # type: ignore[misc]
    """The server end of one client connection.

    Reads land in the session's core, which answers requests for sync
    handlers itself and hands every other frame to :meth:`_received` /
    :meth:`_process` here.
    """

    def __init__(self, server: "Server") -> None:
        loop = server._loop
        ServerSession.__init__(
            self,
            handshake_info=server._handshake_info,
            max_frame_size=server.max_frame_size,
            decoder=Decoder(**server._decoder_limits),
            handshake_timeout=server.handshake_timeout,
            idle_timeout=server.idle_timeout,
            keepalive_interval=server.keepalive_interval,
            keepalive_timeout=server.keepalive_timeout,
            clock=loop.time,
            compression=server.compression,
            compress_threshold=server.compress_threshold,
        )
        self._init_transport(loop)
        self._server = server
        table = server._dispatch
        assert table is not None, "the server freezes its table before it listens"
        self._methods: List[Method] = table.methods
        self._by_name: Dict[str, Method] = table.by_name
        self._inline = table.inline
        self._slot = inline_slot(loop)
        self._notifications: Set[_Call] = set()

    # Start values at class level: a connection's __dict__ holds only what
    # was set (see _cores_py.SessionCore).
    #: the parser error of a read held back in the backlog
    _pending_error: Optional[BaseException] = None
    _timer: Optional[asyncio.TimerHandle] = None
    _idle_waiter: Optional[asyncio.Future] = None
    _peername: Any = None
    #: the client's certificate (``ssl.SSLSocket.getpeercert()``), over TLS
    _peercert: Any = None

    # -- connection life ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        BaseProtocol.connection_made(self, transport)
        self._peername = transport.get_extra_info("peername")
        server = self._server
        if server.ssl is not None:
            self._peercert = transport.get_extra_info("peercert")
        refuse = None
        if server.max_connections is not None and len(server._connections) + len(server._sniffing) >= server.max_connections:
            log.warning("refusing connection from %s: max_connections=%d reached", peer_text(self._peername), server.max_connections)
            refuse = (_RESOURCE_EXHAUSTED, "too many connections")
        if not self.initiate(self._loop.time(), refuse):
            self.close()
            return
        server._connections.add(self)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection from %s", peer_text(self._peername))
        self._flush()
        self._arm_timer()
        if server._shutting_down:
            self.start_draining()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        BaseProtocol.connection_lost(self, exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server = self._server
        if self in server._connections:
            server._connections.discard(self)
            running = len(self._calls) + len(self._notifications)
            if running and not server._shutting_down:
                log.info("connection from %s lost with %d calls running (cancelled): %s", peer_text(self._peername), running, exc or "closed by the client")
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("connection from %s closed%s", peer_text(self._peername), f": {exc}" if exc else "")
        self._backlog = None
        for call in list(self._calls.values()) + list(self._notifications):
            call.cancel("lost")
        self._calls.clear()
        self._notifications.clear()
        self._wake_idle()

    def start_draining(self) -> bool:
        """Refuse new calls and tell the client so (GOAWAY); False if
        already draining."""
        if not ServerSession.start_draining(self):
            return False
        if self._transport is not None:
            self._flush()
        return True

    @property
    def in_flight(self) -> int:
        """Async and blocking calls (and notifications) running."""
        return len(self._calls) + len(self._notifications)

    async def wait_idle(self) -> None:
        """Return once no call runs on this connection (or it is gone)."""
        while self.in_flight and self._transport is not None:
            if self._idle_waiter is None:
                self._idle_waiter = self._loop.create_future()
            await self._idle_waiter

    def method_of(self, frame: Any) -> Method:
        """The method a request frame calls (for its CallContext)."""
        return self._methods[frame.method] if frame.name is None else self._by_name[frame.name]

    def run_in_pool(self, fn: Callable[[Any], Any], call: CallContext) -> "asyncio.Future[Any]":
        """``fn(call)`` in the blocking handlers' pool, with ``call`` current
        there (an async middleware chain in front of a blocking handler)."""
        return self._loop.run_in_executor(
            self._server._get_executor(), _run_blocking, call, functools.partial(fn, call), call.deadline
        )

    # -- backpressure -----------------------------------------------------------
    # Reading stops while max_in_flight calls run or while the transport's
    # write buffer is above its high-water mark (a client that does not read
    # its answers); it resumes when both are clear.

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._read_paused
            and not self._write_paused
            and self._transport is not None
            and len(self._calls) + len(self._notifications) < self._server.max_in_flight
        ):
            self._read_paused = False
            backlog = self._backlog
            if backlog is not None:
                self._backlog = None
                error, self._pending_error = self._pending_error, None
                self._process(backlog, 0, error)
                if self._read_paused or self._transport is None:
                    return  # paused again (or closed) by the backlog itself
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        BaseProtocol.pause_writing(self)
        self._pause_reading()

    def resume_writing(self) -> None:
        BaseProtocol.resume_writing(self)
        self._maybe_resume_reading()

    # -- timers: handshake, idle, keepalive -----------------------------------------

    def _arm_timer(self) -> None:
        delay = self.next_timer()
        if delay is not None and self._transport is not None:
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        now = self._loop.time()
        action = self.timer_check(now, self.in_flight)
        if action == TIMER_NO_HANDSHAKE:
            log.info("closing %s: no handshake within %ss", peer_text(self._peername), self._handshake_timeout)
            self.abort()
            return
        if action == TIMER_HALF_OPEN:
            log.info("closing %s: no answer to keepalive ping (half-open?)", peer_text(self._peername))
            self.abort()
            return
        if action == TIMER_IDLE:
            log.info("closing %s: idle for %.1fs", peer_text(self._peername), now - self._last_seen)
            self.close()
            return
        if len(self._writer):
            self._flush()  # the keepalive PING
        self._arm_timer()

    def _wake_idle(self) -> None:
        self._maybe_resume_reading()
        w = self._idle_waiter
        if w is not None and not self.in_flight:
            self._idle_waiter = None
            if not w.done():
                w.set_result(None)

    # -- input ------------------------------------------------------------------

    def _received(self, frames: List[Any], error: Optional[BaseException]) -> None:
        if self._backlog is not None:
            # Still working through an earlier batch: keep the order.
            self._backlog.extend(frames)
            self._pending_error = self._pending_error or error
            return
        self._process(frames, 0, error)

    def _process(self, frames: List[Any], i: int, error: Optional[BaseException]) -> None:
        n = len(frames)
        violation: Optional[ProtocolViolation] = None
        while i < n:
            f = frames[i]
            i += 1
            t = f.type
            if t == REQUEST or t == NOTIFY:
                violation = self._on_request(f, t == NOTIFY)
                if violation is not None:
                    break
                if len(self._writer) >= FLUSH_AT:
                    # Large answers leave at once, so the transport can say
                    # (pause_writing) that the peer is not reading them.
                    self._flush()
                if self._read_paused:
                    # max_in_flight reached or the peer stopped reading our
                    # answers: the rest of this batch (at most one read)
                    # waits until that clears.
                    if i < n:
                        self._backlog = frames[i:]
                        self._pending_error = error
                    break
            else:
                outcome = self.handle_control(f)
                if outcome is None:
                    continue
                if isinstance(outcome, CancelReceived):
                    call = self._calls.get(outcome.request_id)
                    if call is not None:
                        call.cancel("client")
                    continue
                assert isinstance(outcome, ProtocolViolation)
                violation = outcome
                break
        if violation is None and error is not None and self._backlog is None:
            violation = self.violation(error)
        if violation is not None:
            log.info("closing connection from %s: %s", peer_text(self._peername), violation.error)
            self.close()
        elif len(self._writer):
            self._flush()

    def _on_request(self, f: Any, notify: bool) -> Optional[ProtocolViolation]:
        rid = f.request_id
        name = f.name
        if name is None:
            idx = f.method
            if idx < len(self._methods):
                m = self._methods[idx]
            else:
                if self._server._metrics is not None:
                    self._server._metrics.count_call("unknown", _NOT_FOUND)
                if not notify:
                    self._write_error(rid, _NOT_FOUND, f"no method with index {idx}")
                return None
        else:
            m = self._by_name.get(name)
            if m is None:
                if self._server._metrics is not None:
                    self._server._metrics.count_call("unknown", _NOT_FOUND)
                if not notify:
                    self._write_error(rid, _NOT_FOUND, f"unknown method {name!r}")
                return None
        verdict = self.accept_request(f, notify)
        if verdict is not True:
            return verdict or None
        if f.error is not None:
            if not notify:
                self._write_error(rid, _INVALID_ARGUMENT, f"{m.name}: cannot decode arguments: {f.error}")
            return None
        args = f.value
        kwargs = None
        if f.flags & _KWARGS:
            if type(args) is list and len(args) == 2 and type(args[1]) is dict:
                args, kwargs = args
            else:
                args = 0  # rejected below
        if type(args) is not list:
            if not notify:
                self._write_error(rid, _INVALID_ARGUMENT, f"{m.name}: arguments must be an array")
            return None
        deadline = f.deadline
        if deadline is not None and deadline == 0:
            if not notify:
                self._write_error(rid, _DEADLINE_EXCEEDED, f"{m.name}: deadline already passed on arrival")
            return None
        kind = m.kind
        chain = m.chain
        if kind == SYNC:
            slot = self._slot
            if chain is not None:
                ctx = CallContext(f, self, time.monotonic() if deadline is not None else 0.0)
                ctx._args, ctx._kwargs = args, kwargs
                slot[0], slot[1] = ctx, self  # for current_call(), as the core does
            else:
                slot[0], slot[1] = f, self
                if deadline is not None:
                    slot[2] = time.monotonic()
            try:
                if chain is not None:
                    result = chain(ctx)
                else:
                    result = m.fn(*args, **kwargs) if kwargs else m.fn(*args)
            except Exception as exc:  # noqa: BLE001 - becomes an error status
                if notify:
                    log.warning("notification %s failed: %r", m.name, exc)
                else:
                    self._write_exception(rid, m, exc, args, kwargs)
                return None
            finally:
                slot[0] = slot[1] = None
            if not notify:
                self._write_result(rid, m, result)
            return None
        call = _Call(self, rid, m, notify)
        ctx = CallContext(f, self, time.monotonic(), call)
        ctx._args, ctx._kwargs = args, kwargs
        if kind == ASYNC:
            # The task copies the context as it is made: the handler (and
            # whatever it starts) sees its call.
            token = set_current(ctx)
            try:
                if chain is not None:
                    coro = chain(ctx)
                else:
                    coro = m.fn(*args, **kwargs) if kwargs else m.fn(*args)
            except Exception as exc:  # noqa: BLE001 - bad arguments to an async def
                if not notify:
                    self._write_exception(rid, m, exc, args, kwargs)
                return None
            else:
                fut: asyncio.Future = self._loop.create_task(coro)
            finally:
                reset_current(token)
        else:
            if chain is not None:
                fn = functools.partial(chain, ctx)
            else:
                fn = functools.partial(m.fn, *args, **kwargs) if kwargs else functools.partial(m.fn, *args)
            fut = self._loop.run_in_executor(self._server._get_executor(), _run_blocking, ctx, fn, ctx.deadline)
        call.future = fut
        if notify:
            self._notifications.add(call)
        else:
            self._calls[rid] = call
        if len(self._calls) + len(self._notifications) >= self._server.max_in_flight:
            self._pause_reading()
        if deadline is not None:
            call.timer = self._loop.call_later(deadline / 1e6, call.deadline_passed)
        fut.add_done_callback(call.done)
        return None

    # -- output ----------------------------------------------------------------------
    # Every answer leaves through _write_result (a handler's value) or
    # _write_error (everything else): a connection speaking another
    # protocol (server/foreign.py) overrides those two and runs its calls
    # through _on_request unchanged.

    def _write_error(self, rid: int, code: int, message: str, details: Any = None) -> None:
        """Answer call ``rid`` with an error status."""
        self._writer.write_error(rid, code, message, details)

    def _with_hop(self, details: Any, m: Method) -> Any:
        # debug=True: the services an error came through, from where it was
        # raised outwards, as details["chain"] ("Service.method@address");
        # an error raised two services down keeps its code and gains a hop
        # at each server on the way.  Details of another shape are left
        # as they are.
        if details is not None and type(details) is not dict:
            return details
        out = dict(details) if details else {}
        chain = out.get("chain")
        chain = list(chain) if type(chain) is list else []
        where = self._transport.get_extra_info("sockname") if self._transport is not None else None
        if type(where) is tuple and len(where) >= 2:
            where = f"{where[0]}:{where[1]}"
        chain.append(f"{m.name}@{where}" if where else m.name)
        out["chain"] = chain
        return out

    def _write_result(self, rid: int, m: Method, result: Any) -> None:
        try:
            self._writer.write_response(rid, result)
        except FrameTooLarge as exc:
            self._write_error(rid, _RESOURCE_EXHAUSTED, f"{m.name}: result too large: {exc}")
        except (EncodeError, OverflowError) as exc:
            self._write_error(rid, _INTERNAL, f"{m.name}: cannot encode the result: {exc}")

    def _write_exception(self, rid: int, m: Method, exc: BaseException, args: Any, kwargs: Any) -> None:
        if isinstance(exc, RpcError):
            code, message, details = int(exc.code), exc.message, exc.details
            if self._server.debug:
                details = self._with_hop(details, m)
        elif isinstance(exc, TypeError) and args is not None and not m.arguments_fit(args, kwargs):
            code, message, details = _INVALID_ARGUMENT, f"{m.name}: {exc}", None
        elif isinstance(exc, asyncio.CancelledError):
            code, message, details = _CANCELLED, f"{m.name}: cancelled on the server", None
        else:
            code, message, details = _UNKNOWN, f"{type(exc).__name__}: {exc}", None
            if self._server.debug:
                details = {"traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
            log.error("handler %s raised", m.name, exc_info=exc)
        try:
            self._write_error(rid, code, message, details)
        except (EncodeError, FrameTooLarge, OverflowError):
            self._write_error(rid, code, message, None)


class MeteredServerConnection(ServerConnection):
    """A server connection that counts itself and its bytes into the
    server's metrics (used only when the server has metrics: the plain
    connection pays nothing for them)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics = self._server._metrics
        metrics.connection_opened()
        ServerConnection.connection_made(self, CountingTransport(transport, metrics))  # type: ignore[arg-type]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._server._metrics.connection_closed()
        ServerConnection.connection_lost(self, exc)

    def buffer_updated(self, nbytes: int) -> None:
        self._server._metrics.received(nbytes)
        ServerConnection.buffer_updated(self, nbytes)

    def data_received(self, data: bytes) -> None:
        self._server._metrics.received(len(data))
        ServerConnection.data_received(self, data)
