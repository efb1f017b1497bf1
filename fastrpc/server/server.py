"""The fastrpc server: net/rpc-style registration, a dispatch table frozen at
start, listening, graceful shutdown.

Per-call cost is kept to the minimum: the method is found by index in a
list, sync handlers run inline as their request is read (no task, no
future), and every answer produced while handling one read leaves in one
``transport.write``.  Async handlers run as tasks; handlers marked
:func:`blocking` run in a thread pool.  Each connection is a
:class:`~fastrpc.server.connection.ServerConnection`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import signal
import socket
import ssl as _ssl
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

from .._impl import Decoder
from ..core.context import inline_slot, server_started, server_stopped
from ..core.session import AGENT
from ..middleware.access import AccessLog
from ..middleware.stats import CallStats
from ..transport.address import Address, parse_address
from ..wire import compression as compression_codecs
from ..wire import constants as W
from .connection import MeteredServerConnection, ServerConnection
from .builtin import Health, reflect
from .dispatch import DispatchTable, is_idempotent, kind_of
from .sniff import NATIVE, Sniffer, protocol_names, table_for

__all__ = ["REGISTRY_SCHEMES", "Server"]

#: ``Server(registry="<scheme>://...")``: the factory each scheme's URL goes
#: to (``fastrpc.discovery`` adds ``etcd``; this layer does not import it)
REGISTRY_SCHEMES: Dict[str, Callable[[str], Any]] = {}

log = logging.getLogger("fastrpc.server")


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
        middleware: callables ``mw(call, call_next)`` run around every call,
            in list order, the first outermost (see
            :mod:`fastrpc.middleware`); composed per method when the server
            starts.  None: calls run exactly as without.
        metrics: a :class:`fastrpc.middleware.metrics.ServerMetrics` to
            count calls, latency, connections and bytes in
            (``pip install fastrpc[prometheus]``).  None: nothing counted.
        access_log: log every call (method, status, duration, peer, trace
            id) at INFO on the ``fastrpc.access`` logger; a
            :class:`logging.Logger` to log there instead.  Off by default.
        ssl: an :class:`ssl.SSLContext` (``ssl.Purpose.CLIENT_AUTH``, with
            the server's certificate loaded): every address is served over
            TLS and reported as ``tls://``.  For mutual TLS set its
            ``verify_mode`` to ``CERT_REQUIRED`` and load the clients' CA;
            handlers see the client's certificate as
            ``current_call().peer_certificate``.  A ``tls://`` address
            needs it.
        compression: the codecs a client may agree on (``"auto"``, the
            default: every one installed; a name or a list; None: none).
            Payloads of ``compress_threshold`` bytes or more are then
            compressed both ways when that pays.
        compress_threshold: the smallest payload compressed (1 KiB).
        registry: where the server lists itself while it serves: a URL
            (``"etcd://127.0.0.1:2379"``; see :mod:`fastrpc.discovery`) or
            a registry object (``await registry.register(record)`` /
            ``await registry.deregister()``).  It registers once it
            listens and deregisters before it drains.  Needs ``name``.
            With ``run(workers=N)`` the supervising process keeps the one
            record (workers register nothing).
        name, weight, version, tags, service_metadata: what the record says
            (see :class:`fastrpc.discovery.ServiceRecord`).
        advertise: the address clients should use, when the listening one
            is not it (``0.0.0.0``, a container's address); default: the
            first address :meth:`start` bound.
        builtins: serve ``fastrpc.Health.check``/``watch`` and
            ``fastrpc.Reflection.methods`` (see :mod:`fastrpc.server.builtin`);
            :attr:`health` sets services' statuses.
        protocols: the protocols served on every address, chosen per
            connection by its first bytes (``"fastrpc"``, ``"msgpack-rpc"``,
            ``"jsonrpc"``: Go's ``net/rpc/jsonrpc``; see
            :mod:`fastrpc.server.sniff` and docs/protocol.md).  None (the
            default): all of them.  ``["fastrpc"]``: the native protocol
            only, without sniffing.
        debug_page: count every call by method (calls, errors, latency
            percentiles; :class:`fastrpc.middleware.stats.CallStats`, a
            middleware present only then) and serve them as an HTML page
            at ``GET /debug/rpc`` on the HTTP gateway (like Go's
            ``net/rpc`` debug page).  Off by default: nothing counted.
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
        middleware: Optional[Sequence[Any]] = None,
        metrics: Any = None,
        access_log: Any = False,
        ssl: Optional["_ssl.SSLContext"] = None,
        compression: Any = "auto",
        compress_threshold: int = 1024,
        registry: Any = None,
        name: Optional[str] = None,
        weight: int = 1,
        version: str = "",
        tags: Optional[Dict[str, str]] = None,
        service_metadata: Optional[Dict[str, Any]] = None,
        advertise: Optional[str] = None,
        builtins: bool = True,
        protocols: Optional[Sequence[str]] = None,
        debug_page: bool = False,
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
        self._middleware = list(middleware or ())
        for mw in self._middleware:
            if not callable(mw):
                raise TypeError(f"middleware must be callable as mw(call, call_next), not {mw!r}")
        if access_log:
            self._middleware.insert(0, AccessLog(access_log if isinstance(access_log, logging.Logger) else None))
        #: the debug page's numbers (None: the page is off)
        self._stats: Optional[CallStats] = CallStats() if debug_page else None
        if self._stats is not None:
            self._middleware.insert(0, self._stats)
        self._metrics = metrics
        self._connection_class: Any = ServerConnection
        if metrics is not None:
            # First in the chain, so that the other middleware's time counts;
            # connections count their bytes.
            self._middleware.insert(0, metrics)
            self._connection_class = MeteredServerConnection
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError("ssl must be an ssl.SSLContext")
        self.ssl = ssl
        self.compression = compression_codecs.names(compression) or ()
        self.compress_threshold = compress_threshold
        self._builtins = builtins
        if isinstance(protocols, str):
            protocols = [protocols]
        #: the protocols served (by name)
        self.protocols: List[str] = protocol_names() if protocols is None else [p.name for p in table_for(protocols)]
        # None: native only, and a connection starts as the native one.
        self._sniff_table = None if self.protocols == [NATIVE] else table_for(self.protocols)
        #: connections whose first bytes have not chosen a protocol yet
        self._sniffing: Set[Any] = set()
        if isinstance(registry, str):
            scheme = registry.partition("://")[0]
            factory = REGISTRY_SCHEMES.get(scheme)
            if factory is None:
                raise ValueError(f"no registry for {registry!r} (known schemes: {sorted(REGISTRY_SCHEMES)})")
            registry = factory(registry)
        if registry is not None and not name:
            raise ValueError("a server with a registry needs name=")
        self.registry = registry
        self._record_fields = dict(name=name, weight=weight, version=version, tags=tags, metadata=service_metadata)
        self._advertise = advertise
        #: the record this server registered (None: none)
        self.record: Any = None
        #: the health the built-in health service reports (set a service's
        #: status with ``health.set(name, "NOT_SERVING")``)
        self.health = Health()
        self._handlers: Dict[str, tuple] = {}
        self._idempotent: Set[str] = set()
        self._dispatch: Optional[DispatchTable] = None
        self._handshake_info: Dict[str, Any] = {}
        self._servers: List[asyncio.AbstractServer] = []
        self._connections: Set[ServerConnection] = set()
        self._loop: Any = None
        self._shutting_down = False
        self._closed: Optional[asyncio.Event] = None
        self.addresses: List[str] = []
        #: Unix socket paths start() bound (and shutdown() removes)
        self._unlink: List[str] = []

    # -- registration --------------------------------------------------------------

    def register(self, obj: Any, name: Optional[str] = None, *, idempotent: Sequence[str] = ()) -> List[str]:
        """Expose every public method of ``obj`` as ``"<name>.<method>"``.

        ``name`` defaults to the class name.  Only attributes that do not
        start with ``_`` and are callable are exposed; nothing else on the
        object is reachable.  ``idempotent`` names methods (``"get"``) to
        mark as :func:`idempotent`, besides those the decorator marks.
        Returns the registered method names.
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
            names.append(self.register_function(fn, f"{service}.{attr}", idempotent=True if attr in idempotent else None))
        unknown = set(idempotent) - {n.rpartition(".")[2] for n in names}
        if unknown:
            raise ValueError(f"{service} has no public methods {sorted(unknown)} to mark idempotent")
        if not names:
            raise ValueError(f"{service} has no public methods to register")
        return names

    def register_function(
        self, fn: Callable, name: Optional[str] = None, *, blocking: Optional[bool] = None, idempotent: Optional[bool] = None
    ) -> str:
        """Expose a plain function (sync or ``async def``) under ``name``.

        ``blocking=True`` (or the :func:`blocking` decorator) runs a sync
        function in the thread pool.  ``idempotent=True`` (or the
        :func:`idempotent` decorator) lets clients' retry policies send it
        again when it may have run.  Returns the registered name.
        """
        if self._dispatch is not None:
            raise RuntimeError("the dispatch table is frozen once the server has started")
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        if name is None:
            name = getattr(fn, "__name__", None)
            if not name:
                raise ValueError("a name is required for this callable")
        if name in self._handlers:
            raise ValueError(f"method {name!r} is already registered")
        self._handlers[name] = (fn, kind_of(fn, blocking))
        if is_idempotent(fn, idempotent):
            self._idempotent.add(name)
        return name

    @property
    def methods(self) -> List[str]:
        """Registered method names, in dispatch-table order."""
        return list(self._handlers)

    def _freeze(self) -> None:
        if self._dispatch is not None:
            return
        if self._builtins and "fastrpc.Health.check" not in self._handlers:
            # After the application's methods: their indices do not move.
            self.health.known(sorted({name.rpartition(".")[0] for name in self._handlers}))
            self.register_function(self.health.check, "fastrpc.Health.check", idempotent=True)
            self.register_function(self.health.watch, "fastrpc.Health.watch", idempotent=True)
            self.register_function(self._reflect, "fastrpc.Reflection.methods", idempotent=True)
        slot = None
        if self._middleware:
            # Sync middleware chains run inline and note their call in the
            # loop's slot (core/context.py): the loop must be known.
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            slot = inline_slot(self._loop)
        table = DispatchTable(self._handlers, self._middleware, slot)
        self._handshake_info = {
            "server": AGENT,
            "methods": table.names,
            "max_frame_size": self.max_frame_size,
        }
        if self._idempotent:
            self._handshake_info["idempotent"] = [m.index for m in table.methods if m.name in self._idempotent]
        self._dispatch = table

    def _reflect(self) -> List[Dict[str, Any]]:
        """Reflection.methods: every method's name, kind, signature and
        docstring's first line."""
        return reflect(self._dispatch, self._idempotent)

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="fastrpc-blocking"
            )
        return self._executor

    # -- running -------------------------------------------------------------------------

    async def start(
        self, *addresses: Union[str, Address, socket.socket], backlog: int = 1024, reuse_port: bool = False
    ) -> Any:
        """Listen on each address (``tcp://host:port`` or ``unix:/path``).

        Port 0 picks a free port.  Returns the bound address (a str) when one
        address was given, else the list; all are in :attr:`addresses`.

        An address may also be a bound :class:`socket.socket` (TCP or Unix,
        listening or not): the server accepts on it as it is and leaves a
        Unix socket's path in place at shutdown (the socket's owner removes
        it).  ``reuse_port=True`` sets ``SO_REUSEPORT`` on TCP listeners, so
        that several processes can listen on one port and the kernel
        spreads connections among them (what ``run(workers=N)`` does).
        """
        if not addresses:
            raise ValueError("start() needs at least one address")
        if self._shutting_down:
            raise RuntimeError("server is shut down")
        loop = asyncio.get_running_loop()
        if self._closed is None:
            if self._loop is not None and self._loop is not loop:
                raise RuntimeError("a server runs on one event loop")
            self._loop = loop
            self._closed = asyncio.Event()
            server_started()
        elif self._loop is not loop:
            raise RuntimeError("a server runs on one event loop")
        self._freeze()
        bound = []
        for a in addresses:
            if isinstance(a, socket.socket):
                bound.append(await self._start_on(loop, a, backlog))
                continue
            addr = parse_address(a)
            if addr.kind == "tls" and self.ssl is None:
                raise ValueError(f"{a}: a tls:// address needs Server(ssl=an ssl.SSLContext)")
            tls: Dict[str, Any] = {}
            if self.ssl is not None:
                # The handshake counts against the connection's handshake time.
                tls = {"ssl": self.ssl, "ssl_handshake_timeout": self.handshake_timeout or 60.0}
            if addr.kind == "unix":
                srv = await loop.create_unix_server(self._new_connection, addr.path, backlog=backlog, **tls)
                actual = f"unix:{addr.path}"
                self._unlink.append(addr.path)
            else:
                srv = await loop.create_server(
                    self._new_connection,
                    addr.host,
                    addr.port,
                    backlog=backlog,
                    reuse_address=True,
                    reuse_port=reuse_port,
                    **tls,
                )
                sockname = srv.sockets[0].getsockname()
                actual = str(Address("tls" if tls else "tcp", sockname[0], sockname[1], ""))
            self._servers.append(srv)
            self.addresses.append(actual)
            log.info("listening on %s", actual)
            bound.append(actual)
        if self.registry is not None and self.record is None:
            try:
                await self._register(bound[0])
            except BaseException:
                # Told to be listed and cannot be: do not serve unlisted.
                await self.shutdown(grace=0)
                raise
        return bound[0] if len(bound) == 1 else bound

    async def _start_on(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, backlog: int) -> str:
        # Serve on a socket bound elsewhere (run(workers=N) hands each worker
        # the parent's): TLS when the server has a context.
        tls: Dict[str, Any] = {}
        if self.ssl is not None:
            tls = {"ssl": self.ssl, "ssl_handshake_timeout": self.handshake_timeout or 60.0}

        factory = self._new_connection
        if getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX:
            srv = await loop.create_unix_server(factory, sock=sock, backlog=backlog, **tls)
            actual = f"unix:{sock.getsockname()}"
        else:
            srv = await loop.create_server(factory, sock=sock, backlog=backlog, **tls)
            name = sock.getsockname()
            actual = str(Address("tls" if tls else "tcp", name[0], name[1], ""))
        self._servers.append(srv)
        self.addresses.append(actual)
        log.info("listening on %s", actual)
        return actual

    def _new_connection(self) -> Any:
        # What a new connection starts as: the sniffer when other protocols
        # are on (sniff.py), else the native connection itself.
        table = self._sniff_table
        if table is None:
            return self._connection_class(self)
        return Sniffer(self, table)

    async def _register(self, address: str) -> None:
        # The one record this server (or run(workers=N)'s parent) keeps.
        fields = dict(self._record_fields, address=self._advertise or address)
        self.record = await self.registry.register(None, **fields)

    async def _deregister(self) -> None:
        try:
            await self.registry.deregister()
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself
            log.warning("deregistering failed: %s", exc)

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
        self.health.shutdown()  # NOT_SERVING from here on
        if self.registry is not None and self.record is not None:
            # Out of the registry first: clients stop picking this server
            # while it drains the calls it has.
            await self._deregister()
        for srv in self._servers:
            srv.close()
        for sniffer in list(self._sniffing):
            sniffer.abort()  # no protocol chosen yet: nothing to drain
        conns = list(self._connections)
        log.info("shutting down: draining %d connections (grace %ss)", len(conns), grace)
        for conn in conns:
            conn.start_draining()
        if conns:
            waits = [asyncio.ensure_future(c.wait_idle()) for c in conns]
            done, pending = await asyncio.wait(waits, timeout=max(grace, 0))
            for w in pending:
                w.cancel()
        cut = 0
        for conn in list(self._connections):
            for call in list(conn._calls.values()) + list(conn._notifications):
                call.cancel("shutdown")
                cut += 1
            conn._flush()
        if cut:
            log.warning("shutdown: %d calls still running after the grace period were cancelled", cut)
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
        for path in self._unlink:
            try:
                os.unlink(path)
            except OSError:
                pass
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self._closed is not None:
            self._closed.set()
            server_stopped()
        log.info("stopped")

    @property
    def connections(self) -> int:
        """Number of open client connections."""
        return len(self._connections)

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

    def run(
        self,
        *addresses: str,
        grace: float = 5.0,
        use_uvloop: Optional[bool] = None,
        workers: Optional[int] = 1,
        ready: Optional[Callable[[List[str]], None]] = None,
    ) -> None:
        """Serve until SIGINT/SIGTERM, then shut down gracefully (blocking).

        Uses uvloop when it is installed (``use_uvloop=False`` to opt out).
        ``ready(addresses)`` is called once the server listens (and is
        registered), with the bound addresses (port 0 resolved); they are
        also logged at INFO on ``fastrpc.server``.

        ``workers=N`` (N > 1) serves from N forked worker processes that
        share each port (``SO_REUSEPORT`` on Linux, one inherited listening
        socket elsewhere and for ``unix:`` addresses); this process
        supervises them: it restarts a worker that dies, forwards SIGTERM
        to all of them on SIGINT/SIGTERM (each drains for ``grace``) and
        keeps the one registry record.  ``workers=0`` or None: one per CPU
        (``os.cpu_count()``).  POSIX only (needs ``os.fork``); see
        :mod:`fastrpc.server.workers` and ``docs/workers.md``.  Call it
        from the main thread, before anything starts threads.
        """
        if workers is None or workers == 0:
            workers = os.cpu_count() or 1
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if workers > 1:
            from .workers import supervise

            supervise(self, addresses, workers, grace=grace, use_uvloop=use_uvloop, ready=ready)
            return
        from ..transport.loop import new_event_loop

        loop = new_event_loop(use_uvloop)
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._run(addresses, grace, loop, ready))
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _run(
        self,
        addresses: Sequence[str],
        grace: float,
        loop: asyncio.AbstractEventLoop,
        ready: Optional[Callable[[List[str]], None]] = None,
    ) -> None:
        await self.start(*addresses)
        if ready is not None:
            try:
                ready(list(self.addresses))
            except BaseException:
                await self.shutdown(grace=0)
                raise
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

