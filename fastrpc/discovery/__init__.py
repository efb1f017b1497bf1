"""Service discovery: what servers register, where, and how it stays
true (``docs/discovery.md``).

* :class:`ServiceRecord`: one instance (address, weight, version, tags,
  metadata, start time) and its key, ``/fastrpc/services/<name>/<id>``;
* :class:`EtcdRegistry` (``pip install fastrpc[etcd]``): records in etcd v3
  under a lease, kept alive by a heartbeat and put back at once when the
  lease is lost;
* :class:`DnsResolver`: the ``dns:///NAME:PORT`` target of clients, the
  A/AAAA (and, with ``pip install fastrpc[dns]``, SRV) records of a name,
  looked up again periodically.

``Server(registry="etcd://host:port", name=...)`` works once this package
is imported (``import fastrpc`` does): it adds the ``etcd`` scheme to the
server's table of registry factories (the server layer sits below this one
and does not import it), and the ``dns`` scheme to the client's table of
target resolvers.
"""

from __future__ import annotations

from ..client.target import RESOLVERS
from ..server.server import REGISTRY_SCHEMES
from .dns import DnsResolver, parse_dns_target
from .etcd import EtcdRegistry, EtcdResolver, parse_etcd_url
from .record import DEFAULT_PREFIX, ServiceRecord

__all__ = ["DEFAULT_PREFIX", "DnsResolver", "EtcdRegistry", "EtcdResolver", "ServiceRecord", "parse_dns_target", "parse_etcd_url"]

REGISTRY_SCHEMES.setdefault("etcd", lambda url: EtcdRegistry(url))
RESOLVERS.setdefault("dns", lambda target: DnsResolver(target))
RESOLVERS.setdefault("etcd", lambda target: EtcdResolver(target))
