"""The dispatch table: registered handlers, frozen when the server starts,
with everything a call needs worked out once (index, kind, the inline list
the core calls sync handlers from)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..core.context import CallContext
from ..middleware import compose
from ..wire import constants as W

__all__ = ["ASYNC", "BLOCKING", "SYNC", "DispatchTable", "Method", "blocking", "kind_of"]

#: how a handler runs
SYNC = 0  # inline, on the event loop, as its request is read
ASYNC = 1  # in a task
BLOCKING = 2  # in the thread pool


def blocking(fn: Callable) -> Callable:
    """Mark a sync handler as blocking: the server runs it in a thread pool
    instead of inline on the event loop.

    Usage::

        class Files:
            @fastrpc.blocking
            def read(self, path): ...
    """
    target = getattr(fn, "__func__", fn)
    target.__fastrpc_blocking__ = True
    return fn


def idempotent(fn: Callable) -> Callable:
    """Mark a handler as idempotent: running it twice has the effect of
    running it once, so a client's retry policy may send it again after a
    failure that left unknown whether it ran (a connection lost mid-call,
    an UNAVAILABLE from the handler).  The server announces its idempotent
    methods at handshake.

    Usage::

        class Users:
            @fastrpc.idempotent
            def get(self, user_id): ...
    """
    target = getattr(fn, "__func__", fn)
    target.__fastrpc_idempotent__ = True
    return fn


def is_idempotent(fn: Callable, flag: Optional[bool]) -> bool:
    """``flag`` if given, else whether ``fn`` was marked :func:`idempotent`."""
    if flag is not None:
        return bool(flag)
    return bool(getattr(getattr(fn, "__func__", fn), "__fastrpc_idempotent__", False))


def kind_of(fn: Callable, blocking_flag: Optional[bool]) -> int:
    """How ``fn`` runs: :data:`ASYNC` for a coroutine function,
    :data:`BLOCKING` when marked (or ``blocking_flag``), else :data:`SYNC`."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        if blocking_flag:
            raise ValueError(f"{fn!r} is a coroutine function; it cannot be blocking")
        return ASYNC
    if blocking_flag or getattr(getattr(fn, "__func__", fn), "__fastrpc_blocking__", False):
        return BLOCKING
    return SYNC


class Method:
    """One entry of the dispatch table, with everything per-call precomputed.

    ``fn`` is the handler and ``handler_kind`` how it runs by itself.  With
    middleware, ``chain(call)`` runs the middleware and then the handler,
    and ``kind`` says how the whole runs: ``SYNC`` (inline: sync middleware
    in front of a sync handler), ``BLOCKING`` (sync middleware and a
    blocking handler, together in the pool) or ``ASYNC`` (any async part:
    a task).  Without middleware ``chain`` is None and ``kind`` is
    ``handler_kind``.
    """

    __slots__ = ("name", "index", "fn", "kind", "handler_kind", "chain", "_signature")

    def __init__(self, name: str, index: int, fn: Callable, kind: int) -> None:
        self.name = name
        self.index = index
        self.fn = fn
        self.kind = kind
        self.handler_kind = kind
        self.chain: Optional[Callable[[Any], Any]] = None
        self._signature: Any = None

    def arguments_fit(self, args: Sequence[Any], kwargs: Optional[dict]) -> bool:
        """Whether ``args``/``kwargs`` bind to the handler (error path only)."""
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.fn)
            except (TypeError, ValueError):
                self._signature = False
        if self._signature is False:
            return True
        try:
            self._signature.bind(*args, **(kwargs or {}))
        except TypeError:
            return False
        return True

    def with_middleware(self, middleware: Sequence[Any]) -> None:
        """Compose ``middleware`` in front of the handler (once, when the
        table freezes)."""
        fn = self.fn
        kind = self.handler_kind

        def call_handler(call: Any) -> Any:
            # The chain's callers set _args/_kwargs (the properties' store)
            # before it starts; middleware changes go through the setters.
            kwargs = call._kwargs
            return fn(*call._args, **kwargs) if kwargs else fn(*call._args)

        if kind == BLOCKING:
            chain, is_async = compose(middleware, call_handler, False)
            if is_async:
                # An async middleware awaits the handler, which still runs
                # in the pool (the connection knows which).
                def in_pool(call: Any) -> Any:
                    return call._conn.run_in_pool(call_handler, call)

                chain, is_async = compose(middleware, in_pool, True)
        else:
            chain, is_async = compose(middleware, call_handler, kind == ASYNC)
        self.chain = chain
        self.kind = ASYNC if is_async else kind

    def __repr__(self) -> str:
        return f"<Method {self.index} {self.name} {('sync', 'async', 'blocking')[self.kind]}>"


def _inline_runner(chain: Callable[[Any], Any], slot: List[Any]) -> Callable[..., Any]:
    # What the core calls, as it calls a plain sync handler (fn(*args)),
    # for a method with sync middleware: the call's context, built from
    # what the core noted in the slot, goes through the chain.  The slot
    # holds that context meanwhile, so current_call() in the handler is the
    # object the middleware saw (its state included).
    def run(*args: Any) -> Any:
        frame = slot[0]
        call = CallContext(frame, slot[1], slot[2])
        call._args = frame.value  # the core runs only positional calls inline
        call._kwargs = None
        slot[0] = call
        try:
            return chain(call)
        finally:
            slot[0] = frame

    return run


class DispatchTable:
    """The frozen method table a server's connections share.

    ``methods[i]`` is the method with index ``i`` (the order of the
    handshake's method list); ``inline[i]`` what the core calls for it when
    it runs inline (the sync handler itself, or the runner of its sync
    middleware chain), else None: the core reads that list on every plain
    call.
    """

    __slots__ = ("methods", "by_name", "inline")

    def __init__(
        self,
        handlers: Dict[str, Tuple[Callable, int]],
        middleware: Sequence[Any] = (),
        slot: Optional[List[Any]] = None,
    ) -> None:
        if len(handlers) > W.MAX_METHOD_INDEX + 1:
            raise ValueError("more than 65536 methods registered")
        self.methods: List[Method] = []
        self.by_name: Dict[str, Method] = {}
        self.inline: List[Any] = []
        for i, (name, (fn, kind)) in enumerate(handlers.items()):
            m = Method(name, i, fn, kind)
            if middleware:
                m.with_middleware(middleware)
            self.methods.append(m)
            self.by_name[name] = m
            if m.kind != SYNC:
                self.inline.append(None)
            elif m.chain is None:
                self.inline.append(fn)
            else:
                if slot is None:
                    raise ValueError("a table with middleware needs its loop's slot")
                self.inline.append(_inline_runner(m.chain, slot))

    @property
    def names(self) -> List[str]:
        """Method names, in index order."""
        return [m.name for m in self.methods]
