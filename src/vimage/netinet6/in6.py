"""IPv6 interface addresses, per-interface data and source selection (FreeBSD in6.c,
in6_ifattach.c, in6_src.c).

Scoped addresses are kept as KAME does inside the kernel: a link-local address (or a
link-local multicast group) is stored in tables with its zone, the interface index,
embedded in bits 96..111 (the second 16-bit word, always zero in fe80::/10 addresses
on the wire). `zkey(addr, ifindex)` makes that key; tables that are not per interface
(`ip6.local`, the routing table `vnet.rt6`) use it, and nothing embedded ever goes on
the wire.
"""

from __future__ import annotations

import errno
from socket import AF_INET6
from typing import TYPE_CHECKING

from vimage.net import rtsock
from vimage.net.route import MASKS6, RTF_STATIC, Route
from vimage.wire import ipv6 as wip6
from vimage.wire.ipv6 import ALL_NODES, is_link_local, needs_zone, scope, solicited_node
from vimage.wire.rtmsg import RTM_DELADDR, RTM_NEWADDR

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet6.nd6 import NdEntry
    from vimage.sched import Timer
    from vimage.vnet import Vnet

# address flags (FreeBSD netinet6/in6_var.h IN6_IFF_*)
IN6_IFF_ANYCAST = 0x01
IN6_IFF_TENTATIVE = 0x02
IN6_IFF_DUPLICATED = 0x04
IN6_IFF_DETACHED = 0x08
IN6_IFF_DEPRECATED = 0x10
IN6_IFF_AUTOCONF = 0x40
IN6_IFF_NOTREADY = IN6_IFF_TENTATIVE | IN6_IFF_DUPLICATED
FLAG_WORDS: tuple[tuple[int, str], ...] = (
    (IN6_IFF_ANYCAST, "anycast"), (IN6_IFF_TENTATIVE, "tentative"),
    (IN6_IFF_DUPLICATED, "duplicated"), (IN6_IFF_DETACHED, "detached"),
    (IN6_IFF_DEPRECATED, "deprecated"), (IN6_IFF_AUTOCONF, "autoconf"),
)

# per-interface ND flags (nd6.h ND6_IFF_*), as `ifconfig` prints them
ND6_IFF_PERFORMNUD = 0x1
ND6_IFF_ACCEPT_RTADV = 0x2
ND6_IFF_IFDISABLED = 0x8
ND6_IFF_AUTO_LINKLOCAL = 0x20
ND6_IFF_NO_DAD = 0x100
ND6_FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (ND6_IFF_PERFORMNUD, "PERFORMNUD"), (ND6_IFF_ACCEPT_RTADV, "ACCEPT_RTADV"),
    (ND6_IFF_IFDISABLED, "IFDISABLED"), (ND6_IFF_AUTO_LINKLOCAL, "AUTO_LINKLOCAL"),
    (ND6_IFF_NO_DAD, "NO_DAD"),
)

_ZONE_MASK = ~(0xFFFF << 96)


def zkey(addr: int, ifindex: int) -> int:
    """`addr` with its zone embedded if it needs one (KAME's in6_setscope)."""
    return addr | (ifindex << 96) if needs_zone(addr) else addr


def unzone(key: int) -> int:
    """The address of a key made by `zkey`."""
    return key & _ZONE_MASK if needs_zone(key & _ZONE_MASK) else key


class In6Addr:
    """One IPv6 address on an interface (struct in6_ifaddr)."""

    __slots__ = ("addr", "dad_count", "dad_timer", "flags", "ifp", "key", "lt_timer",
                 "pexpire_ns", "plen", "vexpire_ns")

    def __init__(self, ifp: Ifnet, addr: int, plen: int, flags: int) -> None:
        self.ifp = ifp
        self.addr = addr
        self.plen = plen
        self.flags = flags
        self.key = zkey(addr, ifp.index)
        self.dad_count = 0  # DAD probes sent
        self.dad_timer: Timer | None = None
        # SLAAC lifetimes (nd6_rtr): kernel times the address is deprecated / removed
        # (0: never) and the timer of the next of them
        self.pexpire_ns = 0
        self.vexpire_ns = 0
        self.lt_timer: Timer | None = None

    @property
    def ready(self) -> bool:
        return not self.flags & IN6_IFF_NOTREADY

    def __repr__(self) -> str:
        return f"<In6Addr {wip6.ntoa(self.addr)}/{self.plen} on {self.ifp.name}>"


class In6Ifdata:
    """IPv6's per-interface data (struct in6_ifextra + nd_ifinfo), in `ifp.afdata[AF_INET6]`."""

    __slots__ = ("addrs", "groups", "nd", "nd_flags")

    def __init__(self) -> None:
        self.addrs: list[In6Addr] = []
        self.groups: dict[int, int] = {}  # joined multicast group -> reference count
        self.nd: dict[int, NdEntry] = {}  # the neighbour cache of this link
        self.nd_flags = ND6_IFF_PERFORMNUD | ND6_IFF_AUTO_LINKLOCAL


def ifdata(ifp: Ifnet) -> In6Ifdata:
    """`ifp`'s IPv6 data, made on first use."""
    af = ifp.afdata
    if af is None:
        af = ifp.afdata = {}
    data = af.get(AF_INET6)
    if data is None:
        data = af[AF_INET6] = In6Ifdata()
        nd6 = getattr(ifp.vnet, "nd6", None)
        if nd6 is not None and nd6.accept_rtadv and not ifp.is_loopback:
            data.nd_flags |= ND6_IFF_ACCEPT_RTADV  # net.inet6.ip6.accept_rtadv
    return data


def addrs_data(ifp: Ifnet) -> In6Ifdata | None:
    """`ifp`'s IPv6 data if it has any (not made)."""
    af = ifp.afdata
    return af.get(AF_INET6) if af is not None else None


def addrs(ifp: Ifnet) -> list[In6Addr]:
    af = ifp.afdata
    data = af.get(AF_INET6) if af is not None else None
    return data.addrs if data is not None else []


def parse_cidr(text: str, ifp: Ifnet | None = None) -> tuple[int, int]:
    """'2001:db8::1/64' or 'fe80::1%epair0a' -> (address, prefix length, 64 if none).
    A zone must name `ifp` when both are given."""
    addr_text, _, plen_text = text.partition("/")
    addr, zone = wip6.split_scope(addr_text)
    if zone and ifp is not None and zone != ifp.name:
        raise OSError(errno.EINVAL, f"zone {zone} is not {ifp.name}")
    if plen_text:
        if not plen_text.isdigit() or int(plen_text) > 128:
            raise ValueError(f"bad prefix length: {plen_text}")
        return addr, int(plen_text)
    return addr, 64


def in6_add_addr_text(ifp: Ifnet, cidr: str, _broadcast: str | None = None) -> None:
    """`Ifnet.add_addr(..., family=AF_INET6)`."""
    addr, plen = parse_cidr(cidr, ifp)
    in6_add_addr(ifp, addr, plen)


def in6_add_addr(ifp: Ifnet, addr: int, plen: int = 64, flags: int = 0) -> In6Addr:
    """Add (or update) an address (in6_update_ifa): routes, groups, then DAD."""
    vnet = ifp.vnet
    ip6 = vnet.ip6
    if not ip6.lo_done:
        loopback_addrs(vnet)
    if not 0 <= plen <= 128:
        raise ValueError(f"bad prefix length {plen}")
    if addr == 0 or wip6.is_multicast(addr) or (addr == 1 and not ifp.is_loopback):
        raise OSError(errno.EINVAL, "invalid address")
    data = ifdata(ifp)
    key = zkey(addr, ifp.index)
    for old in data.addrs:
        if old.key == key:  # the same address again: updated (in6_update_ifa)
            in6_remove(old)
            break
    ia = In6Addr(ifp, addr, plen, flags)
    data.addrs.append(ia)
    # a global address may also be on another interface (FreeBSD allows it, typically
    # in another fib: fibs_test's same_ip_multiple_ifaces_inet6): the first one keeps
    # the `local` entry, each puts its routes in its own interface's fib
    ip6.local.setdefault(key, ia)
    _add_routes(ia)
    rtsock.newaddr6(ia, RTM_NEWADDR)
    if ifp.mac is not None:
        join(ifp, solicited_node(addr))
        if vnet.nd6.dad_count and not data.nd_flags & ND6_IFF_NO_DAD:
            ia.flags |= IN6_IFF_TENTATIVE
            if ifp.up:
                vnet.nd6.dad_start(ia)
    return ia


def _add_routes(ia: In6Addr) -> None:
    """The prefix route on the interface and the host route through lo0 (in6_ifaddloop),
    in the interface's fib (every fib with net.add_addr_allfibs)."""
    ifp = ia.ifp
    vnet = ifp.vnet
    lo = vnet.ifaces.get("lo0")
    owner = ifp if ifp.is_loopback else lo
    for rt6 in vnet.route.addr_tables6(ifp.fib):
        if ia.plen < 128:
            net = ia.key & MASKS6[ia.plen]
            if rt6.get(net, ia.plen) is None:
                rt6.add(Route(net, ia.plen, ifp, 0, ifa=ia, width=128))  # type: ignore
        if owner is not None and rt6.get(ia.key, 128) is None:
            rt6.add(Route(ia.key, 128, owner, RTF_STATIC, ifa=ia, width=128))  # type: ignore


def in6_remove(ia: In6Addr) -> None:
    """Take an address away with its routes, group and DAD timer (in6_purgeaddr)."""
    ifp = ia.ifp
    vnet = ifp.vnet
    data = ifdata(ifp)
    data.addrs.remove(ia)
    if ia.dad_timer is not None:
        ia.dad_timer.cancel()
        ia.dad_timer = None
    if ia.lt_timer is not None:
        ia.lt_timer.cancel()
        ia.lt_timer = None
    local = vnet.ip6.local
    if local.get(ia.key) is ia:
        del local[ia.key]
        if vnet.alive and not needs_zone(ia.addr):  # the same address elsewhere takes over
            other = next((o for i in vnet.ifaces.values() for o in addrs(i)
                          if o.key == ia.key and o is not ia), None)
            if other is not None:
                local[ia.key] = other
    rtsock.newaddr6(ia, RTM_DELADDR)
    if ifp.mac is not None:
        leave(ifp, solicited_node(ia.addr))
    for rt6 in vnet.route.tables6:
        rt6.purge(lambda r: r.ifa is ia)
    if ia.plen < 128:  # another address of the same prefix carries it on
        for other in data.addrs:
            if other.plen == ia.plen and other.key & MASKS6[ia.plen] == ia.key & MASKS6[ia.plen]:
                _add_routes(other)
                break


def in6_del_addr(ifp: Ifnet, addr: int) -> None:
    for ia in addrs(ifp):
        if ia.addr == addr:
            in6_remove(ia)
            return
    raise OSError(errno.EADDRNOTAVAIL, "can't assign requested address")


def in6_purge_ifaddrs(ifp: Ifnet) -> None:
    """Every address, group, neighbour entry and route of `ifp` goes (in6_ifdetach)."""
    af = ifp.afdata
    data = af.get(AF_INET6) if af is not None else None
    if data is None:
        return
    for ia in list(data.addrs):
        in6_remove(ia)
    vnet = ifp.vnet
    vnet.nd6.purge_ifp(ifp)
    if vnet.nd6.rtr_state is not None:
        vnet.nd6.rtr_state.purge_ifp(ifp)
    for rt6 in vnet.route.tables6:
        rt6.purge(lambda r: r.ifp is ifp)
    del af[AF_INET6]  # type: ignore[union-attr]


# -- multicast membership (mld6.c: a join report is enough for snooping switches) ------
def join(ifp: Ifnet, group: int) -> None:
    data = ifdata(ifp)
    count = data.groups.get(group, 0)
    data.groups[group] = count + 1
    if not count and ifp.up and ifp.mac is not None and group != ALL_NODES:
        ifp.vnet.icmp6.mld_report(ifp, group)


def leave(ifp: Ifnet, group: int) -> None:
    data = ifdata(ifp)
    count = data.groups.get(group, 0)
    if count <= 1:
        data.groups.pop(group, None)
    else:
        data.groups[group] = count - 1


# -- interface events -------------------------------------------------------------------
def in6_ifattach(ifp: Ifnet) -> None:
    """An interface that arrives up gets its link-local address now. lo0's addresses
    wait for the vnet's first use of IPv6 (`loopback_addrs`)."""
    if ifp.up and not ifp.is_loopback:
        in6_ifup(ifp)


def loopback_addrs(vnet: Vnet) -> None:
    """lo0's ::1/128 and fe80::1%lo0/64 (in6_ifattach_loopback), added the first time the
    vnet uses IPv6: an interface comes up, an address is added, a packet is sent, a tool
    looks. Most vnets of a big topology never do, and two addresses with their three
    routes made at creation would cost half of a vnet's creation time (mostly in the
    garbage collector) and 3 KB."""
    ip6 = vnet.ip6
    if ip6.lo_done:
        return
    ip6.lo_done = True
    lo = vnet.ifaces.get("lo0")
    if lo is None or not vnet.alive:
        return
    ifdata(lo).groups[ALL_NODES] = 1
    in6_add_addr(lo, wip6.ADDR_LOOPBACK, 128)
    in6_add_addr(lo, wip6.LINK_LOCAL_PREFIX | 1, 64)


def in6_ifup(ifp: Ifnet) -> None:
    """An Ethernet interface coming up: join all-nodes, configure the EUI-64 link-local
    address (in6_ifattach_linklocal) and start DAD for the addresses waiting for it."""
    if ifp.mac is None:
        return
    loopback_addrs(ifp.vnet)
    data = ifdata(ifp)
    data.groups.setdefault(ALL_NODES, 1)
    joined_down = [g for g in data.groups if g != ALL_NODES]
    if data.nd_flags & ND6_IFF_AUTO_LINKLOCAL and not any(is_link_local(a.addr)
                                                         for a in data.addrs):
        in6_add_addr(ifp, wip6.LINK_LOCAL_PREFIX | wip6.eui64(ifp.mac), 64)
    nd6 = ifp.vnet.nd6
    for ia in data.addrs:
        if ia.flags & IN6_IFF_TENTATIVE and ia.dad_timer is None:
            nd6.dad_start(ia)
    for group in joined_down:  # joined while the link was down: reported now
        ifp.vnet.icmp6.mld_report(ifp, group)
    if data.nd_flags & ND6_IFF_ACCEPT_RTADV:  # RFC 4861 6.3.7: solicit routers
        ifp.vnet.nd6.rtr.start_solicit(ifp)


# -- source address selection (RFC 6724 section 5; FreeBSD in6_selectsrc) -------------------
def common_prefix(a: int, b: int) -> int:
    return 128 - (a ^ b).bit_length()


def select_source(vnet_ifaces: list[Ifnet], dst: int, out: Ifnet | None) -> In6Addr | None:
    """The best source for `dst` leaving by `out`, by rules 1, 2, 3, 5 and 8 (the others
    need policy tables, home addresses and temporary addresses, which vimage lacks)."""
    dscope = scope(dst)
    best: In6Addr | None = None
    best_key: tuple[int, ...] = ()
    for ifp in vnet_ifaces:
        for ia in addrs(ifp):
            if not ia.ready:
                continue
            if needs_zone(ia.addr) and ifp is not out:
                continue  # a link-local source only on its own link
            sscope = scope(ia.addr)
            key = (
                ia.addr == dst,  # rule 1: prefer the same address
                sscope >= dscope,  # rule 2: an appropriate scope ...
                -sscope if sscope >= dscope else sscope,  # ... the smallest that fits
                not ia.flags & IN6_IFF_DEPRECATED,  # rule 3: avoid deprecated addresses
                ifp is out,  # rule 5: prefer the outgoing interface
                min(common_prefix(ia.addr, dst), ia.plen),  # rule 8: longest matching prefix
            )
            if best is None or key > best_key:
                best, best_key = ia, key
    return best
