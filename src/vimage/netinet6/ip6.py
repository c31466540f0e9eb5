"""IPv6 input, output and forwarding (FreeBSD ip6_input.c, ip6_output.c, ip6_forward.c,
dest6.c, route6.c).

Input checks the fixed header in ip6_input's order, runs the hop-by-hop options, then
delivers or forwards. Delivery walks the extension headers (destination options,
routing, fragment) and hands the upper-layer header to the protocol the switch bound
to its next-header value (`protox`, as IPv4's), as ip6_input's `nxt` loop does.
Upper layers call `output(nxt, src, dst, payload, hlim=...)`.
"""

from __future__ import annotations

import errno
from socket import AF_INET6
from typing import TYPE_CHECKING

from vimage import protosw
from vimage.net import offload, pfil
from vimage.net.ifnet import IFF_LOOPBACK, IFF_UP
from vimage.net.offload import LARGE
from vimage.net.route import RTF_BLACKHOLE, RTF_GATEWAY, RTF_REJECT
from vimage.netinet6 import in6
from vimage.netinet6.frag6 import Reassembler, fragment
from vimage.sched import NS_PER_S
from vimage.stats import counters
from vimage.sysctl import Oid, oids
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6
from vimage.wire.ethernet import ETHERTYPE_IPV6
from vimage.wire.ipv6 import (
    HEADER_LEN,
    MIN_MTU,
    NXT_DSTOPTS,
    NXT_FRAGMENT,
    NXT_HOPOPTS,
    NXT_NONE,
    NXT_ROUTING,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vimage.net.ifnet import Ifnet
    from vimage.net.route import Route
    from vimage.netinet6.nd6 import NdEntry
    from vimage.vnet import Vnet

_from_bytes = int.from_bytes
ETH_IP6 = ETHERTYPE_IPV6.to_bytes(2, "big")
_HLIM: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(256))  # a hop limit byte, made once
_NOT_FAST = RTF_REJECT | RTF_BLACKHOLE  # route flags that leave the forwarding fast path
PMTU_EXPIRE_S = 600  # RFC 8201 5.3: try a larger MTU again after 10 minutes
PMTU_LIMIT = 4096  # destinations with a learnt path MTU (a flood cannot grow it further)
MAX_EXTHDRS = 40  # extension headers walked before giving up (ip6s_toomanyhdr)

SYSCTLS: tuple[Oid, ...] = oids("net.inet6.ip6", "ip6", (
    ("forwarding", "Enable IPv6 forwarding between interfaces", 0, 1),
    ("hlim", "Default hop limit", 1, 255),
    ("maxfragpackets", "Maximum packets in reassembly queue", 0, 2**20),
    ("maxfrags", "Maximum fragments in reassembly queues", 0, 2**20),
    ("maxfragsperpacket", "Maximum fragments allowed per packet", 1, 8192),
    ("fragttl", "IPv6 fragment life time on reassembly queue, in seconds", 1, 3600),
    ("v6only", "Default value of per-socket IPV6_V6ONLY option", 0, 1),
))

STAT_LINES: tuple[tuple[str, str], ...] = (  # netstat/inet6.c ip6_stats, in its order
    ("total", "{} total packets received"),
    ("toosmall", "{} with size smaller than minimum"),
    ("tooshort", "{} with data size < data length"),
    ("badoptions", "{} with bad options"),
    ("badvers", "{} with incorrect version number"),
    ("fragments", "{} fragments received"),
    ("fragdropped", "{} fragments dropped (dup or out of space)"),
    ("fragtimeout", "{} fragments dropped after timeout"),
    ("fragoverflow", "{} fragments that exceeded limit"),
    ("atomicfrags", "{} atomic fragments"),
    ("reassembled", "{} packets reassembled ok"),
    ("delivered", "{} packets for this host"),
    ("forward", "{} packets forwarded"),
    ("cantforward", "{} packets not forwardable"),
    ("redirectsent", "{} redirects sent"),
    ("localout", "{} packets sent from this host"),
    ("rawout", "{} packets sent with fabricated ip header"),
    ("odropped", "{} output packets dropped due to no bufs, etc."),
    ("noroute", "{} output packets discarded due to no route"),
    ("fragmented", "{} output datagrams fragmented"),
    ("ofragments", "{} fragments created"),
    ("cantfrag", "{} datagrams that can't be fragmented"),
    ("badscope", "{} packets that violated scope rules"),
    ("notmember", "{} multicast packets which we don't join"),
    ("toomanyhdr", "{} packets discarded because of too many headers"),
    ("sources_none", "{} failures of source address selection"),
    ("faultdrop", "{} packets dropped by fault injection"),
    # the rest of FreeBSD's ip6stat that netstat -s prints (netstat_stats.IP6)
    ("m1", "{} one mbuf"),
    ("mext1", "{} one ext mbuf"),
    ("mext2m", "{} two or more ext mbuf"),
    ("exthdrtoolong", "{} packets whose headers are not contiguous"),
    ("nogif", "{} tunneling packets that can't find gif"),
)

Ip6Stats = counters("Ip6Stats", tuple(name for name, _ in STAT_LINES))


class Ip6State:
    """Per-vnet IPv6 state: addresses, tunables, counters, reassembly, path MTUs."""

    __slots__ = ("forwarding", "fragttl", "hlim", "ident", "lo_done", "local", "maxfragpackets",
                 "maxfrags", "maxfragsperpacket", "pfil_fwd", "pfil_in", "pfil_out", "pmtu",
                 "protox", "reass", "stats", "v6only", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # made here, not on first read: a hot-path class (see stats.LazySlots)
        self.stats = Ip6Stats()
        self.local: dict[int, in6.In6Addr] = {}  # zone-embedded address -> its in6_ifaddr
        self.lo_done = False  # lo0's addresses are there (in6.loopback_addrs)
        self.forwarding = 0
        self.hlim = 64
        self.maxfragpackets = 1024
        self.maxfrags = 4096
        self.maxfragsperpacket = 64
        self.fragttl = 60  # IPV6_FRAGTTL
        self.v6only = 1  # FreeBSD's default: an AF_INET6 socket is IPv6 only
        self.ident = -1
        self.reass: Reassembler | None = None
        # destination -> (MTU, expiry ns), made with the first packet too big
        self.pmtu: dict[int, tuple[int, int]] | None = None
        # next header -> bound input (vimage.protosw), bound on first use as IPv4's
        self.protox: Mapping[int, Callable[..., None]] = protosw.UNBOUND
        self.pfil_in: pfil.Head = None  # every packet received
        self.pfil_fwd: pfil.Head = None  # a packet about to be forwarded
        self.pfil_out: pfil.Head = None  # every packet sent, local or forwarded

    # -- input ---------------------------------------------------------------------------
    def input(self, ifp: Ifnet, pkt: bytes) -> None:
        """ip6_input: the fixed header's checks, hop-by-hop options, then ours or not."""
        st = self.stats
        st.total += 1
        n = len(pkt)
        if n < HEADER_LEN:
            st.toosmall += 1
            return
        if pkt[0] >> 4 != 6:
            st.badvers += 1
            return
        plen = (pkt[4] << 8) | pkt[5]
        if plen + HEADER_LEN != n:
            if plen + HEADER_LEN > n:  # (a jumbo payload length 0 lands here too)
                st.tooshort += 1
                return
            pkt = pkt[:plen + HEADER_LEN]  # link-layer padding
        src = _from_bytes(pkt[8:24], "big")
        dst = _from_bytes(pkt[24:40], "big")
        # the scope checks of ip6_input: no multicast or v4-mapped source, no unspecified
        # destination, loopback addresses only on a loopback interface
        if (src >> 120 == 0xFF or not dst or src >> 32 == 0xFFFF or dst >> 32 == 0xFFFF
                or ((src == 1 or dst == 1) and not ifp.flags & IFF_LOOPBACK)):
            st.badscope += 1
            return
        if self.pfil_in is not None:
            passed = pfil.run(self.pfil_in, pkt, ifp)
            if passed is None:
                return
            if passed is not pkt:  # rewritten: read the addresses again
                pkt = passed
                src = _from_bytes(pkt[8:24], "big")
                dst = _from_bytes(pkt[24:40], "big")
        if (pkt[7] > 1 and pkt[6] and self.forwarding and self.pfil_fwd is None
                and self.pfil_out is None and not ifp.fib and dst not in self.local
                and dst >> 120 != 0xFF
                and dst >> 118 != 0x3FA and src >> 118 != 0x3FA and src):
            # FreeBSD's ip6_tryforward (ip6_fastfwd.c), inline: not for us, no hop-by-hop
            # options (next header 0), hop limit above 1, global scope at both ends, no
            # hook anywhere, a cached route whose next hop is REACHABLE with its header
            # prebuilt (Route.nh: the NdEntry), out another interface than it came in
            # (redirects), within the MTU. Anything else, and every error, is `forward`'s,
            # which decides the same step by step. Extension headers other than
            # hop-by-hop are not a router's to read (RFC 8200 4), nor are fragments.
            route = self.vnet.rt6._cache.get(dst)
            if route is not None and not route.slots and not route.flags & _NOT_FAST:
                out = route.ifp
                if route.flags & RTF_GATEWAY:
                    entry = route.nh
                    if entry is None or entry.hdr is None:
                        entry = route.nh = _neighbour(out, route.gateway)
                else:
                    entry = _neighbour(out, dst)
                if (entry is not None and entry.state == 1 and entry.ifp is out  # REACHABLE
                        and entry.hdr is not None and out is not ifp and out.flags & IFF_UP
                        and len(pkt) <= (route.mtu or out.mtu)):
                    route.use += 1
                    st.forward += 1
                    out.output(b"".join((entry.hdr, pkt[:7], _HLIM[pkt[7] - 1], pkt[8:])))
                    return
        self.input_after_pfil(pkt, ifp, src, dst)

    def input_after_pfil(self, pkt: bytes, ifp: Ifnet, src: int | None = None,
                         dst: int | None = None) -> None:
        """The rest of `input` after the in hooks: also for a packet a hook took and
        releases (ipfw's dummynet `resume`): hop-by-hop options, then ours or not."""
        if src is None or dst is None:
            src = _from_bytes(pkt[8:24], "big")
            dst = _from_bytes(pkt[24:40], "big")
        st = self.stats
        if pkt[6] == NXT_HOPOPTS and not self.hopopts(ifp, pkt, dst):
            return
        ia = self.local.get(dst)
        if ia is None:
            if dst >> 120 == 0xFF:
                data = in6.addrs_data(ifp)
                if data is None or dst not in data.groups:
                    st.notmember += 1
                    return
                self.deliver(ifp, pkt, src, dst)
                return
            if dst >> 118 == 0x3FA:  # link-local: ours only on the link it names
                ia = self.local.get(dst | ifp.index << 96)
                if ia is None and ifp.flags & IFF_LOOPBACK:
                    ia = self._looped_link_local(dst)
        if ia is not None:
            if ia.flags & in6.IN6_IFF_NOTREADY:
                return  # tentative or duplicated: not ours yet (ip6_input discards it)
            self.deliver(ifp, pkt, src, dst)
            return
        self.forward(ifp, pkt, src, dst)

    def _looped_link_local(self, dst: int) -> in6.In6Addr | None:
        """A packet to one of our link-local addresses came back through lo0."""
        for ia in self.local.values():
            if ia.addr == dst:
                return ia
        return None

    def hopopts(self, ifp: Ifnet, pkt: bytes, dst: int) -> bool:
        """ip6_hopopts_input: process the hop-by-hop options; False if the packet died."""
        if len(pkt) < HEADER_LEN + 8 or HEADER_LEN + ((pkt[41] + 1) << 3) > len(pkt):
            self.stats.tooshort += 1
            return False
        return self.options(ifp, pkt, HEADER_LEN, dst, hbh=True)

    def options(self, ifp: Ifnet, pkt: bytes, off: int, dst: int, hbh: bool) -> bool:
        """Walk an options header (hop-by-hop or destination): Pad1, PadN and router alert
        are known; an unknown option's two high bits say what to do (RFC 8200 4.2,
        ip6_unknown_opt)."""
        end = off + ((pkt[off + 1] + 1) << 3)
        try:
            walked = wip6.walk_options(pkt, off + 2, end)
        except ValueError:
            self.stats.badoptions += 1
            self.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB, wicmp6.PARAMPROB_HEADER, off + 1)
            return False
        for at, kind, length in walked:
            if kind in (wip6.OPT_PAD1, wip6.OPT_PADN):
                continue
            if kind == wip6.OPT_ROUTER_ALERT and hbh:
                if length != 2:
                    self.stats.badoptions += 1
                    self.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB,
                                          wicmp6.PARAMPROB_HEADER, at + 1)
                    return False
                continue
            action = kind >> 6
            if action == 0:
                continue  # skip over it
            self.stats.badoptions += 1
            if action == 2 or (action == 3 and dst >> 120 != 0xFF):
                self.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB, wicmp6.PARAMPROB_OPTION, at)
            return False
        return True

    def deliver(self, ifp: Ifnet, pkt: bytes, src: int, dst: int) -> None:
        """The extension header chain, then the upper layer (ip6_input's nxt loop)."""
        st = self.stats
        st.delivered += 1
        prev = 6  # the byte naming the header at `off`
        off = HEADER_LEN
        nxt = pkt[6]
        if nxt == NXT_HOPOPTS:  # processed already by input
            prev, off, nxt = off, off + ((pkt[off + 1] + 1) << 3), pkt[off]
        for _ in range(MAX_EXTHDRS):
            handler = self.protox.get(nxt)
            if handler is not None:
                handler(ifp, pkt, off, src, dst)
                return
            if nxt == NXT_NONE:
                return
            if nxt not in (NXT_DSTOPTS, NXT_ROUTING, NXT_FRAGMENT):
                if nxt == NXT_HOPOPTS:  # only allowed first (RFC 8200 4.1)
                    st.delivered -= 1
                    self.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB,
                                          wicmp6.PARAMPROB_NEXTHEADER, prev)
                    return
                handler = self.unclaimed(nxt)
                if handler is None:
                    self.noproto(ifp, pkt, prev)
                    return
                handler(ifp, pkt, off, src, dst)
                return
            if off + 8 > len(pkt) or (nxt != NXT_FRAGMENT
                                      and off + ((pkt[off + 1] + 1) << 3) > len(pkt)):
                st.tooshort += 1
                st.delivered -= 1
                return
            if nxt == NXT_FRAGMENT:
                whole = self.frag_input(ifp, pkt, off, prev, src, dst)
                if whole is None:
                    st.delivered -= 1
                    return
                pkt, nxt = whole, whole[prev]
                continue  # the fragment header is gone: same offset, next header
            if nxt == NXT_DSTOPTS:
                if not self.options(ifp, pkt, off, dst, hbh=False):
                    st.delivered -= 1
                    return
            elif pkt[off + 3]:  # routing header with segments left (route6_input)
                # type 0 is deprecated (RFC 5095) and no other type is supported:
                # a parameter problem at the type field
                st.delivered -= 1
                self.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB, wicmp6.PARAMPROB_HEADER,
                                      off + 2)
                return
            prev, off, nxt = off, off + ((pkt[off + 1] + 1) << 3), pkt[off]
        st.toomanyhdr += 1
        st.delivered -= 1

    def frag_input(self, ifp: Ifnet, pkt: bytes, off: int, prev: int, src: int,
                   dst: int) -> bytes | None:
        st = self.stats
        if self.reass is None:
            self.reass = Reassembler(self)
        whole = self.reass.insert(ifp, pkt, off, prev, src, dst)
        if whole is not None and len(whole) != len(pkt) - 8:
            st.reassembled += 1
        return whole

    def unclaimed(self, nxt: int) -> Callable[..., None] | None:
        """After a miss in `protox`: bind the vnet's tables on its first packet; then
        the ANY entry (raw IPv6) if a later protocol registers one."""
        if self.protox is protosw.UNBOUND:
            table = protosw.bound_table(self.vnet, "inputs", AF_INET6)
            if table is None:
                return None
            self.protox = table
            handler = table.get(nxt)
            if handler is not None:
                return handler
        return self.protox.get(protosw.ANY)

    def noproto(self, ifp: Ifnet, pkt: bytes, prev: int) -> None:
        """No protocol for this next header (rip6_input with no socket): parameter
        problem, unrecognised next header, pointing at the byte that named it."""
        self.stats.delivered -= 1
        self.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB, wicmp6.PARAMPROB_NEXTHEADER, prev)

    # -- forwarding ------------------------------------------------------------------------
    def _forward_piece(self, pkt: bytes, ifp_in: Ifnet, src: int, dst: int) -> None:
        self.forward(ifp_in, pkt, src, dst)

    def forward(self, ifp_in: Ifnet, pkt: bytes, src: int, dst: int) -> None:
        """ip6_forward: scope, hop limit, route, MTU (never fragmented), then out."""
        st = self.stats
        vnet = self.vnet
        if not self.forwarding or dst >> 120 == 0xFF:
            st.cantforward += 1
            return
        if src >> 118 == 0x3FA or dst >> 118 == 0x3FA or not src:
            st.cantforward += 1
            st.badscope += 1
            if src >> 118 == 0x3FA:
                vnet.icmp6.error(ifp_in, pkt, wicmp6.DST_UNREACH, wicmp6.UNREACH_BEYONDSCOPE, 0)
            return
        if self.pfil_fwd is not None:
            passed = pfil.run(self.pfil_fwd, pkt, ifp_in)
            if passed is None:
                return
            pkt = passed
            dst = _from_bytes(pkt[24:40], "big")
        hlim = pkt[7]
        if hlim <= 1:
            offl = ifp_in.offl
            if offl.partial & LARGE and len(pkt) > ifp_in.mtu:
                # a large TCP segment or a tunnel's whole outer packet: an answer per piece
                offload.resend(offl, pkt, offload.piece_limit(pkt, 40, offl.gso, 0xFFFF),
                               self._forward_piece, ifp_in, src, dst)
                return
            vnet.icmp6.error(ifp_in, pkt, wicmp6.TIME_EXCEEDED, wicmp6.TIME_EXCEED_TRANSIT, 0)
            return
        # the receiving interface's fib (FreeBSD: M_SETFIB(if_fib), ip6_forward's fibnum)
        rt6 = vnet.route.table6(ifp_in.fib) if ifp_in.fib else vnet.rt6
        route = rt6._cache.get(dst) or rt6.lookup(dst)
        if route is None:
            st.cantforward += 1
            st.noroute += 1
            vnet.icmp6.error(ifp_in, pkt, wicmp6.DST_UNREACH, wicmp6.UNREACH_NOROUTE, 0)
            return
        if route.flags & (RTF_REJECT | RTF_BLACKHOLE):
            st.cantforward += 1
            if route.flags & RTF_REJECT:
                vnet.icmp6.error(ifp_in, pkt, wicmp6.DST_UNREACH, wicmp6.UNREACH_NOROUTE, 0)
            return
        ifp = route.ifp
        mtu = route.mtu or ifp.mtu
        offl = ifp.offl
        if len(pkt) > mtu and not (offl.partial & LARGE
                                   and offload.pieces_fit(pkt, 40, offl.gso, mtu)):
            if offl.partial & LARGE:
                # a large TCP segment or a tunnel's whole outer packet whose pieces do not
                # fit: cut first, so each piece is refused (packet too big) as on a wire
                offload.resend(offl, pkt, offload.piece_limit(pkt, 40, offl.gso, mtu),
                               self._forward_piece, ifp_in, src, dst)
                return
            st.cantfrag += 1
            st.cantforward += 1
            vnet.icmp6.error(ifp_in, pkt, wicmp6.PACKET_TOO_BIG, 0, mtu)
            return
        route.use += 1
        nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
        if ifp is ifp_in:  # back out the link it came on: a better first hop exists
            vnet.nd6.rtr.redirect_output(ifp, pkt, src, dst, route)
        hop = _HLIM[hlim - 1]
        af = ifp.afdata
        if self.pfil_out is None and ifp.flags & IFF_UP and ifp.mac is not None and af:
            data = af.get(AF_INET6)
            entry = data.nd.get(nexthop) if data is not None else None
            if entry is not None and entry.state == 1 and entry.mac is not None:  # REACHABLE
                st.forward += 1  # the fast path: one join, no copy of the packet first
                ifp.output(b"".join((entry.mac, ifp.mac, ETH_IP6, pkt[:7], hop, pkt[8:])))
                return
        out = pkt[:7] + hop + pkt[8:]
        if self.pfil_out is not None:
            passed = pfil.run(self.pfil_out, out, ifp)
            if passed is None:
                return
            out = passed
        if not ifp.flags & IFF_UP:
            st.odropped += 1
            return
        st.forward += 1
        self.link_output(ifp, out, nexthop)

    # -- output ----------------------------------------------------------------------------
    def next_ident(self) -> int:
        ident = self.ident
        if ident < 0:
            ident = _from_bytes(self.vnet.secret[36:40], "big")
        self.ident = ident = (ident + 1) & 0xFFFFFFFF
        return ident

    def route_to(self, dst: int, ifp: Ifnet | None = None, fib: int = 0
                 ) -> tuple[Ifnet, int, Route | None]:
        """(interface, next hop, route) for `dst` in FIB `fib`; a scoped `dst` needs `ifp`
        (its zone). OSError as ip6_output raises it (EHOSTUNREACH with no route)."""
        if not self.lo_done:
            in6.loopback_addrs(self.vnet)
        if wip6.needs_zone(dst):
            if ifp is None:
                raise OSError(errno.EHOSTUNREACH, "No route to host")
            ia = self.local.get(in6.zkey(dst, ifp.index))
            if ia is not None and dst >> 120 != 0xFF:  # our own link-local address
                lo = self.vnet.ifaces.get("lo0")
                if lo is not None:
                    return lo, dst, None
            return ifp, dst, None
        route = (self.vnet.route.table6(fib) if fib else self.vnet.rt6).lookup(dst)
        if route is None or route.flags & RTF_REJECT:
            self.stats.noroute += 1
            raise OSError(errno.EHOSTUNREACH, "No route to host")
        if ifp is not None and route.ifp is not ifp and not route.ifp.is_loopback:
            return ifp, dst, None  # IPV6_PKTINFO / a multicast interface: out that link
        nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
        return route.ifp, nexthop, route

    def select_source(self, dst: int, ifp: Ifnet | None = None, fib: int = 0) -> int:
        """in6_selectsrc: the RFC 6724 choice among the vnet's ready addresses (of every
        fib, as FreeBSD's; `fib` chooses the route, hence the outgoing interface)."""
        out, _, route = self.route_to(dst, ifp, fib)
        if route is not None and route.ifp.is_loopback and route.ifa is not None:
            return route.ifa.addr  # to one of our own addresses: from it
        best = in6.select_source(list(self.vnet.ifaces.values()), dst,
                                 ifp if ifp is not None else out)
        if best is None:
            self.stats.sources_none += 1
            raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
        return best.addr

    def path_mtu(self, dst: int, link_mtu: int) -> int:
        """The MTU toward `dst`: a learnt path MTU (RFC 8201) while fresh, else the link's."""
        entry = self.pmtu.get(dst) if self.pmtu is not None else None
        if entry is None:
            return link_mtu
        if entry[1] <= self.vnet.kernel.sched.now_ns():
            del self.pmtu[dst]  # type: ignore[union-attr]
            return link_mtu
        return min(entry[0], link_mtu)

    def update_pmtu(self, dst: int, mtu: int) -> bool:
        """A packet too big said `mtu` toward `dst`: remember a lower path MTU (never
        below 1280, RFC 8201 4). True if it changed."""
        mtu = max(mtu, MIN_MTU)
        if self.pmtu is None:
            self.pmtu = {}
        old = self.pmtu.get(dst)
        now = self.vnet.kernel.sched.now_ns()
        if old is not None and old[1] > now and old[0] <= mtu:
            return False
        if old is None and len(self.pmtu) >= PMTU_LIMIT:
            self.pmtu.clear()
        self.pmtu[dst] = (mtu, now + PMTU_EXPIRE_S * NS_PER_S)
        return True

    def output(self, nxt: int, src: int | None, dst: int, payload: bytes, *,
               hlim: int | None = None, ifp: Ifnet | None = None, tclass: int = 0,
               dontfrag: bool = False, fib: int = 0) -> None:
        """Build an IPv6 header and send the packet (ip6_output) with FIB `fib`'s routes:
        `src` None picks one; `ifp` is the zone of a scoped destination (or forces the
        outgoing link)."""
        out, nexthop, route = self.route_to(dst, ifp, fib)
        if src is None:
            src = self.select_source(dst, ifp, fib)
        if hlim is None:
            hlim = self.hlim
        if len(payload) > wip6.MAX_PAYLOAD:
            raise OSError(errno.EMSGSIZE, "Message too long")
        pkt = wip6.build_header(src, dst, nxt, len(payload), hlim, tclass) + payload
        self.output_packet(pkt, out, nexthop, route, dst, dontfrag)

    def output_packet(self, pkt: bytes, ifp: Ifnet, nexthop: int, route: Route | None,
                      dst: int, dontfrag: bool = False) -> None:
        st = self.stats
        if route is not None:
            if route.flags & RTF_BLACKHOLE:
                st.localout += 1
                return
            route.use += 1
        if not ifp.flags & IFF_UP:
            st.odropped += 1
            raise OSError(errno.ENETDOWN, "Network is down")
        st.localout += 1
        offl = ifp.offl
        if self.pfil_out is not None:
            if offl.partial:  # hooks see wire packets: filled, cut to the MTU
                st.localout -= 1
                offload.resend(offl, pkt, ifp.mtu, self.output_packet, ifp, nexthop, route,
                               dst, dontfrag)
                return
            passed = pfil.run(self.pfil_out, pkt, ifp)
            if passed is None:
                return
            pkt = passed
        mtu = (route.mtu if route is not None and route.mtu else 0) or ifp.mtu
        rtr = self.vnet.nd6.rtr_state
        if rtr is not None and rtr.ifinfo:  # an MTU option from an RA (IN6_LINKMTU)
            mtu = min(mtu, rtr.link_mtu(ifp))
        mtu = self.path_mtu(dst, mtu) if self.pmtu else mtu
        if len(pkt) > mtu:
            if offl.partial & LARGE and offload.pieces_fit(pkt, 40, offl.gso, mtu):
                self.link_output(ifp, pkt, nexthop)  # TSO: the interface cuts it
                return
            if dontfrag:
                st.cantfrag += 1
                raise OSError(errno.EMSGSIZE, "Message too long")
            if offl.partial:  # fragments carry the checksum their whole datagram needs
                st.localout -= 1
                offload.resend(offl, pkt, mtu, self.output_packet, ifp, nexthop, route,
                               dst, dontfrag)
                return
            pieces = fragment(pkt, mtu, self.next_ident())
            st.fragmented += 1
            st.ofragments += len(pieces)
            for piece in pieces:
                self.link_output(ifp, piece, nexthop)
            return
        self.link_output(ifp, pkt, nexthop)

    def output_after_pfil(self, pkt: bytes, nexthop: int | None = None) -> None:
        """Send a packet that has been through the out hooks (ipfw's dummynet `resume`,
        `fwd`): route it by `nexthop` if given, else by its destination, fragment it if
        it is ours, and hand it to the link. Errors are counted, never raised."""
        dst = _from_bytes(pkt[24:40], "big")
        target = dst if nexthop is None else nexthop
        try:
            ifp, hop, route = self.route_to(target)
        except OSError:
            return
        if route is not None and route.flags & RTF_BLACKHOLE:
            return
        if not ifp.flags & IFF_UP:
            self.stats.odropped += 1
            return
        mtu = (route.mtu if route is not None and route.mtu else 0) or ifp.mtu
        if len(pkt) > mtu:
            if self.local.get(_from_bytes(pkt[8:24], "big")) is None:
                self.stats.cantfrag += 1  # a router never fragments (RFC 8200 5)
                return
            pieces = fragment(pkt, mtu, self.next_ident())
            self.stats.fragmented += 1
            self.stats.ofragments += len(pieces)
            for piece in pieces:
                self.link_output(ifp, piece, hop)
            return
        self.link_output(ifp, pkt, hop)

    def link_output(self, ifp: Ifnet, pkt: bytes, nexthop: int) -> None:
        """Hand a packet to the link: bare on loopback, to a group's MAC, or through ND."""
        if ifp.mac is None:
            ifp.output(pkt)
        elif nexthop >> 120 == 0xFF:
            ifp.output(wip6.multicast_mac(nexthop) + ifp.mac + ETH_IP6 + pkt)
        else:
            self.vnet.nd6.output(ifp, pkt, nexthop)

    def clear(self) -> None:
        if self.reass is not None:
            self.reass.clear()
            self.reass = None
        self.local.clear()
        self.pmtu = None


def _neighbour(ifp: Ifnet, addr: int) -> NdEntry | None:
    """The neighbour cache entry of `addr` on `ifp` (None if it has none or no cache)."""
    af = ifp.afdata
    data = af.get(AF_INET6) if af else None
    return data.nd.get(addr) if data is not None else None


def vnet_attach(vnet: Vnet) -> None:
    vnet.ip6 = Ip6State(vnet)  # type: ignore[attr-defined]


def vnet_detach(vnet: Vnet) -> None:
    vnet.ip6.clear()
