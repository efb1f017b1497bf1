"""End-to-end basics: registration, the seed example, the error model."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading

import pytest

import fastrpc
from fastrpc import StatusCode

from rpc_support import Arith


class Errors:
    def permission(self):
        raise fastrpc.RpcError(StatusCode.PERMISSION_DENIED, "not yours", {"owner": "alice"})

    def not_found(self):
        raise fastrpc.NotFound("no such thing")

    def value_error(self):
        raise ValueError("bad value")

    def type_error_inside(self, x):
        return len(x)  # TypeError raised inside the body, not a bad call

    async def async_fail(self):
        await asyncio.sleep(0)
        raise fastrpc.RpcError(StatusCode.RESOURCE_EXHAUSTED, "full")

    def unencodable(self):
        return object()


class Misc:
    def __init__(self):
        self.notes = []
        self._noted = None
        self.threads = []

    def _noted_event(self):
        # Made on first use, inside the test's loop: on Python 3.9 an Event
        # made outside a running loop binds to get_event_loop(), which fails
        # once an earlier test has called set_event_loop(None).
        if self._noted is None:
            self._noted = asyncio.Event()
        return self._noted

    def kw(self, a, b=2, *, c=3):
        return [a, b, c]

    def note(self, value):
        self.notes.append(value)
        self._noted_event().set()

    @fastrpc.blocking
    def which_thread(self):
        return threading.current_thread().name

    def where(self):
        return threading.current_thread().name

    secret = "not callable"

    def _private(self):
        return "private"


async def _serve(*services, **options):
    server = fastrpc.Server(**options)
    for s in services:
        server.register(s)
    address = await server.start("tcp://127.0.0.1:0")
    return server, address


def test_seed_example(run, client_kind):
    async def main():
        server, address = await _serve(Arith())
        try:
            async with client_kind.client(address) as client:
                assert await client.call("Arith.multiply", 7, 8) == 56
                assert await client.proxy("Arith").multiply(6, 7) == 42
        finally:
            await server.shutdown()

    run(main())


def test_connect_function_and_method_table(run):
    async def main():
        server, address = await _serve(Arith())
        try:
            client = await fastrpc.connect(address)
            assert client.methods == server.methods == sorted(server.methods)
            assert "Arith.multiply" in client.methods
            assert await client.call("Arith.add", 2, 3) == 5
            await client.close()
            with pytest.raises(fastrpc.Unavailable):
                await client.call("Arith.add", 2, 3)
        finally:
            await server.shutdown()

    run(main())


def test_registration_exposes_only_public_methods():
    server = fastrpc.Server()
    names = server.register(Misc(), name="M")
    assert set(names) == {"M.kw", "M.note", "M.which_thread", "M.where"}
    with pytest.raises(ValueError):
        server.register(Misc(), name="M")  # same names twice
    server.register_function(lambda x: x, name="identity")
    with pytest.raises(ValueError):
        server.register_function(len)  # builtins have a name; registering twice fails
        server.register_function(len)


def test_register_after_start_is_refused(run):
    async def main():
        server, _ = await _serve(Arith())
        try:
            with pytest.raises(RuntimeError):
                server.register_function(lambda: 1, name="late")
        finally:
            await server.shutdown()

    run(main())


def test_error_model(run, client_kind):
    async def main():
        server, address = await _serve(Errors(), Arith())
        try:
            async with client_kind.client(address) as c:
                with pytest.raises(fastrpc.PermissionDenied) as ei:
                    await c.call("Errors.permission")
                assert ei.value.code == StatusCode.PERMISSION_DENIED
                assert ei.value.message == "not yours"
                assert ei.value.details == {"owner": "alice"}
                assert isinstance(ei.value, fastrpc.RpcError)

                with pytest.raises(fastrpc.NotFound, match="no such thing"):
                    await c.call("Errors.not_found")
                with pytest.raises(fastrpc.Unknown) as ei:
                    await c.call("Errors.value_error")
                assert "ValueError: bad value" in ei.value.message
                assert ei.value.details is None  # no traceback outside debug mode
                with pytest.raises(fastrpc.Unknown):
                    await c.call("Errors.type_error_inside", 5)
                with pytest.raises(fastrpc.ResourceExhausted):
                    await c.call("Errors.async_fail")
                with pytest.raises(fastrpc.Internal, match="cannot encode"):
                    await c.call("Errors.unencodable")
                # unknown method, wrong arguments
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Arith.nope")
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Nope.multiply")
                with pytest.raises(fastrpc.InvalidArgument):
                    await c.call("Arith.multiply", 1)
                with pytest.raises(fastrpc.InvalidArgument):
                    await c.call("Arith.multiply", 1, 2, 3)
                with pytest.raises(fastrpc.InvalidArgument):
                    await c.call("Arith.multiply", 1, z=2)
                with pytest.raises(fastrpc.NotFound):
                    await c.call("Arith._private")
                # the connection survives all of it
                assert await c.call("Arith.multiply", 7, 8) == 56
        finally:
            await server.shutdown()

    run(main())


def test_debug_mode_sends_traceback(run):
    async def main():
        server, address = await _serve(Errors(), debug=True)
        try:
            async with fastrpc.AsyncClient(address) as c:
                with pytest.raises(fastrpc.Unknown) as ei:
                    await c.call("Errors.value_error")
                assert "Traceback" in ei.value.details["traceback"]
                assert "value_error" in ei.value.details["traceback"]
        finally:
            await server.shutdown()

    run(main())


def test_private_and_non_method_attributes_unreachable(run):
    async def main():
        server, address = await _serve(Misc())
        try:
            async with fastrpc.AsyncClient(address) as c:
                for name in ("Misc._private", "Misc.secret", "Misc.__init__", "Misc.__class__", "Misc.notes"):
                    with pytest.raises(fastrpc.NotFound):
                        await c.call(name)
        finally:
            await server.shutdown()

    run(main())


def test_kwargs_notify_blocking(run):
    async def main():
        misc = Misc()
        server, address = await _serve(misc)
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("Misc.kw", 1) == [1, 2, 3]
                assert await c.call("Misc.kw", 1, b=5, c=6) == [1, 5, 6]
                await c.notify("Misc.note", "hello")
                await asyncio.wait_for(misc._noted_event().wait(), 5)
                assert misc.notes == ["hello"]
                # a failing notification is not answered and breaks nothing
                await c.notify("Misc.kw")
                await c.notify("Nope.nope")
                assert (await c.call("Misc.which_thread")).startswith("fastrpc-blocking")
                assert await c.call("Misc.where") == threading.current_thread().name  # inline on the loop
        finally:
            await server.shutdown()

    run(main())


def test_unix_socket(run, client_kind):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "rpc.sock")
            server = fastrpc.Server()
            server.register(Arith())
            address = await server.start(f"unix:{path}")
            assert address == f"unix:{path}"
            try:
                async with client_kind.client(address) as c:
                    assert await c.call("Arith.multiply", 7, 8) == 56
                    assert await c.call("Arith.multiply", 3, 3, timeout=5) == 9
            finally:
                await server.shutdown()
            assert not os.path.exists(path)

    run(main())


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this machine")
def test_ipv6_and_several_listeners(run):
    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        a4, a6 = await server.start("tcp://127.0.0.1:0", "tcp://[::1]:0")
        assert a6.startswith("tcp://[::1]:")
        try:
            for address in (a4, a6):
                async with fastrpc.AsyncClient(address) as c:
                    assert await c.call("Arith.multiply", 7, 8) == 56
        finally:
            await server.shutdown()

    run(main())


def test_responses_of_one_batch_leave_in_one_write(run):
    """Requests that arrive in one chunk are answered with one transport.write."""

    async def main():
        server, address = await _serve(Arith())
        writes = []
        orig = fastrpc.server.connection.ServerConnection.connection_made

        def spy(self, transport):
            real_write = transport.write

            class Spy:
                def __getattr__(self, name):
                    return getattr(transport, name)

                def write(self, data):
                    writes.append(len(data))
                    real_write(data)

            orig(self, transport)
            self._transport = Spy()

        fastrpc.server.connection.ServerConnection.connection_made = spy
        try:
            w = fastrpc.FrameWriter()
            w.write_preface()
            w.write_frame(fastrpc.MsgType.HANDSHAKE, 0, {})
            for i in range(1, 51):
                w.write_request(i, "Arith.multiply", [i, 2])
            reader, writer = await asyncio.open_connection(*address[6:].rsplit(":", 1))
            writer.write(w.take())
            parser = fastrpc.FrameParser()
            frames = []
            while len(frames) < 51:
                frames += parser.feed(await asyncio.wait_for(reader.read(65536), 5))
            writer.close()
            responses = [f for f in frames if f.type == fastrpc.MsgType.RESPONSE]
            assert [f.value for f in responses] == [i * 2 for i in range(1, 51)]
            # The preface went out at connection time (before the spy); the
            # handshake answer and all 50 responses leave in a single write.
            assert len(writes) == 1, writes
        finally:
            fastrpc.server.connection.ServerConnection.connection_made = orig
            await server.shutdown()

    run(main())


@pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)
@pytest.mark.parametrize("size", [64 * 1024, 3 * 1024 * 1024 + 7])
def test_large_bytes_both_ways_on_every_client(run, size, tmp_path, client_kind):
    """Large bytes values go out by reference (writelines / sendmsg) in both
    directions; they must arrive intact, over TCP and Unix sockets."""

    async def main():
        server = fastrpc.Server()
        server.register(Arith())
        tcp, unix = await server.start("tcp://127.0.0.1:0", f"unix:{tmp_path}/s.sock")
        blob = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
        try:
            for address in (tcp, unix):
                async with client_kind.client(address) as c:
                    # several at once (the sync client: from several threads)
                    results = await asyncio.gather(*(c.call("Arith.echo", [blob, i]) for i in range(4)))
                    assert results == [[blob, i] for i in range(4)]
                    assert await c.call("Arith.echo", blob) == blob
                    assert await c.call("Arith.echo", [blob, blob], timeout=30) == [blob, blob]
                    assert await c.go("Arith.echo", blob) == blob
        finally:
            await server.shutdown()

    run(main())
