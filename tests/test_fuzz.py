"""Bounded mutation fuzzing of the frame parser and the payload decoder.

Valid frame streams and msgpack values are mutated (bit flips, byte
overwrites, inserts, deletes, truncation, duplicated or spliced slices,
corrupted length/type/flags fields, plain garbage) and fed to each
implementation.  Every outcome must be frames/values or a FastRPCError
subclass: any other exception, or a broken invariant, fails the test with
the seed, the input index and the input bytes.

``FASTRPC_FUZZ_ITERATIONS=N`` sets the number of inputs per implementation
(default 20000), half for the parser and half for the decoder; the
cross-implementation test feeds the same number of inputs to both.
``FASTRPC_FUZZ_SEED`` picks another deterministic seed (default 0).
"""

from __future__ import annotations

import os
import random
import struct
from typing import Iterator, List, Tuple

import pytest

from fastrpc.wire import constants as W
from fastrpc.wire._codec_py import packb as py_packb
from fastrpc.wire._framing_py import FrameWriter as PyFrameWriter
from fastrpc.wire.constants import ExtType, MsgType
from fastrpc.errors import DecodeError, FastRPCError, FrameError, TruncatedFrame

ITERATIONS = int(os.environ.get("FASTRPC_FUZZ_ITERATIONS", "20000"))
SEED = int(os.environ.get("FASTRPC_FUZZ_SEED", "0"))
PARSER_INPUTS = ITERATIONS // 2
DECODER_INPUTS = ITERATIONS - PARSER_INPUTS

HEADER = struct.Struct(">IBBHI")

# --------------------------------------------------------------------------
# seed corpus (built once, deterministically, with the pure writer)


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "neg", "big", "float", "str", "bin", "none", "bool", "ext"]
    if depth < 4:
        kinds += ["list", "map", "list", "map"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, rng.randrange(1 << 20)])
    if kind == "neg":
        return rng.choice([-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**63), -rng.randrange(1 << 40)])
    if kind == "big":
        return rng.choice([2**64 - 1, 2**63, -(2**63)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 1.5, 1e300, float("inf"), rng.random()])
    if kind == "str":
        return rng.choice(["", "a", "h\u00e9llo", "\U0001f600", "x" * 31, "y" * 32, "z" * 300])
    if kind == "bin":
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 5, 40, 300])))
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "ext":
        return ExtType(rng.randrange(-128, 128), bytes(rng.choice([0, 1, 2, 3, 4, 8, 16, 17])))
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.choice([0, 1, 2, 3, 16]))]
    return {rng.choice(["a", "key", str(i)]) if rng.random() < 0.8 else i: _random_value(rng, depth + 1) for i in range(rng.choice([0, 1, 2, 3, 16]))}


def _random_frame(w: PyFrameWriter, rng: random.Random) -> None:
    kind = rng.randrange(6)
    rid = rng.choice([0, 1, 7, 0xFFFFFFFF, rng.randrange(1 << 32)])
    if kind <= 1:
        method = rng.choice([0, 3, 0xFFFF, "svc.method", "", "\u00e9t\u00e9"])
        args = [_random_value(rng, 2) for _ in range(rng.randrange(4))]
        kwargs = {"k": _random_value(rng, 2)} if rng.random() < 0.3 else None
        deadline = rng.choice([None, 0, 5_000_000, 2**64 - 1])
        metadata = rng.choice([None, {}, {"trace": "abc"}, {"a": 1, "b": [1, 2]}])
        w.write_request(rid, method, args, kwargs, deadline=deadline, metadata=metadata, notify=kind == 1)
    elif kind == 2:
        w.write_response(rid, _random_value(rng))
    elif kind == 3:
        w.write_error(rid, rng.randrange(17), "message", _random_value(rng, 3))
    else:
        w.write_frame(rng.choice(list(MsgType)), rid, _random_value(rng, 3))


def _build_corpora() -> Tuple[List[Tuple[bytes, List[int]]], List[bytes]]:
    rng = random.Random(12345)
    streams = []
    for _ in range(40):
        w = PyFrameWriter()
        preface = rng.random() < 0.8
        if preface:
            w.write_preface()
        starts = []
        for _ in range(rng.randrange(1, 6)):
            starts.append(len(w))
            _random_frame(w, rng)
        streams.append((w.take(), starts))
    values = [py_packb(_random_value(rng)) for _ in range(30)]
    values += [py_packb([_random_value(rng, 2) for _ in range(rng.randrange(1, 5))]) for _ in range(30)]
    values += [py_packb({str(i): _random_value(rng, 2) for i in range(rng.randrange(1, 5))}) for _ in range(30)]
    return streams, values


STREAMS, VALUES = _build_corpora()

# --------------------------------------------------------------------------
# mutations

INTERESTING_LENGTHS = [0, 1, 7, 8, 9, 0x7F, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def _mutate(rng: random.Random, data: bytes, frame_starts: List[int]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(11)
        n = len(buf)
        if op == 0 and n:  # bit flip
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # overwrite a byte
            buf[rng.randrange(n)] = rng.choice([0x00, 0xFF, 0xC1, 0x7F, 0x80, 0xDD, 0xDF, 0xDB, rng.randrange(256)])
        elif op == 2:  # insert bytes
            i = rng.randrange(n + 1)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 3 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.randrange(1, 9)]
        elif op == 4 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 5 and n:  # duplicate a slice
            i = rng.randrange(n)
            j = min(n, i + rng.randrange(1, 40))
            buf[j:j] = buf[i:j]
        elif op in (6, 7) and frame_starts:  # corrupt a length field
            s = rng.choice(frame_starts)
            if s + 4 <= len(buf):
                (length,) = struct.unpack_from(">I", buf, s)
                new = rng.choice(INTERESTING_LENGTHS + [length - 1, length + 1, length * 2, rng.randrange(1 << 32)])
                struct.pack_into(">I", buf, s, new & 0xFFFFFFFF)
        elif op == 8 and frame_starts:  # corrupt the type or flags byte
            s = rng.choice(frame_starts) + rng.choice([4, 5])
            if s < len(buf):
                buf[s] = rng.choice([0, 10, 255, 0x10, 0x0F, rng.randrange(256)])
        elif op == 9:  # splice in another stream
            other = rng.choice(STREAMS)[0]
            i = rng.randrange(len(buf) + 1)
            buf[i:] = other[rng.randrange(len(other)) :]
        elif op == 10:  # corrupt a name/metadata length after the header
            if frame_starts:
                s = rng.choice(frame_starts) + 12
                if s + 2 <= len(buf):
                    buf[s] = rng.choice([0x00, 0xFF, 0x7F])
    return bytes(buf)


def _chunks(rng: random.Random, data: bytes) -> List[bytes]:
    mode = rng.randrange(4)
    if mode == 0 or len(data) < 2:
        return [data]
    if mode == 1 and len(data) <= 64:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.randrange(1, len(data)) for _ in range(rng.randrange(1, 6)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


def parser_inputs(n: int, seed: int) -> Iterator[Tuple[int, bytes, List[bytes], dict]]:
    """Deterministic parser inputs: (index, data, chunks, FrameParser kwargs)."""
    rng = random.Random(f"parser-{seed}")
    for i in range(n):
        r = rng.random()
        if r < 0.05:  # plain garbage, sometimes behind a valid preface
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
            if rng.random() < 0.5:
                data = W.PREFACE + data
            starts = []
        else:
            data, starts = rng.choice(STREAMS)
            data = _mutate(rng, data, starts)
        expect_preface = data[:4] == W.MAGIC if rng.random() < 0.9 else rng.random() < 0.5
        kwargs = {"expect_preface": expect_preface}
        if rng.random() < 0.2:
            kwargs["max_frame_size"] = rng.choice([W.HEADER_SIZE, 64, 1024])
        yield i, data, _chunks(rng, data), kwargs


def decoder_inputs(n: int, seed: int) -> Iterator[Tuple[int, bytes, dict]]:
    """Deterministic decoder inputs: (index, data, Decoder kwargs)."""
    rng = random.Random(f"decoder-{seed}")
    for i in range(n):
        if rng.random() < 0.05:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        else:
            data = _mutate(rng, rng.choice(VALUES), [])
        kwargs = {}
        if rng.random() < 0.2:
            kwargs = {
                rng.choice(["max_str_len", "max_bin_len", "max_array_len", "max_map_len", "max_ext_len"]): rng.choice([0, 1, 16]),
            }
        if rng.random() < 0.1:
            kwargs["max_depth"] = rng.choice([0, 1, 3])
        yield i, data, kwargs


# --------------------------------------------------------------------------
# running one input


class FuzzFailure(AssertionError):
    pass


def _fail(what: str, index: int, data: bytes, detail: str) -> None:
    raise FuzzFailure(
        f"{what} input #{index} (FASTRPC_FUZZ_SEED={SEED}): {detail}\n  input ({len(data)} bytes): {data.hex()}"
    )


def run_parser(impl, index: int, data: bytes, chunks: List[bytes], kwargs: dict):
    """Feed one input; return (frame keys, exception class or None)."""
    parser = impl.FrameParser(**kwargs)
    max_size = kwargs.get("max_frame_size", W.DEFAULT_MAX_FRAME_SIZE)
    frames = []
    error = None
    try:
        for chunk in chunks:
            got = parser.feed(chunk)
            if type(got) is not list:
                _fail(impl.name, index, data, f"feed() returned {type(got).__name__}, not list")
            frames.extend(got)
            if parser.buffered > max(max_size, W.PREFACE_SIZE):
                _fail(impl.name, index, data, f"buffered {parser.buffered} > max_frame_size {max_size}")
        parser.feed_eof()
    except FrameError as exc:
        error = type(exc)
        frames.extend(exc.frames)
    except FastRPCError as exc:  # allowed by the contract, but not expected from a parser
        _fail(impl.name, index, data, f"parser raised {type(exc).__name__} (not a FrameError): {exc}")
    except Exception as exc:  # noqa: BLE001 - this is what we hunt
        _fail(impl.name, index, data, f"unexpected {type(exc).__name__}: {exc!r}")
    keys = []
    for f in frames:
        if type(f) is not impl.Frame:
            _fail(impl.name, index, data, f"got a {type(f).__name__}, not a Frame")
        if not W.MIN_MSG_TYPE <= f.type <= W.MAX_MSG_TYPE or f.flags & ~W.KNOWN_FLAGS:
            _fail(impl.name, index, data, f"frame with invalid type/flags passed: {f!r}")
        if f.error is not None and (not isinstance(f.error, DecodeError) or f.value is not None):
            _fail(impl.name, index, data, f"frame error must be a DecodeError with value None: {f!r}")
        if f.metadata is not None and type(f.metadata) is not dict:
            _fail(impl.name, index, data, f"metadata is not a dict: {f!r}")
        try:
            keys.append((f.type, f.flags, f.method, f.name, f.request_id, f.deadline,
                         py_packb(f.metadata), py_packb(f.value), None if f.error is None else type(f.error)))
        except Exception as exc:  # noqa: BLE001
            _fail(impl.name, index, data, f"decoded frame content is not re-encodable ({exc!r}): {f!r}")
    if error is not None:  # broken for good
        try:
            parser.feed(b"")
        except FrameError as exc:
            if type(exc) is not error:
                _fail(impl.name, index, data, f"after {error.__name__}, feed raised {type(exc).__name__}")
        else:
            _fail(impl.name, index, data, f"parser accepted input after raising {error.__name__}")
    return keys, error


def run_decoder(impl, index: int, data: bytes, kwargs: dict):
    """Decode one input; return (packed value, None) or (None, exception class)."""
    try:
        value = impl.Decoder(**kwargs).decode(data)
    except DecodeError as exc:
        return None, type(exc)
    except Exception as exc:  # noqa: BLE001
        _fail(impl.name, index, data, f"Decoder({kwargs}) raised {type(exc).__name__}: {exc!r}")
    try:
        packed = impl.packb(value)  # everything decodable is encodable again
    except Exception as exc:  # noqa: BLE001
        _fail(impl.name, index, data, f"decoded value not re-encodable: {exc!r}")
    if py_packb(impl.unpackb(packed)) != py_packb(value):
        _fail(impl.name, index, data, "value changed in a second round trip")
    return py_packb(value), None


# --------------------------------------------------------------------------
# tests


def test_corpus_is_valid():
    """The seed inputs themselves parse cleanly (else the fuzzer starts from garbage)."""
    from fastrpc.wire._codec_py import unpackb
    from fastrpc.wire._framing_py import FrameParser

    for data, starts in STREAMS:
        frames = FrameParser(expect_preface=data[:4] == W.MAGIC).feed(data)
        assert len(frames) == len(starts) and all(f.error is None for f in frames)
    for data in VALUES:
        unpackb(data)


def test_fuzz_parser(impl):
    errors = {}
    frames = bad_payloads = 0
    for index, data, chunks, kwargs in parser_inputs(PARSER_INPUTS, SEED):
        keys, error = run_parser(impl, index, data, chunks, kwargs)
        frames += len(keys)
        bad_payloads += sum(1 for k in keys if k[-1] is not None)
        errors[error] = errors.get(error, 0) + 1
    if PARSER_INPUTS < 2000:
        return  # too few inputs for the coverage checks below
    # the mutations must reach every outcome: clean streams, frames with a bad
    # payload, and several kinds of stream errors
    assert errors.get(None, 0) > PARSER_INPUTS // 50, errors
    assert frames > PARSER_INPUTS // 2, frames
    assert bad_payloads > PARSER_INPUTS // 100, bad_payloads
    assert len([e for e in errors if e is not None]) >= 4, errors


def test_fuzz_decoder(impl):
    ok = failed = 0
    for index, data, kwargs in decoder_inputs(DECODER_INPUTS, SEED):
        _, error = run_decoder(impl, index, data, kwargs)
        if error is None:
            ok += 1
        else:
            failed += 1
    if DECODER_INPUTS >= 2000:  # both outcomes are reached
        assert ok > DECODER_INPUTS // 20 and failed > DECODER_INPUTS // 20, (ok, failed)


def test_fuzz_implementations_agree(impl_pair):
    c, py = impl_pair
    for index, data, chunks, kwargs in parser_inputs(PARSER_INPUTS, SEED + 1):
        got_c = run_parser(c, index, data, chunks, kwargs)
        got_py = run_parser(py, index, data, chunks, kwargs)
        if got_c != got_py:
            _fail("c vs py parser", index, data, f"chunks {[len(x) for x in chunks]}, {kwargs}:\n  c:  {got_c}\n  py: {got_py}")
    for index, data, kwargs in decoder_inputs(DECODER_INPUTS, SEED + 1):
        got_c = run_decoder(c, index, data, kwargs)
        got_py = run_decoder(py, index, data, kwargs)
        if got_c != got_py:
            _fail("c vs py decoder", index, data, f"{kwargs}:\n  c:  {got_c}\n  py: {got_py}")


@pytest.mark.parametrize("seed_index", range(0, 40, 7))
def test_every_truncation_of_a_stream(impl, seed_index):
    """Exhaustive: each prefix of a valid stream, fed whole, gives a prefix of
    its frames and then TruncatedFrame at EOF (or nothing at a boundary)."""
    data, starts = STREAMS[seed_index]
    expect = data[:4] == W.MAGIC
    full = impl.FrameParser(expect_preface=expect).feed(data)
    bounds = starts[1:] + [len(data)]
    for cut in range(len(data) + 1):
        p = impl.FrameParser(expect_preface=expect)
        frames = p.feed(data[:cut])
        complete = sum(1 for b in bounds if b <= cut)
        assert len(frames) == complete
        assert [f.request_id for f in frames] == [f.request_id for f in full[:complete]]
        if cut == 0 or cut == starts[0] or cut in bounds:
            p.feed_eof()
        else:
            with pytest.raises(TruncatedFrame):
                p.feed_eof()
