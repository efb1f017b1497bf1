"""The sans-IO session layer (``fastrpc/core/session.py``), driven with bytes
only: no socket, no event loop, no thread.

Every rule about a connection's life is written once there; these tests pin
them for both ends, on the compiled cores and on the pure ones (the
``impl`` fixture): handshake, GOAWAY and the calls it proves unread,
connection-level errors, protocol violations, the first reason winning,
PING/PONG, keepalive, CANCEL, the server's acceptance rules and timers.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, List

import pytest

from fastrpc._impl import FrameParser, FrameWriter
from fastrpc.core import session as S
from fastrpc.errors import (
    DeadlineExceeded,
    FrameTooLarge,
    Internal,
    NotFound,
    NotProcessed,
    StatusCode,
    Unavailable,
)
from fastrpc.wire import constants as W

UNAVAILABLE = int(StatusCode.UNAVAILABLE)


def _on(impl: Any, cls: type, core: str) -> type:
    # ``cls`` on the core of ``impl`` (the active build's core is already
    # its base; the other one goes in front of it in the MRO).
    base = getattr(impl.cores, core)
    if base in cls.__mro__:
        return cls
    return type(f"{cls.__name__}_{impl.name}", (base, cls), {})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def client(impl: Any, **kw: Any) -> S.ClientSession:
    return _on(impl, S.ClientSession, "ClientSessionCore")(**kw)


def server(impl: Any, **kw: Any) -> S.ServerSession:
    kw.setdefault("handshake_info", {"server": "test", "methods": ["Arith.multiply", "Arith.add"], "max_frame_size": 1 << 20})
    return _on(impl, S.ServerSession, "ServerSessionCore")(**kw)


def frames_of(data: bytes, preface: bool = True) -> List[Any]:
    return FrameParser(expect_preface=preface).feed(data)


class Peer:
    """The other end, written by hand with a FrameWriter."""

    def __init__(self) -> None:
        self.w = FrameWriter()
        self.w.write_preface()

    def handshake(self, **info: Any) -> "Peer":
        self.w.write_frame(W.MsgType.HANDSHAKE, 0, info)
        return self

    def frame(self, mtype: int, rid: int = 0, value: Any = None) -> "Peer":
        self.w.write_frame(mtype, rid, value)
        return self

    def bytes(self) -> bytes:
        return self.w.take()


def connected(impl: Any, **kw: Any) -> S.ClientSession:
    s = client(impl, **kw)
    s.initiate()
    s.data_to_send()
    events = s.receive_data(Peer().handshake(methods=["Arith.multiply"], max_frame_size=1 << 20).bytes())
    assert [type(e) for e in events] == [S.HandshakeReceived]
    return s


def call(s: S.ClientSession, *args: Any, timeout: Any = None) -> "tuple[int, concurrent.futures.Future]":
    fut: concurrent.futures.Future = concurrent.futures.Future()
    rid = s.start_call("Arith.multiply", list(args), None, timeout, None, fut)
    return rid, fut


# -- client: handshake ----------------------------------------------------------------


def test_client_opens_with_preface_and_handshake(impl):
    s = client(impl, max_frame_size=4096)
    s.initiate()
    data = s.data_to_send()
    assert data.startswith(W.PREFACE)
    (hs,) = frames_of(data)
    assert hs.type == W.MsgType.HANDSHAKE and hs.value["max_frame_size"] == 4096
    assert hs.value["client"].startswith("fastrpc/")


def test_client_takes_the_method_table_and_the_servers_frame_limit(impl):
    s = client(impl)
    s.initiate()
    events = s.receive_data(Peer().handshake(methods=["A.x", "B.y"], max_frame_size=200).bytes())
    assert isinstance(events[0], S.HandshakeReceived) and events[0].info["methods"] == ["A.x", "B.y"]
    assert s.methods == {"A.x": 0, "B.y": 1}
    # a frame the server would refuse (and close the connection for) is not sent
    with pytest.raises(FrameTooLarge):
        s.start_call("A.x", [b"x" * 500], None, None, None, concurrent.futures.Future())


def test_a_second_handshake_from_the_server_is_a_violation(impl):
    s = connected(impl)
    events = s.receive_data(Peer().handshake(methods=[]).bytes()[len(W.PREFACE):])
    assert [type(e) for e in events] == [S.ProtocolViolation]
    (goaway,) = frames_of(s.data_to_send(), preface=False)
    assert goaway.type == W.MsgType.GOAWAY and goaway.value[0] == int(StatusCode.INTERNAL)
    assert "second HANDSHAKE" in goaway.value[1] and goaway.value[2] == 0
    assert s.methods == {"Arith.multiply": 0}  # the table did not change


@pytest.mark.parametrize("mtype", [W.MsgType.REQUEST, W.MsgType.NOTIFY, W.MsgType.CANCEL])
def test_frames_a_server_may_not_send_are_a_violation(impl, mtype):
    s = connected(impl)
    rid, fut = call(s, 7, 8)
    events = s.receive_data(Peer().frame(mtype, 1, [1]).bytes()[len(W.PREFACE):])
    assert [type(e) for e in events] == [S.ProtocolViolation]
    assert s.lost_reason.startswith("protocol error")
    s.lost("connection closed by the server")
    assert isinstance(fut.exception(), Unavailable) and "protocol error" in str(fut.exception())


def test_broken_framing_is_a_violation_after_the_good_frames(impl):
    s = connected(impl)
    rid, fut = call(s, 7, 8)
    good = Peer().frame(W.MsgType.RESPONSE, rid, 56).bytes()[len(W.PREFACE):]
    events = s.receive_data(good + b"\x00\x00\x00\x08\x63\x00\x00\x00\x00\x00\x00\x00")
    assert fut.result(0) == 56
    assert [type(e) for e in events] == [S.ProtocolViolation]


# -- client: calls ----------------------------------------------------------------------


def test_answers_and_errors_complete_their_calls(impl):
    s = connected(impl)
    r1, f1 = call(s, 7, 8)
    r2, f2 = call(s, 1, 2)
    (req1, req2) = frames_of(s.data_to_send(), preface=False)
    assert (req1.request_id, req1.method, req1.value) == (r1, 0, [7, 8])
    p = Peer().frame(W.MsgType.ERROR, r2, [int(StatusCode.NOT_FOUND), "no", {"k": 1}]).frame(W.MsgType.RESPONSE, r1, 56)
    assert s.receive_data(p.bytes()[len(W.PREFACE):]) == []
    assert f1.result(0) == 56
    err = f2.exception(0)
    assert isinstance(err, NotFound) and err.details == {"k": 1}
    assert s.in_flight == 0


def test_an_answer_to_an_unknown_or_cancelled_call_is_ignored(impl):
    s = connected(impl)
    rid, fut = call(s, 7, 8)
    assert s.cancel_call(rid, fut)
    s.data_to_send()
    s.receive_data(Peer().frame(W.MsgType.RESPONSE, rid, 56).frame(W.MsgType.RESPONSE, 999, 1).bytes()[len(W.PREFACE):])
    assert not fut.done()


def test_cancel_and_expire_tell_the_server(impl):
    s = connected(impl)
    r1, f1 = call(s, 7, 8)
    r2, f2 = call(s, 1, 2, timeout=0.5)
    s.data_to_send()
    assert s.cancel_call(r1, f1) and not s.cancel_call(r1, f1)
    assert s.expire_call(r2, f2, "too slow")
    assert isinstance(f2.exception(0), DeadlineExceeded)
    sent = frames_of(s.data_to_send(), preface=False)
    assert [(f.type, f.request_id) for f in sent] == [(W.MsgType.CANCEL, r1), (W.MsgType.CANCEL, r2)]


def test_deadline_travels_and_a_spent_one_sends_nothing(impl):
    s = connected(impl)
    call(s, 7, 8, timeout=0.25)
    (req,) = frames_of(s.data_to_send(), preface=False)
    assert req.deadline == 250_000
    with pytest.raises(DeadlineExceeded):
        call(s, 7, 8, timeout=0)
    assert s.data_to_send() == b""


def test_an_undecodable_answer_fails_only_its_call(impl):
    s = connected(impl)
    r1, f1 = call(s, 1, 1)
    r2, f2 = call(s, 2, 2)
    s.data_to_send()
    w = FrameWriter()
    w.write_frame(W.MsgType.RESPONSE, r1, None)
    bad = bytearray(w.take())
    bad[-1] = 0xC1  # a reserved msgpack byte as the payload
    s.receive_data(bytes(bad) + Peer().frame(W.MsgType.RESPONSE, r2, 4).bytes()[len(W.PREFACE):])
    assert isinstance(f1.exception(0), Internal)
    assert f2.result(0) == 4


# -- client: GOAWAY, errors, the end --------------------------------------------------


def test_goaway_names_the_last_call_read_and_later_ones_are_not_processed(impl):
    s = connected(impl)
    calls = [call(s, i, i) for i in range(4)]
    s.data_to_send()
    last = calls[1][0]
    events = s.receive_data(
        Peer().frame(W.MsgType.GOAWAY, 0, [UNAVAILABLE, "going away", last])
        .frame(W.MsgType.ERROR, calls[2][0], [UNAVAILABLE, "server shutting down"])
        .bytes()[len(W.PREFACE):]
    )
    (ev,) = events
    assert isinstance(ev, S.GoAwayReceived) and ev.last == last and ev.message == "going away"
    assert s.peer_goaway
    with pytest.raises(Unavailable):
        call(s, 9, 9)  # no new calls after GOAWAY
    assert type(calls[2][1].exception(0)) is NotProcessed  # refused after GOAWAY: never ran
    s.lost("connection closed by the server")
    assert type(calls[0][1].exception(0)) is Unavailable  # may have run
    assert type(calls[1][1].exception(0)) is Unavailable
    assert type(calls[3][1].exception(0)) is NotProcessed  # sent after last: never read
    assert "going away" in str(calls[0][1].exception(0))  # the server's reason, not the EOF's


def test_a_goaway_without_last_proves_nothing(impl):
    s = connected(impl)
    rid, fut = call(s, 1, 1)
    s.data_to_send()
    s.receive_data(Peer().frame(W.MsgType.GOAWAY, 0, [UNAVAILABLE, "old peer"]).bytes()[len(W.PREFACE):])
    s.lost("connection closed by the server")
    assert type(fut.exception(0)) is Unavailable


def test_a_refusal_keeps_its_reason_over_the_eof(impl):
    # max_connections: the server says why, then closes
    s = client(impl)
    s.initiate()
    s.data_to_send()
    s.receive_data(Peer().frame(W.MsgType.GOAWAY, 0, [int(StatusCode.RESOURCE_EXHAUSTED), "too many connections", 0]).bytes())
    s.lost("connection closed by the server")
    assert s.lost_reason == "server said goaway: too many connections"


def test_a_connection_level_error_fails_every_call(impl):
    s = connected(impl)
    calls = [call(s, i, i) for i in range(3)]
    events = s.receive_data(Peer().frame(W.MsgType.ERROR, 0, [int(StatusCode.INTERNAL), "broken"]).bytes()[len(W.PREFACE):])
    assert [type(e) for e in events] == [S.ConnectionFailed]
    for _, fut in calls:
        assert isinstance(fut.exception(0), Internal) and "broken" in str(fut.exception(0))
    assert s.in_flight == 0


def test_goodbye_says_a_1_1_goaway_once(impl):
    s = connected(impl)
    s.goodbye()
    s.goodbye()
    (goaway,) = frames_of(s.data_to_send(), preface=False)
    assert goaway.type == W.MsgType.GOAWAY and goaway.value == [0, "client closing", 0]
    assert s.lost_reason == "client closed"


# -- client: ping and keepalive --------------------------------------------------------


def test_ping_is_answered_and_pong_completes_a_ping(impl):
    s = connected(impl)
    fut: concurrent.futures.Future = concurrent.futures.Future()
    seq = s.start_ping(fut)
    (ping,) = frames_of(s.data_to_send(), preface=False)
    assert ping.type == W.MsgType.PING and ping.value == seq != 0
    s.receive_data(Peer().frame(W.MsgType.PING, 0, "abc").frame(W.MsgType.PONG, 0, seq).bytes()[len(W.PREFACE):])
    assert fut.done() and fut.exception(0) is None
    (pong,) = frames_of(s.data_to_send(), preface=False)
    assert pong.type == W.MsgType.PONG and pong.value == "abc"


def test_keepalive_pings_once_then_gives_up(impl):
    clock = Clock()
    s = connected(impl, keepalive_interval=1.0, keepalive_timeout=2.0, clock=clock)
    s.restart_silence(0.0)
    assert s.keepalive_check(0.5) == S.KEEPALIVE_OK
    assert s.keepalive_check(1.0) == S.KEEPALIVE_PING
    assert s.keepalive_check(1.5) == S.KEEPALIVE_PING  # still due; queued once
    clock.now = 1.5
    (ping,) = frames_of(s.data_to_send(), preface=False)
    assert ping.type == W.MsgType.PING and ping.value == 0
    assert s.keepalive_check(3.4) == S.KEEPALIVE_OK
    assert s.keepalive_check(3.5) == S.KEEPALIVE_DEAD
    assert "keepalive" in s.lost_reason


def test_keepalive_counts_the_ping_only_once_it_is_written(impl):
    # A writer held by another thread (the blocking client's send lock)
    # must not make a live server look dead: its time to answer runs from
    # when the PING went out.
    clock = Clock()
    s = connected(impl, keepalive_interval=1.0, keepalive_timeout=2.0, clock=clock)
    s.restart_silence(0.0)
    assert s.keepalive_check(1.0) == S.KEEPALIVE_PING
    assert s.keepalive_check(50.0) == S.KEEPALIVE_PING  # never written: not dead
    clock.now = 50.0
    assert s.write_outbox()
    assert s.keepalive_check(51.9) == S.KEEPALIVE_OK
    assert s.keepalive_check(52.0) == S.KEEPALIVE_DEAD


def test_any_read_is_a_sign_of_life(impl):
    clock = Clock()
    s = connected(impl, keepalive_interval=1.0, keepalive_timeout=2.0, clock=clock)
    s.restart_silence(0.0)
    assert s.keepalive_check(1.0) == S.KEEPALIVE_PING
    clock.now = 1.0
    s.write_outbox()
    clock.now = 2.5
    s.receive_data(Peer().frame(W.MsgType.PONG, 0, 0).bytes()[len(W.PREFACE):])
    assert s.keepalive_check(3.4) == S.KEEPALIVE_OK  # silent since 2.5 only


# -- server ------------------------------------------------------------------------------


def test_server_refuses_with_a_reason(impl):
    s = server(impl)
    assert not s.initiate(0.0, refuse=(int(StatusCode.RESOURCE_EXHAUSTED), "too many connections"))
    data = s.data_to_send()
    assert data.startswith(W.PREFACE)
    (goaway,) = frames_of(data)
    assert goaway.value == [int(StatusCode.RESOURCE_EXHAUSTED), "too many connections", 0]


def test_client_and_server_sessions_talk_through_bytes_alone(impl):
    c = client(impl)
    s = server(impl)
    assert s.initiate(0.0)
    c.initiate()
    assert s.receive_data(c.data_to_send()) == []
    events = c.receive_data(s.data_to_send())
    assert isinstance(events[0], S.HandshakeReceived) and c.methods == {"Arith.multiply": 0, "Arith.add": 1}
    rid, fut = call(c, 7, 8)
    (req,) = s.receive_data(c.data_to_send())
    assert isinstance(req, S.RequestReceived) and req.frame.value == [7, 8] and req.frame.method == 0
    s._writer.write_response(req.frame.request_id, 56)
    c.receive_data(s.data_to_send())
    assert fut.result(0) == 56
    # a second handshake from the client breaks the protocol
    (violation,) = s.receive_data(Peer().handshake(client="x").bytes()[len(W.PREFACE):])
    assert isinstance(violation, S.ProtocolViolation)
    (goaway,) = frames_of(s.data_to_send(), preface=False)
    assert goaway.type == W.MsgType.GOAWAY and goaway.value[2] == rid  # the last call it accepted


def test_server_acceptance_rules(impl):
    s = server(impl)
    s.initiate(0.0)
    s.receive_data(Peer().handshake(client="x").bytes())
    s.data_to_send()
    w = FrameWriter()
    w.write_request(5, 0, [1, 2])
    (f,) = frames_of(w.take(), preface=False)
    assert s.accept_request(f, False) is True and s._last_call == 5
    s._calls[5] = object()  # call 5 still running
    verdict = s.accept_request(f, False)
    assert isinstance(verdict, S.ProtocolViolation) and "reused" in str(verdict.error)
    del s._calls[5]
    s.data_to_send()
    assert s.start_draining() and not s.start_draining()
    (goaway,) = frames_of(s.data_to_send(), preface=False)
    assert goaway.value == [UNAVAILABLE, "server shutting down", 5]
    w.write_request(6, 0, [1, 2])
    (f6,) = frames_of(w.take(), preface=False)
    assert s.accept_request(f6, False) is False  # after our GOAWAY: refused, not run
    (refusal,) = frames_of(s.data_to_send(), preface=False)
    assert refusal.type == W.MsgType.ERROR and refusal.request_id == 6 and refusal.value[0] == UNAVAILABLE
    assert s._last_call == 5


def test_server_answers_ping_and_reports_cancel(impl):
    s = server(impl)
    s.initiate(0.0)
    s.data_to_send()
    events = s.receive_data(Peer().handshake(client="x").frame(W.MsgType.PING, 0, 9).frame(W.MsgType.CANCEL, 3).bytes())
    assert [type(e) for e in events] == [S.CancelReceived] and events[0].request_id == 3
    sent = frames_of(s.data_to_send(), preface=False)
    assert [f.type for f in sent] == [W.MsgType.HANDSHAKE, W.MsgType.PONG] and sent[1].value == 9


def test_server_timers(impl):
    s = server(impl, handshake_timeout=5.0, idle_timeout=10.0, keepalive_interval=3.0, keepalive_timeout=4.0)
    s.initiate(0.0)
    assert s.next_timer() == 1.5
    assert s.timer_check(4.9, 0) == S.TIMER_OK
    assert s.timer_check(5.0, 0) == S.TIMER_NO_HANDSHAKE
    s.receive_data(Peer().handshake(client="x").bytes())
    s.restart_silence(0.0)
    s.data_to_send()
    assert s.timer_check(3.0, 1) == S.TIMER_OK  # keepalive PING written
    (ping,) = frames_of(s.data_to_send(), preface=False)
    assert ping.type == W.MsgType.PING
    assert s.timer_check(6.9, 1) == S.TIMER_OK
    assert s.timer_check(7.0, 1) == S.TIMER_HALF_OPEN
    s2 = server(impl, idle_timeout=10.0)
    s2.initiate(0.0)
    s2.data_to_send()
    assert s2.timer_check(9.9, 0) == S.TIMER_OK
    assert s2.timer_check(10.0, 1) == S.TIMER_OK  # a call runs: not idle
    assert s2.timer_check(10.0, 0) == S.TIMER_IDLE
    (goaway,) = frames_of(s2.data_to_send(), preface=False)
    assert goaway.value[:2] == [UNAVAILABLE, "idle timeout"]


def test_sent_after_is_safe_across_the_wrap():
    assert S.sent_after(5, 4, 5) and not S.sent_after(4, 4, 5)
    assert S.sent_after(1, 0xFFFFFFFF, 2)  # 1 came after the wrap
    assert not S.sent_after(0xFFFFFFFE, 0xFFFFFFFF, 2)
    assert S.sent_after(7, 0, 7)  # last 0: nothing was accepted
