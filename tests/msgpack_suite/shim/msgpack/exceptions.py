"""msgpack's exception names, mapped onto fastrpc's (shim: see ../../run.py)."""

from fastrpc.errors import DecodeError, EncodeError, ExtraData, NestingTooDeep


class UnpackException(Exception):
    """Only raised by the shim's Unpacker emulation (OutOfData, BufferFull)."""


class BufferFull(UnpackException):
    pass


class OutOfData(UnpackException):
    pass


#: fastrpc raises DecodeError for every malformed input but the three cases
#: with classes of their own.
FormatError = DecodeError
#: nesting past max_depth (or the Python stack)
StackError = NestingTooDeep
UnpackValueError = ValueError
PackException = Exception
PackValueError = ValueError
#: fastrpc has no OverflowError: an int past 64 bits is an EncodeError.
PackOverflowError = EncodeError

__all__ = [
    "BufferFull",
    "DecodeError",
    "ExtraData",
    "FormatError",
    "OutOfData",
    "PackException",
    "PackOverflowError",
    "PackValueError",
    "StackError",
    "UnpackException",
    "UnpackValueError",
]
