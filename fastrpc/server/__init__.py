"""The fastrpc server: registration, the dispatch table and the server end of
each connection."""

from ._server import Server, blocking

__all__ = ["Server", "blocking"]
