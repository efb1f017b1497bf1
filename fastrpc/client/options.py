"""Client options, in one place: what :class:`~fastrpc.Client`,
:class:`~fastrpc.AsyncClient` and :class:`~fastrpc.Pool` share, the
reconnection backoff, and the rule for when a connection may be attempted
and what a failed attempt raises."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import ssl as _ssl
from typing import Any, Dict, Mapping, Optional

from ..errors import FastRPCError, FrameError, Unavailable
from ..transport.address import Address
from ..wire import compression as compression_codecs
from ..wire import constants as W

log = logging.getLogger("fastrpc.client")

__all__ = ["Backoff", "ClientOptions", "Reconnect"]


class Backoff:
    """Exponential backoff with full jitter between reconnection attempts.

    Parameters:
        base: delay after the first failure, in seconds.
        maximum: cap on the delay.
        factor: growth per consecutive failure.
        jitter: fraction of the delay drawn at random (0..1).
    """

    def __init__(self, base: float = 0.05, maximum: float = 5.0, factor: float = 2.0, jitter: float = 0.5) -> None:
        if base < 0 or maximum < 0 or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("Backoff needs base >= 0, maximum >= 0, factor >= 1 and 0 <= jitter <= 1")
        self.base = base
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.failures = 0

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before the next try."""
        delay = min(self.maximum, self.base * self.factor**self.failures)
        self.failures += 1
        return delay * (1.0 - self.jitter * random.random())

    def reset(self) -> None:
        """Record a success."""
        self.failures = 0

    def fresh(self) -> "Backoff":
        """The same policy with no failures recorded (each connection of a
        pool keeps its own count)."""
        other = copy.copy(self)
        other.failures = 0
        return other

    def __repr__(self) -> str:
        return f"Backoff(base={self.base}, maximum={self.maximum}, factor={self.factor}, jitter={self.jitter})"


class ClientOptions:
    """The options every client takes (as keyword arguments, or as one
    ``options=ClientOptions(...)`` object; keyword arguments given beside
    it override its fields).

    Parameters:
        timeout: default per-call timeout in seconds (``None``: no deadline).
            A call's own ``timeout=`` wins.
        connect_timeout: limit for connecting plus the handshake.
        max_frame_size: largest frame sent or accepted (lowered to the
            server's limit at the handshake).
        backoff: reconnection policy after a failed attempt (a
            :class:`Backoff`; default: 50 ms doubling to 5 s, jittered).
        keepalive_interval: ping a server silent this many seconds; if it
            stays silent ``keepalive_timeout`` more seconds the connection is
            dropped and its calls fail with UNAVAILABLE (``None``: no pings).
        keepalive_timeout: see ``keepalive_interval``.
        inherit: a call made while a call is handled (in a handler, or
            code it starts) inherits from it: at most the time it has left,
            its trace context, and (for a blocking handler's calls) its
            cancellation; an async handler's calls are cancelled with its
            task.  ``False``: this client's calls never inherit (for one
            block of code: ``with fastrpc.detached():``).
        ssl: an :class:`ssl.SSLContext` for TLS (and mutual TLS: load the
            client's certificate into it).  A ``tls://`` address without
            one uses ``ssl.create_default_context()`` (the system's CAs,
            host name checked).  None with a ``tcp://`` address: no TLS.
        server_hostname: the name the server's certificate must carry (and
            SNI sends); default: the address's host.
        compression: the codecs to offer at handshake, in order of
            preference (``"zstd"``, ``"lz4"``, a list of them; ``"auto"``:
            every one installed), or None (default): no compression.  Once
            the server agrees, payloads of ``compress_threshold`` bytes or
            more are compressed both ways when that pays (see
            :mod:`fastrpc.wire.compression`; ``pip install fastrpc[zstd]``).
        compress_threshold: the smallest payload compressed (1 KiB).
    """

    __slots__ = (
        "timeout",
        "connect_timeout",
        "max_frame_size",
        "backoff",
        "keepalive_interval",
        "keepalive_timeout",
        "inherit",
        "ssl",
        "server_hostname",
        "compression",
        "compress_threshold",
    )

    def __init__(
        self,
        *,
        timeout: Optional[float] = None,
        connect_timeout: float = 10.0,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        backoff: Optional[Backoff] = None,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
        inherit: bool = True,
        ssl: Optional["_ssl.SSLContext"] = None,
        server_hostname: Optional[str] = None,
        compression: Any = None,
        compress_threshold: int = 1024,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0 or None")
        if not connect_timeout > 0:
            raise ValueError("connect_timeout must be > 0")
        if not W.HEADER_SIZE <= max_frame_size <= W.MAX_FRAME_SIZE_LIMIT:
            raise ValueError(f"max_frame_size must be in {W.HEADER_SIZE}..{W.MAX_FRAME_SIZE_LIMIT}")
        if keepalive_interval is not None and not keepalive_interval > 0:
            raise ValueError("keepalive_interval must be > 0 or None")
        if not keepalive_timeout > 0:
            raise ValueError("keepalive_timeout must be > 0")
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError("backoff must be a fastrpc.Backoff")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.backoff = backoff if backoff is not None else Backoff()
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.inherit = bool(inherit)
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError("ssl must be an ssl.SSLContext")
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.compression = compression_codecs.names(compression)
        if compress_threshold < 0:
            raise ValueError("compress_threshold must be >= 0")
        self.compress_threshold = compress_threshold

    def tls_for(self, address: Address) -> "Optional[_ssl.SSLContext]":
        """The TLS context for connections to ``address``, or None (no TLS)."""
        if self.ssl is not None:
            return self.ssl
        if address.kind == "tls":
            return _ssl.create_default_context()
        return None

    def hostname_for(self, address: Address) -> Optional[str]:
        """The name to check the server's certificate against."""
        if self.server_hostname is not None:
            return self.server_hostname
        return address.host or None

    @classmethod
    def build(cls, options: Optional["ClientOptions"], settings: Mapping[str, Any]) -> "ClientOptions":
        """``options`` with ``settings`` (keyword arguments a client was
        given) applied; a name that is not an option is a TypeError."""
        unknown = set(settings) - set(cls.__slots__)
        if unknown:
            raise TypeError(f"unknown client option(s): {', '.join(sorted(unknown))}")
        if options is None:
            return cls(**settings)
        if not isinstance(options, cls):
            raise TypeError("options must be a fastrpc.ClientOptions")
        return options.replace(**settings) if settings else options

    def session_settings(self) -> Dict[str, Any]:
        """The keyword arguments a :class:`~fastrpc.core.session.ClientSession`
        takes from these options."""
        return {
            "max_frame_size": self.max_frame_size,
            "keepalive_interval": self.keepalive_interval,
            "keepalive_timeout": self.keepalive_timeout,
            "compression": self.compression or (),
            "compress_threshold": self.compress_threshold,
        }

    def replace(self, **changes: Any) -> "ClientOptions":
        """A copy with ``changes`` applied (validated like the constructor)."""
        fields: Dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return ClientOptions(**fields)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"ClientOptions({fields})"


class Reconnect:
    """When the next connection attempt to ``address`` may start, and what a
    failed attempt raises: the one rule both clients and every endpoint
    follow.

    Attempts are spaced by ``backoff``; a call that finds the connection
    down during the wait fails at once with :class:`Unavailable` (naming
    the last error) rather than waiting.  A failed attempt raises
    :class:`Unavailable` ("cannot connect to ..."), except a
    :class:`FrameError`: the peer does not speak this protocol (or version),
    which no retry will change, so it is raised as it is.
    """

    __slots__ = ("address", "backoff", "next_attempt", "last_error")

    def __init__(self, address: Address, backoff: Backoff) -> None:
        self.address = address
        self.backoff = backoff
        self.next_attempt = 0.0
        self.last_error: Optional[BaseException] = None

    def check(self, now: float) -> None:
        """Raise :class:`Unavailable` if no attempt may start at ``now``."""
        wait = self.next_attempt - now
        if wait > 0:
            raise Unavailable(
                f"not connected to {self.address}; next attempt in {wait:.3f}s (last error: {self.last_error})"
            )

    def failed(self, exc: BaseException, now: float) -> BaseException:
        """Record a failed attempt at ``now``; return what to raise."""
        self.last_error = exc
        delay = self.backoff.next_delay()
        self.next_attempt = now + delay
        if isinstance(exc, FrameError):
            log.warning("%s does not speak this protocol: %s", self.address, exc)
            return exc
        if isinstance(exc, (OSError, asyncio.TimeoutError, FastRPCError)):
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.info("cannot connect to %s: %s (next attempt in %.3fs)", self.address, reason, delay)
            err = Unavailable(f"cannot connect to {self.address}: {reason}")
            err.__cause__ = exc
            return err
        return exc

    def succeeded(self) -> None:
        """Record a successful attempt."""
        log.debug("connected to %s", self.address)
        self.backoff.reset()
        self.next_attempt = 0.0
