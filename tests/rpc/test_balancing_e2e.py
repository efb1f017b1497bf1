"""Clients over several servers, end to end on loopback: targets (lists,
comma-separated strings) on every client, the balancers' behaviour with
real servers (a slow server under p2c and round robin, consistent hashing
while a server leaves, a gray release's share), outlier ejection, and a
server that cannot be reached left out at once."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any, List, Tuple

import pytest

import fastrpc
from fastrpc.balancing import ConsistentHash, Instance, OutlierDetection, Route, Routes

from rpc_support import free_port


class Who:
    """A service that says which server answered."""

    def __init__(self, name: str, delay: float = 0.0, fail: bool = False) -> None:
        self.name = name
        self.delay = delay
        self.fail = fail

    async def who(self, key: Any = None) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise fastrpc.Unavailable(f"{self.name} is broken")
        return self.name


async def _servers(n: int, **per: Any) -> Tuple[List[fastrpc.Server], List[str]]:
    servers, addresses = [], []
    for i in range(n):
        server = fastrpc.Server()
        server.register(Who(f"s{i}", **per.get(f"s{i}", {})), name="Who")
        addresses.append(await server.start("127.0.0.1:0"))
        servers.append(server)
    return servers, addresses


async def _stop(servers: List[fastrpc.Server]) -> None:
    for s in servers:
        await s.shutdown(grace=0.5)


async def _count(client: Any, n: int, concurrency: int = 1, **call: Any) -> collections.Counter:
    got: collections.Counter = collections.Counter()

    async def worker(k: int) -> None:
        for _ in range(k):
            got[await client.call("Who.who", **call)] += 1

    per = n // concurrency
    await asyncio.gather(*(worker(per) for _ in range(concurrency)))
    return got


@pytest.mark.parametrize("form", ["list", "comma", "tuple"])
def test_async_clients_take_a_list_of_servers(run, form):
    async def main():
        servers, addresses = await _servers(3)
        target = {"list": addresses, "comma": ",".join(addresses), "tuple": tuple(addresses)}[form]
        try:
            async with fastrpc.AsyncClient(target) as client:
                assert isinstance(client, fastrpc.AsyncClient)
                got = await _count(client, 300)
                assert got == {"s0": 100, "s1": 100, "s2": 100}  # round robin by default
                assert await client.proxy("Who").who() in {"s0", "s1", "s2"}
                await client.notify("Who.who")
                assert await client.ping() >= 0
            async with fastrpc.Pool(target, size=2) as pool:
                assert pool.size == 6 and sorted(pool.servers) == sorted(addresses)
                assert sorted((await _count(pool, 300)).values()) == [100, 100, 100]
        finally:
            await _stop(servers)

    run(main())


def test_sync_client_takes_a_list_of_servers(run):
    async def main():
        servers, addresses = await _servers(3)
        loop = asyncio.get_running_loop()

        def calls() -> Any:
            with fastrpc.Client(addresses) as client:
                assert isinstance(client, fastrpc.Client)
                got = collections.Counter(client.call("Who.who") for _ in range(300))
                futures = [client.go("Who.who") for _ in range(30)]
                got.update(f.result(10) for f in futures)
                assert client.proxy("Who").who() in {"s0", "s1", "s2"}
                return got, sorted(client.servers)

        try:
            got, known = await loop.run_in_executor(None, calls)
            assert got == {"s0": 110, "s1": 110, "s2": 110}
            assert known == sorted(addresses)
        finally:
            await _stop(servers)

    run(main())


def test_a_server_that_refuses_connections_is_left_out_at_once(run):
    async def main():
        servers, addresses = await _servers(2)
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        loop = asyncio.get_running_loop()
        try:
            async with fastrpc.AsyncClient([dead] + addresses, backoff=fastrpc.Backoff(5.0, 5.0)) as client:
                got = await _count(client, 200)
                assert sum(got.values()) == 200 and set(got) == {"s0", "s1"}

            def sync_calls() -> Any:
                with fastrpc.Client([dead] + addresses, backoff=fastrpc.Backoff(5.0, 5.0)) as client:
                    return collections.Counter(client.call("Who.who") for _ in range(200))

            got = await loop.run_in_executor(None, sync_calls)
            assert sum(got.values()) == 200 and set(got) == {"s0", "s1"}
        finally:
            await _stop(servers)

    run(main())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_p2c_sends_a_slow_server_several_times_fewer_calls(run, kind):
    # s2 takes 5 ms per call more than its peers: round robin still gives
    # it a third; p2c (peak EWMA latency x calls in flight) far less.
    async def main():
        servers, addresses = await _servers(3, s2={"delay": 0.005})
        loop = asyncio.get_running_loop()
        shares = {}
        try:
            for balancer in ("round_robin", "p2c"):
                if kind == "async":
                    async with fastrpc.AsyncClient(addresses, balancer=balancer) as client:
                        got = await _count(client, 1200, concurrency=8)
                else:

                    def calls(balancer: str = balancer) -> collections.Counter:
                        got: collections.Counter = collections.Counter()
                        lock = threading.Lock()
                        with fastrpc.Client(addresses, balancer=balancer) as client:

                            def worker() -> None:
                                for _ in range(100):
                                    name = client.call("Who.who")
                                    with lock:
                                        got[name] += 1

                            threads = [threading.Thread(target=worker) for _ in range(6)]
                            for t in threads:
                                t.start()
                            for t in threads:
                                t.join(60)
                        return got

                    got = await loop.run_in_executor(None, calls)
                total = sum(got.values())
                shares[balancer] = (got["s2"] / total, min(got["s0"], got["s1"]) / total)
        finally:
            await _stop(servers)
        slow, fast = shares["round_robin"]
        assert 0.25 <= slow <= 0.42, shares  # its share
        slow, fast = shares["p2c"]
        assert slow * 3 <= fast, shares  # several times fewer than each peer

    run(main())


def test_consistent_hash_keeps_each_key_on_its_server_and_moves_about_a_third(run):
    async def main():
        servers, addresses = await _servers(3)
        keys = [f"user-{i}" for i in range(10_000)]
        try:
            balancer = ConsistentHash(arg=0)
            async with fastrpc.AsyncClient(addresses, balancer=balancer) as client:

                async def placement() -> dict:
                    out = {}
                    for i in range(0, len(keys), 500):
                        batch = keys[i : i + 500]
                        names = await asyncio.gather(*(client.call("Who.who", k) for k in batch))
                        out.update(zip(batch, names))
                    return out

                before = await placement()
                assert before == await placement()  # the same key, the same server
                counts = collections.Counter(before.values())
                assert all(2500 <= c <= 4200 for c in counts.values()), counts
                # s1 leaves: its keys move, no other key does.
                await servers[1].shutdown(grace=0.5)
                for _ in range(200):
                    if client.pool.connected == 2:
                        break
                    await asyncio.sleep(0.01)
                after = await placement()
        finally:
            await _stop(servers)
        moved = [k for k in keys if before[k] != after[k]]
        assert all(before[k] == "s1" for k in moved)
        assert "s1" not in after.values()
        assert 0.25 <= len(moved) / len(keys) <= 0.42, len(moved)  # about 1/N

    run(main())


def test_gray_release_sends_a_tenth_of_calls_to_v2(run):
    async def main():
        servers, addresses = await _servers(3)
        instances = [Instance(addresses[0], version="v1"), Instance(addresses[1], version="v1"), Instance(addresses[2], version="v2")]
        routes = Routes([Route(metadata={"canary": "1"}, version="v2"), Route(share=0.1, version="v2")])
        try:
            async with fastrpc.Pool(instances, size=1, balancer=routes) as pool:
                got = await _count(pool, 10_000, concurrency=20)
                assert 0.09 <= got["s2"] / 10_000 <= 0.11, got
                assert abs(got["s0"] - got["s1"]) <= 300, got  # the rest shared
                canary = await _count(pool, 200, metadata={"canary": "1"})
                assert canary == {"s2": 200}
        finally:
            await _stop(servers)

    run(main())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_outlier_detection_ejects_a_failing_server(run, kind):
    async def main():
        servers, addresses = await _servers(3, s1={"fail": True})
        outlier = OutlierDetection(consecutive_failures=3, base_ejection_time=30.0)
        loop = asyncio.get_running_loop()

        async def calls_async() -> Tuple[int, collections.Counter]:
            failed, got = 0, collections.Counter()
            async with fastrpc.AsyncClient(addresses, outlier=outlier) as client:
                for _ in range(300):
                    try:
                        got[await client.call("Who.who")] += 1
                    except fastrpc.Unavailable:
                        failed += 1
            return failed, got

        def calls_sync() -> Tuple[int, collections.Counter]:
            failed, got = 0, collections.Counter()
            with fastrpc.Client(addresses, outlier=outlier) as client:
                for _ in range(300):
                    try:
                        got[client.call("Who.who")] += 1
                    except fastrpc.Unavailable:
                        failed += 1
            return failed, got

        try:
            if kind == "async":
                failed, got = await calls_async()
            else:
                failed, got = await loop.run_in_executor(None, calls_sync)
        finally:
            await _stop(servers)
        # Three failures in a row (round robin: calls 2, 5 and 8) eject it;
        # every later call goes to the other two.
        assert failed == 3, (failed, got)
        assert got["s0"] + got["s1"] + got["s2"] == 297 and got["s1"] == 0

    run(main())


def test_a_server_that_goes_away_and_comes_back_gets_calls_again(run):
    async def main():
        servers, addresses = await _servers(2)
        port = int(addresses[1].rsplit(":", 1)[1])
        try:
            async with fastrpc.AsyncClient(addresses, backoff=fastrpc.Backoff(0.01, 0.05)) as client:
                assert set(await _count(client, 20)) == {"s0", "s1"}
                await servers[1].shutdown(grace=0.5)  # GOAWAY, then closed
                for _ in range(200):
                    if client.pool.connected == 1:
                        break
                    await asyncio.sleep(0.01)
                assert await _count(client, 50) == {"s0": 50}  # none fails: it left the picker
                back = fastrpc.Server()
                back.register(Who("s1-again"), name="Who")
                await back.start(f"127.0.0.1:{port}")
                servers[1] = back
                for _ in range(500):
                    if client.pool.connected == 2:
                        break
                    await asyncio.sleep(0.01)
                assert set(await _count(client, 20)) == {"s0", "s1-again"}
        finally:
            await _stop(servers)

    run(main())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_when_every_server_is_ejected_calls_still_go_out(run, kind):
    # Fail open: ejecting the only server would refuse every call.
    async def main():
        servers, addresses = await _servers(2, s0={"fail": True}, s1={"fail": True})
        outlier = OutlierDetection(consecutive_failures=1, max_ejection_percent=100)
        loop = asyncio.get_running_loop()

        def attempts(call: Any) -> int:
            reached = 0
            for _ in range(20):
                try:
                    call()
                except fastrpc.Unavailable as exc:
                    reached += "is broken" in str(exc)  # the server answered
            return reached

        try:
            if kind == "async":
                async with fastrpc.AsyncClient(addresses, outlier=outlier) as client:
                    reached = 0
                    for _ in range(20):
                        try:
                            await client.call("Who.who")
                        except fastrpc.Unavailable as exc:
                            reached += "is broken" in str(exc)
                    ejected = sum(outlier.is_ejected(load, time.monotonic()) for load in client.pool.loads.values())
            else:

                def sync() -> Tuple[int, int]:
                    with fastrpc.Client(addresses, outlier=outlier) as client:
                        got = attempts(lambda: client.call("Who.who"))
                        return got, sum(outlier.is_ejected(s.load, time.monotonic()) for s in client._servers.values())

                reached, ejected = await loop.run_in_executor(None, sync)
        finally:
            await _stop(servers)
        assert ejected == 2  # both ejected...
        assert reached == 20  # ...and every call still reached a server

    run(main())


def test_a_call_a_leaving_server_never_read_goes_to_another(run):
    # The blocking client reads only while it calls: s0 shuts down (GOAWAY,
    # listener closed) while the client is idle; the next call picked for
    # s0 goes into its closed connection, comes back NotProcessed (never
    # ran) and is sent to s1, not back to s0 (which refuses connections).
    async def main():
        servers, addresses = await _servers(2)
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(None, fastrpc.Client, addresses)
        try:
            assert await loop.run_in_executor(None, lambda: {client.call("Who.who") for _ in range(4)}) == {"s0", "s1"}
            await servers[0].shutdown(grace=0.5)
            got = await loop.run_in_executor(None, lambda: [client.call("Who.who", timeout=t) for t in (None, 5.0, None, 5.0)])
            assert got == ["s1"] * 4
        finally:
            client.close()
            await _stop(servers[1:])

    run(main())


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_outlier_detection_ejects_a_server_whose_failure_rate_is_far_above_its_peers(run, kind):
    # No consecutive-failure rule: the interval's sweep compares failure
    # rates and ejects s1 (all of its calls fail); then no call fails.
    async def main():
        servers, addresses = await _servers(3, s1={"fail": True})
        outlier = OutlierDetection(
            consecutive_failures=None, success_rate_stdev=None, failure_percentage=50, min_requests=5, min_hosts=3, interval=0.2
        )
        loop = asyncio.get_running_loop()

        async def calls_async() -> Tuple[int, int]:
            async with fastrpc.AsyncClient(addresses, outlier=outlier) as client:
                before = 0
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:  # several sweeps
                    try:
                        await client.call("Who.who")
                    except fastrpc.Unavailable:
                        before += 1
                    await asyncio.sleep(0.005)
                after = 0
                for _ in range(100):
                    try:
                        await client.call("Who.who")
                    except fastrpc.Unavailable:
                        after += 1
                return before, after

        def calls_sync() -> Tuple[int, int]:
            with fastrpc.Client(addresses, outlier=outlier) as client:
                before = 0
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    try:
                        client.call("Who.who")
                    except fastrpc.Unavailable:
                        before += 1
                    time.sleep(0.005)
                after = 0
                for _ in range(100):
                    try:
                        client.call("Who.who")
                    except fastrpc.Unavailable:
                        after += 1
                return before, after

        try:
            before, after = await calls_async() if kind == "async" else await loop.run_in_executor(None, calls_sync)
        finally:
            await _stop(servers)
        assert before >= 5  # it failed long enough to be measured...
        assert after == 0  # ...then it was ejected

    run(main())
