"""Counter classes for per-vnet statistics.

`counters("IpStats", names)` builds a class with one slot per counter and an
`__init__` that zeroes them all in one chained assignment: vnet creation runs it
for every protocol, so it has to be cheap.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def counters(class_name: str, names: tuple[str, ...]) -> type:
    if not all(name.isidentifier() for name in names):
        raise ValueError(f"bad counter names in {class_name}")
    body = f"def __init__(self):\n    self.{' = self.'.join(names)} = 0\n" if names else (
        "def __init__(self):\n    pass\n")
    namespace: dict[str, object] = {}
    exec(body, namespace)
    return type(class_name, (), {"__slots__": names, "__init__": namespace["__init__"],
                                 "names": names})


class LazySlots:
    """Mixin for per-vnet state: the slots named in `lazy` are made on first read.

    Most vnets of a big topology never count a packet nor send an ICMP error, and every
    object made at creation is one more for the cyclic garbage collector to walk in each
    full collection, so the counters and rate limiters are made when first read (a slot
    never set raises AttributeError, which lands here); once set, a read is a plain slot
    read. `lazy` maps a slot to its factory (a class). Not for the states the packet
    paths read (ip, arp, udp, tcp, ip6): CPython 3.11 does not specialise attribute reads
    on a class with __getattr__, which cost forwarding 12%; those make their counters
    at once.
    """

    __slots__ = ()
    lazy: ClassVar[Mapping[str, Callable[[], Any]]] = MappingProxyType({})

    def __getattr__(self, name: str) -> Any:
        factory = type(self).lazy.get(name)
        if factory is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        value = factory()
        setattr(self, name, value)
        return value


def count_drop(stats: object, reason: str, counter_of: Mapping[str, str]) -> None:
    """Count a packet its parser refused (a WireError's `reason`) on the counter that
    `counter_of` names for the reason, or on its "" entry for any other reason."""
    name = counter_of.get(reason) or counter_of[""]
    setattr(stats, name, getattr(stats, name) + 1)
