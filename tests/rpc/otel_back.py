"""``otel_back.py``: a fastrpc server in its own process, traced with the
OpenTelemetry SDK into an in-memory exporter, for tests/rpc/test_otel.py.

Prints ``ready ADDRESS`` once listening; serves until its stdin closes.
``Spans.finished()`` returns the spans it has recorded, as plain maps.
"""

from __future__ import annotations

import asyncio
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fastrpc
from fastrpc.middleware.otel import ServerSpans

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))


def span_map(span):
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "status": span.status.status_code.name,
        "attributes": {k: v for k, v in span.attributes.items() if isinstance(v, (str, int, float, bool))},
    }


class Back:
    def look(self):
        return "looked"

    def missing(self):
        raise fastrpc.NotFound("no such user")


class Spans:
    def finished(self):
        return [span_map(s) for s in exporter.get_finished_spans() if not s.name.startswith("Spans/")]


async def main():
    server = fastrpc.Server(middleware=[ServerSpans(tracer_provider=provider)])
    server.register(Back())
    server.register(Spans())
    address = await server.start("tcp://127.0.0.1:0")
    print("ready", address, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.shutdown(grace=0)


if __name__ == "__main__":
    asyncio.run(main())
