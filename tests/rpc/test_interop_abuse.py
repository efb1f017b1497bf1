"""Abuse and fuzzing of the other protocols on fastrpc's port (msgpack-rpc,
JSON-RPC 1.0): bad input closes or answers only its own connection, the
server and the other connections go on, no call is lost or answered twice,
nothing crashes, hangs or buffers without bound.

The codecs are fuzzed sans IO first (mutated streams, fed whole and cut at
random places: the outcome must not depend on the cuts), then end to end.
``FASTRPC_FUZZ_ITERATIONS`` scales the sans-IO fuzzing (a tenth of it per
codec, at least 200) and ``FASTRPC_FUZZ_SEED`` picks another seed, as in
tests/test_fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any, List, Optional, Tuple

import msgpack
import pytest

import fastrpc
from fastrpc.interop import JsonRpcCodec, MsgpackRpcCodec
from fastrpc.interop.base import Call, ProtocolError
from fastrpc.wire import constants as W

from rpc_support import hostport

ITERATIONS = max(200, int(os.environ.get("FASTRPC_FUZZ_ITERATIONS", "20000")) // 10)
SEED = int(os.environ.get("FASTRPC_FUZZ_SEED", "0"))
LIMITS = dict(max_depth=W.DEFAULT_MAX_DEPTH, max_str_len=None, max_bin_len=None, max_array_len=None, max_map_len=None)


class Svc:
    def multiply(self, a: int, b: int) -> int:
        return a * b

    def echo(self, value: Any) -> Any:
        return value

    def big(self, n: int) -> str:
        return "x" * n

    async def later(self, seconds: float, value: Any) -> Any:
        await asyncio.sleep(seconds)
        return value


async def _server(**options: Any) -> Tuple[fastrpc.Server, str, Tuple[str, int]]:
    server = fastrpc.Server(**options)
    server.register(Svc(), "Arith")
    address = await server.start("tcp://127.0.0.1:0")
    return server, address, hostport(address)


async def _talk(where: Tuple[str, int], payload: bytes, quiet: float = 3.0, chunks: Optional[List[int]] = None) -> Tuple[bytes, bool]:
    """Send ``payload`` (in pieces of ``chunks`` sizes, when given) and read
    until the server closes (True) or says nothing for ``quiet`` seconds
    (False); everything read."""
    reader, writer = await asyncio.open_connection(*where)
    got = b""
    closed = False
    try:
        pos = 0
        for size in chunks or ():
            if writer.is_closing():
                break  # the server closed it already
            writer.write(payload[pos : pos + size])
            pos += size
            await asyncio.sleep(0)
        if not writer.is_closing():
            writer.write(payload[pos:])
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), quiet)
            except asyncio.TimeoutError:
                break
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            got += chunk
    finally:
        writer.close()
    return got, closed


def _unpack_all(data: bytes) -> List[Any]:
    u = msgpack.Unpacker()
    u.feed(data)
    return list(u)


def _json_lines(data: bytes) -> List[Any]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


async def _all_protocols_work(address: str, where: Tuple[str, int]) -> None:
    async with fastrpc.AsyncClient(address) as c:
        assert await c.call("Arith.multiply", 6, 7) == 42
    got, _ = await _talk(where, msgpack.packb([0, 1, "Arith.multiply", [7, 8]]), quiet=0.3)
    assert _unpack_all(got) == [[1, 1, None, 56]]
    got, _ = await _talk(where, b'{"method":"Arith.Multiply","params":[{"A":7,"B":8}],"id":3}', quiet=0.3)
    assert _json_lines(got) == [{"id": 3, "result": 56, "error": None}]


# --------------------------------------------------------------------------- deadlines


@pytest.mark.parametrize("first", [b"", b"F", b"FRP", b"\x94", b"\x94\x00", b"\x94\x00\x01\xaeArith.mul", b"{", b'{"method":"Ar'])
def test_a_peer_that_says_too_little_is_dropped(run, first):
    async def main():
        server, address, where = await _server(handshake_timeout=0.3)
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got, closed = await _talk(where, first, quiet=5)
            took = loop.time() - t0
            assert closed and 0.25 <= took < 2.5, (got, closed, took)
            if first.startswith(b"F"):
                assert got.startswith(W.PREFACE) or got == b""  # the native protocol's own timeout
            else:
                assert got == b""
            await _all_protocols_work(address, where)
            for _ in range(100):  # the last closes are on their way
                if server.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 0 and not server._sniffing
        finally:
            await server.shutdown()

    run(main())


def test_shutdown_drops_connections_still_sniffing(run):
    async def main():
        server, _, where = await _server(handshake_timeout=30)
        reader, writer = await asyncio.open_connection(*where)
        try:
            await asyncio.sleep(0.05)
            assert len(server._sniffing) == 1
            await asyncio.wait_for(server.shutdown(grace=1), 5)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionError:
            pass
        finally:
            writer.close()

    run(main())


def test_max_connections_counts_sniffing_connections(run):
    async def main():
        server, address, where = await _server(max_connections=1, handshake_timeout=30)
        try:
            idle_reader, idle_writer = await asyncio.open_connection(*where)  # says nothing yet
            await asyncio.sleep(0.05)
            got, closed = await _talk(where, msgpack.packb([0, 1, "Arith.multiply", [7, 8]]), quiet=3)
            # Refused by the native protocol at once: preface and GOAWAY.
            assert closed and got.startswith(W.PREFACE)
            frames = fastrpc.FrameParser().feed(got)
            assert frames[-1].type == fastrpc.MsgType.GOAWAY and frames[-1].value[0] == int(fastrpc.errors.StatusCode.RESOURCE_EXHAUSTED)
            idle_writer.close()
        finally:
            await server.shutdown()

    run(main())


# --------------------------------------------------------------------------- limits


def test_msgpack_rpc_oversize_messages(run):
    async def main():
        server, address, where = await _server(max_frame_size=4096)
        try:
            got, closed = await _talk(where, msgpack.packb([0, 7, "Arith.echo", ["x" * 10000]]))
            assert closed and _unpack_all(got) == [[1, 7, ["RESOURCE_EXHAUSTED", "msgpack-rpc: message larger than the limit of 4096 bytes"], None]]
            # a bin claiming 4 GiB: refused from its header, nothing buffered
            head = b"\x94\x00\x08" + msgpack.packb("Arith.echo") + b"\x91\xc6\xff\xff\xff\xff"
            got, closed = await _talk(where, head, quiet=3)
            assert closed and _unpack_all(got)[0][:2] == [1, 8]
            # an answer too large fails that call only
            got, closed = await _talk(where, msgpack.packb([0, 9, "Arith.big", [10000]]) + msgpack.packb([0, 10, "Arith.big", [3]]), quiet=0.5)
            assert not closed
            answers = {m[1]: m for m in _unpack_all(got)}
            assert answers[9][2][0] == "RESOURCE_EXHAUSTED" and answers[10][3] == "xxx"
            await _all_protocols_work(address, where)
        finally:
            await server.shutdown()

    run(main())


def test_jsonrpc_oversize_objects(run):
    async def main():
        server, address, where = await _server(max_frame_size=4096)
        try:
            big = b'{"method":"Arith.echo","params":["' + b"x" * 10000 + b'"],"id":1}'
            got, closed = await _talk(where, big)
            assert closed
            (answer,) = _json_lines(got)
            assert answer["id"] is None and answer["result"] is None
            assert answer["error"].startswith("RESOURCE_EXHAUSTED: jsonrpc: JSON object larger than the limit of 4096 bytes")
            # an object that never ends is refused once past the limit
            got, closed = await _talk(where, b'{"method":"' + b"y" * 5000, quiet=3)
            assert closed and _json_lines(got)[0]["error"].startswith("RESOURCE_EXHAUSTED")
            got, closed = await _talk(where, b'{"method":"Arith.big","params":[10000],"id":2}{"method":"Arith.big","params":[2],"id":3}', quiet=0.5)
            assert not closed
            answers = {a["id"]: a for a in _json_lines(got)}
            assert answers[2]["error"].startswith("RESOURCE_EXHAUSTED: Arith.big: result too large") and answers[3]["result"] == "xx"
            await _all_protocols_work(address, where)
        finally:
            await server.shutdown()

    run(main())


def test_decoding_limits_apply(run):
    async def main():
        server, address, where = await _server(max_str_len=10, max_array_len=3)
        try:
            got, _ = await _talk(where, msgpack.packb([0, 1, "Arith.echo", ["x" * 11]]) + msgpack.packb([0, 2, "Arith.echo", ["x" * 10]]), quiet=0.5)
            answers = {m[1]: m for m in _unpack_all(got)}
            assert answers[1][2][0] == "INVALID_ARGUMENT" and answers[2][3] == "x" * 10
            got, _ = await _talk(where, b'{"method":"Arith.echo","params":[[1,2,3,4]],"id":1}{"method":"Arith.echo","params":[[1,2,3]],"id":2}', quiet=0.5)
            answers = {a["id"]: a for a in _json_lines(got)}
            assert answers[1]["error"].startswith("INVALID_ARGUMENT: jsonrpc: an array of 4 items") and answers[2]["result"] == [1, 2, 3]
            await _all_protocols_work(address, where)
        finally:
            await server.shutdown()

    run(main())


# --------------------------------------------------------------------------- bad input

GOOD_MP = msgpack.packb([0, 1, "Arith.multiply", [7, 8]])
NAME = msgpack.packb("Arith.echo")

MSGPACK_CASES = [
    # (id, bytes after a good request, answers expected besides it, closed?)
    ("method-not-a-string", msgpack.packb([0, 2, 5, []]) + msgpack.packb([0, 3, "Arith.echo", [1]]), {2: "INVALID_ARGUMENT", 3: 1}, False),
    ("params-not-an-array", msgpack.packb([0, 2, "Arith.echo", "x"]), {2: "INVALID_ARGUMENT"}, False),
    ("invalid-utf8", b"\x94\x00\x02" + NAME + b"\x91\xa1\xff" + msgpack.packb([0, 3, "Arith.echo", [1]]), {2: "INVALID_ARGUMENT", 3: 1}, False),
    ("too-deep", b"\x94\x00\x02" + NAME + b"\x91" * 2000 + b"\x00", {2: "INVALID_ARGUMENT"}, True),
    ("byte-c1", b"\x94\x00\xc1", {}, True),
    ("bare-int", b"\x05", {}, True),
    ("a-response", msgpack.packb([1, 2, None, 5]), {}, True),
    ("negative-msgid", msgpack.packb([0, -1, "Arith.echo", [1]]), {}, True),
    ("msgid-too-big", msgpack.packb([0, 2**40, "Arith.echo", [1]]), {}, True),
    ("bad-notification", msgpack.packb([2, 5, 6]) + msgpack.packb([0, 3, "Arith.echo", [1]]), {3: 1}, False),
    ("unknown-ext", msgpack.packb([0, 2, "Arith.echo", [msgpack.ExtType(77, b"zz")]]), {2: None}, False),
]


@pytest.mark.parametrize("case", MSGPACK_CASES, ids=[c[0] for c in MSGPACK_CASES])
def test_msgpack_rpc_bad_input(run, case):
    _, tail, expect, should_close = case

    async def main():
        server, address, where = await _server()
        try:
            got, closed = await _talk(where, GOOD_MP + tail, quiet=0.5)
            assert closed == should_close
            answers = _unpack_all(got)
            ids = [m[1] for m in answers]
            assert len(ids) == len(set(ids)), answers  # nothing answered twice
            by_id = {m[1]: m for m in answers}
            assert by_id.pop(1) == [1, 1, None, 56]  # the good call before it
            assert set(by_id) == set(expect), answers
            for msgid, want in expect.items():
                if isinstance(want, str):
                    assert by_id[msgid][2][0] == want
                elif want is not None:
                    assert by_id[msgid][3] == want
            await _all_protocols_work(address, where)
        finally:
            await server.shutdown()

    run(main())


GOOD_JS = b'{"method":"Arith.multiply","params":[7,8],"id":1}'

JSON_CASES = [
    ("invalid-json", b'{"method": nope}', {None: "INVALID_ARGUMENT"}, True),
    ("invalid-utf8", b'{"method":"\xff","params":[],"id":2}', {None: "INVALID_ARGUMENT"}, True),
    ("not-an-object", b"[1,2]", {None: "INVALID_ARGUMENT"}, True),
    ("garbage", b"\x00\x01\x02", {None: "INVALID_ARGUMENT"}, True),
    ("too-deep", b'{"a":' + b"[" * 2000 + b"]" * 2000 + b"}", {None: "INVALID_ARGUMENT"}, True),
    ("huge-number", b'{"method":"Arith.echo","params":[' + b"9" * 5000 + b'],"id":2}', {None: "INVALID_ARGUMENT"}, True),
    ("params-a-string", b'{"method":"Arith.echo","params":"x","id":2}' + b'{"method":"Arith.echo","params":[3],"id":3}', {2: "INVALID_ARGUMENT", 3: 3}, False),
    ("braces-in-strings", b'{"method":"Arith.echo","params":["a\\"}{[b\\\\"],"id":2}', {2: 'a"}{[b\\'}, False),
    ("id-an-object", b'{"method":"Arith.echo","params":[4],"id":{"k":[1]}}', {"obj": 4}, False),
    ("nan-result", b'{"method":"Arith.echo","params":[NaN],"id":2}', {2: "INTERNAL"}, False),
]


@pytest.mark.parametrize("case", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_jsonrpc_bad_input(run, case):
    _, tail, expect, should_close = case

    async def main():
        server, address, where = await _server()
        try:
            got, closed = await _talk(where, GOOD_JS + tail, quiet=0.5)
            assert closed == should_close
            answers = _json_lines(got)
            assert answers[0] == {"id": 1, "result": 56, "error": None}
            rest = answers[1:]
            assert len(rest) == len(expect), answers
            for a in rest:
                assert set(a) == {"id", "result", "error"} and (a["error"] is None) != (a["result"] is None)
                key = "obj" if isinstance(a["id"], dict) else a["id"]
                want = expect[key]
                if isinstance(want, str) and want.isupper():
                    assert a["error"].startswith(want + ": ")
                else:
                    assert a["result"] == want
            await _all_protocols_work(address, where)
        finally:
            await server.shutdown()

    run(main())


def test_messages_cut_anywhere_are_read_whole(run):
    async def main():
        server, _, where = await _server()
        try:
            rng = random.Random(SEED)
            mp = b"".join(msgpack.packb([0, i, "Arith.echo", [{"k": "v\\\"" * i, "b": b"\x00" * i}]]) for i in range(20))
            js = b"".join(json.dumps({"method": "Arith.echo", "params": [{"k": "v\\\"}{" * i}], "id": i}).encode() + b" " * (i % 3) for i in range(20))
            for payload, parse in ((mp, _unpack_all), (js, _json_lines)):
                cuts = [rng.randint(1, 7) for _ in range(len(payload) // 4)]
                got, closed = await _talk(where, payload, quiet=0.5, chunks=cuts)
                assert not closed
                answers = parse(got)
                assert len(answers) == 20
        finally:
            await server.shutdown()

    run(main())


# --------------------------------------------------------------------------- fuzzing, sans IO


def _codec(cls: Any, max_size: int = 1 << 16) -> Any:
    names = {"Arith.echo": ["value"], "Arith.multiply": ["a", "b"]}
    return cls(
        max_message_size=max_size,
        decoder_limits=dict(LIMITS),
        resolve=lambda n: n if n in names else None,
        params_of=lambda n: names.get(n),
    )


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b[rng.randrange(len(b) + 1) : rng.randrange(len(b) + 1)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and b:
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 8)]
        elif op == 3:
            b += os.urandom(rng.randint(1, 32)) if rng.random() < 0.5 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif op == 4 and b:
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randint(1, 16)]
        else:
            b = b[: rng.randrange(len(b) + 1)]
    return bytes(b)


def _outcome(codec: Any, data: bytes, cuts: List[int]) -> Tuple[List[Any], Optional[str]]:
    # What a codec makes of ``data`` fed in pieces: a stable summary.
    out: List[Any] = []
    pos = 0
    pieces = []
    for size in cuts:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    for piece in pieces:
        items, broken = codec.feed(piece)
        for item in items:
            assert isinstance(item, (Call, bytes)), item
            out.append(item if isinstance(item, bytes) else ("call", item.type, item.name, repr(item.value), repr(item.foreign_id)))
        if broken is not None:
            assert isinstance(broken, ProtocolError) and isinstance(broken.reply, bytes)
            return out, str(broken)
    return out, None


def _corpus(kind: str, rng: random.Random) -> bytes:
    if kind == "msgpack":
        msgs = [
            [0, rng.randrange(2**32), rng.choice(["Arith.echo", "Arith.Multiply", "x"]), [rng.random(), "s" * rng.randrange(40), b"b", {"k": [1, None, True]}]],
            [2, "Arith.echo", [msgpack.ExtType(1, b"abc")]],
            [0, 1, "Arith.multiply", [2**63, -(2**63)]],
        ]
        return b"".join(msgpack.packb(rng.choice(msgs)) for _ in range(rng.randint(1, 4)))
    objs = [
        {"method": "Arith.Multiply", "params": [{"A": 7, "B": 8}], "id": rng.randrange(2**40)},
        {"method": "Arith.echo", "params": ["q\"}{\\" * rng.randrange(5), [1.5, None, True, {"x": []}]], "id": "s"},
        {"method": "Arith.echo", "params": {"value": 1}, "id": None},
    ]
    return b"".join(json.dumps(rng.choice(objs)).encode() + rng.choice([b"", b"\n", b" \r\n"]) for _ in range(rng.randint(1, 4)))


@pytest.mark.parametrize("kind", ["msgpack", "json"])
def test_fuzz_codecs_sans_io(kind):
    cls = MsgpackRpcCodec if kind == "msgpack" else JsonRpcCodec
    rng = random.Random(SEED * 7919 + (1 if kind == "msgpack" else 2))
    for index in range(ITERATIONS):
        data = _mutate(rng, _corpus(kind, rng))
        whole = _outcome(_codec(cls), data, [])
        cuts = [rng.randint(1, 9) for _ in range(rng.randint(1, 12))]
        try:
            piecewise = _outcome(_codec(cls), data, cuts)
        except Exception as exc:  # noqa: BLE001 - reported with the input
            raise AssertionError(f"{kind} input #{index} (FASTRPC_FUZZ_SEED={SEED}) raised {exc!r}: {data.hex()}") from exc
        assert piecewise == whole, f"{kind} input #{index} (FASTRPC_FUZZ_SEED={SEED}): cuts {cuts} change the outcome: {data.hex()}"


@pytest.mark.parametrize("cls", [MsgpackRpcCodec, JsonRpcCodec])
def test_codec_buffers_at_most_one_message(cls):
    # A message whose end never comes (a str32 claiming 1 MiB; an
    # unterminated JSON string) is refused once past the limit.
    codec = _codec(cls, max_size=1000)
    start = b'{"a":"' if cls is JsonRpcCodec else b"\x94\x00\x01\xaaArith.echo\x91\xdb\x00\x10\x00\x00"
    _, broken = codec.feed(start)
    assert (broken is None) == (cls is JsonRpcCodec)  # msgpack: refused from the header
    fed = 0
    while broken is None and fed < 10_000:
        _, broken = codec.feed(b"x" * 100)
        fed += 100
    assert broken is not None and fed <= 1100
    assert len(codec._buf) <= 1100


# --------------------------------------------------------------------------- fuzzing, end to end


def test_fuzz_end_to_end(run):
    rounds = 4
    per_round = 16

    async def one(where: Tuple[str, int], rng: random.Random, kind: str) -> None:
        # k good calls, with results nothing else can produce, each answered
        # once; then junk on the same connection, which must not answer any
        # of them again (and the server must close or go on, not fail).
        k = rng.randint(1, 4)
        if kind == "msgpack":
            good = b"".join(msgpack.packb([0, i, "Arith.multiply", [i, 1000003]]) for i in range(1, k + 1))
        else:
            good = b"".join(json.dumps({"method": "Arith.Multiply", "params": [{"A": i, "B": 1000003}], "id": i}).encode() for i in range(1, k + 1))
        junk = _mutate(rng, _corpus(kind, rng)) if rng.random() < 0.7 else os.urandom(rng.randint(1, 200))
        reader, writer = await asyncio.open_connection(*where)
        try:
            for i in range(0, len(good), 7):  # cut into small pieces
                writer.write(good[i : i + 7])
                await asyncio.sleep(0)
            got = b""
            while len(_results(kind, got)) < k:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                assert chunk, (kind, good, got)
                got += chunk
            assert sorted(_results(kind, got)) == [i * 1000003 for i in range(1, k + 1)]
            writer.write(junk)
            after = b""
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 0.4)
                except (asyncio.TimeoutError, ConnectionError):
                    break
                if not chunk:
                    break
                after += chunk
            assert not set(_results(kind, after)) & {i * 1000003 for i in range(1, k + 1)}, (junk, after)
        finally:
            writer.close()

    async def main():
        server, address, where = await _server(max_frame_size=1 << 16, handshake_timeout=2)
        try:
            rng = random.Random(SEED)
            for _ in range(rounds):
                await asyncio.gather(*(one(where, random.Random(rng.random()), rng.choice(["msgpack", "json"])) for _ in range(per_round)))
                await _all_protocols_work(address, where)
        finally:
            await server.shutdown()

    run(main())


def _results(kind: str, data: bytes) -> List[Any]:
    if kind == "msgpack":
        return [m[3] for m in _unpack_all_lenient(data) if type(m) is list and len(m) == 4]
    out = []
    for line in data.split(b"\n"):
        try:
            out.append(json.loads(line)["result"])
        except (ValueError, KeyError, TypeError):
            pass
    return out


def _unpack_all_lenient(data: bytes) -> List[Any]:
    u = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="replace")
    u.feed(data)
    out = []
    try:
        for m in u:
            out.append(m)
    except Exception:  # noqa: BLE001 - answers are read up to the first the test cannot read
        pass
    return out
