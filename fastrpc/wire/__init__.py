"""The wire layer: constants of the format, the payload codec and the frame
parser/writer, each compiled (``_codec.pyx``, ``_framing.pyx``) with a
pure-Python twin (``_codec_py.py``, ``_framing_py.py``).

It imports nothing of fastrpc but :mod:`fastrpc.errors`.  Which twin a
process uses is chosen once, in :mod:`fastrpc._impl`.
"""

from .ext import ExtRegistry, Timestamp, default_registry, register_ext, unregister_ext

__all__ = ["ExtRegistry", "Timestamp", "default_registry", "register_ext", "unregister_ext"]
