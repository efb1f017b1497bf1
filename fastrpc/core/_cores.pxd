# Shared declarations of the compiled connection cores (twin of
# _cores_py.py).  A core holds, as typed fields, the state of one connection
# that both the per-call fast path (here) and the session rules
# (fastrpc/core/session.py, which subclasses these) read; the drivers (the
# asyncio protocols, the blocking client) reach the same fields as ordinary
# attributes.
#
#   SessionCore                 parser, writer, clock: bytes in -> _dispatch
#   +- ClientSessionCore        calls in flight, method table, GOAWAY state
#   |  +- AsyncClientCore       + the asyncio client's call() fast path
#   |  +- SyncClientCore        + the blocking client's call_plain() fast path
#   +- ServerSessionCore        + sync handlers run inline on a read

from fastrpc.wire._framing cimport FrameParser, FrameWriter


cdef class SessionCore:
    cdef public FrameParser _parser
    cdef public FrameWriter _writer
    cdef public object _clock           # () -> seconds; read only when _track_seen
    cdef public bint _track_seen        # an idle timeout or keepalive needs _last_seen
    cdef public double _last_seen
    cdef public bint _ping_sent

    cdef int _dispatch(self, list frames) except -1


cdef class ClientSessionCore(SessionCore):
    cdef public dict _pending           # the handle of each call in flight, by id
    cdef public dict methods            # method name -> index, from the handshake
    cdef public unsigned long long _next_id
    cdef public bint peer_goaway        # the server said GOAWAY
    cdef public object lost_reason      # why the connection is (going) down, first reason wins


cdef class AsyncClientCore(ClientSessionCore):
    cdef public object _loop
    cdef public object _transport
    cdef public object _flush_handle    # the scheduled flush (or None)
    cdef public object _resend          # where a call the server never read goes (or None)
    cdef public bint _closing
    cdef public bint _write_paused


cdef class CallSlot:
    cdef public bint finished
    cdef public object value
    cdef public object error
    cdef public object future
    cdef public object deadline
    cdef public object method
    cdef public object resend           # go(): (resender, args, kwargs, metadata) if it may be sent again


cdef class SyncClientCore(ClientSessionCore):
    cdef public object sock
    cdef public object send_lock        # held while a frame is written and sent
    cdef public object recv_lock        # held by the one thread reading the socket
    cdef public bint alive
    cdef public bint retiring           # replaced after GOAWAY: close once idle
    cdef public int waiters             # threads waiting for another's read
    cdef public object _timeout_mode    # the socket's timeout (None: blocking)
    cdef public CallSlot _plain_slot    # the one slot call_plain() reuses

    cdef int _read_plain(self) except -1


cdef class ServerSessionCore(SessionCore):
    cdef public object _transport
    cdef public dict _calls             # async/blocking calls in flight, by id
    cdef public object _backlog         # frames held back while paused (or None)
    cdef public bint _draining          # GOAWAY sent: new calls are refused
    cdef public object _last_call       # id of the last request accepted (GOAWAY says it)
    cdef public bint _read_paused
    cdef public list _methods           # the dispatch table (_Method objects)
    cdef public list _inline            # per method index: the sync handler, else None
    cdef public list _slot              # [frame, connection, arrival] of the inline call running, for current_call() (or None)
