"""fastrpc clients.

* :class:`AsyncClient` (and :func:`connect`): asyncio, many calls in flight
  on one connection, automatic reconnection with exponential backoff.
* :class:`Client`: the drop-in synchronous client.  It talks to the server
  through a blocking socket, with no event loop thread in between, and is
  safe to share between threads: calls from many threads are pipelined on
  the one connection, and whichever caller is waiting reads the socket and
  hands the answers to the others (leader/followers), so a plain sequential
  caller pays one ``send`` and one ``recv`` per call and no thread hop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import random
import socket
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Union

from ..wire import constants as W
from ..transport.address import Address, parse_address
from .._impl import CallSlot as _Slot
from .._impl import FrameParser, FrameWriter, SyncCore
from ..errors import (
    DeadlineExceeded,
    FastRPCError,
    FrameError,
    Internal,
    NotProcessed,
    RpcError,
    StatusCode,
    Unavailable,
    error_from_payload,
)
from ..transport.aio import (
    AGENT,
    CANCEL,
    ERROR,
    GOAWAY,
    HANDSHAKE,
    PING,
    PONG,
    RESPONSE,
    ClientProtocol,
    goaway_last_call,
    sent_after,
)

__all__ = ["AsyncClient", "Client", "connect", "Backoff"]

_UNSET: Any = object()
#: buffers per sendmsg() call (the usual IOV_MAX)
_IOV_MAX = 1024


class Backoff:
    """Exponential backoff with full jitter between reconnection attempts.

    Parameters:
        base: delay after the first failure, in seconds.
        maximum: cap on the delay.
        factor: growth per consecutive failure.
        jitter: fraction of the delay drawn at random (0..1).
    """

    def __init__(self, base: float = 0.05, maximum: float = 5.0, factor: float = 2.0, jitter: float = 0.5) -> None:
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


class _Proxy:
    """``proxy.method(*args)`` calls ``"<service>.method"`` through any client
    (sync or async: it returns what the client's ``call`` returns)."""

    __slots__ = ("_client", "_service")

    def __init__(self, client: Any, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self._client.call, f"{self._service}.{name}")


class AsyncClient:
    """An asyncio client for one server address.

    Usage::

        async with fastrpc.AsyncClient("127.0.0.1:1234") as client:
            print(await client.call("Arith.multiply", 7, 8))

    Parameters:
        address: ``host:port``, ``tcp://host:port`` or ``unix:/path``.
        timeout: default per-call timeout in seconds (``None``: no deadline).
        connect_timeout: limit for connecting plus the handshake.
        max_frame_size: largest frame sent or accepted.
        backoff: reconnection policy after the connection is lost.
        keepalive_interval: ping the server after this many silent seconds;
            if it stays silent ``keepalive_timeout`` more seconds the
            connection is dropped and its calls fail with UNAVAILABLE
            (``None``: no pings).
    """

    def __init__(
        self,
        address: Union[str, Address],
        *,
        timeout: Optional[float] = None,
        connect_timeout: float = 10.0,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        backoff: Optional[Backoff] = None,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
    ) -> None:
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.address = parse_address(address)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.backoff = backoff if backoff is not None else Backoff()
        self._protocol: Optional[ClientProtocol] = None
        self._connecting: Optional[asyncio.Future] = None
        #: where a call the server never read goes once more (a Pool
        #: points this at itself, to use its other connections)
        self._resend_to: Callable[..., Any] = self._resend
        #: connections replaced after GOAWAY while calls were in flight on them
        self._retired: "weakref.WeakSet[ClientProtocol]" = weakref.WeakSet()
        self._next_attempt = 0.0
        self._last_error: Optional[BaseException] = None
        self._closed = False
        self._lost: Optional[asyncio.Event] = None

    # -- connection ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a usable connection is open."""
        p = self._protocol
        return p is not None and p.is_open and not p.peer_goaway

    @property
    def methods(self) -> List[str]:
        """The server's method table (from the last handshake)."""
        p = self._protocol
        return list(p.methods) if p is not None else []

    async def connect(self) -> "AsyncClient":
        """Connect now (calls also connect on demand); returns ``self``."""
        await self._ensure()
        return self

    async def _ensure(self) -> ClientProtocol:
        p = self._protocol
        if p is not None and p.is_open and not p.peer_goaway:
            return p
        if self._closed:
            raise Unavailable("client is closed")
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            wait = self._next_attempt - loop.time()
            if wait > 0:
                raise Unavailable(
                    f"not connected to {self.address}; next attempt in {wait:.3f}s "
                    f"(last error: {self._last_error})"
                )
            self._connecting = loop.create_task(self._connect_once(loop))
        return await asyncio.shield(self._connecting)

    async def _connect_once(self, loop: asyncio.AbstractEventLoop) -> ClientProtocol:
        addr = self.address
        transport = None
        try:
            factory = functools.partial(
                ClientProtocol,
                loop,
                max_frame_size=self.max_frame_size,
                on_lost=self._on_lost,
                keepalive_interval=self.keepalive_interval,
                keepalive_timeout=self.keepalive_timeout,
                resend=self._resend_to,
            )
            if addr.kind == "unix":
                coro = loop.create_unix_connection(factory, addr.path)
            else:
                coro = loop.create_connection(factory, addr.host, addr.port)
            transport, proto = await asyncio.wait_for(coro, self.connect_timeout)
            await asyncio.wait_for(asyncio.shield(proto.handshake), self.connect_timeout)
        except BaseException as exc:
            if transport is not None:
                transport.abort()
            self._last_error = exc
            self._next_attempt = loop.time() + self.backoff.next_delay()
            if isinstance(exc, FrameError):
                raise  # wrong protocol/version: not transient, say exactly what
            if isinstance(exc, (OSError, asyncio.TimeoutError, FastRPCError)):
                raise Unavailable(f"cannot connect to {addr}: {exc or type(exc).__name__}") from exc
            raise
        finally:
            self._connecting = None
        self.backoff.reset()
        self._next_attempt = 0.0
        if self._closed:  # closed while connecting
            proto.close()
            raise Unavailable("client is closed")
        old, self._protocol = self._protocol, proto
        if old is not None and old._transport is not None:
            # Replaced after GOAWAY: its calls in flight still get their
            # answers; close() closes it if it is still open then.
            if old.in_flight:
                self._retired.add(old)
            else:
                old.close()
        if self._lost is not None:
            self._lost.clear()
        return proto

    def _on_lost(self, proto: ClientProtocol, exc: Optional[BaseException]) -> None:
        if proto is self._protocol and (proto._transport is None or proto.peer_goaway):
            if proto._transport is None:
                self._protocol = None
            if self._lost is not None:
                self._lost.set()

    async def wait_lost(self) -> None:
        """Return once the current connection is lost (or said GOAWAY)."""
        if self._lost is None:
            self._lost = asyncio.Event()
        if not self.connected:
            return
        await self._lost.wait()

    async def close(self) -> None:
        """Close the connection; calls in flight fail with UNAVAILABLE."""
        self._closed = True
        p, self._protocol = self._protocol, None
        if p is not None:
            p.close()
        for old in list(self._retired):
            old.close()
        self._retired.clear()
        if self._connecting is not None:
            self._connecting.cancel()

    async def __aenter__(self) -> "AsyncClient":
        await self._ensure()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- calls ---------------------------------------------------------------------

    def call(self, method: str, *args: Any, timeout: Optional[float] = _UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> Any:
        """Call ``method`` (``"Service.method"``) and return an awaitable of
        its result.

        ``timeout`` (seconds) becomes a deadline the server also enforces;
        when it passes the call raises :class:`DeadlineExceeded`.  Keyword
        arguments other than ``timeout``/``metadata`` go to the handler.
        Cancelling the awaiting task cancels the call on the server.
        """
        if timeout is _UNSET:
            timeout = self.timeout
        p = self._protocol
        if p is not None and not p._closing and not p.peer_goaway:
            return p.call(method, args, kwargs or None, timeout, metadata)
        return self._call_slow(method, args, kwargs or None, timeout, metadata)

    async def _call_slow(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        p = await self._ensure()
        return await p.call(method, args, kwargs, timeout, metadata)

    async def _resend(self, method: str, args: Any, kwargs: Any, timeout: Optional[float], metadata: Any) -> Any:
        # A call the server closed the connection without reading (GOAWAY
        # named an earlier one as its last): it never ran, so it goes once
        # more, on a new connection, and is not resent again.
        p = await self._ensure()
        return await p.call(method, args, kwargs, timeout, metadata, False)

    async def notify(self, method: str, *args: Any, metadata: Optional[dict] = None, **kwargs: Any) -> None:
        """Send a one-way call: no answer, errors are not reported."""
        p = await self._ensure()
        p.notify(method, args, kwargs or None, metadata)

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Round-trip a PING frame; return the seconds it took."""
        p = await self._ensure()
        return await p.ping(timeout)

    def proxy(self, service: str) -> Any:
        """An object whose attributes call ``service``'s methods:
        ``await client.proxy("Arith").multiply(7, 8)``."""
        return _Proxy(self, service)


async def connect(address: Union[str, Address], **options: Any) -> AsyncClient:
    """Connect an :class:`AsyncClient` to ``address`` (options as for it)."""
    client = AsyncClient(address, **options)
    await client.connect()
    return client


# ==========================================================================
# Synchronous client


class _SyncConnection(SyncCore):
    """One blocking-socket connection, shared by the threads of a Client.

    :class:`SyncCore` (compiled, or its pure twin) makes the plain calls of
    a caller that finds the socket free (``call_plain``); everything else
    goes through :meth:`send_request` and :meth:`wait` here.
    """

    def __init__(
        self,
        address: Address,
        connect_timeout: float,
        max_frame_size: int,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
    ) -> None:
        self.address = address
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self._last_seen = 0.0
        self._ping_sent = False
        self._plain_slot = _Slot("", None, None)
        self.parser = FrameParser(max_frame_size=max_frame_size)
        self.writer = FrameWriter(max_frame_size=max_frame_size)
        self.send_lock = threading.Lock()
        self.recv_lock = threading.Lock()
        self.cond = threading.Condition(threading.Lock())
        self.pending: Dict[int, _Slot] = {}
        self.go_pending = 0
        self.waiters = 0
        self.next_id = 0
        self.alive = True
        self.goaway = False
        #: replaced by a new connection after GOAWAY: closed once its calls
        #: in flight are answered
        self.retiring = False
        #: GOAWAY's last accepted request id, once the server said it
        self.goaway_last: Optional[int] = None
        self.lost_reason = ""
        self.methods: Dict[str, int] = {}
        self.handshake_done = False
        self.reader: Optional[threading.Thread] = None
        self._timeout_mode: Optional[float] = None
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address.path
        else:
            infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
            family, _, _, _, target = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(target)
            if address.kind == "tcp":
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
            self.writer.write_preface()
            self.writer.write_frame(HANDSHAKE, 0, {"client": AGENT, "max_frame_size": max_frame_size})
            sock.sendall(self.writer.take())
            deadline = time.monotonic() + connect_timeout
            while self.alive and not self.handshake_done:
                self._read(deadline, handshake=True)
            if not self.alive:
                raise Unavailable(self.lost_reason)
            # Without keepalive the socket blocks (and plain calls take the
            # core's fast path); with it every read has a timeout, so that a
            # silent server is noticed (and plain calls take the general
            # path, which reads through _read).
            sock.settimeout(keepalive_interval)
            self._timeout_mode = keepalive_interval
        except BaseException:
            sock.close()
            raise

    # -- sending ---------------------------------------------------------------------

    def send_request(
        self,
        method: str,
        args: Any,
        kwargs: Any,
        timeout: Optional[float],
        metadata: Any,
        future: Optional[concurrent.futures.Future],
        resend: Any = None,
    ) -> "tuple[int, _Slot]":
        deadline_us = None
        deadline = None
        if timeout is not None:
            if timeout <= 0:
                raise DeadlineExceeded(f"deadline of {timeout}s already passed before {method} was sent")
            deadline_us = int(timeout * 1_000_000)
            deadline = time.monotonic() + timeout
        slot = _Slot(method, future, deadline)
        slot.resend = resend
        with self.send_lock:
            if not self.alive:
                raise Unavailable(self.lost_reason or "connection is closed")
            if self.keepalive_interval is not None and not self.pending:
                # Silence counts from here: an idle connection is read by
                # nobody, so the time before this call says nothing.
                self._last_seen = time.monotonic()
                self._ping_sent = False
            rid = self._next_request_id()
            self.writer.write_request(rid, self.methods.get(method, method), args, kwargs, deadline=deadline_us, metadata=metadata)
            self.pending[rid] = slot
            if future is not None:
                self.go_pending += 1
            try:
                self._send_written()
            except OSError as exc:
                self.broken(f"connection lost while sending: {exc}")
        return rid, slot

    def send_frame(self, mtype: int, rid: int, value: Any, block: bool = True) -> bool:
        """Send one frame; False if it was not sent (the lock was busy and
        ``block`` false, or the connection is gone)."""
        if not self.send_lock.acquire(block):
            return False  # best effort (PONG / CANCEL / PING): never stall the reader
        try:
            if not self.alive:
                return False
            self.writer.write_frame(mtype, rid, value)
            self._send_written()
            return True
        except OSError as exc:
            self.broken(f"connection lost while sending: {exc}")
            return False
        finally:
            self.send_lock.release()

    def notify(self, method: str, args: Any, kwargs: Any, metadata: Any) -> None:
        with self.send_lock:
            if not self.alive:
                raise Unavailable(self.lost_reason or "connection is closed")
            self.writer.write_request(0, self.methods.get(method, method), args, kwargs, metadata=metadata, notify=True)
            try:
                self._send_written()
            except OSError as exc:
                self.broken(f"connection lost while sending: {exc}")

    def _send_written(self) -> None:
        # Everything the writer holds (the caller holds send_lock).
        w = self.writer
        if w.chunked:
            self._send_chunks(w.take_chunks())
        else:
            self.sock.sendall(w.take_buffer())

    def _send_chunks(self, chunks: List[Any]) -> None:
        # sendall() for a list of buffers: one sendmsg (writev) per round,
        # so large bytes values are sent from where they are, uncopied.
        views = [memoryview(c) for c in chunks]
        while views:
            sent = self.sock.sendmsg(views[:_IOV_MAX])
            while sent:
                head = views[0]
                if sent >= len(head):
                    sent -= len(head)
                    del views[0]
                else:
                    views[0] = head[sent:]
                    sent = 0

    def _call(self, method: str, args: Any) -> Any:
        rid, slot = self.send_request(method, args, None, None, None, None)
        return self.wait(rid, slot)

    # -- receiving -------------------------------------------------------------------

    def wait(self, rid: int, slot: _Slot) -> Any:
        """Wait for ``slot``; read the socket ourselves if nobody else is."""
        while not slot.done:
            if self.recv_lock.acquire(False):
                try:
                    while not slot.done:
                        if not self._read(slot.deadline):
                            self._expire(rid, slot)
                finally:
                    self.recv_lock.release()
                    self._wake()
            else:
                with self.cond:
                    self.waiters += 1
                    try:
                        if not slot.done and self.recv_lock.locked():
                            if slot.deadline is None:
                                self.cond.wait(1.0)
                            else:
                                self.cond.wait(min(1.0, max(0.0, slot.deadline - time.monotonic())))
                    finally:
                        self.waiters -= 1
                if not slot.done and slot.deadline is not None and time.monotonic() >= slot.deadline:
                    self._expire(rid, slot)
        if slot.error is not None:
            raise slot.error
        return slot.value

    def _wake(self) -> None:
        if self.waiters:
            with self.cond:
                self.cond.notify_all()

    def _expire(self, rid: int, slot: _Slot) -> None:
        if self.pending.get(rid) is slot:
            del self.pending[rid]
            self._complete(slot, None, DeadlineExceeded(f"{slot.method} did not complete in time"))
            self.send_frame(CANCEL, rid, None, block=False)

    def _set_timeout(self, timeout: Optional[float]) -> None:
        # settimeout() toggles O_NONBLOCK (a syscall) only when the mode
        # changes, so keep blocking mode for calls without a deadline.
        if timeout is None:
            if self._timeout_mode is not None:
                self.sock.settimeout(None)
                self._timeout_mode = None
        elif timeout != self._timeout_mode:
            self.sock.settimeout(timeout)
            self._timeout_mode = timeout

    def _read(self, deadline: Optional[float], handshake: bool = False) -> bool:
        """Read once and dispatch; False if ``deadline`` passed first."""
        keepalive = self.keepalive_interval is not None and not handshake
        if deadline is not None or keepalive:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return False
            if keepalive and (timeout is None or timeout > self.keepalive_interval):
                # Wake up at least every keepalive_interval to see whether
                # the server has been silent too long (_keepalive).  A fixed
                # value: settimeout() costs a syscall only when it changes.
                timeout = self.keepalive_interval
            self._set_timeout(timeout)
        else:
            self._set_timeout(None)
        # Read straight into the parser's memory (a large frame lands in
        # place); recv() of a fresh bytes object per call would also cost an
        # allocation, and an mmap/munmap pair for big reads.
        buf = self.parser.get_buffer(-1)
        try:
            n = self.sock.recv_into(buf)
        except socket.timeout:
            if handshake:
                raise Unavailable(f"no handshake from {self.address} in time") from None
            if keepalive and (deadline is None or time.monotonic() < deadline):
                self._keepalive()
                return True
            return False
        except OSError as exc:
            self.broken(f"connection lost: {exc}")
            return True
        if not n:
            self.broken("connection closed by server")
            return True
        if keepalive:
            self._last_seen = time.monotonic()
            self._ping_sent = False
        error = None
        try:
            frames = self.parser.buffer_updated(n)
        except FrameError as exc:
            frames = exc.frames
            error = exc
        self._handle_frames(frames, error, handshake)
        return True

    def _keepalive(self) -> None:
        # The server has been silent while calls wait: ping it once, and if
        # it stays silent (half-open: it vanished without a FIN, or hangs),
        # fail every call in flight instead of waiting forever.
        silent = time.monotonic() - self._last_seen
        if self._ping_sent:
            if silent >= self.keepalive_interval + self.keepalive_timeout:
                self.broken(f"no answer from the server for {silent:.1f}s (keepalive)")
        elif silent >= self.keepalive_interval:
            # Counted as sent only once it is: a busy send lock means trying
            # again at the next wake-up, not giving up on a server never pinged.
            self._ping_sent = self.send_frame(PING, 0, 0, block=False)

    def _handle_frames(self, frames: Any, error: Optional[BaseException], handshake: bool) -> None:
        pending = self.pending
        for f in frames:
            t = f.type
            if t == RESPONSE or t == ERROR:
                slot = pending.pop(f.request_id, None)
                if slot is None:
                    if t == ERROR and f.request_id == 0:
                        self.broken(f"server error: {f.value!r}")
                    continue
                if f.error is not None:
                    self._complete(slot, None, Internal(f"undecodable answer: {f.error}"))
                elif t == RESPONSE:
                    self._complete(slot, f.value, None)
                else:
                    err = error_from_payload(f.value)
                    if err.code == StatusCode.UNAVAILABLE and self._not_read(f.request_id):
                        err = NotProcessed(err.message)  # refused after the server's GOAWAY: it did not run
                    self._complete(slot, None, err)
            elif t == HANDSHAKE:
                info = f.value if type(f.value) is dict else {}
                names = info.get("methods")
                self.methods = {n: i for i, n in enumerate(names) if type(n) is str} if type(names) is list else {}
                peer_max = info.get("max_frame_size")
                if type(peer_max) is int and W.HEADER_SIZE <= peer_max < self.writer.max_frame_size:
                    with self.send_lock:
                        self.writer = FrameWriter(max_frame_size=peer_max)
                self.handshake_done = True
            elif t == PING:
                self.send_frame(PONG, 0, f.value, block=False)
            elif t == GOAWAY:
                self.goaway = True
                if type(f.value) is list and len(f.value) >= 2:
                    self.lost_reason = f"server said goaway: {f.value[1]}"
                    self.goaway_last = goaway_last_call(f.value)
            elif t == PONG:
                pass
            else:
                error = FrameError(f"unexpected {W.MsgType(t).name} frame from server")
                break
        if error is not None:
            self.broken(f"protocol error: {error}")
            if handshake:
                raise error

    def _not_read(self, rid: int) -> bool:
        # True when call ``rid`` was sent after the last call the server's
        # GOAWAY says it accepted: the server never ran it.
        last = self.goaway_last
        return last is not None and sent_after(rid, last, self.next_id)

    def _complete(self, slot: _Slot, value: Any, error: Optional[BaseException]) -> None:
        slot.value = value
        slot.error = error
        slot.done = True
        fut = slot.future
        if fut is not None:
            self.go_pending -= 1
            if error is None:
                fut.set_result(value)
            elif slot.resend is not None and type(error) is NotProcessed:
                # Never ran: sent once more, on a new connection, from a
                # thread of its own (this one may hold this connection's
                # locks, and connecting blocks).
                threading.Thread(target=slot.resend[0], args=(slot,), name="fastrpc-resend", daemon=True).start()
            else:
                fut.set_exception(error)
        elif self.waiters:
            with self.cond:
                self.cond.notify_all()
        if self.retiring and not self.pending and self.alive:
            self.close()

    def retire(self) -> None:
        """Take no new calls (the client has a new connection after this
        one's GOAWAY) and close once the calls in flight are answered: the
        server answers the calls it accepted before it closes."""
        self.retiring = True
        if not self.pending:
            self.close()

    def broken(self, reason: str) -> None:
        """Mark the connection dead and fail every call in flight."""
        if not self.alive:
            return
        self.alive = False
        self.lost_reason = reason
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass
        pending, self.pending = self.pending, {}
        for rid, slot in pending.items():
            if not slot.done:
                if self._not_read(rid):
                    self._complete(slot, None, NotProcessed(f"{reason} (after GOAWAY; the server never read this call)"))
                else:
                    self._complete(slot, None, Unavailable(reason))
        with self.cond:
            self.cond.notify_all()

    # -- background reader for go() -------------------------------------------------------

    def ensure_reader(self) -> None:
        if self.reader is None:
            self.reader = threading.Thread(target=self._reader_loop, name="fastrpc-client-reader", daemon=True)
            self.reader.start()
        elif self.waiters or self.go_pending:
            with self.cond:
                self.cond.notify_all()

    def _reader_loop(self) -> None:
        while self.alive:
            with self.cond:
                while self.alive and not self.go_pending:
                    self.cond.wait(1.0)
            if not self.alive:
                return
            if not self.recv_lock.acquire(timeout=0.05):
                continue  # a sync caller is reading; it hands go() answers out too
            try:
                while self.alive and self.go_pending:
                    deadline = self._next_go_deadline()
                    if not self._read(deadline):
                        self._expire_go()
            finally:
                self.recv_lock.release()
                self._wake()

    def _next_go_deadline(self) -> Optional[float]:
        best = None
        for slot in list(self.pending.values()):
            if slot.future is not None and slot.deadline is not None:
                if best is None or slot.deadline < best:
                    best = slot.deadline
        return best

    def _expire_go(self) -> None:
        now = time.monotonic()
        for rid, slot in list(self.pending.items()):
            if slot.future is not None and slot.deadline is not None and slot.deadline <= now:
                self._expire(rid, slot)

    def close(self) -> None:
        if self.alive:
            try:
                with self.send_lock:
                    self.writer.write_frame(GOAWAY, 0, (0, "client closing"))
                    self._send_written()
            except OSError:
                pass
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.broken("client closed")


class Client:
    """The synchronous client: ``Client("127.0.0.1:1234").call("Arith.multiply", 7, 8)``.

    Thread-safe: share one instance between threads and their calls are
    pipelined on one connection.  The connection is opened by the
    constructor and reopened on demand (with backoff) after it is lost.

    Parameters:
        address: ``host:port``, ``tcp://host:port`` or ``unix:/path``.
        timeout: default per-call timeout in seconds (``None``: no deadline).
        connect_timeout: limit for connecting plus the handshake.
        max_frame_size: largest frame sent or accepted.
        backoff: reconnection policy.
        lazy: do not connect in the constructor.
        keepalive_interval: while calls wait, ping a server silent for this
            many seconds; if it stays silent ``keepalive_timeout`` more
            seconds the connection is dropped and its calls fail with
            UNAVAILABLE (``None``: no pings).  The server answers pings
            from its event loop, so a sync handler that blocks it for that
            long counts as silence.  The silence is noticed within one
            more ``keepalive_interval``.  With keepalive every read has a
            timeout (a poll() before each recv()), so a call costs a
            syscall more.
    """

    def __init__(
        self,
        address: Union[str, Address],
        *,
        timeout: Optional[float] = None,
        connect_timeout: float = 10.0,
        max_frame_size: int = W.DEFAULT_MAX_FRAME_SIZE,
        backoff: Optional[Backoff] = None,
        lazy: bool = False,
        keepalive_interval: Optional[float] = None,
        keepalive_timeout: float = 20.0,
    ) -> None:
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.address = parse_address(address)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.backoff = backoff if backoff is not None else Backoff()
        self._conn: Optional[_SyncConnection] = None
        #: connections replaced after GOAWAY, still answering calls in flight
        self._retired: List[_SyncConnection] = []
        self._connect_lock = threading.Lock()
        self._next_attempt = 0.0
        self._last_error: Optional[BaseException] = None
        self._closed = False
        if not lazy:
            self._connection()

    def _connection(self) -> _SyncConnection:
        conn = self._conn
        if conn is not None and conn.alive and not conn.goaway:
            return conn
        with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.alive and not conn.goaway:
                return conn
            if self._closed:
                raise Unavailable("client is closed")
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                raise Unavailable(
                    f"not connected to {self.address}; next attempt in {wait:.3f}s (last error: {self._last_error})"
                )
            try:
                conn = _SyncConnection(
                    self.address, self.connect_timeout, self.max_frame_size, self.keepalive_interval, self.keepalive_timeout
                )
            except BaseException as exc:
                self._last_error = exc
                self._next_attempt = time.monotonic() + self.backoff.next_delay()
                if isinstance(exc, (FrameError, RpcError)):
                    raise
                if isinstance(exc, (OSError, FastRPCError)):
                    raise Unavailable(f"cannot connect to {self.address}: {exc}") from exc
                raise
            self.backoff.reset()
            old, self._conn = self._conn, conn
            self._retired = [c for c in self._retired if c.alive]
            if old is not None and old.alive:
                # After GOAWAY: its calls in flight still get their answers
                # (other threads, go() futures), then it closes.
                old.retire()
                if old.alive:
                    self._retired.append(old)
            return conn

    @property
    def methods(self) -> List[str]:
        """The server's method table (from the last handshake)."""
        conn = self._conn
        return list(conn.methods) if conn is not None else []

    def call(self, method: str, *args: Any, timeout: Optional[float] = _UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> Any:
        """Call ``method`` and return its result (blocking).

        Raises the server's :class:`RpcError` subclass on failure,
        :class:`DeadlineExceeded` when ``timeout`` passes, and
        :class:`Unavailable` when the connection is down.  A call the
        server closed the connection without reading (it said GOAWAY first,
        naming an earlier call as its last) never ran: it is sent once more
        on a new connection, with the time left.
        """
        if timeout is _UNSET:
            timeout = self.timeout
        conn = self._conn
        if conn is None or not conn.alive or conn.goaway:
            conn = self._connection()
        if timeout is None and metadata is None and not kwargs:
            try:
                return conn.call_plain(method, args)
            except NotProcessed:
                pass
        else:
            rid, slot = conn.send_request(method, args, kwargs or None, timeout, metadata, None)
            try:
                return conn.wait(rid, slot)
            except NotProcessed:
                if slot.deadline is not None:
                    timeout = slot.deadline - time.monotonic()
        # Not read by the server: once more, on a new connection, and not again.
        conn = self._connection()
        rid, slot = conn.send_request(method, args, kwargs or None, timeout, metadata, None)
        return conn.wait(rid, slot)

    def go(self, method: str, *args: Any, timeout: Optional[float] = _UNSET, metadata: Optional[dict] = None, **kwargs: Any) -> concurrent.futures.Future:
        """Start a call and return a :class:`concurrent.futures.Future` of its
        result (like Go net/rpc's ``Go``).  Calls are sent in the order
        ``go`` is called.  A call the server closed the connection without
        reading is sent once more, as :meth:`call` does."""
        if timeout is _UNSET:
            timeout = self.timeout
        conn = self._connection()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        conn.send_request(method, args, kwargs or None, timeout, metadata, fut, (self._resend_go, args, kwargs or None, metadata))
        conn.ensure_reader()
        return fut

    def _resend_go(self, slot: _Slot) -> None:
        # A go() call the server closed the connection without reading:
        # once more, on a new connection, with the time left, and not again.
        _, args, kwargs, metadata = slot.resend
        fut = slot.future
        try:
            timeout = None if slot.deadline is None else slot.deadline - time.monotonic()
            conn = self._connection()
            conn.send_request(slot.method, args, kwargs, timeout, metadata, fut)
            conn.ensure_reader()
        except BaseException as exc:  # noqa: BLE001 - the caller's future reports it
            if not fut.done():
                fut.set_exception(exc)

    def notify(self, method: str, *args: Any, metadata: Optional[dict] = None, **kwargs: Any) -> None:
        """Send a one-way call (no answer)."""
        self._connection().notify(method, args, kwargs or None, metadata)

    def proxy(self, service: str) -> Any:
        """``client.proxy("Arith").multiply(7, 8)``."""
        return _Proxy(self, service)

    def close(self) -> None:
        """Close the connection; calls in flight fail with UNAVAILABLE."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        for old in self._retired:
            old.close()
        self._retired = []

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and conn.alive:
            try:
                conn.sock.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
