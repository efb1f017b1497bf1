"""Fixtures for end-to-end tests: every test runs on both event loops, and
tests that take ``client_kind`` run once per client kind.

The wire implementation (Cython or pure Python) is the one fastrpc selected
at import; ci/test.sh runs the whole suite once per implementation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Optional

import pytest

from etcd_support import etcd  # noqa: F401 - the fixture of a real etcd
from rpc_support import ClientKind, ServerProcess, free_port

LOOPS = ["asyncio"]
try:
    import uvloop  # noqa: F401

    LOOPS.append("uvloop")
except ImportError:  # pragma: no cover - uvloop is a runtime dependency on Linux
    pass

#: no single end-to-end test may run longer than this
TEST_TIMEOUT = 120.0


def _factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


@pytest.fixture(params=LOOPS)
def loop_kind(request: Any) -> str:
    return request.param


@pytest.fixture(params=["sync", "async"])
def client_kind(request: Any) -> ClientKind:
    """Runs one async test body against the blocking ``Client`` (``[sync]``)
    and the ``AsyncClient`` (``[async]``); ``kind.open(address)`` gives a
    driver whose ``await c.call(...)`` works the same for both.  Tests that
    cover the Pool too parametrize it indirectly::

        @pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)
    """
    return ClientKind(request.param)


@pytest.fixture
def run(loop_kind: str) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the chosen kind."""

    def runner(coro: Awaitable[Any], timeout: float = TEST_TIMEOUT) -> Any:
        loop = _factory(loop_kind)()
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    return runner


@pytest.fixture
def server_process():
    started = []

    def start(port: Optional[int] = None) -> ServerProcess:
        for attempt in range(50):
            try:
                sp = ServerProcess(port or free_port())
            except RuntimeError:
                if port is None:
                    continue
                time.sleep(0.1)  # the old socket may still be in the way
                continue
            started.append(sp)
            return sp
        raise RuntimeError("could not start the server process")

    yield start
    for sp in started:
        sp.kill()

