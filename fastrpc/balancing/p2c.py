"""``p2c``: the power of two choices over peak-EWMA cost (Finagle's design).

Each call looks at two distinct ready endpoints chosen at random and goes
to the cheaper: the one whose :meth:`Load.cost <fastrpc.balancing.Load.cost>`
(peak-EWMA latency x (calls in flight + 1)) is lower.  Two random choices
avoid the herd behaviour of "always the least loaded" (every client
piling onto the one idle server at once) while getting most of its
benefit; the peak-sensitive latency reacts at once to a slow server and
forgets it with time, so a server once slow is tried again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from .base import Balancer, Picker

__all__ = ["P2C", "P2CPicker"]

# looked up once: a pick is on every call's path
_random = random.Random().random
_monotonic = time.monotonic


class P2CPicker(Picker):
    """Picks the cheaper of two distinct random ready endpoints.

    With one endpoint ready it is returned; with two, both are compared (no
    randomness needed).  Ties go to the first of the random pair, so idle
    never-measured endpoints (cost 0) share calls at random.
    """

    def __init__(self, ready: Sequence[Any]) -> None:
        super().__init__(ready)
        self._n = len(self.ready)

    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        ready = self.ready
        n = self._n
        if n > 2:
            # two distinct indices with one random() each: j is drawn from
            # the n - 1 others, then shifted past i
            i = int(_random() * n)
            j = int(_random() * (n - 1))
            if j >= i:
                j += 1
            a = ready[i]
            b = ready[j]
        elif n == 2:
            a, b = ready
        elif n == 1:
            return ready[0]
        else:
            return None
        now = _monotonic()  # once per pick, for both costs
        if b.load.cost(b.in_flight, now) < a.load.cost(a.in_flight, now):
            return b
        return a


class P2C(Balancer):
    """``p2c``: power of two choices over peak-EWMA latency x (in flight + 1).

    Sets :attr:`feedback`, so the client measures each call's latency into
    its endpoint's :class:`~fastrpc.balancing.Load`.  Connection slots of
    one server share its ``Load`` (latency is the server's) but each has
    its own ``in_flight``, so a busy connection loses to an idle one of the
    same server.  Stateless across pickers."""

    name = "p2c"
    feedback = True

    def picker(self, ready: Sequence[Any]) -> P2CPicker:
        return P2CPicker(ready)
