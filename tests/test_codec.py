"""Payload codec: msgpack compatibility, boundaries, hooks and bounded decoding.

Every test runs against both implementations through the ``impl`` fixture
(``c``: fastrpc.wire._codec, ``py``: fastrpc.wire._codec_py).
"""

from __future__ import annotations

import array
import collections
import enum
import math
import os
import struct
import subprocess
import sys
import time
import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrpc
from fastrpc.wire.constants import DEFAULT_MAX_DEPTH, ExtType
from fastrpc.errors import CodecError, DecodeError, EncodeError, FastRPCError

# --------------------------------------------------------------------------
# helpers


def scaled(fraction):
    """Run a share of the active profile's max_examples (HYPOTHESIS_PROFILE)."""
    return settings(max_examples=max(10, int(settings.default.max_examples * fraction)))


def normalize(obj):
    """What a value decodes to: tuples become lists, bytes-likes bytes, a
    valid timestamp payload of ext -1 a fastrpc.Timestamp."""
    if isinstance(obj, ExtType):
        if obj.code == -1 and len(obj.data) in (4, 8, 12):
            try:
                return fastrpc.Timestamp.from_bytes(bytes(obj.data))
            except ValueError:
                pass  # not a valid timestamp: stays an ExtType
        return ExtType(obj.code, obj.data)
    if isinstance(obj, (list, tuple)):
        return [normalize(x) for x in obj]
    if isinstance(obj, dict):
        return {normalize(k): normalize(v) for k, v in obj.items()}
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    return obj


def assert_same(expected, actual, path="value"):
    """Deep equality that also checks exact types (True is not 1, 1.0 is not
    1), compares NaN with NaN and keeps the sign of zero."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} is not nan"
        else:
            assert actual == expected and math.copysign(1.0, actual) == math.copysign(1.0, expected), (
                f"{path}: {actual!r} != {expected!r}"
            )
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{path}[{i}]")
    elif isinstance(expected, dict):
        # decoded maps keep the wire order, which is the encoder's iteration order
        assert len(actual) == len(expected), f"{path}: {len(actual)} keys != {len(expected)}"
        for i, ((ek, ev), (ak, av)) in enumerate(zip(expected.items(), actual.items())):
            assert_same(ek, ak, f"{path}.key#{i}")
            assert_same(ev, av, f"{path}[{ek!r}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def to_msgpack(obj):
    """Replace fastrpc ExtType by msgpack.ExtType (msgpack packs ours as an array)."""
    if isinstance(obj, ExtType):
        return msgpack.ExtType(obj.code, obj.data)
    if isinstance(obj, (list, tuple)):
        return [to_msgpack(x) for x in obj]
    if isinstance(obj, dict):
        return {to_msgpack(k): to_msgpack(v) for k, v in obj.items()}
    return obj


def nested_list(depth):
    obj = None
    for _ in range(depth):
        obj = [obj]
    return obj


def nested_map(depth):
    obj = None
    for _ in range(depth):
        obj = {"k": obj}
    return obj


# --------------------------------------------------------------------------
# strategies

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

ints = st.integers(min_value=INT64_MIN, max_value=UINT64_MAX)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.none() | st.booleans() | ints | floats | st.text() | st.binary()
keys = st.text() | ints | st.binary()
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=8)
        | st.lists(children, max_size=8).map(tuple)
        | st.dictionaries(keys, children, max_size=8)
    ),
    max_leaves=40,
)
values32 = st.recursive(
    st.none() | st.booleans() | ints | st.floats(width=32) | st.text(),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(keys, children, max_size=8),
    max_leaves=30,
)
# every ext code (msgpack.ExtType itself only allows 0..127)
ext_values = st.builds(ExtType, st.integers(-128, 127), st.binary(max_size=40))
values_with_ext = st.recursive(
    scalars | ext_values,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=20,
)


# --------------------------------------------------------------------------
# round trip and msgpack compatibility


@given(values)
def test_roundtrip(impl, obj):
    data = impl.packb(obj)
    assert type(data) is bytes
    assert_same(normalize(obj), impl.unpackb(data))
    assert impl.Encoder().encode(obj) == data
    assert_same(normalize(obj), impl.Decoder().decode(data))


@given(values_with_ext)
def test_roundtrip_with_ext(impl, obj):
    out = impl.unpackb(impl.packb(obj))
    assert_same(normalize(obj), out)


@given(values)
def test_msgpack_compatible(impl, obj):
    # same bytes as msgpack.packb(use_bin_type=True) ...
    ours = impl.packb(obj)
    theirs = msgpack.packb(obj, use_bin_type=True)
    assert ours == theirs
    # ... which msgpack decodes to the value, and which we decode from msgpack's
    # own output (compared separately in case the encoders ever diverge)
    assert_same(normalize(obj), msgpack.unpackb(ours, raw=False, strict_map_key=False))
    assert_same(normalize(obj), impl.unpackb(theirs))


@given(values32)
def test_decodes_msgpack_single_float(impl, obj):
    # float32 (0xca) and whatever else msgpack emits: we decode what msgpack decodes
    theirs = msgpack.packb(obj, use_bin_type=True, use_single_float=True)
    assert_same(msgpack.unpackb(theirs, raw=False, strict_map_key=False), impl.unpackb(theirs))


@given(st.builds(ExtType, st.integers(0, 127), st.binary(max_size=40)))
def test_ext_bytes_equal_msgpack(impl, ext):
    ours = impl.packb([ext, {"e": ext}])
    theirs = msgpack.packb(to_msgpack([ext, {"e": ext}]), use_bin_type=True)
    assert ours == theirs
    decoded = msgpack.unpackb(ours, raw=False, strict_map_key=False)
    assert decoded[0] == msgpack.ExtType(ext.code, ext.data)


@scaled(0.3)
@given(values)
def test_every_proper_prefix_is_truncated(impl, obj):
    data = impl.packb(obj)
    dec = impl.Decoder()
    for i in range(len(data)):
        with pytest.raises(DecodeError):
            dec.decode(data[:i])


# --------------------------------------------------------------------------
# boundary sizes for every width


INT_CASES = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "cc80"),
    (255, "ccff"),
    (256, "cd0100"),
    (65535, "cdffff"),
    (65536, "ce00010000"),
    (2**32 - 1, "ceffffffff"),
    (2**32, "cf0000000100000000"),
    (2**63, "cf8000000000000000"),
    (2**64 - 1, "cfffffffffffffffff"),
    (-1, "ff"),
    (-32, "e0"),
    (-33, "d0df"),
    (-128, "d080"),
    (-129, "d1ff7f"),
    (-32768, "d18000"),
    (-32769, "d2ffff7fff"),
    (-(2**31), "d280000000"),
    (-(2**31) - 1, "d3ffffffff7fffffff"),
    (-(2**63), "d38000000000000000"),
]


@pytest.mark.parametrize("value,hexdata", INT_CASES, ids=[str(v) for v, _ in INT_CASES])
def test_int_widths(impl, value, hexdata):
    data = bytes.fromhex(hexdata)
    assert impl.packb(value) == data
    assert data == msgpack.packb(value)
    out = impl.unpackb(data)
    assert type(out) is int and out == value


@pytest.mark.parametrize(
    "hexdata,value",
    [
        ("cc05", 5),
        ("cd0005", 5),
        ("ce00000005", 5),
        ("cf0000000000000005", 5),
        ("d005", 5),
        ("d1fffb", -5),
        ("d2fffffffb", -5),
        ("d3fffffffffffffffb", -5),
        ("d07f", 127),
        ("d3ffffffffffffffff", -1),
    ],
)
def test_int_non_minimal_forms_decode(impl, hexdata, value):
    out = impl.unpackb(bytes.fromhex(hexdata))
    assert type(out) is int and out == value


@pytest.mark.parametrize(
    "value,hexdata",
    [
        (1.5, "cb3ff8000000000000"),
        (-0.0, "cb8000000000000000"),
        (float("inf"), "cb7ff0000000000000"),
        (float("-inf"), "cbfff0000000000000"),
        (None, "c0"),
        (False, "c2"),
        (True, "c3"),
    ],
)
def test_float_and_constants(impl, value, hexdata):
    data = bytes.fromhex(hexdata)
    assert impl.packb(value) == data
    assert_same(value, impl.unpackb(data))


def test_nan_roundtrip(impl):
    data = impl.packb(float("nan"))
    assert data[:1] == b"\xcb" and len(data) == 9
    assert data == msgpack.packb(float("nan"))
    assert math.isnan(impl.unpackb(data))


@pytest.mark.parametrize("hexdata,value", [("ca3fc00000", 1.5), ("cabf800000", -1.0), ("ca7f800000", float("inf"))])
def test_float32_decodes(impl, hexdata, value):
    out = impl.unpackb(bytes.fromhex(hexdata))
    assert type(out) is float and out == value


def _len_cases(widths):
    return [pytest.param(n, head, id=f"{n}") for n, head in widths]


@pytest.mark.parametrize(
    "n,head",
    _len_cases([(0, "a0"), (1, "a1"), (31, "bf"), (32, "d920"), (255, "d9ff"), (256, "da0100"), (65535, "daffff"), (65536, "db00010000")]),
)
def test_str_widths(impl, n, head):
    s = "x" * n
    data = impl.packb(s)
    assert data == bytes.fromhex(head) + s.encode()
    assert data == msgpack.packb(s, use_bin_type=True)
    assert impl.unpackb(data) == s


def test_str_width_counts_utf8_bytes(impl):
    s = "\u00e9" * 16  # 16 characters, 32 UTF-8 bytes: str8, not fixstr
    assert impl.packb(s)[:2] == b"\xd9\x20"
    s = "\U0001f600" * 8  # 8 characters, 32 bytes
    assert impl.packb(s) == b"\xd9\x20" + s.encode()
    assert impl.unpackb(impl.packb(s)) == s


@pytest.mark.parametrize(
    "n,head",
    _len_cases([(0, "c400"), (1, "c401"), (255, "c4ff"), (256, "c50100"), (65535, "c5ffff"), (65536, "c600010000")]),
)
def test_bin_widths(impl, n, head):
    b = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    data = impl.packb(b)
    assert data == bytes.fromhex(head) + b
    assert data == msgpack.packb(b, use_bin_type=True)
    out = impl.unpackb(data)
    assert type(out) is bytes and out == b


@pytest.mark.parametrize(
    "n,head",
    _len_cases([(0, "90"), (1, "91"), (15, "9f"), (16, "dc0010"), (65535, "dcffff"), (65536, "dd00010000")]),
)
def test_array_widths(impl, n, head):
    items = [1] * n
    data = impl.packb(items)
    assert data == bytes.fromhex(head) + b"\x01" * n
    assert data == msgpack.packb(items)
    assert impl.unpackb(data) == items


@pytest.mark.parametrize(
    "n,head",
    _len_cases([(0, "80"), (1, "81"), (15, "8f"), (16, "de0010"), (65535, "deffff"), (65536, "df00010000")]),
)
def test_map_widths(impl, n, head):
    d = {i: None for i in range(n)}
    data = impl.packb(d)
    assert data.startswith(bytes.fromhex(head))
    assert data == msgpack.packb(d)
    assert impl.unpackb(data) == d


@pytest.mark.parametrize(
    "n,head",
    _len_cases(
        [
            (0, "c700"),
            (1, "d4"),
            (2, "d5"),
            (3, "c703"),
            (4, "d6"),
            (8, "d7"),
            (16, "d8"),
            (17, "c711"),
            (255, "c7ff"),
            (256, "c80100"),
            (65535, "c8ffff"),
            (65536, "c900010000"),
        ]
    ),
)
def test_ext_widths(impl, n, head):
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    data = impl.packb(ExtType(42, payload))
    assert data == bytes.fromhex(head) + b"\x2a" + payload
    assert data == msgpack.packb(msgpack.ExtType(42, payload))
    out = impl.unpackb(data)
    assert isinstance(out, ExtType) and out.code == 42 and out.data == payload


# --------------------------------------------------------------------------
# subclasses and bytes-like input


class Color(enum.IntEnum):
    RED = 1
    BIG = 70000


class MyStr(str):
    pass


class MyFloat(float):
    pass


class MyList(list):
    pass


class MyDict(dict):
    pass


class MyBytes(bytes):
    pass


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    "obj,plain",
    [
        (Color.RED, 1),
        (Color.BIG, 70000),
        (MyStr("héllo"), "héllo"),
        (MyFloat(2.5), 2.5),
        (MyList([1, "a"]), [1, "a"]),
        (MyDict(a=1), {"a": 1}),
        (MyBytes(b"ab"), b"ab"),
        (collections.OrderedDict([("b", 1), ("a", 2)]), {"b": 1, "a": 2}),
        (Point(1, 2), [1, 2]),
        (bytearray(b"\x00\x01"), b"\x00\x01"),
        (memoryview(b"xyz"), b"xyz"),
        (memoryview(b"abcdef")[1:4], b"bcd"),
        ({Color.RED: MyStr("k")}, {1: "k"}),
    ],
    ids=lambda v: type(v).__name__,
)
def test_subclasses_encode_as_base(impl, obj, plain):
    data = impl.packb(obj)
    assert data == impl.packb(plain)
    assert data == msgpack.packb(plain, use_bin_type=True)
    assert_same(normalize(plain), impl.unpackb(data))


def test_memoryview_of_wider_items(impl):
    view = memoryview(array.array("H", [1, 2, 3]))
    assert impl.packb(view) == b"\xc4\x06" + view.tobytes()


def test_bool_is_not_int(impl):
    assert impl.packb([True, False, 1, 0]) == b"\x94\xc3\xc2\x01\x00"
    out = impl.unpackb(b"\x92\xc3\x01")
    assert type(out[0]) is bool and type(out[1]) is int


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=["bytes", "bytearray", "memoryview"])
def test_decode_accepts_bytes_like(impl, wrap):
    data = msgpack.packb({"a": [1, 2.5, b"x", None]}, use_bin_type=True)
    assert impl.unpackb(wrap(data)) == {"a": [1, 2.5, b"x", None]}
    assert impl.Decoder().decode(wrap(data)) == {"a": [1, 2.5, b"x", None]}


def test_decode_range(impl):
    inner = impl.packb({"k": [1, 2]})
    data = b"junk" + inner + b"more"
    assert impl.Decoder().decode_range(data, 4, 4 + len(inner)) == {"k": [1, 2]}
    with pytest.raises(DecodeError):
        impl.Decoder().decode_range(data, 4, 4 + len(inner) - 1)
    with pytest.raises(DecodeError):
        impl.Decoder().decode_range(data, 4, 4)


def test_pack_into_appends(impl):
    buf = bytearray(b"head")
    impl.Encoder().pack_into(buf, [1, "a"])
    assert bytes(buf) == b"head\x92\x01\xa1a"


# --------------------------------------------------------------------------
# ExtType, ext_hook, default


@pytest.mark.parametrize("code", [-128, -1, 0, 1, 127])
def test_ext_roundtrip(impl, code):
    ext = ExtType(code, b"payload")
    out = impl.unpackb(impl.packb([ext, {"k": ext}]))
    assert out == [ext, {"k": ext}]
    assert type(out[0]) is ExtType and out[0].code == code and out[0].data == b"payload"


def test_ext_data_bytes_like(impl):
    assert impl.packb(ExtType(3, bytearray(b"ab"))) == b"\xd5\x03ab"


def test_ext_hook(impl):
    calls = []

    def hook(code, data):
        calls.append((code, data))
        return ("hooked", code, bytes(data))

    dec = impl.Decoder(ext_hook=hook)
    data = impl.packb([ExtType(5, b"abc"), ExtType(-3, b"")])
    assert dec.decode(data) == [("hooked", 5, b"abc"), ("hooked", -3, b"")]
    assert calls == [(5, b"abc"), (-3, b"")]
    assert impl.unpackb(data, ext_hook=hook)[0] == ("hooked", 5, b"abc")


def test_default_hook(impl):
    def default(obj):
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        if isinstance(obj, complex):
            return ExtType(1, struct.pack(">dd", obj.real, obj.imag))
        raise TypeError(f"unsupported {obj!r}")

    enc = impl.Encoder(default=default)
    data = enc.encode({"s": {3, 1, 2}, "c": [1 + 2j]})
    assert data == impl.packb({"s": [1, 2, 3], "c": [ExtType(1, struct.pack(">dd", 1.0, 2.0))]})
    assert data == msgpack.packb(
        {"s": {3, 1, 2}, "c": [1 + 2j]},
        default=lambda o: sorted(o) if isinstance(o, set) else msgpack.ExtType(1, struct.pack(">dd", o.real, o.imag)),
    )


def test_default_hook_exception_propagates(impl):
    class Boom(Exception):
        pass

    def default(obj):
        raise Boom("no")

    buf = bytearray(b"x")
    with pytest.raises(Boom):
        impl.Encoder(default=default).pack_into(buf, [1, object()])
    assert buf == b"x"


def test_default_returning_same_object(impl):
    with pytest.raises(EncodeError):
        impl.Encoder(default=lambda o: o).encode(object())


def test_default_never_converging_is_bounded(impl):
    # a default that keeps returning new unsupported objects must hit max_depth,
    # not recurse until RecursionError
    with pytest.raises(EncodeError):
        impl.Encoder(default=lambda o: object()).encode(object())


# --------------------------------------------------------------------------
# EncodeError


class Unsupported:
    pass


@pytest.mark.parametrize(
    "obj",
    [object(), Unsupported(), {1, 2}, 1 + 2j, len, [1, object()], {"k": {"n": Unsupported()}}, {frozenset(): 1}],
    ids=["object", "class", "set", "complex", "function", "in-list", "in-map", "key"],
)
def test_unsupported_type(impl, obj):
    with pytest.raises(EncodeError) as info:
        impl.packb(obj)
    assert isinstance(info.value, TypeError)  # msgpack-compatible
    assert isinstance(info.value, CodecError) and isinstance(info.value, FastRPCError)


@pytest.mark.parametrize("value", [2**64, 2**100, -(2**63) - 1, -(2**100)], ids=["2**64", "2**100", "-2**63-1", "-2**100"])
def test_int_out_of_range(impl, value):
    with pytest.raises(EncodeError):
        impl.packb(value)
    with pytest.raises(EncodeError):
        impl.packb({"k": [value]})


def test_depth_limit_encode(impl):
    assert impl.unpackb(impl.packb(nested_list(DEFAULT_MAX_DEPTH))) == nested_list(DEFAULT_MAX_DEPTH)
    assert impl.unpackb(impl.packb(nested_map(DEFAULT_MAX_DEPTH))) == nested_map(DEFAULT_MAX_DEPTH)
    with pytest.raises(EncodeError):
        impl.packb(nested_list(DEFAULT_MAX_DEPTH + 1))
    with pytest.raises(EncodeError):
        impl.packb(nested_map(DEFAULT_MAX_DEPTH + 1))
    enc = impl.Encoder(max_depth=3)
    assert enc.encode(nested_list(3)) == b"\x91\x91\x91\xc0"
    with pytest.raises(EncodeError):
        enc.encode(nested_list(4))
    assert impl.Encoder(max_depth=0).encode(5) == b"\x05"
    with pytest.raises(EncodeError):
        impl.Encoder(max_depth=0).encode([])


def test_cyclic_structures(impl):
    lst = []
    lst.append(lst)
    with pytest.raises(EncodeError):
        impl.packb(lst)
    d = {}
    d["self"] = d
    with pytest.raises(EncodeError):
        impl.packb(d)
    mixed = [1, {"a": []}]
    mixed[1]["a"].append(mixed)
    with pytest.raises(EncodeError):
        impl.packb(mixed)


@pytest.mark.parametrize("s", ["\ud800", "ok\udfffok", "\udc80"])
def test_lone_surrogate(impl, s):
    with pytest.raises(EncodeError):
        impl.packb(s)
    with pytest.raises(EncodeError):
        impl.packb({s: 1})


def test_encode_error_rolls_back_buffer(impl):
    enc = impl.Encoder()
    buf = bytearray(b"prefix")
    for bad in ([1, 2, "x" * 300, object()], {"a": 1, "b": 2**64}, ["ok", "\ud800"], nested_list(100)):
        with pytest.raises(EncodeError):
            enc.pack_into(buf, bad)
        assert buf == b"prefix"


@pytest.mark.parametrize("cls", ["Encoder", "Decoder"])
def test_negative_max_depth(impl, cls):
    with pytest.raises(ValueError):
        getattr(impl, cls)(max_depth=-1)


# --------------------------------------------------------------------------
# DecodeError


def test_empty_input(impl):
    with pytest.raises(DecodeError):
        impl.unpackb(b"")
    with pytest.raises(DecodeError):
        impl.Decoder().decode(bytearray())


SAMPLE = {
    "int": [0, 1, -1, 127, 128, -33, 300, -300, 70000, -70000, 2**40, -(2**40), 2**64 - 1],
    "float": [1.5, -0.0],
    "str": ["", "short", "x" * 40, "y" * 300],
    "bin": [b"", b"\x00" * 10, b"\x01" * 300],
    "ext": [ExtType(1, b"a"), ExtType(2, b"ab"), ExtType(3, b"abcd"), ExtType(4, b"x" * 8), ExtType(5, b"x" * 16), ExtType(6, b"x" * 3)],
    "nested": [[{"a": [None, True, False]}], [[[]]], {}],
    "big_array": list(range(20)),
    "big_map": {str(i): i for i in range(20)},
}


def test_truncated_at_every_prefix(impl):
    data = impl.packb(SAMPLE)
    assert impl.unpackb(data) == SAMPLE
    dec = impl.Decoder()
    for i in range(len(data)):
        with pytest.raises(DecodeError):
            dec.decode(data[:i])


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x90", b"\xc1", b"\xff\xff"], ids=bytes.hex)
def test_trailing_bytes(impl, extra):
    data = impl.packb(SAMPLE)
    with pytest.raises(DecodeError):
        impl.unpackb(data + extra)
    with pytest.raises(DecodeError):
        impl.unpackb(b"\x01" + extra)


@pytest.mark.parametrize("data", [b"\xc1", b"\x91\xc1", b"\x81\xc1\x01", b"\x81\x01\xc1", b"\x93\x01\x02\xc1"], ids=bytes.hex)
def test_reserved_byte_c1(impl, data):
    with pytest.raises(DecodeError):
        impl.unpackb(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\xa1\xff",
        b"\xa2\xc3\x28",  # bad continuation
        b"\xa2\xc0\x80",  # overlong NUL
        b"\xa3\xed\xa0\x80",  # encoded surrogate
        b"\xa1\x80",  # lone continuation
        b"\xa3\xe2\x82a",  # 3-byte sequence cut short by an ASCII byte
        b"\xd9\x02\xf0\x9f",  # truncated 4-byte sequence in str8
        b"\x91\xa1\xfe",
        b"\x81\xa1\xfe\x01",
    ],
    ids=bytes.hex,
)
def test_invalid_utf8(impl, data):
    with pytest.raises(DecodeError):
        impl.unpackb(data)


@pytest.mark.parametrize(
    "data",
    [b"\x81\x91\x01\x02", b"\x81\x80\x02", b"\x81\x90\x02", b"\x91\x81\x90\x02"],
    ids=["array-key", "map-key", "empty-array-key", "nested"],
)
def test_unhashable_key(impl, data):
    with pytest.raises(DecodeError):
        impl.unpackb(data)


def test_hashable_keys_ok(impl):
    d = {1: "a", "s": 2, b"b": 3, None: 4, False: 5, 1.5: 6, ExtType(1, b"x"): 7, -5: 8}
    assert len(d) == 8
    out = impl.unpackb(impl.packb(d))
    assert_same(d, out)


def test_depth_limit_decode(impl):
    ok_list = b"\x91" * DEFAULT_MAX_DEPTH + b"\xc0"
    ok_map = b"\x81\xa1k" * DEFAULT_MAX_DEPTH + b"\xc0"
    assert impl.unpackb(ok_list) == nested_list(DEFAULT_MAX_DEPTH)
    assert impl.unpackb(ok_map) == nested_map(DEFAULT_MAX_DEPTH)
    with pytest.raises(DecodeError):
        impl.unpackb(b"\x91" + ok_list)
    with pytest.raises(DecodeError):
        impl.unpackb(b"\x81\xa1k" + ok_map)
    with pytest.raises(DecodeError):
        impl.unpackb(b"\x91" * (DEFAULT_MAX_DEPTH + 1) + b"\x90")  # empty innermost still counts
    # far beyond the limit: no RecursionError, no stack overflow
    with pytest.raises(DecodeError):
        impl.unpackb(b"\x91" * 100000 + b"\xc0")
    with pytest.raises(DecodeError):
        impl.unpackb(b"\xdc\x00\x01" * 100000 + b"\xc0")
    dec = impl.Decoder(max_depth=2)
    assert dec.decode(b"\x91\x91\x01") == [[1]]
    with pytest.raises(DecodeError):
        dec.decode(b"\x91\x91\x91\x01")
    with pytest.raises(DecodeError):
        dec.decode(b"\x91\x81\x01\x90")
    dec0 = impl.Decoder(max_depth=0)
    assert dec0.decode(b"\x05") == 5
    with pytest.raises(DecodeError):
        dec0.decode(b"\x90")
    with pytest.raises(DecodeError):
        impl.unpackb(b"\x91\x91\x01", max_depth=1)


_HUGE_DEPTH_PROBE = """
import importlib, sys
m = importlib.import_module(sys.argv[1])
from fastrpc.wire.constants import MAX_DEPTH_LIMIT
from fastrpc.errors import DecodeError, EncodeError
for cls in (m.Encoder, m.Decoder):
    try:
        cls(max_depth=MAX_DEPTH_LIMIT + 1)
    except ValueError:
        pass
    else:
        sys.exit(f"{cls.__name__} accepted max_depth beyond the limit")
cyclic = []
cyclic.append(cyclic)
try:
    m.Encoder(max_depth=MAX_DEPTH_LIMIT).encode(cyclic)
except EncodeError:
    pass
else:
    sys.exit("encoded a cyclic list")
try:
    m.Decoder(max_depth=MAX_DEPTH_LIMIT).decode(b"\\x91" * 200000 + b"\\xc0")
except DecodeError:
    pass
else:
    sys.exit("decoded 200000 nested arrays")
print("ok")
"""


def test_huge_max_depth_fails_cleanly(impl):
    """max_depth is capped at MAX_DEPTH_LIMIT (beyond it: ValueError), and at
    the cap a cyclic or absurdly deep value ends in a codec error, never a
    crash, a RecursionError or a SystemError.  Run in a child process: a C
    stack overflow would kill it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(impl.codec.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _HUGE_DEPTH_PROBE, impl.codec.__name__],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (
        f"exit code {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr[-2000:]}"
    )


def test_decode_range_stays_inside_data(impl, request):
    """decode_range must not trust ``end`` beyond the end of ``data``."""
    with pytest.raises((ValueError, IndexError)):  # DecodeError is a ValueError
        impl.Decoder().decode_range(b"\xc4\x05ab", 0, 7)
    with pytest.raises((ValueError, IndexError)):
        impl.Decoder().decode_range(b"\x92\x01", 0, 3)


LIMITS = [
    ("max_str_len", lambda n: "s" * n),
    ("max_bin_len", lambda n: b"b" * n),
    ("max_array_len", lambda n: [0] * n),
    ("max_map_len", lambda n: {i: 0 for i in range(n)}),
    ("max_ext_len", lambda n: ExtType(9, b"e" * n)),
]


@pytest.mark.parametrize("limit,make", LIMITS, ids=[name for name, _ in LIMITS])
@pytest.mark.parametrize("n", [0, 3, 20, 300])
def test_length_limits(impl, limit, make, n):
    dec = impl.Decoder(**{limit: n})
    at_limit = impl.packb(make(n))
    over = impl.packb(make(n + 1))
    assert dec.decode(at_limit) == normalize(make(n))
    with pytest.raises(DecodeError):
        dec.decode(over)
    with pytest.raises(DecodeError):
        dec.decode(impl.packb([None, {"k": make(n + 1)}]))  # nested too
    with pytest.raises(DecodeError):
        impl.unpackb(over, **{limit: n})
    # the other limits do not interfere
    assert impl.Decoder(**{name: 0 for name, _ in LIMITS if name != limit}).decode(over) == normalize(make(n + 1))


HUGE = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4G items
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xdf\x7f\xff\xff\xff",  # map32 of 2G pairs
    b"\xdf\xff\xff\xff\xff",
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xc9\xff\xff\xff\xff\x01",  # ext32
    b"\xdc\xff\xff",
    b"\xde\xff\xff",
    b"\xda\xff\xff",
    b"\xc5\xff\xff",
    b"\xc8\xff\xff\x01",
    b"\xdd\x00\x10\x00\x00" + b"\x00" * 16,  # 1M items claimed, 16 bytes present
    b"\xdf\x00\x10\x00\x00" + b"\x00" * 16,
    b"\x91" * 30 + b"\xdd\xff\xff\xff\xff",
    b"\x81\xa1k\xdb\xff\xff\xff\xff",
]


@pytest.mark.parametrize("data", HUGE, ids=lambda d: d[:6].hex())
def test_huge_claimed_length_fails_fast(impl, data):
    dec = impl.Decoder()
    start = time.perf_counter()
    for _ in range(200):
        with pytest.raises(DecodeError):
            dec.decode(data)
    # 200 rejections of a 4 GiB claim: nothing proportional to the claim
    assert time.perf_counter() - start < 2.0


def test_huge_claimed_length_allocates_nothing(impl):
    dec = impl.Decoder()
    for data in HUGE:  # warm up (caches, interned strings, exception types)
        with pytest.raises(DecodeError):
            dec.decode(data)
    tracemalloc.start()
    try:
        for data in HUGE:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            with pytest.raises(DecodeError):
                dec.decode(data)
            peak = tracemalloc.get_traced_memory()[1]
            assert peak - before < 256 * 1024, f"{data[:6].hex()}: peak {peak - before} bytes"
    finally:
        tracemalloc.stop()


def test_decode_errors_are_value_errors(impl):
    with pytest.raises(ValueError):
        impl.unpackb(b"\xc1")
    with pytest.raises(CodecError):
        impl.unpackb(b"")


def _has_ext_minus1(obj):
    if isinstance(obj, ExtType):
        return obj.code == -1
    if isinstance(obj, list):
        return any(_has_ext_minus1(x) for x in obj)
    if isinstance(obj, dict):
        return any(_has_ext_minus1(k) or _has_ext_minus1(v) for k, v in obj.items())
    return False


@scaled(1.5)
@given(st.binary(max_size=64))
def test_random_bytes_agree_with_msgpack(impl, data):
    try:
        ours = impl.unpackb(data)
        ours_ok = True
    except DecodeError:
        ours_ok = False
    try:
        theirs = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=ExtType)
        theirs_ok = True
    except Exception:
        theirs_ok = False
    if ours_ok and _has_ext_minus1(ours):
        return  # msgpack turns ext -1 into its Timestamp type (or rejects it)
    assert ours_ok == theirs_ok, f"fastrpc {'accepts' if ours_ok else 'rejects'} {data.hex()}, msgpack does not"
    if ours_ok:
        assert_same(normalize(theirs), ours)


@pytest.mark.parametrize("name", ["max_str_len", "max_bin_len", "max_array_len", "max_map_len", "max_ext_len"])
def test_decoder_limits_are_checked_when_built(impl, name):
    with pytest.raises(TypeError):
        impl.Decoder(**{name: "10"})
    for ok in (None, 0, 10, 2**70, 7.5):
        impl.Decoder(**{name: ok})


FLAT = [
    [],
    [0, 1, 127],
    [128, 255, 256, 65535, 65536, 2**32 - 1],
    [-1, -32, -33, -128, -129, -(2**31)],
    [None, True, False],
    ["", "a", "é", "x" * 31, "x" * 32],
    ["abc", 1, "é"],
    [2**32, 2**63, 1.5, b"b", [1], {}],  # items the fast path hands back to the general one
    list(range(15)),
]


@pytest.mark.parametrize("items", FLAT, ids=range(len(FLAT)))
def test_flat_arrays_decode_as_the_general_path(impl, items):
    # Small arrays of scalars (call arguments) take a fast path in the pure
    # decoder: results, truncation, trailing bytes and limits must be the
    # general path's, also when a limit is changed after construction.
    data = impl.packb(items)
    assert_same(items, impl.unpackb(data))
    dec = impl.Decoder()
    for i in range(len(data)):
        with pytest.raises(DecodeError):
            dec.decode(data[:i])
    with pytest.raises(DecodeError):
        dec.decode(data + b"\x00")
    assert_same(items, dec.decode_range(b"\xc0" + data + b"\xc0", 1, len(data) + 1))
    if items:
        with pytest.raises(DecodeError):
            impl.Decoder(max_depth=0).decode(data)
        with pytest.raises(DecodeError):
            impl.Decoder(max_array_len=len(items) - 1).decode(data)
        dec.max_array_len = len(items) - 1
        with pytest.raises(DecodeError):
            dec.decode(data)
    longest = max((len(x.encode()) for x in items if type(x) is str), default=0)
    if longest:
        with pytest.raises(DecodeError):
            impl.Decoder(max_str_len=longest - 1).decode(data)
        dec = impl.Decoder()
        dec.max_str_len = longest - 1
        with pytest.raises(DecodeError):
            dec.decode(data)


@pytest.mark.parametrize(
    "data",
    ["92a1fe01", "9201a2c328", "93cd01", "92cc", "92ce000000", "9201c1", "92c0c0c0", "91d9", "93010203ff"],
)
def test_flat_array_errors(impl, data):
    with pytest.raises(DecodeError):
        impl.unpackb(bytes.fromhex(data))


@pytest.mark.parametrize(
    "data", ["01", "7f", "cc80", "ccff", "cd0100", "cdffff", "cd00", "cc", "cdff", "cd010000", "ce00010000", "ceffffffff", "ce000100", "ce0001000000"]
)
def test_small_int_answers(impl, data):
    raw = bytes.fromhex(data)
    try:
        expected = msgpack.unpackb(raw)
    except Exception:
        with pytest.raises(DecodeError):
            impl.unpackb(raw)
    else:
        assert_same(expected, impl.unpackb(raw))


# --------------------------------------------------------------------------
# re-entrant use: neither twin's Encoder or Decoder refuses it (the compiled
# Encoder gives a nested encode() a buffer of its own; decoding keeps no
# state between calls), and the results are the same


class Boxed:
    def __init__(self, value):
        self.value = value


def test_encoder_used_again_from_its_default_hook(impl):
    enc = None

    def default(obj):  # encodes with the very encoder that called it
        return ExtType(1, enc.encode(["inner", obj.value]))

    enc = impl.Encoder(default=default)
    value = [1, Boxed([2, Boxed(3)]), "end"]
    inner = msgpack.packb(["inner", 3])
    middle = msgpack.packb(["inner", [2, msgpack.ExtType(1, inner)]])
    expected = msgpack.packb([1, msgpack.ExtType(1, middle), "end"])
    assert enc.encode(value) == expected
    buf = bytearray(b"xy")
    enc.pack_into(buf, value)
    assert buf == b"xy" + expected


def test_decoder_used_again_from_its_ext_hook(impl):
    dec = impl.Decoder(ext_hook=lambda code, data: ("ext", code, dec.decode(data)))
    data = impl.packb([ExtType(1, impl.packb([1, ExtType(2, impl.packb("x"))])), 2])
    assert dec.decode(data) == [("ext", 1, [1, ("ext", 2, "x")]), 2]


# --------------------------------------------------------------------------
# limits changed after construction: the same rules as in the constructor
# (compiled behaviour, for both twins): None means no limit (and reads as
# 4294967295); a value that is not a real number is refused with TypeError
# when assigned, leaving the limit as it was; max_depth may not be None.

LIMIT_NAMES = [name for name, _ in LIMITS]
NO_LIMIT = 0xFFFFFFFF


def limited_values(make):
    """Values holding one 5-unit str/bin/array/map/ext: alone, in a small
    array (the pure decoder's fast path for flat arrays), nested, and as a
    map value and key where it can be one."""
    v = make(5)
    out = [v, [v], [1, [v]], {"k": v}]
    if not isinstance(v, (list, dict)):
        out.append({v: 1})
    return out


@pytest.mark.parametrize("name,make", LIMITS, ids=LIMIT_NAMES)
def test_decoder_limit_set_to_none_after_construction(impl, name, make):
    datas = [impl.packb(v) for v in limited_values(make)]
    dec = impl.Decoder(**{name: 4})
    for data in datas:
        with pytest.raises(DecodeError, match=f"exceeds {name}=4$"):
            dec.decode(data)
    setattr(dec, name, None)
    assert getattr(dec, name) == NO_LIMIT
    for value, data in zip(limited_values(make), datas):
        assert dec.decode(data) == normalize(value)
    setattr(dec, name, 4)  # and back
    for data in datas:
        with pytest.raises(DecodeError, match=f"exceeds {name}=4$"):
            dec.decode(data)


@pytest.mark.parametrize("bad", ["10", b"10", [10], object()], ids=["str", "bytes", "list", "object"])
@pytest.mark.parametrize("name,make", LIMITS, ids=LIMIT_NAMES)
def test_decoder_limit_of_wrong_type_refused_when_assigned(impl, name, make, bad):
    dec = impl.Decoder(**{name: 4})
    with pytest.raises(TypeError) as info:
        setattr(dec, name, bad)
    assert str(info.value) == f"{name} must be an int or None, not {type(bad).__name__}"
    assert getattr(dec, name) == 4
    with pytest.raises(DecodeError, match=f"exceeds {name}=4$"):
        dec.decode(impl.packb(make(5)))


@pytest.mark.parametrize("cls", ["Encoder", "Decoder"])
@pytest.mark.parametrize("bad", [None, "3", [3]], ids=["None", "str", "list"])
def test_max_depth_refused_when_assigned_something_not_a_number(impl, cls, bad):
    obj = getattr(impl, cls)(max_depth=2)
    with pytest.raises(TypeError) as info:
        obj.max_depth = bad
    assert str(info.value) == f"max_depth must be an int, not {type(bad).__name__}"
    assert obj.max_depth == 2  # as it was, and still applied
    assert_same([[1]], impl.unpackb(impl.packb([[1]])))
    with pytest.raises(CodecError, match="nesting deeper than max_depth=2$"):
        if cls == "Encoder":
            obj.encode([[[1]]])
        else:
            obj.decode(impl.packb([[[1]]]))


ASSIGNED = [0, 4, 5, 4.5, 5.0, -1, -0.5, math.nan, math.inf, -math.inf, 2**70, True]


def _decode_outcome(dec, data):
    try:
        return ("ok", dec.decode(data))
    except DecodeError as exc:
        return ("DecodeError", str(exc))


@pytest.mark.parametrize("value", ASSIGNED, ids=repr)
@pytest.mark.parametrize("name,make", LIMITS, ids=LIMIT_NAMES)
def test_decoder_limit_assigned_works_as_given_when_built(impl, name, make, value):
    """A limit assigned later reads back as given and decodes exactly as the
    same limit given to the constructor."""
    datas = [impl.packb(v) for v in limited_values(make)]
    built = impl.Decoder(**{name: value})
    later = impl.Decoder()
    setattr(later, name, value)
    assert getattr(later, name) is value and getattr(built, name) is value
    for data in datas:
        assert _decode_outcome(later, data) == _decode_outcome(built, data)


@pytest.mark.parametrize("depth", [0, 0.0, -1, -0.5, -math.inf])
def test_max_depth_of_zero_or_less_after_construction_refuses_any_container(impl, depth):
    """A max_depth of zero or less assigned later (the constructor accepts
    0..MAX_DEPTH_LIMIT) refuses every container, small flat arrays too."""
    dec = impl.Decoder()
    dec.max_depth = depth
    for data in (b"\x90", b"\x91\x01", b"\x93\x01\xa1x\xc0", b"\x80", b"\xdc\x00\x01\x01"):
        with pytest.raises(DecodeError, match="^nesting deeper than max_depth="):
            dec.decode(data)
    assert dec.decode(b"\x01") == 1
    enc = impl.Encoder()
    enc.max_depth = depth
    with pytest.raises(EncodeError, match="^nesting deeper than max_depth="):
        enc.encode([1])
    assert enc.encode(1) == b"\x01"


@pytest.mark.parametrize("name", LIMIT_NAMES + ["max_depth"])
def test_decoder_limits_assigned_later_agree_across_twins(impl_pair, name):
    """Every assignment of ASSIGNED, None and values of other types: same
    exception (type and words) or same value read back, and the same
    outcome, value or DecodeError words, for every test input."""
    make = dict(LIMITS).get(name, lambda n: [[[[[0] * n]]]])
    inputs = [impl_pair[1].packb(v) for v in limited_values(make)]
    inputs += [b"\x90", b"\x91\x01", b"\xa0", b"\x93\x01\xa1x\xc0", impl_pair[1].packb([[[[[1]]]]])]
    results = []
    for impl in impl_pair:
        dec = impl.Decoder()
        got = []
        for value in ASSIGNED + [None, "5", 3j]:
            try:
                setattr(dec, name, value)
            except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
                got.append(("refused", type(exc).__name__, str(exc)))
            got.append(("reads", repr(getattr(dec, name))))
            got.extend(_decode_outcome(dec, data) for data in inputs)
        results.append(got)
    c, py = results
    assert py == c
