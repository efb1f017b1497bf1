"""The fastrpc clients.

* :class:`AsyncClient` (and :func:`connect`): asyncio, many calls in flight
  on one connection, reconnection with backoff; a client over one
  :class:`Endpoint`.
* :class:`Client`: the drop-in synchronous client over a blocking socket,
  safe to share between threads.
* :class:`Pool`: a client over several endpoints, calls spread by a
  :class:`Picker`.

All three take the same :class:`ClientOptions`.  Each connection is a
session (``fastrpc/core/session.py``) driven by ``_aio.py`` (asyncio) or
``_sync.py`` (blocking socket).
"""

from .async_client import AsyncClient, connect
from .endpoint import Endpoint, EndpointState, Picker, RoundRobinPicker
from .options import Backoff, ClientOptions
from .hedge import HedgePolicy
from .pool import Pool
from .retry import PUSHBACK, RetryBudget, RetryPolicy
from .sync_client import Client

__all__ = [
    "AsyncClient",
    "Backoff",
    "Client",
    "ClientOptions",
    "Endpoint",
    "EndpointState",
    "HedgePolicy",
    "Picker",
    "PUSHBACK",
    "Pool",
    "RetryBudget",
    "RetryPolicy",
    "RoundRobinPicker",
    "connect",
]
