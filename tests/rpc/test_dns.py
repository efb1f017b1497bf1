"""The ``dns://`` resolver: parsing targets, the system's resolver
(``localhost``), and a DNS server of our own on loopback (answering A, AAAA
and SRV questions from a dict the tests change) for changes, SRV records,
outages, NXDOMAIN and a first look-up that fails."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from fastrpc import Unavailable
from fastrpc.balancing import Instance
from fastrpc.client.target import RESOLVERS, resolver_for
from fastrpc.discovery import DnsResolver, parse_dns_target
from fastrpc.discovery import dns as dnsmod

#: bounded waits: a change must show within this many seconds
WAIT = 5.0


# -- parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, server, name, port",
    [
        ("dns:///svc.example:7000", None, "svc.example", 7000),
        ("dns:///svc.example.:7000", None, "svc.example", 7000),
        ("dns:///localhost:1", None, "localhost", 1),
        ("dns:///svc_1.example", None, "svc_1.example", None),
        ("dns:///10.0.0.1:7000", None, "10.0.0.1", 7000),
        ("dns:///[::1]:7000", None, "::1", 7000),
        ("dns://8.8.8.8/svc.example:7000", ("8.8.8.8", 53), "svc.example", 7000),
        ("dns://127.0.0.1:5353/svc.example:7000", ("127.0.0.1", 5353), "svc.example", 7000),
        ("dns://[::1]:5353/svc.example:65535", ("::1", 5353), "svc.example", 65535),
        ("dns://[2001:db8::1]/[2001:db8::2]:80", ("2001:db8::1", 53), "2001:db8::2", 80),
    ],
)
def test_parse_good_targets(target, server, name, port):
    assert parse_dns_target(target) == (server, name, port)


@pytest.mark.parametrize(
    "target, says",
    [
        ("svc.example:7000", "not a dns:// target"),
        ("dns:svc.example:7000", "not a dns:// target"),
        ("dns://svc.example:7000", "three slashes"),
        ("dns:///", "no host name"),
        ("dns:///:7000", "no host name"),
        ("dns:///svc.example:", "invalid target port"),
        ("dns:///svc.example:http", "invalid target port"),
        ("dns:///svc.example:0", "out of range"),
        ("dns:///svc.example:70000", "out of range"),
        ("dns:///svc..example:7000", "not a valid host name"),
        ("dns:///-svc.example:7000", "not a valid host name"),
        ("dns:///svc example:7000", "unexpected characters"),
        ("dns:///svc.example:7000/x", "unexpected characters"),
        ("dns:///svc.example:7000?a=b", "unexpected characters"),
        ("dns:///::1:7000", "needs brackets"),
        ("dns:///[::1:7000", "unclosed"),
        ("dns:///[::1]7000", "expected ':PORT'"),
        ("dns:///[example]:7000", "not an IPv6 address"),
        ("dns://dns.example/svc.example:7000", "must be an IP address"),
        ("dns://127.0.0.1:x/svc.example:7000", "invalid DNS server port"),
        ("dns://user@127.0.0.1/svc.example:7000", "unexpected characters"),
    ],
)
def test_parse_bad_targets(target, says):
    with pytest.raises(ValueError, match=says.replace("?", r"\?").replace("(", r"\(")):
        parse_dns_target(target)


def test_constructor_checks():
    with pytest.raises(ValueError, match="no port"):
        DnsResolver("dns:///localhost")  # no SRV look-ups for localhost
    with pytest.raises(ValueError, match="no port"):
        DnsResolver("dns:///svc.example", srv_service=None)
    with pytest.raises(ValueError, match="interval"):
        DnsResolver("dns:///localhost:1", interval=0)
    with pytest.raises(ValueError, match="timeout"):
        DnsResolver("dns:///localhost:1", timeout=-1)


def test_without_dnspython(monkeypatch):
    monkeypatch.setattr(dnsmod, "_import_dns", lambda: None)
    with pytest.raises(ImportError, match=r"fastrpc\[dns\]"):
        DnsResolver("dns://127.0.0.1/svc.example:7000")
    with pytest.raises(ValueError, match=r"no port.*fastrpc\[dns\]"):
        DnsResolver("dns:///svc.example")
    r = DnsResolver("dns:///svc.example:7000")  # A/AAAA records only
    assert not r._srv


def test_the_scheme_is_registered():
    assert "dns" in RESOLVERS
    r = resolver_for("dns:///localhost:7000")
    assert isinstance(r, DnsResolver) and r.name == "localhost" and r.port == 7000


# -- the system's resolver ------------------------------------------------------


def test_localhost_through_getaddrinfo(run):
    async def main():
        r = DnsResolver("dns:///localhost:7001", interval=60)
        try:
            found = await asyncio.wait_for(r.start(lambda _: None), WAIT)
        finally:
            await r.close()
        addresses = [i.address for i in found]
        assert "tcp://127.0.0.1:7001" in addresses
        assert set(addresses) <= {"tcp://127.0.0.1:7001", "tcp://[::1]:7001"}  # ::1 if /etc/hosts has it
        assert addresses == sorted(set(addresses))

    run(main())


def test_ip_literals_need_no_dns(run):
    async def main():
        for target, address in (("dns:///127.0.0.1:7002", "tcp://127.0.0.1:7002"), ("dns:///[::1]:7002", "tcp://[::1]:7002")):
            r = DnsResolver(target)
            try:
                assert await r.start(lambda _: None) == [Instance(address)]
            finally:
                await r.close()

    run(main())


def test_unknown_name_fails_the_start(run):
    async def main():
        r = DnsResolver("dns:///no-such-host.invalid:7000", timeout=3, srv_service=None)
        try:
            with pytest.raises(Unavailable, match="no-such-host.invalid"):
                await asyncio.wait_for(r.start(lambda _: None), WAIT)
        finally:
            await r.close()

    run(main())


# -- a DNS server of our own ------------------------------------------------------


class DnsServer(asyncio.DatagramProtocol):
    """An authoritative DNS server on 127.0.0.1 (UDP), answering from
    ``records``: ``{name: {type: [rdata text]}}`` (names without the final
    dot).  A name not there is NXDOMAIN; a type not there is an empty
    answer.  ``drop`` makes it ignore questions (a server that is down)."""

    def __init__(self, ttl: int = 300) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        self._message, self._rcode, self._rrset = dns.message, dns.rcode, dns.rrset
        self.ttl = ttl
        self.records: dict[str, dict[str, list[str]]] = {}
        self.drop = False
        self.questions: list[tuple[str, str]] = []
        self.transport: Any = None
        self.port = 0

    async def start(self) -> DnsServer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def target(self, name_port: str) -> str:
        return f"dns://127.0.0.1:{self.port}/{name_port}"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            query = self._message.from_wire(data)
        except Exception:  # noqa: BLE001 - not for us
            return
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = {1: "A", 28: "AAAA", 33: "SRV"}.get(int(question.rdtype), str(question.rdtype))
        self.questions.append((name, rdtype))
        if self.drop:
            return
        response = self._message.make_response(query)
        response.flags |= 0x0400  # AA: authoritative
        known = self.records.get(name)
        if known is None:
            response.set_rcode(self._rcode.NXDOMAIN)
        elif known.get(rdtype):
            response.answer.append(self._rrset.from_text(question.name, self.ttl, "IN", rdtype, *known[rdtype]))
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
def dns_server(run):
    """Runs ``body(server)`` on a fresh loop with a :class:`DnsServer`
    started (and closed after, on that loop): ``dns_server(main)``."""
    pytest.importorskip("dns.asyncresolver", reason="dnspython is not installed (pip install fastrpc[dns])")

    def serve(body: Any, ttl: int = 300) -> None:
        async def main() -> None:
            server = await DnsServer(ttl).start()
            try:
                await body(server)
            finally:
                server.close()
                await asyncio.sleep(0.01)  # the transport closes on the next turns of the loop

        run(main())

    return serve


class Updates:
    """The resolver's ``update`` callback: records each set it is given."""

    def __init__(self) -> None:
        self.sets: list[list[str]] = []
        self.instances: list[list[Instance]] = []
        self.event = asyncio.Event()

    def __call__(self, instances: list[Instance]) -> None:
        self.instances.append(instances)
        self.sets.append([i.address for i in instances])
        self.event.set()

    async def next(self, timeout: float = WAIT) -> list[str]:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        return self.sets[-1]


def _addresses(instances: list[Instance]) -> list[str]:
    return [i.address for i in instances]


def test_a_and_aaaa_records(dns_server):
    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.0.2", "10.0.0.1", "10.0.0.2"], "AAAA": ["2001:db8::1"]}
        r = DnsResolver(server.target("svc.test:7000"), interval=60, timeout=2)
        try:
            found = await r.start(Updates())
        finally:
            await r.close()
        assert _addresses(found) == ["tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000", "tcp://[2001:db8::1]:7000"]
        assert all(i.weight == 1 for i in found)
        assert ("_fastrpc._tcp.svc.test", "SRV") in server.questions  # SRV asked first, none there

    dns_server(main)


def test_a_change_is_seen_within_the_interval(dns_server):
    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.0.1"]}
        updates = Updates()
        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=2)
        try:
            assert _addresses(await r.start(updates)) == ["tcp://10.0.0.1:7000"]
            await asyncio.sleep(0.6)  # the same answer: no update
            assert updates.sets == []
            server.records["svc.test"] = {"A": ["10.0.0.1", "10.0.0.3"]}
            assert await updates.next() == ["tcp://10.0.0.1:7000", "tcp://10.0.0.3:7000"]
            server.records["svc.test"] = {"AAAA": ["2001:db8::9"]}
            assert await updates.next() == ["tcp://[2001:db8::9]:7000"]
        finally:
            await r.close()
        count = len(updates.sets)
        await asyncio.sleep(0.5)  # closed: no more look-ups, no more updates
        assert len(updates.sets) == count

    dns_server(main)


def test_srv_records_give_ports_and_weights(dns_server):
    async def main(server):
        server.records["_fastrpc._tcp.svc.test"] = {"SRV": ["10 5 7001 a.svc.test.", "10 20 7002 b.svc.test."]}
        server.records["a.svc.test"] = {"A": ["10.0.1.1"]}
        server.records["b.svc.test"] = {"A": ["10.0.1.2"], "AAAA": ["2001:db8::2"]}
        server.records["svc.test"] = {"A": ["10.9.9.9"]}  # not used: SRV records win
        r = DnsResolver(server.target("svc.test"), interval=60, timeout=2)  # no port: SRV gives them
        try:
            found = await r.start(Updates())
        finally:
            await r.close()
        assert [(i.address, i.weight) for i in found] == [
            ("tcp://10.0.1.1:7001", 5),
            ("tcp://10.0.1.2:7002", 20),
            ("tcp://[2001:db8::2]:7002", 20),
        ]

    dns_server(main)


def test_only_the_lowest_srv_priority_is_used(dns_server):
    async def main(server):
        server.records["_fastrpc._tcp.svc.test"] = {"SRV": ["20 1 7001 backup.svc.test.", "10 1 7000 main.svc.test."]}
        server.records["main.svc.test"] = {"A": ["10.0.2.1"]}
        server.records["backup.svc.test"] = {"A": ["10.0.2.2"]}
        updates = Updates()
        r = DnsResolver(server.target("svc.test:9999"), interval=0.2, timeout=2)
        try:
            assert _addresses(await r.start(updates)) == ["tcp://10.0.2.1:7000"]
            # the operators promote the backup
            server.records["_fastrpc._tcp.svc.test"] = {"SRV": ["20 1 7000 main.svc.test.", "10 1 7001 backup.svc.test."]}
            assert await updates.next() == ["tcp://10.0.2.2:7001"]
        finally:
            await r.close()

    dns_server(main)


def test_custom_srv_label_and_fallback_to_a_records(dns_server):
    async def main(server):
        server.records["_rpc._tcp.svc.test"] = {"SRV": ["0 3 7005 svc.test."]}
        server.records["svc.test"] = {"A": ["10.0.3.1"]}
        r = DnsResolver(server.target("svc.test:7000"), interval=60, timeout=2, srv_service="_rpc._tcp")
        s = DnsResolver(server.target("svc.test:7000"), interval=60, timeout=2)  # _fastrpc._tcp: none
        try:
            assert [(i.address, i.weight) for i in await r.start(Updates())] == [("tcp://10.0.3.1:7005", 3)]
            assert [(i.address, i.weight) for i in await s.start(Updates())] == [("tcp://10.0.3.1:7000", 1)]
        finally:
            await r.close()
            await s.close()

    dns_server(main)


def _warnings(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fastrpc.discovery" and r.levelno == logging.WARNING]


def _infos(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fastrpc.discovery" and r.levelno == logging.INFO]


async def _until(predicate: Any, timeout: float = WAIT) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


def test_an_outage_keeps_the_last_set_and_says_so_once(dns_server, caplog):
    caplog.set_level(logging.INFO, logger="fastrpc.discovery")

    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.4.1", "10.0.4.2"]}
        updates = Updates()
        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=0.3)
        try:
            first = await r.start(updates)
            server.drop = True
            asked = len(server.questions)
            await _until(lambda: len(server.questions) > asked + 6)  # several look-ups time out
            await asyncio.sleep(0.5)
            assert updates.sets == []
            assert await r.refresh() == first  # refresh() keeps the set too
            warnings = _warnings(caplog)
            assert len(warnings) == 1, warnings
            assert "cannot resolve svc.test" in warnings[0] and "keeping the last 2 addresses" in warnings[0]
            # it comes back with the same records: no update, one INFO
            server.drop = False
            await _until(lambda: any("resolves again" in m for m in _infos(caplog)))
            assert updates.sets == []
            # and changes are seen again
            server.records["svc.test"] = {"A": ["10.0.4.3"]}
            assert await updates.next() == ["tcp://10.0.4.3:7000"]
            # a second outage: a second WARNING
            server.drop = True
            await _until(lambda: len(_warnings(caplog)) == 2)
            assert "keeping the last 1 addresses" in _warnings(caplog)[1]
        finally:
            await r.close()

    dns_server(main)


def test_a_server_that_is_gone_keeps_the_last_set(dns_server, caplog):
    caplog.set_level(logging.INFO, logger="fastrpc.discovery")

    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.5.1"]}
        updates = Updates()
        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=0.3)
        try:
            await r.start(updates)
            server.close()  # nothing listens on the port any more
            await _until(lambda: len(_warnings(caplog)) == 1)
            await asyncio.sleep(0.8)
            assert updates.sets == [] and len(_warnings(caplog)) == 1
            assert _addresses(r.instances) == ["tcp://10.0.5.1:7000"]
        finally:
            await r.close()

    dns_server(main)


def test_nxdomain_after_success_keeps_the_last_set(dns_server, caplog):
    caplog.set_level(logging.INFO, logger="fastrpc.discovery")

    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.6.1"]}
        updates = Updates()
        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=2)
        try:
            await r.start(updates)
            del server.records["svc.test"]  # NXDOMAIN
            await _until(lambda: len(_warnings(caplog)) == 1)
            assert "no A/AAAA records" in _warnings(caplog)[0]
            server.records["svc.test"] = {}  # the name, no records
            await asyncio.sleep(0.6)
            assert updates.sets == [] and len(_warnings(caplog)) == 1
            assert _addresses(r.instances) == ["tcp://10.0.6.1:7000"]
            server.records["svc.test"] = {"A": ["10.0.6.2"]}
            assert await updates.next() == ["tcp://10.0.6.2:7000"]
            assert any("resolves again" in m for m in _infos(caplog))
        finally:
            await r.close()

    dns_server(main)


def test_a_first_look_up_that_fails_raises_unavailable(dns_server):
    async def main(server):
        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=2)
        with pytest.raises(Unavailable, match="cannot resolve svc.test: no A/AAAA records"):
            await r.start(Updates())
        await r.close()
        # no SRV records and no port: nothing to connect to
        server.records["svc.test"] = {"A": ["10.0.7.1"]}
        r = DnsResolver(server.target("svc.test"), interval=0.2, timeout=2)
        with pytest.raises(Unavailable, match="no SRV records .* no port"):
            await r.start(Updates())
        await r.close()
        # a server that does not answer
        server.drop = True
        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=0.3)
        with pytest.raises(Unavailable, match="timed out"):
            await asyncio.wait_for(r.start(Updates()), WAIT)
        await r.close()

    dns_server(main)


def test_refresh_and_short_ttls(dns_server, monkeypatch):
    monkeypatch.setattr(dnsmod, "TTL_FLOOR", 0.1)
    monkeypatch.setattr(dnsmod, "REFRESH_FLOOR", 0.0)

    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.8.1"]}
        updates = Updates()
        r = DnsResolver(server.target("svc.test:7000"), interval=60, timeout=2)
        try:
            await r.start(updates)
            server.records["svc.test"] = {"A": ["10.0.8.2"]}
            # refresh() looks it up now, and concurrent calls share one look-up
            asked = len(server.questions)
            results = await asyncio.gather(*(r.refresh() for _ in range(5)))
            assert all(_addresses(x) == ["tcp://10.0.8.2:7000"] for x in results)
            assert len(server.questions) - asked == 3  # SRV, A, AAAA: once
            assert updates.sets == [["tcp://10.0.8.2:7000"]]
        finally:
            await r.close()

        # a TTL shorter than the interval shortens it (down to TTL_FLOOR)
        server.ttl = 0
        r = DnsResolver(server.target("svc.test:7000"), interval=60, timeout=2)
        updates = Updates()
        try:
            await r.start(updates)
            server.records["svc.test"] = {"A": ["10.0.8.3"]}
            assert await updates.next() == ["tcp://10.0.8.3:7000"]
        finally:
            await r.close()

    dns_server(main)


def test_refresh_is_rate_limited(dns_server):
    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.9.1"]}
        r = DnsResolver(server.target("svc.test:7000"), interval=60, timeout=2)
        try:
            await r.start(Updates())
            asked = len(server.questions)
            server.records["svc.test"] = {"A": ["10.0.9.2"]}
            assert _addresses(await r.refresh()) == ["tcp://10.0.9.1:7000"]  # within REFRESH_FLOOR of start
            assert len(server.questions) == asked
        finally:
            await r.close()

    dns_server(main)


def test_update_callback_errors_do_not_stop_the_watch(dns_server, caplog):
    async def main(server):
        server.records["svc.test"] = {"A": ["10.0.10.1"]}
        seen: list[list[str] | None] = []

        def update(instances: list[Instance]) -> None:
            seen.append(_addresses(instances))
            raise RuntimeError("a bug in the client")

        r = DnsResolver(server.target("svc.test:7000"), interval=0.2, timeout=2)
        try:
            await r.start(update)
            server.records["svc.test"] = {"A": ["10.0.10.2"]}
            await _until(lambda: len(seen) == 1)
            server.records["svc.test"] = {"A": ["10.0.10.3"]}
            await _until(lambda: len(seen) == 2)
        finally:
            await r.close()
        assert seen == [["tcp://10.0.10.2:7000"], ["tcp://10.0.10.3:7000"]]

    dns_server(main)
