"""What every client shares: ``client.proxy("Arith").multiply(7, 8)``, what
a call inherits from the call being handled where it is made, and the time
left at the end of a middleware chain."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ..core.context import inherit, parent_call, serving
from .hedge import HedgePolicy, HedgeStats, LatencyTracker
from .retry import RetryBudget, RetryPolicy

__all__ = ["Policies", "Proxy", "inherited", "remaining"]

#: "no timeout given": the client's default applies (``None`` means none)
UNSET: Any = object()

#: the keywords of call() that are options of the call, not the handler's
#: (timeout and metadata are in the signature; these are taken out of
#: **kwargs only when there are keyword arguments at all, so that a plain
#: call does not pay for them)
CALL_OPTIONS = ("retry", "hedge", "compress")


def no_call_options(kwargs: Dict[str, Any], what: str) -> None:
    """TypeError if ``kwargs`` hold a call option ``what`` does not take
    (rather than passing it on to the handler)."""
    for name in CALL_OPTIONS:
        if name in kwargs:
            raise TypeError(f"{what} takes no {name}= (only call() does)")


def call_options(kwargs: Dict[str, Any]) -> "Tuple[Any, Any, Any]":
    """``(retry, hedge, compress)`` taken out of a call's keyword arguments
    (UNSET for each not given)."""
    return kwargs.pop("retry", UNSET), kwargs.pop("hedge", UNSET), kwargs.pop("compress", UNSET)


class Policies:
    """A client's retry and hedging: its defaults (``retry``, ``hedge`` per
    method) and the state they keep per client (the retry budget, each
    hedged method's latencies, :attr:`stats`).  Every client holds one."""

    __slots__ = ("retry", "hedge", "configured", "stats", "_budget", "_latency")

    def __init__(self, retry: Optional[RetryPolicy], hedge: Optional[Dict[str, HedgePolicy]]) -> None:
        self.retry = retry
        self.hedge: Dict[str, HedgePolicy] = dict(hedge or {})
        #: whether calls need the policy-aware path at all
        self.configured = retry is not None or bool(self.hedge)
        #: what hedging did on this client
        self.stats = HedgeStats()
        # A copy of the client policy's budget: a policy shared by clients
        # does not share its bucket.
        self._budget: Optional[RetryBudget] = retry.budget.fresh() if retry is not None and retry.budget is not None else None
        self._latency: Dict[str, LatencyTracker] = {}

    def resolve(self, method: str, retry: Any = UNSET, hedge: Any = UNSET) -> "Tuple[Any, Any]":
        """The ``(retry, hedge)`` policies a call of ``method`` is made
        with: the call's own where given (UNSET: not given), else this
        client's."""
        return (
            self.retry if retry is UNSET else retry,
            (self.hedge.get(method) if self.hedge else None) if hedge is UNSET else hedge,
        )

    def budget(self, policy: RetryPolicy) -> Optional[RetryBudget]:
        """This client's retry budget (made from ``policy``'s the first
        time when the client has no policy of its own)."""
        if self._budget is None and policy.budget is not None:
            self._budget = policy.budget.fresh()
        return self._budget

    def tracker(self, method: str, policy: HedgePolicy) -> Optional[LatencyTracker]:
        """``method``'s recent latencies, when ``policy``'s delay is a
        percentile of them."""
        tracker = self._latency.get(method)
        if tracker is None and policy.quantile is not None:
            tracker = self._latency[method] = LatencyTracker()
        return tracker


class Proxy:
    """``proxy.method(*args)`` calls ``"<service>.method"`` through any client
    (sync or async: it returns what the client's ``call`` returns)."""

    __slots__ = ("_client", "_service")

    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self._client.call, f"{self._service}.{name}")

    def __repr__(self) -> str:
        return f"<Proxy {self._service} via {self._client!r}>"


def remaining(call: Any) -> Optional[float]:
    """The seconds an :class:`~fastrpc.middleware.OutgoingCall` has left
    (None: no deadline): the time the middleware took counts."""
    deadline = call.deadline
    if deadline is None:
        return None
    return deadline - time.monotonic()


def inherited(
    enabled: bool, slot: Any, timeout: Optional[float], metadata: Optional[Dict[str, Any]]
) -> Tuple[Optional[float], Optional[Dict[str, Any]], Any]:
    """A call's (timeout, metadata, parent): what it inherits from the call
    being handled where it is made (at most that call's time left, its
    trace context), when the client inherits (``enabled``) and there is
    such a call.  ``slot``: the client's loop's slot, if it knows it."""
    if enabled and serving[0]:  # no server here: no call being handled
        parent = parent_call(slot)
        if parent is not None:
            timeout, metadata = inherit(parent, timeout, metadata)
            return timeout, metadata, parent
    return timeout, metadata, None
