"""msgpack.ext names mapped onto fastrpc (shim)."""

from fastrpc import ExtType, Timestamp

__all__ = ["ExtType", "Timestamp"]
