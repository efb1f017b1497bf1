"""TLS and mutual TLS on the server and every client, with certificates
made at test time (trustme): calls (large ones too), the client's
certificate in the call context, and the failures: an unknown CA, a wrong
host name, a client without a certificate where one is required, plain TCP
against TLS and back.  The server goes on serving after each."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

trustme = pytest.importorskip("trustme", reason="trustme is not installed (pip install .[test])")

import fastrpc  # noqa: E402

from rpc_support import Arith  # noqa: E402

ALL = pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)


class Who(Arith):
    def who(self) -> Any:
        cert = fastrpc.current_call().peer_certificate
        if cert is None:
            return None
        return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]

    def blob(self, data: bytes) -> bytes:
        return data[::-1]


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


def server_context(ca: Any, require_client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return ctx


def client_context(ca: Any, name: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if name:
        ca.issue_cert(name).configure_cert(ctx)
    return ctx


async def _serve(ctx: Any, address: str = "tcp://127.0.0.1:0") -> Any:
    server = fastrpc.Server(ssl=ctx)
    server.register(Who(), "Who")
    return server, await server.start(address)


@ALL
def test_calls_over_tls(run, client_kind, ca):
    async def main():
        server, address = await _serve(server_context(ca))
        assert address.startswith("tls://127.0.0.1:")
        try:
            async with client_kind.client(address, ssl=client_context(ca)) as c:
                assert await c.call("Who.multiply", 6, 7) == 42
                assert await c.call("Who.who") is None  # no client certificate
                big = bytes(range(256)) * 1024  # 256 KiB: sent by reference, in pieces
                assert await c.call("Who.blob", big) == big[::-1]
                calls = [c.call("Who.add", i, 1) for i in range(50)]
                assert await asyncio.gather(*calls) == [i + 1 for i in range(50)]
        finally:
            await server.shutdown()

    run(main())


@ALL
def test_mutual_tls_shows_the_client_certificate(run, client_kind, ca):
    async def main():
        server, address = await _serve(server_context(ca, require_client=True))
        try:
            async with client_kind.client(address, ssl=client_context(ca, "client-1.example")) as c:
                assert await c.call("Who.who") == ["client-1.example"]
        finally:
            await server.shutdown()

    run(main())


async def _refused(client_kind: Any, address: str, **options: Any) -> BaseException:
    # Connecting fails with a typed error (Unavailable, its cause the TLS
    # or connection error), not a hang.
    with pytest.raises(fastrpc.Unavailable) as info:
        driver = await client_kind.open(address, connect=False, connect_timeout=5.0, **options)
        try:
            await asyncio.wait_for(driver.call("Who.add", 1, 2), 10)
        finally:
            await driver.close()
    return info.value


@pytest.mark.parametrize("client_kind", ["sync", "async"], indirect=True)
def test_tls_failures_are_typed_and_the_server_goes_on(run, client_kind, ca):
    async def main():
        server, address = await _serve(server_context(ca, require_client=True))
        plain, plain_address = await _serve(None)
        other = trustme.CA()
        try:
            # No client certificate where one is required.
            await _refused(client_kind, address, ssl=client_context(ca))
            # The server's certificate from a CA the client does not trust
            # (the default context: the system's CAs).
            err = await _refused(client_kind, address, ssl=client_context(other, "client-1.example"))
            assert "CERTIFICATE_VERIFY_FAILED" in str(err) or isinstance(err.__cause__, ssl.SSLError)
            await _refused(client_kind, address)  # tls:// alone: system CAs
            # A name the certificate does not carry.
            await _refused(client_kind, address, ssl=client_context(ca, "c.example"), server_hostname="wrong.example")
            # Plain TCP against TLS, and TLS against plain TCP.
            await _refused(client_kind, address.replace("tls://", "tcp://"))
            await _refused(client_kind, plain_address.replace("tcp://", "tls://"), ssl=client_context(ca))
            # Through all that the server kept serving.
            async with client_kind.client(address, ssl=client_context(ca, "client-2.example")) as c:
                assert await c.call("Who.who") == ["client-2.example"]
        finally:
            await server.shutdown()
            await plain.shutdown()

    run(main())


def test_tls_address_needs_a_context(run):
    async def main():
        server = fastrpc.Server()
        server.register(Who(), "Who")
        with pytest.raises(ValueError, match="tls://"):
            await server.start("tls://127.0.0.1:0")
        await server.shutdown()

    run(main())


def test_ssl_must_be_a_context():
    with pytest.raises(TypeError):
        fastrpc.Server(ssl=True)
    with pytest.raises(TypeError):
        fastrpc.ClientOptions(ssl="yes")


def test_address_forms():
    from fastrpc.transport.address import parse_address

    a = parse_address("tls://localhost:9000")
    assert (a.kind, a.host, a.port) == ("tls", "localhost", 9000) and str(a) == "tls://localhost:9000"
    assert str(parse_address("tls://[::1]:1")) == "tls://[::1]:1"
    assert parse_address("tcp://h:1").kind == "tcp"
