"""Routing rules: send some calls to some servers (gray releases, canaries).

Usage::

    # 10% of calls to version 2, the rest to everything else
    Pool(target, balancer=Routes([Route(share=0.1, version="v2")]))

    # testers' calls to the canary, 1% of the others too; p2c within each set
    Routes(
        [Route(metadata={"tester": "yes"}, tags={"canary": "1"}),
         Route(share=0.01, tags={"canary": "1"})],
        balancer="p2c",
    )
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from .base import Balancer, Picker

__all__ = ["Route", "Routes", "RoutesPicker"]

_MISSING = object()


class Route:
    """One rule: which calls it takes, and which endpoints it sends them to.

    Parameters:
        share: the fraction (0..1) of the calls reaching this rule that it
            takes, at random (None: all of them).
        version: selects endpoints whose ``version`` equals it.
        tags: selects endpoints having all these tags with these values.
        metadata: the rule applies only to calls whose metadata has all
            these items with these values.

    ``version`` and ``tags`` together select the endpoints matching both;
    with neither, the rule selects every ready endpoint.  ``metadata`` and
    ``share`` together: ``share`` of the calls with that metadata.
    """

    __slots__ = ("metadata", "share", "tags", "version")

    def __init__(
        self,
        share: float | None = None,
        version: str | None = None,
        tags: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if share is not None:
            share = float(share)
            if not 0.0 <= share <= 1.0:
                raise ValueError("share must be between 0 and 1")
        self.share = share
        self.version = version
        self.tags: dict[str, str] | None = dict(tags) if tags else None
        self.metadata: dict[str, Any] | None = dict(metadata) if metadata else None

    def selects(self, endpoint: Any) -> bool:
        """Whether ``endpoint`` is one this rule sends calls to."""
        if self.version is not None and endpoint.version != self.version:
            return False
        if self.tags:
            tags = endpoint.tags
            for k, v in self.tags.items():
                if tags.get(k, _MISSING) != v:
                    return False
        return True

    def applies(self, metadata: Mapping[str, Any] | None) -> bool:
        """Whether a call with this metadata may be taken (``share`` aside)."""
        want = self.metadata
        if not want:
            return True
        if not metadata:
            return False
        for k, v in want.items():
            if metadata.get(k, _MISSING) != v:
                return False
        return True

    def __repr__(self) -> str:
        given = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if getattr(self, n) is not None)
        return f"Route({given})"


# (metadata wanted as items or None, share or None, the picker of its set)
_Compiled = tuple[Optional[tuple[tuple[str, Any], ...]], Optional[float], Picker]


class RoutesPicker(Picker):
    """Tries each rule in order; the first that takes the call picks from
    its set, else the default set's picker does."""

    def __init__(self, ready: Sequence[Any], routes: list[_Compiled], default: Picker, rng: Any) -> None:
        super().__init__(ready)
        self._routes = routes
        self._default = default
        self._random = rng

    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        for want, share, picker in self._routes:
            if want is not None:
                if not metadata:
                    continue
                for k, v in want:
                    if metadata.get(k, _MISSING) != v:
                        break
                else:
                    want = None
                if want is not None:
                    continue  # some item missing or different
            if share is not None and self._random() >= share:
                continue  # not this call: on to the next rule
            return picker.pick(method, args, kwargs, metadata)
        return self._default.pick(method, args, kwargs, metadata)


class Routes(Balancer):
    """A balancer that routes calls to subsets of the endpoints by rules
    (:class:`Route`), and balances within each subset with another
    balancer.

    For each call the rules are tried in order.  A rule whose ``metadata``
    does not match the call's is skipped; one with a ``share`` takes that
    fraction of the calls reaching it (so with ``[Route(share=0.1, ...),
    Route(share=0.5, ...)]`` the second gets half of the remaining 90%,
    45% of all calls); a rule with neither takes every call reaching it.
    A call taken by a rule goes to the endpoints the rule selects; when
    none of those is ready, to the default set.  Calls taken by no rule go
    to the *default set*: the ready endpoints no rule selects, or, if
    every ready endpoint is selected by some rule, all of them.

    Shares are drawn at random (a private :class:`random.Random`, seeded
    with ``seed`` if given), not by a counter: a counter would alias with
    periodic call patterns (with a 10% share, a client calling ten methods
    in a loop would send one method always to the new version and the
    others never).  Over 10,000 calls a 10% share comes out within
    10% +- 0.9% with 99.7% probability.

    Parameters:
        routes: the rules, in order.
        balancer: chooses within each set: a name (``"p2c"``), a
            :class:`Balancer` class, or a :class:`Balancer` instance used as
            a template (each set gets a deep copy, so that its state and
            caches are its own).  Default ``round_robin``.
        seed: seeds the share draws (tests).

    :attr:`feedback` is the inner balancer's.
    """

    name = "routes"

    def __init__(
        self,
        routes: Sequence[Route],
        balancer: str | Balancer | type | None = "round_robin",
        seed: int | None = None,
    ) -> None:
        from . import balancer as make_balancer  # the package imports this module

        self.routes: list[Route] = list(routes)
        for r in self.routes:
            if not isinstance(r, Route):
                raise TypeError(f"not a Route: {r!r}")
        self._template: Balancer | None = balancer if isinstance(balancer, Balancer) else None
        first = make_balancer(balancer)  # validates a name or class now
        # one balancer per set (each route's, then the default set's), so
        # that round robin positions, hash caches and the like stay apart
        self._inner: list[Balancer] = [first] + [self._fresh(make_balancer, balancer) for _ in self.routes]
        self.feedback = first.feedback
        self.measure_every = first.measure_every
        self._random = random.Random(seed).random

    def _fresh(self, make: Any, spec: Any) -> Balancer:
        if self._template is not None:
            return copy.deepcopy(self._template)
        return make(spec)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Routes({self.routes!r}, balancer={self._inner[0]!r})"

    def picker(self, ready: Sequence[Any]) -> RoutesPicker:
        ready = list(ready)
        selections = [[ep for ep in ready if r.selects(ep)] for r in self.routes]
        chosen: set[int] = set()
        for sel in selections:
            chosen.update(map(id, sel))
        default_set = [ep for ep in ready if id(ep) not in chosen] or ready
        default = self._inner[-1].picker(default_set)
        compiled: list[_Compiled] = []
        for r, sel, inner in zip(self.routes, selections, self._inner):
            want = tuple(r.metadata.items()) if r.metadata else None
            # an empty selection sends the rule's calls to the default set
            picker = inner.picker(sel) if sel else default
            compiled.append((want, r.share, picker))
        return RoutesPicker(ready, compiled, default, self._random)
