"""The one place that chooses between the compiled and pure-Python wire code.

``FASTRPC_NO_EXTENSIONS=1`` (read once, at import) forces the pure-Python
twins.  Otherwise the compiled modules are imported all-or-nothing: if any
of them is missing (no compiler at install time) all fall back together, so
there is never a half-accelerated mix.  Nothing else reads the variable.
"""

from __future__ import annotations

import os
import platform

NO_EXTENSIONS = bool(os.environ.get("FASTRPC_NO_EXTENSIONS")) and os.environ.get(
    "FASTRPC_NO_EXTENSIONS"
) not in ("0", "false", "False", "")

HAS_EXTENSIONS = False
if not NO_EXTENSIONS and platform.python_implementation() == "CPython":
    try:
        from ._codec import Decoder, Encoder, packb, unpackb  # noqa: F401
        from ._framing import Frame, FrameParser, FrameWriter  # noqa: F401
        from ._protocol import CallSlot, ClientCore, ServerCore, SyncCore  # noqa: F401

        HAS_EXTENSIONS = True
    except ImportError:  # not built: use the fallback below
        pass

if not HAS_EXTENSIONS:
    from ._codec_py import Decoder, Encoder, packb, unpackb  # noqa: F401,F811
    from ._framing_py import Frame, FrameParser, FrameWriter  # noqa: F401,F811
    from ._protocol_py import CallSlot, ClientCore, ServerCore, SyncCore  # noqa: F401,F811

#: "c" when the compiled modules are active, "py" for the fallback.
IMPLEMENTATION = "c" if HAS_EXTENSIONS else "py"

__all__ = [
    "HAS_EXTENSIONS",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "CallSlot",
    "ClientCore",
    "Decoder",
    "Encoder",
    "Frame",
    "FrameParser",
    "FrameWriter",
    "ServerCore",
    "SyncCore",
    "packb",
    "unpackb",
]
