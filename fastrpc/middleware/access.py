"""An access log: one line per call, through the standard library's
:mod:`logging`.

Usage::

    server = fastrpc.Server(access_log=True)          # INFO on "fastrpc.access"
    client = fastrpc.Client(address, middleware=[AccessLog()])   # a client's calls too

Each record reads ``Arith.multiply OK 0.042ms peer=127.0.0.1:50412
trace=4bf92f3577b34da6a3ce929d0e0e4736`` and carries the same values as
attributes for structured handlers (``extra``): ``rpc_side``
(``"server"``/``"client"``), ``rpc_method``, ``rpc_code`` (the status code's
name), ``rpc_duration_ms``, ``rpc_peer`` and ``rpc_trace_id`` (None without
a trace).  Calls that fail are logged at the same level as the others (the
status says how they ended); the logger's level and handlers decide what is
kept.  When the logger would drop INFO records the call is not timed at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from ..errors import code_name
from ..transport.address import peer_text
from . import observe

__all__ = ["AccessLog"]

_perf = time.perf_counter


class AccessLog:
    """Middleware that logs every call: method, status, duration, peer and
    trace id (see the module's documentation for the record's format).

    Parameters:
        logger: where to log (default: the ``fastrpc.access`` logger).
        level: the level of the records (default: INFO).
    """

    def __init__(self, logger: Optional[logging.Logger] = None, level: int = logging.INFO) -> None:
        self.logger = logger if logger is not None else logging.getLogger("fastrpc.access")
        self.level = level

    def __call__(self, call: Any, call_next: Callable[[Any], Any]) -> Any:
        if not self.logger.isEnabledFor(self.level):
            return call_next(call)
        return observe(call_next, call, self._done, call, _perf())

    def _done(self, call: Any, start: float, code: int) -> None:
        ms = (_perf() - start) * 1e3
        name = code_name(code)
        peer = peer_text(call.peer)
        trace_id = _trace_id(call)
        logger = self.logger
        # makeRecord + handle is what Logger.log does, less the search of the
        # stack for the caller's file and line (a third of its cost; they
        # would name this module anyway).  The message is formatted only if
        # a handler formats it.
        record = logger.makeRecord(
            logger.name,
            self.level,
            __file__,
            0,
            "%s %s %.3fms peer=%s trace=%s",
            (call.method, name, ms, peer, trace_id or "-"),
            None,
            "access",
            {
                "rpc_side": call.side,
                "rpc_method": call.method,
                "rpc_code": name,
                "rpc_duration_ms": ms,
                "rpc_peer": peer,
                "rpc_trace_id": trace_id,
            },
        )
        logger.handle(record)


def _trace_id(call: Any) -> Optional[str]:
    trace_id = getattr(call, "trace_id", None)  # a server's CallContext
    if trace_id is not None or call.side == "server":
        return trace_id
    # A client's call: the traceparent it sends, if any.
    md = call.metadata_to_send()
    value = md.get("traceparent") if md else None
    if isinstance(value, str) and len(value) >= 35:
        return value[3:35]
    return None
