"""Python stdlib XML-RPC peer (``xmlrpc.server`` / ``xmlrpc.client``) of the fastrpc benchmark.

Server: ``SimpleXMLRPCServer`` + ``ThreadingMixIn`` (one thread per connection), HTTP/1.1
keep-alive so that a client keeps one TCP connection, and TCP_NODELAY on the server's sockets
(the handler writes headers and body separately; with Nagle's algorithm on, every call would
wait for the peer's delayed ACK, about 40 ms on Linux).  ``bytes`` travel as XML-RPC
``<base64>`` and come back as ``bytes`` (``use_builtin_types=True``).

Client: one ``xmlrpc.client.ServerProxy`` per thread.  A proxy has at most one call in flight,
so ``pipelined`` and ``fanin`` use one thread (and connection) per outstanding call.

    python -m benchmarks.peers.xmlrpc_peer server --port 0
    python -m benchmarks.peers.xmlrpc_peer client --address 127.0.0.1:PORT --workload seq --duration 1
"""

from __future__ import annotations

import sys
import threading
import xmlrpc.client
from socketserver import ThreadingMixIn
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from . import _common

SYSTEM = "xmlrpc"


# --------------------------------------------------------------------------- server


class _Handler(SimpleXMLRPCRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection per client proxy
    disable_nagle_algorithm = True
    rpc_paths = ("/", "/RPC2")


class _ThreadingXMLRPCServer(ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: fanin opens hundreds of connections at once


def add(a: int, b: int) -> int:
    return a + b


def echo(data: bytes) -> bytes:
    return data


def serve(args) -> int:
    server = _ThreadingXMLRPCServer((_common.HOST, args.port), requestHandler=_Handler,
                                    logRequests=False, allow_none=True, use_builtin_types=True)
    server.register_function(add, "add")
    server.register_function(echo, "echo")
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="xmlrpc-serve", daemon=True)
    thread.start()
    _common.print_ready(port)
    _common.wait_for_stop()
    server.shutdown()
    server.server_close()
    return 0


# --------------------------------------------------------------------------- client


class _Transport(xmlrpc.client.Transport):
    """Keep-alive transport with a socket timeout, so that no call can hang."""

    def __init__(self, timeout: float):
        super().__init__(use_builtin_types=True)
        self._timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _Conn:
    def __init__(self, address: str):
        self._transport = _Transport(_common.CALL_TIMEOUT)
        self._proxy = xmlrpc.client.ServerProxy(f"http://{address}/RPC2", transport=self._transport,
                                                use_builtin_types=True)
        self.add = self._proxy.add
        self.echo = self._proxy.echo
        if self.add(0, 0) != 0:  # opens the keep-alive connection
            raise RuntimeError("add(0, 0) != 0")

    def close(self) -> None:
        self._proxy("close")()


def client(args) -> int:
    _common.start_watchdog(SYSTEM, args.workload, args.duration)
    try:
        result = _common.run_threaded(SYSTEM, args, lambda: _Conn(args.address))
    except Exception as exc:  # noqa: BLE001 - the contract wants a JSON line, not a traceback
        result = _common.make_result(SYSTEM, args.workload,
                                     error=f"xmlrpc client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()
    args = _common.parse_args(SYSTEM, argv)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
