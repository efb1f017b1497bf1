"""Compiled connection cores: the state of a connection and the per-call
fast path of both ends.

The compiled twin of ``_cores_py.py`` (same classes, same behaviour);
``fastrpc/_impl.py`` picks one of the two.

A core holds the state that the fast path and the session rules share
(``session.py`` subclasses :class:`ClientSessionCore` and
:class:`ServerSessionCore`) and takes the bytes a transport read:
``get_buffer``/``buffer_updated`` (or ``data_received``) parse them and hand
the frames to ``_dispatch``.  The frames that make up nearly all traffic (a
request for a sync handler, by index; a response) are handled there
without leaving C: no Python frame, no attribute lookup and no argument
tuple per call.  The first frame that needs anything else (async or
blocking handlers, names, kwargs, errors, control frames, backpressure) and
every frame after it go to ``_received(frames, error)``, which the session
rules implement, in order, so the two paths can never answer out of order.

:class:`AsyncClientCore` adds the asyncio client's ``call()`` and
:class:`SyncClientCore` the blocking client's ``call_plain()``: the
per-call path of each client, from request to answer.
"""

cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF

from fastrpc.wire._framing cimport FLAG_KWARGS, FLAG_METHOD_NAME, Frame, FrameParser, FrameWriter

from asyncio import CancelledError
from time import monotonic as _monotonic

from ..errors import DeadlineExceeded, EncodeError, FrameError, FrameTooLarge, NotProcessed, Unavailable

__all__ = [
    "AsyncClientCore",
    "CallSlot",
    "ClientSessionCore",
    "ServerSessionCore",
    "SessionCore",
    "SyncClientCore",
    "free_request_id",
]


cdef extern from "Python.h":
    # Calls ``fn(*items[0:n])`` straight from the decoded argument list:
    # no tuple is built for the call.
    object PyObject_Vectorcall(object fn, PyObject** items, size_t n, PyObject* kwnames)
    PyObject** PySequence_Fast_ITEMS(object seq)


# Small ints are cached objects in CPython: the parser's frame fields are
# compared by identity, with no conversion.
cdef object REQUEST = 1
cdef object RESPONSE = 2

cdef enum:
    # Requests with these flags take the Python path (name lookup, kwargs).
    SLOW_FLAGS = FLAG_METHOD_NAME | FLAG_KWARGS
    # Answers buffered past this are written before the next request is
    # handled (server/connection.py's FLUSH_AT, same value).
    FLUSH_AT = 256 * 1024


cdef inline void _slot_put(list slot, Py_ssize_t i, object value) noexcept:
    # slot[i] = value, for the three-item slot current_call() reads (made by
    # core/context.py, never resized): no bounds check, no generic setitem.
    cdef PyObject* old = PyList_GET_ITEM(slot, i)
    Py_INCREF(value)
    PyList_SET_ITEM(slot, i, value)
    Py_XDECREF(old)


cdef unsigned long long _free_id(unsigned long long last, dict in_flight) except 0:
    # The request id after ``last`` (1..2**32-1, wrapping) not in flight.
    cdef unsigned long long rid = last + 1
    while rid > 0xFFFFFFFF or rid in in_flight:
        rid = 1 if rid > 0xFFFFFFFF else rid + 1
    return rid


def free_request_id(last, in_flight):
    """The request id after ``last`` (1..2**32-1, wrapping) not in
    ``in_flight``: ids go up, so GOAWAY's ``last`` can tell which calls were
    sent after it (docs/protocol.md §3.1)."""
    return _free_id(last, in_flight)


cdef class SessionCore:
    """Bytes in, for either end of a connection: ``get_buffer`` and
    ``buffer_updated`` (the asyncio ``BufferedProtocol`` calls, also used by
    the blocking client after ``recv_into``) or ``data_received``; the
    frames go to ``_dispatch``, and a read that breaks the protocol goes,
    with the frames before the break, to ``_received(frames, error)``."""

    def get_buffer(self, sizehint):
        return self._parser._get_buffer()

    def buffer_updated(self, nbytes):
        if self._track_seen:
            self._last_seen = self._clock()
            self._ping_sent = False
        try:
            frames = self._parser._buffer_updated(nbytes)
        except FrameError as exc:
            self._received(exc.frames, exc)
        else:
            self._dispatch(frames)

    def data_received(self, data):
        if self._track_seen:
            self._last_seen = self._clock()
            self._ping_sent = False
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            self._received(exc.frames, exc)
        else:
            self._dispatch(frames)

    cdef int _dispatch(self, list frames) except -1:
        self._received(frames, None)
        return 0


cdef class ClientSessionCore(SessionCore):
    """The state of the client end of a connection (rules: session.py)."""


cdef class ServerSessionCore(SessionCore):
    """The server end of a connection: requests for sync handlers, by
    index, run inline as they are read, and their answers leave in one
    write per read.

    The session rules (``session.ServerSession``) and the server's
    connection provide the Python side: ``_received(frames, error)`` (the
    whole of a read the core does not handle), ``_process(frames, i,
    error)`` (the rest of a read, from frame ``i``), ``_write_exception``,
    ``_write_result`` and ``_flush``.  Without a transport (sans IO) the
    answers stay in the writer.
    """

    cdef int _dispatch(self, list frames) except -1:
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t n = PyList_GET_SIZE(frames)
        cdef Py_ssize_t idx
        cdef Frame f
        cdef FrameWriter w
        cdef list inline = self._inline
        cdef dict calls = self._calls
        cdef list slot = self._slot
        if self._backlog is not None or self._draining or inline is None:
            self._received(frames, None)
            return 0
        w = self._writer
        if slot is not None:
            # current_call(): this connection's inline call, noted while it
            # runs (see core/context.py)
            _slot_put(slot, 1, self)
        try:
            while i < n:
                f = <Frame>PyList_GET_ITEM(frames, i)
                if f.type is not REQUEST or f.error is not None or (<int>f.flags) & SLOW_FLAGS:
                    break
                idx = f.method
                if idx >= PyList_GET_SIZE(inline):
                    break
                fn = <object>PyList_GET_ITEM(inline, idx)
                args = f.value
                if fn is None or type(args) is not list or (f.deadline is not None and f.deadline == 0):
                    break
                rid = f.request_id
                if calls and rid in calls:
                    break  # protocol error, reported by the Python path
                i += 1
                self._last_call = rid
                if slot is not None:
                    _slot_put(slot, 0, f)
                    if f.deadline is not None:
                        _slot_put(slot, 2, _monotonic())
                try:
                    result = PyObject_Vectorcall(fn, PySequence_Fast_ITEMS(args), PyList_GET_SIZE(args), NULL)
                except Exception as exc:
                    self._write_exception(rid, self._methods[idx], exc, args, None)
                else:
                    try:
                        w._write_frame(RESPONSE, rid, result)
                    except (FrameTooLarge, EncodeError, OverflowError):
                        self._write_result(rid, self._methods[idx], result)
                if w._buf.length + w._ref_bytes >= FLUSH_AT:
                    # Large answers leave at once, so that the transport can
                    # say (pause_writing) that the peer is not reading them.
                    self._flush()
                    if self._read_paused:
                        if i < n:
                            self._backlog = frames[i:]
                        return 0
        finally:
            if slot is not None:
                _slot_put(slot, 0, None)
                _slot_put(slot, 1, None)
        if i < n:
            self._process(frames, i, None)
        elif w._buf.length and self._transport is not None:
            if w._ref_bytes:
                self._write_chunks(w._take_chunks())
            else:
                self._transport.write(w._take_buffer())
        return 0


cdef class AsyncClientCore(ClientSessionCore):
    """The per-call path of the asyncio client end of a connection.

    The session rules and the asyncio driver provide ``_received(frames,
    error)``, which handles every frame the core does not (errors, control
    frames, protocol errors), and ``_expire``, ``_cancel_call``,
    ``_schedule_flush`` and ``drain`` for :meth:`call`.
    """

    async def call(self, method, args, kwargs=None, timeout=None, metadata=None, bint resend=True):
        """Send one call and wait for its result.

        A call the server ended the connection without reading
        (:class:`NotProcessed`) goes once more, with the time left, to
        ``self._resend`` (set by the client that owns this connection)
        unless ``resend`` is false.
        """
        cdef unsigned long long rid
        cdef FrameWriter writer
        if self._closing or self._transport is None:
            raise Unavailable(self.lost_reason or "connection is closed")
        if self.peer_goaway:
            raise Unavailable(self.lost_reason or "server is shutting down (goaway)")
        deadline = None
        if timeout is not None:
            if timeout <= 0:
                raise DeadlineExceeded(f"deadline of {timeout}s already passed before {method} was sent")
            deadline = int(timeout * 1_000_000)  # the server enforces it too
        rid = self._next_id = _free_id(self._next_id, self._pending)
        writer = self._writer
        writer._write_request(rid, self.methods.get(method, method), args, kwargs, deadline, metadata, False)
        pending = self._pending
        if not pending and self._flush_handle is None:
            # Nothing in flight: a sequential caller.  Send now rather than
            # one loop iteration later; with calls in flight, writes made in
            # the same tick are coalesced into one.
            if writer._ref_bytes:
                self._write_chunks(writer._take_chunks())
            else:
                self._transport.write(writer._take_buffer())
            # The future goes in after the write, off the path the answer
            # waits on: the answer (and connection_lost, which transports
            # schedule with call_soon) comes in a later loop iteration.
            fut = self._loop.create_future()
            pending[rid] = fut
        else:
            fut = self._loop.create_future()
            pending[rid] = fut
            self._schedule_flush()
        if self._write_paused:
            await self.drain()
        if timeout is None:
            try:
                return await fut
            except CancelledError:
                self._cancel_call(rid, fut)
                raise
            except NotProcessed:
                if not resend or self._resend is None:
                    raise
            return await self._resend(method, args, kwargs, None, metadata)
        timer = self._loop.call_later(timeout, self._expire, rid, fut, method, timeout)
        try:
            return await fut
        except CancelledError:
            self._cancel_call(rid, fut)
            raise
        except NotProcessed:
            if not resend or self._resend is None:
                raise
        finally:
            timer.cancel()
        return await self._resend(method, args, kwargs, timer.when() - self._loop.time(), metadata)

    cdef int _dispatch(self, list frames) except -1:
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t n = PyList_GET_SIZE(frames)
        cdef Frame f
        cdef dict pending = self._pending
        while i < n:
            f = <Frame>PyList_GET_ITEM(frames, i)
            if f.type is not RESPONSE or f.error is not None:
                break
            i += 1
            fut = pending.pop(f.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(f.value)
        if i < n:
            self._received(frames[i:], None)
        return 0


@cython.freelist(16)
cdef class CallSlot:
    """One call in flight on a blocking-socket connection: its answer (or
    error) once ``finished``, and the ``concurrent.futures.Future`` of a
    ``go()`` call (with ``resend``: what sends it again if the server never
    reads it)."""

    def __init__(self, method, future, deadline):
        self.finished = False
        self.method = method
        self.future = future
        self.deadline = deadline


cdef class SyncClientCore(ClientSessionCore):
    """The per-call path of the blocking-socket client.

    :meth:`call_plain` makes a call with no deadline (kwargs and metadata
    allowed) when no other thread is reading the socket: it sends, then reads until
    its answer is in, completing any other thread's answers on the way
    through the session rules (``_received``).  Anything else takes the
    general path (``_call``).
    """

    def call_plain(self, method, args, kwargs=None, metadata=None):
        """Call ``method`` with ``args`` (and ``kwargs``, ``metadata``: None
        or non-empty); return its result."""
        cdef CallSlot slot
        cdef unsigned long long rid
        cdef FrameWriter writer
        if not self.alive or self._timeout_mode is not None or not self.recv_lock.acquire(False):
            return self._call(method, args, kwargs, metadata)
        slot = self._plain_slot
        try:
            # recv_lock, then send_lock: the order every path takes both in.
            self.send_lock.acquire()
            try:
                if not self.alive:
                    raise Unavailable(self.lost_reason or "connection is closed")
                rid = self._next_id = _free_id(self._next_id, self._pending)
                writer = self._writer
                writer._write_request(rid, self.methods.get(method, method), args, kwargs, None, metadata, False)
                try:
                    try:
                        if writer._ref_bytes:
                            self._send_chunks(writer._take_chunks())
                        else:
                            self.sock.sendall(writer._take_buffer())
                    finally:
                        # After the send, off the path the answer waits on:
                        # this thread holds recv_lock, so nobody reads the
                        # answer before the slot is in.
                        slot.finished = False
                        slot.value = None
                        slot.error = None
                        slot.method = method
                        self._pending[rid] = slot
                except OSError as exc:
                    self.broken(f"connection lost while sending: {exc}")
            finally:
                self.send_lock.release()
            try:
                while not slot.finished:
                    self._read_plain()
                # Taken while recv_lock is held: the next plain call resets
                # the slot as soon as it is released.
                value = slot.value
                error = slot.error
            except BaseException:
                # Interrupted: this slot is reused, so no later answer may
                # find it under this id.
                if self._pending.get(rid) is slot:
                    del self._pending[rid]
                raise
        finally:
            self.recv_lock.release()
            if self.waiters:
                self._wake()
        if self.retiring and not self._pending:
            self.close()  # replaced after GOAWAY, and now idle
        if error is not None:
            raise error
        return value

    cdef int _read_plain(self) except -1:
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t n
        cdef Frame f
        cdef dict pending = self._pending
        cdef FrameParser parser = self._parser
        cdef CallSlot slot = self._plain_slot
        buf = parser._get_buffer()
        try:
            got = self.sock.recv_into(buf)
        except OSError as exc:
            self.broken(f"connection lost: {exc}")
            return 0
        if not got:
            self.broken("connection closed by the server")
            return 0
        error = None
        try:
            frames = parser._buffer_updated(got)
        except FrameError as exc:
            frames = exc.frames
            error = exc
        n = PyList_GET_SIZE(frames)
        while i < n:
            f = <Frame>PyList_GET_ITEM(frames, i)
            if f.type is not RESPONSE or f.error is not None or pending.get(f.request_id) is not slot:
                break
            del pending[f.request_id]
            slot.value = f.value
            slot.finished = True
            i += 1
        if i < n or error is not None:
            self._received(frames[i:] if i else frames, error)
        return 0
