"""Compiled payload codec (msgpack-compatible).

The compiled twin of ``_codec_py.py``: same classes, same arguments, same
bytes out, same exceptions.  ``_impl.py`` chooses between the two.

Encoding follows ``msgpack.packb(obj, use_bin_type=True)`` byte for byte.
The encoder writes into a malloc'd ``WBuf`` (declared in ``_codec.pxd``, so
``_framing.pyx`` encodes frame headers and payloads into one buffer).
Decoding works on a ``const unsigned char*`` and C positions, bounded for
untrusted input: every claimed length is checked against the bytes actually
present (and the optional per-kind limits) before anything is allocated,
and nesting is limited by ``max_depth``.

Beyond msgpack's core types (see ``docs/types.md``): ``datetime`` and
``Timestamp`` as ext -1, user types of an ``ExtRegistry``, ``default`` for
any other value (ints past 64 bits included), ``object_hook``, ``use_list``
and ``timestamp`` on decode.  All of them are looked at only after the
checks for msgpack's own types have failed.
"""

from cpython.bool cimport PyBool_Check
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_CheckExact,
    PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem, PyDict_New, PyDict_Size
from cpython.exc cimport PyErr_Clear, PyErr_ExceptionMatches
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact, PyFloat_FromDouble
from cpython.list cimport PyList_AsTuple, PyList_CheckExact, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow,
    PyLong_AsUnsignedLongLong,
    PyLong_Check,
    PyLong_CheckExact,
    PyLong_FromLong,
    PyLong_FromLongLong,
    PyLong_FromUnsignedLongLong,
)
from cpython.memoryview cimport PyMemoryView_Check
from cpython.number cimport PyNumber_Float, PyNumber_Long
from cpython.object cimport PyObject_IsInstance, PyObject_Str
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_CheckExact, PyUnicode_GET_LENGTH
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

import math
import struct
from datetime import datetime as _DateTime

from .constants import DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT, ExtType
from .ext import (
    NAIVE_MODES,
    TIMESTAMP_MODES,
    Timestamp,
    datetime_parts,
    mode_number,
    registry_of,
    timestamp_value,
)
from ..errors import DecodeError, EncodeError, ExtraData, InvalidUTF8, NestingTooDeep

__all__ = ["Encoder", "Decoder", "packb", "unpackb", "ExtType", "Timestamp"]


cdef extern from "Python.h":
    # Unchecked variants: the caller looks at the error itself.
    const char* fr_AsUTF8AndSize "PyUnicode_AsUTF8AndSize"(object s, Py_ssize_t* size) noexcept
    int fr_DictSetItem "PyDict_SetItem"(object d, object k, object v) noexcept
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    # Returns nonzero (1, not -1) with RecursionError set: see _enter().
    int Py_EnterRecursiveCall(const char* where) noexcept
    void Py_LeaveRecursiveCall() noexcept
    bint PyUnicode_IS_COMPACT_ASCII(object o) noexcept

cdef extern from *:
    """
    #ifndef FASTRPC_DEBUG
    #define FASTRPC_DEBUG 0
    #endif
    """
    # 1 in FASTRPC_DEBUG=1 builds (setup.py): invariant checks compile in.
    bint FASTRPC_DEBUG


cdef enum:
    # Containers nested deeper than this also go through the interpreter's
    # recursion check, so a huge user max_depth cannot overflow the C stack.
    GUARD_DEPTH = 1000  # == _wire.MAX_DEPTH_LIMIT, the largest max_depth __init__ accepts
    # Stack space a re-entrant Encoder.encode() starts with before malloc.
    STACK_BUF_SIZE = 512
    # Encoder._scratch capacity kept between calls.
    SCRATCH_RETAIN = 64 * 1024
    # Map keys that are short ASCII fixstr go through a small direct-mapped
    # cache of str objects (repeated keys are neither re-decoded nor
    # re-hashed); a power of two.
    KEY_CACHE_SIZE = 512
    # Decoder._timestamp (index into ext.TIMESTAMP_MODES)
    TS_TIMESTAMP = 0
    TS_EXT = 4

cdef Py_ssize_t PY_SSIZE_T_MAX_C = PY_SSIZE_T_MAX
cdef object PY_SSIZE_T_MAX_OBJ = PY_SSIZE_T_MAX

cdef int64_t NO_LIMIT = 0xFFFFFFFF

# Bytes a fixed-size header needs after its type byte (index: byte - 0xc0).
cdef unsigned char HEAD_SIZE[32]

cdef object _struct_pack_b = struct.Struct(">b").pack
cdef object _math_floor = math.floor
cdef object _math_ceil = math.ceil


def _init_head_sizes():
    sizes = {
        0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
        0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
        0xCA: 4, 0xCB: 8,
        0xD9: 1, 0xDA: 2, 0xDB: 4,
        0xC4: 1, 0xC5: 2, 0xC6: 4,
        0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4,
        0xD4: 1, 0xD5: 1, 0xD6: 1, 0xD7: 1, 0xD8: 1,
        0xC7: 2, 0xC8: 3, 0xC9: 5,
    }
    cdef int i
    for i in range(32):
        HEAD_SIZE[i] = sizes.get(0xC0 + i, 0)


_init_head_sizes()
del _init_head_sizes


cdef inline int _enter(const char* where) except -1:
    """Py_EnterRecursiveCall with the error reported the Cython way; pair a
    successful call with Py_LeaveRecursiveCall()."""
    if Py_EnterRecursiveCall(where) != 0:
        return -1  # RecursionError is set
    return 0


# --------------------------------------------------------------------------
# Argument conversion (shared by Encoder and Decoder).


cdef int _check_depth(object max_depth) except -1:
    if not 0 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be in 0..{MAX_DEPTH_LIMIT}")
    return 0


cdef Py_ssize_t _depth_value(object value) except? -2:
    """C value of a max_depth: ``depth >= result`` iff ``depth >= value``."""
    if PyLong_Check(value):
        if value > PY_SSIZE_T_MAX_OBJ:
            return PY_SSIZE_T_MAX_C
        if value < 0:
            return -1
        return <Py_ssize_t>value
    try:
        value = _math_ceil(value)
    except (ValueError, OverflowError):  # nan compares false: no limit
        return -1 if value < 0 else PY_SSIZE_T_MAX_C
    except TypeError:
        raise TypeError(f"max_depth must be an int, not {type(value).__name__}") from None
    return _depth_value(value)


cdef int64_t _limit_value(object value, str name) except? -2:
    """C value of a length limit: ``n > result`` iff ``n > value`` for
    every n in 0..2**32-1 (None: no limit)."""
    if value is None:
        return NO_LIMIT
    if PyLong_Check(value):
        if value > NO_LIMIT:
            return NO_LIMIT
        if value < 0:
            return -1
        return <int64_t>value
    try:
        value = _math_floor(value)
    except (ValueError, OverflowError):  # nan compares false: no limit
        return -1 if value < 0 else NO_LIMIT
    except TypeError:
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}") from None
    return _limit_value(value, name)



# --------------------------------------------------------------------------
# Encoder


cdef inline int _pack_i64(WBuf* buf, int64_t v) except -1:
    cdef char* p
    if v >= 0:
        if v < 0x80:
            p = wbuf_put(buf, 1)
            p[0] = <char>v
        elif v <= 0xFF:
            p = wbuf_put(buf, 2)
            p[0] = <char>0xCC
            p[1] = <char>v
        elif v <= 0xFFFF:
            p = wbuf_put(buf, 3)
            p[0] = <char>0xCD
            store_be16(p + 1, <uint16_t>v)
        elif v <= 0xFFFFFFFF:
            p = wbuf_put(buf, 5)
            p[0] = <char>0xCE
            store_be32(p + 1, <uint32_t>v)
        else:
            p = wbuf_put(buf, 9)
            p[0] = <char>0xCF
            store_be64(p + 1, <uint64_t>v)
    else:
        if v >= -32:
            p = wbuf_put(buf, 1)
            p[0] = <char>v
        elif v >= -0x80:
            p = wbuf_put(buf, 2)
            p[0] = <char>0xD0
            p[1] = <char>v
        elif v >= -0x8000:
            p = wbuf_put(buf, 3)
            p[0] = <char>0xD1
            store_be16(p + 1, <uint16_t>v)
        elif v >= -0x80000000:
            p = wbuf_put(buf, 5)
            p[0] = <char>0xD2
            store_be32(p + 1, <uint32_t>v)
        else:
            p = wbuf_put(buf, 9)
            p[0] = <char>0xD3
            store_be64(p + 1, <uint64_t>v)
    return 0


cdef int _pack_int(WBuf* buf, object n) except -1:
    """``n`` is an int (any PyLong).  Returns 1, writing nothing, when it is
    below -2**63 and 2, when it is above 2**64-1 (see _pack_big_int)."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(n, &overflow)
    cdef unsigned long long u
    cdef char* p
    if overflow == 0:
        return _pack_i64(buf, v)
    if overflow < 0:
        return 1
    try:
        u = PyLong_AsUnsignedLongLong(n)
    except OverflowError:
        PyErr_Clear()
        return 2
    p = wbuf_put(buf, 9)
    p[0] = <char>0xCF
    store_be64(p + 1, u)
    return 0


cdef inline int _pack_double(WBuf* buf, double d) except -1:
    cdef uint64_t u
    cdef char* p = wbuf_put(buf, 9)
    memcpy(&u, &d, 8)
    p[0] = <char>0xCB
    store_be64(p + 1, u)
    return 0


cdef int _pack_str_data(WBuf* buf, const char* s, Py_ssize_t n) except -1:
    cdef char* p
    if n < 32:
        p = wbuf_put(buf, 1 + n)
        p[0] = <char>(0xA0 | n)
        p += 1
    elif n <= 0xFF:
        p = wbuf_put(buf, 2 + n)
        p[0] = <char>0xD9
        p[1] = <char>n
        p += 2
    elif n <= 0xFFFF:
        p = wbuf_put(buf, 3 + n)
        p[0] = <char>0xDA
        store_be16(p + 1, <uint16_t>n)
        p += 3
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        p = wbuf_put(buf, 5 + n)
        p[0] = <char>0xDB
        store_be32(p + 1, <uint32_t>n)
        p += 5
    else:
        raise EncodeError("str too long for msgpack")
    memcpy(p, s, <size_t>n)
    return 0


cdef int _str_encode_failed(object s) except -1:
    # fr_AsUTF8AndSize failed with an exception set.  A UnicodeEncodeError
    # (lone surrogates) becomes an EncodeError with the text the pure twin
    # shows; anything else (MemoryError) propagates unchanged.
    if not PyErr_ExceptionMatches(UnicodeEncodeError):
        return -1
    PyErr_Clear()
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"str is not valid UTF-8: {exc}") from None
    raise EncodeError("str is not valid UTF-8")


cdef inline int _pack_str(WBuf* buf, object s) except -1:
    """``s`` is an exact str."""
    cdef Py_ssize_t n
    cdef const char* data = fr_AsUTF8AndSize(s, &n)
    if data == NULL:
        return _str_encode_failed(s)
    return _pack_str_data(buf, data, n)


cdef int _pack_str_any(WBuf* buf, object s) except -1:
    """``s`` is the result of ``str(obj)``: usually exact, else encoded the
    way the pure twin does (its own ``encode`` method)."""
    cdef Py_ssize_t n
    if PyUnicode_CheckExact(s):
        return _pack_str(buf, s)
    try:
        data = s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"str is not valid UTF-8: {exc}") from None
    n = len(data)
    if n < 32:
        _put_byte(buf, 0xA0 | n)
    elif n <= 0xFF:
        _put_byte(buf, 0xD9)
        _put_byte(buf, n)
    elif n <= 0xFFFF:
        _put_byte(buf, 0xDA)
        store_be16(wbuf_put(buf, 2), <uint16_t>n)
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        _put_byte(buf, 0xDB)
        store_be32(wbuf_put(buf, 4), <uint32_t>n)
    else:
        raise EncodeError("str too long for msgpack")
    return _put_buffer(buf, data)


cdef inline int _put_byte(WBuf* buf, unsigned char b) except -1:
    wbuf_put(buf, 1)[0] = <char>b
    return 0


cdef int _put_buffer(WBuf* buf, object data) except -1:
    """Append the bytes of any buffer-protocol object (as ``bytearray +=``)."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        memcpy(wbuf_put(buf, PyBytes_GET_SIZE(data)), PyBytes_AS_STRING(data),
               <size_t>PyBytes_GET_SIZE(data))
        return 0
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        memcpy(wbuf_put(buf, view.len), view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _pack_bin_header(WBuf* buf, Py_ssize_t n) except -1:
    cdef char* p
    if n <= 0xFF:
        p = wbuf_put(buf, 2)
        p[0] = <char>0xC4
        p[1] = <char>n
    elif n <= 0xFFFF:
        p = wbuf_put(buf, 3)
        p[0] = <char>0xC5
        store_be16(p + 1, <uint16_t>n)
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        p = wbuf_put(buf, 5)
        p[0] = <char>0xC6
        store_be32(p + 1, <uint32_t>n)
    else:
        raise EncodeError("bytes too long for msgpack")
    return 0


cdef inline int _pack_bin_data(WBuf* buf, const char* data, Py_ssize_t n) except -1:
    _pack_bin_header(buf, n)
    memcpy(wbuf_put(buf, n), data, <size_t>n)
    return 0


cdef int _pack_bin_ref(WBuf* buf, bytes data) except -1:
    # Immutable, so it can be sent later as it is: only the header is copied.
    _pack_bin_header(buf, PyBytes_GET_SIZE(data))
    (<list>buf.refs).append((buf.length, data))
    return 0


cdef int _pack_bin_obj(WBuf* buf, object data) except -1:
    """bytes subclasses, bytearray, memoryview (and anything that claims to
    be one of them), as ``_pack_bin`` of the pure twin."""
    cdef Py_buffer view
    if PyMemoryView_Check(data):
        # A C-contiguous view packs its memory as is (what tobytes() gives).
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:
            data = data.tobytes()
        else:
            try:
                _pack_bin_data(buf, <const char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
            return 0
    elif PyObject_IsInstance(data, memoryview):
        data = data.tobytes()
    if PyByteArray_CheckExact(data):
        return _pack_bin_data(buf, PyByteArray_AS_STRING(data), PyByteArray_GET_SIZE(data))
    _pack_bin_header(buf, len(data))
    return _put_buffer(buf, data)


cdef int _pack_ext(WBuf* buf, object code, object data) except -1:
    cdef Py_ssize_t n = len(data)
    cdef char* p
    if n == 1:
        _put_byte(buf, 0xD4)
    elif n == 2:
        _put_byte(buf, 0xD5)
    elif n == 4:
        _put_byte(buf, 0xD6)
    elif n == 8:
        _put_byte(buf, 0xD7)
    elif n == 16:
        _put_byte(buf, 0xD8)
    elif n <= 0xFF:
        p = wbuf_put(buf, 2)
        p[0] = <char>0xC7
        p[1] = <char>n
    elif n <= 0xFFFF:
        p = wbuf_put(buf, 3)
        p[0] = <char>0xC8
        store_be16(p + 1, <uint16_t>n)
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        p = wbuf_put(buf, 5)
        p[0] = <char>0xC9
        store_be32(p + 1, <uint32_t>n)
    else:
        raise EncodeError("ext data too long for msgpack")
    if PyLong_CheckExact(code) and -128 <= code <= 127:
        _put_byte(buf, <unsigned char><int8_t><long>code)
    else:  # same check and exception (struct.error) as the pure twin
        _put_buffer(buf, _struct_pack_b(code))
    return _put_buffer(buf, data)


cdef inline int _pack_array_header(WBuf* buf, Py_ssize_t n) except -1:
    cdef char* p
    if n < 16:
        _put_byte(buf, 0x90 | n)
    elif n <= 0xFFFF:
        p = wbuf_put(buf, 3)
        p[0] = <char>0xDC
        store_be16(p + 1, <uint16_t>n)
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        p = wbuf_put(buf, 5)
        p[0] = <char>0xDD
        store_be32(p + 1, <uint32_t>n)
    else:
        raise EncodeError("array too long for msgpack")
    return 0


cdef inline int _pack_map_header(WBuf* buf, Py_ssize_t n) except -1:
    cdef char* p
    if n < 16:
        _put_byte(buf, 0x80 | n)
    elif n <= 0xFFFF:
        p = wbuf_put(buf, 3)
        p[0] = <char>0xDE
        store_be16(p + 1, <uint16_t>n)
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        p = wbuf_put(buf, 5)
        p[0] = <char>0xDF
        store_be32(p + 1, <uint32_t>n)
    else:
        raise EncodeError("map too long for msgpack")
    return 0


cdef int _too_deep(Encoder enc) except -1:
    raise EncodeError(f"nesting deeper than max_depth={enc._max_depth_obj}")


cdef int _pack_list(Encoder enc, WBuf* buf, list obj, Py_ssize_t depth) except -1:
    if depth >= enc._max_depth:
        return _too_deep(enc)
    _pack_array_header(buf, PyList_GET_SIZE(obj))
    depth += 1
    if depth < GUARD_DEPTH:
        for item in obj:  # re-reads the size each step, like list iteration
            _pack(enc, buf, item, depth)
        return 0
    _enter(" while encoding a msgpack array")
    try:
        for item in obj:
            _pack(enc, buf, item, depth)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _pack_tuple(Encoder enc, WBuf* buf, tuple obj, Py_ssize_t depth) except -1:
    if depth >= enc._max_depth:
        return _too_deep(enc)
    _pack_array_header(buf, PyTuple_GET_SIZE(obj))
    depth += 1
    if depth < GUARD_DEPTH:
        for item in obj:
            _pack(enc, buf, item, depth)
        return 0
    _enter(" while encoding a msgpack array")
    try:
        for item in obj:
            _pack(enc, buf, item, depth)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _pack_dict(Encoder enc, WBuf* buf, dict obj, Py_ssize_t depth) except -1:
    if depth >= enc._max_depth:
        return _too_deep(enc)
    _pack_map_header(buf, len(obj))
    depth += 1
    if depth < GUARD_DEPTH:
        for k, v in obj.items():  # RuntimeError if the dict changes size
            _pack(enc, buf, k, depth)
            _pack(enc, buf, v, depth)
        return 0
    _enter(" while encoding a msgpack map")
    try:
        for k, v in obj.items():
            _pack(enc, buf, k, depth)
            _pack(enc, buf, v, depth)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _pack_sequence(Encoder enc, WBuf* buf, object obj, Py_ssize_t depth) except -1:
    # list/tuple subclasses: their own __len__ and __iter__, as the pure twin.
    if depth >= enc._max_depth:
        return _too_deep(enc)
    _pack_array_header(buf, len(obj))
    depth += 1
    _enter(" while encoding a msgpack array")
    try:
        for item in obj:
            _pack(enc, buf, item, depth)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _pack_mapping(Encoder enc, WBuf* buf, object obj, Py_ssize_t depth) except -1:
    # dict subclasses: their own __len__ and items(), as the pure twin.
    if depth >= enc._max_depth:
        return _too_deep(enc)
    _pack_map_header(buf, len(obj))
    depth += 1
    _enter(" while encoding a msgpack map")
    try:
        for k, v in obj.items():
            _pack(enc, buf, k, depth)
            _pack(enc, buf, v, depth)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef int _pack_other(Encoder enc, WBuf* buf, object obj, Py_ssize_t depth) except -1:
    # Subclasses and less common types, in the pure twin's order (bool
    # before int, ExtType before tuple).  PyObject_IsInstance, like Python's
    # isinstance, also honours a __class__ that claims a base type.
    cdef PyObject* entry
    if PyDict_Size(enc._ext_types):  # registered types first, by exact type
        entry = PyDict_GetItem(enc._ext_types, type(obj))
        if entry != NULL:
            return _pack_registered(buf, obj, <tuple>entry)
    if PyObject_IsInstance(obj, bool):
        return _put_byte(buf, 0xC3 if obj else 0xC2)
    if PyObject_IsInstance(obj, int):
        if _pack_int(buf, PyNumber_Long(obj)) == 0:
            return 0
        return _pack_big_int(enc, buf, obj, depth)
    if PyObject_IsInstance(obj, float):
        return _pack_double(buf, PyFloat_AS_DOUBLE(PyNumber_Float(obj)))
    if PyObject_IsInstance(obj, str):
        return _pack_str_any(buf, PyObject_Str(obj))
    if PyObject_IsInstance(obj, (bytes, bytearray, memoryview)):
        return _pack_bin_obj(buf, obj)
    if PyObject_IsInstance(obj, ExtType):
        return _pack_ext(buf, obj.code, obj.data)
    if PyObject_IsInstance(obj, (list, tuple)):
        return _pack_sequence(enc, buf, obj, depth)
    if PyObject_IsInstance(obj, dict):
        return _pack_mapping(enc, buf, obj, depth)
    if PyObject_IsInstance(obj, Timestamp):
        return _pack_timestamp_obj(buf, obj)
    if enc._datetime and PyObject_IsInstance(obj, _DateTime):
        parts = datetime_parts(obj, enc._naive)
        if parts is None:
            return _pack_default(enc, buf, obj, depth, _naive_message(obj))
        return _pack_timestamp(buf, (<tuple>parts)[0], (<tuple>parts)[1])
    return _pack_default(enc, buf, obj, depth, f"cannot encode object of type {type(obj).__name__}")


cdef int _pack_big_int(Encoder enc, WBuf* buf, object obj, Py_ssize_t depth) except -1:
    # An int outside -2**63..2**64-1: the default hook's replacement, or EncodeError.
    if obj < 0:
        return _pack_default(enc, buf, obj, depth, "integer too small for msgpack (min -2**63)")
    return _pack_default(enc, buf, obj, depth, "integer too large for msgpack (max 2**64-1)")


cdef str _naive_message(object obj):
    return (
        f"cannot encode naive datetime {obj!r} where tzinfo=None: give it a tzinfo, "
        "or use Encoder(naive_datetime='utc' or 'local')"
    )


cdef int _pack_timestamp(WBuf* buf, object seconds, object nanoseconds) except -1:
    # ext -1 in its smallest form, as msgpack writes it (seconds: int64,
    # nanoseconds: 0..999999999, as a Timestamp or datetime_parts() has them).
    cdef int64_t sec
    cdef uint32_t ns = <uint32_t>(<long>nanoseconds)
    cdef uint64_t data64
    cdef char* p
    try:
        sec = seconds
    except OverflowError:  # only a Timestamp whose fields were changed behind its back
        raise EncodeError("timestamp seconds outside the int64 range") from None
    if (<uint64_t>sec >> 34) == 0:
        data64 = (<uint64_t>ns << 34) | <uint64_t>sec
        if (data64 & 0xFFFFFFFF00000000ULL) == 0:
            p = wbuf_put(buf, 6)
            p[0] = <char>0xD6
            p[1] = <char>0xFF
            store_be32(p + 2, <uint32_t>data64)
        else:
            p = wbuf_put(buf, 10)
            p[0] = <char>0xD7
            p[1] = <char>0xFF
            store_be64(p + 2, data64)
    else:
        p = wbuf_put(buf, 15)
        p[0] = <char>0xC7
        p[1] = <char>12
        p[2] = <char>0xFF
        store_be32(p + 3, ns)
        store_be64(p + 7, <uint64_t>sec)
    return 0


cdef int _pack_timestamp_obj(WBuf* buf, object ts) except -1:
    return _pack_timestamp(buf, ts._seconds, ts._nanoseconds)


cdef int _pack_registered(WBuf* buf, object obj, tuple entry) except -1:
    code, pack = entry
    data = pack(obj)
    if not PyObject_IsInstance(data, (bytes, bytearray, memoryview)):
        raise EncodeError(
            f"pack function registered for {type(obj).__name__} returned {type(data).__name__}, not bytes"
        )
    if PyObject_IsInstance(data, memoryview):
        data = data.tobytes()
    return _pack_ext(buf, code, data)


cdef int _pack_default(Encoder enc, WBuf* buf, object obj, Py_ssize_t depth, str message) except -1:
    # The value has no encoding of its own: its replacement by the default
    # hook, or EncodeError(message).
    default = enc._default
    if default is None:
        raise EncodeError(message)
    if depth >= enc._max_depth:
        return _too_deep(enc)
    replacement = default(obj)
    if type(replacement) is type(obj) and replacement is obj:
        raise EncodeError(f"cannot encode object of type {type(obj).__name__}")
    _enter(" while encoding a value returned by default")
    try:
        _pack(enc, buf, replacement, depth + 1)
    finally:
        Py_LeaveRecursiveCall()
    return 0


# _pack_other, called through a pointer the compiler cannot see through: it
# would inline the function (it has one caller), and its locals would grow
# the stack frame of _pack, the recursive function every value goes through.
ctypedef int (*pack_other_t)(Encoder, WBuf*, object, Py_ssize_t) except -1
cdef pack_other_t _pack_other_p = _pack_other


cdef int _pack(Encoder enc, WBuf* buf, object obj, Py_ssize_t depth) except -1:
    # Exact types first, in the pure twin's order.
    if PyLong_CheckExact(obj):
        if _pack_int(buf, obj) == 0:
            return 0
        return _pack_big_int(enc, buf, obj, depth)
    if PyUnicode_CheckExact(obj):
        return _pack_str(buf, obj)
    if obj is None:
        return _put_byte(buf, 0xC0)
    if PyBool_Check(obj):
        return _put_byte(buf, 0xC3 if obj is True else 0xC2)
    if PyFloat_CheckExact(obj):
        return _pack_double(buf, PyFloat_AS_DOUBLE(obj))
    if PyBytes_CheckExact(obj):
        if buf.refs != NULL and PyBytes_GET_SIZE(obj) >= BIN_REF_MIN:
            return _pack_bin_ref(buf, obj)
        return _pack_bin_data(buf, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if PyList_CheckExact(obj):
        return _pack_list(enc, buf, <list>obj, depth)
    if PyTuple_CheckExact(obj):
        return _pack_tuple(enc, buf, <tuple>obj, depth)
    if PyDict_CheckExact(obj):
        return _pack_dict(enc, buf, <dict>obj, depth)
    return _pack_other_p(enc, buf, obj, depth)


# _pack seen as the plain C function it is (-1: exception set), so that
# _pack_top can look at a failure without a try block on every call.
ctypedef int (*pack_raw_t)(Encoder, WBuf*, object, Py_ssize_t) noexcept


cdef int _pack_failed() except -1:
    # RecursionError (a max_depth raised past MAX_DEPTH_LIMIT after
    # construction, or user code) is an EncodeError, as in the pure twin.
    if PyErr_ExceptionMatches(RecursionError):
        PyErr_Clear()
        raise EncodeError("value nested too deeply for the Python stack")
    return -1


cdef inline int _pack_top(Encoder enc, WBuf* buf, object obj) except -1:
    if (<pack_raw_t>_pack)(enc, buf, obj, 0) < 0:
        return _pack_failed()
    return 0


cdef bytes _encode_nested(Encoder enc, object obj):
    # encode() called again while the encoder's scratch buffer is in use
    # (from a default hook): a buffer of its own, starting on the stack.
    cdef char stack[STACK_BUF_SIZE]
    cdef WBuf buf
    wbuf_init(&buf, stack, STACK_BUF_SIZE)
    try:
        _pack_top(enc, &buf, obj)
        return PyBytes_FromStringAndSize(buf.data, buf.length)
    finally:
        wbuf_release(&buf)


cdef inline void _scratch_done(Encoder enc) noexcept:
    enc._scratch_busy = False
    enc._scratch.length = 0
    if enc._scratch.capacity > SCRATCH_RETAIN:
        wbuf_release(&enc._scratch)


cdef bytes _encode(Encoder enc, object obj):
    if enc._scratch_busy:
        return _encode_nested(enc, obj)
    enc._scratch_busy = True
    enc._scratch.length = 0
    try:
        _pack_top(enc, &enc._scratch, obj)
        return PyBytes_FromStringAndSize(enc._scratch.data, enc._scratch.length)
    finally:
        _scratch_done(enc)


cdef class Encoder:
    """Encodes Python values as msgpack.

    Parameters:
        max_depth: deepest container nesting accepted (guards against
            cyclic structures); deeper values raise :class:`EncodeError`.
        default: called with any value of an unsupported type, and with
            ints outside -2**63..2**64-1; must return an encodable
            replacement (for instance an :class:`ExtType`).
        ext: the :class:`~fastrpc.wire.ext.ExtRegistry` of user types
            (None: :data:`~fastrpc.wire.ext.default_registry`).
        datetime: encode ``datetime.datetime`` as a timestamp (ext -1);
            False leaves them to ``default``.
        naive_datetime: a datetime without tzinfo is ``"error"`` (handed to
            ``default``, else :class:`EncodeError`), ``"utc"`` or ``"local"``.
    """

    def __cinit__(self):
        self._max_depth = DEFAULT_MAX_DEPTH
        self._max_depth_obj = DEFAULT_MAX_DEPTH
        wbuf_init(&self._scratch, NULL, 0)
        self._scratch_busy = False
        self._ext_types = {}
        self._datetime = True

    def __dealloc__(self):
        wbuf_release(&self._scratch)

    def __init__(self, *, max_depth=DEFAULT_MAX_DEPTH, default=None, ext=None, datetime=True,
                 naive_datetime="error"):
        _check_depth(max_depth)
        self.max_depth = max_depth
        self._default = default
        self._registry = registry_of(ext)
        self._ext_types = self._registry._types
        self._naive = mode_number("naive_datetime", naive_datetime, NAIVE_MODES)
        self._datetime = bool(datetime)

    @property
    def ext(self):
        """The registry of user types this encoder consults."""
        return self._registry

    @property
    def datetime(self):
        """Whether datetimes are encoded as timestamps."""
        return self._datetime

    @property
    def naive_datetime(self):
        """How a datetime without tzinfo is treated."""
        return NAIVE_MODES[self._naive]

    @property
    def max_depth(self):
        return self._max_depth_obj

    @max_depth.setter
    def max_depth(self, value):
        self._max_depth = _depth_value(value)
        self._max_depth_obj = value

    @property
    def default(self):
        return self._default

    @default.setter
    def default(self, value):
        self._default = value

    cdef int pack_to(self, WBuf* buf, object obj) except -1:
        return _pack_top(self, buf, obj)

    def encode(self, obj):
        """Return the msgpack encoding of ``obj``."""
        return _encode(self, obj)

    def pack_into(self, buf, obj):
        """Append the encoding of ``obj`` to ``buf``.

        On error ``buf`` is restored to its length before the call (nothing
        is appended until the whole value is encoded).
        """
        cdef Py_ssize_t old
        cdef bytes data
        if self._scratch_busy or not PyByteArray_CheckExact(buf):
            data = _encode(self, obj)
            buf += data  # as the pure twin's ``buf +=`` (any bytearray-like)
            return
        self._scratch_busy = True
        self._scratch.length = 0
        try:
            _pack_top(self, &self._scratch, obj)
            old = PyByteArray_GET_SIZE(buf)
            PyByteArray_Resize(buf, old + self._scratch.length)
            memcpy(PyByteArray_AS_STRING(buf) + old, self._scratch.data, <size_t>self._scratch.length)
        finally:
            _scratch_done(self)


# --------------------------------------------------------------------------
# Decoder


cdef object _decode_utf8(const unsigned char* data, Py_ssize_t n):
    try:
        return PyUnicode_DecodeUTF8(<const char*>data, n, NULL)
    except UnicodeDecodeError as exc:
        raise InvalidUTF8(f"invalid UTF-8 in str: {exc.reason}") from None


cdef enum:
    # value kinds for _length_error()
    K_STR
    K_BIN
    K_EXT
    K_ARRAY
    K_MAP


cdef int _length_error(Decoder dec, int kind, int64_t n, Py_ssize_t avail,
                       Py_ssize_t depth) except -1:
    """Raise the pure twin's first failing check for a value of ``kind``
    claiming length ``n`` with ``avail`` bytes after its header.  Kept out
    of the recursive functions so their stack frames stay small."""
    if kind == K_STR:
        if n > dec._max_str_len:
            raise DecodeError(f"str of {n} bytes exceeds max_str_len={dec._max_str_len_obj}")
        raise DecodeError(f"truncated input: str claims {n} bytes, {max(avail, 0)} present")
    if kind == K_BIN:
        if n > dec._max_bin_len:
            raise DecodeError(f"bin of {n} bytes exceeds max_bin_len={dec._max_bin_len_obj}")
        raise DecodeError(f"truncated input: bin claims {n} bytes, {max(avail, 0)} present")
    if kind == K_EXT:  # avail counts the type code byte too
        if n > dec._max_ext_len:
            raise DecodeError(f"ext of {n} bytes exceeds max_ext_len={dec._max_ext_len_obj}")
        raise DecodeError(f"truncated input: ext claims {n} bytes, {max(avail - 1, 0)} present")
    if kind == K_ARRAY:
        if n > dec._max_array_len:
            raise DecodeError(f"array of {n} items exceeds max_array_len={dec._max_array_len_obj}")
        if n > avail:  # every item takes at least one byte
            raise DecodeError(f"truncated input: array claims {n} items, {max(avail, 0)} bytes present")
    else:
        if n > dec._max_map_len:
            raise DecodeError(f"map of {n} pairs exceeds max_map_len={dec._max_map_len_obj}")
        if 2 * n > avail:  # every key and value takes at least one byte
            raise DecodeError(f"truncated input: map claims {n} pairs, {max(avail, 0)} bytes present")
    raise NestingTooDeep(f"nesting deeper than max_depth={dec._max_depth_obj}")


cdef int _format_error(int which, unsigned int b) except -1:
    if which == 0:
        raise DecodeError("truncated input: value missing")
    if which == 1:
        raise DecodeError("truncated input inside a value header")
    raise DecodeError(f"reserved msgpack type byte 0x{b:02x}")


cdef object _unpack_str(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                        Py_ssize_t pos, Py_ssize_t end, int64_t n):
    if n > dec._max_str_len or n > end - pos:
        _length_error(dec, K_STR, n, end - pos, 0)
    s = _decode_utf8(data + pos, <Py_ssize_t>n)
    ppos[0] = pos + <Py_ssize_t>n
    return s


cdef object _unpack_bin(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                        Py_ssize_t pos, Py_ssize_t end, int64_t n):
    if n > dec._max_bin_len or n > end - pos:
        _length_error(dec, K_BIN, n, end - pos, 0)
    ppos[0] = pos + <Py_ssize_t>n
    return PyBytes_FromStringAndSize(<const char*>data + pos, <Py_ssize_t>n)


cdef object _call_ext_hook(object hook, object code, object payload):
    try:
        return hook(code, payload)
    except Exception as exc:  # user code fed by the peer
        raise DecodeError(f"ext_hook failed on ext type {code}: {exc!r}") from exc


cdef inline bint _is_timestamp(const unsigned char* p, int64_t n) noexcept:
    # A valid ext -1 payload: 4, 8 or 12 bytes, nanoseconds below 10**9
    # (anything else stays an ext value, as ext.timestamp_parts() says).
    if n == 4:
        return True
    if n == 8:
        return (load_be64(p) >> 34) < 1000000000
    if n == 12:
        return load_be32(p) < 1000000000
    return False


cdef object _unpack_timestamp(Decoder dec, const unsigned char* p, int64_t n):
    # A valid ext -1 payload (_is_timestamp), as the decoder's timestamp mode asks.
    cdef int64_t sec
    cdef uint64_t data64
    cdef uint32_t ns
    if n == 4:
        sec = load_be32(p)
        ns = 0
    elif n == 8:
        data64 = load_be64(p)
        ns = <uint32_t>(data64 >> 34)
        sec = <int64_t>(data64 & 0x3FFFFFFFFULL)
    else:
        ns = load_be32(p)
        sec = <int64_t>load_be64(p + 4)
    if dec._timestamp == TS_TIMESTAMP:
        return timestamp_value(0, sec, ns)
    try:
        return timestamp_value(dec._timestamp, sec, ns)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


cdef object _call_registered(tuple entry, object code, object payload):
    try:
        return entry[1](payload)
    except Exception as exc:  # user code fed by the peer
        raise DecodeError(
            f"unpack function registered for ext type {code} ({entry[0].__qualname__}) failed: {exc!r}"
        ) from exc


cdef object _finish(Decoder dec, object out):
    # A decoded array for use_list=False, or map for the object_hook.  One
    # function with two callers, out of the recursive ones (the compiler
    # inlines a function called once, which would grow their stack frames).
    if PyList_CheckExact(out):
        return PyList_AsTuple(out)
    try:
        return dec._object_hook(out)
    except Exception as exc:  # user code fed by the peer
        raise DecodeError(f"object_hook failed: {exc!r}") from exc


cdef object _unpack_ext(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                        Py_ssize_t pos, Py_ssize_t end, int64_t n):
    # data[pos] is the type code, the n data bytes follow it.
    if n > dec._max_ext_len or n + 1 > end - pos:
        _length_error(dec, K_EXT, n, end - pos, 0)
    cdef PyObject* entry
    if data[pos] == 0xFF and dec._timestamp != TS_EXT and _is_timestamp(data + pos + 1, n):
        ppos[0] = pos + 1 + <Py_ssize_t>n
        return _unpack_timestamp(dec, data + pos + 1, n)
    code = PyLong_FromLong(<int8_t>data[pos])
    payload = PyBytes_FromStringAndSize(<const char*>data + pos + 1, <Py_ssize_t>n)
    ppos[0] = pos + 1 + <Py_ssize_t>n
    if data[pos] < 0x80 and PyDict_Size(dec._ext_codes):
        entry = PyDict_GetItem(dec._ext_codes, code)
        if entry != NULL:
            return _call_registered(<tuple>entry, code, payload)
    hook = dec._ext_hook
    if hook is None:
        return ExtType(code, payload)
    return _call_ext_hook(hook, code, payload)


cdef int _setitem_failed(object key) except -1:
    # fr_DictSetItem failed: an unhashable key (TypeError) is a DecodeError,
    # anything else (an ext_hook object whose __hash__ raises) propagates.
    if not PyErr_ExceptionMatches(TypeError):
        return -1
    PyErr_Clear()
    raise DecodeError(f"unhashable map key of type {type(key).__name__}")


cdef list _key_cache = [None] * KEY_CACHE_SIZE


cdef object _cached_key(const unsigned char* s, Py_ssize_t n):
    """str for the n (< 32) bytes at s: the cached object if one with the
    same bytes is there, else decoded (DecodeError if not UTF-8), and kept
    when it is ASCII (so its bytes are its data)."""
    cdef uint32_t h = 2166136261U ^ <uint32_t>n  # FNV-1a
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ s[i]) * 16777619U
    h &= KEY_CACHE_SIZE - 1
    cached = _key_cache[h]
    if (cached is not None and PyUnicode_GET_LENGTH(cached) == n
            and memcmp(PyUnicode_1BYTE_DATA(cached), s, <size_t>n) == 0):
        return cached
    key = _decode_utf8(s, n)
    if PyUnicode_IS_COMPACT_ASCII(key):
        _key_cache[h] = key
    return key


cdef inline object _unpack_key(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                               Py_ssize_t end, Py_ssize_t depth):
    # A map key: a fixstr within limits and present in full goes through the
    # key cache (same value, same checks passed); anything else, _unpack.
    cdef Py_ssize_t pos = ppos[0]
    cdef Py_ssize_t n
    if pos < end and data[pos] >= 0xA0 and data[pos] <= 0xBF:
        n = data[pos] & 0x1F
        if n <= dec._max_str_len and n <= end - pos - 1:
            key = _cached_key(data + pos + 1, n)
            ppos[0] = pos + 1 + n
            return key
    return _unpack(dec, data, ppos, end, depth)


cdef int _fill_list(Decoder dec, list out, const unsigned char* data, Py_ssize_t* ppos,
                    Py_ssize_t end, Py_ssize_t n, Py_ssize_t depth) except -1:
    cdef Py_ssize_t i
    for i in range(n):
        item = _unpack(dec, data, ppos, end, depth)
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return 0


cdef int _fill_dict(Decoder dec, dict out, const unsigned char* data, Py_ssize_t* ppos,
                    Py_ssize_t end, Py_ssize_t n, Py_ssize_t depth) except -1:
    cdef Py_ssize_t i
    for i in range(n):
        key = _unpack_key(dec, data, ppos, end, depth)
        value = _unpack(dec, data, ppos, end, depth)
        if fr_DictSetItem(out, key, value) < 0:
            _setitem_failed(key)
    return 0


cdef int _fill_guarded(Decoder dec, object out, const unsigned char* data, Py_ssize_t* ppos,
                       Py_ssize_t end, Py_ssize_t n, Py_ssize_t depth) except -1:
    # Containers nested GUARD_DEPTH deep or more (only with a max_depth
    # raised past MAX_DEPTH_LIMIT after construction) also count against
    # the interpreter's recursion limit.
    _enter(" while decoding msgpack")
    try:
        if PyList_CheckExact(out):
            _fill_list(dec, <list>out, data, ppos, end, n, depth)
        else:
            _fill_dict(dec, <dict>out, data, ppos, end, n, depth)
    finally:
        Py_LeaveRecursiveCall()
    return 0


cdef object _unpack_array(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                          Py_ssize_t pos, Py_ssize_t end, int64_t n, Py_ssize_t depth):
    cdef Py_ssize_t i
    if n > dec._max_array_len or n > end - pos or depth >= dec._max_depth:
        _length_error(dec, K_ARRAY, n, end - pos, depth)
    # Only now, with n proven <= the bytes left, allocate.  The list's
    # slots are NULL until filled; it is not visible to Python before.
    out = PyList_New(<Py_ssize_t>n)
    ppos[0] = pos
    depth += 1
    if depth >= GUARD_DEPTH:
        _fill_guarded(dec, out, data, ppos, end, <Py_ssize_t>n, depth)
    else:
        for i in range(<Py_ssize_t>n):
            item = _unpack(dec, data, ppos, end, depth)
            Py_INCREF(item)
            PyList_SET_ITEM(out, i, item)
    if not dec._use_list:
        return _finish(dec, out)
    return out


cdef object _unpack_map(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                        Py_ssize_t pos, Py_ssize_t end, int64_t n, Py_ssize_t depth):
    cdef Py_ssize_t i
    if n > dec._max_map_len or 2 * n > end - pos or depth >= dec._max_depth:
        _length_error(dec, K_MAP, n, end - pos, depth)
    out = PyDict_New()
    ppos[0] = pos
    depth += 1
    if depth >= GUARD_DEPTH:
        _fill_guarded(dec, out, data, ppos, end, <Py_ssize_t>n, depth)
    else:
        for i in range(<Py_ssize_t>n):
            key = _unpack_key(dec, data, ppos, end, depth)
            value = _unpack(dec, data, ppos, end, depth)
            if fr_DictSetItem(out, key, value) < 0:
                _setitem_failed(key)
    if dec._object_hook is not None:
        return _finish(dec, out)
    return out


cdef object _unpack(Decoder dec, const unsigned char* data, Py_ssize_t* ppos,
                    Py_ssize_t end, Py_ssize_t depth):
    """Decode one value at data[ppos[0]:end]; advance ppos[0] past it."""
    cdef Py_ssize_t pos = ppos[0]
    cdef unsigned int b
    cdef const unsigned char* p
    cdef uint64_t u64
    cdef uint32_t u32
    cdef double d
    cdef float f
    if pos >= end:
        _format_error(0, 0)
    b = data[pos]
    pos += 1
    # Most frequent first: positive fixint, fixstr, fixarray, fixmap.
    if b <= 0x7F:
        ppos[0] = pos
        return PyLong_FromLong(<long>b)
    if b >= 0xE0:
        ppos[0] = pos
        return PyLong_FromLong(<long>b - 0x100)
    if b >= 0xA0 and b <= 0xBF:
        return _unpack_str(dec, data, ppos, pos, end, b & 0x1F)
    if b >= 0x90 and b <= 0x9F:
        return _unpack_array(dec, data, ppos, pos, end, b & 0x0F, depth)
    if b <= 0x8F:
        return _unpack_map(dec, data, ppos, pos, end, b & 0x0F, depth)
    # 0xc0..0xdf
    if b == 0xC0:
        ppos[0] = pos
        return None
    if b == 0xC2:
        ppos[0] = pos
        return False
    if b == 0xC3:
        ppos[0] = pos
        return True
    if b == 0xC1:
        _format_error(2, b)
    if HEAD_SIZE[b - 0xC0] > end - pos:
        _format_error(1, b)
    p = data + pos
    if b == 0xCC:
        ppos[0] = pos + 1
        return PyLong_FromLong(<long>p[0])
    elif b == 0xCD:
        ppos[0] = pos + 2
        return PyLong_FromLong(<long>load_be16(p))
    elif b == 0xCE:
        ppos[0] = pos + 4
        return PyLong_FromLongLong(<long long>load_be32(p))
    elif b == 0xCF:
        ppos[0] = pos + 8
        return PyLong_FromUnsignedLongLong(load_be64(p))
    elif b == 0xD0:
        ppos[0] = pos + 1
        return PyLong_FromLong(<long><int8_t>p[0])
    elif b == 0xD1:
        ppos[0] = pos + 2
        return PyLong_FromLong(<long><int16_t>load_be16(p))
    elif b == 0xD2:
        ppos[0] = pos + 4
        return PyLong_FromLong(<long><int32_t>load_be32(p))
    elif b == 0xD3:
        ppos[0] = pos + 8
        return PyLong_FromLongLong(<long long><int64_t>load_be64(p))
    elif b == 0xCA:
        u32 = load_be32(p)
        memcpy(&f, &u32, 4)
        ppos[0] = pos + 4
        return PyFloat_FromDouble(<double>f)
    elif b == 0xCB:
        u64 = load_be64(p)
        memcpy(&d, &u64, 8)
        ppos[0] = pos + 8
        return PyFloat_FromDouble(d)
    elif b == 0xD9:
        return _unpack_str(dec, data, ppos, pos + 1, end, p[0])
    elif b == 0xDA:
        return _unpack_str(dec, data, ppos, pos + 2, end, load_be16(p))
    elif b == 0xDB:
        return _unpack_str(dec, data, ppos, pos + 4, end, load_be32(p))
    elif b == 0xC4:
        return _unpack_bin(dec, data, ppos, pos + 1, end, p[0])
    elif b == 0xC5:
        return _unpack_bin(dec, data, ppos, pos + 2, end, load_be16(p))
    elif b == 0xC6:
        return _unpack_bin(dec, data, ppos, pos + 4, end, load_be32(p))
    elif b == 0xDC:
        return _unpack_array(dec, data, ppos, pos + 2, end, load_be16(p), depth)
    elif b == 0xDD:
        return _unpack_array(dec, data, ppos, pos + 4, end, load_be32(p), depth)
    elif b == 0xDE:
        return _unpack_map(dec, data, ppos, pos + 2, end, load_be16(p), depth)
    elif b == 0xDF:
        return _unpack_map(dec, data, ppos, pos + 4, end, load_be32(p), depth)
    elif b >= 0xD4 and b <= 0xD8:
        return _unpack_ext(dec, data, ppos, pos, end, 1 << (b - 0xD4))
    elif b == 0xC7:
        return _unpack_ext(dec, data, ppos, pos + 1, end, p[0])
    elif b == 0xC8:
        return _unpack_ext(dec, data, ppos, pos + 2, end, load_be16(p))
    else:  # 0xC9, the last one left
        return _unpack_ext(dec, data, ppos, pos + 4, end, load_be32(p))


# _unpack seen as the plain C function it is (NULL: exception set), so that
# decode_ptr can look at a failure without a try block on every call.
ctypedef PyObject* (*unpack_raw_t)(Decoder, const unsigned char*, Py_ssize_t*, Py_ssize_t,
                                   Py_ssize_t) noexcept


cdef int _unpack_failed() except -1:
    # _unpack failed: RecursionError (only possible with a max_depth raised
    # past MAX_DEPTH_LIMIT after construction, or from user code) is a
    # DecodeError, as in the pure twin; anything else propagates as is.
    if PyErr_ExceptionMatches(RecursionError):
        PyErr_Clear()
        raise NestingTooDeep("value nested too deeply for the Python stack")
    return -1


cdef object _decode_buffer(Decoder dec, object data):
    """``Decoder.decode``: bytes directly, bytearray and contiguous memoryview
    through the buffer protocol, anything else through ``bytes(data)``."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        return dec.decode_ptr(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if PyByteArray_CheckExact(data) or PyMemoryView_Check(data):
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:  # a non-contiguous view: bytes() copies it in order
            pass
        else:
            try:
                return dec.decode_ptr(<const unsigned char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
    data = bytes(data)
    return dec.decode_ptr(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


cdef class Decoder:
    """Decodes one msgpack value, bounded for untrusted input.

    Parameters:
        max_depth: deepest container nesting accepted.
        max_str_len, max_bin_len, max_array_len, max_map_len, max_ext_len:
            optional per-kind limits (``None``: bounded only by the input).
        ext_hook: called as ``ext_hook(code, data)`` for extension values
            that are neither a timestamp nor a registered type; without it
            they decode to :class:`ExtType`.
        object_hook: called with every decoded map (a dict); its result
            replaces the dict.
        use_list: False decodes arrays as tuples.
        timestamp: what ext -1 decodes to: ``"timestamp"`` (a
            :class:`~fastrpc.wire.ext.Timestamp`), ``"datetime"`` (aware,
            UTC), ``"float"`` or ``"ns"`` (seconds or integer nanoseconds
            since the epoch) or ``"ext"`` (left as an ext value).
        ext: the :class:`~fastrpc.wire.ext.ExtRegistry` of user types
            (None: :data:`~fastrpc.wire.ext.default_registry`).
    """

    def __cinit__(self):
        self._ext_codes = {}
        self._use_list = True
        self._timestamp = TS_TIMESTAMP
        self._max_depth = DEFAULT_MAX_DEPTH
        self._max_depth_obj = DEFAULT_MAX_DEPTH
        self._max_str_len = self._max_bin_len = self._max_array_len = NO_LIMIT
        self._max_map_len = self._max_ext_len = NO_LIMIT
        self._max_str_len_obj = self._max_bin_len_obj = self._max_array_len_obj = NO_LIMIT
        self._max_map_len_obj = self._max_ext_len_obj = NO_LIMIT

    def __init__(
        self,
        *,
        max_depth=DEFAULT_MAX_DEPTH,
        max_str_len=None,
        max_bin_len=None,
        max_array_len=None,
        max_map_len=None,
        max_ext_len=None,
        ext_hook=None,
        object_hook=None,
        use_list=True,
        timestamp="timestamp",
        ext=None,
    ):
        _check_depth(max_depth)
        self.max_depth = max_depth
        self.max_str_len = max_str_len
        self.max_bin_len = max_bin_len
        self.max_array_len = max_array_len
        self.max_map_len = max_map_len
        self.max_ext_len = max_ext_len
        self._ext_hook = ext_hook
        self._timestamp = mode_number("timestamp", timestamp, TIMESTAMP_MODES)
        self._registry = registry_of(ext)
        self._ext_codes = self._registry._codes
        self._object_hook = object_hook
        self._use_list = bool(use_list)

    @property
    def ext(self):
        """The registry of user types this decoder consults."""
        return self._registry

    @property
    def use_list(self):
        """False: arrays decode as tuples."""
        return self._use_list

    @property
    def timestamp(self):
        """What ext -1 decodes to."""
        return TIMESTAMP_MODES[self._timestamp]

    @property
    def object_hook(self):
        return self._object_hook

    @object_hook.setter
    def object_hook(self, value):
        self._object_hook = value

    # The attributes read like the pure twin's: a limit given as None reads
    # as 4294967295 (no limit).

    @property
    def max_depth(self):
        return self._max_depth_obj

    @max_depth.setter
    def max_depth(self, value):
        self._max_depth = _depth_value(value)
        self._max_depth_obj = value

    @property
    def max_str_len(self):
        return self._max_str_len_obj

    @max_str_len.setter
    def max_str_len(self, value):
        self._max_str_len = _limit_value(value, "max_str_len")
        self._max_str_len_obj = NO_LIMIT if value is None else value

    @property
    def max_bin_len(self):
        return self._max_bin_len_obj

    @max_bin_len.setter
    def max_bin_len(self, value):
        self._max_bin_len = _limit_value(value, "max_bin_len")
        self._max_bin_len_obj = NO_LIMIT if value is None else value

    @property
    def max_array_len(self):
        return self._max_array_len_obj

    @max_array_len.setter
    def max_array_len(self, value):
        self._max_array_len = _limit_value(value, "max_array_len")
        self._max_array_len_obj = NO_LIMIT if value is None else value

    @property
    def max_map_len(self):
        return self._max_map_len_obj

    @max_map_len.setter
    def max_map_len(self, value):
        self._max_map_len = _limit_value(value, "max_map_len")
        self._max_map_len_obj = NO_LIMIT if value is None else value

    @property
    def max_ext_len(self):
        return self._max_ext_len_obj

    @max_ext_len.setter
    def max_ext_len(self, value):
        self._max_ext_len = _limit_value(value, "max_ext_len")
        self._max_ext_len_obj = NO_LIMIT if value is None else value

    @property
    def ext_hook(self):
        return self._ext_hook

    @ext_hook.setter
    def ext_hook(self, value):
        self._ext_hook = value

    cdef object decode_ptr(self, const unsigned char* data, Py_ssize_t length):
        cdef Py_ssize_t pos = 0
        if length <= 0:
            raise DecodeError("empty input: expected a msgpack value")
        cdef PyObject* r = (<unpack_raw_t>_unpack)(self, data, &pos, length, 0)
        if r == NULL:
            _unpack_failed()
        obj = <object>r
        Py_DECREF(obj)  # <object> took a new reference; r's is now obj's
        if FASTRPC_DEBUG:
            assert 0 < pos <= length, "decoder read past its input"
        if pos != length:
            raise ExtraData(f"{length - pos} trailing byte(s) after the msgpack value", obj,
                            PyBytes_FromStringAndSize(<const char*>data + pos, length - pos))
        return obj

    def decode(self, data):
        """Decode exactly one value that fills all of ``data`` (bytes,
        bytearray, memoryview or anything ``bytes()`` accepts)."""
        return _decode_buffer(self, data)

    def decode_range(self, data, start, end):
        """Decode exactly one value filling ``data[start:end]``."""
        cdef Py_buffer view
        cdef Py_ssize_t cstart, cend
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if not 0 <= start <= end <= view.len:
                raise ValueError(f"range {start}:{end} is outside the {view.len}-byte input")
            cstart = start
            cend = end
            return self.decode_ptr(<const unsigned char*>view.buf + cstart, cend - cstart)
        finally:
            PyBuffer_Release(&view)


cdef Encoder _default_encoder = Encoder()
cdef Decoder _default_decoder = Decoder()


def packb(obj, **options):
    """Encode ``obj``; keyword arguments as for :class:`Encoder`."""
    if options:
        return _encode(Encoder(**options), obj)
    return _encode(_default_encoder, obj)


def unpackb(data, **limits):
    """Decode one value from ``data``; keyword arguments as for :class:`Decoder`."""
    if limits:
        return Decoder(**limits).decode(data)
    return _decode_buffer(_default_decoder, data)
