"""``fastrpc demo``: a server and clients on loopback, with a short benchmark.

The demo starts the example service in a server process, calls it from the
sync :class:`~fastrpc.Client` and the :class:`~fastrpc.AsyncClient`, and
prints calls/s and p50/p99 latency for sequential calls and for 64 calls in
flight.  Beside it, as the floor no RPC layer can beat, it runs a raw
asyncio echo server (a ``Protocol`` that writes back what it reads) fed the
very bytes of a fastrpc request.  Each implementation of the wire layer
(Cython, pure Python) is measured in its own processes.

Internal sub-commands (used by the demo itself): ``server``, ``echo-server``
and ``measure``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

INFLIGHT = 64
# Children run from the folder that holds the fastrpc package this process
# imported (``python -m`` puts the working directory first on sys.path), so
# they run the same build: the installed one, not a source checkout's.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Arith:
    """The example service."""

    def multiply(self, a: int, b: int) -> int:
        return a * b

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, value: Any) -> Any:
        return value


# --------------------------------------------------------------------------
# server processes


def _serve(use_uvloop: bool) -> None:
    import fastrpc

    server = fastrpc.Server()
    server.register(Arith())

    async def main() -> None:
        address = await server.start("tcp://127.0.0.1:0")
        print(address, flush=True)
        await _until_stdin_closes()
        await server.shutdown(grace=1)

    _run(main(), use_uvloop)


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _echo_server(use_uvloop: bool) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(_Echo, "127.0.0.1", 0)
        print(f"tcp://127.0.0.1:{srv.sockets[0].getsockname()[1]}", flush=True)
        await _until_stdin_closes()
        srv.close()

    _run(main(), use_uvloop)


async def _until_stdin_closes() -> None:
    # The parent holds our stdin; when it exits (or closes it) we stop, so
    # no server process can outlive the demo.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


def _run(coro: Any, use_uvloop: bool) -> Any:
    from ..transport.loop import new_event_loop

    loop = new_event_loop(use_uvloop)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class _Child:
    """A server child process; prints its address on its first line."""

    def __init__(self, args: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastrpc.cli.demo"] + args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=_PACKAGE_ROOT,
        )
        line = self.proc.stdout.readline().decode().strip() if self.proc.stdout else ""
        if not line:
            self.stop()
            raise RuntimeError(f"server process {args} did not start")
        self.address = line

    def stop(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


# --------------------------------------------------------------------------
# measurements


def _summary(name: str, impl: str, latencies_ns: List[int], elapsed: float) -> Dict[str, Any]:
    lat = sorted(latencies_ns)
    n = len(lat)
    return {
        "name": name,
        "impl": impl,
        "calls": n,
        "calls_per_s": n / elapsed if elapsed > 0 else 0.0,
        "p50_us": lat[n // 2] / 1000 if n else 0.0,
        "p99_us": lat[min(n - 1, (n * 99) // 100)] / 1000 if n else 0.0,
    }


def _host_port(address: str) -> tuple:
    host, port = address[len("tcp://") :].rsplit(":", 1)
    return host, int(port)


class _FloorClient(asyncio.Protocol):
    """The least an asyncio client can do per call: one write of the frame
    and one future, resolved when the echo server has sent the frame back.

    Echoes come back in order, so every ``size`` bytes received complete the
    oldest call outstanding: no parsing, no ids, no codec.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.waiters: "collections.deque[asyncio.Future]" = collections.deque()
        self.pending = 0
        self.size = 1

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def call(self, frame: bytes) -> "asyncio.Future[None]":
        fut = self.loop.create_future()
        self.waiters.append(fut)
        self.transport.write(frame)
        return fut

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        completed, self.pending = divmod(self.pending, self.size)
        pop = self.waiters.popleft
        for _ in range(completed):
            pop().set_result(None)


async def _floor(address: str, frame: bytes, inflight: int, duration: float) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = _host_port(address)
    transport, proto = await loop.create_connection(_FloorClient, host, port)
    proto.size = len(frame)
    lat: List[int] = []
    clock = time.perf_counter_ns
    call = proto.call

    async def worker(until: float) -> None:
        while time.perf_counter() < until:
            for _ in range(20):
                t0 = clock()
                await call(frame)
                lat.append(clock() - t0)

    await asyncio.gather(*[worker(time.perf_counter() + 0.1) for _ in range(inflight)])  # warm-up
    lat.clear()
    start = time.perf_counter()
    await asyncio.gather(*[worker(start + duration) for _ in range(inflight)])
    elapsed = time.perf_counter() - start
    transport.close()
    name = "sequential" if inflight == 1 else f"{inflight} in flight"
    return _summary(f"raw echo floor, {name}", "-", lat, elapsed)


async def _async_sequential(client: Any, duration: float, impl: str) -> Dict[str, Any]:
    lat: List[int] = []
    clock = time.perf_counter_ns
    call = client.call
    start = time.perf_counter()
    until = start + duration
    while time.perf_counter() < until:
        for _ in range(100):
            t0 = clock()
            await call("Arith.multiply", 7, 8)
            lat.append(clock() - t0)
    return _summary("AsyncClient, sequential", impl, lat, time.perf_counter() - start)


async def _async_inflight(client: Any, duration: float, impl: str) -> Dict[str, Any]:
    lat: List[int] = []
    clock = time.perf_counter_ns
    call = client.call
    start = time.perf_counter()
    until = start + duration

    async def worker() -> None:
        while time.perf_counter() < until:
            for _ in range(20):
                t0 = clock()
                await call("Arith.multiply", 7, 8)
                lat.append(clock() - t0)

    await asyncio.gather(*[worker() for _ in range(INFLIGHT)])
    return _summary(f"AsyncClient, {INFLIGHT} in flight", impl, lat, time.perf_counter() - start)


def _sync_sequential(client: Any, duration: float, impl: str) -> Dict[str, Any]:
    lat: List[int] = []
    clock = time.perf_counter_ns
    call = client.call
    start = time.perf_counter()
    until = start + duration
    while time.perf_counter() < until:
        for _ in range(100):
            t0 = clock()
            call("Arith.multiply", 7, 8)
            lat.append(clock() - t0)
    return _summary("Client (sync), sequential", impl, lat, time.perf_counter() - start)


def _measure(address: str, duration: float, use_uvloop: bool) -> List[Dict[str, Any]]:
    """Run the fastrpc workloads against ``address`` (in this process)."""
    import fastrpc

    impl = "cython" if fastrpc.EXTENSIONS_ACTIVE else "python"
    rows = []
    with fastrpc.Client(address) as client:
        for _ in range(200):
            client.call("Arith.multiply", 7, 8)  # warm-up
        rows.append(_sync_sequential(client, duration, impl))

    async def run_async() -> None:
        async with fastrpc.AsyncClient(address) as client:
            for _ in range(200):
                await client.call("Arith.multiply", 7, 8)
            rows.append(await _async_sequential(client, duration, impl))
            rows.append(await _async_inflight(client, duration, impl))

    _run(run_async(), use_uvloop)
    return rows


def _request_frame() -> bytes:
    from ..wire._framing_py import FrameWriter

    w = FrameWriter()
    w.write_request(1, 2, [7, 8])
    return w.take()


# --------------------------------------------------------------------------
# orchestration


def _impl_env(impl: str) -> Dict[str, str]:
    env = dict(os.environ)
    if impl == "python":
        env["FASTRPC_NO_EXTENSIONS"] = "1"
    else:
        env.pop("FASTRPC_NO_EXTENSIONS", None)
    return env


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _format(rows: List[Dict[str, Any]], floors: Dict[int, Dict[str, Any]]) -> str:
    head = f"{'workload':<30} {'wire impl':<9} {'calls/s':>10} {'p50 us':>8} {'p99 us':>8} {'vs floor':>9}"
    out = [head, "-" * len(head)]
    for r in rows:
        floor = floors.get(INFLIGHT if "in flight" in r["name"] else 1)
        ratio = f"{r['calls_per_s'] / floor['calls_per_s']:.2f}x" if floor and floor["calls_per_s"] else "-"
        out.append(
            f"{r['name']:<30} {r['impl']:<9} {r['calls_per_s']:>10,.0f} {r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {ratio:>9}"
        )
    return "\n".join(out)


def demo(duration: float = 1.0, impls: Optional[List[str]] = None, json_path: Optional[str] = None) -> int:
    """Run the demo and print the table; returns a process exit code."""
    import fastrpc

    use_uvloop = _uvloop_available()
    if impls is None:
        impls = ["cython", "python"] if fastrpc.EXTENSIONS_ACTIVE else ["python"]
    print(
        f"fastrpc {fastrpc.__version__} demo: server and client in separate processes on loopback, "
        f"{'uvloop' if use_uvloop else 'asyncio'} event loop, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    if not fastrpc.EXTENSIONS_ACTIVE:
        print("note: the Cython extensions are not active here; only the pure-Python build is measured")

    # The example: one call from each client, shown plainly.
    server = _Child(["server"] + (["--uvloop"] if use_uvloop else []), env=_impl_env(impls[0]))
    try:
        with fastrpc.Client(server.address) as client:
            print(f"server at {server.address}; Client: Arith.multiply(7, 8) = {client.call('Arith.multiply', 7, 8)}")

        async def one() -> Any:
            async with fastrpc.AsyncClient(server.address) as c:
                return await c.proxy("Arith").multiply(7, 8)

        print(f"AsyncClient: await client.proxy('Arith').multiply(7, 8) = {_run(one(), use_uvloop)}")
    finally:
        server.stop()
    print()

    rows: List[Dict[str, Any]] = []
    floors: Dict[int, Dict[str, Any]] = {}
    echo = _Child(["echo-server"] + (["--uvloop"] if use_uvloop else []))
    try:
        frame = _request_frame()
        for inflight in (1, INFLIGHT):
            floors[inflight] = _run(_floor(echo.address, frame, inflight, duration), use_uvloop)
            rows.append(floors[inflight])
    finally:
        echo.stop()

    for impl in impls:
        env = _impl_env(impl)
        server = _Child(["server"] + (["--uvloop"] if use_uvloop else []), env=env)
        try:
            cmd = [sys.executable, "-m", "fastrpc.cli.demo", "measure", server.address, "--duration", str(duration)]
            if use_uvloop:
                cmd.append("--uvloop")
            out = subprocess.run(
                cmd, env=env, stdout=subprocess.PIPE, check=True, timeout=60 + 10 * duration, cwd=_PACKAGE_ROOT
            )
            rows.extend(json.loads(out.stdout))
        finally:
            server.stop()

    print(_format(rows, floors))
    print(
        "\nfloor: a raw asyncio Protocol echo server fed the bytes of one fastrpc request; "
        "'vs floor' compares calls/s with the floor row of the same concurrency."
    )
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"rows": rows, "python": platform.python_version(), "uvloop": use_uvloop}, f, indent=2)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastrpc.cli.demo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("server", "echo-server"):
        p = sub.add_parser(name)
        p.add_argument("--uvloop", action="store_true")
    p = sub.add_parser("measure")
    p.add_argument("address")
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "server":
        _serve(args.uvloop)
    elif args.cmd == "echo-server":
        _echo_server(args.uvloop)
    else:
        print(json.dumps(_measure(args.address, args.duration, args.uvloop)))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["demo", "Arith"]
