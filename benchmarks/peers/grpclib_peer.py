"""gRPC peer of the fastrpc benchmark on ``grpclib`` (pure-asyncio gRPC: h2 + protobuf, no grpc-core).

The service is the same proto as ``grpc_peer.py`` (``fastrpcbench.Bench/Add``, ``/Echo``), kept as
a string below and compiled at start with ``grpc_tools.protoc`` and grpclib's protoc plugin
(``grpclib.plugin.main``, run by a small executable shell wrapper written beside the proto, so
that it does not depend on the ``protoc-gen-grpclib_python`` script being on ``PATH``) into a temporary directory, which is
deleted once the generated ``*_pb2`` and ``*_grpc`` modules are imported.

Server: ``grpclib.server.Server`` with a ``BenchBase`` implementation, on a socket bound here
(listen backlog 1024).  Client: ``grpclib.client.Channel`` and the generated ``BenchStub``; one
channel is one HTTP/2 connection (opened by its first call) and carries many concurrent streams,
so ``pipelined`` has 64 calls in flight on one channel and ``fanin`` C channels with N calls
each.  grpclib has no message size cap (only HTTP/2 flow-control windows, 4 MiB by default), so
nothing is lifted.  Both sides run on uvloop when it is installed (``--loop auto``).

    python -m benchmarks.peers.grpclib_peer server --port 0
    python -m benchmarks.peers.grpclib_peer client --address 127.0.0.1:PORT --workload seq --duration 1
"""

from __future__ import annotations

import importlib
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from . import _common

SYSTEM = "grpclib"
PROTO_NAME = "fastrpcbench_grpclib"
PROTO = """
syntax = "proto3";

package fastrpcbench;

service Bench {
  rpc Add (AddRequest) returns (AddReply);
  rpc Echo (EchoMessage) returns (EchoMessage);
}

message AddRequest {
  int64 a = 1;
  int64 b = 2;
}

message AddReply {
  int64 result = 1;
}

message EchoMessage {
  bytes data = 1;
}
"""
BACKLOG = 1024


def load_stubs():
    """Compile PROTO with protoc + grpclib's plugin into a temp dir; return (pb2, grpc) modules."""
    from grpc_tools import protoc

    tmp = tempfile.mkdtemp(prefix="fastrpcbench-grpclib-")
    try:
        proto_path = Path(tmp) / f"{PROTO_NAME}.proto"
        proto_path.write_text(PROTO)
        plugin = Path(tmp) / "protoc-gen-grpclib_python"
        # grpclib.plugin.main has no __main__ guard: call its main() explicitly.
        runner = "import sys; from grpclib.plugin.main import main; sys.exit(main())"
        plugin.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(runner)}\n")
        plugin.chmod(0o755)
        rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", f"--plugin=protoc-gen-grpclib_python={plugin}",
                          f"--python_out={tmp}", f"--grpclib_python_out={tmp}", str(proto_path)])
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc (with grpclib's plugin) failed with exit code {rc}")
        sys.path.insert(0, tmp)
        try:
            pb2 = importlib.import_module(f"{PROTO_NAME}_pb2")
            grpc_mod = importlib.import_module(f"{PROTO_NAME}_grpc")
        finally:
            sys.path.remove(tmp)
        return pb2, grpc_mod
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- server


async def _serve(args) -> None:
    from grpclib.server import Server

    pb2, grpc_mod = load_stubs()

    class Bench(grpc_mod.BenchBase):
        async def Add(self, stream) -> None:
            request = await stream.recv_message()
            await stream.send_message(pb2.AddReply(result=request.a + request.b))

        async def Echo(self, stream) -> None:
            request = await stream.recv_message()
            await stream.send_message(pb2.EchoMessage(data=request.data))

    # proto=IPPROTO_TCP, not 0: plain asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says IPPROTO_TCP (grpclib writes headers, data and trailers separately,
    # and with Nagle's algorithm on, each call would wait ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((_common.HOST, args.port))
    port = sock.getsockname()[1]
    server = Server([Bench()])
    await server.start(sock=sock, backlog=BACKLOG)
    _common.print_ready(port)
    await _common.wait_for_stop_async()
    server.close()
    await server.wait_closed()


def serve(args) -> int:
    _common.run_async(lambda: _serve(args), args.loop)
    return 0


# --------------------------------------------------------------------------- client


class _Conn:
    """One channel (= one HTTP/2 connection), shared by the tasks of that connection."""

    def __init__(self, channel, pb2, grpc_mod):
        self._channel = channel
        stub = grpc_mod.BenchStub(channel)
        self._add = stub.Add
        self._echo = stub.Echo
        self._AddRequest = pb2.AddRequest
        self._EchoMessage = pb2.EchoMessage

    async def add(self, a, b):
        reply = await self._add(self._AddRequest(a=a, b=b), timeout=_common.CALL_TIMEOUT)
        return reply.result

    async def echo(self, data):
        reply = await self._echo(self._EchoMessage(data=data), timeout=_common.CALL_TIMEOUT)
        return reply.data

    async def close(self) -> None:
        self._channel.close()


async def _client(args, loop_name: str) -> dict:
    from grpclib.client import Channel

    pb2, grpc_mod = load_stubs()
    host, port = _common.split_address(args.address)

    async def connect() -> _Conn:
        conn = _Conn(Channel(host, port), pb2, grpc_mod)
        try:
            # The first call opens the connection (and fails fast if nobody listens).
            reply = await conn._add(pb2.AddRequest(a=0, b=0), timeout=_common.CONNECT_TIMEOUT)
            if reply.result != 0:
                raise RuntimeError(f"Add(0, 0) returned {reply.result}")
        except BaseException:
            await conn.close()
            raise
        return conn

    return await _common.run_asyncio(SYSTEM, args, connect, multiplexed=True, extra={"loop": loop_name})


def client(args) -> int:
    loop_name = _common.pick_loop(args.loop)
    _common.start_watchdog(SYSTEM, args.workload, args.duration, extra={"loop": loop_name})
    try:
        result, _ = _common.run_async(lambda: _client(args, loop_name), loop_name)
    except Exception as exc:  # noqa: BLE001 - the contract wants a JSON line, not a traceback
        result = _common.make_result(SYSTEM, args.workload, extra={"loop": loop_name},
                                     error=f"grpclib client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()
    args = _common.parse_args(SYSTEM, argv, add_server_args=_common.add_loop_arg,
                              add_client_args=_common.add_loop_arg)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
