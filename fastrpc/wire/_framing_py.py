"""Pure-Python frame parser and writer (wire format 1.1, docs/protocol.md).

The reference twin of ``_framing.pyx``: same classes, arguments, results
and exceptions.  ``_impl.py`` picks one of the two.
"""

from __future__ import annotations

import copy
import struct
import threading
from operator import attrgetter
from typing import Any, Callable, List, Optional, Tuple, Union

from . import constants as W
from ._codec_py import Decoder, Encoder, RefBuffer
from ..errors import (
    DecodeError,
    FrameError,
    FrameTooLarge,
    MalformedFrame,
    PrefaceError,
    ProtocolVersionError,
    TruncatedFrame,
    UnknownMessageType,
)

__all__ = ["Frame", "FrameParser", "FrameWriter"]

_HEADER = struct.Struct(">IBBHI")  # length, type, flags, method, request_id
_unpack_header = _HEADER.unpack_from
_pack_header_into = _HEADER.pack_into
_unpack_H = struct.Struct(">H").unpack_from
_unpack_I = struct.Struct(">I").unpack_from
_unpack_Q = struct.Struct(">Q").unpack_from
_pack_H = struct.Struct(">H").pack
_pack_I = struct.Struct(">I").pack
_pack_Q = struct.Struct(">Q").pack

#: size of the per-thread receive buffer get_buffer() hands out
RECV_BUFFER_SIZE = 256 * 1024
# One scratch buffer per thread, not per connection: buffer_updated() copies
# what it keeps, so idle connections hold no receive memory at all.
_local = threading.local()

_HEADER_SIZE = W.HEADER_SIZE
_MIN_MSG_TYPE = W.MIN_MSG_TYPE
_MAX_MSG_TYPE = W.MAX_MSG_TYPE
_REQUEST = int(W.MsgType.REQUEST)
_RESPONSE = int(W.MsgType.RESPONSE)
_NOTIFY = int(W.MsgType.NOTIFY)
_ZERO_HEADER = bytes(_HEADER_SIZE)
_UNKNOWN_FLAGS = 0xFF & ~W.KNOWN_FLAGS
_FLAG_METHOD_NAME = W.FLAG_METHOD_NAME
_FLAG_DEADLINE = W.FLAG_DEADLINE
_FLAG_METADATA = W.FLAG_METADATA
_FLAG_KWARGS = W.FLAG_KWARGS
_FLAG_COMPRESSED = W.FLAG_COMPRESSED

# Re-entrant use (from a hook that runs while the parser is parsing or the
# writer is writing a frame) is refused with these, the compiled twin's
# exception and words.
_PARSER_BUSY = "FrameParser.feed() called while it is running (from a decoder hook)"
_PARSER_BUSY_UPDATED = "FrameParser.buffer_updated() called while the parser is running"
_WRITER_BUSY = "FrameWriter used while it is writing a frame (from an encoder hook)"


def _max_frame_size_property() -> property:
    # FrameParser.max_frame_size and FrameWriter.max_frame_size: checked
    # when assigned, later as in the constructor (the compiled twin's rule),
    # so a bad value fails there and leaves the old one, not at the next
    # frame.  The hot paths read the copy in _max_frame_size, an instance
    # attribute, as fast to read as the plain attribute this used to be.
    def set_max_frame_size(self: Any, value: Any) -> None:
        if not W.HEADER_SIZE <= value <= W.MAX_FRAME_SIZE_LIMIT:
            raise ValueError(f"max_frame_size must be in {W.HEADER_SIZE}..{W.MAX_FRAME_SIZE_LIMIT}")
        self._max_frame_size = value

    return property(attrgetter("_max_frame_size"), set_max_frame_size, doc="largest frame, header included")


class Frame:
    """One decoded frame.

    Attributes:
        type: message type (a :class:`fastrpc.wire.constants.MsgType` value, as int).
        flags: raw flags byte.
        method: method index (requests/notifications by index), else 0.
        name: method name when the frame carries one, else ``None``.
        request_id: the call this frame belongs to (0 where unused).
        deadline: relative timeout in microseconds, or ``None``.
        metadata: dict of per-call metadata, or ``None``.
        value: decoded payload (``None`` for an empty payload).
        error: a :class:`DecodeError` if the metadata or payload could not be
            decoded (``value`` is then ``None``); the frame boundaries are
            intact, so only this call fails.
    """

    __slots__ = ("type", "flags", "method", "name", "request_id", "deadline", "metadata", "value", "error")

    def __init__(
        self,
        type: int,
        flags: int,
        method: int,
        name: Optional[str],
        request_id: int,
        deadline: Optional[int],
        metadata: Optional[dict],
        value: Any,
        error: Optional[DecodeError],
    ) -> None:
        self.type = type
        self.flags = flags
        self.method = method
        self.name = name
        self.request_id = request_id
        self.deadline = deadline
        self.metadata = metadata
        self.value = value
        self.error = error

    def __repr__(self) -> str:
        try:
            kind = W.MsgType(self.type).name
        except ValueError:  # pragma: no cover - parser rejects these
            kind = str(self.type)
        return (
            f"<Frame {kind} id={self.request_id} flags=0x{self.flags:02x} method={self.method}"
            f" name={self.name!r} deadline={self.deadline} metadata={self.metadata!r}"
            f" value={self.value!r} error={self.error!r}>"
        )


class FrameParser:
    """Incremental frame parser.

    Feed it chunks of any size with :meth:`feed`; it returns the frames
    completed by that chunk, each exactly once and in order.  It buffers at
    most one partial frame (sized once from its length field, so a large
    frame is copied into place once) and never rescans consumed bytes.

    Parameters:
        max_frame_size: largest accepted frame, header included; a larger
            announced length raises :class:`FrameTooLarge` before any of the
            body is buffered.
        expect_preface: the stream starts with the 8-byte fastrpc preface
            (true for both ends of a connection).
        decoder: :class:`Decoder` used for payloads and metadata (limits).
    """

    max_frame_size = _max_frame_size_property()

    def __init__(
        self,
        *,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        expect_preface: bool = True,
        decoder: Optional[Decoder] = None,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.decoder = decoder if decoder is not None else Decoder()
        self.peer_version: Optional[Tuple[int, int]] = None
        self._preface_left = W.PREFACE_SIZE if expect_preface else 0
        self._preface_buf = bytearray()
        self._buf = bytearray()  # the one partial frame (or partial header)
        self._frame_size = 0  # total size of the partial frame, once known
        self._error: Optional[FrameError] = None
        self._recv_view: Optional[memoryview] = None
        # True inside _run(): a decoder hook feeding this parser then would
        # see (and change) the state of the chunk being parsed.
        self._busy = False
        #: compressed payload -> payload (wire/compression.py), or None:
        #: set once a connection agreed on compression
        self.decompressor: Optional[Callable[[bytes], bytes]] = None

    @property
    def buffered(self) -> int:
        """Bytes held for the frame (or preface) in progress."""
        return len(self._buf) + len(self._preface_buf)

    def feed(self, data: Any) -> List[Frame]:
        """Consume ``data`` and return the frames it completed.

        Raises a :class:`FrameError` subclass on invalid input; its
        ``frames`` attribute holds the valid frames that preceded the error
        in this call.  After an error the parser stays broken: every later
        call raises the same kind of error.
        """
        if self._error is not None:
            raise self._again()
        if self._busy:
            raise RuntimeError(_PARSER_BUSY)
        if type(data) is not bytes:
            # Any bytes-like object, copied in order; not an int (which
            # bytes() would turn into that many zero bytes) or a list.
            data = bytes(memoryview(data))
        return self._run(data)

    def _again(self) -> FrameError:
        # The same error again (class, message, attributes such as
        # peer_version), without the frames already handed out.
        err = copy.copy(self._error)
        err.frames = []
        return err

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable memory for the next read (``asyncio.BufferedProtocol``).

        Read into it, then call :meth:`buffer_updated` with the byte count
        before calling this again.  (The compiled parser hands out the
        partial frame's own storage for large frames, so they are received
        in place; this twin reads into a per-thread scratch buffer.)
        """
        scratch = getattr(_local, "scratch", None)
        if scratch is None:
            scratch = _local.scratch = memoryview(bytearray(RECV_BUFFER_SIZE))
        self._recv_view = scratch
        return scratch

    def buffer_updated(self, nbytes: int) -> List[Frame]:
        """Parse the ``nbytes`` just read into :meth:`get_buffer`'s memory;
        results and errors as for :meth:`feed`."""
        view = self._recv_view
        if view is None or not 0 <= nbytes <= len(view):
            raise ValueError("buffer_updated() without a matching get_buffer()")
        self._recv_view = None
        if self._error is not None:
            raise self._again()
        if self._busy:
            raise RuntimeError(_PARSER_BUSY_UPDATED)
        return self._run(bytes(view[:nbytes]))

    def feed_eof(self) -> None:
        """Signal the end of the stream; raises :class:`TruncatedFrame` if a
        frame (or the preface) was left incomplete."""
        if self._error is not None:
            raise self._again()
        if self._buf or self._preface_buf:
            self._error = TruncatedFrame(
                f"stream ended inside a frame ({self.buffered} byte(s) of an incomplete frame buffered)"
            )
            raise self._error

    # -- internals ---------------------------------------------------------

    def _run(self, data: bytes) -> List[Frame]:
        # The frames ``data`` completes; on a framing error the parser keeps
        # the error (every later call raises it again) and the exception
        # carries the frames before it.  Busy for the whole call (one flag
        # set and cleared per chunk, nothing per frame).
        frames: List[Frame] = []
        self._busy = True
        try:
            pos = 0
            end = len(data)
            if self._preface_left:
                pos = self._take_preface(data)
                if self._preface_left:
                    return frames
            buf = self._buf
            if buf:
                # Complete the partial frame first, taking only the bytes it needs.
                if len(buf) < _HEADER_SIZE:
                    take = min(_HEADER_SIZE - len(buf), end - pos)
                    buf += data[pos : pos + take]
                    pos += take
                    if len(buf) < _HEADER_SIZE:
                        if len(buf) >= 4:
                            self._check_length(buf, 0)
                        return frames
                    self._frame_size = self._check_header(buf, 0)
                take = min(self._frame_size - len(buf), end - pos)
                if take:
                    buf += data[pos : pos + take]
                    pos += take
                if len(buf) < self._frame_size:
                    return frames
                frames.append(self._parse(bytes(buf), 0, self._frame_size))
                self._buf = bytearray()
                self._frame_size = 0
            # Whole frames straight from the chunk, no copy of the chunk.
            max_size = self._max_frame_size
            parse = self._parse
            decode = self.decoder.decode_range
            append = frames.append
            while end - pos >= _HEADER_SIZE:
                size, mtype, flags, method, request_id = _unpack_header(data, pos)
                size += 4
                if (
                    size > max_size
                    or size < _HEADER_SIZE
                    or not _MIN_MSG_TYPE <= mtype <= _MAX_MSG_TYPE
                    or flags & _UNKNOWN_FLAGS
                ):
                    size = self._check_header(data, pos)  # raises the precise error
                stop = pos + size
                if stop > end:
                    break
                if flags:
                    append(parse(data, pos, stop))
                else:
                    # No name, deadline or metadata (nearly every frame): the
                    # payload follows the header.  Parsed here, with no call.
                    value = error = None
                    if stop > pos + _HEADER_SIZE:
                        try:
                            value = decode(data, pos + _HEADER_SIZE, stop)
                        except DecodeError as exc:
                            error = exc
                    append(Frame(mtype, 0, method, None, request_id, None, None, value, error))
                pos = stop
            if pos < end:
                rest = data[pos:]
                if len(rest) >= 4:
                    self._check_length(rest, 0)
                if len(rest) >= _HEADER_SIZE:
                    self._frame_size = self._check_header(rest, 0)
                self._buf = bytearray(rest)
        except FrameError as exc:
            exc.frames = frames
            self._error = exc
            self._buf = bytearray()
            self._preface_buf = bytearray()
            raise
        finally:
            self._busy = False
        return frames

    def _take_preface(self, data: bytes) -> int:
        need = self._preface_left
        chunk = data[:need]
        got = self._preface_buf
        start = len(got)
        got += chunk
        self._preface_left -= len(chunk)
        # Reject as soon as a byte differs: a wrong protocol is found early.
        magic_seen = got[: len(W.MAGIC)]
        if magic_seen != W.MAGIC[: len(magic_seen)]:
            raise PrefaceError(
                f"not a fastrpc connection: expected preface {W.PREFACE!r}, got {bytes(got)!r}"
            )
        if len(got) >= 6 and start < 6:
            major, minor = got[4], got[5]
            self.peer_version = (major, minor)
            if major != W.PROTOCOL_MAJOR:
                raise ProtocolVersionError(
                    f"peer speaks fastrpc protocol {major}.{minor}; this side speaks "
                    f"{W.PROTOCOL_MAJOR}.{W.PROTOCOL_MINOR}",
                    peer_version=(major, minor),
                )
        if len(got) == W.PREFACE_SIZE:
            if got[6:8] != b"\r\n":
                raise PrefaceError(f"malformed fastrpc preface {bytes(got)!r}")
            self._preface_buf = bytearray()
        return len(chunk)

    def _check_length(self, data: Any, pos: int) -> int:
        size = _unpack_I(data, pos)[0] + 4
        if size > self._max_frame_size:
            raise FrameTooLarge(f"frame of {size} bytes exceeds max_frame_size={self._max_frame_size}")
        if size < _HEADER_SIZE:
            raise MalformedFrame(f"frame length {size - 4} is shorter than the frame header")
        return size

    def _check_header(self, data: Any, pos: int) -> int:
        size = self._check_length(data, pos)
        mtype = data[pos + 4]
        if not W.MIN_MSG_TYPE <= mtype <= W.MAX_MSG_TYPE:
            raise UnknownMessageType(f"unknown message type {mtype}")
        flags = data[pos + 5]
        if flags & _UNKNOWN_FLAGS:
            raise MalformedFrame(f"reserved flag bits set: 0x{flags & _UNKNOWN_FLAGS:02x}")
        return size

    def _parse(self, data: bytes, start: int, end: int) -> Frame:
        _, mtype, flags, method, request_id = _unpack_header(data, start)
        pos = start + _HEADER_SIZE
        name = None
        deadline = None
        metadata = None
        value = None
        error = None
        if flags & W.FLAG_METHOD_NAME:
            if pos + 2 > end:
                raise TruncatedFrame("frame ends inside the method name length")
            n = _unpack_H(data, pos)[0]
            pos += 2
            if pos + n > end:
                raise TruncatedFrame("frame ends inside the method name")
            try:
                name = data[pos : pos + n].decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedFrame("method name is not valid UTF-8") from None
            pos += n
        if flags & W.FLAG_DEADLINE:
            if pos + 8 > end:
                raise TruncatedFrame("frame ends inside the deadline")
            deadline = _unpack_Q(data, pos)[0]
            pos += 8
        if flags & W.FLAG_METADATA:
            if pos + 4 > end:
                raise TruncatedFrame("frame ends inside the metadata length")
            n = _unpack_I(data, pos)[0]
            pos += 4
            if pos + n > end:
                raise TruncatedFrame("frame ends inside the metadata")
            try:
                metadata = self.decoder.decode_range(data, pos, pos + n)
                if type(metadata) is not dict:
                    metadata = None
                    raise DecodeError("metadata is not a map")
            except DecodeError as exc:
                error = exc
            pos += n
        if pos < end and error is None:
            try:
                if flags & _FLAG_COMPRESSED:
                    if self.decompressor is None:
                        raise DecodeError("compressed payload, but this connection agreed on no compression")
                    raw = bytes(self.decompressor(bytes(data[pos:end])))
                    value = self.decoder.decode_range(raw, 0, len(raw))
                else:
                    value = self.decoder.decode_range(data, pos, end)
            except DecodeError as exc:
                error = exc
        return Frame(mtype, flags, method, name, request_id, deadline, metadata, value, error)


class FrameWriter:
    """Builds frames into one growing buffer.

    Write any number of frames, then :meth:`take` the bytes for a single
    ``transport.write``.  A frame that fails (unencodable value, too large)
    raises and leaves the buffer exactly as it was before that frame.

    Parameters:
        max_frame_size: largest frame this writer produces; a larger one
            raises :class:`FrameTooLarge`.
        encoder: :class:`Encoder` used for payloads and metadata.
    """

    max_frame_size = _max_frame_size_property()

    def __init__(
        self,
        *,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        encoder: Optional[Encoder] = None,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.encoder = encoder if encoder is not None else Encoder()
        self._buf = RefBuffer()
        self._ref_bytes = 0
        # True while a frame is being written: an encoder hook that used the
        # writer then would write into, or take away, the half-built frame.
        self._busy = False
        #: payload -> compressed payload or None (wire/compression.py), or
        #: None: set once a connection agreed on compression
        self.compressor: Optional[Callable[[bytes], Optional[bytes]]] = None
        #: payloads smaller than this are not compressed
        self.compress_threshold = 1024

    def __len__(self) -> int:
        return len(self._buf) + self._ref_bytes

    @property
    def chunked(self) -> bool:
        """True when a ``bytes`` value of 64 KiB or more is held by reference:
        :meth:`take_chunks` then sends it with no copy (``writelines``)."""
        return self._ref_bytes != 0

    def take(self) -> bytes:
        """Return everything written so far and empty the buffer."""
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        buf = self._buf
        if self._ref_bytes:
            out = b"".join(self._chunks())
            self.clear()
        else:
            out = bytes(buf)
            del buf[:]
        return out

    def _chunks(self) -> List[Any]:
        buf = self._buf
        chunks: List[Any] = []
        pos = 0
        for off, value in buf.refs:
            if off > pos:
                chunks.append(bytes(buf[pos:off]))
            chunks.append(value)
            pos = off
        if len(buf) > pos:
            chunks.append(bytes(buf[pos:]))
        return chunks

    def take_buffer(self) -> Any:
        """Like :meth:`take`, for ``transport.write`` (the compiled writer
        hands large batches over without a copy; here it is :meth:`take`).
        Values held by reference (:attr:`chunked`) are copied in; use
        :meth:`take_chunks` to send them without."""
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        buf = self._buf
        if self._ref_bytes:
            return self.take()
        out = bytes(buf)
        del buf[:]
        return out

    def take_chunks(self) -> List[Any]:
        """Everything written so far as a list of buffers, for
        ``transport.writelines`` or ``socket.sendmsg``, and empty the buffer.

        ``bytes`` values of 64 KiB or more appear as themselves (sent by
        reference: no copy on this side at all); the rest as in
        :meth:`take_buffer`.  Joined, the chunks equal :meth:`take`.
        """
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        if not self._ref_bytes:
            return [self.take()]
        chunks = self._chunks()
        self.clear()
        return chunks

    def clear(self) -> None:
        """Drop everything written so far."""
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        buf = self._buf
        del buf[:]
        if self._ref_bytes:
            del buf.refs[:]
            self._ref_bytes = 0

    def write_preface(self) -> None:
        """Append the 8-byte connection preface."""
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        self._buf += W.PREFACE

    def write_request(
        self,
        request_id: int,
        method: Union[int, str],
        args: Any,
        kwargs: Optional[dict] = None,
        *,
        deadline: Optional[int] = None,
        metadata: Optional[dict] = None,
        notify: bool = False,
    ) -> None:
        """Append a REQUEST (or, with ``notify``, a NOTIFY) frame.

        ``method`` is an index into the server's method table (int) or a
        method name (str).  ``deadline`` is a relative timeout in
        microseconds.  ``args`` is a list or tuple; non-empty ``kwargs`` makes
        the payload ``[args, kwargs]``.
        """
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        # What the frame holds, from method, deadline, metadata and kwargs,
        # as the compiled writer works it out: once each (whether metadata
        # and kwargs are empty is asked once), before the frame is started.
        if type(method) is int:
            flags = 0
            method_index = method
        elif isinstance(method, int) and not isinstance(method, bool):
            flags = 0
            method_index = int(method)
        else:
            flags = _FLAG_METHOD_NAME
            method_index = 0
        if deadline is not None:
            flags |= _FLAG_DEADLINE
        if metadata is not None and metadata:
            flags |= _FLAG_METADATA
        if kwargs is not None and kwargs:
            flags |= _FLAG_KWARGS
        buf = self._buf
        start = len(buf)
        k0 = len(buf.refs)
        self._busy = True
        try:
            if (
                not flags
                and type(request_id) is int
                and 0 <= request_id <= 0xFFFFFFFF
                and 0 <= method_index <= 0xFFFF
                and self.compressor is None
            ):
                # A plain call by index: the checks below all pass.
                buf += _ZERO_HEADER
                self.encoder.pack_into(buf, args)
                if len(buf.refs) == k0 and len(buf) - start <= self._max_frame_size:
                    # Nothing held by reference and within the limit: _finish's
                    # checks pass, so write the header here.
                    _pack_header_into(buf, start, len(buf) - start - 4, _NOTIFY if notify else _REQUEST, 0, method_index, request_id)
                else:
                    self._finish(start, k0, _NOTIFY if notify else _REQUEST, 0, method_index, request_id)
                return
            _check_u32(request_id, "request_id")
            _check_u16(method_index, "method index")
            buf += _ZERO_HEADER
            if flags & _FLAG_METHOD_NAME:
                if not isinstance(method, str):
                    raise TypeError("method must be an int index or a str name")
                name = method.encode("utf-8")
                if len(name) > W.MAX_METHOD_NAME:
                    raise ValueError("method name longer than 65535 bytes")
                buf += _pack_H(len(name))
                buf += name
            if flags & _FLAG_DEADLINE:
                _check_int(deadline, "deadline")
                if deadline < 0 or deadline > W.MAX_DEADLINE_US:
                    raise OverflowError("deadline out of range")
                buf += _pack_Q(deadline)
            if flags & _FLAG_METADATA:
                if not isinstance(metadata, dict):
                    raise TypeError("metadata must be a dict")
                mstart = len(buf)
                buf += b"\0\0\0\0"
                # Metadata's length is taken from the buffer: no references.
                refs, buf.refs = buf.refs, None
                try:
                    self.encoder.pack_into(buf, metadata)
                finally:
                    buf.refs = refs
                buf[mstart : mstart + 4] = _pack_I(len(buf) - mstart - 4)
            pstart = len(buf)
            if flags & _FLAG_KWARGS:
                self.encoder.pack_into(buf, (args, kwargs))
            else:
                self.encoder.pack_into(buf, args)
            if self.compressor is not None:
                flags = self._compress(pstart, k0, flags)
            self._finish(start, k0, W.MsgType.NOTIFY if notify else W.MsgType.REQUEST, flags, method_index, request_id)
        except BaseException:
            del buf[start:]
            del buf.refs[k0:]
            raise
        finally:
            self._busy = False

    def write_response(self, request_id: int, value: Any) -> None:
        """Append a RESPONSE frame carrying ``value``."""
        self.write_frame(_RESPONSE, request_id, value)

    def write_error(self, request_id: int, code: int, message: str, details: Any = None) -> None:
        """Append an ERROR frame with payload ``[code, message, details]``."""
        self.write_frame(W.MsgType.ERROR, request_id, (int(code), message, details))

    def write_frame(self, type: int, request_id: int = 0, value: Any = None) -> None:
        """Append a frame of any type with ``value`` as its payload."""
        if self._busy:
            raise RuntimeError(_WRITER_BUSY)
        buf = self._buf
        start = len(buf)
        k0 = len(buf.refs)
        self._busy = True
        try:
            if type.__class__ is not int:
                _check_int(type, "message type")  # an IntEnum such as MsgType passes; bool does not
            if not _MIN_MSG_TYPE <= type <= _MAX_MSG_TYPE:
                raise ValueError(f"unknown message type {type}")
            if not (request_id.__class__ is int and 0 <= request_id <= 0xFFFFFFFF):
                _check_u32(request_id, "request_id")
            buf += _ZERO_HEADER
            self.encoder.pack_into(buf, value)
            if self.compressor is not None and type == _RESPONSE:
                self._finish(start, k0, type, self._compress(start + _HEADER_SIZE, k0, 0), 0, request_id)
            elif len(buf.refs) == k0 and len(buf) - start <= self._max_frame_size:
                _pack_header_into(buf, start, len(buf) - start - 4, type, 0, 0, request_id)  # as in write_request
            else:
                self._finish(start, k0, type, 0, 0, request_id)
        except BaseException:
            del buf[start:]
            del buf.refs[k0:]
            raise
        finally:
            self._busy = False

    def _compress(self, pstart: int, k0: int, flags: int) -> int:
        # Compress the payload just written (the buffer from pstart on, with
        # the values held by reference from refs[k0] on) when it is large
        # enough and the compressor says it pays; the frame's flags.
        buf = self._buf
        refs = buf.refs
        size = len(buf) - pstart + sum(len(value) for _, value in refs[k0:])
        if size < self.compress_threshold:
            return flags
        if len(refs) == k0:
            payload = bytes(buf[pstart:])
        else:
            parts, pos = [], pstart
            for off, value in refs[k0:]:
                if off > pos:
                    parts.append(bytes(buf[pos:off]))
                    pos = off
                parts.append(value)
            parts.append(bytes(buf[pos:]))
            payload = b"".join(parts)
        out = self.compressor(payload)  # type: ignore[misc]
        if out is None:
            return flags
        del buf[pstart:]
        del refs[k0:]
        buf += out
        return flags | _FLAG_COMPRESSED

    def _finish(self, start: int, k0: int, mtype: int, flags: int, method: int, request_id: int) -> None:
        # The frame starts at ``start`` in the buffer; its values held by
        # reference are self._buf.refs[k0:].
        refs = self._buf.refs
        extra = sum(len(value) for _, value in refs[k0:]) if len(refs) > k0 else 0
        size = len(self._buf) - start + extra
        if size > self._max_frame_size:
            raise FrameTooLarge(f"frame of {size} bytes exceeds max_frame_size={self._max_frame_size}")
        _pack_header_into(self._buf, start, size - 4, mtype, flags, method, request_id)
        self._ref_bytes += extra


def _check_int(n: Any, what: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{what} must be an int, not {type(n).__name__}")


def _check_u32(n: int, what: str) -> None:
    _check_int(n, what)
    if not 0 <= n <= 0xFFFFFFFF:
        raise OverflowError(f"{what} {n} out of range 0..2**32-1")


def _check_u16(n: int, what: str) -> None:
    _check_int(n, what)
    if not 0 <= n <= 0xFFFF:
        raise OverflowError(f"{what} {n} out of range 0..65535")
