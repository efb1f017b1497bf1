"""Blocking sockets: what the synchronous client needs below the session.

:func:`open_socket` connects to an :class:`~fastrpc.transport.address.Address`
(trying every address the name resolves to, as a browser would, not just
the first); :func:`send_chunks` is ``sendall`` for a list of buffers, so
large ``bytes`` values leave from where they are, uncopied.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, List, Optional

from .address import Address

__all__ = ["open_socket", "send_chunks"]

#: buffers per sendmsg() call (the usual IOV_MAX)
IOV_MAX = 1024


def open_socket(
    address: Address, timeout: Optional[float], tls: Optional[ssl.SSLContext] = None, server_hostname: Optional[str] = None
) -> socket.socket:
    """A connected blocking socket to ``address`` (TCP_NODELAY on TCP); with
    ``tls``, wrapped in TLS (handshake done, the certificate checked
    against ``server_hostname``).

    A TCP host name is resolved and each of its addresses tried in the
    order ``getaddrinfo`` gives them (IPv6 and IPv4 alike) until one
    accepts, within ``timeout`` each; the last error is raised if none does.
    """
    sock = _connect(address, timeout)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def _connect(address: Address, timeout: Optional[float]) -> socket.socket:
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address.path)
        except BaseException:
            sock.close()
            raise
        return sock
    # create_connection() walks every getaddrinfo() result.
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # pragma: no cover - not a TCP socket after all
        pass
    return sock


def send_chunks(sock: socket.socket, chunks: List[Any], tls: bool = False) -> None:
    """``sendall()`` for a list of buffers: one ``sendmsg`` (writev) per
    round, so large values are sent from where they are.  ``tls``: the
    socket is a TLS one, which has no ``sendmsg``: each buffer is encrypted
    from where it is."""
    if tls:
        for chunk in chunks:
            sock.sendall(chunk)
        return
    views = [memoryview(c) for c in chunks]
    while views:
        sent = sock.sendmsg(views[:IOV_MAX])
        while sent:
            head = views[0]
            if sent >= len(head):
                sent -= len(head)
                del views[0]
            else:
                views[0] = head[sent:]
                sent = 0
