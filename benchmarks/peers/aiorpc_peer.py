"""msgpack-rpc peer of the fastrpc benchmark, using the ``aiorpc`` package (0.1.7, 2020).

aiorpc 0.1.7 does not work unmodified on Python 3.10+ with msgpack 1.x; this file carries a
small compatibility shim (nothing in site-packages is touched):

1. ``RPCClient._open_connection`` calls ``asyncio.open_connection(..., loop=...)``; the
   ``loop`` argument was removed in Python 3.10, so every call fails with
   ``TypeError: ... unexpected keyword argument 'loop'``.  The shim's client subclass opens
   the connection without it.
2. The server packs responses with ``use_bin_type=False`` (msgpack-python < 1.0 style), so a
   ``bytes`` result goes out as a msgpack *str*, and the client's ``Unpacker(raw=False)``
   then fails with ``UnicodeDecodeError`` on any payload that is not UTF-8 (every random
   payload).  The shim's client unpacks with ``raw=True`` (msgpack str -> ``bytes``), which
   gives ``echo`` its bytes back unchanged; ``add`` is unaffected.  The server is aiorpc's
   own ``serve`` unchanged.

aiorpc has one call in flight per connection: ``RPCClient.call`` writes a request, then
reads the next response and insists its id is the last one sent (two concurrent calls on one
client would both read the same stream), and the server handles one request per connection
at a time (a second request already buffered is not read until more bytes arrive).  So
``pipelined`` and ``fanin`` use one asyncio task and one connection per outstanding call.

    python -m benchmarks.peers.aiorpc_peer server --port 0
    python -m benchmarks.peers.aiorpc_peer client --address 127.0.0.1:PORT --workload seq --duration 1
"""

from __future__ import annotations

import asyncio
import functools
import sys

from . import _common

SYSTEM = "aiorpc"
#: aiorpc's server closes a connection that sends nothing for this long (its default is 3 s).
SERVER_IDLE_TIMEOUT = 60


# --------------------------------------------------------------------------- server


def add(a, b):
    return a + b


def echo(data):
    return data


async def _serve(args) -> None:
    import aiorpc

    aiorpc.set_timeout(SERVER_IDLE_TIMEOUT)
    aiorpc.register("add", add)
    aiorpc.register("echo", echo)
    server = await asyncio.start_server(aiorpc.serve, _common.HOST, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    _common.print_ready(port)
    await _common.wait_for_stop_async()
    server.close()


def serve(args) -> int:
    _common.run_async(lambda: _serve(args), args.loop)
    return 0


# --------------------------------------------------------------------------- client


def _compat_client_class():
    """aiorpc's RPCClient, fixed for Python >= 3.10 and msgpack >= 1.0 (see the module doc)."""
    import msgpack
    from aiorpc import RPCClient
    from aiorpc.connection import Connection

    class CompatRPCClient(RPCClient):
        async def _open_connection(self):
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._timeout)
            unpack_params = dict(self._unpack_params)
            unpack_params["raw"] = True
            self._conn = Connection(reader, writer, msgpack.Unpacker(**unpack_params))

    return CompatRPCClient


class _Conn:
    def __init__(self, rpc_client):
        self._client = rpc_client
        self.add = functools.partial(rpc_client.call, "add")
        self.echo = functools.partial(rpc_client.call, "echo")

    async def close(self) -> None:
        self._client.close()


async def _client(args, loop_name: str) -> dict:
    host, port = _common.split_address(args.address)
    client_cls = _compat_client_class()

    async def connect() -> _Conn:
        c = client_cls(host, port, timeout=_common.CALL_TIMEOUT)
        await c._open_connection()
        if await c.call("add", 0, 0) != 0:
            raise RuntimeError("add(0, 0) != 0")
        return _Conn(c)

    return await _common.run_asyncio(SYSTEM, args, connect, multiplexed=False, extra={"loop": loop_name})


def client(args) -> int:
    loop_name = _common.pick_loop(args.loop)
    _common.start_watchdog(SYSTEM, args.workload, args.duration, extra={"loop": loop_name})
    try:
        result, _ = _common.run_async(lambda: _client(args, loop_name), loop_name)
    except Exception as exc:  # noqa: BLE001 - the contract wants a JSON line, not a traceback
        result = _common.make_result(SYSTEM, args.workload, extra={"loop": loop_name},
                                     error=f"aiorpc client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()
    args = _common.parse_args(SYSTEM, argv, add_server_args=_common.add_loop_arg,
                              add_client_args=_common.add_loop_arg)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
