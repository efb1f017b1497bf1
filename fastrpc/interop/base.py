"""What every foreign-protocol codec shares: the call it produces, the
error that ends a connection, the interface, and the name rules.

A codec is sans IO (the model of ``core/session.py``): :meth:`Codec.feed`
takes bytes and returns what they hold, in order: :class:`Call` objects to
run and ``bytes`` to send at once (the answer to a request that cannot run:
malformed, wrong shape); then, if the stream broke, a
:class:`ProtocolError` (its ``reply``, possibly empty, is sent and the
connection closed).  :meth:`Codec.result` and :meth:`Codec.error` encode
the answer to a call.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .._impl import packb
from ..wire import constants as W
from ..wire.ext import Timestamp, default_registry

__all__ = ["Call", "Codec", "Fed", "ProtocolError", "json_default", "match_prefix", "method_candidates", "over_limits", "spread"]

_REQUEST = int(W.MsgType.REQUEST)
_NOTIFY = int(W.MsgType.NOTIFY)


class Call:
    """One call read from a foreign client, shaped like a request frame of
    the native protocol (``wire/_framing``'s ``Frame``): the server's
    dispatch and :class:`~fastrpc.core.context.CallContext` read it as
    they read a frame.  ``name`` is the method as registered (see
    :func:`method_candidates`); ``value`` the arguments (``[args, kwargs]``
    with ``FLAG_KWARGS`` in ``flags``); ``request_id`` is set by the
    connection (its own numbering), and ``foreign_id`` is the id the client
    gave (echoed in the answer).  No foreign protocol here carries a
    deadline or metadata: both are None.
    """

    __slots__ = ("type", "flags", "method", "name", "request_id", "deadline", "metadata", "value", "error", "foreign_id")

    def __init__(self, name: str, args: List[Any], kwargs: Optional[Dict[str, Any]], foreign_id: Any, notify: bool) -> None:
        self.type = _NOTIFY if notify else _REQUEST
        self.name = name
        self.method = 0
        if kwargs:
            self.flags = W.FLAG_METHOD_NAME | W.FLAG_KWARGS
            self.value: Any = [args, kwargs]
        else:
            self.flags = W.FLAG_METHOD_NAME
            self.value = args
        self.request_id = 0
        self.deadline = None
        self.metadata = None
        self.error = None
        self.foreign_id = foreign_id

    def __repr__(self) -> str:
        kind = "notify" if self.type == _NOTIFY else "call"
        return f"Call({kind} {self.name!r} id={self.foreign_id!r} value={self.value!r})"


class ProtocolError(Exception):
    """The stream broke (it cannot be read further): ``reply`` (maybe empty)
    is sent, then the connection is closed."""

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


#: what :meth:`Codec.feed` returns
Fed = Tuple[List[Union[Call, bytes]], Optional[ProtocolError]]


class Codec:
    """The interface of a foreign-protocol codec (one per connection).

    Parameters:
        max_message_size: the largest message accepted or sent, in bytes
            (the server's ``max_frame_size``); a larger one is an error.
        decoder_limits: the server's decoding limits (``max_depth``,
            ``max_str_len``, ``max_bin_len``, ``max_array_len``,
            ``max_map_len``).
        resolve: ``resolve(name)``: the registered method a client's name
            means (see :func:`method_candidates`), or None.
        params_of: ``params_of(name)``: the names of the parameters a
            registered method takes by keyword (None: unknown).
    """

    #: the protocol's name (logs, ``Server(protocols=...)``)
    name = ""

    def __init__(
        self,
        *,
        max_message_size: int,
        decoder_limits: Dict[str, Any],
        resolve: Callable[[str], Optional[str]],
        params_of: Callable[[str], Optional[Sequence[str]]],
    ) -> None:
        self.max_message_size = max_message_size
        self._limits = decoder_limits
        self._resolve = resolve
        self._params_of = params_of

    def feed(self, data: bytes) -> Fed:  # pragma: no cover - interface
        """The calls and immediate answers ``data`` completes, in order, and
        the error that broke the stream (None: it goes on)."""
        raise NotImplementedError

    def result(self, foreign_id: Any, value: Any) -> bytes:  # pragma: no cover - interface
        """A call's successful answer.  Raises ``EncodeError`` (or
        ``OverflowError``) for a value the protocol cannot carry and
        ``FrameTooLarge`` past ``max_message_size``; the caller answers
        with an error instead."""
        raise NotImplementedError

    def error(self, foreign_id: Any, code: int, message: str) -> bytes:  # pragma: no cover - interface
        """A call's error answer (``code``: a :class:`~fastrpc.StatusCode`)."""
        raise NotImplementedError

    def name_of(self, name: str) -> str:
        """The registered name ``name`` means, else ``name`` itself (the
        dispatch then answers NOT_FOUND)."""
        return self._resolve(name) or name


def match_prefix(*prefixes: bytes) -> Callable[[bytes], Optional[bool]]:
    """A sniffing matcher: True when a connection's first bytes start with
    one of ``prefixes``, False when they cannot, None while too few have
    arrived to tell."""

    def match(head: bytes) -> Optional[bool]:
        undecided = False
        for p in prefixes:
            if head[: len(p)] == p[: len(head)]:
                if len(head) >= len(p):
                    return True
                undecided = True
        return None if undecided else False

    return match


def method_candidates(name: str) -> Tuple[str, ...]:
    """The registered names a client's method name may mean, in order: the
    name as given, then with the method part's first letter lowercased (Go
    exports capitalised names: ``Arith.Multiply`` calls ``Arith.multiply``)."""
    service, dot, method = name.rpartition(".")
    if method[:1].isupper():
        return (name, f"{service}{dot}{method[:1].lower()}{method[1:]}")
    return (name,)


def spread(params: List[Any], names: Optional[Sequence[str]]) -> Tuple[List[Any], Optional[Dict[str, Any]]]:
    """``(args, kwargs)`` for ``params``: a single object whose every key
    names one of ``names`` (case-insensitively: Go's ``A`` is Python's
    ``a``) is spread into keyword arguments, and a single empty one means
    no arguments to a handler that takes none; anything else is
    positional."""
    if len(params) != 1 or type(params[0]) is not dict or names is None:
        return params, None
    if not params[0]:
        # Go's empty struct (a call with no arguments) to a handler that
        # takes none; a handler with parameters gets {} as its first.
        return ([], None) if not names else (params, None)
    by_lower = {n.lower(): n for n in names}
    kwargs: Dict[str, Any] = {}
    for key, value in params[0].items():
        target = by_lower.get(key.lower()) if type(key) is str else None
        if target is None or target in kwargs:
            return params, None
        kwargs[target] = value
    return [], kwargs


# -- JSON ------------------------------------------------------------------------------


def json_default(value: Any) -> Any:
    """The JSON form of what JSON has no type for (``docs/types.md``, "JSON
    paths"), for every JSON protocol on the port (HTTP, JSON-RPC): bytes as
    base64; aware datetimes and :class:`~fastrpc.Timestamp` as RFC 3339 in
    UTC with a ``Z``; dates as ISO dates; registered extension types as
    ``{"$ext": code, "data": base64}`` (an :class:`~fastrpc.ExtType` value
    is a tuple, which JSON encoders write as the array ``[code, data]``
    before asking: its data as base64).
    TypeError for anything else (and for naive datetimes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError("a naive datetime (no tzinfo) has no RFC 3339 form")
        utc = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return utc.isoformat() + "Z"  # UTC, Z, a fraction only when non-zero
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Timestamp):
        whole = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=value.seconds)
        if not 1 <= whole.year <= 9999:  # pragma: no cover - timedelta refuses first
            raise TypeError(f"{value!r} is outside the years RFC 3339 can write")
        text = whole.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{text}.{value.nanoseconds:09d}Z" if value.nanoseconds else text + "Z"
    if default_registry.code_of(type(value)) is not None:
        code, data = _ext_parts(packb(value))  # the registered pack, framed as its ext
        return {"$ext": code, "data": base64.b64encode(data).decode("ascii")}
    raise TypeError(f"a {type(value).__name__} cannot be carried in JSON")


#: msgpack's ext headers: first byte -> (length of the length field, fixed data length)
_EXT_HEADERS = {0xD4: (0, 1), 0xD5: (0, 2), 0xD6: (0, 4), 0xD7: (0, 8), 0xD8: (0, 16), 0xC7: (1, 0), 0xC8: (2, 0), 0xC9: (4, 0)}


def _ext_parts(packed: bytes) -> Tuple[int, bytes]:
    # (code, data) of one packed ext value.
    size_len, fixed = _EXT_HEADERS[packed[0]]
    code = int.from_bytes(packed[1 + size_len : 2 + size_len], "big", signed=True)
    return code, packed[2 + size_len : 2 + size_len + (fixed or int.from_bytes(packed[1 : 1 + size_len], "big"))]


def over_limits(value: Any, limits: Dict[str, Any]) -> Optional[str]:
    """What in a decoded JSON ``value`` breaks the server's per-kind
    decoding limits (``max_str_len``, ``max_array_len``, ``max_map_len``),
    else None: JSON is not read by the bounded msgpack decoder, so every
    JSON protocol checks them here."""
    max_str = limits.get("max_str_len")
    max_array = limits.get("max_array_len")
    max_map = limits.get("max_map_len")
    todo = [value]
    while todo:
        v = todo.pop()
        t = type(v)
        if t is str:
            if max_str is not None and len(v) > max_str:
                return f"a string of {len(v)} characters is over max_str_len={max_str}"
        elif t is list:
            if max_array is not None and len(v) > max_array:
                return f"an array of {len(v)} items is over max_array_len={max_array}"
            todo.extend(v)
        elif t is dict:
            if max_map is not None and len(v) > max_map:
                return f"an object of {len(v)} keys is over max_map_len={max_map}"
            todo.extend(v.keys())
            todo.extend(v.values())
    return None
