"""The ``dns://`` target: the servers a DNS name points to, looked up
again periodically (``docs/discovery.md``).

Targets (gRPC's naming)::

    dns:///NAME:PORT                  # the system's resolver (getaddrinfo)
    dns://DNSHOST[:DNSPORT]/NAME:PORT # ask that DNS server (an IP) directly

``NAME`` is a host name or an IP literal (IPv6 in brackets:
``dns:///[::1]:7000``); ``DNSPORT`` defaults to 53.  ``:PORT`` is needed
(fastrpc has no default port) unless ``NAME`` has SRV records, which carry
their own ports.

What is looked up:

* **SRV** (needs dnspython: ``pip install fastrpc[dns]``): the records of
  ``_fastrpc._tcp.NAME`` (the ``srv_service`` label, a parameter) are asked
  for first.  When there are some, the instances are the addresses of each
  record's target host at the record's port, weighted by the record's
  weight; only the records of the lowest (most preferred) priority are used
  -- the others are backups that DNS operators promote by changing the
  priorities, which the next look-up sees.  Without SRV records the
  A/AAAA records of ``NAME`` are used.  Names under ``localhost`` never go
  to DNS (RFC 6761), so they are never asked for SRV records.
* **A/AAAA**: with the system form, ``loop.getaddrinfo`` (``/etc/hosts``,
  search domains, whatever the system does; no dependency); with a DNS
  server named in the target, dnspython's resolver sends the A and AAAA
  questions to that server.

Each address becomes an :class:`~fastrpc.balancing.Instance` such as
``tcp://10.0.0.7:7000`` or ``tcp://[2001:db8::7]:7000``; the set is
deduplicated and sorted, so that the same answer is always the same set.

How it stays true:

* it looks the name up again every ``interval`` seconds, or sooner when
  the DNS answer's TTL is shorter (but not more often than once every
  :data:`TTL_FLOOR` seconds because of a TTL), and tells the client only
  when the set changed;
* :meth:`DnsResolver.refresh` looks it up now: the client calls it when it
  has reason to think the set is stale (every endpoint failing);
* when a look-up fails after a success -- DNS unreachable, a timeout, an
  error, *or an empty answer* (NXDOMAIN, no records) -- the last set is
  kept, a WARNING is logged once for the outage and an INFO when the name
  resolves again.  An empty answer is treated as a failure because a DNS
  blip (a zone being reloaded, a misconfigured secondary) must not leave a
  client with no servers at all: servers that are really gone fail their
  connections, and the balancer steers around them;
* when the first look-up fails, :meth:`DnsResolver.start` raises
  :class:`~fastrpc.Unavailable` with the reason: nothing is known yet.

dnspython is imported only when needed, so fastrpc installs without it;
without it ``dns:///`` targets use A/AAAA records only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
from typing import Any, NamedTuple

from ..balancing.base import Instance
from ..client.target import Resolver, Update
from ..errors import Unavailable
from ..transport.address import Address

__all__ = ["DEFAULT_SRV_SERVICE", "DnsResolver", "DnsTarget", "parse_dns_target"]

log = logging.getLogger("fastrpc.discovery")

#: the SRV label asked for first: ``_fastrpc._tcp.NAME``
DEFAULT_SRV_SERVICE = "_fastrpc._tcp"
#: shortest time between periodic look-ups that a short DNS TTL can cause,
#: seconds (the ``interval`` given is used as is)
TTL_FLOOR = 1.0
#: :meth:`DnsResolver.refresh` asks DNS at most once per this many seconds;
#: calls in between get the current set
REFRESH_FLOOR = 1.0

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")

_srv_hint_logged = False


class DnsTarget(NamedTuple):
    """A parsed ``dns://`` target: ``server`` is ``(ip, port)`` of the DNS
    server to ask, or None for the system's resolver; ``port`` is None
    when the target gives none (SRV records must then supply it)."""

    server: tuple[str, int] | None
    name: str
    port: int | None


class _Failure(Exception):
    """A look-up that gave nothing usable (the message says why)."""


def _port(text: str, what: str, target: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{target!r}: invalid {what} port {text!r}")
    n = int(text)
    if not 1 <= n <= 65535:
        raise ValueError(f"{target!r}: {what} port {n} out of range (1-65535)")
    return n


def _split_hostport(text: str, what: str, target: str) -> tuple[str, str | None]:
    """``host:port``, ``host``, ``[v6]:port`` or ``[v6]`` -> (host, port text or None)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{target!r}: unclosed '[' in the {what}")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{target!r}: {host!r} in brackets is not an IPv6 address") from None
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"{target!r}: expected ':PORT' after ']' in the {what}")
        return host, rest[1:]
    if text.count(":") > 1:
        raise ValueError(f"{target!r}: an IPv6 address in the {what} needs brackets ([::1]:PORT)")
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _check_name(name: str, target: str) -> str:
    if not name:
        raise ValueError(f"{target!r}: no host name (expected dns:///NAME:PORT)")
    if _is_ip(name):
        return name
    bare = name.removesuffix(".")
    if len(bare) > 253 or not bare or not all(_LABEL.match(label) for label in bare.split(".")):
        raise ValueError(f"{target!r}: {name!r} is not a valid host name")
    return bare


def parse_dns_target(target: str) -> DnsTarget:
    """``dns:///NAME[:PORT]`` or ``dns://DNSHOST[:DNSPORT]/NAME[:PORT]`` ->
    :class:`DnsTarget`; ValueError (saying what is wrong) for anything
    else.  ``DNSHOST`` must be an IP address (the DNS server cannot be
    found by name)."""
    if not isinstance(target, str) or not target.startswith("dns://"):
        raise ValueError(f"not a dns:// target: {target!r} (expected dns:///NAME:PORT)")
    rest = target[len("dns://"):]
    authority, sep, path = rest.partition("/")
    if not sep:
        raise ValueError(f"{target!r}: expected dns:///NAME:PORT (three slashes) or dns://DNSHOST/NAME:PORT")
    if any(c in path for c in "/?#@ ") or any(c in authority for c in "/?#@ "):
        raise ValueError(f"{target!r}: unexpected characters (expected dns:///NAME:PORT)")
    server: tuple[str, int] | None = None
    if authority:
        host, port_text = _split_hostport(authority, "DNS server", target)
        if not _is_ip(host):
            raise ValueError(f"{target!r}: the DNS server must be an IP address, not {host!r}")
        server = (host, 53 if port_text is None else _port(port_text, "DNS server", target))
    host, port_text = _split_hostport(path, "name", target)
    name = _check_name(host, target)
    return DnsTarget(server, name, None if port_text is None else _port(port_text, "target", target))


def _import_dns() -> Any:
    """dnspython's modules, or None when it is not installed."""
    try:
        import dns.asyncresolver
        import dns.exception
        import dns.name
        import dns.rdatatype
        import dns.resolver
    except ImportError:
        return None
    return dns


def _address(ip: str, port: int) -> str:
    return str(Address("tcp", ip, port, ""))


class DnsResolver(Resolver):
    """The servers ``target`` names in DNS (see the module's documentation).

    Parameters:
        target: ``dns:///NAME:PORT`` or ``dns://DNSHOST[:DNSPORT]/NAME:PORT``.
        interval: seconds between look-ups (a shorter DNS TTL shortens it,
            to no less than :data:`TTL_FLOOR`).
        timeout: seconds one look-up may take.
        srv_service: the SRV label looked up first (``_fastrpc._tcp`` asks
            for ``_fastrpc._tcp.NAME``); None or ``""`` never asks for SRV
            records.

    Raises ValueError for a malformed target, or one without a port when
    SRV records cannot supply it (no dnspython, or no ``srv_service``), and
    ImportError for the ``dns://DNSHOST/...`` form without dnspython.
    """

    def __init__(self, target: str, *, interval: float = 30.0, timeout: float = 5.0, srv_service: str | None = DEFAULT_SRV_SERVICE) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        self.target = target
        self.server, self.name, self.port = parse_dns_target(target)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.srv_service = (srv_service or "").strip(".")
        self._dns = _import_dns()
        if self.server is not None and self._dns is None:
            raise ImportError(f"{target}: asking a DNS server directly needs dnspython: pip install fastrpc[dns]")
        wants_srv = bool(self.srv_service) and not _is_ip(self.name) and not self._is_localhost()
        self._srv = wants_srv and self._dns is not None
        if self.port is None and not self._srv:
            why = " (SRV records, which carry ports, need dnspython: pip install fastrpc[dns])" if wants_srv else ""
            raise ValueError(f"{target!r}: no port: expected dns:///NAME:PORT{why}")
        if wants_srv and not self._srv:
            global _srv_hint_logged
            if not _srv_hint_logged:
                _srv_hint_logged = True
                log.debug("dns: SRV records are not looked up without dnspython (pip install fastrpc[dns]); using A/AAAA records")
        self._dns_resolver: Any = None  # dnspython's, made on first use
        self._update: Update | None = None
        self._instances: list[Instance] = []
        self._known = False  # a look-up has succeeded
        self._from_srv = False  # the current set came from SRV records
        self._failing = False  # in an outage (the WARNING was logged)
        self._ttl: float | None = None  # the last answer's smallest TTL
        self._task: asyncio.Task | None = None
        self._inflight: asyncio.Future | None = None
        self._last = float("-inf")  # monotonic time the last look-up ended
        self._closed = False

    def _is_localhost(self) -> bool:
        name = self.name.lower()
        return name == "localhost" or name.endswith(".localhost")

    # -- the Resolver interface ------------------------------------------

    async def start(self, update: Update) -> list[Instance]:
        if self._task is not None or self._closed:
            raise RuntimeError("a DnsResolver is started once")
        self._update = update
        try:
            self._instances, self._from_srv = await self._resolve()
        except _Failure as exc:
            raise Unavailable(f"dns: cannot resolve {self.name}: {exc}") from None
        self._known = True
        self._last = time.monotonic()
        self._task = asyncio.ensure_future(self._watch())
        return list(self._instances)

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        for t in (task, self._inflight):
            if t is not None and not t.done():
                t.cancel()
                try:
                    await t
                except asyncio.CancelledError:
                    pass

    async def refresh(self) -> list[Instance]:
        """Look the name up now (calling ``update`` if the set changed) and
        return the current set.  For a client that has reason to think its
        set is stale, such as every endpoint failing: concurrent calls share
        one look-up, and a call within :data:`REFRESH_FLOOR` seconds of the
        last look-up returns the current set without asking DNS, so a storm
        of failing calls cannot flood the DNS server.  It never raises for
        a failed look-up: the last set is kept (and logged) as in the
        background."""
        if not self._known:
            raise RuntimeError("refresh() before start()")
        if self._closed:
            return list(self._instances)
        if self._inflight is not None or time.monotonic() - self._last >= REFRESH_FLOOR:
            await asyncio.shield(self._lookup())
        return list(self._instances)

    def _lookup(self) -> asyncio.Future:
        """The look-up under way, or a new one: never two at once."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._once())
            self._inflight.add_done_callback(self._lookup_done)
        return self._inflight

    def _lookup_done(self, fut: asyncio.Future) -> None:
        if self._inflight is fut:
            self._inflight = None
        if not fut.cancelled():
            fut.exception()  # retrieved: _once logs its own failures

    @property
    def instances(self) -> list[Instance]:
        """The current set (the last one a look-up found)."""
        return list(self._instances)

    def __repr__(self) -> str:
        return f"<DnsResolver {self.target} {[i.address for i in self._instances]}>"

    # -- the watch ---------------------------------------------------------

    def _delay(self) -> float:
        if self._ttl is not None and self._ttl < self.interval:
            return max(TTL_FLOOR, self._ttl)
        return self.interval

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._delay())
            await asyncio.shield(self._lookup())

    async def _once(self) -> None:
        """One look-up: the new set to the client if it changed, else the
        last set kept (and the outage logged)."""
        try:
            found, from_srv = await self._resolve()
        except Exception as exc:  # _Failure, or a surprise: the watch goes on
            self._last = time.monotonic()
            if not isinstance(exc, _Failure):
                log.debug("dns: looking up %s failed", self.name, exc_info=True)
                exc = _Failure(f"{type(exc).__name__}: {exc}")
            if not self._failing:
                self._failing = True
                log.warning("dns: cannot resolve %s (%s); keeping the last %d addresses", self.name, exc, len(self._instances))
            return
        self._last = time.monotonic()
        if self._failing:
            self._failing = False
            log.info("dns: %s resolves again (%d addresses)", self.name, len(found))
        self._from_srv = from_srv
        if found == self._instances or self._closed:
            return
        self._instances = found
        log.debug("dns: %s now resolves to %s", self.name, [i.address for i in found])
        if self._update is not None:
            try:
                self._update(list(found))
            except Exception:  # the client's bug must not stop the watch
                log.exception("dns: the update callback failed")

    # -- look-ups ----------------------------------------------------------

    async def _resolve(self) -> tuple[list[Instance], bool]:
        """The instances the name has now and whether SRV records gave them;
        :class:`_Failure` when there are none or DNS cannot say."""
        self._ttl = None
        if _is_ip(self.name):
            assert self.port is not None
            return [Instance(_address(self.name, self.port))], False
        if self._srv:
            records = await self._lookup_srv()
            if records is not None:
                return await self._srv_instances(records), True
        if self.port is None:
            raise _Failure(f"no SRV records for {self._srv_name()} and the target gives no port")
        addresses = await self._lookup_addresses(self.name, self.port)
        if not addresses:
            raise _Failure("no A/AAAA records")
        return [Instance(a) for a in sorted(addresses)], False

    def _srv_name(self) -> str:
        return f"{self.srv_service}.{self.name}"

    def _resolver(self) -> Any:
        if self._dns_resolver is None:
            dns = self._dns
            if self.server is not None:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = [self.server[0]]
                r.port = self.server[1]
            else:
                r = dns.asyncresolver.Resolver()  # /etc/resolv.conf
            r.lifetime = self.timeout
            r.timeout = self.timeout
            self._dns_resolver = r
        return self._dns_resolver

    def _note_ttl(self, answer: Any) -> None:
        rrset = getattr(answer, "rrset", None)
        if rrset is not None:
            ttl = float(rrset.ttl)
            self._ttl = ttl if self._ttl is None else min(self._ttl, ttl)

    async def _query(self, name: str, rdtype: str) -> Any:
        """dnspython's answer (None for NXDOMAIN or no records of that type);
        :class:`_Failure` when the DNS server cannot be asked."""
        dns = self._dns
        try:
            resolver = self._resolver()
            qname = dns.name.from_text(name)
            answer = await resolver.resolve(qname, rdtype, search=self.server is None, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.resolver.NoResolverConfiguration as exc:
            raise _Failure(f"no DNS resolver configured: {exc}") from None
        except dns.exception.Timeout:
            raise _Failure(f"{rdtype} query timed out after {self.timeout:g}s") from None
        except dns.exception.DNSException as exc:
            raise _Failure(f"{rdtype} query failed: {exc}") from None
        except OSError as exc:
            raise _Failure(f"{rdtype} query failed: {exc}") from None
        if answer.rrset is None:
            return None
        self._note_ttl(answer)
        return answer

    async def _lookup_srv(self) -> list[tuple[int, int, int, str]] | None:
        """``[(priority, weight, port, host)]`` of the SRV records, or None
        when there are none.  When the current set came from SRV records, a
        failed query fails the look-up (the set is kept); otherwise it falls
        back to A/AAAA records, so a DNS server that does not answer SRV
        questions still resolves the name."""
        try:
            answer = await self._query(self._srv_name(), "SRV")
        except _Failure:
            if self._from_srv:
                raise
            log.debug("dns: SRV look-up of %s failed; using A/AAAA records", self._srv_name(), exc_info=True)
            return None
        if answer is None:
            return None
        records = []
        for rr in answer.rrset:
            host = rr.target.to_text(omit_final_dot=True)
            if host in ("", "."):  # "." : the service is decidedly not available here (RFC 2782)
                continue
            records.append((int(rr.priority), int(rr.weight), int(rr.port), host))
        if not records:
            raise _Failure(f"the SRV records of {self._srv_name()} say the service is not available")
        return records

    async def _srv_instances(self, records: list[tuple[int, int, int, str]]) -> list[Instance]:
        best = min(r[0] for r in records)
        group = [r for r in records if r[0] == best]
        lookups = await asyncio.gather(*(self._lookup_addresses(host, port) for _, _, port, host in group), return_exceptions=True)
        weights: dict[str, int] = {}
        errors = []
        for (_, weight, port, host), result in zip(group, lookups):
            if isinstance(result, BaseException):
                if not isinstance(result, _Failure):
                    raise result
                errors.append(f"{host}: {result}")
                continue
            for address in result:  # one address under several records: the largest weight
                weights[address] = max(weight, weights.get(address, 0))
        if not weights:
            detail = "; ".join(errors) or "no A/AAAA records"
            raise _Failure(f"no addresses for the SRV targets of {self._srv_name()} ({detail})")
        if errors:
            log.debug("dns: some SRV targets of %s did not resolve: %s", self._srv_name(), "; ".join(errors))
        return [Instance(a, w) for a, w in sorted(weights.items())]

    async def _lookup_addresses(self, host: str, port: int) -> list[str]:
        """The ``tcp://`` addresses of ``host``'s A/AAAA records at ``port``
        (maybe none); :class:`_Failure` when they cannot be known."""
        if _is_ip(host):
            return [_address(host, port)]
        if self.server is None:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.timeout)
            except asyncio.TimeoutError:
                raise _Failure(f"getaddrinfo timed out after {self.timeout:g}s") from None
            except OSError as exc:  # socket.gaierror among them
                raise _Failure(str(exc)) from None
            found = {
                _address(str(sockaddr[0]), port)
                for family, _, _, _, sockaddr in infos
                if family in (socket.AF_INET, socket.AF_INET6)
            }
            return sorted(found)
        # both questions must be answered (records or none): a set from one
        # of them only would flap with a server that drops some questions
        answers = await asyncio.gather(self._query(host, "A"), self._query(host, "AAAA"), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return sorted({_address(rr.address, port) for answer in answers if answer is not None for rr in answer.rrset})
