"""Load and soak test: ``python -m benchmarks.soak`` (bounded; not in the fast CI path).

Two phases against one fastrpc server process on loopback:

1. **connections**: ``--connections`` concurrent connections (default
   10,000), opened by ``--processes`` client processes; every one completes
   the handshake and one call, the server reports how many it holds, and the
   server's RSS per connection is recorded.
2. **calls**: ``--calls`` calls in total (default 1,000,000) from the client
   processes, each with random payload sizes (0 B to 16 KiB, a few up to
   256 KiB) and random concurrency (1 to 256 in flight); every answer is
   checked against its own request.  The server's RSS is sampled every
   half second; after warm-up it must stay flat.

Exit status 0 only if no call was lost or mismatched, every connection was
held, and RSS stayed within ``--rss-growth`` (default 10%) of its level
after warm-up.  ``ci/test.sh`` runs a reduced form (``--connections 2000
--calls 100000``).  Figures go to stdout and ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

PAGE = os.sysconf("SC_PAGE_SIZE")


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    want = min(want, 1 << 20)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- server


class Soak:
    def __init__(self, server: Any) -> None:
        self._server = server

    def echo(self, seq: int, payload: bytes) -> list:
        return [seq, payload]

    async def echo_async(self, seq: int, payload: bytes) -> list:
        await asyncio.sleep(0)
        return [seq, payload]

    def stats(self) -> dict:
        return {"connections": self._server.connections}


async def _serve() -> None:
    import fastrpc

    server = fastrpc.Server(max_in_flight=4096)
    server.register(Soak(server))
    address = await server.start("tcp://127.0.0.1:0", backlog=65535)
    print(address, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.shutdown(grace=2)


# --------------------------------------------------------------------------- workers


async def _worker_connections(address: str, count: int) -> None:
    import fastrpc

    clients = [fastrpc.AsyncClient(address, connect_timeout=60) for _ in range(count)]
    sem = asyncio.Semaphore(200)  # do not flood the accept queue all at once

    async def open_one(c: Any) -> None:
        async with sem:
            await c.connect()

    await asyncio.gather(*[open_one(c) for c in clients])
    print(json.dumps({"opened": len(clients)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # parent: "call"
    results = await asyncio.gather(*[c.call("Soak.echo", i, b"x") for i, c in enumerate(clients)], return_exceptions=True)
    ok = sum(1 for i, r in enumerate(results) if r == [i, b"x"])
    print(json.dumps({"called": ok, "failed": len(results) - ok}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # parent: "close"
    for c in clients:
        await c.close()


async def _worker_calls(address: str, total: int, seed: int) -> None:
    import fastrpc

    rng = random.Random(seed)
    lost = mismatched = errors = done = 0
    async with fastrpc.AsyncClient(address) as client:
        seq = seed * 10_000_000_000
        while done < total:
            batch = min(total - done, rng.choice([1, 4, 16, 64, 128, 256]))
            reqs = []
            for _ in range(batch):
                seq += 1
                size = rng.choice([0, 8, 100, 1000, 4000, 16384]) if rng.random() > 0.001 else 262144
                payload = seq.to_bytes(8, "big") * (size // 8)
                method = "Soak.echo_async" if seq % 5 == 0 else "Soak.echo"
                reqs.append((seq, payload, client.call(method, seq, payload, timeout=60)))
            results = await asyncio.gather(*[r[2] for r in reqs], return_exceptions=True)
            for (s, p, _), r in zip(reqs, results):
                if isinstance(r, BaseException):
                    if isinstance(r, fastrpc.DeadlineExceeded):
                        lost += 1
                    else:
                        errors += 1
                elif r != [s, p]:
                    mismatched += 1
            done += batch
    print(json.dumps({"calls": done, "lost": lost, "mismatched": mismatched, "errors": errors}), flush=True)


def _run(coro: Any) -> None:
    from fastrpc.transport.loop import new_event_loop

    loop = new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


# --------------------------------------------------------------------------- parent


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _spawn(args: List[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.soak", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _read_json(proc: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() or proc.poll() is not None:
            break
    if not line.strip():
        raise RuntimeError(f"worker {proc.pid} said nothing (exit {proc.poll()})")
    return json.loads(line)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("role", nargs="?", default="run", choices=["run", "server", "worker-conns", "worker-calls"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--rss-growth", type=float, default=0.10, help="allowed RSS growth after warm-up (fraction)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    _raise_fd_limit()
    if a.role == "server":
        _run(_serve())
        return 0
    if a.role == "worker-conns":
        _run(_worker_connections(a.args[0], int(a.args[1])))
        return 0
    if a.role == "worker-calls":
        _run(_worker_calls(a.args[0], int(a.args[1]), int(a.args[2])))
        return 0

    report: Dict[str, Any] = {"connections_target": a.connections, "calls_target": a.calls, "processes": a.processes}
    server = _spawn(["server"])
    ok = True
    try:
        address = server.stdout.readline().strip()
        rss_idle = _rss(server.pid)

        # ---- phase 1: connections
        t0 = time.monotonic()
        per = [a.connections // a.processes + (1 if i < a.connections % a.processes else 0) for i in range(a.processes)]
        workers = [_spawn(["worker-conns", address, str(n)]) for n in per if n]
        opened = sum(_read_json(w, 300)["opened"] for w in workers)
        import fastrpc

        with fastrpc.Client(address) as probe:
            held = probe.call("Soak.stats")["connections"] - 1  # not counting the probe
        rss_conns = _rss(server.pid)
        for w in workers:
            w.stdin.write("call\n")
            w.stdin.flush()
        called = [_read_json(w, 300) for w in workers]
        for w in workers:
            w.stdin.write("close\n")
            w.stdin.flush()
            w.stdin.close()
        for w in workers:
            w.wait(120)
        report.update(
            connections_opened=opened,
            connections_held=held,
            connections_called=sum(c["called"] for c in called),
            connections_failed=sum(c["failed"] for c in called),
            rss_per_connection_bytes=(rss_conns - rss_idle) / max(1, held),
            phase1_s=time.monotonic() - t0,
        )
        print(
            f"connections: {opened} opened, {held} held by the server at once, "
            f"{report['connections_called']} answered a call, {report['connections_failed']} failed; "
            f"server RSS {rss_idle / 2**20:.1f} MiB idle -> {rss_conns / 2**20:.1f} MiB "
            f"({report['rss_per_connection_bytes'] / 1024:.1f} KiB per connection)",
            flush=True,
        )
        ok &= held == a.connections and report["connections_failed"] == 0

        # ---- phase 2: calls
        t0 = time.monotonic()
        per = [a.calls // a.processes + (1 if i < a.calls % a.processes else 0) for i in range(a.processes)]
        workers = [_spawn(["worker-calls", address, str(n), str(i + 1)]) for i, n in enumerate(per) if n]
        samples = []
        while any(w.poll() is None for w in workers):
            samples.append((round(time.monotonic() - t0, 2), _rss(server.pid)))
            time.sleep(0.5)
        results = [_read_json(w, 10) for w in workers]
        elapsed = time.monotonic() - t0
        calls = sum(r["calls"] for r in results)
        lost = sum(r["lost"] for r in results)
        mismatched = sum(r["mismatched"] for r in results)
        errors = sum(r["errors"] for r in results)
        warm = [rss for t, rss in samples if t >= elapsed * 0.2] or [s[1] for s in samples]
        base, peak, last = warm[0], max(warm), warm[-1]
        growth = (last - base) / base if base else 0.0
        report.update(
            calls=calls,
            lost=lost,
            mismatched=mismatched,
            errors=errors,
            calls_per_s=calls / elapsed,
            phase2_s=elapsed,
            rss_after_warmup=base,
            rss_peak=peak,
            rss_end=last,
            rss_growth=growth,
            rss_samples=samples,
        )
        print(
            f"calls: {calls} in {elapsed:.1f}s ({calls / elapsed:,.0f}/s) from {len(workers)} processes; "
            f"lost {lost}, mismatched {mismatched}, errors {errors}; server RSS after warm-up "
            f"{base / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, end {last / 2**20:.1f} MiB "
            f"({growth * 100:+.1f}%)",
            flush=True,
        )
        ok &= calls == a.calls and lost == 0 and mismatched == 0 and errors == 0 and growth <= a.rss_growth
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    report["ok"] = ok
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    print("soak: OK" if ok else "soak: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
