"""Shared helpers for the end-to-end tests (imported by conftest and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import subprocess
import sys
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import fastrpc

HERE = os.path.dirname(os.path.abspath(__file__))


class Arith:
    """The seed example service."""

    def multiply(self, a: int, b: int) -> int:
        return a * b

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, value: Any) -> Any:
        return value

    async def sleep_echo(self, seconds: float, value: Any = None) -> Any:
        await asyncio.sleep(seconds)
        return value


def hostport(address: str) -> "tuple[str, int]":
    """``("127.0.0.1", 1234)`` from ``"tcp://127.0.0.1:1234"``."""
    host, port = address[6:].rsplit(":", 1)
    return host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A fastrpc server in a child process (tests/rpc/server_proc.py)."""

    def __init__(self, port: int, extra: Optional[list] = None) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server_proc.py"), str(port)] + (extra or []),
            stdout=subprocess.PIPE,
            env=env,
        )
        line = self.proc.stdout.readline()  # "ready" once listening
        if not line.startswith(b"ready"):
            self.kill()
            raise RuntimeError(f"server process failed to start: {line!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


# -- one async test body for every client ------------------------------------------
#
# The ``client_kind`` fixture (conftest.py) hands a test a ClientKind; its
# ``open()`` gives a driver with the same awaitable interface whichever
# client is behind it, so a scenario is written once and runs against the
# blocking Client (each call in a thread of the loop's executor, while the
# server runs on the loop), the AsyncClient and the Pool.


class AsyncDriver:
    """An AsyncClient (or a Pool): its own awaitables, as they are."""

    def __init__(self, name: str, raw: Any) -> None:
        self.name = name
        #: the client itself, for what only that kind has
        self.raw = raw

    def call(self, method: str, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self.raw.call(method, *args, **kwargs)

    def go(self, method: str, *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """Start a call now, await its result later (the sync Client's go())."""
        return asyncio.ensure_future(self.raw.call(method, *args, **kwargs))

    def proxy(self, service: str) -> Any:
        return self.raw.proxy(service)

    async def close(self) -> None:
        await self.raw.close()

    def connection(self) -> Any:
        """The connection calls go out on now (None: none is open; a Pool:
        its first ready endpoint's)."""
        endpoint = getattr(self.raw, "endpoint", None)
        if endpoint is None:  # a Pool
            ready = [ep for ep in self.raw.endpoints if ep.connection is not None]
            return ready[0].connection if ready else None
        return endpoint.connection

    @staticmethod
    def in_flight(connection: Any) -> int:
        return connection.in_flight


class SyncDriver:
    """The blocking Client behind awaitables: each call runs in a thread of
    the loop's default executor, so several calls can be in flight at once
    (the Client is thread-safe) and the loop goes on serving."""

    name = "sync"

    def __init__(self, raw: "fastrpc.Client") -> None:
        self.raw = raw

    @staticmethod
    async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self._in_thread(self.raw.call, method, *args, **kwargs)

    async def go(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Client.go(): the call starts in a thread (go() may connect, which
        blocks), its concurrent Future is awaited here."""
        future = await self._in_thread(self.raw.go, method, *args, **kwargs)
        return await asyncio.wrap_future(future)

    def proxy(self, service: str) -> Any:
        return _SyncProxy(self, service)

    async def close(self) -> None:
        await self._in_thread(self.raw.close)

    # Private state: the blocking Client has no public connection.

    def connection(self) -> Any:
        return self.raw._conn

    @staticmethod
    def in_flight(connection: Any) -> int:
        return connection.in_flight


class _SyncProxy:
    """``await driver.proxy("S").m(...)`` through the Client's own proxy()."""

    def __init__(self, driver: SyncDriver, service: str) -> None:
        self._driver = driver
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._driver.raw.proxy(self._service), name)
        return functools.partial(self._driver._in_thread, method)


class ClientKind:
    """Opens clients of one kind: ``sync`` (Client), ``async`` (AsyncClient)
    or ``pool`` (a Pool of two connections)."""

    NAMES = ("sync", "async", "pool")

    def __init__(self, name: str) -> None:
        assert name in self.NAMES, name
        self.name = name

    def __repr__(self) -> str:
        return f"ClientKind({self.name!r})"

    async def open(self, address: str, *, connect: bool = True, **options: Any) -> Any:
        """A driver for a new client of this kind; with ``connect`` it is
        connected (a Pool: all of its connections, so that a call has
        another one to go to) before this returns."""
        if self.name == "sync":
            client = await SyncDriver._in_thread(fastrpc.Client, address, lazy=not connect, **options)
            return SyncDriver(client)
        if self.name == "async":
            client = fastrpc.AsyncClient(address, **options)
            if connect:
                await client.connect()
            return AsyncDriver("async", client)
        pool = fastrpc.Pool(address, size=options.pop("size", 2), **options)
        await pool.start()
        for _ in range(500):  # bounded: every connection up
            if pool.connected == pool.size:
                break
            await asyncio.sleep(0.01)
        else:
            await pool.close()
            raise AssertionError(f"only {pool.connected} of {pool.size} pool connections came up")
        return AsyncDriver("pool", pool)

    @contextlib.asynccontextmanager
    async def client(self, address: str, **options: Any) -> AsyncIterator[Any]:
        """``async with kind.client(address) as c``: opened, and closed after."""
        driver = await self.open(address, **options)
        try:
            yield driver
        finally:
            await driver.close()
