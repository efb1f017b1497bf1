"""gRPC peer (grpcio, ``grpc.aio``) of the fastrpc benchmark.

The service is described by the small proto below, compiled at run time with
``grpc_tools.protoc`` into a temporary directory that is deleted once the generated modules are
imported (nothing generated is kept or committed).

Server: ``grpc.aio.server()`` with an async servicer.  Client: ``grpc.aio`` channels; HTTP/2
multiplexes calls, so ``pipelined`` has 64 calls in flight on one channel and ``fanin`` C
channels with N calls each.  Each channel uses a local subchannel pool so that C channels are
really C TCP connections (by default grpc-core shares one connection between channels to the
same target).  Both sides run on uvloop when it is installed (``--loop auto``), otherwise
on plain asyncio; the client reports which in the output's ``"loop"`` field.

    python -m benchmarks.peers.grpc_peer server --port 0
    python -m benchmarks.peers.grpc_peer client --address 127.0.0.1:PORT --workload seq --duration 1
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from pathlib import Path

from . import _common

SYSTEM = "grpc"
PROTO_NAME = "fastrpcbench_grpc"
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

#: No 4 MiB cap on messages, so that --payload-size may go above it.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


def load_stubs():
    """Compile PROTO with grpc_tools.protoc into a temp dir; return (pb2, pb2_grpc) modules."""
    from grpc_tools import protoc

    tmp = tempfile.mkdtemp(prefix="fastrpcbench-grpc-")
    try:
        proto_path = Path(tmp) / f"{PROTO_NAME}.proto"
        proto_path.write_text(PROTO)
        rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", f"--python_out={tmp}",
                          f"--grpc_python_out={tmp}", str(proto_path)])
        if rc != 0:
            raise RuntimeError(f"grpc_tools.protoc failed with exit code {rc}")
        sys.path.insert(0, tmp)
        try:
            pb2 = importlib.import_module(f"{PROTO_NAME}_pb2")
            pb2_grpc = importlib.import_module(f"{PROTO_NAME}_pb2_grpc")
        finally:
            sys.path.remove(tmp)
        return pb2, pb2_grpc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- server


async def _serve(args) -> None:
    from grpc import aio

    pb2, pb2_grpc = load_stubs()

    class Bench(pb2_grpc.BenchServicer):
        async def Add(self, request, context):
            return pb2.AddReply(result=request.a + request.b)

        async def Echo(self, request, context):
            return pb2.EchoMessage(data=request.data)

    server = aio.server(options=CHANNEL_OPTIONS + [("grpc.so_reuseport", 0)])
    pb2_grpc.add_BenchServicer_to_server(Bench(), server)
    port = server.add_insecure_port(f"{_common.HOST}:{args.port}")
    if not port:
        raise RuntimeError(f"could not bind {_common.HOST}:{args.port}")
    await server.start()
    _common.print_ready(port)
    await _common.wait_for_stop_async()
    await server.stop(grace=0.5)


def serve(args) -> int:
    _common.run_async(lambda: _serve(args), args.loop)
    return 0


# --------------------------------------------------------------------------- client


class _Conn:
    """One channel (= one HTTP/2 connection), shared by the tasks of that connection."""

    def __init__(self, channel, pb2, pb2_grpc):
        self._channel = channel
        stub = pb2_grpc.BenchStub(channel)
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
        await self._channel.close()


async def _client(args, loop_name: str) -> dict:
    from grpc import aio

    pb2, pb2_grpc = load_stubs()

    async def connect() -> _Conn:
        channel = aio.insecure_channel(
            args.address, options=CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])
        conn = _Conn(channel, pb2, pb2_grpc)
        try:
            # The first call opens the connection (and fails fast if nobody listens).
            reply = await conn._add(pb2.AddRequest(a=0, b=0), timeout=_common.CONNECT_TIMEOUT)
            if reply.result != 0:
                raise RuntimeError(f"Add(0, 0) returned {reply.result}")
        except BaseException:
            await channel.close()
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
                                     error=f"grpc client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()
    args = _common.parse_args(SYSTEM, argv, add_server_args=_common.add_loop_arg,
                              add_client_args=_common.add_loop_arg)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
