"""Payload compression: the codecs a connection may agree on at handshake
(``docs/protocol.md`` §5), and the two functions a frame writer and parser
call.

* zstd (``pip install fastrpc[zstd]``: the ``zstandard`` package), id 1;
* lz4 (``pip install fastrpc[lz4]``: the ``lz4`` package, its frame
  format), id 2.

A compressed payload (flag ``COMPRESSED``) is one byte, the codec's id,
then the codec's frame.  The writer compresses a payload only when it is at
least ``threshold`` bytes (default 1 KiB) and only when that pays (the
result at least 1/16 smaller), else sends it as it is; a payload over 16
KiB whose first 4 KiB do not compress is sent as it is without a full try.  The reader never
inflates past its ``limit`` (its ``max_frame_size``): a payload that would
is refused with a :class:`~fastrpc.errors.DecodeError` before more than
``limit + 1`` bytes are produced (a decompression bomb costs no more memory
than an honest frame).
"""

from __future__ import annotations

import io
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from ..errors import DecodeError

__all__ = ["CODECS", "Codec", "available", "compressor", "decompressor", "get", "names", "negotiate"]

#: payloads smaller than this are never compressed
DEFAULT_THRESHOLD = 1024
#: how much of a large payload is tried first, to skip incompressible ones
_SAMPLE = 4096


class Codec:
    """One compression codec: its name, its wire id, and how it compresses
    and (boundedly) decompresses."""

    name = ""
    id = 0

    def compress(self, data: bytes) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def decompress(self, data: bytes, limit: int) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Codec {self.name}>"


class _Zstd(Codec):
    name = "zstd"
    id = 1

    def __init__(self) -> None:
        import zstandard

        self._mod = zstandard
        # Level 1: RPC payloads are latency-bound (on benchmarks.compression's
        # records level 3 took 10% longer and saved no bytes).
        self._c = zstandard.ZstdCompressor(level=1)
        self._d = zstandard.ZstdDecompressor()

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def decompress(self, data: bytes, limit: int) -> bytes:
        # A stream reader produces at most what is asked of it, whatever
        # size the frame header claims: a bomb is cut at limit + 1 bytes.
        try:
            with self._d.stream_reader(io.BytesIO(data)) as reader:
                out = reader.read(limit + 1)
                if len(out) > limit:
                    raise DecodeError(f"compressed payload inflates past the limit of {limit} bytes")
                if reader.read(1):  # pragma: no cover - read() returned less than asked, so nothing is left
                    raise DecodeError(f"compressed payload inflates past the limit of {limit} bytes")
        except self._mod.ZstdError as exc:
            raise DecodeError(f"bad zstd payload: {exc}") from None
        return out


class _Lz4(Codec):
    name = "lz4"
    id = 2

    def __init__(self) -> None:
        import lz4.frame

        self._mod = lz4.frame

    def compress(self, data: bytes) -> bytes:
        return self._mod.compress(data)

    def decompress(self, data: bytes, limit: int) -> bytes:
        # max_length bounds what one call produces: a bomb is cut at
        # limit + 1 bytes.
        d = self._mod.LZ4FrameDecompressor()
        try:
            out = d.decompress(data, max_length=limit + 1)
        except RuntimeError as exc:
            raise DecodeError(f"bad lz4 payload: {exc}") from None
        if len(out) > limit or (not d.eof and not d.needs_input):
            raise DecodeError(f"compressed payload inflates past the limit of {limit} bytes")
        if not d.eof:
            raise DecodeError("bad lz4 payload: truncated")
        return out


_FACTORIES = {"zstd": _Zstd, "lz4": _Lz4}
_cache: Dict[str, Optional[Codec]] = {}


def _load(name: str) -> Optional[Codec]:
    if name not in _cache:
        try:
            _cache[name] = _FACTORIES[name]()
        except ImportError:
            _cache[name] = None
    return _cache[name]


def available() -> List[str]:
    """The codec names this process can use (their packages installed), in
    order of preference."""
    return [name for name in _FACTORIES if _load(name) is not None]


def get(name: str) -> Codec:
    """The codec called ``name``; ValueError if unknown, ImportError if its
    package is not installed."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown compression {name!r} (known: {sorted(_FACTORIES)})")
    codec = _load(name)
    if codec is None:
        raise ImportError(f"compression {name!r} needs its package: pip install fastrpc[{name}]")
    return codec


#: codec names, for validation
CODECS = tuple(_FACTORIES)


def names(value: object) -> Optional[Tuple[str, ...]]:
    """Codec names from a ``compression=`` option: None or empty -> None,
    ``"auto"`` -> every codec installed (None if none is), a name or a list
    of names -> those, checked (ValueError: unknown; ImportError: its
    package is not installed)."""
    if value is None or value == () or value == []:
        return None
    if value == "auto":
        return tuple(available()) or None
    out = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    for name in out:
        get(name)
    return out


def negotiate(offered: Iterable[object], accepted: Iterable[str]) -> Optional[str]:
    """The first codec in the client's ``offered`` list that the server
    ``accepted`` (and can load), or None."""
    ok = set(accepted)
    for name in offered:
        if isinstance(name, str) and name in ok and _load(name) is not None:
            return name
    return None


def compressor(name: str, threshold: int = DEFAULT_THRESHOLD) -> Callable[[bytes], Optional[bytes]]:
    """What a writer calls with a payload of at least ``threshold`` bytes:
    the compressed payload (codec id first), or None when compressing does
    not pay."""
    codec = get(name)
    head = bytes((codec.id,))
    compress = codec.compress

    def run(payload: bytes) -> Optional[bytes]:
        n = len(payload)
        if n > 4 * _SAMPLE and len(compress(payload[:_SAMPLE])) > _SAMPLE - (_SAMPLE >> 3):
            # Early abort: a large payload whose first 4 KiB do not shrink by
            # 1/8 (random, already compressed) is not worth a full pass.
            return None
        out = compress(payload)
        if len(out) + 1 > len(payload) - (len(payload) >> 4):
            return None  # saves less than 1/16: not worth the reader's time
        return head + out

    run.threshold = threshold  # type: ignore[attr-defined]
    return run


def decompressor(names: Iterable[str], limit: int) -> Callable[[bytes], bytes]:
    """What a parser calls with a compressed payload (codec id first): the
    payload, at most ``limit`` bytes; DecodeError for a codec not agreed on,
    a corrupt payload, or one that inflates past ``limit``."""
    by_id = {}
    for name in names:
        codec = get(name)
        by_id[codec.id] = codec

    def run(data: bytes) -> bytes:
        if not data:
            raise DecodeError("empty compressed payload")
        codec = by_id.get(data[0])
        if codec is None:
            raise DecodeError(f"payload compressed with codec {data[0]}, which this connection did not agree on")
        return codec.decompress(bytes(data[1:]), limit)

    return run
