"""What a handler can know about the call it is handling.

:func:`current_call` returns the :class:`CallContext` of the call the
calling code runs for, in any handler: sync, async or blocking.  It costs a
handler nothing until it asks:

* a sync handler runs inline, on its event loop's thread, while the
  connection handles a read; each loop has a small *slot* (a list) where
  the core notes the frame and the connection while the handler runs (two
  list stores, cleared after the read), and :func:`current_call` builds the
  context from them only when it is called.  The loop identifies the slot:
  inline handlers of one loop never overlap;
* an async handler runs in a task, a blocking one in a pool thread; each
  gets its context in a :mod:`contextvars` variable, set when the task or
  thread job is made (a task already costs far more), so what the handler
  starts from there sees it too (tasks it creates; a thread it starts
  itself needs ``contextvars.copy_context().run``).
"""

from __future__ import annotations

import contextvars
import time
import weakref
from asyncio import _get_running_loop
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["CallContext", "current_call"]

_EMPTY: Mapping[str, Any] = {}


class CallContext:
    """One call, as its handler sees it.

    Attributes:
        method: the method's registered name (``"Arith.multiply"``).
        metadata: the call's metadata map (empty when it has none).
        deadline: the ``time.monotonic()`` time at which the caller gives up,
            or None when the call has no deadline.
        peer: the client's address as the transport reports it (a
            ``(host, port)`` tuple for TCP, a path for a Unix socket).
        request_id: the call's id on its connection (0 for a notification).
        notify: True for a one-way call (no answer is sent).
    """

    __slots__ = ("method", "metadata", "deadline", "peer", "request_id", "notify", "_call")

    def __init__(
        self,
        method: str,
        metadata: Optional[Mapping[str, Any]],
        deadline: Optional[float],
        peer: Any,
        request_id: int,
        notify: bool = False,
        call: Any = None,
    ) -> None:
        self.method = method
        self.metadata: Mapping[str, Any] = metadata if metadata is not None else _EMPTY
        self.deadline = deadline
        self.peer = peer
        self.request_id = request_id
        self.notify = notify
        #: the server's record of an async or blocking call (its ``reason``
        #: says why it was cancelled); None for an inline call
        self._call = call

    def time_remaining(self) -> Optional[float]:
        """Seconds left before the deadline (negative once passed), or None
        when the call has no deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    @property
    def cancelled(self) -> bool:
        """True once the call was cancelled: by the client, by its deadline,
        by the server shutting down or by the connection being lost.  A
        blocking handler's thread cannot be interrupted, so it may poll this
        to stop early; an async handler is cancelled (``CancelledError``)."""
        call = self._call
        return call is not None and call.reason is not None

    def __repr__(self) -> str:
        return (
            f"CallContext(method={self.method!r}, request_id={self.request_id}, peer={self.peer!r}, "
            f"deadline={self.deadline!r}, metadata={dict(self.metadata)!r})"
        )


#: per event loop: [frame, connection, arrival] of the inline call running
_slots: "weakref.WeakKeyDictionary[Any, List[Any]]" = weakref.WeakKeyDictionary()


def inline_slot(loop: Any) -> List[Any]:
    """The slot where the connections of ``loop`` note their inline call
    (``[frame, connection, arrival]``; arrival is the ``time.monotonic()``
    of a call with a deadline)."""
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = [None, None, 0.0]
    return slot


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
    loop = _get_running_loop()
    if loop is not None:
        slot = _slots.get(loop)
        if slot is not None and slot[0] is not None:
            frame, conn, arrival = slot
            return conn.call_context(frame, arrival)
    return _current.get()


def set_current(ctx: Optional[CallContext]) -> "contextvars.Token[Optional[CallContext]]":
    """Make ``ctx`` the current call in this context (the server does this
    for async and blocking calls); returns the token to reset it with."""
    return _current.set(ctx)


def reset_current(token: "contextvars.Token[Optional[CallContext]]") -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)


def deadline_from(frame_deadline_us: Optional[int], arrival: float) -> Optional[float]:
    """The monotonic deadline of a call whose frame allowed
    ``frame_deadline_us`` microseconds when it arrived at ``arrival``."""
    if frame_deadline_us is None:
        return None
    return arrival + frame_deadline_us / 1e6


def metadata_of(frame: Any) -> Optional[Dict[str, Any]]:
    """A frame's metadata map (None if it has none or it did not decode to a
    map)."""
    md = frame.metadata
    return md if type(md) is dict else None
