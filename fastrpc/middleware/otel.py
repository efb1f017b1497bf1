"""OpenTelemetry spans for fastrpc calls (``pip install fastrpc[otel]``).

Two middleware, one for each side::

    from fastrpc.middleware import otel

    server = fastrpc.Server(middleware=[otel.ServerSpans()])
    client = fastrpc.AsyncClient(address, middleware=[otel.ClientSpans()])

They follow OpenTelemetry's semantic conventions for RPC: a span named
``Service/method`` of kind SERVER or CLIENT, with ``rpc.system``
(``"fastrpc"``), ``rpc.service``, ``rpc.method``, the peer
(``network.peer.address``/``network.peer.port`` on the server,
``server.address``/``server.port`` on the client) and the call's status code
(``rpc.fastrpc.status_code``); a failed call sets the span's status to
ERROR, records the exception and sets ``error.type`` to the status code's
name.  The trace context travels in the call's metadata through the
*configured* propagator (``opentelemetry.propagate``; W3C Trace Context by
default), so fastrpc's spans join the traces of everything else the
application instruments.

On the server the span is current while the handler runs (sync, async or
blocking), so spans the handler starts, and calls it makes, are its
children; fastrpc's own trace propagation (``CallContext.span_id``) uses
the same ids, so a call made with a client without :class:`ClientSpans`
still carries the server span as its parent.

Only opentelemetry-api is needed at run time; what records and exports the
spans is the application's SDK setup.  Without an SDK the API's no-op
tracer makes them cost little; without this middleware they cost nothing.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Optional

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "fastrpc.middleware.otel needs opentelemetry-api: pip install fastrpc[otel]"
    ) from exc

from ..errors import code_name
from . import code_of

__all__ = ["ClientSpans", "ServerSpans"]

#: the instrumentation scope's name
SCOPE = "fastrpc"


def _split(method: str) -> "tuple[str, str]":
    service, _, name = method.rpartition(".")
    return service, name


def _peer(peer: Any) -> "tuple[Optional[str], Optional[int]]":
    # A TCP peer: (host, port, ...); a fastrpc Address: kind/host/port/path.
    if isinstance(peer, tuple) and len(peer) >= 2 and not hasattr(peer, "kind"):
        return str(peer[0]), int(peer[1])
    host = getattr(peer, "host", None)
    if getattr(peer, "kind", None) in ("tcp", "tls") and host:
        return host, int(peer.port)
    path = getattr(peer, "path", None) or (peer if isinstance(peer, str) else None)
    return path, None


def _failed(span: Any, exc: BaseException) -> None:
    code = code_of(exc)
    name = code_name(code)
    span.set_attribute("rpc.fastrpc.status_code", code)
    span.set_attribute("error.type", name)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{name}: {getattr(exc, 'message', exc)}"))


def _resolved(span: Any, fut: "concurrent.futures.Future[Any]") -> None:
    exc = concurrent.futures.CancelledError() if fut.cancelled() else fut.exception()
    if exc is None:
        span.set_attribute("rpc.fastrpc.status_code", 0)
    else:
        _failed(span, exc)
    span.end()


class _Spans:
    """What both sides share: start a span, make it current around the
    rest of the chain, end it with the call's outcome.  Works in sync and
    async chains alike: when the rest of the chain gives an awaitable, the
    span is made current again inside it and ends when it is done."""

    kind: Any = None

    def __init__(self, tracer_provider: Any = None) -> None:
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)

    def _start(self, call: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        span, ctx = self._start(call)
        token = otel_context.attach(ctx)
        try:
            result = call_next(call)
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        finally:
            otel_context.detach(token)
        if hasattr(type(result), "__await__"):
            return self._finish(span, ctx, result)
        if isinstance(result, concurrent.futures.Future):
            # A sync client's go(): the span lasts until the answer.
            result.add_done_callback(lambda fut: _resolved(span, fut))
            return result
        span.set_attribute("rpc.fastrpc.status_code", 0)
        span.end()
        return result

    async def _finish(self, span: Any, ctx: Any, awaitable: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            result = await awaitable
        except BaseException as exc:
            _failed(span, exc)
            raise
        else:
            span.set_attribute("rpc.fastrpc.status_code", 0)
            return result
        finally:
            otel_context.detach(token)
            span.end()


class ServerSpans(_Spans):
    """Server middleware: a SERVER span per call, its parent taken from the
    call's metadata by the configured propagator.

    Parameters:
        tracer_provider: the provider to get the tracer from (default: the
            global one).
    """

    kind = SpanKind.SERVER

    def _start(self, call: Any) -> Any:
        method = call.method
        service, name = _split(method)
        parent = propagate.extract(call.metadata)
        host, port = _peer(call.peer)
        attributes = {"rpc.system": "fastrpc", "rpc.service": service, "rpc.method": name}
        if host is not None:
            attributes["network.peer.address"] = host
        if port is not None:
            attributes["network.peer.port"] = port
        span = self._tracer.start_span(f"{service}/{name}", context=parent, kind=SpanKind.SERVER, attributes=attributes)
        sc = span.get_span_context()
        if sc.is_valid:
            # fastrpc's own propagation (a client without ClientSpans) uses
            # this span's ids: the server span is the parent either way.
            caller = trace.get_current_span(parent).get_span_context()
            call.adopt_span(
                f"{sc.trace_id:032x}",
                f"{sc.span_id:016x}",
                f"{int(sc.trace_flags):02x}",
                f"{caller.span_id:016x}" if caller.is_valid else None,
            )
        return span, trace.set_span_in_context(span, parent)


class ClientSpans(_Spans):
    """Client middleware: a CLIENT span per call, child of the current span
    (the server span when the call is made in a handler), injected into the
    call's metadata by the configured propagator.

    Parameters:
        tracer_provider: the provider to get the tracer from (default: the
            global one).
    """

    kind = SpanKind.CLIENT

    def _start(self, call: Any) -> Any:
        service, name = _split(call.method)
        host, port = _peer(call.peer)
        attributes = {"rpc.system": "fastrpc", "rpc.service": service, "rpc.method": name}
        if host is not None:
            attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        span = self._tracer.start_span(f"{service}/{name}", kind=SpanKind.CLIENT, attributes=attributes)
        ctx = trace.set_span_in_context(span)
        propagate.inject(call.metadata, context=ctx)  # replaces an inherited traceparent
        return span, ctx
