"""Coverage-guided fuzzing of the frame parser and the codec with atheris.

Long runs (not part of the test suite; with fastrpc installed, or
PYTHONPATH=. from a checkout built with ``python setup.py build_ext --inplace``)::

    pip install atheris
    python tests/fuzz/fuzz_wire.py -atheris_runs=2000000            # compiled modules
    FASTRPC_NO_EXTENSIONS=1 python tests/fuzz/fuzz_wire.py -runs=200000  # pure Python
    python tests/fuzz/fuzz_wire.py -max_total_time=3600 corpus/      # an hour, keep a corpus

Coverage comes from the pure-Python twins (atheris instruments Python
bytecode); each input also goes through the compiled modules when they are
built, and both must agree, so the fuzzer's exploration of the shared logic
drives the Cython code too (differential fuzzing).  To have libFuzzer see the
C code's own coverage, build with clang and
``CFLAGS=-fsanitize=fuzzer-no-link``.

Every input must end in success or a typed fastrpc error.  Any other
exception, a crash, a disagreement between the implementations or between
split and whole feeding, or an allocation far beyond the input's size
(checked with tracemalloc on a sample of inputs) is a finding.
"""

from __future__ import annotations

import os
import sys
import tracemalloc

import atheris

with atheris.instrument_imports():
    from fastrpc.wire import _codec_py, _framing_py
    from fastrpc.errors import FastRPCError
    from fastrpc.wire.constants import PREFACE

IMPLS = [(_framing_py.FrameParser, _codec_py.unpackb)]
if not os.environ.get("FASTRPC_NO_EXTENSIONS"):
    try:
        from fastrpc.wire import _codec, _framing
    except ImportError:
        pass
    else:
        IMPLS.append((_framing.FrameParser, _codec.unpackb))
_count = 0


def _outcome(parser, chunks):
    frames = []
    try:
        for c in chunks:
            frames += parser.feed(c)
    except FastRPCError as exc:
        return [repr(f) for f in frames + exc.frames], type(exc).__name__
    return [repr(f) for f in frames], None


def _run_input(stream: bytes, split: list, body: bytes) -> None:
    limit = 1 << 16
    outcomes = []
    for parser_cls, unpackb in IMPLS:
        a = _outcome(parser_cls(max_frame_size=limit), split)
        b = _outcome(parser_cls(max_frame_size=limit), [stream])
        # Splitting must not change what the parser finds.
        assert a == b, (a, b)
        try:
            decoded = ("ok", repr(unpackb(body)))
        except FastRPCError as exc:
            decoded = ("error", type(exc).__name__)
        outcomes.append((a, decoded))
    # Both implementations must agree on frames, errors and values.
    assert all(o == outcomes[0] for o in outcomes), outcomes


def _peak(stream: bytes, split: list, body: bytes) -> int:
    tracemalloc.start()
    try:
        _run_input(stream, split, body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_one_input(data: bytes) -> None:
    global _count
    _count += 1
    fdp = atheris.FuzzedDataProvider(data)
    with_preface = fdp.ConsumeBool()
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6)))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    stream = (PREFACE + body) if with_preface else body
    split = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)]) if a < b]
    if _count % 64:
        _run_input(stream, split, body)
        return
    # A sample of inputs runs under tracemalloc; a first-time allocation
    # (lazy caches) is excused by measuring a second time.
    budget = 64 * len(stream) + (1 << 20)
    peak = _peak(stream, split, body)
    if peak >= budget:
        peak = _peak(stream, split, body)
    assert peak < budget, f"{peak} bytes traced for a {len(stream)}-byte input"


def main() -> None:
    print(f"fuzzing {len(IMPLS)} implementation(s) (pure Python guides)", file=sys.stderr)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
