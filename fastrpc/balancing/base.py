"""What every balancer is made of: instances, per-endpoint load, pickers.

A client that spreads calls over several servers (a :class:`~fastrpc.Pool`,
or ``AsyncClient``/``Client`` given a target) keeps one *endpoint* per
connection slot.  Whenever the set of ready endpoints changes it asks its
:class:`Balancer` for a new :class:`Picker` over them; the picker chooses
one endpoint per call, without locks and without waiting (it is replaced,
never updated).

The endpoints a picker sees are duck-typed; each has:

* ``key``: the instance's address as a string (``"tcp://10.0.0.7:7000"``);
  several connection slots to one server share it;
* ``weight`` (int >= 0), ``version`` (str), ``tags`` (dict of str),
  ``metadata`` (dict): what the registry says about the instance
  (:class:`Instance`);
* ``load``: a :class:`Load`, what the client measured (latency, failures);
  filled only when the balancer sets :attr:`Balancer.feedback` (or outlier
  detection is on): otherwise nothing is measured and calls cost nothing
  more;
* ``in_flight``: calls waiting for an answer on its connection now;
* optionally ``in_flight_counter()``: a function of no arguments that
  returns ``in_flight``, valid for the life of the picker it is given to
  (pickers on every call's path call it rather than read the property:
  :func:`in_flight_counter`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["Balancer", "Instance", "Load", "Picker", "RoundRobin", "RoundRobinPicker", "in_flight_counter"]


def in_flight_counter(endpoint: Any) -> Callable[[], int]:
    """A function of no arguments returning ``endpoint``'s calls in flight:
    its own ``in_flight_counter()`` where it has one, else one that reads
    its ``in_flight``."""
    own = getattr(endpoint, "in_flight_counter", None)
    if own is not None:
        return own()  # type: ignore[no-any-return]
    return lambda: endpoint.in_flight  # type: ignore[no-any-return]


class Instance:
    """One server a client may call, as a resolver reports it.

    Parameters:
        address: where to connect (``host:port``, ``tcp://``, ``tls://``,
            ``unix:``).
        weight: its share of calls relative to its peers (weighted and
            consistent-hash balancers use it); 0 takes no calls while
            others can.
        version: a version label (routing rules match it).
        tags: labels (``{"zone": "a"}``; routing rules match them).
        metadata: anything else the registry holds.
    """

    __slots__ = ("address", "weight", "version", "tags", "metadata")

    def __init__(
        self,
        address: str,
        weight: int = 1,
        version: str = "",
        tags: Optional[Mapping[str, str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if weight < 0:
            raise ValueError("weight must be >= 0")
        self.address = str(address)
        self.weight = int(weight)
        self.version = str(version)
        self.tags: Dict[str, str] = dict(tags or {})
        self.metadata: Dict[str, Any] = dict(metadata or {})

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Instance)
            and self.address == other.address
            and self.weight == other.weight
            and self.version == other.version
            and self.tags == other.tags
            and self.metadata == other.metadata
        )

    def __hash__(self) -> int:
        return hash((self.address, self.weight, self.version))

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}" for k, v in (("weight", self.weight), ("version", self.version), ("tags", self.tags)) if v not in (1, "", {})
        )
        return f"Instance({self.address!r}{extra})"


#: the latency a picker assumes for an endpoint with calls in flight and no
#: answer measured yet (seconds): high, so that a new endpoint is tried
#: once before it gets a crowd (Finagle's penalty)
PENALTY = 1.0


class Load:
    """What a client measured about one endpoint.

    ``latency`` is a peak-sensitive moving average (Finagle's peak EWMA): a
    slower answer than the average raises it at once, faster ones pull it
    down with a time constant of ``decay`` seconds (default 1: Finagle's
    10 s kept a server that answered late once, because its client thread
    waited for the GIL, looking slow for most of a short run), and time without
    answers decays it toward zero, so that an endpoint once slow is tried
    again.  ``calls``, ``failures`` and ``consecutive_failures`` feed outlier
    detection; the ejection fields belong to it.
    """

    __slots__ = (
        "_cost",
        "_stamp",
        "decay",
        "calls",
        "failures",
        "consecutive_failures",
        "ejected_until",
        "times_ejected",
    )

    def __init__(self, decay: float = 1.0) -> None:
        self.decay = float(decay)
        self._cost = 0.0
        self._stamp = time.monotonic()
        #: answers since the outlier detector last looked (it resets them)
        self.calls = 0
        self.failures = 0
        #: failures in a row (any success resets it)
        self.consecutive_failures = 0
        #: monotonic time until which the endpoint is ejected (0: it is not)
        self.ejected_until = 0.0
        #: ejections so far (the next one lasts longer)
        self.times_ejected = 0

    def observe(self, seconds: float, ok: bool = True, now: Optional[float] = None) -> None:
        """Record one answered call: its latency and whether it failed in a
        way that counts against the server."""
        if now is None:
            now = time.monotonic()
        cost = self._decayed(now)
        if seconds > cost:
            self._cost = seconds
        else:
            w = math.exp(-(now - self._stamp) / self.decay) if now > self._stamp else 1.0
            self._cost = cost * w + seconds * (1.0 - w)
        self._stamp = now
        self.calls += 1
        if ok:
            self.consecutive_failures = 0
        else:
            self.failures += 1
            self.consecutive_failures += 1

    def _decayed(self, now: float) -> float:
        dt = now - self._stamp
        if dt <= 0.0 or self._cost == 0.0:
            return self._cost
        return self._cost * math.exp(-dt / self.decay)

    def latency(self, now: Optional[float] = None) -> float:
        """The current latency estimate in seconds (0: nothing measured)."""
        return self._decayed(time.monotonic() if now is None else now)

    def cost(self, in_flight: int, now: float) -> float:
        """What sending one more call here is expected to cost: latency x
        (calls in flight + 1); an endpoint never measured costs nothing
        while idle and :data:`PENALTY` per call once busy."""
        latency = self._decayed(now)
        if latency == 0.0:
            return PENALTY * in_flight
        return latency * (in_flight + 1)

    def __repr__(self) -> str:
        return f"<Load latency={self.latency() * 1e3:.3f}ms calls={self.calls} failures={self.failures}>"


class Picker:
    """Chooses the endpoint for each call among ready ones.

    Built from the endpoints ready when it is made, and replaced (not
    updated) when any endpoint's state changes, so :meth:`pick` needs no
    locking and never waits.  Subclass it (and :class:`Balancer`) for other
    policies.
    """

    def __init__(self, ready: Sequence[Any]) -> None:
        self.ready: List[Any] = list(ready)

    def pick(self, method: str, args: Any = (), kwargs: Optional[dict] = None, metadata: Optional[dict] = None) -> Any:
        """The endpoint for this call (None: none is ready).  ``args``,
        ``kwargs`` and ``metadata`` are the call's, for pickers that choose
        by content (:class:`~fastrpc.balancing.ConsistentHash`, routing
        rules); do not change them."""
        raise NotImplementedError


class Balancer:
    """A load-balancing policy: makes a :class:`Picker` over the ready
    endpoints each time they change.

    One balancer object serves one client for its lifetime, so it may keep
    state across pickers (a hash ring's points, say).  Subclass it and
    override :meth:`picker`; set :attr:`feedback` to have the client
    measure calls' latency and outcome into each endpoint's :class:`Load`
    (every call, or samples: :attr:`measure_every`; about a microsecond
    per measured call, paid only by clients whose balancer reads it).
    """

    #: the name ``Pool(balancer=...)`` knows it by
    name = ""
    #: whether pickers read ``endpoint.load`` (the client then measures calls)
    feedback = False
    #: with :attr:`feedback`: measure at most one call per ``measure_every``
    #: seconds on each connection (0: every call).  Latency moves slowly
    #: next to call rates, and calls between samples cost nothing more.
    #: Outlier detection, which counts every failure, has every call
    #: measured whatever this says.
    measure_every = 0.0

    def picker(self, ready: Sequence[Any]) -> Picker:
        """A picker over ``ready`` (possibly empty)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RoundRobinPicker(Picker):
    """Each ready endpoint in turn."""

    def __init__(self, ready: Sequence[Any]) -> None:
        super().__init__(ready)
        self._next = 0

    def pick(self, method: str, args: Any = (), kwargs: Optional[dict] = None, metadata: Optional[dict] = None) -> Any:
        ready = self.ready
        if not ready:
            return None
        i = self._next
        self._next = i + 1 if i + 1 < len(ready) else 0
        return ready[i]


class RoundRobin(Balancer):
    """``round_robin``: each ready endpoint in turn (the default).

    A new picker starts where the last one was, so that endpoints coming
    and going do not send every restart's first call to the first
    endpoint."""

    name = "round_robin"

    def __init__(self) -> None:
        self._last: Optional[RoundRobinPicker] = None

    def picker(self, ready: Sequence[Any]) -> Picker:
        p = RoundRobinPicker(ready)
        if self._last is not None and ready:
            p._next = self._last._next % len(ready)
        self._last = p
        return p
