"""fastrpc itself as a benchmark peer (same contract as the other peers).

    python -m benchmarks.peers.fastrpc_peer server --port 0
    python -m benchmarks.peers.fastrpc_peer client --client async|sync|pool --address A --workload W --duration S

The wire implementation is whatever fastrpc selects at import: set
``FASTRPC_NO_EXTENSIONS=1`` in the environment of both processes for the
pure-Python build.  Clients:

* ``async``: one :class:`fastrpc.AsyncClient` per connection, the workload's
  in-flight calls multiplexed on it;
* ``pool``: one :class:`fastrpc.Pool` with as many connections as the
  workload has, all tasks calling through the pool;
* ``sync``: the blocking :class:`fastrpc.Client`, one call at a time
  (``seq`` and ``payload``; it is the net/rpc-style drop-in).
"""

from __future__ import annotations

import asyncio
import functools
import sys

import fastrpc

from . import _common

SYSTEM = "fastrpc"


class Bench:
    def add(self, a, b):
        return a + b

    def echo(self, data):
        return data


async def _serve(args) -> None:
    server = fastrpc.Server()
    server.register(Bench())
    if getattr(args, "plain_names", False):
        # For other protocols' clients on the same port (aiorpc's msgpack-rpc
        # client calls "add" and "echo", not "Bench.add").
        bench = Bench()
        server.register_function(bench.add, "add")
        server.register_function(bench.echo, "echo")
    address = await server.start(f"tcp://{_common.HOST}:{args.port}", backlog=4096)
    _common.print_ready(int(address.rsplit(":", 1)[1]))
    await _common.wait_for_stop_async()
    await server.shutdown(grace=1)


def serve(args) -> int:
    _common.run_async(lambda: _serve(args), args.loop)
    return 0


class _AsyncConn:
    def __init__(self, client):
        self._client = client
        self.add = functools.partial(client.call, "Bench.add")
        self.echo = functools.partial(client.call, "Bench.echo")

    async def close(self) -> None:
        await self._client.close()


class _SyncConn:
    def __init__(self, client):
        self._client = client
        self.add = functools.partial(client.call, "Bench.add")
        self.echo = functools.partial(client.call, "Bench.echo")

    def close(self) -> None:
        self._client.close()


def _extra(args, loop_name=None):
    extra = {"impl": "cython" if fastrpc.EXTENSIONS_ACTIVE else "python", "client": args.client}
    if loop_name:
        extra["loop"] = loop_name
    return extra


def client(args) -> int:
    system = f"{SYSTEM}-{'cython' if fastrpc.EXTENSIONS_ACTIVE else 'python'}-{args.client}"
    if args.client == "sync":
        extra = _extra(args)
        _common.start_watchdog(system, args.workload, args.duration, extra=extra)
        if args.workload not in ("seq", "payload"):
            result = _common.make_result(
                system, args.workload, extra=extra,
                error="the sync Client is measured on seq and payload (one call at a time)")
        else:
            def connect():
                c = fastrpc.Client(args.address, connect_timeout=_common.CONNECT_TIMEOUT)
                return _SyncConn(c)

            result = _common.run_threaded(system, args, connect, extra=extra)
        _common.finish(result)
        return 0

    loop_name = _common.pick_loop(args.loop)
    extra = _extra(args, loop_name)
    _common.start_watchdog(system, args.workload, args.duration, extra=extra)

    async def run():
        if args.client == "pool":
            # The pool holds all of the workload's connections; every task
            # calls through it.
            conns = args.connections if args.workload == "fanin" else 1
            args.inflight = args.inflight * conns
            args.connections = 1

            async def connect():
                pool = fastrpc.Pool(args.address, size=conns, connect_timeout=_common.CONNECT_TIMEOUT)
                await pool.start()
                for _ in range(500):
                    if pool.connected == conns:
                        break
                    await asyncio.sleep(0.01)
                return _AsyncConn(pool)
        else:
            async def connect():
                c = fastrpc.AsyncClient(args.address, connect_timeout=_common.CONNECT_TIMEOUT)
                await c.connect()
                return _AsyncConn(c)

        return await _common.run_asyncio(system, args, connect, multiplexed=True, extra=extra)

    try:
        result, _ = _common.run_async(run, loop_name)
    except Exception as exc:  # noqa: BLE001 - the contract wants a JSON line
        result = _common.make_result(system, args.workload, extra=extra,
                                     error=f"fastrpc client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()

    def client_args(p):
        _common.add_loop_arg(p)
        p.add_argument("--client", choices=("async", "sync", "pool"), default="async")

    def server_args(p):
        _common.add_loop_arg(p)
        p.add_argument("--plain-names", action="store_true", help="also serve add and echo under those names (msgpack-rpc clients)")

    args = _common.parse_args(SYSTEM, argv, add_server_args=server_args, add_client_args=client_args)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
