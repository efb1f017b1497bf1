"""Compression: agreed at handshake (zstd, lz4), used both ways above the
threshold and only when it pays, the per-call opt-out, peers without it,
and a decompression bomb answered with a typed error (the connection and
the server going on)."""

from __future__ import annotations

import asyncio
import os
from typing import Any, List

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install .[test])")

from prometheus_client import CollectorRegistry  # noqa: E402

import fastrpc  # noqa: E402
from fastrpc.middleware.metrics import ServerMetrics  # noqa: E402
from fastrpc.wire import compression as C  # noqa: E402

from rpc_support import Arith, hostport  # noqa: E402

CODECS = [name for name in C.CODECS if name in C.available()]
if not CODECS:  # pragma: no cover
    pytest.skip("neither zstandard nor lz4 is installed (pip install .[test])", allow_module_level=True)

TEXT = ("the quick brown fox jumps over the lazy dog " * 400).encode()  # 18 KB, compresses well


class Svc(Arith):
    def size(self, data: bytes) -> int:
        return len(data)

    def make(self, n: int) -> bytes:
        return (TEXT * (n // len(TEXT) + 1))[:n]

    def noise(self, n: int) -> bytes:
        return os.urandom(n)


async def _serve(**options: Any) -> Any:
    metrics = ServerMetrics(CollectorRegistry())
    server = fastrpc.Server(metrics=metrics, **options)
    server.register(Svc(), "Svc")
    return server, await server.start("tcp://127.0.0.1:0"), metrics


def _agreed(driver: Any) -> Any:
    raw = driver.raw
    conn = raw._conn if isinstance(raw, fastrpc.Client) else (raw.endpoint.connection if isinstance(raw, fastrpc.AsyncClient) else raw.endpoints[0].connection)
    return conn.compression


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client_kind", ["sync", "async", "pool"], indirect=True)
def test_compressed_both_ways(run, client_kind, codec):
    async def main():
        server, address, metrics = await _serve()
        try:
            async with client_kind.client(address, compression=codec) as c:
                assert await c.call("Svc.add", 1, 2) == 3
                assert _agreed(c) == codec
                before = metrics.received_bytes, metrics.sent_bytes
                assert await c.call("Svc.size", TEXT) == len(TEXT)  # request compressed
                assert await c.call("Svc.make", 200_000) == (TEXT * 12)[:200_000]  # answer compressed
                rx = metrics.received_bytes - before[0]
                tx = metrics.sent_bytes - before[1]
                assert rx < len(TEXT) // 4 and tx < 200_000 // 4
                # Incompressible: sent as it is (it would not pay).
                noise = os.urandom(50_000)
                before = metrics.received_bytes
                assert await c.call("Svc.size", noise) == 50_000
                assert metrics.received_bytes - before > 50_000
                assert len(await c.call("Svc.noise", 50_000)) == 50_000
                # Below the threshold: as it is.
                assert await c.call("Svc.echo", "x" * 500) == "x" * 500
                # The per-call opt-out.
                before = metrics.received_bytes
                assert await c.call("Svc.size", TEXT, compress=False) == len(TEXT)
                assert metrics.received_bytes - before > len(TEXT)
        finally:
            await server.shutdown()

    run(main())


@pytest.mark.parametrize("client_kind", ["sync", "async"], indirect=True)
def test_peers_without_compression(run, client_kind):
    async def main():
        plain, plain_address, plain_metrics = await _serve(compression=None)
        server, address, metrics = await _serve()
        try:
            # The client offers, the server takes none: plain frames.
            async with client_kind.client(plain_address, compression="auto") as c:
                assert _agreed(c) is None
                before = plain_metrics.received_bytes
                assert await c.call("Svc.size", TEXT) == len(TEXT)
                assert plain_metrics.received_bytes - before > len(TEXT)
            # The server would, the client does not offer (the default).
            async with client_kind.client(address) as c:
                assert _agreed(c) is None
                assert await c.call("Svc.make", 100_000) == (TEXT * 6)[:100_000]
                assert metrics.sent_bytes > 100_000
        finally:
            await plain.shutdown()
            await server.shutdown()

    run(main())


def test_a_decompression_bomb_is_a_typed_error(run):
    async def main():
        codec = C.get(CODECS[0])
        server, address, _ = await _serve(max_frame_size=256 * 1024)
        host, port = hostport(address)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            w = fastrpc.FrameWriter()
            w.write_preface()
            w.write_frame(fastrpc.MsgType.HANDSHAKE, 0, {"client": "test", "compression": [CODECS[0]]})
            writer.write(w.take())
            parser = fastrpc.FrameParser()
            frames: List[Any] = []

            async def read(n: int) -> None:
                while len(frames) < n:
                    data = await asyncio.wait_for(reader.read(65536), 5)
                    assert data, "connection closed"
                    frames.extend(parser.feed(data))

            await read(1)
            assert frames[0].value["compression"] == CODECS[0]
            # 64 MB of zeros in a few KB: more than 200 times the server's limit.
            payload = fastrpc.packb([b"\0" * (64 * 1024 * 1024)])
            bomb = bytes((codec.id,)) + codec.compress(payload)
            assert len(bomb) < 256 * 1024
            raw = fastrpc.FrameWriter()
            raw.write_request(1, "Svc.size", [b"x"])  # a normal frame, then its payload swapped
            frame = bytearray(raw.take())
            header = bytearray(frame[:12])
            header[5] |= fastrpc.wire.constants.FLAG_COMPRESSED | fastrpc.wire.constants.FLAG_METHOD_NAME
            name = b"Svc.size"
            body = len(name).to_bytes(2, "big") + name + bomb
            header[0:4] = (8 + len(body)).to_bytes(4, "big")
            header[6:8] = b"\0\0"
            writer.write(bytes(header) + body)
            ok = fastrpc.FrameWriter()
            ok.write_request(2, "Svc.add", [2, 3])
            writer.write(ok.take())
            await read(3)
            err, answer = frames[1], frames[2]
            assert err.type == fastrpc.MsgType.ERROR and err.request_id == 1
            assert err.value[0] == fastrpc.StatusCode.INVALID_ARGUMENT and "limit" in err.value[1]
            assert answer.request_id == 2 and answer.value == 5  # the connection goes on
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_codec_round_trips_and_limits():
    for name in CODECS:
        comp = C.compressor(name, threshold=0)
        dec = C.decompressor([name], limit=100_000)
        packed = comp(TEXT)
        assert packed is not None and len(packed) < len(TEXT) // 4
        assert dec(packed) == TEXT
        assert comp(os.urandom(4096)) is None  # does not pay
        with pytest.raises(fastrpc.DecodeError, match="limit"):
            C.decompressor([name], limit=1000)(packed)
        with pytest.raises(fastrpc.DecodeError):
            dec(packed[:1] + b"garbage" * 10)
    with pytest.raises(fastrpc.DecodeError, match="agree"):
        C.decompressor([CODECS[0]], 100)(bytes((99,)) + b"x")
    with pytest.raises(ValueError):
        fastrpc.ClientOptions(compression="brotli")
    assert C.negotiate(["lz4", "zstd"], ["zstd"]) == ("zstd" if "zstd" in CODECS else None)
    assert C.negotiate([1, None], ["zstd"]) is None
