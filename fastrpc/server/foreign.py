"""A server connection that speaks another protocol (msgpack-rpc,
JSON-RPC 1.0: ``fastrpc/interop``) and runs its calls exactly as the
native connection does.

:class:`ForeignConnection` is a :class:`ServerConnection` whose bytes go
through a codec instead of the frame parser and writer.  The codec's calls
are shaped like request frames and enter the native connection's own path
(``_received`` -> ``_process`` -> ``_on_request``): the same dispatch table,
middleware, metrics and access log, backpressure (``max_in_flight``), the
thread pool, cancellation at shutdown and the error model.  Answers leave
through the two methods every answer of a connection goes through
(``_write_result``, ``_write_error``), overridden here to encode them with
the codec.  What has no counterpart in these protocols is off: the
handshake (the first bytes chose the protocol; the first whole message
must arrive within ``handshake_timeout``, as the handshake must),
keepalive PINGs (nobody would answer them: only the idle timeout
applies), GOAWAY (a draining server answers new calls UNAVAILABLE and
closes once idle), per-call deadlines and metadata (none on their wire).
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .._impl import free_request_id
from ..core.session import REQUEST, ProtocolViolation
from ..errors import EncodeError, FrameTooLarge, StatusCode
from ..interop.base import Codec, method_candidates
from .connection import MeteredServerConnection, ServerConnection

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

__all__ = ["ForeignConnection", "MeteredForeignConnection", "foreign_connection"]

log = logging.getLogger("fastrpc.server")

_UNAVAILABLE = int(StatusCode.UNAVAILABLE)
_INTERNAL = int(StatusCode.INTERNAL)
_RESOURCE_EXHAUSTED = int(StatusCode.RESOURCE_EXHAUSTED)
#: what get_buffer() hands the transport (the compiled build's protocols are
#: BufferedProtocols)
_RECV_SIZE = 64 * 1024
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ForeignConnection(ServerConnection):
    """The server end of a connection in another protocol (see the module
    doc); ``codec_class`` is a :class:`~fastrpc.interop.base.Codec`."""

    def __init__(self, server: "Server", codec_class: Any) -> None:
        ServerConnection.__init__(self, server)
        # The core's inline fast path reads native frames only: every call
        # takes the Python path (_process).
        self._inline = None
        self._keepalive_interval = None
        self._track_seen = server.idle_timeout is not None
        self._codec: Codec = codec_class(
            max_message_size=server.max_frame_size,
            decoder_limits=server._decoder_limits,
            resolve=self._resolve,
            params_of=self._params_of,
        )
        #: encoded answers not yet written
        self._out: List[bytes] = []
        #: the client's id of each call waiting for its answer, by our id
        self._ids: Dict[int, Any] = {}
        self._next_rid = 0
        self._params: Dict[str, Optional[Sequence[str]]] = {}
        self._recv: Optional[memoryview] = None

    @property
    def protocol(self) -> str:
        """The protocol this connection speaks."""
        return self._codec.name

    # -- what the native session does that these protocols do not --------------

    def initiate(self, now: float, refuse: Any = None) -> bool:
        # No preface, no handshake to wait for; a refused connection
        # (max_connections) is closed: these protocols cannot say why.
        self._last_seen = self._connected_at = now
        return refuse is None

    def goaway(self, code: int, message: str) -> None:
        pass  # no such message: draining refuses new calls (accept_request)

    def accept_request(self, f: Any, notify: bool) -> Any:
        if self._draining:
            if not notify:
                self._write_error(f.request_id, _UNAVAILABLE, "server shutting down")
            return False
        if not notify:
            self._last_call = f.request_id
        return True

    def violation(self, error: BaseException) -> ProtocolViolation:
        reply = getattr(error, "reply", b"")
        if reply:
            self._out.append(reply)
        return ProtocolViolation(error)

    # -- names and parameters, for the codec --------------------------------------

    def _resolve(self, name: str) -> Optional[str]:
        by_name = self._by_name
        for candidate in method_candidates(name):
            if candidate in by_name:
                return candidate
        return None

    def _params_of(self, name: str) -> Optional[Sequence[str]]:
        try:
            return self._params[name]
        except KeyError:
            pass
        m = self._by_name.get(name)
        names: Optional[Sequence[str]] = None
        if m is not None:
            try:
                names = [p.name for p in inspect.signature(m.fn).parameters.values() if p.kind in _KEYWORD_KINDS]
            except (TypeError, ValueError):
                names = None
        self._params[name] = names
        return names

    # -- input -------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._recv is None:
            self._recv = memoryview(bytearray(_RECV_SIZE))
        return self._recv

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._recv[:nbytes])  # type: ignore[index]

    def data_received(self, data: Any) -> None:
        if self._transport is None or self._closing:
            return
        if self._track_seen:
            self._last_seen = self._clock()
        metrics = self._server._metrics
        if metrics is not None:
            metrics.received(len(data))
        items, broken = self._codec.feed(data)
        if not self._handshaken and (items or broken is not None):
            # Its first whole message stands for the native handshake: a
            # client that sends a few bytes and stops is dropped.
            self._handshaken = True
        frames = []
        ids = self._ids
        for item in items:
            if type(item) is bytes:
                # Answered at once (it cannot run), after the calls before it.
                if frames:
                    self._received(frames, None)
                    frames = []
                self._out.append(item)
                continue
            if item.type == REQUEST:
                rid = self._next_rid = free_request_id(self._next_rid, ids)
                item.request_id = rid
                ids[rid] = item.foreign_id
            frames.append(item)
        if frames or broken is not None:
            self._received(frames, broken)
        if self._out:
            self._flush()

    def _process(self, frames: List[Any], i: int, error: Optional[BaseException]) -> None:
        ServerConnection._process(self, frames, i, error)
        if self._out:
            self._flush()

    # -- output --------------------------------------------------------------------------

    def _write_result(self, rid: int, m: Any, result: Any) -> None:
        codec = self._codec
        fid = self._ids.pop(rid, None)
        try:
            data = codec.result(fid, result)
        except FrameTooLarge as exc:
            data = codec.error(fid, _RESOURCE_EXHAUSTED, f"{m.name}: result too large: {exc}")
        except (EncodeError, OverflowError, TypeError, ValueError) as exc:
            data = codec.error(fid, _INTERNAL, f"{m.name}: cannot encode the result: {exc}")
        self._out.append(data)

    def _write_error(self, rid: int, code: int, message: str, details: Any = None) -> None:
        # Details (debug tracebacks, the chain) have no place in these
        # protocols' errors: code and message only.
        self._out.append(self._codec.error(self._ids.pop(rid, None), code, message))

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        transport = self._transport
        if out and transport is not None:
            self._out = []
            transport.write(out[0] if len(out) == 1 else b"".join(out))


class MeteredForeignConnection(ForeignConnection, MeteredServerConnection):
    """A foreign connection counted into the server's metrics (connections
    and bytes, as :class:`MeteredServerConnection`)."""


def foreign_connection(server: "Server", codec_class: Any) -> ForeignConnection:
    """A connection of the server speaking ``codec_class``'s protocol."""
    if server._metrics is not None:
        return MeteredForeignConnection(server, codec_class)
    return ForeignConnection(server, codec_class)
