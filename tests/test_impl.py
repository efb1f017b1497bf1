"""Which implementation is loaded, and the wire constants both must share.

* ``FASTRPC_NO_EXTENSIONS=1`` must select the pure-Python twins (checked in
  fresh interpreters, with the variable set and unset).
* ``FASTRPC_REQUIRE_EXTENSIONS=1`` (set by the CI pass that builds the
  extensions) makes ``test_compiled_modules_loaded`` insist that the compiled
  modules are the ones ``fastrpc`` exports: a silent fallback cannot pass.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys

import pytest

import fastrpc
from fastrpc.wire import constants as W

_NAMES = ("Encoder", "Decoder", "packb", "unpackb", "Frame", "FrameParser", "FrameWriter")
_C_MODULES = {"Encoder": "fastrpc.wire._codec", "Decoder": "fastrpc.wire._codec", "packb": "fastrpc.wire._codec",
              "unpackb": "fastrpc.wire._codec", "Frame": "fastrpc.wire._framing", "FrameParser": "fastrpc.wire._framing",
              "FrameWriter": "fastrpc.wire._framing"}
_PY_MODULES = {name: mod.replace("._codec", "._codec_py").replace("._framing", "._framing_py") for name, mod in _C_MODULES.items()}


def _flag(name):
    return os.environ.get(name, "") not in ("", "0", "false", "False")


REQUIRE_EXTENSIONS = _flag("FASTRPC_REQUIRE_EXTENSIONS")

_PROBE = """
import json, fastrpc, fastrpc._impl
names = {names!r}
print(json.dumps({{
    "active": fastrpc.EXTENSIONS_ACTIVE,
    "implementation": fastrpc.IMPLEMENTATION,
    "modules": {{n: getattr(fastrpc, n).__module__ for n in names}},
    "cores": [fastrpc._impl.ServerSessionCore.__module__, fastrpc._impl.AsyncClientCore.__module__],
}}))
"""
_C_CORES = ["fastrpc.core._cores", "fastrpc.core._cores"]
_PY_CORES = ["fastrpc.core._cores_py", "fastrpc.core._cores_py"]


def _run(code, **env_changes):
    """Run ``code`` in a fresh interpreter that imports this same fastrpc."""
    env = dict(os.environ)
    for key in ("FASTRPC_NO_EXTENSIONS",):
        env.pop(key, None)
    env.update(env_changes)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastrpc.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _probe(**env_changes):
    return json.loads(_run(_PROBE.format(names=_NAMES), **env_changes))


def _compiled_importable():
    out = _run(
        "import importlib\n"
        "try:\n"
        "    for m in ('fastrpc.wire._codec', 'fastrpc.wire._framing', 'fastrpc.core._cores'): importlib.import_module(m)\n"
        "except ImportError:\n"
        "    print('no')\n"
        "else:\n"
        "    print('yes')\n"
    )
    return out.strip() == "yes"


@pytest.fixture(scope="module")
def compiled_importable():
    return _compiled_importable()


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_no_extensions_forces_pure(value):
    info = _probe(FASTRPC_NO_EXTENSIONS=value)
    assert info["active"] is False
    assert info["implementation"] == "py"
    assert info["modules"] == _PY_MODULES
    assert info["cores"] == _PY_CORES


@pytest.mark.parametrize("value", [None, "", "0", "false"], ids=["unset", "empty", "0", "false"])
def test_extensions_used_when_available(value, compiled_importable):
    info = _probe() if value is None else _probe(FASTRPC_NO_EXTENSIONS=value)
    if compiled_importable:
        assert info["active"] is True
        assert info["implementation"] == "c"
        assert info["modules"] == _C_MODULES
        assert info["cores"] == _C_CORES
    else:
        assert info["active"] is False
        assert info["implementation"] == "py"
        assert info["modules"] == _PY_MODULES
        assert info["cores"] == _PY_CORES


def test_this_process_is_consistent():
    """All seven names come from one pair (never half accelerated), and the
    flags agree with them and with the environment."""
    from fastrpc import _impl

    modules = {n: getattr(fastrpc, n).__module__ for n in _NAMES}
    assert modules in (_C_MODULES, _PY_MODULES)
    assert fastrpc.EXTENSIONS_ACTIVE is (modules == _C_MODULES)
    cores = [_impl.ServerSessionCore.__module__, _impl.AsyncClientCore.__module__]
    assert cores == (_C_CORES if fastrpc.EXTENSIONS_ACTIVE else _PY_CORES)
    assert fastrpc.IMPLEMENTATION == ("c" if fastrpc.EXTENSIONS_ACTIVE else "py")
    if _flag("FASTRPC_NO_EXTENSIONS"):
        assert fastrpc.EXTENSIONS_ACTIVE is False


@pytest.mark.skipif(not REQUIRE_EXTENSIONS, reason="FASTRPC_REQUIRE_EXTENSIONS is not set (only the build-and-test CI pass requires the compiled modules)")
def test_compiled_modules_loaded():
    """Guard against a silent fallback to pure Python."""
    assert not _flag("FASTRPC_NO_EXTENSIONS"), "FASTRPC_REQUIRE_EXTENSIONS and FASTRPC_NO_EXTENSIONS contradict each other"
    assert fastrpc.EXTENSIONS_ACTIVE is True
    assert fastrpc.IMPLEMENTATION == "c"
    codec = importlib.import_module("fastrpc.wire._codec")
    framing = importlib.import_module("fastrpc.wire._framing")
    protocol = importlib.import_module("fastrpc.core._cores")
    for mod in (codec, framing, protocol):  # really compiled, not a .py stand-in
        assert mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), mod.__file__
    assert fastrpc.FrameParser is framing.FrameParser
    assert fastrpc.FrameWriter is framing.FrameWriter
    assert fastrpc.Frame is framing.Frame
    assert fastrpc.Encoder is codec.Encoder
    assert fastrpc.Decoder is codec.Decoder
    assert fastrpc.packb is codec.packb
    assert fastrpc.unpackb is codec.unpackb
    from fastrpc import _impl

    assert _impl.ServerSessionCore is protocol.ServerSessionCore
    assert _impl.AsyncClientCore is protocol.AsyncClientCore


def test_import_emits_no_warnings():
    _run("import fastrpc")
    _run("import fastrpc", FASTRPC_NO_EXTENSIONS="1")


# --------------------------------------------------------------------------
# wire constants


def test_wire_constants_pinned():
    """The protocol numbers (docs/protocol.md); changing one is a new version."""
    assert (W.PROTOCOL_MAJOR, W.PROTOCOL_MINOR) == (1, 2)
    assert W.MAGIC == b"FRPC" and W.PREFACE == b"FRPC\x01\x02\r\n" and W.PREFACE_SIZE == 8
    assert (W.HEADER_SIZE, W.HEADER_BODY_SIZE) == (12, 8)
    assert {m.name: m.value for m in W.MsgType} == {
        "REQUEST": 1, "RESPONSE": 2, "ERROR": 3, "NOTIFY": 4, "CANCEL": 5,
        "PING": 6, "PONG": 7, "GOAWAY": 8, "HANDSHAKE": 9,
    }
    assert (W.MIN_MSG_TYPE, W.MAX_MSG_TYPE) == (min(W.MsgType), max(W.MsgType))
    assert (W.FLAG_METHOD_NAME, W.FLAG_DEADLINE, W.FLAG_METADATA, W.FLAG_KWARGS, W.FLAG_COMPRESSED) == (1, 2, 4, 8, 16)
    assert W.KNOWN_FLAGS == 0x1F
    assert W.DEFAULT_MAX_FRAME_SIZE == 64 * 1024 * 1024
    assert W.MAX_FRAME_SIZE_LIMIT == 2**32 - 1 + 4
    assert (W.MAX_REQUEST_ID, W.MAX_METHOD_INDEX, W.MAX_METHOD_NAME, W.MAX_DEADLINE_US) == (2**32 - 1, 2**16 - 1, 2**16 - 1, 2**64 - 1)
    assert fastrpc.MsgType is W.MsgType and fastrpc.ExtType is W.ExtType
    assert (fastrpc.PROTOCOL_MAJOR, fastrpc.PROTOCOL_MINOR) == (1, 2)


# What fastrpc/wire/_framing.pxd exposes to Python through ``cpdef enum``:
# these exact names, each of which must equal fastrpc.wire.constants's value.
_COMPILED_SCALARS = (
    "PROTOCOL_MAJOR", "PROTOCOL_MINOR", "PREFACE_SIZE", "HEADER_SIZE", "HEADER_BODY_SIZE",
    "MIN_MSG_TYPE", "MAX_MSG_TYPE", "MAX_METHOD_INDEX", "MAX_METHOD_NAME",
    "FLAG_METHOD_NAME", "FLAG_DEADLINE", "FLAG_METADATA", "FLAG_KWARGS", "FLAG_COMPRESSED", "KNOWN_FLAGS",
)


def test_wire_constants_match_compiled():
    """The compiled parser keeps its own copy of the wire numbers (``cpdef
    enum`` in _framing.pxd, so that they compile to C constants); every one
    of them, and every member of its ``MsgType``, must equal
    fastrpc.wire.constants's.  Names are looked up directly: a renamed or
    dropped constant fails here instead of being silently left unchecked."""
    try:
        framing = importlib.import_module("fastrpc.wire._framing")
    except ImportError as exc:
        # Not built: nothing compiled to compare (the CI pass that builds the
        # extensions sets FASTRPC_REQUIRE_EXTENSIONS, where this is a failure).
        if REQUIRE_EXTENSIONS:
            pytest.fail(f"FASTRPC_REQUIRE_EXTENSIONS=1 but fastrpc.wire._framing does not import: {exc}")
        pytest.skip(f"compiled extensions not available ({exc})")
    compiled = {name: getattr(framing, name) for name in _COMPILED_SCALARS}
    assert compiled == {name: getattr(W, name) for name in _COMPILED_SCALARS}
    # No other wire constant is exposed without being compared here
    # (RECV_BUFFER_SIZE is a buffer size, not a wire number: it must match
    # the pure twin's instead).
    exposed = {n for n in dir(framing) if n.isupper() and type(getattr(framing, n)) is int}
    assert exposed == set(_COMPILED_SCALARS) | {"RECV_BUFFER_SIZE"}
    assert framing.RECV_BUFFER_SIZE == importlib.import_module("fastrpc.wire._framing_py").RECV_BUFFER_SIZE
    # The compiled MsgType is a separate enum class (cpdef enum), member for
    # member the same names and numbers as the Python one, in the same order.
    assert framing.MsgType is not W.MsgType
    assert [(m.name, int(m)) for m in framing.MsgType] == [(m.name, m.value) for m in W.MsgType]
