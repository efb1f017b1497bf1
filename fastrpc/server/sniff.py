"""Protocol sniffing: the first bytes of a connection choose the protocol
it speaks on the server's port.

A new connection starts as a :class:`Sniffer`, a small asyncio protocol
that only waits for the client's first bytes.  As soon as they tell which
protocol this is (a few bytes: fastrpc's preface starts ``FRPC``), the
sniffer makes that protocol's connection, hands it the transport
(``transport.set_protocol``) and the bytes read so far, and is gone: from
then on every read goes straight to the chosen connection, so the native
protocol runs exactly as without sniffing (the cost is one small object
and one extra call per connection, none per call).  Bytes that match no
entry go to the native protocol, which answers them as it always has
(GOAWAY: protocol error).  A client that sends nothing (or too little to
tell) for ``handshake_timeout`` seconds is dropped, as a native client
without its handshake is.

The server speaks first in no protocol here, so it waits for the client:
with sniffing on, the native server sends its preface after the client's
(the native client sends its own at once and does not wait).

Adding a protocol (the HTTP/1.1 gateway, say): write its connection (for
an RPC protocol, a codec in ``fastrpc/interop`` run by
:func:`~fastrpc.server.foreign.foreign_connection`) and add an entry to
:data:`PROTOCOLS`: a name (what ``Server(protocols=...)`` lists), a matcher
(``match(head) -> True | False | None``: True when the bytes read so far,
``head``, are this protocol's, False when they cannot be, None while too
few have arrived; :func:`~fastrpc.interop.base.match_prefix` makes one
from prefixes, e.g. ``match_prefix(b"GET ", b"POST ", b"PUT ",
b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ")``) and a factory
``factory(server) -> asyncio protocol``.  Entries are tried in order;
matchers should not overlap (the first wins).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, List, NamedTuple, Optional, Sequence

from ..interop import jsonrpc, msgpack_rpc
from ..interop.base import match_prefix
from ..transport.address import peer_text
from ..wire import constants as W
from . import http
from .foreign import foreign_connection

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server

__all__ = ["NATIVE", "PROTOCOLS", "Protocol", "Sniffer", "protocol_names"]

log = logging.getLogger("fastrpc.server")

#: the native protocol's name; it also takes every connection no entry matches
NATIVE = "fastrpc"
#: bytes held while undecided: past this (no matcher wants more), native
MAX_HEAD = 64


class Protocol(NamedTuple):
    """One entry of the sniffing table."""

    name: str
    match: Callable[[bytes], Optional[bool]]
    factory: Callable[["Server"], asyncio.BaseProtocol]


def _native(server: "Server") -> asyncio.BaseProtocol:
    return server._connection_class(server)


#: what the first bytes choose, tried in order (see the module doc)
PROTOCOLS: List[Protocol] = [
    Protocol(NATIVE, match_prefix(W.MAGIC), _native),
    Protocol("msgpack-rpc", msgpack_rpc.match, lambda server: foreign_connection(server, msgpack_rpc.MsgpackRpcCodec)),
    Protocol("jsonrpc", jsonrpc.match, lambda server: foreign_connection(server, jsonrpc.JsonRpcCodec)),
    # HTTP/1.1 (server/http.py), only when httptools imports (else none: native's answer)
    *(Protocol(*entry) for entry in http.SNIFF),
]


def protocol_names() -> List[str]:
    """The names of every protocol a server can speak."""
    return [p.name for p in PROTOCOLS]


def table_for(names: Sequence[str]) -> List[Protocol]:
    """The entries of :data:`PROTOCOLS` named, in table order (the native
    one always: it is the fallback)."""
    known = set(protocol_names())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown protocols {unknown} (known: {protocol_names()})")
    return [p for p in PROTOCOLS if p.name in names or p.name == NATIVE]


class Sniffer(asyncio.Protocol):
    """A connection until its first bytes choose its protocol (see the
    module doc); ``table``: the entries to try."""

    def __init__(self, server: "Server", table: Sequence[Protocol]) -> None:
        self._server = server
        self._table = table
        self._transport: Optional[asyncio.Transport] = None
        self._head = b""
        self._timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        server = self._server
        limit = server.max_connections
        if limit is not None and len(server._connections) + len(server._sniffing) >= limit:
            # The native connection refuses it (GOAWAY, RESOURCE_EXHAUSTED)
            # at once, as without sniffing.
            self._hand_over(_native)
            return
        server._sniffing.add(self)
        if server.handshake_timeout is not None:
            self._timer = server._loop.call_later(server.handshake_timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        head = self._head + data if self._head else data
        factory = self._choose(head)
        if factory is None:
            self._head = head
            return
        self._hand_over(factory, head)

    def _choose(self, head: bytes) -> Optional[Callable[["Server"], asyncio.BaseProtocol]]:
        undecided = False
        for entry in self._table:
            verdict = entry.match(head)
            if verdict:
                return entry.factory
            if verdict is None:
                undecided = True
        if undecided and len(head) < MAX_HEAD:
            return None
        return _native

    def _hand_over(self, factory: Callable[["Server"], asyncio.BaseProtocol], head: bytes = b"") -> None:
        self._done()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        conn: Any = factory(self._server)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if head and conn.is_open:
            conn.data_received(head)

    def _expired(self) -> None:
        self._timer = None
        log.info("closing %s: nothing to tell its protocol within %ss", peer_text(self._peer()), self._server.handshake_timeout)
        self.abort()

    def _peer(self) -> Any:
        return self._transport.get_extra_info("peername") if self._transport is not None else None

    def _done(self) -> None:
        self._server._sniffing.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> Optional[bool]:
        return None  # closed before it said anything useful

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._done()
        self._transport = None

    def abort(self) -> None:
        """Drop the connection (it has not chosen a protocol)."""
        self._done()
        if self._transport is not None:
            self._transport.abort()
