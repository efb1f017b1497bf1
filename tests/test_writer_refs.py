"""Large ``bytes`` values sent by reference (``FrameWriter.take_chunks``).

A ``bytes`` value of 64 KiB or more anywhere in a payload is not copied into
the writer: ``take_chunks()`` hands it out as itself, for ``writelines`` /
``sendmsg``.  Everything else about the frames stays as before: ``take()``
and the joined chunks are the same bytes as ever, on both implementations.
"""

from __future__ import annotations

import msgpack
import pytest

from fastrpc.wire import constants as W
from fastrpc.errors import EncodeError, FrameTooLarge

BIG = 64 * 1024


def _write_mix(w, big):
    w.write_preface()
    w.write_request(1, 0, [big, 1])
    w.write_response(2, big)
    w.write_frame(W.MsgType.PING, 0, 5)
    w.write_request(3, "S.m", [b"small"], {"k": big}, deadline=10, metadata={"m": 1})


def test_chunks_join_to_the_same_bytes_and_hold_big_values_by_reference(impl):
    big = bytes(range(256)) * (BIG // 256 + 1)
    w = impl.FrameWriter()
    _write_mix(w, big)
    assert w.chunked
    n = len(w)
    chunks = w.take_chunks()
    assert len(w) == 0 and not w.chunked
    joined = b"".join(bytes(c) for c in chunks)
    assert len(joined) == n
    assert sum(c is big for c in chunks) == 3
    w2 = impl.FrameWriter()
    _write_mix(w2, big)
    assert w2.take() == joined
    frames = impl.FrameParser().feed(joined)
    assert [f.value for f in frames][:3] == [[big, 1], big, 5]
    assert frames[3].value == [[b"small"], {"k": big}]


def test_both_implementations_write_the_same_chunks(impl_pair):
    c, py = impl_pair
    big = b"x" * (BIG + 3)
    out = []
    for impl in (c, py):
        w = impl.FrameWriter()
        _write_mix(w, big)
        out.append([bytes(ch) for ch in w.take_chunks()])
    assert out[0] == out[1]


def test_small_values_and_other_bytes_types_are_copied(impl):
    w = impl.FrameWriter()
    w.write_response(1, b"y" * (BIG - 1))
    w.write_response(2, bytearray(BIG))
    w.write_response(3, memoryview(b"z" * BIG))

    class B(bytes):
        pass

    w.write_response(4, B(BIG))
    assert not w.chunked
    assert len(w.take_chunks()) == 1


def test_metadata_is_never_held_by_reference(impl):
    big = b"m" * BIG
    w = impl.FrameWriter()
    w.write_request(1, 0, [], metadata={"blob": big})
    assert not w.chunked
    (f,) = impl.FrameParser(expect_preface=False).feed(w.take())
    assert f.metadata == {"blob": big}


def test_failed_frame_leaves_no_reference_behind(impl):
    big = b"q" * BIG
    w = impl.FrameWriter()
    w.write_response(1, 7)
    before = len(w)
    with pytest.raises(EncodeError):
        w.write_response(2, [big, object()])
    with pytest.raises(EncodeError):
        w.write_request(3, 0, [big, object()])
    assert len(w) == before and not w.chunked
    assert w.take() == msgpack_frame(impl, 1, 7)


def test_frame_size_counts_referenced_bytes(impl):
    w = impl.FrameWriter(max_frame_size=BIG)
    with pytest.raises(FrameTooLarge):
        w.write_response(1, b"b" * BIG)
    assert len(w) == 0 and not w.chunked
    w.write_response(1, b"b" * (BIG - 32))  # fits, copied (below the threshold)
    assert not w.chunked


def test_clear_and_take_buffer_with_references(impl):
    big = b"c" * BIG
    w = impl.FrameWriter()
    w.write_response(1, big)
    w.clear()
    assert len(w) == 0 and not w.chunked and w.take() == b""
    w.write_response(1, big)
    assert bytes(w.take_buffer()) == msgpack_frame(impl, 1, big)
    assert not w.chunked


def msgpack_frame(impl, rid, value):
    body = msgpack.packb(value, use_bin_type=True)
    import struct

    return struct.pack(">IBBHI", 8 + len(body), W.MsgType.RESPONSE, 0, 0, rid) + body
