"""HTTP/1.1 for the gateway on fastrpc's port, sans IO: requests read from
bytes, calls made from their bodies, answers encoded as bytes.

The connection that runs it is ``fastrpc/server/http.py``; this module
touches no socket and no event loop.  :class:`HttpCodec` is one
connection's state: :meth:`HttpCodec.feed` turns bytes into
:class:`Exchange` objects, one per request, in order.  An exchange holds
the :class:`~fastrpc.interop.base.Call` objects its request makes (one for
``POST /Service.method``, one per entry of a JSON-RPC 2.0 batch at
``POST /``), or the name of a server route (``GET /healthz``...) for the
connection to answer, or its answer already (a request that cannot run).
As the calls end, :meth:`HttpCodec.result` and :meth:`HttpCodec.failure`
fill the exchange in; once every part is known its :attr:`Exchange.answer`
is the response's bytes, and the connection sends the answers in request
order (pipelining).

Parsing is ``httptools`` (llhttp, Node's parser): an optional dependency,
``pip install fastrpc[http]``; without it :data:`AVAILABLE` is False and
the server has no HTTP entry in its sniffing table (HTTP bytes then get
the native protocol's answer to garbage: GOAWAY and a close).

Types in JSON (the native codec's types, as JSON carries them): ``bytes``
as a base64 string, an aware ``datetime`` as an RFC 3339 string in UTC
(``2026-12-01T03:40:40Z``, a 6-digit fraction when it has microseconds), a
``date`` as ``YYYY-MM-DD``, tuples as arrays, and everything else JSON
cannot carry (a set, a naive datetime, NaN) an INTERNAL error naming it:
``docs/types.md``, "JSON paths".  Requests get what
JSON gives (no string is turned back into bytes or a datetime).
"""

from __future__ import annotations

import json
import math
import time
from http import HTTPStatus
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._impl import Decoder, Encoder
from ..errors import CodecError, StatusCode, code_name
from .base import Call, json_default, over_limits, match_prefix

try:  # the optional dependency: pip install fastrpc[http]
    import httptools
except ImportError:  # pragma: no cover - exercised by the no-httptools install
    httptools = None  # type: ignore[assignment]

__all__ = [
    "AVAILABLE",
    "Exchange",
    "HTTP_STATUS",
    "HttpCodec",
    "HttpError",
    "JSONRPC_ERRORS",
    "match",
    "parse_timeout",
    "response",
    "to_json",
]

#: whether the gateway can run (httptools imports)
AVAILABLE = httptools is not None

#: an HTTP/1.x request starts with its method and a space
match = match_prefix(b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ")

#: the HTTP status of an error with each status code (grpc-gateway's
#: mapping, ``runtime.HTTPStatusFromCode``)
HTTP_STATUS: Dict[int, int] = {
    StatusCode.OK: 200,
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
HTTP_STATUS = {int(k): v for k, v in HTTP_STATUS.items()}

#: JSON-RPC 2.0's own error codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: an error the method itself returned (the implementation-defined range)
SERVER_ERROR = -32000
JSONRPC_ERRORS = {
    PARSE_ERROR: "Parse error",
    INVALID_REQUEST: "Invalid Request",
    METHOD_NOT_FOUND: "Method not found",
    INVALID_PARAMS: "Invalid params",
    INTERNAL_ERROR: "Internal error",
}

#: header names (lower case) copied into a call's metadata as they are
METADATA_HEADERS = ("authorization", "traceparent", "tracestate")
#: headers ``x-fastrpc-meta-<key>`` set metadata ``<key>``
META_PREFIX = "x-fastrpc-meta-"
#: the deadline headers: seconds (a decimal), or gRPC's form
TIMEOUT_HEADER = "x-fastrpc-timeout"
GRPC_TIMEOUT_HEADER = "grpc-timeout"
_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

#: the largest request line plus headers, in bytes (past it: 431)
MAX_HEAD = 32 * 1024
#: headers a request may have
MAX_HEADERS = 100

JSON_TYPE = "application/json"
#: the interim answer to ``Expect: 100-continue``
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")

_INVALID_ARGUMENT = int(StatusCode.INVALID_ARGUMENT)
_INTERNAL = int(StatusCode.INTERNAL)
_RESOURCE_EXHAUSTED = int(StatusCode.RESOURCE_EXHAUSTED)
_NOT_FOUND = int(StatusCode.NOT_FOUND)
_MISSING: Any = object()


# -- JSON ----------------------------------------------------------------------------


_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False, default=json_default).encode


def to_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (see the module doc for the types);
    TypeError or ValueError for what JSON cannot carry."""
    try:
        return _dumps(value).encode("utf-8")
    except RecursionError:
        raise ValueError("nested too deeply for JSON") from None


def _safe_json(value: Any) -> bytes:
    # Error bodies: what cannot be encoded is replaced by its repr.
    try:
        return to_json(value)
    except (TypeError, ValueError):
        return json.dumps(value, default=repr, separators=(",", ":")).encode()


# -- responses ------------------------------------------------------------------------

_date_cache: List[Any] = [0, b""]


def _date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
    return _date_cache[1]


def _reason(status: int) -> str:
    if status == 499:
        return "Client Closed Request"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_STATUS_LINES: Dict[int, bytes] = {}


def response(
    status: int,
    body: bytes = b"",
    content_type: Optional[str] = JSON_TYPE,
    *,
    keep_alive: bool = True,
    version: str = "1.1",
    head: bool = False,
    headers: Sequence[Tuple[str, str]] = (),
) -> bytes:
    """The bytes of one HTTP/1.1 response.  ``version``: the request's (an
    HTTP/1.0 client kept alive is told so); ``head``: a HEAD request's
    answer (headers only, the length of the body it would have had)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {_reason(status)}\r\n".encode()
    parts = [line, b"Date: ", _date(), b"\r\nServer: fastrpc\r\n"]
    if status != 204 and status != 304:
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if content_type is not None:
            parts.append(b"Content-Type: %s\r\n" % content_type.encode("latin-1"))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    parts.append(b"\r\n")
    if not head and status != 204 and status != 304:
        parts.append(body)
    return b"".join(parts)


def error_body(code: int, message: str, details: Any = None) -> bytes:
    """The JSON body of an error answer."""
    return _safe_json({"code": code, "status": code_name(code), "message": message, "details": {} if details is None else details})


def parse_timeout(headers: Dict[str, str]) -> Optional[float]:
    """The seconds the deadline headers allow (the smaller when both are
    set), None without them; ValueError for a malformed one."""
    out: Optional[float] = None
    text = headers.get(TIMEOUT_HEADER)
    if text is not None:
        seconds = float(text)
        if not math.isfinite(seconds):
            raise ValueError(f"{TIMEOUT_HEADER}: {text!r} is not a number of seconds")
        out = max(seconds, 0.0)
    text = headers.get(GRPC_TIMEOUT_HEADER)
    if text is not None:
        text = text.strip()
        digits, unit = text[:-1], text[-1:]
        if not digits.isdigit() or len(digits) > 8 or unit not in _GRPC_UNITS:
            raise ValueError(f"{GRPC_TIMEOUT_HEADER}: {text!r} is not gRPC's form (up to 8 digits and one of H M S m u n)")
        seconds = int(digits) * _GRPC_UNITS[unit]
        out = seconds if out is None else min(out, seconds)
    return out


def metadata_of(headers: Dict[str, str]) -> Optional[Dict[str, str]]:
    """A call's metadata from its request's headers (see the module doc of
    ``fastrpc/server/http.py``), None when there is none."""
    md: Optional[Dict[str, str]] = None
    for name, value in headers.items():
        if name.startswith(META_PREFIX):
            key = name[len(META_PREFIX):]
            if not key:
                continue
        elif name in METADATA_HEADERS:
            key = name
        else:
            continue
        if md is None:
            md = {}
        md[key] = value
    return md


# -- requests -------------------------------------------------------------------------


class HttpError(Exception):
    """A request that breaks the stream (malformed, over a limit): answered
    with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One request as read: ``method`` (``"POST"``), ``path``, ``query``
    (bytes, maybe empty), ``version`` (``"1.1"``), ``headers`` (lower-case
    names; repeated ones joined with ``", "``), ``body``, ``keep_alive``."""

    __slots__ = ("method", "path", "query", "version", "headers", "body", "keep_alive")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.query = b""
        self.version = "1.1"
        self.headers: Dict[str, str] = {}
        self.body = b""
        self.keep_alive = True


class Exchange:
    """One request and its answer (see the module doc).

    ``calls``: the calls to run (their ``foreign_id`` is ``(exchange,
    index)``); ``route``: a server route to answer (``"healthz"``,
    ``"methods"``, ``"metrics"``, ``"debug"``) or None; ``answer``: the
    response bytes once known; ``close``: the connection closes after it.
    """

    __slots__ = (
        "request", "calls", "route", "answer", "close", "kind", "msgpack",
        "parts", "waiting", "batch", "known", "ids",
    )

    def __init__(self, request: Optional[Request]) -> None:
        self.request = request
        self.calls: List[Call] = []
        self.route: Optional[str] = None
        self.answer: Optional[bytes] = None
        self.close = request is None or not request.keep_alive
        #: "rest" (POST /Service.method), "jsonrpc" (POST /), "route" or "error"
        self.kind = "error"
        self.msgpack = False
        #: JSON-RPC: each entry's answer (a dict, or None: a notification)
        self.parts: List[Any] = []
        #: answers still to come
        self.waiting = 0
        self.batch = False
        #: JSON-RPC: whether each entry's method exists (unknown: -32601)
        self.known: List[bool] = []
        self.ids: List[Any] = []


class _Reader:
    """httptools' callbacks, building :class:`Request` objects."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.done: List[Request] = []
        self.current: Optional[Request] = None
        self.url: List[bytes] = []
        self.body: List[bytes] = []
        self.head_size = 0
        self.body_size = 0
        self.error: Optional[HttpError] = None
        #: the last request finished said the connection closes after it
        self.closing = False
        #: the request being read asked for ``100 Continue`` before its body
        self.want_continue = False

    @property
    def in_head(self) -> bool:
        """A request has begun and its headers have not all arrived."""
        return self.current is not None and not self._headers_done

    _headers_done = False

    def fail(self, status: int, message: str) -> None:
        self.error = HttpError(status, message)
        raise self.error

    def on_message_begin(self) -> None:
        self.current = Request()
        self.url = []
        self.body = []
        self.head_size = 0
        self.body_size = 0
        self._headers_done = False
        self.want_continue = False

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            self.fail(414, f"request line longer than {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        assert req is not None
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            self.fail(431, f"request headers larger than {MAX_HEAD} bytes")
        if len(req.headers) >= MAX_HEADERS:
            self.fail(431, f"more than {MAX_HEADERS} headers")
        try:
            key = name.decode("ascii").lower()
        except UnicodeDecodeError:
            self.fail(400, "a header name that is not ASCII")
        text = value.decode("latin-1")
        old = req.headers.get(key)
        req.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        self._headers_done = True
        parser = self.parser
        req.method = parser.get_method().decode("ascii", "replace")
        req.version = parser.get_http_version()
        url = httptools.parse_url(b"".join(self.url))
        try:
            req.path = url.path.decode("utf-8") if url.path else "/"
        except UnicodeDecodeError:
            self.fail(400, "a path that is not UTF-8")
        req.query = url.query or b""
        length = req.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            self.fail(413, f"a body of {int(length)} bytes is over the limit of {self.max_body}")
        self.want_continue = req.headers.get("expect", "").lower() == "100-continue"

    def on_body(self, body: bytes) -> None:
        self.want_continue = False
        self.body_size += len(body)
        if self.body_size > self.max_body:
            self.fail(413, f"a body over the limit of {self.max_body} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        req = self.current
        assert req is not None
        req.body = b"".join(self.body)
        req.keep_alive = bool(self.parser.should_keep_alive())
        self.done.append(req)
        self.current = None
        self.body = []
        self.url = []
        self._headers_done = False
        self.want_continue = False
        if not req.keep_alive:
            self.closing = True


class HttpCodec:
    """The HTTP side of one gateway connection (see the module doc).

    Parameters (those of :class:`~fastrpc.interop.base.Codec`):
        max_message_size: the largest body accepted or sent (the server's
            ``max_frame_size``).
        decoder_limits: the server's decoding limits (msgpack bodies).
        resolve: ``resolve(name)``: the registered method a name means, or
            None.
        params_of: ``params_of(name)``: a method's keyword parameter names.
    """

    name = "http"

    def __init__(
        self,
        *,
        max_message_size: int,
        decoder_limits: Dict[str, Any],
        resolve: Callable[[str], Optional[str]],
        params_of: Callable[[str], Optional[Sequence[str]]],
    ) -> None:
        if httptools is None:  # pragma: no cover - the sniffing table has no entry then
            raise RuntimeError("the HTTP gateway needs httptools: pip install fastrpc[http]")
        self.max_message_size = max_message_size
        self._limits = decoder_limits
        self._resolve = resolve
        self._params_of = params_of
        self._reader = _Reader(max_message_size)
        self._decoder: Any = None
        self._encoder: Any = None
        #: input after a request that closes the connection is not read
        self.finished = False
        #: bytes fed while the current request's head is incomplete
        self._head_bytes = 0

    @property
    def in_head(self) -> bool:
        """A request has begun and its headers have not all arrived (the
        connection times that)."""
        return self._reader.in_head

    def take_continue(self) -> bool:
        """Whether the request being read waits for ``100 Continue`` before
        sending its body (True once per request)."""
        reader = self._reader
        if reader.want_continue and not self.finished:
            reader.want_continue = False
            return True
        return False

    # -- input ------------------------------------------------------------------------

    def feed(self, data: bytes) -> Tuple[List[Exchange], Optional[Exchange]]:
        """The exchanges ``data`` completes, in order, and the answer to a
        broken stream (None: it goes on; else the connection closes after
        sending it)."""
        if self.finished:
            return [], None
        reader = self._reader
        began_before = reader.in_head
        broken: Optional[Exchange] = None
        try:
            reader.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade (h2c, websocket) is not taken: the request is
            # answered in HTTP/1.1 and the connection closed.
            reader.closing = True
        except httptools.HttpParserError as exc:
            if not reader.closing:
                err = reader.error
                if err is None:
                    err = HttpError(400, f"malformed HTTP request: {exc}")
                broken = self.refuse(err.status, err.message)
        if reader.in_head and broken is None:
            # Bounded to MAX_HEAD and one read past it (httptools holds a
            # header value until it ends).
            self._head_bytes = self._head_bytes + len(data) if began_before else 0
            if self._head_bytes > MAX_HEAD:
                broken = self.refuse(431, f"request headers larger than {MAX_HEAD} bytes")
        else:
            self._head_bytes = 0
        requests, reader.done = reader.done, []
        out = [self._exchange(r) for r in requests]
        if reader.closing or broken is not None:
            self.finished = True
            if out and broken is None:
                out[-1].close = True
        return out, broken

    def refuse(self, status: int, message: str, code: int = _INVALID_ARGUMENT) -> Exchange:
        """An exchange answering a broken request with ``status`` (the
        connection closes after it)."""
        self.finished = True
        ex = Exchange(None)
        ex.answer = response(status, error_body(code, message), keep_alive=False)
        return ex

    def _exchange(self, req: Request) -> Exchange:
        ex = Exchange(req)
        path = req.path
        method = req.method
        if method == "POST":
            if path == "/":
                ex.kind = "jsonrpc"
                self._jsonrpc(ex, req)
                return ex
            name = path[1:]
            if "/" not in name and "." in name:
                ex.kind = "rest"
                self._rest(ex, req, name)
                return ex
        elif method in ("GET", "HEAD"):
            route = _ROUTES.get(path)
            if route is not None:
                ex.kind = "route"
                ex.route = route
                return ex
        unimplemented = int(StatusCode.UNIMPLEMENTED)
        if method not in ("GET", "HEAD", "POST"):
            self.reply(ex, 405, error_body(unimplemented, f"{method} is not served here"), headers=(("Allow", "GET, HEAD, POST"),))
        elif method != "POST" and "." in path and "/" not in path[1:]:
            self.reply(ex, 405, error_body(unimplemented, f"call {path[1:]} with POST"), headers=(("Allow", "POST"),))
        else:
            hint = " (POST /Service.method, or POST / for JSON-RPC 2.0)" if method == "POST" else ""
            self.reply(ex, 404, error_body(_NOT_FOUND, f"no such route: {method} {path}{hint}"))
        return ex

    def reply(
        self,
        ex: Exchange,
        status: int,
        body: bytes,
        content_type: Optional[str] = JSON_TYPE,
        headers: Sequence[Tuple[str, str]] = (),
    ) -> None:
        """Answer ``ex`` (its connection's keep-alive and HEAD rules)."""
        req = ex.request
        ex.answer = response(
            status,
            body,
            content_type,
            keep_alive=not ex.close,
            version=req.version if req is not None else "1.1",
            head=req is not None and req.method == "HEAD",
            headers=headers,
        )

    def _deadline_and_metadata(self, ex: Exchange, req: Request) -> Optional[Tuple[Optional[int], Optional[Dict[str, str]]]]:
        headers = req.headers
        try:
            seconds = parse_timeout(headers)
        except ValueError as exc:
            self._fail(ex, _INVALID_ARGUMENT, str(exc))
            return None
        deadline = None if seconds is None else int(seconds * 1e6)
        return deadline, metadata_of(headers)

    # -- POST /Service.method ---------------------------------------------------------

    def _rest(self, ex: Exchange, req: Request, name: str) -> None:
        ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        ex.msgpack = ctype in MSGPACK_TYPES
        extra = self._deadline_and_metadata(ex, req)
        if extra is None:
            return
        body = req.body
        try:
            if not body.strip():
                value: Any = []
            elif ex.msgpack:
                if self._decoder is None:
                    self._decoder = Decoder(**self._limits)
                value = self._decoder.decode(body)
            else:
                value = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self._fail(ex, _INVALID_ARGUMENT, f"the body is not UTF-8: {exc}")
            return
        except (ValueError, RecursionError, CodecError) as exc:
            kind = "msgpack" if ex.msgpack else "JSON"
            self._fail(ex, _INVALID_ARGUMENT, f"the body is not valid {kind}: {exc}")
            return
        if type(value) is dict:
            args, kwargs = [], value
            if not all(type(k) is str for k in kwargs):
                self._fail(ex, _INVALID_ARGUMENT, "an object of arguments has string keys only")
                return
        elif type(value) is list:
            args, kwargs = value, None
        else:
            self._fail(ex, _INVALID_ARGUMENT, "the body is an array (positional arguments) or an object (keyword arguments)")
            return
        if not ex.msgpack and self._limits:
            why = over_limits(value, self._limits)
            if why is not None:
                self._fail(ex, _INVALID_ARGUMENT, why)
                return
        call = Call(self._resolve(name) or name, args, kwargs, (ex, 0), False)
        call.deadline, call.metadata = extra  # type: ignore[assignment]
        ex.calls.append(call)
        ex.waiting = 1

    def _fail(self, ex: Exchange, code: int, message: str, details: Any = None) -> None:
        # An answer before any call runs (REST: an error body).
        ex.calls = []
        ex.waiting = 0
        self._rest_error(ex, code, message, details)

    def _rest_error(self, ex: Exchange, code: int, message: str, details: Any) -> None:
        if ex.msgpack:
            body = self._msgpack({"code": code, "status": code_name(code), "message": message, "details": {} if details is None else details})
            if body is None:
                body = self._msgpack({"code": code, "status": code_name(code), "message": message, "details": {}})
            self.reply(ex, HTTP_STATUS.get(code, 500), body or b"", MSGPACK_TYPES[0])
        else:
            self.reply(ex, HTTP_STATUS.get(code, 500), error_body(code, message, details))

    def _msgpack(self, value: Any) -> Optional[bytes]:
        if self._encoder is None:
            self._encoder = Encoder()
        try:
            return bytes(self._encoder.encode(value))
        except (CodecError, TypeError, ValueError, OverflowError):
            return None

    # -- POST / (JSON-RPC 2.0) --------------------------------------------------------

    def _jsonrpc(self, ex: Exchange, req: Request) -> None:
        extra = self._deadline_and_metadata(ex, req)
        if extra is None:
            return
        try:
            msg = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._jsonrpc_alone(ex, PARSE_ERROR, f"Parse error: {exc}", _INVALID_ARGUMENT)
            return
        if type(msg) is list:
            if not msg:
                self._jsonrpc_alone(ex, INVALID_REQUEST, "Invalid Request: an empty batch", _INVALID_ARGUMENT)
                return
            ex.batch = True
            entries = msg
        else:
            entries = [msg]
        for entry in entries:
            self._jsonrpc_entry(ex, entry, extra)
        self._jsonrpc_maybe_done(ex)

    def _jsonrpc_alone(self, ex: Exchange, code: int, message: str, status: int) -> None:
        ex.parts = [_jsonrpc_error(None, code, message, status)]
        ex.waiting = 0
        self._jsonrpc_maybe_done(ex)

    def _jsonrpc_entry(self, ex: Exchange, entry: Any, extra: Tuple[Optional[int], Optional[Dict[str, str]]]) -> None:
        index = len(ex.parts)
        ex.known.append(True)
        if type(entry) is not dict:
            ex.parts.append(_jsonrpc_error(None, INVALID_REQUEST, "Invalid Request: not an object", _INVALID_ARGUMENT))
            ex.ids.append(None)
            return
        rid = entry.get("id", _MISSING)
        notify = rid is _MISSING
        ex.ids.append(None if notify else rid)
        method = entry.get("method")
        params = entry.get("params", _MISSING)
        why = None
        if entry.get("jsonrpc") != "2.0":
            why = 'Invalid Request: "jsonrpc" must be "2.0"'
        elif not notify and rid is not None and type(rid) not in (str, int, float):
            why = "Invalid Request: an id is a string, a number or null"
        elif type(method) is not str:
            why = "Invalid Request: a method name is a string"
        elif params is not _MISSING and type(params) not in (list, dict):
            why = "Invalid Request: params is an array or an object"
        if why is not None:
            # Answered even without an id: it cannot be told a notification.
            good_id = not notify and (rid is None or type(rid) in (str, int, float))
            ex.parts.append(_jsonrpc_error(rid if good_id else None, INVALID_REQUEST, why, _INVALID_ARGUMENT))
            return
        if self._limits and params is not _MISSING:
            over = over_limits(params, self._limits)
            if over is not None:
                ex.parts.append(None if notify else _jsonrpc_error(rid, INVALID_PARAMS, f"Invalid params: {over}", _INVALID_ARGUMENT))
                return
        assert type(method) is str
        resolved = self._resolve(method)
        ex.known[index] = resolved is not None
        name = resolved or method
        if params is _MISSING:
            args: List[Any] = []
            kwargs: Optional[Dict[str, Any]] = None
        elif type(params) is dict:
            args, kwargs = [], params
        else:
            args, kwargs = params, None
        call = Call(name, args, kwargs, (ex, index), notify)
        call.deadline, call.metadata = extra  # type: ignore[assignment]
        ex.calls.append(call)
        ex.parts.append(None)
        if not notify:
            ex.waiting += 1

    def _jsonrpc_maybe_done(self, ex: Exchange) -> None:
        if ex.waiting:
            return
        parts = [p for p in ex.parts if p is not None]
        if not parts:
            self.reply(ex, 204, b"", None)  # notifications only: nothing to say
            return
        try:
            body = to_json(parts if ex.batch else parts[0])
        except (TypeError, ValueError):  # pragma: no cover - each part was encoded once
            body = _safe_json(parts if ex.batch else parts[0])
        self.reply(ex, 200, body)

    # -- answers ------------------------------------------------------------------------

    def result(self, fid: Tuple[Exchange, int], value: Any) -> None:
        """Call ``fid`` returned ``value``."""
        ex, index = fid
        if ex.kind == "jsonrpc":
            part = {"jsonrpc": "2.0", "id": ex.ids[index], "result": value}
            try:
                size = len(to_json(part))
            except (TypeError, ValueError) as exc:
                self.failure(fid, _INTERNAL, f"cannot encode the result: {exc}")
                return
            if size > self.max_message_size:
                self.failure(fid, _RESOURCE_EXHAUSTED, f"result of {size} bytes is over the limit of {self.max_message_size}")
                return
            ex.parts[index] = part
            ex.waiting -= 1
            self._jsonrpc_maybe_done(ex)
            return
        if ex.msgpack:
            body = self._msgpack(value)
            if body is None:
                self._rest_done_error(ex, _INTERNAL, f"cannot encode the result as msgpack: a {type(value).__name__}")
                return
            ctype = MSGPACK_TYPES[0]
        else:
            try:
                body = to_json(value)
            except (TypeError, ValueError) as exc:
                self._rest_done_error(ex, _INTERNAL, f"cannot encode the result as JSON: {exc}")
                return
            ctype = JSON_TYPE
        if len(body) > self.max_message_size:
            self._rest_done_error(ex, _RESOURCE_EXHAUSTED, f"result of {len(body)} bytes is over the limit of {self.max_message_size}")
            return
        ex.waiting = 0
        self.reply(ex, 200, body, ctype)

    def _rest_done_error(self, ex: Exchange, code: int, message: str, details: Any = None) -> None:
        ex.waiting = 0
        self._rest_error(ex, code, message, details)

    def failure(self, fid: Tuple[Exchange, int], code: int, message: str, details: Any = None) -> None:
        """Call ``fid`` failed with status ``code``."""
        ex, index = fid
        if ex.kind != "jsonrpc":
            self._rest_done_error(ex, code, message, details)
            return
        if code == _NOT_FOUND and not ex.known[index]:
            jcode = METHOD_NOT_FOUND
        elif code == _INVALID_ARGUMENT:
            jcode = INVALID_PARAMS
        else:
            jcode = SERVER_ERROR
        ex.parts[index] = _jsonrpc_error(ex.ids[index], jcode, message, code, details)
        ex.waiting -= 1
        self._jsonrpc_maybe_done(ex)


def _jsonrpc_error(rid: Any, jcode: int, message: str, status: int, details: Any = None) -> Dict[str, Any]:
    data: Dict[str, Any] = {"code": status, "status": code_name(status)}
    if details is not None:
        data["details"] = details
    error = {"code": jcode, "message": message, "data": data}
    try:
        to_json(error)
    except (TypeError, ValueError):
        data.pop("details", None)
    return {"jsonrpc": "2.0", "id": rid, "error": error}


#: GET paths the server answers itself
_ROUTES = {
    "/healthz": "healthz",
    "/methods": "methods",
    "/metrics": "metrics",
    "/debug/rpc": "debug",
}
