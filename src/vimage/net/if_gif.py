"""gif(4): the generic tunnel interface, IPv4 in IPv4 (FreeBSD if_gif.c, netinet/in_gif.c).

`ifconfig gif0 create; ifconfig gif0 tunnel 192.0.2.1 192.0.2.2; ifconfig gif0 inet
10.0.0.1 10.0.0.2`: the inner packet is the outer packet's payload, IP protocol 4
(IPPROTO_IPV4; an IPv6 inner packet would be 41, IPPROTO_IPV6). MTU 1280 as FreeBSD's
GIF_MTU; `net.link.gif.max_nesting` (1) and `net.inet.ip.gifttl` (30) per vnet.
"""

from __future__ import annotations

from socket import AF_INET
from typing import TYPE_CHECKING, ClassVar

from vimage.net.tunnel import Tunnel, TunnelCloner, TunnelState
from vimage.protosw import Protocol
from vimage.sysctl import Oid

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPPROTO_IPV4 = 4
IPPROTO_IPV6 = 41
GIF_MTU = 1280  # FreeBSD if_gif.h
GIF_TTL = 30  # FreeBSD in_gif.c


class Gif(Tunnel):
    __slots__ = ()

    KIND: ClassVar[str] = "gif"
    SLOT: ClassVar[str] = "gif"
    MTU: ClassVar[int] = GIF_MTU

    def encap(self, pkt: bytes) -> tuple[int, bytes]:
        return (IPPROTO_IPV6 if pkt[0] >> 4 == 6 else IPPROTO_IPV4), pkt


class GifState(TunnelState):
    """Per-vnet gif state (FreeBSD's V_ipv4_hashtbl of in_gif.c and V_max_gif_nesting)."""

    __slots__ = ()

    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """in_gif_input: an IPv4-in-IPv4 packet for the tunnel with outer addresses
        (dst, src); others go to raw IP (rip_input: a raw socket, or protocol unreachable)."""
        softcs = self.softcs
        tuns = softcs.get((AF_INET, dst, src)) if softcs else None
        if not tuns:
            self.stats.nomatch += 1
            self.vnet.raw.ip_input(ifp, pkt, hlen, src, dst)
            return
        tun = tuns[0]
        inner = pkt[hlen:]
        if len(inner) < 20 or inner[0] >> 4 != 4:  # not an IPv4 header: gif_input drops it
            tun.ierrors += 1
            return
        tun.decap(inner)


class GifCloner(TunnelCloner):
    IFCLASS = Gif


def vnet_attach(vnet: Vnet) -> None:
    vnet.gif = GifState(vnet, GIF_TTL)


def vnet_detach(vnet: Vnet) -> None:
    vnet.gif.clear()


def _ifdetach(ifp: Ifnet) -> None:
    ifp.vnet.gif.ifdetach(ifp)


SYSCTLS: tuple[Oid, ...] = (
    Oid("net.link.gif.max_nesting", "gif", "max_nesting", "Max nested tunnels", 1, 255),
    Oid("net.inet.ip.gifttl", "gif", "ttl", "Default TTL for gif encapsulation", 1, 255),
)

PROTOCOL = Protocol(
    "gif", 62, "gif", vnet_attach, vnet_detach, domain=AF_INET, protocol=IPPROTO_IPV4,
    input=GifState.input, sysctls=SYSCTLS, ifdetach=_ifdetach)
"""IPPROTO_IPV4 input through the protocol switch (FreeBSD registers in_gif's encap
handler with ip_encap_attach)."""
