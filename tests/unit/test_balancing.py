"""The balancers and outlier detection of ``fastrpc.balancing``: pure logic
over fake endpoints, no network, no event loop.

Distributions are measured over many picks and compared with real numbers,
so a balancer that ignores weights, latency or keys fails.
"""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest

from fastrpc.balancing import (
    BALANCERS,
    P2C,
    Balancer,
    ConsistentHash,
    Load,
    OutlierDetection,
    Random,
    RoundRobin,
    Route,
    Routes,
    Weighted,
    balancer,
)
from fastrpc.balancing import p2c as p2c_module
from fastrpc.balancing.simple import MAX_SEQUENCE, WeightedPicker, swrr_sequence
from fastrpc.errors import StatusCode


class Ep:
    """A fake endpoint: what pickers read (see fastrpc/balancing/base.py)."""

    def __init__(
        self,
        key: str,
        weight: int = 1,
        version: str = "",
        tags: dict[str, str] | None = None,
        load: Load | None = None,
        in_flight: int = 0,
        slot: int = 0,
    ) -> None:
        self.key = key
        self.weight = weight
        self.version = version
        self.tags = dict(tags or {})
        self.metadata: dict[str, Any] = {}
        self.load = load if load is not None else Load()
        self.in_flight = in_flight
        self.slot = slot

    def __repr__(self) -> str:
        return f"Ep({self.key!r}#{self.slot})"


def eps(*keys: str, **kw: Any) -> list[Ep]:
    return [Ep(k, **kw) for k in keys]


def tally(picker: Any, n: int, **call: Any) -> collections.Counter:
    return collections.Counter(picker.pick("S.m", **call).key for _ in range(n))


# -- registry ---------------------------------------------------------------------------


def test_names_registered() -> None:
    assert set(BALANCERS) >= {"round_robin", "random", "weighted", "p2c", "consistent_hash"}
    for name, cls in BALANCERS.items():
        b = balancer(name)
        assert isinstance(b, cls) and b.name == name
    assert isinstance(balancer("p2c"), P2C) and balancer("p2c").feedback is True
    assert balancer("round_robin").feedback is False
    with pytest.raises(ValueError):
        balancer("nope")


@pytest.mark.parametrize("name", ["round_robin", "random", "weighted", "p2c", "consistent_hash"])
def test_empty_and_single(name: str) -> None:
    b = balancer(name)
    assert b.picker([]).pick("S.m") is None
    only = Ep("a")
    p = b.picker([only])
    assert all(p.pick("S.m", (), None, {"hash-key": str(i)}) is only for i in range(50))


# -- random -----------------------------------------------------------------------------


def test_random_is_uniform() -> None:
    ready = eps("a", "b", "c", "d")
    counts = tally(Random().picker(ready), 40000)
    assert set(counts) == {"a", "b", "c", "d"}
    # binomial sd ~87: 10000 +- 500 is > 5 sd
    for k in "abcd":
        assert 9500 <= counts[k] <= 10500, counts


# -- weighted ---------------------------------------------------------------------------


def test_swrr_nginx_sequence() -> None:
    assert swrr_sequence([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    ready = [Ep("a", 5), Ep("b", 1), Ep("c", 1)]
    p = Weighted().picker(ready)
    seq = "".join(p.pick("S.m").key for _ in range(14))
    assert seq == "aabacaa" * 2


def test_weighted_shares_and_smoothness() -> None:
    ready = [Ep("a", 3), Ep("b", 2), Ep("c", 1), Ep("z", 0)]
    p = Weighted().picker(ready)
    picks = [p.pick("S.m").key for _ in range(6000)]
    counts = collections.Counter(picks)
    assert counts == {"a": 3000, "b": 2000, "c": 1000}
    # smooth: in any window of one period (6 picks) each gets exactly its weight
    for i in range(60):
        assert collections.Counter(picks[i : i + 6]) == {"a": 3, "b": 2, "c": 1}


def test_weighted_gcd_and_all_zero() -> None:
    p = Weighted().picker([Ep("a", 100), Ep("b", 300)])
    assert isinstance(p, WeightedPicker) and p.period == 4
    assert [p.pick("S.m").key for _ in range(4)].count("b") == 3
    # all weights 0: plain round robin
    p = Weighted().picker([Ep("a", 0), Ep("b", 0), Ep("c", 0)])
    assert [p.pick("S.m").key for _ in range(6)] == list("abcabc")


def test_weighted_long_period_falls_back_to_steps() -> None:
    # coprime weights summing past MAX_SEQUENCE: no precomputed sequence
    ready = [Ep("a", MAX_SEQUENCE), Ep("b", 7), Ep("c", 0)]
    p = Weighted().picker(ready)
    assert isinstance(p, WeightedPicker) and not p._seq and p.period == MAX_SEQUENCE + 7
    counts = tally(p, p.period)
    assert counts == {"a": MAX_SEQUENCE, "b": 7}
    # b's calls are spread out, not bunched
    picks = [p.pick("S.m").key for _ in range(p.period)]
    at = [i for i, k in enumerate(picks) if k == "b"]
    gaps = [j - i for i, j in zip(at, at[1:])]
    assert min(gaps) > MAX_SEQUENCE // 7 - 2


def test_weighted_splits_a_servers_weight_over_its_slots() -> None:
    # server a (weight 2) has 4 connection slots, b (weight 2) one: equal shares
    ready = [Ep("a", 2, slot=i) for i in range(4)] + [Ep("b", 2)]
    p = Weighted().picker(ready)
    picks = [p.pick("S.m") for _ in range(8000)]
    assert collections.Counter(e.key for e in picks) == {"a": 4000, "b": 4000}
    assert collections.Counter(e.slot for e in picks if e.key == "a") == {0: 1000, 1: 1000, 2: 1000, 3: 1000}


def test_weighted_rebuild_continues() -> None:
    b = Weighted()
    ready = [Ep("a", 5), Ep("b", 1), Ep("c", 1)]
    p = b.picker(ready)
    first = [p.pick("S.m").key for _ in range(3)]
    q = b.picker(ready)  # same set rebuilt: carries on where p was
    assert first + [q.pick("S.m").key for _ in range(4)] == list("aabacaa")


# -- p2c --------------------------------------------------------------------------------


def _loaded(latency: float, now: float, calls: int = 3) -> Load:
    load = Load(decay=10.0)
    for i in range(calls):
        load.observe(latency, now=now - calls + i + 1)
    return load


def test_p2c_prefers_low_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1000.0
    monkeypatch.setattr(p2c_module, "_monotonic", lambda: now)
    fast = Ep("fast", load=_loaded(0.001, now))
    slow = [Ep(f"slow{i}", load=_loaded(0.100, now)) for i in range(3)]
    counts = tally(P2C().picker([fast] + slow), 12000)
    # fast wins every pair it is in: 1 - C(3,2)/C(4,2) = 1/2 of the picks
    assert 5700 <= counts["fast"] <= 6300, counts
    assert sum(counts.values()) == 12000


def test_p2c_prefers_low_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 50.0
    monkeypatch.setattr(p2c_module, "_monotonic", lambda: now)
    shared = _loaded(0.010, now)
    # two slots of one server (one Load) and a third with the same latency
    busy = Ep("a", load=shared, in_flight=9, slot=0)
    idle = Ep("a", load=shared, in_flight=0, slot=1)
    other = Ep("b", load=_loaded(0.010, now), in_flight=1)
    p = P2C().picker([busy, idle, other])
    picks = collections.Counter((e.key, e.slot) for e in (p.pick("S.m") for _ in range(6000)))
    assert picks[("a", 0)] == 0  # busy loses every pair it is in
    assert 3600 <= picks[("a", 1)] <= 4400  # idle wins both its pairs: 2/3
    # two endpoints: no randomness, always the cheaper
    p = P2C().picker([busy, other])
    assert all(p.pick("S.m") is other for _ in range(100))


def test_p2c_tries_a_decayed_endpoint_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 100.0
    clock = [now]
    monkeypatch.setattr(p2c_module, "_monotonic", lambda: clock[0])
    once_slow = Ep("x", load=_loaded(2.0, now, calls=1))
    steady = Ep("y", load=_loaded(0.05, now, calls=1))
    p = P2C().picker([once_slow, steady])
    assert all(p.pick("S.m") is steady for _ in range(20))
    # 60 s on, x has not answered again: its 2 s decayed to 2 x e^-6 = 5 ms,
    # while y just answered in 50 ms (a peak: its estimate is 50 ms again)
    clock[0] = now + 60.0
    steady.load.observe(0.05, now=clock[0])
    assert once_slow.load.cost(0, clock[0]) < steady.load.cost(0, clock[0])
    assert p.pick("S.m") is once_slow


def test_p2c_unmeasured_endpoints_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(p2c_module, "_monotonic", lambda: 1.0)
    counts = tally(P2C().picker(eps("a", "b", "c")), 9000)
    for k in "abc":  # cost 0 each: ties go to the first of a random pair
        assert 2600 <= counts[k] <= 3400, counts


# -- consistent hash --------------------------------------------------------------------


def _owners(picker: Any, keys: list[str]) -> dict[str, str]:
    return {k: picker.pick("S.m", (), None, {"hash-key": k}).key for k in keys}


KEYS = [f"user-{i}" for i in range(10000)]


def test_consistent_hash_same_key_same_server() -> None:
    servers = [f"10.0.0.{i}:7000" for i in range(10)]
    a = _owners(ConsistentHash().picker(eps(*servers)), KEYS[:2000])
    # another balancer (another client), endpoints in another order: same mapping
    b = _owners(ConsistentHash().picker(eps(*reversed(servers))), KEYS[:2000])
    assert a == b
    counts = collections.Counter(a.values())
    assert len(counts) == 10 and min(counts.values()) > 100  # spread over all


def test_consistent_hash_moves_about_one_nth() -> None:
    n = 10
    servers = [f"10.0.0.{i}:7000" for i in range(n)]
    b = ConsistentHash()
    before = _owners(b.picker(eps(*servers)), KEYS)
    gone = servers[3]
    after = _owners(b.picker(eps(*(s for s in servers if s != gone))), KEYS)
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == gone for k in moved)  # keys of other servers never move
    assert all(after[k] != gone for k in KEYS)
    frac = len(moved) / len(KEYS)
    assert 0.5 / n <= frac <= 1.6 / n, frac
    # and it comes back: the same keys return to it
    again = _owners(b.picker(eps(*servers)), KEYS)
    assert again == before


def test_consistent_hash_weights() -> None:
    ready = [Ep("a", 3), Ep("b", 1), Ep("c", 0)]
    counts = collections.Counter(_owners(ConsistentHash().picker(ready), KEYS).values())
    assert "c" not in counts
    assert 0.68 <= counts["a"] / len(KEYS) <= 0.82, counts  # 3/4 expected
    # all zero: each counts as 1
    counts = collections.Counter(_owners(ConsistentHash().picker([Ep("a", 0), Ep("b", 0)]), KEYS).values())
    assert set(counts) == {"a", "b"}


def test_consistent_hash_replicas_and_weight_change_only_adds() -> None:
    b = ConsistentHash(replicas=40)
    p1 = b.picker([Ep("a", 1), Ep("b", 1)])
    assert len(p1._points) == 80
    before = _owners(p1, KEYS)
    p2 = b.picker([Ep("a", 2), Ep("b", 1)])
    assert len(p2._points) == 120
    after = _owners(p2, KEYS)
    # a gained points: keys only move b -> a
    assert all(before[k] == after[k] or after[k] == "a" for k in KEYS)
    assert sum(before[k] != after[k] for k in KEYS) > 1000


def test_consistent_hash_slots_rotate_and_keyless_round_robin() -> None:
    ready = [Ep("a", slot=0), Ep("a", slot=1), Ep("b")]
    p = ConsistentHash().picker(ready)
    key = next(k for k in KEYS if p.owner(k) == "a")
    slots = [p.pick("S.m", (), None, {"hash-key": key}).slot for _ in range(6)]
    assert sorted(slots) == [0, 0, 0, 1, 1, 1]
    # no key: round robin over everything
    seen = collections.Counter(id(p.pick("S.m")) for _ in range(300))
    assert sorted(seen.values()) == [100, 100, 100]


def test_consistent_hash_key_sources() -> None:
    ready = eps(*(f"s{i}" for i in range(5)))
    by_meta = ConsistentHash(metadata_key="user-id").picker(ready)
    by_arg = ConsistentHash(arg=0).picker(ready)
    by_kwarg = ConsistentHash(arg="user").picker(ready)
    by_fn = ConsistentHash(key=lambda m, a, kw, md: a[1]).picker(ready)
    for k in KEYS[:300]:
        home = by_meta.pick("S.m", (), None, {"user-id": k}).key
        assert by_arg.pick("S.m", (k,), None, None).key == home
        assert by_kwarg.pick("S.m", (), {"user": k}, None).key == home
        assert by_fn.pick("S.m", (0, k), None, None).key == home
    # ints hash as their text; bytes as they are
    assert by_arg.pick("S.m", (1234,)).key == by_arg.pick("S.m", ("1234",)).key
    assert by_arg.pick("S.m", (b"xyz",)).key == by_arg.pick("S.m", ("xyz",)).key
    # fallback chain: key() -> metadata -> arg
    chain = ConsistentHash(key=lambda *c: None, metadata_key="u", arg=0).picker(ready)
    assert chain.pick("S.m", ("k1",), None, {"u": "k2"}).key == by_arg.pick("S.m", ("k2",)).key
    assert chain.pick("S.m", ("k1",), None, {}).key == by_arg.pick("S.m", ("k1",)).key
    # no key at all (too few args, missing kwarg): round robin, not one server
    assert len({by_arg.pick("S.m", ()).key for _ in range(5)}) == 5
    assert len({by_kwarg.pick("S.m", (), {"other": 1}).key for _ in range(5)}) == 5


def test_consistent_hash_is_stable_across_processes() -> None:
    # pinned numbers: a change of hash function or point naming (or a salted
    # hash) fails here; every client of a service must lay the ring out alike
    from fastrpc.balancing.ring import hash64

    assert hash64(b"alice") == 5614559425216174729
    assert hash64(b"user-1") == 11145382709976293768
    p = ConsistentHash().picker(eps("a", "b", "c"))
    assert p._points[:3] == [2269758789777780, 69285102212693996, 127308145499596139]
    pinned = {"alice": "b", "bob": "b", "carol": "c", "dave": "a", "eve": "b", "42": "b", "k7": "c", "k8": "c"}
    assert {k: p.owner(k) for k in pinned} == pinned
    q = ConsistentHash().picker(eps("c", "a", "b"))
    assert {k: q.owner(k) for k in pinned} == pinned
    assert p.owner(42) == p.owner("42")


# -- routes -----------------------------------------------------------------------------


def _versions(picker: Any, n: int, metadata: dict | None = None) -> collections.Counter:
    return collections.Counter(picker.pick("S.m", (), None, metadata).version for _ in range(n))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_routes_share(seed: int) -> None:
    ready = [Ep("a", version="v1"), Ep("b", version="v1"), Ep("c", version="v2")]
    p = Routes([Route(share=0.1, version="v2")], seed=seed).picker(ready)
    counts = _versions(p, 10000)
    assert 900 <= counts["v2"] <= 1100, counts
    assert counts["v1"] == 10000 - counts["v2"]


def test_routes_share_unseeded() -> None:
    ready = [Ep("a", version="v1"), Ep("c", version="v2")]
    p = Routes([Route(share=0.25, version="v2")]).picker(ready)
    counts = _versions(p, 10000)
    assert 2250 <= counts["v2"] <= 2750, counts  # > 5 sd either side


def test_routes_chain_of_shares() -> None:
    ready = [Ep("a", version="v1"), Ep("b", version="v2"), Ep("c", version="v3")]
    p = Routes([Route(share=0.1, version="v2"), Route(share=0.5, version="v3")], seed=7).picker(ready)
    counts = _versions(p, 20000)
    # v3 gets half of the remaining 90%
    assert 1800 <= counts["v2"] <= 2200 and 8500 <= counts["v3"] <= 9500, counts


def test_routes_metadata() -> None:
    ready = [Ep("a", version="v1"), Ep("b", version="v1"), Ep("c", version="v2", tags={"canary": "1"})]
    p = Routes([Route(metadata={"tester": "yes", "team": "x"}, tags={"canary": "1"})]).picker(ready)
    assert _versions(p, 100, {"tester": "yes", "team": "x", "other": 1}) == {"v2": 100}
    assert _versions(p, 100, {"tester": "yes"}) == {"v1": 100}  # all items must match
    assert _versions(p, 100, {"tester": "no", "team": "x"}) == {"v1": 100}
    assert _versions(p, 100) == {"v1": 100}
    # the default set (a, b) still balances round robin
    assert collections.Counter(p.pick("S.m").key for _ in range(10)) == {"a": 5, "b": 5}


def test_routes_empty_selection_goes_to_default() -> None:
    ready = [Ep("a", version="v1"), Ep("b", version="v1")]
    p = Routes([Route(share=0.5, version="v2"), Route(metadata={"x": "1"}, version="v3")]).picker(ready)
    counts = collections.Counter(p.pick("S.m", (), None, {"x": "1"}).key for _ in range(1000))
    assert counts == {"a": 500, "b": 500}


def test_routes_tags_and_version_must_all_match() -> None:
    ready = [
        Ep("a", version="v2", tags={"zone": "east", "tier": "gold"}),
        Ep("b", version="v2", tags={"zone": "west", "tier": "gold"}),
        Ep("c", version="v1", tags={"zone": "east", "tier": "gold"}),
        Ep("d", version="v1"),
    ]
    r = Route(version="v2", tags={"zone": "east"})
    assert [e.key for e in ready if r.selects(e)] == ["a"]
    p = Routes([r]).picker(ready)  # no share, no metadata: takes every call
    assert {p.pick("S.m").key for _ in range(20)} == {"a"}
    p = Routes([Route(share=0.0, tags={"tier": "gold"})]).picker(ready)
    # a takes nothing, and its selection (a, b, c) is out of the default set
    assert {p.pick("S.m").key for _ in range(20)} == {"d"}


def test_routes_everything_selected_default_is_all() -> None:
    ready = [Ep("a", version="v2"), Ep("b", version="v2")]
    p = Routes([Route(share=0.0, version="v2")]).picker(ready)
    assert collections.Counter(p.pick("S.m").key for _ in range(10)) == {"a": 5, "b": 5}


def test_routes_inner_balancers_are_separate() -> None:
    r = Routes([Route(share=0.5, version="v2")], balancer="p2c")
    assert r.feedback is True
    assert Routes([Route(version="v2")]).feedback is False
    assert len({id(b) for b in r._inner}) == 2 and all(isinstance(b, P2C) for b in r._inner)
    template = ConsistentHash(metadata_key="u")
    r = Routes([Route(share=0.5, version="v2")], balancer=template)
    assert len({id(b) for b in r._inner}) == 2
    assert all(isinstance(b, ConsistentHash) and b.metadata_key == "u" for b in r._inner)
    inner = [b for b in r._inner if isinstance(b, ConsistentHash)]
    assert len(inner) == 2 and inner[0]._points is not inner[1]._points
    r = Routes([Route(version="v2")], balancer=Weighted)
    assert all(isinstance(b, Weighted) for b in r._inner)
    with pytest.raises(ValueError):
        Route(share=1.5)
    with pytest.raises(TypeError):
        Routes(["v2"])  # type: ignore[list-item]


def test_routes_with_weighted_inside() -> None:
    ready = [Ep("a", 3, version="v1"), Ep("b", 1, version="v1"), Ep("c", 1, version="v2")]
    p = Routes([Route(version="v2", metadata={"beta": "1"})], balancer="weighted").picker(ready)
    assert tally(p, 4000) == {"a": 3000, "b": 1000}


# -- outlier detection ------------------------------------------------------------------


def _fail(od: OutlierDetection, load: Load, loads: list[Load], now: float, times: int = 1) -> bool:
    ejected = False
    for _ in range(times):
        load.observe(0.01, ok=False, now=now)
        ejected = od.check(load, loads, now) or ejected
    return ejected


def test_outlier_counts() -> None:
    od = OutlierDetection()
    assert od.counts(None)  # a connection failure
    for code in (StatusCode.UNAVAILABLE, StatusCode.INTERNAL, StatusCode.UNKNOWN, StatusCode.DEADLINE_EXCEEDED, StatusCode.DATA_LOSS):
        assert od.counts(code) and od.counts(int(code))
    for code in (StatusCode.OK, StatusCode.NOT_FOUND, StatusCode.INVALID_ARGUMENT, StatusCode.PERMISSION_DENIED):
        assert not od.counts(code)
    assert OutlierDetection(failure_codes={StatusCode.NOT_FOUND}).counts(StatusCode.NOT_FOUND)


def test_outlier_consecutive_ejection_and_return() -> None:
    od = OutlierDetection(consecutive_failures=5, base_ejection_time=30.0)
    loads = [Load() for _ in range(10)]
    bad = loads[0]
    now = 100.0
    assert not _fail(od, bad, loads, now, 4)
    bad.observe(0.01, ok=True, now=now)  # a success resets the run
    assert not _fail(od, bad, loads, now, 4)
    assert _fail(od, bad, loads, now, 1)
    assert bad.ejected_until == 130.0 and bad.times_ejected == 1
    assert od.is_ejected(bad, now) and od.is_ejected(bad, 129.9) and not od.is_ejected(bad, 130.0)
    assert od.next_change(loads, now) == 130.0 and od.next_change(loads, 130.0) is None
    # failures of calls still in flight do not extend it
    assert not _fail(od, bad, loads, now + 1, 10)
    assert bad.ejected_until == 130.0
    # select() leaves it out until then
    endpoints = [Ep(f"s{i}", load=load) for i, load in enumerate(loads)]
    assert [e.key for e in od.select(endpoints, 120.0)] == [f"s{i}" for i in range(1, 10)]
    assert len(od.select(endpoints, 130.0)) == 10
    # the sweep after its time brings it back for good
    assert od.sweep(loads, 131.0) is True
    assert bad.ejected_until == 0.0 and bad.times_ejected == 1  # not lowered the sweep it returns
    assert od.sweep(loads, 141.0) is False
    assert bad.times_ejected == 0


def test_outlier_ejection_time_grows_and_caps() -> None:
    od = OutlierDetection(consecutive_failures=1, base_ejection_time=30.0, max_ejection_time=100.0, max_ejection_percent=100)
    loads = [Load(), Load()]
    bad = loads[0]
    now = 0.0
    lengths = []
    for _ in range(5):
        assert _fail(od, bad, loads, now)
        lengths.append(bad.ejected_until - now)
        now = bad.ejected_until  # back exactly then (no sweep in between)
    assert lengths == [30.0, 60.0, 90.0, 100.0, 100.0]
    assert bad.times_ejected == 5
    # max below base: base wins
    od = OutlierDetection(consecutive_failures=1, base_ejection_time=30.0, max_ejection_time=10.0, max_ejection_percent=100)
    load = Load()
    _fail(od, load, [load, Load()], 0.0)
    _fail(od, load, [load, Load()], 50.0)
    assert load.ejected_until == 80.0


def test_outlier_max_ejection_percent() -> None:
    od = OutlierDetection(consecutive_failures=1, max_ejection_percent=10)
    loads = [Load() for _ in range(3)]
    assert _fail(od, loads[0], loads, 1.0)  # 0% < 10%
    assert not _fail(od, loads[1], loads, 1.0)  # 33% >= 10%
    assert not od.is_ejected(loads[1], 1.0)
    od = OutlierDetection(consecutive_failures=1, max_ejection_percent=50)
    loads = [Load() for _ in range(4)]
    assert _fail(od, loads[0], loads, 1.0)  # 0%
    assert _fail(od, loads[1], loads, 1.0)  # 25%
    assert not _fail(od, loads[2], loads, 1.0)  # 50%
    assert od.next_change(loads, 1.0) == 31.0
    # all ejected (100%) possible: select() then keeps everyone
    od = OutlierDetection(consecutive_failures=1, max_ejection_percent=100)
    loads = [Load()]
    assert _fail(od, loads[0], loads, 1.0)
    assert len(od.select([Ep("a", load=loads[0])], 2.0)) == 1
    assert od.select([], 2.0) == []


def _interval(loads: list[Load], results: list[tuple], now: float) -> None:
    """Feed (calls, failures) per load, failures spread (no long runs)."""
    for load, (calls, failures) in zip(loads, results):
        fail_at = set(range(0, calls, max(1, calls // failures))[:failures]) if failures else set()
        for i in range(calls):
            load.observe(0.01, ok=i not in fail_at, now=now)


def test_outlier_failure_percentage() -> None:
    od = OutlierDetection(consecutive_failures=None, success_rate_stdev=None, failure_percentage=85, max_ejection_percent=50)
    loads = [Load() for _ in range(4)]
    _interval(loads, [(40, 0), (40, 2), (40, 34), (40, 33)], 5.0)  # 85% and 82.5%
    assert od.sweep(loads, 10.0) is True
    assert [od.is_ejected(x, 10.0) for x in loads] == [False, False, True, False]
    assert loads[2].ejected_until == 40.0
    assert all(x.calls == 0 and x.failures == 0 for x in loads)  # counts start over
    assert od.sweep(loads, 20.0) is False


def test_outlier_success_rate() -> None:
    od = OutlierDetection(consecutive_failures=None, failure_percentage=None, success_rate_stdev=1.9, max_ejection_percent=50)
    loads = [Load() for _ in range(10)]
    # nine at 99-100% success, one at 70%: far below mean - 1.9 sd
    _interval(loads, [(100, i % 2) for i in range(9)] + [(100, 30)], 5.0)
    assert od.sweep(loads, 10.0) is True
    assert [od.is_ejected(x, 10.0) for x in loads] == [False] * 9 + [True]
    # equal rates: nobody is an outlier
    loads = [Load() for _ in range(5)]
    _interval(loads, [(50, 5)] * 5, 5.0)
    assert od.sweep(loads, 10.0) is False
    assert not any(od.is_ejected(x, 10.0) for x in loads)
    # a mild spread: 95..99% success with stdev 1.9 ejects nobody either
    loads = [Load() for _ in range(5)]
    _interval(loads, [(100, f) for f in (1, 2, 3, 4, 5)], 5.0)
    assert od.sweep(loads, 10.0) is False


def test_outlier_min_hosts_and_min_requests() -> None:
    od = OutlierDetection(consecutive_failures=None, failure_percentage=50, success_rate_stdev=None, max_ejection_percent=100)
    # only two hosts with >= 20 calls: the rule does not run
    loads = [Load() for _ in range(4)]
    _interval(loads, [(20, 20), (30, 0), (19, 0), (5, 0)], 1.0)
    assert od.sweep(loads, 2.0) is False
    assert not any(od.is_ejected(x, 2.0) for x in loads)
    # three hosts with enough calls: it runs, and still skips one with 19
    _interval(loads, [(20, 20), (30, 0), (20, 0), (19, 19)], 3.0)
    assert od.sweep(loads, 4.0) is True
    assert [od.is_ejected(x, 4.0) for x in loads] == [True, False, False, False]
    # min_hosts=1: a lone bad server is ejected
    od = OutlierDetection(consecutive_failures=None, failure_percentage=50, success_rate_stdev=None, min_hosts=1, min_requests=5, max_ejection_percent=100)
    loads = [Load()]
    _interval(loads, [(5, 3)], 1.0)
    assert od.sweep(loads, 2.0) is True and od.is_ejected(loads[0], 2.0)


def test_outlier_sweep_cap_and_multiplier_decay() -> None:
    od = OutlierDetection(consecutive_failures=None, failure_percentage=80, success_rate_stdev=None, max_ejection_percent=30)
    loads = [Load() for _ in range(6)]
    _interval(loads, [(20, 20)] * 3 + [(20, 0)] * 3, 1.0)
    od.sweep(loads, 10.0)
    # 0/6, 1/6 = 16.7% < 30: two ejected; 2/6 = 33% stops the third
    assert sum(od.is_ejected(x, 10.0) for x in loads) == 2
    assert [x.times_ejected for x in loads] == [1, 1, 0, 0, 0, 0]
    # they come back at 40; the sweep at 40 does not lower their count...
    assert od.sweep(loads, 40.0) is True
    assert [x.times_ejected for x in loads] == [1, 1, 0, 0, 0, 0]
    # ...the next healthy one does
    assert od.sweep(loads, 50.0) is False
    assert [x.times_ejected for x in loads] == [0] * 6


def test_outlier_validation() -> None:
    with pytest.raises(ValueError):
        OutlierDetection(consecutive_failures=0)
    with pytest.raises(ValueError):
        OutlierDetection(max_ejection_percent=101)
    with pytest.raises(ValueError):
        OutlierDetection(failure_percentage=120)


# -- balancers are reusable across pickers -----------------------------------------------


@pytest.mark.parametrize("cls", [RoundRobin, Random, Weighted, P2C, ConsistentHash])
def test_rebuilds_follow_the_ready_set(cls: type) -> None:
    b: Balancer = cls()
    rng = random.Random(5)
    pool = [Ep(f"s{i}", weight=rng.randint(1, 3)) for i in range(8)]
    for _ in range(20):
        ready = rng.sample(pool, rng.randint(1, 8))
        p = b.picker(ready)
        picked = {id(p.pick("S.m", (), None, {"hash-key": str(i)})) for i in range(200)}
        assert picked <= {id(e) for e in ready}
        assert len(picked) >= min(2, len(ready))
