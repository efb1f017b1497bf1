"""The fastrpc server: registration and the dispatch table (``dispatch.py``),
listening and shutdown (``server.py``), and the server end of each
connection (``connection.py``, the asyncio driver of a server session)."""

from .dispatch import blocking, idempotent
from .server import Server

__all__ = ["Server", "blocking", "idempotent"]
