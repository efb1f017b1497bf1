# Shared declarations of the compiled frame parser and writer (twin of
# _framing_py.py; wire format in docs/protocol.md).

from libc.stdint cimport uint32_t, uint64_t

from fastrpc.wire._codec cimport Decoder, Encoder, WBuf


# Wire constants, mirroring fastrpc/_wire.py (the single Python definition).
# ``cpdef`` also exposes them as attributes of fastrpc.wire._framing, where a test
# compares them with _wire.py.  Cython mangles these names in the generated C.
cpdef enum:
    PROTOCOL_MAJOR = 1
    PROTOCOL_MINOR = 2
    PREFACE_SIZE = 8
    HEADER_SIZE = 12
    HEADER_BODY_SIZE = 8
    MIN_MSG_TYPE = 1
    MAX_MSG_TYPE = 9
    MAX_METHOD_INDEX = 0xFFFF
    MAX_METHOD_NAME = 0xFFFF

# _wire.MsgType
cpdef enum MsgType:
    REQUEST = 1
    RESPONSE = 2
    ERROR = 3
    NOTIFY = 4
    CANCEL = 5
    PING = 6
    PONG = 7
    GOAWAY = 8
    HANDSHAKE = 9

# _wire.FLAG_* and KNOWN_FLAGS
cpdef enum:
    FLAG_METHOD_NAME = 0x01
    FLAG_DEADLINE = 0x02
    FLAG_METADATA = 0x04
    FLAG_KWARGS = 0x08
    FLAG_COMPRESSED = 0x10
    KNOWN_FLAGS = 0x1F


cdef class Frame:
    cdef public object type
    cdef public object flags
    cdef public object method
    cdef public object name
    cdef public object request_id
    cdef public object deadline
    cdef public object metadata
    cdef public object value
    cdef public object error


# Memory a partial frame's body is assembled in.  A refcounted object that
# exports its memory (buffer protocol), so the view get_buffer() hands out
# for in-place receiving keeps it alive even after the parser moves on.
cdef class _RecvChunk:
    cdef char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]


# FrameParser states (derived from the fields below, no separate variable):
#
#   PREFACE --8 good bytes--> FRAMES <-----------------------------+
#   (_preface_left > 0)        |  whole frames: parsed in place     |
#                              |  from the fed chunk, no copy       |
#                              v                                    |
#                   partial header (_plen < 12, bytes in _head)     |
#                              | header complete and checked:       |
#                              v _body sized once = frame - 12      |
#                   partial body (_plen >= 12, rest in _body) ------+
#                                                    frame complete
#   (get_buffer() on a partial body of >= IN_PLACE_MIN bytes hands out the
#   rest of _body itself; buffer_updated() then only advances _plen)
#   any state --FrameError--> BROKEN (_error set; every feed raises)

cdef class FrameParser:
    cdef uint64_t _max_frame_size       # C copy of max_frame_size
    cdef object _max_frame_size_obj     # value as given
    cdef object _decoder                # the decoder object given (or made)
    cdef Decoder _cdec                  # same object if it is a compiled Decoder
    cdef public object peer_version     # (major, minor) once the preface says
    cdef Py_ssize_t _preface_left       # preface bytes still expected
    cdef Py_ssize_t _preface_got        # preface bytes held in _preface
    cdef unsigned char _preface[8]
    cdef unsigned char _head[12]        # header of the partial frame
    cdef Py_ssize_t _plen               # bytes of the partial frame held
    cdef uint64_t _frame_size           # its total size, once the header is known
    cdef _RecvChunk _body_chunk         # owns the body storage (or None)
    cdef char* _body                    # _body_chunk.data: the body (frame - header)
    cdef Py_ssize_t _body_cap           # _body_chunk.size
    cdef object _error                  # the FrameError that broke the parser
    cdef bint _busy                     # inside feed() (re-entrancy guard)
    cdef int _recv_kind                 # what get_buffer() handed out (RECV_*)
    cdef object _recv_view              # that memoryview (None: nothing pending)
    cdef object _recv_obj               # its exporter (scratch bytearray or _RecvChunk)
    cdef public object decompressor     # compressed payload -> payload (wire/compression.py), or None
    cdef Py_ssize_t _recv_plen          # _plen when an in-place view was handed out

    cdef object _get_buffer(self)
    cdef list _buffer_updated(self, object nbytes)
    cdef list _run(self, const unsigned char* data, Py_ssize_t end, Py_ssize_t in_place)
    cdef int _complete_partial(self, list frames) except -1
    cdef int _detach_body(self) except -1
    cdef int _feed(self, const unsigned char* data, Py_ssize_t end, list frames) except -1
    cdef Py_ssize_t _take_preface(self, const unsigned char* data, Py_ssize_t end) except -1
    cdef uint64_t _check_length(self, const unsigned char* p) except 0
    cdef uint64_t _check_header(self, const unsigned char* p) except 0
    cdef int _ensure_body(self, uint64_t need) except -1
    cdef Frame _parse(self, const unsigned char* head, const unsigned char* body, Py_ssize_t blen)
    cdef Py_ssize_t _parse_fields(self, Frame frame, unsigned int flags, const unsigned char* body,
                                  Py_ssize_t blen) except -1
    cdef object _decode(self, const unsigned char* data, Py_ssize_t length)
    cdef object _inflate(self, const unsigned char* data, Py_ssize_t length)


cdef class FrameWriter:
    cdef WBuf _buf                      # frames written so far
    cdef list _refs                     # (offset, bytes) sent by reference (_buf.refs)
    cdef Py_ssize_t _ref_bytes          # their total size
    cdef uint64_t _max_frame_size
    cdef object _max_frame_size_obj
    cdef object _encoder                # the encoder object given (or made)
    cdef Encoder _cenc                  # same object if it is a compiled Encoder
    cdef bint _busy                     # inside a write (re-entrancy guard)
    cdef public object compressor       # payload -> compressed payload or None (wire/compression.py), or None
    cdef public Py_ssize_t compress_threshold  # payloads smaller than this are not compressed

    cdef int _check_idle(self) except -1
    cdef int _encode_value(self, object value) except -1
    cdef int _write_request(self, object request_id, object method, object args, object kwargs,
                            object deadline, object metadata, bint notify) except -1
    cdef object _take_buffer(self)
    cdef int _write_frame(self, object mtype, object request_id, object value) except -1
    cdef int _finish(self, Py_ssize_t start, Py_ssize_t k0, unsigned int mtype, int mtype_bad,
                     unsigned int flags, unsigned int method, uint32_t request_id,
                     int request_id_bad) except -1
    cdef unsigned int _compress(self, Py_ssize_t pstart, Py_ssize_t k0, unsigned int flags) except 0x100
    cdef int _reset(self) except -1
    cdef bytes _joined(self)
    cdef list _take_chunks(self)
