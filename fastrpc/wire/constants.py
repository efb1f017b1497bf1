"""Constants of the fastrpc wire format, version 1.1 (see docs/protocol.md).

This is the single Python definition; ``_framing.pxd`` mirrors the numbers
as a ``cdef enum`` for the compiled parser, and a test checks they agree.
"""

from __future__ import annotations

import enum

#: Protocol version spoken by this implementation.
PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 2

#: Magic bytes that open every fastrpc connection, in both directions.
MAGIC = b"FRPC"
#: Full preface: magic, major, minor, CR LF (catches line-ending mangling).
PREFACE = MAGIC + bytes((PROTOCOL_MAJOR, PROTOCOL_MINOR)) + b"\r\n"
PREFACE_SIZE = len(PREFACE)  # 8

#: length(4) type(1) flags(1) method(2) request_id(4)
HEADER_SIZE = 12
#: the part of the header counted by the length field
HEADER_BODY_SIZE = HEADER_SIZE - 4

DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
#: Absolute cap: the length field is 32 bits.
MAX_FRAME_SIZE_LIMIT = 0xFFFFFFFF + 4

MAX_REQUEST_ID = 0xFFFFFFFF
MAX_METHOD_INDEX = 0xFFFF
MAX_METHOD_NAME = 0xFFFF
MAX_DEADLINE_US = 0xFFFFFFFFFFFFFFFF

DEFAULT_MAX_DEPTH = 64
#: Largest max_depth a codec accepts: deeper recursion could exhaust the C
#: stack of the compiled codec (and Python's recursion limit in the fallback).
MAX_DEPTH_LIMIT = 1000


class MsgType(enum.IntEnum):
    """Frame message types."""

    REQUEST = 1
    RESPONSE = 2
    ERROR = 3
    NOTIFY = 4
    CANCEL = 5
    PING = 6
    PONG = 7
    GOAWAY = 8
    HANDSHAKE = 9


MIN_MSG_TYPE = 1
MAX_MSG_TYPE = 9

# Flags (bit set in the header's flags byte)
FLAG_METHOD_NAME = 0x01  # uint16 length + UTF-8 method name follows the header
FLAG_DEADLINE = 0x02  # uint64 timeout in microseconds follows
FLAG_METADATA = 0x04  # uint32 length + msgpack map follows
FLAG_KWARGS = 0x08  # payload is [args, kwargs] instead of args
FLAG_COMPRESSED = 0x10  # payload is codec id + compressed msgpack (only once agreed at handshake)
#: Bits this version defines; any other bit set is a MalformedFrame.
KNOWN_FLAGS = FLAG_METHOD_NAME | FLAG_DEADLINE | FLAG_METADATA | FLAG_KWARGS | FLAG_COMPRESSED


class ExtType(tuple):
    """A msgpack extension value: ``code`` (-128..127) and raw ``data``.

    Decoders return it for extension types that no ``ext_hook`` claims;
    encoders write it as the matching msgpack ext/fixext record.
    """

    __slots__ = ()

    def __new__(cls, code: int, data: bytes) -> "ExtType":
        if not isinstance(code, int) or not -128 <= code <= 127:
            raise ValueError("ExtType code must be an int in -128..127")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("ExtType data must be bytes-like")
        return tuple.__new__(cls, (code, bytes(data)))

    @property
    def code(self) -> int:
        return self[0]

    @property
    def data(self) -> bytes:
        return self[1]

    def __repr__(self) -> str:
        return f"ExtType(code={self[0]!r}, data={self[1]!r})"

    def __reduce__(self):
        return (ExtType, (self[0], self[1]))
