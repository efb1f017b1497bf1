"""Pieces shared by the Python peers: command line, stop handling, workload drivers, result JSON.

Every peer module (``grpc_peer``, ``aiorpc_peer``, ``xmlrpc_peer``, ``pyro5_peer``) is run as::

    python -m benchmarks.peers.<peer> server --port 0
    python -m benchmarks.peers.<peer> client --address 127.0.0.1:PORT --workload W --duration S [...]

and follows the contract described in ``README.md`` beside this file.  This module holds
everything that must behave identically across peers (percentiles, warm-up, stop rules,
the one-line JSON), so that only the RPC calls differ from peer to peer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

HOST = "127.0.0.1"
WORKLOADS = ("seq", "pipelined", "payload", "fanin")

DEFAULT_INFLIGHT = {"pipelined": 64, "fanin": 16}
DEFAULT_CONNECTIONS = 8
DEFAULT_PAYLOAD = 65536
DEFAULT_MAX_CALLS = 2_000_000

WARMUP_SECONDS = 0.2
WARMUP_CALLS = 200

#: A call that has not answered after this many seconds fails (counted in "errors").
CALL_TIMEOUT = 10.0
#: Opening the connections must not take longer than this.
CONNECT_TIMEOUT = 10.0
#: The client is killed (after printing an error JSON) at duration + this many seconds.
WATCHDOG_GRACE = 12.0
#: A run is aborted once this many calls have failed.
MAX_ERRORS = 1000
#: Once a server has been asked to stop, it is hard-exited after this many seconds.
SERVER_STOP_GRACE = 3.0

log = logging.getLogger("benchmarks.peers")


# --------------------------------------------------------------------------- command line


def parse_args(system: str, argv: Optional[List[str]] = None,
               add_server_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
               add_client_args: Optional[Callable[[argparse.ArgumentParser], None]] = None,
               ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.peers.{system}_peer",
                                     description=f"{system} peer of the fastrpc cross-library benchmark")
    sub = parser.add_subparsers(dest="role", required=True)

    srv = sub.add_parser("server", help="serve add(a, b) and echo(data) on 127.0.0.1")
    srv.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: ephemeral)")
    if add_server_args:
        add_server_args(srv)

    cli = sub.add_parser("client", help="run one workload against a server and print one JSON line")
    cli.add_argument("--address", required=True, help="HOST:PORT printed by the server's READY line")
    cli.add_argument("--workload", required=True, choices=WORKLOADS)
    cli.add_argument("--duration", type=float, required=True, help="measured seconds (after warm-up)")
    cli.add_argument("--inflight", type=int, default=None,
                     help="calls in flight per connection (pipelined: 64, fanin: 16)")
    cli.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                     help="connections for fanin (default 8)")
    cli.add_argument("--payload-size", type=int, default=DEFAULT_PAYLOAD,
                     help="bytes echoed one way by the payload workload (default 65536)")
    cli.add_argument("--max-calls", type=int, default=DEFAULT_MAX_CALLS,
                     help="stop after this many measured calls (default 2,000,000)")
    if add_client_args:
        add_client_args(cli)

    args = parser.parse_args(argv)
    if args.role == "client":
        if args.inflight is None:
            args.inflight = DEFAULT_INFLIGHT.get(args.workload, 1)
        for name in ("inflight", "connections", "max_calls"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
        if args.payload_size < 0:
            parser.error("--payload-size must not be negative")
        if not args.duration > 0:
            parser.error("--duration must be positive")
    return args


def setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def split_address(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad --address {address!r}: expected HOST:PORT")
    return host, int(port)


# --------------------------------------------------------------------------- server side


def print_ready(port: int) -> None:
    """The one line a server prints on stdout, once it accepts connections."""
    sys.stdout.write(f"READY {HOST}:{port}\n")
    sys.stdout.flush()


def _hard_exit_later(seconds: float = SERVER_STOP_GRACE) -> None:
    """Make sure the process is gone soon even if a graceful shutdown hangs."""

    def _bye() -> None:
        log.warning("graceful shutdown took more than %.1fs; exiting now", seconds)
        sys.stderr.flush()
        os._exit(0)

    t = threading.Timer(seconds, _bye)
    t.daemon = True
    t.start()


def watch_stdin(on_eof: Callable[[], None]) -> None:
    """Call ``on_eof`` (from a daemon thread) once standard input reaches end-of-file."""

    def _watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass  # no usable stdin counts as closed
        log.info("stdin reached EOF")
        on_eof()

    threading.Thread(target=_watch, name="stdin-watch", daemon=True).start()


def wait_for_stop() -> None:
    """Block the main thread until SIGTERM/SIGINT arrives or stdin reaches EOF."""
    stop = threading.Event()

    def _on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    watch_stdin(stop.set)
    while not stop.wait(0.5):  # a timed wait lets the signal handler run promptly
        pass
    _hard_exit_later()


async def wait_for_stop_async() -> None:
    """Like :func:`wait_for_stop`, inside a running event loop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def _eof() -> None:
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # loop already closed
            pass

    watch_stdin(_eof)
    await stop.wait()
    _hard_exit_later()


# --------------------------------------------------------------------------- event loop choice


def pick_loop(want: str) -> str:
    """``"uvloop"`` when it is asked for (or ``"auto"``) and importable, else ``"asyncio"``."""
    if want == "asyncio":
        return "asyncio"
    try:
        import uvloop  # type: ignore  # noqa: F401
    except ImportError:
        if want == "uvloop":
            raise
        return "asyncio"
    return "uvloop"


def add_loop_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--loop", default="auto", choices=("auto", "uvloop", "asyncio"),
                   help="event loop (auto: uvloop when installed, else asyncio)")


def run_async(main: Callable[[], Awaitable[Any]], want: str = "auto") -> Tuple[Any, str]:
    """Run ``main()`` on uvloop when asked for / available, else on plain asyncio."""
    if want in ("auto", "uvloop"):
        try:
            import uvloop  # type: ignore
        except ImportError:
            if want == "uvloop":
                raise
        else:
            if hasattr(uvloop, "run"):
                return uvloop.run(main()), "uvloop"
            uvloop.install()
            return asyncio.run(main()), "uvloop"
    return asyncio.run(main()), "asyncio"


# --------------------------------------------------------------------------- result JSON

_emit_lock = threading.Lock()
_emitted = False


def percentile_us(sorted_ns: List[int], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least q of the samples at or below it)."""
    if not sorted_ns:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000.0


def make_result(system: str, workload: str, *, latencies_ns: Optional[List[int]] = None,
                elapsed_ns: int = 0, payload_bytes: int = 0, errors: int = 0,
                note: Optional[str] = None, error: Optional[str] = None,
                extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    lat = sorted(latencies_ns or ())
    calls = len(lat)
    elapsed_s = elapsed_ns / 1e9 if calls else 0.0
    result: Dict[str, Any] = {
        "system": system,
        "workload": workload,
        "calls": calls,
        "elapsed_s": round(elapsed_s, 6),
        "calls_per_s": round(calls / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p50_us": round(percentile_us(lat, 0.50), 1),
        "p99_us": round(percentile_us(lat, 0.99), 1),
        "payload_bytes": payload_bytes if workload == "payload" else 0,
        "errors": errors,
        "note": note,
        "error": error,
    }
    if extra:
        result.update(extra)
    return result


def emit(result: Dict[str, Any]) -> bool:
    """Print the single JSON line (only the first call in a process prints anything)."""
    global _emitted
    with _emit_lock:
        if _emitted:
            return False
        _emitted = True
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        return True


def start_watchdog(system: str, workload: str, duration: float,
                   extra: Optional[Dict[str, Any]] = None) -> None:
    """Guarantee the client ends within duration + WATCHDOG_GRACE seconds, printing an error JSON."""
    limit = duration + WATCHDOG_GRACE

    def _fire() -> None:
        emit(make_result(system, workload, extra=extra,
                         error=f"client did not finish within {limit:.1f}s (duration + "
                               f"{WATCHDOG_GRACE:.0f}s); aborted by the watchdog"))
        sys.stderr.flush()
        os._exit(0)

    t = threading.Timer(limit, _fire)
    t.daemon = True
    t.start()


def finish(result: Dict[str, Any]) -> None:
    """Print the result and leave at once: no interpreter teardown that could hang."""
    emit(result)
    sys.stderr.flush()
    os._exit(0)


# --------------------------------------------------------------------------- workload shape


class Plan:
    """How a workload maps onto connections for one system."""

    def __init__(self, args: argparse.Namespace, system: str, multiplexed: bool, kind: str):
        workload = args.workload
        if workload in ("seq", "payload"):
            conns, per_conn = 1, 1
        elif workload == "pipelined":
            conns, per_conn = 1, args.inflight
        else:  # fanin
            conns, per_conn = args.connections, args.inflight
        self.note: Optional[str] = None
        if not multiplexed and per_conn > 1:
            self.note = (f"{system} cannot have several calls in flight on one connection: "
                         f"{workload} runs {conns * per_conn} {kind}, each with its own connection "
                         f"and one call in flight ({conns * per_conn} calls outstanding in total)")
            conns, per_conn = conns * per_conn, 1
        self.connections = conns
        self.per_connection = per_conn
        self.workers = conns * per_conn
        self.method = "echo" if workload == "payload" else "add"
        self.payload = os.urandom(args.payload_size) if workload == "payload" else b""


class _Phase:
    """Shared stop rule of one phase: a deadline and a cap on calls started."""

    def __init__(self, seconds: float, max_calls: int):
        self.start_ns = time.monotonic_ns()
        self.deadline_ns = self.start_ns + int(seconds * 1e9)
        self.max_calls = max_calls
        self._started = itertools.count()  # next() on it is atomic under the GIL
        self.stopped = False
        #: calls started in this phase (approximate with threads; used to
        #: divide the server's CPU time by every call it served)
        self.taken = 0

    def take(self) -> bool:
        if (not self.stopped and time.monotonic_ns() < self.deadline_ns
                and next(self._started) < self.max_calls):
            self.taken += 1
            return True
        return False


class _Errors:
    def __init__(self) -> None:
        self.count = 0
        self.first: Optional[str] = None
        self.aborted = False
        self._lock = threading.Lock()

    def add(self, what: str, phase: _Phase) -> None:
        with self._lock:
            self.count += 1
            if self.first is None:
                self.first = what
            if self.count >= MAX_ERRORS:
                self.aborted = True
                phase.stopped = True


def describe(exc: BaseException) -> str:
    """One line about a failed call (gRPC errors: status code and details, not the long repr)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        try:
            return f"{type(exc).__name__}: {code().name}: {details()}"
        except Exception:  # noqa: BLE001
            pass
    return f"{type(exc).__name__}: {exc}"


def _check_add(i: int, got: Any) -> Optional[str]:
    return None if got == i + 1 else f"add({i}, 1) returned {got!r}, expected {i + 1}"


def _check_echo(payload: bytes, got: Any) -> Optional[str]:
    if isinstance(got, (bytes, bytearray, memoryview)) and bytes(got) == payload:
        return None
    return (f"echo of {len(payload)} bytes returned a {type(got).__name__}"
            f"{' of %d bytes' % len(got) if hasattr(got, '__len__') else ''} that differs")


def _finish_result(system: str, args: argparse.Namespace, plan: Plan, lat_lists: List[List[int]],
                   elapsed_ns: int, errors: _Errors, extra: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    latencies = [x for lst in lat_lists for x in lst]
    error = None
    if errors.aborted:
        error = f"aborted after {errors.count} failed calls; first: {errors.first}"
    elif not latencies:
        error = f"no call succeeded; first failure: {errors.first}" if errors.first else "no call completed"
    note = plan.note
    if errors.count and not errors.aborted and latencies:
        note = ((note + "; ") if note else "") + f"first failed call: {errors.first}"
    return make_result(system, args.workload, latencies_ns=latencies, elapsed_ns=elapsed_ns,
                       payload_bytes=args.payload_size, errors=errors.count, note=note,
                       error=error, extra=extra)


# --------------------------------------------------------------------------- thread driver


def run_threaded(system: str, args: argparse.Namespace, connect: Callable[[], Any],
                 extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run a workload with one thread per connection and one call in flight per thread.

    ``connect()`` runs inside the worker thread and returns an object with ``add(a, b)``,
    ``echo(data)`` and ``close()`` (already connected: a failure there is a setup error).
    """
    plan = Plan(args, system, multiplexed=False, kind="threads")
    n = plan.workers
    barrier = threading.Barrier(n + 1)
    phases: Dict[str, _Phase] = {}
    setup_errors: List[str] = []
    lat_lists: List[List[int]] = [[] for _ in range(n)]
    last_done = [0] * n
    errors = _Errors()
    warm_errors = _Errors()  # failures during warm-up are not counted, unless they abort the run
    payload = plan.payload

    def loop(idx: int, conn: Any, phase: _Phase, record: Optional[List[int]], errs: _Errors) -> None:
        i = 0
        mono = time.monotonic_ns
        add = conn.add
        echo = conn.echo
        is_add = plan.method == "add"
        while phase.take():
            t0 = mono()
            try:
                if is_add:
                    got = add(i, 1)
                    bad = None if got == i + 1 else _check_add(i, got)
                else:
                    got = echo(payload)
                    bad = None if got == payload else _check_echo(payload, got)
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                bad = describe(exc)
            t1 = mono()
            i += 1
            if bad is None:
                if record is not None:
                    record.append(t1 - t0)
                    last_done[idx] = t1
            else:
                errs.add(bad, phase)

    def worker(idx: int) -> None:
        conn = None
        try:
            conn = connect()
        except Exception as exc:  # noqa: BLE001
            setup_errors.append(f"connecting to {args.address} failed: {describe(exc)}")
        try:
            barrier.wait()  # 1: everyone connected (or failed)
            barrier.wait()  # 2: warm-up phase set
            loop(idx, conn, phases["warm"], None, warm_errors)
            barrier.wait()  # 3: warm-up over
            barrier.wait()  # 4: measured phase set
            loop(idx, conn, phases["run"], lat_lists[idx], errors)
        except threading.BrokenBarrierError:
            pass
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass

    threads = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}", daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=CONNECT_TIMEOUT + 5)
    except threading.BrokenBarrierError:
        setup_errors.append(f"opening {n} connections took more than {CONNECT_TIMEOUT + 5:.0f}s")
    if setup_errors:
        barrier.abort()
        return make_result(system, args.workload, note=plan.note, extra=extra,
                           error=f"{len(setup_errors)} of {n} connections failed; first: {setup_errors[0]}")
    phases["warm"] = _Phase(WARMUP_SECONDS, max(WARMUP_CALLS, n))
    barrier.wait()
    barrier.wait()
    if warm_errors.aborted:
        barrier.abort()
        return make_result(system, args.workload, note=plan.note, extra=extra,
                           error=f"warm-up aborted after {warm_errors.count} failed calls; "
                                 f"first: {warm_errors.first}")
    run = phases["run"] = _Phase(args.duration, args.max_calls)
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = max(last_done) - run.start_ns if any(last_done) else 0
    result = _finish_result(system, args, plan, lat_lists, elapsed, errors, extra)
    result["warmup_calls"] = phases["warm"].taken
    return result


# --------------------------------------------------------------------------- asyncio driver


async def run_asyncio(system: str, args: argparse.Namespace, connect: Callable[[], Awaitable[Any]],
                      multiplexed: bool, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run a workload with asyncio tasks.

    ``await connect()`` returns a connected object with ``async add(a, b)``, ``async echo(data)``
    and ``async close()``.  When ``multiplexed`` is true, ``per_connection`` tasks share one
    connection; otherwise each task gets its own connection.
    """
    plan = Plan(args, system, multiplexed=multiplexed, kind="asyncio tasks")
    errors = _Errors()
    payload = plan.payload
    is_add = plan.method == "add"

    try:
        conns = await asyncio.wait_for(
            asyncio.gather(*(connect() for _ in range(plan.connections))), CONNECT_TIMEOUT + 5)
    except Exception as exc:  # noqa: BLE001
        return make_result(system, args.workload, note=plan.note, extra=extra,
                           error=f"connecting to {args.address} failed: {describe(exc)}")

    async def loop(conn: Any, phase: _Phase, record: Optional[List[int]], errs: _Errors) -> int:
        i = 0
        last = 0
        mono = time.monotonic_ns
        add = conn.add
        echo = conn.echo
        while phase.take():
            t0 = mono()
            try:
                if is_add:
                    got = await add(i, 1)
                    bad = None if got == i + 1 else _check_add(i, got)
                else:
                    got = await echo(payload)
                    bad = None if got == payload else _check_echo(payload, got)
            except Exception as exc:  # noqa: BLE001
                bad = describe(exc)
            t1 = mono()
            i += 1
            if bad is None:
                if record is not None:
                    record.append(t1 - t0)
                    last = t1
            else:
                errs.add(bad, phase)
        return last

    try:
        warm = _Phase(WARMUP_SECONDS, max(WARMUP_CALLS, plan.workers))
        warm_errors = _Errors()  # failures during warm-up are not counted, unless they abort the run
        await asyncio.gather(*(loop(c, warm, None, warm_errors)
                               for c in conns for _ in range(plan.per_connection)))
        if warm_errors.aborted:
            return make_result(system, args.workload, note=plan.note, extra=extra,
                               error=f"warm-up aborted after {warm_errors.count} failed calls; "
                                     f"first: {warm_errors.first}")
        lat_lists: List[List[int]] = [[] for _ in range(plan.workers)]
        run = _Phase(args.duration, args.max_calls)
        lasts = await asyncio.gather(*(loop(c, run, lat_lists[k * plan.per_connection + j], errors)
                                       for k, c in enumerate(conns) for j in range(plan.per_connection)))
    finally:
        try:
            await asyncio.wait_for(asyncio.gather(*(c.close() for c in conns), return_exceptions=True), 3)
        except Exception:  # noqa: BLE001
            pass
    elapsed = max(lasts) - run.start_ns if any(lasts) else 0
    result = _finish_result(system, args, plan, lat_lists, elapsed, errors, extra)
    result["warmup_calls"] = warm.taken
    return result
