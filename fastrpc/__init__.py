"""fastrpc: a fast, dependable RPC core for Python.

The wire layer (frame parser and payload codec) is compiled with Cython and
has a pure-Python twin with the same API; ``EXTENSIONS_ACTIVE`` tells which
one this process uses (``FASTRPC_NO_EXTENSIONS=1`` forces the fallback).
"""

from __future__ import annotations

from . import errors as _errors
from ._impl import HAS_EXTENSIONS as EXTENSIONS_ACTIVE
from ._impl import IMPLEMENTATION, Decoder, Encoder, Frame, FrameParser, FrameWriter, packb, unpackb
from .wire.constants import DEFAULT_MAX_FRAME_SIZE, PROTOCOL_MAJOR, PROTOCOL_MINOR, ExtType, MsgType
from .wire.ext import ExtRegistry, Timestamp, register_ext, unregister_ext
from .errors import *  # noqa: F401,F403
from .client import (
    AsyncClient,
    Backoff,
    Client,
    ClientOptions,
    Endpoint,
    EndpointState,
    Picker,
    PUSHBACK,
    HedgePolicy,
    Pool,
    RetryBudget,
    RetryPolicy,
    RoundRobinPicker,
    connect,
)
from .core.context import CallContext, current_call, detached
from .server import Server, blocking, idempotent
from . import balancing  # noqa: F401 - fastrpc.balancing: balancers, routes, outlier detection
from . import discovery  # noqa: F401 - registers the etcd:// registry and the dns:// and etcd:// target schemes

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Backoff",
    "CallContext",
    "Client",
    "ClientOptions",
    "Endpoint",
    "EndpointState",
    "Picker",
    "PUSHBACK",
    "HedgePolicy",
    "Pool",
    "RetryBudget",
    "RetryPolicy",
    "RoundRobinPicker",
    "Server",
    "blocking",
    "idempotent",
    "connect",
    "current_call",
    "detached",
    "EXTENSIONS_ACTIVE",
    "IMPLEMENTATION",
    "DEFAULT_MAX_FRAME_SIZE",
    "PROTOCOL_MAJOR",
    "PROTOCOL_MINOR",
    "Decoder",
    "Encoder",
    "ExtType",
    "ExtRegistry",
    "Timestamp",
    "register_ext",
    "unregister_ext",
    "Frame",
    "FrameParser",
    "FrameWriter",
    "MsgType",
    "packb",
    "unpackb",
    "__version__",
] + list(_errors.__all__)
