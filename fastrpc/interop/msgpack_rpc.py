"""msgpack-rpc: a stream of msgpack arrays, no length prefix.

Wire forms (https://github.com/msgpack-rpc/msgpack-rpc/blob/master/spec.md)::

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

Calls are answered as they finish, out of order, matched by ``msgid``.  A
method is found by its registered name (or with the method part's first
letter lowercased, :func:`~fastrpc.interop.base.method_candidates`);
``params`` is the positional arguments.  An error is ``[code_name,
message]`` (``["INVALID_ARGUMENT", "Arith.divide: ..."]``): aiorpc raises
``EnhancedRPCError(code_name, message)`` for a two-element error, mprpc
``RPCError(str(error))``, and both show code and message.

Message boundaries are found without decoding (:class:`_Scanner` walks the
headers; a message arriving in pieces is scanned once, not again from its
start each read) and each whole message is then decoded by the server's
bounded :class:`~fastrpc.Decoder`.  Limits: a message larger than
``max_message_size`` (the server's ``max_frame_size``) or nested deeper
than ``max_depth`` breaks the stream (answered when its msgid can be read,
then closed); one the decoder refuses (past a length limit, invalid UTF-8)
or of the wrong shape is answered with INVALID_ARGUMENT when its msgid is
known (the stream goes on: its end is known) and otherwise closes the
connection.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

from .._impl import Decoder, Encoder
from ..errors import DecodeError, FrameTooLarge, StatusCode, code_name
from .base import Call, Codec, Fed, ProtocolError, match_prefix

__all__ = ["MsgpackRpcCodec", "match"]

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2

#: a request is a fixarray of 4 starting with 0, a notification one of 3
#: starting with 2 (what every msgpack encoder writes for them)
match = match_prefix(b"\x94\x00", b"\x93\x02")

_INVALID_ARGUMENT = int(StatusCode.INVALID_ARGUMENT)
_RESOURCE_EXHAUSTED = int(StatusCode.RESOURCE_EXHAUSTED)


def _header(b: int, buf: Any, pos: int, end: int) -> Optional[Tuple[int, int]]:
    """``(size, items)`` of the msgpack value at ``buf[pos]`` (first byte
    ``b``): bytes of its header and payload, and the values it contains
    (2 per map entry); None while its header is incomplete.  Raises
    ValueError on the one byte msgpack never uses."""
    if b <= 0x7F or b >= 0xE0:
        return 1, 0
    if b <= 0x8F:
        return 1, 2 * (b & 0x0F)
    if b <= 0x9F:
        return 1, b & 0x0F
    if b <= 0xBF:
        return 1 + (b & 0x1F), 0
    if b <= 0xC3:
        if b == 0xC1:
            raise ValueError("byte 0xc1 is not msgpack")
        return 1, 0
    fixed = _FIXED.get(b)
    if fixed is not None:
        return fixed, 0
    width, extra, unit = _SIZED[b]
    if pos + 1 + width > end:
        return None
    n = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
    if unit == 0:  # bin, str, ext: a payload of n bytes
        return 1 + width + extra + n, 0
    return 1 + width, unit * n  # array (1 value each) or map (2)


#: byte -> whole size, for the values of fixed size past 0xc3
_FIXED = {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}
_FIXED.update({0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18})
#: byte -> (length width, bytes between length and payload, values per count: 0 = payload bytes)
_SIZED = {
    0xC4: (1, 0, 0), 0xC5: (2, 0, 0), 0xC6: (4, 0, 0),  # bin
    0xC7: (1, 1, 0), 0xC8: (2, 1, 0), 0xC9: (4, 1, 0),  # ext (a type byte)
    0xD9: (1, 0, 0), 0xDA: (2, 0, 0), 0xDB: (4, 0, 0),  # str
    0xDC: (2, 0, 1), 0xDD: (4, 0, 1),  # array
    0xDE: (2, 0, 2), 0xDF: (4, 0, 2),  # map
}  # fmt: skip


class _Scanner:
    """Where the msgpack value starting at ``buf[start]`` ends, found across
    reads: ``pos`` (bytes of it scanned) and ``stack`` (values still to
    come in each open array/map) carry over, so each byte is looked at
    once however the value is cut.  ``marks`` are where the elements of
    the outermost array end (offsets from its start): a message's parts
    without scanning it again."""

    __slots__ = ("pos", "stack", "marks", "max_size", "max_depth")

    def __init__(self, max_size: int, max_depth: int) -> None:
        self.pos = 0
        self.stack: List[int] = []
        self.marks: List[int] = []
        self.max_size = max_size
        self.max_depth = max_depth

    def scan(self, buf: Any, start: int, end: int) -> int:
        """The size of the value at ``buf[start]`` once ``buf[start:end]``
        holds all of it (then ``marks`` are its elements' ends; the next
        scan starts afresh), else 0.
        Raises ValueError when it is not msgpack, larger than ``max_size``
        or nested deeper than ``max_depth``."""
        pos = start + self.pos
        stack = self.stack
        limit = start + self.max_size
        while pos < end:
            head = _header(buf[pos], buf, pos, end)
            if head is None:
                break
            size, items = head
            if pos + size > limit:
                raise ValueError(f"message larger than the limit of {self.max_size} bytes")
            if pos + size > end:
                break
            pos += size
            if items:
                if len(stack) >= self.max_depth:
                    raise ValueError(f"message nested deeper than {self.max_depth}")
                stack.append(items)
                continue
            while stack:
                if len(stack) == 1:
                    self.marks.append(pos - start)
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
            else:
                self.pos = 0
                self.stack = []
                return pos - start
        self.pos = pos - start
        return 0


def _msgid_of(buf: Any, start: int, end: int) -> Optional[int]:
    """The msgid of the request whose first bytes are ``buf[start:end]``
    (None when they are not a request's or stop before its msgid)."""
    if end - start < 3 or buf[start] != 0x94 or buf[start + 1] != 0x00:
        return None
    b = buf[start + 2]
    if b <= 0x7F:
        return b
    width = _UINT_WIDTH.get(b)
    if width is None or end - start < 3 + width:
        return None
    msgid = int.from_bytes(buf[start + 3 : start + 3 + width], "big")
    return msgid if msgid <= 0xFFFFFFFF else None


_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


class MsgpackRpcCodec(Codec):
    """msgpack-rpc for one connection (see the module doc)."""

    name = "msgpack-rpc"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: the arguments are decoded with the server's limits, the envelope
        #: (kind, msgid, method) without: its 3 or 4 items are not an array
        #: of arguments for max_array_len to count
        self._decoder = Decoder(**self._limits)
        self._envelope = Decoder()
        self._encoder = Encoder()
        self._buf = bytearray()
        self._scanner = _Scanner(self.max_message_size, self._limits.get("max_depth") or 512)

    def feed(self, data: bytes) -> Fed:
        buf = self._buf
        buf += data
        out: List[Union[Call, bytes]] = []
        start = 0
        end = len(buf)
        try:
            while start < end:
                try:
                    size = self._scanner.scan(buf, start, end)
                except ValueError as exc:
                    msgid = _msgid_of(buf, start, end)
                    code = _RESOURCE_EXHAUSTED if "larger" in str(exc) else _INVALID_ARGUMENT
                    reply = b"" if msgid is None else self.error(msgid, code, f"msgpack-rpc: {exc}")
                    return out, ProtocolError(f"msgpack-rpc: {exc}", reply)
                if not size:
                    break
                marks, self._scanner.marks = self._scanner.marks, []
                item = self._message(buf, start, start + size, marks)
                start += size
                if isinstance(item, ProtocolError):
                    return out, item
                if item is not None:
                    out.append(item)
        finally:
            if start:
                del buf[:start]  # once per read: the rest is a message's beginning
        return out, None

    def _message(self, buf: bytearray, start: int, end: int, marks: List[int]) -> Union[Call, bytes, ProtocolError, None]:
        # One whole message, buf[start:end] (its elements end at ``marks``):
        # a call, an error answer, or the error that ends the connection
        # (its msgid is not known).
        msgid = _msgid_of(buf, start, end)
        first = buf[start]
        if (first != 0x94 and first != 0x93) or len(marks) != first & 0x0F:
            if msgid is not None:
                return self.error(msgid, _INVALID_ARGUMENT, "msgpack-rpc: a request is [0, msgid, method, params]")
            return ProtocolError(f"msgpack-rpc: not a request or a notification (first byte 0x{first:02x})")
        edges = [start + 1] + [start + m for m in marks]
        try:
            msg = [self._envelope.decode_range(buf, edges[i], edges[i + 1]) for i in range(len(marks) - 1)]
            msg.append(self._decoder.decode_range(buf, edges[-2], edges[-1]))
        except (DecodeError, ValueError, OverflowError) as exc:
            if msgid is None:
                return ProtocolError(f"msgpack-rpc: undecodable message: {exc}")
            return self.error(msgid, _INVALID_ARGUMENT, f"msgpack-rpc: cannot decode the request: {exc}")
        if type(msg) is list and len(msg) == 4 and msg[0] == REQUEST and type(msg[1]) is int and 0 <= msg[1] <= 0xFFFFFFFF:
            method, params, notify, msgid = msg[2], msg[3], False, msg[1]
        elif type(msg) is list and len(msg) == 3 and msg[0] == NOTIFICATION:
            method, params, notify = msg[1], msg[2], True
        else:
            if msgid is not None:
                return self.error(msgid, _INVALID_ARGUMENT, "msgpack-rpc: a request is [0, msgid, method, params]")
            return ProtocolError(f"msgpack-rpc: not a request or a notification: {_short(msg)}")
        if type(method) is bytes:
            try:
                method = method.decode("utf-8")
            except UnicodeDecodeError:
                method = None
        if type(method) is not str or type(params) is not list:
            if notify:
                return None  # a notification has no answer, right or wrong
            return self.error(msgid, _INVALID_ARGUMENT, "msgpack-rpc: the method must be a string and params an array")
        return Call(self.name_of(method), params, None, msgid, notify)

    def result(self, foreign_id: Any, value: Any) -> bytes:
        data = self._encoder.encode([RESPONSE, foreign_id, None, value])
        if len(data) > self.max_message_size:
            raise FrameTooLarge(f"answer of {len(data)} bytes is over the limit of {self.max_message_size}")
        return data

    def error(self, foreign_id: Any, code: int, message: str) -> bytes:
        return self._encoder.encode([RESPONSE, foreign_id, [code_name(code), message], None])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

