"""What a call made while another is handled inherits from it: the trace
(W3C traceparent/tracestate, the handler's span as parent), the deadline
(at most the time left), cancellation (with the task of an async handler;
polled in a blocking one), and the status code of an error raised hops
away (with the chain of services when the servers run with debug=True).
No optional dependency is involved."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, Optional

import pytest

import fastrpc
from fastrpc.core.context import TraceParent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def _view() -> Dict[str, Any]:
    call = fastrpc.current_call()
    return {
        "traceparent": call.metadata.get("traceparent"),
        "tracestate": call.metadata.get("tracestate"),
        "trace_id": call.trace_id,
        "span_id": call.span_id,
        "left": call.time_remaining(),
    }


class Back:
    """The service two hops down."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    def look(self) -> Any:
        return _view()

    def missing(self) -> Any:
        raise fastrpc.NotFound("no such user", {"id": 7})

    async def slow(self) -> Any:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "late"


class Front:
    """The service one hop down: calls Back with its own clients."""

    def __init__(self, back_address: str) -> None:
        self.back = fastrpc.AsyncClient(back_address)
        self.sync_back = fastrpc.Client(back_address, lazy=True)
        self.plain_back = fastrpc.AsyncClient(back_address, inherit=False)
        self.started = threading.Event()

    async def hop(self, explicit_timeout: Optional[float] = None) -> Any:
        mine = _view()
        theirs = await (self.back.call("Back.look") if explicit_timeout is None else self.back.call("Back.look", timeout=explicit_timeout))
        return {"mine": mine, "theirs": theirs}

    @fastrpc.blocking
    def hop_sync(self) -> Any:
        return {"mine": _view(), "theirs": self.sync_back.call("Back.look")}

    async def hop_detached(self) -> Any:
        with fastrpc.detached():
            detached = await self.back.call("Back.look")
        return {"detached": detached, "client": await self.plain_back.call("Back.look")}

    async def late(self) -> Any:
        await asyncio.sleep(0.3)  # the caller's time runs out here
        return await self.back.call("Back.look")

    async def wait_back(self) -> Any:
        return await self.back.call("Back.slow")

    @fastrpc.blocking
    def wait_back_sync(self) -> Any:
        self.started.set()
        return self.sync_back.call("Back.slow")

    async def missing(self) -> Any:
        return await self.back.call("Back.missing")

    async def close(self) -> None:
        await self.back.close()
        await self.plain_back.close()
        self.sync_back.close()


async def _stack(debug: bool = False):
    back_server = fastrpc.Server(debug=debug)
    back = Back()
    back_server.register(back)
    back_address = await back_server.start("tcp://127.0.0.1:0")
    front_server = fastrpc.Server(debug=debug)
    front = Front(back_address)
    front_server.register(front)
    front_address = await front_server.start("tcp://127.0.0.1:0")

    async def stop() -> None:
        await front.close()
        await front_server.shutdown(grace=0)
        await back_server.shutdown(grace=0)

    return back, front, front_address, stop


def test_traceparent_parses_only_valid_headers():
    assert TraceParent.parse(TRACEPARENT).trace_id == TRACE
    for bad in (None, 7, "", TRACEPARENT.upper(), "01" + TRACEPARENT[2:], TRACEPARENT[:-1],
                f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01", TRACEPARENT.replace("-", "_")):
        assert TraceParent.parse(bad) is None, bad


def test_a_nested_call_carries_the_trace_with_the_handlers_span_as_parent(run):
    async def main():
        back, front, address, stop = await _stack()
        try:
            async with fastrpc.AsyncClient(address) as c:
                for method in ("Front.hop", "Front.hop_sync"):
                    got = await c.call(method, metadata={"traceparent": TRACEPARENT, "tracestate": "k=v"})
                    mine, theirs = got["mine"], got["theirs"]
                    assert mine["trace_id"] == TRACE and len(mine["span_id"]) == 16
                    assert theirs["trace_id"] == TRACE
                    assert theirs["traceparent"] == f"00-{TRACE}-{mine['span_id']}-01"  # the handler's span is the parent
                    assert theirs["tracestate"] == "k=v"
                    assert theirs["span_id"] not in (mine["span_id"], PARENT)
                # no trace in: none out (fastrpc keeps a trace, it starts none)
                got = await c.call("Front.hop")
                assert got["mine"]["trace_id"] is None and got["theirs"]["traceparent"] is None
        finally:
            await stop()

    run(main())


def test_a_nested_call_gets_at_most_the_time_left(run):
    async def main():
        back, front, address, stop = await _stack()
        try:
            async with fastrpc.AsyncClient(address) as c:
                got = await c.call("Front.hop", timeout=2.0)
                assert 1.0 < got["theirs"]["left"] < got["mine"]["left"] <= 2.0
                got = await c.call("Front.hop", 30.0, timeout=2.0)  # its own, longer timeout is cut
                assert got["theirs"]["left"] <= 2.0
                got = await c.call("Front.hop", 0.5, timeout=2.0)  # a shorter one stands
                assert got["theirs"]["left"] <= 0.5
                got = await c.call("Front.hop_sync", timeout=2.0)  # from a blocking handler too
                assert 1.0 < got["theirs"]["left"] <= 2.0
                got = await c.call("Front.hop")  # no deadline in: none out
                assert got["theirs"]["left"] is None
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call("Front.late", timeout=0.2)
        finally:
            await stop()

    run(main())


def test_the_way_out_of_inheritance(run):
    async def main():
        back, front, address, stop = await _stack()
        try:
            async with fastrpc.AsyncClient(address) as c:
                got = await c.call("Front.hop_detached", timeout=2.0, metadata={"traceparent": TRACEPARENT})
                for view in got.values():
                    assert view["left"] is None and view["traceparent"] is None
        finally:
            await stop()

    run(main())


@pytest.mark.parametrize("method", ["Front.wait_back", "Front.wait_back_sync"])
def test_cancelling_a_call_cancels_the_calls_it_made(run, method):
    async def main():
        back, front, address, stop = await _stack()
        loop = asyncio.get_running_loop()
        try:
            async with fastrpc.AsyncClient(address) as c:
                task = asyncio.ensure_future(c.call(method))
                await asyncio.sleep(0.2)  # the call is two hops down by now
                task.cancel()
                await asyncio.wait_for(back.cancelled.wait(), 5)  # the hop after next was cancelled too
                with pytest.raises(asyncio.CancelledError):
                    await task
                back.cancelled.clear()
                # the same through a deadline
                with pytest.raises(fastrpc.DeadlineExceeded):
                    await c.call(method, timeout=0.3)
                await asyncio.wait_for(back.cancelled.wait(), 5)
        finally:
            await loop.run_in_executor(None, lambda: None)
            await stop()

    run(main())


@pytest.mark.parametrize("debug", [False, True])
def test_status_codes_cross_hops(run, debug):
    async def main():
        back, front, address, stop = await _stack(debug=debug)
        try:
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.NotFound, match="no such user") as info:
                    await c.call("Front.missing")
            details = info.value.details
            if debug:
                hops = details["chain"]
                assert [h.split("@")[0] for h in hops] == ["Back.missing", "Front.missing"]
                assert details["id"] == 7
            else:
                assert details == {"id": 7}
        finally:
            await stop()

    run(main())
