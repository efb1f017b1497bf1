"""Hedging: the same call sent again, to another endpoint, when the first
answer is late; the first answer wins and the others are cancelled.

A :class:`HedgePolicy` is given per method (``Pool(..., hedge={"Users.get":
HedgePolicy()})``, ``AsyncClient`` too) or per call (``call(...,
hedge=HedgePolicy())``).  A hedged call:

* starts its first attempt on the endpoint the picker chooses;
* if no answer came within ``delay`` (seconds, or a percentile of the
  method's recent latencies: ``"p95"``), starts another attempt on another
  ready endpoint, and so on up to ``max_attempts``; an attempt that fails
  with a code in ``retryable_codes`` starts the next one at once;
* sends at most ``max_extra`` extra attempts per call on average (10%):
  a token bucket per client, filled by every hedged call, spent by every
  extra attempt (Finagle's backup-request budget), so that a slow service
  never sees its load doubled by hedges;
* returns the first successful answer and cancels the attempts still
  running (each cancellation reaches its server, which stops the handler);
* fails with the last error when every attempt failed, and at once with an
  error whose code is not retryable;
* never outlives its deadline: every attempt gets what is left of it.

Hedging sends a call more than once while the first may still be running:
only idempotent methods are hedged (marked on the server, announced at
handshake: :func:`fastrpc.idempotent`); others run once, unless the policy
says ``non_idempotent=True``.  Only the asyncio clients hedge.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Union

from ..errors import DeadlineExceeded, RpcError, StatusCode

__all__ = ["HedgePolicy", "LatencyTracker"]


class LatencyTracker:
    """Recent latencies of one method, and a percentile of them.

    Keeps the last ``window`` samples in a ring; the percentile is
    recomputed (a sort of the window) every ``window // 8`` samples, not
    per call.  Until ``min_samples`` are in, :meth:`percentile` returns
    None.
    """

    __slots__ = ("window", "min_samples", "_ring", "_i", "_count", "_cached", "_stale")

    def __init__(self, window: int = 512, min_samples: int = 32) -> None:
        self.window = window
        self.min_samples = min_samples
        self._ring: List[float] = []
        self._i = 0
        self._count = 0
        self._cached: Dict[float, float] = {}
        self._stale = 0

    def add(self, seconds: float) -> None:
        """Record one call's latency."""
        if len(self._ring) < self.window:
            self._ring.append(seconds)
        else:
            self._ring[self._i] = seconds
            self._i = (self._i + 1) % self.window
        self._count += 1
        self._stale += 1
        if self._stale >= max(1, self.window // 8):
            self._cached.clear()
            self._stale = 0

    def percentile(self, q: float) -> Optional[float]:
        """The ``q``-th percentile (0..100) of the recent latencies, or None
        with too few samples."""
        if len(self._ring) < self.min_samples:
            return None
        value = self._cached.get(q)
        if value is None:
            ordered = sorted(self._ring)
            value = ordered[min(len(ordered) - 1, int(len(ordered) * q / 100.0))]
            self._cached[q] = value
        return value


class HedgePolicy:
    """When and how often a call is sent again (see the module's
    documentation).

    Parameters:
        delay: seconds to wait for an answer before the next attempt, or
            ``"pNN"`` (``"p95"``): that percentile of the method's recent
            latencies on this client (``initial_delay`` until enough are
            known).
        max_attempts: attempts in all, the first included (>= 1).
        initial_delay: the delay while a percentile is not known yet.
        min_delay: the least delay a percentile gives (default 1 ms): on
            loopback or a LAN the quick calls' p95 is a fraction of a
            millisecond, and hedging there would spend the budget on calls
            that were never slow.
        retryable_codes: codes after which the next attempt starts at once
            (others end the call with that error).
        non_idempotent: hedge methods the server has not marked idempotent
            too (off by default: they could run more than once).
        max_extra: the most extra attempts per call, on average (0.1: at
            most 10% more calls); ``None``: no limit.
    """

    __slots__ = ("delay", "quantile", "max_attempts", "initial_delay", "retryable_codes", "non_idempotent", "max_extra", "min_delay")

    def __init__(
        self,
        delay: Union[float, str] = "p95",
        max_attempts: int = 2,
        initial_delay: float = 0.05,
        retryable_codes: Iterable[Any] = (StatusCode.UNAVAILABLE,),
        non_idempotent: bool = False,
        max_extra: Optional[float] = 0.1,
        min_delay: float = 0.001,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if max_extra is not None and max_extra < 0:
            raise ValueError("max_extra must be >= 0 (or None)")
        self.max_extra = max_extra
        self.min_delay = float(min_delay)
        self.quantile: Optional[float] = None
        if isinstance(delay, str):
            if not (delay.startswith("p") and delay[1:].replace(".", "", 1).isdigit() and 0 < float(delay[1:]) < 100):
                raise ValueError(f"delay must be seconds or a percentile like 'p95', not {delay!r}")
            self.quantile = float(delay[1:])
        elif delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay
        self.max_attempts = int(max_attempts)
        self.initial_delay = float(initial_delay)
        self.retryable_codes = frozenset(int(StatusCode(c)) for c in retryable_codes)
        self.non_idempotent = bool(non_idempotent)

    def delay_for(self, tracker: Optional[LatencyTracker]) -> float:
        """The hedging delay now."""
        if self.quantile is None:
            return float(self.delay)
        value = tracker.percentile(self.quantile) if tracker is not None else None
        return self.initial_delay if value is None else max(self.min_delay, value)

    def __repr__(self) -> str:
        return f"HedgePolicy(delay={self.delay!r}, max_attempts={self.max_attempts}, initial_delay={self.initial_delay})"


class HedgeStats:
    """What a client's hedging did: ``calls`` hedged calls made, ``extra``
    attempts sent beyond the first, ``won`` calls a later attempt answered
    first, ``skipped`` extra attempts the budget (``max_extra``) held back.
    Also the budget's tokens."""

    __slots__ = ("calls", "extra", "won", "skipped", "tokens")

    #: the most tokens the budget keeps (the burst of hedges it allows)
    MAX_TOKENS = 10.0

    def __init__(self) -> None:
        self.calls = 0
        self.extra = 0
        self.won = 0
        self.skipped = 0
        self.tokens = 1.0

    def take(self, policy: "HedgePolicy") -> bool:
        """Whether an extra attempt may be sent now (and spend for it)."""
        if policy.max_extra is None:
            return True
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.skipped += 1
        return False

    def __repr__(self) -> str:
        return f"HedgeStats(calls={self.calls}, extra={self.extra}, won={self.won}, skipped={self.skipped})"


class _Attempt:
    """One attempt of a hedged call, sent with ``ClientProtocol.start``."""

    __slots__ = ("conn", "rid", "fut", "timer", "at")

    def __init__(self, conn: Any, rid: int, fut: "asyncio.Future[Any]", timer: Any, at: float) -> None:
        self.conn = conn
        self.rid = rid
        self.fut = fut
        self.timer = timer
        self.at = at

    def abandon(self) -> None:
        self.conn.abandon(self.rid, self.fut, self.timer)

    def settle(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def hedged_call(
    call: Any,
    policy: HedgePolicy,
    pick: Callable[[List[Any]], Awaitable[Any]],
    tracker: Optional[LatencyTracker],
    stats: HedgeStats,
) -> Any:
    """Make ``call`` (an :class:`~fastrpc.middleware.OutgoingCall`) under
    ``policy``.  ``await pick(used)`` gives a ready connection, another
    than those in ``used`` when there is one (or raises an RpcError when
    none is up).

    No task per attempt: each is a future the connection resolves, and
    this coroutine waits on one waiter future that the first answer (or
    the hedging timer) wakes.
    """
    method, args, kwargs, metadata = call.method, call.args, call.kwargs, call.metadata_to_send()
    deadline = call.deadline
    loop = asyncio.get_running_loop()
    used: List[Any] = []
    p = await pick(used)
    used.append(p)
    stats.calls += 1
    if policy.max_extra is not None and stats.tokens < stats.MAX_TOKENS:
        stats.tokens = min(stats.MAX_TOKENS, stats.tokens + policy.max_extra)
    attempts = max(1, policy.max_attempts) if (policy.non_idempotent or method in p.idempotent) else 1
    waiter: Optional["asyncio.Future[Any]"] = None

    def wake(_: Any = None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def launch(p: Any) -> _Attempt:
        now = time.monotonic()
        timeout = None
        if deadline is not None:
            timeout = max(deadline - now, 1e-9)  # a late attempt fails at once with DeadlineExceeded
        rid, fut, timer = p.start(method, args, kwargs, timeout, metadata)
        fut.add_done_callback(wake)
        return _Attempt(p, rid, fut, timer, now)

    running = [launch(p)]
    first = running[0]
    launched = 1
    last_error: Optional[BaseException] = None
    try:
        while running:
            hedge_timer = None
            waiter = loop.create_future()
            if launched < attempts:
                delay = policy.delay_for(tracker)
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - time.monotonic()))
                hedge_timer = loop.call_later(delay, wake)
            try:
                await waiter
            finally:
                if hedge_timer is not None:
                    hedge_timer.cancel()
            for attempt in [a for a in running if a.fut.done()]:
                running.remove(attempt)
                attempt.settle()
                fut = attempt.fut
                exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
                if exc is None:
                    if attempt is not first:
                        stats.won += 1
                    if tracker is not None:
                        # What the servers take, per attempt: the winner's
                        # time, and the losers' time so far (a lower bound:
                        # they stay at the slow end of the window).
                        now = time.monotonic()
                        tracker.add(now - attempt.at)
                        for other in running:
                            tracker.add(now - other.at)
                    return fut.result()
                if not isinstance(exc, RpcError) or int(exc.code) not in policy.retryable_codes:
                    raise exc  # fatal: the call ends with it
                last_error = exc
            # Woken by the timer or by a failed attempt: the next one, if any.
            if launched < attempts and (deadline is None or time.monotonic() < deadline):
                if not stats.take(policy):
                    attempts = launched  # over budget: this call waits for what it sent
                    continue
                try:
                    p = await pick(used)
                    running.append(launch(p))
                except RpcError as exc:
                    last_error = last_error or exc
                    if not running:
                        raise
                    attempts = launched  # no connection for another attempt
                    continue
                used.append(p)
                launched += 1
                stats.extra += 1
        if last_error is not None:
            raise last_error
        raise DeadlineExceeded(f"{method} did not complete in time")  # pragma: no cover - every path above returns or raises
    finally:
        for attempt in running:
            attempt.abandon()  # the losers: each cancellation reaches its server
