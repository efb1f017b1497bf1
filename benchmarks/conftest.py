"""pytest-benchmark setup for the wire-layer benchmarks.

Run them explicitly (``benchmarks/`` is not in ``testpaths``)::

    python -m pytest benchmarks/                        # timed
    python -m pytest benchmarks/ --benchmark-disable    # each once, as a smoke test

Fixtures:

* ``impl`` -- the compiled (``c``) or pure-Python (``py``) wire layer, as in
  ``tests/conftest.py``; ``c`` is skipped when the extensions are not built
  or ``FASTRPC_NO_EXTENSIONS=1`` is set.
* ``wire`` -- the same two plus ``baseline``: what an application would write
  without fastrpc, ``msgpack.packb``/``unpackb`` bodies behind a
  ``struct.pack(">IBBHI", ...)`` header, parsed with ``struct.unpack_from`` in
  a loop.  The baseline validates nothing and knows no optional header fields,
  so it is a generous yardstick.

Files named ``bench_*.py`` are collected (pyproject's ``python_files`` only
names ``test_*.py``); their test functions are ordinary ``test_*`` functions.
"""

from __future__ import annotations

import importlib
import os
import struct
import types
from collections import namedtuple
from typing import List, Optional

import msgpack
import pytest

# --------------------------------------------------------------------------
# the baseline: msgpack + struct framing, done the obvious way

_HEADER = struct.Struct(">IBBHI")  # length, type, flags, method, request_id
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from

#: What BaselineParser returns per frame (fastrpc returns Frame objects).
BaselineFrame = namedtuple("BaselineFrame", "type flags method request_id value")


def baseline_packb(obj):
    return msgpack.packb(obj, use_bin_type=True)


def baseline_unpackb(data):
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class BaselineWriter:
    """Header via struct.pack, body via msgpack.packb, into one bytearray."""

    def __init__(self, **_ignored) -> None:
        self._buf = bytearray()

    def write_request(self, request_id: int, method: int, args, kwargs=None) -> None:
        body = msgpack.packb(args)
        self._buf += _pack_header(8 + len(body), 1, 0, method, request_id) + body

    def write_response(self, request_id: int, value) -> None:
        body = msgpack.packb(value)
        self._buf += _pack_header(8 + len(body), 2, 0, 0, request_id) + body

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf = bytearray()
        return out


class BaselineParser:
    """Appends chunks to a leftover buffer and loops with struct.unpack_from."""

    def __init__(self, **_ignored) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> List[BaselineFrame]:
        buf = self._rest + data if self._rest else data
        frames = []
        append = frames.append
        unpackb = msgpack.unpackb
        pos = 0
        end = len(buf)
        while end - pos >= 12:
            length, mtype, flags, method, request_id = _unpack_header(buf, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            value = unpackb(buf[pos + 12 : stop]) if stop > pos + 12 else None
            append(BaselineFrame(mtype, flags, method, request_id, value))
            pos = stop
        self._rest = buf[pos:]
        return frames


BASELINE = types.SimpleNamespace(
    name="baseline",
    FrameWriter=BaselineWriter,
    FrameParser=BaselineParser,
    packb=baseline_packb,
    unpackb=baseline_unpackb,
)

# --------------------------------------------------------------------------
# the two fastrpc implementations

_NAMES = ("Encoder", "Decoder", "packb", "unpackb", "Frame", "FrameParser", "FrameWriter")
_MODULES = {"c": ("fastrpc.wire._codec", "fastrpc.wire._framing"), "py": ("fastrpc.wire._codec_py", "fastrpc.wire._framing_py")}


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "False")


def load_impl(name: str) -> types.SimpleNamespace:
    """``c`` or ``py`` as a namespace; ImportError if ``c`` is not built."""
    codec = importlib.import_module(_MODULES[name][0])
    framing = importlib.import_module(_MODULES[name][1])
    ns = types.SimpleNamespace(name=name)
    for attr in _NAMES:
        setattr(ns, attr, getattr(codec if hasattr(codec, attr) else framing, attr))
    return ns


def c_unavailable_reason() -> Optional[str]:
    """Why the compiled implementation is not benchmarked (None: it is)."""
    if _flag("FASTRPC_NO_EXTENSIONS"):
        return "FASTRPC_NO_EXTENSIONS=1 is set"
    try:
        load_impl("c")
    except ImportError as exc:
        return f"compiled extensions not available ({exc})"
    return None


def get(name: str) -> types.SimpleNamespace:
    if name == "baseline":
        return BASELINE
    if name == "c":
        reason = c_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    return load_impl(name)


@pytest.fixture(scope="session", params=["c", "py"])
def impl(request) -> types.SimpleNamespace:
    """fastrpc's wire layer: compiled (``c``) or pure Python (``py``)."""
    return get(request.param)


@pytest.fixture(scope="session", params=["c", "py", "baseline"])
def wire(request) -> types.SimpleNamespace:
    """``impl`` plus the msgpack+struct ``baseline``."""
    return get(request.param)


def pytest_collect_file(file_path, parent):
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)  # named on the command line: pytest collects it itself
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
