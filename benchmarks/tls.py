"""What TLS costs per call: W1 (one call at a time) and W2 (pipelined) with
and without TLS, in the same run.

Usage::

    python -m benchmarks.tls            # full run (~1 min)
    python -m benchmarks.tls --quick    # CI smoke run

Two server processes on loopback, one plain and one with TLS (a
certificate made for the run by ``trustme``, TLS 1.3, the default
ciphers), the same handler (``Bench.add``).  The clients run in this
process, in rounds that alternate plain and TLS: the sync ``Client`` and
the ``AsyncClient`` one call at a time (W1: p50 latency and calls/s), and
the ``AsyncClient`` with 100 calls in flight (W2: calls/s).  Reported: each
figure with and without TLS, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

import fastrpc

from benchmarks.harness import Running, Server, _py

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


class Bench:
    def add(self, a: int, b: int) -> int:
        return a + b


def serve(certfile: str, port: int) -> None:
    """The server process (``harness.Running``'s protocol): TLS when
    ``certfile`` (cert + key) is given."""

    async def main() -> None:
        ctx = None
        if certfile:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certfile)
        server = fastrpc.Server(ssl=ctx)
        server.register(Bench())
        print("READY", await server.start(f"tcp://127.0.0.1:{port}"), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.shutdown(grace=0)

    if uvloop is not None:
        uvloop.install()
    asyncio.run(main())


def w1_sync(client: fastrpc.Client, seconds: float) -> List[float]:
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        client.call("Bench.add", 1, 2)
        out.append(time.perf_counter() - t)
    return out


async def w1_async(client: fastrpc.AsyncClient, seconds: float) -> List[float]:
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await client.call("Bench.add", 1, 2)
        out.append(time.perf_counter() - t)
    return out


async def w2_async(client: fastrpc.AsyncClient, seconds: float, depth: int = 100) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await client.call("Bench.add", 1, 2)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(depth)))
    return done / (time.perf_counter() - start)


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short rounds (CI smoke run)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port)
        return 0
    try:
        import trustme
    except ImportError:
        print("benchmarks.tls needs trustme (pip install .[test]); skipped")
        return 0
    seconds, rounds = (0.2, 2) if args.quick else (1.0, 6)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    tmp = tempfile.mkdtemp()
    pem = os.path.join(tmp, "server.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(pem)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    procs: List[Running] = []
    try:
        addresses = {}
        for name, certfile in (("plain", ""), ("tls", pem)):
            procs.append(Running(Server(name, _py("benchmarks.tls", "--serve", certfile))))
            addresses[name] = procs[-1].address
        loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        syncs = {name: fastrpc.Client(addr, ssl=client_ctx if name == "tls" else None) for name, addr in addresses.items()}
        asyncs = {name: fastrpc.AsyncClient(addr, ssl=client_ctx if name == "tls" else None) for name, addr in addresses.items()}
        for c in asyncs.values():
            loop.run_until_complete(c.connect())
        res: Dict[str, Dict[str, List[float]]] = {n: {"sync": [], "async": [], "w2": []} for n in addresses}
        for r in range(rounds):
            order = list(addresses) if r % 2 == 0 else list(reversed(list(addresses)))
            for name in order:
                res[name]["sync"] += w1_sync(syncs[name], seconds)
                res[name]["async"] += loop.run_until_complete(w1_async(asyncs[name], seconds))
                res[name]["w2"].append(loop.run_until_complete(w2_async(asyncs[name], seconds)))
        for c in syncs.values():
            c.close()
        for c in asyncs.values():
            loop.run_until_complete(c.close())
        loop.close()
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"TLS cost per call ({fastrpc.IMPLEMENTATION} build, {ssl.OPENSSL_VERSION}; {rounds} alternating rounds of {seconds}s)")
    print(f"{'workload':<34}{'plain':>14}{'TLS':>14}{'TLS / plain':>14}")
    for key, label in (("sync", "W1 sync Client, p50"), ("async", "W1 AsyncClient, p50")):
        p, t = statistics.median(res["plain"][key]) * 1e6, statistics.median(res["tls"][key]) * 1e6
        print(f"{label:<34}{p:>11.1f} us{t:>11.1f} us{t / p:>13.2f}x")
    p, t = statistics.median(res["plain"]["w2"]), statistics.median(res["tls"]["w2"])
    print(f"{'W2 AsyncClient, 100 in flight':<34}{p:>9,.0f} c/s{t:>9,.0f} c/s{t / p:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
