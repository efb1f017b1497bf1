"""Codec benchmarks: one small request and one small response frame, each
written and parsed back (the per-call wire cost), and packb/unpackb of a
medium-sized dict.  Inputs are built at module level; only the call is timed.

``make_*`` build the timed callables, shared with ``benchmarks/micro.py``.
"""

from __future__ import annotations

import msgpack

#: a typical medium payload: a record with nested lists/maps (~1.3 KiB packed)
MEDIUM = {
    "id": 123456789,
    "name": "fastrpc benchmark record",
    "active": True,
    "score": 98.25,
    "tags": ["alpha", "beta", "gamma", "delta", "epsilon"],
    "owner": {"id": 42, "email": "owner@example.com", "roles": ["admin", "dev"]},
    "items": [
        {"sku": f"SKU-{i:05d}", "qty": i, "price": i * 1.25, "blob": bytes(range(i % 16)), "ok": i % 2 == 0}
        for i in range(20)
    ],
    "counts": {str(i): i * i for i in range(20)},
    "note": None,
}
MEDIUM_PACKED = msgpack.packb(MEDIUM, use_bin_type=True)

REQUEST_ID = 1
METHOD = 3
ARGS = [7, 8]
RESULT = 56


def make_request_roundtrip(wire):
    """Write a REQUEST (method index 3, args [7, 8]) and parse it back."""
    writer = wire.FrameWriter()
    parser = wire.FrameParser(expect_preface=False)
    write, take, feed = writer.write_request, writer.take, parser.feed

    def request_roundtrip():
        write(REQUEST_ID, METHOD, ARGS)
        return feed(take())

    return request_roundtrip


def make_response_roundtrip(wire):
    """Write a RESPONSE (value 56) and parse it back."""
    writer = wire.FrameWriter()
    parser = wire.FrameParser(expect_preface=False)
    write, take, feed = writer.write_response, writer.take, parser.feed

    def response_roundtrip():
        write(REQUEST_ID, RESULT)
        return feed(take())

    return response_roundtrip


def make_packb_medium(wire):
    packb = wire.packb
    return lambda: packb(MEDIUM)


def make_unpackb_medium(wire):
    unpackb = wire.unpackb
    return lambda: unpackb(MEDIUM_PACKED)


# --------------------------------------------------------------------------


def test_frame_request_roundtrip(benchmark, wire):
    benchmark.group = "frame request write+parse"
    (frame,) = benchmark(make_request_roundtrip(wire))
    assert (frame.type, frame.method, frame.request_id, frame.value) == (1, METHOD, REQUEST_ID, ARGS)


def test_frame_response_roundtrip(benchmark, wire):
    benchmark.group = "frame response write+parse"
    (frame,) = benchmark(make_response_roundtrip(wire))
    assert (frame.type, frame.request_id, frame.value) == (2, REQUEST_ID, RESULT)


def test_packb_medium_dict(benchmark, wire):
    benchmark.group = "packb medium dict"
    assert benchmark(make_packb_medium(wire)) == MEDIUM_PACKED


def test_unpackb_medium_dict(benchmark, wire):
    benchmark.group = "unpackb medium dict"
    assert benchmark(make_unpackb_medium(wire)) == MEDIUM
