# Shared declarations of the compiled connection cores (twin of
# _protocol_py.py).  The cores hold the state the per-call path reads, as
# typed fields; the asyncio glue in protocol.py and server.py subclasses
# them and reaches the same fields as ordinary attributes.

from fastrpc.wire._framing cimport FrameParser, FrameWriter


cdef class ConnectionCore:
    cdef public object _loop
    cdef public object _transport
    cdef public FrameParser _parser
    cdef public FrameWriter _writer
    cdef public bint _track_seen        # an idle timeout or keepalive needs _last_seen
    cdef public double _last_seen
    cdef public bint _ping_sent

    cdef int _dispatch(self, list frames) except -1


cdef class ServerCore(ConnectionCore):
    cdef public dict _calls             # async/blocking calls in flight, by id
    cdef public object _backlog         # frames held back while paused (or None)
    cdef public bint _draining          # GOAWAY sent: new calls are refused
    cdef public object _last_call       # id of the last request accepted (GOAWAY says it)
    cdef public bint _read_paused
    cdef public list _methods           # the dispatch table (_Method objects)
    cdef public list _inline            # per method index: the sync handler, else None


cdef class ClientCore(ConnectionCore):
    cdef public dict _pending           # futures of calls in flight, by id
    cdef public dict methods            # method name -> index, from the handshake
    cdef public unsigned long long _next_id
    cdef public object _flush_handle    # the scheduled flush (or None)
    cdef public bint _closing
    cdef public bint _write_paused
    cdef public bint peer_goaway        # the server said GOAWAY


cdef class CallSlot:
    cdef public bint done
    cdef public object value
    cdef public object error
    cdef public object future
    cdef public object deadline
    cdef public object method
    cdef public object resend           # go(): (resender, args, kwargs, metadata) if it may be sent again


cdef class SyncCore:
    cdef public object sock
    cdef public FrameParser parser
    cdef public FrameWriter writer
    cdef public object send_lock        # held while a frame is written and sent
    cdef public object recv_lock        # held by the one thread reading the socket
    cdef public dict pending            # _Slot of each call in flight, by id
    cdef public dict methods            # method name -> index, from the handshake
    cdef public bint alive
    cdef public bint goaway
    cdef public bint retiring           # replaced after GOAWAY: close once idle
    cdef public unsigned long long next_id
    cdef public int waiters             # threads waiting for another's read
    cdef public object _timeout_mode    # the socket's timeout (None: blocking)
    cdef public CallSlot _plain_slot    # the one slot call_plain() reuses

    cdef int _read_plain(self) except -1
