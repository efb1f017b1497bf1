"""Thrift peer of the fastrpc benchmark, using ``thriftpy2`` (binary protocol, buffered transport).

Two pairs, chosen with ``--mode`` (the same value on the server and the client):

``blocking`` (default)
    thriftpy2's ``TThreadedServer`` (a thread per connection) and its blocking ``TClient``, both
    with the Cython-accelerated binary protocol and buffered transport
    (``TCyBinaryProtocolFactory``, ``TCyBufferedTransportFactory``).  This is what
    ``thriftpy2.rpc.make_server`` / ``make_client`` build, except that the server socket is made
    here: ``make_server`` refuses port 0, and the socket is bound once before ``READY`` so that
    the port can be printed.
``asyncio``
    ``thriftpy2.contrib.aio``'s ``TAsyncServer`` and ``make_aio_client``.  thriftpy2 has no
    Cython protocol or transport for asyncio: this pair uses ``TAsyncBinaryProtocolFactory`` and
    ``TAsyncBufferedTransportFactory`` (pure Python; same bytes on the wire).  The server is
    what ``make_aio_server`` builds (which also refuses port 0), started inside the running
    loop.  Both sides run on uvloop when it is installed (``--loop auto``).

The IDL is ``thriftpy2_bench.thrift`` beside this file, loaded at start with ``thriftpy2.load``
(nothing is generated): ``i64 add(1: i64 a, 2: i64 b)`` and ``binary echo(1: binary data)``.

Server-side settings that differ from thriftpy2's defaults:

- no per-connection timeout (``client_timeout=None``; default 3 s).  The blocking server would
  drop a connection idle for 3 s, and the asyncio server wraps the *whole* life of a connection
  in ``wait_for(..., client_timeout)``, so it would close every connection 3 s after it opened,
  busy or not;
- a listen backlog of 1024 (default 128): the non-multiplexed workloads open up to 128
  connections at once, and W5 1,000;
- blocking server only: TCP_NODELAY on accepted connections (thriftpy2 sets it on client
  sockets only).  The buffered transport writes a whole reply at once, but a 64 KiB echo
  is more than one loopback segment and its tail would otherwise wait for an ACK.

A thriftpy2 client has one call in flight: ``TClient._req`` writes a request and then reads the
next reply from the same stream (the sequence id is always 0 and is not checked), and both
servers process one request per connection at a time.  So ``pipelined`` and ``fanin`` use one
thread (blocking) or asyncio task (asyncio) and one connection per outstanding call.
Client timeouts are thriftpy2's own socket timeouts, set to 10 s.

    python -m benchmarks.peers.thriftpy2_peer server --mode blocking --port 0
    python -m benchmarks.peers.thriftpy2_peer client --mode blocking --address 127.0.0.1:PORT --workload seq --duration 1
"""

from __future__ import annotations

import os
import socket
import sys
import threading

from . import _common

SYSTEMS = {"blocking": "thriftpy2", "asyncio": "thriftpy2-aio"}
IDL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "thriftpy2_bench.thrift")
BACKLOG = 1024
TIMEOUT_MS = int(_common.CALL_TIMEOUT * 1000)


def load_idl():
    import thriftpy2

    return thriftpy2.load(IDL, module_name="fastrpcbench_thrift")


class Handler:
    def add(self, a, b):
        return a + b

    def echo(self, data):
        return data


class AsyncHandler:
    async def add(self, a, b):
        return a + b

    async def echo(self, data):
        return data


def _add_args(p) -> None:
    p.add_argument("--mode", default="blocking", choices=tuple(SYSTEMS),
                   help="blocking: threaded server / blocking client (Cython protocol); "
                        "asyncio: thriftpy2.contrib.aio")
    _common.add_loop_arg(p)


# --------------------------------------------------------------------------- server


def _serve_blocking(args) -> int:
    from thriftpy2.protocol import TCyBinaryProtocolFactory
    from thriftpy2.server import TThreadedServer
    from thriftpy2.thrift import TProcessor
    from thriftpy2.transport import TCyBufferedTransportFactory, TServerSocket

    class BoundServerSocket(TServerSocket):
        """Binds once (here, before READY); TThreadedServer.serve's listen() then keeps it."""

        def listen(self):
            if self.sock is None:
                super().listen()

        def accept(self):
            client = super().accept()
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return client

    service = load_idl().Bench
    server_socket = BoundServerSocket(host=_common.HOST, port=args.port, client_timeout=None,
                                      backlog=BACKLOG)
    server_socket.listen()
    port = server_socket.sock.getsockname()[1]
    server = TThreadedServer(TProcessor(service, Handler()), server_socket,
                             iprot_factory=TCyBinaryProtocolFactory(),
                             itrans_factory=TCyBufferedTransportFactory(), daemon=True)
    threading.Thread(target=server.serve, name="thrift-accept", daemon=True).start()
    _common.print_ready(port)
    _common.wait_for_stop()
    # Only flag the accept loop; closing the listening socket under the blocked accept() would
    # make thriftpy2 log a traceback.  Process exit closes every socket (all threads are daemons).
    server.close()
    return 0


async def _serve_asyncio(args) -> None:
    from thriftpy2.contrib.aio.processor import TAsyncProcessor
    from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
    from thriftpy2.contrib.aio.server import TAsyncServer
    from thriftpy2.contrib.aio.socket import TAsyncServerSocket
    from thriftpy2.contrib.aio.transport.buffered import TAsyncBufferedTransportFactory

    service = load_idl().Bench
    server_socket = TAsyncServerSocket(host=_common.HOST, port=args.port, client_timeout=None,
                                       backlog=BACKLOG)
    server = TAsyncServer(TAsyncProcessor(service, AsyncHandler()), server_socket,
                          iprot_factory=TAsyncBinaryProtocolFactory(),
                          itrans_factory=TAsyncBufferedTransportFactory())
    # TAsyncServer.init_server() without its run_until_complete (the loop is already running).
    server_socket.listen()
    server.server = await server_socket.accept(server.handle)
    port = server_socket.raw_sock.getsockname()[1]
    _common.print_ready(port)
    await _common.wait_for_stop_async()
    await server.close()


def serve(args) -> int:
    if args.mode == "blocking":
        return _serve_blocking(args)
    _common.run_async(lambda: _serve_asyncio(args), args.loop)
    return 0


# --------------------------------------------------------------------------- client


def _client_blocking(args, system: str) -> dict:
    from thriftpy2.protocol import TCyBinaryProtocolFactory
    from thriftpy2.rpc import make_client
    from thriftpy2.transport import TCyBufferedTransportFactory

    host, port = _common.split_address(args.address)
    service = load_idl().Bench
    proto, trans = TCyBinaryProtocolFactory(), TCyBufferedTransportFactory()

    def connect():
        c = make_client(service, host, port, proto_factory=proto, trans_factory=trans,
                        timeout=TIMEOUT_MS)
        try:
            if c.add(0, 0) != 0:
                raise RuntimeError("add(0, 0) != 0")
        except BaseException:
            c.close()
            raise
        return c  # TClient: add(a, b), echo(data), close()

    return _common.run_threaded(system, args, connect,
                                extra={"protocol": "TCyBinaryProtocol", "transport": "TCyBufferedTransport"})


class _AioConn:
    def __init__(self, client):
        self._client = client
        self.add = client.add
        self.echo = client.echo

    async def close(self) -> None:
        self._client.close()


async def _client_asyncio(args, system: str, loop_name: str) -> dict:
    from thriftpy2.contrib.aio.protocol.binary import TAsyncBinaryProtocolFactory
    from thriftpy2.contrib.aio.transport.buffered import TAsyncBufferedTransportFactory
    from thriftpy2.rpc import make_aio_client

    host, port = _common.split_address(args.address)
    service = load_idl().Bench

    async def connect() -> _AioConn:
        c = await make_aio_client(service, host, port,
                                  proto_factory=TAsyncBinaryProtocolFactory(),
                                  trans_factory=TAsyncBufferedTransportFactory(),
                                  timeout=TIMEOUT_MS, connect_timeout=TIMEOUT_MS)
        try:
            if await c.add(0, 0) != 0:
                raise RuntimeError("add(0, 0) != 0")
        except BaseException:
            c.close()
            raise
        return _AioConn(c)

    return await _common.run_asyncio(system, args, connect, multiplexed=False,
                                     extra={"loop": loop_name, "protocol": "TAsyncBinaryProtocol",
                                            "transport": "TAsyncBufferedTransport"})


def client(args) -> int:
    system = SYSTEMS[args.mode]
    extra = {"loop": _common.pick_loop(args.loop)} if args.mode == "asyncio" else None
    _common.start_watchdog(system, args.workload, args.duration, extra=extra)
    try:
        if args.mode == "blocking":
            result = _client_blocking(args, system)
        else:
            result, _ = _common.run_async(lambda: _client_asyncio(args, system, extra["loop"]),
                                          extra["loop"])
    except Exception as exc:  # noqa: BLE001 - the contract wants a JSON line, not a traceback
        result = _common.make_result(system, args.workload, extra=extra,
                                     error=f"thriftpy2 client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()
    args = _common.parse_args("thriftpy2", argv, add_server_args=_add_args, add_client_args=_add_args)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
