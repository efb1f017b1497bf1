"""What compression does to W3 (large payloads): latency and bytes on the
wire, compressible and incompressible, with and without it, in one run.

Usage::

    python -m benchmarks.compression            # full run (~1 min)
    python -m benchmarks.compression --quick    # CI smoke run

One server process on loopback (compression "auto": every codec
installed) echoes a payload; an ``AsyncClient`` per setting (no
compression, zstd, lz4) calls it one call at a time, in rounds that
alternate the settings.  Payloads of 64 KiB: *compressible* (a list of
log-like records as msgpack: strings, ints, repeated keys) and
*incompressible* (random bytes).  Reported per setting and payload: p50
latency, and the bytes the server read and wrote per call, against the
uncompressed run.  Loopback moves bytes at memory speed, so this shows the
CPU side of the trade; on a real network the bytes saved are time saved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

import fastrpc
from fastrpc.wire import compression as C

from benchmarks.harness import Running, Server, _py

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


class Echo:
    def echo(self, value: Any) -> Any:
        return value


def serve(port: int) -> None:
    """The server process (``harness.Running``'s protocol)."""

    async def main() -> None:
        from fastrpc.middleware.metrics import ServerMetrics

        try:
            from prometheus_client import CollectorRegistry

            metrics = ServerMetrics(CollectorRegistry())
        except ImportError:  # pragma: no cover - the test extra has it
            metrics = None
        server = fastrpc.Server(metrics=metrics, compression="auto")
        server.register(Echo())

        def wire_bytes() -> List[int]:
            return [metrics.received_bytes, metrics.sent_bytes] if metrics is not None else [0, 0]

        server.register_function(wire_bytes, "Stats.bytes")
        print("READY", await server.start(f"tcp://127.0.0.1:{port}"), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.shutdown(grace=0)

    if uvloop is not None:
        uvloop.install()
    asyncio.run(main())


def payloads() -> Dict[str, Any]:
    rng = random.Random(7)
    records = []
    size = 0
    while size < 64 * 1024:
        rec = {
            "ts": 1_700_000_000 + rng.randrange(10**6),
            "level": rng.choice(["INFO", "WARN", "DEBUG"]),
            "service": rng.choice(["users", "orders", "billing"]),
            "message": f"request {rng.randrange(10**6)} handled in {rng.randrange(100)} ms",
            "ok": rng.random() < 0.9,
        }
        records.append(rec)
        size += len(fastrpc.packb(rec))
    return {"compressible": records, "incompressible": os.urandom(64 * 1024)}


async def run_setting(client: fastrpc.AsyncClient, value: Any, seconds: float) -> Tuple[List[float], int]:
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        await client.call("Echo.echo", value)
        out.append(time.perf_counter() - t)
    return out, len(out)


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short rounds (CI smoke run)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.port)
        return 0
    codecs = C.available()
    if not codecs:
        print("benchmarks.compression needs zstandard or lz4 (pip install fastrpc[zstd,lz4]); skipped")
        return 0
    seconds, rounds = (0.2, 2) if args.quick else (1.0, 5)
    proc = Running(Server("compression", _py("benchmarks.compression", "--serve")))
    try:
        address = proc.address
        loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        settings = ["none"] + codecs
        clients = {s: fastrpc.AsyncClient(address, compression=None if s == "none" else s) for s in settings}
        stats = fastrpc.AsyncClient(address)
        for c in list(clients.values()) + [stats]:
            loop.run_until_complete(c.connect())
        data = payloads()
        lat: Dict[Tuple[str, str], List[float]] = {(s, p): [] for s in settings for p in data}
        wire: Dict[Tuple[str, str], List[int]] = {(s, p): [0, 0] for s in settings for p in data}
        for r in range(rounds):
            order = settings if r % 2 == 0 else list(reversed(settings))
            for name in data:
                for s in order:
                    before = loop.run_until_complete(stats.call("Stats.bytes"))
                    got, n = loop.run_until_complete(run_setting(clients[s], data[name], seconds))
                    after = loop.run_until_complete(stats.call("Stats.bytes"))
                    lat[(s, name)] += got
                    w = wire[(s, name)]
                    w[0] += n
                    w[1] += (after[0] - before[0]) + (after[1] - before[1])
        for c in list(clients.values()) + [stats]:
            loop.run_until_complete(c.close())
        loop.close()
    finally:
        proc.stop()
    print(f"W3 with compression: 64 KiB payloads echoed, one call at a time ({fastrpc.IMPLEMENTATION} build; {rounds} alternating rounds of {seconds}s)")
    print(f"{'payload':<16}{'setting':<8}{'p50':>11}{'vs none':>9}{'bytes/call':>12}{'vs none':>9}")
    for name in data:
        base_p50 = statistics.median(lat[("none", name)])
        base_bytes = wire[("none", name)][1] / max(1, wire[("none", name)][0])
        for s in settings:
            p50 = statistics.median(lat[(s, name)])
            per_call = wire[(s, name)][1] / max(1, wire[(s, name)][0])
            print(f"{name:<16}{s:<8}{p50 * 1e6:>8.0f} us{p50 / base_p50:>8.2f}x{per_call:>12,.0f}{per_call / base_bytes:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
