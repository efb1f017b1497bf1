"""The built-in services: health (check, watch, statuses the application
sets, NOT_SERVING on drain) and reflection, called from every client."""

from __future__ import annotations

import asyncio
import threading

import pytest

import fastrpc
from fastrpc.server.builtin import NOT_SERVING, SERVICE_UNKNOWN, SERVING, Health

from rpc_support import Arith

CHECK = "fastrpc.Health.check"
WATCH = "fastrpc.Health.watch"
METHODS = "fastrpc.Reflection.methods"


class Documented:
    """Not part of any method's doc."""

    def greet(self, name: str, punctuation: str = "!") -> str:
        """Say hello.

        More words that reflection leaves out."""
        return f"hello {name}{punctuation}"

    async def later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @fastrpc.blocking
    def slow(self) -> int:
        """Blocks a pool thread."""
        return 1


@pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)
def test_check_from_every_client(run, client_kind):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with client_kind.client(address) as c:
                assert await c.call(CHECK) == SERVING
                assert await c.call(CHECK, "") == SERVING
                assert await c.call(CHECK, "Arith") == SERVING
                assert await c.call(CHECK, "Nope") == SERVICE_UNKNOWN
                server.health.set("Arith", NOT_SERVING)
                assert await c.call(CHECK, "Arith") == NOT_SERVING
                assert await c.call(CHECK) == SERVING  # the server as a whole still serves
                server.health.set("Arith", SERVING)
                assert await c.call(CHECK, service="Arith") == SERVING
                # A service the application adds by name alone.
                server.health.set("db", NOT_SERVING)
                assert await c.call(CHECK, "db") == NOT_SERVING
        finally:
            await server.shutdown()

    run(main())


def test_set_rejects_unknown_status():
    health = Health()
    with pytest.raises(ValueError):
        health.set("x", "MAYBE")
    with pytest.raises(ValueError):
        health.set("x", SERVICE_UNKNOWN)  # only what a service can be


@pytest.mark.parametrize("client_kind", ["sync", "async"], indirect=True)
def test_watch_reports_changes_set_from_a_thread(run, client_kind):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with client_kind.client(address) as c:
                # No last status: the current one at once.
                assert await c.call(WATCH, "Arith") == SERVING
                # With the last one seen: a long call, answered at the change.
                waiting = asyncio.ensure_future(c.call(WATCH, "Arith", SERVING))
                await asyncio.sleep(0.1)
                assert not waiting.done()
                t = threading.Thread(target=server.health.set, args=("Arith", NOT_SERVING))
                t.start()
                t.join()
                assert await asyncio.wait_for(waiting, 10) == NOT_SERVING
                # A change to another service does not answer this watch.
                waiting = asyncio.ensure_future(c.call(WATCH, "Arith", NOT_SERVING))
                await asyncio.sleep(0.05)
                server.health.set("Other", NOT_SERVING)
                await asyncio.sleep(0.1)
                assert not waiting.done()
                server.health.set("Arith", SERVING)
                assert await asyncio.wait_for(waiting, 10) == SERVING
                # A watch bounded by the caller's timeout ends with DEADLINE_EXCEEDED.
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call(WATCH, "Arith", SERVING, timeout=0.1)
        finally:
            await server.shutdown()

    run(main())


def test_not_serving_as_soon_as_draining(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        server.register(Documented())
        address = await server.start("tcp://127.0.0.1:0")
        seen = []
        async with fastrpc.AsyncClient(address) as c:
            watch = asyncio.ensure_future(c.call(WATCH, "", SERVING))
            busy = asyncio.ensure_future(c.call("Documented.later", 0.5))
            await asyncio.sleep(0.1)
            stopping = asyncio.ensure_future(server.shutdown(grace=5))
            # The watcher hears NOT_SERVING while the busy call still runs:
            # the status changes when draining starts, not when it ends.
            seen.append(await asyncio.wait_for(watch, 5))
            assert not busy.done()
            assert server.health.status("") == NOT_SERVING
            assert server.health.status("Arith") == NOT_SERVING
            # Nothing turns it back.
            server.health.set("Arith", SERVING)
            assert server.health.status("Arith") == NOT_SERVING
            await busy
            await stopping
        assert seen == [NOT_SERVING]

    run(main())


@pytest.mark.parametrize("client_kind", ["sync", "async"], indirect=True)
def test_reflection_lists_methods(run, client_kind):
    async def main():
        server = fastrpc.Server()
        server.register(Documented())
        server.register_function(lambda: None, "bare")
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with client_kind.client(address) as c:
                methods = await c.call(METHODS)
        finally:
            await server.shutdown()
        by_name = {m["name"]: m for m in methods}
        # The application's methods first, in table order, then the built-ins.
        assert [m["name"] for m in methods] == server.methods
        assert list(by_name)[-3:] == [CHECK, WATCH, METHODS]
        greet = by_name["Documented.greet"]
        assert greet == {
            "name": "Documented.greet",
            "kind": "sync",
            "signature": "(name: 'str', punctuation: 'str' = '!') -> 'str'",
            "doc": "Say hello.",
            "idempotent": False,
        }
        assert by_name["Documented.later"]["kind"] == "async"
        assert by_name["Documented.later"]["doc"] == ""
        assert by_name["Documented.slow"]["kind"] == "blocking"
        assert by_name["Documented.slow"]["doc"] == "Blocks a pool thread."
        assert by_name["bare"]["signature"] == "()"
        assert by_name[CHECK]["signature"] == "(service: 'str' = '') -> 'str'"
        assert by_name[CHECK]["idempotent"] and by_name[METHODS]["idempotent"]

    run(main())


def test_builtins_off(run):
    async def main():
        server = fastrpc.Server(builtins=False)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.NotFound):
                    await c.call(CHECK)
                assert not [m for m in c.methods if m.startswith("fastrpc.")]
        finally:
            await server.shutdown()

    run(main())


def test_application_keeps_its_indices(run):
    # The built-ins come after the application's methods: what a client
    # cached by index does not move when they are added.
    async def main():
        plain = fastrpc.Server(builtins=False)
        plain.register(Arith())
        full = fastrpc.Server()
        full.register(Arith())
        await plain.start("tcp://127.0.0.1:0")
        await full.start("tcp://127.0.0.1:0")
        try:
            assert full.methods[: len(plain.methods)] == plain.methods
        finally:
            await plain.shutdown()
            await full.shutdown()

    run(main())
