"""The one place that chooses between the compiled and pure-Python modules.

``FASTRPC_NO_EXTENSIONS=1`` (read once, at import) forces the pure-Python
twins.  Otherwise the compiled modules are imported all-or-nothing: if any
of them is missing (no compiler at install time) all fall back together, so
there is never a half-accelerated mix.  Nothing else reads the variable, and
nothing else decides anything by which build is active: what differs between
the builds beyond the twins themselves (``ReadProtocol``) is chosen here too.

It sits beside :mod:`fastrpc.core` in the layers: it imports the wire and
core twins and nothing above them.
"""

from __future__ import annotations

import asyncio
import os
import platform

NO_EXTENSIONS = os.environ.get("FASTRPC_NO_EXTENSIONS", "") not in ("", "0", "false", "False")

HAS_EXTENSIONS = False
if not NO_EXTENSIONS and platform.python_implementation() == "CPython":
    try:
        from .wire._codec import Decoder, Encoder, packb, unpackb  # noqa: F401
        from .wire._framing import Frame, FrameParser, FrameWriter  # noqa: F401
        from .core._cores import (  # noqa: F401
            AsyncClientCore,
            CallSlot,
            ClientSessionCore,
            ServerSessionCore,
            SyncClientCore,
            free_request_id,
        )

        HAS_EXTENSIONS = True
    except ImportError:  # not built: use the fallback below
        pass

if not HAS_EXTENSIONS:
    from .wire._codec_py import Decoder, Encoder, packb, unpackb  # noqa: F401,F811
    from .wire._framing_py import Frame, FrameParser, FrameWriter  # noqa: F401,F811
    from .core._cores_py import (  # noqa: F401,F811
        AsyncClientCore,
        CallSlot,
        ClientSessionCore,
        ServerSessionCore,
        SyncClientCore,
        free_request_id,
    )

#: "c" when the compiled modules are active, "py" for the fallback.
IMPLEMENTATION = "c" if HAS_EXTENSIONS else "py"

#: The base of the asyncio protocols.  With the compiled parser the
#: transport reads straight into memory the parser hands out (get_buffer), so
#: a large frame is received in place instead of arriving as chunk objects
#: that are then copied together.  The pure parser copies every read into a
#: bytes object anyway: there a plain Protocol, whose transport makes that
#: bytes object in C and calls data_received once, is the cheaper path (two
#: Python calls and a copy less per read).
ReadProtocol = asyncio.BufferedProtocol if HAS_EXTENSIONS else asyncio.Protocol

__all__ = [
    "HAS_EXTENSIONS",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "AsyncClientCore",
    "CallSlot",
    "ClientSessionCore",
    "Decoder",
    "Encoder",
    "Frame",
    "FrameParser",
    "FrameWriter",
    "ReadProtocol",
    "ServerSessionCore",
    "SyncClientCore",
    "free_request_id",
    "packb",
    "unpackb",
]
