"""``fastrpc bench TARGET Service.method ARGS...``: load a method and report
calls/s, latency percentiles, errors and a latency histogram.

One :class:`fastrpc.AsyncClient` per connection (``--connections``),
``--concurrency`` tasks spread over them in turn, each calling in a loop
until the run ends; uvloop when installed.  Calls that start during the
warm-up are not counted; a call's latency is the time its ``await`` took.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import fastrpc

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    call_arguments,
    check_method,
    rpc_failure,
    seconds_or_none,
    TARGET_FORMS,
)

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999))
HISTOGRAM_BUCKETS = 10
BAR_WIDTH = 40


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The event loop: uvloop when asked for, or (``auto``) when installed."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise CliError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Run:
    """The numbers of one run, shared by the tasks."""

    def __init__(self) -> None:
        self.latencies = array.array("q")  # ns, calls that succeeded after the warm-up
        self.errors: Dict[str, int] = {}
        self.done = 0  # every call that ended, warm-up included (the progress bar)
        self.started_at = 0.0
        self.measure_from = 0.0
        self.until = 0.0
        self.ended_at = 0.0


async def _worker(client: Any, method: str, args: List[Any], kwargs: Dict[str, Any], timeout: Optional[float],
                  metadata: Any, run: Run) -> None:
    clock = time.perf_counter
    record = run.latencies.append
    errors = run.errors
    measure_from, until = run.measure_from, run.until
    call = client.call
    while True:
        t0 = clock()
        if t0 >= until:
            return
        try:
            await call(method, *args, timeout=timeout, metadata=metadata, **kwargs)
        except fastrpc.RpcError as exc:
            run.done += 1
            if t0 >= measure_from:
                name = fastrpc.code_name(exc.code)
                errors[name] = errors.get(name, 0) + 1
            if exc.code == fastrpc.StatusCode.UNAVAILABLE:
                await asyncio.sleep(0.001)  # a connection down: do not spin
            continue
        run.done += 1
        if t0 >= measure_from:
            record(int((clock() - t0) * 1e9))


async def _progress(run: Run, stream: Any) -> None:
    width = 30
    total = run.until - run.started_at
    try:
        while True:
            now = time.perf_counter()
            elapsed = min(now - run.started_at, total)
            filled = int(width * elapsed / total) if total > 0 else width
            phase = "warm-up" if now < run.measure_from else "running"
            measured = max(now - run.measure_from, 1e-9)
            rate = len(run.latencies) / measured if now >= run.measure_from else 0.0
            errors = sum(run.errors.values())
            calls = len(run.latencies) if now >= run.measure_from else run.done
            stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {elapsed:5.1f}/{total:.1f}s {phase}  "
                f"{calls:,} calls  {rate:,.0f}/s  {errors:,} errors\x1b[K"
            )
            stream.flush()
            await asyncio.sleep(0.1)
    finally:
        stream.write("\r\x1b[K")
        stream.flush()


async def _bench(args: Any, positional: List[Any], keywords: Dict[str, Any], metadata: Any) -> Tuple[Run, List[str]]:
    timeout = seconds_or_none(args.timeout)
    clients = []
    try:
        for _ in range(args.connections):
            try:
                client = fastrpc.AsyncClient(args.target, connect_timeout=args.connect_timeout, timeout=timeout)
            except (ValueError, TypeError) as exc:
                raise CliError(f"bad target {args.target!r}: {exc}", hint=TARGET_FORMS) from None
            clients.append(client)
            try:
                await client.connect()
            except fastrpc.RpcError as exc:
                raise CliError(f"cannot reach {args.target}: {exc.message or exc}") from None
            except OSError as exc:
                raise CliError(f"cannot reach {args.target}: {exc.strerror or exc}") from None
        methods = list(clients[0].methods)
        # One call first: a method that fails at once fails the command, not a run.
        try:
            await clients[0].call(args.method, *positional, timeout=timeout, metadata=metadata, **keywords)
        except fastrpc.RpcError as exc:
            raise rpc_failure(exc, args.method, methods, args.target) from None
        run = Run()
        run.started_at = time.perf_counter()
        run.measure_from = run.started_at + args.warmup
        run.until = run.measure_from + args.duration
        show = args.progress if args.progress is not None else sys.stderr.isatty()
        bar = asyncio.ensure_future(_progress(run, sys.stderr)) if show else None
        try:
            await asyncio.gather(
                *(
                    _worker(clients[i % len(clients)], args.method, positional, keywords, timeout, metadata, run)
                    for i in range(args.concurrency)
                )
            )
        finally:
            run.ended_at = time.perf_counter()
            if bar is not None:
                bar.cancel()
                try:
                    await bar
                except asyncio.CancelledError:
                    pass
        return run, methods
    finally:
        for client in clients:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass


def _percentile(ordered: Any, q: float) -> float:
    # nearest rank
    n = len(ordered)
    return float(ordered[min(n - 1, max(0, math.ceil(q * n) - 1))])


def histogram(ordered: Any, buckets: int = HISTOGRAM_BUCKETS) -> List[Tuple[float, int]]:
    """``(upper bound ns, count)``: ``buckets`` of equal width from the fastest
    call to the 99.9th percentile, then one up to the slowest (when slower
    calls remain)."""
    n = len(ordered)
    if not n:
        return []
    lo, top, hi = ordered[0], _percentile(ordered, 0.999), ordered[-1]
    width = (top - lo) / buckets
    if width <= 0:
        return [(float(hi), n)]
    bounds = [lo + width * (i + 1) for i in range(buckets)]
    bounds[-1] = top
    if hi > top:
        bounds.append(float(hi))
    counts = [0] * len(bounds)
    import bisect

    prev = 0
    for i, b in enumerate(bounds):
        upto = bisect.bisect_right(ordered, b) if i < len(bounds) - 1 else n
        counts[i] = upto - prev
        prev = upto
    return list(zip(bounds, counts))


def summary(run: Run, args: Any) -> Dict[str, Any]:
    """The machine-readable result (what ``--json`` prints)."""
    ordered = sorted(run.latencies)
    n = len(ordered)
    elapsed = max(run.ended_at - run.measure_from, 1e-9)
    lat: Dict[str, Optional[float]] = {}
    if n:
        lat["min"] = round(ordered[0] / 1000, 3)
        lat["mean"] = round(sum(ordered) / n / 1000, 3)
        for name, q in PERCENTILES:
            lat[name] = round(_percentile(ordered, q) / 1000, 3)
        lat["max"] = round(ordered[-1] / 1000, 3)
    else:
        lat = {k: None for k in ["min", "mean"] + [p for p, _ in PERCENTILES] + ["max"]}
    errors = sum(run.errors.values())
    return {
        "target": args.target,
        "method": args.method,
        "connections": args.connections,
        "concurrency": args.concurrency,
        "duration_s": round(elapsed, 6),
        "warmup_s": args.warmup,
        "calls": n,
        "errors": errors,
        "error_codes": dict(sorted(run.errors.items())),
        "calls_per_s": round(n / elapsed, 1),
        "latency_us": lat,
        "histogram": [{"le_us": round(b / 1000, 3), "count": c} for b, c in histogram(ordered)],
        "implementation": "cython" if fastrpc.EXTENSIONS_ACTIVE else "python",
        "loop": args.loop_used,
    }


def _us(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.1f} us"


def render(result: Dict[str, Any]) -> str:
    """The human report: summary, latency distribution, histogram, errors."""
    mark = "\u220e" if (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "").startswith("utf") else "#"
    lat = result["latency_us"]
    out = [
        "Summary:",
        f"  Target:        {result['target']}",
        f"  Method:        {result['method']}",
        f"  Connections:   {result['connections']}",
        f"  Concurrency:   {result['concurrency']}",
        f"  Duration:      {result['duration_s']:.2f} s (after {result['warmup_s']:g} s of warm-up)",
        f"  Calls:         {result['calls']:,}",
        f"  Errors:        {result['errors']:,}",
        f"  Calls/s:       {result['calls_per_s']:,.1f}",
        f"  Wire / loop:   {result['implementation']} / {result['loop']}",
        "",
        "Latency:",
    ]
    for key, label in (("min", "min"), ("mean", "mean"), ("p50", "p50"), ("p90", "p90"), ("p99", "p99"),
                       ("p999", "p99.9"), ("max", "max")):
        out.append(f"  {label:<6} {_us(lat[key]):>12}")
    hist = result["histogram"]
    if hist:
        out += ["", "Latency histogram:"]
        most = max(h["count"] for h in hist) or 1
        labels = [_us(h["le_us"]) for h in hist]
        lw = max(len(x) for x in labels)
        cw = max(len(str(h["count"])) for h in hist) + 2
        for label, h in zip(labels, hist):
            bar = mark * int(round(BAR_WIDTH * h["count"] / most))
            out.append(f"  {label:>{lw}} {('[' + str(h['count']) + ']'):<{cw}} |{bar}")
    if result["error_codes"]:
        out += ["", "Errors:"]
        for name, count in result["error_codes"].items():
            out.append(f"  {name:<20} {count:,}")
    return "\n".join(out)


def bench(args: Any) -> int:
    """``fastrpc bench``: run, then print the report (or ``--json``)."""
    check_method(args.method)
    if args.connections < 1 or args.concurrency < 1:
        raise CliError("--connections and --concurrency must be at least 1")
    if args.connections > args.concurrency:
        raise CliError(f"--connections {args.connections} > --concurrency {args.concurrency}: some connections would be idle")
    if args.duration <= 0 or args.warmup < 0:
        raise CliError("--duration must be > 0 and --warmup >= 0")
    positional, keywords, metadata = call_arguments(args)
    loop = new_loop(args.loop)
    args.loop_used = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    try:
        asyncio.set_event_loop(loop)
        run, _ = loop.run_until_complete(_bench(args, positional, keywords, metadata))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    result = summary(run, args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result))
    return EXIT_OK if result["calls"] > 0 else EXIT_FAILED
