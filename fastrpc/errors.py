"""fastrpc's exception hierarchy.

Everything fastrpc raises derives from :class:`FastRPCError`.  Errors are
defined once, here, in Python; the compiled modules import them, so the
Cython build and the pure-Python fallback raise exactly the same classes.

Three families:

* :class:`FrameError` -- the byte stream is not valid fastrpc framing
  (wrong preface, unknown message type, oversized or malformed frame).
  The connection that sent it cannot be trusted any more and is closed.
* :class:`CodecError` -- a payload could not be encoded or decoded.  On
  decode this concerns one frame only; the connection stays usable.
* :class:`RpcError` -- a call failed with a status code.  Raised by
  handlers, carried over the wire, and re-raised in the caller as the same
  class with the same ``code``, ``message`` and ``details``.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Type

__all__ = [
    "FastRPCError",
    "FrameError",
    "PrefaceError",
    "ProtocolVersionError",
    "FrameTooLarge",
    "UnknownMessageType",
    "MalformedFrame",
    "TruncatedFrame",
    "CodecError",
    "EncodeError",
    "DecodeError",
    "ExtraData",
    "InvalidUTF8",
    "NestingTooDeep",
    "StatusCode",
    "code_name",
    "RpcError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "Unauthenticated",
]


class FastRPCError(Exception):
    """Base class of every exception fastrpc raises."""


# --------------------------------------------------------------------------
# Framing


class FrameError(FastRPCError, ValueError):
    """The byte stream violates the fastrpc wire format.

    ``frames`` holds the complete, valid frames that the parser decoded from
    the same ``feed()`` call before it met the error, in order, so a caller
    can still act on them before it closes the connection.
    """

    def __init__(self, message: str = "", *args: Any) -> None:
        super().__init__(message, *args)
        self.frames: list = []


class PrefaceError(FrameError):
    """The connection did not start with the fastrpc preface."""


class ProtocolVersionError(PrefaceError):
    """The peer speaks a fastrpc protocol major version we do not."""

    def __init__(self, message: str = "", peer_version: Any = None) -> None:
        super().__init__(message)
        self.peer_version = peer_version


class FrameTooLarge(FrameError):
    """A frame is larger than the configured maximum frame size.

    The parser raises this as soon as it has read the 4-byte length, before
    it buffers any of the frame's body.
    """


class UnknownMessageType(FrameError):
    """A frame header names a message type this version does not know."""


class MalformedFrame(FrameError):
    """A frame's header fields are inconsistent (bad flags, fields that run
    past the frame's own length, invalid method name)."""


class TruncatedFrame(MalformedFrame):
    """The stream ended (or a frame ended) in the middle of a structure."""


# --------------------------------------------------------------------------
# Codec


class CodecError(FastRPCError, ValueError):
    """Base class for payload encoding and decoding errors."""


class EncodeError(CodecError, TypeError):
    """A value cannot be encoded (unsupported type, integer out of range,
    nesting too deep)."""


class DecodeError(CodecError):
    """Bytes are not a valid, bounded msgpack value.

    Raised for truncated input, trailing bytes, reserved type bytes, invalid
    UTF-8, unhashable map keys, nesting deeper than ``max_depth`` and lengths
    that exceed either the configured limits or the bytes actually present.
    Three of these cases have a subclass of their own (:class:`ExtraData`,
    :class:`InvalidUTF8`, :class:`NestingTooDeep`); the others are raised as
    plain :class:`DecodeError`.
    """


class ExtraData(DecodeError):
    """A complete value was decoded, but more bytes follow it (msgpack's
    ``ExtraData``).

    ``unpacked`` is the value decoded from the front of the input and
    ``extra`` the bytes after it (a copy).
    """

    def __init__(self, message: str = "", unpacked: Any = None, extra: bytes = b"") -> None:
        super().__init__(message)
        self.unpacked = unpacked
        self.extra = extra

    def __reduce__(self):  # picklable with its fields
        return (type(self), (str(self), self.unpacked, self.extra))


class InvalidUTF8(DecodeError):
    """A msgpack str holds bytes that are not valid UTF-8 (overlong forms,
    encoded surrogates and truncated sequences included)."""


class NestingTooDeep(DecodeError):
    """Arrays and maps are nested deeper than the decoder's ``max_depth``
    (64 by default, at most 1,000), or deeper than the Python stack allows."""


# --------------------------------------------------------------------------
# Status codes and RPC errors


class StatusCode(enum.IntEnum):
    """gRPC-compatible status codes (same numbers as gRPC)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


_CODE_NAMES: Dict[int, str] = {int(c): c.name for c in StatusCode}


def code_name(code: Any) -> str:
    """A status code's name (``"NOT_FOUND"``); the number as text for a code
    this version does not know."""
    try:
        return _CODE_NAMES[int(code)]
    except (KeyError, TypeError, ValueError):
        return str(code)


_CODE_CLASSES: Dict[int, Type["RpcError"]] = {}


class RpcError(FastRPCError):
    """A call failed with a status code.

    ``RpcError(code, message, details)`` constructs the subclass registered
    for ``code`` (``RpcError(StatusCode.NOT_FOUND, ...)`` is a
    :class:`NotFound`), so a handler that raises it and the caller that
    receives it see the same class and the same fields.

    Parameters:
        code: a :class:`StatusCode` (or its integer value).
        message: human-readable description.
        details: any msgpack-encodable value with machine-readable detail.

    A subclass takes the message first: ``NotFound("no such user", {"id": 7})``.
    """

    default_code: StatusCode = StatusCode.UNKNOWN

    def __new__(cls, *args: Any, **kwargs: Any) -> "RpcError":
        if cls is RpcError:
            code = kwargs.get("code", args[0] if args else None)
            if code is not None:
                try:
                    cls = _CODE_CLASSES.get(int(code), RpcError)
                except (TypeError, ValueError):
                    pass
        return super().__new__(cls)

    def __init__(
        self,
        code: Any = None,
        message: str = "",
        details: Any = None,
    ) -> None:
        # Subclasses may be constructed as Subclass("message") or
        # Subclass("message", details): a str in the code position is the
        # message (the class gives the code), and what follows it the details.
        if isinstance(code, str):
            if message != "" and details is None:
                details = message
            code, message = None, code
        if code is None:
            code = self.default_code
        try:
            code = StatusCode(int(code))
        except ValueError:
            code = int(code)  # unknown future code: keep the number
        self.code = code
        self.message = message
        self.details = details
        super().__init__(message)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, StatusCode) else str(self.code)
        return f"[{name}] {self.message}" if self.message else f"[{name}]"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"details={self.details!r})"
        )

    def __reduce__(self):  # keeps the error picklable (multiprocessing, futures)
        return (_rebuild_rpc_error, (int(self.code), self.message, self.details))


def _rebuild_rpc_error(code: int, message: str, details: Any) -> RpcError:
    return RpcError(code, message, details)


def _register(code: StatusCode):
    def wrap(cls: Type[RpcError]) -> Type[RpcError]:
        cls.default_code = code
        _CODE_CLASSES[int(code)] = cls
        return cls

    return wrap


@_register(StatusCode.CANCELLED)
class Cancelled(RpcError):
    """The call was cancelled (by the caller, or the server shut down)."""


@_register(StatusCode.UNKNOWN)
class Unknown(RpcError):
    """The handler raised an exception that is not an :class:`RpcError`."""


@_register(StatusCode.INVALID_ARGUMENT)
class InvalidArgument(RpcError, ValueError):
    """The arguments do not fit the method (wrong count, undecodable)."""


@_register(StatusCode.DEADLINE_EXCEEDED)
class DeadlineExceeded(RpcError, TimeoutError):
    """The call's deadline passed before it completed."""


@_register(StatusCode.NOT_FOUND)
class NotFound(RpcError, LookupError):
    """No such method (or resource) on the server."""


@_register(StatusCode.ALREADY_EXISTS)
class AlreadyExists(RpcError):
    """The entity a call tried to create already exists."""


@_register(StatusCode.PERMISSION_DENIED)
class PermissionDenied(RpcError, PermissionError):
    """The caller may not do this."""


@_register(StatusCode.RESOURCE_EXHAUSTED)
class ResourceExhausted(RpcError):
    """A limit was hit (too many calls in flight, frame too large, ...)."""


@_register(StatusCode.FAILED_PRECONDITION)
class FailedPrecondition(RpcError):
    """The system is not in a state required for the call."""


@_register(StatusCode.ABORTED)
class Aborted(RpcError):
    """The call was aborted (concurrency conflict)."""


@_register(StatusCode.OUT_OF_RANGE)
class OutOfRange(RpcError):
    """An argument is past the valid range."""


@_register(StatusCode.UNIMPLEMENTED)
class Unimplemented(RpcError, NotImplementedError):
    """The operation (or message type) is not implemented by the peer."""


@_register(StatusCode.INTERNAL)
class Internal(RpcError):
    """An invariant of fastrpc itself was broken."""


@_register(StatusCode.UNAVAILABLE)
class Unavailable(RpcError, ConnectionError):
    """The connection is down or was lost; the call may be retried."""


class NotProcessed(Unavailable):
    """The server ended the connection (GOAWAY) before it read this call, so
    the call did not run anywhere: it is safe to send again, even when it
    is not idempotent.  ``Client.call``, ``Client.go``, ``AsyncClient.call``
    and ``Pool.call`` resend such a call once, on a new connection, before
    raising this."""


@_register(StatusCode.DATA_LOSS)
class DataLoss(RpcError):
    """Unrecoverable data loss or corruption."""


@_register(StatusCode.UNAUTHENTICATED)
class Unauthenticated(RpcError):
    """The caller did not present valid credentials."""


__all__ += [
    "NotProcessed",
    "AlreadyExists",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "DataLoss",
]


def error_from_payload(value: Any) -> RpcError:
    """Build the :class:`RpcError` subclass for an ERROR frame's payload
    ``[code, message, details]``, tolerating malformed fields; a payload of
    another shape is an :class:`Internal` error naming it."""
    if type(value) is not list or len(value) < 2:
        return Internal(f"malformed error frame: {value!r}")
    code, message = value[0], value[1]
    details = value[2] if len(value) > 2 else None
    try:
        code = int(code)
    except (TypeError, ValueError):
        code = int(StatusCode.UNKNOWN)
    if not isinstance(message, str):
        message = repr(message)
    return RpcError(code, message, details)
