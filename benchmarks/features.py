"""What each optional feature costs per call, against the same call with none.

Usage::

    python -m benchmarks.features            # full run
    python -m benchmarks.features --quick    # CI smoke run

Each side of a call runs in one process with no syscalls, as
``benchmarks/overhead.py`` does (the server reading a request and writing
its answer; ``Client.call`` against a socket that answers at once;
``await AsyncClient.call`` on a transport that answers one loop iteration
later), once with nothing configured and once per feature, measured in
alternation (best of several repeats), and the table gives the extra ns per
call of each feature over none.  Features:

* ``1 middleware``: one pass-through middleware (``return
  call_next(call)``) on the side measured;
* ``trace context``: fastrpc's own W3C trace propagation, no OpenTelemetry:
  the server reads requests that carry a ``traceparent``; the clients call
  from inside a traced call (as a handler does), so each call inherits the
  trace and carries it on;
* ``otel, no SDK``: the OpenTelemetry middleware on both sides with only the
  API installed (its no-op tracer), requests carrying a ``traceparent``;
* ``metrics``: Prometheus metrics on both sides (calls, latency histogram,
  in flight, connections, bytes);
* ``access log``: the access log on the side measured (``Server(access_log=
  ...)``, ``AccessLog`` on the clients), to a logger at INFO whose handler
  drops the records: a record is made and handled per call, no I/O;
The metrics and OpenTelemetry columns need ``pip install
fastrpc[prometheus,otel] opentelemetry-sdk`` and are left out without them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import fastrpc
from fastrpc._impl import IMPLEMENTATION
from fastrpc.middleware.access import AccessLog

from benchmarks.overhead import Bench, best, fastrpc_async_case, fastrpc_server_case, fastrpc_sync_case

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None


def passthrough(call: Any, call_next: Callable[[Any], Any]) -> Any:
    """The trivial middleware: costs what a middleware costs, nothing more."""
    return call_next(call)


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def traced_parent() -> Any:
    """A call being handled that carries a trace, as a handler's calls see
    it (what they inherit from)."""
    from fastrpc._impl import FrameParser, FrameWriter
    from fastrpc.core.context import CallContext

    w = FrameWriter()
    w.write_request(7, "Bench.add", [1, 2], metadata={"traceparent": TRACEPARENT})
    frame = FrameParser(expect_preface=False).feed(w.take())[0]

    class Conn:
        _peername = ("127.0.0.1", 40000)

    return CallContext(frame, Conn(), time.monotonic())


class Feature:
    """One column: how the server and the clients are made and called."""

    def __init__(self, name: str, server: Any = None, client: Any = None, metadata: Any = None, parent: Any = None) -> None:
        self.name = name
        self.server = server or {}
        self.client = client or {}
        self.metadata = metadata
        self.parent = parent


def access_logger() -> logging.Logger:
    """A logger that takes INFO records and drops them (no I/O measured)."""
    logger = logging.getLogger("benchmarks.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def features() -> List[Feature]:
    out = [
        Feature("none"),
        Feature("1 middleware", {"middleware": [passthrough]}, {"middleware": [passthrough]}),
        Feature("trace context", metadata={"traceparent": TRACEPARENT}, parent=traced_parent()),
        Feature("access log", {"access_log": access_logger()}, {"middleware": [AccessLog(access_logger())]}),
    ]
    try:
        from prometheus_client import CollectorRegistry

        from fastrpc.middleware.metrics import ClientMetrics, ServerMetrics

        out.append(Feature("metrics", {"metrics": ServerMetrics(CollectorRegistry())}, {"metrics": ClientMetrics(CollectorRegistry())}))
    except ImportError:
        print("(no prometheus-client: the metrics column is left out)")
    try:
        from opentelemetry.sdk.trace import TracerProvider

        from fastrpc.middleware.otel import ClientSpans, ServerSpans
    except ImportError:
        print("(no OpenTelemetry API and SDK: the otel columns are left out)")
        return out
    out.append(Feature("otel, no SDK", {"middleware": [ServerSpans()]}, {"middleware": [ClientSpans()]}, {"traceparent": TRACEPARENT}))
    provider = TracerProvider()
    out.append(
        Feature(
            "otel, SDK",
            {"middleware": [ServerSpans(tracer_provider=provider)]},
            {"middleware": [ClientSpans(tracer_provider=provider)]},
            {"traceparent": TRACEPARENT},
        )
    )
    return out


def measure(cases: Dict[str, Callable[[int], None]], n: int, repeat: int) -> Dict[str, float]:
    """Best ns per call of each case, the cases taken in turn each round."""
    out = {name: float("inf") for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            out[name] = min(out[name], best(fn, n, 1))
    return out


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (CI smoke run)")
    args = ap.parse_args(argv)
    n, repeat = (3_000, 3) if args.quick else (30_000, 7)
    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results: List[Tuple[str, Dict[str, float]]] = []
    feats = features()

    # The sync client needs a live server for its handshake; after it, its
    # socket is swapped for one that answers at once, and the server goes:
    # what is measured is a client process's cost (with a server running
    # here, a client also looks for a call being handled to inherit from).
    server = fastrpc.Server()
    server.register(Bench())
    address = loop.run_until_complete(server.start("tcp://127.0.0.1:0"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        sync = {f.name: fastrpc_sync_case(address, parent=f.parent, **f.client) for f in feats}
        for fn, _ in sync.values():
            fn.prepare(1)  # the answers socket is in place from here on
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    loop.run_until_complete(server.shutdown(grace=0))
    results.append(("sync client", measure({name: fn for name, (fn, _) in sync.items()}, n, repeat)))
    for _, close in sync.values():
        close()

    servers = {f.name: fastrpc_server_case(loop, metadata=f.metadata, **f.server) for f in feats}
    results.append(("server", measure(servers, n, repeat)))
    clients = {f.name: fastrpc_async_case(loop, parent=f.parent, **f.client) for f in feats}
    results.append(("async client", measure(clients, n, repeat)))
    loop.close()

    names = [f.name for f in feats]
    print(f"fastrpc per-call cost of each feature, no syscalls ({IMPLEMENTATION} build; "
          f"{platform.machine()}, CPython {platform.python_version()}; best of {repeat} x {n:,})")
    head = f"{'path':<14}" + "".join(f"{name:>15}" for name in names)
    print(head)
    for path, row in results:
        base = row["none"]
        cells = [f"{base:>12.0f} ns"] + [f"{row[name] - base:>+12.0f} ns" for name in names[1:]]
        print(f"{path:<14}" + "".join(f"{c:>15}" for c in cells))
    print("(none: ns per call; each feature: the ns it adds per call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
