"""The services every server carries (unless turned off): health and
reflection, callable from any client.

* ``fastrpc.Health.check(service="")`` answers ``"SERVING"``,
  ``"NOT_SERVING"`` or ``"SERVICE_UNKNOWN"`` (gRPC's health protocol).
  ``""`` is the server as a whole: SERVING while it runs.  A registered
  service is SERVING unless the application says otherwise
  (``server.health.set("Arith", "NOT_SERVING")``).  From the moment the
  server starts draining, every status is NOT_SERVING for good.
* ``fastrpc.Health.watch(service="", last=None)`` returns the status as
  soon as it differs from ``last`` (at once when ``last`` is not given):
  a long call, which a client repeats with the status it last saw (with a
  timeout, to bound each wait).
* ``fastrpc.Reflection.methods()`` lists the methods: name, how it runs,
  signature and the first line of its docstring.

They are registered after the application's methods, so the indices of
those do not change.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Dict, List, Optional

__all__ = ["Health", "NOT_SERVING", "SERVICE_UNKNOWN", "SERVING", "reflect"]

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
SERVICE_UNKNOWN = "SERVICE_UNKNOWN"
_STATUSES = (SERVING, NOT_SERVING)


class Health:
    """The health of a server and of its services.

    ``server.health.set(service, status)`` sets a service's status (from
    any thread); ``check`` and ``watch`` are what ``fastrpc.Health.*``
    calls run.
    """

    def __init__(self) -> None:
        self._status: Dict[str, str] = {"": SERVING}
        #: set (and replaced) at each change: what watch() waits on
        self._event: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._lock = threading.Lock()
        self._final = False

    def known(self, services: List[str]) -> None:
        """The services a server has (SERVING unless set otherwise)."""
        for name in services:
            self._status.setdefault(name, SERVING)

    def set(self, service: str, status: str) -> None:
        """Set ``service``'s status (``""``: the server as a whole) to
        ``"SERVING"`` or ``"NOT_SERVING"``; wakes every ``watch``."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, not {status!r}")
        with self._lock:
            if self._final or self._status.get(service) == status:
                return  # after shutdown began nothing is SERVING again
            self._status[service] = status
            self._changed()

    def shutdown(self) -> None:
        """The server is draining: every status is NOT_SERVING from now on."""
        with self._lock:
            self._final = True
            for name in self._status:
                self._status[name] = NOT_SERVING
            self._changed()

    def _changed(self) -> None:
        # Statuses are written before the event is swapped out: a watcher
        # that took the old event is woken, one that finds none reads the
        # new status.
        event, self._event = self._event, None
        loop = self._loop
        if event is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def status(self, service: str = "") -> str:
        """``service``'s status now."""
        return self._status.get(service, SERVICE_UNKNOWN)

    def check(self, service: str = "") -> str:
        """Health.check: the status of ``service`` (``""``: the server)."""
        return self.status(service)

    async def watch(self, service: str = "", last: Optional[str] = None) -> str:
        """Health.watch: ``service``'s status once it differs from ``last``."""
        loop = asyncio.get_running_loop()
        while True:
            # The event first, the status after: a change in between still
            # sets the event this waits on.
            event = self._event
            if event is None or self._loop is not loop:
                with self._lock:
                    event = self._event
                    if event is None or self._loop is not loop:
                        self._loop = loop
                        event = self._event = asyncio.Event()
            status = self.status(service)
            if status != last:
                return status
            await event.wait()


def reflect(table: Any, idempotent: Any = ()) -> List[Dict[str, Any]]:
    """The methods of a dispatch table, as plain maps: ``name``, ``kind``
    (``sync``, ``async`` or ``blocking``), ``signature``, ``doc`` (the
    docstring's first line) and ``idempotent`` (whether its name is in
    ``idempotent``)."""
    out = []
    for m in table.methods:
        try:
            signature = str(inspect.signature(m.fn))
        except (TypeError, ValueError):
            signature = "(...)"
        doc = inspect.getdoc(m.fn) or ""
        out.append(
            {
                "name": m.name,
                "kind": ("sync", "async", "blocking")[m.handler_kind],
                "signature": signature,
                "doc": doc.strip().splitlines()[0] if doc.strip() else "",
                "idempotent": m.name in idempotent,
            }
        )
    return out
