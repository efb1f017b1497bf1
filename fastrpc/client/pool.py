"""A pool of connections to one or more endpoints.

Calls go round-robin to the connections that are up; each connection has a
supervisor task that reconnects it in the background, with exponential
backoff and jitter, whenever it is lost.  A call never waits for a
reconnection: with no connection up it fails at once with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Optional, Sequence, Union

from ..wire import constants as W
from ..transport.address import Address
from ._client import _UNSET, AsyncClient, Backoff, _Proxy
from ..errors import NotProcessed, Unavailable

__all__ = ["Pool"]


class Pool:
    """Several connections, calls spread across them.

    Usage::

        async with fastrpc.Pool(["127.0.0.1:1234", "127.0.0.1:1235"], size=4) as pool:
            await pool.call("Arith.multiply", 7, 8)

    Parameters:
        addresses: one address or a list of them.
        size: connections per address.
        timeout: default per-call timeout in seconds.
        connect_timeout: limit for one connection attempt.
        max_frame_size: largest frame sent or accepted.
        backoff_base, backoff_max: reconnection backoff (seconds).
    """

    def __init__(
        self,
        addresses: Union[str, Address, Sequence[Union[str, Address]]],
        *,
        size: int = 4,
        timeout: Optional[float] = None,
        connect_timeout: float = 10.0,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        backoff_base: float = 0.05,
        backoff_max: float = 5.0,
    ) -> None:
        if isinstance(addresses, (str, Address)):
            addresses = [addresses]
        if not addresses:
            raise ValueError("a pool needs at least one address")
        if size < 1:
            raise ValueError("size must be >= 1")
        self.timeout = timeout
        self._clients: List[AsyncClient] = [
            AsyncClient(
                a,
                timeout=timeout,
                connect_timeout=connect_timeout,
                max_frame_size=max_frame_size,
                backoff=Backoff(backoff_base, backoff_max),
            )
            for a in addresses
            for _ in range(size)
        ]
        for c in self._clients:
            c._resend_to = self._resend
        self._next = 0
        self._supervisors: List[asyncio.Task] = []
        self._closed = False

    @property
    def size(self) -> int:
        """Number of connection slots."""
        return len(self._clients)

    @property
    def connected(self) -> int:
        """Number of connections currently up."""
        return sum(1 for c in self._clients if c.connected)

    async def start(self, wait: bool = True) -> "Pool":
        """Start the supervisors; with ``wait``, return once at least one
        connection is up (or every first attempt failed)."""
        if not self._supervisors:
            first = [asyncio.get_running_loop().create_future() for _ in self._clients]
            self._supervisors = [
                asyncio.ensure_future(self._supervise(c, f)) for c, f in zip(self._clients, first)
            ]
            if wait:
                pending = set(first)
                while pending and not self.connected:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not self.connected:
                    raise Unavailable("no connection in the pool could be established")
        return self

    async def _supervise(self, client: AsyncClient, first: asyncio.Future) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                await client.connect()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - retried after the backoff
                if not first.done():
                    first.set_result(False)
                await asyncio.sleep(max(0.0, client._next_attempt - loop.time()))
                continue
            if not first.done():
                first.set_result(True)
            await client.wait_lost()

    def call(self, method: str, *args: Any, timeout: Optional[float] = _UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> Any:
        """Call ``method`` on the next connection that is up (awaitable)."""
        if timeout is _UNSET:
            timeout = self.timeout
        p = self._next_up()
        if p is not None:
            return p.call(method, args, kwargs or None, timeout, metadata)
        return self._unavailable()

    def _next_up(self) -> Any:
        # The next connection, round robin, that is up (None: none is).
        clients = self._clients
        n = len(clients)
        start = self._next
        for i in range(n):
            p = clients[(start + i) % n]._protocol
            if p is not None and not p._closing and not p.peer_goaway:
                self._next = (start + i + 1) % n
                return p
        return None

    async def _resend(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        # A call the server closed its connection without reading: it never
        # ran, so it goes once more, on the next connection that is up, and
        # is not resent again.
        p = self._next_up()
        if p is not None:
            return await p.call(method, args, kwargs, timeout, metadata, False)
        raise NotProcessed("the server closed the connection before reading this call, and no other connection is up")

    async def _unavailable(self) -> Any:
        if self._closed:
            raise Unavailable("pool is closed")
        raise Unavailable("no connection in the pool is up")

    def proxy(self, service: str) -> Any:
        """``await pool.proxy("Arith").multiply(7, 8)``."""
        return _Proxy(self, service)

    async def close(self) -> None:
        """Stop reconnecting and close every connection."""
        self._closed = True
        for t in self._supervisors:
            t.cancel()
        for c in self._clients:
            await c.close()
        if self._supervisors:
            await asyncio.gather(*self._supervisors, return_exceptions=True)
        self._supervisors = []

    async def __aenter__(self) -> "Pool":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
