"""Targets: what a client calls when it calls a service, not one server.

A *target* names a set of servers that may change while the client runs:

* an address (``"127.0.0.1:7000"``, ``tcp://``, ``tls://``, ``unix:``): one
  server, the classic client;
* a list (or tuple, or comma-separated string) of addresses, or of
  :class:`~fastrpc.balancing.Instance`: a static set;
* ``dns:///NAME:PORT`` (or ``dns://DNS-SERVER:PORT/NAME:PORT``): the A/AAAA
  records of ``NAME`` (SRV records where ``NAME`` has them), resolved again
  periodically (``fastrpc.discovery.dns``);
* ``etcd://HOST:PORT/NAME``: the instances registered under ``NAME``,
  watched live (``fastrpc.discovery.etcd``, ``pip install fastrpc[etcd]``).

Schemes are looked up in :data:`RESOLVERS`, which the discovery layer
fills (it sits above the client and imports it, never the reverse).  A
resolver is a small class: users can add their own scheme.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..balancing.base import Instance
from ..transport.address import Address, parse_address

__all__ = ["RESOLVERS", "Resolver", "StaticResolver", "is_target", "resolver_for"]

#: called with the full set of instances each time it changes
Update = Callable[[List[Instance]], None]


class Resolver:
    """Turns a target into a live set of :class:`Instance` s.

    :meth:`start` resolves once and returns the first set (raising
    :class:`~fastrpc.Unavailable` when there is none to be had: nothing is
    known yet), then keeps watching in the background and calls
    ``update(instances)`` with the whole new set each time it changes.
    While its source is unreachable a resolver keeps quiet (the client
    keeps the last set) and says so in the log once.  :meth:`close` stops
    it.
    """

    async def start(self, update: Update) -> List[Instance]:
        raise NotImplementedError

    async def close(self) -> None:
        """Stop watching."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class StaticResolver(Resolver):
    """A fixed list of instances (or addresses): never changes."""

    def __init__(self, instances: Sequence[Any]) -> None:
        self.instances = [as_instance(i) for i in instances]
        if not self.instances:
            raise ValueError("a static target needs at least one address")

    async def start(self, update: Update) -> List[Instance]:
        return list(self.instances)

    def __repr__(self) -> str:
        return f"<StaticResolver {[i.address for i in self.instances]}>"


def as_instance(item: Any) -> Instance:
    """An :class:`Instance` from an instance, an address, a ``(host, port)``
    pair or anything with ``address``/``weight``/``version``/``tags``/
    ``metadata`` attributes (a :class:`~fastrpc.discovery.ServiceRecord`)."""
    if isinstance(item, Instance):
        return item
    if isinstance(item, (str, Address)) or type(item) is tuple:
        return Instance(str(parse_address(item)))
    if hasattr(item, "address"):
        return Instance(
            str(item.address),
            getattr(item, "weight", 1),
            getattr(item, "version", ""),
            getattr(item, "tags", None),
            getattr(item, "metadata", None),
        )
    raise TypeError(f"not an address or instance: {item!r}")


#: scheme -> ``factory(target: str) -> Resolver``; ``fastrpc.discovery``
#: adds ``dns`` and ``etcd``
RESOLVERS: Dict[str, Callable[[str], Resolver]] = {}


def _scheme(target: str) -> Optional[str]:
    head, sep, _ = target.partition("://")
    if sep and head in RESOLVERS:
        return head
    return None


def is_target(spec: Any) -> bool:
    """Whether ``spec`` names a set of servers rather than one address: a
    list, a comma-separated string, a resolver, or a URL whose scheme has
    a resolver (``dns://``, ``etcd://``)."""
    if isinstance(spec, Resolver):
        return True
    if isinstance(spec, str):
        return "," in spec or _scheme(spec) is not None
    if isinstance(spec, (list, set, frozenset)):
        return True
    if isinstance(spec, tuple):
        # ("host", port) is one address; a tuple of addresses is a list
        return not (len(spec) == 2 and isinstance(spec[1], int))
    return False


def resolver_for(spec: Any) -> Resolver:
    """The resolver of a target (see the module's documentation)."""
    if isinstance(spec, Resolver):
        return spec
    if isinstance(spec, str):
        scheme = _scheme(spec)
        if scheme is not None:
            return RESOLVERS[scheme](spec)
        head, sep, _ = spec.partition("://")
        if sep and head in ("dns", "etcd"):
            raise ValueError(f"{spec}: the {head}:// scheme needs fastrpc.discovery (import fastrpc)")
        return StaticResolver([s.strip() for s in spec.split(",") if s.strip()])
    if isinstance(spec, (Address, tuple)) and not is_target(spec):
        return StaticResolver([spec])
    return StaticResolver(list(spec))


async def close_quietly(resolver: Resolver) -> None:
    """Close a resolver, never raising (shutdown paths)."""
    try:
        await resolver.close()
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing anyway
        pass
