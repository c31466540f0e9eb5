"""Raw IP sockets (FreeBSD raw_ip.c): ping and traceroute use them; raw IPv6 sockets
(FreeBSD raw_ip6.c, RFC 3542): ping6 uses a raw ICMPv6 socket."""

from __future__ import annotations

import errno
from socket import AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.netinet.in_pcb import PcbList
from vimage.netinet.ip import options_ok
from vimage.stats import LazySlots
from vimage.sysctl import Oid, oids
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import HEADER
from vimage.wire.ipv6 import HEADER_LEN as HEADER6_LEN
from vimage.wire.ipv6 import NXT_FRAGMENT, NXT_ICMPV6, needs_zone, pseudo_sum

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.socket.socket import Socket
    from vimage.vnet import Vnet

SYSCTLS: tuple[Oid, ...] = oids("net.inet.raw", "raw", (
    ("maxdgram", "Maximum outgoing raw IP datagram size", 1, 65535),
    ("recvspace", "Maximum space for incoming raw IP datagrams", 1, 2**26),
))


class RawState(LazySlots):
    __slots__ = ("icmp6_hooked", "maxdgram", "recvspace", "sockets", "sockets6", "vnet")
    lazy = MappingProxyType({"sockets": PcbList, "sockets6": PcbList})  # on first read

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # sockets, sockets6 (AF_INET6): made on first read
        self.icmp6_hooked = False
        self.maxdgram = 9216
        self.recvspace = 9216

    def input(self, pkt: bytes, proto: int, src: int, dst: int,
              ifp: Ifnet | None = None) -> bool:
        """Give every matching raw socket a copy (header included); True if any took it.
        `ifp`, the arrival interface, is for IP_RECVIF (rip_input's ip_savecontrol)."""
        taken = False
        for sock in self.sockets.live():
            if sock.proto and sock.proto != proto:
                continue
            if sock.laddr and sock.laddr != dst:
                continue
            if sock.faddr and sock.faddr != src:
                continue
            sock.enqueue(pkt, src, 0, (dst, ifp.index if ifp is not None else 0, pkt[8],
                                       pkt[1]) if sock.recvopts else None)
            taken = True
        return taken

    def ip_input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """The protocol switch's entry for every IP protocol no other protocol takes
        (FreeBSD's rip_input in ip_protox): raw sockets, else protocol unreachable."""
        if not self.input(pkt, pkt[9], src, dst, ifp):
            self.vnet.ip.noproto(pkt, dst)

    def output(self, sock: Socket, data: bytes, dst: int) -> None:
        ip = self.vnet.ip
        if len(data) > sock.sndbuf:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if not sock.hdrincl:
            src = sock.laddr or ip.select_source(dst, sock.fib)
            ip.output(sock.proto, src, dst, data, ttl=sock.ttl, tos=sock.tos,
                      df=sock.dontfrag, broadcast_ok=sock.broadcast, fib=sock.fib)
            return
        self._output_hdrincl(sock, data)

    def _output_hdrincl(self, sock: Socket, data: bytes) -> None:
        """IP_HDRINCL (FreeBSD rip_output and ip_output with IP_RAWOUTPUT): the caller's
        header goes out as written, its destination included (the address given to
        sendto, or connected to, is not used); ip_len and ip_off are in network order and
        ip_len must be the datagram's length. The kernel fills only an ip_id of 0, a
        source of 0.0.0.0 (the outgoing interface's address) and the checksum."""
        ip = self.vnet.ip
        if len(data) > 65535:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if len(data) < 20 or data[0] >> 4 != 4:
            raise OSError(errno.EINVAL, "Invalid argument")
        hlen = (data[0] & 0x0F) << 2
        if (hlen < 20 or hlen > len(data) or int.from_bytes(data[2:4], "big") != len(data)
                or (hlen > 20 and not options_ok(data, hlen))):
            raise OSError(errno.EINVAL, "Invalid argument")  # as FreeBSD's rip_output
        hdr = bytearray(data[:hlen])
        fields = list(HEADER.unpack_from(hdr))
        dst = fields[9]
        if fields[3] == 0:  # "doesn't allow application to specify ID of zero"
            fields[3] = ip.next_ident()
        if fields[8] == 0:
            fields[8] = sock.laddr or ip.select_source(dst, sock.fib)
        fields[7] = 0
        HEADER.pack_into(hdr, 0, *fields)
        hdr[10:12] = checksum(hdr).to_bytes(2, "big")
        ip.output_packet(bytes(hdr) + bytes(data[hlen:]), dst, broadcast_ok=sock.broadcast,
                         raw=True, fib=sock.fib)

    # -- IPv6 (FreeBSD raw_ip6.c) -------------------------------------------------------------
    def add6(self, sock: Socket) -> None:
        self.sockets6.add(sock)
        if not self.icmp6_hooked:  # ICMPv6 hands every message to rip6_input
            self.icmp6_hooked = True
            self.vnet.icmp6.add_listener(self.icmp6_input)

    def discard(self, sock: Socket) -> None:
        if getattr(sock, "family", 0) == AF_INET6:
            self.sockets6.discard(sock)
        else:
            self.sockets.discard(sock)

    def input6(self, ifp: Ifnet, pkt: bytes, off: int, nxt: int, src: int, dst: int) -> bool:
        """rip6_input: a copy of the upper-layer message (no IPv6 header, RFC 3542) for
        every matching raw socket; True if any took it."""
        taken = False
        zsrc = src | (ifp.index << 96) if needs_zone(src) else src
        for sock in self.sockets6.live():
            if sock.proto and sock.proto != nxt:
                continue
            if sock.laddr and sock.laddr != dst:
                continue
            if sock.faddr and sock.faddr != src:
                continue
            if sock.cksum_off >= 0 and nxt != NXT_ICMPV6 and not _cksum_ok(
                    pkt, off, nxt, src, dst, sock.cksum_off):
                continue  # RFC 3542 3.1: the kernel verifies what it computes
            sock.enqueue(bytes(pkt[off:]), zsrc, 0)
            taken = True
        return taken

    def icmp6_input(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        if self.sockets6:
            self.input6(ifp, pkt, off, NXT_ICMPV6, src, dst)

    def ip6_input(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """The switch's AF_INET6 entry for every next header no protocol takes: raw
        sockets, else a parameter problem at the byte that named it (rip6_input)."""
        prev, nxt = _naming_byte(pkt, off)
        if not self.input6(ifp, pkt, off, nxt, src, dst):
            self.vnet.ip6.noproto(ifp, pkt, prev)

    def output6(self, sock: Socket, data: bytes, dst: int, zone: Ifnet | None,
                hlim: int | None) -> None:
        """rip6_output: the kernel builds the header and, for ICMPv6 or with
        IPV6_CHECKSUM, fills the checksum at its offset (RFC 3542 3.1)."""
        if len(data) > sock.sndbuf:
            raise OSError(errno.EMSGSIZE, "Message too long")
        ip6 = self.vnet.ip6
        src = sock.laddr or ip6.select_source(dst, zone, sock.fib)
        off = sock.cksum_off
        if off >= 0:
            if off + 2 > len(data):
                raise OSError(errno.EINVAL, "Invalid argument")
            body = bytearray(data)
            body[off:off + 2] = b"\0\0"
            csum = checksum(body, pseudo_sum(src, dst, len(body), sock.proto))
            body[off:off + 2] = csum.to_bytes(2, "big")
            data = bytes(body)
        ip6.output(sock.proto, src, dst, data, hlim=hlim, ifp=zone, tclass=sock.tos,
                   dontfrag=sock.dontfrag, fib=sock.fib)

    def clear(self) -> None:
        for sock in self.sockets.live() + self.sockets6.live():
            sock.close()


def _cksum_ok(pkt: bytes, off: int, nxt: int, src: int, dst: int, at: int) -> bool:
    body = pkt[off:]
    return len(body) >= at + 2 and checksum(body, pseudo_sum(src, dst, len(body), nxt)) == 0


def _naming_byte(pkt: bytes, off: int) -> tuple[int, int]:
    """(offset of the byte that names the header at `off`, that next header value)."""
    prev, pos = 6, HEADER6_LEN
    while pos < off:
        size = 8 if pkt[prev] == NXT_FRAGMENT else (pkt[pos + 1] + 1) << 3
        prev, pos = pos, pos + size
    return prev, pkt[prev]


def vnet_attach(vnet: Vnet) -> None:
    vnet.raw = RawState(vnet)


def raw6_attach(vnet: Vnet) -> None:
    """Raw IPv6 sockets share raw IP's state (one list per family)."""
    vnet.raw6 = vnet.raw


def raw6_detach(vnet: Vnet) -> None:
    vnet.__dict__.pop("raw6", None)


def vnet_detach(vnet: Vnet) -> None:
    vnet.raw.clear()
