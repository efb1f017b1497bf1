"""Endpoints and pickers: the shape discovery and load balancing build on.

An :class:`Endpoint` is one server address and its connection, with a
state (gRPC's subchannel): it connects on demand or keeps itself connected
in the background, with backoff, and tells its subscribers every time its
state changes.  A :class:`Picker` chooses a ready endpoint for each call;
whoever owns the endpoints (a :class:`~fastrpc.Pool`) builds a new picker
from the ready ones whenever a state changes, so a pick never blocks and
never looks at an endpoint that is not ready.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from ..balancing.base import Instance, Load, Picker, RoundRobinPicker
from ..errors import Unavailable
from ..transport.address import Address, parse_address
from ._aio import ClientProtocol, MeteredClientProtocol, tracked_protocol
from .options import Backoff, ClientOptions, Reconnect

__all__ = ["Endpoint", "EndpointState", "Picker", "RoundRobinPicker"]


class EndpointState(enum.Enum):
    """Where an endpoint's connection is.

    ``IDLE``: not connected, no attempt under way (a call connects it).
    ``CONNECTING``: an attempt (connect plus handshake) is under way.
    ``READY``: connected; takes calls.
    ``DRAINING``: the server said GOAWAY: calls in flight finish, new calls
    need a new connection.
    ``FAILED``: the last attempt failed; the next may start after the
    backoff (gRPC's TRANSIENT_FAILURE).
    ``SHUTDOWN``: closed for good.
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    SHUTDOWN = "shutdown"


Listener = Callable[["Endpoint"], None]


def _zero() -> int:
    return 0


class Endpoint:
    """One server address, its connection and its state.

    Usage::

        ep = Endpoint("127.0.0.1:1234")
        await ep.connect()
        await ep.connection.call("Arith.multiply", [7, 8])
        await ep.close()

    Parameters:
        address: ``host:port``, ``tcp://host:port`` or ``unix:/path``.
        options: the client's options (:class:`ClientOptions`).
        backoff: this endpoint's reconnection backoff (default: a fresh copy
            of ``options.backoff``: each endpoint counts its own failures).
        resend: where a call the server never read goes once more
            (``await resend(method, args, kwargs, timeout, metadata)``);
            default: this endpoint, on a new connection.
        metrics: a :class:`~fastrpc.middleware.metrics.ClientMetrics` its
            connections count themselves and their bytes into.
        instance: what a resolver said about this server (weight, version,
            tags, metadata: balancers read them); default: weight 1.
        load: the :class:`~fastrpc.balancing.Load` this endpoint's calls
            are measured into (shared by every slot of one server); None:
            calls are not measured.
        report: ``report(load, seconds, error)`` after each measured call
            (outlier detection); None: the load only.
        measure_every: measure one call per that many seconds (0: every call).
    """

    def __init__(
        self,
        address: Any,
        options: Optional[ClientOptions] = None,
        *,
        backoff: Optional[Backoff] = None,
        resend: Optional[Callable[..., Awaitable[Any]]] = None,
        metrics: Any = None,
        instance: Optional[Instance] = None,
        load: Optional[Load] = None,
        report: Optional[Callable[[Load, float, Optional[BaseException]], None]] = None,
        measure_every: float = 0.0,
    ) -> None:
        self.address: Address = parse_address(address)
        #: the server's address as a string: slots to one server share it
        self.key = str(self.address)
        self.instance = instance if instance is not None else Instance(self.key)
        #: the server's weight, version, tags and metadata (from its instance)
        self.weight = self.instance.weight
        self.version = self.instance.version
        self.tags = self.instance.tags
        self.metadata = self.instance.metadata
        #: what was measured about this server (None: calls are not measured)
        self.load = load
        self._report = report
        self._measure_every = measure_every
        #: a ClientMetrics its connections count themselves and their bytes into
        self.metrics = metrics
        self.options = options if options is not None else ClientOptions()
        self._reconnect = Reconnect(self.address, backoff if backoff is not None else self.options.backoff.fresh())
        self._resend = resend if resend is not None else self._resend_here
        self._state = EndpointState.IDLE
        #: the connection new calls use: set exactly while READY
        self.connection: Optional[ClientProtocol] = None
        # replaced after GOAWAY, still answering calls in flight
        self._retired: "set[ClientProtocol]" = set()
        self._connecting: Optional[asyncio.Future] = None
        self._listeners: List[Listener] = []
        self._changed: Optional[asyncio.Event] = None
        self._supervisor: Optional[asyncio.Task] = None

    def __repr__(self) -> str:
        return f"<Endpoint {self.address} {self._state.value}>"

    # -- state --------------------------------------------------------------------------

    @property
    def state(self) -> EndpointState:
        """The endpoint's :class:`EndpointState`."""
        return self._state

    @property
    def last_error(self) -> Optional[BaseException]:
        """Why the last connection attempt failed (None: it did not)."""
        return self._reconnect.last_error

    @property
    def next_attempt(self) -> float:
        """The loop time before which no new attempt starts (0: any time)."""
        return self._reconnect.next_attempt

    @property
    def methods(self) -> List[str]:
        """The server's method table, from the last handshake."""
        p = self.connection
        return list(p.methods) if p is not None else []

    @property
    def in_flight(self) -> int:
        """Calls waiting for an answer on the current connection."""
        p = self.connection
        return p.in_flight if p is not None else 0

    def in_flight_counter(self) -> Callable[[], int]:
        """A function returning :attr:`in_flight` of the current connection
        (for pickers: the connection does not change while a picker built
        with it is in use, since every change of it rebuilds the picker)."""
        p = self.connection
        if p is None:
            return _zero
        return p._pending.__len__  # type: ignore[no-any-return]

    def update(self, instance: Instance) -> None:
        """Take a resolver's new word about this server (weight, version,
        tags, metadata); the owner rebuilds its picker after."""
        self.instance = instance
        self.weight = instance.weight
        self.version = instance.version
        self.tags = instance.tags
        self.metadata = instance.metadata

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(endpoint)`` after every state change; returns a
        function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _set_state(self, state: EndpointState) -> None:
        if state is self._state:
            return
        self._state = state
        if self._changed is not None:
            self._changed.set()
        for listener in list(self._listeners):
            listener(self)

    async def wait_for_change(self) -> EndpointState:
        """Wait for the next state change; return the new state."""
        if self._changed is None:
            self._changed = asyncio.Event()
        self._changed.clear()
        await self._changed.wait()
        return self._state

    # -- connecting ----------------------------------------------------------------------

    async def connect(self) -> ClientProtocol:
        """Return the ready connection, connecting first if there is none
        (one attempt at a time, shared by every caller).  During the backoff
        after a failed attempt this raises :class:`Unavailable` at once."""
        p = self.connection
        if p is not None:
            return p
        if self._state is EndpointState.SHUTDOWN:
            raise Unavailable("client is closed")
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._reconnect.check(loop.time())
            self._connecting = loop.create_task(self._attempt(loop))
        return await asyncio.shield(self._connecting)

    async def _attempt(self, loop: asyncio.AbstractEventLoop) -> ClientProtocol:
        addr = self.address
        options = self.options
        transport = None
        self._set_state(EndpointState.CONNECTING)
        try:

            def factory() -> ClientProtocol:
                kw: Dict[str, Any] = {"on_change": self._on_change, "resend": self._resend}
                if self.load is not None:
                    cls = tracked_protocol(self.metrics is not None)
                    kw.update(load=self.load, report=self._report, every=self._measure_every)
                    if self.metrics is not None:
                        kw["metrics"] = self.metrics
                    return cls(loop, options, **kw)
                if self.metrics is not None:
                    return MeteredClientProtocol(loop, options, metrics=self.metrics, **kw)
                return ClientProtocol(loop, options, **kw)

            tls = options.tls_for(addr)
            extra: Dict[str, Any] = {}
            if tls is not None:
                extra = {"ssl": tls, "server_hostname": options.hostname_for(addr), "ssl_handshake_timeout": options.connect_timeout}
            if addr.kind == "unix":
                coro = loop.create_unix_connection(factory, addr.path, **extra)
            else:
                coro = loop.create_connection(factory, addr.host, addr.port, **extra)
            transport, proto = await asyncio.wait_for(coro, options.connect_timeout)
            await asyncio.wait_for(asyncio.shield(proto.handshake), options.connect_timeout)
        except BaseException as exc:
            if transport is not None:
                transport.abort()
            err = self._reconnect.failed(exc, loop.time())
            if self._state is not EndpointState.SHUTDOWN:
                self._set_state(EndpointState.FAILED)
            if err is exc:
                raise
            raise err from exc
        finally:
            self._connecting = None
        self._reconnect.succeeded()
        if self._state is EndpointState.SHUTDOWN:  # closed while connecting
            proto.close()
            raise Unavailable("client is closed")
        if not proto.usable:  # lost (or told GOAWAY) before we got here
            self._set_state(EndpointState.IDLE)
            raise Unavailable(f"cannot connect to {addr}: {proto.lost_reason or 'connection lost'}")
        self.connection = proto
        self._set_state(EndpointState.READY)
        return proto

    def _on_change(self, proto: ClientProtocol) -> None:
        # A connection stopped taking new calls (GOAWAY, closing, lost).
        if proto is self.connection:
            if proto.usable:
                return
            self.connection = None
            if proto.is_open:
                # After GOAWAY: its calls in flight still get their answers;
                # it closes once they are in (or with close()).
                self._retired.add(proto)
                proto.close_when_idle()
            if self._state is not EndpointState.SHUTDOWN:
                self._set_state(EndpointState.DRAINING if proto in self._retired else EndpointState.IDLE)
        elif not proto.is_open and proto in self._retired:
            self._retired.discard(proto)
            if self._state is EndpointState.DRAINING and not self._retired:
                self._set_state(EndpointState.IDLE)

    async def _resend_here(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        # A call the server closed the connection without reading (GOAWAY
        # named an earlier one as its last): it never ran, so it goes once
        # more, on a new connection, and is not resent again.
        p = await self.connect()
        return await p.call(method, args, kwargs, timeout, metadata, False)

    # -- keeping connected ---------------------------------------------------------------

    def start(self) -> "asyncio.Future[bool]":
        """Keep this endpoint connected in the background: connect now and
        reconnect (after the backoff) whenever the connection is lost or
        drains.  Returns a future of the first attempt's success."""
        loop = asyncio.get_running_loop()
        first: "asyncio.Future[bool]" = loop.create_future()
        if self._supervisor is None and self._state is not EndpointState.SHUTDOWN:
            self._supervisor = loop.create_task(self._supervise(first))
        else:
            first.set_result(self.connection is not None)
        return first

    async def _supervise(self, first: "asyncio.Future[bool]") -> None:
        loop = asyncio.get_running_loop()
        while self._state is not EndpointState.SHUTDOWN:
            try:
                await self.connect()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retried after the backoff
                if not first.done():
                    first.set_result(False)
                await asyncio.sleep(max(0.0, self._reconnect.next_attempt - loop.time()))
                continue
            if not first.done():
                first.set_result(True)
            while self.connection is not None:
                await self.wait_for_change()

    # -- the end -----------------------------------------------------------------------

    async def retire(self) -> None:
        """Close for good, gently: no new calls, no reconnecting; calls in
        flight still get their answers, then the connection closes (a
        server a resolver no longer lists)."""
        p, self.connection = self.connection, None
        if p is not None and p.is_open:
            self._retired.add(p)
            p.close_when_idle()
        self._set_state(EndpointState.SHUTDOWN)
        await self._stop_trying()

    async def _stop_trying(self) -> None:
        # No connection attempt, no background task from here on.
        if self._connecting is not None:
            self._connecting.cancel()
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """Close for good: the connection (calls in flight fail with
        UNAVAILABLE), connections still draining, the background task."""
        self._set_state(EndpointState.SHUTDOWN)
        p, self.connection = self.connection, None
        if p is not None:
            p.close()
        for old in list(self._retired):
            old.close()
        self._retired.clear()
        await self._stop_trying()
