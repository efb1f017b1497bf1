"""A client over several endpoints: connections to one or more servers, each
kept up in the background, calls spread across the ready ones by a picker.

A call never waits for a reconnection: with no endpoint ready it fails at
once with UNAVAILABLE.  The pool uses endpoints only through their public
interface (state, subscriptions, ``connection``, ``start``, ``close``).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from ..core.context import _UNSET as _LOOKUP
from ..core.context import _current, serving
from ..errors import NotProcessed, Unavailable
from ..middleware import Middleware, OutgoingCall, compose
from ..transport.address import Address
from .calls import UNSET, Policies, Proxy, call_options, inherited, remaining
from .endpoint import Endpoint, EndpointState, Picker, RoundRobinPicker
from .options import Backoff, ClientOptions
from .hedge import HedgePolicy, hedged_call
from .retry import NotSent, RetryPolicy, call_with_retries

__all__ = ["Pool"]


class Pool:
    """Several connections, calls spread across them.

    Usage::

        async with fastrpc.Pool(["127.0.0.1:1234", "127.0.0.1:1235"], size=4) as pool:
            await pool.call("Arith.multiply", 7, 8)

    Parameters:
        addresses: one address or a list of them.
        size: connections (endpoints) per address.
        picker: builds the :class:`Picker` that chooses an endpoint per call
            from the ready ones (default :class:`RoundRobinPicker`).
        options: a :class:`ClientOptions`, or its fields as keyword
            arguments, as for :class:`AsyncClient`.  Each endpoint backs off
            on its own (a copy of ``backoff``).
        middleware: callables ``mw(call, call_next)`` run around every
            call, as for :class:`AsyncClient`.
        metrics: a :class:`fastrpc.middleware.metrics.ClientMetrics`, as
            for :class:`AsyncClient`.
        backoff_base, backoff_max: shorthand for ``backoff=Backoff(base, max)``.
        retry: a :class:`~fastrpc.client.retry.RetryPolicy` for every call,
            as for :class:`AsyncClient`; a retry goes to another ready
            endpoint when there is one.
        hedge: ``{"Service.method": HedgePolicy(...)}``: the methods whose
            calls are hedged (see :mod:`fastrpc.client.hedge`); what they
            did is in :attr:`hedge_stats`.
    """

    def __init__(
        self,
        addresses: Any,
        *,
        size: int = 4,
        picker: Callable[[Sequence[Endpoint]], Picker] = RoundRobinPicker,
        options: Optional[ClientOptions] = None,
        middleware: Optional[Sequence[Middleware]] = None,
        metrics: Any = None,
        backoff_base: Optional[float] = None,
        backoff_max: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        hedge: Optional[Dict[str, HedgePolicy]] = None,
        **settings: Any,
    ) -> None:
        if isinstance(addresses, (str, Address)) or (
            type(addresses) is tuple and len(addresses) == 2 and isinstance(addresses[1], int)
        ):
            addresses = [addresses]  # one address, not a list of them
        if not addresses:
            raise ValueError("a pool needs at least one address")
        if size < 1:
            raise ValueError("size must be >= 1")
        if backoff_base is not None or backoff_max is not None:
            if "backoff" in settings:
                raise TypeError("give backoff or backoff_base/backoff_max, not both")
            default = Backoff()
            settings["backoff"] = Backoff(
                default.base if backoff_base is None else backoff_base,
                default.maximum if backoff_max is None else backoff_max,
            )
        self.options = ClientOptions.build(options, settings)
        self._make_picker = picker
        self.endpoints: List[Endpoint] = [
            Endpoint(a, self.options, resend=self._resend, metrics=metrics) for a in addresses for _ in range(size)
        ]
        for ep in self.endpoints:
            ep.subscribe(self._rebuild)
        self._picker: Picker = picker([])
        self._chain: Optional[Callable[[OutgoingCall], Any]] = None
        self._policies = Policies(retry, hedge)
        #: what hedging did on this pool
        self.hedge_stats = self._policies.stats
        middleware = ([metrics] if metrics is not None else []) + list(middleware or ())
        if middleware or self._policies.configured:
            self._chain, _ = compose(middleware, self._send, True)
        self._started = False
        self._closed = False

    @property
    def timeout(self) -> Optional[float]:
        """The default per-call timeout."""
        return self.options.timeout

    @property
    def size(self) -> int:
        """Number of endpoints (connection slots)."""
        return len(self.endpoints)

    @property
    def connected(self) -> int:
        """Number of endpoints ready to take calls."""
        return sum(1 for ep in self.endpoints if ep.state is EndpointState.READY)

    def _rebuild(self, _: Endpoint) -> None:
        # Called on every endpoint state change: a new picker over the ready
        # ones (picks never see an endpoint that is not ready).
        self._picker = self._make_picker([ep for ep in self.endpoints if ep.state is EndpointState.READY])

    async def start(self, wait: bool = True) -> "Pool":
        """Start keeping every endpoint connected; with ``wait``, return once
        at least one is ready (raise UNAVAILABLE if every first attempt
        failed)."""
        if self._closed:
            raise Unavailable("pool is closed")
        if not self._started:
            self._started = True
            first = [ep.start() for ep in self.endpoints]
            if wait:
                pending = set(first)
                while pending and not self.connected:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not self.connected:
                    raise Unavailable("no connection in the pool could be established")
        return self

    def call(
        self,
        method: str,
        *args: Any,
        timeout: Optional[float] = UNSET,
        metadata: Optional[dict] = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` on the endpoint the picker chooses (awaitable);
        ``retry``, ``hedge`` and ``compress`` as for :meth:`AsyncClient.call`."""
        if timeout is UNSET:
            timeout = self.options.timeout
        p = None
        if kwargs and ("retry" in kwargs or "hedge" in kwargs or "compress" in kwargs):
            retry, hedge, compress = call_options(kwargs)
            timeout, metadata, _ = inherited(self.options.inherit, _LOOKUP, timeout, metadata)
            retry, hedge = self._policies.resolve(method, retry, hedge)
            call = OutgoingCall(
                method, args, kwargs or None, metadata, timeout, self.endpoints[0].address, "call", retry, hedge, compress is UNSET or bool(compress)
            )
            return self._chain(call) if self._chain is not None else self._send(call)
        if self._chain is None:
            ep = self._picker.pick(method)
            if ep is not None:
                p = ep.connection
                if p is not None and (not serving[0] or (_current.get() is None and p.call_slot[0] is None)):
                    # No middleware, nothing to inherit: the core's call.
                    return p.call(method, args, kwargs or None, timeout, metadata)
        timeout, metadata, _ = inherited(self.options.inherit, _LOOKUP, timeout, metadata)
        if self._chain is not None:
            retry_policy, hedge_policy = self._policies.resolve(method)
            return self._chain(OutgoingCall(method, args, kwargs or None, metadata, timeout, self.endpoints[0].address, "call", retry_policy, hedge_policy))
        if p is not None:
            return p.call(method, args, kwargs or None, timeout, metadata)
        return self._unavailable()

    def _send(self, call: OutgoingCall) -> Awaitable[Any]:
        # The end of the middleware chain: the call itself, on the endpoint
        # the picker chooses now.
        policies = self._policies
        if call.hedge is not None and call.kind == "call":
            pick = lambda used: self._hedge_pick(call.method, used)  # noqa: E731
            return hedged_call(call, call.hedge, pick, policies.tracker(call.method, call.hedge), policies.stats)
        if call.retry is not None:
            return call_with_retries(call, policies.budget(call.retry), lambda previous: self._retry_connect(call.method, previous))
        ep = self._picker.pick(call.method)
        p = ep.connection if ep is not None else None
        if p is None:
            return self._unavailable()
        if not call.compress and call.kind == "call":
            return p.call_uncompressed(call.method, call.args, call.kwargs, remaining(call), call.metadata_to_send())
        return p.call(call.method, call.args, call.kwargs, remaining(call), call.metadata_to_send())

    async def _resend(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        # A call the server closed its connection without reading: it never
        # ran, so it goes once more, to the endpoint the picker chooses now
        # (the one it left is no longer ready), and is not resent again.
        ep = self._picker.pick(method)
        p = ep.connection if ep is not None else None
        if p is not None:
            return await p.call(method, args, kwargs, timeout, metadata, False)
        raise NotProcessed("the server closed the connection before reading this call, and no other connection is up")

    async def _retry_connect(self, method: str, previous: Any) -> Any:
        # A retry loop's connection: the picker's choice, another than the
        # last attempt's when another is ready.
        for _ in range(2):
            ep = self._picker.pick(method)
            p = ep.connection if ep is not None else None
            if p is None:
                break
            if p is not previous:
                return p
        else:
            return p
        if self._closed:
            raise NotSent(Unavailable("pool is closed"))
        raise NotSent(Unavailable("no connection in the pool is up"))

    async def _hedge_pick(self, method: str, used: List[Any]) -> Any:
        # A hedged attempt's connection: one not used yet by this call when
        # one is ready (the picker's next), else the picker's choice.
        p = None
        for _ in range(len(self.endpoints)):
            ep = self._picker.pick(method)
            p = ep.connection if ep is not None else None
            if p is None or p not in used:
                break
        if p is None:
            raise Unavailable("pool is closed" if self._closed else "no connection in the pool is up")
        return p

    async def _unavailable(self) -> Any:
        if self._closed:
            raise Unavailable("pool is closed")
        raise Unavailable("no connection in the pool is up")

    def proxy(self, service: str) -> Any:
        """``await pool.proxy("Arith").multiply(7, 8)``."""
        return Proxy(self, service)

    async def close(self) -> None:
        """Stop reconnecting and close every endpoint."""
        self._closed = True
        await asyncio.gather(*(ep.close() for ep in self.endpoints))

    async def __aenter__(self) -> "Pool":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Pool {self.connected}/{self.size} ready>"
