"""JSON-RPC 1.0 as Go's ``net/rpc/jsonrpc`` speaks it: a stream of JSON
objects (no length prefix, no separator needed; whitespace between them is
skipped).

Wire forms::

    request       {"method": "Arith.Multiply", "params": [{"A": 7, "B": 8}], "id": 0}
    notification  the same with "id": null (no answer)
    answer        {"id": 0, "result": 56, "error": null}
    error         {"id": 0, "result": null, "error": "UNKNOWN: ValueError: division by zero"}

Names and arguments: a method is found by its registered name or with the
method part's first letter lowercased (Go's ``Arith.Multiply`` calls
Python's ``Arith.multiply``).  ``params`` is the positional arguments,
except that a single object whose keys all name parameters of the handler
(case-insensitively: Go's field ``A`` is the parameter ``a``) is spread
into keyword arguments (Go's client always sends one struct); an object as
``params`` gives keyword arguments by name.

Answers follow what Go's client codec (``net/rpc/jsonrpc/client.go``)
requires: ``error`` is null or a non-empty string (``"CODE_NAME:
message"``), and ``result`` is never null when ``error`` is null (Go
rejects that answer and fails the whole connection), so a handler's
``None`` is sent as ``{}``: an empty object, which Go decodes into an empty
struct (its idiom for a call with no reply), a map or an ``interface{}``.

Limits: an object larger than ``max_message_size`` (the server's
``max_frame_size``) or nested deeper than ``max_depth`` breaks the stream,
and so does text that is not JSON (invalid UTF-8 included) or a value that
is not an object: an error answer with id null is sent and the connection
closed.  A well-formed object that is not a valid request (no method, params
of the wrong type, no id, past a length limit) is answered with
INVALID_ARGUMENT under its id (null when it has none) and the stream goes
on.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Union

from ..errors import EncodeError, FrameTooLarge, StatusCode, code_name
from .base import Call, Codec, Fed, ProtocolError, json_default, over_limits, match_prefix, spread

__all__ = ["JsonRpcCodec", "match"]

#: a JSON-RPC stream starts with an object
match = match_prefix(b"{")

_INVALID_ARGUMENT = int(StatusCode.INVALID_ARGUMENT)
_RESOURCE_EXHAUSTED = int(StatusCode.RESOURCE_EXHAUSTED)
#: outside strings: what opens or closes a value or starts a string
_OUTSIDE = re.compile(rb'[{}\[\]"]')
#: inside a string: its end or an escape
_INSIDE = re.compile(rb'["\\]')
_SPACE = b" \t\r\n"
_MISSING = object()

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=json_default).encode


class _ObjectScanner:
    """Where the JSON value starting at ``buf[start]`` ends, found across
    reads (position, nesting and whether inside a string carry over)."""

    __slots__ = ("pos", "depth", "in_string", "max_size", "max_depth")

    def __init__(self, max_size: int, max_depth: int) -> None:
        self.pos = 0
        self.depth = 0
        self.in_string = False
        self.max_size = max_size
        self.max_depth = max_depth

    def scan(self, buf: Any, start: int, end: int) -> int:
        """The size of the array or object at ``buf[start]`` once
        ``buf[start:end]`` holds all of it (the scanner is then reset),
        else 0.  Raises ValueError past the size or depth limit."""
        pos = start + self.pos
        depth = self.depth
        in_string = self.in_string
        while pos < end:
            if in_string:
                m = _INSIDE.search(buf, pos, end)
                if m is None:
                    pos = end
                    break
                i = m.start()
                if buf[i] == 0x5C:  # a backslash: skip what it escapes
                    if i + 1 >= end:
                        pos = i
                        break
                    pos = i + 2
                    continue
                in_string = False
                pos = i + 1
                continue
            m = _OUTSIDE.search(buf, pos, end)
            if m is None:
                pos = end
                break
            i = m.start()
            c = buf[i]
            pos = i + 1
            if c == 0x22:  # "
                in_string = True
            elif c == 0x7B or c == 0x5B:  # { [
                depth += 1
                if depth > self.max_depth:
                    raise ValueError(f"JSON nested deeper than {self.max_depth}")
            else:
                depth -= 1
                if depth <= 0:
                    if pos - start > self.max_size:
                        break
                    self.pos = self.depth = 0
                    self.in_string = False
                    return pos - start
        if pos - start > self.max_size:
            raise ValueError(f"JSON object larger than the limit of {self.max_size} bytes")
        self.pos = pos - start
        self.depth = depth
        self.in_string = in_string
        return 0


class JsonRpcCodec(Codec):
    """JSON-RPC 1.0 for one connection (see the module doc)."""

    name = "jsonrpc"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._buf = bytearray()
        self._scanner = _ObjectScanner(self.max_message_size, self._limits.get("max_depth") or 512)
        #: the per-kind decoding limits that are set (checked on each request)
        self._kind_limits = {k: v for k, v in self._limits.items() if k != "max_depth" and v is not None}

    def feed(self, data: bytes) -> Fed:
        buf = self._buf
        buf += data
        out: List[Union[Call, bytes]] = []
        start = 0
        end = len(buf)
        try:
            while start < end:
                if self._scanner.pos == 0:
                    while start < end and buf[start] in _SPACE:
                        start += 1
                    if start == end:
                        break
                    if buf[start] != 0x7B:  # {
                        return out, self._broken(f"expected a JSON object, got {bytes(buf[start:start + 1])!r}...")
                try:
                    size = self._scanner.scan(buf, start, end)
                except ValueError as exc:
                    code = _RESOURCE_EXHAUSTED if "larger" in str(exc) else _INVALID_ARGUMENT
                    return out, self._broken(str(exc), code)
                if not size:
                    break
                text = bytes(buf[start : start + size])
                start += size
                try:
                    msg = json.loads(text.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                    return out, self._broken(f"invalid JSON: {exc}")
                item = self._request(msg)
                if item is not None:
                    out.append(item)
        finally:
            if start:
                del buf[:start]  # once per read: the rest is an object's beginning
        return out, None

    def _broken(self, why: str, code: int = _INVALID_ARGUMENT) -> ProtocolError:
        return ProtocolError(f"jsonrpc: {why}", self.error(None, code, f"jsonrpc: {why}"))

    def _request(self, msg: Dict[str, Any]) -> Union[Call, bytes, None]:
        rid = msg.get("id", _MISSING)
        method = msg.get("method")
        params = msg.get("params", [])
        if rid is _MISSING:
            return self.error(None, _INVALID_ARGUMENT, "jsonrpc: a request needs an id (null for a notification)")
        notify = rid is None
        if type(method) is not str or type(params) not in (list, dict):
            if notify:
                return None
            return self.error(rid, _INVALID_ARGUMENT, "jsonrpc: a request has a string method and an array of params")
        if self._kind_limits:
            why = over_limits(params, self._kind_limits)
            if why is not None:
                return None if notify else self.error(rid, _INVALID_ARGUMENT, f"jsonrpc: {why}")
        name = self.name_of(method)
        if type(params) is dict:
            return Call(name, [], params, rid, notify)
        args, kwargs = spread(params, self._params_of(name))
        return Call(name, args, kwargs, rid, notify)

    def result(self, foreign_id: Any, value: Any) -> bytes:
        try:
            text = _encode({"id": foreign_id, "result": {} if value is None else value, "error": None})
        except (TypeError, ValueError, RecursionError) as exc:
            raise EncodeError(f"not JSON: {exc}") from None
        data = (text + "\n").encode()
        if len(data) > self.max_message_size:
            raise FrameTooLarge(f"answer of {len(data)} bytes is over the limit of {self.max_message_size}")
        return data

    def error(self, foreign_id: Any, code: int, message: str) -> bytes:
        text = f"{code_name(code)}: {message}"
        return (_encode({"id": foreign_id, "result": None, "error": text}) + "\n").encode()
