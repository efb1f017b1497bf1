"""Balancers that need nothing but the ready list: ``random`` and ``weighted``.

* :class:`Random`: a uniformly random ready endpoint per call;
* :class:`Weighted`: smooth weighted round robin (nginx's algorithm) over
  the instances' weights, O(1) per pick.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from .base import Balancer, Picker

__all__ = ["MAX_SEQUENCE", "Random", "RandomPicker", "Weighted", "WeightedPicker", "swrr_sequence"]

# One generator for the module, its bound method looked up once: a pick
# then costs one C call (random.random() is ~5x cheaper than randrange()).
# Pickers only need spread, not secrecy, so a shared Mersenne twister is fine.
_random = random.Random().random

#: the longest smooth-weighted-round-robin period (sum of weights divided by
#: their gcd) that :class:`WeightedPicker` precomputes; past it, each pick
#: runs nginx's O(n) step instead (a 10,000-entry list is ~80 KB per picker)
MAX_SEQUENCE = 10000


class RandomPicker(Picker):
    """A uniformly random ready endpoint per call."""

    def __init__(self, ready: Sequence[Any]) -> None:
        super().__init__(ready)
        self._n = len(self.ready)

    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        n = self._n
        if n == 0:
            return None
        # int(random() * n) is < n: random() < 1.0 and the product of a double
        # below 1 and n never rounds up to n for any n a client can have
        return self.ready[int(_random() * n)]


class Random(Balancer):
    """``random``: each call to a uniformly random ready endpoint.

    Stateless, so clients starting at the same moment do not line up on the
    same server (as round robin's first picks can); spreads a little less
    evenly than round robin over short runs."""

    name = "random"

    def picker(self, ready: Sequence[Any]) -> RandomPicker:
        return RandomPicker(ready)


def swrr_sequence(weights: Sequence[int]) -> list[int]:
    """One period of nginx's smooth weighted round robin over ``weights``
    (ints >= 0, not all 0), as indices into ``weights``.

    Each step adds every weight to its running ``current``, picks the
    largest current (the first on ties) and subtracts the total from it.
    The period is ``sum(weights) / gcd(weights)`` picks; index ``i`` appears
    ``weights[i] / gcd`` times, spread as evenly as the weights allow
    (5, 1, 1 gives 0 0 1 0 2 0 0)."""
    g = 0
    for w in weights:
        g = math.gcd(g, w)
    if g == 0:
        raise ValueError("all weights are 0")
    ws = [w // g for w in weights]
    total = sum(ws)
    current = [0] * len(ws)
    seq: list[int] = []
    idx = range(len(ws))
    for _ in range(total):
        best = -1
        best_cur = 0
        for i in idx:
            c = current[i] + ws[i]
            current[i] = c
            if ws[i] and (best < 0 or c > best_cur):
                best = i
                best_cur = c
        current[best] -= total
        seq.append(best)
    return seq


class WeightedPicker(Picker):
    """Smooth weighted round robin over ``ready``, given each endpoint's
    effective integer weight (see :class:`Weighted`).

    With a period of at most :data:`MAX_SEQUENCE` picks the whole sequence
    is computed here, once, and a pick is an index step; otherwise each pick
    runs the O(n) step itself.  Endpoints of weight 0 never come up unless
    every weight is 0, and then it is plain round robin."""

    def __init__(self, ready: Sequence[Any], weights: Sequence[int] | None = None) -> None:
        super().__init__(ready)
        if weights is None:
            weights = [ep.weight for ep in self.ready]
        if len(weights) != len(self.ready):
            raise ValueError("one weight per endpoint")
        self._next = 0
        # the O(n) fallback's state (unused when the sequence is precomputed)
        self._weights: list[int] = []
        self._current: list[int] = []
        self._total = 0
        self._seq: list[Any]
        if not any(weights):
            # all 0 (or nothing ready): plain round robin over all of them
            self._seq = list(self.ready)
            return
        g = 0
        for w in weights:
            g = math.gcd(g, w)
        period = sum(weights) // g
        if period <= MAX_SEQUENCE:
            ready_list = self.ready
            self._seq = [ready_list[i] for i in swrr_sequence(weights)]
        else:
            # kept out of the common path: pick() tests for an empty _seq
            self._seq = []
            self._weights = [w // g for w in weights]
            self._current = [0] * len(weights)
            self._total = period

    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        seq = self._seq
        if seq:
            i = self._next
            self._next = i + 1 if i + 1 < len(seq) else 0
            return seq[i]
        if not self._total:
            return None  # nothing ready
        return self._step()

    def _step(self) -> Any:
        # nginx's step, for periods too long to precompute
        weights = self._weights
        current = self._current
        best = -1
        best_cur = 0
        for i, w in enumerate(weights):
            c = current[i] + w
            current[i] = c
            if w and (best < 0 or c > best_cur):
                best = i
                best_cur = c
        current[best] -= self._total
        return self.ready[best]

    @property
    def period(self) -> int:
        """Picks after which the sequence repeats."""
        return len(self._seq) if self._seq else self._total


class Weighted(Balancer):
    """``weighted``: smooth weighted round robin over the instances'
    weights (nginx's algorithm), so a server of weight 5 next to two of
    weight 1 gets ``a a b a c a a``: its share, interleaved rather than in
    bursts.

    A server's weight is split over its ready connection slots: endpoints
    sharing a ``key`` together get their key's weight, so opening more
    connections to a server does not raise its share.  (Each slot's
    effective weight is ``weight x L / slots``, ``L`` the least common
    multiple of the slot counts, which keeps the arithmetic in integers; it
    is ``weight`` itself when every server has one slot, or the same number.)
    Weight 0 servers get no calls unless every ready server has weight 0,
    and then calls go round robin.

    Each picker continues the previous one's position in its sequence (as
    :class:`~fastrpc.balancing.RoundRobin` does), so a rebuild does not
    restart every server's count.
    """

    name = "weighted"

    def __init__(self) -> None:
        self._last: WeightedPicker | None = None

    def picker(self, ready: Sequence[Any]) -> WeightedPicker:
        ready = list(ready)
        p = WeightedPicker(ready, effective_weights(ready))
        last = self._last
        if last is not None and p._seq:
            p._next = last._next % len(p._seq)
        self._last = p
        return p


def effective_weights(ready: Sequence[Any]) -> list[int]:
    """Each endpoint's integer weight with its key's weight split evenly
    over that key's endpoints in ``ready`` (see :class:`Weighted`)."""
    slots: dict[str, int] = {}
    for ep in ready:
        slots[ep.key] = slots.get(ep.key, 0) + 1
    lcm = 1
    for k in set(slots.values()):
        lcm = lcm * k // math.gcd(lcm, k)
    return [max(0, int(ep.weight)) * (lcm // slots[ep.key]) for ep in ready]
