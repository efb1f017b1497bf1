"""The HTTP/1.1 gateway: HTTP clients (curl, browsers, any HTTP library) on
the server's own port, calling the same methods through the same
dispatch.

The first bytes of a connection choose it (``GET ``, ``POST ``...: see
``server/sniff.py``); the HTTP side (parsing, bodies, answers) is the
sans-IO :class:`~fastrpc.interop.http.HttpCodec`, and this module runs it.
:class:`HttpConnection` is a :class:`~fastrpc.server.foreign.ForeignConnection`:
its calls enter the native connection's path (``_received`` ->
``_on_request``), so middleware, metrics, the access log, ``max_in_flight``,
deadlines, the thread pool and the error model are the native protocol's.
What it adds is HTTP's order: answers leave in request order (a pipelined
request that ends early waits for those before it), a request that says
``Connection: close`` (or an HTTP/1.0 one without ``keep-alive``) closes
the connection after its answer, and a bad request is answered (400, 413,
431...) and closes it.

Routes (``docs/protocol.md``, "HTTP/1.1 gateway", says more):

* ``POST /Service.method``: a JSON array body (positional arguments), a
  JSON object (keyword arguments), an empty body (none), or msgpack with
  ``Content-Type: application/msgpack`` (the answer in msgpack too);
  ``200`` and the result, or an error status (grpc-gateway's mapping) and
  ``{"code", "status", "message", "details"}``.
* ``POST /``: JSON-RPC 2.0, single or batch.
* ``GET /healthz`` (``?service=Name``), ``GET /methods``, ``GET /metrics``
  (Prometheus text, with ``Server(metrics=ServerMetrics())``), ``GET
  /debug/rpc`` (the debug page, with ``Server(debug_page=True)``).

Headers: ``X-Fastrpc-Timeout: <seconds>`` and ``Grpc-Timeout: 1500m``
(gRPC's form) set the call's deadline (the smaller of the two), counted
from when the request is read; ``X-Fastrpc-Meta-<key>: <value>`` sets
metadata ``<key>`` (lower case: HTTP header names are case-insensitive),
and ``Authorization``, ``traceparent`` and ``tracestate`` are metadata
under their own names (so the auth and tracing middleware work as over the
native protocol).

Limits: a request line and headers of at most ``MAX_HEAD`` (32 KiB: past
it 431, or 414 for the line alone), a body of at most the server's
``max_frame_size`` (413), at most :data:`MAX_PIPELINE` requests waiting
for their answers on one connection (past it 429 and a close), and a
request's headers must all arrive within the server's
``handshake_timeout`` of its first byte (408 and a close); the whole first
request must arrive within ``handshake_timeout`` of the connection (as a
native handshake must), and a silent connection is closed after
``idle_timeout`` when set.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

from .._impl import free_request_id
from ..core.session import REQUEST
from ..errors import StatusCode
from ..interop import http as H
from ..transport.address import peer_text
from .builtin import NOT_SERVING, SERVICE_UNKNOWN, SERVING, reflect
from .connection import MeteredServerConnection, ServerConnection
from .foreign import ForeignConnection

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

__all__ = ["MAX_PIPELINE", "SNIFF", "HttpConnection", "debug_page", "http_connection"]

log = logging.getLogger("fastrpc.server")

#: requests read on one connection and not yet answered, at most
MAX_PIPELINE = 256
#: the debug page reloads itself this often (seconds; ``?refresh=0``: never)
REFRESH = 5


class HttpConnection(ForeignConnection):
    """The server end of an HTTP/1.1 connection (see the module doc)."""

    def __init__(self, server: "Server") -> None:
        ForeignConnection.__init__(self, server, H.HttpCodec)
        #: exchanges in request order, until their answers are written
        self._queue: Deque[H.Exchange] = deque()
        self._head_timer: Optional[asyncio.TimerHandle] = None
        #: the client half-closed: close once the answers owed are written
        self._eof = False

    # -- input -------------------------------------------------------------------------

    def data_received(self, data: Any) -> None:
        if self._transport is None or self._closing:
            return
        if self._track_seen:
            self._last_seen = self._clock()
        metrics = self._server._metrics
        if metrics is not None:
            metrics.received(len(data))
        codec: Any = self._codec
        exchanges, broken = codec.feed(data)
        if exchanges or broken is not None:
            self._handshaken = True  # a whole request stands for the handshake
        queue = self._queue
        ids = self._ids
        frames: List[Any] = []
        for ex in exchanges:
            if len(queue) >= MAX_PIPELINE:
                broken = codec.refuse(429, f"more than {MAX_PIPELINE} requests waiting for their answers", int(StatusCode.RESOURCE_EXHAUSTED))
                break
            queue.append(ex)
            if ex.route is not None:
                self._route(ex)
            for call in ex.calls:
                if call.type == REQUEST:
                    rid = self._next_rid = free_request_id(self._next_rid, ids)
                    call.request_id = rid
                    ids[rid] = call.foreign_id
                frames.append(call)
        if broken is not None:
            log.info("closing HTTP connection from %s: %s", peer_text(self._peername), _first_line(broken.answer))
            queue.append(broken)
        if codec.finished and self._transport is not None:
            self._transport.pause_reading()  # nothing more is read
        if frames:
            self._received(frames, None)
        self._watch_head()
        self._flush()
        if codec.take_continue() and not self._queue and self._transport is not None:
            # Its body is wanted (curl waits a second for this otherwise);
            # not while answers before it are owed: it would read as theirs.
            self._transport.write(H.CONTINUE)

    def _process(self, frames: List[Any], i: int, error: Optional[BaseException]) -> None:
        ServerConnection._process(self, frames, i, error)
        queue = self._queue
        if queue and queue[0].answer is not None:
            self._flush()

    def _watch_head(self) -> None:
        # A request's headers must arrive within handshake_timeout of its
        # first byte (slowloris); timed only while some are missing.
        timeout = self._server.handshake_timeout
        codec: Any = self._codec
        if codec.in_head and not codec.finished and timeout is not None:
            if self._head_timer is None:
                self._head_timer = self._loop.call_later(timeout, self._slow_head)
        elif self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _slow_head(self) -> None:
        self._head_timer = None
        codec: Any = self._codec
        if self._transport is None or not codec.in_head or codec.finished:
            return
        timeout = self._server.handshake_timeout
        log.info("closing HTTP connection from %s: headers not received within %ss", peer_text(self._peername), timeout)
        self._queue.append(codec.refuse(408, f"request headers not received within {timeout}s"))
        self._transport.pause_reading()
        self._flush()

    # -- the server's own routes --------------------------------------------------------

    def _route(self, ex: H.Exchange) -> None:
        codec: Any = self._codec
        server = self._server
        route = ex.route
        if route == "healthz":
            query = parse_qs(ex.request.query.decode("latin-1")) if ex.request is not None and ex.request.query else {}
            service = (query.get("service") or [""])[0]
            status = server.health.status(service)
            code = 200 if status == SERVING else 404 if status == SERVICE_UNKNOWN else 503
            codec.reply(ex, code, H.to_json({"status": status if status in (SERVING, NOT_SERVING, SERVICE_UNKNOWN) else NOT_SERVING}))
        elif route == "methods":
            codec.reply(ex, 200, H.to_json(reflect(server._dispatch, server._idempotent)))
        elif route == "metrics":
            registry = getattr(server._metrics, "registry", None)
            if registry is None:
                codec.reply(ex, 404, H.error_body(int(StatusCode.NOT_FOUND), "this server has no metrics: Server(metrics=ServerMetrics())"))
                return
            import prometheus_client  # present: the server's metrics need it

            codec.reply(ex, 200, prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST)
        elif route == "debug":
            stats = getattr(server, "_stats", None)
            if stats is None:
                codec.reply(ex, 404, H.error_body(int(StatusCode.NOT_FOUND), "the debug page is off: Server(debug_page=True)"))
                return
            query = parse_qs(ex.request.query.decode("latin-1")) if ex.request is not None and ex.request.query else {}
            try:
                refresh = max(0, int((query.get("refresh") or [str(REFRESH)])[0]))
            except ValueError:
                refresh = REFRESH
            codec.reply(ex, 200, debug_page(server, stats, refresh).encode("utf-8"), "text/html; charset=utf-8")

    # -- output --------------------------------------------------------------------------

    def _write_result(self, rid: int, m: Any, result: Any) -> None:
        fid = self._ids.pop(rid, None)
        if fid is not None:
            self._codec.result(fid, result)  # type: ignore[call-arg,arg-type]

    def _write_error(self, rid: int, code: int, message: str, details: Any = None) -> None:
        fid = self._ids.pop(rid, None)
        if fid is not None:
            self._codec.failure(fid, code, message, details)  # type: ignore[attr-defined]

    def _flush(self) -> None:
        self._flush_handle = None
        queue = self._queue
        if not queue or queue[0].answer is None:
            return
        chunks = []
        close = False
        while queue:
            ex = queue[0]
            if ex.answer is None:
                break
            queue.popleft()
            answer = ex.answer
            if self._draining and not ex.close and ex.request is not None:
                answer = _with_close(answer)
                close = True
            chunks.append(answer)
            if ex.close or close:
                close = True
                queue.clear()
                break
        transport = self._transport
        if transport is None:
            return
        transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if close or (self._eof and not queue):
            self.close()

    def eof_received(self) -> Optional[bool]:
        # A client that half-closes after its requests still gets the
        # answers owed; the connection closes once they are written.
        if self._queue and self._transport is not None:
            self._eof = True
            return True
        return None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._queue.clear()
        ForeignConnection.connection_lost(self, exc)


class MeteredHttpConnection(HttpConnection, MeteredServerConnection):
    """An HTTP connection counted into the server's metrics."""


def http_connection(server: "Server") -> HttpConnection:
    """A gateway connection of ``server``."""
    if server._metrics is not None:
        return MeteredHttpConnection(server)
    return HttpConnection(server)


#: the sniffing table's HTTP entry, as ``(name, matcher, factory)``: empty
#: without httptools (HTTP bytes then get the native protocol's answer)
SNIFF: List[Tuple[str, Any, Any]] = [("http", H.match, http_connection)] if H.AVAILABLE else []


def _first_line(data: Optional[bytes]) -> str:
    return (data or b"").split(b"\r\n", 1)[0].decode("latin-1")


def _with_close(answer: bytes) -> bytes:
    # A draining server closes each keep-alive connection after its answer.
    head, sep, body = answer.partition(b"\r\n\r\n")
    head = head.replace(b"\r\nConnection: keep-alive", b"")
    return head + b"\r\nConnection: close" + sep + body


# -- the debug page ---------------------------------------------------------------------


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "&ndash;"
    if seconds == float("inf"):
        return "&gt; 100 s"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} &micro;s"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px}
.sub{color:#5b6475;font-size:13px;margin-bottom:14px}
table{border-collapse:collapse;background:#fff;min-width:760px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{padding:6px 12px;border-bottom:1px solid #e4e7ec;text-align:right;font-size:13px}
th{background:#2d3748;color:#fff;font-weight:600}th:first-child,td:first-child{text-align:left}
td.m{font-family:ui-monospace,Menlo,Consolas,monospace}
tr.err td.e{color:#b42318;font-weight:600}
.bar{display:inline-block;height:8px;background:#4c8bf5;vertical-align:middle;margin-right:6px}
"""


def debug_page(server: "Server", stats: Any, refresh: int = REFRESH) -> str:
    """The HTML of ``GET /debug/rpc``: every service and method with its
    calls, errors and latency percentiles (like Go's ``/debug/rpc``), no
    external assets; it reloads itself every ``refresh`` seconds (0:
    never)."""
    numbers = stats.snapshot()
    table = server._dispatch
    names = list(table.names) if table is not None else []
    names += [n for n in sorted(numbers) if n not in names]
    services: Dict[str, List[str]] = {}
    for name in names:
        services.setdefault(name.rpartition(".")[0] or "(functions)", []).append(name)
    busiest = max((s.calls for s in numbers.values()), default=0) or 1
    esc = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{refresh}'>" if refresh else "",
        "<title>fastrpc: services</title><style>", _STYLE, "</style></head><body>",
        "<h1>fastrpc services</h1>",
        (
            f"<div class='sub'>{esc(', '.join(server.addresses))} &middot; {server.connections} connections &middot; "
            f"counting since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(stats.since))} "
            f"({time.time() - stats.since:.0f} s) &middot; {'reloads every %d s' % refresh if refresh else 'no reload'}</div>"
        ),
    ]
    for service in sorted(services):
        out.append(f"<h2>Service {esc(service)}</h2><table><tr><th>Method</th><th>Calls</th><th>Running</th>"
                   "<th>Errors</th><th>Error %</th><th>Mean</th><th>p50</th><th>p90</th><th>p99</th><th>Error codes</th></tr>")
        for name in services[service]:
            s = numbers.get(name)
            if s is None:
                calls = running = errors = 0
                mean = p50 = p90 = p99 = None
                codes = ""
            else:
                calls, running, errors = s.calls, s.running, s.error_count
                ended = s.ended
                mean = s.total / ended if ended else None
                p50, p90, p99 = s.percentile(0.5), s.percentile(0.9), s.percentile(0.99)
                codes = ", ".join(f"{esc(k)}: {v}" for k, v in s.error_names().items())
            ratio = f"{100.0 * errors / calls:.1f}" if calls else "&ndash;"
            width = int(80 * calls / busiest)
            out.append(
                f"<tr class='{'err' if errors else ''}'><td class='m'>{esc(name.rpartition('.')[2])}</td>"
                f"<td><span class='bar' style='width:{width}px'></span>{calls}</td><td>{running}</td>"
                f"<td class='e'>{errors}</td><td class='e'>{ratio}</td><td>{_duration(mean)}</td>"
                f"<td>{_duration(p50)}</td><td>{_duration(p90)}</td><td>{_duration(p99)}</td><td>{codes}</td></tr>"
            )
        out.append("</table>")
    out.append("<p class='sub'>Percentiles are the upper bounds of fixed latency buckets (10 a decade).</p></body></html>")
    return "".join(out)
