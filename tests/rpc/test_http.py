"""The HTTP/1.1 gateway on fastrpc's port (``fastrpc/server/http.py``):
``POST /Service.method`` (JSON, keyword JSON, msgpack), JSON-RPC 2.0 at
``POST /``, the error mapping, deadline and metadata headers, keep-alive
and pipelining, ``/healthz``, ``/methods``, ``/metrics``, limits and abuse,
the native protocol on the same port, and the debug page (its HTML, and a
screenshot by a headless Chromium).

Clients: ``curl`` (skipped without it), raw sockets (exact bytes:
pipelining, abuse) and ``http.client``.  Chromium: skipped when none is on
PATH, unless ``FASTRPC_REQUIRE_CHROMIUM=1`` (CI), which makes its absence a
failure.  Skipped as a whole without ``httptools`` (the gateway's
dependency).
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple

import msgpack
import pytest

pytest.importorskip("httptools", reason="the HTTP gateway needs httptools (pip install fastrpc[http])")

import fastrpc  # noqa: E402
from fastrpc.core.context import current_call  # noqa: E402
from fastrpc.errors import StatusCode  # noqa: E402

from rpc_support import hostport  # noqa: E402


class Arith:
    def multiply(self, a: int, b: int) -> int:
        return a * b

    def add(self, a: int, b: int = 0) -> int:
        return a + b

    def fail(self, code: int) -> None:
        raise fastrpc.errors.RpcError(StatusCode(code), f"failed with {code}", {"why": "asked"})

    def crash(self) -> None:
        raise ValueError("broken handler")

    def raw(self) -> bytes:
        return b"\x00\xff"

    def odd(self) -> Any:
        return {1, 2}

    def aware(self) -> Any:
        return self.when()[:2]

    def when(self) -> Any:
        tz = datetime.timezone(datetime.timedelta(hours=2))
        return [datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz), (1, 2), datetime.datetime(2026, 1, 2, 3, 4, 5)]

    def meta(self) -> Dict[str, Any]:
        md = current_call().metadata
        return {k: md[k] for k in sorted(md)}

    async def later(self, seconds: float, value: Any) -> Any:
        await asyncio.sleep(seconds)
        return value

    @fastrpc.blocking
    def pooled(self, value: Any) -> Any:
        return ["pooled", value]


async def _server(**options: Any) -> Tuple[fastrpc.Server, str, Tuple[str, int]]:
    server = fastrpc.Server(**options)
    server.register(Arith())
    address = await server.start("tcp://127.0.0.1:0")
    return server, address, hostport(address)


# -- a raw HTTP client -------------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


async def read_response(reader: asyncio.StreamReader, head: bool = False) -> Optional[Response]:
    """One response from ``reader`` (None: the server closed first)."""
    line = await reader.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers: Dict[str, str] = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = b"" if head else await reader.readexactly(length)
    return Response(status, headers, body)


def request(method: str, path: str, body: bytes = b"", headers: Optional[Dict[str, str]] = None, version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(where: Tuple[str, int], data: bytes, count: int = 1) -> List[Optional[Response]]:
    """Send ``data`` on a new connection, read ``count`` responses."""
    reader, writer = await asyncio.open_connection(*where)
    try:
        writer.write(data)
        return [await asyncio.wait_for(read_response(reader), 10) for _ in range(count)]
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def post(where: Tuple[str, int], path: str, value: Any = None, raw: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> Response:
    body = raw if raw is not None else json.dumps(value).encode()
    (r,) = await exchange(where, request("POST", path, body, headers))
    assert r is not None
    return r


async def get(where: Tuple[str, int], path: str) -> Response:
    (r,) = await exchange(where, request("GET", path))
    assert r is not None
    return r


async def still_works(where: Tuple[str, int]) -> None:
    r = await post(where, "/Arith.multiply", [6, 7])
    assert (r.status, r.json()) == (200, 42)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except (ConnectionError, OSError):
        return True


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True, text=True, timeout=30)


CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not on PATH")


# -- POST /Service.method ------------------------------------------------------------


@needs_curl
def test_curl_calls_the_gateway(run: Any) -> None:
    async def main() -> None:
        server, address, (host, port) = await _server()
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(None, _curl, "-X", "POST", "-d", "[7,8]", f"http://{host}:{port}/Arith.multiply")
            assert out.stdout == "56"
            out = await loop.run_in_executor(None, _curl, "-d", '{"a": 2, "b": 5}', f"http://{host}:{port}/Arith.multiply")
            assert out.stdout == "10"
            out = await loop.run_in_executor(None, _curl, "-w", "\n%{http_code}", "-d", "[3]", f"http://{host}:{port}/Arith.fail")
            body, status = out.stdout.rsplit("\n", 1)
            assert status == "400" and json.loads(body)["status"] == "INVALID_ARGUMENT"
        finally:
            await server.shutdown()

    run(main())


def test_post_bodies(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            r = await post(where, "/Arith.multiply", [7, 8])
            assert (r.status, r.headers["content-type"], r.json()) == (200, "application/json", 56)
            r = await post(where, "/Arith.add", {"a": 1, "b": 2})
            assert r.json() == 3
            r = await post(where, "/Arith.add", [4])
            assert r.json() == 4
            r = await post(where, "/Arith.later", [0.01, {"x": [1, "two"]}])
            assert r.json() == {"x": [1, "two"]}
            r = await post(where, "/Arith.pooled", ["v"])
            assert r.json() == ["pooled", "v"]
            r = await post(where, "/Arith.raw", raw=b"")
            assert r.json() == "AP8="  # bytes as base64
            # msgpack in, msgpack out
            r = await post(where, "/Arith.multiply", raw=msgpack.packb([3, 4]), headers={"Content-Type": "application/msgpack"})
            assert (r.status, r.headers["content-type"]) == (200, "application/msgpack")
            assert msgpack.unpackb(r.body) == 12
            r = await post(where, "/Arith.raw", raw=msgpack.packb({}), headers={"Content-Type": "application/msgpack"})
            assert msgpack.unpackb(r.body) == b"\x00\xff"
            r = await post(where, "/Arith.fail", raw=msgpack.packb([5]), headers={"Content-Type": "application/msgpack"})
            assert r.status == 404 and msgpack.unpackb(r.body)["status"] == "NOT_FOUND"
            # a result JSON cannot carry: INTERNAL, 500
            r = await post(where, "/Arith.when", [])
            assert r.status == 500 and "naive" in r.json()["message"]
            r = await post(where, "/Arith.aware", [])
            assert (r.status, r.json()) == (200, ["2026-01-02T01:04:05Z", [1, 2]])
            r = await post(where, "/Arith.odd", [])
            assert r.status == 500 and r.json()["status"] == "INTERNAL" and "set" in r.json()["message"]
        finally:
            await server.shutdown()

    run(main())


EXPECTED_HTTP = {
    StatusCode.CANCELLED: 499,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
    StatusCode.UNAUTHENTICATED: 401,
}


def test_errors_reach_every_client(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            async with fastrpc.AsyncClient(address) as native:
                for code, status in EXPECTED_HTTP.items():
                    # REST: the HTTP status and the body's code
                    r = await post(where, "/Arith.fail", [int(code)])
                    assert r.status == status, code
                    body = r.json()
                    assert (body["code"], body["status"], body["message"]) == (int(code), code.name, f"failed with {code}")
                    assert body["details"] == {"why": "asked"}
                    # JSON-RPC 2.0: error.data carries the status
                    r = await post(where, "/", {"jsonrpc": "2.0", "method": "Arith.fail", "params": [int(code)], "id": 9})
                    assert r.status == 200
                    err = r.json()["error"]
                    assert err["data"]["code"] == int(code) and err["data"]["status"] == code.name
                    assert err["code"] == (-32602 if code == StatusCode.INVALID_ARGUMENT else -32000)
                    # the native client: the same class and code
                    with pytest.raises(fastrpc.errors.RpcError) as info:
                        await native.call("Arith.fail", int(code))
                    assert info.value.code == code
                r = await post(where, "/Arith.crash", [])
                assert r.status == 500 and r.json()["status"] == "UNKNOWN" and "broken handler" in r.json()["message"]
                r = await post(where, "/Arith.nothing", [])
                assert r.status == 404 and r.json()["status"] == "NOT_FOUND"
                r = await post(where, "/Arith.multiply", [1, 2, 3])
                assert r.status == 400 and r.json()["status"] == "INVALID_ARGUMENT"
                r = await post(where, "/Arith.multiply", {"a": 1, "zz": 2})
                assert r.status == 400
        finally:
            await server.shutdown()

    run(main())


def test_deadline_and_metadata_headers(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            r = await post(where, "/Arith.later", [5, 1], headers={"X-Fastrpc-Timeout": "0.1"})
            assert r.status == 504 and r.json()["status"] == "DEADLINE_EXCEEDED"
            r = await post(where, "/Arith.later", [5, 1], headers={"Grpc-Timeout": "100m"})
            assert r.status == 504
            r = await post(where, "/Arith.later", [0.01, 1], headers={"X-Fastrpc-Timeout": "5", "Grpc-Timeout": "5S"})
            assert (r.status, r.json()) == (200, 1)
            r = await post(where, "/Arith.multiply", [1, 2], headers={"X-Fastrpc-Timeout": "0"})
            assert r.status == 504
            r = await post(where, "/Arith.multiply", [1, 2], headers={"X-Fastrpc-Timeout": "soon"})
            assert r.status == 400
            r = await post(where, "/Arith.multiply", [1, 2], headers={"Grpc-Timeout": "10x"})
            assert r.status == 400
            r = await post(where, "/", {"jsonrpc": "2.0", "method": "Arith.later", "params": [5, 1], "id": 1}, headers={"X-Fastrpc-Timeout": "0.1"})
            assert r.json()["error"]["data"]["status"] == "DEADLINE_EXCEEDED"
            r = await post(where, "/Arith.meta", [], headers={"X-Fastrpc-Meta-Tenant": "acme", "Authorization": "Bearer t", "X-Other": "no"})
            assert r.json() == {"authorization": "Bearer t", "tenant": "acme"}
        finally:
            await server.shutdown()

    run(main())


# -- JSON-RPC 2.0 ------------------------------------------------------------------------


def test_jsonrpc2(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            r = await post(where, "/", {"jsonrpc": "2.0", "method": "Arith.multiply", "params": [7, 8], "id": 1})
            assert r.json() == {"jsonrpc": "2.0", "id": 1, "result": 56}
            r = await post(where, "/", {"jsonrpc": "2.0", "method": "Arith.add", "params": {"a": 1, "b": 2}, "id": "x"})
            assert r.json() == {"jsonrpc": "2.0", "id": "x", "result": 3}
            # a notification: no answer at all
            r = await post(where, "/", {"jsonrpc": "2.0", "method": "Arith.multiply", "params": [1, 2]})
            assert (r.status, r.body) == (204, b"")
            batch = [
                {"jsonrpc": "2.0", "method": "Arith.later", "params": [0.05, "slow"], "id": 1},
                {"jsonrpc": "2.0", "method": "Arith.multiply", "params": [2, 3], "id": 2},
                {"jsonrpc": "2.0", "method": "Arith.multiply", "params": [2, 3]},
                {"jsonrpc": "2.0", "method": "Nope.nothing", "id": 3},
                {"jsonrpc": "2.0", "method": "Arith.multiply", "params": [1], "id": 4},
                {"jsonrpc": "1.0", "method": "Arith.multiply", "id": 5},
                {"jsonrpc": "2.0", "method": "Arith.multiply", "params": "x", "id": 6},
                1,
                {"jsonrpc": "2.0", "method": "Arith.pooled", "params": [1], "id": 7},
            ]
            r = await post(where, "/", batch)
            answers = r.json()
            assert [a["id"] for a in answers] == [1, 2, 3, 4, 5, 6, None, 7]
            assert answers[0]["result"] == "slow" and answers[1]["result"] == 6
            assert answers[2]["error"]["code"] == -32601 and answers[2]["error"]["data"]["status"] == "NOT_FOUND"
            assert answers[3]["error"]["code"] == -32602 and answers[3]["error"]["data"]["status"] == "INVALID_ARGUMENT"
            assert answers[4]["error"]["code"] == -32600 and answers[5]["error"]["code"] == -32600
            assert answers[6]["error"]["code"] == -32600
            assert answers[7]["result"] == ["pooled", 1]
            r = await post(where, "/", [{"jsonrpc": "2.0", "method": "Arith.multiply", "params": [1, 2]}])
            assert r.status == 204
            r = await post(where, "/", raw=b'{"jsonrpc": "2.0", "method": "Ari')
            assert r.json()["error"]["code"] == -32700 and r.json()["id"] is None
            r = await post(where, "/", [])
            assert r.json()["error"]["code"] == -32600
            r = await post(where, "/", raw=b'"just a string"')
            assert r.json()["error"]["code"] == -32600
            await still_works(where)
        finally:
            await server.shutdown()

    run(main())


# -- connections: keep-alive, close, pipelining --------------------------------------------


def test_keep_alive_and_close(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            reader, writer = await asyncio.open_connection(*where)
            for i in range(5):
                writer.write(request("POST", "/Arith.multiply", json.dumps([i, 10]).encode()))
                r = await read_response(reader)
                assert r is not None and r.json() == i * 10 and "connection" not in r.headers
            writer.write(request("GET", "/healthz", headers={"Connection": "close"}))
            r = await read_response(reader)
            assert r is not None and r.status == 200 and r.headers["connection"] == "close"
            assert await closed_by_server(reader)
            writer.close()
            # HTTP/1.0: closed after the answer unless it asks for keep-alive
            (r,) = await exchange(where, request("POST", "/Arith.multiply", b"[2,3]", version="1.0"))
            assert r is not None and r.json() == 6 and r.headers["connection"] == "close"
            reader, writer = await asyncio.open_connection(*where)
            for _ in range(2):
                writer.write(request("POST", "/Arith.multiply", b"[2,3]", {"Connection": "keep-alive"}, version="1.0"))
                r = await read_response(reader)
                assert r is not None and r.json() == 6 and r.headers["connection"] == "keep-alive"
            writer.close()
            # http.client: one connection, several requests
            loop = asyncio.get_running_loop()

            def with_http_client() -> List[Any]:
                conn = http.client.HTTPConnection(*where, timeout=10)
                try:
                    out = []
                    for i in range(3):
                        conn.request("POST", "/Arith.add", body=json.dumps([i, 1]), headers={"Content-Type": "application/json"})
                        resp = conn.getresponse()
                        out.append((resp.status, json.loads(resp.read())))
                    return out
                finally:
                    conn.close()

            assert await loop.run_in_executor(None, with_http_client) == [(200, 1), (200, 2), (200, 3)]
        finally:
            await server.shutdown()

    run(main())


def test_expect_100_continue(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            reader, writer = await asyncio.open_connection(*where)
            writer.write(b"POST /Arith.multiply HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            r = await asyncio.wait_for(read_response(reader), 5)
            assert r is not None and r.status == 100
            writer.write(b"[3,4]")
            r = await asyncio.wait_for(read_response(reader), 5)
            assert r is not None and (r.status, r.json()) == (200, 12)
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_pipelining_answers_in_order(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            data = (
                request("POST", "/Arith.later", b'[0.1, "first"]')
                + request("POST", "/Arith.multiply", b"[2, 3]")
                + request("GET", "/healthz")
                + request("POST", "/Arith.pooled", b'["p"]')
                + request("POST", "/", b'{"jsonrpc": "2.0", "method": "Arith.later", "params": [0.02, "rpc"], "id": 1}')
                + request("POST", "/Arith.later", b'[0.01, "last"]', {"Connection": "close"})
            )
            reader, writer = await asyncio.open_connection(*where)
            writer.write(data)
            got = [await asyncio.wait_for(read_response(reader), 10) for _ in range(6)]
            assert [r.json() for r in got if r is not None] == ["first", 6, {"status": "SERVING"}, ["pooled", "p"], {"jsonrpc": "2.0", "id": 1, "result": "rpc"}, "last"]
            assert await closed_by_server(reader)
            writer.close()
        finally:
            await server.shutdown()

    run(main())


# -- the server's routes --------------------------------------------------------------------


def test_healthz_and_methods(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            r = await get(where, "/healthz")
            assert (r.status, r.json()) == (200, {"status": "SERVING"})
            r = await get(where, "/healthz?service=Arith")
            assert (r.status, r.json()) == (200, {"status": "SERVING"})
            r = await get(where, "/healthz?service=Nope")
            assert r.status == 404
            server.health.set("", "NOT_SERVING")
            r = await get(where, "/healthz")
            assert (r.status, r.json()) == (503, {"status": "NOT_SERVING"})
            server.health.set("", "SERVING")
            r = await get(where, "/methods")
            names = [m["name"] for m in r.json()]
            assert "Arith.multiply" in names and "fastrpc.Health.check" in names
            (r,) = await exchange(where, request("HEAD", "/healthz"), 0) or [None]
            r = await get(where, "/nowhere")
            assert r.status == 404
            r = await get(where, "/Arith.multiply")
            assert r.status == 405
            (r,) = await exchange(where, request("DELETE", "/Arith.multiply"))
            assert r is not None and r.status == 405
            r = await post(where, "/not/a/method", [])
            assert r.status == 404
            r = await get(where, "/metrics")
            assert r.status == 404  # no metrics on this server
            r = await get(where, "/debug/rpc")
            assert r.status == 404  # debug_page is off
        finally:
            await server.shutdown()

    run(main())


def test_metrics(run: Any) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from fastrpc.middleware.metrics import ServerMetrics

    async def main() -> None:
        metrics = ServerMetrics(prometheus_client.CollectorRegistry())
        server, address, where = await _server(metrics=metrics)
        try:
            await still_works(where)
            r = await get(where, "/metrics")
            assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
            text = r.body.decode()
            assert 'fastrpc_server_handled_total{code="OK",method="Arith.multiply"} 1.0' in text
            assert "fastrpc_server_received_bytes_total" in text
        finally:
            await server.shutdown()
            metrics.unregister()

    run(main())


# -- limits and abuse ----------------------------------------------------------------------


def test_bad_input_is_answered_and_closed(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server(max_frame_size=64 * 1024, max_str_len=1000)
        try:
            cases = [
                (b"GET \x00\x01\x02 nonsense\r\n\r\n", 400),
                (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
                (b"POST /Arith.multiply HTTP/1.1\r\nContent-Length: nope\r\n\r\n", 400),
                (request("GET", "/healthz", headers={"X-Big": "a" * 40000}), 431),
                (request("GET", "/healthz", headers={f"X-H{i}": "v" for i in range(200)}), 431),
                (request("GET", "/" + "a" * 40000), 414),
                (request("POST", "/Arith.multiply", b"[" + b"1," * 40000 + b"1]"), 413),
                (b"POST /Arith.multiply HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
                (b"POST /Arith.multiply HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"8000\r\n" + b"1" * 0x8000 + b"\r\n" + (b"8000\r\n" + b"1" * 0x8000 + b"\r\n") * 2 + b"0\r\n\r\n", 413),
            ]
            for data, status in cases:
                reader, writer = await asyncio.open_connection(*where)
                writer.write(data)
                r = await asyncio.wait_for(read_response(reader), 10)
                assert r is not None and r.status == status, (data[:60], r)
                assert r.headers.get("connection") == "close"
                assert await closed_by_server(reader)
                writer.close()
                await still_works(where)
            # bad bodies: answered, and the connection goes on
            bodies = [
                (b"[1, 2", 400),
                (b"\xff\xfe[1]", 400),
                (b'"a string"', 400),
                (b"42", 400),
                (b'["' + b"x" * 2000 + b'", 1]', 400),  # max_str_len
                (b"[" * 100000 + b"]" * 100000, 413),
            ]
            reader, writer = await asyncio.open_connection(*where)
            for body, status in bodies:
                writer.write(request("POST", "/Arith.multiply", body))
                r = await asyncio.wait_for(read_response(reader), 10)
                assert r is not None and r.status == status, (body[:40], r)
                if status == 413:
                    assert await closed_by_server(reader)
                    break
                assert r.json()["status"] == "INVALID_ARGUMENT"
            writer.close()
            r = await post(where, "/Arith.multiply", raw=b"\x93\x01", headers={"Content-Type": "application/msgpack"})
            assert r.status == 400
            await still_works(where)
            # a client that stops mid-body, one that goes away mid-request
            reader, writer = await asyncio.open_connection(*where)
            writer.write(b"POST /Arith.multiply HTTP/1.1\r\nContent-Length: 100\r\n\r\n[1,")
            await asyncio.sleep(0.05)
            await still_works(where)
            writer.close()
            reader, writer = await asyncio.open_connection(*where)
            writer.write(b"POST /Arith.later HTTP/1.1\r\nContent-Length: 9\r\n\r\n[0.2, 1]\n")
            await asyncio.sleep(0.02)
            writer.transport.abort()
            await still_works(where)
            for _ in range(500):  # every connection of this test goes
                if server.connections == 0:
                    break
                await asyncio.sleep(0.01)
            assert server.connections == 0
            # a client that half-closes after its request still gets the answer
            reader, writer = await asyncio.open_connection(*where)
            writer.write(request("POST", "/Arith.later", b"[0.05, 5]"))
            writer.write_eof()
            r = await asyncio.wait_for(read_response(reader), 5)
            assert r is not None and r.json() == 5
            assert await closed_by_server(reader)
            writer.close()
        finally:
            await server.shutdown()

    run(main())


def test_slow_headers_and_too_many_pipelined(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server(handshake_timeout=0.3)
        try:
            # slow headers after a first request: 408 and a close
            reader, writer = await asyncio.open_connection(*where)
            writer.write(request("GET", "/healthz"))
            assert (await read_response(reader)).status == 200  # type: ignore[union-attr]
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            r = await asyncio.wait_for(read_response(reader), 5)
            assert r is not None and r.status == 408
            assert await closed_by_server(reader)
            writer.close()
            # nothing whole within handshake_timeout: dropped (silently, or
            # with a 408: both timers run out at once)
            reader, writer = await asyncio.open_connection(*where)
            writer.write(b"GET /hea")
            try:
                rest = await asyncio.wait_for(reader.read(), 5)
            except (ConnectionError, OSError):
                rest = b""
            assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest
            writer.close()
            # too many requests waiting: 429 after those that fit, then closed
            one = request("POST", "/Arith.later", b"[0.2, 1]")
            reader, writer = await asyncio.open_connection(*where)
            writer.write(one * 300)
            statuses = []
            while True:
                r = await asyncio.wait_for(read_response(reader), 10)
                if r is None:
                    break
                statuses.append(r.status)
            writer.close()
            assert statuses[-1] == 429 and set(statuses[:-1]) == {200} and len(statuses) <= 257
            await still_works(where)
        finally:
            await server.shutdown()

    run(main())


def test_native_protocol_alongside(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        try:
            async with fastrpc.AsyncClient(address) as c:
                assert await c.call("Arith.multiply", 6, 7) == 42
                r = await post(where, "/Arith.multiply", [2, 2])
                assert r.json() == 4
                assert await c.call("Arith.add", 1, b=2) == 3
            assert "http" in server.protocols
        finally:
            await server.shutdown()

    run(main())


def test_shutdown_closes_keep_alive(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server()
        reader, writer = await asyncio.open_connection(*where)
        writer.write(request("POST", "/Arith.later", b"[0.2, 1]"))
        await asyncio.sleep(0.05)
        stop = asyncio.ensure_future(server.shutdown(grace=5))
        r = await asyncio.wait_for(read_response(reader), 5)
        assert r is not None and r.json() == 1 and r.headers["connection"] == "close"
        await stop
        writer.close()

    run(main())


# -- the debug page ----------------------------------------------------------------------


def test_debug_page(run: Any) -> None:
    async def main() -> None:
        server, address, where = await _server(debug_page=True)
        try:
            for i in range(7):
                await post(where, "/Arith.multiply", [i, 2])
            for _ in range(3):
                await post(where, "/Arith.fail", [5])
            r = await get(where, "/debug/rpc")
            assert r.status == 200 and r.headers["content-type"].startswith("text/html")
            page = r.body.decode()
            assert "Service Arith" in page and "http-equiv='refresh'" in page
            assert "<td class='m'>multiply</td><td><span class='bar' style='width:80px'></span>7</td>" in page
            assert "NOT_FOUND: 3" in page
            assert "p99" in page and "http://" not in page and "https://" not in page  # no external assets
            r = await get(where, "/debug/rpc?refresh=0")
            assert "http-equiv" not in r.body.decode()
        finally:
            await server.shutdown()

    run(main())


def _chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def chromium() -> Any:
    path = _chromium()
    if path is None:
        if os.environ.get("FASTRPC_REQUIRE_CHROMIUM", "") not in ("", "0"):
            pytest.fail("FASTRPC_REQUIRE_CHROMIUM=1 but no chromium, chromium-browser or google-chrome on PATH")
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH")
    procs: List[subprocess.Popen] = []
    yield path, procs
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                p.kill()
            p.wait()


def test_debug_page_screenshot(run: Any, chromium: Any, tmp_path: Any) -> None:
    path, procs = chromium
    shot = tmp_path / "debug.png"

    async def main() -> None:
        server, address, (host, port) = await _server(debug_page=True)
        try:
            for i in range(20):
                await post((host, port), "/Arith.multiply", [i, 2])
            await post((host, port), "/Arith.crash", [])
            p = subprocess.Popen(
                [path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,800",
                 f"http://{host}:{port}/debug/rpc?refresh=0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            procs.append(p)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while p.poll() is None and loop.time() < deadline:
                await asyncio.sleep(0.1)
            assert p.poll() is not None, "chromium did not finish within 60 s"
        finally:
            await server.shutdown()

    run(main())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5 * 1024


def test_without_httptools_http_gets_the_native_answer(tmp_path: Any) -> None:
    # A process where httptools cannot be imported: no "http" protocol, and
    # HTTP bytes are what the native protocol calls garbage (closed).
    script = tmp_path / "no_httptools.py"
    script.write_text(
        "import sys, asyncio, socket\n"
        "sys.modules['httptools'] = None\n"
        "import fastrpc\n"
        "from fastrpc.server import sniff\n"
        "assert 'http' not in sniff.protocol_names(), sniff.protocol_names()\n"
        "class A:\n"
        "    def f(self): return 1\n"
        "async def main():\n"
        "    s = fastrpc.Server(); s.register(A())\n"
        "    addr = await s.start('tcp://127.0.0.1:0')\n"
        "    host, port = addr[6:].rsplit(':', 1)\n"
        "    r, w = await asyncio.open_connection(host, int(port))\n"
        "    w.write(b'GET /healthz HTTP/1.1\\r\\n\\r\\n')\n"
        "    data = await asyncio.wait_for(r.read(), 5)\n"
        "    assert not data.startswith(b'HTTP/'), data\n"
        "    w.close()\n"
        "    async with fastrpc.AsyncClient(addr) as c:\n"
        "        assert await c.call('A.f') == 1\n"
        "    await s.shutdown()\n"
        "asyncio.run(main())\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [os.path.dirname(os.path.dirname(os.path.abspath(fastrpc.__file__))), os.environ.get("PYTHONPATH", "")] if p))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
