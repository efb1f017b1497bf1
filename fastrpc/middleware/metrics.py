"""Prometheus metrics for fastrpc calls (``pip install fastrpc[prometheus]``).

Usage::

    from fastrpc.middleware.metrics import ClientMetrics, ServerMetrics

    metrics = ServerMetrics()                 # registers with prometheus_client's default registry
    server = fastrpc.Server(metrics=metrics)
    metrics.serve("127.0.0.1:9100")          # GET /metrics there
    client = fastrpc.AsyncClient(address, metrics=ClientMetrics())   # Client and Pool too

What each side reports (``fastrpc_server_*`` or ``fastrpc_client_*``):

* ``started_total{method}``: calls started;
* ``handled_total{method,code}``: calls finished, by status code name
  (``OK``, ``NOT_FOUND``, ...);
* ``handling_seconds{method}``: a histogram of call latency, buckets from
  10 us to 10 s;
* ``in_flight{method}``: calls running now;
* ``connections``: open connections;
* ``received_bytes_total`` and ``sent_bytes_total``: bytes read and written
  on those connections.

Labels stay bounded: a server counts calls of methods it does not have
under ``method="unknown"``; a client counts at most ``max_methods`` method
names and the rest under ``"other"``.

The numbers are kept in plain counters, under one lock, and turned into
Prometheus metric families only when scraped (``collect``): the per-call
cost is a few integer additions, not a Prometheus metric update per value.
The calls are counted by a middleware, first in the chain (so the time of
the other middleware counts); connections and bytes by the connections
themselves, only when metrics are configured.
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

from ..errors import code_name
from . import observe

__all__ = ["BUCKETS", "ClientMetrics", "CountingSocket", "CountingTransport", "ServerMetrics"]

#: latency histogram bucket upper bounds, seconds: 10 us to 10 s
BUCKETS: Tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

_perf = time.perf_counter


class _Stats:
    """One method's numbers."""

    __slots__ = ("started", "in_flight", "handled", "buckets", "total", "count")

    def __init__(self, nbuckets: int) -> None:
        self.started = 0
        self.in_flight = 0
        self.handled: Dict[int, int] = {}
        self.buckets = [0] * (nbuckets + 1)  # the last one: +Inf
        self.total = 0.0
        self.count = 0


class _Metrics:
    """What both sides share: the counters, the middleware, the collector."""

    side = ""
    #: the label calls to names past max_methods (or unknown methods) get
    overflow = "other"

    def __init__(
        self,
        registry: Any = None,
        *,
        buckets: Sequence[float] = BUCKETS,
        max_methods: int = 1000,
        namespace: str = "fastrpc",
    ) -> None:
        try:
            import prometheus_client
            import prometheus_client.core  # the metric families
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ImportError("fastrpc metrics need prometheus-client: pip install fastrpc[prometheus]") from exc
        self._prom = prometheus_client
        self.buckets = tuple(sorted(buckets))
        self.max_methods = max_methods
        self.prefix = f"{namespace}_{self.side}"
        self._lock = threading.Lock()
        self._methods: Dict[str, _Stats] = {}
        self.connections = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.registry.register(self)

    # -- counting ---------------------------------------------------------------------

    def _stats(self, method: str) -> _Stats:
        stats = self._methods.get(method)
        if stats is None:
            with self._lock:
                stats = self._methods.get(method)
                if stats is None:
                    if len(self._methods) >= self.max_methods:
                        method = self.overflow
                        stats = self._methods.get(method)
                    if stats is None:
                        stats = self._methods[method] = _Stats(len(self.buckets))
        return stats

    def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        # The middleware: first in the chain.  Sync, async or a go() future
        # alike: the call is counted when it has ended.
        stats = self._stats(call.method)
        with self._lock:
            stats.started += 1
            stats.in_flight += 1
        return observe(call_next, call, self._done, stats, _perf())

    def _done(self, stats: _Stats, start: float, code: int) -> None:
        elapsed = _perf() - start
        i = bisect.bisect_left(self.buckets, elapsed)
        with self._lock:
            stats.in_flight -= 1
            stats.handled[code] = stats.handled.get(code, 0) + 1
            stats.buckets[i] += 1
            stats.total += elapsed
            stats.count += 1

    def count_call(self, method: str, code: int) -> None:
        """A call that ended before any middleware could see it (a server's
        unknown method): started and handled with ``code``, no latency."""
        stats = self._stats(method)
        with self._lock:
            stats.started += 1
            stats.handled[code] = stats.handled.get(code, 0) + 1

    def connection_opened(self) -> None:
        with self._lock:
            self.connections += 1

    def connection_closed(self) -> None:
        with self._lock:
            self.connections -= 1

    def received(self, nbytes: int) -> None:
        with self._lock:
            self.received_bytes += nbytes

    def sent(self, nbytes: int) -> None:
        with self._lock:
            self.sent_bytes += nbytes

    # -- reading them ---------------------------------------------------------------------

    def snapshot(self) -> Dict[str, Any]:
        """The numbers now, as plain values (for tests and introspection)."""
        with self._lock:
            return {
                "methods": {
                    name: {
                        "started": s.started,
                        "in_flight": s.in_flight,
                        "handled": {code_name(c): n for c, n in s.handled.items()},
                        "count": s.count,
                        "sum": s.total,
                        "buckets": list(s.buckets),
                    }
                    for name, s in self._methods.items()
                },
                "connections": self.connections,
                "received_bytes": self.received_bytes,
                "sent_bytes": self.sent_bytes,
            }

    def describe(self) -> List[Any]:
        # Names only (prometheus_client checks duplicates at register time).
        return list(self._families({}, 0, 0, 0))

    def collect(self) -> Iterator[Any]:
        """Prometheus metric families, built from the counters at scrape time."""
        with self._lock:
            methods = {
                name: (s.started, s.in_flight, dict(s.handled), list(s.buckets), s.total, s.count)
                for name, s in self._methods.items()
            }
            connections, received, sent = self.connections, self.received_bytes, self.sent_bytes
        return iter(self._families(methods, connections, received, sent))

    def _families(self, methods: Dict[str, Any], connections: int, received: int, sent: int) -> List[Any]:
        core = self._prom.core
        p = self.prefix
        side = self.side
        started = core.CounterMetricFamily(f"{p}_started", f"RPCs started on the {side}", labels=["method"])
        handled = core.CounterMetricFamily(f"{p}_handled", f"RPCs finished on the {side}, by status code", labels=["method", "code"])
        seconds = core.HistogramMetricFamily(f"{p}_handling_seconds", f"RPC latency on the {side}, seconds", labels=["method"])
        in_flight = core.GaugeMetricFamily(f"{p}_in_flight", f"RPCs running on the {side}", labels=["method"])
        for name, (n_started, n_in_flight, by_code, buckets, total, _) in sorted(methods.items()):
            started.add_metric([name], n_started)
            in_flight.add_metric([name], n_in_flight)
            for code, n in sorted(by_code.items()):
                handled.add_metric([name, code_name(code)], n)
            cumulative, acc = [], 0
            for bound, n in zip(list(self.buckets) + [float("inf")], buckets):
                acc += n
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), acc))
            seconds.add_metric([name], cumulative, total)
        conns = core.GaugeMetricFamily(f"{p}_connections", f"open connections of the {side}", value=connections)
        rx = core.CounterMetricFamily(f"{p}_received_bytes", f"bytes the {side} read", value=received)
        tx = core.CounterMetricFamily(f"{p}_sent_bytes", f"bytes the {side} wrote", value=sent)
        return [started, handled, seconds, in_flight, conns, rx, tx]

    def serve(self, address: str) -> Any:
        """Serve ``GET /metrics`` (this registry) on ``host:port``, from a
        thread; port 0 picks a free one.  Returns ``(host, port)``."""
        host, _, port = address.rpartition(":")
        server, thread = self._prom.start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        self._http = server
        return server.server_address[:2]

    def stop_serving(self) -> None:
        """Stop what :meth:`serve` started."""
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()
            self._http = None

    def unregister(self) -> None:
        """Take these metrics out of their registry."""
        self.registry.unregister(self)


class ServerMetrics(_Metrics):
    """Metrics of a server's calls and connections: ``Server(metrics=...)``.

    Parameters:
        registry: the ``prometheus_client`` registry to register with
            (default: the global ``REGISTRY``).
        buckets: latency histogram bucket bounds in seconds.
        max_methods: label values before the rest count as ``"other"``
            (a server's own table bounds them anyway).
        namespace: the metric names' prefix.
    """

    side = "server"
    overflow = "unknown"


class ClientMetrics(_Metrics):
    """Metrics of a client's calls and connections:
    ``Client(..., metrics=...)``, ``AsyncClient``, ``Pool``.  One object may
    serve several clients (their numbers add up)."""

    side = "client"


class CountingTransport:
    """An asyncio transport that counts the bytes written through it (what
    a connection with metrics writes through); everything else is the
    transport's own."""

    __slots__ = ("_transport", "_metrics")

    def __init__(self, transport: Any, metrics: _Metrics) -> None:
        self._transport = transport
        self._metrics = metrics

    def write(self, data: Any) -> None:
        self._metrics.sent(len(data))
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        self._metrics.sent(sum(len(c) for c in chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountingSocket:
    """A blocking socket that counts the bytes sent and received through
    it (the blocking client's, with metrics)."""

    __slots__ = ("_sock", "_metrics")

    def __init__(self, sock: Any, metrics: _Metrics) -> None:
        self._sock = sock
        self._metrics = metrics

    def sendall(self, data: Any) -> None:
        self._sock.sendall(data)
        self._metrics.sent(len(data))

    def sendmsg(self, buffers: Any, *args: Any) -> int:
        n = self._sock.sendmsg(buffers, *args)
        self._metrics.sent(n)
        return n

    def recv_into(self, buf: Any, *args: Any) -> int:
        n = self._sock.recv_into(buf, *args)
        self._metrics.received(n)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
