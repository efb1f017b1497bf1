"""The JSON paths' types (docs/types.md, "JSON paths"): what the HTTP
gateway and JSON-RPC write for the values msgpack carries and JSON has no
type for, both builds alike (the encoder is pure Python over either
codec)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json

import pytest

import fastrpc
from fastrpc.interop.base import json_default
from fastrpc.interop.http import to_json

UTC = datetime.timezone.utc


def test_bytes_datetimes_and_timestamps():
    value = [
        b"\x00\x01\xff",
        datetime.datetime(2026, 12, 1, 4, 5, 6, tzinfo=UTC),
        datetime.datetime(2026, 12, 1, 5, 5, 6, 250000, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        datetime.date(2026, 12, 1),
        fastrpc.Timestamp(42, 14000),
        fastrpc.Timestamp(1),
        (1, 2),
    ]
    assert json.loads(to_json(value)) == [
        base64.b64encode(b"\x00\x01\xff").decode(),
        "2026-12-01T04:05:06Z",
        "2026-12-01T04:05:06.250000Z",  # in UTC, the fraction when non-zero
        "2026-12-01",
        "1970-01-01T00:00:42.000014000Z",
        "1970-01-01T00:00:01Z",
        [1, 2],
    ]


def test_a_naive_datetime_and_unknown_types_are_refused():
    with pytest.raises(TypeError, match="naive"):
        to_json(datetime.datetime(2026, 12, 1))
    with pytest.raises(TypeError, match="object cannot be carried"):
        json_default(object())


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_a_registered_type_is_its_extension():
    fastrpc.register_ext(Point, 9, pack=lambda p: fastrpc.packb([p.x, p.y]), unpack=lambda b: Point(*fastrpc.unpackb(b)))
    try:
        got = json.loads(to_json({"p": Point(3, 4)}))
        assert got == {"p": {"$ext": 9, "data": base64.b64encode(fastrpc.packb([3, 4])).decode()}}
        # long enough for an ext 8 header
        got = json.loads(to_json(Point(10**6, "y" * 40)))
        assert base64.b64decode(got["data"]) == fastrpc.packb([10**6, "y" * 40]) and got["$ext"] == 9
    finally:
        fastrpc.unregister_ext(Point)


def test_json_rpc_results_use_the_same_forms():
    from fastrpc.interop.jsonrpc import _encode

    text = _encode({"id": 1, "result": [b"ab", fastrpc.Timestamp(0, 5)], "error": None})
    assert json.loads(text)["result"] == ["YWI=", "1970-01-01T00:00:00.000000005Z"]
