"""Types the payload codec carries beyond msgpack's core set.

* :class:`Timestamp` -- msgpack's Timestamp extension (ext type -1): whole
  seconds since the Unix epoch (int64) plus nanoseconds (0..999,999,999).
  ``datetime.datetime`` values are encoded as the same extension.
* :class:`ExtRegistry` -- user types bound to an ext code (0..127) with a
  ``pack`` function (object -> bytes) and an ``unpack`` function (bytes ->
  object).  :data:`default_registry` is the one every Encoder and Decoder
  uses unless given another (``Encoder(ext=...)``, ``Decoder(ext=...)``), so
  registering a type there (:func:`register_ext`) makes servers and clients
  of this process carry it.

Both codec twins (``_codec.pyx`` and ``_codec_py.py``) use these
definitions, so the two builds cannot drift.  See ``docs/types.md``.
"""

from __future__ import annotations

import datetime as _datetime
import struct
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

__all__ = ["Timestamp", "ExtRegistry", "default_registry", "register_ext", "unregister_ext"]

_UTC = _datetime.timezone.utc
_EPOCH = _datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = _datetime.datetime(1970, 1, 1)
_NS = 1_000_000_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_pack_I = struct.Struct(">I").pack
_pack_Q = struct.Struct(">Q").pack
_pack_Iq = struct.Struct(">Iq").pack
_unpack_I = struct.Struct(">I").unpack
_unpack_Q = struct.Struct(">Q").unpack
_unpack_Iq = struct.Struct(">Iq").unpack

#: Decoder(timestamp=...) choices, in the order of their internal numbers.
TIMESTAMP_MODES = ("timestamp", "float", "ns", "datetime", "ext")
#: Encoder(naive_datetime=...) choices, in the order of their internal numbers.
NAIVE_MODES = ("error", "utc", "local")


class Timestamp:
    """A point in time as msgpack's Timestamp extension (type -1) holds it.

    Parameters:
        seconds: whole seconds since 1970-01-01T00:00:00Z (may be negative;
            int64 range).
        nanoseconds: 0..999,999,999, added to ``seconds``.

    ``Timestamp.from_unix(-2.3)`` is ``Timestamp(-3, 700000000)``: the
    nanoseconds always count forward.  Instances are immutable, hashable and
    ordered; they compare equal when both fields are equal.
    """

    __slots__ = ("_seconds", "_nanoseconds")

    def __init__(self, seconds: int, nanoseconds: int = 0) -> None:
        if not isinstance(seconds, int):
            raise TypeError("seconds must be an integer")
        if not isinstance(nanoseconds, int):
            raise TypeError("nanoseconds must be an integer")
        if not 0 <= nanoseconds < _NS:
            raise ValueError("nanoseconds must be a non-negative integer less than 999999999.")
        if not INT64_MIN <= seconds <= INT64_MAX:
            raise ValueError("seconds must be in the int64 range")
        self._seconds = int(seconds)
        self._nanoseconds = int(nanoseconds)

    @property
    def seconds(self) -> int:
        """Whole seconds since the epoch."""
        return self._seconds

    @property
    def nanoseconds(self) -> int:
        """Nanoseconds past ``seconds`` (0..999,999,999)."""
        return self._nanoseconds

    def __repr__(self) -> str:
        return f"Timestamp(seconds={self._seconds}, nanoseconds={self._nanoseconds})"

    def _key(self) -> Tuple[int, int]:
        return (self._seconds, self._nanoseconds)

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, Timestamp):
            return self._seconds == other._seconds and self._nanoseconds == other._nanoseconds
        return NotImplemented

    def __ne__(self, other: Any) -> Any:
        if isinstance(other, Timestamp):
            return not (self._seconds == other._seconds and self._nanoseconds == other._nanoseconds)
        return NotImplemented

    def __lt__(self, other: Any) -> Any:
        return self._key() < other._key() if isinstance(other, Timestamp) else NotImplemented

    def __le__(self, other: Any) -> Any:
        return self._key() <= other._key() if isinstance(other, Timestamp) else NotImplemented

    def __gt__(self, other: Any) -> Any:
        return self._key() > other._key() if isinstance(other, Timestamp) else NotImplemented

    def __ge__(self, other: Any) -> Any:
        return self._key() >= other._key() if isinstance(other, Timestamp) else NotImplemented

    def __hash__(self) -> int:
        return hash((self._seconds, self._nanoseconds))

    def __reduce__(self):
        return (Timestamp, (self._seconds, self._nanoseconds))

    # -- the wire form ------------------------------------------------------

    @staticmethod
    def from_bytes(b: bytes) -> "Timestamp":
        """The Timestamp in an ext -1 payload of 4, 8 or 12 bytes
        (ValueError for any other length, or nanoseconds >= 10**9)."""
        parts = timestamp_parts(bytes(b))
        if parts is None:
            raise ValueError(
                "Timestamp type can only be created from 32, 64, or 96-bit byte objects "
                "with nanoseconds below 10**9"
            )
        return Timestamp(*parts)

    def to_bytes(self) -> bytes:
        """The ext -1 payload: 4 bytes (seconds in 0..2**32-1, no
        nanoseconds), 8 bytes (seconds in 0..2**34-1) or 12 bytes (anything
        else) -- the smallest form, exactly as msgpack chooses it."""
        return timestamp_payload(self._seconds, self._nanoseconds)

    # -- conversions --------------------------------------------------------

    @staticmethod
    def from_unix(unix_sec: float) -> "Timestamp":
        """From seconds since the epoch (int or float; floor for the seconds)."""
        seconds = int(unix_sec // 1)
        nanoseconds = int((unix_sec % 1) * _NS)
        return Timestamp(seconds, nanoseconds)

    def to_unix(self) -> float:
        """Seconds since the epoch as a float (loses precision far from 1970)."""
        return self._seconds + self._nanoseconds / 1e9

    @staticmethod
    def from_unix_nano(unix_ns: int) -> "Timestamp":
        """From integer nanoseconds since the epoch."""
        return Timestamp(*divmod(unix_ns, _NS))

    def to_unix_nano(self) -> int:
        """Integer nanoseconds since the epoch (exact)."""
        return self._seconds * _NS + self._nanoseconds

    def to_datetime(self) -> _datetime.datetime:
        """An aware UTC ``datetime``; nanoseconds are truncated to
        microseconds (OverflowError outside years 1..9999)."""
        return _EPOCH + _datetime.timedelta(seconds=self._seconds, microseconds=self._nanoseconds // 1000)

    @staticmethod
    def from_datetime(dt: _datetime.datetime) -> "Timestamp":
        """From a ``datetime``, exactly (integer arithmetic).  A naive
        datetime is taken as local time, as ``datetime.timestamp()`` and
        msgpack do (the *encoder* refuses naive datetimes by default)."""
        if dt.tzinfo is None:
            dt = dt.astimezone()
        delta = dt - _EPOCH
        return Timestamp(delta.days * 86400 + delta.seconds, delta.microseconds * 1000)


def timestamp_payload(seconds: int, nanoseconds: int) -> bytes:
    """The ext -1 payload of a timestamp, smallest form first (msgpack's rule)."""
    if seconds >> 34 == 0:  # 0 <= seconds < 2**34
        data64 = nanoseconds << 34 | seconds
        if data64 & 0xFFFFFFFF00000000 == 0:
            return _pack_I(data64)
        return _pack_Q(data64)
    return _pack_Iq(nanoseconds, seconds)


def timestamp_parts(data: bytes) -> Optional[Tuple[int, int]]:
    """``(seconds, nanoseconds)`` of an ext -1 payload; None when it is not a
    valid timestamp (length not 4, 8 or 12, or nanoseconds >= 10**9): the
    decoders then leave it an ext value."""
    n = len(data)
    if n == 4:
        return _unpack_I(data)[0], 0
    if n == 8:
        data64 = _unpack_Q(data)[0]
        seconds, nanoseconds = data64 & 0x3FFFFFFFF, data64 >> 34
    elif n == 12:
        nanoseconds, seconds = _unpack_Iq(data)
    else:
        return None
    if nanoseconds >= _NS:
        return None
    return seconds, nanoseconds


def timestamp_value(mode: int, seconds: int, nanoseconds: int) -> Any:
    """A decoded timestamp as Decoder(timestamp=TIMESTAMP_MODES[mode]) returns
    it (mode 4, ``"ext"``, never reaches here).  Shared by both codec twins."""
    if mode == 0:
        ts = Timestamp.__new__(Timestamp)
        ts._seconds = seconds
        ts._nanoseconds = nanoseconds
        return ts
    if mode == 1:
        return seconds + nanoseconds / 1e9
    if mode == 2:
        return seconds * _NS + nanoseconds
    try:
        return _EPOCH + _datetime.timedelta(seconds=seconds, microseconds=nanoseconds // 1000)
    except OverflowError:
        raise ValueError(f"timestamp {seconds}s is outside the years datetime supports (1..9999)") from None


def datetime_parts(dt: _datetime.datetime, naive: int) -> Optional[Tuple[int, int]]:
    """``(seconds, nanoseconds)`` of a datetime as the encoder writes it;
    None for a naive datetime when ``naive`` is 0 (``"error"``).  ``naive``
    1 (``"utc"``) reads a naive datetime as UTC, 2 (``"local"``) as local time."""
    if dt.tzinfo is None:
        if naive == 1:
            delta = dt - _EPOCH_NAIVE
        elif naive == 2:
            delta = dt.astimezone() - _EPOCH
        else:
            return None
    else:
        delta = dt - _EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def mode_number(name: str, value: Any, choices: Tuple[str, ...]) -> int:
    """The internal number of an option given by name (ValueError otherwise)."""
    try:
        return choices.index(value)
    except ValueError:
        pass
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, not {value!r}")


# --------------------------------------------------------------------------
# Registration of user types


# Types the encoders handle before they look at a registry: registering one
# could never take effect.
_NATIVE = (type(None), bool, int, float, str, bytes, list, tuple, dict)


class ExtRegistry:
    """User types bound to msgpack ext codes, for one or more codecs.

    ``register(cls, code, pack=..., unpack=...)``: an encoder using this
    registry writes an object whose type is exactly ``cls`` as ext ``code``
    with payload ``pack(obj)`` (bytes-like); a decoder using it turns ext
    ``code`` back into ``unpack(payload)``.  Codes are 0..127 (the negative
    ones are msgpack's; -1 is the timestamp).  A type or code registered
    twice is a ValueError unless ``replace=True``.

    Lookups happen only for values that are none of msgpack's own types, so
    a registry costs nothing to values that do not use it.
    """

    __slots__ = ("_types", "_codes", "__weakref__")

    def __init__(self) -> None:
        # Read directly by the codecs; mutated in place, never replaced.
        self._types: Dict[type, Tuple[int, Callable[[Any], Any]]] = {}
        self._codes: Dict[int, Tuple[type, Callable[[bytes], Any]]] = {}

    def register(
        self,
        cls: type,
        code: int,
        *,
        pack: Callable[[Any], Any],
        unpack: Callable[[bytes], Any],
        replace: bool = False,
    ) -> type:
        """Bind ``cls`` to ext ``code``; returns ``cls``."""
        if not isinstance(cls, type):
            raise TypeError(f"register() needs a class, not {cls!r}")
        if cls in _NATIVE:
            raise ValueError(f"{cls.__name__} is encoded natively and cannot be registered")
        if type(code) is not int or not 0 <= code <= 127:
            raise ValueError(f"ext code must be an int in 0..127, not {code!r}")
        if not callable(pack) or not callable(unpack):
            raise TypeError("pack and unpack must be callables")
        if not replace:
            old = self._codes.get(code)
            if old is not None and old[0] is not cls:
                raise ValueError(f"ext code {code} is already registered for {old[0].__qualname__}")
            old_code = self._types.get(cls)
            if old_code is not None and old_code[0] != code:
                raise ValueError(f"{cls.__qualname__} is already registered with ext code {old_code[0]}")
        self.unregister(cls)
        old = self._codes.pop(code, None)
        if old is not None:
            self._types.pop(old[0], None)
        self._types[cls] = (code, pack)
        self._codes[code] = (cls, unpack)
        return cls

    def unregister(self, cls: type) -> None:
        """Forget ``cls`` (and its code); nothing happens if it is unknown."""
        entry = self._types.pop(cls, None)
        if entry is not None:
            self._codes.pop(entry[0], None)

    def code_of(self, cls: type) -> Optional[int]:
        """The ext code ``cls`` is registered with, or None."""
        entry = self._types.get(cls)
        return None if entry is None else entry[0]

    def type_of(self, code: int) -> Optional[type]:
        """The class registered for ext ``code``, or None."""
        entry = self._codes.get(code)
        return None if entry is None else entry[0]

    def __contains__(self, cls: Any) -> bool:
        return cls in self._types

    def __iter__(self) -> Iterator[Tuple[type, int]]:
        return iter([(cls, entry[0]) for cls, entry in self._types.items()])

    def __len__(self) -> int:
        return len(self._types)

    def copy(self) -> "ExtRegistry":
        """A registry with the same registrations (later changes not shared)."""
        other = ExtRegistry()
        other._types.update(self._types)
        other._codes.update(self._codes)
        return other

    def __repr__(self) -> str:
        items = ", ".join(f"{cls.__qualname__}={code}" for cls, code in self)
        return f"ExtRegistry({items})"


#: The registry of every Encoder and Decoder built without ``ext=``.
default_registry = ExtRegistry()


def register_ext(
    cls: type,
    code: int,
    *,
    pack: Callable[[Any], Any],
    unpack: Callable[[bytes], Any],
    replace: bool = False,
) -> type:
    """Register ``cls`` in :data:`default_registry` (see :meth:`ExtRegistry.register`)."""
    return default_registry.register(cls, code, pack=pack, unpack=unpack, replace=replace)


def unregister_ext(cls: type) -> None:
    """Remove ``cls`` from :data:`default_registry`."""
    default_registry.unregister(cls)


def registry_of(ext: Any) -> ExtRegistry:
    """The registry an ``ext=`` argument names: None is the default one."""
    if ext is None:
        return default_registry
    if not isinstance(ext, ExtRegistry):
        raise TypeError(f"ext must be an ExtRegistry or None, not {type(ext).__name__}")
    return ext
