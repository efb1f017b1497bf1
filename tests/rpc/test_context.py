"""Handlers see their call: ``fastrpc.current_call()`` in sync handlers (on
the core's fast path and on the Python path), async handlers (and what they
start) and blocking handlers, with the call's method, metadata, deadline,
peer and cancellation; and nothing outside a handler."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

import fastrpc


def _view(ctx: Optional[fastrpc.CallContext]) -> Any:
    if ctx is None:
        return None
    left = ctx.time_remaining()
    return {
        "method": ctx.method,
        "metadata": dict(ctx.metadata),
        "left": left,
        "peer": list(ctx.peer) if isinstance(ctx.peer, tuple) else ctx.peer,
        "request_id": ctx.request_id,
        "cancelled": ctx.cancelled,
    }


class Seen:
    def __init__(self) -> None:
        self.blocking_cancelled = threading.Event()
        self.blocking_started = threading.Event()
        self.after: List[Any] = []

    def sync(self, spin: float = 0.0) -> Any:
        end = time.monotonic() + spin
        while time.monotonic() < end:
            pass
        return _view(fastrpc.current_call())

    def sync_kw(self, *, flag: bool = False) -> Any:  # kwargs: the Python path
        return [flag, _view(fastrpc.current_call())]

    def fails(self) -> Any:
        raise fastrpc.NotFound(fastrpc.current_call().method)

    async def coro(self) -> Any:
        await asyncio.sleep(0)
        mine = _view(fastrpc.current_call())
        child = await asyncio.ensure_future(self._child())  # a task it starts sees the call too
        return [mine, child]

    async def _child(self) -> Any:
        return fastrpc.current_call().method

    @fastrpc.blocking
    def block(self) -> Any:
        return _view(fastrpc.current_call())

    @fastrpc.blocking
    def block_until_cancelled(self) -> bool:
        ctx = fastrpc.current_call()
        self.blocking_started.set()
        for _ in range(1000):  # bounded: 10 s
            if ctx.cancelled:
                self.blocking_cancelled.set()
                return True
            time.sleep(0.01)
        return False


async def _serve(seen: Seen):
    server = fastrpc.Server()
    server.register(seen, "Ctx")
    address = await server.start("tcp://127.0.0.1:0")
    return server, address


def test_sync_handler_sees_its_call_on_the_fast_path(run):
    async def main():
        server, address = await _serve(Seen())
        try:
            async with fastrpc.AsyncClient(address) as c:
                plain = await c.call("Ctx.sync")
                assert plain["method"] == "Ctx.sync" and plain["metadata"] == {} and plain["left"] is None
                assert plain["cancelled"] is False and plain["request_id"] > 0
                local = c.endpoint.connection._transport.get_extra_info("sockname")
                assert tuple(plain["peer"]) == tuple(local)
                timed = await c.call("Ctx.sync", 0.05, timeout=5.0, metadata={"user": "ada"})
                assert timed["metadata"] == {"user": "ada"}
                # measured from the call's arrival: the 50 ms the handler spun count
                assert 4.0 < timed["left"] <= 4.96
        finally:
            await server.shutdown()

    run(main())


def test_sync_handler_sees_its_call_on_the_python_path(run):
    async def main():
        server, address = await _serve(Seen())
        try:
            async with fastrpc.AsyncClient(address) as c:
                flag, view = await c.call("Ctx.sync_kw", flag=True, metadata={"k": 1}, timeout=3.0)
                assert flag is True and view["method"] == "Ctx.sync_kw" and view["metadata"] == {"k": 1}
                assert 2.0 < view["left"] <= 3.0
                with pytest.raises(fastrpc.NotFound, match="Ctx.fails"):
                    await c.call("Ctx.fails")
        finally:
            await server.shutdown()

    run(main())


def test_sync_client_calls_see_the_same(run):
    async def main():
        server, address = await _serve(Seen())
        loop = asyncio.get_running_loop()
        try:

            def calls() -> Any:
                with fastrpc.Client(address) as c:
                    return c.call("Ctx.sync"), c.call("Ctx.sync", metadata={"a": "b"})

            plain, md = await loop.run_in_executor(None, calls)
            assert plain["method"] == "Ctx.sync" and md["metadata"] == {"a": "b"}
        finally:
            await server.shutdown()

    run(main())


def test_async_handler_and_its_tasks_see_the_call(run):
    async def main():
        server, address = await _serve(Seen())
        try:
            async with fastrpc.AsyncClient(address) as c:
                mine, child = await c.call("Ctx.coro", metadata={"trace": "t1"}, timeout=2.0)
                assert mine["method"] == "Ctx.coro" and mine["metadata"] == {"trace": "t1"} and child == "Ctx.coro"
                assert 1.0 < mine["left"] <= 2.0 and mine["cancelled"] is False
        finally:
            await server.shutdown()

    run(main())


def test_blocking_handler_sees_the_call_and_its_cancellation(run):
    async def main():
        seen = Seen()
        server, address = await _serve(seen)
        loop = asyncio.get_running_loop()
        try:
            async with fastrpc.AsyncClient(address) as c:
                view = await c.call("Ctx.block", metadata={"x": 1})
                assert view["method"] == "Ctx.block" and view["metadata"] == {"x": 1}
                # a blocking thread cannot be interrupted: it polls cancelled
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call("Ctx.block_until_cancelled", timeout=0.2)
                assert await loop.run_in_executor(None, seen.blocking_cancelled.wait, 10)
                seen.blocking_cancelled.clear()
                seen.blocking_started.clear()
                task = asyncio.ensure_future(c.call("Ctx.block_until_cancelled"))
                assert await loop.run_in_executor(None, seen.blocking_started.wait, 10)
                task.cancel()  # cancelling the caller reaches the server
                assert await loop.run_in_executor(None, seen.blocking_cancelled.wait, 10)
        finally:
            await server.shutdown()

    run(main())


def test_no_call_outside_a_handler(run):
    async def main():
        server, address = await _serve(Seen())
        try:
            assert fastrpc.current_call() is None
            async with fastrpc.AsyncClient(address) as c:
                await c.call("Ctx.sync")
                await c.call("Ctx.coro")
                # the slots the handlers used are clear again, in this
                # thread (the loop's) and in a loop callback
                assert fastrpc.current_call() is None
                later: Dict[str, Any] = {}
                done = asyncio.get_running_loop().create_future()

                def probe() -> None:
                    later["ctx"] = fastrpc.current_call()
                    done.set_result(None)

                asyncio.get_running_loop().call_soon(probe)
                await done
                assert later["ctx"] is None
        finally:
            await server.shutdown()

    run(main())
