"""The dispatch table: registered handlers, frozen when the server starts,
with everything a call needs worked out once (index, kind, the inline list
the core calls sync handlers from)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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
    """One entry of the dispatch table, with everything per-call precomputed."""

    __slots__ = ("name", "index", "fn", "kind", "_signature")

    def __init__(self, name: str, index: int, fn: Callable, kind: int) -> None:
        self.name = name
        self.index = index
        self.fn = fn
        self.kind = kind
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

    def __repr__(self) -> str:
        return f"<Method {self.index} {self.name} {('sync', 'async', 'blocking')[self.kind]}>"


class DispatchTable:
    """The frozen method table a server's connections share.

    ``methods[i]`` is the method with index ``i`` (the order of the
    handshake's method list); ``inline[i]`` its handler when it runs inline
    (sync), else None: the core reads that list on every plain call.
    """

    __slots__ = ("methods", "by_name", "inline")

    def __init__(self, handlers: Dict[str, Tuple[Callable, int]]) -> None:
        if len(handlers) > W.MAX_METHOD_INDEX + 1:
            raise ValueError("more than 65536 methods registered")
        self.methods: List[Method] = []
        self.by_name: Dict[str, Method] = {}
        self.inline: List[Any] = []
        for i, (name, (fn, kind)) in enumerate(handlers.items()):
            m = Method(name, i, fn, kind)
            self.methods.append(m)
            self.by_name[name] = m
            self.inline.append(fn if kind == SYNC else None)

    @property
    def names(self) -> List[str]:
        """Method names, in index order."""
        return [m.name for m in self.methods]
