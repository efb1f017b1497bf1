"""Service discovery: what servers register, where, and how it stays
true (``docs/discovery.md``).

* :class:`ServiceRecord`: one instance (address, weight, version, tags,
  metadata, start time) and its key, ``/fastrpc/services/<name>/<id>``;
* :class:`EtcdRegistry` (``pip install fastrpc[etcd]``): records in etcd v3
  under a lease, kept alive by a heartbeat and put back at once when the
  lease is lost.

``Server(registry="etcd://host:port", name=...)`` works once this package
is imported (``import fastrpc`` does): it adds the ``etcd`` scheme to the
server's table of registry factories (the server layer sits below this one
and does not import it).
"""

from __future__ import annotations

from ..server.server import REGISTRY_SCHEMES
from .etcd import EtcdRegistry, parse_etcd_url
from .record import DEFAULT_PREFIX, ServiceRecord

__all__ = ["DEFAULT_PREFIX", "EtcdRegistry", "ServiceRecord", "parse_etcd_url"]

REGISTRY_SCHEMES.setdefault("etcd", lambda url: EtcdRegistry(url))
