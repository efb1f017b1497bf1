"""Deadlines, cancellation and graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import fastrpc
from fastrpc import MsgType


class Slow:
    def __init__(self):
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = 0

    async def wait(self, seconds, value=None):
        self.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.finished += 1
        return value

    def quick(self):
        return "quick"

    @fastrpc.blocking
    def block(self, seconds):
        time.sleep(seconds)
        return seconds


async def _serve(service):
    server = fastrpc.Server()
    server.register(service)
    return server, await server.start("tcp://127.0.0.1:0")


async def _silent_server():
    """Speaks the preface and handshake, then never answers a call."""
    seen = []

    async def handle(reader, writer):
        w = fastrpc.FrameWriter()
        w.write_preface()
        w.write_frame(MsgType.HANDSHAKE, 0, {"methods": ["Silent.call"]})
        writer.write(w.take())
        parser = fastrpc.FrameParser()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                seen.extend(parser.feed(data))
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", seen


def test_client_deadline_fires_when_server_never_answers(run):
    async def main():
        srv, address, seen = await _silent_server()
        try:
            async with fastrpc.AsyncClient(address) as c:
                t0 = time.monotonic()
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call("Silent.call", 1, timeout=0.2)
                elapsed = time.monotonic() - t0
                assert 0.19 <= elapsed < 2.0  # uvloop timers have 1 ms resolution
                await asyncio.sleep(0.05)
                # the request carried the deadline, and a CANCEL followed it
                kinds = [(f.type, f.request_id) for f in seen if f.type != MsgType.HANDSHAKE]
                req = [f for f in seen if f.type == MsgType.REQUEST][0]
                assert req.deadline == 200_000
                assert (MsgType.CANCEL, req.request_id) in kinds
                assert c.endpoint.connection.in_flight == 0

            def sync_side():
                with fastrpc.Client(address) as sc:
                    t0 = time.monotonic()
                    with pytest.raises(fastrpc.DeadlineExceeded):
                        sc.call("Silent.call", timeout=0.2)
                    assert 0.19 <= time.monotonic() - t0 < 2.0
                    fut = sc.go("Silent.call", timeout=0.2)
                    with pytest.raises(fastrpc.DeadlineExceeded):
                        fut.result(timeout=5)

            await asyncio.get_running_loop().run_in_executor(None, sync_side)
        finally:
            srv.close()

    run(main())


def test_server_cancels_async_handler_at_deadline(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)
        try:
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call("Slow.wait", 30, timeout=0.1)
                await asyncio.wait_for(slow.cancelled.wait(), 5)
                assert slow.finished == 0
                # the connection is fine afterwards
                assert await c.call("Slow.quick") == "quick"
        finally:
            await server.shutdown()

    run(main())


def test_server_refuses_work_past_its_deadline(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)
        try:
            host, port = address[6:].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            w = fastrpc.FrameWriter()
            w.write_preface()
            w.write_frame(MsgType.HANDSHAKE, 0, {})
            w.write_request(1, "Slow.wait", [10], deadline=0)
            w.write_request(2, "Slow.quick", [], deadline=5_000_000)
            writer.write(w.take())
            parser = fastrpc.FrameParser()
            answers = {}
            while len(answers) < 2:
                for f in parser.feed(await asyncio.wait_for(reader.read(65536), 5)):
                    if f.type in (MsgType.RESPONSE, MsgType.ERROR):
                        answers[f.request_id] = f
            writer.close()
            assert answers[1].type == MsgType.ERROR
            assert answers[1].value[0] == fastrpc.StatusCode.DEADLINE_EXCEEDED
            assert not slow.started.is_set()  # never started
            assert answers[2].value == "quick"
        finally:
            await server.shutdown()

    run(main())


def test_blocking_handler_queued_past_deadline_is_not_started(run):
    async def main():
        server = fastrpc.Server(max_workers=1)
        slow = Slow()
        server.register(slow)
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                first = asyncio.ensure_future(c.call("Slow.block", 0.3))
                await asyncio.sleep(0.05)
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call("Slow.block", 0.0, timeout=0.1)
                assert await first == 0.3
        finally:
            await server.shutdown()

    run(main())


def test_cancelling_the_caller_cancels_the_server_handler(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)
        try:
            async with fastrpc.AsyncClient(address) as c:
                task = asyncio.ensure_future(c.call("Slow.wait", 30))
                await asyncio.wait_for(slow.started.wait(), 5)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.wait_for(slow.cancelled.wait(), 5)
                assert c.endpoint.connection.in_flight == 0
                assert await c.call("Slow.quick") == "quick"
                conn = next(iter(server._connections))
                assert conn.in_flight == 0
        finally:
            await server.shutdown()

    run(main())


def test_graceful_shutdown_loses_no_call(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)
        async with fastrpc.AsyncClient(address) as c:
            calls = [asyncio.ensure_future(c.call("Slow.wait", 0.3, i)) for i in range(50)]
            await asyncio.wait_for(slow.started.wait(), 5)
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await server.shutdown(grace=5)
            assert time.monotonic() - t0 < 3
            assert await asyncio.gather(*calls) == list(range(50))
            # nothing is accepted after shutdown
            with pytest.raises(fastrpc.Unavailable):
                await c.call("Slow.quick")

    run(main())


def test_shutdown_grace_expiry_answers_unavailable(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)
        async with fastrpc.AsyncClient(address) as c:
            calls = [asyncio.ensure_future(c.call("Slow.wait", 30, i)) for i in range(10)]
            await asyncio.wait_for(slow.started.wait(), 5)
            await asyncio.sleep(0.05)
            await server.shutdown(grace=0.2)
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, fastrpc.Unavailable) for r in results), results

    run(main())


def test_new_calls_during_drain_are_refused_and_in_flight_complete(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)
        c = fastrpc.AsyncClient(address)
        await c.connect()
        raw_host, raw_port = address[6:].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(raw_host, int(raw_port))
        w = fastrpc.FrameWriter()
        w.write_preface()
        w.write_frame(MsgType.HANDSHAKE, 0, {})
        writer.write(w.take())
        await asyncio.sleep(0.05)
        inflight = asyncio.ensure_future(c.call("Slow.wait", 0.3, "kept"))
        await asyncio.wait_for(slow.started.wait(), 5)
        shutdown = asyncio.ensure_future(server.shutdown(grace=5))
        await asyncio.sleep(0.05)
        # an old-style peer that ignores GOAWAY and sends a new call
        w.write_request(7, "Slow.quick", [])
        writer.write(w.take())
        parser = fastrpc.FrameParser()
        got = []
        while not any(f.type == MsgType.ERROR for f in got):
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data
            got += parser.feed(data)
        err = [f for f in got if f.type == MsgType.ERROR][0]
        assert err.request_id == 7 and err.value[0] == fastrpc.StatusCode.UNAVAILABLE
        assert any(f.type == MsgType.GOAWAY for f in got)
        assert await inflight == "kept"
        await shutdown
        writer.close()
        await c.close()

    run(main())


def test_sync_client_threads_and_deadlines(run):
    async def main():
        slow = Slow()
        server, address = await _serve(slow)

        def sync_side():
            with fastrpc.Client(address, timeout=5) as c:
                results = []

                def caller():
                    with pytest.raises(fastrpc.DeadlineExceeded):
                        c.call("Slow.wait", 30, timeout=0.1)
                    results.append(c.call("Slow.quick"))

                threads = [threading.Thread(target=caller) for _ in range(4)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(10)
                assert results == ["quick"] * 4

        try:
            await asyncio.get_running_loop().run_in_executor(None, sync_side)
        finally:
            await server.shutdown()

    run(main())
