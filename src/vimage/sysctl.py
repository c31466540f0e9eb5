"""Per-vnet sysctl tree.

An OID names an attribute of a subsystem's per-vnet state, as FreeBSD's
SYSCTL_INT(_net_inet_ip, ..., &VNET_NAME(ipforwarding)) points into the vnet.
So a sysctl costs no memory per vnet, and the hot path reads a plain attribute.
The kernel's table (`kernel.oids`) is built from its protocols' descriptors
(vimage.protosw); a protocol registered later brings its OIDs with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from vimage.vnet import Vnet


class Oid(NamedTuple):
    name: str
    slot: str  # attribute of Vnet holding the subsystem state
    attr: str  # attribute of that state
    descr: str
    lo: int = 0
    hi: int = 2**31 - 1
    choices: tuple[str, ...] = ()  # a string-valued OID takes one of these


def oids(prefix: str, slot: str, rows: Iterable[tuple[str, str, int, int]],
         attrs: Mapping[str, str] | None = None) -> tuple[Oid, ...]:
    """The integer OIDs `prefix.<leaf>` of rows `(leaf, description, lo, hi)`, on `slot`.

    A leaf's attribute is the leaf with its dots made underscores
    (`syncache.rexmtlimit` -> `syncache_rexmtlimit`), unless `attrs` names another.
    """
    attrs = attrs or {}
    return tuple(Oid(f"{prefix}.{leaf}", slot, attrs.get(leaf, leaf.replace(".", "_")), descr,
                     lo, hi) for leaf, descr, lo, hi in rows)


class SysctlError(LookupError):
    pass


def _oid(vnet: Vnet, name: str) -> Oid:
    oid = vnet.kernel.oids.get(name)
    if oid is None:
        raise SysctlError(f"unknown oid '{name}'")
    return oid


def sysctl_get(vnet: Vnet, name: str) -> int | str:
    oid = _oid(vnet, name)
    return getattr(getattr(vnet, oid.slot), oid.attr)


def sysctl_set(vnet: Vnet, name: str, value: int | str) -> None:
    oid = _oid(vnet, name)
    if oid.choices:
        if str(value) not in oid.choices:
            raise ValueError(f"{name}: {value!r} is not one of {', '.join(oid.choices)}")
        setattr(getattr(vnet, oid.slot), oid.attr, str(value))
        return
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"invalid integer '{value}' for {name}") from None
    if not oid.lo <= number <= oid.hi:
        raise ValueError(f"{name}: {number} is out of range [{oid.lo}..{oid.hi}]")
    setattr(getattr(vnet, oid.slot), oid.attr, number)


def matching(vnet: Vnet, prefix: str) -> list[Oid]:
    """OIDs named `prefix` or below it (`net.inet` lists the whole subtree)."""
    oids = vnet.kernel.oids
    if prefix in oids:
        return [oids[prefix]]
    return [o for n, o in oids.items() if n.startswith(prefix + ".")] if prefix else list(
        oids.values())
