"""Other protocols on fastrpc's port: msgpack-rpc (aiorpc, a real client
from PyPI, and raw sockets for the exact wire forms) and JSON-RPC 1.0 (Go's
own ``net/rpc/jsonrpc`` client, built here when ``go`` is installed, and raw
sockets); the first bytes of each connection choose its protocol, and the
native protocol shares the port unchanged.

Go: skipped without ``go`` on PATH, unless ``FASTRPC_REQUIRE_GO=1`` (CI),
which makes its absence a failure.  The Go program uses only the standard
library and is built offline in the test's temporary folder.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from typing import Any, Dict, List, Tuple

import msgpack
import pytest

import fastrpc
from fastrpc.errors import StatusCode

from rpc_support import hostport


class Arith:
    """net/rpc's Arith example, in Python."""

    def multiply(self, a: int, b: int) -> int:
        return a * b

    def divide(self, a: int, b: int) -> Dict[str, int]:
        if b == 0:
            raise ValueError("divide by zero")
        return {"Quo": a // b, "Rem": a % b}

    def nothing(self) -> None:
        return None

    def strict(self, a: Any) -> Any:
        raise fastrpc.errors.InvalidArgument(f"a must be positive, not {a!r}")

    def join(self, first: str, second: str = "", *, sep: str = " ") -> str:
        return f"{first}{sep}{second}"

    def raw(self) -> bytes:
        return b"\x00\xff"

    def naive(self) -> Any:
        import datetime

        return datetime.datetime(2026, 12, 1)  # no time zone: no RFC 3339 form

    async def later(self, seconds: float, value: Any) -> Any:
        await asyncio.sleep(seconds)
        return value

    @fastrpc.blocking
    def pooled(self, value: Any) -> Any:
        return ["pooled", value]


class Recorder:
    def __init__(self) -> None:
        self.notes: List[Any] = []

    def note(self, value: Any) -> None:
        self.notes.append(value)

    def seen(self) -> List[Any]:
        return list(self.notes)


async def _server(**options: Any) -> Tuple[fastrpc.Server, str, Tuple[str, int], Recorder]:
    server = fastrpc.Server(**options)
    server.register(Arith())
    recorder = Recorder()
    server.register(recorder)
    address = await server.start("tcp://127.0.0.1:0")
    return server, address, hostport(address), recorder


async def _msgpack_exchange(where: Tuple[str, int], messages: List[Any], want: int, timeout: float = 5.0) -> List[Any]:
    """Send msgpack-rpc messages on one connection; the first ``want``
    messages answered."""
    reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(b"".join(msgpack.packb(m) for m in messages))
        unpacker = msgpack.Unpacker()
        out: List[Any] = []
        while len(out) < want:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            unpacker.feed(chunk)
            out.extend(unpacker)
        return out
    finally:
        writer.close()


async def _json_exchange(where: Tuple[str, int], payload: bytes, want: int, timeout: float = 5.0) -> List[Any]:
    """Send bytes on a JSON-RPC connection; the first ``want`` answers
    (one per line, as sent)."""
    reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(payload)
        out: List[Any] = []
        while len(out) < want:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                break
            out.append(json.loads(line))
        return out
    finally:
        writer.close()


async def _native_still_works(address: str) -> None:
    async with fastrpc.AsyncClient(address) as c:
        assert await c.call("Arith.multiply", 6, 7) == 42


# --------------------------------------------------------------------------- msgpack-rpc


def _aiorpc_client(where: Tuple[str, int]) -> Any:
    """aiorpc's RPCClient; 0.1.7 passes ``loop=`` to open_connection, gone
    in Python 3.10, so the connection is opened without it (nothing else
    changes)."""
    aiorpc = pytest.importorskip("aiorpc")
    from aiorpc.connection import Connection

    class Client(aiorpc.RPCClient):
        async def _open_connection(self) -> None:
            reader, writer = await asyncio.open_connection(self._host, self._port)
            self._conn = Connection(reader, writer, msgpack.Unpacker(raw=False, **self._unpack_params))

    return Client(*where, timeout=5)


def test_aiorpc_calls_arith_multiply(run):
    async def main():
        server, address, where, _ = await _server()
        try:
            client = _aiorpc_client(where)
            try:
                assert await client.call("Arith.multiply", 7, 8) == 56
                assert await client.call("Arith.divide", 17, 8) == {"Quo": 2, "Rem": 1}
                assert await client.call("Arith.nothing") is None
                assert await client.call("Arith.later", 0.01, "async") == "async"
                assert await client.call("Arith.pooled", 3) == ("pooled", 3)  # aiorpc: use_list=False
            finally:
                client.close()
            await _native_still_works(address)
        finally:
            await server.shutdown()

    run(main())


def test_aiorpc_sees_code_and_message_of_an_error(run):
    from aiorpc.exceptions import EnhancedRPCError  # noqa: F401 - skips below when absent

    async def main():
        server, _, where, _ = await _server()
        try:
            client = _aiorpc_client(where)
            try:
                with pytest.raises(EnhancedRPCError) as info:
                    await client.call("Arith.divide", 7, 0)
                assert info.value.parent == "UNKNOWN"
                assert StatusCode[info.value.parent] == StatusCode.UNKNOWN
                assert info.value.message == "ValueError: divide by zero"
                assert str(info.value) == "UNKNOWN: ValueError: divide by zero"
                with pytest.raises(EnhancedRPCError) as info:
                    await client.call("Arith.strict", -1)
                assert (info.value.parent, info.value.message) == ("INVALID_ARGUMENT", "a must be positive, not -1")
                with pytest.raises(EnhancedRPCError) as info:
                    await client.call("Arith.nope")
                assert info.value.parent == "NOT_FOUND"
                # The connection goes on after errors.
                assert await client.call("Arith.multiply", 2, 3) == 6
            finally:
                client.close()
        finally:
            await server.shutdown()

    pytest.importorskip("aiorpc")
    run(main())


def test_msgpack_rpc_wire_forms(run):
    async def main():
        server, _, where, _ = await _server()
        try:
            got = await _msgpack_exchange(where, [[0, 1, "Arith.multiply", [7, 8]]], 1)
            assert got == [[1, 1, None, 56]]
            got = await _msgpack_exchange(where, [[0, 2, "Arith.divide", [7, 0]]], 1)
            assert got == [[1, 2, ["UNKNOWN", "ValueError: divide by zero"], None]]
            got = await _msgpack_exchange(where, [[0, 3, "Arith.nope", []]], 1)
            assert got == [[1, 3, ["NOT_FOUND", "unknown method 'Arith.nope'"], None]]
            got = await _msgpack_exchange(where, [[0, 4, "Arith.multiply", [1]]], 1)
            assert got[0][:2] == [1, 4] and got[0][2][0] == "INVALID_ARGUMENT" and got[0][3] is None
            # bytes travel as msgpack bin; the largest msgid is echoed as is
            got = await _msgpack_exchange(where, [[0, 0xFFFFFFFF, "Arith.raw", []]], 1)
            assert got == [[1, 0xFFFFFFFF, None, b"\x00\xff"]]
            # Go-style names work here too
            got = await _msgpack_exchange(where, [[0, 5, "Arith.Multiply", [3, 4]]], 1)
            assert got == [[1, 5, None, 12]]
        finally:
            await server.shutdown()

    run(main())


def test_msgpack_rpc_notifications_run_without_answer(run):
    async def main():
        server, _, where, recorder = await _server()
        try:
            got = await _msgpack_exchange(
                where,
                [[2, "Recorder.note", ["a"]], [2, "Recorder.note", ["b"]], [2, "Arith.nope", []], [0, 9, "Recorder.seen", []]],
                1,
            )
            # Only the request is answered, after the notifications before it ran.
            assert got == [[1, 9, None, ["a", "b"]]]
            assert recorder.notes == ["a", "b"]
        finally:
            await server.shutdown()

    run(main())


def test_msgpack_rpc_answers_out_of_order(run):
    async def main():
        server, _, where, _ = await _server()
        try:
            got = await _msgpack_exchange(
                where,
                [[0, 1, "Arith.later", [0.3, "slow"]], [0, 2, "Arith.later", [0.0, "fast"]], [0, 3, "Arith.multiply", [2, 2]]],
                3,
            )
            assert [m[1] for m in got][-1] == 1  # the slow one answers last
            assert sorted(map(tuple, [m[:2] for m in got])) == [(1, 1), (1, 2), (1, 3)]
            assert {m[1]: m[3] for m in got} == {1: "slow", 2: "fast", 3: 4}
        finally:
            await server.shutdown()

    run(main())


def test_msgpack_rpc_many_pipelined_calls_each_answered_once(run):
    async def main():
        server, _, where, _ = await _server(max_in_flight=8)
        try:
            n = 500
            msgs = []
            for i in range(n):
                if i % 3 == 0:
                    msgs.append([0, i, "Arith.later", [0.001, i]])
                elif i % 3 == 1:
                    msgs.append([0, i, "Arith.pooled", [i]])
                else:
                    msgs.append([0, i, "Arith.multiply", [i, 2]])
            got = await _msgpack_exchange(where, msgs, n, timeout=10)
            ids = [m[1] for m in got]
            assert sorted(ids) == list(range(n))  # every call, once
            for m in got:
                i = m[1]
                assert m[3] == (i if i % 3 == 0 else ["pooled", i] if i % 3 == 1 else i * 2)
        finally:
            await server.shutdown()

    run(main())


# --------------------------------------------------------------------------- JSON-RPC 1.0


def test_jsonrpc_exact_answers(run):
    async def main():
        server, _, where, _ = await _server()
        try:
            reader, writer = await asyncio.open_connection(*where)
            try:
                writer.write(b'{"method":"Arith.Multiply","params":[{"A":7,"B":8}],"id":0}')
                line = await asyncio.wait_for(reader.readline(), 5)
                assert line == b'{"id":0,"result":56,"error":null}\n'
                writer.write(b'{"method":"Arith.Divide","params":[{"A":7,"B":0}],"id":1}\n')
                line = await asyncio.wait_for(reader.readline(), 5)
                assert line == b'{"id":1,"result":null,"error":"UNKNOWN: ValueError: divide by zero"}\n'
                # None is sent as {} (Go rejects a null result without an error)
                writer.write(b'{"method":"Arith.nothing","params":[],"id":"two"}')
                line = await asyncio.wait_for(reader.readline(), 5)
                assert line == b'{"id":"two","result":{},"error":null}\n'
            finally:
                writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_jsonrpc_names_and_arguments(run):
    async def main():
        server, _, where, _ = await _server()
        try:
            requests = [
                {"method": "Arith.multiply", "params": [3, 4], "id": 1},  # positional
                {"method": "Arith.Multiply", "params": [{"a": 5, "B": 6}], "id": 2},  # struct, any case
                {"method": "Arith.join", "params": {"first": "x", "second": "y", "sep": "-"}, "id": 3},  # by name
                {"method": "Arith.Join", "params": [{"First": "p", "Sep": "+"}], "id": 4},
                {"method": "Arith.echo_missing", "params": [], "id": 5},
                {"method": "Recorder.note", "params": [{"not": "a parameter"}], "id": 6},  # not spread: one positional dict
                {"method": "Recorder.seen", "params": [], "id": 7},
                {"method": "Arith.divide", "params": [{"A": 17, "B": 8}], "id": 8},
                {"method": "Arith.multiply", "params": [{"A": 1, "C": 2}], "id": 9},  # C is no parameter: not spread
            ]
            payload = b"\n".join(json.dumps(r).encode() for r in requests)
            got = {a["id"]: a for a in await _json_exchange(where, payload, len(requests))}
            assert got[1]["result"] == 12
            assert got[2]["result"] == 30
            assert got[3]["result"] == "x-y"
            assert got[4]["result"] == "p+"
            assert got[5]["error"] == "NOT_FOUND: unknown method 'Arith.echo_missing'" and got[5]["result"] is None
            assert got[6]["result"] == {}
            assert got[7]["result"] == [{"not": "a parameter"}]
            assert got[8]["result"] == {"Quo": 2, "Rem": 1}
            assert got[9]["error"].startswith("INVALID_ARGUMENT: ")
            for a in got.values():
                assert set(a) == {"id", "result", "error"}
                assert (a["error"] is None) != (a["result"] is None)  # never both null
                assert a["error"] is None or isinstance(a["error"], str) and a["error"]
        finally:
            await server.shutdown()

    run(main())


def test_jsonrpc_notifications_and_errors_keep_the_connection(run):
    async def main():
        server, _, where, recorder = await _server()
        try:
            payload = (
                b'{"method":"Recorder.note","params":["n1"],"id":null}'
                b'  \r\n\t{"method":"Arith.raw","params":[],"id":1}'  # bytes: base64 (docs/types.md)
                b'{"method":"Arith.naive","params":[],"id":5}'  # a naive datetime has no JSON form: INTERNAL
                b'{"method":5,"params":[],"id":2}'  # wrong type: answered, the stream goes on
                b'{"method":"Arith.multiply","params":[1,2]}'  # no id: answered with id null
                b'{"method":"Arith.strict","params":[{"A":-3}],"id":3}'
                b'{"method":"Recorder.seen","params":[],"id":4}'
            )
            got = await _json_exchange(where, payload, 6)
            by_id = {a["id"]: a for a in got}
            assert by_id[1]["result"] == "AP8=" and by_id[1]["error"] is None
            assert by_id[5]["error"].startswith("INTERNAL: Arith.naive: cannot encode the result")
            assert by_id[2]["error"].startswith("INVALID_ARGUMENT: jsonrpc:")
            assert by_id[None]["error"].startswith("INVALID_ARGUMENT: jsonrpc: a request needs an id")
            assert by_id[3]["error"] == "INVALID_ARGUMENT: a must be positive, not -3"
            assert by_id[4]["result"] == ["n1"]
            assert recorder.notes == ["n1"]
        finally:
            await server.shutdown()

    run(main())


# --------------------------------------------------------------------------- one dispatch path


def test_middleware_metrics_and_access_log_see_foreign_calls(run, caplog):
    seen: List[Tuple[str, Any, Any]] = []

    def mw(call: Any, call_next: Any) -> Any:
        seen.append((call.method, call.args, call.kwargs))
        return call_next(call)

    async def main():
        server, address, where, _ = await _server(middleware=[mw], access_log=True)
        try:
            assert (await _msgpack_exchange(where, [[0, 1, "Arith.multiply", [7, 8]]], 1))[0][3] == 56
            got = await _json_exchange(where, b'{"method":"Arith.Multiply","params":[{"A":2,"B":5}],"id":7}', 1)
            assert got[0]["result"] == 10
            await _native_still_works(address)
        finally:
            await server.shutdown()

    with caplog.at_level(logging.INFO, logger="fastrpc.access"):
        run(main())
    assert seen[0] == ("Arith.multiply", [7, 8], None)
    assert seen[1] == ("Arith.multiply", [], {"a": 2, "b": 5})
    assert seen[2][0] == "Arith.multiply"
    access = [r.getMessage() for r in caplog.records if r.name == "fastrpc.access"]
    assert sum("Arith.multiply" in m for m in access) == 3


def test_metrics_count_foreign_calls_connections_and_bytes(run):
    pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (pip install .[test])")
    from prometheus_client import CollectorRegistry

    from fastrpc.middleware.metrics import ServerMetrics

    registry = CollectorRegistry()

    def s(name: str, **labels: str) -> Any:
        return registry.get_sample_value(name, labels)

    async def main():
        server, _, where, _ = await _server(metrics=ServerMetrics(registry))
        try:
            reader, writer = await asyncio.open_connection(*where)
            writer.write(msgpack.packb([0, 1, "Arith.multiply", [7, 8]]) + msgpack.packb([0, 2, "Arith.divide", [1, 0]]))
            unpacker = msgpack.Unpacker()
            out: List[Any] = []
            while len(out) < 2:
                unpacker.feed(await asyncio.wait_for(reader.read(65536), 5))
                out.extend(unpacker)
            assert s("fastrpc_server_connections") == 1
            writer.close()
            await _json_exchange(where, b'{"method":"Arith.Multiply","params":[{"A":1,"B":2}],"id":1}', 1)
            for _ in range(200):
                if s("fastrpc_server_connections") == 0:
                    break
                await asyncio.sleep(0.01)
        finally:
            await server.shutdown()

    run(main())
    assert s("fastrpc_server_handled_total", method="Arith.multiply", code="OK") == 2
    assert s("fastrpc_server_handled_total", method="Arith.divide", code="UNKNOWN") == 1
    assert s("fastrpc_server_connections") == 0
    assert s("fastrpc_server_received_bytes_total") > 60
    assert s("fastrpc_server_sent_bytes_total") > 40


def test_max_in_flight_holds_foreign_calls_too(run):
    async def main():
        server, _, where, _ = await _server(max_in_flight=2)
        try:
            msgs = [[0, i, "Arith.later", [0.2, i]] for i in range(6)]
            t0 = asyncio.get_running_loop().time()
            got = await _msgpack_exchange(where, msgs, 6)
            took = asyncio.get_running_loop().time() - t0
            assert sorted(m[1] for m in got) == list(range(6))
            assert took >= 0.55  # three rounds of two, not one of six
        finally:
            await server.shutdown()

    run(main())


def test_draining_server_refuses_new_foreign_calls(run):
    async def main():
        server, _, where, _ = await _server()
        reader, writer = await asyncio.open_connection(*where)
        try:
            writer.write(msgpack.packb([0, 1, "Arith.later", [0.3, "kept"]]))
            unpacker = msgpack.Unpacker()
            await asyncio.sleep(0.1)
            stop = asyncio.ensure_future(server.shutdown(grace=5))
            await asyncio.sleep(0.05)
            writer.write(msgpack.packb([0, 2, "Arith.multiply", [1, 1]]))
            out: List[Any] = []
            while len(out) < 2:
                chunk = await asyncio.wait_for(reader.read(65536), 5)
                if not chunk:
                    break
                unpacker.feed(chunk)
                out.extend(unpacker)
            by_id = {m[1]: m for m in out}
            assert by_id[1][3] == "kept"
            assert by_id[2][2] == ["UNAVAILABLE", "server shutting down"]
            await stop
        finally:
            writer.close()

    run(main())


def test_native_only_server_does_not_sniff(run):
    async def main():
        server, address, where, _ = await _server(protocols=["fastrpc"])
        try:
            assert server.protocols == ["fastrpc"]
            reader, writer = await asyncio.open_connection(*where)
            try:
                # The native server speaks first, as ever: its preface comes
                # before the client has sent anything.
                head = await asyncio.wait_for(reader.readexactly(8), 5)
                assert head == fastrpc.wire.constants.PREFACE
                writer.write(msgpack.packb([0, 1, "Arith.multiply", [7, 8]]))
                rest = await asyncio.wait_for(reader.read(), 5)
                frames = fastrpc.FrameParser(expect_preface=False).feed(rest)
                assert frames[-1].type == fastrpc.MsgType.GOAWAY
            finally:
                writer.close()
            await _native_still_works(address)
        finally:
            await server.shutdown()

    run(main())


def test_protocols_option_is_checked():
    assert fastrpc.Server().protocols[:3] == ["fastrpc", "msgpack-rpc", "jsonrpc"]  # and any added after
    assert fastrpc.Server(protocols=["jsonrpc"]).protocols == ["fastrpc", "jsonrpc"]
    with pytest.raises(ValueError, match="unknown protocols"):
        fastrpc.Server(protocols=["xmlrpc"])


def test_jsonrpc_only_server_sends_msgpack_to_the_native_protocol(run):
    async def main():
        server, _, where, _ = await _server(protocols=["jsonrpc"])
        try:
            got = await _json_exchange(where, b'{"method":"Arith.multiply","params":[2,3],"id":1}', 1)
            assert got[0]["result"] == 6
            reader, writer = await asyncio.open_connection(*where)
            try:
                writer.write(msgpack.packb([0, 1, "Arith.multiply", [7, 8]]))
                rest = await asyncio.wait_for(reader.read(), 5)
                assert rest.startswith(fastrpc.wire.constants.PREFACE)  # answered by the native protocol
            finally:
                writer.close()
        finally:
            await server.shutdown()

    run(main())


# --------------------------------------------------------------------------- Go's net/rpc/jsonrpc

GO_CLIENT = r"""
package main

import (
	"fmt"
	"net/rpc/jsonrpc"
	"os"
)

type Args struct {
	A, B int
}

type Quotient struct {
	Quo, Rem int
}

type Empty struct{}

type LaterArgs struct {
	Seconds float64
	Value   string
}

func main() {
	client, err := jsonrpc.Dial("tcp", os.Args[1])
	if err != nil {
		fmt.Println("dialing:", err)
		os.Exit(2)
	}
	// Synchronous call
	args := &Args{7, 8}
	var reply int
	err = client.Call("Arith.Multiply", args, &reply)
	if err != nil {
		fmt.Println("arith error:", err)
		os.Exit(1)
	}
	fmt.Printf("Arith: %d*%d=%d\n", args.A, args.B, reply)

	var quot Quotient
	err = client.Call("Arith.Divide", &Args{17, 8}, &quot)
	if err != nil {
		fmt.Println("divide error:", err)
		os.Exit(1)
	}
	fmt.Printf("Divide: %d/%d=%d rem %d\n", 17, 8, quot.Quo, quot.Rem)

	err = client.Call("Arith.Divide", &Args{7, 0}, &quot)
	fmt.Printf("DivideByZero: %v\n", err)

	var empty Empty
	err = client.Call("Arith.Nothing", &Empty{}, &empty)
	fmt.Printf("Nothing: %v\n", err)

	// Asynchronous calls, answered out of order
	slow := client.Go("Arith.Later", &LaterArgs{0.3, "slow"}, new(string), nil)
	fast := client.Go("Arith.Later", &LaterArgs{0.0, "fast"}, new(string), nil)
	first := <-fast.Done
	second := <-slow.Done
	if first.Error != nil || second.Error != nil {
		fmt.Println("later error:", first.Error, second.Error)
		os.Exit(1)
	}
	fmt.Printf("Later: %s %s\n", *first.Reply.(*string), *second.Reply.(*string))
	client.Close()
}
"""


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: Any) -> str:
    """The Go program above, built (once per module) with Go's standard
    library only."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("FASTRPC_REQUIRE_GO") == "1":
            pytest.fail("FASTRPC_REQUIRE_GO=1 but `go` is not on PATH (apt-get install golang-go)")
        pytest.skip("`go` is not on PATH (apt-get install golang-go; FASTRPC_REQUIRE_GO=1 makes this a failure)")
    root = tmp_path_factory.mktemp("go-jsonrpc")
    src = root / "src"
    src.mkdir()
    (src / "main.go").write_text(GO_CLIENT)
    env = dict(
        os.environ,
        GOCACHE=str(root / "cache"),
        GOPATH=str(root / "gopath"),
        GOFLAGS="-mod=mod",
        GOPROXY="off",
        GO111MODULE="on",
        CGO_ENABLED="0",
    )
    subprocess.run([go, "mod", "init", "interoptest"], cwd=src, env=env, check=True, capture_output=True)
    built = subprocess.run([go, "build", "-o", str(root / "client"), "."], cwd=src, env=env, capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"go build failed:\n{built.stdout}\n{built.stderr}")
    return str(root / "client")


def test_go_net_rpc_jsonrpc_client_calls_arith(run, go_client):
    async def main():
        server, _, where, _ = await _server()
        try:
            proc = await asyncio.create_subprocess_exec(
                go_client, f"{where[0]}:{where[1]}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode, out.decode()
        finally:
            await server.shutdown()

    code, out = run(main())
    assert code == 0, out
    lines = out.splitlines()
    assert "Arith: 7*8=56" in lines
    assert "Divide: 17/8=2 rem 1" in lines
    assert "DivideByZero: UNKNOWN: ValueError: divide by zero" in lines
    assert "Nothing: <nil>" in lines
    assert "Later: fast slow" in lines
