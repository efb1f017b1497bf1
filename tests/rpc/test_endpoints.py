"""Endpoints (one address, its connection, its state) and pickers (which
ready endpoint a call goes to), and the Pool built from them through their
public interface only."""

from __future__ import annotations

import ast
import asyncio
import os
from typing import Any, List, Optional, Sequence

import pytest

import fastrpc
from fastrpc import Endpoint, EndpointState, Picker, RoundRobinPicker

from rpc_support import Arith, free_port

S = EndpointState


async def _serve(**options: Any):
    server = fastrpc.Server(**options)
    server.register(Arith())
    address = await server.start("tcp://127.0.0.1:0")
    return server, address


def test_endpoint_states_through_a_life(run):
    async def main():
        server, address = await _serve()
        ep = Endpoint(address)
        seen: List[EndpointState] = []
        unsubscribe = ep.subscribe(lambda e: seen.append(e.state))
        assert ep.state is S.IDLE and ep.connection is None
        conn = await ep.connect()
        assert ep.state is S.READY and ep.connection is conn and ep.methods
        assert await conn.call("Arith.multiply", [6, 7]) == 42
        assert await ep.connect() is conn  # ready: no new attempt
        await server.shutdown(grace=1)  # GOAWAY, then the connection closes
        for _ in range(500):
            if ep.state is S.IDLE:
                break
            await asyncio.sleep(0.01)
        assert ep.connection is None and ep.state is S.IDLE
        with pytest.raises(fastrpc.Unavailable):
            await ep.connect()  # refused: nothing listens any more
        assert ep.state is S.FAILED and isinstance(ep.last_error, OSError)
        with pytest.raises(fastrpc.Unavailable, match="next attempt in"):
            await ep.connect()  # within the backoff: fails at once
        others: List[EndpointState] = []
        ep.subscribe(lambda e: others.append(e.state))
        unsubscribe()  # the first listener hears no more
        await ep.close()
        assert ep.state is S.SHUTDOWN and others == [S.SHUTDOWN]
        with pytest.raises(fastrpc.Unavailable, match="closed"):
            await ep.connect()
        assert seen[:2] == [S.CONNECTING, S.READY] and S.SHUTDOWN not in seen
        assert S.FAILED in seen

    run(main())


def test_endpoint_keeps_itself_connected(run):
    async def main():
        port = free_port()
        address = f"127.0.0.1:{port}"
        ep = Endpoint(address, fastrpc.ClientOptions(backoff=fastrpc.Backoff(base=0.01, maximum=0.05)))
        first = ep.start()
        assert await asyncio.wait_for(first, 5) is False  # nothing listens yet
        server = fastrpc.Server()
        server.register(Arith())
        await server.start(f"tcp://{address}")
        try:
            for _ in range(500):
                if ep.state is S.READY:
                    break
                await asyncio.sleep(0.01)
            assert ep.state is S.READY
            assert await ep.connection.call("Arith.add", [1, 2]) == 3
        finally:
            await ep.close()
            await server.shutdown()

    run(main())


def test_round_robin_picker_takes_turns_among_ready_endpoints():
    eps = [Endpoint(f"127.0.0.1:{9000 + i}") for i in range(3)]
    picker = RoundRobinPicker(eps)
    assert [picker.pick("m") for _ in range(7)] == eps + eps + eps[:1]
    assert RoundRobinPicker([]).pick("m") is None


class Recording(Picker):
    """A user's picker: always the last ready endpoint, and it remembers
    what it was built from."""

    built: List[List[Endpoint]] = []

    def __init__(self, ready: Sequence[Endpoint]) -> None:
        super().__init__(ready)
        Recording.built.append(list(ready))

    def pick(self, method: str, args: Any = (), kwargs: Any = None, metadata: Any = None) -> Optional[Endpoint]:
        return self.ready[-1] if self.ready else None


def test_pool_rebuilds_its_picker_from_ready_endpoints(run):
    async def main():
        Recording.built = []
        server, address = await _serve()
        try:
            async with fastrpc.Pool([address], size=3, picker=Recording) as pool:
                for _ in range(500):
                    if pool.connected == 3:
                        break
                    await asyncio.sleep(0.01)
                assert pool.connected == 3
                for ready in Recording.built:
                    assert all(ep.state is S.READY for ep in ready)
                assert await pool.call("Arith.multiply", 3, 4) == 12
                last = Recording.built[-1][-1]
                assert last.connection._next_id == 1  # the picker chose it
        finally:
            await server.shutdown()

    run(main())


def test_pool_uses_only_public_interfaces():
    """Nothing in pool.py touches another object's private state (the old
    Pool reached into AsyncClient's ``_protocol``, ``_resend_to``, ...)."""
    path = os.path.join(os.path.dirname(fastrpc.__file__), "client", "pool.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    private = [
        f"line {node.lineno}: {ast.unparse(node) if hasattr(ast, 'unparse') else node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert private == []
