"""Parser benchmarks: a stream of 10,000 small frames (requests by method
index and responses, as a busy connection carries them), fed as one chunk and
in 4 KiB chunks.  The stream is built once at module level; only parsing is
timed.  ``make_*`` are shared with ``benchmarks/micro.py``.
"""

from __future__ import annotations

from fastrpc.wire._framing_py import FrameWriter

N_FRAMES = 10_000
CHUNK = 4096


def _build_stream() -> bytes:
    w = FrameWriter()
    for i in range(N_FRAMES // 2):
        w.write_request(i, i % 16, [i, "arg"])
        w.write_response(i, {"ok": True, "n": i})
    return w.take()


STREAM = _build_stream()  # ~190 KB, no preface
CHUNKS = [STREAM[i : i + CHUNK] for i in range(0, len(STREAM), CHUNK)]


def make_parse_one_chunk(wire):
    new_parser = wire.FrameParser

    def parse_one_chunk():
        return len(new_parser(expect_preface=False).feed(STREAM))

    return parse_one_chunk


def make_parse_4k_chunks(wire):
    new_parser = wire.FrameParser
    chunks = CHUNKS

    def parse_4k_chunks():
        feed = new_parser(expect_preface=False).feed
        n = 0
        for chunk in chunks:
            n += len(feed(chunk))
        return n

    return parse_4k_chunks


# --------------------------------------------------------------------------


def test_parse_10k_frames_one_chunk(benchmark, wire):
    benchmark.group = "parse 10k frames, one chunk"
    assert benchmark(make_parse_one_chunk(wire)) == N_FRAMES


def test_parse_10k_frames_4k_chunks(benchmark, wire):
    benchmark.group = "parse 10k frames, 4 KiB chunks"
    assert benchmark(make_parse_4k_chunks(wire)) == N_FRAMES


def test_stream_content(wire):
    """The benchmark input parses to the intended frames (not timed)."""
    feed = wire.FrameParser(expect_preface=False).feed
    frames = [f for chunk in CHUNKS for f in feed(chunk)]
    assert [f.request_id for f in frames[:4]] == [0, 0, 1, 1]
    assert frames[0].value == [0, "arg"] and frames[-1].value == {"ok": True, "n": N_FRAMES // 2 - 1}
