"""Retries: which failed calls go again, when, and how many in all.

A :class:`RetryPolicy` on a client (``Client``, ``AsyncClient`` or
``Pool(..., retry=RetryPolicy())``) or on one call (``call(...,
retry=RetryPolicy(...))``; ``retry=None`` turns a client's policy off for
that call) sends a failed call again when all of these hold:

* attempts are left (``max_attempts`` counts the first one);
* the failure is safe to retry:

  - the call never reached a handler: :class:`~fastrpc.NotProcessed` (the
    server's GOAWAY says it never read it), or the connection could not be
    made (it was never sent).  Always retried, whatever its code;
  - or its code is in ``retryable_codes`` (default: UNAVAILABLE) and the
    method is idempotent (the server says so at handshake:
    :func:`fastrpc.idempotent`) or the policy says ``non_idempotent=True``.
    A non-idempotent call the server may have run is never sent twice by
    default;

* the server did not say no: an error whose ``details`` carry
  ``retry_pushback_ms`` (:data:`PUSHBACK`) sets the wait before the next
  attempt; a negative value means "do not retry";
* the retry budget allows it (:class:`RetryBudget`, gRPC's retry
  throttling: a token bucket per client that failures drain and successes
  refill, so that retries stop when most calls fail);
* the wait (exponential backoff with jitter, or the pushback) ends before
  the call's deadline: retries never outlive it.  When the wait would, the
  call fails at once with :class:`~fastrpc.DeadlineExceeded` (its cause:
  the last error).

Every attempt gets what is left of the call's deadline.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any, Awaitable, Callable, Iterable, Optional

from ..errors import DeadlineExceeded, NotProcessed, RpcError, StatusCode, code_name

__all__ = ["PUSHBACK", "RetryBudget", "RetryPolicy"]

#: the key of an error's ``details`` with which a server pushes back: the
#: milliseconds to wait before the next attempt (an int), negative for "do
#: not retry"
PUSHBACK = "retry_pushback_ms"


class RetryBudget:
    """A token bucket that bounds retries (gRPC's retry throttling).

    It starts full (``max_tokens``).  Each failed attempt with a retryable
    code takes one token; each successful call puts back ``token_ratio``.
    Retries are allowed only while more than half the tokens are left:
    when a service fails most calls, its clients stop adding retries to
    its load.  Thread-safe.  A client keeps its own bucket (a copy of its
    policy's), so that a policy shared by clients does not share one.
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            raise ValueError("RetryBudget needs max_tokens > 0 and token_ratio > 0")
        self.max_tokens = float(max_tokens)
        self.token_ratio = float(token_ratio)
        self.tokens = self.max_tokens
        self._lock = threading.Lock()

    def fresh(self) -> "RetryBudget":
        """The same limits, a full bucket of its own."""
        return RetryBudget(self.max_tokens, self.token_ratio)

    def failed(self) -> None:
        """An attempt failed with a retryable code."""
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1.0)

    def succeeded(self) -> None:
        """A call succeeded."""
        if self.tokens < self.max_tokens:
            with self._lock:
                self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    @property
    def allows(self) -> bool:
        """Whether a retry may be sent now."""
        return self.tokens > self.max_tokens / 2

    def __repr__(self) -> str:
        return f"RetryBudget(max_tokens={self.max_tokens}, token_ratio={self.token_ratio}, tokens={self.tokens:.1f})"


class RetryPolicy:
    """When a failed call is sent again (see the module's documentation).

    Parameters:
        max_attempts: attempts in all, the first included (>= 1).
        initial_backoff: the wait before the first retry, in seconds.
        max_backoff: the cap on the wait.
        multiplier: growth of the wait per retry.
        jitter: the fraction of each wait drawn at random (0..1): waits
            are spread so that clients do not retry in step.
        retryable_codes: the status codes worth another attempt (default:
            UNAVAILABLE).
        non_idempotent: also retry methods the server has not marked
            idempotent when they may have run (off by default: such a
            call could take effect twice).
        budget: the retry budget each client copies (default: 10 tokens,
            0.1 per success); None: no budget.
    """

    __slots__ = ("max_attempts", "initial_backoff", "max_backoff", "multiplier", "jitter", "retryable_codes", "non_idempotent", "budget")

    def __init__(
        self,
        max_attempts: int = 3,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.0,
        multiplier: float = 2.0,
        jitter: float = 0.2,
        retryable_codes: Iterable[Any] = (StatusCode.UNAVAILABLE,),
        non_idempotent: bool = False,
        budget: Optional[RetryBudget] = RetryBudget(),  # noqa: B008 - copied by each client
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if initial_backoff < 0 or max_backoff < 0 or multiplier < 1 or not 0 <= jitter <= 1:
            raise ValueError("RetryPolicy needs backoffs >= 0, multiplier >= 1 and 0 <= jitter <= 1")
        self.max_attempts = int(max_attempts)
        self.initial_backoff = float(initial_backoff)
        self.max_backoff = float(max_backoff)
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)
        self.retryable_codes = frozenset(int(StatusCode(c)) for c in retryable_codes)
        self.non_idempotent = bool(non_idempotent)
        self.budget = budget

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first)."""
        delay = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return delay * (1.0 - self.jitter * random.random())

    def __repr__(self) -> str:
        codes = sorted(StatusCode(c).name for c in self.retryable_codes)
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, initial_backoff={self.initial_backoff}, "
            f"max_backoff={self.max_backoff}, multiplier={self.multiplier}, jitter={self.jitter}, "
            f"retryable_codes={codes}, non_idempotent={self.non_idempotent}, budget={self.budget!r})"
        )


class NotSent(Exception):
    """Raised by a retry loop's ``connect`` when the call cannot be sent (no
    connection could be had); carries the error the caller would see and
    the earliest time (``time.monotonic()``) another try can succeed."""

    def __init__(self, error: BaseException, not_before: float = 0.0) -> None:
        super().__init__(error)
        self.error = error
        self.not_before = not_before


class Retrier:
    """The decisions of one call's retry loop (shared by the sync and async
    loops, which only wait and send).

    ``decide(error, sent, idempotent, now)`` after a failed attempt returns
    the seconds to wait before the next one, or raises what the caller
    gets.
    """

    __slots__ = ("policy", "budget", "deadline", "attempts")

    def __init__(self, policy: RetryPolicy, budget: Optional[RetryBudget], deadline: Optional[float]) -> None:
        self.policy = policy
        self.budget = budget
        self.deadline = deadline
        self.attempts = 1

    def succeeded(self) -> None:
        if self.budget is not None:
            self.budget.succeeded()

    def decide(self, error: BaseException, sent: bool, idempotent: bool, now: float, not_before: float = 0.0) -> float:
        policy = self.policy
        if not isinstance(error, RpcError):
            raise error  # not a call's failure (a bug, a cancellation, ...)
        code = int(error.code)
        retryable = code in policy.retryable_codes
        if retryable and self.budget is not None:
            self.budget.failed()
        if self.attempts >= policy.max_attempts:
            raise error
        never_ran = not sent or type(error) is NotProcessed
        if not never_ran and not (retryable and (idempotent or policy.non_idempotent)):
            raise error
        wait = None
        details = error.details
        if isinstance(details, dict):
            pushback = details.get(PUSHBACK)
            if type(pushback) is int:
                if pushback < 0:
                    raise error  # the server said: do not retry
                wait = pushback / 1000.0
        if self.budget is not None and not self.budget.allows:
            raise error
        if wait is None:
            wait = max(policy.backoff(self.attempts), not_before - now)
        if self.deadline is not None and now + wait >= self.deadline:
            exc = DeadlineExceeded(
                f"{error.message} (retry {self.attempts} of {policy.max_attempts - 1} would start after the deadline)",
                {"attempts": self.attempts, "last_code": code_name(code)},
            )
            exc.__cause__ = error
            raise exc
        self.attempts += 1
        return wait


async def call_with_retries(call: Any, budget: Optional[RetryBudget], connect: Callable[[Any], Awaitable[Any]]) -> Any:
    """Make ``call`` (an :class:`~fastrpc.middleware.OutgoingCall` whose
    ``retry`` is set) on the connections ``await connect(previous)`` gives
    (``previous``: the connection the last attempt used, or None; it raises
    :class:`NotSent` when it has none), retrying as ``call.retry`` says."""
    retrier = Retrier(call.retry, budget, call.deadline)
    method, args, kwargs, metadata = call.method, call.args, call.kwargs, call.metadata_to_send()
    deadline = retrier.deadline
    p = None
    while True:
        try:
            p = await connect(p)
        except NotSent as exc:
            wait = retrier.decide(exc.error, False, False, time.monotonic(), exc.not_before)
        else:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise DeadlineExceeded(f"{method} did not complete in time", {"attempts": retrier.attempts})
            try:
                # resend=False: NotProcessed comes here, to be retried under
                # this policy rather than once by the connection.
                result = await p.call(method, args, kwargs, timeout, metadata, False)
            except RpcError as exc:
                wait = retrier.decide(exc, True, method in p.idempotent, time.monotonic())
            else:
                retrier.succeeded()
                return result
        await asyncio.sleep(wait)
