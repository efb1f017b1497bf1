"""Client-side load balancing (``docs/discovery.md``).

A :class:`Balancer` makes a :class:`Picker` over the ready endpoints each
time they change; the picker chooses one per call.  Built in, by name
(``Pool(target, balancer="p2c")``):

* ``round_robin`` (:class:`RoundRobin`, the default): each ready endpoint
  in turn;
* ``random`` (:class:`Random`): a uniformly random ready endpoint;
* ``weighted`` (:class:`Weighted`): smooth weighted round robin over the
  instances' weights;
* ``p2c`` (:class:`P2C`): the cheaper of two random endpoints by peak-EWMA
  latency x (in flight + 1);
* ``consistent_hash`` (:class:`ConsistentHash`): a hash ring, so that calls
  with the same key go to the same server.

Also :class:`Routes` and :class:`Route` (routing rules for gray releases,
around any of these) and :class:`OutlierDetection` (which servers to stop
calling for a while).
"""

from __future__ import annotations

from typing import Any

from .base import Balancer, Instance, Load, Picker, RoundRobin, RoundRobinPicker
from .outlier import DEFAULT_FAILURE_CODES, OutlierDetection
from .p2c import P2C, P2CPicker
from .ring import ConsistentHash, ConsistentHashPicker
from .routing import Route, Routes, RoutesPicker
from .simple import Random, RandomPicker, Weighted, WeightedPicker

__all__ = [
    "BALANCERS",
    "DEFAULT_FAILURE_CODES",
    "P2C",
    "Balancer",
    "ConsistentHash",
    "ConsistentHashPicker",
    "Instance",
    "Load",
    "OutlierDetection",
    "P2CPicker",
    "Picker",
    "Random",
    "RandomPicker",
    "RoundRobin",
    "RoundRobinPicker",
    "Route",
    "Routes",
    "RoutesPicker",
    "Weighted",
    "WeightedPicker",
    "balancer",
]

#: name -> balancer class
BALANCERS: dict[str, type[Balancer]] = {
    RoundRobin.name: RoundRobin,
    Random.name: Random,
    Weighted.name: Weighted,
    P2C.name: P2C,
    ConsistentHash.name: ConsistentHash,
}


def balancer(spec: Any = None) -> Balancer:
    """A balancer from a name (``"p2c"``), a :class:`Balancer` (returned as
    is) or a Balancer class (instantiated); None: ``round_robin``."""
    if spec is None:
        return RoundRobin()
    if isinstance(spec, Balancer):
        return spec
    if isinstance(spec, type) and issubclass(spec, Balancer):
        return spec()
    if isinstance(spec, str):
        try:
            return BALANCERS[spec]()
        except KeyError:
            raise ValueError(f"unknown balancer {spec!r} (known: {', '.join(sorted(BALANCERS))})") from None
    raise TypeError(f"not a balancer: {spec!r}")
