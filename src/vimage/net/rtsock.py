"""Routing sockets, the kernel side (FreeBSD net/rtsock.c).

A routing socket (`vnet.socket(AF_ROUTE, SOCK_RAW, 0)`, vimage.socket.rtsock) writes
RTM_ADD / RTM_DELETE / RTM_CHANGE / RTM_GET requests, which `write` carries out on the
socket's fib and answers with a reply of the same type (rtm_errno set on failure,
RTF_DONE on success), sent to every listener of that fib (the sender too, with
SO_USELOOPBACK, the default). The stack tells listeners what happens on its own:
RTM_NEWADDR / RTM_DELADDR, RTM_IFINFO, RTM_IFANNOUNCE, RTM_MISS, RTM_REDIRECT,
RTM_LOSING, and RTM_ADD / RTM_DELETE for the routes addresses bring and take away.

A message nobody listens to costs one test (`state.sockets` empty).
"""

from __future__ import annotations

import errno
import os
import socket
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from vimage.net.route import (
    MASKS,
    MASKS6,
    RTF_BLACKHOLE,
    RTF_DONE,
    RTF_DYNAMIC,
    RTF_GATEWAY,
    RTF_HOST,
    RTF_PROTO1,
    RTF_PROTO2,
    RTF_PROTO3,
    RTF_REJECT,
    RTF_STATIC,
    RTF_STICKY,
    Route,
    RouteTable,
)
from vimage.protosw import ANY, Protocol, existing
from vimage.wire import WireError
from vimage.wire import rtmsg as m
from vimage.wire.ipv6 import needs_zone

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.in_ import InAddr
    from vimage.netinet6.in6 import In6Addr
    from vimage.vnet import Vnet

AF_ROUTE = m.AF_ROUTE
NS = 1_000_000_000
# the flags a request may set: FreeBSD's RTF_FMASK, and GATEWAY and HOST, which say
# what the gateway and destination are
RTF_FMASK = (RTF_PROTO1 | RTF_PROTO2 | RTF_PROTO3 | RTF_BLACKHOLE | RTF_REJECT | RTF_STATIC
             | RTF_STICKY)
USER_FLAGS = RTF_GATEWAY | RTF_HOST | RTF_FMASK
IFF_PUBLIC = 0xFFFF  # the interface flags if_msghdr reports (no vimage-private bits)
IFF_RUNNING = 0x40
# FreeBSD's strerror() for what a request can fail with (libc's sys_errlist wording)
MESSAGES = MappingProxyType({
    errno.EEXIST: "File exists", errno.ESRCH: "No such process",
    errno.ENETUNREACH: "Network is unreachable", errno.EINVAL: "Invalid argument",
    errno.EADDRNOTAVAIL: "Can't assign requested address",
    errno.EAFNOSUPPORT: "Address family not supported by protocol family",
    errno.EPROTONOSUPPORT: "Protocol not supported", errno.EOPNOTSUPP: "Operation not supported",
})


def strerror(err: int) -> str:
    return MESSAGES.get(err) or os.strerror(err)


class Listener(TypingProtocol):
    """What the kernel needs of a routing socket (vimage.socket.rtsock.RouteSocket)."""

    proto: int  # address family filter: 0 for every family
    fib: int
    useloopback: bool
    msgfilter: int  # ROUTE_MSGFILTER: a bitmask of 1 << RTM_x, 0 for every type

    def deliver(self, msg: bytes) -> bool: ...


class RtsockStats:
    __slots__ = ("dropped", "requests", "sent")

    def __init__(self) -> None:
        self.requests = self.sent = self.dropped = 0


class RtsockState:
    """A vnet's routing sockets (FreeBSD's per-vnet rtsock control block list)."""

    __slots__ = ("sockets", "stats", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.sockets: list[Any] = []
        self.stats = RtsockStats()


def listening(vnet: Vnet) -> bool:
    state = existing(vnet, "rtsock")  # lazy: no state, no listener
    return bool(state is not None and state.sockets)


def broadcast(vnet: Vnet, msg: bytes, family: int = m.AF_INET, fib: int = -1,
              sender: Any = None) -> None:
    """Send `msg` to every listener that wants it (FreeBSD rt_dispatch / rts_filter):
    of `fib` (-1: every fib, as interface messages go), of `family` unless the socket
    takes all, of the type its ROUTE_MSGFILTER lets through; not back to `sender`
    without SO_USELOOPBACK."""
    state = existing(vnet, "rtsock")
    if state is None or not state.sockets:
        return
    bit = 1 << msg[3]
    for so in list(state.sockets):
        if so is sender and not so.useloopback:
            continue
        if (so.proto and family and so.proto != family) or (fib >= 0 and so.fib != fib):
            continue
        if so.msgfilter and not so.msgfilter & bit:
            continue
        if so.deliver(msg):
            state.stats.sent += 1
        else:
            state.stats.dropped += 1


# -- building messages ---------------------------------------------------------------------
def link_sa(ifp: Ifnet, named: bool = True) -> bytes:
    """The interface as a sockaddr_dl: named with its address (RTA_IFP), or the bare
    `link#N` an interface route's gateway is."""
    if not named:
        return m.sockaddr_dl(ifp.index, iftype=24 if ifp.is_loopback else 6)
    return m.sockaddr_dl(ifp.index, ifp.name, ifp.mac, 24 if ifp.is_loopback else 6)


def route_msg(mtype: int, route: Route, *, pid: int = 0, seq: int = 0, err: int = 0,
              with_ifp: bool = False, flags: int | None = None,
              now_ns: int = 0) -> bytes:
    """An rt_msghdr describing `route` (FreeBSD rtsock_msg_buffer from the nexthop)."""
    addrs = {m.RTA_DST: m.sockaddr_in(route.dst)}
    if route.flags & RTF_GATEWAY:
        addrs[m.RTA_GATEWAY] = m.sockaddr_in(route.gateway)
    else:
        addrs[m.RTA_GATEWAY] = link_sa(route.ifp, named=False)
    if not route.flags & RTF_HOST:
        addrs[m.RTA_NETMASK] = m.sockaddr_in(MASKS[route.plen])
    if with_ifp:
        addrs[m.RTA_IFP] = link_sa(route.ifp)
        if route.ifa is not None:
            addrs[m.RTA_IFA] = m.sockaddr_in(route.ifa.addr)
    expire = route.expire // NS if route.expire else 0
    rmx = (0, route.mtu or route.ifp.mtu, route.hopcount, expire, 0, 0, 0, 0, 0, route.use,
           route.weight, route.nhidx, 0, 0)
    return m.RtMsg(mtype, (route.flags if flags is None else flags), addrs, route.ifp.index,
                   pid, seq, err, 0, 0, rmx).pack()


def route_event(vnet: Vnet, mtype: int, route: Route) -> None:
    """Tell listeners a route came or went (not at a request: addresses, expiry)."""
    if listening(vnet):
        broadcast(vnet, route_msg(mtype, route, flags=route.flags | RTF_DONE), fib=route.fib)


def miss(vnet: Vnet, dst: int, fib: int = 0) -> None:
    """RTM_MISS: a lookup for `dst` found no route (FreeBSD rt_missmsg_fib)."""
    if listening(vnet):
        broadcast(vnet, m.RtMsg(m.RTM_MISS, 0, {m.RTA_DST: m.sockaddr_in(dst)}).pack(),
                  fib=fib)


def redirect(vnet: Vnet, dst: int, gateway: int, author: int, fib: int = 0) -> None:
    """RTM_REDIRECT: an ICMP redirect from `author` said to reach `dst` via `gateway`."""
    if listening(vnet):
        addrs = {m.RTA_DST: m.sockaddr_in(dst), m.RTA_GATEWAY: m.sockaddr_in(gateway),
                 m.RTA_AUTHOR: m.sockaddr_in(author)}
        flags = RTF_GATEWAY | RTF_HOST | RTF_DYNAMIC | RTF_DONE
        broadcast(vnet, m.RtMsg(m.RTM_REDIRECT, flags, addrs).pack(), fib=fib)


def losing(vnet: Vnet, route: Route) -> None:
    """RTM_LOSING: a transport suspects the route is bad (TCP retransmitting: in_losing)."""
    if listening(vnet):
        broadcast(vnet, route_msg(m.RTM_LOSING, route), fib=route.fib)


def ifinfo(ifp: Ifnet) -> None:
    """RTM_IFINFO: an interface went up or down (FreeBSD rt_ifmsg)."""
    vnet = ifp.vnet
    if not listening(vnet):
        return
    state = m.LINK_STATE_UP if ifp.flags & IFF_RUNNING else m.LINK_STATE_DOWN
    counters = (ifp.ipackets, ifp.ierrors, ifp.opackets, ifp.oerrors, 0, ifp.ibytes,
                ifp.obytes, 0, 0, ifp.iqdrops, ifp.oqdrops, 0)
    msg = m.if_msg(m.RTM_IFINFO, ifp.index, ifp.flags & IFF_PUBLIC, state, ifp.mtu, counters,
                   iftype=24 if ifp.is_loopback else 6, addrlen=0 if ifp.mac is None else 6)
    broadcast(vnet, msg, family=0)


def ifannounce(ifp: Ifnet, what: int) -> None:
    """RTM_IFANNOUNCE: an interface arrived in or is leaving the vnet."""
    if listening(ifp.vnet):
        broadcast(ifp.vnet, m.ifannounce_msg(ifp.index, ifp.name, what), family=0)


def newaddr(ia: InAddr, mtype: int) -> None:
    """RTM_NEWADDR / RTM_DELADDR for an IPv4 address (FreeBSD rt_newaddrmsg_fib)."""
    ifp = ia.ifp
    if not listening(ifp.vnet):
        return
    addrs = {m.RTA_IFA: m.sockaddr_in(ia.addr), m.RTA_IFP: link_sa(ifp),
             m.RTA_NETMASK: m.sockaddr_in(ia.mask)}
    if ia.broadcast:
        addrs[m.RTA_BRD] = m.sockaddr_in(ia.broadcast)
    broadcast(ifp.vnet, m.ifa_msg(mtype, ifp.index, 1, addrs))


# -- requests --------------------------------------------------------------------------------
def write(vnet: Vnet, data: bytes, sender: Any) -> None:
    """A routing socket's write(): carry out the request, send the reply to listeners,
    raise the error as FreeBSD's write(2) returns it."""
    state: RtsockState = vnet.rtsock
    state.stats.requests += 1
    family = _dst_family(data)
    output = route_output6 if family == m.AF_INET6 else route_output
    reply, err = output(vnet, data, sender.fib, os.getpid())
    broadcast(vnet, reply, family, sender.fib, sender)
    if err:
        raise OSError(err, strerror(err))


def _dst_family(data: bytes) -> int:
    """The family of a request's RTA_DST (AF_INET if it cannot tell: route_output then
    rejects the message as it always did)."""
    try:
        dst = m.parse_rtmsg(data).addrs.get(m.RTA_DST)
    except WireError:
        return m.AF_INET
    return dst.family if dst is not None and dst.family == m.AF_INET6 else m.AF_INET


def _plen(mask: int) -> int:
    plen = 32 - ((~mask & 0xFFFFFFFF).bit_length())
    if MASKS[plen] != mask:
        raise OSError(errno.EINVAL, "non-contiguous netmask")
    return plen


def route_output(vnet: Vnet, data: bytes, fib: int, pid: int) -> tuple[bytes, int]:
    """Carry out one request (FreeBSD route_output): (reply, errno). A message that is
    malformed raises OSError (EINVAL; a wrong version EPROTONOSUPPORT, as FreeBSD) and
    changes nothing."""
    try:
        req = m.parse_rtmsg(data)
    except WireError as exc:
        if exc.reason == "badvers":
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported") from None
        raise OSError(errno.EINVAL, "Invalid argument") from None
    if req.type not in (m.RTM_ADD, m.RTM_DELETE, m.RTM_CHANGE, m.RTM_GET):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    dst_sa = req.addrs.get(m.RTA_DST)
    if dst_sa is None or dst_sa.family != m.AF_INET:
        raise OSError(errno.EINVAL, "Invalid argument")
    mask_sa = req.addrs.get(m.RTA_NETMASK)
    if mask_sa is not None and mask_sa.family not in (m.AF_INET, m.AF_UNSPEC):
        raise OSError(errno.EINVAL, "Invalid argument")
    plen = _plen(int(mask_sa.addr)) if mask_sa is not None and not req.flags & RTF_HOST else 32
    exact = mask_sa is not None or bool(req.flags & RTF_HOST)
    table = vnet.route.table(fib)
    dst = int(dst_sa.addr) & MASKS[plen]
    try:
        route = _do(vnet, table, req, dst, plen, exact)
    except OSError as exc:
        reply = bytearray(data)
        m.RT_MSGHDR.pack_into(reply, 0, *_with_errno(req, exc.errno or errno.EINVAL))
        return bytes(reply), exc.errno or errno.EINVAL
    reply = route_msg(req.type, route, pid=pid, seq=req.seq, flags=route.flags | RTF_DONE,
                      with_ifp=req.type == m.RTM_GET and bool(req.addrs_mask & m.RTA_IFP))
    return reply, 0


def _with_errno(req: m.ParsedRtMsg, err: int) -> tuple[int, ...]:
    return (req.length, req.version, req.type, req.index, 0, req.flags, req.addrs_mask,
            req.pid, req.seq, err, req.fmask, req.inits, *req.rmx)


def _do(vnet: Vnet, table: RouteTable, req: m.ParsedRtMsg, dst: int, plen: int,
        exact: bool) -> Route:
    gw_sa = req.addrs.get(m.RTA_GATEWAY)
    gw = int(gw_sa.addr) if gw_sa is not None and gw_sa.family == m.AF_INET else None
    if req.type == m.RTM_GET:
        route = table.get(dst, plen) if exact else table.lookup(dst)
        if route is None:
            raise OSError(errno.ESRCH, "No such process")
        if gw is not None and route.group is not None:
            route = next((p for p in route.group if p.gateway == gw), route)
        return route
    if req.type == m.RTM_DELETE:
        return table.delete(dst, plen, gw)
    if req.type == m.RTM_ADD:
        ifp, ifa, gateway, flags = _nexthop(vnet, table, req, gw_sa)
        route = Route(dst, plen, ifp, flags, gateway, ifa=ifa)
        _metrics(route, req)
        return table.add(route, multipath=bool(vnet.route.multipath))
    return _change(vnet, table, req, dst, plen, gw_sa)


def _change(vnet: Vnet, table: RouteTable, req: m.ParsedRtMsg, dst: int, plen: int,
            gw_sa: m.Sockaddr | None) -> Route:
    """RTM_CHANGE: a new next hop if one is given, the flags route(8) may set, metrics.
    In a multipath group the path through the given gateway changes (else the first)."""
    head = table.get(dst, plen)
    if head is None:
        raise OSError(errno.ESRCH, "No such process")
    route = head
    new_hop = gw_sa is not None or bool(req.addrs_mask & (m.RTA_IFP | m.RTA_IFA))
    if new_hop:
        if gw_sa is None:  # only -ifp / -ifa: the gateway stays
            keep_gw = route.flags & RTF_GATEWAY
            gw_sa = m.Sockaddr(m.AF_INET, route.gateway) if keep_gw else m.Sockaddr(
                m.AF_LINK, route.ifp.name)
            req = req._replace(flags=(req.flags & ~RTF_GATEWAY) | keep_gw)
        ifp, ifa, gateway, flags = _nexthop(vnet, table, req, gw_sa)
        if head.group is not None:
            route = next((p for p in head.group if p.gateway == gateway), head)
        route.ifp, route.ifa, route.gateway = ifp, ifa, gateway
        route.flags = (route.flags & ~RTF_GATEWAY) | (flags & RTF_GATEWAY)
    settable = USER_FLAGS & ~(RTF_GATEWAY | RTF_HOST)
    route.flags = (route.flags & ~settable) | (req.flags & settable)
    _metrics(route, req)
    if route.expire:
        vnet.route.arm(route.expire)
    table.changed()
    return route


def _metrics(route: Route, req: m.ParsedRtMsg) -> None:
    inits = req.inits
    if inits & m.RTV_MTU:
        route.mtu = req.metric("mtu")
    if inits & m.RTV_HOPCOUNT:
        route.hopcount = req.metric("hopcount")
    if inits & m.RTV_WEIGHT:
        route.weight = max(1, req.metric("weight"))
    if inits & m.RTV_EXPIRE:
        expire = req.metric("expire")  # absolute, in seconds of the kernel's clock
        route.expire = expire * NS if expire else 0


def _ifp_of(vnet: Vnet, sa: m.Sockaddr) -> Ifnet:
    for ifp in vnet.ifaces.values():
        if (sa.index and ifp.index == sa.index) or (not sa.index and ifp.name == sa.addr):
            return ifp
    raise OSError(errno.ENETUNREACH, "Network is unreachable")


def _nexthop(vnet: Vnet, table: RouteTable, req: m.ParsedRtMsg, gw_sa: m.Sockaddr | None
             ) -> tuple[Ifnet, InAddr | None, int, int]:
    """Interface, address, gateway and flags of a new path (FreeBSD rt_getifa_fib)."""
    flags = req.flags & USER_FLAGS
    local = vnet.ip.local
    ifp_sa, ifa_sa = req.addrs.get(m.RTA_IFP), req.addrs.get(m.RTA_IFA)
    ifp = _ifp_of(vnet, ifp_sa) if ifp_sa is not None and ifp_sa.family == m.AF_LINK else None
    ifa = None
    if ifa_sa is not None and ifa_sa.family == m.AF_INET:
        ifa = local.get(int(ifa_sa.addr))
        if ifa is None:
            raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
    if gw_sa is None:
        raise OSError(errno.EINVAL, "Invalid argument")
    if gw_sa.family == m.AF_LINK:  # an interface route through a named interface
        ifp = _ifp_of(vnet, gw_sa)
        return ifp, ifa or (ifp.addrs[0] if ifp.addrs else None), 0, flags & ~RTF_GATEWAY
    if gw_sa.family != m.AF_INET:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported")
    gateway = int(gw_sa.addr)
    own = local.get(gateway)
    if not flags & RTF_GATEWAY or (own is not None and not own.ifp.is_loopback):
        # -interface, or our own address on a network (BSD's old idiom): on that link
        if own is None:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return ifp or own.ifp, ifa or own, 0, flags & ~RTF_GATEWAY
    if ifp is None:
        via = table.lookup(gateway)
        if via is None or via.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE):
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        ifp = via.ifp
        if ifa is None and via.ifa is not None and via.ifa.ifp is ifp:
            ifa = via.ifa
    if ifa is None and ifp.addrs:
        ifa = next((ia for ia in ifp.addrs if gateway & ia.mask == ia.net), ifp.addrs[0])
    return ifp, ifa, gateway, flags


# -- IPv6 (FreeBSD rtsock.c with INET6; scopes as KAME: netinet6/scope6.c) ------------------
# Inside the kernel a link-local destination is kept with its zone embedded in bits 96..111
# (vimage.netinet6.in6.zkey) and a link-local gateway bare, the route's interface being its
# zone. On the socket, as FreeBSD with net.inet6.ip6.deembed_scopeid=1 (the default):
# what the kernel sends carries the zone in sin6_scope_id and a clear address; what it
# receives may carry it either way -- sin6_scope_id (route(8)'s way) wins, else an
# embedded zone is taken (sa6_embedscope leaves such an address alone).
def _zone(sa: m.Sockaddr) -> tuple[int, int]:
    """(bare address, zone index) of a received sockaddr_in6 (zone 0: none)."""
    addr = int(sa.addr)
    if not needs_zone(addr & ~(0xFFFF << 96)):
        return addr, 0
    embedded = (addr >> 96) & 0xFFFF
    return addr & ~(0xFFFF << 96), sa.index or embedded


def sockaddr6(key: int, ifp: Ifnet | None = None) -> bytes:
    """A sockaddr_in6 for a kernel address: an embedded zone (or, for a bare link-local
    gateway, `ifp`) goes out in sin6_scope_id."""
    bare = key & ~(0xFFFF << 96)
    if not needs_zone(bare):
        return m.sockaddr_in6(key)
    zone = (key >> 96) & 0xFFFF or (ifp.index if ifp is not None else 0)
    return m.sockaddr_in6(bare, zone)


def route_msg6(mtype: int, route: Route, *, pid: int = 0, seq: int = 0,
               with_ifp: bool = False, flags: int | None = None) -> bytes:
    """An rt_msghdr describing an IPv6 `route`."""
    addrs = {m.RTA_DST: sockaddr6(route.dst)}
    if route.flags & RTF_GATEWAY:
        addrs[m.RTA_GATEWAY] = sockaddr6(route.gateway, route.ifp)
    else:
        addrs[m.RTA_GATEWAY] = link_sa(route.ifp, named=False)
    if not route.flags & RTF_HOST:
        addrs[m.RTA_NETMASK] = m.sockaddr_in6(MASKS6[route.plen])
    if with_ifp:
        addrs[m.RTA_IFP] = link_sa(route.ifp)
        if route.ifa is not None:
            addrs[m.RTA_IFA] = sockaddr6(route.ifa.key)  # type: ignore[attr-defined]
    rmx = (0, route.mtu or route.ifp.mtu, route.hopcount, route.expire // NS, 0, 0, 0, 0, 0,
           route.use, route.weight, route.nhidx, 0, 0)
    return m.RtMsg(mtype, (route.flags if flags is None else flags), addrs, route.ifp.index,
                   pid, seq, 0, 0, 0, rmx).pack()


def route_event6(vnet: Vnet, mtype: int, route: Route) -> None:
    """Tell the listeners of the route's fib an IPv6 route came or went."""
    if listening(vnet):
        broadcast(vnet, route_msg6(mtype, route, flags=route.flags | RTF_DONE), m.AF_INET6,
                  fib=route.fib)


def newaddr6(ia: In6Addr, mtype: int) -> None:
    """RTM_NEWADDR / RTM_DELADDR for an IPv6 address (rt_newaddrmsg_fib via in6_newaddrmsg)."""
    ifp = ia.ifp
    if not listening(ifp.vnet):
        return
    addrs = {m.RTA_IFA: sockaddr6(ia.key), m.RTA_IFP: link_sa(ifp),
             m.RTA_NETMASK: m.sockaddr_in6(MASKS6[ia.plen])}
    broadcast(ifp.vnet, m.ifa_msg(mtype, ifp.index, 1, addrs), m.AF_INET6)


def _plen6(mask: int) -> int:
    plen = 128 - (~mask & MASKS6[128]).bit_length()
    if MASKS6[plen] != mask:
        raise OSError(errno.EINVAL, "non-contiguous netmask")
    return plen


def route_output6(vnet: Vnet, data: bytes, fib: int, pid: int) -> tuple[bytes, int]:
    """route_output for an AF_INET6 destination, on the IPv6 table of the socket's fib."""
    try:
        req = m.parse_rtmsg(data)
    except WireError:
        raise OSError(errno.EINVAL, "Invalid argument") from None
    if req.type not in (m.RTM_ADD, m.RTM_DELETE, m.RTM_CHANGE, m.RTM_GET):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    mask_sa = req.addrs.get(m.RTA_NETMASK)
    if mask_sa is not None and mask_sa.family not in (m.AF_INET6, m.AF_UNSPEC):
        raise OSError(errno.EINVAL, "Invalid argument")
    addr, zone = _zone(req.addrs[m.RTA_DST])
    key = addr | (zone << 96)
    if mask_sa is not None and not req.flags & RTF_HOST:
        plen = _plen6(int(mask_sa.addr))
    else:
        plen = 128
    exact = mask_sa is not None or bool(req.flags & RTF_HOST)
    try:
        route = _do6(vnet, vnet.route.table6(fib), req, key & MASKS6[plen], plen, exact)
    except OSError as exc:
        reply = bytearray(data)
        m.RT_MSGHDR.pack_into(reply, 0, *_with_errno(req, exc.errno or errno.EINVAL))
        return bytes(reply), exc.errno or errno.EINVAL
    reply = route_msg6(req.type, route, pid=pid, seq=req.seq, flags=route.flags | RTF_DONE,
                       with_ifp=req.type == m.RTM_GET and bool(req.addrs_mask & m.RTA_IFP))
    return reply, 0


def _do6(vnet: Vnet, table: RouteTable, req: m.ParsedRtMsg, dst: int, plen: int,
         exact: bool) -> Route:
    gw_sa = req.addrs.get(m.RTA_GATEWAY)
    gw = _zone(gw_sa)[0] if gw_sa is not None and gw_sa.family == m.AF_INET6 else None
    if req.type == m.RTM_GET:
        route = table.get(dst, plen) if exact else table.lookup(dst)
        if route is None:
            raise OSError(errno.ESRCH, "No such process")
        return route
    if req.type == m.RTM_DELETE:
        return table.delete(dst, plen, gw)
    if gw_sa is None:
        if req.type == m.RTM_ADD:
            raise OSError(errno.EINVAL, "Invalid argument")
        head = table.get(dst, plen)
        if head is None:
            raise OSError(errno.ESRCH, "No such process")
        _metrics(head, req)
        table.changed()
        return head
    ifp, ifa, gateway, flags = _nexthop6(vnet, table, req, gw_sa)
    if req.type == m.RTM_ADD:
        route = Route(dst, plen, ifp, flags, gateway, ifa=ifa, width=128)  # type: ignore
        _metrics(route, req)
        return table.add(route, multipath=bool(vnet.route.multipath))
    route = table.get(dst, plen)  # RTM_CHANGE
    if route is None:
        raise OSError(errno.ESRCH, "No such process")
    route.ifp, route.ifa, route.gateway = ifp, ifa, gateway  # type: ignore[assignment]
    settable = USER_FLAGS & ~RTF_HOST
    route.flags = (route.flags & ~settable) | (flags & settable)
    _metrics(route, req)
    table.changed()
    return route


def _nexthop6(vnet: Vnet, table: RouteTable, req: m.ParsedRtMsg, gw_sa: m.Sockaddr
              ) -> tuple[Ifnet, In6Addr | None, int, int]:
    """Interface, address, gateway and flags of a new IPv6 path (rt_getifa_fib, in6)."""
    flags = req.flags & USER_FLAGS
    ifp_sa = req.addrs.get(m.RTA_IFP)
    ifp = _ifp_of(vnet, ifp_sa) if ifp_sa is not None and ifp_sa.family == m.AF_LINK else None
    if gw_sa.family == m.AF_LINK:
        ifp = _ifp_of(vnet, gw_sa)
        return ifp, _first6(ifp), 0, flags & ~RTF_GATEWAY
    if gw_sa.family != m.AF_INET6:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported")
    gateway, zone = _zone(gw_sa)
    if needs_zone(gateway):  # link-local: its zone is the interface
        if not zone:
            raise OSError(errno.EINVAL, "Invalid argument")
        ifp = _ifp_of(vnet, m.Sockaddr(m.AF_LINK, "", zone))
        return ifp, _first6(ifp), gateway, flags | RTF_GATEWAY
    own = vnet.ip6.local.get(gateway)
    if not flags & RTF_GATEWAY:
        if own is None:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return ifp or own.ifp, own, 0, flags
    if ifp is None:
        via = table.lookup(gateway)
        if via is None or via.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE):
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        ifp = via.ifp
        return ifp, via.ifa, gateway, flags  # type: ignore[return-value]
    return ifp, _first6(ifp), gateway, flags


def _first6(ifp: Ifnet) -> In6Addr | None:
    af = ifp.afdata
    data = af.get(socket.AF_INET6) if af is not None else None  # afdata keys: the host's
    return data.addrs[0] if data is not None and data.addrs else None


# -- the protocol ---------------------------------------------------------------------------
def vnet_attach(vnet: Vnet) -> None:
    vnet.rtsock = RtsockState(vnet)
    vnet.route.on_expire = lambda route: route_event(vnet, m.RTM_DELETE, route)


def vnet_detach(vnet: Vnet) -> None:
    for so in list(vnet.rtsock.sockets):
        so.close()
    vnet.rtsock.sockets.clear()


def _ifattach(ifp: Ifnet) -> None:
    ifannounce(ifp, m.IFAN_ARRIVAL)


def _ifdetach(ifp: Ifnet) -> None:
    ifannounce(ifp, m.IFAN_DEPARTURE)


PROTOCOL = Protocol("rtsock", 11, "rtsock", vnet_attach, vnet_detach, domain=AF_ROUTE,
                    protocol=ANY, ifattach=_ifattach, ifdetach=_ifdetach)
"""Sockets are added where the standard set is assembled (vimage/__init__.py): the
socket class lives in the socket layer."""
