"""Address parsing shared by servers and clients.

Accepted forms: ``tcp://host:port``, ``host:port``, ``[::1]:port``,
``tcp://[::1]:port``, ``tls://host:port`` (TCP with TLS), ``unix:/path/to/socket``
and ``unix:///path``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Tuple, Union


class Address(NamedTuple):
    """A parsed endpoint: ``kind`` is ``"tcp"``, ``"tls"`` (TCP with TLS) or
    ``"unix"``."""

    kind: str
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}"


def parse_address(address: Union[str, Tuple[str, int], Address]) -> Address:
    """Parse ``address`` into an :class:`Address`; raise ValueError if bad."""
    if isinstance(address, Address):
        return address
    if isinstance(address, tuple):
        host, port = address
        return Address("tcp", str(host), int(port), "")
    if not isinstance(address, str) or not address:
        raise ValueError(f"invalid address {address!r}")
    if address.startswith("unix:"):
        path = address[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"invalid unix socket address {address!r}")
        return Address("unix", "", 0, path)
    kind = "tls" if address.startswith("tls://") else "tcp"
    rest = address[6:] if address.startswith(("tcp://", "tls://")) else address
    if "://" in rest:
        raise ValueError(f"unsupported address scheme in {address!r}")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid address {address!r}: expected [host]:port")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise ValueError(f"invalid address {address!r}: expected host:port")
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError(f"invalid port in address {address!r}") from None
    if not 0 <= port_n <= 65535:
        raise ValueError(f"port out of range in address {address!r}")
    return Address(kind, host or "127.0.0.1", port_n, "")


def peer_text(peer: Any) -> str:
    """A peer as people read it: ``host:port`` (``[v6]:port``) for a TCP
    peer name, the URL of an :class:`Address`, a Unix socket's path, ``-``
    when unknown (a Unix socket's client has no name)."""
    if isinstance(peer, Address):
        return str(peer)
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    if peer is None or peer == "" or peer == b"":
        return "-"
    return peer.decode(errors="replace") if isinstance(peer, bytes) else str(peer)
