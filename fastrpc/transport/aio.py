"""asyncio glue: what moves a connection's bytes, for either end.

:class:`BaseProtocol` owns the transport, coalesces writes (everything a
connection's writer holds at the end of a loop tick leaves in one
``transport.write``, large ``bytes`` values by reference through
``writelines``) and handles flow control.  It knows nothing of the frames:
the drivers that subclass it (``client/_aio.py``, ``server/connection.py``)
put their session (``core/session.py``, on a core from ``_impl``) first
among their bases, and the session decides what is written.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any, List, Optional

from .._impl import ReadProtocol
from ..errors import Unavailable

__all__ = ["BaseProtocol", "set_nodelay"]

#: CPython 3.12.0-3.12.8 and 3.13.0-3.13.1: the stdlib selector transport's
#: writelines() buffers without ever pausing the protocol (gh-127655), so a
#: server writing large answers to a client that does not read them would
#: buffer without bound.  On those versions, pause it as the fix does.
_WRITELINES_SKIPS_PAUSE = (3, 12, 0) <= sys.version_info[:3] < (3, 12, 9) or (3, 13, 0) <= sys.version_info[:3] < (3, 13, 2)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Disable Nagle on TCP transports: RPC frames are small and latency-bound."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - socket already gone
            pass


class BaseProtocol(ReadProtocol):  # type: ignore[misc,valid-type]
    """The transport side of one connection: write coalescing, flow control,
    close and abort.

    An ``asyncio.BufferedProtocol`` with the compiled parser (large frames
    are received in place), a plain ``asyncio.Protocol`` with the pure one
    (``_impl.ReadProtocol``).  Subclasses put their session first among
    their bases: its core reads (``get_buffer``/``buffer_updated`` or
    ``data_received``) and owns ``_writer``, which this class sends.
    """

    #: set only while a writer waits for the transport to drain
    _drain_waiter: Optional[asyncio.Future] = None

    def _init_transport(self, loop: asyncio.AbstractEventLoop) -> None:
        # Read on every call: instance attributes (in the compiled build some
        # of these are fields of the core, which comes first in the MRO).
        self._loop = loop
        self._transport: Optional[asyncio.Transport] = None
        self._flush_handle: Optional[asyncio.Handle] = None
        self._closing = False
        self._write_paused = False

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._closing = True
        transport, self._transport = self._transport, None
        if transport is not None and not transport.is_closing():
            # Python < 3.11's TLS transport is not marked closed when the
            # connection under it goes (it warns "unclosed transport" when
            # collected); closing it now is a no-op on the wire.
            transport.close()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            self._drain_waiter = None
            waiter.set_exception(Unavailable("connection lost"))

    # -- writing -------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_handle = None
        transport = self._transport
        w = self._writer
        if transport is not None and len(w):
            if w.chunked:
                self._write_chunks(w.take_chunks())
            else:
                transport.write(w.take_buffer())

    def _write_chunks(self, chunks: List[Any]) -> None:
        """Write frames that hold large ``bytes`` values by reference (uvloop
        writes them with one writev, no copy).  The cores call this too."""
        transport = self._transport
        transport.writelines(chunks)  # type: ignore[union-attr]
        if _WRITELINES_SKIPS_PAUSE:
            # See _WRITELINES_SKIPS_PAUSE: do what the fixed writelines()
            # does, so that a peer that does not read is noticed.
            # Only a socket transport (it has the high-water mark): the
            # SSL transport inherits the method without the state it reads,
            # and its writelines() goes through its own flow control.
            if hasattr(transport, "_high_water"):
                transport._maybe_pause_protocol()  # type: ignore[union-attr]

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._write_paused:
            return
        if self._transport is None:
            raise Unavailable("connection lost")
        if self._drain_waiter is None:
            self._drain_waiter = self._loop.create_future()
        await asyncio.shield(self._drain_waiter)

    @property
    def is_open(self) -> bool:
        """True while the connection is usable."""
        return self._transport is not None and not self._closing

    def close(self) -> None:
        """Close the connection (buffered frames are still sent)."""
        if self._transport is not None:
            self._flush()
            self._closing = True
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self._transport is not None:
            self._closing = True
            self._transport.abort()
