"""Compiled frame parser and writer (wire format 1.1, docs/protocol.md).

The compiled twin of ``_framing_py.py``: same classes, arguments, results
and exceptions.  ``_impl.py`` picks one of the two.

FrameParser parses every frame that lies wholly inside a fed chunk straight
from the chunk's memory and decodes its payload from there; only a partial
frame at the end of a chunk is copied, into one malloc'd buffer sized once
from the frame's length field.  FrameWriter encodes headers and payloads
into one malloc'd buffer through the compiled Encoder and patches the length
afterwards.
"""

cimport cython
from cpython.dict cimport PyDict_CheckExact
from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_ND,
    PyBUF_SIMPLE,
    PyBUF_STRIDES,
    PyBuffer_FillInfo,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_CheckExact
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow,
    PyLong_AsUnsignedLongLong,
    PyLong_Check,
    PyLong_CheckExact,
    PyLong_FromLong,
    PyLong_FromUnsignedLong,
    PyLong_FromUnsignedLongLong,
)
from cpython.memoryview cimport PyMemoryView_Check
from cpython.number cimport PyIndex_Check, PyNumber_Index, PyNumber_Long
from cpython.object cimport PyObject_IsInstance
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_CheckExact
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

from fastrpc.wire._codec cimport (
    Decoder,
    Encoder,
    WBuf,
    load_be16,
    load_be32,
    load_be64,
    store_be16,
    store_be32,
    store_be64,
    wbuf_put,
    wbuf_release,
)

import copy
import math
import struct
import threading

from . import constants as W
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


cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    unsigned long PyThread_get_thread_ident() nogil

cdef extern from *:
    """
    #ifndef FASTRPC_DEBUG
    #define FASTRPC_DEBUG 0
    #endif
    """
    # 1 in FASTRPC_DEBUG=1 builds (setup.py): invariant checks compile in.
    bint FASTRPC_DEBUG


cdef enum:
    UNKNOWN_FLAGS = 0xFF & ~KNOWN_FLAGS
    # A partial-frame body buffer larger than this is freed once its frame
    # is complete (smaller ones are kept for the next partial frame).
    RETAIN_BODY = 1024 * 1024
    # FrameWriter keeps at most this much capacity after take()/clear().
    RETAIN_WRITE = 256 * 1024
    # take_buffer() hands over (instead of copying) batches this large.
    ZERO_COPY_MIN = 64 * 1024
    # get_buffer() hands out a partial frame's own storage when at least
    # this much of its body is still to come (smaller rests: scratch buffer).
    IN_PLACE_MIN = 16 * 1024
    # What FrameParser.get_buffer() handed out.
    RECV_NONE = 0
    RECV_SCRATCH = 1     # the thread's scratch bytearray
    RECV_BODY = 2        # the rest of the partial frame's body, in place

#: size of the per-thread receive buffer get_buffer() hands out (as the
#: pure twin's)
RECV_BUFFER_SIZE = 256 * 1024
# One scratch buffer per thread, not per connection: buffer_updated() copies
# what it keeps, so idle connections hold no receive memory at all.
cdef object _local = threading.local()
# FrameParser.get_buffer(): the thread that last asked for its scratch
# buffer, that buffer and a view of it.
cdef unsigned long _scratch_thread = 0
cdef object _scratch_view = None
cdef object _scratch = None

cdef uint64_t MAX_DEADLINE_US = 0xFFFFFFFFFFFFFFFFULL
cdef bytes PREFACE = W.PREFACE
cdef object MAX_FRAME_SIZE_LIMIT = W.MAX_FRAME_SIZE_LIMIT
cdef object DEFAULT_MAX_FRAME_SIZE = W.DEFAULT_MAX_FRAME_SIZE
cdef object MsgTypeEnum = W.MsgType
cdef object StructError = struct.error

cdef uint64_t _frame_size_value(object value) except? 0:
    # C value of a max_frame_size already checked to be in
    # HEADER_SIZE..MAX_FRAME_SIZE_LIMIT: ``size > result`` iff ``size > value``.
    if not PyLong_Check(value):
        value = math.floor(value)
    return <uint64_t>PyLong_AsUnsignedLongLong(value)


cdef object _check_frame_size_arg(object value):
    if not HEADER_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
        raise ValueError(f"max_frame_size must be in {HEADER_SIZE}..{MAX_FRAME_SIZE_LIMIT}")
    return value


# --------------------------------------------------------------------------
# Receive memory


cdef char* _FORMAT_B = b"B"


@cython.final
cdef class _RecvChunk:
    """``size`` bytes of malloc'd memory, exported writable through the
    buffer protocol (the parser reads and writes it through ``data``)."""

    def __cinit__(self, Py_ssize_t size):
        self.data = <char*>malloc(<size_t>size if size > 0 else 1)
        if self.data == NULL:
            raise MemoryError(f"cannot buffer a frame body of {size} bytes")
        self.size = size

    def __dealloc__(self):
        free(self.data)
        self.data = NULL

    def __getbuffer__(self, Py_buffer* view, int flags):
        self._shape[0] = self.size
        self._strides[0] = 1
        view.buf = self.data
        view.obj = self
        view.len = self.size
        view.readonly = 0
        view.itemsize = 1
        view.format = NULL
        if flags & PyBUF_FORMAT:
            view.format = _FORMAT_B
        view.ndim = 1
        view.shape = self._shape if flags & PyBUF_ND else NULL
        view.strides = self._strides if flags & PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer* view):
        pass


# --------------------------------------------------------------------------
# Frame


@cython.freelist(64)
@cython.no_gc
cdef class Frame:
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

    Frames are plain records and are not tracked by Python's cyclic garbage
    collector: with it running, a read of 10,000 small frames parses in
    two thirds of the time.  A frame made reachable from its own fields
    (``f.value = [f]``) is therefore never freed; the parser never does
    that, and nothing in fastrpc keeps frames.
    """

    def __init__(self, type, flags, method, name, request_id, deadline, metadata, value, error):
        self.type = type
        self.flags = flags
        self.method = method
        self.name = name
        self.request_id = request_id
        self.deadline = deadline
        self.metadata = metadata
        self.value = value
        self.error = error

    def __repr__(self):
        try:
            kind = MsgTypeEnum(self.type).name
        except ValueError:  # the parser rejects these
            kind = str(self.type)
        return (
            f"<Frame {kind} id={self.request_id} flags=0x{self.flags:02x} method={self.method}"
            f" name={self.name!r} deadline={self.deadline} metadata={self.metadata!r}"
            f" value={self.value!r} error={self.error!r}>"
        )


cdef object _decode_name(const unsigned char* data, Py_ssize_t n):
    try:
        return PyUnicode_DecodeUTF8(<const char*>data, n, NULL)
    except UnicodeDecodeError:
        raise MalformedFrame("method name is not valid UTF-8") from None


# --------------------------------------------------------------------------
# FrameParser


cdef class FrameParser:
    """Incremental frame parser.

    Feed it chunks of any size with :meth:`feed`; it returns the frames
    completed by that chunk, each exactly once and in order.  Frames that
    lie wholly inside a chunk are parsed and decoded in place; it buffers at
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

    def __cinit__(self):
        self._body = NULL
        self._body_cap = 0
        self._max_frame_size = W.DEFAULT_MAX_FRAME_SIZE
        self._max_frame_size_obj = DEFAULT_MAX_FRAME_SIZE
        self._recv_kind = RECV_NONE

    def __init__(self, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE, expect_preface=True, decoder=None):
        self.max_frame_size = max_frame_size
        self._decoder = decoder if decoder is not None else Decoder()
        self._cdec = self._decoder if isinstance(self._decoder, Decoder) else None
        self.peer_version = None
        self._preface_left = PREFACE_SIZE if expect_preface else 0
        self._preface_got = 0
        self._plen = 0
        self._frame_size = 0
        self._error = None

    @property
    def max_frame_size(self):
        return self._max_frame_size_obj

    @max_frame_size.setter
    def max_frame_size(self, value):
        _check_frame_size_arg(value)
        self._max_frame_size = _frame_size_value(value)
        self._max_frame_size_obj = value

    @property
    def decoder(self):
        return self._decoder

    @decoder.setter
    def decoder(self, value):
        self._decoder = value
        self._cdec = value if isinstance(value, Decoder) else None

    @property
    def buffered(self):
        """Bytes held for the frame (or preface) in progress."""
        return self._plen + self._preface_got

    def feed(self, data):
        """Consume ``data`` and return the frames it completed.

        Raises a :class:`FrameError` subclass on invalid input; its
        ``frames`` attribute holds the valid frames that preceded the error
        in this call.  After an error the parser stays broken: every later
        call raises the same kind of error.
        """
        cdef Py_buffer view
        cdef bint have_view = False
        cdef const unsigned char* ptr
        cdef Py_ssize_t n
        if self._error is not None:
            raise self._again()
        if self._busy:
            raise RuntimeError("FrameParser.feed() called while it is running (from a decoder hook)")
        if self._recv_kind == RECV_BODY:
            # An in-place view is out (get_buffer() without buffer_updated()
            # yet): keep what it will hold apart from what this call stores.
            self._detach_body()
        if not PyBytes_CheckExact(data):
            if PyByteArray_CheckExact(data) or PyMemoryView_Check(data):
                try:
                    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
                    have_view = True
                except BufferError:  # a non-contiguous view: bytes() copies it in order
                    pass
            if not have_view:
                # Any bytes-like object, copied in order; not an int (which
                # bytes() would turn into that many zero bytes) or a list.
                data = bytes(memoryview(data))
        if have_view:
            ptr = <const unsigned char*>view.buf
            n = view.len
        else:
            ptr = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        try:
            return self._run(ptr, n, 0)
        finally:
            if have_view:
                PyBuffer_Release(&view)

    cdef list _run(self, const unsigned char* data, Py_ssize_t end, Py_ssize_t in_place):
        """feed() of data[0:end], or (in_place > 0) of the in_place bytes
        just received into the partial frame's body; the FrameError
        bookkeeping of feed()."""
        cdef list frames = []
        self._busy = True
        try:
            if in_place:
                self._plen += in_place
                if <uint64_t>self._plen == self._frame_size:
                    self._complete_partial(frames)
            else:
                self._feed(data, end, frames)
        except FrameError as exc:
            exc.frames = frames
            self._error = exc
            self._plen = 0
            self._preface_got = 0
            raise
        finally:
            self._busy = False
        return frames

    def get_buffer(self, sizehint=-1):
        """Writable memory for the next read (``asyncio.BufferedProtocol``).

        Read into it, then call :meth:`buffer_updated` with the byte count
        before calling this again.  While a frame of which at least 16 KiB
        are still missing is being received, this is the rest of that
        frame's own storage, so the frame is received in place; otherwise a
        per-thread scratch buffer.
        """
        return self._get_buffer()

    cdef object _get_buffer(self):
        cdef Py_ssize_t rest
        cdef Py_ssize_t offset
        global _scratch_thread, _scratch_view, _scratch
        if (self._plen >= HEADER_SIZE and self._error is None and not self._busy
                and self._body_chunk is not None
                and <uint64_t>self._body_cap >= self._frame_size - HEADER_SIZE
                and self._frame_size - <uint64_t>self._plen >= IN_PLACE_MIN):
            offset = self._plen - HEADER_SIZE
            rest = <Py_ssize_t>(self._frame_size - <uint64_t>self._plen)
            view = memoryview(self._body_chunk)[offset:offset + rest]
            self._recv_kind = RECV_BODY
            self._recv_obj = self._body_chunk
            self._recv_plen = self._plen
        else:
            # The calling thread's scratch buffer and a view of it.  The last
            # thread's pair is also kept in C globals (the GIL guards them),
            # so an event loop's thread finds its own without a lookup.
            ident = PyThread_get_thread_ident()
            if _scratch_view is not None and ident == _scratch_thread:
                view = _scratch_view
                scratch = _scratch
            else:
                scratch = getattr(_local, "scratch", None)
                if scratch is None:
                    scratch = _local.scratch = bytearray(RECV_BUFFER_SIZE)
                    _local.view = memoryview(scratch)
                view = _local.view
                _scratch_thread = ident
                _scratch_view = view
                _scratch = scratch
            self._recv_kind = RECV_SCRATCH
            self._recv_obj = scratch
        self._recv_view = view
        return view

    def buffer_updated(self, nbytes):
        """Parse the ``nbytes`` just read into :meth:`get_buffer`'s memory;
        results and errors as for :meth:`feed`."""
        return self._buffer_updated(nbytes)

    cdef list _buffer_updated(self, object nbytes):
        cdef int kind = self._recv_kind
        cdef Py_ssize_t n
        cdef Py_buffer buf
        view = self._recv_view
        obj = self._recv_obj
        if view is None or not 0 <= nbytes <= len(view):
            raise ValueError("buffer_updated() without a matching get_buffer()")
        n = nbytes
        self._recv_view = None
        self._recv_obj = None
        self._recv_kind = RECV_NONE
        if self._error is not None:
            raise self._again()
        if self._busy:
            raise RuntimeError("FrameParser.buffer_updated() called while the parser is running")
        if kind == RECV_BODY:
            if obj is self._body_chunk and self._recv_plen == self._plen:
                if n == 0:
                    return []
                return self._run(NULL, 0, n)  # already in place
            return self.feed(bytes(view[:n]))  # the parser moved on meanwhile
        # The thread's scratch bytearray: parse straight from it, holding an
        # export meanwhile so that nothing can resize it.
        PyObject_GetBuffer(obj, &buf, PyBUF_SIMPLE)
        try:
            if n > buf.len:
                raise ValueError("buffer_updated() without a matching get_buffer()")
            return self._run(<const unsigned char*>buf.buf, n, 0)
        finally:
            PyBuffer_Release(&buf)

    def _again(self):
        # The same error again (class, message, attributes such as
        # peer_version), without the frames already handed out.
        err = copy.copy(self._error)
        err.frames = []
        return err

    def feed_eof(self):
        """Signal the end of the stream; raises :class:`TruncatedFrame` if a
        frame (or the preface) was left incomplete."""
        if self._error is not None:
            raise self._again()
        if self._plen or self._preface_got:
            self._error = TruncatedFrame(
                f"stream ended inside a frame ({self._plen + self._preface_got} byte(s) "
                "of an incomplete frame buffered)"
            )
            raise self._error

    # -- internals ---------------------------------------------------------

    cdef int _feed(self, const unsigned char* data, Py_ssize_t end, list frames) except -1:
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef uint64_t size
        cdef const unsigned char* p
        if self._preface_left:
            pos = self._take_preface(data, end)
            if self._preface_left:
                return 0
        if self._plen:
            # Complete the partial frame first, taking only the bytes it needs.
            if self._plen < HEADER_SIZE:
                take = min(HEADER_SIZE - self._plen, end - pos)
                memcpy(self._head + self._plen, data + pos, <size_t>take)
                self._plen += take
                pos += take
                if self._plen < HEADER_SIZE:
                    if self._plen >= 4:
                        self._check_length(self._head)
                    return 0
                self._frame_size = self._check_header(self._head)
            self._ensure_body(self._frame_size - HEADER_SIZE)
            if <uint64_t>(end - pos) < self._frame_size - <uint64_t>self._plen:
                take = end - pos
            else:
                take = <Py_ssize_t>(self._frame_size - <uint64_t>self._plen)
            if take:
                memcpy(self._body + (self._plen - HEADER_SIZE), data + pos, <size_t>take)
                self._plen += take
                pos += take
            if <uint64_t>self._plen < self._frame_size:
                return 0
            self._complete_partial(frames)
        # Whole frames straight from the chunk, no copy of the chunk.
        while end - pos >= HEADER_SIZE:
            p = data + pos
            size = <uint64_t>load_be32(p) + 4
            if (size > self._max_frame_size or size < HEADER_SIZE
                    or p[4] < MIN_MSG_TYPE or p[4] > MAX_MSG_TYPE or (p[5] & UNKNOWN_FLAGS)):
                self._check_header(p)  # raises the right error
            if <uint64_t>(end - pos) < size:
                break
            frames.append(self._parse(p, p + HEADER_SIZE, <Py_ssize_t>(size - HEADER_SIZE)))
            pos += <Py_ssize_t>size
        if pos < end:
            # Keep the partial frame: header bytes in _head, the body (once
            # the header gives its size) in _body, allocated once.
            p = data + pos
            take = end - pos
            if take >= 4:
                self._check_length(p)
            if take >= HEADER_SIZE:
                self._frame_size = self._check_header(p)
                self._ensure_body(self._frame_size - HEADER_SIZE)
                memcpy(self._head, p, HEADER_SIZE)
                memcpy(self._body, p + HEADER_SIZE, <size_t>(take - HEADER_SIZE))
            else:
                memcpy(self._head, p, <size_t>take)
            self._plen = take
        if FASTRPC_DEBUG:
            assert self._plen == 0 or self._plen < HEADER_SIZE or (
                <uint64_t>self._plen < self._frame_size
                and <uint64_t>self._body_cap >= self._frame_size - HEADER_SIZE), "partial frame state"
        return 0

    cdef int _complete_partial(self, list frames) except -1:
        # The partial frame is complete (_plen == _frame_size): parse it.
        frames.append(self._parse(self._head, <const unsigned char*>self._body,
                                  self._plen - HEADER_SIZE))
        self._plen = 0
        self._frame_size = 0
        if self._body_cap > RETAIN_BODY:
            self._body_chunk = None  # freed once no view of it is left
            self._body = NULL
            self._body_cap = 0
        return 0

    cdef int _detach_body(self) except -1:
        # feed() while an in-place view of _body is out: continue in a copy,
        # so the view's memory is left to the buffer_updated() still to come.
        cdef _RecvChunk chunk
        cdef Py_ssize_t have
        if self._body_chunk is None or self._recv_obj is not self._body_chunk:
            return 0  # nothing to keep apart (or done already)
        chunk = _RecvChunk(self._body_cap)
        have = self._plen - HEADER_SIZE
        if have > 0:
            memcpy(chunk.data, self._body, <size_t>have)
        self._body_chunk = chunk
        self._body = chunk.data
        return 0

    cdef Py_ssize_t _take_preface(self, const unsigned char* data, Py_ssize_t end) except -1:
        cdef Py_ssize_t take = min(self._preface_left, end)
        cdef Py_ssize_t start = self._preface_got
        cdef Py_ssize_t got
        cdef unsigned int major, minor
        memcpy(self._preface + start, data, <size_t>take)
        self._preface_got += take
        self._preface_left -= take
        got = self._preface_got
        # Reject as soon as a byte differs: a wrong protocol is found early.
        if memcmp(self._preface, b"FRPC", <size_t>min(got, 4)) != 0:
            raise PrefaceError(
                f"not a fastrpc connection: expected preface {PREFACE!r}, "
                f"got {PyBytes_FromStringAndSize(<char*>self._preface, got)!r}"
            )
        if got >= 6 and start < 6:
            major = self._preface[4]
            minor = self._preface[5]
            self.peer_version = (major, minor)
            if major != PROTOCOL_MAJOR:
                raise ProtocolVersionError(
                    f"peer speaks fastrpc protocol {major}.{minor}; this side speaks "
                    f"{<int>PROTOCOL_MAJOR}.{<int>PROTOCOL_MINOR}",
                    peer_version=(major, minor),
                )
        if got == PREFACE_SIZE:
            if self._preface[6] != 0x0D or self._preface[7] != 0x0A:
                raise PrefaceError(
                    f"malformed fastrpc preface {PyBytes_FromStringAndSize(<char*>self._preface, got)!r}"
                )
            self._preface_got = 0
        return take

    cdef uint64_t _check_length(self, const unsigned char* p) except 0:
        cdef uint64_t size = <uint64_t>load_be32(p) + 4
        if size > self._max_frame_size:
            raise FrameTooLarge(f"frame of {size} bytes exceeds max_frame_size={self._max_frame_size_obj}")
        if size < HEADER_SIZE:
            raise MalformedFrame(f"frame length {size - 4} is shorter than the frame header")
        return size

    cdef uint64_t _check_header(self, const unsigned char* p) except 0:
        cdef uint64_t size = self._check_length(p)
        cdef unsigned int mtype = p[4]
        cdef unsigned int flags = p[5]
        if mtype < MIN_MSG_TYPE or mtype > MAX_MSG_TYPE:
            raise UnknownMessageType(f"unknown message type {mtype}")
        if flags & UNKNOWN_FLAGS:
            raise MalformedFrame(f"reserved flag bits set: 0x{flags & UNKNOWN_FLAGS:02x}")
        return size

    cdef int _ensure_body(self, uint64_t need) except -1:
        """Room for a partial frame's body of ``need`` bytes (the one
        allocation for that frame)."""
        cdef _RecvChunk chunk
        if self._body_chunk is not None and need <= <uint64_t>self._body_cap:
            return 0
        if need > <uint64_t>PY_SSIZE_T_MAX:
            raise MemoryError(f"cannot buffer a frame body of {need} bytes")
        # Dropping the old chunk frees it, unless a view handed out by
        # get_buffer() still holds it.
        self._body_chunk = None
        self._body = NULL
        self._body_cap = 0
        chunk = _RecvChunk(<Py_ssize_t>need if need > 256 else 256)
        self._body_chunk = chunk
        self._body = chunk.data
        self._body_cap = chunk.size
        return 0

    cdef object _decode(self, const unsigned char* data, Py_ssize_t length):
        # Local references: a hook may replace self._decoder meanwhile.
        cdef Decoder dec = self._cdec
        if dec is not None:
            return dec.decode_ptr(data, length)
        # Any other decoder object: through its decode_range() method.
        decoder = self._decoder
        return decoder.decode_range(PyBytes_FromStringAndSize(<const char*>data, length), 0, length)

    cdef Frame _parse(self, const unsigned char* head, const unsigned char* body, Py_ssize_t blen):
        """Frame from a checked 12-byte header and its ``blen``-byte body.

        Fields are written straight into the new Frame (its slots start as
        None), and only those that are not None: this path runs once per
        frame, and every needless None refcount update costs."""
        cdef Py_ssize_t pos = 0
        cdef unsigned int flags = head[5]
        cdef Frame frame = Frame.__new__(Frame)
        frame.type = PyLong_FromLong(head[4])
        frame.flags = PyLong_FromLong(flags)
        frame.method = PyLong_FromLong(load_be16(head + 6))
        frame.request_id = PyLong_FromUnsignedLong(load_be32(head + 8))
        if flags:
            pos = self._parse_fields(frame, flags, body, blen)
        if pos < blen and frame.error is None:
            try:
                if flags & FLAG_COMPRESSED:
                    frame.value = self._inflate(body + pos, blen - pos)
                else:
                    frame.value = self._decode(body + pos, blen - pos)
            except DecodeError as exc:
                frame.error = exc
        return frame

    cdef object _inflate(self, const unsigned char* data, Py_ssize_t length):
        # A compressed payload: inflated (within the decompressor's limit)
        # by the codec agreed at handshake, then decoded.
        decompressor = self.decompressor
        if decompressor is None:
            raise DecodeError("compressed payload, but this connection agreed on no compression")
        raw = decompressor(PyBytes_FromStringAndSize(<const char*>data, length))
        if not PyBytes_CheckExact(raw):
            raw = bytes(raw)
        return self._decode(<const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))

    cdef Py_ssize_t _parse_fields(self, Frame frame, unsigned int flags, const unsigned char* body,
                                  Py_ssize_t blen) except -1:
        """The optional fields named by ``flags``; returns the payload offset."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t n
        if flags & FLAG_METHOD_NAME:
            if blen - pos < 2:
                raise TruncatedFrame("frame ends inside the method name length")
            n = load_be16(body + pos)
            pos += 2
            if blen - pos < n:
                raise TruncatedFrame("frame ends inside the method name")
            frame.name = _decode_name(body + pos, n)
            pos += n
        if flags & FLAG_DEADLINE:
            if blen - pos < 8:
                raise TruncatedFrame("frame ends inside the deadline")
            frame.deadline = PyLong_FromUnsignedLongLong(load_be64(body + pos))
            pos += 8
        if flags & FLAG_METADATA:
            if blen - pos < 4:
                raise TruncatedFrame("frame ends inside the metadata length")
            n = <Py_ssize_t>load_be32(body + pos)
            pos += 4
            if blen - pos < n:
                raise TruncatedFrame("frame ends inside the metadata")
            try:
                metadata = self._decode(body + pos, n)
                if type(metadata) is not dict:
                    raise DecodeError("metadata is not a map")
                frame.metadata = metadata
            except DecodeError as exc:
                frame.error = exc
            pos += n
        return pos


# --------------------------------------------------------------------------
# FrameWriter argument checks (same checks, order and exceptions as the pure
# twin; where it would fail inside struct.pack, so do these, with
# struct.error, at the same point: see FrameWriter._finish).

cdef enum:
    ARG_OK = 0
    ARG_NOT_INT = 1      # struct.error: required argument is not an integer
    ARG_RANGE = 2        # struct.error: out of range for the field


cdef int _check_int(object n, str what) except -1:
    if not PyObject_IsInstance(n, int) or PyObject_IsInstance(n, bool):
        raise TypeError(f"{what} must be an int, not {type(n).__name__}")
    return 0


cdef int _u32_arg(object n, str what, uint32_t* out) except -1:
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(n):
        v = PyLong_AsLongLongAndOverflow(n, &overflow)
        if overflow or v < 0 or v > 0xFFFFFFFF:
            raise OverflowError(f"{what} {n} out of range 0..2**32-1")
        out[0] = <uint32_t>v
        return ARG_OK
    _check_int(n, what)
    if not 0 <= n <= 0xFFFFFFFF:
        raise OverflowError(f"{what} {n} out of range 0..2**32-1")
    if not PyIndex_Check(n):
        return ARG_NOT_INT
    n = PyNumber_Index(n)
    if not 0 <= n <= 0xFFFFFFFF:
        return ARG_RANGE
    out[0] = <uint32_t>PyLong_AsUnsignedLongLong(n)
    return ARG_OK


cdef int _type_arg(object t, unsigned int* out) except -1:
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(t):
        v = PyLong_AsLongLongAndOverflow(t, &overflow)
        if overflow or v < MIN_MSG_TYPE or v > MAX_MSG_TYPE:
            raise ValueError(f"unknown message type {t}")
        out[0] = <unsigned int>v
        return ARG_OK
    _check_int(t, "message type")  # an IntEnum such as MsgType passes; bool does not
    if not MIN_MSG_TYPE <= t <= MAX_MSG_TYPE:
        raise ValueError(f"unknown message type {t}")
    t = PyNumber_Index(t)
    if not 0 <= t <= 0xFF:
        return ARG_RANGE
    out[0] = <unsigned int>PyLong_AsUnsignedLongLong(t)
    return ARG_OK


cdef int _write_name(WBuf* buf, object method) except -1:
    cdef Py_ssize_t n
    cdef const char* s
    cdef char* p
    cdef Py_buffer view
    if PyUnicode_CheckExact(method):
        s = PyUnicode_AsUTF8AndSize(method, &n)  # UnicodeEncodeError, as str.encode
        if n > MAX_METHOD_NAME:
            raise ValueError("method name longer than 65535 bytes")
        p = wbuf_put(buf, 2 + n)
        store_be16(p, <uint16_t>n)
        memcpy(p + 2, s, <size_t>n)
        return 0
    if not PyObject_IsInstance(method, str):
        raise TypeError("method must be an int index or a str name")
    name = method.encode("utf-8")
    n = len(name)
    if n > MAX_METHOD_NAME:
        raise ValueError("method name longer than 65535 bytes")
    store_be16(wbuf_put(buf, 2), <uint16_t>n)
    PyObject_GetBuffer(name, &view, PyBUF_SIMPLE)
    try:
        memcpy(wbuf_put(buf, view.len), view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef uint64_t _deadline_arg(object deadline) except? 0:
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(deadline):
        v = PyLong_AsLongLongAndOverflow(deadline, &overflow)
        if overflow == 0:
            if v < 0:
                raise OverflowError("deadline out of range")
            return <uint64_t>v
        if overflow < 0:
            raise OverflowError("deadline out of range")
        try:
            return PyLong_AsUnsignedLongLong(deadline)
        except OverflowError:
            raise OverflowError("deadline out of range") from None
    _check_int(deadline, "deadline")
    if deadline < 0 or deadline > MAX_DEADLINE_US:
        raise OverflowError("deadline out of range")
    # struct.pack(">Q", deadline) in the pure twin
    if not PyIndex_Check(deadline):
        raise StructError("required argument is not an integer")
    deadline = PyNumber_Index(deadline)
    if not 0 <= deadline <= MAX_DEADLINE_US:
        raise StructError("argument out of range")
    return PyLong_AsUnsignedLongLong(deadline)


cdef int _raise_arg(int bad, str fmt) except -1:
    if bad == ARG_NOT_INT:
        raise StructError("required argument is not an integer")
    raise StructError(f"{fmt} format requires 0 <= number <= {'255' if fmt == 'ubyte' else '4294967295'}")


# --------------------------------------------------------------------------
# FrameWriter


cdef class _SentBuffer:
    """Frames handed over by FrameWriter.take_buffer(): owns the memory and
    frees it when the last reference (the transport's) goes."""

    cdef char* data
    cdef Py_ssize_t length

    def __dealloc__(self):
        free(self.data)
        self.data = NULL

    def __getbuffer__(self, Py_buffer* view, int flags):
        PyBuffer_FillInfo(view, self, self.data, self.length, 1, flags)

    def __releasebuffer__(self, Py_buffer* view):
        pass

    def __len__(self):
        return self.length


cdef class FrameWriter:
    """Builds frames into one growing buffer.

    Write any number of frames, then :meth:`take` the bytes for a single
    ``transport.write``.  A frame that fails (unencodable value, too large)
    raises and leaves the buffer exactly as it was before that frame.

    Parameters:
        max_frame_size: largest frame this writer produces; a larger one
            raises :class:`FrameTooLarge`.
        encoder: :class:`Encoder` used for payloads and metadata.
    """

    def __cinit__(self):
        self._buf.data = NULL
        self._buf.length = 0
        self._buf.capacity = 0
        self._buf.fixed = NULL
        self._refs = []
        self._buf.refs = <void*>self._refs
        self._ref_bytes = 0
        self._max_frame_size = W.DEFAULT_MAX_FRAME_SIZE
        self._max_frame_size_obj = DEFAULT_MAX_FRAME_SIZE
        self.compress_threshold = 1024

    def __dealloc__(self):
        wbuf_release(&self._buf)

    def __init__(self, *, max_frame_size=DEFAULT_MAX_FRAME_SIZE, encoder=None):
        self.max_frame_size = max_frame_size
        self._encoder = encoder if encoder is not None else Encoder()
        self._cenc = self._encoder if isinstance(self._encoder, Encoder) else None

    @property
    def max_frame_size(self):
        return self._max_frame_size_obj

    @max_frame_size.setter
    def max_frame_size(self, value):
        _check_frame_size_arg(value)
        self._max_frame_size = _frame_size_value(value)
        self._max_frame_size_obj = value

    @property
    def encoder(self):
        return self._encoder

    @encoder.setter
    def encoder(self, value):
        self._encoder = value
        self._cenc = value if isinstance(value, Encoder) else None

    def __len__(self):
        return self._buf.length + self._ref_bytes

    @property
    def chunked(self):
        """True when a ``bytes`` value of 64 KiB or more is held by reference:
        :meth:`take_chunks` then sends it with no copy (``writelines``)."""
        return self._ref_bytes != 0

    cdef int _check_idle(self) except -1:
        if self._busy:
            raise RuntimeError("FrameWriter used while it is writing a frame (from an encoder hook)")
        return 0

    cdef int _reset(self) except -1:
        # Empty, after the contents were handed out.
        self._buf.length = 0
        if self._ref_bytes:
            del self._refs[:]
            self._ref_bytes = 0
        if self._buf.capacity > RETAIN_WRITE:
            wbuf_release(&self._buf)
        return 0

    def take(self):
        """Return everything written so far and empty the buffer."""
        self._check_idle()
        if self._ref_bytes:
            out = self._joined()
        else:
            out = PyBytes_FromStringAndSize(self._buf.data, self._buf.length)
        self._reset()
        return out

    cdef bytes _joined(self):
        # The buffer with the referenced values copied into place.
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t off
        cdef Py_ssize_t n
        cdef char* p
        cdef bytes out = PyBytes_FromStringAndSize(NULL, self._buf.length + self._ref_bytes)
        p = PyBytes_AS_STRING(out)
        for off, value in self._refs:
            memcpy(p, self._buf.data + pos, <size_t>(off - pos))
            p += off - pos
            pos = off
            n = PyBytes_GET_SIZE(value)
            memcpy(p, PyBytes_AS_STRING(value), <size_t>n)
            p += n
        memcpy(p, self._buf.data + pos, <size_t>(self._buf.length - pos))
        return out

    def take_buffer(self):
        """Like :meth:`take`, for ``transport.write``: a batch of at least
        64 KiB is handed over without a copy, as a read-only memoryview of
        the writer's own memory (the writer starts a new buffer), so a large
        payload is copied once on the way out (into the frame), not twice.
        Values held by reference (:attr:`chunked`) are copied in; use
        :meth:`take_chunks` to send them without.
        """
        return self._take_buffer()

    cdef object _take_buffer(self):
        cdef _SentBuffer out
        self._check_idle()
        if self._ref_bytes:
            return self.take()
        if self._buf.length < ZERO_COPY_MIN or self._buf.data == NULL or self._buf.data == self._buf.fixed:
            data = PyBytes_FromStringAndSize(self._buf.data, self._buf.length)
            self._buf.length = 0
            if self._buf.capacity > RETAIN_WRITE:
                wbuf_release(&self._buf)
            return data
        out = _SentBuffer.__new__(_SentBuffer)
        out.data = self._buf.data
        out.length = self._buf.length
        self._buf.data = NULL
        self._buf.length = 0
        self._buf.capacity = 0
        return memoryview(out)

    def take_chunks(self):
        """Everything written so far as a list of buffers, for
        ``transport.writelines`` or ``socket.sendmsg``, and empty the buffer.

        ``bytes`` values of 64 KiB or more appear as themselves (sent by
        reference: no copy on this side at all); the rest as in
        :meth:`take_buffer`.  Joined, the chunks equal :meth:`take`.
        """
        return self._take_chunks()

    cdef list _take_chunks(self):
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t off
        cdef list chunks
        self._check_idle()
        if not self._ref_bytes:
            return [self._take_buffer()]
        chunks = []
        for off, value in self._refs:
            if off > pos:
                chunks.append(PyBytes_FromStringAndSize(self._buf.data + pos, off - pos))
            chunks.append(value)
            pos = off
        if self._buf.length > pos:
            chunks.append(PyBytes_FromStringAndSize(self._buf.data + pos, self._buf.length - pos))
        self._reset()
        return chunks

    def clear(self):
        """Drop everything written so far."""
        self._check_idle()
        self._reset()

    def write_preface(self):
        """Append the 8-byte connection preface."""
        self._check_idle()
        memcpy(wbuf_put(&self._buf, PREFACE_SIZE), <const char*>PREFACE, PREFACE_SIZE)

    cdef int _encode_value(self, object value) except -1:
        cdef Py_buffer view
        # Local references: a hook may replace self._encoder meanwhile.
        cdef Encoder enc = self._cenc
        if enc is not None:
            return enc.pack_to(&self._buf, value)
        # Any other encoder object: through its pack_into() method.
        encoder = self._encoder
        tmp = bytearray()
        encoder.pack_into(tmp, value)
        PyObject_GetBuffer(tmp, &view, PyBUF_SIMPLE)
        try:
            memcpy(wbuf_put(&self._buf, view.len), view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _finish(self, Py_ssize_t start, Py_ssize_t k0, unsigned int mtype, int mtype_bad,
                     unsigned int flags, unsigned int method, uint32_t request_id,
                     int request_id_bad) except -1:
        # The frame starts at ``start`` in the buffer; its values held by
        # reference are self._refs[k0:].
        cdef Py_ssize_t size = self._buf.length - start
        cdef Py_ssize_t extra = 0
        cdef Py_ssize_t i
        cdef char* p
        for i in range(k0, len(self._refs)):
            extra += PyBytes_GET_SIZE((<tuple>self._refs[i])[1])
        size += extra
        if FASTRPC_DEBUG:
            assert 0 <= start and size >= HEADER_SIZE and self._buf.length <= self._buf.capacity, "writer state"
        if <uint64_t>size > self._max_frame_size:
            raise FrameTooLarge(f"frame of {size} bytes exceeds max_frame_size={self._max_frame_size_obj}")
        if mtype_bad:
            _raise_arg(mtype_bad, "ubyte")
        if request_id_bad:
            _raise_arg(request_id_bad, "'I'")
        p = self._buf.data + start
        store_be32(p, <uint32_t>(size - 4))
        p[4] = <char>mtype
        p[5] = <char>flags
        store_be16(p + 6, <uint16_t>method)
        store_be32(p + 8, request_id)
        self._ref_bytes += extra
        return 0

    cdef unsigned int _compress(self, Py_ssize_t pstart, Py_ssize_t k0, unsigned int flags) except 0x100:
        """Compress the payload just written (the buffer from ``pstart`` on,
        with the values held by reference from ``self._refs[k0]`` on) when
        it is large enough and the compressor says it pays; return the
        frame's flags (with FLAG_COMPRESSED if it did)."""
        cdef Py_ssize_t plen = self._buf.length - pstart
        cdef Py_ssize_t i, off, pos
        cdef Py_ssize_t nrefs = len(self._refs)
        cdef Py_ssize_t n
        for i in range(k0, nrefs):
            plen += PyBytes_GET_SIZE((<tuple>self._refs[i])[1])
        if plen < self.compress_threshold:
            return flags
        if nrefs == k0:
            payload = PyBytes_FromStringAndSize(self._buf.data + pstart, self._buf.length - pstart)
        else:
            parts = []
            pos = pstart
            for i in range(k0, nrefs):
                off = (<tuple>self._refs[i])[0]
                if off > pos:
                    parts.append(PyBytes_FromStringAndSize(self._buf.data + pos, off - pos))
                    pos = off
                parts.append((<tuple>self._refs[i])[1])
            if self._buf.length > pos:
                parts.append(PyBytes_FromStringAndSize(self._buf.data + pos, self._buf.length - pos))
            payload = b"".join(parts)
        out = self.compressor(payload)
        if out is None:
            return flags
        if not PyBytes_CheckExact(out):
            out = bytes(out)
        n = PyBytes_GET_SIZE(out)
        self._buf.length = pstart
        del self._refs[k0:]
        memcpy(wbuf_put(&self._buf, n), PyBytes_AS_STRING(out), <size_t>n)
        return flags | FLAG_COMPRESSED

    def write_request(self, request_id, method, args, kwargs=None, *, deadline=None,
                      metadata=None, notify=False):
        """Append a REQUEST (or, with ``notify``, a NOTIFY) frame.

        ``method`` is an index into the server's method table (int) or a
        method name (str).  ``deadline`` is a relative timeout in
        microseconds.  ``args`` is a list or tuple; non-empty ``kwargs`` makes
        the payload ``[args, kwargs]``.
        """
        self._write_request(request_id, method, args, kwargs, deadline, metadata, notify)

    cdef int _write_request(self, object request_id, object method, object args, object kwargs,
                            object deadline, object metadata, bint notify) except -1:
        cdef unsigned int flags = 0
        cdef unsigned int method_index = 0
        cdef uint32_t rid = 0
        cdef int rid_bad
        cdef int overflow = 0
        cdef long long v
        cdef Py_ssize_t start, mstart, mlen, pstart
        cdef Py_ssize_t k0 = len(self._refs)
        cdef uint64_t dl
        cdef char* p
        cdef unsigned int mtype
        self._check_idle()
        if PyLong_CheckExact(method):
            method_index_obj = method
        elif PyObject_IsInstance(method, int) and not PyObject_IsInstance(method, bool):
            method_index_obj = PyNumber_Long(method)  # IntEnum and co.
        else:
            method_index_obj = None
            flags |= FLAG_METHOD_NAME
        if deadline is not None:
            flags |= FLAG_DEADLINE
        if metadata is not None and metadata:
            flags |= FLAG_METADATA
        if kwargs is not None and kwargs:
            flags |= FLAG_KWARGS
        start = self._buf.length
        self._busy = True
        try:
            rid_bad = _u32_arg(request_id, "request_id", &rid)
            if not flags & FLAG_METHOD_NAME:
                v = PyLong_AsLongLongAndOverflow(method_index_obj, &overflow)
                if overflow or v < 0 or v > MAX_METHOD_INDEX:
                    raise OverflowError(f"method index {method_index_obj} out of range 0..65535")
                method_index = <unsigned int>v
            wbuf_put(&self._buf, HEADER_SIZE)
            if flags & FLAG_METHOD_NAME:
                _write_name(&self._buf, method)
            if flags & FLAG_DEADLINE:
                dl = _deadline_arg(deadline)
                store_be64(wbuf_put(&self._buf, 8), dl)
            if flags & FLAG_METADATA:
                if not PyDict_CheckExact(metadata) and not PyObject_IsInstance(metadata, dict):
                    raise TypeError("metadata must be a dict")
                mstart = self._buf.length
                wbuf_put(&self._buf, 4)
                # Metadata's length is taken from the buffer: no references.
                self._buf.refs = NULL
                try:
                    self._encode_value(metadata)
                finally:
                    self._buf.refs = <void*>self._refs
                mlen = self._buf.length - mstart - 4
                if <uint64_t>mlen > 0xFFFFFFFFULL:
                    raise StructError("'I' format requires 0 <= number <= 4294967295")
                store_be32(self._buf.data + mstart, <uint32_t>mlen)
            pstart = self._buf.length
            if flags & FLAG_KWARGS:
                self._encode_value((args, kwargs))
            else:
                self._encode_value(args)
            if self.compressor is not None:
                flags = self._compress(pstart, k0, flags)
            mtype = NOTIFY if notify else REQUEST
            self._finish(start, k0, mtype, ARG_OK, flags, method_index, rid, rid_bad)
        except BaseException:
            self._buf.length = start
            del self._refs[k0:]
            raise
        finally:
            self._busy = False
        return 0

    cdef int _write_frame(self, object mtype, object request_id, object value) except -1:
        cdef unsigned int t = 0
        cdef int t_bad
        cdef uint32_t rid = 0
        cdef int rid_bad
        cdef Py_ssize_t start
        cdef Py_ssize_t k0 = len(self._refs)
        self._check_idle()
        start = self._buf.length
        self._busy = True
        try:
            t_bad = _type_arg(mtype, &t)
            rid_bad = _u32_arg(request_id, "request_id", &rid)
            wbuf_put(&self._buf, HEADER_SIZE)
            self._encode_value(value)
            if self.compressor is not None and t == RESPONSE and not t_bad:
                self._finish(start, k0, t, t_bad, self._compress(start + HEADER_SIZE, k0, 0), 0, rid, rid_bad)
            else:
                self._finish(start, k0, t, t_bad, 0, 0, rid, rid_bad)
        except BaseException:
            self._buf.length = start
            del self._refs[k0:]
            raise
        finally:
            self._busy = False
        return 0

    def write_response(self, request_id, value):
        """Append a RESPONSE frame carrying ``value``."""
        self._write_frame(RESPONSE, request_id, value)

    def write_error(self, request_id, code, message, details=None):
        """Append an ERROR frame with payload ``[code, message, details]``."""
        self._write_frame(ERROR, request_id, (int(code), message, details))

    def write_frame(self, type, request_id=0, value=None):
        """Append a frame of any type with ``value`` as its payload."""
        self._write_frame(type, request_id, value)
