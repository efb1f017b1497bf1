"""Middleware: code that runs around every call, on either side.

A middleware is a callable ``mw(call, call_next)``.  ``call`` describes the
call (method, args, kwargs, metadata, deadline, peer, and a ``state`` dict
for the middleware's own data: a :class:`~fastrpc.CallContext` on the
server, an :class:`OutgoingCall` on a client); ``call_next(call)`` runs the
rest of the chain (the next middleware, then the handler, or the call
itself on a client) and returns its result.  A middleware may look at or
change ``call.args``, ``call.kwargs`` and ``call.metadata`` before calling
on, look at or change the result after, time the call, raise (the caller
gets the error, with its status code for an :class:`~fastrpc.RpcError`), or
not call on at all and return a result itself (short-circuit).

Sync or async: ``def mw(call, call_next)`` or ``async def mw(call,
call_next)``.  A chain of sync middleware in front of a sync handler stays
inline (no task).  One async middleware, or an async handler, makes the
chain async: the call then runs as a task, ``call_next(call)`` returns an
awaitable, and a sync middleware in that chain returns it as it is (to see
the result, write that middleware ``async``).  In front of a blocking
handler a sync chain runs in the handler's pool thread.

Order: the list order.  ``Server(middleware=[a, b])`` runs ``a``, which
calls ``b``, which calls the handler; the result travels back through ``b``
then ``a``.  The same on clients: the first middleware is the outermost.

Chains are composed once: per method when the server's dispatch table
freezes, per client when it is made.  A server or client without
middleware runs exactly as before.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import RpcError, StatusCode

__all__ = ["Middleware", "OutgoingCall", "code_of", "compose", "is_async_callable", "observe"]

#: ``mw(call, call_next) -> result`` (or an awaitable of it)
Middleware = Callable[[Any, Callable[[Any], Any]], Any]


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` gives a coroutine (an ``async def``, or an
    object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _check(middleware: Sequence[Any]) -> List[Any]:
    out = list(middleware)
    for mw in out:
        if not callable(mw):
            raise TypeError(f"middleware must be callable as mw(call, call_next), not {mw!r}")
    return out


async def _awaited(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def compose(middleware: Sequence[Middleware], endpoint: Callable[[Any], Any], endpoint_is_async: bool) -> Tuple[Callable[[Any], Any], bool]:
    """Chain ``middleware`` in front of ``endpoint`` (``endpoint(call)`` does
    the call); return the first step and whether the chain is async (then
    every step returns an awaitable)."""
    middleware = _check(middleware)
    is_async = endpoint_is_async or any(is_async_callable(mw) for mw in middleware)
    step = endpoint
    if is_async and not endpoint_is_async:
        inner = endpoint

        def step(call: Any, inner: Callable[[Any], Any] = inner) -> Awaitable[Any]:
            return _awaited(inner(call))

    for mw in reversed(middleware):
        step = _link(mw, step, is_async)
    return step, is_async


def _link(mw: Middleware, nxt: Callable[[Any], Any], is_async: bool) -> Callable[[Any], Any]:
    # One step of a chain: mw with the rest of the chain as its call_next.
    if is_async and not is_async_callable(mw):

        def step(call: Any) -> Awaitable[Any]:
            # A sync middleware in an async chain returns call_next's
            # awaitable, passed on as it is, or a value of its own (a
            # short-circuit), which is made awaitable.
            result = mw(call, nxt)
            if hasattr(type(result), "__await__"):
                return result
            return _awaited(result)

        return step

    def step(call: Any) -> Any:  # type: ignore[no-redef]
        return mw(call, nxt)

    return step


_UNKNOWN = int(StatusCode.UNKNOWN)
_CANCELLED = int(StatusCode.CANCELLED)


def code_of(exc: BaseException) -> int:
    """The status code a call that raised ``exc`` ends with: an
    :class:`~fastrpc.RpcError`'s own, CANCELLED for a cancellation,
    UNKNOWN for anything else."""
    if isinstance(exc, RpcError):
        return int(exc.code)
    if type(exc).__name__ == "CancelledError":  # asyncio's or concurrent.futures'
        return _CANCELLED
    return _UNKNOWN


def observe(call_next: Callable[[Any], Any], call: Any, done: Callable[..., None], a: Any, b: Any) -> Any:
    """Run the rest of the chain, ``call_next(call)``, and call ``done(a, b,
    code)`` once the call has ended (``code``: 0, or :func:`code_of` its
    error), whatever form its result takes: a value (a sync chain), an
    awaitable (an async chain: awaited, and ``done`` runs when it is), or
    the future of a sync client's ``go()`` (``done`` runs when it
    resolves).  What a middleware that times or counts calls is made of;
    ``a`` and ``b`` are its own (no closure per call)."""
    try:
        result = call_next(call)
    except BaseException as exc:
        done(a, b, code_of(exc))
        raise
    if hasattr(type(result), "__await__"):
        return _observe_async(result, done, a, b)
    if isinstance(result, concurrent.futures.Future):

        def resolved(fut: concurrent.futures.Future) -> None:
            exc = None if fut.cancelled() else fut.exception()
            done(a, b, _CANCELLED if fut.cancelled() else (0 if exc is None else code_of(exc)))

        result.add_done_callback(resolved)
        return result
    done(a, b, 0)
    return result


async def _observe_async(awaitable: Any, done: Callable[..., None], a: Any, b: Any) -> Any:
    try:
        result = await awaitable
    except BaseException as exc:
        done(a, b, code_of(exc))
        raise
    done(a, b, 0)
    return result


class OutgoingCall:
    """One call, as a client middleware sees it.

    Attributes:
        method: ``"Service.method"``.
        args: the positional arguments (a tuple or list).
        kwargs: the keyword arguments (a dict, or None).
        metadata: the metadata to send (a dict: a middleware may add to it).
        timeout: seconds the caller allows (None: no deadline); a
            middleware may change it.
        deadline: ``time.monotonic()`` at which the call gives up, or None.
        peer: the address the client calls (for a Pool: its first one; the
            endpoint is chosen after the middleware has run).
        kind: ``"call"``, ``"go"`` (the sync client's ``go()``: call_next
            returns a ``concurrent.futures.Future``) or ``"notify"``
            (call_next returns None).
        state: a dict for the middleware's own data, for this call only.
        retry: the :class:`~fastrpc.client.retry.RetryPolicy` the call is
            made with (None: one attempt); a middleware may change it.
        hedge: the :class:`~fastrpc.client.hedge.HedgePolicy` the call is
            made with (None: not hedged); it takes precedence over ``retry``.
        compress: False: this call's request is not compressed (when the
            connection agreed on compression); a single attempt.
    """

    __slots__ = ("method", "args", "kwargs", "_metadata", "timeout", "_start", "peer", "kind", "_state", "retry", "hedge", "compress")

    side = "client"

    def __init__(
        self,
        method: str,
        args: Any,
        kwargs: Optional[Dict[str, Any]],
        metadata: Optional[Dict[str, Any]],
        timeout: Optional[float],
        peer: Any,
        kind: str = "call",
        retry: Any = None,
        hedge: Any = None,
        compress: bool = True,
    ) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self._metadata = metadata
        self.timeout = timeout
        self._start = time.monotonic() if timeout is not None else 0.0
        self.peer = peer
        self.kind = kind
        self._state: Optional[Dict[str, Any]] = None
        self.retry = retry
        self.hedge = hedge
        self.compress = compress

    @property
    def metadata(self) -> Dict[str, Any]:
        md = self._metadata
        if md is None:
            md = self._metadata = {}
        return md

    @metadata.setter
    def metadata(self, value: Optional[Dict[str, Any]]) -> None:
        self._metadata = value

    def metadata_to_send(self) -> Optional[Dict[str, Any]]:
        """The metadata map to put on the wire (None: none, the plain call)."""
        return self._metadata or None

    @property
    def deadline(self) -> Optional[float]:
        return None if self.timeout is None else self._start + self.timeout

    @property
    def state(self) -> Dict[str, Any]:
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    def __repr__(self) -> str:
        return f"OutgoingCall({self.kind} {self.method!r}, args={self.args!r}, kwargs={self.kwargs!r}, metadata={self._metadata!r}, timeout={self.timeout!r})"
