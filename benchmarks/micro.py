"""Wire-layer micro-benchmarks in one process, with speed-up ratios.

Usage::

    python -m benchmarks.micro            # full run (~30 s)
    python -m benchmarks.micro --quick    # fewer, shorter repeats (CI smoke run)
    python -m benchmarks.micro --check    # exit 1 if a performance target is missed

Times the operations of ``bench_codec.py`` and ``bench_framing.py`` (the
same inputs and callables) with :mod:`timeit`, best of several repeats, for
the compiled (``c``) and pure-Python (``py``) wire layer and the msgpack +
struct ``baseline`` of ``benchmarks/conftest.py``, and prints a table.

Targets checked by ``--check``:

* c vs baseline, frame encode+decode (one small request plus one small
  response, written and parsed back): at least 1.5x faster;
* c parser vs py parser, 10,000 small frames (one chunk, and 4 KiB chunks):
  at least 10x faster each.

Without the compiled modules (not built, or ``FASTRPC_NO_EXTENSIONS=1``) the
c rows are skipped; ``--check`` then exits 2, since the targets cannot be
verified.
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from typing import Callable, Dict, List, Optional, Tuple

from benchmarks import bench_codec, bench_framing
from benchmarks.conftest import BASELINE, c_unavailable_reason, load_impl

#: (label, factory building the timed callable from an implementation)
OPERATIONS: List[Tuple[str, Callable]] = [
    ("frame encode+decode: request", bench_codec.make_request_roundtrip),
    ("frame encode+decode: response", bench_codec.make_response_roundtrip),
    ("packb medium dict", bench_codec.make_packb_medium),
    ("unpackb medium dict", bench_codec.make_unpackb_medium),
    ("parse 10k frames, one chunk", bench_framing.make_parse_one_chunk),
    ("parse 10k frames, 4 KiB chunks", bench_framing.make_parse_4k_chunks),
]
FRAME_OPS = ("frame encode+decode: request", "frame encode+decode: response")

#: (description, numerator impl, denominator impl, operations, minimum ratio)
TARGETS = [
    ("c vs baseline (frame encode+decode, request+response)", "baseline", "c", FRAME_OPS, 1.5),
    ("c parser vs py parser (10k frames, one chunk)", "py", "c", ("parse 10k frames, one chunk",), 10.0),
    ("c parser vs py parser (10k frames, 4 KiB chunks)", "py", "c", ("parse 10k frames, 4 KiB chunks",), 10.0),
]


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


def measure(impls: Dict[str, object], repeat: int, min_time: float) -> Dict[str, Dict[str, float]]:
    results: Dict[str, Dict[str, float]] = {}
    for label, factory in OPERATIONS:
        results[label] = {}
        for name, impl in impls.items():
            fn = factory(impl)
            fn()  # warm up (and fail early if broken)
            results[label][name] = best_time(fn, repeat, min_time)
    return results


def _fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} us"


def _ratio(num: Optional[float], den: Optional[float]) -> str:
    return "-" if num is None or den is None else f"{num / den:.2f}x"


def report(results: Dict[str, Dict[str, float]], have_c: bool) -> List[Tuple[str, Optional[float], float]]:
    """Print the table; return (target, achieved ratio or None, minimum)."""
    head = ("operation", "c", "py", "baseline", "c vs baseline", "c vs py", "py vs baseline")
    rows = [head]
    for label, _ in OPERATIONS:
        t = results[label]
        c, py, base = t.get("c"), t.get("py"), t.get("baseline")
        rows.append((label, _fmt_time(c), _fmt_time(py), _fmt_time(base), _ratio(base, c), _ratio(py, c), _ratio(base, py)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("(times: best per call; 'A vs B' = time(B) / time(A), higher is faster)")
    print()
    outcomes = []
    print("targets:")
    for desc, num, den, ops, minimum in TARGETS:
        if not have_c:
            print(f"  {desc}: >= {minimum:g}x  SKIPPED (no compiled extensions)")
            outcomes.append((desc, None, minimum))
            continue
        ratio = sum(results[o][num] for o in ops) / sum(results[o][den] for o in ops)
        verdict = "ok" if ratio >= minimum else "MISSED"
        print(f"  {desc}: {ratio:.2f}x (target >= {minimum:g}x)  {verdict}")
        outcomes.append((desc, ratio, minimum))
    return outcomes


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter repeats (for CI)")
    parser.add_argument("--check", action="store_true", help="exit non-zero if a target is missed")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per measurement (default 7, quick 3)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 7)
    min_time = 0.02 if args.quick else 0.1

    impls: Dict[str, object] = {}
    reason = c_unavailable_reason()
    if reason is None:
        impls["c"] = load_impl("c")
    impls["py"] = load_impl("py")
    impls["baseline"] = BASELINE

    print(f"fastrpc wire micro-benchmarks -- Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.machine()}, repeat={repeat}, min run {min_time:g}s")
    if reason is not None:
        print(f"c: skipped -- {reason}")
    print()
    results = measure(impls, repeat, min_time)
    outcomes = report(results, have_c=reason is None)

    if args.check:
        if reason is not None:
            print(f"\n--check: cannot verify the targets without the compiled extensions ({reason})")
            return 2
        missed = [desc for desc, ratio, minimum in outcomes if ratio is None or ratio < minimum]
        if missed:
            print("\n--check: targets missed: " + "; ".join(missed))
            return 1
        print("\n--check: all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
