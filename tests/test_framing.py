"""Frame writer and incremental parser (wire format 1.2).

Every test runs against both implementations through ``impl``; the tests at
the end compare the two (``impl_pair``) and are skipped unless both exist.
"""

from __future__ import annotations

import struct
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastrpc.wire._framing_py
from fastrpc.wire import constants as W
from fastrpc.wire.constants import PREFACE, ExtType, MsgType
from fastrpc.errors import (
    DecodeError,
    EncodeError,
    FastRPCError,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    PrefaceError,
    ProtocolVersionError,
    StatusCode,
    TruncatedFrame,
    UnknownMessageType,
)

HEADER = struct.Struct(">IBBHI")
U16 = struct.Struct(">H").pack
U32 = struct.Struct(">I").pack
U64 = struct.Struct(">Q").pack

# --------------------------------------------------------------------------
# helpers


def scaled(fraction):
    """Run a share of the active profile's max_examples (HYPOTHESIS_PROFILE)."""
    return settings(max_examples=max(10, int(settings.default.max_examples * fraction)))


def raw_frame(mtype=MsgType.RESPONSE, flags=0, method=0, request_id=1, body=b"\xc0", length=None):
    """Bytes of one frame built by hand (``length`` overrides the length field)."""
    if length is None:
        length = W.HEADER_BODY_SIZE + len(body)
    return HEADER.pack(length, mtype, flags, method, request_id) + body


def frame_key(f):
    """Every attribute of a Frame (the error by class)."""
    return (
        f.type,
        f.flags,
        f.method,
        f.name,
        f.request_id,
        f.deadline,
        f.metadata,
        f.value,
        None if f.error is None else type(f.error),
    )


def packed_key(f, packb):
    """frame_key with values packed to bytes: exact even for NaN."""
    return frame_key(f)[:6] + (packb(f.metadata), packb(f.value), frame_key(f)[8])


def to_lists(obj):
    if isinstance(obj, (list, tuple)) and not isinstance(obj, ExtType):
        return [to_lists(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_lists(v) for k, v in obj.items()}
    return obj


def split(data, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


def feed_all(parser, chunks):
    frames = []
    for chunk in chunks:
        frames.extend(parser.feed(chunk))
    parser.feed_eof()
    return frames


def outcome(parser, chunks, packb):
    """(frame keys, exception class or None) for feeding ``chunks`` then EOF."""
    frames = []
    try:
        for chunk in chunks:
            frames.extend(parser.feed(chunk))
        parser.feed_eof()
    except FastRPCError as exc:
        frames.extend(getattr(exc, "frames", []))
        return [packed_key(f, packb) for f in frames], type(exc)
    return [packed_key(f, packb) for f in frames], None


# A frame is described by a spec tuple; write_spec() writes it, expected_key()
# says what the parser must return for it.


def write_spec(writer, spec):
    kind = spec[0]
    if kind == "request":
        _, rid, method, args, kwargs, deadline, metadata, notify = spec
        writer.write_request(rid, method, args, kwargs, deadline=deadline, metadata=metadata, notify=notify)
    elif kind == "response":
        writer.write_response(spec[1], spec[2])
    elif kind == "error":
        writer.write_error(spec[1], spec[2], spec[3], spec[4])
    else:
        writer.write_frame(spec[1], spec[2], spec[3])


def expected_key(spec):
    kind = spec[0]
    if kind == "request":
        _, rid, method, args, kwargs, deadline, metadata, notify = spec
        flags = 0
        if isinstance(method, str):
            flags |= W.FLAG_METHOD_NAME
        if deadline is not None:
            flags |= W.FLAG_DEADLINE
        if metadata:
            flags |= W.FLAG_METADATA
        if kwargs:
            flags |= W.FLAG_KWARGS
        value = [to_lists(args), to_lists(kwargs)] if kwargs else to_lists(args)
        return (
            MsgType.NOTIFY if notify else MsgType.REQUEST,
            flags,
            0 if isinstance(method, str) else method,
            method if isinstance(method, str) else None,
            rid,
            deadline,
            metadata if metadata else None,
            value,
            None,
        )
    if kind == "response":
        return (MsgType.RESPONSE, 0, 0, None, spec[1], None, None, to_lists(spec[2]), None)
    if kind == "error":
        return (MsgType.ERROR, 0, 0, None, spec[1], None, None, [int(spec[2]), spec[3], to_lists(spec[4])], None)
    return (spec[1], 0, 0, None, spec[2], None, None, to_lists(spec[3]), None)


def build_stream(impl, specs, preface=True):
    w = impl.FrameWriter()
    if preface:
        w.write_preface()
    for spec in specs:
        write_spec(w, spec)
    return w.take()


# --------------------------------------------------------------------------
# strategies

u32 = st.integers(0, 0xFFFFFFFF)
leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
payload = st.recursive(
    leaf,
    lambda c: st.lists(c, max_size=4) | st.tuples(c, c) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=12,
)
small_map = st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(-1000, 1000), max_size=3)
request_spec = st.tuples(
    st.just("request"),
    u32,
    st.integers(0, 0xFFFF) | st.text(max_size=30),
    st.lists(payload, max_size=4) | st.lists(payload, max_size=3).map(tuple),
    st.none() | st.dictionaries(st.text(max_size=8), payload, max_size=3),
    st.none() | st.integers(0, 2**64 - 1),
    st.none() | small_map,
    st.booleans(),
)
response_spec = st.tuples(st.just("response"), u32, payload)
error_spec = st.tuples(st.just("error"), u32, st.sampled_from(list(StatusCode)), st.text(max_size=30), payload)
other_spec = st.tuples(st.just("frame"), st.sampled_from(list(MsgType)), u32, payload)
frame_spec = request_spec | response_spec | error_spec | other_spec


# --------------------------------------------------------------------------
# golden bytes: the wire format itself


def test_golden_request_by_index(impl):
    w = impl.FrameWriter()
    w.write_request(1, 3, [7, 8])
    assert w.take() == bytes.fromhex("0000000b" "01" "00" "0003" "00000001" "920708")


def test_golden_request_all_fields(impl):
    w = impl.FrameWriter()
    w.write_request(0xDEADBEEF, "add", [1], {"k": 2}, deadline=1_500_000, metadata={"t": "x"})
    body = (
        U16(3) + b"add"  # method name
        + U64(1_500_000)  # deadline
        + U32(5) + bytes.fromhex("81a174a178")  # metadata {"t": "x"}
        + bytes.fromhex("9291 01 81a16b02")  # [[1], {"k": 2}]
    )
    assert w.take() == HEADER.pack(8 + len(body), 1, 0x0F, 0, 0xDEADBEEF) + body


def test_golden_other_frames(impl):
    w = impl.FrameWriter()
    w.write_preface()
    w.write_response(7, 56)
    w.write_error(9, StatusCode.NOT_FOUND, "nope")
    w.write_request(2, 1, (), notify=True)
    w.write_frame(MsgType.PING, 0)
    assert w.take() == (
        b"FRPC\x01\x02\r\n"
        + bytes.fromhex("00000009 02 00 0000 00000007 38")
        + bytes.fromhex("00000010 03 00 0000 00000009 9305a46e6f7065c0")
        + bytes.fromhex("00000009 04 00 0001 00000002 90")
        + bytes.fromhex("00000009 06 00 0000 00000000 c0")
    )


def test_empty_kwargs_and_metadata_set_no_flags(impl):
    w = impl.FrameWriter()
    w.write_request(1, 2, [1], {}, metadata={})
    assert w.take() == raw_frame(MsgType.REQUEST, 0, 2, 1, b"\x91\x01")


# --------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("mtype", list(MsgType), ids=[t.name for t in MsgType])
def test_roundtrip_every_type(impl, mtype):
    w = impl.FrameWriter()
    w.write_preface()
    w.write_frame(mtype, 12345, {"x": [1, 2.5, b"b"]})
    w.write_frame(int(mtype))  # defaults: request_id 0, value None
    frames = impl.FrameParser().feed(w.take())
    assert [frame_key(f) for f in frames] == [
        (mtype, 0, 0, None, 12345, None, None, {"x": [1, 2.5, b"b"]}, None),
        (mtype, 0, 0, None, 0, None, None, None, None),
    ]
    assert all(type(f) is impl.Frame for f in frames)
    assert mtype.name in repr(frames[0])


REQUESTS = [
    ("request", 1, 3, [7, 8], None, None, None, False),
    ("request", 2, 0xFFFF, [], None, None, None, False),
    ("request", 0xFFFFFFFF, "Service.method", [1, "a"], None, None, None, False),
    ("request", 3, "", [], None, None, None, False),
    ("request", 4, "\u00fcnic\u00f8de \U0001f600", [None], None, None, None, False),
    ("request", 5, 1, [], None, 0, None, False),
    ("request", 6, 1, [], None, 2**64 - 1, None, False),
    ("request", 7, 1, [1], None, 30_000_000, {"trace": "abc", "n": 1}, False),
    ("request", 8, 1, [1], {"a": 1, "b": [2]}, None, None, False),
    ("request", 9, "m", (1, 2), {"x": None}, 5, {"k": "v"}, True),
    ("request", 10, 9, [1], None, None, None, True),
    ("request", 11, "x" * 65535, [], None, None, None, False),
]


@pytest.mark.parametrize("spec", REQUESTS, ids=[f"id{s[1]}" for s in REQUESTS])
def test_request_roundtrip(impl, spec):
    data = build_stream(impl, [spec])
    frames = impl.FrameParser().feed(data)
    assert [frame_key(f) for f in frames] == [expected_key(spec)]


def test_response_and_error_roundtrip(impl):
    specs = [
        ("response", 1, 56),
        ("response", 2, None),
        ("response", 3, {"nested": [1, {"deep": b"\x00"}], "ext": ExtType(3, b"z")}),
        ("error", 4, StatusCode.INVALID_ARGUMENT, "bad", {"field": "x"}),
        ("error", 5, 99, "future code", None),
    ]
    frames = impl.FrameParser().feed(build_stream(impl, specs))
    assert [frame_key(f) for f in frames] == [expected_key(s) for s in specs]


@given(st.lists(frame_spec, min_size=1, max_size=8), st.data())
def test_random_splits(impl, specs, data):
    stream = build_stream(impl, specs)
    expected = [expected_key(s) for s in specs]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    chunks = split(stream, cuts)
    assert b"".join(chunks) == stream
    assert [frame_key(f) for f in feed_all(impl.FrameParser(), chunks)] == expected
    # the whole stream at once, and one byte at a time
    assert [frame_key(f) for f in feed_all(impl.FrameParser(), [stream])] == expected
    one_by_one = [stream[i : i + 1] for i in range(len(stream))]
    assert [frame_key(f) for f in feed_all(impl.FrameParser(), one_by_one)] == expected


@scaled(0.25)
@given(st.lists(frame_spec, min_size=1, max_size=5), st.data())
def test_random_splits_bytes_like_chunks(impl, specs, data):
    stream = build_stream(impl, specs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6))
    wrap = data.draw(st.sampled_from([bytes, bytearray, memoryview]))
    chunks = [wrap(c) for c in split(stream, cuts)]
    assert [frame_key(f) for f in feed_all(impl.FrameParser(), chunks)] == [expected_key(s) for s in specs]


def test_frames_returned_once_and_in_order(impl):
    w = impl.FrameWriter()
    w.write_preface()
    for i in range(200):
        w.write_response(i, i)
    stream = w.take()
    p = impl.FrameParser()
    seen = []
    for i in range(0, len(stream), 7):
        seen.extend(f.request_id for f in p.feed(stream[i : i + 7]))
    assert seen == list(range(200))
    assert p.buffered == 0
    p.feed_eof()


def test_empty_feed(impl):
    p = impl.FrameParser()
    assert p.feed(b"") == []
    assert p.feed(PREFACE) == []
    assert p.feed(b"") == []
    assert p.buffered == 0


def test_empty_payload_is_none(impl):
    data = PREFACE + raw_frame(MsgType.PING, 0, 0, 7, b"")
    (f,) = impl.FrameParser().feed(data)
    assert frame_key(f) == (MsgType.PING, 0, 0, None, 7, None, None, None, None)


def test_frame_attributes_behave_alike(impl):
    # Both twins: the nine fields can be read and set, nothing else can be
    # added, and the constructor takes them in order.
    fields = ("type", "flags", "method", "name", "request_id", "deadline", "metadata", "value", "error")
    (f,) = impl.FrameParser().feed(PREFACE + raw_frame(MsgType.PING, 0, 0, 7, b""))
    f.value = [1, 2]
    f.request_id = 9
    assert (f.value, f.request_id) == ([1, 2], 9)
    with pytest.raises(AttributeError):
        f.extra = 1
    g = impl.Frame(*range(len(fields)))
    assert [getattr(g, name) for name in fields] == list(range(len(fields)))


def test_compiled_frames_are_not_gc_tracked(impl):
    # Plain records: the compiled Frame stays out of the cyclic GC (a bulk
    # read parses a third faster with the collector running); the pure
    # one is an ordinary slotted object.
    import gc

    (f,) = impl.FrameParser().feed(PREFACE + raw_frame(MsgType.PING, 0, 0, 7, b""))
    assert gc.is_tracked(f) is (impl.name == "py")


def test_parser_uses_given_decoder(impl):
    p = impl.FrameParser(decoder=impl.Decoder(max_str_len=4))
    w = impl.FrameWriter()
    w.write_preface()
    w.write_response(1, "hell")
    w.write_response(2, "hello")
    w.write_response(3, "ok")
    frames = p.feed(w.take())
    assert [f.value for f in frames] == ["hell", None, "ok"]
    assert frames[0].error is None and isinstance(frames[1].error, DecodeError) and frames[2].error is None


def test_writer_uses_given_encoder(impl):
    w = impl.FrameWriter(encoder=impl.Encoder(default=sorted))
    w.write_response(1, {3, 1, 2})
    w.write_request(2, 1, [{5, 4}], metadata={"s": frozenset({2, 1})})
    frames = impl.FrameParser(expect_preface=False).feed(w.take())
    assert frames[0].value == [1, 2, 3]
    assert frames[1].value == [[4, 5]] and frames[1].metadata == {"s": [1, 2]}


def test_metadata_with_any_keys(impl):
    w = impl.FrameWriter()
    w.write_request(1, 1, [], metadata={"k": "v", 1: b"x", b"b": [1]})
    (f,) = impl.FrameParser(expect_preface=False).feed(w.take())
    assert f.metadata == {"k": "v", 1: b"x", b"b": [1]}


# --------------------------------------------------------------------------
# preface


def test_preface_constant():
    assert PREFACE == b"FRPC\x01\x02\r\n" and W.PREFACE_SIZE == 8


def test_preface_accepted(impl):
    p = impl.FrameParser()
    assert p.peer_version is None
    assert p.feed(PREFACE) == []
    assert p.peer_version == (W.PROTOCOL_MAJOR, W.PROTOCOL_MINOR) == (1, 2)
    assert [f.request_id for f in p.feed(raw_frame(request_id=3))] == [3]
    # a 1.0 peer (no GOAWAY `last`) is still a peer
    p = impl.FrameParser()
    assert p.feed(b"FRPC\x01\x00\r\n") == [] and p.peer_version == (1, 0)


def test_preface_split(impl):
    data = PREFACE + raw_frame(request_id=4)
    for cut in range(1, len(PREFACE) + 2):
        p = impl.FrameParser()
        assert p.feed(data[:cut]) == []
        assert [f.request_id for f in p.feed(data[cut:])] == [4]
    p = impl.FrameParser()
    frames = []
    for b in data:
        frames += p.feed(bytes([b]))
    assert [f.request_id for f in frames] == [4]
    assert p.peer_version == (W.PROTOCOL_MAJOR, W.PROTOCOL_MINOR)


@pytest.mark.parametrize("pos", range(4))
def test_wrong_magic_detected_at_first_wrong_byte(impl, pos):
    p = impl.FrameParser()
    for b in PREFACE[:pos]:  # correct so far: no error
        assert p.feed(bytes([b])) == []
    bad = bytes([PREFACE[pos] ^ 0x20])
    with pytest.raises(PrefaceError) as info:
        p.feed(bad)
    assert not isinstance(info.value, ProtocolVersionError)
    # the same in one chunk, followed by more bytes
    with pytest.raises(PrefaceError):
        impl.FrameParser().feed(PREFACE[:pos] + bad + b"\x00" * 20)


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00", b"\x00" * 8, b"frpc\x01\x00\r\n"],
    ids=["http", "tls", "zeros", "lowercase"],
)
def test_other_protocols_rejected(impl, data):
    with pytest.raises(PrefaceError):
        impl.FrameParser().feed(data)
    with pytest.raises(PrefaceError):
        impl.FrameParser().feed(data[:1])


@pytest.mark.parametrize("major,minor", [(0, 9), (2, 0), (2, 1), (255, 255)])
def test_version_mismatch(impl, major, minor):
    p = impl.FrameParser()
    with pytest.raises(ProtocolVersionError) as info:
        p.feed(b"FRPC" + bytes([major, minor]))  # detected as soon as the version is in
    assert info.value.peer_version == (major, minor)
    assert isinstance(info.value, PrefaceError)
    with pytest.raises(ProtocolVersionError) as info:
        impl.FrameParser().feed(b"FRPC" + bytes([major, minor]) + b"\r\n" + raw_frame())
    assert info.value.peer_version == (major, minor)


def test_newer_minor_version_accepted(impl):
    p = impl.FrameParser()
    assert [f.request_id for f in p.feed(b"FRPC\x01\x07\r\n" + raw_frame(request_id=9))] == [9]
    assert p.peer_version == (1, 7)


@pytest.mark.parametrize("tail", [b"\n\r", b"\r\r", b"\n\n", b"\x00\x00", b" \n"], ids=bytes.hex)
def test_bad_crlf(impl, tail):
    with pytest.raises(PrefaceError) as info:
        impl.FrameParser().feed(b"FRPC\x01\x00" + tail + raw_frame())
    assert not isinstance(info.value, ProtocolVersionError)
    p = impl.FrameParser()
    p.feed(b"FRPC\x01\x00")
    with pytest.raises(PrefaceError):
        p.feed(tail)


def test_expect_preface_false(impl):
    p = impl.FrameParser(expect_preface=False)
    assert [f.request_id for f in p.feed(raw_frame(request_id=1) + raw_frame(request_id=2))] == [1, 2]
    # a preface where a frame is expected: b"FRPC" read as a ~1.2 GB length
    with pytest.raises(FrameTooLarge):
        impl.FrameParser(expect_preface=False).feed(PREFACE)


# --------------------------------------------------------------------------
# frame errors


def test_frame_too_large_after_length_only(impl):
    p = impl.FrameParser(max_frame_size=1024)
    p.feed(PREFACE)
    with pytest.raises(FrameTooLarge):
        p.feed(U32(1024 - 4 + 1))  # only the 4-byte length: 1025 bytes announced
    assert p.buffered <= W.HEADER_SIZE


def test_frame_too_large_byte_by_byte(impl):
    p = impl.FrameParser(max_frame_size=4096)
    p.feed(PREFACE)
    length = U32(10_000)
    for b in length[:3]:
        assert p.feed(bytes([b])) == []
    assert p.buffered <= 3
    with pytest.raises(FrameTooLarge):
        p.feed(length[3:])
    assert p.buffered <= W.HEADER_SIZE


def test_max_frame_size_boundary(impl):
    limit = 100
    body = b"\xc4" + bytes([limit - 14]) + b"x" * (limit - 14)  # bin8: frame is exactly `limit` bytes
    exact = raw_frame(body=body)
    assert len(exact) == limit
    p = impl.FrameParser(max_frame_size=limit)
    (f,) = p.feed(PREFACE + exact)
    assert f.value == b"x" * (limit - 14)
    with pytest.raises(FrameTooLarge):
        impl.FrameParser(max_frame_size=limit - 1).feed(PREFACE + exact)
    # the writer applies the same rule
    w = impl.FrameWriter(max_frame_size=limit)
    w.write_response(1, b"x" * (limit - 14))
    assert w.take() == exact
    with pytest.raises(FrameTooLarge):
        w.write_response(1, b"x" * (limit - 13))
    assert len(w) == 0


def test_four_gib_frame(impl):
    p = impl.FrameParser()
    with pytest.raises(FrameTooLarge):
        p.feed(PREFACE + b"\xff\xff\xff\xff")
    assert p.buffered <= W.HEADER_SIZE
    with pytest.raises(FrameTooLarge):
        impl.FrameParser().feed(PREFACE + b"\xff\xff\xff\xff" + b"\x01" * 100)


@pytest.mark.parametrize("max_size", [W.HEADER_SIZE - 1, 0, -1, W.MAX_FRAME_SIZE_LIMIT + 1])
def test_max_frame_size_validated(impl, max_size):
    with pytest.raises(ValueError):
        impl.FrameParser(max_frame_size=max_size)
    with pytest.raises(ValueError):
        impl.FrameWriter(max_frame_size=max_size)


@pytest.mark.parametrize(
    "bad,exc",
    [(None, TypeError), ("4096", TypeError), (W.HEADER_SIZE - 1, ValueError), (-1, ValueError),
     (W.MAX_FRAME_SIZE_LIMIT + 1, ValueError), (float("nan"), ValueError)],
    ids=["None", "str", "below-header", "negative", "above-limit", "nan"],
)
def test_max_frame_size_checked_when_assigned(impl, bad, exc):
    """max_frame_size assigned later is checked as in the constructor (the
    compiled twin's rule): refused at once, the old limit staying in force;
    a good value applies to the next frame."""
    exact = raw_frame(body=b"\xc4\x56" + b"x" * 86)  # 100 bytes
    parser, writer = impl.FrameParser(max_frame_size=100), impl.FrameWriter(max_frame_size=100)
    for obj in (parser, writer):
        with pytest.raises(exc):
            obj.max_frame_size = bad
        assert obj.max_frame_size == 100
    (f,) = parser.feed(PREFACE + exact)
    assert f.value == b"x" * 86
    with pytest.raises(FrameTooLarge, match="exceeds max_frame_size=100$"):
        writer.write_response(1, b"x" * 87)
    writer.write_response(1, b"x" * 86)
    assert writer.take() == exact
    parser.max_frame_size = writer.max_frame_size = 99
    with pytest.raises(FrameTooLarge, match="exceeds max_frame_size=99$"):
        writer.write_response(1, b"x" * 86)
    with pytest.raises(FrameTooLarge, match="exceeds max_frame_size=99$"):
        parser.feed(exact)


@pytest.mark.parametrize("length", range(8))
def test_length_below_header(impl, length):
    with pytest.raises(MalformedFrame):
        impl.FrameParser().feed(PREFACE + raw_frame(length=length) + b"\x00" * 16)


@pytest.mark.parametrize("mtype", [0] + list(range(10, 256)))
def test_unknown_message_type(impl, mtype):
    with pytest.raises(UnknownMessageType):
        impl.FrameParser().feed(PREFACE + raw_frame(mtype=mtype))


@pytest.mark.parametrize("flags", [0x20, 0x40, 0x80, 0xF0, 0xFF, 0x21])
def test_reserved_flags(impl, flags):
    with pytest.raises(MalformedFrame):
        impl.FrameParser().feed(PREFACE + raw_frame(MsgType.REQUEST, flags, body=b"\x90"))


def test_compressed_payload_without_agreement_is_a_frame_error(impl):
    # COMPRESSED (1.2) before any codec was agreed: that frame fails (its
    # call is answered with an error), the connection goes on.
    frames = impl.FrameParser().feed(
        PREFACE + raw_frame(MsgType.REQUEST, W.FLAG_COMPRESSED, request_id=1, body=b"\x01junk") + raw_frame(request_id=2)
    )
    assert isinstance(frames[0].error, DecodeError) and "agreed" in str(frames[0].error)
    assert frames[1].error is None and frames[1].request_id == 2


NAME, DEADLINE, META = W.FLAG_METHOD_NAME, W.FLAG_DEADLINE, W.FLAG_METADATA


TRUNCATED_FIELDS = {
    "name-len-missing": (NAME, b""),
    "name-len-half": (NAME, b"\x00"),
    "name-short": (NAME, U16(10) + b"abc"),
    "name-max-len": (NAME, U16(0xFFFF) + b"a" * 100),
    "deadline-missing": (DEADLINE, b""),
    "deadline-7-bytes": (DEADLINE, b"\x00" * 7),
    "deadline-after-name": (NAME | DEADLINE, U16(1) + b"a" + b"\x00" * 4),
    "meta-len-missing": (META, b""),
    "meta-len-3-bytes": (META, b"\x00\x00\x01"),
    "meta-short": (META, U32(100) + b"\x80"),
    "meta-4GiB": (META, U32(0xFFFFFFFF) + b"\x80"),
    "meta-after-all": (NAME | DEADLINE | META, U16(1) + b"a" + U64(5) + U32(2) + b"\x80"),
}


@pytest.mark.parametrize("flags,body", list(TRUNCATED_FIELDS.values()), ids=list(TRUNCATED_FIELDS))
def test_header_fields_past_frame_end(impl, flags, body):
    with pytest.raises(TruncatedFrame) as info:
        impl.FrameParser().feed(PREFACE + raw_frame(MsgType.REQUEST, flags, body=body))
    assert isinstance(info.value, MalformedFrame)


@pytest.mark.parametrize("name", [b"\xff", b"\xc3\x28", b"ok\xed\xa0\x80", b"\xe2\x82"], ids=bytes.hex)
def test_invalid_utf8_method_name(impl, name):
    with pytest.raises(MalformedFrame) as info:
        impl.FrameParser().feed(PREFACE + raw_frame(MsgType.REQUEST, NAME, body=U16(len(name)) + name + b"\x90"))
    assert not isinstance(info.value, TruncatedFrame)


@pytest.mark.parametrize("bad", [b"\xc1", b"\x92\x01", b"\x01\x02", b"\xa2\xff\xfe", b"\x81\x90\x01", b"\xdd\xff\xff\xff\xff"], ids=bytes.hex)
def test_bad_payload_is_per_frame(impl, bad):
    good1 = raw_frame(request_id=1, body=b"\x01")
    broken = raw_frame(request_id=2, body=bad)
    good2 = raw_frame(request_id=3, body=b"\xa2ok")
    p = impl.FrameParser()
    frames = p.feed(PREFACE + good1 + broken + good2)
    assert [(f.request_id, f.value) for f in frames] == [(1, 1), (2, None), (3, "ok")]
    assert frames[0].error is None and frames[2].error is None
    assert isinstance(frames[1].error, DecodeError)
    # the connection goes on
    assert [f.value for f in p.feed(broken + good1)] == [None, 1]
    p.feed_eof()


@pytest.mark.parametrize(
    "meta",
    [b"\x90", b"\x01", b"\xa1x", b"\xc0", b"\xc1", b"\x81\x01", b"\x80\x80", b""],
    ids=["array", "int", "str", "nil", "reserved", "truncated", "trailing", "empty"],
)
def test_bad_metadata_is_per_frame(impl, meta):
    body = U32(len(meta)) + meta + b"\x91\x01"
    p = impl.FrameParser()
    frames = p.feed(PREFACE + raw_frame(MsgType.REQUEST, META, 4, 7, body) + raw_frame(request_id=8, body=b"\x05"))
    assert len(frames) == 2
    f = frames[0]
    assert isinstance(f.error, DecodeError)
    assert f.metadata is None and f.value is None
    assert (f.type, f.flags, f.method, f.request_id) == (MsgType.REQUEST, META, 4, 7)
    assert frames[1].error is None and frames[1].value == 5


def test_ext_hook_error_is_per_frame(impl, request):
    """An exception from the decoder's ext_hook (user code, fed by the peer)
    must not lose the other frames of the chunk or desynchronise the stream:
    like any undecodable payload it should become that frame's ``error``."""

    def hook(code, data):
        if code == 1:
            raise ValueError("malformed ext payload")
        return ExtType(code, data)

    w = impl.FrameWriter()
    w.write_preface()
    w.write_response(1, "a")
    w.write_response(2, [ExtType(1, b"x")])
    w.write_response(3, "c")
    data = w.take()
    p = impl.FrameParser(decoder=impl.Decoder(ext_hook=hook))
    frames = p.feed(data[:-2])
    frames += p.feed(data[-2:])
    assert [(f.request_id, f.value) for f in frames] == [(1, "a"), (2, None), (3, "c")]
    assert isinstance(frames[1].error, DecodeError)


@pytest.mark.parametrize(
    "call",
    [
        lambda w: w.write_request(1.0, 1, []),
        lambda w: w.write_request(1, 1, [], deadline=1.5),
        lambda w: w.write_response(2.0, None),
        lambda w: w.write_frame(MsgType.PING, 1.5),
    ],
    ids=["request-id", "deadline", "response-id", "frame-id"],
)
def test_writer_non_int_fields_raise_type_error(impl, request, call):
    w = impl.FrameWriter()
    with pytest.raises(TypeError):
        call(w)
    assert len(w) == 0


def test_error_carries_preceding_frames(impl):
    good = raw_frame(request_id=1) + raw_frame(request_id=2)
    p = impl.FrameParser()
    assert [f.request_id for f in p.feed(PREFACE + raw_frame(request_id=0))] == [0]
    with pytest.raises(UnknownMessageType) as info:
        p.feed(good + raw_frame(mtype=77) + raw_frame(request_id=3))
    assert [f.request_id for f in info.value.frames] == [1, 2]  # this call's frames only
    assert all(type(f) is impl.Frame for f in info.value.frames)


def test_error_carries_frames_completed_from_buffer(impl):
    good = raw_frame(request_id=5, body=b"\xa3abc")
    p = impl.FrameParser()
    p.feed(PREFACE + good[:7])
    with pytest.raises(FrameTooLarge) as info:
        p.feed(good[7:] + b"\xff\xff\xff\xff")
    assert [(f.request_id, f.value) for f in info.value.frames] == [(5, "abc")]


@pytest.mark.parametrize(
    "bad,exc",
    [
        (b"XRPC", PrefaceError),
        (PREFACE + raw_frame(mtype=0), UnknownMessageType),
        (PREFACE + raw_frame(flags=0x80), MalformedFrame),
        (PREFACE + b"\xff\xff\xff\xff", FrameTooLarge),
        (PREFACE + raw_frame(MsgType.REQUEST, NAME, body=b""), TruncatedFrame),
    ],
    ids=["preface", "type", "flags", "too-large", "truncated"],
)
def test_parser_stays_broken(impl, bad, exc):
    p = impl.FrameParser()
    with pytest.raises(exc):
        p.feed(bad)
    for _ in range(2):
        with pytest.raises(exc) as info:
            p.feed(raw_frame())
        assert info.value.frames == []
        with pytest.raises(exc):
            p.feed(b"")


def test_feed_eof(impl):
    frame = raw_frame(request_id=1)
    p = impl.FrameParser()
    p.feed_eof()  # nothing received at all: a clean close
    p = impl.FrameParser()
    p.feed(PREFACE + frame)
    p.feed_eof()  # ends on a frame boundary
    for partial in (PREFACE[:3], PREFACE + frame[:2], PREFACE + frame[:6], PREFACE + frame[:-1]):
        p = impl.FrameParser()
        p.feed(partial)
        assert p.buffered > 0
        with pytest.raises(TruncatedFrame):
            p.feed_eof()
        with pytest.raises(TruncatedFrame):  # broken from now on
            p.feed(frame)
    p = impl.FrameParser(expect_preface=False)
    p.feed_eof()
    p = impl.FrameParser(expect_preface=False)
    p.feed(frame[:1])
    with pytest.raises(TruncatedFrame):
        p.feed_eof()


def test_exception_hierarchy():
    for cls in (PrefaceError, ProtocolVersionError, FrameTooLarge, UnknownMessageType, MalformedFrame, TruncatedFrame):
        assert issubclass(cls, FrameError) and issubclass(cls, FastRPCError) and issubclass(cls, ValueError)
    assert issubclass(TruncatedFrame, MalformedFrame)
    assert issubclass(ProtocolVersionError, PrefaceError)
    assert not issubclass(DecodeError, FrameError)


# --------------------------------------------------------------------------
# writer


def test_writer_batch(impl):
    w = impl.FrameWriter()
    w.write_preface()
    specs = []
    for i in range(1000):
        spec = [("response", i, [i, "v"]), ("request", i, i % 7, [i], None, None, None, False), ("error", i, 2, "e", None)][i % 3]
        write_spec(w, spec)
        specs.append(spec)
    n = len(w)
    data = w.take()
    assert len(data) == n and type(data) is bytes
    assert len(w) == 0 and w.take() == b""
    assert data == build_stream(impl, specs)
    assert [frame_key(f) for f in impl.FrameParser().feed(data)] == [expected_key(s) for s in specs]


def test_writer_len_and_clear(impl):
    w = impl.FrameWriter()
    assert len(w) == 0
    w.write_preface()
    assert len(w) == 8
    w.write_response(1, 56)
    assert len(w) == 8 + 13
    w.clear()
    assert len(w) == 0 and w.take() == b""
    w.write_response(2, 1)
    assert w.take() == raw_frame(MsgType.RESPONSE, request_id=2, body=b"\x01")


class Unencodable:
    pass


ROLLBACK_CASES = [
    (EncodeError, lambda w: w.write_request(1, 1, [1, Unencodable()])),
    (EncodeError, lambda w: w.write_request(1, 1, [1], {"k": Unencodable()})),
    (EncodeError, lambda w: w.write_request(1, "name", [1], deadline=5, metadata={"k": Unencodable()})),
    (EncodeError, lambda w: w.write_request(1, 1, [2**64])),
    (EncodeError, lambda w: w.write_response(1, ["x" * 100, Unencodable()])),
    (EncodeError, lambda w: w.write_error(1, 2, "m", Unencodable())),
    (EncodeError, lambda w: w.write_frame(MsgType.GOAWAY, 1, Unencodable())),
    (FrameTooLarge, lambda w: w.write_response(1, b"x" * 2000)),
    (FrameTooLarge, lambda w: w.write_request(1, "m" * 1500, [])),
    (FrameTooLarge, lambda w: w.write_request(1, 1, [], metadata={"k": "v" * 1500})),
    (OverflowError, lambda w: w.write_request(2**32, 1, [])),
    (OverflowError, lambda w: w.write_request(-1, 1, [])),
    (OverflowError, lambda w: w.write_request(1, 65536, [])),
    (OverflowError, lambda w: w.write_request(1, -1, [])),
    (OverflowError, lambda w: w.write_request(1, 1, [], deadline=-1)),
    (OverflowError, lambda w: w.write_request(1, 1, [], deadline=2**64)),
    (OverflowError, lambda w: w.write_response(2**32, None)),
    (OverflowError, lambda w: w.write_frame(MsgType.PING, -1)),
    (ValueError, lambda w: w.write_frame(0, 1, None)),
    (ValueError, lambda w: w.write_frame(10, 1, None)),
    (ValueError, lambda w: w.write_request(1, "x" * 65536, [])),
    (ValueError, lambda w: w.write_request(1, "\ud800", [])),
    (TypeError, lambda w: w.write_request(1, None, [])),
    (TypeError, lambda w: w.write_request(1, 1.5, [])),
    (TypeError, lambda w: w.write_request(1, 1, [], metadata=[("k", "v")])),
]


@pytest.mark.parametrize("exc,call", ROLLBACK_CASES, ids=[f"{e.__name__}-{i}" for i, (e, _) in enumerate(ROLLBACK_CASES)])
def test_writer_rollback(impl, exc, call):
    w = impl.FrameWriter(max_frame_size=1024)
    w.write_preface()
    w.write_response(1, "before")
    before = bytes(w.take())
    w.write_preface()
    w.write_response(1, "before")
    with pytest.raises(exc):
        call(w)
    assert len(w) == len(before)
    w.write_response(2, "after")  # the writer is still usable
    data = w.take()
    assert data == before + raw_frame(MsgType.RESPONSE, request_id=2, body=b"\xa5after")
    assert [f.value for f in impl.FrameParser(max_frame_size=1024).feed(data)] == ["before", "after"]


def test_large_frame_in_chunks(impl):
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    w = impl.FrameWriter()
    w.write_preface()
    w.write_response(42, payload)
    w.write_response(43, "next")
    data = w.take()
    frame_size = len(data) - 8 - len(raw_frame(body=b"\xa4next"))
    chunk = 64 * 1024
    p = impl.FrameParser()
    frames = []
    max_buffered = 0
    for i in range(0, len(data), chunk):
        got = p.feed(data[i : i + chunk])
        max_buffered = max(max_buffered, p.buffered)
        if i + chunk < frame_size:
            assert got == []
        frames.extend(got)
    p.feed_eof()
    assert max_buffered <= frame_size + chunk
    assert [f.request_id for f in frames] == [42, 43]
    assert frames[0].value == payload and frames[1].value == "next"
    assert p.buffered == 0


# --------------------------------------------------------------------------
# cross-implementation


@scaled(0.5)
@given(st.lists(frame_spec, max_size=6))
def test_cross_writer_bytes_identical(impl_pair, specs):
    c, py = impl_pair
    assert build_stream(c, specs) == build_stream(py, specs)


# strategies cannot use fixtures: build their streams with the pure writer
_PY_WRITER = types.SimpleNamespace(FrameWriter=fastrpc.wire._framing_py.FrameWriter)


def _mutated_streams():
    """Valid streams with one byte replaced, truncated or with bytes inserted,
    and plain garbage (with and without a valid preface)."""
    base = st.lists(frame_spec, min_size=1, max_size=4).map(lambda specs: build_stream(_PY_WRITER, specs))
    return st.one_of(
        st.binary(max_size=80).map(lambda b: PREFACE + b),
        st.binary(max_size=40),
        st.tuples(base, st.integers(0, 10_000), st.integers(0, 255)).map(
            lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
        ),
        st.tuples(base, st.integers(0, 10_000)).map(lambda t: t[0][: t[1] % (len(t[0]) + 1)]),
        st.tuples(base, st.binary(min_size=1, max_size=6), st.integers(0, 10_000)).map(
            lambda t: t[0][: t[2] % len(t[0])] + t[1] + t[0][t[2] % len(t[0]) :]
        ),
    )


@scaled(1.5)
@given(_mutated_streams(), st.lists(st.integers(0, 200), max_size=5))
def test_cross_parse_identical(impl_pair, data, cuts):
    c, py = impl_pair
    for chunks in ([data], split(data, cuts)):
        assert outcome(c.FrameParser(), chunks, py.packb) == outcome(py.FrameParser(), chunks, py.packb)


@pytest.mark.parametrize("size", [0, 100, 64 * 1024, 300_000])
def test_take_buffer_gives_the_same_bytes_as_take(impl, size):
    """take_buffer() (the transport's path) hands out exactly the bytes
    take() would, leaves the writer empty and reusable, and what it handed
    out stays valid after the writer writes again."""
    a, b = impl.FrameWriter(), impl.FrameWriter()
    for w in (a, b):
        w.write_response(1, b"p" * size)
        w.write_request(2, "S.m", [1, 2])
    expected = a.take()
    got = b.take_buffer()
    assert bytes(got) == expected
    assert len(b) == 0
    b.write_response(3, b"q" * size)  # reuses or replaces the writer's memory
    assert bytes(got) == expected
    frames = impl.FrameParser(expect_preface=False).feed(bytes(got) + b.take_buffer())
    assert [f.request_id for f in frames] == [1, 2, 3]
    assert frames[0].value == b"p" * size and frames[2].value == b"q" * size


# --------------------------------------------------------------------------
# reading through get_buffer() / buffer_updated() (asyncio.BufferedProtocol)


@pytest.mark.parametrize("sizes", [(10, 100_000, 20), (20_000, 3, 70_000, 16_384), (300_000,)])
@pytest.mark.parametrize("read", [1, 4096, 20_000, 1 << 20])
def test_buffered_reads_give_the_same_frames_as_feed(impl, sizes, read):
    """Reads of any size into get_buffer()'s memory, large frames received
    in place or not, give exactly the frames feed() gives."""
    w = impl.FrameWriter()
    w.write_preface()
    for i, n in enumerate(sizes):
        w.write_response(i + 1, bytes([i % 251]) * n)
        w.write_frame(W.MsgType.PING, 0, i)
    data = w.take()
    expected = [frame_key(f) for f in impl.FrameParser().feed(data)]
    parser = impl.FrameParser()
    got = []
    pos = 0
    while pos < len(data):
        buf = parser.get_buffer(-1)
        n = min(read, len(buf), len(data) - pos)
        assert n > 0
        buf[:n] = data[pos:pos + n]
        got += parser.buffer_updated(n)
        pos += n
    assert [frame_key(f) for f in got] == expected
    parser.feed_eof()


def test_buffer_updated_needs_a_matching_get_buffer(impl):
    parser = impl.FrameParser()
    with pytest.raises(ValueError):
        parser.buffer_updated(1)
    buf = parser.get_buffer(-1)
    with pytest.raises(ValueError):
        parser.buffer_updated(len(buf) + 1)


@pytest.mark.parametrize("bad", [5, [1, 2, 3], "text", None])
def test_feed_takes_only_bytes_like_input(impl, bad):
    parser = impl.FrameParser()
    with pytest.raises(TypeError):
        parser.feed(bad)
    # nothing was consumed: the parser still works
    w = impl.FrameWriter()
    w.write_preface()
    w.write_frame(MsgType.PING, 0, 1)
    assert [f.value for f in parser.feed(w.take())] == [1]


@pytest.mark.parametrize("bad", [2.0, True, "2", None])
def test_write_frame_type_must_be_an_int(impl, bad):
    w = impl.FrameWriter()
    with pytest.raises(TypeError):
        w.write_frame(bad, 0, None)
    assert len(w) == 0
    w.write_frame(MsgType.PING, 0, None)  # an IntEnum is an int
    with pytest.raises(ValueError):
        w.write_frame(99, 0, None)


# --------------------------------------------------------------------------
# re-entrant use: user code that runs while a parser is feeding (an ext_hook,
# a decoder object) or while a writer is writing a frame (an encoder default
# hook, an encoder object, an argument's __index__ or a payload's __len__)
# may not use that same parser or writer; both twins refuse it alike.

PARSER_BUSY = "FrameParser.feed() called while it is running (from a decoder hook)"
PARSER_BUSY_UPDATED = "FrameParser.buffer_updated() called while the parser is running"
WRITER_BUSY = "FrameWriter used while it is writing a frame (from an encoder hook)"


def responses(impl, *values, preface=True):
    """Bytes of RESPONSE frames 1, 2, ... carrying ``values``."""
    w = impl.FrameWriter()
    if preface:
        w.write_preface()
    for i, value in enumerate(values, 1):
        w.write_response(i, value)
    return w.take()


def refusal(call):
    """The message of the RuntimeError ``call()`` raises (None: it returned)."""
    try:
        call()
    except RuntimeError as exc:
        return str(exc)
    return None


def read_through_buffer(parser, data):
    """feed(data) the asyncio.BufferedProtocol way."""
    buf = parser.get_buffer(-1)
    buf[: len(data)] = data
    return parser.buffer_updated(len(data))


REENTER_PARSER = {
    "feed": (lambda p, more: p.feed(more), PARSER_BUSY),
    "feed-empty": (lambda p, more: p.feed(b""), PARSER_BUSY),
    # get_buffer() may hand out the memory being parsed: nothing written to it
    "buffer_updated": (lambda p, more: (p.get_buffer(-1), p.buffer_updated(0)), PARSER_BUSY_UPDATED),
}


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
@pytest.mark.parametrize("read", ["feed", "buffer_updated"])
@pytest.mark.parametrize("reenter", list(REENTER_PARSER))
def test_parser_refuses_reentrant_use_from_ext_hook(impl, reenter, read, split):
    """An ext_hook that feeds the parser decoding it gets RuntimeError (the
    same message from both twins); the frames and the stream are unharmed,
    and the parser takes input again once the outer call has returned."""
    call, message = REENTER_PARSER[reenter]
    more = responses(impl, "later", preface=False)
    seen = []

    def hook(code, data):
        seen.append(refusal(lambda: call(parser, more)))
        return data

    parser = impl.FrameParser(decoder=impl.Decoder(ext_hook=hook))
    data = responses(impl, "a", ExtType(1, b"x"), "c")
    feed = parser.feed if read == "feed" else lambda chunk: read_through_buffer(parser, chunk)
    if split:  # the hook then runs while a buffered partial frame completes
        cut = len(responses(impl, "a")) + 5
        frames = feed(data[:cut]) + feed(data[cut:])
    else:
        frames = feed(data)
    assert seen == [message]
    assert [(f.request_id, f.value, f.error) for f in frames] == [(1, "a", None), (2, b"x", None), (3, "c", None)]
    assert [f.value for f in feed(more)] == ["later"]
    parser.feed_eof()


def test_parser_reentry_refused_in_ext_hook_fails_only_that_frame(impl):
    """Left uncaught in the ext_hook, the RuntimeError is that frame's
    DecodeError (as any ext_hook failure), caused by the RuntimeError."""

    def hook(code, data):
        return parser.feed(b"")

    parser = impl.FrameParser(decoder=impl.Decoder(ext_hook=hook))
    frames = parser.feed(responses(impl, "a", [ExtType(1, b"x")], "c"))
    assert [(f.request_id, f.value) for f in frames] == [(1, "a"), (2, None), (3, "c")]
    assert isinstance(frames[1].error, DecodeError)
    assert type(frames[1].error.__cause__) is RuntimeError and str(frames[1].error.__cause__) == PARSER_BUSY


def test_parser_refuses_feed_from_its_decoder_object(impl):
    """A decoder object (any object with decode_range) that feeds the parser
    it decodes for: the RuntimeError goes out of the outer feed(), and the
    parser is usable afterwards."""

    class Feeding:
        def decode_range(self, data, start, end):
            return parser.feed(b"")

    parser = impl.FrameParser(decoder=Feeding())
    with pytest.raises(RuntimeError) as info:
        parser.feed(responses(impl, 1))
    assert str(info.value) == PARSER_BUSY
    parser.decoder = impl.Decoder()
    assert [f.value for f in parser.feed(responses(impl, 2, preface=False))] == [2]


WRITER_USES = {
    "write_request": lambda w: w.write_request(9, 1, [9]),
    "write_request-by-name": lambda w: w.write_request(9, "S.m", [9], {"k": 9}, deadline=5, metadata={"m": 9}),
    "write_response": lambda w: w.write_response(9, 9),
    "write_error": lambda w: w.write_error(9, 1, "m"),
    "write_frame": lambda w: w.write_frame(MsgType.PING, 9, 9),
    "write_preface": lambda w: w.write_preface(),
    "take": lambda w: w.take(),
    "take_buffer": lambda w: w.take_buffer(),
    "take_chunks": lambda w: w.take_chunks(),
    "clear": lambda w: w.clear(),
}

# (write frame 2 with ``x`` somewhere in it, what frame 2's value decodes to
# when ``x`` encodes as "r", how many times the encoder meets ``x``)
OUTER_WRITES = {
    "request": (lambda w, x: w.write_request(2, 1, [1, x]), [1, "r"], 1),
    "request-kwargs-metadata": (
        lambda w, x: w.write_request(2, "S.m", [x], {"k": x}, deadline=5, metadata={"m": x}),
        [["r"], {"k": "r"}],
        3,
    ),
    "notify": (lambda w, x: w.write_request(2, 1, (x,), notify=True), ["r"], 1),
    "response": (lambda w, x: w.write_response(2, {"v": x}), {"v": "r"}, 1),
    "error": (lambda w, x: w.write_error(2, 7, "m", x), [7, "m", "r"], 1),
    "frame": (lambda w, x: w.write_frame(MsgType.GOAWAY, 2, [x]), ["r"], 1),
}


@pytest.mark.parametrize("outer", list(OUTER_WRITES))
@pytest.mark.parametrize("use", list(WRITER_USES))
def test_writer_refuses_reentrant_use_from_default_hook(impl, use, outer):
    """An encoder default hook that uses the writer whose frame it is
    encoding gets RuntimeError (same message in both twins); the frame
    being written comes out whole and the writer stays usable."""
    write, value, hooks = OUTER_WRITES[outer]
    seen = []

    def default(obj):
        seen.append(refusal(lambda: WRITER_USES[use](w)))
        return "r"

    w = impl.FrameWriter(encoder=impl.Encoder(default=default))
    w.write_response(1, "before")
    write(w, Unencodable())
    assert seen == [WRITER_BUSY] * hooks
    w.write_response(3, "after")
    frames = impl.FrameParser(expect_preface=False).feed(w.take())
    assert [(f.request_id, f.error) for f in frames] == [(1, None), (2, None), (3, None)]
    assert to_lists(frames[1].value) == value


def test_writer_refuses_use_from_its_encoder_object(impl):
    """An encoder object (any object with pack_into) that uses the writer it
    encodes for: the RuntimeError goes out of the write, which is undone."""

    class Taking:
        def pack_into(self, buf, obj):
            w.take()

    w = impl.FrameWriter()
    w.write_response(1, "before")
    w.encoder = Taking()
    with pytest.raises(RuntimeError) as info:
        w.write_response(2, 2)
    assert str(info.value) == WRITER_BUSY
    w.encoder = impl.Encoder()
    w.write_response(3, "after")
    assert [f.request_id for f in impl.FrameParser(expect_preface=False).feed(w.take())] == [1, 3]


class ClaimsInt:
    """Not an int, but isinstance() says it is one (through __class__):
    the writers take its value from __index__, which here first calls
    ``hook``."""

    def __init__(self, value, hook):
        self.value = value
        self.hook = hook

    @property
    def __class__(self):
        return int

    def __index__(self):
        self.hook()
        return self.value

    def __lt__(self, other):
        return self.value < other

    def __le__(self, other):
        return self.value <= other

    def __gt__(self, other):
        return self.value > other

    def __ge__(self, other):
        return self.value >= other


@pytest.mark.parametrize(
    "write",
    [
        lambda w, n: w.write_request(n, 1, [1]),
        lambda w, n: w.write_request(1, 1, [1], deadline=n),
        lambda w, n: w.write_response(n, 1),
        lambda w, n: w.write_frame(MsgType.PING, n, 1),
    ],
    ids=["request-id", "deadline", "response-id", "frame-id"],
)
def test_writer_refuses_use_from_an_argument_index(impl, write):
    """__index__ of a header field runs while the frame is being written:
    using the writer from it is refused (in both twins, once)."""
    seen = []
    w = impl.FrameWriter()
    write(w, ClaimsInt(5, lambda: seen.append(refusal(lambda: w.write_response(7, 7)))))
    assert seen == [WRITER_BUSY]
    (frame,) = impl.FrameParser(expect_preface=False).feed(w.take())
    assert frame.error is None and 5 in (frame.request_id, frame.deadline)


class LenCalls(dict):
    """A dict whose __len__ first calls ``hook`` (``hook`` set after)."""

    hook = None

    def __len__(self):
        self.hook()
        return dict.__len__(self)


class LenCallsList(list):
    hook = None

    def __len__(self):
        self.hook()
        return list.__len__(self)


def test_writer_refuses_use_from_a_payload_len(impl):
    """The encoders take a list or dict subclass's length from its __len__,
    while the frame is being written: using the writer from it is refused."""
    seen = []
    w = impl.FrameWriter()
    payload = LenCallsList([1, 2])
    payload.hook = lambda: seen.append(refusal(lambda: w.write_response(7, 7)))
    w.write_response(1, [payload])
    assert seen == [WRITER_BUSY]
    assert [f.value for f in impl.FrameParser(expect_preface=False).feed(w.take())] == [[[1, 2]]]


def test_writer_reads_kwargs_and_metadata_once_before_the_frame(impl):
    """write_request() looks at whether metadata and kwargs are empty once
    each, before it starts the frame (a frame written from there comes
    first, whole); encoding them later, with the frame started, asks their
    length again, and then the writer is busy."""
    seen = []
    w = impl.FrameWriter()
    metadata, kwargs = LenCalls(m=1), LenCalls(k=2)
    metadata.hook = lambda: seen.append(("metadata", refusal(lambda: w.write_response(7, "m"))))
    kwargs.hook = lambda: seen.append(("kwargs", refusal(lambda: w.write_response(8, "k"))))
    w.write_request(1, 3, [0], kwargs, metadata=metadata)
    assert seen == [("metadata", None), ("kwargs", None), ("metadata", WRITER_BUSY), ("kwargs", WRITER_BUSY)]
    frames = impl.FrameParser(expect_preface=False).feed(w.take())
    assert [(f.request_id, f.error) for f in frames] == [(7, None), (8, None), (1, None)]
    assert (frames[2].metadata, to_lists(frames[2].value)) == ({"m": 1}, [[0], {"k": 2}])
