"""UDP: the PCB table, input demultiplexing and output (FreeBSD udp_usrreq.c)."""

from __future__ import annotations

import errno
from socket import AF_INET, AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.net import offload
from vimage.net.offload import LARGE, PARTIAL, VXLAN
from vimage.netinet import icmp as icmp_mod
from vimage.netinet.icmp import quoted_ports
from vimage.netinet.in_ import INADDR_BROADCAST
from vimage.netinet.in_pcb import PcbList, is_mapped, lb_pick, mapped, shares_port, unmapped
from vimage.stats import count_drop, counters
from vimage.sysctl import Oid, oids
from vimage.wire import WireError
from vimage.wire import icmp as wicmp
from vimage.wire import icmp6 as wicmp6
from vimage.wire import udp as wudp
from vimage.wire.ipv4 import PROTO_UDP
from vimage.wire.ipv6 import needs_zone

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from vimage.net.ifnet import Ifnet
    from vimage.socket.socket import Socket
    from vimage.vnet import Vnet

SYSCTLS: tuple[Oid, ...] = oids("net.inet.udp", "udp", (
    ("checksum", "Compute UDP checksums on output", 0, 1),
    ("maxdgram", "Maximum outgoing UDP datagram size", 1, 65535),
    ("recvspace", "Maximum space for incoming UDP datagrams", 1, 2**26),
    ("blackhole", "Do not send port unreachables for refused connects", 0, 1),
))

STAT_LINES: tuple[tuple[str, str], ...] = (
    ("ipackets", "{} datagrams received"),
    ("hdrops", "{} with incomplete header"),
    ("badlen", "{} with bad data length field"),
    ("badsum", "{} with bad checksum"),
    ("nosum", "{} with no checksum"),
    ("noport", "{} dropped due to no socket"),
    ("noportbcast", "{} broadcast/multicast datagrams undelivered"),
    ("fullsock", "{} dropped due to full socket buffers"),
    ("delivered", "{} delivered"),
    ("opackets", "{} datagrams output"),
    ("pcbhashmiss", "{} not for hashed pcb"),
    ("filtermcast", "{} times multicast source filter matched"),
)

# how an ICMP error reaches a connected socket (FreeBSD inetctlerrmap)
_CTL_ERRNO: tuple[tuple[int, int, int], ...] = (
    (wicmp.UNREACH, wicmp.UNREACH_PORT, errno.ECONNREFUSED),
    (wicmp.UNREACH, wicmp.UNREACH_PROTOCOL, errno.ECONNREFUSED),
    (wicmp.UNREACH, wicmp.UNREACH_NET, errno.EHOSTUNREACH),
    (wicmp.UNREACH, wicmp.UNREACH_HOST, errno.EHOSTUNREACH),
    (wicmp.UNREACH, wicmp.UNREACH_NET_UNKNOWN, errno.EHOSTUNREACH),
    (wicmp.UNREACH, wicmp.UNREACH_HOST_UNKNOWN, errno.EHOSTUNREACH),
    (wicmp.UNREACH, wicmp.UNREACH_SRCFAIL, errno.EHOSTUNREACH),
    (wicmp.UNREACH, wicmp.UNREACH_NEEDFRAG, errno.EMSGSIZE),
)
# the same for ICMPv6 (FreeBSD icmp6_errmap)
_CTL6_ERRNO: tuple[tuple[int, int, int], ...] = (
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_NOPORT, errno.ECONNREFUSED),
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_ADMIN, errno.ECONNREFUSED),
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_NOROUTE, errno.EHOSTUNREACH),
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_ADDR, errno.EHOSTUNREACH),
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_BEYONDSCOPE, errno.ENOPROTOOPT),
    (wicmp6.PARAM_PROB, wicmp6.PARAMPROB_NEXTHEADER, errno.ECONNREFUSED),
    (wicmp6.PACKET_TOO_BIG, 0, errno.EMSGSIZE),
)


# a datagram the parser refuses: its WireError reason -> the counter ("" for any other)
_PARSE_DROPS = MappingProxyType({"badsum": "badsum", "badlen": "badlen", "": "hdrops"})

UdpStats = counters("UdpStats", tuple(name for name, _ in STAT_LINES))


class UdpState:
    __slots__ = ("blackhole", "checksum", "maxdgram", "ports", "ports6", "recvspace", "stats",
                 "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # made here, not on first read: a hot-path class (see stats.LazySlots)
        self.stats = UdpStats()
        self.ports: dict[int, PcbList] = {}  # AF_INET sockets by local port
        self.ports6: dict[int, PcbList] = {}  # AF_INET6 sockets (dual-stack ones too)
        self.checksum = 1
        self.maxdgram = 9216
        self.recvspace = 42080
        self.blackhole = 0

    # -- PCB table -------------------------------------------------------------------
    def bind(self, sock: Socket, addr: int, port: int) -> None:
        """Bind `sock` (AF_INET, or AF_INET6 with a 128-bit `addr`): the ports of both
        families are one space, as FreeBSD's single udbinfo (in6_pcbbind checks the
        IPv4 side of a dual-stack socket)."""
        v6 = _family(sock) == AF_INET6
        if port == 0:
            port = self.ephemeral(addr)
        else:
            for other in self.bound(port) + self.bound6(port):
                if not _conflict(sock, addr, other):
                    continue
                if shares_port(sock, other):
                    continue
                if sock.reuseaddr and other.reuseaddr:
                    continue
                if other.laddr != addr and sock.reuseaddr:
                    continue
                raise OSError(errno.EADDRINUSE, "Address already in use")
        sock.laddr = addr
        sock.lport = port
        table = self.ports6 if v6 else self.ports
        pcbs = table.get(port)
        if pcbs is None:
            pcbs = table[port] = PcbList()
        pcbs.add(sock)

    def bound(self, port: int) -> list[Socket]:
        """The live sockets bound to `port` (forgetting the port once none is left)."""
        return _live(self.ports, port)

    def bound6(self, port: int) -> list[Socket]:
        """The live AF_INET6 sockets bound to `port`."""
        return _live(self.ports6, port)

    def ephemeral(self, addr: int) -> int:
        ports = self.ports
        for port in self.vnet.ip.ephemeral_ports("udp"):  # portrange.randomized or not
            if (port not in ports or not self.bound(port)) and (
                    port not in self.ports6 or not self.bound6(port)):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")

    def unbind(self, sock: Socket) -> None:
        table = self.ports6 if _family(sock) == AF_INET6 else self.ports
        pcbs = table.get(sock.lport)
        if pcbs is not None:
            pcbs.discard(sock)
            if not pcbs:
                del table[sock.lport]

    # -- input ---------------------------------------------------------------------------
    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        st = self.stats
        st.ipackets += 1
        offloaded = ifp.offl.partial  # from an in-process link: nothing to verify
        try:
            dgram = wudp.parse(memoryview(pkt)[hlen:], *(() if offloaded else (src, dst)))
        except WireError as exc:
            count_drop(st, exc.reason, _PARSE_DROPS)
            return
        if dgram.checksum == 0 and not offloaded:
            st.nosum += 1
        pcbs = self.ports.get(dgram.dport)
        socks = pcbs.live() if pcbs is not None else ()
        if offloaded & VXLAN:
            if offloaded & LARGE and not _takes_inner(socks):
                self._cut(ifp, pkt, hlen, src, dst, self.input)
                return
            dgram = _vxlan_plain(dgram, socks)
        sport = dgram.sport
        if dst == INADDR_BROADCAST or dst >> 28 == 0xE or dst in self.vnet.ip.bcast:
            delivered = False
            for sock in socks or ():
                if sock.laddr and sock.laddr != dst and not (
                        (ia := self.vnet.ip.bcast.get(dst)) and ia.addr == sock.laddr):
                    continue
                if sock.faddr and (sock.faddr != src or sock.fport != sport):
                    continue
                delivered = sock.enqueue(bytes(dgram.payload), src, sport, (
                    dst, ifp.index, pkt[8], pkt[1]) if sock.recvopts else None) or delivered
            if self.ports6 and dgram.dport in self.ports6:
                delivered = self.mapped_input(dgram, src, dst, True) or delivered
            if delivered:
                st.delivered += 1
            else:
                st.noportbcast += 1
            return
        best = None
        best_score = -1
        for sock in socks or ():
            score = 0
            if sock.laddr:
                if sock.laddr != dst:
                    continue
                score += 1
            if sock.faddr:
                if sock.faddr != src or sock.fport != sport:
                    continue
                score += 2
            if score >= best_score:  # among equals the last bound (FreeBSD's hash chains)
                best, best_score = sock, score
        if best is not None and best.reuseport_lb and not best.faddr:
            best = self._lb_member(socks, best, src, sport, dst, dgram.dport)
        if best is None:
            if self.ports6 and dgram.dport in self.ports6 and self.mapped_input(
                    dgram, src, dst, False):
                return
            st.noport += 1
            if not self.blackhole:
                icmp_mod.error(self.vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_PORT)
            return
        if best.enqueue(bytes(dgram.payload), src, sport, (
                dst, ifp.index, pkt[8], pkt[1]) if best.recvopts else None):
            st.delivered += 1
        else:
            st.fullsock += 1

    @staticmethod
    def _lb_member(socks: Iterable[Socket], best: Socket, src: int, sport: int, dst: int,
                   dport: int) -> Socket:
        """The SO_REUSEPORT_LB group `best` belongs to (the unconnected sockets bound to its
        address with that option) picks the receiver by the 4-tuple (in_pcblookup_lbgroup)."""
        group = [s for s in socks if s.reuseport_lb and not s.faddr and s.laddr == best.laddr]
        return lb_pick(group, src, sport, dst, dport)

    def mapped_input(self, dgram: wudp.UdpRepr, src: int, dst: int, multi: bool) -> bool:
        """An IPv4 datagram no AF_INET socket took: the dual-stack AF_INET6 sockets
        bound to its port, which see ::ffff:src (FreeBSD's in_pcblookup prefers an IPv4
        wildcard socket to a mapped one, hence after). True if one took it."""
        msrc, mdst = mapped(src), mapped(dst)
        best = None
        best_score = -1
        taken = False
        for sock in self.bound6(dgram.dport):
            if sock.v6only or (sock.laddr and sock.laddr != mdst and not multi):
                continue
            if sock.faddr and (sock.faddr != msrc or sock.fport != dgram.sport):
                continue
            if multi:
                taken = sock.enqueue(bytes(dgram.payload), msrc, dgram.sport) or taken
                continue
            score = (1 if sock.laddr else 0) + (2 if sock.faddr else 0)
            if score > best_score:
                best, best_score = sock, score
        if best is None:
            return taken
        st = self.stats
        if best.enqueue(bytes(dgram.payload), msrc, dgram.sport):
            st.delivered += 1
        else:
            st.fullsock += 1
        return True

    def ctlinput(self, type_: int, code: int, src: int, dst: int, sport: int,
                 dport: int) -> None:
        err = next((e for t, c, e in _CTL_ERRNO if t == type_ and c == code), 0)
        if not err:
            return
        for sock in self.bound(sport):
            if sock.faddr == dst and sock.fport == dport and sock.laddr in (0, src):
                sock.set_error(err)
        if self.ports6:
            msrc, mdst = mapped(src), mapped(dst)
            for sock in self.bound6(sport):
                if sock.faddr == mdst and sock.fport == dport and sock.laddr in (0, msrc):
                    sock.set_error(err)

    def ctlinput_quoted(self, type_: int, code: int, quoted: bytes, rest: int) -> None:
        """The protocol switch's ctlinput: an ICMP error quoting one of our datagrams."""
        self.ctlinput(type_, code, *quoted_ports(quoted))

    # -- output -----------------------------------------------------------------------------
    def output(self, sock: Socket, data: bytes, dst: int, dport: int) -> None:
        if len(data) + 8 > sock.sndbuf:
            raise OSError(errno.EMSGSIZE, "Message too long")
        ip = self.vnet.ip
        src = sock.laddr or ip.select_source(dst, sock.fib)
        # the checksum is offloaded: the interface fills it where it is needed
        payload = wudp.build(sock.lport, dport, data, src, dst, with_checksum=False)
        offl = offload.state(self.vnet.kernel)
        saved = offl.partial
        offl.partial = PARTIAL if self.checksum else saved
        try:
            ip.output(PROTO_UDP, src, dst, payload, ttl=sock.ttl, tos=sock.tos,
                      df=sock.dontfrag, broadcast_ok=sock.broadcast, fib=sock.fib)
        finally:
            offl.partial = saved
        self.stats.opackets += 1

    def _cut(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int,
             again: Callable[[Ifnet, bytes, int, int, int], None]) -> None:
        """A whole VXLAN datagram (tunnel GSO, vimage.net.offload) for a port no vxlan
        socket holds: cut into the datagrams it stands for, each taken `again`."""
        self.stats.ipackets -= 1
        offl = ifp.offl
        saved = offl.partial
        pieces = offload.resolve_ip(pkt, offl.gso, 0xFFFF, True)
        offl.partial = saved & ~LARGE
        try:
            for piece in pieces:
                again(ifp, piece, off, src, dst)
        finally:
            offl.partial = saved

    # -- over IPv6 (FreeBSD udp6_usrreq.c) ----------------------------------------------
    def input6(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """udp6_input: the switch's input for next header 17 (`off`: the UDP header)."""
        st = self.stats
        st.ipackets += 1
        try:
            dgram = wudp.parse(memoryview(pkt)[off:],
                               *(() if (offloaded := ifp.offl.partial) else (src, dst)))
        except WireError as exc:
            count_drop(st, exc.reason, _PARSE_DROPS)
            return
        if dgram.checksum == 0 and not offloaded:  # mandatory over IPv6 (RFC 8200 8.1)
            st.nosum += 1
            return
        zsrc = src | (ifp.index << 96) if needs_zone(src) else src  # the sender's zone
        zoned = needs_zone(dst)
        sport = dgram.sport
        socks = self.bound6(dgram.dport)
        if offloaded & VXLAN:
            if offloaded & LARGE and not _takes_inner(socks):
                self._cut(ifp, pkt, off, src, dst, self.input6)
                return
            dgram = _vxlan_plain(dgram, socks)
        if dst >> 120 == 0xFF:
            delivered = False
            for sock in socks:
                if sock.laddr and sock.laddr != dst:
                    continue
                if sock.faddr and (sock.faddr != src or sock.fport != sport):
                    continue
                delivered = sock.enqueue(bytes(dgram.payload), zsrc, sport) or delivered
            if delivered:
                st.delivered += 1
            else:
                st.noportbcast += 1
            return
        best = None
        best_score = -1
        for sock in socks:
            if is_mapped(sock.laddr) or is_mapped(sock.faddr):
                continue
            if zoned and sock.scope and sock.scope != ifp.index:
                continue
            score = 0
            if sock.laddr:
                if sock.laddr != dst:
                    continue
                score += 1
            if sock.faddr:
                if sock.faddr != src or sock.fport != sport:
                    continue
                score += 2
            if score >= best_score:  # the last bound among equals, as over IPv4
                best, best_score = sock, score
        if best is not None and best.reuseport_lb and not best.faddr:
            best = self._lb_member(socks, best, src, sport, dst, dgram.dport)
        if best is None:
            st.noport += 1
            if not self.blackhole:
                self.vnet.icmp6.error(ifp, pkt, wicmp6.DST_UNREACH, wicmp6.UNREACH_NOPORT, 0)
            return
        if best.enqueue(bytes(dgram.payload), zsrc, sport, (dst, ifp.index)):
            st.delivered += 1
        else:
            st.fullsock += 1

    def ctlinput6(self, type_: int, code: int, quoted: bytes, rest: int) -> None:
        """udp6_ctlinput: an ICMPv6 error quoting one of our datagrams."""
        err = next((e for t, c, e in _CTL6_ERRNO if t == type_ and c == code), 0)
        if not err or len(quoted) < 44:
            return
        src = int.from_bytes(quoted[8:24], "big")
        dst = int.from_bytes(quoted[24:40], "big")
        sport = (quoted[40] << 8) | quoted[41]
        dport = (quoted[42] << 8) | quoted[43]
        for sock in self.bound6(sport):
            if sock.faddr == dst and sock.fport == dport and sock.laddr in (0, src):
                sock.set_error(err)

    def output6(self, sock: Socket, data: bytes, dst: int, dport: int, zone: Ifnet | None,
                hlim: int | None) -> None:
        """udp6_output; an IPv4-mapped destination goes out over IPv4 (udp6_send)."""
        if len(data) + 8 > sock.sndbuf:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if is_mapped(dst):
            src4 = unmapped(sock.laddr) if is_mapped(sock.laddr) else 0
            ip = self.vnet.ip
            dst4 = unmapped(dst)
            src4 = src4 or ip.select_source(dst4, sock.fib)
            payload = wudp.build(sock.lport, dport, data, src4, dst4,
                                 with_checksum=bool(self.checksum))
            ip.output(PROTO_UDP, src4, dst4, payload, ttl=sock.ttl, tos=sock.tos,
                      df=sock.dontfrag, fib=sock.fib)
            self.stats.opackets += 1
            return
        ip6 = self.vnet.ip6
        src = sock.laddr or ip6.select_source(dst, zone, sock.fib)
        # never without a checksum (RFC 8200), but the interface fills it (offload)
        payload = wudp.build(sock.lport, dport, data, src, dst, with_checksum=False)
        offl = offload.state(self.vnet.kernel)
        saved = offl.partial
        offl.partial = PARTIAL
        try:
            ip6.output(PROTO_UDP, src, dst, payload, hlim=hlim, ifp=zone, tclass=sock.tos,
                       dontfrag=sock.dontfrag, fib=sock.fib)
        finally:
            offl.partial = saved
        self.stats.opackets += 1

    def sockets(self) -> list[Socket]:
        return [s for port in list(self.ports) for s in self.bound(port)]

    def sockets6(self) -> list[Socket]:
        return [s for port in list(self.ports6) for s in self.bound6(port)]

    def clear(self) -> None:
        for sock in self.sockets() + self.sockets6():
            sock.close()
        self.ports.clear()
        self.ports6.clear()


def _family(sock: Socket) -> int:
    """A socket's family; kernel sockets (a vxlan interface's) have none: AF_INET."""
    return getattr(sock, "family", AF_INET)


def _conflict(sock: Socket, addr: int, other: Socket) -> bool:
    """Would `sock` bound to `addr` overlap `other` (either family)? Addresses compare in
    the IPv6 space, an AF_INET socket's as mapped; a v6only socket never overlaps an
    AF_INET one, nor a dual-stack wildcard a specific IPv4 address of another's."""
    a6, o6 = _family(sock) == AF_INET6, _family(other) == AF_INET6
    if a6 != o6:
        v6sock = sock if a6 else other
        if v6sock.v6only:
            return False
    mine = addr if a6 else (mapped(addr) if addr else 0)
    theirs = other.laddr if o6 else (mapped(other.laddr) if other.laddr else 0)
    return not (mine and theirs and mine != theirs)


def vnet_attach(vnet: Vnet) -> None:
    vnet.udp = UdpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.udp.clear()


def udp6_attach(vnet: Vnet) -> None:
    """UDP over IPv6 shares IPv4's state (one port space, one set of counters, as
    FreeBSD's udbinfo and udpstat): the descriptor's slot names the same object."""
    vnet.udp6 = vnet.udp  # type: ignore[attr-defined]


def udp6_detach(vnet: Vnet) -> None:
    vnet.__dict__.pop("udp6", None)


def _live(table: dict[int, PcbList], port: int) -> list[Socket]:
    """The live sockets of `table` bound to `port`; the port is forgotten once none is."""
    pcbs = table.get(port)
    if pcbs is None:
        return []
    socks = pcbs.live()
    if not socks:
        del table[port]
    return socks


def _takes_inner(socks: Iterable[Socket]) -> bool:
    return any(getattr(sock, "offloaded_inner", False) for sock in socks)


def _vxlan_plain(dgram: wudp.UdpRepr, socks: Iterable[Socket]) -> wudp.UdpRepr:
    """A datagram whose inner frame is offloaded (the mark's VXLAN bit, vimage.net.offload)
    for a port no vxlan kernel socket holds: the application gets it filled."""
    if _takes_inner(socks):
        return dgram
    return dgram._replace(payload=memoryview(offload.fill_vxlan(bytes(dgram.payload))))
