"""Prometheus metrics: their values after N calls, on the server and on each
kind of client, unknown methods under one label, connections and bytes,
and what a scrape of the HTTP endpoint shows."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any, Dict

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install .[test])")

from prometheus_client import CollectorRegistry  # noqa: E402

import fastrpc  # noqa: E402
from fastrpc.middleware.metrics import ClientMetrics, ServerMetrics  # noqa: E402

from rpc_support import Arith  # noqa: E402


class Svc(Arith):
    def fail(self) -> None:
        raise fastrpc.NotFound("nope")

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"


def _sample(registry: CollectorRegistry, name: str, labels: Dict[str, str]) -> Any:
    return registry.get_sample_value(name, labels)


def test_server_metrics_after_n_calls(run):
    async def main():
        registry = CollectorRegistry()
        metrics = ServerMetrics(registry)
        server = fastrpc.Server(metrics=metrics)
        server.register(Svc(), "Svc")
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                for i in range(50):
                    assert await c.call("Svc.multiply", i, 2) == 2 * i  # by index, inline
                for _ in range(7):
                    with pytest.raises(fastrpc.NotFound):
                        await c.call("Svc.fail")
                for _ in range(3):
                    with pytest.raises(fastrpc.NotFound):
                        await c.call(f"Svc.no_such_{_}")  # unknown: one label for all
                assert await c.call("Svc.slow", 0.05) == "done"
                slow = asyncio.ensure_future(c.call("Svc.slow", 0.5))
                await asyncio.sleep(0.1)
                assert _sample(registry, "fastrpc_server_in_flight", {"method": "Svc.slow"}) == 1
                assert _sample(registry, "fastrpc_server_connections", {}) == 1
                await slow
            for _ in range(200):  # the server sees the close a moment later
                if _sample(registry, "fastrpc_server_connections", {}) == 0:
                    break
                await asyncio.sleep(0.01)
            s = lambda name, **labels: _sample(registry, name, labels)  # noqa: E731
            assert s("fastrpc_server_started_total", method="Svc.multiply") == 50
            assert s("fastrpc_server_handled_total", method="Svc.multiply", code="OK") == 50
            assert s("fastrpc_server_handled_total", method="Svc.fail", code="NOT_FOUND") == 7
            assert s("fastrpc_server_handled_total", method="unknown", code="NOT_FOUND") == 3
            assert s("fastrpc_server_started_total", method="unknown") == 3
            assert s("fastrpc_server_handling_seconds_count", method="Svc.multiply") == 50
            assert s("fastrpc_server_handling_seconds_bucket", method="Svc.slow", le="0.01") == 0
            assert s("fastrpc_server_handling_seconds_bucket", method="Svc.slow", le="0.1") == 1  # the 0.05 s call
            assert s("fastrpc_server_handling_seconds_bucket", method="Svc.slow", le="+Inf") == 2
            assert s("fastrpc_server_handling_seconds_sum", method="Svc.slow") >= 0.5  # two sleeps: 0.05 s and 0.5 s
            assert s("fastrpc_server_in_flight", method="Svc.slow") == 0
            assert s("fastrpc_server_connections") == 0
            assert s("fastrpc_server_received_bytes_total") > 50 * 12  # every request frame was read
            assert s("fastrpc_server_sent_bytes_total") > 50 * 12
            names = {m.name for m in registry.collect()}
            assert all(n.startswith("fastrpc_server_") for n in names)
        finally:
            await server.shutdown()
            metrics.unregister()

    run(main())


@pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)
def test_client_metrics_after_n_calls(run, client_kind):
    async def main():
        server = fastrpc.Server()
        server.register(Svc(), "Svc")
        address = await server.start("tcp://127.0.0.1:0")
        registry = CollectorRegistry()
        metrics = ClientMetrics(registry, max_methods=3)
        try:
            c = await client_kind.open(address, metrics=metrics)
            try:
                for i in range(20):
                    assert await c.call("Svc.add", i, 1) == i + 1
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Svc.fail")
                for name in ("x1", "x2", "x3"):  # past max_methods: "other"
                    with pytest.raises(fastrpc.NotFound):
                        await c.call(f"Svc.{name}")
                s = lambda name, **labels: _sample(registry, name, labels)  # noqa: E731
                assert s("fastrpc_client_started_total", method="Svc.add") == 20
                assert s("fastrpc_client_handled_total", method="Svc.add", code="OK") == 20
                assert s("fastrpc_client_handled_total", method="Svc.fail", code="NOT_FOUND") == 1
                assert s("fastrpc_client_handled_total", method="other", code="NOT_FOUND") == 2
                assert s("fastrpc_client_handling_seconds_count", method="Svc.add") == 20
                assert s("fastrpc_client_in_flight", method="Svc.add") == 0
                assert s("fastrpc_client_connections") == (2 if client_kind.name == "pool" else 1)
                assert s("fastrpc_client_sent_bytes_total") > 20 * 12
                assert s("fastrpc_client_received_bytes_total") > 20 * 12
            finally:
                await c.close()
            for _ in range(200):
                if _sample(registry, "fastrpc_client_connections", {}) == 0:
                    break
                await asyncio.sleep(0.01)
            assert _sample(registry, "fastrpc_client_connections", {}) == 0
        finally:
            metrics.unregister()
            await server.shutdown()

    run(main())


def test_metrics_are_scraped_over_http(run):
    async def main():
        registry = CollectorRegistry()
        metrics = ServerMetrics(registry)
        server = fastrpc.Server(metrics=metrics)
        server.register(Svc(), "Svc")
        address = await server.start("tcp://127.0.0.1:0")
        host, port = metrics.serve("127.0.0.1:0")
        loop = asyncio.get_running_loop()
        try:
            async with fastrpc.AsyncClient(address) as c:
                await c.call("Svc.add", 1, 2)
            body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode())
            assert 'fastrpc_server_handled_total{code="OK",method="Svc.add"} 1.0' in body
            assert "fastrpc_server_handling_seconds_bucket" in body
        finally:
            metrics.stop_serving()
            metrics.unregister()
            await server.shutdown()

    run(main())


def test_sync_go_calls_counted_when_answered(run):
    # go() returns a future: the call is counted when it resolves, with its
    # outcome and its whole latency, not when it is sent.
    async def main():
        server = fastrpc.Server()
        server.register(Svc(), "Svc")
        address = await server.start("tcp://127.0.0.1:0")
        registry = CollectorRegistry()
        loop = asyncio.get_running_loop()

        def calls() -> Any:
            with fastrpc.Client(address, metrics=ClientMetrics(registry)) as c:
                slow = c.go("Svc.slow", 0.2)
                in_flight = _sample(registry, "fastrpc_client_in_flight", {"method": "Svc.slow"})
                bad = c.go("Svc.fail")
                assert slow.result(10) == "done"
                with pytest.raises(fastrpc.NotFound):
                    bad.result(10)
                return in_flight

        try:
            in_flight = await loop.run_in_executor(None, calls)
            # A future's callbacks run after its waiters wake: the count may
            # come a moment after result() returned.
            for _ in range(500):
                if _sample(registry, "fastrpc_client_in_flight", {"method": "Svc.slow"}) == 0:
                    break
                await asyncio.sleep(0.01)
        finally:
            await server.shutdown()
        return registry, in_flight

    registry, in_flight = run(main())
    assert in_flight == 1
    s = lambda name, **labels: _sample(registry, name, labels)  # noqa: E731
    assert s("fastrpc_client_handled_total", method="Svc.slow", code="OK") == 1
    assert s("fastrpc_client_handled_total", method="Svc.fail", code="NOT_FOUND") == 1
    assert s("fastrpc_client_in_flight", method="Svc.slow") == 0
    assert s("fastrpc_client_handling_seconds_bucket", method="Svc.slow", le="0.1") == 0  # it took 0.2 s
