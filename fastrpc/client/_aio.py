"""The asyncio driver of a client session: one connection, many calls in
flight, matched by id.

:class:`ClientProtocol` is the :class:`~fastrpc.core.session.ClientSession`
on the :class:`AsyncClientCore` (whose ``call()`` is the per-call path and
whose reads resolve answered calls' futures themselves), moved by an
asyncio transport.  It only does what needs the event loop: timers for
deadlines and keepalive, flushing what the session writes, closing the
transport when the session says the connection is over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, List, Optional

from .._impl import AsyncClientCore
from ..core.context import inline_slot
from ..core.session import (
    KEEPALIVE_DEAD,
    KEEPALIVE_PING,
    ClientSession,
    ConnectionFailed,
    GoAwayReceived,
    HandshakeReceived,
    ProtocolViolation,
)
from ..errors import DeadlineExceeded, Unavailable, code_name
from ..middleware.metrics import CountingTransport
from ..transport.address import peer_text
from ..transport.aio import BaseProtocol
from .options import ClientOptions

__all__ = ["ClientProtocol", "MeasuredClientProtocol", "MeteredClientProtocol", "tracked_protocol"]

log = logging.getLogger("fastrpc.client")


class ClientProtocol(AsyncClientCore, ClientSession, BaseProtocol):  # type: ignore[misc]
    """The client end of one asyncio connection.

    Parameters:
        loop: the event loop.
        options: the client's options (frame size, keepalive).
        on_change: called with this protocol whenever it stops taking new
            calls (the server said GOAWAY, the connection is closing or
            lost): whoever hands out connections stops handing out this one.
        resend: ``await resend(method, args, kwargs, timeout, metadata)``
            sends a call once more elsewhere: used for a call the server
            said (GOAWAY) it never read.  None: such a call fails with
            :class:`~fastrpc.NotProcessed`.
    """

    _peername: Any = None

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        options: ClientOptions,
        *,
        on_change: Optional[Callable[["ClientProtocol"], None]] = None,
        resend: Optional[Callable[..., Awaitable[Any]]] = None,
    ) -> None:
        ClientSession.__init__(self, clock=loop.time, **options.session_settings())
        self._init_transport(loop)
        #: the loop's inline-call slot: a call made from an inline handler
        #: on this loop inherits from the call noted there
        self.call_slot = inline_slot(loop)
        self._resend = resend
        self._on_change = on_change
        self._keepalive_timer: Optional[asyncio.TimerHandle] = None
        #: resolves with the server's handshake map (or fails: wrong
        #: protocol, refused, lost before it came)
        self.handshake: asyncio.Future = loop.create_future()

    @property
    def usable(self) -> bool:
        """True while new calls may be sent on this connection."""
        return self._transport is not None and not self._closing and not self.peer_goaway

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    # -- asyncio callbacks ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        BaseProtocol.connection_made(self, transport)
        self._peername = transport.get_extra_info("peername")
        self.initiate()
        self._flush()
        self._last_seen = self._loop.time()
        if self._keepalive_interval is not None:
            self._keepalive_timer = self._loop.call_later(self._keepalive_interval / 2, self._on_keepalive)

    def _received(self, frames: List[Any], error: Optional[BaseException]) -> None:
        events = self.handle_frames(frames, error)
        if self.write_outbox():
            self._schedule_flush()
        for ev in events:
            if isinstance(ev, HandshakeReceived):
                if not self.handshake.done():
                    self.handshake.set_result(ev.info)
            elif isinstance(ev, GoAwayReceived):
                # New calls go elsewhere from now on; the calls in flight
                # still complete.
                log.info("%s is going away (%s: %s); new calls go to a new connection", peer_text(self._peername), code_name(ev.code), ev.message)
                self._changed()
            elif isinstance(ev, (ProtocolViolation, ConnectionFailed)):
                log.warning("closing the connection to %s: %s", peer_text(self._peername), ev.error)
                if not self.handshake.done():
                    self.handshake.set_exception(ev.error)
                self.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        closing = self._closing
        BaseProtocol.connection_lost(self, exc)
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        if not closing:
            log.info("connection to %s lost: %s", peer_text(self._peername), exc or "closed by the server")
        self.lost(f"connection lost: {exc}" if exc else "connection closed by the server")
        if not self.handshake.done():
            self.handshake.set_exception(Unavailable(self.lost_reason))
            self.handshake.exception()  # mark retrieved: nobody may be waiting
        self._changed()

    def _on_keepalive(self) -> None:
        self._keepalive_timer = None
        if self._transport is None:
            return
        action = self.keepalive_check(self._loop.time())
        if action == KEEPALIVE_DEAD:
            # Half-open (the server vanished without a FIN, or hangs): fail
            # every call in flight now instead of letting them hang.
            self.abort()
            return
        if action == KEEPALIVE_PING and self.write_outbox():
            self._schedule_flush()
        self._keepalive_timer = self._loop.call_later((self._keepalive_interval or 0.0) / 2, self._on_keepalive)

    # -- what the core's call() needs ------------------------------------------------

    def start(
        self, method: str, args: Any, kwargs: Optional[dict], timeout: Optional[float], metadata: Optional[dict]
    ) -> "tuple[int, asyncio.Future, Optional[asyncio.TimerHandle]]":
        """Send a call without waiting for it: ``(rid, future, timer)``.
        The future resolves with the answer (DeadlineExceeded once
        ``timeout`` passes: ``timer``); :meth:`abandon` gives up on it.  What
        runs several attempts of one call at once (hedging) uses this, with
        no task per attempt."""
        if self._closing or self._transport is None:
            raise Unavailable(self.lost_reason or "connection is closed")
        if timeout is not None and timeout <= 0:
            raise DeadlineExceeded(f"deadline of {timeout}s already passed before {method} was sent")
        fut = self._loop.create_future()
        rid = self.start_call(method, args, kwargs, timeout, metadata, fut)
        if len(self._pending) == 1 and self._flush_handle is None:
            self._flush()  # nothing else in flight: send now, as call() does
        else:
            self._schedule_flush()
        timer = None if timeout is None else self._loop.call_later(timeout, self._expire, rid, fut, method, timeout)
        return rid, fut, timer

    async def call_uncompressed(
        self, method: str, args: Any, kwargs: Optional[dict], timeout: Optional[float], metadata: Optional[dict]
    ) -> Any:
        """:meth:`call`, with this request sent uncompressed whatever the
        connection agreed (the per-call opt-out)."""
        w = self._writer
        saved, w.compressor = w.compressor, None
        try:
            rid, fut, timer = self.start(method, args, kwargs, timeout, metadata)
        finally:
            w.compressor = saved
        try:
            return await fut
        except asyncio.CancelledError:
            self.abandon(rid, fut, timer)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def abandon(self, rid: int, fut: asyncio.Future, timer: Optional[asyncio.TimerHandle]) -> None:
        """Give up on a call :meth:`start` sent: the server is told (CANCEL)
        and its future is cancelled."""
        if timer is not None:
            timer.cancel()
        self._cancel_call(rid, fut)
        if not fut.done():
            fut.cancel()

    def _cancel_call(self, rid: int, fut: asyncio.Future) -> None:
        if self.cancel_call(rid, fut) and self._transport is not None:
            self.write_outbox()
            self._schedule_flush()

    def _expire(self, rid: int, fut: asyncio.Future, method: str, timeout: float) -> None:
        if self.expire_call(rid, fut, f"{method} did not complete within {timeout}s") and self._transport is not None:
            self.write_outbox()
            self._schedule_flush()

    # -- the rest of the client API --------------------------------------------------

    def notify(self, method: str, args: Any, kwargs: Optional[dict] = None, metadata: Optional[dict] = None) -> None:
        """Send a one-way call (no answer, no error report)."""
        if not self.usable:
            raise Unavailable(self.lost_reason or "connection is closed")
        self.write_notify(method, args, kwargs, metadata)
        self._schedule_flush()

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Round trip a PING; return the seconds it took."""
        if self._transport is None or self._closing:
            raise Unavailable(self.lost_reason or "connection is closed")
        waiter = self._loop.create_future()
        seq = self.start_ping(waiter)
        self.write_outbox()
        self._schedule_flush()
        start = self._loop.time()
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no pong within {timeout}s") from None
        finally:
            self.forget_ping(seq)
        return self._loop.time() - start

    def close_when_idle(self) -> None:
        """Close once every call in flight is answered (now if none is)."""
        if not self._pending:
            self.close()
            return

        def answered(_: Any) -> None:
            if not self._pending:
                self.close()

        for fut in list(self._pending.values()):
            fut.add_done_callback(answered)

    def close(self) -> None:
        """Say goodbye (GOAWAY) and close; calls in flight fail with
        UNAVAILABLE ("client closed") unless answered first."""
        if self._transport is not None and not self._closing:
            self.goodbye()
            self.write_outbox()
            BaseProtocol.close(self)
            self._changed()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            BaseProtocol.abort(self)
            self._changed()


class MeteredClientProtocol(ClientProtocol):
    """A client connection that counts itself and its bytes into a
    :class:`~fastrpc.middleware.metrics.ClientMetrics` (used only when the
    client has metrics)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: ClientOptions, *, metrics: Any, **kw: Any) -> None:
        ClientProtocol.__init__(self, loop, options, **kw)
        self._metrics = metrics

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._metrics.connection_opened()
        ClientProtocol.connection_made(self, CountingTransport(transport, self._metrics))  # type: ignore[arg-type]

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._metrics.connection_closed()
        ClientProtocol.connection_lost(self, exc)

    def buffer_updated(self, nbytes: int) -> None:
        self._metrics.received(nbytes)
        ClientProtocol.buffer_updated(self, nbytes)

    def data_received(self, data: bytes) -> None:
        self._metrics.received(len(data))
        ClientProtocol.data_received(self, data)



class _Measured:
    """Measures calls of a connection into its server's
    :class:`~fastrpc.balancing.Load`: latency (for balancers that read it)
    and outcome (for outlier detection).  Mixed into a connection class
    only when the client's balancer or outlier detection wants it, so
    other clients pay nothing.

    With ``every`` > 0 only samples are measured: one call, then none for
    ``every`` seconds.  Between samples ``self.call`` is the core's own
    method (an instance attribute over the class's), so those calls cost
    nothing more; a timer puts the measuring method back."""

    _loop: asyncio.AbstractEventLoop
    _transport: Any

    def __init__(self, loop: asyncio.AbstractEventLoop, options: ClientOptions, *, load: Any, report: Any = None, every: float = 0.0, **kw: Any) -> None:
        super().__init__(loop, options, **kw)  # type: ignore[call-arg]
        self._load = load
        self._report = report
        self._every = every
        self._core_call = super().call  # type: ignore[misc]
        self.call = self._call_sampled if every > 0 else self._call_measured  # type: ignore[method-assign]

    def _measured(self, started: float, error: Optional[BaseException]) -> None:
        seconds = self._loop.time() - started
        if self._report is not None:
            self._report(self._load, seconds, error)
        else:
            self._load.observe(seconds, error is None)

    def _call_sampled(self, method: str, args: Any, kwargs: Any = None, timeout: Any = None, metadata: Any = None, resend: bool = True) -> Any:
        # This call is the sample; the next ones, for ``every`` seconds, are not.
        self.call = self._core_call  # type: ignore[method-assign]
        self._loop.call_later(self._every, self._rearm)
        return self._call_measured(method, args, kwargs, timeout, metadata, resend)

    def _rearm(self) -> None:
        if self._transport is not None:
            self.call = self._call_sampled  # type: ignore[method-assign]

    async def _call_measured(self, method: str, args: Any, kwargs: Any = None, timeout: Any = None, metadata: Any = None, resend: bool = True) -> Any:
        started = self._loop.time()
        try:
            result = await self._core_call(method, args, kwargs, timeout, metadata, resend)
        except asyncio.CancelledError:
            raise  # the caller gave up: says nothing about the server
        except BaseException as exc:
            self._measured(started, exc)
            raise
        self._measured(started, None)
        return result

    def start(self, method: str, args: Any, kwargs: Optional[dict], timeout: Optional[float], metadata: Optional[dict]) -> Any:
        started = self._loop.time()
        rid, fut, timer = super().start(method, args, kwargs, timeout, metadata)  # type: ignore[misc]

        def done(f: asyncio.Future) -> None:
            if not f.cancelled():  # abandoned (hedging's loser): not measured
                self._measured(started, f.exception())

        fut.add_done_callback(done)
        return rid, fut, timer


class MeasuredClientProtocol(_Measured, ClientProtocol):
    """A connection whose calls are measured (see :class:`_Measured`)."""


class MeasuredMeteredClientProtocol(_Measured, MeteredClientProtocol):
    """A metered connection whose calls are measured."""


def tracked_protocol(metered: bool) -> type:
    """The connection class of a client that measures its calls."""
    return MeasuredMeteredClientProtocol if metered else MeasuredClientProtocol
