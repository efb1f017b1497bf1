"""The fastrpc server: net/rpc-style registration, a dispatch table frozen at
start, and the server side of the connection protocol.

Per-call cost is kept to the minimum: the method is found by index in a
list, sync handlers run inline in ``data_received`` (no task, no future),
and every answer produced while handling one ``data_received`` leaves in one
``transport.write``.  Async handlers run as tasks; handlers marked
:func:`blocking` run in a thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import os
import signal
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

from ..wire import constants as W
from ..transport.address import Address, parse_address
from ..errors import (
    DeadlineExceeded,
    EncodeError,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    RpcError,
    StatusCode,
)
from .._impl import Decoder, ServerCore
from ..transport.aio import (
    AGENT,
    CANCEL,
    GOAWAY,
    HANDSHAKE,
    NOTIFY,
    PING,
    PONG,
    REQUEST,
    BaseProtocol,
)

__all__ = ["Server", "blocking"]

log = logging.getLogger("fastrpc.server")

_SYNC = 0
_ASYNC = 1
_BLOCKING = 2

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
_FLUSH_AT = 256 * 1024


def blocking(fn: Callable) -> Callable:
    """Mark a sync handler as blocking: the server runs it in a thread pool
    instead of inline on the event loop.

    Usage::

        class Files:
            @fastrpc.blocking
            def read(self, path): ...
    """
    target = getattr(fn, "__func__", fn)
    target.__fastrpc_blocking__ = True
    return fn


class _Method:
    """One entry of the dispatch table, with everything per-call precomputed."""

    __slots__ = ("name", "index", "fn", "kind", "_signature")

    def __init__(self, name: str, index: int, fn: Callable, kind: int) -> None:
        self.name = name
        self.index = index
        self.fn = fn
        self.kind = kind
        self._signature: Any = None

    def arguments_fit(self, args: Sequence[Any], kwargs: Optional[dict]) -> bool:
        """Whether ``args``/``kwargs`` bind to the handler (error path only)."""
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.fn)
            except (TypeError, ValueError):
                self._signature = False
        if self._signature is False:
            return True
        try:
            self._signature.bind(*args, **(kwargs or {}))
        except TypeError:
            return False
        return True


def _kind_of(fn: Callable, blocking_flag: Optional[bool]) -> int:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        if blocking_flag:
            raise ValueError(f"{fn!r} is a coroutine function; it cannot be blocking")
        return _ASYNC
    if blocking_flag or getattr(getattr(fn, "__func__", fn), "__fastrpc_blocking__", False):
        return _BLOCKING
    return _SYNC


class _Call:
    """State of one async or blocking call in flight on a connection."""

    __slots__ = ("conn", "rid", "method", "notify", "future", "timer", "reason")

    def __init__(self, conn: "ServerConnection", rid: int, method: _Method, notify: bool) -> None:
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
        asyncio future answers at once and its eventual result is dropped.
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
                conn._writer.write_error(self.rid, _DEADLINE_EXCEEDED, f"{self.method.name}: deadline exceeded on the server")
            elif self.reason == "shutdown":
                conn._writer.write_error(self.rid, _UNAVAILABLE, f"{self.method.name}: server shut down before the call completed")
            else:
                return  # the client cancelled it and expects no answer
        elif fut.cancelled():
            conn._writer.write_error(self.rid, _CANCELLED, f"{self.method.name}: cancelled on the server")
        else:
            exc = fut.exception()
            if exc is None:
                conn._write_result(self.rid, self.method, fut.result())
            else:
                conn._write_exception(self.rid, self.method, exc, None, None)
        conn._schedule_flush()


class ServerConnection(ServerCore, BaseProtocol):
    """The server end of one client connection.

    Reads land in :class:`ServerCore` (compiled, or its pure twin), which
    answers requests for sync handlers itself and hands every other frame to
    :meth:`_received` / :meth:`_process` here.
    """

    def __init__(self, server: "Server") -> None:
        super().__init__(server._loop, max_frame_size=server.max_frame_size, decoder=Decoder(**server._decoder_limits))
        self._server = server
        self._inline = server._inline
        # Only an idle timeout or keepalive reads _last_seen: without them
        # a read does not even look at the clock.
        self._track_seen = server.idle_timeout is not None or server.keepalive_interval is not None
        self._max_in_flight = server.max_in_flight
        self._read_paused = False
        #: frames read but not yet processed because max_in_flight was hit
        self._backlog: Optional[List[Any]] = None
        self._pending_error: Optional[BaseException] = None
        self._connected_at = 0.0
        self._handshaken = False
        self._last_seen = 0.0
        self._ping_sent = False
        self._timer: Optional[asyncio.TimerHandle] = None
        self._methods: List[_Method] = server._table
        self._by_name: Dict[str, _Method] = server._by_name
        self._debug = server.debug
        self._calls: Dict[int, _Call] = {}
        self._notifications: Set[_Call] = set()
        self._draining = False
        #: the id of the last request accepted (run or running); GOAWAY
        #: tells the client, which may resend every later one elsewhere
        self._last_call = 0
        self._idle_waiter: Optional[asyncio.Future] = None

    # -- connection life ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._server
        self._writer.write_preface()
        if server.max_connections is not None and len(server._connections) >= server.max_connections:
            log.warning("refusing connection from %s: max_connections=%d reached", self._peer(), server.max_connections)
            self.send_goaway(_RESOURCE_EXHAUSTED, "too many connections")
            self.close()
            return
        server._connections.add(self)
        self._flush()
        self._last_seen = self._connected_at = self._loop.time()
        self._arm_timer()
        if server._shutting_down:
            self.start_draining()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._connections.discard(self)
        self._backlog = None
        for call in list(self._calls.values()) + list(self._notifications):
            call.cancel("lost")
        self._calls.clear()
        self._notifications.clear()
        self._wake_idle()

    def _last_call_accepted(self) -> int:
        return self._last_call

    def start_draining(self) -> None:
        """Refuse new calls and tell the client so (GOAWAY)."""
        if not self._draining:
            self._draining = True
            self.send_goaway(_UNAVAILABLE, "server shutting down")

    @property
    def in_flight(self) -> int:
        return len(self._calls) + len(self._notifications)

    async def wait_idle(self) -> None:
        while self.in_flight and self._transport is not None:
            if self._idle_waiter is None:
                self._idle_waiter = self._loop.create_future()
            await self._idle_waiter

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
            and len(self._calls) + len(self._notifications) < self._max_in_flight
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
        super().pause_writing()
        self._pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._maybe_resume_reading()

    # -- timers: handshake, idle, keepalive -----------------------------------------

    def _arm_timer(self) -> None:
        server = self._server
        delays = [
            d
            for d in (
                server.handshake_timeout if not self._handshaken else None,
                server.idle_timeout,
                server.keepalive_interval,
            )
            if d is not None
        ]
        if delays and self._transport is not None:
            self._timer = self._loop.call_later(min(delays) / 2 if len(delays) > 1 else min(delays), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        server = self._server
        now = self._loop.time()
        silent = now - self._last_seen
        if not self._handshaken and server.handshake_timeout is not None and now - self._connected_at >= server.handshake_timeout:
            log.info("closing %s: no handshake within %ss", self._peer(), server.handshake_timeout)
            self.abort()
            return
        if server.keepalive_interval is not None:
            if self._ping_sent and silent >= server.keepalive_interval + server.keepalive_timeout:
                log.info("closing %s: no answer to keepalive ping (half-open?)", self._peer())
                self.abort()
                return
            if not self._ping_sent and silent >= server.keepalive_interval:
                self._ping_sent = True
                self._writer.write_frame(PING, 0, 0)
                self._flush()
        if server.idle_timeout is not None and silent >= server.idle_timeout and not self.in_flight:
            log.info("closing %s: idle for %.1fs", self._peer(), silent)
            self.send_goaway(_UNAVAILABLE, "idle timeout")
            self.close()
            return
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
            frames = []
            self._pending_error = self._pending_error or error
            return
        self._process(frames, 0, error)

    def _process(self, frames: List[Any], i: int, error: Optional[BaseException]) -> None:
        n = len(frames)
        while i < n:
            f = frames[i]
            i += 1
            t = f.type
            if t == REQUEST or t == NOTIFY:
                error = self._on_request(f, t == NOTIFY) or error
                if error is not None:
                    break
                if len(self._writer) >= _FLUSH_AT:
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
            elif t == CANCEL:
                call = self._calls.get(f.request_id)
                if call is not None:
                    call.cancel("client")
            elif t == PING:
                self._writer.write_frame(PONG, 0, f.value)
            elif t == HANDSHAKE:
                self._handshaken = True
                self._writer.write_frame(HANDSHAKE, 0, self._server._handshake_info)
            elif t == PONG or t == GOAWAY:
                pass
            else:
                error = MalformedFrame(f"unexpected {W.MsgType(t).name} frame from a client")
                break
        if error is not None and self._backlog is None:
            log.info("closing connection from %s: %s", self._peer(), error)
            self._protocol_error(error)
        elif len(self._writer):
            self._flush()

    def _peer(self) -> Any:
        t = self._transport
        return t.get_extra_info("peername") if t is not None else None

    def _on_request(self, f: Any, notify: bool) -> Optional[FrameError]:
        rid = f.request_id
        name = f.name
        if name is None:
            idx = f.method
            if idx < len(self._methods):
                m = self._methods[idx]
            else:
                if not notify:
                    self._writer.write_error(rid, _NOT_FOUND, f"no method with index {idx}")
                return None
        else:
            m = self._by_name.get(name)
            if m is None:
                if not notify:
                    self._writer.write_error(rid, _NOT_FOUND, f"unknown method {name!r}")
                return None
        if not notify and rid in self._calls:
            return MalformedFrame(f"request id {rid} reused while its call is in flight")
        if self._draining:
            # After our GOAWAY: not run, and answered so (the client may
            # resend it elsewhere; it follows GOAWAY's last call).
            if not notify:
                self._writer.write_error(rid, _UNAVAILABLE, "server shutting down")
            return None
        if not notify:
            self._last_call = rid
        if f.error is not None:
            if not notify:
                self._writer.write_error(rid, _INVALID_ARGUMENT, f"{m.name}: cannot decode arguments: {f.error}")
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
                self._writer.write_error(rid, _INVALID_ARGUMENT, f"{m.name}: arguments must be an array")
            return None
        deadline = f.deadline
        if deadline is not None and deadline == 0:
            if not notify:
                self._writer.write_error(rid, _DEADLINE_EXCEEDED, f"{m.name}: deadline already passed on arrival")
            return None
        kind = m.kind
        if kind == _SYNC:
            try:
                if kwargs:
                    result = m.fn(*args, **kwargs)
                else:
                    result = m.fn(*args)
            except Exception as exc:  # noqa: BLE001 - becomes an error status
                if notify:
                    log.warning("notification %s failed: %r", m.name, exc)
                else:
                    self._write_exception(rid, m, exc, args, kwargs)
                return None
            if not notify:
                self._write_result(rid, m, result)
            return None
        call = _Call(self, rid, m, notify)
        if kind == _ASYNC:
            try:
                coro = m.fn(*args, **kwargs) if kwargs else m.fn(*args)
            except Exception as exc:  # noqa: BLE001 - bad arguments to an async def
                if not notify:
                    self._write_exception(rid, m, exc, args, kwargs)
                return None
            fut: asyncio.Future = self._loop.create_task(coro)
        else:
            fn = functools.partial(m.fn, *args, **kwargs) if kwargs else functools.partial(m.fn, *args)
            if deadline is not None:
                fn = functools.partial(_run_before_deadline, fn, time.monotonic() + deadline / 1e6, m.name)
            fut = self._loop.run_in_executor(self._server._get_executor(), fn)
        call.future = fut
        if notify:
            self._notifications.add(call)
        else:
            self._calls[rid] = call
        if len(self._calls) + len(self._notifications) >= self._max_in_flight:
            self._pause_reading()
        if deadline is not None:
            call.timer = self._loop.call_later(deadline / 1e6, call.deadline_passed)
        fut.add_done_callback(call.done)
        return None

    # -- output ----------------------------------------------------------------------

    def _write_result(self, rid: int, m: _Method, result: Any) -> None:
        try:
            self._writer.write_response(rid, result)
        except FrameTooLarge as exc:
            self._writer.write_error(rid, _RESOURCE_EXHAUSTED, f"{m.name}: result too large: {exc}")
        except (EncodeError, OverflowError) as exc:
            self._writer.write_error(rid, _INTERNAL, f"{m.name}: cannot encode the result: {exc}")

    def _write_exception(self, rid: int, m: _Method, exc: BaseException, args: Any, kwargs: Any) -> None:
        if isinstance(exc, RpcError):
            code, message, details = int(exc.code), exc.message, exc.details
        elif isinstance(exc, TypeError) and args is not None and not m.arguments_fit(args, kwargs):
            code, message, details = _INVALID_ARGUMENT, f"{m.name}: {exc}", None
        elif isinstance(exc, asyncio.CancelledError):
            code, message, details = _CANCELLED, f"{m.name}: cancelled on the server", None
        else:
            code, message, details = _UNKNOWN, f"{type(exc).__name__}: {exc}", None
            if self._debug:
                details = {"traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
            log.error("handler %s raised", m.name, exc_info=exc)
        try:
            self._writer.write_error(rid, code, message, details)
        except (EncodeError, FrameTooLarge, OverflowError):
            self._writer.write_error(rid, code, message, None)


def _run_before_deadline(fn: Callable[[], Any], deadline: float, name: str) -> Any:
    # A blocking call that waited in the pool queue past its deadline is not
    # started at all.
    if time.monotonic() >= deadline:
        raise DeadlineExceeded(f"{name}: deadline passed before the call started")
    return fn()


class Server:
    """An RPC server.

    Usage::

        class Arith:
            def multiply(self, a, b):
                return a * b

        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        ...
        await server.shutdown(grace=5)

    Parameters:
        debug: include handler tracebacks in UNKNOWN errors sent to callers.
        max_frame_size: largest frame accepted or sent, in bytes; a larger
            announced frame closes the connection before it is buffered.
        max_depth, max_str_len, max_bin_len, max_array_len, max_map_len:
            limits for decoding arguments (see :class:`fastrpc.Decoder`);
            a call that breaks them fails with INVALID_ARGUMENT.
        max_in_flight: calls (async or blocking) running at once per
            connection; past it the server stops reading that connection
            until some finish (backpressure: nothing queued without bound,
            nothing dropped).
        max_connections: open connections allowed; a new one past it gets
            GOAWAY (RESOURCE_EXHAUSTED) and is closed.  ``None``: no limit.
        handshake_timeout: seconds a new connection has to send its preface
            and handshake (slowloris protection).
        idle_timeout: close a connection with no call in flight that has
            been silent this long (``None``: never).
        keepalive_interval: ping a connection that has been silent this
            long; one that stays silent ``keepalive_timeout`` more seconds is
            closed as half-open (``None``: no pings).
        executor: thread pool for :func:`blocking` handlers (created lazily
            when not given).
        max_workers: size of that lazily created pool.
    """

    def __init__(
        self,
        *,
        debug: bool = False,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        max_depth: int = W.DEFAULT_MAX_DEPTH,
        max_str_len: Optional[int] = None,
        max_bin_len: Optional[int] = None,
        max_array_len: Optional[int] = None,
        max_map_len: Optional[int] = None,
        max_in_flight: int = 1024,
        max_connections: Optional[int] = None,
        handshake_timeout: Optional[float] = 10.0,
        idle_timeout: Optional[float] = None,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
        executor: Optional[concurrent.futures.Executor] = None,
        max_workers: Optional[int] = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.debug = debug
        self.max_frame_size = max_frame_size
        self.max_in_flight = max_in_flight
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self._decoder_limits = dict(
            max_depth=max_depth,
            max_str_len=max_str_len,
            max_bin_len=max_bin_len,
            max_array_len=max_array_len,
            max_map_len=max_map_len,
        )
        Decoder(**self._decoder_limits)  # validate now, not at the first connection
        self._executor = executor
        self._own_executor = executor is None
        self._max_workers = max_workers
        self._handlers: Dict[str, tuple] = {}
        self._table: List[_Method] = []
        #: per method index: the handler when it runs inline (sync), else None
        self._inline: List[Any] = []
        self._by_name: Dict[str, _Method] = {}
        self._frozen = False
        self._handshake_info: Dict[str, Any] = {}
        self._servers: List[asyncio.AbstractServer] = []
        self._connections: Set[ServerConnection] = set()
        self._loop: Any = None
        self._shutting_down = False
        self._closed: Optional[asyncio.Event] = None
        self.addresses: List[str] = []

    # -- registration --------------------------------------------------------------

    def register(self, obj: Any, name: Optional[str] = None) -> List[str]:
        """Expose every public method of ``obj`` as ``"<name>.<method>"``.

        ``name`` defaults to the class name.  Only attributes that do not
        start with ``_`` and are callable are exposed; nothing else on the
        object is reachable.  Returns the registered method names.
        """
        service = name if name is not None else type(obj).__name__
        if not service or "." in service:
            raise ValueError(f"invalid service name {service!r}")
        names = []
        for attr in dir(obj):
            if attr.startswith("_"):
                continue
            fn = getattr(obj, attr)
            if not callable(fn) or inspect.isclass(fn):
                continue
            names.append(self.register_function(fn, f"{service}.{attr}"))
        if not names:
            raise ValueError(f"{service} has no public methods to register")
        return names

    def register_function(self, fn: Callable, name: Optional[str] = None, *, blocking: Optional[bool] = None) -> str:
        """Expose a plain function (sync or ``async def``) under ``name``.

        ``blocking=True`` (or the :func:`blocking` decorator) runs a sync
        function in the thread pool.  Returns the registered name.
        """
        if self._frozen:
            raise RuntimeError("the dispatch table is frozen once the server has started")
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        if name is None:
            name = getattr(fn, "__name__", None)
            if not name:
                raise ValueError("a name is required for this callable")
        if name in self._handlers:
            raise ValueError(f"method {name!r} is already registered")
        self._handlers[name] = (fn, _kind_of(fn, blocking))
        return name

    @property
    def methods(self) -> List[str]:
        """Registered method names, in dispatch-table order."""
        return list(self._handlers)

    def _freeze(self) -> None:
        if self._frozen:
            return
        if len(self._handlers) > W.MAX_METHOD_INDEX + 1:
            raise ValueError("more than 65536 methods registered")
        for i, (name, (fn, kind)) in enumerate(self._handlers.items()):
            m = _Method(name, i, fn, kind)
            self._table.append(m)
            self._by_name[name] = m
            self._inline.append(fn if kind == _SYNC else None)
        self._handshake_info = {
            "server": AGENT,
            "methods": [m.name for m in self._table],
            "max_frame_size": self.max_frame_size,
        }
        self._frozen = True

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="fastrpc-blocking"
            )
        return self._executor

    # -- running -------------------------------------------------------------------------

    async def start(self, *addresses: Union[str, Address], backlog: int = 1024) -> Any:
        """Listen on each address (``tcp://host:port`` or ``unix:/path``).

        Port 0 picks a free port.  Returns the bound address (a str) when one
        address was given, else the list; all are in :attr:`addresses`.
        """
        if not addresses:
            raise ValueError("start() needs at least one address")
        if self._shutting_down:
            raise RuntimeError("server is shut down")
        self._freeze()
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._closed = asyncio.Event()
        elif self._loop is not loop:
            raise RuntimeError("a server runs on one event loop")
        bound = []
        for a in addresses:
            addr = parse_address(a)
            if addr.kind == "unix":
                srv = await loop.create_unix_server(lambda: ServerConnection(self), addr.path, backlog=backlog)
                actual = f"unix:{addr.path}"
            else:
                srv = await loop.create_server(
                    lambda: ServerConnection(self), addr.host, addr.port, backlog=backlog, reuse_address=True
                )
                sockname = srv.sockets[0].getsockname()
                actual = str(Address("tcp", sockname[0], sockname[1], ""))
            self._servers.append(srv)
            self.addresses.append(actual)
            bound.append(actual)
        return bound[0] if len(bound) == 1 else bound

    async def serve_forever(self) -> None:
        """Wait until :meth:`shutdown` completes."""
        if self._closed is None:
            raise RuntimeError("call start() first")
        await self._closed.wait()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop gracefully.

        Stop accepting connections, send GOAWAY to every client (new calls
        are refused with UNAVAILABLE), let calls in flight finish for up to
        ``grace`` seconds, answer the rest with UNAVAILABLE, then close.
        """
        if self._shutting_down:
            if self._closed is not None:
                await self._closed.wait()
            return
        self._shutting_down = True
        for srv in self._servers:
            srv.close()
        conns = list(self._connections)
        for conn in conns:
            conn.start_draining()
        if conns:
            waits = [asyncio.ensure_future(c.wait_idle()) for c in conns]
            done, pending = await asyncio.wait(waits, timeout=max(grace, 0))
            for w in pending:
                w.cancel()
        for conn in list(self._connections):
            for call in list(conn._calls.values()) + list(conn._notifications):
                call.cancel("shutdown")
            conn._flush()
        # Let the answers of cancelled tasks be written, then close.
        await asyncio.sleep(0)
        for conn in list(self._connections):
            conn._flush()
            conn.close()
        deadline = time.monotonic() + 2.0
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for conn in list(self._connections):
            conn.abort()
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except asyncio.TimeoutError:  # pragma: no cover - Python 3.12 waits for handlers
                pass
        for addr in self.addresses:
            if addr.startswith("unix:"):
                try:
                    os.unlink(addr[5:])
                except OSError:
                    pass
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._closed is not None:
            self._closed.set()

    @property
    def connections(self) -> int:
        """Number of open client connections."""
        return len(self._connections)

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

    def run(self, *addresses: str, grace: float = 5.0, use_uvloop: Optional[bool] = None) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully (blocking).

        Uses uvloop when it is installed (``use_uvloop=False`` to opt out).
        """
        from ..transport.loop import new_event_loop

        loop = new_event_loop(use_uvloop)
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._run(addresses, grace, loop))
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _run(self, addresses: Sequence[str], grace: float, loop: asyncio.AbstractEventLoop) -> None:
        await self.start(*addresses)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - not main thread
                pass
        waiter = asyncio.ensure_future(stop.wait())
        closed = asyncio.ensure_future(self.serve_forever())
        await asyncio.wait([waiter, closed], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await self.shutdown(grace)
        closed.cancel()

