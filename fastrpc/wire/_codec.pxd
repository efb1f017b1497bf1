# Shared declarations of the compiled payload codec (twin of _codec_py.py).
#
# _framing.pyx cimports this file: it writes frame headers and payloads into
# one WBuf through Encoder.pack_to() and decodes payloads straight from the
# received bytes through Decoder.decode_ptr(), with no Python-level calls.

from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from cpython.exc cimport PyErr_NoMemory
from cpython.pyport cimport PY_SSIZE_T_MAX


# --------------------------------------------------------------------------
# Growable output buffer.
#
# ``data[0:length]`` holds the bytes written so far.  ``fixed`` is optional
# caller-owned storage (for instance a stack array) used until the buffer
# outgrows it; anything else ``data`` points to is malloc'd and owned here.
#
# ``refs``, when not NULL, is a Python list owned by the buffer's owner (a
# FrameWriter): the encoder then writes only the header of a ``bytes`` value
# of at least BIN_REF_MIN bytes and appends ``(offset, value)`` to the list;
# the value goes out by reference, its bytes logically at ``offset``.

cdef struct WBuf:
    char* data
    Py_ssize_t length
    Py_ssize_t capacity
    char* fixed
    void* refs


cdef enum:
    BIN_REF_MIN = 64 * 1024


cdef inline void wbuf_init(WBuf* b, char* fixed, Py_ssize_t size) noexcept:
    b.data = fixed
    b.length = 0
    b.capacity = size if fixed != NULL else 0
    b.fixed = fixed
    b.refs = NULL


cdef inline void wbuf_release(WBuf* b) noexcept:
    """Free the heap storage (if any) and leave an empty buffer behind."""
    if b.data != NULL and b.data != b.fixed:
        free(b.data)
    b.data = NULL
    b.length = 0
    b.capacity = 0
    b.fixed = NULL


cdef inline int wbuf_grow(WBuf* b, Py_ssize_t extra) except -1:
    # Room for ``extra`` more bytes; capacity at least doubles.
    cdef Py_ssize_t need
    cdef Py_ssize_t cap
    cdef char* mem
    if extra > PY_SSIZE_T_MAX - b.length:  # need would overflow
        PyErr_NoMemory()
        return -1
    need = b.length + extra
    if b.capacity > PY_SSIZE_T_MAX // 2:
        cap = need
    else:
        cap = b.capacity * 2
    if cap < need:
        cap = need
    if cap < 256:
        cap = 256
    if b.data == NULL or b.data == b.fixed:
        mem = <char*>malloc(<size_t>cap)
        if mem == NULL:
            PyErr_NoMemory()
            return -1
        if b.length:
            memcpy(mem, b.data, <size_t>b.length)
    else:
        mem = <char*>realloc(b.data, <size_t>cap)
        if mem == NULL:
            PyErr_NoMemory()
            return -1
    b.data = mem
    b.capacity = cap
    return 0


cdef inline int wbuf_reserve(WBuf* b, Py_ssize_t extra) except -1:
    if extra <= b.capacity - b.length:
        return 0
    return wbuf_grow(b, extra)


cdef inline char* wbuf_put(WBuf* b, Py_ssize_t n) except NULL:
    """Reserve ``n`` bytes at the end, count them as written, return them."""
    cdef char* p
    if n > b.capacity - b.length:
        wbuf_grow(b, n)
    p = b.data + b.length
    b.length += n
    return p


# --------------------------------------------------------------------------
# Big-endian loads and stores (the compiler turns them into bswap + mov).

cdef inline void store_be16(char* p, uint16_t v) noexcept nogil:
    p[0] = <char>(v >> 8)
    p[1] = <char>v


cdef inline void store_be32(char* p, uint32_t v) noexcept nogil:
    p[0] = <char>(v >> 24)
    p[1] = <char>(v >> 16)
    p[2] = <char>(v >> 8)
    p[3] = <char>v


cdef inline void store_be64(char* p, uint64_t v) noexcept nogil:
    store_be32(p, <uint32_t>(v >> 32))
    store_be32(p + 4, <uint32_t>v)


cdef inline uint16_t load_be16(const unsigned char* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint32_t load_be32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline uint64_t load_be64(const unsigned char* p) noexcept nogil:
    return (<uint64_t>load_be32(p) << 32) | load_be32(p + 4)


# --------------------------------------------------------------------------
# Codec classes.

cdef class Encoder:
    cdef Py_ssize_t _max_depth      # C copy used by the encoder
    cdef object _max_depth_obj      # value as given (attribute, messages)
    cdef object _default            # default hook or None
    cdef object _registry           # the ExtRegistry consulted
    cdef dict _ext_types            # _registry._types: type -> (code, pack)
    cdef bint _datetime             # datetime -> ext -1
    cdef int _naive                 # index into ext.NAIVE_MODES
    cdef WBuf _scratch              # reused by encode()/pack_into()
    cdef bint _scratch_busy         # _scratch in use (re-entrant call from default)

    # Append the encoding of ``obj`` to ``buf``.  On error ``buf.length`` is
    # left where the failing value started; callers roll back themselves.
    cdef int pack_to(self, WBuf* buf, object obj) except -1


cdef class Decoder:
    cdef Py_ssize_t _max_depth
    cdef int64_t _max_str_len       # clamped to -1..0xFFFFFFFF
    cdef int64_t _max_bin_len
    cdef int64_t _max_array_len
    cdef int64_t _max_map_len
    cdef int64_t _max_ext_len
    cdef object _max_depth_obj      # values as given (attributes, messages)
    cdef object _max_str_len_obj
    cdef object _max_bin_len_obj
    cdef object _max_array_len_obj
    cdef object _max_map_len_obj
    cdef object _max_ext_len_obj
    cdef object _ext_hook
    cdef object _object_hook
    cdef object _registry           # the ExtRegistry consulted
    cdef dict _ext_codes            # _registry._codes: code -> (type, unpack)
    cdef int _timestamp             # index into ext.TIMESTAMP_MODES
    cdef bint _use_list

    # Decode exactly one value filling data[0:length] (DecodeError if
    # empty, truncated, invalid or followed by trailing bytes).
    cdef object decode_ptr(self, const unsigned char* data, Py_ssize_t length)
