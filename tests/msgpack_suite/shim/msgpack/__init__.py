"""A module named ``msgpack`` whose names are fastrpc's codec.

Used only by ``tests/msgpack_suite/run.py`` to run msgpack-python's own test
suite against fastrpc.  It maps names and option values and nothing more:
every byte packed and every value unpacked comes from fastrpc's Encoder and
Decoder (the build ``fastrpc._impl`` selected).  An option fastrpc does not
have raises :class:`ShimUnsupported`, which the runner reports as a failure
unless the test is on its documented list of unsupported tests.

Mappings beyond names:

* ``timestamp=0..3`` -> ``"timestamp"``, ``"float"``, ``"ns"``, ``"datetime"``;
* ``datetime=`` (msgpack: False by default) -> ``Encoder(datetime=...)``;
* a user hook's exception, which fastrpc wraps in DecodeError (the peer fed
  it), is re-raised as it was, as msgpack lets it through;
* ``Unpacker``: feed()/unpack()/iteration over a buffer or file-like object,
  decoding one value at a time with ``Decoder.decode`` and its ExtraData.
"""

from __future__ import annotations

import io

from fastrpc import Decoder, Encoder, ExtType, Timestamp
from fastrpc.errors import DecodeError, ExtraData

from .exceptions import (  # noqa: F401
    BufferFull,
    FormatError,
    OutOfData,
    PackException,
    PackOverflowError,
    PackValueError,
    StackError,
    UnpackException,
    UnpackValueError,
)

version = (1, 1, 2)
__version__ = "1.1.2"


class ShimUnsupported(BaseException):
    """An option fastrpc lacks (BaseException: ``raises(ValueError)`` in a
    test must not swallow it)."""


_TIMESTAMP = {0: "timestamp", 1: "float", 2: "ns", 3: "datetime"}


def _refuse(name, value):
    raise ShimUnsupported(f"{name}={value!r}")


def _encoder_options(default=None, use_single_float=False, use_bin_type=True, strict_types=False,
                     datetime=False, unicode_errors=None, autoreset=True, buf_size=None):
    if use_single_float:
        _refuse("use_single_float", use_single_float)
    if not use_bin_type:
        _refuse("use_bin_type", use_bin_type)
    if strict_types:
        _refuse("strict_types", strict_types)
    if unicode_errors is not None:
        _refuse("unicode_errors", unicode_errors)
    return dict(default=default, datetime=bool(datetime))


def _decoder_options(use_list=True, raw=False, timestamp=0, strict_map_key=True, object_hook=None,
                     object_pairs_hook=None, list_hook=None, unicode_errors=None, max_buffer_size=None,
                     ext_hook=ExtType, max_str_len=-1, max_bin_len=-1, max_array_len=-1,
                     max_map_len=-1, max_ext_len=-1, read_size=None, file_like=None):
    if raw:
        _refuse("raw", raw)
    if object_pairs_hook is not None:
        _refuse("object_pairs_hook", object_pairs_hook)
    if list_hook is not None:
        _refuse("list_hook", list_hook)
    if unicode_errors is not None:
        _refuse("unicode_errors", unicode_errors)
    if timestamp not in _TIMESTAMP:
        raise ValueError("timestamp must be 0..3")
    opts = dict(use_list=bool(use_list), timestamp=_TIMESTAMP[timestamp], object_hook=object_hook)
    if ext_hook is not ExtType:
        opts["ext_hook"] = ext_hook
    for name, value in (("max_str_len", max_str_len), ("max_bin_len", max_bin_len),
                        ("max_array_len", max_array_len), ("max_map_len", max_map_len),
                        ("max_ext_len", max_ext_len)):
        if value != -1:
            opts[name] = value
    # strict_map_key (msgpack's default True: only str/bytes keys) has no
    # fastrpc counterpart; fastrpc accepts every hashable key.
    return opts


_HOOK_FAILURES = ("object_hook failed", "ext_hook failed", "unpack function registered")


def _decode(decoder, data):
    try:
        return decoder.decode(data)
    except DecodeError as exc:
        if exc.__cause__ is not None and str(exc).startswith(_HOOK_FAILURES):
            raise exc.__cause__ from None
        raise


def packb(o, **kwargs):
    return Encoder(**_encoder_options(**kwargs)).encode(o)


def unpackb(packed, **kwargs):
    return _decode(Decoder(**_decoder_options(**kwargs)), packed)


def pack(o, stream, **kwargs):
    stream.write(packb(o, **kwargs))


def unpack(stream, **kwargs):
    return unpackb(stream.read(), **kwargs)


dumps = packb
loads = unpackb
dump = pack
load = unpack


class Packer:
    """``pack()`` (and ``pack_ext_type``) through fastrpc's Encoder; header-
    level methods are unsupported (fastrpc writes whole values only)."""

    def __init__(self, **kwargs):
        self._autoreset = kwargs.get("autoreset", True)
        self._encoder = Encoder(**_encoder_options(**kwargs))
        self._buf = bytearray()

    def pack(self, obj):
        data = self._encoder.encode(obj)
        if self._autoreset:
            return data
        self._buf += data
        return None

    def pack_ext_type(self, typecode, data):
        # msgpack appends this one to the buffer whatever autoreset says
        self._buf += self._encoder.encode(ExtType(typecode, data))

    def pack_array_header(self, n):
        _refuse("Packer.pack_array_header", n)

    def pack_map_header(self, n):
        _refuse("Packer.pack_map_header", n)

    def pack_map_pairs(self, pairs):
        _refuse("Packer.pack_map_pairs", pairs)

    def bytes(self):
        return bytes(self._buf)

    def getbuffer(self):
        return memoryview(bytes(self._buf))

    def reset(self):
        self._buf = bytearray()


class Unpacker:
    """feed()/unpack()/iteration, one whole value at a time."""

    def __init__(self, file_like=None, **kwargs):
        for name in ("read_size", "max_buffer_size"):
            if kwargs.get(name):
                _refuse(name, kwargs[name])
        self._decoder = Decoder(**_decoder_options(**kwargs))
        self._file = file_like
        self._buf = b""

    def feed(self, next_bytes):
        if self._file is not None:
            raise AssertionError("unpacker.feed() is not be able to use with `file_like`.")
        self._buf += bytes(next_bytes)

    def _fill(self):
        if self._file is not None:
            chunk = self._file.read()
            if chunk:
                self._buf += chunk

    def unpack(self):
        self._fill()
        if not self._buf:
            raise OutOfData
        try:
            value = _decode(self._decoder, self._buf)
        except ExtraData as exc:
            self._buf = exc.extra
            return exc.unpacked
        except DecodeError as exc:
            if str(exc).startswith(("truncated input", "empty input")):
                raise OutOfData from None
            raise
        self._buf = b""
        return value

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.unpack()
        except OutOfData:
            raise StopIteration from None

    def skip(self):
        _refuse("Unpacker.skip", None)

    def read_array_header(self):
        _refuse("Unpacker.read_array_header", None)

    def read_map_header(self):
        _refuse("Unpacker.read_map_header", None)

    def read_bytes(self, n):
        _refuse("Unpacker.read_bytes", n)

    def tell(self):
        _refuse("Unpacker.tell", None)


__all__ = [
    "ExtType",
    "Packer",
    "Timestamp",
    "Unpacker",
    "dump",
    "dumps",
    "load",
    "loads",
    "pack",
    "packb",
    "unpack",
    "unpackb",
] + list(__import__("msgpack.exceptions", fromlist=["__all__"]).__all__)
