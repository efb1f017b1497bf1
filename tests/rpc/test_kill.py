"""Processes killed with SIGKILL: clients mid-call and servers under load."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
import tracemalloc

import pytest

import fastrpc


CLIENT_SCRIPT = r"""
import asyncio, sys
import fastrpc

async def main():
    c = await fastrpc.connect(sys.argv[1])
    calls = [asyncio.ensure_future(c.call("Slow.hang", i)) for i in range(20)]
    await c.call("Slow.ping")
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


class Slow:
    def __init__(self):
        self.started = 0
        self.cancelled = 0

    async def hang(self, i):
        self.started += 1
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    def ping(self):
        return "pong"


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


def test_killed_clients_leave_server_memory_and_tasks_unchanged(run):
    async def main():
        slow = Slow()
        server = fastrpc.Server()
        server.register(slow)
        address = await server.start("tcp://127.0.0.1:0")
        loop = asyncio.get_running_loop()

        async def one_client():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENT_SCRIPT, address, stdout=asyncio.subprocess.PIPE, env=_env()
            )
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"ready"
            finally:
                proc.kill()
                await proc.wait()

        async def settle():
            for _ in range(300):
                if server.connections == 0 and slow.cancelled == slow.started:
                    return
                await asyncio.sleep(0.01)

        try:
            for _ in range(3):  # warm-up: imports, caches, free lists
                await one_client()
            await settle()
            gc.collect()
            tasks_before = len(asyncio.all_tasks(loop))
            tracemalloc.start()
            mem_before = tracemalloc.get_traced_memory()[0]
            for _ in range(12):
                await one_client()
            await settle()
            gc.collect()
            mem_after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            assert server.connections == 0
            assert slow.started == 15 * 20 and slow.cancelled == slow.started
            assert len(asyncio.all_tasks(loop)) == tasks_before
            # 12 killed clients x 20 calls: nothing of them may stay behind
            assert mem_after - mem_before < 256 * 1024, (mem_before, mem_after)
        finally:
            await server.shutdown()

    run(main(), timeout=240)


@pytest.mark.slow
def test_sigkill_server_under_load_from_several_clients(run, server_process):
    async def main():
        sp = server_process()
        fast = fastrpc.Backoff(base=0.01, maximum=0.05)
        clients = [fastrpc.AsyncClient(sp.address, backoff=fastrpc.Backoff(base=0.01, maximum=0.05)) for _ in range(3)]
        for c in clients:
            await c.connect()
        pool = fastrpc.Pool(sp.address, size=2, backoff_base=0.01, backoff_max=0.05)
        await pool.start()
        sync_client = fastrpc.Client(sp.address, backoff=fast)
        stop = threading.Event()
        sync_log = []

        def sync_loop():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    sync_client.call("Arith.sleep_echo", 0.05, 1, timeout=10)
                    sync_log.append(("ok", time.monotonic() - t0, time.monotonic()))
                except (fastrpc.Unavailable, fastrpc.DeadlineExceeded) as exc:
                    sync_log.append((type(exc).__name__, time.monotonic() - t0, time.monotonic()))
                    time.sleep(0.01)

        thread = threading.Thread(target=sync_loop)
        thread.start()
        callers = clients + [pool]
        pending = [asyncio.ensure_future(c.call("Arith.sleep_echo", 30, i)) for i, c in enumerate(callers * 5)]
        await asyncio.sleep(0.3)
        killed_at = time.monotonic()
        sp.kill()
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert time.monotonic() - killed_at < 2.0
        assert all(isinstance(r, fastrpc.Unavailable) for r in results), results
        server_process(sp.port)
        back = time.monotonic()
        for c in callers:
            for _ in range(300):
                try:
                    assert await c.call("Arith.multiply", 6, 7) == 42
                    break
                except fastrpc.Unavailable:
                    await asyncio.sleep(0.02)
            else:
                pytest.fail(f"{c} did not reconnect")
        assert time.monotonic() - back < 6
        await asyncio.sleep(0.3)
        stop.set()
        await loop_run(thread.join)
        # the sync client's call in flight failed promptly, and it recovered
        failures = [x for x in sync_log if x[0] != "ok"]
        assert failures and all(d < 2.0 for _, d, _ in failures)
        assert sync_log[-1][0] == "ok"
        sync_client.close()
        for c in clients:
            await c.close()
        await pool.close()

    async def loop_run(fn):
        await asyncio.get_running_loop().run_in_executor(None, fn)

    run(main(), timeout=120)

