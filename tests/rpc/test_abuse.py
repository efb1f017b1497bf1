"""Protocol abuse at the connection level: each gets a clear error, and the
server goes on serving everybody else."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

import fastrpc
from fastrpc import MsgType, StatusCode

from rpc_support import Arith


class Gate:
    def __init__(self):
        self.gate = asyncio.Event()

    async def wait(self, v):
        await self.gate.wait()
        return v


async def _server():
    server = fastrpc.Server()
    server.register(Arith())
    server.register(Gate())
    address = await server.start("tcp://127.0.0.1:0")
    host, port = address[6:].rsplit(":", 1)
    return server, address, (host, int(port))


async def _exchange(hostport, payload, until_closed=True, want=None):
    reader, writer = await asyncio.open_connection(*hostport)
    writer.write(payload)
    parser = fastrpc.FrameParser()
    frames = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            frames += parser.feed(chunk)
            if want is not None and want(frames):
                break
    finally:
        writer.close()
    return frames


def _hello():
    w = fastrpc.FrameWriter()
    w.write_preface()
    w.write_frame(MsgType.HANDSHAKE, 0, {})
    return w


def _raw_frame(mtype, flags=0, method=0, rid=0, body=b""):
    return struct.pack(">IBBHI", 8 + len(body), mtype, flags, method, rid) + body


async def _still_serving(address):
    async with fastrpc.AsyncClient(address) as c:
        assert await c.call("Arith.multiply", 7, 8) == 56


@pytest.mark.parametrize("mtype", [0, 10, 99, 255])
def test_unknown_message_type_closes_with_goaway(run, mtype):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            w.write_request(1, "Arith.multiply", [2, 3])
            frames = await _exchange(hp, w.take() + _raw_frame(mtype, rid=2))
            assert [f.value for f in frames if f.type == MsgType.RESPONSE] == [6]
            assert frames[-1].type == MsgType.GOAWAY
            assert "unknown message type" in frames[-1].value[1]
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_reserved_flags_and_truncated_fields_close_with_goaway(run):
    async def main():
        server, address, hp = await _server()
        try:
            for bad in (
                _raw_frame(MsgType.REQUEST, flags=0x80, rid=1, body=b"\x90"),
                _raw_frame(MsgType.REQUEST, flags=0x01, rid=1, body=b"\x00\x50ab"),  # name runs past the frame
                _raw_frame(MsgType.REQUEST, flags=0x02, rid=1, body=b"\x00\x01"),  # deadline cut short
                _raw_frame(MsgType.REQUEST, flags=0x01, rid=1, body=b"\x00\x02\xff\xfe\x90"),  # name not UTF-8
            ):
                frames = await _exchange(hp, _hello().take() + bad)
                assert frames[-1].type == MsgType.GOAWAY, frames
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_request_id_reused_while_in_flight(run):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            w.write_request(5, "Gate.wait", ["first"])
            w.write_request(5, "Gate.wait", ["second"])
            frames = await _exchange(hp, w.take())
            assert frames[-1].type == MsgType.GOAWAY
            assert "reused" in frames[-1].value[1]
            # the first call was cancelled with the connection, never answered twice
            assert not [f for f in frames if f.type in (MsgType.RESPONSE, MsgType.ERROR)]
            await asyncio.sleep(0.05)
            assert server.connections == 0
            # ids may be reused once the call has finished
            w = _hello()
            w.write_request(5, "Arith.multiply", [2, 2])
            w.write_request(5, "Arith.multiply", [3, 3])
            frames = await _exchange(
                hp, w.take(), want=lambda fs: len([f for f in fs if f.type == MsgType.RESPONSE]) == 2
            )
            assert [f.value for f in frames if f.type == MsgType.RESPONSE] == [4, 9]
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_cancel_for_unknown_ids_is_ignored(run):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            for rid in (0, 1, 77, 0xFFFFFFFF):
                w.write_frame(MsgType.CANCEL, rid, None)
            w.write_request(9, "Arith.multiply", [3, 4])
            frames = await _exchange(hp, w.take(), want=lambda fs: any(f.type == MsgType.RESPONSE for f in fs))
            assert [(f.request_id, f.value) for f in frames if f.type == MsgType.RESPONSE] == [(9, 12)]
            assert not any(f.type == MsgType.GOAWAY for f in frames)
        finally:
            await server.shutdown()

    run(main())


def test_frame_announcing_4_gib_is_refused_before_buffering(run):
    async def main():
        server, address, hp = await _server()
        try:
            frames = await _exchange(hp, _hello().take() + b"\xff\xff\xff\xff" + os.urandom(64))
            assert frames[-1].type == MsgType.GOAWAY
            assert "max_frame_size" in frames[-1].value[1]
            await _still_serving(address)
        finally:
            await server.shutdown()

    run(main())


def test_undecodable_arguments_fail_only_that_call(run):
    async def main():
        server, address, hp = await _server()
        try:
            w = _hello()
            bad_payload = _raw_frame(MsgType.REQUEST, flags=0x01, rid=1, body=b"\x00\x0eArith.multiply" + b"\xc1")
            w2 = fastrpc.FrameWriter()
            w2.write_request(2, "Arith.multiply", [5, 6])
            frames = await _exchange(
                hp, w.take() + bad_payload + w2.take(),
                want=lambda fs: len([f for f in fs if f.type in (MsgType.RESPONSE, MsgType.ERROR)]) == 2,
            )
            answers = {f.request_id: f for f in frames if f.type in (MsgType.RESPONSE, MsgType.ERROR)}
            assert answers[1].type == MsgType.ERROR and answers[1].value[0] == StatusCode.INVALID_ARGUMENT
            assert answers[2].value == 30
        finally:
            await server.shutdown()

    run(main())


def test_no_code_executing_codec_is_reachable():
    """Only msgpack-shaped values come off the wire: no pickle, marshal or
    eval anywhere in the package."""
    import fastrpc as pkg

    root = os.path.dirname(pkg.__file__)
    for name in os.listdir(root):
        if name.endswith((".py", ".pyx", ".pxd")):
            with open(os.path.join(root, name)) as f:
                text = f.read()
            for banned in ("import pickle", "pickle.loads", "marshal.loads", "eval(", "exec("):
                assert banned not in text, f"{banned!r} in {name}"
    # an ext value arrives as inert data, never as an object of some class
    value = fastrpc.unpackb(fastrpc.packb(fastrpc.ExtType(5, b"payload")))
    assert type(value) is fastrpc.ExtType and value.data == b"payload"
