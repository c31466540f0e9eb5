"""UDP: the PCB table, input demultiplexing and output (FreeBSD udp_usrreq.c)."""

from __future__ import annotations

import errno
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.netinet import icmp as icmp_mod
from vimage.netinet.icmp import quoted_ports
from vimage.netinet.in_ import INADDR_BROADCAST, is_multicast
from vimage.netinet.in_pcb import PcbList
from vimage.stats import count_drop, counters
from vimage.sysctl import Oid, oids
from vimage.wire import WireError
from vimage.wire import icmp as wicmp
from vimage.wire import udp as wudp
from vimage.wire.ipv4 import PROTO_UDP

if TYPE_CHECKING:
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


# a datagram the parser refuses: its WireError reason -> the counter ("" for any other)
_PARSE_DROPS = MappingProxyType({"badsum": "badsum", "badlen": "badlen", "": "hdrops"})

UdpStats = counters("UdpStats", tuple(name for name, _ in STAT_LINES))


class UdpState:
    __slots__ = ("blackhole", "checksum", "maxdgram", "ports", "recvspace", "stats", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.ports: dict[int, PcbList] = {}
        self.stats = UdpStats()
        self.checksum = 1
        self.maxdgram = 9216
        self.recvspace = 42080
        self.blackhole = 0

    # -- PCB table -------------------------------------------------------------------
    def bind(self, sock: Socket, addr: int, port: int) -> None:
        if port == 0:
            port = self.ephemeral(addr)
        else:
            for other in self.bound(port):
                if other.laddr != addr and other.laddr and addr:
                    continue
                if sock.reuseport and other.reuseport:
                    continue
                if sock.reuseaddr and other.reuseaddr:
                    continue
                if other.laddr != addr and sock.reuseaddr:
                    continue
                raise OSError(errno.EADDRINUSE, "Address already in use")
        sock.laddr = addr
        sock.lport = port
        pcbs = self.ports.get(port)
        if pcbs is None:
            pcbs = self.ports[port] = PcbList()
        pcbs.add(sock)

    def bound(self, port: int) -> list[Socket]:
        """The live sockets bound to `port` (forgetting the port once none is left)."""
        pcbs = self.ports.get(port)
        if pcbs is None:
            return []
        socks = pcbs.live()
        if not socks:
            del self.ports[port]
        return socks

    def ephemeral(self, addr: int) -> int:
        ip = self.vnet.ip
        first, last = sorted((ip.port_first, ip.port_last))
        span = last - first + 1
        start = self.vnet.rng.randrange(span)  # the vnet's own stream: see Vnet.rng
        ports = self.ports
        for i in range(span):
            port = first + (start + i) % span
            if port not in ports or not self.bound(port):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")

    def unbind(self, sock: Socket) -> None:
        pcbs = self.ports.get(sock.lport)
        if pcbs is not None:
            pcbs.discard(sock)
            if not pcbs:
                del self.ports[sock.lport]

    # -- input ---------------------------------------------------------------------------
    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        st = self.stats
        st.ipackets += 1
        try:
            dgram = wudp.parse(memoryview(pkt)[hlen:], src, dst)
        except WireError as exc:
            count_drop(st, exc.reason, _PARSE_DROPS)
            return
        if dgram.checksum == 0:
            st.nosum += 1
        pcbs = self.ports.get(dgram.dport)
        socks = pcbs.live() if pcbs is not None else ()
        sport = dgram.sport
        if dst == INADDR_BROADCAST or dst in self.vnet.ip.bcast or is_multicast(dst):
            delivered = False
            for sock in socks or ():
                if sock.laddr and sock.laddr != dst and not (
                        (ia := self.vnet.ip.bcast.get(dst)) and ia.addr == sock.laddr):
                    continue
                if sock.faddr and (sock.faddr != src or sock.fport != sport):
                    continue
                delivered = sock.enqueue(bytes(dgram.payload), src, sport) or delivered
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
            if score > best_score:
                best, best_score = sock, score
        if best is None:
            st.noport += 1
            if not self.blackhole:
                icmp_mod.error(self.vnet, pkt, wicmp.UNREACH, wicmp.UNREACH_PORT)
            return
        if best.enqueue(bytes(dgram.payload), src, sport):
            st.delivered += 1
        else:
            st.fullsock += 1

    def ctlinput(self, type_: int, code: int, src: int, dst: int, sport: int,
                 dport: int) -> None:
        err = next((e for t, c, e in _CTL_ERRNO if t == type_ and c == code), 0)
        if not err:
            return
        for sock in self.bound(sport):
            if sock.faddr == dst and sock.fport == dport and sock.laddr in (0, src):
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
        payload = wudp.build(sock.lport, dport, data, src, dst, with_checksum=bool(self.checksum))
        ip.output(PROTO_UDP, src, dst, payload, ttl=sock.ttl, tos=sock.tos, df=sock.dontfrag,
                  broadcast_ok=sock.broadcast, fib=sock.fib)
        self.stats.opackets += 1

    def sockets(self) -> list[Socket]:
        return [s for port in list(self.ports) for s in self.bound(port)]

    def clear(self) -> None:
        for sock in self.sockets():
            sock.close()
        self.ports.clear()


def vnet_attach(vnet: Vnet) -> None:
    vnet.udp = UdpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.udp.clear()
