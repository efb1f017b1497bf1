"""A service registry in etcd v3 (``pip install fastrpc[etcd]``: the
``aetcd`` asyncio client), with heartbeats.

Usage::

    server = fastrpc.Server(registry="etcd://127.0.0.1:2379", name="arith", version="v1")

or with an object (its own prefix, TTL)::

    server = fastrpc.Server(registry=EtcdRegistry("127.0.0.1:2379", ttl=5), name="arith")

How it stays true (``docs/discovery.md``):

* registering grants a lease of ``ttl`` seconds (default 10) and puts the
  record under it: if the process dies, etcd deletes the record when the
  lease expires, within ``ttl``;
* a heartbeat task refreshes the lease every ``ttl / 3`` seconds;
* a lease that is gone (etcd restarted without its data, a partition
  longer than the TTL, someone revoked it) is seen at the next refresh
  (etcd answers TTL 0) and the record is registered again at once, under
  a new lease: an instance never silently drops out of the registry
  while it runs (the bug rpcx, go-zero and Kitex's registries each had);
* while etcd cannot be reached the heartbeat keeps trying (every second,
  and says so in the log once), and registers again when it is back;
* deregistering (the server does it before it drains) revokes the lease:
  the record goes at once, and clients stop sending new calls.

The client (``aetcd``) is imported only when a registry is made, so
fastrpc installs without it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..balancing.base import Instance
from ..client.target import Resolver
from ..errors import Unavailable
from .record import DEFAULT_PREFIX, ServiceRecord

__all__ = ["EtcdRegistry", "EtcdResolver", "parse_etcd_url"]

log = logging.getLogger("fastrpc.discovery")


async def _close(client: Any) -> None:
    # Close an aetcd client (or None), never raising: a broken connection
    # is being dropped anyway.
    if client is not None:
        try:
            await client.close()
        except Exception:  # noqa: BLE001 - closing anyway
            pass


def parse_etcd_url(url: str) -> Tuple[str, int, str]:
    """``etcd://host:port[/name]`` -> ``(host, port, name)`` (name may be "")."""
    if not url.startswith("etcd://"):
        raise ValueError(f"not an etcd:// URL: {url!r}")
    rest = url[len("etcd://"):]
    hostport, _, name = rest.partition("/")
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, "2379"
    host = host.strip("[]") or "127.0.0.1"
    try:
        port_n = int(port)
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    return host, port_n, name.strip("/")


class EtcdRegistry:
    """Registers server instances in etcd and keeps them there (see the
    module's documentation).

    Parameters:
        endpoint: ``host:port`` or an ``etcd://host:port`` URL.
        ttl: the lease's time to live, seconds (an instance that dies is
            gone from the registry within it).
        prefix: where records live (``<prefix>/<name>/<id>``).
        timeout: seconds each etcd request may take.
    """

    def __init__(self, endpoint: str = "127.0.0.1:2379", *, ttl: int = 10, prefix: str = DEFAULT_PREFIX, timeout: float = 5.0) -> None:
        if ttl < 2:
            raise ValueError("ttl must be >= 2 seconds")
        if endpoint.startswith("etcd://"):
            host, port, _ = parse_etcd_url(endpoint)
        else:
            host, _, p = endpoint.rpartition(":")
            host, port = host.strip("[]") or "127.0.0.1", int(p)
        try:
            import aetcd
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ImportError("the etcd registry needs aetcd: pip install fastrpc[etcd]") from exc
        self._aetcd = aetcd
        self.host, self.port = host, port
        self.ttl = int(ttl)
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self._client: Any = None
        self._record: Optional[ServiceRecord] = None
        self._lease_id: Optional[int] = None
        self._heartbeat: Optional["asyncio.Task[None]"] = None
        #: how many times the record was registered again after a lost lease
        self.reregistered = 0

    def __repr__(self) -> str:
        return f"EtcdRegistry(etcd://{self.host}:{self.port}, ttl={self.ttl}, prefix={self.prefix!r})"

    async def _connected(self) -> Any:
        if self._client is None:
            client = self._aetcd.Client(self.host, self.port, timeout=int(self.timeout) or 1)
            await asyncio.wait_for(client.connect(), self.timeout)
            self._client = client
        return self._client

    async def _put(self) -> None:
        # A new lease, and the record under it.
        client = await self._connected()
        record = self._record
        assert record is not None
        lease = await asyncio.wait_for(client.lease(self.ttl), self.timeout)
        await asyncio.wait_for(client.put(record.key(self.prefix).encode(), record.to_json(), lease=lease), self.timeout)
        self._lease_id = lease.id

    # -- what a server calls -----------------------------------------------------------

    async def register(self, record: Optional[ServiceRecord] = None, **fields: Any) -> ServiceRecord:
        """Put ``record`` (or one made from ``fields``: ``name``,
        ``address``, ``weight``, ``version``, ``tags``, ``metadata``) in
        etcd under a lease and keep it there until :meth:`deregister`;
        return it.  Raises if etcd cannot be reached now: a server that was
        told to register does not start silently unlisted."""
        if record is None:
            record = ServiceRecord(fields.pop("name"), fields.pop("address"), **fields)
        if self._record is not None:
            raise RuntimeError("this registry already holds a record (one per server)")
        self._record = record
        try:
            await self._put()
        except BaseException:
            self._record = None
            raise
        log.info("registered %s as %s (lease %x, ttl %ss)", record.address, record.key(self.prefix), self._lease_id, self.ttl)
        self._heartbeat = asyncio.ensure_future(self._beat())
        return record

    async def deregister(self) -> None:
        """Remove the record now (revoke its lease) and stop the heartbeat."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        record, self._record = self._record, None
        lease_id, self._lease_id = self._lease_id, None
        if self._client is not None and lease_id is not None:
            try:
                await asyncio.wait_for(self._client.revoke_lease(lease_id), self.timeout)
                log.info("deregistered %s", record.key(self.prefix) if record else lease_id)
            except Exception as exc:  # noqa: BLE001 - the lease expires by itself
                log.warning("could not deregister (the record expires within %ss): %s", self.ttl, exc)
        await self.close()

    async def close(self) -> None:
        """Close the etcd connection."""
        client, self._client = self._client, None
        await _close(client)

    async def _beat(self) -> None:
        # The heartbeat: refresh at ttl/3; register again at once when the
        # lease is gone; keep trying while etcd is unreachable.
        interval = self.ttl / 3.0
        unreachable = False
        while True:
            await asyncio.sleep(interval if not unreachable else 1.0)
            try:
                client = await self._connected()
                ttl = 0
                if self._lease_id is not None:
                    reply = await asyncio.wait_for(client.refresh_lease(self._lease_id), self.timeout)
                    ttl = int(getattr(reply, "TTL", 0) or 0)
                if ttl <= 0:
                    await self._put()
                    self.reregistered += 1
                    log.warning("lease lost: registered %s again (lease %x)", self._record, self._lease_id)
                if unreachable:
                    log.info("etcd at %s:%s reachable again", self.host, self.port)
                    unreachable = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried
                if not unreachable:
                    log.warning("etcd at %s:%s unreachable (%s); retrying every second", self.host, self.port, exc)
                    unreachable = True
                # A fresh connection next time (the old one may be broken).
                await self.close()

    # -- reading ------------------------------------------------------------------------

    async def instances(self, name: str) -> List[ServiceRecord]:
        """The records registered for ``name`` now (records that do not
        parse are skipped, with a log line)."""
        client = await self._connected()
        got = await asyncio.wait_for(client.get_prefix(f"{self.prefix}/{name}/".encode()), self.timeout)
        out = []
        for kv in got:
            try:
                out.append(ServiceRecord.from_json(kv.value))
            except ValueError as exc:
                log.warning("skipping %r: %s", kv.key, exc)
        return out


def _instance(record: ServiceRecord) -> Instance:
    return Instance(record.address, record.weight, record.version, record.tags, record.metadata)


class EtcdResolver(Resolver):
    """The instances registered in etcd under a name, watched live: the
    resolver of ``etcd://HOST:PORT/NAME`` targets.

    :meth:`start` reads the records (raising
    :class:`~fastrpc.Unavailable` when etcd cannot be read: nothing is
    known), then watches the prefix from the revision it read, so that no
    change between the read and the watch is missed, and calls ``update``
    with the whole set after every change.  When etcd becomes unreachable
    (or the watch breaks) the client keeps its last set, a warning is
    logged once, and the resolver reads and watches again every
    ``retry`` seconds until etcd is back (an etcd restarted empty gives the
    records servers register again).

    Parameters:
        target: ``etcd://host:port/name``.
        prefix: where records live (as for :class:`EtcdRegistry`).
        timeout: seconds each etcd request may take.
        retry: seconds between attempts while etcd is unreachable.
    """

    def __init__(self, target: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 5.0, retry: float = 1.0) -> None:
        host, port, name = parse_etcd_url(target)
        if not name:
            raise ValueError(f"{target}: an etcd target names a service: etcd://host:port/NAME")
        try:
            import aetcd
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ImportError("etcd:// targets need aetcd: pip install fastrpc[etcd]") from exc
        self._aetcd = aetcd
        self.host, self.port, self.name = host, port, name
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.retry = retry
        self._client: Any = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._records: Dict[bytes, ServiceRecord] = {}
        self._last: List[Instance] = []

    def __repr__(self) -> str:
        return f"<EtcdResolver etcd://{self.host}:{self.port}/{self.name}>"

    @property
    def _key_prefix(self) -> bytes:
        return f"{self.prefix}/{self.name}/".encode()

    async def _read(self) -> int:
        # Every record now; returns the revision read at.
        if self._client is None:
            client = self._aetcd.Client(self.host, self.port, timeout=int(self.timeout) or 1)
            await asyncio.wait_for(client.connect(), self.timeout)
            self._client = client
        got = await asyncio.wait_for(self._client.get_prefix(self._key_prefix), self.timeout)
        records: Dict[bytes, ServiceRecord] = {}
        for kv in got:
            rec = self._parse(kv.key, kv.value)
            if rec is not None:
                records[kv.key] = rec
        self._records = records
        return int(got.header.revision)

    @staticmethod
    def _parse(key: bytes, value: bytes) -> Optional[ServiceRecord]:
        try:
            return ServiceRecord.from_json(value)
        except ValueError as exc:
            log.warning("skipping %r: %s", key, exc)
            return None

    def _current(self) -> List[Instance]:
        return sorted((_instance(r) for r in self._records.values()), key=lambda i: i.address)

    async def start(self, update: Callable[[List[Instance]], None]) -> List[Instance]:
        try:
            revision = await self._read()
        except Exception as exc:  # noqa: BLE001 - nothing known: the caller cannot start
            await self._drop_client()
            raise Unavailable(f"cannot read {self.name!r} from etcd at {self.host}:{self.port}: {exc}") from exc
        self._last = self._current()
        if not self._last:
            log.warning("etcd at %s:%s lists no instance of %r (yet)", self.host, self.port, self.name)
        self._task = asyncio.ensure_future(self._watch(update, revision))
        return list(self._last)

    def _changed(self, update: Callable[[List[Instance]], None]) -> None:
        now = self._current()
        if now != self._last:
            self._last = now
            update(list(now))

    async def _watch(self, update: Callable[[List[Instance]], None], revision: int) -> None:
        broken = False
        while True:
            try:
                if broken:
                    revision = await self._read()
                    log.info("etcd at %s:%s reachable again: %d instances of %r", self.host, self.port, len(self._records), self.name)
                    broken = False
                    self._changed(update)
                watch = await asyncio.wait_for(self._client.watch_prefix(self._key_prefix, start_revision=revision + 1), self.timeout)
                async for event in watch:
                    key = event.kv.key
                    if event.kind == "PUT":
                        rec = self._parse(key, event.kv.value)
                        if rec is None:
                            continue
                        self._records[key] = rec
                    else:
                        self._records.pop(key, None)
                    revision = max(revision, int(event.kv.mod_revision))
                    self._changed(update)
                raise ConnectionError("the watch ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last set and retry
                if not broken:
                    log.warning(
                        "etcd at %s:%s unreachable (%s); keeping the last %d instances of %r, retrying every %ss",
                        self.host, self.port, exc, len(self._last), self.name, self.retry,
                    )
                    broken = True
                await self._drop_client()
                await asyncio.sleep(self.retry)

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        await _close(client)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop_client()
