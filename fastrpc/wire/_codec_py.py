"""Pure-Python payload codec (msgpack-compatible).

The reference twin of ``_codec.pyx``: same classes, same arguments, same
bytes out, same exceptions.  Used when the extensions are not built or
``FASTRPC_NO_EXTENSIONS=1`` is set (selection happens in ``_impl.py``).

Encoding follows ``msgpack.packb(obj, use_bin_type=True)`` byte for byte:
smallest integer form, float64, str8/16/32 for text, bin8/16/32 for bytes.
Decoding is bounded for untrusted input: every claimed length is checked
against the bytes actually present before anything is allocated, nesting
is limited by ``max_depth``, and optional per-kind length limits apply.

Beyond msgpack's core types (see ``docs/types.md``): ``datetime`` and
:class:`~fastrpc.wire.ext.Timestamp` as ext -1, user types registered in an
:class:`~fastrpc.wire.ext.ExtRegistry`, ``default`` for any other value
(ints past 64 bits included), ``object_hook``, ``use_list`` and
``timestamp`` on decode.
"""

from __future__ import annotations

import math
import struct
from datetime import datetime as _DateTime
from operator import attrgetter
from typing import Any, Callable, Optional

from .constants import DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, ExtType
from ..errors import DecodeError, EncodeError, ExtraData, InvalidUTF8, NestingTooDeep
from .ext import (
    NAIVE_MODES,
    TIMESTAMP_MODES,
    Timestamp,
    datetime_parts,
    mode_number,
    registry_of,
    timestamp_parts,
    timestamp_value,
)

__all__ = ["Encoder", "Decoder", "packb", "unpackb", "ExtType", "Timestamp"]

_pack_B = struct.Struct(">B").pack
_pack_H = struct.Struct(">H").pack
_pack_I = struct.Struct(">I").pack
_pack_Q = struct.Struct(">Q").pack
_pack_b = struct.Struct(">b").pack
_pack_h = struct.Struct(">h").pack
_pack_i = struct.Struct(">i").pack
_pack_q = struct.Struct(">q").pack
_pack_d = struct.Struct(">d").pack
# A type byte and its uint16/uint32 in one pack (one bytes object, not three).
_pack_cd = struct.Struct(">BH").pack
_pack_ce = struct.Struct(">BI").pack

_unpack_H = struct.Struct(">H").unpack_from
_unpack_I = struct.Struct(">I").unpack_from
_unpack_Q = struct.Struct(">Q").unpack_from
_unpack_b = struct.Struct(">b").unpack_from
_unpack_h = struct.Struct(">h").unpack_from
_unpack_i = struct.Struct(">i").unpack_from
_unpack_q = struct.Struct(">q").unpack_from
_unpack_f = struct.Struct(">f").unpack_from
_unpack_d = struct.Struct(">d").unpack_from

_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}

#: ``bytes`` values at least this long are held by reference in a RefBuffer
BIN_REF_MIN = 64 * 1024


class RefBuffer(bytearray):
    """Output buffer of the pure FrameWriter (the compiled one's ``WBuf``
    with ``refs``): while ``refs`` is a list, the encoder writes only the
    header of a ``bytes`` value of at least :data:`BIN_REF_MIN` bytes and
    appends ``(offset, value)`` to it; the value goes out by reference, its
    bytes logically at ``offset``."""

    __slots__ = ("refs",)

    def __init__(self) -> None:
        super().__init__()
        self.refs: Optional[list] = []


def _max_depth_property() -> property:
    # Encoder.max_depth and Decoder.max_depth.  Checked when assigned, as in
    # the compiled twin: any real number is compared with depths as it is
    # (the compiled twin rounds it up, which compares the same), anything
    # else, None included, is a TypeError here and leaves the old value.
    # The encoder and decoder read the copy in _max_depth, an instance
    # attribute, as fast to read as the plain attribute this used to be.
    def set_max_depth(self: Any, value: Any) -> None:
        if not isinstance(value, int):
            try:
                math.ceil(value)
            except (ValueError, OverflowError):  # nan, inf: comparisons still work
                pass
            except TypeError:
                raise TypeError(f"max_depth must be an int, not {type(value).__name__}") from None
        self._max_depth = value

    return property(attrgetter("_max_depth"), set_max_depth, doc="deepest container nesting accepted")


def _limit_property(name: str) -> property:
    # A Decoder length limit, with the constructor's rules when assigned
    # later too: None means no limit (stored, and read back, as
    # 4294967295, as in the compiled twin), a real number is compared with
    # lengths as it is, anything else is a TypeError here and leaves the old
    # value.  The decoder reads the copy in "_" + name (see _max_depth_property).
    private = "_" + name

    def set_limit(self: Any, value: Any) -> None:
        _check_limit(name, value)
        setattr(self, private, _NO_LIMIT if value is None else value)

    return property(attrgetter(private), set_limit, doc=f"{name} (4294967295: no limit)")


class Encoder:
    """Encodes Python values as msgpack.

    Parameters:
        max_depth: deepest container nesting accepted (guards against
            cyclic structures); deeper values raise :class:`EncodeError`.
        default: called with any value of an unsupported type, and with
            ints outside -2**63..2**64-1; must return an encodable
            replacement (for instance an :class:`ExtType`).
        ext: the :class:`~fastrpc.wire.ext.ExtRegistry` of user types
            (None: :data:`~fastrpc.wire.ext.default_registry`).
        datetime: encode ``datetime.datetime`` as a timestamp (ext -1);
            False leaves them to ``default``.
        naive_datetime: a datetime without tzinfo is ``"error"`` (handed to
            ``default``, else :class:`EncodeError`), ``"utc"`` or ``"local"``.
    """

    max_depth = _max_depth_property()

    def __init__(
        self,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        default: Optional[Callable[[Any], Any]] = None,
        ext: Any = None,
        datetime: bool = True,
        naive_datetime: str = "error",
    ) -> None:
        _check_depth(max_depth)
        self.max_depth = max_depth
        self.default = default
        self._registry = registry_of(ext)
        self._ext_types = self._registry._types
        self._naive = mode_number("naive_datetime", naive_datetime, NAIVE_MODES)
        self._datetime = bool(datetime)

    @property
    def ext(self) -> Any:
        """The registry of user types this encoder consults."""
        return self._registry

    @property
    def datetime(self) -> bool:
        """Whether datetimes are encoded as timestamps."""
        return self._datetime

    @property
    def naive_datetime(self) -> str:
        """How a datetime without tzinfo is treated."""
        return NAIVE_MODES[self._naive]

    def encode(self, obj: Any) -> bytes:
        """Return the msgpack encoding of ``obj``."""
        buf = bytearray()
        self.pack_into(buf, obj)
        return bytes(buf)

    def pack_into(self, buf: bytearray, obj: Any) -> None:
        """Append the encoding of ``obj`` to ``buf``.

        On error ``buf`` is restored to its length before the call.
        """
        start = len(buf)
        try:
            t = type(obj)
            # Call arguments and int answers, the commonest payloads, skip
            # _pack's dispatch.
            if t is tuple or t is list:
                self._pack_array(buf, obj, 0)
            elif t is int:
                try:
                    _pack_int(buf, obj)
                except _IntRange as exc:
                    self._pack_default(buf, obj, 0, str(exc))
            else:
                self._pack(buf, obj, 0)
        except RecursionError:
            del buf[start:]
            raise EncodeError("value nested too deeply for the Python stack") from None
        except BaseException:
            del buf[start:]
            raise

    def _pack(self, buf: bytearray, obj: Any, depth: int) -> None:
        t = type(obj)
        if t is int:
            try:
                _pack_int(buf, obj)
            except _IntRange as exc:
                self._pack_default(buf, obj, depth, str(exc))
        elif t is str:
            _pack_str(buf, obj)
        elif obj is None:
            buf.append(0xC0)
        elif t is bool:
            buf.append(0xC3 if obj else 0xC2)
        elif t is float:
            buf += b"\xcb" + _pack_d(obj)
        elif t is bytes:
            if len(obj) >= BIN_REF_MIN and type(buf) is RefBuffer and buf.refs is not None:
                _pack_bin_header(buf, len(obj))
                buf.refs.append((len(buf), obj))
            else:
                _pack_bin(buf, obj)
        elif t is list or t is tuple:
            self._pack_array(buf, obj, depth)
        elif t is dict:
            self._pack_map(buf, obj, depth)
        else:
            self._pack_other(buf, obj, depth)

    def _pack_array(self, buf: bytearray, obj: Any, depth: int) -> None:
        if depth >= self._max_depth:
            raise EncodeError(f"nesting deeper than max_depth={self._max_depth}")
        n = len(obj)
        if n < 16:
            buf.append(0x90 | n)
        elif n <= 0xFFFF:
            buf += b"\xdc" + _pack_H(n)
        elif n <= 0xFFFFFFFF:
            buf += b"\xdd" + _pack_I(n)
        else:
            raise EncodeError("array too long for msgpack")
        depth += 1
        pack = self._pack
        for item in obj:
            if type(item) is int:
                # The commonest item, with no dispatch; a positive fixint inline.
                if 0 <= item < 0x80:
                    buf.append(item)
                else:
                    try:
                        _pack_int(buf, item)
                    except _IntRange as exc:
                        self._pack_default(buf, item, depth, str(exc))
            else:
                pack(buf, item, depth)

    def _pack_map(self, buf: bytearray, obj: Any, depth: int) -> None:
        if depth >= self._max_depth:
            raise EncodeError(f"nesting deeper than max_depth={self._max_depth}")
        n = len(obj)
        if n < 16:
            buf.append(0x80 | n)
        elif n <= 0xFFFF:
            buf += b"\xde" + _pack_H(n)
        elif n <= 0xFFFFFFFF:
            buf += b"\xdf" + _pack_I(n)
        else:
            raise EncodeError("map too long for msgpack")
        depth += 1
        pack = self._pack
        for k, v in obj.items():
            pack(buf, k, depth)
            pack(buf, v, depth)

    def _pack_other(self, buf: bytearray, obj: Any, depth: int) -> None:
        # Subclasses and less common types; order matters: registered types
        # first (exact type), bool before int, ExtType (a tuple subclass)
        # before tuple.
        if self._ext_types:
            entry = self._ext_types.get(type(obj))
            if entry is not None:
                _pack_registered(buf, obj, entry)
                return
        if isinstance(obj, bool):
            buf.append(0xC3 if obj else 0xC2)
        elif isinstance(obj, int):
            try:
                _pack_int(buf, int(obj))
            except _IntRange as exc:
                self._pack_default(buf, obj, depth, str(exc))
        elif isinstance(obj, float):
            buf += b"\xcb" + _pack_d(float(obj))
        elif isinstance(obj, str):
            _pack_str(buf, str(obj))
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            _pack_bin(buf, obj)
        elif isinstance(obj, ExtType):
            _pack_ext(buf, obj.code, obj.data)
        elif isinstance(obj, (list, tuple)):
            self._pack_array(buf, obj, depth)
        elif isinstance(obj, dict):
            self._pack_map(buf, obj, depth)
        elif isinstance(obj, Timestamp):
            _pack_timestamp(buf, obj._seconds, obj._nanoseconds)
        elif self._datetime and isinstance(obj, _DateTime):
            parts = datetime_parts(obj, self._naive)
            if parts is None:
                self._pack_default(buf, obj, depth, _naive_message(obj))
            else:
                _pack_timestamp(buf, parts[0], parts[1])
        else:
            self._pack_default(buf, obj, depth, f"cannot encode object of type {type(obj).__name__}")

    def _pack_default(self, buf: bytearray, obj: Any, depth: int, message: str) -> None:
        # The value has no encoding of its own: its replacement by the default
        # hook, or EncodeError(message).
        if self.default is None:
            raise EncodeError(message)
        if depth >= self._max_depth:
            raise EncodeError(f"nesting deeper than max_depth={self._max_depth}")
        replacement = self.default(obj)
        if type(replacement) is type(obj) and replacement is obj:
            raise EncodeError(f"cannot encode object of type {type(obj).__name__}")
        self._pack(buf, replacement, depth + 1)


class _IntRange(EncodeError):
    # An int outside msgpack's range: handed to the default hook if any.
    pass


def _naive_message(obj: Any) -> str:
    return (
        f"cannot encode naive datetime {obj!r} where tzinfo=None: give it a tzinfo, "
        "or use Encoder(naive_datetime='utc' or 'local')"
    )


def _pack_timestamp(buf: bytearray, seconds: int, nanoseconds: int) -> None:
    # ext -1 in its smallest form, as msgpack writes it.
    if seconds >> 34 == 0:
        data64 = nanoseconds << 34 | seconds
        if data64 & 0xFFFFFFFF00000000 == 0:
            buf += b"\xd6\xff" + _pack_I(data64)
        else:
            buf += b"\xd7\xff" + _pack_Q(data64)
    elif -0x8000000000000000 <= seconds <= 0x7FFFFFFFFFFFFFFF:
        buf += b"\xc7\x0c\xff" + _pack_I(nanoseconds) + _pack_q(seconds)
    else:  # only a Timestamp whose fields were changed behind its back
        raise EncodeError("timestamp seconds outside the int64 range")


def _pack_registered(buf: bytearray, obj: Any, entry: Any) -> None:
    code, pack = entry
    data = pack(obj)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodeError(
            f"pack function registered for {type(obj).__name__} returned {type(data).__name__}, not bytes"
        )
    if isinstance(data, memoryview):
        data = data.tobytes()
    _pack_ext(buf, code, data)


def _check_limit(name: str, value: Any) -> None:
    # A limit is compared with lengths: None or any real number (as the
    # compiled twin, which floors it); anything else fails here, not at the
    # first decode.
    if value is None:
        return
    try:
        math.floor(value)
    except (ValueError, OverflowError):  # nan, inf: comparisons still work
        pass
    except TypeError:
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}") from None


def _pack_int(buf: bytearray, n: int) -> None:
    if n >= 0:
        if n < 0x80:
            buf.append(n)
        elif n <= 0xFF:
            buf += b"\xcc" + _pack_B(n)
        elif n <= 0xFFFF:
            buf += _pack_cd(0xCD, n)
        elif n <= 0xFFFFFFFF:
            buf += _pack_ce(0xCE, n)
        elif n <= 0xFFFFFFFFFFFFFFFF:
            buf += b"\xcf" + _pack_Q(n)
        else:
            raise _IntRange("integer too large for msgpack (max 2**64-1)")
    else:
        if n >= -32:
            buf.append(n & 0xFF)
        elif n >= -0x80:
            buf += b"\xd0" + _pack_b(n)
        elif n >= -0x8000:
            buf += b"\xd1" + _pack_h(n)
        elif n >= -0x80000000:
            buf += b"\xd2" + _pack_i(n)
        elif n >= -0x8000000000000000:
            buf += b"\xd3" + _pack_q(n)
        else:
            raise _IntRange("integer too small for msgpack (min -2**63)")


def _pack_str(buf: bytearray, s: str) -> None:
    try:
        data = s.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise EncodeError(f"str is not valid UTF-8: {exc}") from None
    n = len(data)
    if n < 32:
        buf.append(0xA0 | n)
    elif n <= 0xFF:
        buf += b"\xd9" + _pack_B(n)
    elif n <= 0xFFFF:
        buf += b"\xda" + _pack_H(n)
    elif n <= 0xFFFFFFFF:
        buf += b"\xdb" + _pack_I(n)
    else:
        raise EncodeError("str too long for msgpack")
    buf += data


def _pack_bin(buf: bytearray, data: Any) -> None:
    if isinstance(data, memoryview):
        data = data.tobytes()
    _pack_bin_header(buf, len(data))
    buf += data


def _pack_bin_header(buf: bytearray, n: int) -> None:
    if n <= 0xFF:
        buf += b"\xc4" + _pack_B(n)
    elif n <= 0xFFFF:
        buf += b"\xc5" + _pack_H(n)
    elif n <= 0xFFFFFFFF:
        buf += b"\xc6" + _pack_I(n)
    else:
        raise EncodeError("bytes too long for msgpack")


def _pack_ext(buf: bytearray, code: int, data: bytes) -> None:
    n = len(data)
    head = _FIXEXT.get(n)
    if head is not None:
        buf.append(head)
    elif n <= 0xFF:
        buf += b"\xc7" + _pack_B(n)
    elif n <= 0xFFFF:
        buf += b"\xc8" + _pack_H(n)
    elif n <= 0xFFFFFFFF:
        buf += b"\xc9" + _pack_I(n)
    else:
        raise EncodeError("ext data too long for msgpack")
    buf += _pack_b(code)
    buf += data


_NO_LIMIT = 0xFFFFFFFF


def _check_depth(max_depth: int) -> None:
    if not 0 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be in 0..{MAX_DEPTH_LIMIT}")


def _flat_array(data: bytes, pos: int, end: int, n: int) -> Optional[list]:
    # The items of a fixarray that holds only ints, nil, bools and fixstrs
    # and ends exactly at ``end`` (most call arguments), decoded in one loop
    # with no call per item.  None for anything else, or for any input the
    # general decoder would reject: the caller then decodes it that way.
    out = []
    append = out.append
    for _ in range(n):
        if pos >= end:
            return None
        c = data[pos]
        if c <= 0x7F:
            append(c)
            pos += 1
        elif c >= 0xE0:
            append(c - 0x100)
            pos += 1
        elif c == 0xCD:
            if pos + 3 > end:
                return None
            append(data[pos + 1] << 8 | data[pos + 2])
            pos += 3
        elif c == 0xCC:
            if pos + 2 > end:
                return None
            append(data[pos + 1])
            pos += 2
        elif 0xA0 <= c <= 0xBF:
            stop = pos + 1 + (c & 0x1F)
            if stop > end:
                return None
            try:
                append(data[pos + 1 : stop].decode("utf-8"))
            except UnicodeDecodeError:
                return None
            pos = stop
        elif c == 0xCE:
            if pos + 5 > end:
                return None
            append(_unpack_I(data, pos + 1)[0])
            pos += 5
        elif c == 0xC0:
            append(None)
            pos += 1
        elif c == 0xC2 or c == 0xC3:
            append(c == 0xC3)
            pos += 1
        else:
            return None
    return out if pos == end else None


class Decoder:
    """Decodes one msgpack value, bounded for untrusted input.

    Parameters:
        max_depth: deepest container nesting accepted.
        max_str_len, max_bin_len, max_array_len, max_map_len, max_ext_len:
            optional per-kind limits (``None``: bounded only by the input).
        ext_hook: called as ``ext_hook(code, data)`` for extension values
            that are neither a timestamp nor a registered type; without it
            they decode to :class:`ExtType`.
        object_hook: called with every decoded map (a dict); its result
            replaces the dict.
        use_list: False decodes arrays as tuples.
        timestamp: what ext -1 decodes to: ``"timestamp"`` (a
            :class:`~fastrpc.wire.ext.Timestamp`), ``"datetime"`` (aware,
            UTC), ``"float"`` or ``"ns"`` (seconds or integer nanoseconds
            since the epoch) or ``"ext"`` (left as an ext value).
        ext: the :class:`~fastrpc.wire.ext.ExtRegistry` of user types
            (None: :data:`~fastrpc.wire.ext.default_registry`).
    """

    max_depth = _max_depth_property()
    max_str_len = _limit_property("max_str_len")
    max_bin_len = _limit_property("max_bin_len")
    max_array_len = _limit_property("max_array_len")
    max_map_len = _limit_property("max_map_len")
    max_ext_len = _limit_property("max_ext_len")

    def __init__(
        self,
        *,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_str_len: Optional[int] = None,
        max_bin_len: Optional[int] = None,
        max_array_len: Optional[int] = None,
        max_map_len: Optional[int] = None,
        max_ext_len: Optional[int] = None,
        ext_hook: Optional[Callable[[int, bytes], Any]] = None,
        object_hook: Optional[Callable[[dict], Any]] = None,
        use_list: bool = True,
        timestamp: str = "timestamp",
        ext: Any = None,
    ) -> None:
        _check_depth(max_depth)
        self.max_depth = max_depth
        # The limits' property setters' checks, in the compiled twin's order
        # (the first bad one raises), without a setter call per limit: a
        # Decoder is built per connection and per unpackb(**limits) call.
        for name, value in (
            ("max_str_len", max_str_len),
            ("max_bin_len", max_bin_len),
            ("max_array_len", max_array_len),
            ("max_map_len", max_map_len),
            ("max_ext_len", max_ext_len),
        ):
            _check_limit(name, value)
        self._max_str_len = _NO_LIMIT if max_str_len is None else max_str_len
        self._max_bin_len = _NO_LIMIT if max_bin_len is None else max_bin_len
        self._max_array_len = _NO_LIMIT if max_array_len is None else max_array_len
        self._max_map_len = _NO_LIMIT if max_map_len is None else max_map_len
        self._max_ext_len = _NO_LIMIT if max_ext_len is None else max_ext_len
        self.ext_hook = ext_hook
        self._timestamp = mode_number("timestamp", timestamp, TIMESTAMP_MODES)
        self._registry = registry_of(ext)
        self._ext_codes = self._registry._codes
        self.object_hook = object_hook
        self._use_list = bool(use_list)

    @property
    def ext(self) -> Any:
        """The registry of user types this decoder consults."""
        return self._registry

    @property
    def use_list(self) -> bool:
        """False: arrays decode as tuples."""
        return self._use_list

    @property
    def timestamp(self) -> str:
        """What ext -1 decodes to."""
        return TIMESTAMP_MODES[self._timestamp]

    def decode(self, data: Any) -> Any:
        """Decode exactly one value that fills all of ``data``."""
        if type(data) is not bytes:
            data = bytes(data)
        return self.decode_range(data, 0, len(data))

    def decode_range(self, data: bytes, start: int, end: int) -> Any:
        """Decode exactly one value filling ``data[start:end]``."""
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"range {start}:{end} is outside the {len(data)}-byte input")
        if start == end:
            raise DecodeError("empty input: expected a msgpack value")
        b = data[start]
        if end - start <= 3:
            # Small ints, the commonest answers, with no call.
            if b <= 0x7F and end - start == 1:
                return b
            if b == 0xCD and end - start == 3:
                return data[start + 1] << 8 | data[start + 2]
            if b == 0xCC and end - start == 2:
                return data[start + 1]
        elif b == 0xCE and end - start == 5:
            return _unpack_I(data, start + 1)[0]
        if 0x90 <= b <= 0x9F and self._use_list and self._max_depth > 0 and self._max_array_len >= 15 and self._max_str_len >= 31:
            # _flat_array checks no limits: it is used only where none can
            # apply to a fixarray (at most 15 items) of scalars and fixstrs
            # (max_depth > 0, not merely true: -1 or -0.5 may be assigned).
            out = _flat_array(data, start + 1, end, b & 0x0F)
            if out is not None:
                return out
        try:
            obj, pos = self._decode(data, start, end, 0)
        except RecursionError:
            raise NestingTooDeep("value nested too deeply for the Python stack") from None
        if pos != end:
            raise ExtraData(f"{end - pos} trailing byte(s) after the msgpack value", obj, data[pos:end])
        return obj

    def _decode(self, data: bytes, pos: int, end: int, depth: int):
        if pos >= end:
            raise DecodeError("truncated input: value missing")
        b = data[pos]
        pos += 1
        if b <= 0x7F:
            return b, pos
        if b >= 0xE0:
            return b - 0x100, pos
        if 0xA0 <= b <= 0xBF:
            return self._str(data, pos, end, b & 0x1F)
        if 0x90 <= b <= 0x9F:
            return self._array(data, pos, end, b & 0x0F, depth)
        if 0x80 <= b <= 0x8F:
            return self._map(data, pos, end, b & 0x0F, depth)
        if b == 0xC0:
            return None, pos
        if b == 0xC2:
            return False, pos
        if b == 0xC3:
            return True, pos
        size = _FIXED_SIZES.get(b)
        if size is not None and pos + size > end:
            raise DecodeError("truncated input inside a value header")
        if b == 0xCC:
            return data[pos], pos + 1
        if b == 0xCD:
            return _unpack_H(data, pos)[0], pos + 2
        if b == 0xCE:
            return _unpack_I(data, pos)[0], pos + 4
        if b == 0xCF:
            return _unpack_Q(data, pos)[0], pos + 8
        if b == 0xD0:
            return _unpack_b(data, pos)[0], pos + 1
        if b == 0xD1:
            return _unpack_h(data, pos)[0], pos + 2
        if b == 0xD2:
            return _unpack_i(data, pos)[0], pos + 4
        if b == 0xD3:
            return _unpack_q(data, pos)[0], pos + 8
        if b == 0xCA:
            return _unpack_f(data, pos)[0], pos + 4
        if b == 0xCB:
            return _unpack_d(data, pos)[0], pos + 8
        if b == 0xD9:
            return self._str(data, pos + 1, end, data[pos])
        if b == 0xDA:
            return self._str(data, pos + 2, end, _unpack_H(data, pos)[0])
        if b == 0xDB:
            return self._str(data, pos + 4, end, _unpack_I(data, pos)[0])
        if b == 0xC4:
            return self._bin(data, pos + 1, end, data[pos])
        if b == 0xC5:
            return self._bin(data, pos + 2, end, _unpack_H(data, pos)[0])
        if b == 0xC6:
            return self._bin(data, pos + 4, end, _unpack_I(data, pos)[0])
        if b == 0xDC:
            return self._array(data, pos + 2, end, _unpack_H(data, pos)[0], depth)
        if b == 0xDD:
            return self._array(data, pos + 4, end, _unpack_I(data, pos)[0], depth)
        if b == 0xDE:
            return self._map(data, pos + 2, end, _unpack_H(data, pos)[0], depth)
        if b == 0xDF:
            return self._map(data, pos + 4, end, _unpack_I(data, pos)[0], depth)
        if 0xD4 <= b <= 0xD8:
            return self._ext(data, pos, end, 1 << (b - 0xD4))
        if b == 0xC7:
            return self._ext(data, pos + 1, end, data[pos])
        if b == 0xC8:
            return self._ext(data, pos + 2, end, _unpack_H(data, pos)[0])
        if b == 0xC9:
            return self._ext(data, pos + 4, end, _unpack_I(data, pos)[0])
        raise DecodeError(f"reserved msgpack type byte 0x{b:02x}")

    def _str(self, data: bytes, pos: int, end: int, n: int):
        if n > self._max_str_len:
            raise DecodeError(f"str of {n} bytes exceeds max_str_len={self._max_str_len}")
        stop = pos + n
        if stop > end:
            raise DecodeError(f"truncated input: str claims {n} bytes, {max(end - pos, 0)} present")
        try:
            return data[pos:stop].decode("utf-8"), stop
        except UnicodeDecodeError as exc:
            raise InvalidUTF8(f"invalid UTF-8 in str: {exc.reason}") from None

    def _bin(self, data: bytes, pos: int, end: int, n: int):
        if n > self._max_bin_len:
            raise DecodeError(f"bin of {n} bytes exceeds max_bin_len={self._max_bin_len}")
        stop = pos + n
        if stop > end:
            raise DecodeError(f"truncated input: bin claims {n} bytes, {max(end - pos, 0)} present")
        return data[pos:stop], stop

    def _ext(self, data: bytes, pos: int, end: int, n: int):
        if n > self._max_ext_len:
            raise DecodeError(f"ext of {n} bytes exceeds max_ext_len={self._max_ext_len}")
        stop = pos + 1 + n
        if stop > end:
            raise DecodeError(f"truncated input: ext claims {n} bytes, {max(end - pos - 1, 0)} present")
        code = _unpack_b(data, pos)[0]
        payload = data[pos + 1 : stop]
        if code == -1 and self._timestamp != 4:
            parts = timestamp_parts(payload)
            if parts is not None:
                try:
                    return timestamp_value(self._timestamp, parts[0], parts[1]), stop
                except ValueError as exc:  # a datetime out of range
                    raise DecodeError(str(exc)) from None
        elif code >= 0 and self._ext_codes:
            entry = self._ext_codes.get(code)
            if entry is not None:
                try:
                    return entry[1](payload), stop
                except Exception as exc:  # noqa: BLE001 - user code fed by the peer
                    raise DecodeError(
                        f"unpack function registered for ext type {code} ({entry[0].__qualname__}) failed: {exc!r}"
                    ) from exc
        if self.ext_hook is not None:
            try:
                return self.ext_hook(code, payload), stop
            except Exception as exc:  # noqa: BLE001 - user code fed by the peer
                raise DecodeError(f"ext_hook failed on ext type {code}: {exc!r}") from exc
        return ExtType(code, payload), stop

    def _array(self, data: bytes, pos: int, end: int, n: int, depth: int):
        if n > self._max_array_len:
            raise DecodeError(f"array of {n} items exceeds max_array_len={self._max_array_len}")
        if n > end - pos:  # every item takes at least one byte
            raise DecodeError(f"truncated input: array claims {n} items, {max(end - pos, 0)} bytes present")
        if depth >= self._max_depth:
            raise NestingTooDeep(f"nesting deeper than max_depth={self._max_depth}")
        depth += 1
        out = []
        append = out.append
        decode = self._decode
        for _ in range(n):
            if pos < end and data[pos] <= 0x7F:
                append(data[pos])  # positive fixint, inline: the commonest item
                pos += 1
            else:
                item, pos = decode(data, pos, end, depth)
                append(item)
        if not self._use_list:
            return tuple(out), pos
        return out, pos

    def _map(self, data: bytes, pos: int, end: int, n: int, depth: int):
        if n > self._max_map_len:
            raise DecodeError(f"map of {n} pairs exceeds max_map_len={self._max_map_len}")
        if 2 * n > end - pos:  # every key and value takes at least one byte
            raise DecodeError(f"truncated input: map claims {n} pairs, {max(end - pos, 0)} bytes present")
        if depth >= self._max_depth:
            raise NestingTooDeep(f"nesting deeper than max_depth={self._max_depth}")
        depth += 1
        out = {}
        decode = self._decode
        for _ in range(n):
            key, pos = decode(data, pos, end, depth)
            value, pos = decode(data, pos, end, depth)
            try:
                out[key] = value
            except TypeError:
                raise DecodeError(f"unhashable map key of type {type(key).__name__}") from None
        if self.object_hook is not None:
            try:
                return self.object_hook(out), pos
            except Exception as exc:  # noqa: BLE001 - user code fed by the peer
                raise DecodeError(f"object_hook failed: {exc!r}") from exc
        return out, pos


# Bytes a fixed-size header needs after its type byte (for one bounds check).
_FIXED_SIZES = {
    0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
    0xCA: 4, 0xCB: 8,
    0xD9: 1, 0xDA: 2, 0xDB: 4,
    0xC4: 1, 0xC5: 2, 0xC6: 4,
    0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4,
    0xD4: 1, 0xD5: 1, 0xD6: 1, 0xD7: 1, 0xD8: 1,
    0xC7: 2, 0xC8: 3, 0xC9: 5,
}

_default_encoder = Encoder()
_default_decoder = Decoder()


def packb(obj: Any, **options: Any) -> bytes:
    """Encode ``obj``; keyword arguments as for :class:`Encoder`."""
    if options:
        return Encoder(**options).encode(obj)
    return _default_encoder.encode(obj)


def unpackb(data: Any, **limits: Any) -> Any:
    """Decode one value from ``data``; keyword arguments as for :class:`Decoder`."""
    if limits:
        return Decoder(**limits).decode(data)
    return _default_decoder.decode(data)
