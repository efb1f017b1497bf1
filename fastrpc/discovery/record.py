"""What a registry holds about one server instance, and where.

Key layout (``docs/discovery.md``)::

    <prefix>/<name>/<instance-id>      (default prefix: /fastrpc/services)

The value is a JSON object: ``name``, ``id``, ``address`` (what clients
connect to: ``tcp://host:port``, ``tls://host:port``), ``weight``,
``version``, ``tags`` (a map of strings), ``metadata`` (a map), ``started``
(Unix time) and ``pid``.  Unknown fields are kept when read (a newer
writer's record still parses).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any, Dict, Mapping, Optional

__all__ = ["DEFAULT_PREFIX", "ServiceRecord"]

DEFAULT_PREFIX = "/fastrpc/services"


class ServiceRecord:
    """One registered instance of a service.

    Parameters:
        name: the service's name (what clients look up): letters, digits,
            ``-``, ``_`` and ``.``.
        address: where clients reach this instance.
        weight: its share of calls relative to its peers (>= 0).
        version: a version label (routing rules use it).
        tags: labels (``{"zone": "a"}``).
        metadata: anything else (JSON values).
        id: the instance id (default: host name, pid and a random suffix).
    """

    __slots__ = ("name", "id", "address", "weight", "version", "tags", "metadata", "started", "pid", "extra")

    def __init__(
        self,
        name: str,
        address: str,
        *,
        weight: int = 1,
        version: str = "",
        tags: Optional[Mapping[str, str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        id: Optional[str] = None,
        started: Optional[float] = None,
        pid: Optional[int] = None,
    ) -> None:
        if not name or any(not (c.isalnum() or c in "-_.") for c in name):
            raise ValueError(f"invalid service name {name!r} (letters, digits, '-', '_', '.')")
        if weight < 0:
            raise ValueError("weight must be >= 0")
        self.name = name
        self.address = address
        self.weight = int(weight)
        self.version = version
        self.tags = dict(tags or {})
        self.metadata = dict(metadata or {})
        self.id = id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started = time.time() if started is None else started
        self.pid = os.getpid() if pid is None else pid
        self.extra: Dict[str, Any] = {}

    def key(self, prefix: str = DEFAULT_PREFIX) -> str:
        """This record's key."""
        return f"{prefix.rstrip('/')}/{self.name}/{self.id}"

    def to_json(self) -> bytes:
        """The value stored under :meth:`key`."""
        value = dict(self.extra)
        value.update(
            name=self.name,
            id=self.id,
            address=self.address,
            weight=self.weight,
            version=self.version,
            tags=self.tags,
            metadata=self.metadata,
            started=self.started,
            pid=self.pid,
        )
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "ServiceRecord":
        """A record read back (ValueError if it is not one)."""
        value = json.loads(data)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not isinstance(value.get("address"), str):
            raise ValueError("not a fastrpc service record")
        rec = cls(
            value["name"],
            value["address"],
            weight=int(value.get("weight", 1)),
            version=str(value.get("version", "")),
            tags=value.get("tags") or {},
            metadata=value.get("metadata") or {},
            id=str(value.get("id") or ""),
            started=value.get("started"),
            pid=value.get("pid"),
        )
        known = set(cls.__slots__)
        rec.extra = {k: v for k, v in value.items() if k not in known}
        return rec

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceRecord) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"ServiceRecord({self.name!r}, {self.address!r}, id={self.id!r}, weight={self.weight}, version={self.version!r})"
