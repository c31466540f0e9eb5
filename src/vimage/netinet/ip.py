"""IPv4 input, output and forwarding (FreeBSD ip_input.c, ip_output.c)."""

from __future__ import annotations

import errno
import struct
from socket import AF_INET
from typing import TYPE_CHECKING

from vimage import protosw
from vimage.net import offload, pfil, rtsock
from vimage.net.ifnet import IFF_BROADCAST, IFF_LOOPBACK, IFF_UP
from vimage.net.offload import LARGE, VXLAN
from vimage.net.route import (
    RTF_BLACKHOLE,
    RTF_DYNAMIC,
    RTF_GATEWAY,
    RTF_REJECT,
    flow_hash,
    select,
)
from vimage.netinet import icmp as icmp_mod
from vimage.netinet.in_ import INADDR_BROADCAST, source_for
from vimage.netinet.reass import Reassembler, fragment
from vimage.protosw import ANY
from vimage.stats import counters
from vimage.sysctl import Oid, oids
from vimage.wire import icmp as wicmp
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import ADDRESSES, FLAG_DF, HEADER, OFFMASK, walk_options

# bound once: attribute lookups cost more than the work on a 20-byte header
_from_bytes = int.from_bytes
_addrs = ADDRESSES.unpack_from
_ttl_word = struct.Struct("!BBH").pack
_NOT_FAST = RTF_REJECT | RTF_BLACKHOLE  # route flags that leave the forwarding fast path

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterator, Mapping

    from vimage.net.ifnet import Ifnet
    from vimage.net.route import Route
    from vimage.netinet.in_ import InAddr
    from vimage.vnet import Vnet

SYSCTLS: tuple[Oid, ...] = oids("net.inet.ip", "ip", (
    ("forwarding", "Enable IP forwarding between interfaces", 0, 1),
    ("ttl", "Maximum TTL on IP packets", 1, 255),
    ("fragttl", "IP fragment life time on reassembly queue", 1, 3600),
    ("maxfragpackets", "Maximum number of IPv4 fragment reassembly queue entries", 0, 2**20),
    ("maxfragsperpacket", "Maximum number of IPv4 fragments allowed per packet", 1, 8192),
    ("portrange.first", "First port of the ephemeral range", 1, 65535),
    ("portrange.last", "Last port of the ephemeral range", 1, 65535),
    ("portrange.randomized", "Enable random port allocation", 0, 1),
    ("redirect", "Enable sending IP redirects", 0, 1),
), {"portrange.first": "port_first", "portrange.last": "port_last",
    "portrange.randomized": "port_randomized", "redirect": "sendredirects"})

STAT_LINES: tuple[tuple[str, str], ...] = (
    ("total", "{} total packets received"),
    ("badsum", "{} bad header checksums"),
    ("toosmall", "{} with size smaller than minimum"),
    ("tooshort", "{} with data size < data length"),
    ("toolong", "{} with ip length > max ip packet size"),
    ("badhlen", "{} with header length < data size"),
    ("badlen", "{} with data length < header length"),
    ("badoptions", "{} with bad options"),
    ("badvers", "{} with incorrect version number"),
    ("fragments", "{} fragments received"),
    ("fragdropped", "{} fragments dropped (dup or out of space)"),
    ("fragtimeout", "{} fragments dropped after timeout"),
    ("reassembled", "{} packets reassembled ok"),
    ("delivered", "{} packets for this host"),
    ("noproto", "{} packets for unknown/unsupported protocol"),
    ("forward", "{} packets forwarded"),
    ("cantforward", "{} packets not forwardable"),
    ("notmember", "{} packets received for unknown multicast group"),
    ("redirectsent", "{} redirects sent"),
    ("localout", "{} packets sent from this host"),
    ("rawout", "{} packets sent with fabricated ip header"),
    ("odropped", "{} output packets dropped due to no bufs, etc."),
    ("noroute", "{} output packets discarded due to no route"),
    ("fragmented", "{} output datagrams fragmented"),
    ("ofragments", "{} fragments created"),
    ("cantfrag", "{} datagrams that can't be fragmented"),
    ("badaddr", "{} datagrams with bad address in header"),
    ("faultdrop", "{} packets dropped by fault injection"),
    # counted where vimage has the behaviour; netstat prints them as inet.c does
    ("fastforward", "{} packets fast forwarded"),
    ("nogif", "{} tunneling packets that can't find gif"),
)


IpStats = counters("IpStats", tuple(name for name, _ in STAT_LINES))


class IpState:
    """Per-vnet IPv4 state: addresses, tunables, counters and reassembly queues."""

    __slots__ = ("bcast", "forwarding", "fragttl", "ident", "lastport", "local",
                 "maxfragpackets", "maxfragsperpacket", "mfib", "pfil_fwd", "pfil_in",
                 "pfil_out", "port_first", "port_last", "port_randomized", "protox", "reass",
                 "sendredirects", "stats", "ttl", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # made here, not on first read: a hot-path class (see stats.LazySlots)
        self.stats = IpStats()
        self.local: dict[int, InAddr] = {}
        self.bcast: dict[int, InAddr] = {}
        self.forwarding = 0
        self.ttl = 64
        self.fragttl = 30
        self.maxfragpackets = 1024
        self.maxfragsperpacket = 16
        self.port_first = 10000
        self.port_last = 65535
        self.port_randomized = 1  # FreeBSD's defaults: random ephemeral ports ...
        self.lastport: dict[str, int] = {}  # per port space: the last one handed out
        self.sendredirects = 1  # ... and a router sends ICMP redirects
        self.ident = -1  # the first IP ID comes from Vnet.secret when first needed
        self.reass: Reassembler | None = None
        # protocol number -> bound input: the vnet's table once bound (see unclaimed)
        self.protox: Mapping[int, Callable[..., None]] = protosw.UNBOUND
        # pfil hook points (vimage.net.pfil): None while empty, so a packet pays one test
        self.pfil_in: pfil.Head = None  # every packet received, before local or forward
        self.pfil_fwd: pfil.Head = None  # a packet about to be forwarded
        self.pfil_out: pfil.Head = None  # every packet sent, local or forwarded, unfragmented
        # (packet, fib): the FIB a hook chose for the packet it passed (ipfw setfib,
        # FreeBSD's M_SETFIB on the mbuf); read and cleared by forward and output
        self.mfib: tuple[bytes, int] | None = None

    # -- input ---------------------------------------------------------------------
    def input(self, ifp: Ifnet, pkt: bytes) -> None:
        """Validate a received IPv4 packet, then deliver it locally or forward it.

        The checks and their order follow FreeBSD's ip_input(); a header without
        options (the common case) takes the shortest path.
        """
        st = self.stats
        st.total += 1
        n = len(pkt)
        if n >= 20 and pkt[0] == 0x45:
            hlen = 20
        else:
            if n < 20:
                st.toosmall += 1
                return
            b0 = pkt[0]
            if b0 >> 4 != 4:
                st.badvers += 1
                return
            hlen = (b0 & 0x0F) << 2
            if hlen < 20 or hlen > n:
                st.badhlen += 1
                return
        if _from_bytes(pkt[:hlen]) % 0xFFFF:
            st.badsum += 1
            return
        total = (pkt[2] << 8) | pkt[3]
        if total != n:
            if total < hlen:
                st.badlen += 1
                return
            if total > n:
                st.tooshort += 1
                return
            pkt = pkt[:total]  # link-layer padding
        src, dst = _addrs(pkt, 12)
        src8 = src >> 24
        if src8 >= 224 or ((src8 == 127 or dst >> 24 == 127)
                           and not ifp.flags & IFF_LOOPBACK):
            st.badaddr += 1  # multicast, broadcast or class E source; loopback from outside
            return
        if self.pfil_in is not None:
            passed = pfil.run(self.pfil_in, pkt, ifp)
            if passed is None:
                return  # taken by a hook (fault injection, a firewall), which counted it
            if passed is not pkt:  # rewritten (NAT): read the header again
                pkt = passed
                hlen = (pkt[0] & 0x0F) << 2
                src, dst = _addrs(pkt, 12)
        if hlen > 20:
            bad = check_options(pkt, hlen)
            if bad is not None:
                self.bad_options(pkt, bad, dst)
                return
            pkt = self.record_here(ifp, pkt, hlen, dst)
        if dst in self.local or dst in self.bcast or dst == INADDR_BROADCAST:
            if not ((pkt[6] << 8) | pkt[7]) & 0x3FFF:  # deliver's common case, inline:
                handler = self.protox.get(pkt[9])  # no fragment, a bound protocol
                if handler is not None:
                    st.delivered += 1
                    handler(ifp, pkt, hlen, src, dst)
                    return
            self.deliver(ifp, pkt, hlen, src, dst)
            return
        if dst >> 28 == 0xE:
            st.notmember += 1
            return
        if (hlen == 20 and pkt[8] > 1 and self.forwarding and self.pfil_fwd is None
                and self.pfil_out is None and self.mfib is None and not ifp.fib
                and dst >> 24 and dst >> 24 != 127 and dst >> 28 != 0xF):
            # FreeBSD's ip_tryforward (ip_fastfwd.c), inline: no hook anywhere, no options,
            # the default FIB, a cached route whose next hop is resolved (Route.nh: the
            # ARP entry and its prebuilt link header), no fragmentation. Anything else,
            # and every error, is `forward`'s, which decides the same step by step.
            route = self.vnet.rt._cache.get(dst)
            if route is not None and not route.slots and not route.flags & _NOT_FAST:
                out = route.ifp
                if route.flags & RTF_GATEWAY:
                    entry = route.nh
                    if entry is None or entry.hdr is None:
                        entry = route.nh = self.vnet.arp.table.get(route.gateway)
                else:
                    entry = self.vnet.arp.table.get(dst)
                if (entry is not None and entry.ifp is out and entry.hdr is not None
                        and len(pkt) <= (route.mtu or out.mtu) and out.flags & IFF_UP
                        and (out is not ifp or not self.sendredirects)):  # redirects: forward's
                    route.use += 1
                    st.forward += 1
                    st.fastforward += 1
                    # RFC 1624 eqn. 3 (checksum.update16) for the TTL byte dropping by
                    # one, inlined in FreeBSD ip_fastfwd's form
                    csum = (pkt[10] << 8) | pkt[11]
                    csum = csum - 0xFEFF if csum >= 0xFEFF else csum + 0x100
                    out.output(b"".join((entry.hdr, pkt[:8], _ttl_word(pkt[8] - 1, pkt[9], csum),
                                         pkt[12:])))
                    return
        self.forward(ifp, pkt, hlen, dst)

    def input_after_pfil(self, pkt: bytes, ifp: Ifnet) -> None:
        """The rest of `input` for a packet a pfil hook took and now releases (ipfw's
        dummynet `resume`, divert reinjection): options, then local delivery or
        forwarding. The header was validated before the hook took it (or by the hook)."""
        hlen = (pkt[0] & 0x0F) << 2
        src, dst = _addrs(pkt, 12)
        if hlen > 20:
            bad = check_options(pkt, hlen)
            if bad is not None:
                self.bad_options(pkt, bad, dst)
                return
            pkt = self.record_here(ifp, pkt, hlen, dst)
        if dst in self.local or dst in self.bcast or dst == INADDR_BROADCAST:
            self.deliver(ifp, pkt, hlen, src, dst)
        elif dst >> 28 == 0xE:
            self.stats.notmember += 1
        else:
            self.forward(ifp, pkt, hlen, dst)

    def record_here(self, ifp: Ifnet, pkt: bytes, hlen: int, dst: int) -> bytes:
        """ip_dooptions for a packet to this host: its record route and timestamp options
        record the address it came to (ifa_ifwithaddr(ip_dst); for a broadcast, the
        receiving interface's), as FreeBSD does before delivering it. A packet to
        forward is left alone here: forward() records the outgoing address."""
        if dst in self.local:
            here = dst
        elif dst in self.bcast or dst == INADDR_BROADCAST:
            here = source_for(ifp, _addrs(pkt, 12)[0])
        else:
            return pkt
        if not here:
            return pkt
        now_ms = (self.vnet.kernel.sched.now_ns() // 1_000_000) % 86_400_000
        header = stamp_options(pkt, hlen, here, now_ms, self.local)
        header[10:12] = b"\x00\x00"
        header[10:12] = checksum(header).to_bytes(2, "big")
        return bytes(header) + pkt[hlen:]

    def bad_options(self, pkt: bytes, bad: int, dst: int) -> None:
        """Drop a packet check_options refused, as ip_dooptions does (ip_options.c).

        A malformed option gets a parameter problem pointing at the offending byte.
        Source routes are refused as FreeBSD does by default (net.inet.ip.sourceroute
        and accept_sourceroute are 0): source route failed, except that a host that is
        not a router silently drops one still on its way.
        """
        st = self.stats
        if bad >= 0:
            st.badoptions += 1
            icmp_mod.error(self.vnet, pkt, wicmp.PARAMPROB, 0, bad << 24)
        elif bad == SRCRT_ON_WAY and dst in self.local and not self.forwarding:
            st.cantforward += 1
        else:
            st.badoptions += 1
            icmp_mod.error(self.vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_SRCFAIL)

    def deliver(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        st = self.stats
        if ((pkt[6] << 8) | pkt[7]) & 0x3FFF:  # MF or an offset: a fragment
            if self.reass is None:
                self.reass = Reassembler(self)
            whole = self.reass.insert(pkt, hlen, src, dst)
            if whole is None:
                return
            st.reassembled += 1
            pkt = whole
            hlen = (pkt[0] & 0x0F) << 2
        st.delivered += 1
        # ip_protox: the protocol switch's table for this vnet (vimage.protosw); what no
        # protocol claims goes to the ANY entry (raw IP), which calls noproto() if no
        # socket takes it either
        handler = self.protox.get(pkt[9])
        if handler is None:
            handler = self.unclaimed(pkt[9])
            if handler is None:
                self.noproto(pkt, dst)
                return
        handler(ifp, pkt, hlen, src, dst)

    def unclaimed(self, proto: int) -> Callable[..., None] | None:
        """The input for `proto` after a miss: the vnet's first packet finds the tables
        unbound (vimage.protosw.bind), else the raw IP default."""
        if self.protox is protosw.UNBOUND:
            table = protosw.bound_table(self.vnet, "inputs", AF_INET)
            if table is None:
                return None  # a dead vnet
            self.protox = table
            handler = table.get(proto)
            if handler is not None:
                return handler
        return self.protox.get(ANY)

    def noproto(self, pkt: bytes, dst: int) -> None:
        """A delivered packet no protocol took: uncount it, answer protocol unreachable
        (FreeBSD's rip_input when no raw socket matched)."""
        st = self.stats
        st.delivered -= 1
        st.noproto += 1
        if dst in self.local:
            icmp_mod.error(self.vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_PROTOCOL)

    def ephemeral_ports(self, space: str) -> Iterator[int]:
        """Every port of [portrange.first, portrange.last] once, in the order FreeBSD's
        in_pcb_lport_dest tries them for port space `space` ("tcp", "udp"): from a
        random point (net.inet.ip.portrange.randomized, the vnet's RNG), else from the
        one after the last handed out (ipi_lastport), so ports come in sequence."""
        first, last = sorted((self.port_first, self.port_last))
        span = last - first + 1
        if self.port_randomized:
            start = self.vnet.rng.randrange(span)  # the vnet's own stream: see Vnet.rng
        else:  # ++*lastport, back to first when it left the range (in_pcb_lport_dest)
            nxt = self.lastport.get(space, first - 1) + 1
            start = nxt - first if first <= nxt <= last else 0
        lastport = self.lastport
        for i in range(span):
            port = first + (start + i) % span
            lastport[space] = port
            yield port

    # -- forwarding ---------------------------------------------------------------------
    def forward(self, ifp_in: Ifnet, pkt: bytes, hlen: int, dst: int) -> None:
        """ip_forward(): TTL, route, fragmentation or an ICMP error, then output.

        `input` sends the common case itself (ip_tryforward); this is the full path,
        step by step: hooks, FIBs, options, multipath, ICMP errors, fragmentation.
        """
        st = self.stats
        vnet = self.vnet
        if not self.forwarding or dst >> 24 in (0, 127) or dst >> 28 >= 0xE:
            st.cantforward += 1
            return
        # the receiving interface's fib chooses the table (FreeBSD: M_SETFIB(if_fib)),
        # unless a hook set the packet's own (ipfw setfib)
        fib = ifp_in.fib
        if self.mfib is not None:
            if self.mfib[0] is pkt:
                fib = self.mfib[1]
            self.mfib = None
        if self.pfil_fwd is not None:
            passed = pfil.run(self.pfil_fwd, pkt, ifp_in)
            if passed is None:
                return
            if passed is not pkt:
                pkt, hlen, dst = passed, (passed[0] & 0x0F) << 2, _addrs(passed, 12)[1]
        ttl = pkt[8]
        if ttl <= 1:  # FreeBSD answers without counting it as not forwardable
            offl = ifp_in.offl
            if offl.partial & LARGE and len(pkt) > ifp_in.mtu:
                # a large TCP segment or a tunnel's whole outer packet: an answer per piece
                offload.resend(offl, pkt, offload.piece_limit(pkt, hlen, offl.gso, 0xFFFF),
                               self._forward_piece, ifp_in, hlen, dst)
                return
            icmp_mod.error(vnet, pkt, wicmp.TIMXCEED, wicmp.TIMXCEED_INTRANS)
            return
        rt = vnet.route.tables[fib] if fib else vnet.rt
        route = rt._cache.get(dst) or rt.lookup(dst)
        if route is None:  # no route at all: the network is unreachable
            st.cantforward += 1
            st.noroute += 1
            rtsock.miss(vnet, dst, rt.fibnum)
            icmp_mod.error(vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_NET)
            return
        if route.slots:  # a multipath group: the flow's path
            route = select(route, self.flowid(pkt, hlen))
        if route.flags & (RTF_REJECT | RTF_BLACKHOLE):  # -reject answers, -blackhole not
            st.cantforward += 1
            if route.flags & RTF_REJECT:
                icmp_mod.error(vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_HOST)
            return
        ifp = route.ifp
        mtu = route.mtu or ifp.mtu
        if len(pkt) > mtu and ifp.offl.partial & LARGE \
                and not offload.pieces_fit(pkt, hlen, ifp.offl.gso, mtu):
            # a large TCP segment, or a tunnel's whole outer packet (tunnel GSO), whose
            # pieces do not fit: cut first, so each piece is forwarded, fragmented or
            # refused (an ICMP error each) as the pieces on a wire would be
            offl = ifp.offl
            offload.resend(offl, pkt, offload.piece_limit(pkt, hlen, offl.gso, mtu),
                           self._forward_piece, ifp_in, hlen, dst)
            return
        nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
        if ifp is ifp_in and self.sendredirects:  # back out where it came in
            self.send_redirect(pkt, route, nexthop)
        route.use += 1
        if hlen == 20:
            # RFC 1624 eqn. 3 (checksum.update16) for the TTL byte dropping by one, in
            # FreeBSD ip_fastfwd's form: inlined, a call here costs ~10% of forwarding
            csum = (pkt[10] << 8) | pkt[11]
            csum = csum - 0xFEFF if csum >= 0xFEFF else csum + 0x100
            out = pkt[:8] + _ttl_word(ttl - 1, pkt[9], csum) + pkt[12:]
        else:
            here = route.ifa.addr if route.ifa is not None else source_for(ifp, dst)
            now_ms = (vnet.kernel.sched.now_ns() // 1_000_000) % 86_400_000
            header = stamp_options(pkt, hlen, here, now_ms, self.local)
            header[8] = ttl - 1
            header[10:12] = b"\x00\x00"
            header[10:12] = checksum(header).to_bytes(2, "big")
            out = bytes(header) + pkt[hlen:]
        if self.pfil_out is not None:
            passed = pfil.run(self.pfil_out, out, ifp)
            if passed is None:
                return
            out = passed
        offl = ifp.offl
        if len(out) > mtu and not (offl.partial & LARGE
                                   and offload.pieces_fit(out, hlen, offl.gso, mtu)):
            if offl.partial:  # fragments carry the checksum their datagram needs
                out = offload.resolve_ip(out, 0, mtu, bool(offl.partial & VXLAN))[0]
            if (pkt[6] << 8) & FLAG_DF:
                st.cantfrag += 1
                st.cantforward += 1
                icmp_mod.error(vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_NEEDFRAG, mtu)
                return
            st.forward += 1
            self._send_fragments(ifp, out, mtu, nexthop, dst)
            return
        st.forward += 1
        if not ifp.flags & IFF_UP:
            st.odropped += 1
            return
        try:
            self._link_output(ifp, out, nexthop, dst == INADDR_BROADCAST)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:  # ip_forward: no ICMP error for ENOBUFS
                icmp_mod.error(vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_HOST)

    def _forward_piece(self, pkt: bytes, ifp_in: Ifnet, hlen: int, dst: int) -> None:
        self.forward(ifp_in, pkt, hlen, dst)

    def send_redirect(self, pkt: bytes, route: Route, nexthop: int) -> None:
        """ICMP host redirect to a sender that could reach the next hop itself (FreeBSD
        ip_forward): the packet leaves by the interface it came in on (the caller's
        test), its source is on the subnet of the route's address, the route is neither
        the default route nor itself made by a redirect. Source-routed packets never get
        here (bad_options refuses them). Sent before the packet is forwarded, where
        FreeBSD sends it after; the packet itself is forwarded all the same."""
        if route.plen == 0 or route.flags & RTF_DYNAMIC:
            return
        src = _from_bytes(pkt[12:16], "big")
        ias = route.ifp.addrs if route.ifa is None else (route.ifa,)
        if not any(src & ia.mask == ia.net for ia in ias):
            return
        self.stats.redirectsent += 1
        icmp_mod.error(self.vnet, pkt, wicmp.REDIRECT, icmp_mod.REDIRECT_HOST, nexthop)

    # -- output ------------------------------------------------------------------------
    def next_ident(self) -> int:
        ident = self.ident
        if ident < 0:  # the first packet: start where the vnet's secret says
            ident = int.from_bytes(self.vnet.secret[32:34], "big")
        self.ident = ident = (ident + 1) & 0xFFFF
        return ident

    def route_to(self, dst: int, fib: int = 0) -> Route:
        """The route used to reach `dst` in FIB `fib`, or OSError as ip_output would
        raise it (a multipath group's first path: `output_packet` picks the flow's)."""
        vnet = self.vnet
        route = (vnet.route.table(fib) if fib else vnet.rt).lookup(dst)
        if route is None and dst == INADDR_BROADCAST:
            route = self._broadcast_route()
        if route is None:
            self.stats.noroute += 1
            rtsock.miss(vnet, dst, fib)
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        if route.flags & RTF_REJECT:
            raise OSError(errno.EHOSTUNREACH, "No route to host")
        return route

    def flowid(self, pkt: bytes, hlen: int) -> int:
        """The flow hash of a packet (addresses, protocol, ports of TCP/UDP), keyed by the
        vnet's secret: which path of a multipath group it takes."""
        src, dst = _addrs(pkt, 12)
        proto = pkt[9]
        ports = _from_bytes(pkt[hlen:hlen + 4], "big") if proto in (6, 17) else 0
        key = _from_bytes(self.vnet.secret[34:38], "big")  # bytes no other use draws
        return flow_hash(key, src, dst, ports, proto)

    def _broadcast_route(self) -> Route | None:
        """With no route to 255.255.255.255, use the first broadcast-capable interface."""
        from vimage.net.route import Route

        for ifp in self.vnet.ifaces.values():
            if ifp.flags & IFF_BROADCAST and ifp.flags & 1 and ifp.addrs:
                return Route(INADDR_BROADCAST, 32, ifp, 0, ifa=ifp.addrs[0])
        return None

    def select_source(self, dst: int, fib: int = 0) -> int:
        """Source address for a packet to `dst` (the outgoing interface's address)."""
        if dst in self.local:
            return dst
        route = None if fib else self.vnet.rt._cache.get(dst)  # the common case: cached
        if route is None or route.flags & RTF_REJECT:
            route = self.route_to(dst, fib)
        if route.ifa is not None and not route.ifp.flags & IFF_LOOPBACK:
            return route.ifa.addr
        src = source_for(route.ifp, dst)
        if not src:
            raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
        return src

    def output(self, proto: int, src: int, dst: int, payload: bytes, *, ttl: int | None = None,
               tos: int = 0, df: bool = False, broadcast_ok: bool = False,
               fib: int = 0) -> None:
        """Build an IPv4 header and send it (FreeBSD ip_output) with FIB `fib`'s routes."""
        total = 20 + len(payload)
        if total > 0xFFFF:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if ttl is None:
            ttl = self.ttl
        ident = self.ident
        if ident < 0:  # the first packet: start where the vnet's secret says
            ident = int.from_bytes(self.vnet.secret[32:34], "big")
        self.ident = ident = (ident + 1) & 0xFFFF
        off = FLAG_DF if df else 0
        # RFC 1071 from the fields, no pass over the bytes: each field is congruent to the
        # sum of its 16-bit words modulo 0xFFFF and the sum is never 0 (version 4), so the
        # checksum is 0xFFFF minus the sum modulo 0xFFFF, or 0 when the sum is a multiple
        # of 0xFFFF (what checksum() gives for the header bytes)
        csum = 0xFFFF - ((0x4500 | tos) + total + ident + off + (ttl << 8 | proto)
                         + src + dst) % 0xFFFF
        if csum == 0xFFFF:
            csum = 0
        head = HEADER.pack(0x45, tos, total, ident, off, ttl, proto, csum, src, dst)
        if not fib and self.pfil_out is None and dst != INADDR_BROADCAST:
            # output_packet's fast path and _nexthop_hdr, inline: every TCP segment and
            # UDP datagram sent comes this way (the frame made in one copy of the payload)
            route = self.vnet.rt._cache.get(dst)
            if (route is not None and not route.slots and not route.flags & _NOT_FAST
                    and dst not in self.bcast):
                ifp = route.ifp
                if route.flags & RTF_GATEWAY:
                    entry = route.nh
                    if entry is None or entry.hdr is None:
                        entry = route.nh = self.vnet.arp.table.get(route.gateway)
                else:
                    entry = self.vnet.arp.table.get(dst)
                if (entry is not None and entry.ifp is ifp and entry.hdr is not None
                        and total <= (route.mtu or ifp.mtu) and ifp.flags & IFF_UP):
                    self.stats.localout += 1
                    route.use += 1
                    ifp.output(b"".join((entry.hdr, head, payload)))
                    return
        self.output_packet(head + payload, dst, broadcast_ok=broadcast_ok, fib=fib)

    def output_packet(self, pkt: bytes, dst: int, *, broadcast_ok: bool = False,
                      raw: bool = False, fib: int = 0) -> None:
        """Route and transmit a complete IPv4 packet built by this host.

        The common case (FIB 0, no out hooks, a cached unicast route whose next hop is
        resolved, no fragmentation) goes straight to the link with the next hop's
        prebuilt header; the rest takes the full path below, which decides the same.
        """
        if not fib and not raw and self.pfil_out is None and dst != INADDR_BROADCAST:
            route = self.vnet.rt._cache.get(dst)
            if (route is not None and not route.slots and not route.flags & _NOT_FAST
                    and dst not in self.bcast):
                hdr = self._nexthop_hdr(route, dst)
                ifp = route.ifp
                if (hdr is not None and len(pkt) <= (route.mtu or ifp.mtu)
                        and ifp.flags & IFF_UP):
                    self.stats.localout += 1
                    route.use += 1
                    ifp.output(hdr + pkt)
                    return
        st = self.stats
        broadcast = dst == INADDR_BROADCAST or dst in self.bcast
        if broadcast and not broadcast_ok:
            raise OSError(errno.EACCES, "Permission denied")
        route = self.route_to(dst, fib)
        if route.slots:
            route = select(route, self.flowid(pkt, (pkt[0] & 0x0F) << 2))
        if route.flags & RTF_BLACKHOLE:
            st.localout += 1
            return
        ifp = route.ifp
        if not ifp.flags & 1:
            st.odropped += 1
            raise OSError(errno.ENETDOWN, "Network is down")
        st.localout += 1
        if raw:
            st.rawout += 1
        route.use += 1
        nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
        mtu = route.mtu or ifp.mtu
        if self.pfil_out is not None:
            if ifp.offl.partial:  # hooks see wire packets: filled, cut to the MTU
                st.localout -= 1
                offload.resend(ifp.offl, pkt, mtu, self._output_resolved, dst, broadcast_ok,
                               raw, fib)
                return
            passed = pfil.run(self.pfil_out, pkt, ifp)
            if passed is None:
                return  # taken by a hook, which counted it (FreeBSD: EACCES for a deny)
            pkt = passed
            mfib = self.mfib
            if mfib is not None:
                self.mfib = None
                if mfib[0] is pkt and mfib[1] != fib:
                    # ip_output: "See if fib was changed by packet filter": route it
                    # again in that FIB, past the hooks (M_SKIP_FIREWALL)
                    route = self.route_to(dst, mfib[1])
                    if route.slots:
                        route = select(route, self.flowid(pkt, (pkt[0] & 0x0F) << 2))
                    if route.flags & RTF_BLACKHOLE:
                        return
                    ifp = route.ifp
                    nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
                    mtu = route.mtu or ifp.mtu
        if len(pkt) > mtu:
            offl = ifp.offl
            if offl.partial & LARGE and offload.pieces_fit(pkt, (pkt[0] & 0x0F) << 2,
                                                           offl.gso, mtu):
                self._link_output(ifp, pkt, nexthop, broadcast)  # TSO: the interface cuts it
                return
            if pkt[6] & 0x40:
                st.cantfrag += 1
                raise OSError(errno.EMSGSIZE, "Message too long")
            if offl.partial:  # fragments carry the checksum their whole datagram needs
                st.localout -= 1
                offload.resend(offl, pkt, mtu, self._output_resolved, dst, broadcast_ok, raw,
                               fib)
                return
            self._send_fragments(ifp, pkt, mtu, nexthop, dst)
            return
        self._link_output(ifp, pkt, nexthop, broadcast)

    def _nexthop_hdr(self, route: Route, dst: int) -> bytes | None:
        """The link header toward `route`'s next hop for `dst` if it is resolved on the
        route's interface, else None. A gateway route keeps the ARP entry in its
        next-hop cache (Route.nh); an entry that left the table has no header."""
        if route.flags & RTF_GATEWAY:
            entry = route.nh
            if entry is None or entry.hdr is None:
                entry = route.nh = self.vnet.arp.table.get(route.gateway)
        else:
            entry = self.vnet.arp.table.get(dst)
        if entry is None or entry.ifp is not route.ifp:
            return None
        return entry.hdr


    def _output_resolved(self, pkt: bytes, dst: int, broadcast_ok: bool, raw: bool,
                         fib: int) -> None:
        self.output_packet(pkt, dst, broadcast_ok=broadcast_ok, raw=raw, fib=fib)

    def output_after_pfil(self, pkt: bytes, ifp: Ifnet | None = None,
                          nexthop: int | None = None) -> None:
        """Send a packet that has been through the out hooks (ipfw's dummynet `resume`,
        divert reinjection, `fwd`): route it by `nexthop` if given (ipfw fwd), else by
        its destination, then fragment and hand it to the link. Errors are counted
        (noroute, odropped, cantfrag), never raised: there is no caller to tell.
        `ifp` (where the hooks saw it leave) is not needed: the route decides."""
        st = self.stats
        dst = _addrs(pkt, 12)[1]
        target = dst if nexthop is None else nexthop
        try:
            route = self.route_to(target)
        except OSError:
            return
        if route.flags & RTF_BLACKHOLE:
            return
        out_ifp = route.ifp
        if not out_ifp.flags & IFF_UP:
            st.odropped += 1
            return
        gateway = route.gateway if route.flags & RTF_GATEWAY else target
        mtu = route.mtu or out_ifp.mtu
        broadcast = dst == INADDR_BROADCAST or dst in self.bcast
        try:
            if len(pkt) > mtu:
                if pkt[6] & 0x40:
                    st.cantfrag += 1
                    return
                self._send_fragments(out_ifp, pkt, mtu, gateway, dst)
            else:
                self._link_output(out_ifp, pkt, gateway, broadcast)
        except OSError:
            st.odropped += 1

    def _send_fragments(self, ifp: Ifnet, pkt: bytes, mtu: int, nexthop: int,
                        dst: int) -> None:
        st = self.stats
        pieces = fragment(pkt, mtu)
        st.fragmented += 1
        st.ofragments += len(pieces)
        broadcast = dst == INADDR_BROADCAST or dst in self.bcast
        for piece in pieces:
            self._link_output(ifp, piece, nexthop, broadcast)

    def _link_output(self, ifp: Ifnet, pkt: bytes, nexthop: int, broadcast: bool) -> None:
        """Hand a packet to the link toward `nexthop`: bare on a link without addresses
        (loopback), else through ARP resolution (FreeBSD ip_output's if_output call)."""
        if ifp.mac is None:
            ifp.output(pkt)
        else:
            self.vnet.arp.output(ifp, pkt, nexthop, broadcast)

    def clear(self) -> None:
        if self.reass is not None:
            self.reass.clear()
            self.reass = None
        self.local.clear()
        self.bcast.clear()


def options_ok(pkt: bytes, hlen: int) -> bool:
    """Walk the options (RFC 791): every length must be sane and inside the header."""
    return all(length for _, _, length in walk_options(pkt, 20, hlen))


# option kinds and timestamp flags (RFC 791; FreeBSD netinet/ip.h)
OPT_RR = 7  # record route
OPT_TS = 68  # internet timestamp
OPT_LSRR = 131  # loose source and record route
OPT_SSRR = 137  # strict source and record route
IPOPT_MINOFF = 4  # smallest pointer of a route option
TS_TSONLY = 0
TS_TSANDADDR = 1
TS_PRESPEC = 3
# check_options results that are not a byte offset: a well-formed source route option,
# with addresses left to visit or used up
SRCRT_ON_WAY = -1
SRCRT_END = -2


def check_options(pkt: bytes, hlen: int) -> int | None:
    """The checks of FreeBSD's ip_dooptions (ip_options.c), in its order, without acting.

    None if the options are well formed; else the offset in the header of the byte a
    parameter problem points at (the same byte FreeBSD names), or SRCRT_ON_WAY /
    SRCRT_END for the first source route option (the caller refuses it). Reads stay
    inside the header whatever its bytes are.
    """
    for i, opt, optlen in walk_options(pkt, 20, hlen):
        if not optlen:  # no room for the length byte, or a length that does not fit
            return i + 1
        if opt == OPT_RR:  # (a full one is passed on unchanged)
            if optlen < 3 or pkt[i + 2] < IPOPT_MINOFF:
                return i + 2  # FreeBSD names the pointer byte, even past a 2-byte option
        elif opt == OPT_TS:
            bad = _check_timestamp(pkt, i, optlen)
            if bad is not None:
                return bad
        elif opt in (OPT_LSRR, OPT_SSRR):
            if optlen < 3:
                return i + 1
            off = pkt[i + 2]
            if off < IPOPT_MINOFF:
                return i + 2
            return SRCRT_END if off - 1 > optlen - 4 else SRCRT_ON_WAY
    return None


def _check_timestamp(pkt: bytes, i: int, optlen: int) -> int | None:
    """ip_dooptions' IPOPT_TS checks for the option at `i`; the offending offset or None.

    One difference: FreeBSD finds the option full when pointer > length - 4, which
    never fills the last 4-byte slot; RFC 791 (and Linux) fill it, and so do we.
    """
    if optlen < 4:
        return i + 1
    off = pkt[i + 2]
    if off < 5:
        return i + 1  # FreeBSD names the length byte here too
    if off > optlen - 3:  # full: only the overflow count moves, and it must not wrap
        return i + 2 if pkt[i + 3] >> 4 == 15 else None
    flag = pkt[i + 3] & 0x0F
    if flag == TS_TSONLY:
        return None
    if flag in (TS_TSANDADDR, TS_PRESPEC):
        return i + 2 if off - 1 + 8 > optlen else None
    return i + 3


def stamp_options(pkt: bytes, hlen: int, here: int, now_ms: int,
                  local: Container[int]) -> bytearray:
    """A forwarded header with this router recorded in its RR and timestamp options.

    `pkt` passed check_options (no source route, every length and pointer sane):
    as ip_dooptions, a full record route is left alone, a full timestamp counts an
    overflow, a prespecified timestamp is written only for one of our addresses.
    """
    header = bytearray(pkt[:hlen])
    for i, kind, length in walk_options(header, 20, hlen):
        if kind == OPT_RR:
            ptr = header[i + 2]
            if ptr - 1 <= length - 4:  # a free slot: write our address there
                header[i + ptr - 1:i + ptr + 3] = here.to_bytes(4, "big")
                header[i + 2] = ptr + 4
        elif kind == OPT_TS:
            _stamp_timestamp(header, i, length, here, now_ms, local)
    return header


def _stamp_timestamp(header: bytearray, i: int, length: int, here: int, now_ms: int,
                     local: Container[int]) -> None:
    ptr, flag = header[i + 2], header[i + 3] & 0x0F
    if ptr > length - 3:  # no room: count the overflow (4 bits, checked not to wrap)
        header[i + 3] += 0x10
        return
    at = i + ptr - 1
    if flag == TS_TSANDADDR:
        header[at:at + 4] = here.to_bytes(4, "big")
        at += 4
    elif flag == TS_PRESPEC:
        if int.from_bytes(header[at:at + 4], "big") not in local:
            return  # another router's turn
        at += 4
    header[at:at + 4] = now_ms.to_bytes(4, "big")
    header[i + 2] = at + 4 - i + 1


def vnet_attach(vnet: Vnet) -> None:
    vnet.ip = IpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.ip.clear()


__all__ = ["OFFMASK", "IpState"]
