"""Other protocols on fastrpc's port: msgpack-rpc and JSON-RPC 1.0 (Go's
``net/rpc/jsonrpc``), as sans-IO codecs.

A codec turns the bytes a foreign client sends into calls (frame-like
:class:`~fastrpc.interop.base.Call` objects, the shape the server's
dispatch reads) and the server's answers into that protocol's bytes.  It
touches no socket, no event loop and no dispatch table: what it needs to
know of the server (the method names, a handler's parameter names) it is
given as two functions.  The server's connection setup (``server/sniff.py``)
picks a codec from a connection's first bytes, and
``server/foreign.py`` runs its calls through the server's normal dispatch,
so middleware, metrics, access logs, limits and the error model are the
native protocol's.

Layering: this package sits *below* the server (rank 4 in
``tests/test_layers.py``, beside ``middleware``), and the server imports it.
It builds only on the wire layer (the msgpack codec, the status codes), and
the server needs it at connection setup: a package above the server would
have to register itself into a table there (as ``fastrpc.discovery``
registers the ``etcd`` scheme), and then whether a port spoke msgpack-rpc
would depend on what the application happened to import.  Below, every
server has every protocol, and each codec can be tested alone, bytes in
and bytes out.

Adding a protocol: write a codec with the interface of
:class:`~fastrpc.interop.base.Codec` here, and add a matcher and the codec
to ``PROTOCOLS`` in ``fastrpc/server/sniff.py`` (see there).
"""

from __future__ import annotations

from .base import Call, Codec, ProtocolError, match_prefix
from .jsonrpc import JsonRpcCodec
from .msgpack_rpc import MsgpackRpcCodec

__all__ = ["Call", "Codec", "JsonRpcCodec", "MsgpackRpcCodec", "ProtocolError", "match_prefix"]
