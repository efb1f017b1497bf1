"""Logging: the access log (off by default; method, status, duration, peer,
trace id) on the server and as a client middleware, and the connection
events, refusals and protocol errors both sides log."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, List

import pytest

import fastrpc
from fastrpc.middleware.access import AccessLog

from rpc_support import Arith, hostport

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


class Svc(Arith):
    def fail(self) -> None:
        raise fastrpc.NotFound("no such thing")

    async def afail(self) -> None:
        raise ValueError("boom")


def _access(caplog: Any) -> List[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fastrpc.access"]


def test_access_log_is_off_by_default(run, caplog):
    caplog.set_level(logging.DEBUG, logger="fastrpc")

    async def main():
        server = fastrpc.Server()
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("Svc.add", 1, 2) == 3
        finally:
            await server.shutdown()

    run(main())
    assert _access(caplog) == []


def test_server_access_log(run, caplog):
    caplog.set_level(logging.INFO, logger="fastrpc.access")

    async def main():
        server = fastrpc.Server(access_log=True)
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("Svc.add", 1, 2) == 3  # sync, inline
                assert await c.call("Svc.sleep_echo", 0.05, "x", metadata={"traceparent": TRACEPARENT}) == "x"
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Svc.fail")
                with pytest.raises(fastrpc.RpcError):
                    await c.call("Svc.afail")
                local = c._endpoint.connection._transport.get_extra_info("sockname")
        finally:
            await server.shutdown()
        return local

    local = run(main())
    records = _access(caplog)
    assert [(r.rpc_method, r.rpc_code) for r in records] == [
        ("Svc.add", "OK"),
        ("Svc.sleep_echo", "OK"),
        ("Svc.fail", "NOT_FOUND"),
        ("Svc.afail", "UNKNOWN"),
    ]
    peer = f"{local[0]}:{local[1]}"
    for r in records:
        assert r.levelno == logging.INFO
        assert r.rpc_side == "server"
        assert r.rpc_peer == peer
        assert r.rpc_duration_ms >= 0
        assert r.getMessage().startswith(f"{r.rpc_method} {r.rpc_code} ")
        assert f"peer={peer}" in r.getMessage()
    assert records[1].rpc_duration_ms >= 40  # the handler slept 50 ms (a loop's timers may round down a little)
    assert records[1].rpc_trace_id == TRACE and f"trace={TRACE}" in records[1].getMessage()
    assert records[0].rpc_trace_id is None and "trace=-" in records[0].getMessage()


def test_access_log_to_a_logger_of_ones_own(run, caplog):
    mine = logging.getLogger("tests.my_access")
    caplog.set_level(logging.INFO, logger="tests.my_access")

    async def main():
        server = fastrpc.Server(access_log=mine)
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                await c.call("Svc.add", 1, 2)
        finally:
            await server.shutdown()

    run(main())
    assert [r.rpc_method for r in caplog.records if r.name == "tests.my_access"] == ["Svc.add"]
    assert _access(caplog) == []


def test_access_log_skipped_when_the_level_is_off(run, caplog):
    caplog.set_level(logging.WARNING, logger="fastrpc.access")
    seen = []

    async def main():
        server = fastrpc.Server(access_log=True)
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with fastrpc.AsyncClient(address) as c:
                seen.append(await c.call("Svc.add", 1, 2))
        finally:
            await server.shutdown()

    run(main())
    assert seen == [3] and _access(caplog) == []


@pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)
def test_client_access_log(run, client_kind, caplog):
    caplog.set_level(logging.INFO, logger="fastrpc.access")

    async def main():
        server = fastrpc.Server()
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        try:
            async with client_kind.client(address, middleware=[AccessLog()]) as c:
                assert await c.call("Svc.add", 1, 2) == 3
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Svc.fail")
                await c.call("Svc.echo", 1, metadata={"traceparent": TRACEPARENT})
        finally:
            await server.shutdown()
        return address

    address = run(main())
    records = _access(caplog)
    assert [(r.rpc_side, r.rpc_method, r.rpc_code) for r in records] == [
        ("client", "Svc.add", "OK"),
        ("client", "Svc.fail", "NOT_FOUND"),
        ("client", "Svc.echo", "OK"),
    ]
    host, port = hostport(address)
    assert all(r.rpc_peer.endswith(f"{host}:{port}") for r in records)
    assert records[2].rpc_trace_id == TRACE


def test_sync_go_is_logged_and_counted_when_answered(run, caplog):
    # A go() call ends when its future does, not when it is sent.
    caplog.set_level(logging.INFO, logger="fastrpc.access")

    async def main():
        server = fastrpc.Server()
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        loop = asyncio.get_running_loop()

        def calls() -> Any:
            with fastrpc.Client(address, middleware=[AccessLog()]) as c:
                fut = c.go("Svc.sleep_echo", 0.2, "late")
                logged_before = len(_access(caplog))
                bad = c.go("Svc.fail")
                assert fut.result(10) == "late"
                with pytest.raises(fastrpc.NotFound):
                    bad.result(10)
                return logged_before

        try:
            return await loop.run_in_executor(None, calls)
        finally:
            await server.shutdown()

    logged_before = run(main())
    assert logged_before == 0
    # A future's callbacks run after its waiters wake: the record may come
    # a moment after result() returned.
    for _ in range(500):
        if len(_access(caplog)) == 2:
            break
        time.sleep(0.01)
    records = _access(caplog)
    assert sorted((r.rpc_method, r.rpc_code) for r in records) == [("Svc.fail", "NOT_FOUND"), ("Svc.sleep_echo", "OK")]
    assert [r for r in records if r.rpc_method == "Svc.sleep_echo"][0].rpc_duration_ms >= 150  # it slept 200 ms


def test_connection_events_are_logged(run, caplog):
    caplog.set_level(logging.DEBUG, logger="fastrpc")

    async def main():
        server = fastrpc.Server(max_connections=1)
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        async with fastrpc.AsyncClient(address) as c:
            await c.call("Svc.add", 1, 2)
            # A second connection past max_connections is refused.
            extra = fastrpc.AsyncClient(address, backoff=fastrpc.Backoff(base=10, maximum=10, jitter=0))
            with pytest.raises(fastrpc.RpcError):
                await extra.call("Svc.add", 1, 2)
            await extra.close()
            await asyncio.sleep(0.05)
            await server.shutdown()
        return address

    address = run(main())
    messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    text = "\n".join(f"{n} {lvl} {m}" for n, lvl, m in messages)
    assert any(n == "fastrpc.server" and lvl == "INFO" and m.startswith("listening on tcp://127.0.0.1:") for n, lvl, m in messages), text
    assert any(n == "fastrpc.server" and lvl == "DEBUG" and m.startswith("connection from ") for n, lvl, m in messages), text
    assert any(n == "fastrpc.server" and lvl == "WARNING" and "max_connections=1" in m for n, lvl, m in messages), text
    assert any(n == "fastrpc.client" and lvl == "DEBUG" and m == f"connected to {address}" for n, lvl, m in messages), text
    assert any(n == "fastrpc.client" and lvl == "INFO" and "is going away" in m for n, lvl, m in messages), text
    assert any(n == "fastrpc.server" and lvl == "INFO" and m.startswith("shutting down: draining 1 connections") for n, lvl, m in messages), text
    assert any(n == "fastrpc.server" and m == "stopped" for n, lvl, m in messages), text


def test_protocol_errors_and_lost_connections_are_logged(run, caplog):
    caplog.set_level(logging.DEBUG, logger="fastrpc")

    async def main():
        server = fastrpc.Server()
        server.register(Svc())
        address = await server.start("tcp://127.0.0.1:0")
        host, port = hostport(address)
        try:
            # Garbage where the preface should be: closed, and said why.
            loop = asyncio.get_running_loop()
            sock = socket.create_connection((host, port))
            sock.setblocking(False)
            await loop.sock_sendall(sock, b"SSH-2.0-OpenSSH_9.6\r\n")  # (HTTP would be the gateway's)
            for _ in range(200):
                try:
                    if not await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.05):
                        break
                except asyncio.TimeoutError:
                    pass
            sock.close()
            # A client whose server goes away without a word.
            c = fastrpc.AsyncClient(address, backoff=fastrpc.Backoff(base=10, maximum=10, jitter=0))
            await c.call("Svc.add", 1, 2)
            for conn in list(server._connections):
                conn.abort()
            for _ in range(200):
                if c._endpoint.connection is None:
                    break
                await asyncio.sleep(0.01)
            assert await c.call("Svc.add", 1, 2) == 3  # on a new connection
            await c.close()
        finally:
            await server.shutdown()

    run(main())
    messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    text = "\n".join(f"{n} {lvl} {m}" for n, lvl, m in messages)
    assert any(n == "fastrpc.server" and lvl == "INFO" and m.startswith("closing connection from ") for n, lvl, m in messages), text
    assert any(n == "fastrpc.client" and lvl == "INFO" and m.startswith("connection to ") and " lost: " in m for n, lvl, m in messages), text
