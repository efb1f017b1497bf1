"""The sans-IO session layer: every rule about a connection's life, once.

A session is the state machine of one connection, for one end: bytes in,
events and bytes out, no sockets, no event loop, no threads (the model of
h11 and hyper-h2).  :class:`ClientSession` is the client end,
:class:`ServerSession` the server end.  Three drivers move their bytes: the
asyncio client protocol (``client/_aio.py``), the blocking-socket client
(``client/_sync.py``) and the server's connection (``server/connection.py``);
each subclasses its session with the core that has its per-call fast path
(``_cores.pyx``), so a plain call never leaves C, and everything else goes
through the rules here:

* the preface and the handshake (once each way), and the limits it carries;
* GOAWAY: recording the peer's (and the last call it says it accepted),
  sending ours with the last call we accepted, and which calls a GOAWAY
  proves were never read (:class:`~fastrpc.NotProcessed`);
* errors: a call's ERROR, a connection-level ERROR, a protocol violation
  (answered with a GOAWAY, then the connection is closed), and failing
  every call in flight when the connection goes, with the first reason
  given (a server's "too many connections" is not overwritten by the EOF
  that follows it);
* PING/PONG and keepalive: when to ping a silent peer and when to give up;
  the server's handshake and idle timeouts;
* request ids, deadlines on the wire, CANCEL.

Bytes out: a session writes frames into its ``FrameWriter``; the driver
sends what is there (``data_to_send()`` for a driver without a writer of
its own).  Frames a session decides to send while it handles what it read
(PONG, CANCEL, the keepalive PING, a GOAWAY) go to the client session's
*outbox* first and into the writer when the driver calls
:meth:`ClientSession.write_outbox`: the blocking client's writer is shared
by threads, and only the one holding its send lock may write to it.  The
server's connection is single-threaded, so its session writes directly, in
order with the answers.

Events: :meth:`ClientSession.handle_frames` and
:meth:`ServerSession.handle_control` return the connection-level events
below (calls are completed through ``_complete``, which a driver may
override).  Standalone, :meth:`receive_data` feeds bytes and returns them.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from .._impl import ClientSessionCore, FrameParser, FrameWriter, ServerSessionCore, free_request_id
from ..errors import (
    DeadlineExceeded,
    Internal,
    MalformedFrame,
    NotProcessed,
    RpcError,
    StatusCode,
    Unavailable,
    error_from_payload,
)
from ..wire import compression as compression_codecs
from ..wire import constants as W

__all__ = [
    "AGENT",
    "CancelReceived",
    "ClientSession",
    "ConnectionFailed",
    "Event",
    "GoAwayReceived",
    "HandshakeReceived",
    "KEEPALIVE_DEAD",
    "KEEPALIVE_OK",
    "KEEPALIVE_PING",
    "ProtocolViolation",
    "RequestReceived",
    "ServerSession",
    "TIMER_HALF_OPEN",
    "TIMER_IDLE",
    "TIMER_NO_HANDSHAKE",
    "TIMER_OK",
    "deadline_us",
    "goaway_last_call",
    "sent_after",
]

# Plain ints: comparing a frame's type against an IntEnum member is slower.
REQUEST = int(W.MsgType.REQUEST)
RESPONSE = int(W.MsgType.RESPONSE)
ERROR = int(W.MsgType.ERROR)
NOTIFY = int(W.MsgType.NOTIFY)
CANCEL = int(W.MsgType.CANCEL)
PING = int(W.MsgType.PING)
PONG = int(W.MsgType.PONG)
GOAWAY = int(W.MsgType.GOAWAY)
HANDSHAKE = int(W.MsgType.HANDSHAKE)

_OK = int(StatusCode.OK)
_INTERNAL = int(StatusCode.INTERNAL)
_UNAVAILABLE = int(StatusCode.UNAVAILABLE)

try:
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("fastrpc")
except Exception:  # noqa: BLE001 - running from a source tree
    _VERSION = "0"
#: what each end says it is, in the handshake
AGENT = f"fastrpc/{_VERSION}"


# -- rules that need no state ----------------------------------------------------


def goaway_last_call(value: Any) -> Optional[int]:
    """The last accepted request id a GOAWAY payload ``[code, message,
    last]`` names (``0``: none), or None when it names none (a 1.0 peer
    sends only ``[code, message]``)."""
    if type(value) is list and len(value) >= 3 and type(value[2]) is int and 0 <= value[2] <= 0xFFFFFFFF:
        return value[2]
    return None


def sent_after(rid: int, last: int, newest: int) -> bool:
    """Whether request ``rid`` was sent after request ``last`` on a
    connection whose newest request id is ``newest``.

    Ids are handed out in increasing order, wrapping from 2**32-1 to 1, so
    the one sent later is the one fewer steps behind the newest.  ``last``
    0 means the server accepted none.
    """
    if last == 0:
        return True
    return (newest - rid) & 0xFFFFFFFF < (newest - last) & 0xFFFFFFFF


def deadline_us(timeout: Optional[float], method: str) -> Optional[int]:
    """A call's timeout (seconds) as the frame's DEADLINE field
    (microseconds), or None; a timeout already spent fails the call before
    anything is sent."""
    if timeout is None:
        return None
    if timeout <= 0:
        raise DeadlineExceeded(f"deadline of {timeout}s already passed before {method} was sent")
    return int(timeout * 1_000_000)


# -- events ---------------------------------------------------------------------------


class Event:
    """Something a driver must act on."""

    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class HandshakeReceived(Event):
    """The peer's handshake arrived (``info``: its map)."""

    __slots__ = ("info",)

    def __init__(self, info: Dict[str, Any]) -> None:
        self.info = info


class GoAwayReceived(Event):
    """The peer accepts no new calls.  Calls in flight still complete (those
    it never read fail with :class:`NotProcessed`); send new ones elsewhere."""

    __slots__ = ("code", "message", "last")

    def __init__(self, code: Any, message: str, last: Optional[int]) -> None:
        self.code = code
        self.message = message
        self.last = last


class ProtocolViolation(Event):
    """The peer broke the protocol.  The session has written a GOAWAY that
    says why; the driver sends it and closes the connection."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class CancelReceived(Event):
    """The client gave up on call ``request_id`` (server side): stop it if
    it still runs; no answer is expected."""

    __slots__ = ("request_id",)

    def __init__(self, request_id: int) -> None:
        self.request_id = request_id


class RequestReceived(Event):
    """A request (or notification) that passed the session's rules, for a
    standalone server session (``frame``: the parsed frame)."""

    __slots__ = ("frame",)

    def __init__(self, frame: Any) -> None:
        self.frame = frame


class ConnectionFailed(Event):
    """The server reported a connection-level error (an ERROR frame for
    request 0); every call in flight has failed with it.  The driver closes
    the connection."""

    __slots__ = ("error",)

    def __init__(self, error: RpcError) -> None:
        self.error = error


#: keepalive_check() results
KEEPALIVE_OK = 0
KEEPALIVE_PING = 1  # a PING is on its way (outbox or writer): send it
KEEPALIVE_DEAD = 2  # silent past interval + timeout: drop the connection

#: ServerSession.timer_check() results
TIMER_OK = 0
TIMER_NO_HANDSHAKE = 1  # abort: no handshake in time (slowloris)
TIMER_HALF_OPEN = 2  # abort: no answer to a keepalive PING
TIMER_IDLE = 3  # close: idle; a GOAWAY has been written


class _KeepaliveRule:
    """Keepalive, the same at both ends: a peer silent for
    ``keepalive_interval`` gets one PING; silent ``keepalive_timeout`` more
    from the moment that PING went out, it is gone (half-open: it vanished
    without a FIN, or hangs).  The core stamps ``_last_seen`` (and clears
    ``_ping_sent``) on every read when ``_track_seen``."""

    _keepalive_interval: Optional[float]
    _keepalive_timeout: float

    _ping_at = 0.0  # when the keepalive PING went out

    def _keepalive(self, now: float) -> int:
        interval = self._keepalive_interval
        if interval is None:
            return KEEPALIVE_OK
        if self._ping_sent:
            # The peer has keepalive_timeout from our PING to say anything.
            if now - self._ping_at >= self._keepalive_timeout:
                return KEEPALIVE_DEAD
            return KEEPALIVE_OK
        if now - self._last_seen >= interval:
            return KEEPALIVE_PING
        return KEEPALIVE_OK

    def restart_silence(self, now: float) -> None:
        """Count the peer's silence from ``now``.  For a driver that reads
        only while calls wait (the blocking client): the time before its
        first call says nothing about the peer."""
        self._last_seen = now
        self._ping_sent = False


class ClientSession(_KeepaliveRule, ClientSessionCore):
    """The client end of a connection, sans IO.

    Usage (standalone; the drivers in ``fastrpc/client`` do the same with
    sockets)::

        s = ClientSession()
        s.initiate()
        sock.sendall(s.data_to_send())
        events = s.receive_data(sock.recv(65536))   # HandshakeReceived(...)
        fut = concurrent.futures.Future()
        s.start_call("Arith.multiply", [7, 8], None, None, None, fut)
        sock.sendall(s.data_to_send())
        s.receive_data(sock.recv(65536)); fut.result()   # 56

    A call is identified by its *handle*: anything with ``done()``,
    ``set_result()`` and ``set_exception()`` (an asyncio or
    ``concurrent.futures`` future); a driver with handles of its own
    overrides :meth:`_complete`.

    Parameters:
        max_frame_size: largest frame sent or accepted (lowered to the
            server's limit at the handshake).
        keepalive_interval, keepalive_timeout: see :meth:`keepalive_check`.
        clock: monotonic seconds, read on every read only with keepalive.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        compression: Sequence[str] = (),
        compress_threshold: int = compression_codecs.DEFAULT_THRESHOLD,
    ) -> None:
        self._parser = FrameParser(max_frame_size=max_frame_size)
        self._writer = FrameWriter(max_frame_size=max_frame_size)
        if compression:
            # Offered at handshake.  The server answers with the one it
            # chose and may compress from its very next frame, which can
            # come in the same read as its handshake: the parser takes any
            # codec offered from the start.
            self._offer = list(compression)
            self._compress_threshold = compress_threshold
            self._parser.decompressor = compression_codecs.decompressor(self._offer, max_frame_size)
        self._clock = clock
        # Only keepalive reads _last_seen: without it a read does not even
        # look at the clock.
        self._track_seen = keepalive_interval is not None
        if keepalive_interval is not None:
            self._keepalive_interval = keepalive_interval
            self._keepalive_timeout = keepalive_timeout
        self._pending: Dict[int, Any] = {}
        self.methods: Dict[str, int] = {}
        self._next_id = 0
        self.peer_goaway = False
        self._outbox: List[Tuple[int, int, Any]] = []
        # (_last_seen, _ping_sent and lost_reason start at their zero
        # values, in the core.)

    # What a connection rarely reads or changes starts here, at class
    # level, so that its __dict__ holds only what was set (see
    # _cores_py.SessionCore); what every call reads is set above, as
    # instance attributes (the fast kind to read).
    _keepalive_interval: Optional[float] = None
    _keepalive_timeout = 20.0
    _keepalive_queued = False
    #: GOAWAY's last accepted request id, once the server said it
    _goaway_last: Optional[int] = None
    _goaway_sent = False
    _handshaken = False
    #: the server's handshake map
    server_info: Mapping[str, Any] = MappingProxyType({})
    #: the names of the methods the server says are idempotent
    idempotent: FrozenSet[str] = frozenset()
    #: the compression codecs offered, and the one agreed (None: none)
    _offer: Sequence[str] = ()
    _compress_threshold = compression_codecs.DEFAULT_THRESHOLD
    compression: Optional[str] = None
    _pings: Optional[Dict[int, Any]] = None
    _ping_seq = 0
    _events: Optional[List[Event]] = None

    @property
    def in_flight(self) -> int:
        """Number of calls waiting for an answer on this connection."""
        return len(self._pending)

    # -- bytes out -----------------------------------------------------------------

    def initiate(self) -> None:
        """Write the preface and the handshake: the first bytes to send."""
        w = self._writer
        w.write_preface()
        info: Dict[str, Any] = {"client": AGENT, "max_frame_size": w.max_frame_size}
        if self._offer:
            info["compression"] = self._offer
        w.write_frame(HANDSHAKE, 0, info)

    def write_outbox(self) -> bool:
        """Write the frames this session decided to send into the writer
        (the caller owns the writer: holds the send lock); True if any."""
        box = self._outbox
        if not box:
            return False
        self._outbox = []
        w = self._writer
        for mtype, rid, value in box:
            w.write_frame(mtype, rid, value)
            if mtype == PING and value == 0 and self._keepalive_queued:
                # It counts as sent once it is, and the peer's time to answer
                # runs from then: a busy writer cannot make a live peer look
                # dead.
                self._keepalive_queued = False
                self._ping_sent = True
                self._ping_at = self._clock()
        return True

    def data_to_send(self) -> bytes:
        """Everything there is to send, as one bytes object (for drivers
        that do not send from the writer themselves)."""
        self.write_outbox()
        return self._writer.take()

    # -- bytes in (standalone) -----------------------------------------------------

    def receive_data(self, data: bytes) -> List[Event]:
        """Feed bytes read from the server; return the events they caused.
        Calls they answer are completed (see :meth:`_complete`)."""
        self._events = []
        self.data_received(data)
        events, self._events = self._events, None
        return events or []

    def _received(self, frames: List[Any], error: Optional[BaseException]) -> None:
        # What the core did not handle itself.  Drivers override this to act
        # on the events; standalone they are kept for receive_data().
        events = self.handle_frames(frames, error)
        if self._events is not None:
            self._events.extend(events)

    # -- calls ------------------------------------------------------------------------

    def start_call(
        self,
        method: str,
        args: Any,
        kwargs: Optional[dict],
        timeout: Optional[float],
        metadata: Optional[dict],
        handle: Any,
    ) -> int:
        """Write a REQUEST and track ``handle`` until it is answered; return
        the request id.  (The compiled cores' call paths do the same inline.)"""
        if self.peer_goaway:
            raise Unavailable(self.lost_reason or "server is shutting down (goaway)")
        deadline = deadline_us(timeout, method)
        rid = self._next_id = free_request_id(self._next_id, self._pending)
        self._writer.write_request(rid, self.methods.get(method, method), args, kwargs, deadline=deadline, metadata=metadata)
        self._pending[rid] = handle
        return rid

    def write_notify(self, method: str, args: Any, kwargs: Optional[dict] = None, metadata: Optional[dict] = None) -> None:
        """Write a one-way call (no answer, no error report)."""
        self._writer.write_request(0, self.methods.get(method, method), args, kwargs, metadata=metadata, notify=True)

    def cancel_call(self, rid: int, handle: Any) -> bool:
        """The caller gave up on call ``rid``: forget it and tell the server
        (CANCEL, to the outbox).  False if it was no longer in flight."""
        if self._pending.get(rid) is not handle:
            return False
        del self._pending[rid]
        self._outbox.append((CANCEL, rid, None))
        return True

    def expire_call(self, rid: int, handle: Any, message: str) -> bool:
        """Call ``rid``'s deadline passed: fail it with DeadlineExceeded and
        tell the server (CANCEL).  False if it was no longer in flight."""
        if not self.cancel_call(rid, handle):
            return False
        self._complete(handle, None, DeadlineExceeded(message))
        return True

    def start_ping(self, handle: Any) -> int:
        """Queue a PING whose PONG completes ``handle``; return its value."""
        self._ping_seq = seq = (self._ping_seq % 0x7FFFFFFF) + 1  # never 0: keepalive's
        if self._pings is None:
            self._pings = {}
        self._pings[seq] = handle
        self._outbox.append((PING, 0, seq))
        return seq

    def forget_ping(self, seq: int) -> None:
        """The caller of :meth:`start_ping` stopped waiting."""
        if self._pings is not None:
            self._pings.pop(seq, None)

    def keepalive_check(self, now: float) -> int:
        """What keepalive asks for at ``now``: :data:`KEEPALIVE_OK`,
        :data:`KEEPALIVE_PING` (a PING is queued: write the outbox and send)
        or :data:`KEEPALIVE_DEAD` (``lost_reason`` says why: drop the
        connection)."""
        action = self._keepalive(now)
        if action == KEEPALIVE_DEAD:
            self._lose(f"no answer from the server for {now - self._last_seen:.1f}s (keepalive)")
        elif action == KEEPALIVE_PING and not self._keepalive_queued:
            self._keepalive_queued = True
            self._outbox.append((PING, 0, 0))
        return action

    def goodbye(self) -> None:
        """This side is done: queue a GOAWAY (the client accepts no calls, so
        its last is 0) unless one went already; the driver sends it and
        closes."""
        self._lose("client closed")
        if not self._goaway_sent:
            self._goaway_sent = True
            self._outbox.append((GOAWAY, 0, (_OK, "client closing", 0)))

    # -- frames in ----------------------------------------------------------------

    def handle_frames(self, frames: List[Any], error: Optional[BaseException]) -> List[Event]:
        """Apply the rules to frames the fast path did not handle (and to the
        parser's ``error``, if the read broke the protocol); return the
        connection-level events, in order."""
        events: List[Event] = []
        pending = self._pending
        for f in frames:
            t = f.type
            if t == RESPONSE or t == ERROR:
                rid = f.request_id
                if t == ERROR and rid == 0:
                    err = Internal(f"undecodable error frame: {f.error}") if f.error is not None else error_from_payload(f.value)
                    self._lose(f"server error: {err}")
                    self.fail_all(err)
                    events.append(ConnectionFailed(err))
                    return events
                handle = pending.pop(rid, None)
                if handle is None:
                    continue  # cancelled or expired: the answer crossed our CANCEL
                if f.error is not None:
                    self._complete(handle, None, Internal(f"undecodable answer: {f.error}"))
                elif t == RESPONSE:
                    self._complete(handle, f.value, None)
                else:
                    err = error_from_payload(f.value)
                    if err.code == _UNAVAILABLE and self._not_read(rid):
                        err = NotProcessed(err.message)  # refused after the server's GOAWAY: it did not run
                    self._complete(handle, None, err)
            elif t == PING:
                self._outbox.append((PONG, 0, f.value))
            elif t == PONG:
                pings = self._pings
                handle = pings.pop(f.value, None) if pings and type(f.value) is int and f.value else None
                if handle is not None:
                    self._complete(handle, None, None)
            elif t == HANDSHAKE:
                if self._handshaken:
                    error = MalformedFrame("a second HANDSHAKE from the server (it is sent once)")
                    break
                events.append(self._on_handshake(f))
            elif t == GOAWAY:
                events.append(self._on_goaway(f))
            else:
                error = MalformedFrame(f"unexpected {W.MsgType(t).name} frame from the server")
                break
        if error is not None:
            events.append(self._violation(error))
        return events

    def _on_handshake(self, f: Any) -> HandshakeReceived:
        self._handshaken = True
        info = f.value if type(f.value) is dict else {}
        names = info.get("methods")
        # Updated in place: the core's fast path holds this dict.
        self.methods.clear()
        if type(names) is list:
            self.methods.update((name, i) for i, name in enumerate(names) if type(name) is str)
            marked = info.get("idempotent")
            if type(marked) is list:
                self.idempotent = frozenset(
                    names[i] for i in marked if type(i) is int and 0 <= i < len(names) and type(names[i]) is str
                )
        self.server_info = info
        chosen = info.get("compression")
        if type(chosen) is str and chosen in self._offer:
            # From now on requests large enough are compressed (when it pays).
            self.compression = chosen
            self._writer.compressor = compression_codecs.compressor(chosen)
            self._writer.compress_threshold = self._compress_threshold
        peer_max = info.get("max_frame_size")
        if type(peer_max) is int and W.HEADER_SIZE <= peer_max < self._writer.max_frame_size:
            # Never send a frame the server would refuse (and close the
            # connection for): the writer raises FrameTooLarge instead.
            self._writer.max_frame_size = peer_max
        return HandshakeReceived(info)

    def _on_goaway(self, f: Any) -> GoAwayReceived:
        self.peer_goaway = True
        v = f.value
        code, message, last = _UNAVAILABLE, "", None
        if type(v) is list and len(v) >= 2:
            code, message = v[0], v[1] if isinstance(v[1], str) else repr(v[1])
            last = goaway_last_call(v)
        self._goaway_last = last
        self._lose(f"server said goaway: {message}")
        return GoAwayReceived(code, message, last)

    def _violation(self, error: BaseException) -> ProtocolViolation:
        self._lose(f"protocol error: {error}")
        self._goaway_sent = True
        self._outbox.append((GOAWAY, 0, (_INTERNAL, f"protocol error: {error}", 0)))
        return ProtocolViolation(error)

    def _not_read(self, rid: int) -> bool:
        # True when call ``rid`` was sent after the last call the server's
        # GOAWAY says it accepted: the server never ran it.
        last = self._goaway_last
        return last is not None and sent_after(rid, last, self._next_id)

    def _lose(self, reason: str) -> None:
        # The first reason is the one the calls report: what the server said
        # beats the EOF that followed it.
        if self.lost_reason is None:
            self.lost_reason = reason

    # -- the end ----------------------------------------------------------------------

    def fail_all(self, err: RpcError) -> None:
        """Fail every call in flight with ``err`` (or :class:`NotProcessed`
        for the calls a GOAWAY proves the server never read)."""
        pending = dict(self._pending)
        self._pending.clear()  # in place: the core's fast path holds this dict
        for rid, handle in pending.items():
            if self._not_read(rid):
                self._complete(handle, None, NotProcessed(f"{err.message} (after GOAWAY; the server never read this call)"))
            else:
                self._complete(handle, None, type(err)(err.code, err.message, err.details))

    def lost(self, reason: str) -> None:
        """The connection is gone: every call in flight and every ping fails
        (with the first reason given, see :meth:`fail_all`)."""
        self._lose(reason)
        self.fail_all(Unavailable(self.lost_reason))
        pings, self._pings = self._pings, None
        for handle in (pings or {}).values():
            self._complete(handle, None, Unavailable(self.lost_reason))

    def _complete(self, handle: Any, value: Any, error: Optional[BaseException]) -> None:
        """Complete a call's (or ping's) handle."""
        if not handle.done():
            if error is None:
                handle.set_result(value)
            else:
                handle.set_exception(error)


class ServerSession(_KeepaliveRule, ServerSessionCore):
    """The server end of a connection, sans IO: the handshake, control
    frames, GOAWAY and draining, the acceptance rules for requests, and the
    timers (handshake, idle, keepalive).  Running the calls is the server's
    (``server/connection.py``), which subclasses this.

    Parameters:
        handshake_info: the map sent in answer to the client's handshake.
        max_frame_size: largest frame sent or accepted.
        decoder: the Decoder for payloads (the server's limits).
        handshake_timeout, idle_timeout, keepalive_interval,
        keepalive_timeout: see :meth:`timer_check` (None: off).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        *,
        handshake_info: Dict[str, Any],
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        decoder: Optional[Any] = None,
        handshake_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        compression: Sequence[str] = (),
        compress_threshold: int = compression_codecs.DEFAULT_THRESHOLD,
    ) -> None:
        self._parser = FrameParser(max_frame_size=max_frame_size, decoder=decoder)
        self._writer = FrameWriter(max_frame_size=max_frame_size)
        self._clock = clock
        self._handshake_info = handshake_info
        if compression:
            self._accept = compression
            self._compress_threshold = compress_threshold
        # Only what is configured is set (the rest starts at class level:
        # see ClientSession).  Only an idle timeout or keepalive reads
        # _last_seen: without them a read does not even look at the clock.
        self._track_seen = idle_timeout is not None or keepalive_interval is not None
        if handshake_timeout is not None:
            self._handshake_timeout = handshake_timeout
        if idle_timeout is not None:
            self._idle_timeout = idle_timeout
        if keepalive_interval is not None:
            self._keepalive_interval = keepalive_interval
            self._keepalive_timeout = keepalive_timeout
        # Read on every read of the connection: instance attributes.
        self._backlog: Optional[List[Any]] = None
        self._draining = False
        self._read_paused = False
        #: the id of the last request accepted (run or running); GOAWAY
        #: tells the client, which may resend every later one elsewhere
        self._last_call = 0
        self._calls: Dict[int, Any] = {}

    _handshake_timeout: Optional[float] = None
    _idle_timeout: Optional[float] = None
    _keepalive_interval: Optional[float] = None
    _keepalive_timeout = 20.0
    _connected_at = 0.0
    _handshaken = False
    _events: Optional[List[Event]] = None
    #: the compression codecs accepted, and the one agreed (None: none)
    _accept: Sequence[str] = ()
    _compress_threshold = compression_codecs.DEFAULT_THRESHOLD
    compression: Optional[str] = None

    # -- bytes out -----------------------------------------------------------------

    def initiate(self, now: float, refuse: Optional[Tuple[int, str]] = None) -> bool:
        """Write the preface; with ``refuse`` (code, message) also a GOAWAY
        that says why this connection is not served (the driver then
        closes it).  Returns whether the connection is served."""
        self._writer.write_preface()
        self._last_seen = self._connected_at = now
        if refuse is not None:
            self.goaway(*refuse)
            return False
        return True

    def data_to_send(self) -> bytes:
        """Everything written so far, as one bytes object (standalone use)."""
        return self._writer.take()

    def receive_data(self, data: bytes) -> List[Event]:
        """Standalone use: feed bytes read from the client; return the
        events, requests that may run included (:class:`RequestReceived`).
        Answers are the caller's to write (``_writer.write_response``)."""
        self._events = events = []
        try:
            self.data_received(data)
        finally:
            self._events = None
        return events

    def _received(self, frames: List[Any], error: Optional[BaseException]) -> None:
        # Standalone only: the server's connection overrides this.
        events = self._events
        if events is None:
            events = self._events = []
        for f in frames:
            t = f.type
            if t == REQUEST or t == NOTIFY:
                verdict = self.accept_request(f, t == NOTIFY)
                if verdict is True:
                    events.append(RequestReceived(f))
                elif verdict is not False:
                    events.append(verdict)
                    return
            else:
                outcome = self.handle_control(f)
                if outcome is not None:
                    events.append(outcome)
                    if isinstance(outcome, ProtocolViolation):
                        return
        if error is not None:
            events.append(self.violation(error))

    def goaway(self, code: int, message: str) -> None:
        """Write a GOAWAY naming the last call this side accepted: the
        client may send every later one again, elsewhere."""
        self._writer.write_frame(GOAWAY, 0, (int(code), message, self._last_call))

    def start_draining(self) -> bool:
        """Accept no new calls and tell the client (GOAWAY); False if
        already draining."""
        if self._draining:
            return False
        self._draining = True
        self.goaway(_UNAVAILABLE, "server shutting down")
        return True

    # -- frames in ----------------------------------------------------------------

    def handle_control(self, f: Any) -> Optional[Event]:
        """Apply the rules to a frame that is not a REQUEST or NOTIFY: the
        handshake is answered (once; a second is a violation), a PING gets
        its PONG.  Returns :class:`CancelReceived` for a CANCEL (the driver
        cancels that call), a :class:`ProtocolViolation` for a frame a
        client may not send, else None."""
        t = f.type
        if t == CANCEL:
            return CancelReceived(f.request_id)
        if t == PING:
            self._writer.write_frame(PONG, 0, f.value)
        elif t == HANDSHAKE:
            if self._handshaken:
                return self.violation(MalformedFrame("a second HANDSHAKE from the client (it is sent once)"))
            self._handshaken = True
            info = self._handshake_info
            offered = f.value.get("compression") if type(f.value) is dict else None
            chosen = None
            if self._accept and type(offered) is list:
                chosen = compression_codecs.negotiate(offered, self._accept)
            if chosen is not None:
                info = dict(info, compression=chosen)
            self._writer.write_frame(HANDSHAKE, 0, info)
            if chosen is not None:
                # After the answer that says so: answers large enough are
                # compressed (when it pays), requests may come compressed.
                self.compression = chosen
                self._writer.compressor = compression_codecs.compressor(chosen)
                self._writer.compress_threshold = self._compress_threshold
                self._parser.decompressor = compression_codecs.decompressor([chosen], self._parser.max_frame_size)
        elif t == PONG or t == GOAWAY:
            pass  # a GOAWAY from a client: it is closing; its calls still get answers
        else:
            return self.violation(MalformedFrame(f"unexpected {W.MsgType(t).name} frame from a client"))
        return None

    def accept_request(self, f: Any, notify: bool) -> Union[bool, ProtocolViolation]:
        """The rules every request meets before it may run: True if it may;
        False if it must not (it came after our GOAWAY: its UNAVAILABLE
        answer is written); a violation for a request that reuses the id of
        a call in flight."""
        rid = f.request_id
        if not notify and rid in self._calls:
            return self.violation(MalformedFrame(f"request id {rid} reused while its call is in flight"))
        if self._draining:
            # After our GOAWAY: not run, and answered so (the client may
            # resend it elsewhere; it follows GOAWAY's last call).
            if not notify:
                self._writer.write_error(rid, _UNAVAILABLE, "server shutting down")
            return False
        if not notify:
            self._last_call = rid
        return True

    def violation(self, error: BaseException) -> ProtocolViolation:
        """The client broke the protocol: write a GOAWAY that says why (best
        effort); the driver closes the connection."""
        try:
            self.goaway(_INTERNAL, f"protocol error: {error}")
        except Exception:  # noqa: BLE001 - nothing more to say
            self._writer.clear()
        return ProtocolViolation(error)

    # -- timers ---------------------------------------------------------------------

    def next_timer(self) -> Optional[float]:
        """Seconds until :meth:`timer_check` should run again (None: no
        timer is needed)."""
        delays = [
            d
            for d in (
                self._handshake_timeout if not self._handshaken else None,
                self._idle_timeout,
                self._keepalive_interval,
            )
            if d is not None
        ]
        if not delays:
            return None
        return min(delays) / 2 if len(delays) > 1 else min(delays)

    def timer_check(self, now: float, in_flight: int) -> int:
        """What the timers ask for at ``now``: :data:`TIMER_OK` (a keepalive
        PING may have been written: send it), :data:`TIMER_NO_HANDSHAKE` or
        :data:`TIMER_HALF_OPEN` (abort the connection) or :data:`TIMER_IDLE`
        (silent and idle: a GOAWAY is written; send it and close)."""
        if not self._handshaken and self._handshake_timeout is not None:
            if now - self._connected_at >= self._handshake_timeout:
                return TIMER_NO_HANDSHAKE
        action = self._keepalive(now)
        if action == KEEPALIVE_DEAD:
            return TIMER_HALF_OPEN
        if action == KEEPALIVE_PING:
            self._ping_sent = True
            self._ping_at = now
            self._writer.write_frame(PING, 0, 0)
        if self._idle_timeout is not None and not in_flight and now - self._last_seen >= self._idle_timeout:
            self.goaway(_UNAVAILABLE, "idle timeout")
            return TIMER_IDLE
        return TIMER_OK
