"""The drop-in synchronous client.

It talks to the server through a blocking socket, with no event loop thread
in between, and is safe to share between threads (see
``client/_sync.py``)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from asyncio import _get_running_loop
from typing import Any, Callable, List, Optional, Sequence

from .._impl import CallSlot
from ..core.context import _UNSET as _LOOKUP
from ..core.context import _current, serving
from ..errors import DeadlineExceeded, NotProcessed, RpcError, Unavailable
from ..middleware import Middleware, OutgoingCall, compose
from ..transport.address import Address, parse_address
from ._sync import SyncConnection
from .calls import UNSET, Policies, Proxy, call_options, inherited, no_call_options, remaining
from .options import ClientOptions, Reconnect
from .retry import Retrier, RetryPolicy
from .target import is_target

__all__ = ["Client"]


class Client:
    """The synchronous client: ``Client("127.0.0.1:1234").call("Arith.multiply", 7, 8)``.

    Thread-safe: share one instance between threads and their calls are
    pipelined on one connection.  The connection is opened by the
    constructor and reopened on demand (with backoff) after it is lost.

    Given a target instead of one address (a list of addresses,
    ``dns:///NAME:PORT``, ``etcd://HOST:PORT/NAME``: see
    :mod:`fastrpc.client.target`) it is a client over every server the
    target names, with the same API and ``balancer=``/``outlier=`` as for
    :class:`Pool` (:class:`~fastrpc.client.balanced.BalancedClient`).

    Parameters:
        address: ``host:port``, ``tcp://host:port`` or ``unix:/path``; or a
            target.
        lazy: do not connect in the constructor.
        options: a :class:`ClientOptions`; or give its fields as keyword
            arguments (``timeout``, ``connect_timeout``, ``max_frame_size``,
            ``backoff``, ``keepalive_interval``, ``keepalive_timeout``).
        middleware: sync callables ``mw(call, call_next)`` run around every
            call, ``go()`` and notification, the first outermost (see
            :mod:`fastrpc.middleware`; in ``go()``, ``call_next`` returns
            the call's ``concurrent.futures.Future``).
        metrics: a :class:`fastrpc.middleware.metrics.ClientMetrics` to
            count calls, latency, connections and bytes in.
        retry: a :class:`~fastrpc.client.retry.RetryPolicy` for every
            ``call()`` (a call's ``retry=`` overrides it); None: one
            attempt.  ``go()`` and notifications are not retried.

    With ``keepalive_interval`` the client pings a server silent that long
    while calls wait, and fails the calls if it stays silent
    ``keepalive_timeout`` more seconds.  The server answers pings from its
    event loop, so a sync handler that blocks it that long counts as
    silence.  The silence is noticed within one more
    ``keepalive_interval``.  With keepalive every read has a timeout (a
    poll() before each recv()), so a call costs a syscall more.
    """

    def __new__(cls, address: Any = None, *args: Any, **kwargs: Any) -> "Client":
        if cls is Client and is_target(address):
            from .balanced import BalancedClient  # a target: many servers

            return object.__new__(BalancedClient)
        return object.__new__(cls)

    def __init__(
        self,
        address: Any,
        *,
        lazy: bool = False,
        options: Optional[ClientOptions] = None,
        middleware: Optional[Sequence[Middleware]] = None,
        metrics: Any = None,
        retry: Optional[RetryPolicy] = None,
        **settings: Any,
    ) -> None:
        self.options = ClientOptions.build(options, settings)
        self._chain: Optional[Callable[[OutgoingCall], Any]] = None
        self._metrics = metrics
        self._policies = Policies(retry, None)
        middleware = ([metrics] if metrics is not None else []) + list(middleware or ())
        if middleware or self._policies.configured:
            chain, is_async = compose(middleware, self._send, False)
            if is_async:
                raise TypeError("the blocking Client runs sync middleware only (def mw(call, call_next))")
            self._chain = chain
        self.address: Address = parse_address(address)
        self._reconnect = Reconnect(self.address, self.options.backoff)
        self._conn: Optional[SyncConnection] = None
        #: connections replaced after GOAWAY, still answering calls in flight
        self._retired: List[SyncConnection] = []
        self._connect_lock = threading.Lock()
        self._closed = False
        if not lazy:
            self._connection()

    @property
    def timeout(self) -> Optional[float]:
        """The default per-call timeout."""
        return self.options.timeout

    def _connection(self) -> SyncConnection:
        conn = self._conn
        if conn is not None and conn.alive and not conn.peer_goaway:
            return conn
        with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.alive and not conn.peer_goaway:
                return conn
            if self._closed:
                raise Unavailable("client is closed")
            self._reconnect.check(time.monotonic())
            try:
                conn = SyncConnection(self.address, self.options, self._metrics)
            except BaseException as exc:
                err = self._reconnect.failed(exc, time.monotonic())
                if err is exc:
                    raise
                raise err from exc
            self._reconnect.succeeded()
            old, self._conn = self._conn, conn
            self._retired = [c for c in self._retired if c.alive]
            if old is not None and old.alive:
                # After GOAWAY: its calls in flight still get their answers
                # (other threads, go() futures), then it closes.
                old.retire()
                if old.alive:
                    self._retired.append(old)
            return conn

    @property
    def methods(self) -> List[str]:
        """The server's method table (from the last handshake)."""
        conn = self._conn
        return list(conn.methods) if conn is not None else []

    def call(
        self,
        method: str,
        *args: Any,
        timeout: Optional[float] = UNSET,
        metadata: Optional[dict] = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``method`` and return its result (blocking).

        Raises the server's :class:`RpcError` subclass on failure,
        :class:`DeadlineExceeded` when ``timeout`` passes, and
        :class:`Unavailable` when the connection is down.  A call the
        server closed the connection without reading (it said GOAWAY first,
        naming an earlier call as its last) never ran: it is sent once more
        on a new connection, with the time left.  ``retry``: a
        :class:`~fastrpc.client.retry.RetryPolicy` for this call (None: one
        attempt), instead of the client's.  ``compress=False``: this
        request is not compressed (when the connection agreed on it).
        """
        if timeout is UNSET:
            timeout = self.options.timeout
        conn = self._conn
        if (
            timeout is None
            and metadata is None
            and not kwargs
            and conn is not None
            and conn.alive
            and not conn.peer_goaway
            and self._chain is None
            and (not serving[0] or (_current.get() is None and _get_running_loop() is None))
        ):
            # The plain call on an open connection, with no middleware and
            # no call being handled here to inherit from (none can be
            # without a server in this process): no function call in
            # between.
            try:
                return conn.call_plain(method, args)
            except NotProcessed:
                return self._resend(method, args, None, None, None)
        retry = compress = UNSET
        if kwargs and ("retry" in kwargs or "hedge" in kwargs or "compress" in kwargs):
            retry, hedge, compress = call_options(kwargs)
            if hedge is not UNSET:
                raise TypeError("the blocking Client does not hedge (AsyncClient and Pool do)")
        timeout, metadata, parent = inherited(self.options.inherit, _LOOKUP, timeout, metadata)
        if self._chain is not None or retry is not UNSET or compress is not UNSET:
            call = OutgoingCall(
                method,
                args,
                kwargs or None,
                metadata,
                timeout,
                self.address,
                "call",
                self._policies.resolve(method, retry)[0],
                None,
                compress is UNSET or bool(compress),
            )
            if parent is not None:
                call.state["fastrpc.parent"] = parent  # for _send: its cancellation
            return self._chain(call) if self._chain is not None else self._send(call)
        return self._call(method, args, kwargs, timeout, metadata, parent)

    def _send(self, call: OutgoingCall) -> Any:
        # The end of the middleware chain: the call itself.
        md = call.metadata_to_send()
        if call.kind == "notify":
            self._connection().notify(call.method, call.args, call.kwargs, md)
            return None
        if call.kind == "go":
            return self._go(call.method, call.args, call.kwargs, remaining(call), md)
        parent = call._state.get("fastrpc.parent") if call._state else None
        if call.retry is not None:
            return self._call_retrying(call, md, parent)
        if not call.compress:
            conn = self._connection()
            rid, slot = conn.send_request(call.method, call.args, call.kwargs, remaining(call), md, None, compress=False)
            return conn.wait(rid, slot, parent)
        return self._call(call.method, call.args, call.kwargs, remaining(call), md, parent)

    def _call_retrying(self, call: OutgoingCall, metadata: Any, parent: Any) -> Any:
        # The retry loop (see client/retry.py), blocking.
        retrier = Retrier(call.retry, self._policies.budget(call.retry), call.deadline)
        method, args, kwargs, deadline = call.method, call.args, call.kwargs, retrier.deadline
        plain = parent is None or parent._call is None
        while True:
            try:
                conn = self._connection()
            except RpcError as exc:
                # Not sent: the next try waits for the reconnection backoff.
                wait = retrier.decide(exc, False, False, time.monotonic(), self._reconnect.next_attempt)
            else:
                timeout = None
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        raise DeadlineExceeded(f"{method} did not complete in time", {"attempts": retrier.attempts})
                try:
                    if timeout is None and plain:
                        result = conn.call_plain(method, args, kwargs, metadata)
                    else:
                        rid, slot = conn.send_request(method, args, kwargs, timeout, metadata, None)
                        result = conn.wait(rid, slot, parent)
                except RpcError as exc:
                    wait = retrier.decide(exc, True, method in conn.idempotent, time.monotonic())
                else:
                    retrier.succeeded()
                    return result
            time.sleep(wait)

    def _call(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any, parent: Any = None) -> Any:
        conn = self._conn
        if conn is None or not conn.alive or conn.peer_goaway:
            conn = self._connection()
        if timeout is None and (parent is None or parent._call is None):
            # No deadline, and no parent whose cancellation must be watched
            # (an inline handler's cannot be cancelled while it runs).
            try:
                return conn.call_plain(method, args, kwargs or None, metadata or None)
            except NotProcessed:
                pass
        else:
            rid, slot = conn.send_request(method, args, kwargs or None, timeout, metadata, None)
            try:
                return conn.wait(rid, slot, parent)
            except NotProcessed:
                if slot.deadline is not None:
                    timeout = slot.deadline - time.monotonic()
        return self._resend(method, args, kwargs, timeout, metadata)

    def _resend(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        # Not read by the server: once more, on a new connection, and not again.
        conn = self._connection()
        rid, slot = conn.send_request(method, args, kwargs or None, timeout, metadata, None)
        return conn.wait(rid, slot)

    def go(self, method: str, *args: Any, timeout: Optional[float] = UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> concurrent.futures.Future:
        """Start a call and return a :class:`concurrent.futures.Future` of its
        result (like Go net/rpc's ``Go``).  Calls are sent in the order
        ``go`` is called.  A call the server closed the connection without
        reading is sent once more, as :meth:`call` does."""
        if kwargs:
            no_call_options(kwargs, "go()")
        if timeout is UNSET:
            timeout = self.options.timeout
        timeout, metadata, _ = inherited(self.options.inherit, _LOOKUP, timeout, metadata)
        if self._chain is not None:
            return self._chain(OutgoingCall(method, args, kwargs or None, metadata, timeout, self.address, "go"))
        return self._go(method, args, kwargs or None, timeout, metadata)

    def _go(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> concurrent.futures.Future:
        conn = self._connection()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        conn.send_request(method, args, kwargs, timeout, metadata, fut, (self._resend_go, args, kwargs, metadata))
        conn.ensure_reader()
        return fut

    def _resend_go(self, slot: CallSlot) -> None:
        # A go() call the server closed the connection without reading:
        # once more, on a new connection, with the time left, and not again.
        _, args, kwargs, metadata = slot.resend
        fut = slot.future
        try:
            timeout = None if slot.deadline is None else slot.deadline - time.monotonic()
            conn = self._connection()
            conn.send_request(slot.method, args, kwargs, timeout, metadata, fut)
            conn.ensure_reader()
        except BaseException as exc:  # noqa: BLE001 - the caller's future reports it
            if not fut.done():
                fut.set_exception(exc)

    def notify(self, method: str, *args: Any, metadata: Optional[dict] = None, **kwargs: Any) -> None:
        """Send a one-way call (no answer)."""
        if kwargs:
            no_call_options(kwargs, "notify()")
        _, metadata, _ = inherited(self.options.inherit, _LOOKUP, None, metadata)
        if self._chain is not None:
            self._chain(OutgoingCall(method, args, kwargs or None, metadata, None, self.address, "notify"))
            return
        self._connection().notify(method, args, kwargs or None, metadata)

    def proxy(self, service: str) -> Any:
        """``client.proxy("Arith").multiply(7, 8)``."""
        return Proxy(self, service)

    def close(self) -> None:
        """Close the connection; calls in flight fail with UNAVAILABLE."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        for old in self._retired:
            old.close()
        self._retired = []

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        conn = self._conn
        state = "connected" if conn is not None and conn.usable else "closed" if self._closed else "not connected"
        return f"<Client {self.address} {state}>"

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and conn.alive:
            try:
                conn.sock.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
