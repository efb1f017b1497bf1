"""Cost of one ``pick()`` for each built-in balancer.

Usage::

    python -m benchmarks.balancing            # full run (a few seconds per row)
    python -m benchmarks.balancing --quick    # fewer, shorter repeats (< 5 s)
    python -m benchmarks.balancing --check    # exit 1 if a target is missed

Builds a picker over three fake endpoints (one connection slot each, with a
:class:`~fastrpc.balancing.Load` that has seen a few calls) and times its
``pick()`` with :mod:`timeit`, best of several repeats, in nanoseconds per
pick.  As a yardstick from the same run it also times a no-op Python
method call with the same arguments: the balancers are pure Python, so
their cost is best read as a multiple of it.

Targets (the issue's, checked by ``--check``): ``round_robin`` <= 1 us and
``p2c`` <= 2 us per pick.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import timeit
from typing import Any, Callable

from fastrpc.balancing import Load, Route, Routes, balancer
from fastrpc.balancing.ring import HASH_CACHE_SIZE, ConsistentHash

#: row -> the most seconds per pick it may take
TARGETS: dict[str, float] = {"round_robin": 1e-6, "p2c": 2e-6}


class FakeEndpoint:
    """What a picker reads of an endpoint (see ``fastrpc/balancing/base.py``)."""

    __slots__ = ("in_flight", "key", "load", "metadata", "tags", "version", "weight")

    def __init__(self, key: str, weight: int = 1, version: str = "", latency: float = 0.001, in_flight: int = 0) -> None:
        self.key = key
        self.weight = weight
        self.version = version
        self.tags: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        self.load = Load()
        for _ in range(5):
            self.load.observe(latency)
        self.in_flight = in_flight


def endpoints() -> list[FakeEndpoint]:
    return [
        FakeEndpoint("10.0.0.1:7000", weight=5, latency=0.001, in_flight=1),
        FakeEndpoint("10.0.0.2:7000", weight=1, latency=0.002, in_flight=0, version="v2"),
        FakeEndpoint("10.0.0.3:7000", weight=1, latency=0.0015, in_flight=2),
    ]


class _Noop:
    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        return None


def cases() -> list[tuple[str, Callable[[], object]]]:
    """(row, callable doing one pick) for each balancer."""
    args = (42, "x")
    meta = {"user-id": "user-12345"}
    rows: list[tuple[str, Any, Any]] = [
        ("no-op method call (baseline)", _Noop(), None),
        ("round_robin", balancer("round_robin").picker(endpoints()), None),
        ("random", balancer("random").picker(endpoints()), None),
        ("weighted", balancer("weighted").picker(endpoints()), None),
        ("p2c", balancer("p2c").picker(endpoints()), None),
        ("consistent_hash (metadata key)", ConsistentHash(metadata_key="user-id").picker(endpoints()), meta),
        ("Routes(10% to v2)", Routes([Route(share=0.1, version="v2")]).picker(endpoints()), None),
    ]
    out: list[tuple[str, Callable[[], object]]] = []

    def one(pick: Callable[..., Any], md: dict | None) -> Callable[[], object]:
        # a closure per row: the call overhead is the same for every row,
        # the baseline included
        return lambda: pick("Svc.method", args, None, md)

    for label, picker, md in rows:
        out.append((label, one(picker.pick, md)))
    # every call a key the hash cache does not hold (twice its size, in a
    # cycle): BLAKE2b's cost shows; next() adds ~30 ns
    fresh = itertools.cycle([{"user-id": f"user-{i}"} for i in range(2 * HASH_CACHE_SIZE)]).__next__
    pick = ConsistentHash(metadata_key="user-id").picker(endpoints()).pick

    def uncached() -> object:
        return pick("Svc.method", args, None, fresh())

    out.append(("consistent_hash (uncached keys)", uncached))
    return out


def best_time(fn: Callable[[], object], repeat: int, min_time: float) -> float:
    """Best seconds per call over ``repeat`` runs of at least ``min_time`` each."""
    timer = timeit.Timer(fn)
    number = 1
    while True:  # calibrate: enough calls per run to last min_time
        elapsed = timer.timeit(number)
        if elapsed >= min_time:
            break
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9) * 1.1))
    runs = [elapsed] + timer.repeat(repeat=repeat - 1, number=number)
    return min(runs) / number


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (< 5 s)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    opts = ap.parse_args(argv)
    repeat, min_time = (3, 0.05) if opts.quick else (7, 0.3)

    print(f"Python {platform.python_version()} ({platform.python_implementation()}), {platform.machine()}")
    print(f"best of {repeat} runs of >= {min_time:.2f} s each; 3 endpoints\n")
    results: dict[str, float] = {}
    for label, fn in cases():
        fn()  # warm up (and fail early if broken)
        results[label] = best_time(fn, repeat, min_time)
    base = results["no-op method call (baseline)"]
    print(f"{'pick()':34} {'ns/pick':>9} {'x no-op':>8}  target")
    failed = []
    for label, t in results.items():
        target = TARGETS.get(label)
        verdict = ""
        if target is not None:
            ok = t <= target
            verdict = f"<= {target * 1e9:.0f} ns {'ok' if ok else 'MISSED'}"
            if not ok:
                failed.append(label)
        print(f"{label:34} {t * 1e9:9.0f} {t / base:8.1f}  {verdict}")
    if opts.check and failed:
        print(f"\nmissed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
