"""The fastrpc clients: :class:`AsyncClient`, the blocking :class:`Client`,
and :class:`Pool`."""

from ._client import AsyncClient, Backoff, Client, connect
from .pool import Pool

__all__ = ["AsyncClient", "Backoff", "Client", "Pool", "connect"]
