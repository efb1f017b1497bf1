"""What every client shares: ``client.proxy("Arith").multiply(7, 8)``, and
the end of a middleware chain's arithmetic."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Optional

__all__ = ["Proxy", "remaining"]

#: "no timeout given": the client's default applies (``None`` means none)
UNSET: Any = object()


class Proxy:
    """``proxy.method(*args)`` calls ``"<service>.method"`` through any client
    (sync or async: it returns what the client's ``call`` returns)."""

    __slots__ = ("_client", "_service")

    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self._client.call, f"{self._service}.{name}")

    def __repr__(self) -> str:
        return f"<Proxy {self._service} via {self._client!r}>"


def remaining(call: Any) -> Optional[float]:
    """The seconds an :class:`~fastrpc.middleware.OutgoingCall` has left
    (None: no deadline): the time the middleware took counts."""
    deadline = call.deadline
    if deadline is None:
        return None
    return deadline - time.monotonic()
