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
import time
import weakref
from asyncio import _get_running_loop
from typing import Any, Dict, List, Optional

from ..wire import constants as W

__all__ = ["CallContext", "current_call"]

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

    __slots__ = ("_frame", "_conn", "_arrival", "_call", "_args", "_kwargs", "_metadata", "_state")

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
        if slot is not None:
            running = slot[0]
            if running is not None:
                if type(running) is CallContext:
                    return running
                return CallContext(running, slot[1], slot[2])
    return _current.get()


def set_current(ctx: Optional[CallContext]) -> "contextvars.Token[Optional[CallContext]]":
    """Make ``ctx`` the current call in this context (the server does this
    for async and blocking calls); returns the token to reset it with."""
    return _current.set(ctx)


def reset_current(token: "contextvars.Token[Optional[CallContext]]") -> None:
    """Undo :func:`set_current`."""
    _current.reset(token)
