"""What a handler (or a middleware) can know about the call it is handling.

:func:`current_call` returns the :class:`CallContext` of the call the
calling code runs for, in any handler: sync, async or blocking.  It costs a
handler nothing until it asks:

* a sync handler runs inline, on its event loop's thread, while the
  connection handles a read; each loop has a small *slot* (a list) where
  the core notes the frame and the connection while the handler runs (two
  list stores, cleared after the read), and :func:`current_call` builds the
  context from them only when it is called.  The loop identifies the slot:
  inline handlers of one loop never overlap.  When middleware runs, the
  slot holds the very context the middleware saw, so what a middleware puts
  in ``call.state`` the handler reads from ``current_call().state``;
* an async handler runs in a task, a blocking one in a pool thread; each
  gets its context in a :mod:`contextvars` variable, set when the task or
  thread job is made (a task already costs far more), so what the handler
  starts from there sees it too (tasks it creates; a thread it starts
  itself needs ``contextvars.copy_context().run``).

A context is built from the call's frame and connection, and reads each
field from them only when asked (a middleware that looks at one field pays
for that one).
"""

from __future__ import annotations

import contextvars
import random
import time
import weakref
from asyncio import _get_running_loop
from typing import Any, Dict, List, Optional

from ..wire import constants as W

__all__ = ["CallContext", "TraceParent", "current_call", "detached"]

_NOTIFY = int(W.MsgType.NOTIFY)
_KWARGS = W.FLAG_KWARGS
_UNSET: Any = object()


class CallContext:
    """One call, as the server side sees it (its handler and its
    middleware).

    Attributes:
        method: the method's registered name (``"Arith.multiply"``).
        args: the positional arguments (a list; a middleware may replace
            it before calling on).
        kwargs: the keyword arguments (a dict, or None).
        metadata: the call's metadata map (a dict, empty when the call has
            none; a middleware may change it, and the handler sees that).
        deadline: the ``time.monotonic()`` time at which the caller gives up,
            or None when the call has no deadline.
        peer: the client's address as the transport reports it (a
            ``(host, port)`` tuple for TCP, a path for a Unix socket).
        request_id: the call's id on its connection (0 for a notification).
        notify: True for a one-way call (no answer is sent).
        state: a dict for middleware and handler to keep their own data in,
            for this call only.
    """

    __slots__ = ("_frame", "_conn", "_arrival", "_call", "_args", "_kwargs", "_metadata", "_state", "_trace", "_span_id")

    #: which end of the call this is (a client middleware gets "client")
    side = "server"

    def __init__(self, frame: Any, conn: Any, arrival: float = 0.0, call: Any = None) -> None:
        self._frame = frame
        self._conn = conn
        #: ``time.monotonic()`` of the call's arrival (read only when the
        #: call has a deadline)
        self._arrival = arrival
        #: the server's record of an async or blocking call (its ``reason``
        #: says why it was cancelled); None for an inline call
        self._call = call
        self._args: Any = _UNSET
        self._kwargs: Any = _UNSET
        self._metadata: Optional[Dict[str, Any]] = None
        self._state: Optional[Dict[str, Any]] = None
        self._trace: Any = _UNSET
        self._span_id: Optional[str] = None

    @property
    def method(self) -> str:
        return self._conn.method_of(self._frame).name

    @property
    def args(self) -> List[Any]:
        if self._args is _UNSET:
            self._split()
        return self._args

    @args.setter
    def args(self, value: Any) -> None:
        if self._kwargs is _UNSET:
            self._split()
        self._args = value

    @property
    def kwargs(self) -> Optional[Dict[str, Any]]:
        if self._kwargs is _UNSET:
            self._split()
        return self._kwargs

    @kwargs.setter
    def kwargs(self, value: Optional[Dict[str, Any]]) -> None:
        if self._args is _UNSET:
            self._split()
        self._kwargs = value

    def _split(self) -> None:
        value = self._frame.value
        if self._frame.flags & _KWARGS and type(value) is list and len(value) == 2:
            self._args, self._kwargs = value[0], value[1]
        else:
            self._args, self._kwargs = value, None

    @property
    def metadata(self) -> Dict[str, Any]:
        md = self._metadata
        if md is None:
            md = self._frame.metadata
            if type(md) is not dict:
                md = {}
            self._metadata = md
        return md

    @metadata.setter
    def metadata(self, value: Dict[str, Any]) -> None:
        self._metadata = value

    @property
    def deadline(self) -> Optional[float]:
        d = self._frame.deadline
        return None if d is None else self._arrival + d / 1e6

    @property
    def peer(self) -> Any:
        return self._conn._peername

    @property
    def peer_certificate(self) -> Optional[Dict[str, Any]]:
        """The client's TLS certificate, as :meth:`ssl.SSLSocket.getpeercert`
        gives it (``subject``, ``issuer``, ``subjectAltName``, ...), when it
        sent one (mutual TLS); None otherwise."""
        return getattr(self._conn, "_peercert", None)

    @property
    def request_id(self) -> int:
        return self._frame.request_id

    @property
    def notify(self) -> bool:
        return self._frame.type == _NOTIFY

    @property
    def state(self) -> Dict[str, Any]:
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    def time_remaining(self) -> Optional[float]:
        """Seconds left before the deadline (negative once passed), or None
        when the call has no deadline."""
        deadline = self.deadline
        if deadline is None:
            return None
        return deadline - time.monotonic()

    # -- trace context (W3C Trace Context, carried in the metadata) ----------

    @property
    def trace(self) -> Optional["TraceParent"]:
        """The caller's ``traceparent`` (a :class:`TraceParent`), or None
        when the call carries none (or an invalid one)."""
        trace = self._trace
        if trace is _UNSET:
            trace = self._trace = TraceParent.parse(self.metadata.get("traceparent"))
        return trace

    @property
    def trace_id(self) -> Optional[str]:
        """The call's trace id (32 hex digits), or None."""
        trace = self.trace
        return None if trace is None else trace.trace_id

    @property
    def span_id(self) -> Optional[str]:
        """The id of this call's span on the server (16 hex digits; the
        parent of the calls its handler makes), or None without a trace.
        With OpenTelemetry (``fastrpc[otel]``) it is the server span's id."""
        if self._span_id is None and self.trace is not None:
            self._span_id = new_span_id()
        return self._span_id

    def adopt_span(self, trace_id: str, span_id: str, flags: str = "01", parent_id: Optional[str] = None) -> None:
        """Make a tracing library's server span this call's span (what the
        OpenTelemetry middleware does): its trace and span ids are the ones
        calls made by the handler carry as their parent."""
        self._trace = TraceParent(trace_id, parent_id or span_id, flags)
        self._span_id = span_id

    def child_traceparent(self) -> Optional[str]:
        """The ``traceparent`` for a call this call's handler makes: the same
        trace, this call's span as the parent."""
        trace = self.trace
        if trace is None:
            return None
        return f"00-{trace.trace_id}-{self.span_id}-{trace.flags}"

    @property
    def cancelled(self) -> bool:
        """True once the call was cancelled: by the client, by its deadline,
        by the server shutting down or by the connection being lost.  A
        blocking handler's thread cannot be interrupted, so it may poll this
        to stop early; an async handler is cancelled (``CancelledError``).
        An inline call cannot be cancelled while it runs."""
        call = self._call
        return call is not None and call.reason is not None

    def __repr__(self) -> str:
        return (
            f"CallContext(method={self.method!r}, request_id={self.request_id}, peer={self.peer!r}, "
            f"deadline={self.deadline!r}, metadata={dict(self.metadata)!r})"
        )


class TraceParent:
    """A parsed W3C ``traceparent`` (version 00): ``trace_id`` (32 hex
    digits), ``parent_id`` (16), ``flags`` (2)."""

    __slots__ = ("trace_id", "parent_id", "flags")

    def __init__(self, trace_id: str, parent_id: str, flags: str) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags

    @classmethod
    def parse(cls, value: Any) -> Optional["TraceParent"]:
        """The header's fields, or None for anything that is not a valid
        version-00 ``traceparent`` (the W3C rule: an invalid one is ignored,
        as if absent)."""
        if type(value) is not str or len(value) != 55:
            return None
        version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:]
        if value[2] != "-" or value[35] != "-" or value[52] != "-" or version != "00":
            return None
        if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
            return None
        if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
            return None
        return cls(trace_id, parent_id, flags)

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"

    def __repr__(self) -> str:
        return f"TraceParent({str(self)!r})"


_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _is_hex(text: str) -> bool:
    return _HEX.issuperset(text)


def new_span_id() -> str:
    """16 random hex digits, never all zero."""
    while True:
        span = f"{random.getrandbits(64):016x}"
        if span != _ZERO_SPAN:
            return span


def new_trace_id() -> str:
    """32 random hex digits, never all zero."""
    while True:
        trace = f"{random.getrandbits(128):032x}"
        if trace != _ZERO_TRACE:
            return trace


#: per event loop: [frame or context, connection, arrival] of the inline call running
_slots: "weakref.WeakKeyDictionary[Any, List[Any]]" = weakref.WeakKeyDictionary()


def inline_slot(loop: Any) -> List[Any]:
    """The slot where the connections of ``loop`` note their inline call
    (``[frame, connection, arrival]``; a :class:`CallContext` in place of
    the frame while middleware runs; arrival is the ``time.monotonic()`` of
    a call with a deadline)."""
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = [None, None, 0.0]
    return slot


#: servers running in this process ([count]): with none, no call is being
#: handled anywhere here, so a client need not look for one to inherit
#: from (what a client-only process saves on every call)
serving: List[int] = [0]


def server_started() -> None:
    """A server of this process started listening."""
    serving[0] += 1


def server_stopped() -> None:
    """A server of this process shut down."""
    serving[0] = max(0, serving[0] - 1)


#: the context of the async or blocking call the current task or thread runs
_current: "contextvars.ContextVar[Optional[CallContext]]" = contextvars.ContextVar("fastrpc_call", default=None)


def current_call() -> Optional[CallContext]:
    """The :class:`CallContext` of the call being handled, or None outside
    a handler.

    Usage::

        class Arith:
            def multiply(self, a, b):
                call = fastrpc.current_call()
                log.info("%s from %s, %s s left", call.method, call.peer, call.time_remaining())
                return a * b
    """
    ctx = _current.get()
    if ctx is not None:
        return None if ctx is DETACHED else ctx
    loop = _get_running_loop()
    if loop is not None:
        return _inline(_slots.get(loop))
    return None


def _inline(slot: Optional[List[Any]]) -> Optional[CallContext]:
    # The inline call noted in a loop's slot, as a context; the context is
    # kept there for the rest of the call, so that a handler that asks twice
    # gets the same object (its state, its span id).
    if slot is None:
        return None
    running = slot[0]
    if running is None or type(running) is CallContext:
        return running
    ctx = CallContext(running, slot[1], slot[2])
    slot[0] = ctx
    return ctx


class _Detached:
    """The current call of code that asked not to inherit one (see
    :func:`detached`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DETACHED"


DETACHED: Any = _Detached()


class detached:
    """A block of code (in a handler) whose calls inherit nothing from the
    call being handled: no deadline, no trace context, no cancellation.
    The way out of inheritance for one block (Go's
    ``context.Background()``); a client made with ``inherit=False`` never
    inherits.

    Usage::

        with fastrpc.detached():
            await audit_log.call("Audit.record", entry)   # may outlive the call
    """

    __slots__ = ("_token",)

    def __enter__(self) -> "detached":
        self._token = _current.set(DETACHED)
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self._token)


def parent_call(slot: Optional[List[Any]] = _UNSET) -> Optional[CallContext]:
    """The call being handled where a client is called (what a call made
    now inherits from), or None: outside a handler, or detached.  ``slot``:
    the caller's loop's slot when it knows it (else it is looked up)."""
    ctx = _current.get()
    if ctx is not None:
        return None if ctx is DETACHED else ctx
    if slot is _UNSET:
        loop = _get_running_loop()
        slot = _slots.get(loop) if loop is not None else None
    return _inline(slot)


def inherit(parent: CallContext, timeout: Optional[float], metadata: Optional[Dict[str, Any]]) -> "tuple[Optional[float], Optional[Dict[str, Any]]]":
    """What a call made while ``parent`` is handled carries: at most the
    time ``parent`` has left, and its trace context (the same trace, the
    handler's span as parent) unless the caller set its own.  Returns the
    call's (timeout, metadata)."""
    left = parent.time_remaining()
    if left is not None and (timeout is None or left < timeout):
        timeout = left if left > 0 else -1.0  # spent: the call fails before it is sent
    traceparent = parent.child_traceparent()
    if traceparent is not None and (metadata is None or "traceparent" not in metadata):
        metadata = dict(metadata) if metadata else {}
        metadata["traceparent"] = traceparent
        state = parent.metadata.get("tracestate")
        if type(state) is str and "tracestate" not in metadata:
            metadata["tracestate"] = state
    return timeout, metadata


def set_current(ctx: Optional[CallContext]) -> "contextvars.Token[Optional[CallContext]]":
    """Make ``ctx`` the current call in this context (the server does this
    for async and blocking calls); returns the token to reset it with."""
    return _current.set(ctx)


def reset_current(token: "contextvars.Token[Optional[CallContext]]") -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)
