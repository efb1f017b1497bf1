"""A client over several endpoints: connections to one or more servers, each
kept up in the background, calls spread across the ready ones by a
balancer's picker.

The servers come from a target (``fastrpc/client/target.py``): a list, or a
resolver (DNS, etcd) that keeps the set current; servers it adds are
connected, servers it drops are retired (their calls in flight finish).
A call never waits for a reconnection: with no endpoint ready it fails at
once with UNAVAILABLE.  The pool uses endpoints only through their public
interface (state, subscriptions, ``connection``, ``start``, ``retire``,
``close``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Sequence

from ..balancing import Balancer, Instance, Load, balancer as make_balancer
from ..core.context import _UNSET as _LOOKUP
from ..core.context import _current, serving
from ..errors import NotProcessed, RpcError, Unavailable
from ..middleware import Middleware, OutgoingCall, compose
from .calls import UNSET, Policies, Proxy, call_options, inherited, no_call_options, remaining
from .endpoint import Endpoint, EndpointState, Picker
from .options import Backoff, ClientOptions
from .target import Resolver, StaticResolver, close_quietly, resolver_for
from .hedge import HedgePolicy, hedged_call
from .retry import NotSent, RetryPolicy, call_with_retries

if TYPE_CHECKING:  # pragma: no cover
    from ..balancing.outlier import OutlierDetection

__all__ = ["Pool"]

log = logging.getLogger("fastrpc.client")


class _PickerMaker(Balancer):
    # Pool(picker=SomePicker): a picker class (or factory) as a balancer.
    def __init__(self, make: Callable[[Sequence[Endpoint]], Picker]) -> None:
        self._make = make

    def picker(self, ready: Sequence[Any]) -> Picker:
        return self._make(ready)


class Pool:
    """Connections to a set of servers, calls spread across them.

    Usage::

        async with fastrpc.Pool(["10.0.0.7:7000", "10.0.0.8:7000"], balancer="p2c") as pool:
            await pool.call("Arith.multiply", 7, 8)

        pool = fastrpc.Pool("etcd://127.0.0.1:2379/arith")   # watched live

    Parameters:
        target: one address, a list of addresses (or
            :class:`~fastrpc.balancing.Instance` s), ``dns:///NAME:PORT``,
            ``etcd://HOST:PORT/NAME`` or a
            :class:`~fastrpc.client.target.Resolver` (see
            :mod:`fastrpc.client.target`).
        size: connections (endpoints) per server.
        balancer: how a call's server is chosen: a name (``round_robin``,
            the default; ``random``, ``weighted``, ``p2c``,
            ``consistent_hash``) or a :class:`~fastrpc.balancing.Balancer`
            (:class:`~fastrpc.balancing.ConsistentHash` and
            :class:`~fastrpc.balancing.Routes` take parameters).
        picker: a :class:`Picker` class (``picker(ready)``), instead of a
            balancer.
        outlier: a :class:`~fastrpc.balancing.OutlierDetection`: servers
            failing far more than their peers are ejected for a while
            (None: off).
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

    A server whose connection is refused, lost or told to go away (GOAWAY)
    leaves the picker at once, whatever the resolver says; it comes back
    when a reconnection succeeds.  A call the server closed its connection
    without reading (:class:`~fastrpc.NotProcessed`) goes to another one.
    """

    def __init__(
        self,
        target: Any,
        *,
        size: int = 4,
        balancer: Any = None,
        picker: Optional[Callable[[Sequence[Endpoint]], Picker]] = None,
        outlier: Optional["OutlierDetection"] = None,
        options: Optional[ClientOptions] = None,
        middleware: Optional[Sequence[Middleware]] = None,
        metrics: Any = None,
        backoff_base: Optional[float] = None,
        backoff_max: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        hedge: Optional[Dict[str, HedgePolicy]] = None,
        **settings: Any,
    ) -> None:
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
        if picker is not None and balancer is not None:
            raise TypeError("give balancer or picker, not both")
        self.options = ClientOptions.build(options, settings)
        self._resolver: Resolver = resolver_for(target)
        #: chooses each call's endpoint (a fresh picker per change of the ready set)
        self.balancer: Balancer = _PickerMaker(picker) if picker is not None else make_balancer(balancer)
        self.outlier = outlier
        self._size = size
        self._metrics = metrics
        # Calls are measured only when something reads the measurements.
        self._measure = self.balancer.feedback or outlier is not None
        #: every endpoint (connection slot), in the order servers came
        self.endpoints: List[Endpoint] = []
        self._servers: Dict[str, List[Endpoint]] = {}
        #: what was measured per server (with a measuring balancer or outlier detection)
        self.loads: Dict[str, Load] = {}
        self._picker: Picker = self.balancer.picker([])
        self._chain: Optional[Callable[[OutgoingCall], Any]] = None
        self._policies = Policies(retry, hedge)
        #: what hedging did on this pool
        self.hedge_stats = self._policies.stats
        middleware = ([metrics] if metrics is not None else []) + list(middleware or ())
        if middleware or self._policies.configured:
            self._chain, _ = compose(middleware, self._send, True)
        self._started = False
        self._closed = False
        self._sweeper: Optional[asyncio.TimerHandle] = None
        self._wake: Optional[asyncio.TimerHandle] = None
        if isinstance(self._resolver, StaticResolver):
            # Known now: the endpoints exist before start() (and size counts them).
            self._apply(self._resolver.instances)

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

    @property
    def servers(self) -> List[str]:
        """The servers the target names now (their addresses)."""
        return list(self._servers)

    def _rebuild(self, _: Any = None) -> None:
        # Called on every endpoint state change, set change and ejection: a
        # new picker over the ready ones (picks never see an endpoint that
        # is not ready), without ejected servers.
        ready = [ep for ep in self.endpoints if ep.state is EndpointState.READY]
        outlier = self.outlier
        if outlier is not None and ready:
            now = time.monotonic()
            kept = [ep for ep in ready if not outlier.is_ejected(ep.load, now)]
            ready = kept or ready  # never eject every server: fail open
        self._picker = self.balancer.picker(ready)

    # -- the set of servers ------------------------------------------------------------

    def _apply(self, instances: Sequence[Instance]) -> None:
        # The target's servers are now ``instances``: connect new ones,
        # retire gone ones (their calls in flight finish), take new weights.
        if self._closed:
            return
        wanted = {i.address: i for i in instances}
        added = [i for a, i in wanted.items() if a not in self._servers]
        gone = [a for a in self._servers if a not in wanted]
        for a, slots in self._servers.items():
            inst = wanted.get(a)
            if inst is not None and inst != slots[0].instance:
                for ep in slots:
                    ep.update(inst)
        for a in gone:
            slots = self._servers.pop(a)
            self.loads.pop(a, None)
            for ep in slots:
                self.endpoints.remove(ep)
                asyncio.ensure_future(ep.retire())
        for inst in added:
            load = Load() if self._measure else None
            slots = [
                Endpoint(
                    inst.address,
                    self.options,
                    resend=self._resend,
                    metrics=self._metrics,
                    instance=inst,
                    load=load,
                    report=self._observed if self.outlier is not None else None,
                    measure_every=0.0 if self.outlier is not None else self.balancer.measure_every,
                )
                for _ in range(self._size)
            ]
            if load is not None:
                self.loads[slots[0].key] = load
            self._servers[slots[0].key] = slots
            for ep in slots:
                ep.subscribe(self._rebuild)
                self.endpoints.append(ep)
                if self._started:
                    ep.start()
        if added or gone:
            log.info("%s: %d servers (%d new, %d gone)", self._resolver, len(self._servers), len(added), len(gone))
        self._rebuild()

    def _update(self, instances: List[Instance]) -> None:
        # The resolver's callback (on the loop).
        if not instances:
            # An empty answer is more often a registry's blip than every
            # server gone: keep calling the last ones.
            log.warning("%s: the target lists no server; keeping the last %d", self._resolver, len(self._servers))
            return
        self._apply(instances)

    # -- outlier detection --------------------------------------------------------------

    def _observed(self, load: Load, seconds: float, error: Optional[BaseException]) -> None:
        # After each measured call, when outlier detection is on.
        outlier = self.outlier
        assert outlier is not None
        ok = error is None or not outlier.counts(error.code if isinstance(error, RpcError) else None)
        now = time.monotonic()
        load.observe(seconds, ok, now)
        if not ok and outlier.check(load, list(self.loads.values()), now):
            log.warning("ejecting %s for %.0fs: %d failures in a row", self._key_of(load), load.ejected_until - now, load.consecutive_failures)
            self._rebuild()
            self._schedule_wake(now)

    def _key_of(self, load: Load) -> str:
        for key, value in self.loads.items():
            if value is load:
                return key
        return "?"

    def _sweep(self) -> None:
        # Every outlier interval: failure rates compared, ejections ended.
        outlier = self.outlier
        assert outlier is not None
        now = time.monotonic()
        before = {k for k, v in self.loads.items() if outlier.is_ejected(v, now)}
        if outlier.sweep(list(self.loads.values()), now):
            after = {k for k, v in self.loads.items() if outlier.is_ejected(v, now)}
            for key in after - before:
                log.warning("ejecting %s: its failure rate is far above its peers'", key)
            for key in before - after:
                log.info("%s is back from ejection", key)
            self._rebuild()
        self._schedule_wake(now)
        if not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(outlier.interval, self._sweep)

    def _schedule_wake(self, now: float) -> None:
        # Rebuild when the next ejection ends (between sweeps).
        outlier = self.outlier
        assert outlier is not None
        when = outlier.next_change(list(self.loads.values()), now)
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if when is not None and not self._closed:
            self._wake = asyncio.get_running_loop().call_later(max(0.0, when - now) + 0.001, self._rebuild)

    async def start(self, wait: bool = True) -> "Pool":
        """Start keeping every endpoint connected; with ``wait``, return once
        at least one is ready (raise UNAVAILABLE if every first attempt
        failed)."""
        if self._closed:
            raise Unavailable("pool is closed")
        if not self._started:
            if not isinstance(self._resolver, StaticResolver):
                self._apply(await self._resolver.start(self._update))
            self._started = True
            if self.outlier is not None:
                self._sweeper = asyncio.get_running_loop().call_later(self.outlier.interval, self._sweep)
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
            call = OutgoingCall(method, args, kwargs or None, metadata, timeout, self._target_address(), "call", retry, hedge, compress is UNSET or bool(compress))
            return self._chain(call) if self._chain is not None else self._send(call)
        if self._chain is None:
            ep = self._picker.pick(method, args, kwargs, metadata)
            if ep is not None:
                p = ep.connection
                if p is not None and (not serving[0] or (_current.get() is None and p.call_slot[0] is None)):
                    # No middleware, nothing to inherit: the core's call.
                    return p.call(method, args, kwargs or None, timeout, metadata)
        timeout, metadata, _ = inherited(self.options.inherit, _LOOKUP, timeout, metadata)
        if self._chain is not None:
            retry_policy, hedge_policy = self._policies.resolve(method)
            return self._chain(OutgoingCall(method, args, kwargs or None, metadata, timeout, self._target_address(), "call", retry_policy, hedge_policy))
        if p is not None:
            return p.call(method, args, kwargs or None, timeout, metadata)
        return self._unavailable()

    def _target_address(self) -> Any:
        # What middleware sees as the call's address: the first server (a
        # call's server is chosen after the middleware ran).
        eps = self.endpoints
        return eps[0].address if eps else None

    def _pick(self, method: str, call: Any = None) -> Any:
        # The picker's choice for a call made through the chain.
        if call is None:
            return self._picker.pick(method)
        return self._picker.pick(method, call.args, call.kwargs, call.metadata)

    def _send(self, call: OutgoingCall) -> Awaitable[Any]:
        # The end of the middleware chain: the call itself, on the endpoint
        # the picker chooses now.
        policies = self._policies
        if call.hedge is not None and call.kind == "call":
            pick = lambda used: self._hedge_pick(call, used)  # noqa: E731
            return hedged_call(call, call.hedge, pick, policies.tracker(call.method, call.hedge), policies.stats)
        if call.kind == "notify":
            return self._notify_now(call.method, call.args, call.kwargs, call.metadata_to_send())
        if call.retry is not None:
            return call_with_retries(call, policies.budget(call.retry), lambda previous: self._retry_connect(call, previous))
        ep = self._pick(call.method, call)
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

    async def _retry_connect(self, call: OutgoingCall, previous: Any) -> Any:
        # A retry loop's connection: the picker's choice, another than the
        # last attempt's when another is ready.
        for _ in range(2):
            ep = self._pick(call.method, call)
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

    async def _hedge_pick(self, call: OutgoingCall, used: List[Any]) -> Any:
        # A hedged attempt's connection: one not used yet by this call when
        # one is ready (the picker's next), else the picker's choice.
        p = None
        for _ in range(len(self.endpoints)):
            ep = self._pick(call.method, call)
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

    async def notify(self, method: str, *args: Any, metadata: Optional[dict] = None, **kwargs: Any) -> None:
        """Send a one-way call to the server the picker chooses: no
        answer, errors are not reported."""
        if kwargs:
            no_call_options(kwargs, "notify()")
        _, metadata, _ = inherited(self.options.inherit, _LOOKUP, None, metadata)
        if self._chain is not None:
            await self._chain(OutgoingCall(method, args, kwargs or None, metadata, None, self._target_address(), "notify"))
            return
        await self._notify_now(method, args, kwargs or None, metadata)

    async def _notify_now(self, method: str, args: Any, kwargs: Any, metadata: Any) -> None:
        ep = self._picker.pick(method, args, kwargs, metadata)
        p = ep.connection if ep is not None else None
        if p is None:
            await self._unavailable()
        else:
            p.notify(method, args, kwargs, metadata)

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Round-trip a PING to the server the picker chooses; return the
        seconds it took."""
        ep = self._picker.pick("")
        p = ep.connection if ep is not None else None
        if p is None:
            return await self._unavailable()
        return await p.ping(timeout)

    def proxy(self, service: str) -> Any:
        """``await pool.proxy("Arith").multiply(7, 8)``."""
        return Proxy(self, service)

    async def close(self) -> None:
        """Stop watching the target, stop reconnecting, close every endpoint."""
        self._closed = True
        for handle in (self._sweeper, self._wake):
            if handle is not None:
                handle.cancel()
        await close_quietly(self._resolver)
        await asyncio.gather(*(ep.close() for ep in self.endpoints))

    async def __aenter__(self) -> "Pool":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Pool {self.balancer.name or type(self.balancer).__name__} {self.connected}/{self.size} ready>"
