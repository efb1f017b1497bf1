"""Clients of a target: ``AsyncClient(target)`` and ``Client(target)``.

``AsyncClient("etcd://127.0.0.1:2379/arith")`` (any target naming several
servers, see :mod:`fastrpc.client.target`) makes a
:class:`BalancedAsyncClient`: an ``AsyncClient`` in every way a caller
sees, whose calls go through a :class:`Pool` with one connection per
server.  ``Client(target)`` makes a :class:`BalancedClient`: one blocking
client per server, a balancer's picker choosing per call.  The one-server
clients stay as they are (no indirection on their paths)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from ..balancing import Balancer, Instance, Load, Picker
from ..balancing import balancer as make_balancer
from ..errors import NotProcessed, RpcError, Unavailable
from ..middleware import Middleware
from .async_client import AsyncClient
from .calls import UNSET
from .endpoint import Endpoint, EndpointState
from .hedge import HedgePolicy
from .options import ClientOptions
from .pool import Pool
from .retry import RetryPolicy
from .sync_client import Client
from .target import Resolver, StaticResolver, close_quietly, resolver_for

__all__ = ["BalancedAsyncClient", "BalancedClient"]

log = logging.getLogger("fastrpc.client")


class BalancedAsyncClient(AsyncClient):
    """An :class:`AsyncClient` over every server a target names.

    Parameters are :class:`AsyncClient`'s, plus ``balancer``, ``outlier``
    and ``size`` (connections per server, default 1) as for :class:`Pool`.
    :attr:`pool` is the pool underneath.
    """

    def __init__(
        self,
        address: Any,
        *,
        options: Optional[ClientOptions] = None,
        middleware: Optional[Sequence[Middleware]] = None,
        metrics: Any = None,
        retry: Optional[RetryPolicy] = None,
        hedge: Optional[Dict[str, HedgePolicy]] = None,
        balancer: Any = None,
        outlier: Any = None,
        size: int = 1,
        **settings: Any,
    ) -> None:
        self.options = ClientOptions.build(options, settings)
        #: the pool that makes the calls
        self.pool = Pool(
            address, size=size, balancer=balancer, outlier=outlier, options=self.options, middleware=middleware, metrics=metrics, retry=retry, hedge=hedge
        )
        self.hedge_stats = self.pool.hedge_stats
        # The pool's methods themselves: no frame of ours per call.
        self.call = self.pool.call  # type: ignore[method-assign]
        self.notify = self.pool.notify  # type: ignore[method-assign]
        self.ping = self.pool.ping  # type: ignore[method-assign]

    @property
    def address(self) -> Any:
        """The first server's address (calls go to any of them)."""
        eps = self.pool.endpoints
        return eps[0].address if eps else None

    @property
    def endpoint(self) -> Endpoint:
        """A ready endpoint (else the first): see :attr:`pool` for all."""
        eps = self.pool.endpoints
        for ep in eps:
            if ep.state is EndpointState.READY:
                return ep
        if not eps:
            raise AttributeError("no server known yet (connect first)")
        return eps[0]

    @property
    def connected(self) -> bool:
        """True while at least one server is ready."""
        return self.pool.connected > 0

    @property
    def methods(self) -> List[str]:
        """A ready server's method table."""
        for ep in self.pool.endpoints:
            if ep.state is EndpointState.READY:
                return ep.methods
        return []

    async def connect(self) -> "BalancedAsyncClient":
        """Resolve the target and connect; returns once a server is ready."""
        await self.pool.start()
        return self

    async def wait_lost(self) -> None:
        """Return once no server is ready."""
        while self.pool.connected:
            eps = [ep for ep in self.pool.endpoints if ep.state is EndpointState.READY]
            if not eps:
                break
            await eps[0].wait_for_change()

    async def close(self) -> None:
        """Stop watching the target and close every connection."""
        await self.pool.close()

    async def __aenter__(self) -> "BalancedAsyncClient":
        return await self.connect()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.pool!r}>"


class _Server:
    """One server of a :class:`BalancedClient`: its blocking client and
    what balancers read (the endpoint interface of
    :mod:`fastrpc.balancing.base`)."""

    __slots__ = ("key", "instance", "weight", "version", "tags", "metadata", "load", "client", "in_flight", "down_until", "retiring")

    def __init__(self, instance: Instance, client: Client, load: Optional[Load]) -> None:
        self.key = str(client.address)
        self.client = client
        self.load = load
        #: calls (and go() futures) waiting for an answer from it
        self.in_flight = 0
        #: monotonic time until which it is left out (its reconnection backoff)
        self.down_until = 0.0
        #: dropped by the resolver: closed once its calls are answered
        self.retiring = False
        self.update(instance)

    def update(self, instance: Instance) -> None:
        self.instance = instance
        self.weight = instance.weight
        self.version = instance.version
        self.tags = instance.tags
        self.metadata = instance.metadata

    def __repr__(self) -> str:
        return f"<server {self.key}>"


class BalancedClient(Client):
    """The blocking :class:`Client` over every server a target names
    (``Client(["host1:7000", "host2:7000"])``, ``Client("etcd://…/arith")``).

    Each server gets its own blocking client (one connection, thread-safe,
    shared by every thread); the balancer's picker chooses one per call.
    A server whose connection cannot be made is left out until its
    reconnection backoff ends, and the call goes to another (it was never
    sent).  Targets that change (DNS, etcd) are watched by a resolver on a
    background thread with its own event loop; servers it drops are closed
    once their calls are answered.

    Parameters are :class:`Client`'s, plus ``balancer`` and ``outlier`` as
    for :class:`Pool`.  ``lazy=False`` (the default) connects to one server
    in the constructor (raising UNAVAILABLE if none can be reached).
    """

    def __init__(
        self,
        address: Any,
        *,
        lazy: bool = False,
        options: Optional[ClientOptions] = None,
        middleware: Optional[Sequence[Middleware]] = None,
        metrics: Any = None,
        retry: Optional[RetryPolicy] = None,
        balancer: Any = None,
        outlier: Any = None,
        **settings: Any,
    ) -> None:
        self.options = ClientOptions.build(options, settings)
        self._per_server: Dict[str, Any] = {"options": self.options, "middleware": middleware, "metrics": metrics, "retry": retry}
        #: chooses each call's server
        self.balancer: Balancer = make_balancer(balancer)
        self.outlier = outlier
        self._measure = self.balancer.feedback or outlier is not None
        self._lock = threading.RLock()
        self._servers: Dict[str, _Server] = {}
        self._picker: Picker = self.balancer.picker([])
        #: when to look again at servers left out (0: none is)
        self._recheck = 0.0
        self._next_sweep = 0.0
        self._closed = False
        self._resolver: Resolver = resolver_for(address)
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        if isinstance(self._resolver, StaticResolver):
            self._apply(self._resolver.instances)
        else:
            self._apply(self._watch_in_background())
        if not lazy:
            self._connect_one()

    # -- the set of servers ------------------------------------------------------------

    def _watch_in_background(self) -> List[Instance]:
        # The resolver runs on a thread of its own (with an event loop):
        # the first set comes back here, changes go to _update.
        first: "concurrent.futures.Future[List[Instance]]" = concurrent.futures.Future()

        def watch() -> None:
            loop = self._loop = asyncio.new_event_loop()

            async def main() -> None:
                self._stop = asyncio.Event()
                try:
                    first.set_result(await self._resolver.start(self._update))
                except BaseException as exc:  # noqa: BLE001 - the constructor raises it
                    first.set_exception(exc)
                    return
                await self._stop.wait()
                await close_quietly(self._resolver)

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=watch, name=f"fastrpc-resolver {self._resolver!r}", daemon=True)
        self._thread.start()
        return first.result()

    def _update(self, instances: List[Instance]) -> None:
        if not instances:
            log.warning("%s: the target lists no server; keeping the last %d", self._resolver, len(self._servers))
            return
        self._apply(instances)

    def _apply(self, instances: Sequence[Instance]) -> None:
        with self._lock:
            if self._closed:
                return
            wanted = {i.address: i for i in instances}
            added = 0
            for address, inst in wanted.items():
                server = self._servers.get(address)
                if server is None:
                    client = Client(address, lazy=True, **self._per_server)
                    # A call this server closed its connection without
                    # reading goes to another server, not back to it.
                    client._resend = functools.partial(self._resend_elsewhere, address)  # type: ignore[method-assign]
                    self._servers[address] = _Server(inst, client, Load() if self._measure else None)
                    added += 1
                elif server.instance != inst:
                    server.update(inst)
            gone = [s for a, s in self._servers.items() if a not in wanted]
            for server in gone:
                del self._servers[server.key]
                server.retiring = True
                if server.in_flight == 0:
                    server.client.close()
            if added or gone:
                log.info("%s: %d servers (%d new, %d gone)", self._resolver, len(self._servers), added, len(gone))
            self._rebuild()

    def _rebuild(self) -> None:
        # A new picker over the servers not left out (all of them if every
        # one is: fail open rather than refuse every call).
        with self._lock:
            now = time.monotonic()
            servers = list(self._servers.values())
            up = [s for s in servers if s.down_until <= now]
            outlier = self.outlier
            if outlier is not None:
                up = [s for s in up if not outlier.is_ejected(s.load, now)] or up
            later = [s.down_until for s in servers if s.down_until > now]
            if outlier is not None:
                change = outlier.next_change([s.load for s in servers], now)
                if change is not None:
                    later.append(change)
            self._recheck = min(later) if later else 0.0
            self._picker = self.balancer.picker(up or servers)

    def _left_out(self, server: _Server) -> None:
        # Its connection cannot be made: out until its backoff ends.
        server.down_until = max(server.client._reconnect.next_attempt, time.monotonic() + 0.001)
        self._rebuild()

    def _connect_one(self) -> None:
        errors = []
        for server in list(self._servers.values()):
            try:
                server.client._connection()
                return
            except RpcError as exc:
                errors.append(f"{server.key}: {exc}")
                self._left_out(server)
        raise Unavailable("cannot connect to any server of the target: " + "; ".join(errors))

    @property
    def servers(self) -> List[str]:
        """The servers the target names now."""
        return list(self._servers)

    @property
    def address(self) -> Any:  # type: ignore[override]
        """The first server's address (calls go to any of them)."""
        for server in self._servers.values():
            return server.client.address
        return None

    @address.setter
    def address(self, value: Any) -> None:  # Client.__init__ is not run; nothing sets it
        raise AttributeError("a balanced client has no single address")

    @property
    def methods(self) -> List[str]:
        """A connected server's method table."""
        for server in self._servers.values():
            if server.client._conn is not None:
                return server.client.methods
        return []

    # -- calls -----------------------------------------------------------------------------

    def _choose(self, method: str, args: Any, kwargs: Any, metadata: Any) -> _Server:
        # The picker's server, connected: one that cannot be reached is left
        # out and another is tried (the call was not sent).
        if self._recheck and time.monotonic() >= self._recheck:
            self._sweep_if_due()
            self._rebuild()
        for _ in range(len(self._servers) + 1):
            server = self._picker.pick(method, args, kwargs, metadata)
            if server is None:
                break
            conn = server.client._conn
            if conn is not None and conn.alive and not conn.peer_goaway:
                return server
            try:
                server.client._connection()
                return server
            except RpcError:
                self._left_out(server)
        if self._closed:
            raise Unavailable("client is closed")
        raise Unavailable("no server of the target can be reached")

    def _resend_elsewhere(self, address: str, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        # The call never ran (the server said GOAWAY and never read it):
        # once more, on another server when there is one, and not again.
        for _ in range(len(self._servers) + 1):
            server = self._picker.pick(method, args, kwargs, metadata)
            if server is None:
                break
            if server.key == address and len(self._servers) > 1:
                continue
            try:
                conn = server.client._connection()
            except RpcError:
                self._left_out(server)
                continue
            rid, slot = conn.send_request(method, args, kwargs or None, timeout, metadata, None)
            return conn.wait(rid, slot)
        raise NotProcessed("the server closed the connection before reading this call, and no other server is up")

    def _done(self, server: _Server, started: float, error: Optional[BaseException]) -> None:
        server.in_flight -= 1
        if server.retiring and server.in_flight == 0:
            server.client.close()
        load = server.load
        if load is None:
            return
        seconds = time.monotonic() - started
        outlier = self.outlier
        if outlier is None:
            load.observe(seconds, error is None)
            return
        ok = error is None or not outlier.counts(error.code if isinstance(error, RpcError) else None)
        now = time.monotonic()
        with self._lock:
            load.observe(seconds, ok, now)
            if not ok and outlier.check(load, [s.load for s in self._servers.values()], now):
                log.warning("ejecting %s for %.0fs: %d failures in a row", server.key, load.ejected_until - now, load.consecutive_failures)
                self._rebuild()
        self._sweep_if_due()

    def _sweep_if_due(self) -> None:
        outlier = self.outlier
        if outlier is None:
            return
        now = time.monotonic()
        if now < self._next_sweep:
            return
        with self._lock:
            if self._next_sweep and outlier.sweep([s.load for s in self._servers.values()], now):
                self._rebuild()
            self._next_sweep = now + outlier.interval

    def _begin(self, method: str, args: Any, kwargs: Any, metadata: Any) -> "tuple[_Server, float]":
        # The server for a call, counted in flight from now.
        server = self._choose(method, args, kwargs, metadata)
        server.in_flight += 1
        return server, time.monotonic()

    def call(self, method: str, *args: Any, timeout: Optional[float] = UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> Any:
        """Call ``method`` on the server the balancer chooses (as
        :meth:`Client.call`)."""
        server, started = self._begin(method, args, kwargs, metadata)
        try:
            result = server.client.call(method, *args, timeout=timeout, metadata=metadata, **kwargs)
        except BaseException as exc:
            self._done(server, started, exc)
            raise
        self._done(server, started, None)
        return result

    def go(self, method: str, *args: Any, timeout: Optional[float] = UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> concurrent.futures.Future:
        """Start a call on the server the balancer chooses (as :meth:`Client.go`)."""
        server, started = self._begin(method, args, kwargs, metadata)
        try:
            fut = server.client.go(method, *args, timeout=timeout, metadata=metadata, **kwargs)
        except BaseException as exc:
            self._done(server, started, exc)
            raise
        fut.add_done_callback(lambda f: self._done(server, started, None if f.cancelled() else f.exception()))
        return fut

    def notify(self, method: str, *args: Any, metadata: Optional[dict] = None, **kwargs: Any) -> None:
        """Send a one-way call to the server the balancer chooses."""
        self._choose(method, args, kwargs, metadata).client.notify(method, *args, metadata=metadata, **kwargs)

    def close(self) -> None:
        """Stop watching the target; close every server's connection."""
        with self._lock:
            self._closed = True
            servers = list(self._servers.values())
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop just closed
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for server in servers:
            server.client.close()

    def __repr__(self) -> str:
        return f"<Client {self._resolver!r} {len(self._servers)} servers>"

    def __del__(self) -> None:
        pass
