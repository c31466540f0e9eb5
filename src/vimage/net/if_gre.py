"""gre(4): Generic Routing Encapsulation, RFC 2784 with RFC 2890 keys and sequence
numbers (FreeBSD if_gre.c, netinet/ip_gre.c).

`ifconfig gre0 create; ifconfig gre0 tunnel A B [grekey N] [enable_csum] [enable_seq]`:
IP protocol 47, GRE protocol type 0x0800 (IPv4 inner; 0x86DD for IPv6). Input finds
the tunnel by outer addresses and key: a tunnel with a key takes only packets with
that key, one without a key only packets without (as Linux's ip_gre does; several
gre interfaces may share outer addresses with different keys). A malformed header,
a key no tunnel has, or a bad checksum is counted in the interface's input errors;
an unknown protocol type in its input drops (FreeBSD's IFCOUNTER_NOPROTO).
MTU 1476 (GREMTU), `net.link.gre.max_nesting` (1), `net.inet.ip.grettl` (30).
"""

from __future__ import annotations

import errno
from socket import AF_INET, AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

from vimage.net.tunnel import Tunnel, TunnelCloner, TunnelState, outer_nomatch
from vimage.protosw import Protocol, existing
from vimage.sysctl import Oid
from vimage.wire import WireError
from vimage.wire import gre as wgre

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPPROTO_GRE = 47
GRE_MTU = 1476  # FreeBSD if_gre.h GREMTU
GRE_TTL = 30  # FreeBSD ip_gre.c
GRE_ENABLE_CSUM = 0x1  # ifconfig gre0 enable_csum (FreeBSD if_gre.h)
GRE_ENABLE_SEQ = 0x2  # ifconfig gre0 enable_seq
OPTION_NAMES = ((GRE_ENABLE_CSUM, "ENABLE_CSUM"), (GRE_ENABLE_SEQ, "ENABLE_SEQ"))
_INNER_PROTO = MappingProxyType({4: wgre.PROTO_IPV4, 6: wgre.PROTO_IPV6})


class Gre(Tunnel):
    __slots__ = ("_hdr4", "key", "options", "seq")

    KIND: ClassVar[str] = "gre"
    SLOT: ClassVar[str] = "gre"
    MTU: ClassVar[int] = GRE_MTU

    def __init__(self, vnet: Vnet, unit: int) -> None:
        self.key: int | None = None  # grekey; None (or 0 from ifconfig) sends no key
        self.options = 0
        self.seq = 0  # the last sequence number sent
        self._hdr4 = wgre.build_header(wgre.PROTO_IPV4)
        super().__init__(vnet, unit)

    def set_key(self, key: int | None) -> None:
        """`ifconfig gre0 grekey N` (0: no key). Refused if another gre interface with
        the same outer addresses has that key."""
        key = key or None
        state: TunnelState = getattr(self.vnet, self.SLOT)
        for other in state.lookup(self.family, self.src, self.dst) or ():
            if other is not self and other.key == key:  # type: ignore[attr-defined]
                raise OSError(errno.EADDRINUSE,
                              f"{other.name} already uses these tunnel addresses and key")
        self.key = key
        self._hdr4 = wgre.build_header(wgre.PROTO_IPV4, key)

    def can_share(self, other: Tunnel) -> bool:
        return other.key != self.key  # type: ignore[attr-defined]

    def relays(self, frame: bytes) -> bool:
        """Not with a GRE checksum, which covers the inner packet: that is filled first."""
        return not self.options & GRE_ENABLE_CSUM and super().relays(frame)

    def whole_ok(self) -> bool:
        """A sequence number (or checksum) differs per piece: those are cut first, as
        Linux's gre device drops GSO with TUNNEL_SEQ."""
        return not self.options

    def encap(self, pkt: bytes) -> tuple[int, bytes]:
        version = pkt[0] >> 4
        if version == 4 and not self.options:
            return IPPROTO_GRE, self._hdr4 + pkt
        seq = None
        if self.options & GRE_ENABLE_SEQ:
            self.seq = seq = (self.seq + 1) & 0xFFFFFFFF
        proto = _INNER_PROTO.get(version, wgre.PROTO_IPV4)
        if not self.options & GRE_ENABLE_CSUM:
            return IPPROTO_GRE, wgre.build_header(proto, self.key, seq) + pkt
        return IPPROTO_GRE, wgre.build(proto, pkt, self.key, seq, csum=True)


class GreState(TunnelState):
    """Per-vnet GRE state (FreeBSD V_ipv4_hashtbl of ip_gre.c, V_max_gre_nesting)."""

    __slots__ = ()

    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """GRE over IPv4 (in_gre_input)."""
        self.gre_input(AF_INET, ifp, pkt, hlen, src, dst)

    def input6(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """GRE over IPv6, next header 47 (in6_gre_input)."""
        self.gre_input(AF_INET6, ifp, pkt, off, src, dst)

    def gre_input(self, family: int, ifp: Ifnet, pkt: bytes, hlen: int, src: int,
                  dst: int) -> None:
        """gre_input: find the tunnel, check the header, queue the inner packet."""
        softcs = self.softcs
        tuns = softcs.get((family, dst, src)) if softcs else None
        if not tuns:
            outer_nomatch(self, family, ifp, pkt, hlen, src, dst)
            return
        try:
            gre = wgre.parse(memoryview(pkt)[hlen:])
        except WireError:
            tuns[0].ierrors += 1
            return
        tun = next((t for t in tuns if t.key == gre.key), None)  # type: ignore[attr-defined]
        if tun is None:
            self.stats.nomatch += 1
            tuns[0].ierrors += 1
            return
        inner = bytes(gre.payload)
        if gre.proto == wgre.PROTO_IPV4:
            if len(inner) < 20 or inner[0] >> 4 != 4:
                tun.ierrors += 1
                return
        elif gre.proto != wgre.PROTO_IPV6 or len(inner) < 40 or inner[0] >> 4 != 6:
            tun.iqdrops += 1  # a protocol type we do not carry
            return
        tun.decap(inner)


class GreCloner(TunnelCloner):
    IFCLASS = Gre


def vnet_attach(vnet: Vnet) -> None:
    vnet.gre = GreState(vnet, GRE_TTL)


def vnet_detach(vnet: Vnet) -> None:
    vnet.gre.clear()


def _ifdetach(ifp: Ifnet) -> None:
    state = existing(ifp.vnet, "gre")  # never used: no tunnel to tear down
    if state is not None:
        state.ifdetach(ifp)


SYSCTLS: tuple[Oid, ...] = (
    Oid("net.link.gre.max_nesting", "gre", "max_nesting", "Max nested tunnels", 1, 255),
    Oid("net.inet.ip.grettl", "gre", "ttl", "Default TTL for GRE encapsulation", 1, 255),
)

PROTOCOL = Protocol(
    "gre", 63, "gre", vnet_attach, vnet_detach, domain=AF_INET, protocol=IPPROTO_GRE,
    input=GreState.input, sysctls=SYSCTLS, ifdetach=_ifdetach)
"""IPPROTO_GRE input through the protocol switch (FreeBSD's in_gre_attach registers an
encap handler)."""

INPUT6 = Protocol("gre6", 64, "gre", domain=AF_INET6, protocol=IPPROTO_GRE,
                  input=GreState.input6)
"""GRE over IPv6 (in6_gre_attach): another entry point into the same state."""
