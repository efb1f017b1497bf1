"""Outlier detection: stop sending calls to servers that keep failing.

After gRPC's outlier detection (gRFC A50), plus Envoy's consecutive-failure
rule.  The detector is pure logic over :class:`~fastrpc.balancing.Load`
objects (one per server key, shared by its connection slots); every method
takes the time explicitly (``time.monotonic()`` seconds), so it needs no
clock, no task and no lock.  The client drives it:

1. after each answered call, ``load.observe(seconds, ok=not
   detector.counts(code))``; when it failed, ``detector.check(load, loads,
   now)``: a server failing ``consecutive_failures`` times in a row is
   ejected at once;
2. every ``interval`` seconds, ``detector.sweep(loads, now)``: servers whose
   ejection is over come back, then the success-rate and
   failure-percentage rules look at the interval's counts;
3. whenever ``check`` or ``sweep`` returns True, and at
   ``next_change(loads, now)`` (an ejection ending), the client rebuilds its
   picker without the ejected servers' endpoints (:meth:`select`): ejection
   never reaches the balancers, which only see fewer ready endpoints.

An ejection lasts ``base_ejection_time x`` the number of times the server
was ejected (this one included), at most ``max(base_ejection_time,
max_ejection_time)``; each interval a server is not ejected, that number
goes down by one, so a server that recovered is soon ejected briefly again
if it relapses.  At most ``max_ejection_percent`` of the servers are out at
once: an ejection happens only while ``ejected / total x 100`` is below it
(so with 3 servers and 10%, one may be ejected: 0% < 10%, then 33% is not).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StatusCode
from .base import Load

__all__ = ["DEFAULT_FAILURE_CODES", "OutlierDetection"]

#: status codes that count against a server: it is down, broken or too
#: slow; not the codes a healthy server answers for a bad call
#: (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED...)
DEFAULT_FAILURE_CODES: frozenset[StatusCode] = frozenset(
    {
        StatusCode.UNAVAILABLE,
        StatusCode.INTERNAL,
        StatusCode.UNKNOWN,
        StatusCode.DEADLINE_EXCEEDED,
        StatusCode.DATA_LOSS,
    }
)


class OutlierDetection:
    """Decides which servers to eject, from their :class:`Load` counts.

    Parameters:
        consecutive_failures: eject a server after this many failures in a
            row (None: never for this reason).
        failure_percentage: eject a server whose failures in the interval
            are at least this percentage of its calls (None: off).
        success_rate_stdev: eject a server whose success rate in the
            interval is below ``mean - success_rate_stdev x stdev`` of the
            servers' rates (population standard deviation; None: off).
        min_requests: the two interval rules consider only servers with at
            least this many calls in the interval...
        min_hosts: ...and run only when at least this many servers (not
            ejected) have that many.
        interval: seconds between sweeps (the client's timer reads it).
        base_ejection_time: the first ejection's length in seconds.
        max_ejection_time: the longest ejection (at least
            ``base_ejection_time``).
        max_ejection_percent: the share of servers that may be ejected at
            once (see the module's docstring).
        failure_codes: status codes that count as failures
            (:data:`DEFAULT_FAILURE_CODES`); see :meth:`counts`.
    """

    def __init__(
        self,
        consecutive_failures: int | None = 5,
        failure_percentage: float | None = 85,
        success_rate_stdev: float | None = 1.9,
        min_requests: int = 20,
        min_hosts: int = 3,
        interval: float = 10.0,
        base_ejection_time: float = 30.0,
        max_ejection_time: float = 300.0,
        max_ejection_percent: float = 10,
        failure_codes: Iterable[int] = DEFAULT_FAILURE_CODES,
    ) -> None:
        if consecutive_failures is not None and consecutive_failures < 1:
            raise ValueError("consecutive_failures must be >= 1 (or None)")
        if failure_percentage is not None and not 0 <= failure_percentage <= 100:
            raise ValueError("failure_percentage must be between 0 and 100 (or None)")
        if success_rate_stdev is not None and success_rate_stdev < 0:
            raise ValueError("success_rate_stdev must be >= 0 (or None)")
        if interval <= 0 or base_ejection_time <= 0 or max_ejection_time < 0:
            raise ValueError("interval and base_ejection_time must be > 0, max_ejection_time >= 0")
        if not 0 <= max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be between 0 and 100")
        self.consecutive_failures = consecutive_failures
        self.failure_percentage = failure_percentage
        self.success_rate_stdev = success_rate_stdev
        self.min_requests = int(min_requests)
        self.min_hosts = int(min_hosts)
        self.interval = float(interval)
        self.base_ejection_time = float(base_ejection_time)
        self.max_ejection_time = float(max_ejection_time)
        self.max_ejection_percent = float(max_ejection_percent)
        self.failure_codes: frozenset[int] = frozenset(failure_codes)

    def __repr__(self) -> str:
        return (
            f"OutlierDetection(consecutive_failures={self.consecutive_failures}, "
            f"failure_percentage={self.failure_percentage}, success_rate_stdev={self.success_rate_stdev}, "
            f"interval={self.interval}, base_ejection_time={self.base_ejection_time})"
        )

    # -- what counts ----------------------------------------------------------------

    def counts(self, code: int | None) -> bool:
        """Whether a failed call counts against its server.

        ``code`` is the :class:`~fastrpc.errors.RpcError`'s status code
        (counts if it is in ``failure_codes``), or None for a failure that
        is not an RpcError: the connection was lost or could not be used,
        which always counts.  ``StatusCode.OK`` never counts."""
        if code is None:
            return True
        return code in self.failure_codes

    # -- state ----------------------------------------------------------------------

    @staticmethod
    def is_ejected(load: Load, now: float) -> bool:
        """Whether ``load``'s server is ejected at ``now``."""
        return load.ejected_until > now

    def select(self, endpoints: Sequence[Any], now: float) -> list[Any]:
        """The endpoints whose server is not ejected: what the client builds
        its picker over.  If every one is ejected (possible with
        ``max_ejection_percent`` at 100, or one server and any cap), all of
        them: a server that may fail beats certain failure."""
        kept = [ep for ep in endpoints if not ep.load.ejected_until > now]
        return kept if kept or not endpoints else list(endpoints)

    def next_change(self, loads: Iterable[Load], now: float) -> float | None:
        """The earliest time after ``now`` at which an ejection ends (None:
        none is under way); the client rebuilds its picker then."""
        ends = [load.ejected_until for load in loads if load.ejected_until > now]
        return min(ends) if ends else None

    def _may_eject(self, ejected: int, total: int) -> bool:
        # ejected / total * 100 < max_ejection_percent, in integers-safe form
        return total > 0 and ejected * 100.0 < self.max_ejection_percent * total

    def _eject(self, load: Load, now: float) -> None:
        load.times_ejected += 1
        longest = max(self.base_ejection_time, self.max_ejection_time)
        load.ejected_until = now + min(self.base_ejection_time * load.times_ejected, longest)
        # a fresh count when it comes back: one failure then should not
        # eject it again at once (Envoy resets it too)
        load.consecutive_failures = 0

    # -- the rules ------------------------------------------------------------------

    def check(self, load: Load, loads: Sequence[Load], now: float) -> bool:
        """After a failed call was observed on ``load`` (one of ``loads``,
        all the client's servers): eject its server now if it failed
        ``consecutive_failures`` times in a row and the cap allows.  True
        iff it ejected (the client then rebuilds its picker)."""
        limit = self.consecutive_failures
        if limit is None or load.consecutive_failures < limit or load.ejected_until > now:
            return False
        ejected = sum(1 for x in loads if x.ejected_until > now)
        if not self._may_eject(ejected, len(loads)):
            return False
        self._eject(load, now)
        return True

    def sweep(self, loads: Sequence[Load], now: float) -> bool:
        """The interval's work, in this order: servers whose ejection is over
        come back; the success-rate rule, then the failure-percentage rule,
        eject (within the cap); each server neither ejected at the start of
        the sweep nor by it has its ejection count lowered by one; every
        server's interval counts (``calls``, ``failures``) start over.
        True iff some server was ejected or came back."""
        loads = list(loads)
        total = len(loads)
        changed = False
        was_ejected = set()
        for load in loads:
            if load.ejected_until:
                was_ejected.add(id(load))
                if load.ejected_until <= now:
                    load.ejected_until = 0.0
                    changed = True
        ejected = sum(1 for x in loads if x.ejected_until > now)
        ejected_now = set()

        candidates = [x for x in loads if x.ejected_until <= now and x.calls >= self.min_requests and x.calls > 0]
        if len(candidates) >= self.min_hosts and candidates:
            if self.success_rate_stdev is not None:
                rates = [(x.calls - x.failures) / x.calls for x in candidates]
                mean = math.fsum(rates) / len(rates)
                stdev = math.sqrt(math.fsum((r - mean) ** 2 for r in rates) / len(rates))
                threshold = mean - self.success_rate_stdev * stdev
                for x, rate in zip(candidates, rates):
                    # equal rates: a stdev of rounding noise ejects nobody
                    if stdev > 1e-9 and rate < threshold and self._may_eject(ejected, total):
                        self._eject(x, now)
                        ejected += 1
                        ejected_now.add(id(x))
            if self.failure_percentage is not None:
                for x in candidates:
                    if id(x) in ejected_now:
                        continue
                    if x.failures * 100.0 >= self.failure_percentage * x.calls and self._may_eject(ejected, total):
                        self._eject(x, now)
                        ejected += 1
                        ejected_now.add(id(x))
        if ejected_now:
            changed = True

        for load in loads:
            if load.times_ejected > 0 and id(load) not in was_ejected and id(load) not in ejected_now:
                load.times_ejected -= 1
            load.calls = 0
            load.failures = 0
        return changed
