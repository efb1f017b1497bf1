"""Shared fixtures: run every wire-layer test against both implementations.

* ``impl`` -- a namespace with ``Encoder, Decoder, packb, unpackb, Frame,
  FrameParser, FrameWriter`` from the compiled modules (id ``c``) or from the
  pure-Python twins (id ``py``).  The ``c`` parameter is skipped when the
  compiled modules cannot be imported or ``FASTRPC_NO_EXTENSIONS=1`` is set;
  with ``FASTRPC_REQUIRE_EXTENSIONS=1`` a failed import is an error instead
  of a skip (guards CI against a silent fallback to pure Python).
* ``impl_pair`` -- ``(c, py)`` for cross-implementation comparisons, skipped
  unless both are usable.

Hypothesis profiles: ``ci`` (default, 200 examples) and ``long`` (5000),
selected with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import importlib
import os
import types
import warnings
from typing import Optional, Tuple

import pytest
from hypothesis import settings

# On a failing example Hypothesis' pytest plugin imports hypothesis.extra._patching,
# which imports libcst, whose import emits a DeprecationWarning (through
# mypy_extensions) on some installs.  With filterwarnings=error that turns every
# test failure into an INTERNALERROR, so do that import now, warnings silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        importlib.import_module("hypothesis.extra._patching")
    except Exception:  # libcst missing or the private module moved: nothing to preload
        pass

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=False, print_blob=True)
settings.register_profile("long", max_examples=5000, deadline=None, derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_NAMES = ("Encoder", "Decoder", "packb", "unpackb", "Frame", "FrameParser", "FrameWriter")
_MODULES = {
    "c": ("fastrpc.wire._codec", "fastrpc.wire._framing", "fastrpc.core._cores"),
    "py": ("fastrpc.wire._codec_py", "fastrpc.wire._framing_py", "fastrpc.core._cores_py"),
}


def _env_flag(name: str) -> bool:
    # Same reading as fastrpc/_impl.py and setup.py.
    return os.environ.get(name, "") not in ("", "0", "false", "False")


NO_EXTENSIONS = _env_flag("FASTRPC_NO_EXTENSIONS")
REQUIRE_EXTENSIONS = _env_flag("FASTRPC_REQUIRE_EXTENSIONS")


def _load(name: str) -> types.SimpleNamespace:
    codec_name, framing_name, cores_name = _MODULES[name]
    codec = importlib.import_module(codec_name)
    framing = importlib.import_module(framing_name)
    cores = importlib.import_module(cores_name)
    ns = types.SimpleNamespace(name=name, codec=codec, framing=framing, cores=cores)
    for attr in _NAMES:
        setattr(ns, attr, getattr(codec if hasattr(codec, attr) else framing, attr))
    return ns


PY = _load("py")

C: Optional[types.SimpleNamespace] = None
C_IMPORT_ERROR: Optional[str] = None  # not built: skip (or fail if required)
C_API_ERROR: Optional[str] = None  # built but incomplete: always a failure
try:
    C = _load("c")
except ImportError as exc:  # not built (yet)
    C_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
except AttributeError as exc:  # imported, but a name of the shared API is missing
    C_API_ERROR = f"{type(exc).__name__}: {exc}"


def c_unavailable_reason() -> Optional[str]:
    """Why the compiled implementation is not tested (None: it is).

    Calls ``pytest.fail`` when ``FASTRPC_REQUIRE_EXTENSIONS=1`` and the
    compiled modules did not import.
    """
    if C_API_ERROR is not None:
        pytest.fail(f"compiled modules lack part of the shared API: {C_API_ERROR}", pytrace=False)
    if C is None:
        if REQUIRE_EXTENSIONS:
            pytest.fail(
                "FASTRPC_REQUIRE_EXTENSIONS=1 but the compiled modules fastrpc.wire._codec/fastrpc.wire._framing/fastrpc.core._cores "
                f"could not be imported ({C_IMPORT_ERROR}); refusing to fall back silently",
                pytrace=False,
            )
        return f"compiled extensions not available ({C_IMPORT_ERROR})"
    if NO_EXTENSIONS:
        return "FASTRPC_NO_EXTENSIONS=1: this pass tests the pure-Python fallback only"
    return None


def get_impl(name: str) -> types.SimpleNamespace:
    if name == "py":
        return PY
    reason = c_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    assert C is not None
    return C


@pytest.fixture(scope="session", params=["c", "py"])
def impl(request) -> types.SimpleNamespace:
    """Both implementations of the wire layer (compiled ``c``, pure ``py``)."""
    return get_impl(request.param)


@pytest.fixture(scope="session")
def impl_pair() -> Tuple[types.SimpleNamespace, types.SimpleNamespace]:
    """``(c, py)``: for tests that compare the two implementations."""
    return get_impl("c"), PY
