"""``consistent_hash``: calls with the same key go to the same server.

A hash ring with virtual nodes (Karger et al.; libketama's layout): each
server puts ``weight x replicas`` points on a 64-bit ring, and a call's key
goes to the server owning the first point at or after the key's hash.
Adding or removing one of N servers moves only the keys between its points
and their predecessors, about 1/N of them; the other keys stay where they
were.

Hashes are stable across processes and machines (BLAKE2b, not Python's
salted ``hash()``), so every client of a service sends a key to the same
server.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any, Callable, Optional, Union

from .base import Balancer, Picker

__all__ = ["DEFAULT_METADATA_KEY", "ConsistentHash", "ConsistentHashPicker", "hash64", "key_bytes"]

#: the metadata item that keys calls when :class:`ConsistentHash` is given
#: no key source (``balancer="consistent_hash"`` by name)
DEFAULT_METADATA_KEY = "hash-key"

#: what a ``key`` callable returns (None: the call has no key)
CallKey = Union[str, bytes, int, None]
KeyFunction = Callable[[str, Any, Optional[dict], Optional[dict]], CallKey]

_from_bytes = int.from_bytes
#: call-key hashes kept by a balancer (BLAKE2b costs ~0.4 us, a dict hit
#: ~0.05 us, and calls tend to repeat keys); past it the cache starts over
HASH_CACHE_SIZE = 4096


def hash64(data: bytes) -> int:
    """A 64-bit hash of ``data``, the same in every process and on every
    machine (BLAKE2b with an 8-byte digest)."""
    return _from_bytes(blake2b(data, digest_size=8).digest(), "big")


def key_bytes(value: Any) -> bytes | None:
    """The bytes a call key hashes as: bytes as they are, str as UTF-8,
    int (and anything else) as its ``str()`` in UTF-8, so ``42`` and
    ``"42"`` are the same key; None is no key.  A key of another type must
    have a ``str()`` that is the same in every process (not the default
    ``<object at 0x...>``)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return str(value).encode("utf-8", "surrogatepass")


class ConsistentHashPicker(Picker):
    """Looks each call's key up on a sorted ring of points.

    Built by :class:`ConsistentHash`: ``points`` are sorted hashes,
    ``owners[i]`` the index in ``groups`` of the server owning
    ``points[i]``, ``groups`` each server's ready slots (calls of one key
    rotate over them).  Calls without a key go round robin over the slots
    of the servers on the ring.
    """

    def __init__(
        self,
        ready: Sequence[Any],
        points: list[int],
        owners: list[int],
        groups: list[list[Any]],
        balancer: ConsistentHash,
    ) -> None:
        super().__init__(ready)
        self._points = points
        self._owners = owners
        self._groups = groups
        self._turns = [0] * len(groups)
        self._n = len(points)
        self._balancer = balancer
        # keyless calls: round robin over the servers on the ring (weight 0
        # ones take no calls while others can)
        self._rr = [ep for slots in groups for ep in slots]
        self._next = 0

    def pick(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        if not self._n:
            return None
        h = self._balancer.hash_of(method, args, kwargs, metadata)
        if h is None:
            # no key: round robin, so keyless calls still spread
            rr = self._rr
            i = self._next
            self._next = i + 1 if i + 1 < len(rr) else 0
            return rr[i]
        i = bisect_left(self._points, h)
        if i == self._n:
            i = 0  # past the last point: the ring wraps to the first
        g = self._owners[i]
        slots = self._groups[g]
        if len(slots) == 1:
            return slots[0]
        t = self._turns[g]
        self._turns[g] = t + 1
        return slots[t % len(slots)]

    def owner(self, key: Any) -> Any | None:
        """The server key (``endpoint.key``) a call key maps to, without
        rotating slots (None: nothing ready)."""
        data = key_bytes(key)
        if not self._n or data is None:
            return None
        i = bisect_left(self._points, hash64(data))
        return self._groups[self._owners[i if i < self._n else 0]][0].key


class ConsistentHash(Balancer):
    """``consistent_hash``: a hash ring with virtual nodes.

    Parameters (the key of a call is the first of these, in this order,
    that is given and yields a value other than None):

        key: ``key(method, args, kwargs, metadata) -> str | bytes | int |
            None``.
        metadata_key: the name of a metadata item (``"user-id"``).
        arg: a positional argument's index (``0``), or a keyword
            argument's name (``"user_id"``: looked up in ``kwargs`` only).
        replicas: ring points per unit of weight (default 160): more
            spread keys more evenly over servers, at more memory and a
            slower rebuild.

    With none of ``key``, ``metadata_key`` and ``arg`` given, the metadata
    item :data:`DEFAULT_METADATA_KEY` (``"hash-key"``) keys calls.  A call
    whose key is None (missing item, too few arguments) goes round robin
    over the ready endpoints (of weight > 0): it has no home, and sending all such calls
    to one server would overload it.

    The ring is keyed by server (``endpoint.key``): connection slots of one
    server share its points, and the calls of a key rotate over that
    server's ready slots.  A server of weight ``w`` has ``w x replicas``
    points (weight 0: none, unless every ready server has weight 0, then
    each counts as weight 1).  Point ``i`` of a server hashes
    ``"<key>#<i>"``, so a server's points do not depend on its peers and
    raising a weight only adds points.  The balancer keeps each server's
    points across pickers (a rebuild only sorts), and the hashes of recent
    call keys.
    """

    name = "consistent_hash"

    def __init__(
        self,
        key: KeyFunction | None = None,
        metadata_key: str | None = None,
        arg: int | str | None = None,
        replicas: int = 160,
    ) -> None:
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        if key is not None and not callable(key):
            raise TypeError("key must be a callable")
        if arg is not None and not isinstance(arg, (int, str)):
            raise TypeError("arg must be an int (position) or a str (keyword)")
        if key is None and metadata_key is None and arg is None:
            metadata_key = DEFAULT_METADATA_KEY
        self.key = key
        self.metadata_key = metadata_key
        self.arg = arg
        self.replicas = int(replicas)
        # server key -> its ring points so far (point i at index i)
        self._points: dict[str, list[int]] = {}
        # call key (str or bytes) -> hash64 of it (bounded, see HASH_CACHE_SIZE)
        self._hashes: dict[str | bytes, int] = {}
        self._metadata_only = key is None and arg is None

    def __repr__(self) -> str:
        given = [f"{n}={v!r}" for n, v in (("key", self.key), ("metadata_key", self.metadata_key), ("arg", self.arg)) if v is not None]
        return f"ConsistentHash({', '.join(given)}, replicas={self.replicas})"

    # -- keys -----------------------------------------------------------------------

    def call_key(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> Any:
        """The key of a call (None: it has none)."""
        if self.key is not None:
            value = self.key(method, args, kwargs, metadata)
            if value is not None:
                return value
        if self.metadata_key is not None and metadata:
            value = metadata.get(self.metadata_key)
            if value is not None:
                return value
        arg = self.arg
        if arg is not None:
            if isinstance(arg, str):
                return kwargs.get(arg) if kwargs else None
            if args is not None and -len(args) <= arg < len(args):
                return args[arg]
        return None

    def hash_of(self, method: str, args: Any = (), kwargs: dict | None = None, metadata: dict | None = None) -> int | None:
        """The ring position of a call's key (None: it has none)."""
        # the common case inlined (metadata key only): this is on every
        # call's path, and each Python call level costs ~50 ns
        if self._metadata_only:
            value = metadata.get(self.metadata_key) if metadata else None
        else:
            value = self.call_key(method, args, kwargs, metadata)
        if value is None:
            return None
        cache = self._hashes
        # only str and bytes keys are cached as they are: among other types
        # equal values can hash differently as text (1 == 1.0 == True)
        t = type(value)
        if t is str or t is bytes:
            h = cache.get(value)
            if h is not None:
                return h
            data = value.encode("utf-8", "surrogatepass") if t is str else value
            h = _from_bytes(blake2b(data, digest_size=8).digest(), "big")
            if len(cache) >= HASH_CACHE_SIZE:
                cache.clear()  # crude but O(1) amortised; hot keys return at once
            cache[value] = h
            return h
        data = key_bytes(value)
        return None if data is None else hash64(data)

    # -- the ring -------------------------------------------------------------------

    def _server_points(self, key: str, count: int) -> list[int]:
        points = self._points.get(key)
        if points is None:
            points = self._points[key] = []
        if len(points) < count:
            prefix = key.encode("utf-8", "surrogatepass") + b"#"
            points.extend(hash64(prefix + str(i).encode()) for i in range(len(points), count))
        return points

    def picker(self, ready: Sequence[Any]) -> ConsistentHashPicker:
        ready = list(ready)
        by_key: dict[str, list[Any]] = {}
        weight: dict[str, int] = {}
        for ep in ready:
            by_key.setdefault(ep.key, []).append(ep)
            # slots of one server should agree; take the largest if not
            weight[ep.key] = max(weight.get(ep.key, 0), max(0, int(ep.weight)))
        if by_key and not any(weight.values()):
            weight = dict.fromkeys(weight, 1)
        # group indices by sorted server key, so that (improbable) equal
        # points sort the same way in every client
        keys = sorted(k for k in by_key if weight[k] > 0)
        groups = [by_key[k] for k in keys]
        marked: list[int] = []
        shift = max(1, len(keys)).bit_length()
        for g, k in enumerate(keys):
            for h in self._server_points(k, weight[k] * self.replicas)[: weight[k] * self.replicas]:
                # one int per point, (hash, group) packed: sorts faster than tuples
                marked.append((h << shift) | g)
        marked.sort()
        mask = (1 << shift) - 1
        points = [m >> shift for m in marked]
        owners = [m & mask for m in marked]
        # forget servers gone for good, but not those that merely flap
        if len(self._points) > 2 * len(by_key) + 64:
            self._points = {k: v for k, v in self._points.items() if k in by_key}
        return ConsistentHashPicker(ready, points, owners, groups, self)
