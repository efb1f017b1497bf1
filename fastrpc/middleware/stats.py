"""Per-method call statistics for the server's debug page
(``Server(debug_page=True)``, ``GET /debug/rpc`` on the HTTP gateway).

:class:`CallStats` is a middleware: the server puts it in its chain only
when the page is on, so a server without it pays nothing.  Per method it
keeps calls, errors by status code, calls running, the total time and a
fixed histogram of latencies (10 buckets a decade from 1 us to 100 s, and
one past that): bounded memory whatever the traffic, and percentiles
within a bucket's width (about 26 %) of the true value.  Counting takes a
lock (blocking handlers' chains end in pool threads).
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import code_name
from . import observe

__all__ = ["BOUNDS", "CallStats", "MethodStats"]

#: latency bucket upper bounds, seconds: 10 a decade, 1 us to 100 s
BOUNDS: Tuple[float, ...] = tuple(1e-6 * 10 ** (i / 10) for i in range(81))

_perf = time.perf_counter


class MethodStats:
    """One method's numbers (a copy, from :meth:`CallStats.snapshot`)."""

    __slots__ = ("calls", "running", "errors", "total", "buckets")

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        #: ended calls by status code (0: OK excluded)
        self.errors: Dict[int, int] = {}
        self.total = 0.0
        self.buckets = [0] * (len(BOUNDS) + 1)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def ended(self) -> int:
        return sum(self.buckets)

    def percentile(self, q: float) -> Optional[float]:
        """The latency (seconds) under which a share ``q`` (0..1) of the
        ended calls fell: the upper bound of the bucket that holds it
        (None: no call has ended)."""
        n = self.ended
        if not n:
            return None
        rank = max(1, int(q * n + 0.999999))
        acc = 0
        for i, count in enumerate(self.buckets):
            acc += count
            if acc >= rank:
                return BOUNDS[i] if i < len(BOUNDS) else float("inf")
        return float("inf")  # pragma: no cover - acc reaches n

    def error_names(self) -> Dict[str, int]:
        return {code_name(c): n for c, n in sorted(self.errors.items())}

    def copy(self) -> "MethodStats":
        out = MethodStats()
        out.calls, out.running, out.total = self.calls, self.running, self.total
        out.errors = dict(self.errors)
        out.buckets = list(self.buckets)
        return out


class CallStats:
    """The middleware counting every call by method (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._methods: Dict[str, MethodStats] = {}
        #: ``time.time()`` when counting began
        self.since = time.time()

    def _stats(self, method: str) -> MethodStats:
        stats = self._methods.get(method)
        if stats is None:
            with self._lock:
                stats = self._methods.setdefault(method, MethodStats())
        return stats

    def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        stats = self._stats(call.method)
        with self._lock:
            stats.calls += 1
            stats.running += 1
        return observe(call_next, call, self._done, stats, _perf())

    def _done(self, stats: MethodStats, start: float, code: int) -> None:
        elapsed = _perf() - start
        i = bisect.bisect_left(BOUNDS, elapsed)
        with self._lock:
            stats.running -= 1
            stats.total += elapsed
            stats.buckets[i] += 1
            if code:
                stats.errors[code] = stats.errors.get(code, 0) + 1

    def snapshot(self) -> Dict[str, MethodStats]:
        """Every method's numbers now (copies), by name."""
        with self._lock:
            return {name: s.copy() for name, s in self._methods.items()}

    def methods(self) -> List[str]:
        with self._lock:
            return sorted(self._methods)
