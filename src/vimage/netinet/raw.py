"""Raw IP sockets (FreeBSD raw_ip.c): ping and traceroute use them."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.netinet.in_pcb import PcbList
from vimage.netinet.ip import options_ok
from vimage.sysctl import Oid, oids
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import HEADER

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.socket.socket import Socket
    from vimage.vnet import Vnet

SYSCTLS: tuple[Oid, ...] = oids("net.inet.raw", "raw", (
    ("maxdgram", "Maximum outgoing raw IP datagram size", 1, 65535),
    ("recvspace", "Maximum space for incoming raw IP datagrams", 1, 2**26),
))


class RawState:
    __slots__ = ("maxdgram", "recvspace", "sockets", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.sockets = PcbList()
        self.maxdgram = 9216
        self.recvspace = 9216

    def input(self, pkt: bytes, proto: int, src: int, dst: int) -> bool:
        """Give every matching raw socket a copy (header included); True if any took it."""
        taken = False
        for sock in self.sockets.live():
            if sock.proto and sock.proto != proto:
                continue
            if sock.laddr and sock.laddr != dst:
                continue
            if sock.faddr and sock.faddr != src:
                continue
            sock.enqueue(pkt, src, 0)
            taken = True
        return taken

    def ip_input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """The protocol switch's entry for every IP protocol no other protocol takes
        (FreeBSD's rip_input in ip_protox): raw sockets, else protocol unreachable."""
        if not self.input(pkt, pkt[9], src, dst):
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
        # IP_HDRINCL: the caller wrote the header; the kernel fills id, length, checksum
        if len(data) < 20 or data[0] >> 4 != 4 or (data[0] & 0x0F) << 2 > len(data):
            raise OSError(errno.EINVAL, "Invalid argument")
        hlen = (data[0] & 0x0F) << 2
        if hlen < 20 or (hlen > 20 and not options_ok(data, hlen)):
            raise OSError(errno.EINVAL, "Invalid argument")  # as FreeBSD's rip_output
        hdr = bytearray(data[:hlen])
        fields = list(HEADER.unpack_from(hdr))
        fields[2] = len(data)
        if fields[3] == 0:
            fields[3] = ip.next_ident()
        if fields[8] == 0:
            fields[8] = sock.laddr or ip.select_source(dst, sock.fib)
        fields[9] = dst
        fields[7] = 0
        HEADER.pack_into(hdr, 0, *fields)
        hdr[10:12] = checksum(hdr).to_bytes(2, "big")
        ip.output_packet(bytes(hdr) + bytes(data[len(hdr):]), dst, broadcast_ok=sock.broadcast,
                         raw=True, fib=sock.fib)

    def clear(self) -> None:
        for sock in self.sockets.live():
            sock.close()


def vnet_attach(vnet: Vnet) -> None:
    vnet.raw = RawState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.raw.clear()
