"""Retries: what goes again (idempotent methods, calls that never ran),
what does not (non-idempotent calls that may have run, codes not listed),
how many times, the server's pushback, the retry budget, the deadline, and
a Pool's retry going to another endpoint; on every client."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List

import pytest

import fastrpc
from fastrpc.client.retry import Retrier

from rpc_support import free_port

#: short waits, and no budget (its own test has one)
FAST = dict(initial_backoff=0.01, max_backoff=0.02, budget=None)


class Flaky:
    """Fails with UNAVAILABLE until ``ok_after`` calls have been made."""

    def __init__(self) -> None:
        self.ok_after = 0
        self.runs: List[float] = []
        self.pushback: Any = None
        self.error: Any = fastrpc.Unavailable

    def _run(self) -> str:
        self.runs.append(time.monotonic())
        if len(self.runs) <= self.ok_after:
            details = {fastrpc.PUSHBACK: self.pushback} if self.pushback is not None else None
            raise self.error("try again", details)
        return "ok"

    @fastrpc.idempotent
    def read(self) -> str:
        return self._run()

    def write(self) -> str:
        return self._run()

    def lookup(self) -> str:
        return self._run()


async def _serve(flaky: Flaky, **options: Any) -> Any:
    server = fastrpc.Server(**options)
    server.register(flaky, "Flaky", idempotent=["lookup"])
    address = await server.start("tcp://127.0.0.1:0")
    return server, address


ALL = pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)


@ALL
def test_idempotent_methods_are_retried(run, client_kind):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        try:
            async with client_kind.client(address, retry=fastrpc.RetryPolicy(max_attempts=3, **FAST)) as c:
                flaky.ok_after = 2
                assert await c.call("Flaky.read") == "ok"  # marked by the decorator
                assert len(flaky.runs) == 3
                flaky.runs.clear()
                assert await c.call("Flaky.lookup") == "ok"  # marked at registration
                assert len(flaky.runs) == 3
                # Attempts run out: the last error.
                flaky.runs.clear()
                flaky.ok_after = 5
                with pytest.raises(fastrpc.Unavailable, match="try again"):
                    await c.call("Flaky.read")
                assert len(flaky.runs) == 3
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_non_idempotent_calls_that_ran_are_not_retried(run, client_kind):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        try:
            async with client_kind.client(address, retry=fastrpc.RetryPolicy(max_attempts=3, **FAST)) as c:
                flaky.ok_after = 1
                with pytest.raises(fastrpc.Unavailable):
                    await c.call("Flaky.write")
                assert len(flaky.runs) == 1
                # Unless the policy says so.
                flaky.runs.clear()
                unsafe = fastrpc.RetryPolicy(max_attempts=3, non_idempotent=True, **FAST)
                assert await c.call("Flaky.write", retry=unsafe) == "ok"
                assert len(flaky.runs) == 2
                # A code the policy does not list is never retried.
                flaky.runs.clear()
                flaky.error = fastrpc.NotFound
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Flaky.read")
                assert len(flaky.runs) == 1
                # Unless listed.
                flaky.runs.clear()
                codes = fastrpc.RetryPolicy(retryable_codes=[fastrpc.StatusCode.NOT_FOUND], **FAST)
                assert await c.call("Flaky.read", retry=codes) == "ok"
                assert len(flaky.runs) == 2
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_per_call_policy_and_opt_out(run, client_kind):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        try:
            async with client_kind.client(address) as c:  # no client policy
                flaky.ok_after = 1
                with pytest.raises(fastrpc.Unavailable):
                    await c.call("Flaky.read")
                flaky.runs.clear()
                assert await c.call("Flaky.read", retry=fastrpc.RetryPolicy(**FAST)) == "ok"
                assert len(flaky.runs) == 2
            async with client_kind.client(address, retry=fastrpc.RetryPolicy(**FAST)) as c:
                flaky.runs.clear()
                with pytest.raises(fastrpc.Unavailable):
                    await c.call("Flaky.read", retry=None)  # this call: one attempt
                assert len(flaky.runs) == 1
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_server_pushback(run, client_kind):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        try:
            async with client_kind.client(address, retry=fastrpc.RetryPolicy(**FAST)) as c:
                flaky.ok_after, flaky.pushback = 1, 200
                assert await c.call("Flaky.read") == "ok"
                assert len(flaky.runs) == 2
                # the server's wait, not the policy's 10 ms (a loop's timers
                # may round down a little)
                assert flaky.runs[1] - flaky.runs[0] >= 0.18
                flaky.runs.clear()
                flaky.pushback = -1  # do not retry
                with pytest.raises(fastrpc.Unavailable):
                    await c.call("Flaky.read")
                assert len(flaky.runs) == 1
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_retry_budget_stops_retries_when_most_calls_fail(run, client_kind):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        policy = fastrpc.RetryPolicy(**{**FAST, "max_attempts": 5, "budget": fastrpc.RetryBudget(max_tokens=4, token_ratio=0.5)})
        try:
            async with client_kind.client(address, retry=policy) as c:
                flaky.ok_after = 10**6
                runs = []
                for _ in range(4):
                    before = len(flaky.runs)
                    with pytest.raises(fastrpc.Unavailable):
                        await c.call("Flaky.read")
                    runs.append(len(flaky.runs) - before)
                # 4 tokens: failures take one each, retries need more than 2
                # left: the first call makes 2 attempts, then none retries.
                assert runs == [2, 1, 1, 1]
                # Successes refill it (0.5 each): retries come back.
                flaky.ok_after = 0
                for _ in range(8):  # back to 4 tokens
                    assert await c.call("Flaky.read") == "ok"
                flaky.runs.clear()
                flaky.ok_after = 1
                assert await c.call("Flaky.read") == "ok"
                assert len(flaky.runs) == 2
            # The policy's own bucket is a template: each client has its own.
            assert policy.budget.tokens == 4
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_retries_never_outlive_the_deadline(run, client_kind):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        try:
            async with client_kind.client(address, retry=fastrpc.RetryPolicy(initial_backoff=5.0, max_backoff=5.0)) as c:
                flaky.ok_after = 10
                start = time.monotonic()
                with pytest.raises(fastrpc.DeadlineExceeded) as info:
                    await c.call("Flaky.read", timeout=0.5)
                assert time.monotonic() - start < 4.0  # failed at once, without the 5 s wait
                assert len(flaky.runs) == 1
                assert isinstance(info.value.__cause__, fastrpc.Unavailable)
                assert info.value.details["attempts"] == 1
        finally:
            await server.shutdown()

    run(main())


@pytest.mark.parametrize("client_kind", ["sync", "async"], indirect=True)
def test_calls_that_were_never_sent_are_retried(run, client_kind):
    # A server that is not up yet: connecting fails, the call was never
    # sent, so even a non-idempotent one goes again, after the backoff.
    async def main():
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        flaky = Flaky()
        server = fastrpc.Server()
        server.register(flaky, "Flaky")
        c = await client_kind.open(
            address,
            connect=False,
            retry=fastrpc.RetryPolicy(max_attempts=20, initial_backoff=0.05, max_backoff=0.1),
            backoff=fastrpc.Backoff(base=0.02, maximum=0.05),
        )
        try:
            pending = asyncio.ensure_future(c.call("Flaky.write"))
            await asyncio.sleep(0.2)
            assert not pending.done()
            await server.start(address)
            assert await asyncio.wait_for(pending, 10) == "ok"
            assert len(flaky.runs) == 1
        finally:
            await c.close()
            await server.shutdown()

    run(main())


def test_pool_retries_on_another_endpoint(run):
    async def main():
        bad, good = Flaky(), Flaky()
        bad.ok_after = 10**6
        s1, a1 = await _serve(bad)
        s2, a2 = await _serve(good)
        try:
            pool = fastrpc.Pool([a1, a2], size=1, retry=fastrpc.RetryPolicy(max_attempts=2, **FAST))
            async with pool:
                for _ in range(20):
                    while pool.connected < 2:
                        await asyncio.sleep(0.01)
                    assert await pool.call("Flaky.read") == "ok"
            assert len(good.runs) == 20
            # At most one attempt per call on the bad one: the retry went
            # to the other endpoint, never back to the one that failed.
            assert 1 <= len(bad.runs) <= 20
        finally:
            await s1.shutdown()
            await s2.shutdown()

    run(main())


def test_idempotent_methods_are_announced(run):
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert c.endpoint.connection.idempotent == {
                    "Flaky.read",
                    "Flaky.lookup",
                    "fastrpc.Health.check",
                    "fastrpc.Health.watch",
                    "fastrpc.Reflection.methods",
                }
                methods = {m["name"]: m["idempotent"] for m in await c.call("fastrpc.Reflection.methods")}
                assert methods["Flaky.read"] and methods["Flaky.lookup"] and not methods["Flaky.write"]
        finally:
            await server.shutdown()

    run(main())


def test_register_rejects_unknown_idempotent_names():
    server = fastrpc.Server()
    with pytest.raises(ValueError, match="nope"):
        server.register(Flaky(), "Flaky", idempotent=["nope"])


# -- the decisions alone ---------------------------------------------------------------


def test_retrier_decisions():
    policy = fastrpc.RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=0.1, jitter=0, budget=None)
    # Never ran (NotProcessed, or never sent): retried even when not idempotent.
    r = Retrier(policy, None, None)
    assert r.decide(fastrpc.NotProcessed("not read"), True, False, 0.0) == 0.1
    assert r.decide(fastrpc.Unavailable("no connection"), False, False, 0.0, not_before=0.5) == 0.5
    with pytest.raises(fastrpc.Unavailable):  # third attempt was the last
        r.decide(fastrpc.Unavailable("no connection"), False, False, 0.0)
    # May have run, not idempotent: no.
    with pytest.raises(fastrpc.Unavailable):
        Retrier(policy, None, None).decide(fastrpc.Unavailable("lost"), True, False, 0.0)
    # Not an RpcError (a bug in a handler's caller, a cancellation): as it is.
    with pytest.raises(KeyError):
        Retrier(policy, None, None).decide(KeyError("x"), True, True, 0.0)
    # The deadline: a wait that ends after it fails at once.
    with pytest.raises(fastrpc.DeadlineExceeded):
        Retrier(policy, None, 10.05).decide(fastrpc.Unavailable("x"), True, True, 10.0)
    assert Retrier(policy, None, 10.5).decide(fastrpc.Unavailable("x"), True, True, 10.0) == 0.1


def test_policy_validation_and_backoff():
    with pytest.raises(ValueError):
        fastrpc.RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        fastrpc.RetryPolicy(jitter=2)
    with pytest.raises(ValueError):
        fastrpc.RetryBudget(max_tokens=0)
    p = fastrpc.RetryPolicy(initial_backoff=0.1, max_backoff=0.5, multiplier=2, jitter=0.5)
    for retry, top in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)]:
        waits = [p.backoff(retry) for _ in range(200)]
        assert all(top * 0.5 <= w <= top for w in waits)
        assert max(waits) - min(waits) > top * 0.2  # jittered


def test_a_1_1_client_is_still_served(run):
    # A client that speaks 1.1 (no `idempotent` in its world) gets the 1.2
    # server's handshake, ignores the new key, and calls as before.
    async def main():
        flaky = Flaky()
        server, address = await _serve(flaky)
        host, port = address[6:].rsplit(":", 1)
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            w = fastrpc.FrameWriter()
            w.write_frame(fastrpc.MsgType.HANDSHAKE, 0, {"client": "old/1.1"})
            w.write_request(1, "Flaky.write", [])
            writer.write(b"FRPC\x01\x01\r\n" + w.take())
            parser = fastrpc.FrameParser()
            frames: List[Any] = []
            while len(frames) < 2:
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data
                frames += parser.feed(data)
            assert parser.peer_version == (1, 2)
            hs, answer = frames[0], frames[1]
            assert hs.value["idempotent"] == [hs.value["methods"].index(n) for n in ("Flaky.lookup", "Flaky.read")] + [
                hs.value["methods"].index(n) for n in ("fastrpc.Health.check", "fastrpc.Health.watch", "fastrpc.Reflection.methods")
            ]
            assert answer.request_id == 1 and answer.value == "ok"
            writer.close()
        finally:
            await server.shutdown()

    run(main())
