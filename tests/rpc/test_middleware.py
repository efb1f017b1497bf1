"""Middleware on both sides: order, short-circuit, errors, changing the
arguments, metadata and result, sync and async forms, where each kind of
chain runs, and the server and client chains together."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, List

import pytest

import fastrpc

from rpc_support import Arith


class Recorder:
    """Middleware factory that writes what it sees into one list."""

    def __init__(self) -> None:
        self.seen: List[Any] = []

    def sync(self, name: str) -> Any:
        def mw(call: Any, call_next: Any) -> Any:
            self.seen.append(f"{name}>")
            result = call_next(call)
            self.seen.append(f"<{name}")
            return result

        return mw

    def asyn(self, name: str) -> Any:
        async def mw(call: Any, call_next: Any) -> Any:
            self.seen.append(f"{name}>")
            result = await call_next(call)
            self.seen.append(f"<{name}")
            return result

        return mw


class Service:
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def add(self, a: int, b: int = 0) -> int:
        self.rec.seen.append("handler")
        call = fastrpc.current_call()
        self.rec.seen.append(("task", asyncio.current_task() is not None))
        self.rec.seen.append(("state", dict(call.state)))
        return a + b

    def who(self) -> Any:
        call = fastrpc.current_call()
        return {"metadata": dict(call.metadata), "state": dict(call.state)}

    async def aadd(self, a: int, b: int = 0) -> int:
        await asyncio.sleep(0)
        self.rec.seen.append("handler")
        return a + b

    @fastrpc.blocking
    def badd(self, a: int, b: int = 0) -> Any:
        self.rec.seen.append("handler")
        return [a + b, threading.current_thread().name]

    def note(self, value: Any) -> None:
        self.rec.seen.append(("noted", value))


async def _serve(middleware: List[Any], rec: Recorder) -> Any:
    server = fastrpc.Server(middleware=middleware)
    server.register(Service(rec), "S")
    address = await server.start("tcp://127.0.0.1:0")
    return server, address


# -- server side ------------------------------------------------------------------------


def test_server_chain_runs_in_list_order_and_sync_stays_inline(run):
    async def main():
        rec = Recorder()
        server, address = await _serve([rec.sync("a"), rec.sync("b")], rec)
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("S.add", 2, 3) == 5  # by index: the core's fast path
                assert rec.seen == ["a>", "b>", "handler", ("task", False), ("state", {}), "<b", "<a"]
                rec.seen.clear()
                assert await c.call("S.add", 2, b=5) == 7  # kwargs: the Python path
                assert rec.seen == ["a>", "b>", "handler", ("task", False), ("state", {}), "<b", "<a"]
        finally:
            await server.shutdown()

    run(main())


def test_server_middleware_changes_args_metadata_result_and_shares_state(run):
    def tweak(call: Any, call_next: Any) -> Any:
        if call.method == "S.add":
            call.args = [call.args[0] * 10] + list(call.args[1:])
        call.metadata["seen-by"] = "tweak"
        call.state["user"] = "ada"
        result = call_next(call)
        return result + 1 if isinstance(result, int) else result

    async def main():
        rec = Recorder()
        server, address = await _serve([tweak], rec)
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("S.add", 2, 3) == 24  # 2*10 + 3, plus 1
                assert ("state", {"user": "ada"}) in rec.seen  # the handler saw the middleware's state
                who = await c.call("S.who", metadata={"trace": "t"})
                assert who == {"metadata": {"trace": "t", "seen-by": "tweak"}, "state": {"user": "ada"}}
        finally:
            await server.shutdown()

    run(main())


def test_server_middleware_short_circuits_and_raises(run):
    def gate(call: Any, call_next: Any) -> Any:
        token = call.metadata.get("token")
        if token is None:
            raise fastrpc.Unauthenticated("no token")
        if token == "cached":
            return -1  # answered here: the handler never runs
        if token == "broken":
            raise ValueError("middleware bug")
        return call_next(call)

    async def main():
        rec = Recorder()
        server, address = await _serve([gate], rec)
        try:
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.Unauthenticated, match="no token"):
                    await c.call("S.add", 1, 1)
                assert await c.call("S.add", 1, 1, metadata={"token": "cached"}) == -1
                with pytest.raises(fastrpc.Unknown, match="middleware bug"):
                    await c.call("S.add", 1, 1, metadata={"token": "broken"})
                assert "handler" not in rec.seen
                assert await c.call("S.add", 1, 1, metadata={"token": "ok"}) == 2
        finally:
            await server.shutdown()

    run(main())


@pytest.mark.parametrize("method", ["S.add", "S.aadd", "S.badd"])
def test_async_middleware_makes_the_chain_a_task(run, method):
    async def main():
        rec = Recorder()
        server, address = await _serve([rec.sync("a"), rec.asyn("b"), rec.sync("c")], rec)
        try:
            async with fastrpc.AsyncClient(address) as c:
                result = await c.call(method, 2, 3)
                assert (result[0] if isinstance(result, list) else result) == 5
                if method == "S.badd":
                    assert result[1].startswith("fastrpc-blocking")  # the handler still runs in the pool
                # a sync middleware in an async chain gets call_next's
                # awaitable, not the result: it returns it at once
                assert rec.seen[:4] == ["a>", "<a", "b>", "c>"] and rec.seen[-1] == "<b"
                assert rec.seen.index("handler") < rec.seen.index("<b")
        finally:
            await server.shutdown()

    run(main())


def test_sync_middleware_runs_with_a_blocking_handler_in_the_pool(run):
    threads: List[str] = []

    def where(call: Any, call_next: Any) -> Any:
        threads.append(threading.current_thread().name)
        return call_next(call)

    async def main():
        rec = Recorder()
        server, address = await _serve([where], rec)
        try:
            async with fastrpc.AsyncClient(address) as c:
                total, handler_thread = await c.call("S.badd", 1, 2, timeout=5)
                assert total == 3 and threads == [handler_thread] and handler_thread.startswith("fastrpc-blocking")
        finally:
            await server.shutdown()

    run(main())


def test_notifications_go_through_the_chain(run):
    async def main():
        rec = Recorder()
        server, address = await _serve([rec.sync("a")], rec)
        try:
            async with fastrpc.AsyncClient(address) as c:
                await c.notify("S.note", "x")
                for _ in range(500):
                    if ("noted", "x") in rec.seen:
                        break
                    await asyncio.sleep(0.01)
                assert rec.seen[:3] == ["a>", ("noted", "x"), "<a"]
        finally:
            await server.shutdown()

    run(main())


def test_middleware_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        fastrpc.Server(middleware=["nope"])
    with pytest.raises(TypeError, match="sync middleware only"):

        async def amw(call: Any, call_next: Any) -> Any:
            return await call_next(call)

        fastrpc.Client("127.0.0.1:1", lazy=True, middleware=[amw])


# -- client side -------------------------------------------------------------------------


def test_client_chain_order_metadata_result_and_short_circuit(run, client_kind):
    seen: List[Any] = []

    def outer(call: Any, call_next: Any) -> Any:
        seen.append(("outer", call.side, call.method, tuple(call.args), call.kind))
        call.metadata["token"] = "secret"
        if call.method == "S.cached":
            return "from cache"  # never sent
        result = call_next(call)
        seen.append("<outer")
        return result

    def inner(call: Any, call_next: Any) -> Any:
        seen.append(("inner", call.metadata.get("token")))
        return call_next(call)

    async def main():
        rec = Recorder()
        server, address = await _serve([], rec)
        try:
            c = await client_kind.open(address, middleware=[outer, inner])
            try:
                who = await c.call("S.who")
                assert who["metadata"] == {"token": "secret"}  # added by the client's middleware
                assert seen[:2] == [("outer", "client", "S.who", (), "call"), ("inner", "secret")]
                if client_kind.name == "sync":
                    assert seen[2] == "<outer"  # a sync chain sees the result
                assert await c.call("S.cached") == "from cache"
            finally:
                await c.close()
        finally:
            await server.shutdown()

    run(main())


@pytest.mark.parametrize("client_kind", ["async", "pool"], indirect=True)
def test_async_client_middleware_sees_and_changes_results_and_errors(run, client_kind):
    async def double(call: Any, call_next: Any) -> Any:
        try:
            return 2 * await call_next(call)
        except fastrpc.NotFound:
            return "no such method"

    async def main():
        rec = Recorder()
        server, address = await _serve([], rec)
        try:
            c = await client_kind.open(address, middleware=[double])
            try:
                assert await c.call("S.add", 2, 3) == 10
                assert await c.call("S.nope") == "no such method"
            finally:
                await c.close()
        finally:
            await server.shutdown()

    run(main())


def test_sync_client_middleware_wraps_go_and_notify(run):
    kinds: List[str] = []

    def mw(call: Any, call_next: Any) -> Any:
        kinds.append(call.kind)
        call.metadata["k"] = call.kind
        return call_next(call)

    async def main():
        rec = Recorder()
        server, address = await _serve([], rec)
        loop = asyncio.get_running_loop()
        try:

            def use() -> Any:
                with fastrpc.Client(address, middleware=[mw]) as c:
                    fut = c.go("S.who")  # call_next gave the Future back
                    c.notify("S.note", "n")
                    return c.call("S.add", 1, 2, timeout=5), fut.result(5)

            total, who = await loop.run_in_executor(None, use)
            assert total == 3 and who["metadata"] == {"k": "go"}
            assert kinds == ["go", "notify", "call"]
        finally:
            await server.shutdown()

    run(main())


def test_both_sides_together(run):
    def add_token(call: Any, call_next: Any) -> Any:
        call.metadata["authorization"] = "Bearer t0"
        return call_next(call)

    def check_token(call: Any, call_next: Any) -> Any:
        if call.metadata.get("authorization") != "Bearer t0":
            raise fastrpc.Unauthenticated("bad token")
        call.state["user"] = "t0-user"
        return call_next(call)

    async def main():
        rec = Recorder()
        server, address = await _serve([check_token], rec)
        try:
            async with fastrpc.AsyncClient(address, middleware=[add_token]) as c:
                who = await c.call("S.who")
                assert who["state"] == {"user": "t0-user"}
            async with fastrpc.AsyncClient(address) as bare:
                with pytest.raises(fastrpc.Unauthenticated):
                    await bare.call("S.who")
        finally:
            await server.shutdown()

    run(main())


def test_no_middleware_leaves_the_fast_path_alone(run):
    # Without middleware the inline list holds the handler itself: the core
    # calls it with no layer in between.
    async def main():
        server = fastrpc.Server()
        arith = Arith()
        server.register(arith)
        await server.start("tcp://127.0.0.1:0")
        try:
            table = server._dispatch
            assert table.inline[table.by_name["Arith.add"].index] == arith.add
            assert all(m.chain is None for m in table.methods)
        finally:
            await server.shutdown()

    run(main())
