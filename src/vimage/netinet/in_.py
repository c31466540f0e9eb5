"""IPv4 interface addresses and the routes that follow them (FreeBSD in.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.net import rtsock
from vimage.net.ifnet import IFF_BROADCAST, IFF_LOOPBACK
from vimage.net.route import MASKS, RTF_STATIC, Route, RouteTable
from vimage.wire import ipv4
from vimage.wire.ipv4 import INADDR_ANY, INADDR_BROADCAST
from vimage.wire.rtmsg import RTM_ADD, RTM_DELADDR, RTM_DELETE, RTM_NEWADDR

if TYPE_CHECKING:
    from collections.abc import Callable

    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet


def is_multicast(addr: int) -> bool:
    return addr >> 28 == 0xE


def is_loopback(addr: int) -> bool:
    return addr >> 24 == 127


class InAddr:
    """One IPv4 address on an interface."""

    __slots__ = ("addr", "broadcast", "ifp", "mask", "net", "plen")

    def __init__(self, ifp: Ifnet, addr: int, plen: int, broadcast: int | None) -> None:
        self.ifp = ifp
        self.addr = addr
        self.plen = plen
        self.mask = MASKS[plen]
        self.net = addr & self.mask
        if broadcast is None:
            broadcast = (self.net | (~self.mask & 0xFFFFFFFF)) if plen < 31 else 0
        self.broadcast = broadcast

    def __repr__(self) -> str:
        return f"<InAddr {self.addr:#010x}/{self.plen} on {self.ifp.name}>"


def in_add_addr(ifp: Ifnet, addr: int, plen: int, broadcast: int | None = None) -> InAddr:
    """Add (or update) an address; adds the prefix route and the local host route."""
    vnet = ifp.vnet
    ip = vnet.ip
    if not 0 <= plen <= 32:
        raise ValueError(f"bad prefix length {plen}")
    if addr in (INADDR_ANY, INADDR_BROADCAST) or addr >> 28 == 0xE:
        raise OSError(errno.EINVAL, "invalid address")
    existing = ip.local.get(addr)
    if existing is not None:
        if existing.ifp is not ifp:
            raise OSError(errno.EEXIST, f"address already in use on {existing.ifp.name}")
        _remove(existing)
    if not ifp.flags & IFF_BROADCAST:  # lo0, tunnels: no broadcast (in_broadcast())
        broadcast = 0
    ia = InAddr(ifp, addr, plen, broadcast)
    ifp.addrs.append(ia)
    ip.local[addr] = ia
    if ia.broadcast:
        ip.bcast[ia.broadcast] = ia
    rtsock.newaddr(ia, RTM_NEWADDR)
    for rt in _tables(ifp):
        if ifp.flags & IFF_LOOPBACK:
            _add_route(rt, Route(addr, 32, ifp, 0, ifa=ia))
        else:
            lo = vnet.ifaces.get("lo0")
            if plen < 32:
                _add_route(rt, Route(ia.net, plen, ifp, 0, ifa=ia))
            if lo is not None:
                _add_route(rt, Route(addr, 32, lo, RTF_STATIC, ifa=ia))
    if not ifp.flags & IFF_LOOPBACK and ifp.mac is not None and ifp.up:
        vnet.arp.announce(ifp, addr)
    return ia


def _tables(ifp: Ifnet) -> list[RouteTable]:
    """The FIBs an address of `ifp` puts its routes in: the interface's own, or every
    one with net.add_addr_allfibs (FreeBSD in_addprefix / rt_addrmsg)."""
    return ifp.vnet.route.addr_tables(ifp.fib)


def _add_route(rt: RouteTable, route: Route) -> None:
    if rt.get(route.dst, route.plen) is None:
        rt.add(route)
        rtsock.route_event(route.ifp.vnet, RTM_ADD, route)


def _purge(vnet: Vnet, predicate: Callable[[Route], bool]) -> None:
    """Remove the routes `predicate` picks from every FIB, telling listeners."""
    for rt in vnet.route.tables:
        for route in [p for p in rt.all_paths() if predicate(p)]:
            rt.remove_path(route)
            rtsock.route_event(vnet, RTM_DELETE, route)


def _remove(ia: InAddr) -> None:
    ifp = ia.ifp
    vnet = ifp.vnet
    ip = vnet.ip
    ifp.addrs.remove(ia)
    if ip.local.get(ia.addr) is ia:
        del ip.local[ia.addr]
    if ia.broadcast and ip.bcast.get(ia.broadcast) is ia:
        del ip.bcast[ia.broadcast]
        for other in ip.local.values():  # another address may share that broadcast
            if other.broadcast == ia.broadcast:
                ip.bcast[ia.broadcast] = other
                break
    _purge(vnet, lambda r: r.ifa is ia)
    rtsock.newaddr(ia, RTM_DELADDR)
    # a prefix route that another address of the same prefix can carry comes back
    if ia.plen < 32 and not ifp.is_loopback:
        for other in ip.local.values():
            if (other.plen == ia.plen and other.net == ia.net and not other.ifp.is_loopback):
                for rt in _tables(other.ifp):
                    _add_route(rt, Route(other.net, other.plen, other.ifp, 0, ifa=other))
                break


def in_add_addr_text(ifp: Ifnet, cidr: str, broadcast: str | None = None) -> None:
    """`Ifnet.add_addr` for INET: an address as 'a.b.c.d/len' (/32 if no length)."""
    addr, _, plen = cidr.partition("/")
    in_add_addr(ifp, ipv4.aton(addr), int(plen) if plen else 32,
                ipv4.aton(broadcast) if broadcast else None)


def in_del_addr(ifp: Ifnet, addr: int) -> None:
    for ia in ifp.addrs:
        if ia.addr == addr:
            _remove(ia)
            return
    raise OSError(errno.EADDRNOTAVAIL, "can't assign requested address")


def in_purge_ifaddrs(ifp: Ifnet) -> None:
    """Remove every address of `ifp` and every route through it."""
    for ia in list(ifp.addrs):
        _remove(ia)
    _purge(ifp.vnet, lambda r: r.ifp is ifp)


def source_for(ifp: Ifnet, dst: int) -> int:
    """The source address to use towards `dst` out of `ifp`."""
    best = 0
    for ia in ifp.addrs:
        if (dst & ia.mask) == ia.net:
            return ia.addr
        if not best:
            best = ia.addr
    return best
