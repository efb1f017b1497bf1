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

import math
import random
import time
from collections.abc import Sequence
from typing import Any

from .base import PENALTY, Balancer, Picker, in_flight_counter

__all__ = ["P2C", "P2CPicker", "random_pairs"]

# looked up once: a pick is on every call's path
_random = random.Random().random
_monotonic = time.monotonic
_exp = math.exp


#: about how many pairs a picker cycles through
PAIRS = 1024


def random_pairs(n: int, count: int = PAIRS, rng: Any = None) -> list[tuple[int, int]]:
    """About ``count`` pairs of distinct indices below ``n`` (n >= 2), in
    random order: drawn once per client and number of endpoints rather
    than per call, since drawing two indices costs more than the rest of a
    pick.  When every ordered pair fits, each appears equally often (so
    every endpoint meets every other equally over a cycle); otherwise the
    pairs are drawn at random."""
    rng = rng or random.Random()
    every = n * (n - 1)
    if every <= count:
        out = [(i, j) for i in range(n) for j in range(n) if i != j] * (count // every)
        rng.shuffle(out)
        return out
    rand = rng.random
    out = []
    for _ in range(count):
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        out.append((i, j + 1 if j >= i else j))
    return out


class P2CPicker(Picker):
    """Picks the cheaper of two distinct random ready endpoints.

    The pairs come from a table of random pairs (:func:`random_pairs`) the
    picker walks, one per call, from a random start.  With one endpoint
    ready it is returned; with two, both are compared.  Ties go to the
    first of the pair, so idle never-measured endpoints (cost 0) share
    calls at random.
    """

    def __init__(self, ready: Sequence[Any], pairs: list[tuple[int, int]] | None = None) -> None:
        super().__init__(ready)
        n = self._n = len(self.ready)
        # What a pick reads, looked up once per picker: each endpoint, its
        # load and its in-flight counter, in random pairs.
        slots = [(ep, ep.load, in_flight_counter(ep)) for ep in self.ready]
        if n >= 2:
            self._pairs = [(slots[i], slots[j]) for i, j in (pairs if pairs is not None else random_pairs(n))]
        else:
            self._pairs = [(slots[0], slots[0])] if slots else []
        self._len = len(self._pairs)
        self._k = int(_random() * self._len) if self._pairs else 0

    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        n = self._n
        if n < 2:
            return self.ready[0] if n else None
        k = self._k + 1
        if k == self._len:
            k = 0
        self._k = k
        (a, la, fa), (b, lb, fb) = self._pairs[k]
        now = _monotonic()  # once per pick, for both costs
        # Load.cost(in_flight, now) for both, inline (every call's path).
        ca = la._cost
        if ca:
            dt = now - la._stamp
            if dt > la.decay * 0.001:  # else the decay is under 0.1%: skipped
                ca *= _exp(-dt / la.decay)
            ca *= fa() + 1
        else:
            ca = PENALTY * fa()
        cb = lb._cost
        if cb:
            dt = now - lb._stamp
            if dt > lb.decay * 0.001:
                cb *= _exp(-dt / lb.decay)
            cb *= fb() + 1
        else:
            cb = PENALTY * fb()
        return b if cb < ca else a


class P2C(Balancer):
    """``p2c``: power of two choices over peak-EWMA latency x (in flight + 1).

    Sets :attr:`feedback`, so the client measures calls' latency into
    their endpoint's :class:`~fastrpc.balancing.Load`: at most one call
    per ``measure_every`` seconds (default 5 ms) per connection, which
    keeps the latency current at any call rate and spares the calls in
    between the measuring.  Connection slots of one server share its
    ``Load`` (latency is the server's) but each has its own ``in_flight``,
    so a busy connection loses to an idle one of the same server.
    Stateless across pickers."""

    name = "p2c"
    feedback = True

    def __init__(self, measure_every: float = 0.005) -> None:
        if measure_every < 0:
            raise ValueError("measure_every must be >= 0")
        #: at most one call per ``measure_every`` seconds per connection is
        #: measured (in-flight counts, read at every pick, are exact)
        self.measure_every = float(measure_every)

        self._pairs: dict[int, list[tuple[int, int]]] = {}

    def picker(self, ready: Sequence[Any]) -> P2CPicker:
        n = len(ready)
        pairs = None
        if n >= 2:
            # one table per number of endpoints, drawn once per client
            pairs = self._pairs.get(n)
            if pairs is None:
                pairs = self._pairs[n] = random_pairs(n)
        return P2CPicker(ready, pairs)
