"""The blocking-socket driver of a client session: one connection shared by
the threads of a :class:`~fastrpc.Client`.

:class:`SyncConnection` is the :class:`~fastrpc.core.session.ClientSession`
on the :class:`SyncClientCore` (whose ``call_plain()`` is the per-call path
of a plain call), moved by a blocking socket.  Calls from many threads are
pipelined on it: whichever caller is waiting reads the socket and hands the
answers to the others (leader/followers), so a plain sequential caller pays
one ``send`` and one ``recv`` per call and no thread hop.  What needs the
threads is here: the send and receive locks, the condition the followers
wait on, the reader thread of ``go()`` calls.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from typing import Any, List, Optional, Tuple

from .._impl import CallSlot, SyncClientCore
from ..core.session import (
    KEEPALIVE_DEAD,
    KEEPALIVE_PING,
    ClientSession,
    ConnectionFailed,
    GoAwayReceived,
    ProtocolViolation,
)
from ..errors import Cancelled, NotProcessed, Unavailable, code_name
from ..middleware.metrics import CountingSocket
from ..transport.address import Address
from ..transport.blocking import open_socket, send_chunks
from .options import ClientOptions

__all__ = ["SyncConnection"]

#: how often a call made in a blocking handler looks at whether the call it
#: was made for has been cancelled (seconds)
_PARENT_POLL = 0.1

log = logging.getLogger("fastrpc.client")


class SyncConnection(SyncClientCore, ClientSession):  # type: ignore[misc]
    """One blocking-socket connection, shared by the threads of a Client.

    The constructor connects and completes the handshake (or raises).
    """

    def __init__(self, address: Address, options: ClientOptions, metrics: Any = None) -> None:
        ClientSession.__init__(self, clock=time.monotonic, **options.session_settings())
        self.address = address
        self.keepalive_interval = options.keepalive_interval
        self._plain_slot = CallSlot("", None, None)
        self.send_lock = threading.Lock()
        self.recv_lock = threading.Lock()
        self.cond = threading.Condition(threading.Lock())
        self.go_pending = 0
        self.waiters = 0
        self.alive = True
        #: replaced by a new connection after GOAWAY: closed once its calls
        #: in flight are answered
        self.retiring = False
        self.reader: Optional[threading.Thread] = None
        self._timeout_mode: Optional[float] = None
        self._handshake_error: Optional[BaseException] = None
        tls = options.tls_for(address)
        sock = open_socket(address, options.connect_timeout, tls, options.hostname_for(address) if tls is not None else None)
        self._tls = tls is not None
        if metrics is not None:
            sock = CountingSocket(sock, metrics)  # type: ignore[assignment]
        #: ClientMetrics this connection counts itself into, once open
        self._metrics = None
        try:
            self.sock = sock
            self.initiate()
            sock.sendall(self.data_to_send())
            deadline = time.monotonic() + options.connect_timeout
            while self.alive and not self._handshaken:
                self._read(deadline, handshake=True)
            if not self.alive:
                raise Unavailable(self.lost_reason or "connection closed during the handshake")
            # Without keepalive the socket blocks (and plain calls take the
            # core's fast path); with it every read has a timeout, so that a
            # silent server is noticed (and plain calls take the general
            # path, which reads through _read).
            sock.settimeout(options.keepalive_interval)
            self._timeout_mode = options.keepalive_interval
        except BaseException:
            self.alive = False
            sock.close()
            raise
        if metrics is not None:
            self._metrics = metrics
            metrics.connection_opened()

    @property
    def usable(self) -> bool:
        """True while new calls may be sent on this connection."""
        return self.alive and not self.peer_goaway and not self.retiring

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
        compress: bool = True,
    ) -> Tuple[int, CallSlot]:
        """Send a call (general path); return its id and slot.
        ``compress=False``: this request goes uncompressed."""
        slot = CallSlot(method, future, None if timeout is None else time.monotonic() + timeout)
        slot.resend = resend
        with self.send_lock:
            if not self.alive:
                raise Unavailable(self.lost_reason or "connection is closed")
            if self._keepalive_interval is not None and not self._pending:
                # Nobody reads an idle connection: silence counts from here.
                self.restart_silence(time.monotonic())
            self.write_outbox()
            w = self._writer
            saved = w.compressor
            if not compress:
                w.compressor = None
            try:
                rid = self.start_call(method, args, kwargs, timeout, metadata, slot)
            finally:
                w.compressor = saved
            if future is not None:
                self.go_pending += 1
            try:
                self._send_written()
            except OSError as exc:
                self.broken(f"connection lost while sending: {exc}")
        return rid, slot

    def notify(self, method: str, args: Any, kwargs: Any, metadata: Any) -> None:
        """Send a one-way call."""
        with self.send_lock:
            if not self.alive:
                raise Unavailable(self.lost_reason or "connection is closed")
            self.write_outbox()
            self.write_notify(method, args, kwargs, metadata)
            try:
                self._send_written()
            except OSError as exc:
                self.broken(f"connection lost while sending: {exc}")

    def _send_written(self) -> None:
        # Everything the writer holds (the caller holds send_lock).
        w = self._writer
        if w.chunked:
            send_chunks(self.sock, w.take_chunks(), self._tls)
        else:
            self.sock.sendall(w.take_buffer())

    def _send_chunks(self, chunks: List[Any]) -> None:
        send_chunks(self.sock, chunks, self._tls)

    def _send_outbox(self) -> None:
        # What the session decided to send while reading (PONG, CANCEL, the
        # keepalive PING, GOAWAY): sent now if no other thread is sending,
        # else by the next sender, before its own frames.  Never waits: a
        # reader stuck on the send lock could deadlock with a sender stuck
        # on a server that waits for us to read.
        if not self._outbox or not self.send_lock.acquire(False):
            return
        try:
            if self.alive and self.write_outbox():
                self._send_written()
        except OSError as exc:
            self.broken(f"connection lost while sending: {exc}")
        finally:
            self.send_lock.release()

    def _call(self, method: str, args: Any, kwargs: Any = None, metadata: Any = None) -> Any:
        # call_plain()'s general path (keepalive on, or another thread reading).
        rid, slot = self.send_request(method, args, kwargs, None, metadata, None)
        return self.wait(rid, slot)

    # -- receiving -------------------------------------------------------------------

    def wait(self, rid: int, slot: CallSlot, parent: Any = None) -> Any:
        """Wait for ``slot``; read the socket ourselves if nobody else is.

        ``parent``: the call being handled where this one was made (a
        blocking handler's): when it is cancelled, so is this call (the
        server is told), looked at every ``_PARENT_POLL`` seconds.
        """
        watch = parent is not None and parent._call is not None
        while not slot.finished:
            if watch and parent.cancelled:
                if self.cancel_call(rid, slot):
                    self._complete(slot, None, Cancelled(f"{slot.method}: the call it was made for was cancelled"))
                    self._send_outbox()
                break
            until = slot.deadline
            if watch:
                poll = time.monotonic() + _PARENT_POLL
                if until is None or poll < until:
                    until = poll
            if self.recv_lock.acquire(False):
                try:
                    while not slot.finished:
                        if not self._read(until):
                            if slot.deadline is not None and time.monotonic() >= slot.deadline:
                                self._expire(rid, slot)
                            break  # or look at the parent again
                finally:
                    self.recv_lock.release()
                    self._wake()
            else:
                with self.cond:
                    self.waiters += 1
                    try:
                        if not slot.finished and self.recv_lock.locked():
                            if until is None:
                                self.cond.wait(1.0)
                            else:
                                self.cond.wait(min(1.0, max(0.0, until - time.monotonic())))
                    finally:
                        self.waiters -= 1
                if not slot.finished and slot.deadline is not None and time.monotonic() >= slot.deadline:
                    self._expire(rid, slot)
        if slot.error is not None:
            raise slot.error
        return slot.value

    def _wake(self) -> None:
        if self.waiters:
            with self.cond:
                self.cond.notify_all()

    def _expire(self, rid: int, slot: CallSlot) -> None:
        if self.expire_call(rid, slot, f"{slot.method} did not complete in time"):
            self._send_outbox()

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
        """Read once and hand what came to the session; False if
        ``deadline`` passed first."""
        if not self.alive:
            return True  # broken by another thread: every call has failed
        keepalive = self.keepalive_interval is not None and not handshake
        timeout = None
        if deadline is not None or keepalive:
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return False
            if keepalive and (timeout is None or timeout > self.keepalive_interval):
                # Wake up at least every keepalive_interval to see whether
                # the server has been silent too long.  A fixed value:
                # settimeout() costs a syscall only when it changes.
                timeout = self.keepalive_interval
        # Read straight into the parser's memory (a large frame lands in
        # place); recv() of a fresh bytes object per call would also cost an
        # allocation, and an mmap/munmap pair for big reads.
        buf = self.get_buffer(-1)
        try:
            # Inside the try: another thread may have closed the socket
            # (broken()) since the check above.
            self._set_timeout(timeout)
            n = self.sock.recv_into(buf)
        except socket.timeout:
            if handshake:
                raise Unavailable(f"no handshake from {self.address} in time") from None
            if keepalive and (deadline is None or time.monotonic() < deadline):
                self._keepalive_tick()
                return True
            return False
        except OSError as exc:
            self.broken(f"connection lost: {exc}")
            return True
        if not n:
            self.broken("connection closed by the server")
            return True
        self.buffer_updated(n)  # the core stamps _last_seen with keepalive
        if handshake and self._handshake_error is not None:
            raise self._handshake_error
        return True

    def _keepalive_tick(self) -> None:
        # The server has been silent while calls wait: ping it once, and if
        # it stays silent (half-open: it vanished without a FIN, or hangs),
        # fail every call in flight instead of waiting forever.
        action = self.keepalive_check(time.monotonic())
        if action == KEEPALIVE_DEAD:
            self.broken(self.lost_reason or "keepalive")
        elif action == KEEPALIVE_PING:
            self._send_outbox()

    def _received(self, frames: List[Any], error: Optional[BaseException]) -> None:
        # Everything the core's plain path did not take.
        events = self.handle_frames(frames, error)
        self._send_outbox()
        for ev in events:
            if isinstance(ev, GoAwayReceived):
                # No new calls here (the Client opens another connection for
                # the next one); close once the calls in flight are answered.
                log.info("%s is going away (%s: %s); new calls go to a new connection", self.address, code_name(ev.code), ev.message)
                self.retiring = True
            elif isinstance(ev, (ProtocolViolation, ConnectionFailed)):
                log.warning("closing the connection to %s: %s", self.address, ev.error)
                if not self._handshaken and isinstance(ev, ProtocolViolation):
                    self._handshake_error = ev.error  # wrong protocol: say exactly what
                self.broken(self.lost_reason or str(ev.error))
        # HandshakeReceived needs nothing more: the session has recorded it.
        if self.retiring and self.alive and not self._pending:
            self.close()  # after GOAWAY, and nothing left in flight

    def _complete(self, slot: CallSlot, value: Any, error: Optional[BaseException]) -> None:
        slot.value = value
        slot.error = error
        slot.finished = True
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
        if self.retiring and not self._pending and self.alive:
            self.close()

    # -- the end ------------------------------------------------------------------------

    def retire(self) -> None:
        """Take no new calls (the client has a new connection after this
        one's GOAWAY) and close once the calls in flight are answered: the
        server answers the calls it accepted before it closes."""
        self.retiring = True
        if not self._pending:
            self.close()

    def broken(self, reason: str) -> None:
        """Mark the connection dead and fail every call in flight (with the
        first reason given: what the server said beats the EOF after it)."""
        if not self.alive:
            return
        self.alive = False
        if reason != "client closed" and self._handshaken:
            log.info("connection to %s lost: %s", self.address, reason)
        if self._metrics is not None:
            self._metrics.connection_closed()
        try:
            # shutdown() first: it wakes a thread blocked in recv_into() on
            # this socket (close() alone does not), which then sees the end.
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass
        self.lost(reason)
        with self.cond:
            self.cond.notify_all()

    def close(self) -> None:
        """Say goodbye (GOAWAY) and close."""
        if self.alive:
            try:
                with self.send_lock:
                    self.goodbye()
                    self.write_outbox()
                    self._send_written()
            except OSError:
                pass
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.broken("client closed")

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
        for slot in list(self._pending.values()):
            if slot.future is not None and slot.deadline is not None:
                if best is None or slot.deadline < best:
                    best = slot.deadline
        return best

    def _expire_go(self) -> None:
        now = time.monotonic()
        for rid, slot in list(self._pending.items()):
            if slot.future is not None and slot.deadline is not None and slot.deadline <= now:
                self._expire(rid, slot)
