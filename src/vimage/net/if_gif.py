"""gif(4): the generic tunnel interface, IPv4 or IPv6 in IPv4 or IPv6 (FreeBSD if_gif.c,
netinet/in_gif.c, netinet6/in6_gif.c).

`ifconfig gif0 create; ifconfig gif0 tunnel 192.0.2.1 192.0.2.2; ifconfig gif0 inet
10.0.0.1 10.0.0.2`: the inner packet is the outer packet's payload, IP protocol (or
IPv6 next header) 4 for an IPv4 inner packet (IPPROTO_IPV4), 41 for IPv6 (IPPROTO_IPV6).
MTU 1280 as FreeBSD's GIF_MTU; `net.link.gif.max_nesting` (1), `net.inet.ip.gifttl` (30).
"""

from __future__ import annotations

from socket import AF_INET, AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

from vimage.net.tunnel import Tunnel, TunnelCloner, TunnelState, outer_nomatch
from vimage.protosw import Protocol, existing
from vimage.sysctl import Oid

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPPROTO_IPV4 = 4
IPPROTO_IPV6 = 41
GIF_MTU = 1280  # FreeBSD if_gif.h
GIF_TTL = 30  # FreeBSD in_gif.c
_MIN_HEADER = MappingProxyType({4: 20, 6: 40})  # inner IP version -> fixed header length


class Gif(Tunnel):
    __slots__ = ()

    KIND: ClassVar[str] = "gif"
    SLOT: ClassVar[str] = "gif"
    MTU: ClassVar[int] = GIF_MTU

    def encap(self, pkt: bytes) -> tuple[int, bytes]:
        return (IPPROTO_IPV6 if pkt[0] >> 4 == 6 else IPPROTO_IPV4), pkt


class GifState(TunnelState):
    """Per-vnet gif state (FreeBSD's V_ipv4_hashtbl of in_gif.c, V_ipv6_hashtbl of
    in6_gif.c, V_max_gif_nesting)."""

    __slots__ = ()

    # one entry point per (outer family, inner version), as FreeBSD registers one encap
    # handler per protocol (in_gif_attach, in6_gif_attach: IPPROTO_IPV4, IPPROTO_IPV6)
    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """IPv4 in IPv4 (in_gif_input)."""
        self.encap_input(AF_INET, 4, ifp, pkt, hlen, src, dst)

    def input_6in4(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """IPv6 in IPv4, IP protocol 41 (RFC 4213 3.5)."""
        self.encap_input(AF_INET, 6, ifp, pkt, hlen, src, dst)

    def input6_4in6(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """IPv4 in IPv6, next header 4 (in6_gif_input; RFC 2473)."""
        self.encap_input(AF_INET6, 4, ifp, pkt, off, src, dst)

    def input6_6in6(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """IPv6 in IPv6, next header 41 (RFC 2473)."""
        self.encap_input(AF_INET6, 6, ifp, pkt, off, src, dst)

    def encap_input(self, family: int, version: int, ifp: Ifnet, pkt: bytes, off: int,
                    src: int, dst: int) -> None:
        """The tunnel with outer addresses (dst, src) of `family` takes the inner packet
        if it is an IP header of `version` (gif_input drops others); no tunnel: raw IP."""
        softcs = self.softcs
        tuns = softcs.get((family, dst, src)) if softcs else None
        if not tuns:
            outer_nomatch(self, family, ifp, pkt, off, src, dst)
            return
        tun = tuns[0]
        inner = pkt[off:]
        if len(inner) < _MIN_HEADER[version] or inner[0] >> 4 != version:
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
    state = existing(ifp.vnet, "gif")  # never used: no tunnel to tear down
    if state is not None:
        state.ifdetach(ifp)


SYSCTLS: tuple[Oid, ...] = (
    Oid("net.link.gif.max_nesting", "gif", "max_nesting", "Max nested tunnels", 1, 255),
    Oid("net.inet.ip.gifttl", "gif", "ttl", "Default TTL for gif encapsulation", 1, 255),
)

PROTOCOL = Protocol(
    "gif", 62, "gif", vnet_attach, vnet_detach, domain=AF_INET, protocol=IPPROTO_IPV4,
    input=GifState.input, sysctls=SYSCTLS, ifdetach=_ifdetach)
"""IPPROTO_IPV4 input through the protocol switch (FreeBSD registers in_gif's encap
handler with ip_encap_attach)."""

# more entry points into the same per-vnet state (they attach nothing themselves)
INPUTS: tuple[Protocol, ...] = (
    Protocol("gif-6in4", 64, "gif", domain=AF_INET, protocol=IPPROTO_IPV6,
             input=GifState.input_6in4),
    Protocol("gif6-4in6", 64, "gif", domain=AF_INET6, protocol=IPPROTO_IPV4,
             input=GifState.input6_4in6),
    Protocol("gif6-6in6", 64, "gif", domain=AF_INET6, protocol=IPPROTO_IPV6,
             input=GifState.input6_6in6),
)
