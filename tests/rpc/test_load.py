"""Many calls at random concurrency: every response matched to its request."""

from __future__ import annotations

import asyncio
import os
import random
import threading

import fastrpc

from rpc_support import Arith

TOTAL = int(os.environ.get("FASTRPC_LOAD_CALLS", "100000"))


def test_100k_calls_random_concurrency_all_matched(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        rng = random.Random(1234)
        try:
            async with fastrpc.AsyncClient(address) as client:
                done = 0
                while done < TOTAL:
                    batch = min(rng.choice([1, 2, 7, 64, 300, 1000, 2500]), TOTAL - done)
                    # unique, varied payloads: a mixed-up answer cannot pass
                    keys = [(done + i, "k" * rng.randrange(0, 40)) for i in range(batch)]
                    calls = []
                    for n, s in keys:
                        if n % 3 == 0:
                            calls.append(client.call("Arith.sleep_echo", 0, [n, s]))
                        else:
                            calls.append(client.call("Arith.echo", [n, s]))
                    results = await asyncio.gather(*calls)
                    assert results == [[n, s] for n, s in keys]
                    done += batch
                assert client.endpoint.connection.in_flight == 0
        finally:
            await server.shutdown()

    run(main())


def test_sync_client_many_threads_all_matched(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        errors = []

        def worker(client, k):
            try:
                for i in range(1500):
                    assert client.call("Arith.echo", [k, i]) == [k, i]
                futs = [(i, client.go("Arith.multiply", k, i)) for i in range(300)]
                for i, f in futs:
                    assert f.result(timeout=30) == k * i
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def sync_side():
            with fastrpc.Client(address) as client:
                threads = [threading.Thread(target=worker, args=(client, k)) for k in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                assert not any(t.is_alive() for t in threads)
                assert client._conn._pending == {}

        try:
            await asyncio.get_running_loop().run_in_executor(None, sync_side)
            assert errors == []
        finally:
            await server.shutdown()

    run(main())
