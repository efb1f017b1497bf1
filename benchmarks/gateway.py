"""The HTTP/1.1 gateway against aiohttp's server, on one small JSON call.

Usage::

    python -m benchmarks.gateway            # 6 rounds of 3 s each
    python -m benchmarks.gateway --quick    # CI: 2 rounds of 1.5 s (< 15 s)

Both servers answer ``POST /Bench.add`` with the JSON array ``[1, 2]`` as
body by the JSON ``3``: fastrpc's gateway with a registered ``Bench.add``,
aiohttp with a route that reads the JSON array and returns the sum as JSON.
Each runs on uvloop in its own process (started by this script with
``--serve``).  The client is the same for both: an aiohttp ``ClientSession``
in a further process, on uvloop, with a keep-alive connector of
``--concurrency`` connections and as many workers, each sending one request
at a time; ``--clients`` such processes (2) run at once and their rates add
up.  Rounds alternate between the two servers (fastrpc first in even
rounds, aiohttp first in odd ones); the report gives each round's
requests/s, the medians and their ratio.  The client is Python too and may
be what limits both: the ratio is then closer to 1 than the servers' own.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = b"[1, 2]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- servers (in their own processes) ---------------------------------------------------


def serve_fastrpc(port: int) -> None:
    import fastrpc

    class Bench:
        def add(self, a: int, b: int) -> int:
            return a + b

    server = fastrpc.Server(protocols=["fastrpc", "http"])
    server.register(Bench())
    server.run(f"tcp://127.0.0.1:{port}", use_uvloop=True)


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def add(request: web.Request) -> web.Response:
        a, b = json.loads(await request.read())
        return web.json_response(a + b)

    app = web.Application()
    app.router.add_post("/Bench.add", add)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- the client ------------------------------------------------------------------------------


def measure(port: int, seconds: float, concurrency: int) -> float:
    """Requests/s against the server on ``port`` (this process, uvloop)."""
    import asyncio

    import aiohttp
    import uvloop

    async def main() -> float:
        url = f"http://127.0.0.1:{port}/Bench.add"
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        headers = {"Content-Type": "application/json"}
        done = 0
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker(stop: float) -> None:
                nonlocal done
                loop = asyncio.get_running_loop()
                while loop.time() < stop:
                    async with session.post(url, data=BODY, headers=headers) as resp:
                        if resp.status != 200 or await resp.read() != b"3":
                            raise RuntimeError(f"bad answer: {resp.status}")
                    done += 1

            loop = asyncio.get_running_loop()
            # warm up: connections open, caches filled
            await asyncio.gather(*(worker(loop.time() + 0.2) for _ in range(concurrency)))
            done = 0
            start = loop.time()
            await asyncio.gather(*(worker(start + seconds) for _ in range(concurrency)))
            return done / (loop.time() - start)

    return uvloop.run(main())


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 1.5 s (CI)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=32, help="connections (and workers) per client process")
    p.add_argument("--clients", type=int, default=2, help="client processes at once (their rates add up)")
    p.add_argument("--serve", choices=["fastrpc", "aiohttp"], help=argparse.SUPPRESS)
    p.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        (serve_fastrpc if args.serve == "fastrpc" else serve_aiohttp)(args.port)
        return 0
    if args.measure:
        print(measure(args.measure, args.seconds, args.concurrency))
        return 0
    if args.quick:
        args.rounds, args.seconds = 2, 1.5
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs: Dict[str, subprocess.Popen] = {}
    ports: Dict[str, int] = {}
    try:
        for name in ("fastrpc", "aiohttp"):
            ports[name] = _free_port()
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.gateway", "--serve", name, "--port", str(ports[name])],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        for name in procs:
            _wait_port(ports[name], procs[name])
        rates: Dict[str, List[float]] = {"fastrpc": [], "aiohttp": []}
        for r in range(args.rounds):
            order = ["fastrpc", "aiohttp"] if r % 2 == 0 else ["aiohttp", "fastrpc"]
            for name in order:
                clients = [
                    subprocess.Popen(
                        [sys.executable, "-m", "benchmarks.gateway", "--measure", str(ports[name]),
                         "--seconds", str(args.seconds), "--concurrency", str(args.concurrency)],
                        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                    )
                    for _ in range(args.clients)
                ]
                total = 0.0
                for c in clients:
                    out, _ = c.communicate(timeout=args.seconds + 60)
                    if c.returncode:
                        raise RuntimeError(f"the client against {name} failed")
                    total += float(out.strip())
                rates[name].append(total)
            print(f"round {r + 1}: fastrpc {rates['fastrpc'][-1]:,.0f} req/s, aiohttp {rates['aiohttp'][-1]:,.0f} req/s", flush=True)
        f, a = statistics.median(rates["fastrpc"]), statistics.median(rates["aiohttp"])
        wins = sum(x > y for x, y in zip(rates["fastrpc"], rates["aiohttp"]))
        print(f"median: fastrpc gateway {f:,.0f} req/s, aiohttp {a:,.0f} req/s: ratio {f / a:.2f} "
              f"(fastrpc ahead in {wins} of {args.rounds} rounds; {args.clients} client processes x {args.concurrency} keep-alive connections, "
              f"{args.seconds:g} s rounds, aiohttp client)")
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
