"""Protocol abuse at the connection level: each gets a clear error, and the
server goes on serving everybody else."""

from __future__ import annotations

import asyncio
import marshal
import os
import pickle
import struct
import sys
import threading
from typing import Any, List

import msgpack
import pytest

import fastrpc
from fastrpc import MsgType, StatusCode
from fastrpc.wire import constants as W

from rpc_support import Arith, hostport


class Gate:
    def __init__(self):
        self.gate = asyncio.Event()

    async def wait(self, v):
        await self.gate.wait()
        return v


async def _server():
    server = fastrpc.Server()
    server.register(Arith())
    server.register(Gate())
    address = await server.start("tcp://127.0.0.1:0")
    host, port = address[6:].rsplit(":", 1)
    return server, address, (host, int(port))


async def _exchange(hostport, payload, until_closed=True, want=None):
    reader, writer = await asyncio.open_connection(*hostport)
    writer.write(payload)
    parser = fastrpc.FrameParser()
    frames = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            frames += parser.feed(chunk)
            if want is not None and want(frames):
                break
    finally:
        writer.close()
    return frames


def _hello():
    w = fastrpc.FrameWriter()
    w.write_preface()
    w.write_frame(MsgType.HANDSHAKE, 0, {})
    return w


def _raw_frame(mtype, flags=0, method=0, rid=0, body=b""):
    return struct.pack(">IBBHI", 8 + len(body), mtype, flags, method, rid) + body


async def _still_serving(address):
    async with fastrpc.AsyncClient(address) as c:
        assert await c.call("Arith.multiply", 7, 8) == 56


@pytest.mark.parametrize("mtype", [0, 10, 99, 255])
def test_unknown_message_type_closes_with_goaway(run, mtype):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            w.write_request(1, "Arith.multiply", [2, 3])
            frames = await _exchange(hp, w.take() + _raw_frame(mtype, rid=2))
            assert [f.value for f in frames if f.type == MsgType.RESPONSE] == [6]
            assert frames[-1].type == MsgType.GOAWAY
            assert "unknown message type" in frames[-1].value[1]
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_reserved_flags_and_truncated_fields_close_with_goaway(run):
    async def main():
        server, address, hp = await _server()
        try:
            for bad in (
                _raw_frame(MsgType.REQUEST, flags=0x80, rid=1, body=b"\x90"),
                _raw_frame(MsgType.REQUEST, flags=0x01, rid=1, body=b"\x00\x50ab"),  # name runs past the frame
                _raw_frame(MsgType.REQUEST, flags=0x02, rid=1, body=b"\x00\x01"),  # deadline cut short
                _raw_frame(MsgType.REQUEST, flags=0x01, rid=1, body=b"\x00\x02\xff\xfe\x90"),  # name not UTF-8
            ):
                frames = await _exchange(hp, _hello().take() + bad)
                assert frames[-1].type == MsgType.GOAWAY, frames
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_request_id_reused_while_in_flight(run):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            w.write_request(5, "Gate.wait", ["first"])
            w.write_request(5, "Gate.wait", ["second"])
            frames = await _exchange(hp, w.take())
            assert frames[-1].type == MsgType.GOAWAY
            assert "reused" in frames[-1].value[1]
            # the first call was cancelled with the connection, never answered twice
            assert not [f for f in frames if f.type in (MsgType.RESPONSE, MsgType.ERROR)]
            await asyncio.sleep(0.05)
            assert server.connections == 0
            # ids may be reused once the call has finished
            w = _hello()
            w.write_request(5, "Arith.multiply", [2, 2])
            w.write_request(5, "Arith.multiply", [3, 3])
            frames = await _exchange(
                hp, w.take(), want=lambda fs: len([f for f in fs if f.type == MsgType.RESPONSE]) == 2
            )
            assert [f.value for f in frames if f.type == MsgType.RESPONSE] == [4, 9]
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_cancel_for_unknown_ids_is_ignored(run):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            for rid in (0, 1, 77, 0xFFFFFFFF):
                w.write_frame(MsgType.CANCEL, rid, None)
            w.write_request(9, "Arith.multiply", [3, 4])
            frames = await _exchange(hp, w.take(), want=lambda fs: any(f.type == MsgType.RESPONSE for f in fs))
            assert [(f.request_id, f.value) for f in frames if f.type == MsgType.RESPONSE] == [(9, 12)]
            assert not any(f.type == MsgType.GOAWAY for f in frames)
        finally:
            await server.shutdown()

    run(main())


def test_frame_announcing_4_gib_is_refused_before_buffering(run):
    async def main():
        server, address, hp = await _server()
        try:
            frames = await _exchange(hp, _hello().take() + b"\xff\xff\xff\xff" + os.urandom(64))
            assert frames[-1].type == MsgType.GOAWAY
            assert "max_frame_size" in frames[-1].value[1]
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_undecodable_arguments_fail_only_that_call(run):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            bad_payload = _raw_frame(MsgType.REQUEST, flags=0x01, rid=1, body=b"\x00\x0eArith.multiply" + b"\xc1")
            w2 = fastrpc.FrameWriter()
            w2.write_request(2, "Arith.multiply", [5, 6])
            frames = await _exchange(
                hp, w.take() + bad_payload + w2.take(),
                want=lambda fs: len([f for f in fs if f.type in (MsgType.RESPONSE, MsgType.ERROR)]) == 2,
            )
            answers = {f.request_id: f for f in frames if f.type in (MsgType.RESPONSE, MsgType.ERROR)}
            assert answers[1].type == MsgType.ERROR and answers[1].value[0] == StatusCode.INVALID_ARGUMENT
            assert answers[2].value == 30
        finally:
            await server.shutdown()

    run(main())


# -- nothing that comes off the wire is executed, imported or built as an object ----
#
# Payloads that would run code under pickle or marshal, and msgpack ext values
# of every type code carrying them, go through both decoders, both frame
# parsers and a live server.  What comes out must be plain msgpack values
# (ExtType for ext), and nothing may be called: a sentinel callable records
# being called, and an audit hook records the events that loading pickle or
# marshal data, compiling, executing or importing code raise.

# Events that deserializing into code or arbitrary objects would raise
# (pickle's find_class, marshal, compile/exec of code, imports) and the
# obvious ways a payload would reach the system.
_WATCHED = frozenset({
    "pickle.find_class", "marshal.loads", "marshal.load", "compile", "exec", "import",
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "ctypes.dlopen",
})
_audit_on = False  # the hook records only while a test has armed it
_audit_events: List[Any] = []
_audit_installed = False
_audit_lock = threading.Lock()


def _audit_hook(event: str, args: Any) -> None:
    # Audit hooks cannot be removed; this one stays in the process for the
    # rest of the session, so it must cost nothing while disarmed.
    if _audit_on and event in _WATCHED:
        _audit_events.append((event, repr(args)[:200]))


class _Watching:
    """Arms the audit hook (process-wide, so server-side decoding in any
    thread is seen) and clears the sentinel's record."""

    def __enter__(self) -> List[Any]:
        global _audit_on, _audit_installed
        with _audit_lock:
            if not _audit_installed:
                sys.addaudithook(_audit_hook)
                _audit_installed = True
        del _audit_events[:]
        del _sentinel_calls[:]
        _audit_on = True
        return _audit_events

    def __exit__(self, *exc: Any) -> None:
        global _audit_on
        _audit_on = False


_sentinel_calls: List[Any] = []


def _sentinel(*args: Any) -> str:
    """What the pickle payloads call when loaded: records the call and does
    nothing else (a real attacker's payload would call os.system)."""
    _sentinel_calls.append(args)
    return "called"


class _Boom:
    def __reduce__(self):
        return (_sentinel, ("pickle",))


_PICKLES = [pickle.dumps([_Boom(), {"k": _Boom()}], protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
# Loading this builds a code object that would call the sentinel if run.
_MARSHAL = marshal.dumps(compile("_sentinel('marshal')", "<payload>", "eval"))
_CODE_PAYLOADS = _PICKLES + [_MARSHAL]


def _ext(code: int, data: bytes) -> bytes:
    """The msgpack encoding of ext ``code`` (-128..127) with ``data``, built
    by hand so that the reserved negative codes are covered too."""
    n = len(data)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixed:
        head = bytes([fixed[n]])
    elif n < 1 << 8:
        head = bytes([0xC7, n])
    elif n < 1 << 16:
        head = b"\xc8" + struct.pack(">H", n)
    else:
        head = b"\xc9" + struct.pack(">I", n)
    return head + struct.pack(">b", code) + data


def _array(items: List[bytes]) -> bytes:
    assert len(items) < 1 << 16
    return b"\xdc" + struct.pack(">H", len(items)) + b"".join(items)


def _ext_cases() -> List[Any]:
    """(encoded ext value, the ExtType it must decode to): every type code
    with a pickle as its data, and a few codes with marshal data in every
    ext format (fixext 1..16, ext 8/16/32)."""
    cases = []
    for code in range(-128, 128):
        data = _PICKLES[code % len(_PICKLES)]
        cases.append((_ext(code, data), _ext_value(code, data)))
    for code in (-128, -1, 0, 1, 127):
        for size in (1, 2, 4, 8, 12, 16, 300, 70000):
            data = (_MARSHAL * (size // len(_MARSHAL) + 1))[:size]
            cases.append((_ext(code, data), _ext_value(code, data)))
    return cases


def _ext_value(code: int, data: bytes) -> Any:
    # -1 is msgpack's timestamp: a valid 4, 8 or 12-byte payload decodes to
    # a fastrpc.Timestamp (a value: two ints, nothing imported or called);
    # anything else stays an ExtType.
    if code == -1 and len(data) in (4, 8, 12):
        try:
            return fastrpc.Timestamp.from_bytes(data)
        except ValueError:
            pass
    return fastrpc.ExtType(code, data)


_EXT_CASES = _ext_cases()
# Maps that name classes and reducers the way object serializers tag them
# (jsonpickle, pickle's __reduce__, YAML tags) stay plain maps of strings.
_TAGGED = {
    "py/object": "os._wrap_close", "py/reduce": [{"py/function": "builtins.eval"}, "1+1"],
    "__reduce__": ["os.system", ["true"]], "!!python/object/apply:os.system": ["true"],
    "__class__": "subprocess.Popen",
}


def _plain(value: Any) -> bool:
    """True if ``value`` is made only of the types msgpack values decode to."""
    t = type(value)
    if value is None or t in (bool, int, float, str, bytes):
        return True
    if t is fastrpc.ExtType:
        return type(value.code) is int and type(value.data) is bytes
    if t is fastrpc.Timestamp:
        return type(value.seconds) is int and type(value.nanoseconds) is int
    if t is list:
        return all(_plain(v) for v in value)
    if t is dict:
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


def _decode_all(impl, data: bytes) -> List[Any]:
    """``data`` through every decoding entry point of ``impl``: each result,
    or the DecodeError it raised (anything else propagates and fails)."""
    out: List[Any] = []
    for decode in (impl.unpackb, impl.Decoder().decode, lambda d: impl.Decoder().decode_range(d, 0, len(d))):
        try:
            out.append(decode(data))
        except fastrpc.DecodeError as exc:
            out.append(exc)
    return out


def test_decoders_build_no_objects_from_code_payloads(impl):
    """Both codecs and both frame parsers, fed pickle and marshal payloads
    bare, inside ext values of all 256 type codes, inside frames and their
    metadata: only plain values or ExtType come out, DecodeError at worst,
    and nothing is looked up, imported, compiled or called."""
    tagged = msgpack.packb(_TAGGED)
    frames_in = bytearray(W.PREFACE)
    rid = 0
    for blob in _CODE_PAYLOADS + [tagged] + [enc for enc, _ in _EXT_CASES]:
        rid += 1  # as a RESPONSE payload, and as the arguments of a REQUEST by name
        frames_in += _raw_frame(MsgType.RESPONSE, rid=rid, body=blob)
        rid += 1
        frames_in += _raw_frame(MsgType.REQUEST, flags=0x01, rid=rid, body=b"\x00\x03X.y" + blob)
    for blob in _CODE_PAYLOADS + [_array([enc for enc, _ in _EXT_CASES[:40]])]:
        rid += 1  # as a REQUEST's metadata (FLAG_METADATA: uint32 length + map)
        meta = b"\x81\xa1k" + blob
        frames_in += _raw_frame(MsgType.REQUEST, flags=0x05, rid=rid, body=b"\x00\x03X.y" + struct.pack(">I", len(meta)) + meta + b"\x90")
    frames_in = bytes(frames_in)

    with _Watching() as events:
        bare = [(blob, _decode_all(impl, blob)) for blob in _CODE_PAYLOADS]
        exts = [(expected, _decode_all(impl, enc)) for enc, expected in _EXT_CASES]
        all_exts = impl.unpackb(_array([enc for enc, _ in _EXT_CASES]))
        tags = _decode_all(impl, tagged)
        frames = impl.FrameParser().feed(frames_in)
        # and in small pieces, through the partial-frame path
        parser = impl.FrameParser()
        pieces = [f for i in range(0, len(frames_in), 997) for f in parser.feed(frames_in[i : i + 997])]
    assert events == [] and _sentinel_calls == []

    for blob, results in bare:
        # None of them is one msgpack value (a small int, then trailing
        # bytes): a DecodeError from every entry point, nothing else.
        assert all(isinstance(r, fastrpc.DecodeError) for r in results), (blob[:10], results)
    for expected, results in exts:
        assert all(type(r) is type(expected) and r == expected for r in results), (expected, results)
    assert all_exts == [expected for _, expected in _EXT_CASES] and _plain(all_exts)
    assert tags == [_TAGGED] * 3 and _plain(tags)
    assert len(frames) == rid
    assert [(f.request_id, f.value, f.metadata) for f in pieces] == [(f.request_id, f.value, f.metadata) for f in frames]
    for f in frames:
        assert _plain(f.value) and (f.metadata is None or _plain(f.metadata)), f
        assert f.name in (None, "X.y"), f
    # The bare payloads, as a payload or as metadata, fail only their frame.
    n = len(_CODE_PAYLOADS)
    bad = frames[: 2 * n] + frames[-n - 1 : -1]
    assert all(isinstance(f.error, fastrpc.DecodeError) and f.value is None for f in bad), bad
    assert all(f.error is None for f in frames if f not in bad)
    # The ext values came through inside frames too, unchanged.
    ext_values = [f.value for f in frames if f.type == MsgType.RESPONSE][len(_CODE_PAYLOADS) + 1 :]
    assert ext_values == [expected for _, expected in _EXT_CASES]
    assert frames[-1].metadata == {"k": [expected for _, expected in _EXT_CASES[:40]]}


def test_detectors_see_a_pickle_being_loaded():
    """The checks above can fail: loading the payloads with pickle and
    marshal is seen by the audit hook, and the pickles call the sentinel."""
    with _Watching() as events:
        for blob in _PICKLES:
            assert pickle.loads(blob) == ["called", {"k": "called"}]
        marshal.loads(_MARSHAL)
    kinds = [e for e, _ in events]
    assert kinds.count("pickle.find_class") >= len(_PICKLES) and kinds[-1] == "marshal.loads", kinds
    assert _sentinel_calls == [("pickle",)] * (2 * len(_PICKLES))


class Keeper:
    """Records what the server handed to the handler."""

    def __init__(self):
        self.got: List[Any] = []

    def keep(self, *args, **kwargs):
        self.got.append((args, kwargs))
        return list(args)


def test_server_builds_no_objects_from_code_payloads(run):
    """A live server handed the same payloads as call arguments, keyword
    arguments and metadata: the handler gets plain values and ExtType, the
    undecodable ones fail INVALID_ARGUMENT, nothing is called or imported,
    and the server goes on serving."""

    async def main():
        keeper = Keeper()
        server = fastrpc.Server()
        server.register(keeper)
        server.register(Arith())
        address = await server.start("tcp://127.0.0.1:0")
        hp = hostport(address)
        try:
            exts = [expected for _, expected in _EXT_CASES]
            # Warm up on the same paths with harmless values, so that any
            # first-use import in asyncio or the server is not mistaken for
            # one made by decoding.
            w = _hello()
            w.write_request(1, "Keeper.keep", [1], {"a": 2}, metadata={"m": 3})
            warm = _raw_frame(MsgType.REQUEST, flags=0x01, rid=2, body=b"\x00\x0bKeeper.keep\xc1")
            await _exchange(hp, w.take() + warm, want=lambda fs: len(_answers(fs)) == 2)
            await _still_serving(address)
            del keeper.got[:]

            w = _hello()
            bad = b""
            for rid, blob in enumerate(_CODE_PAYLOADS, start=100):  # bare pickle/marshal as the arguments
                bad += _raw_frame(MsgType.REQUEST, flags=0x01, rid=rid, body=b"\x00\x0bKeeper.keep" + blob)
            w.write_request(1, "Keeper.keep", exts)  # ext values of every code as arguments
            w.write_request(2, "Keeper.keep", [_TAGGED], {"kw": exts[:10], "tagged": _TAGGED}, metadata={"m": exts[:10]})
            payload = w.take() + bad
            n = 2 + len(_CODE_PAYLOADS)
            with _Watching() as events:
                frames = await _exchange(hp, payload, want=lambda fs: len(_answers(fs)) == n)
                await _still_serving(address)
            assert events == [] and _sentinel_calls == []

            answers = _answers(frames)
            assert sorted(answers) == [1, 2] + list(range(100, 100 + len(_CODE_PAYLOADS)))
            assert answers[1].type == MsgType.RESPONSE and answers[1].value == exts
            assert answers[2].type == MsgType.RESPONSE and answers[2].value == [_TAGGED]
            for rid in range(100, 100 + len(_CODE_PAYLOADS)):
                assert answers[rid].type == MsgType.ERROR, answers[rid]
                assert answers[rid].value[0] == StatusCode.INVALID_ARGUMENT
            # What the handler itself was given: the two decodable calls only.
            assert keeper.got == [((*exts,), {}), ((_TAGGED,), {"kw": exts[:10], "tagged": _TAGGED})]
            assert _plain([[list(a), k] for a, k in keeper.got])
        finally:
            await server.shutdown()

    run(main())


def _answers(frames):
    return {f.request_id: f for f in frames if f.type in (MsgType.RESPONSE, MsgType.ERROR)}
