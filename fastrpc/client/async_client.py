"""The asyncio client: one server address, many calls in flight on one
connection, reconnection with backoff.  It is a client over one
:class:`~fastrpc.client.endpoint.Endpoint`."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence

from ..core.context import _UNSET as _LOOKUP
from ..core.context import _current, serving
from ..errors import RpcError
from ..middleware import Middleware, OutgoingCall, compose
from ..transport.address import Address
from .calls import UNSET, Policies, Proxy, call_options, inherited, no_call_options, remaining
from .endpoint import Endpoint
from .target import is_target
from .options import ClientOptions
from .hedge import HedgePolicy, hedged_call
from .retry import NotSent, RetryPolicy, call_with_retries

__all__ = ["AsyncClient", "connect"]


class AsyncClient:
    """An asyncio client for one server address.

    Usage::

        async with fastrpc.AsyncClient("127.0.0.1:1234") as client:
            print(await client.call("Arith.multiply", 7, 8))

    Given a target instead of one address (a list of addresses,
    ``dns:///NAME:PORT``, ``etcd://HOST:PORT/NAME``: see
    :mod:`fastrpc.client.target`) it is a client over every server the
    target names, with the same API, one connection per server and
    ``balancer=``/``outlier=`` as for :class:`Pool`.

    Parameters:
        address: ``host:port``, ``tcp://host:port`` or ``unix:/path``; or a
            target.
        options: a :class:`ClientOptions`; or give its fields as keyword
            arguments (``timeout``, ``connect_timeout``, ``max_frame_size``,
            ``backoff``, ``keepalive_interval``, ``keepalive_timeout``).
        middleware: callables ``mw(call, call_next)`` (sync or async) run
            around every call and notification, the first outermost; each
            gets an :class:`~fastrpc.middleware.OutgoingCall` (see
            :mod:`fastrpc.middleware`).
        metrics: a :class:`fastrpc.middleware.metrics.ClientMetrics`.
        retry: a :class:`~fastrpc.client.retry.RetryPolicy` for every call
            (a call's ``retry=`` overrides it); None: one attempt.
        hedge: ``{"Service.method": HedgePolicy(...)}``: methods whose calls
            are hedged (on this client's one connection: a hedge that helps
            when single calls stall; a :class:`Pool` hedges to another
            server).
    """

    def __new__(cls, address: Any = None, *args: Any, **kwargs: Any) -> "AsyncClient":
        if cls is AsyncClient and is_target(address):
            from .balanced import BalancedAsyncClient  # a target: many servers

            return object.__new__(BalancedAsyncClient)
        return object.__new__(cls)

    def __init__(
        self,
        address: Any,
        *,
        options: Optional[ClientOptions] = None,
        middleware: Optional[Sequence[Middleware]] = None,
        metrics: Any = None,
        retry: Optional[RetryPolicy] = None,
        hedge: Optional[Dict[str, HedgePolicy]] = None,
        **settings: Any,
    ) -> None:
        self.options = ClientOptions.build(options, settings)
        # The user's Backoff object itself (not a copy): one endpoint.
        self._endpoint = Endpoint(address, self.options, backoff=self.options.backoff, metrics=metrics)
        self._chain: Optional[Callable[[OutgoingCall], Any]] = None
        self._policies = Policies(retry, hedge)
        #: what hedging did on this client
        self.hedge_stats = self._policies.stats
        middleware = ([metrics] if metrics is not None else []) + list(middleware or ())
        if middleware or self._policies.configured:
            self._chain, _ = compose(middleware, self._send, True)

    @property
    def address(self) -> Address:
        """The server's address."""
        return self._endpoint.address

    @property
    def timeout(self) -> Optional[float]:
        """The default per-call timeout."""
        return self.options.timeout

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint this client calls (its state, its connection)."""
        return self._endpoint

    @property
    def connected(self) -> bool:
        """True while a usable connection is open."""
        return self._endpoint.connection is not None

    @property
    def methods(self) -> List[str]:
        """The server's method table (from the last handshake)."""
        return self._endpoint.methods

    async def connect(self) -> "AsyncClient":
        """Connect now (calls also connect on demand); returns ``self``."""
        await self._endpoint.connect()
        return self

    async def wait_lost(self) -> None:
        """Return once the current connection is lost (or said GOAWAY)."""
        ep = self._endpoint
        while ep.connection is not None:
            await ep.wait_for_change()

    async def close(self) -> None:
        """Close the connection; calls in flight fail with UNAVAILABLE."""
        await self._endpoint.close()

    async def __aenter__(self) -> "AsyncClient":
        await self._endpoint.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncClient {self._endpoint.address} {self._endpoint.state.value}>"

    # -- calls ---------------------------------------------------------------------

    def call(
        self,
        method: str,
        *args: Any,
        timeout: Optional[float] = UNSET,
        metadata: Optional[dict] = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` (``"Service.method"``) and return an awaitable of
        its result.

        ``timeout`` (seconds) becomes a deadline the server also enforces;
        when it passes the call raises :class:`DeadlineExceeded`.  Keyword
        arguments other than ``timeout``/``metadata`` go to the handler.
        Cancelling the awaiting task cancels the call on the server.
        ``retry``: a :class:`~fastrpc.client.retry.RetryPolicy` for this
        call (None: one attempt), instead of the client's; ``hedge``: a
        :class:`~fastrpc.client.hedge.HedgePolicy` for this call (None:
        not hedged), instead of the client's for this method;
        ``compress=False``: this request is not compressed (when the
        connection agreed on compression).
        """
        if timeout is UNSET:
            timeout = self.options.timeout
        p = self._endpoint.connection
        if kwargs and ("retry" in kwargs or "hedge" in kwargs or "compress" in kwargs):
            retry, hedge, compress = call_options(kwargs)
            return self._call_with(method, args, kwargs, timeout, metadata, retry, hedge, compress)
        if p is not None and self._chain is None and (not serving[0] or (_current.get() is None and p.call_slot[0] is None)):
            # Connected, no middleware, no call being handled here to
            # inherit from (none can be without a server in this process):
            # the core's call, with nothing in between.
            return p.call(method, args, kwargs or None, timeout, metadata)
        # What a call made while another is handled inherits is taken now,
        # where the call is made (a task that awaits it may run later).
        timeout, metadata, _ = inherited(self.options.inherit, p.call_slot if p is not None else _LOOKUP, timeout, metadata)
        if self._chain is not None:
            retry_policy, hedge_policy = self._policies.resolve(method)
            return self._chain(OutgoingCall(method, args, kwargs or None, metadata, timeout, self._endpoint.address, "call", retry_policy, hedge_policy))
        if p is not None:
            return p.call(method, args, kwargs or None, timeout, metadata)
        return self._call_connecting(method, args, kwargs or None, timeout, metadata)

    def _call_with(
        self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any, retry: Any, hedge: Any, compress: Any = UNSET
    ) -> Awaitable[Any]:
        # A call with a retry or hedging policy of its own.
        p = self._endpoint.connection
        timeout, metadata, _ = inherited(self.options.inherit, p.call_slot if p is not None else _LOOKUP, timeout, metadata)
        retry, hedge = self._policies.resolve(method, retry, hedge)
        call = OutgoingCall(
            method, args, kwargs or None, metadata, timeout, self._endpoint.address, "call", retry, hedge, compress is UNSET or bool(compress)
        )
        return self._chain(call) if self._chain is not None else self._send(call)

    def _send(self, call: OutgoingCall) -> Awaitable[Any]:
        # The end of the middleware chain: the call itself (its coroutine,
        # with no coroutine of ours around it when connected).
        policies = self._policies
        if call.hedge is not None and call.kind == "call":
            return hedged_call(call, call.hedge, self._hedge_pick, policies.tracker(call.method, call.hedge), policies.stats)
        if call.retry is not None and call.kind == "call":
            return call_with_retries(call, policies.budget(call.retry), self._retry_connect)
        if not call.compress and call.kind == "call":
            return self._send_uncompressed(call)
        p = self._endpoint.connection
        if p is not None and call.kind == "call":
            return p.call(call.method, call.args, call.kwargs, remaining(call), call.metadata_to_send())
        return self._send_connecting(call)

    async def _send_uncompressed(self, call: OutgoingCall) -> Any:
        p = self._endpoint.connection or await self._endpoint.connect()
        return await p.call_uncompressed(call.method, call.args, call.kwargs, remaining(call), call.metadata_to_send())

    async def _hedge_pick(self, used: List[Any]) -> Any:
        # One endpoint: every attempt on its connection.
        return self._endpoint.connection or await self._endpoint.connect()

    async def _retry_connect(self, previous: Any) -> Any:
        # A retry loop's connection: this client's, connecting if need be.
        ep = self._endpoint
        p = ep.connection
        if p is not None:
            return p
        try:
            return await ep.connect()
        except RpcError as exc:
            # Not sent.  During the endpoint's backoff another try fails the
            # same way: the retry waits for its next attempt.
            raise NotSent(exc, time.monotonic() + max(0.0, ep.next_attempt - asyncio.get_running_loop().time())) from None

    async def _send_connecting(self, call: OutgoingCall) -> Any:
        p = await self._endpoint.connect()
        if call.kind == "notify":
            p.notify(call.method, call.args, call.kwargs, call.metadata_to_send())
            return None
        return await p.call(call.method, call.args, call.kwargs, remaining(call), call.metadata_to_send())

    async def _call_connecting(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        p = await self._endpoint.connect()
        return await p.call(method, args, kwargs, timeout, metadata)

    async def notify(self, method: str, *args: Any, metadata: Optional[dict] = None, **kwargs: Any) -> None:
        """Send a one-way call: no answer, errors are not reported."""
        if kwargs:
            no_call_options(kwargs, "notify()")
        _, metadata, _ = inherited(self.options.inherit, _LOOKUP, None, metadata)
        if self._chain is not None:
            await self._chain(OutgoingCall(method, args, kwargs or None, metadata, None, self._endpoint.address, "notify"))
            return
        p = await self._endpoint.connect()
        p.notify(method, args, kwargs or None, metadata)

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Round-trip a PING frame; return the seconds it took."""
        p = await self._endpoint.connect()
        return await p.ping(timeout)

    def proxy(self, service: str) -> Any:
        """An object whose attributes call ``service``'s methods:
        ``await client.proxy("Arith").multiply(7, 8)``."""
        return Proxy(self, service)


async def connect(address: Any, **options: Any) -> AsyncClient:
    """Connect an :class:`AsyncClient` to ``address`` (options as for it)."""
    client = AsyncClient(address, **options)
    await client.connect()
    return client
