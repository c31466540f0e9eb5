"""ICMP for IPv4: echo, timestamps, error generation with rate limiting (ip_icmp.c)."""

from __future__ import annotations

import logging
from socket import AF_INET
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage import protosw
from vimage.net import rtsock
from vimage.net.route import (
    RTF_BLACKHOLE,
    RTF_DYNAMIC,
    RTF_GATEWAY,
    RTF_MODIFIED,
    RTF_REJECT,
    Route,
)
from vimage.netinet.in_ import INADDR_BROADCAST, is_multicast
from vimage.sched import NS_PER_S, PpsLimit
from vimage.stats import LazySlots, count_drop, counters
from vimage.sysctl import Oid, oids
from vimage.wire import WireError
from vimage.wire import icmp as wicmp
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import HEADER, PROTO_ICMP, ntoa, walk_options

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vimage.net.ifnet import Ifnet
    from vimage.net.route import RouteTable
    from vimage.vnet import Vnet

SYSCTLS: tuple[Oid, ...] = oids("net.inet.icmp", "icmp", (
    ("icmplim", "Maximum number of ICMP responses per second (0 = unlimited)", 0, 2**31 - 1),
    ("bmcastecho", "Reply to ICMP echo sent to broadcast/multicast", 0, 1),
    ("quotelen", "Bytes of the original datagram after its header quoted in ICMP errors", 0, 548),
    ("drop_redirect", "Ignore ICMP redirects", 0, 1),
    ("log_redirect", "Log ICMP redirects to the console", 0, 1),
    ("redirtimeout", "Delay in seconds before expiring route created by ICMP redirect", 0,
     2**31 - 1),
))

OPT_RR = 7  # IP options icmp_reflect keeps (RFC 791)
OPT_TS = 68
OPT_SECURITY = 130
REDIRECT_NET = 0  # ICMP redirect codes (RFC 792); a router sends host redirects only
REDIRECT_HOST = 1

# netstat's histogram labels, indexed by ICMP type ("" = not shown)
TYPE_NAMES: tuple[str, ...] = (
    "echo reply", "", "", "destination unreachable", "source quench", "routing redirect",
    "", "", "echo", "router advertisement", "router solicitation", "time exceeded",
    "parameter problem", "time stamp", "time stamp reply", "information request",
    "information request reply", "address mask request", "address mask reply",
)

STAT_LINES: tuple[tuple[str, str], ...] = (
    ("error", "{} calls to icmp_error"),
    ("oldicmp", "{} errors not generated in response to an icmp message"),
    ("ratelimited", "{} errors not sent because of the rate limit"),
    ("badcode", "{} messages with bad code fields"),
    ("tooshort", "{} messages less than the minimum length"),
    ("checksum", "{} bad checksums"),
    ("badlen", "{} messages with bad length"),
    ("bmcastecho", "{} multicast echo requests ignored"),
    ("reflect", "{} message responses generated"),
    ("badaddr", "{} invalid return addresses"),
    ("noroute", "{} no return routes"),
    ("bmcasttstamp", "{} multicast timestamp requests ignored"),
)


# a message the parser refuses: its WireError reason -> the counter ("" for any other)
_PARSE_DROPS = MappingProxyType({"badsum": "checksum", "": "tooshort"})

_IcmpCounters = counters("_IcmpCounters", tuple(name for name, _ in STAT_LINES))


class IcmpStats(_IcmpCounters):  # type: ignore[misc,valid-type]
    """The counters plus per-type input and output histograms."""

    __slots__ = ("inhist", "outhist")

    def __init__(self) -> None:
        super().__init__()
        self.inhist = [0] * 19
        self.outhist = [0] * 19


class IcmpState(LazySlots):
    __slots__ = ("bmcastecho", "ctlx", "drop_redirect", "icmplim", "lim", "log_redirect",
                 "quotelen", "redirtimeout", "stats", "vnet")
    lazy = MappingProxyType({"stats": IcmpStats, "lim": PpsLimit})  # on first read

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # quoted protocol number -> bound ctlinput: the vnet's table once bound
        self.ctlx: Mapping[int, Callable[..., None]] = protosw.UNBOUND
        self.icmplim = 200
        self.bmcastecho = 0
        self.quotelen = 8
        self.drop_redirect = 0  # FreeBSD's defaults
        self.redirtimeout = 600
        self.log_redirect = 0

    def _rate_ok(self) -> bool:
        return self.lim.check(self.vnet.kernel.sched.now_ns(), self.icmplim)

    def send(self, src: int, dst: int, msg: bytes, options: bytes = b"",
             tos: int = 0) -> None:
        """icmp_send: out with IP options if given (a reflected record route)."""
        st = self.stats
        if msg[0] < len(st.outhist):
            st.outhist[msg[0]] += 1
        ip = self.vnet.ip
        try:
            if not options:
                ip.output(PROTO_ICMP, src, dst, msg, tos=tos)
                return
            hlen = 20 + len(options)
            header = bytearray(HEADER.pack(0x40 | hlen >> 2, tos, hlen + len(msg),
                                           ip.next_ident(), 0, ip.ttl, PROTO_ICMP, 0, src,
                                           dst) + options)
            header[10:12] = checksum(header).to_bytes(2, "big")
            ip.output_packet(bytes(header) + msg, dst)
        except OSError:
            st.noroute += 1

    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        st = self.stats
        try:
            msg = wicmp.parse(memoryview(pkt)[hlen:])
        except WireError as exc:
            count_drop(st, exc.reason, _PARSE_DROPS)
            return
        if msg.type < len(st.inhist):
            st.inhist[msg.type] += 1
        vnet = self.vnet
        ip = vnet.ip
        is_bcast = dst == INADDR_BROADCAST or dst in ip.bcast or is_multicast(dst)
        if msg.type == wicmp.ECHO or msg.type == wicmp.TSTAMP:
            if msg.code != 0:
                st.badcode += 1
            elif is_bcast and not self.bmcastecho:
                st.bmcastecho += 1
            else:
                self._reflect(ifp, msg, src, dst, is_bcast, pkt[20:hlen], pkt[1])
        elif msg.type in wicmp.ERROR_TYPES:
            if msg.type == wicmp.REDIRECT:  # for the routing table, not the transports
                self._redirect(ifp, msg, src)
            else:
                self._notify(msg)
        vnet.raw.input(pkt, PROTO_ICMP, src, dst)

    def _reflect(self, ifp: Ifnet, msg: wicmp.IcmpRepr, src: int, dst: int,
                 is_bcast: bool, options: bytes = b"", tos: int = 0) -> None:
        """icmp_reflect: the reply keeps the request's TOS and its record route and
        timestamp options (FreeBSD reuses the request's header)."""
        st = self.stats
        if src == 0 or is_multicast(src) or src == INADDR_BROADCAST or src in self.vnet.ip.bcast:
            st.badaddr += 1
            return
        reply_src = dst
        if is_bcast:
            reply_src = next((ia.addr for ia in ifp.addrs), 0)
            if not reply_src:
                return
        if msg.type == wicmp.ECHO:
            out = wicmp.build(wicmp.ECHO_REPLY, 0, msg.rest, msg.payload)
        else:
            if len(msg.payload) < 12:
                st.badlen += 1
                return
            now_ms = (self.vnet.kernel.sched.now_ns() // 1_000_000) % 86_400_000
            stamps = bytes(msg.payload[:4]) + now_ms.to_bytes(4, "big") * 2
            out = wicmp.build(wicmp.TSTAMP_REPLY, 0, msg.rest, stamps)
        st.reflect += 1
        self.send(reply_src, src, out, reflected_options(options), tos)

    def _redirect(self, ifp: Ifnet, msg: wicmp.IcmpRepr, author: int) -> None:
        """An ICMP redirect (FreeBSD icmp_input, icmp_verify_redirect_gateway and
        rib_add_redirect): a host route to the quoted destination via the new gateway,
        dynamic (D) and expiring after redirtimeout, and RTM_REDIRECT to routing sockets.

        The RFC 1122 3.2.2.2 checks, as FreeBSD makes them: the new gateway is on a
        connected network and not one of our addresses; the redirect comes from the
        current first-hop gateway for the destination; the destination is not directly
        connected. A host route that exists stays, except one an earlier redirect made,
        which takes the new gateway and the M flag (RTF_MODIFIED, as FreeBSD's
        rtredirect did). A router ignores redirects (RFC 1812 5.2.7.2)."""
        quoted = msg.payload
        vnet = self.vnet
        if self.log_redirect and len(quoted) >= 20:  # (icmp_input's printf, as it words it)
            logging.getLogger("vimage.icmp").info(
                "icmp redirect from %s: %s => %s (vnet %s)", ntoa(author),
                ntoa(int.from_bytes(quoted[16:20], "big")), ntoa(msg.rest), vnet.name)
        if self.drop_redirect or vnet.ip.forwarding:
            return
        if msg.code > 3:
            self.stats.badcode += 1
            return
        if len(quoted) < 28 or quoted[0] >> 4 != 4 or quoted[0] & 0x0F < 5:
            self.stats.badlen += 1  # ICMP_ADVLENMIN: a header and 8 bytes quoted
            return
        dst = int.from_bytes(quoted[16:20], "big")
        gateway = msg.rest
        rt = vnet.route.tables[ifp.fib] if ifp.fib < len(vnet.route.tables) else vnet.rt
        via = _redirect_target(vnet, rt, gateway)
        current = rt.lookup(dst)
        if (via is None or current is None or not current.flags & RTF_GATEWAY
                or current.gateway != author):
            return
        expire = vnet.kernel.sched.now_ns() + self.redirtimeout * NS_PER_S
        if current.plen == 32:
            if not current.flags & RTF_DYNAMIC:
                return  # "If host route already exists, ignore redirect"
            current.gateway, current.ifp, current.ifa = gateway, via.ifp, via.ifa
            current.flags |= RTF_MODIFIED
            current.expire = expire if self.redirtimeout else 0
            rt.changed()
            if current.expire:
                vnet.route.arm(current.expire)
        else:
            rt.add(Route(dst, 32, via.ifp, RTF_GATEWAY | RTF_DYNAMIC, gateway, ifa=via.ifa,
                         expire=expire if self.redirtimeout else 0))
        rtsock.redirect(vnet, dst, gateway, author, fib=rt.fibnum)

    def _notify(self, msg: wicmp.IcmpRepr) -> None:
        """Tell the transport whose datagram caused an error (FreeBSD pr_ctlinput): its
        `ctlinput` in the protocol switch, found by the quoted protocol number."""
        quoted = msg.payload
        if len(quoted) < 28 or quoted[0] >> 4 != 4:
            self.stats.badlen += 1
            return
        qhlen = (quoted[0] & 0x0F) << 2
        if len(quoted) < qhlen + 8:
            self.stats.badlen += 1
            return
        handler = self.ctlx.get(quoted[9])
        if handler is None and self.ctlx is protosw.UNBOUND:
            table = protosw.bound_table(self.vnet, "ctlinputs", AF_INET)
            if table is None:
                return  # a dead vnet
            self.ctlx = table
            handler = table.get(quoted[9])
        if handler is not None:
            handler(msg.type, msg.code, bytes(quoted), msg.rest)


def _redirect_target(vnet: Vnet, rt: RouteTable, gateway: int) -> Route | None:
    """The connected route a redirect's new gateway is reached by (ifa_ifwithnet), or
    None if it is not on a connected network or is one of our own addresses."""
    via = rt.lookup(gateway)
    if via is None or via.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE) or (
            gateway in vnet.ip.local) or via.ifp.is_loopback:
        return None
    return via


def reflected_options(options: bytes) -> bytes:
    """The options icmp_reflect copies into a reply: record route, timestamp and
    security (a source route is not reversed: FreeBSD refuses those by default), padded
    with end-of-list bytes to a multiple of 4."""
    out = b"".join(options[i:i + length] for i, kind, length in walk_options(options, 0,
                                                                           len(options))
                   if kind in (OPT_RR, OPT_TS, OPT_SECURITY) and length)
    return out + b"\x00" * (-len(out) % 4)


def quoted_ports(quoted: bytes) -> tuple[int, int, int, int]:
    """(src, dst, sport, dport) of the packet an ICMP error quotes (checked by _notify to
    hold its IP header and 8 bytes: the ports of UDP and TCP)."""
    qhlen = (quoted[0] & 0x0F) << 2
    return (int.from_bytes(quoted[12:16], "big"), int.from_bytes(quoted[16:20], "big"),
            (quoted[qhlen] << 8) | quoted[qhlen + 1], (quoted[qhlen + 2] << 8) | quoted[qhlen + 3])


def error(vnet: Vnet, pkt: bytes, type_: int, code: int, rest: int = 0) -> None:
    """Send an ICMP error about `pkt` (an IPv4 packet this vnet received) to its source."""
    icmp = vnet.icmp
    st = icmp.stats
    st.error += 1
    hlen = (pkt[0] & 0x0F) << 2
    if ((pkt[6] << 8) | pkt[7]) & 0x1FFF:
        return  # only about the first fragment
    if pkt[9] == PROTO_ICMP and (
            len(pkt) < hlen + 1 or pkt[hlen] in wicmp.ERROR_TYPES or pkt[hlen] > 18):
        st.oldicmp += 1
        return
    src = int.from_bytes(pkt[12:16], "big")
    dst = int.from_bytes(pkt[16:20], "big")
    ip = vnet.ip
    if (src == 0 or src == INADDR_BROADCAST or is_multicast(src) or src in ip.bcast
            or dst == INADDR_BROADCAST or is_multicast(dst) or dst in ip.bcast):
        return
    if not icmp._rate_ok():
        st.ratelimited += 1
        return
    quoted = pkt[:hlen + icmp.quotelen]
    if type_ == wicmp.UNREACH and code == wicmp.UNREACH_NEEDFRAG:
        rest &= 0xFFFF
    msg = wicmp.build_error(type_, code, quoted, rest)
    try:
        reply_src = dst if dst in ip.local else ip.select_source(src)
    except OSError:
        st.noroute += 1
        return
    icmp.send(reply_src, src, msg)


def vnet_attach(vnet: Vnet) -> None:
    vnet.icmp = IcmpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    return None
