"""Pyro5 peer of the fastrpc benchmark.

Server: a ``Pyro5.api.Daemon`` on 127.0.0.1 (the default "thread" server type: one pooled
worker thread per connection; the pool is raised from 80 to ``--threadpool``, 512 by default,
because ``fanin`` opens 128 connections and Pyro5 refuses connections beyond the pool size)
with one object, id ``bench``, exposing ``add`` and ``echo``.

Client: one ``Pyro5.api.Proxy("PYRO:bench@HOST:PORT")`` per thread (a Pyro5 proxy belongs to
one thread and has one call in flight at a time, so ``pipelined`` and ``fanin`` use one
thread and connection per outstanding call).  The client picks the serializer
(``--serializer``, default ``msgpack``: it carries ``bytes`` natively, as fastrpc's own
msgpack codec does; Pyro5's default ``serpent`` would turn ``bytes`` into a base64 dict).

    python -m benchmarks.peers.pyro5_peer server --port 0
    python -m benchmarks.peers.pyro5_peer client --address 127.0.0.1:PORT --workload seq --duration 1
"""

from __future__ import annotations

import sys
import threading

from . import _common

SYSTEM = "pyro5"
OBJECT_ID = "bench"


def _server_args(p) -> None:
    p.add_argument("--threadpool", type=int, default=512,
                   help="Pyro5 THREADPOOL_SIZE: the most connections served at once (default 512)")


def _client_args(p) -> None:
    p.add_argument("--serializer", default="msgpack", choices=("msgpack", "serpent", "marshal", "json"),
                   help="Pyro5 serializer used by the client (default msgpack)")


# --------------------------------------------------------------------------- server


def serve(args) -> int:
    from Pyro5 import api, config

    config.SERVERTYPE = "thread"
    config.THREADPOOL_SIZE = args.threadpool
    config.THREADPOOL_SIZE_MIN = min(config.THREADPOOL_SIZE_MIN, args.threadpool)

    @api.expose
    @api.behavior(instance_mode="single")
    class Bench:
        def add(self, a, b):
            return a + b

        def echo(self, data):
            return data

    daemon = api.Daemon(host=_common.HOST, port=args.port)
    daemon.register(Bench(), objectId=OBJECT_ID)
    port = daemon.sock.getsockname()[1]
    thread = threading.Thread(target=daemon.requestLoop, name="pyro5-daemon", daemon=True)
    thread.start()
    _common.print_ready(port)
    _common.wait_for_stop()
    daemon.shutdown()
    return 0


# --------------------------------------------------------------------------- client


class _Conn:
    def __init__(self, address: str, serializer: str):
        from Pyro5 import api

        self._proxy = api.Proxy(f"PYRO:{OBJECT_ID}@{address}")
        self._proxy._pyroSerializer = serializer
        self._proxy._pyroTimeout = _common.CALL_TIMEOUT
        self._proxy._pyroBind()  # connect now, in the thread that will use the proxy
        self.add = self._proxy.add
        self.echo = self._proxy.echo

    def close(self) -> None:
        self._proxy._pyroRelease()


def client(args) -> int:
    extra = {"serializer": args.serializer}
    _common.start_watchdog(SYSTEM, args.workload, args.duration, extra=extra)
    try:
        result = _common.run_threaded(SYSTEM, args, lambda: _Conn(args.address, args.serializer), extra=extra)
    except Exception as exc:  # noqa: BLE001 - the contract wants a JSON line, not a traceback
        result = _common.make_result(SYSTEM, args.workload, extra=extra,
                                     error=f"pyro5 client failed: {type(exc).__name__}: {exc}")
    _common.finish(result)
    return 0


def main(argv=None) -> int:
    _common.setup_logging()
    args = _common.parse_args(SYSTEM, argv, add_server_args=_server_args, add_client_args=_client_args)
    return serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    sys.exit(main())
