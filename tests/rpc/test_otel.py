"""OpenTelemetry spans across two processes and a nested hop: one trace,
each span the child of the one that made its call, the RPC semantic
conventions' attributes, error status on the failing spans.

The test process runs a client and a front server (with its own nested
client); the back server runs in another process (``otel_back.py``), each
process recording into its own in-memory exporter."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK is not installed (pip install .[test])")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import fastrpc  # noqa: E402
from fastrpc.middleware.otel import ClientSpans, ServerSpans  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _spans(exporter: InMemorySpanExporter) -> List[Dict[str, Any]]:
    sys.path.insert(0, HERE)
    try:
        from otel_back import span_map
    finally:
        sys.path.remove(HERE)
    return [span_map(s) for s in exporter.get_finished_spans()]


@pytest.fixture
def back_process():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "otel_back.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("ready "), line
        yield line.split()[1]
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        proc.stdout.close()


class Front:
    def __init__(self, back: str, provider: Any) -> None:
        self.traced = fastrpc.AsyncClient(back, middleware=[ClientSpans(tracer_provider=provider)])
        self.untraced = fastrpc.AsyncClient(back)

    async def hop(self) -> Any:
        return await self.traced.call("Back.look")

    async def hop_untraced(self) -> Any:
        return await self.untraced.call("Back.look")

    async def missing(self) -> Any:
        return await self.traced.call("Back.missing")


def test_one_trace_across_processes_and_hops(run, back_process):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def main():
        front = Front(back_process, provider)
        server = fastrpc.Server(middleware=[ServerSpans(tracer_provider=provider)])
        server.register(front)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address, middleware=[ClientSpans(tracer_provider=provider)]) as c:
                with tracer.start_as_current_span("root") as root:
                    assert await c.call("Front.hop") == "looked"
                    assert await c.call("Front.hop_untraced") == "looked"
                    with pytest.raises(fastrpc.NotFound):
                        await c.call("Front.missing")
                async with fastrpc.AsyncClient(back_process) as b:
                    there = await b.call("Spans.finished")
            return root.get_span_context(), there
        finally:
            await front.traced.close()
            await front.untraced.close()
            await server.shutdown()

    root_ctx, there = run(main())
    here = _spans(exporter)
    trace_id = f"{root_ctx.trace_id:032x}"
    spans = here + there
    assert {s["trace_id"] for s in spans} == {trace_id}  # one trace, two processes
    by_id = {s["span_id"]: s for s in spans}

    def chain(leaf: Dict[str, Any]) -> List[str]:
        out = []
        while leaf is not None:
            out.append(f"{leaf['kind']} {leaf['name']}")
            leaf = by_id.get(leaf["parent_id"])
        return out

    back_spans = {s["name"]: s for s in there}
    # traced hop: every span the child of the one that made its call
    look = [s for s in there if s["name"] == "Back/look"]
    assert len(look) == 2
    chains = sorted(chain(s) for s in look)
    assert ["SERVER Back/look", "CLIENT Back/look", "SERVER Front/hop", "CLIENT Front/hop", "INTERNAL root"] in chains
    # a nested client without ClientSpans: the front server span is the parent
    assert ["SERVER Back/look", "SERVER Front/hop_untraced", "CLIENT Front/hop_untraced", "INTERNAL root"] in chains
    # errors: status on the failing spans, all the way out
    missing = back_spans["Back/missing"]
    assert missing["status"] == "ERROR" and missing["attributes"]["rpc.fastrpc.status_code"] == 5
    assert missing["attributes"]["error.type"] == "NOT_FOUND"
    assert chain(missing) == ["SERVER Back/missing", "CLIENT Back/missing", "SERVER Front/missing", "CLIENT Front/missing", "INTERNAL root"]
    for s in here:
        if s["name"].endswith("/missing"):
            assert s["status"] == "ERROR"
        elif s["name"] != "root":
            assert s["status"] != "ERROR" and s["attributes"]["rpc.fastrpc.status_code"] == 0
    # the semantic conventions' attributes
    server_span = next(s for s in here if s["name"] == "Front/hop" and s["kind"] == "SERVER")
    assert server_span["attributes"]["rpc.system"] == "fastrpc"
    assert server_span["attributes"]["rpc.service"] == "Front" and server_span["attributes"]["rpc.method"] == "hop"
    assert server_span["attributes"]["network.peer.address"] == "127.0.0.1"
    client_span = next(s for s in here if s["name"] == "Front/hop" and s["kind"] == "CLIENT")
    assert client_span["attributes"]["server.address"] == "127.0.0.1" and isinstance(client_span["attributes"]["server.port"], int)


def test_server_spans_wrap_sync_async_and_blocking_handlers(run):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from opentelemetry import trace

    class Svc:
        def s(self):
            return trace.get_current_span().get_span_context().span_id

        async def a(self):
            await asyncio.sleep(0)
            return trace.get_current_span().get_span_context().span_id

        @fastrpc.blocking
        def b(self):
            return trace.get_current_span().get_span_context().span_id

    async def main():
        server = fastrpc.Server(middleware=[ServerSpans(tracer_provider=provider)])
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                return {m: await c.call(f"Svc.{m}") for m in "sab"}
        finally:
            await server.shutdown()

    seen = run(main())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    for m, span_id in seen.items():
        # the span was current inside the handler, wherever it ran
        assert spans[f"Svc/{m}"].context.span_id == span_id != 0


def test_client_span_of_a_go_call_ends_with_its_answer(run):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    class Svc:
        async def slow(self) -> str:
            await asyncio.sleep(0.2)
            return "done"

        def fail(self) -> None:
            raise fastrpc.NotFound("gone")

    async def main():
        server = fastrpc.Server()
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        loop = asyncio.get_running_loop()

        def calls() -> Any:
            with fastrpc.Client(address, middleware=[ClientSpans(tracer_provider=provider)]) as c:
                slow, bad = c.go("Svc.slow"), c.go("Svc.fail")
                finished_before = len(exporter.get_finished_spans()) if not slow.done() else None
                assert slow.result(10) == "done"
                with pytest.raises(fastrpc.NotFound):
                    bad.result(10)
                return finished_before

        try:
            return await loop.run_in_executor(None, calls)
        finally:
            await server.shutdown()

    finished_before = run(main())
    assert finished_before in (0, 1)  # at most the failing call had ended
    for _ in range(500):  # a future's callbacks run after its waiters wake
        if len(exporter.get_finished_spans()) == 2:
            break
        time.sleep(0.01)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    slow, bad = spans["Svc/slow"], spans["Svc/fail"]
    assert (slow.end_time - slow.start_time) >= 0.15e9  # ns: the span lasted until the answer
    assert slow.status.is_ok and slow.attributes["rpc.fastrpc.status_code"] == 0
    assert not bad.status.is_ok and bad.attributes["error.type"] == "NOT_FOUND"
