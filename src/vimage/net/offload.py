"""Checksum offload and large segments on virtual links (Linux veth's CHECKSUM_PARTIAL,
CHECKSUM_UNNECESSARY and GSO/GRO; FreeBSD's IFCAP_TXCSUM, IFCAP_RXCSUM, IFCAP_TSO, IFCAP_LRO).

Frames are bytes, so the mark cannot live in the frame. It lives in the kernel's
`Offload` state, which says of the frame being handed down (or up) right now, in the
current run-to-completion call chain: `partial` has PARTIAL set when the TCP or UDP
checksum may be missing and LARGE when a TCP segment may exceed the MTU (then `gso` is
its MSS, Linux's gso_size). A sender sets it around its call into IP output and
restores it after; `Ifnet.output` then either keeps the frame as it is (an in-process
peer that takes it: `RxPort` sets the same mark around the receiver's input, so TCP and
UDP input skip the verification, as CHECKSUM_UNNECESSARY does) or resolves it here:
fills the checksums and cuts a large segment into MSS-sized ones (Linux
skb_checksum_help and skb_gso_segment), then sends the pieces the ordinary way.

The mark errs one way only: set on a frame that carries a correct checksum, it costs a
needless fill at worst; it is never clear on a frame without one. See docs/internals.md.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.wire.checksum import checksum, ones_sum, pseudo_sum

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet

# FreeBSD's if.h capability bits (ifconfig's options= and capabilities= lines)
IFCAP_RXCSUM = 0x1
IFCAP_TXCSUM = 0x2
IFCAP_VLAN_MTU = 0x8
IFCAP_TSO4 = 0x100
IFCAP_TSO6 = 0x200
IFCAP_LRO = 0x400
IFCAP_LINKSTATE = 0x80000
IFCAP_RXCSUM_IPV6 = 0x200000
IFCAP_TXCSUM_IPV6 = 0x400000
IFCAP_VXLAN_HWTSO = 0x40000000  # "can do TSO on VXLAN" (vimage: on any encapsulation)
IFCAP_TSO = IFCAP_TSO4 | IFCAP_TSO6
IFCAP_HWCSUM = IFCAP_RXCSUM | IFCAP_TXCSUM

CAP_NAMES: tuple[tuple[int, str], ...] = (
    (IFCAP_RXCSUM, "RXCSUM"), (IFCAP_TXCSUM, "TXCSUM"), (IFCAP_VLAN_MTU, "VLAN_MTU"),
    (IFCAP_TSO4, "TSO4"), (IFCAP_TSO6, "TSO6"), (IFCAP_LRO, "LRO"),
    (IFCAP_LINKSTATE, "LINKSTATE"), (IFCAP_RXCSUM_IPV6, "RXCSUM_IPV6"),
    (IFCAP_TXCSUM_IPV6, "TXCSUM_IPV6"), (IFCAP_VXLAN_HWTSO, "VXLAN_HWTSO"),
)

# ifconfig words -> the bits they set or clear (sbin/ifconfig/ifconfig.c)
CAP_WORDS: Mapping[str, int] = MappingProxyType({
    "rxcsum": IFCAP_RXCSUM, "txcsum": IFCAP_TXCSUM,
    "rxcsum6": IFCAP_RXCSUM_IPV6, "txcsum6": IFCAP_TXCSUM_IPV6,
    "tso4": IFCAP_TSO4, "tso6": IFCAP_TSO6, "tso": IFCAP_TSO, "lro": IFCAP_LRO,
    "vxlanhwtso": IFCAP_VXLAN_HWTSO,
})

# what epair and lo0 offer and enable by default (as Linux veth: csum, TSO, GRO, and GSO
# of encapsulated segments, NETIF_F_GSO_ENCAP_ALL); a VLAN and a bridge relay offloaded
# frames to their parent or members (FreeBSD's vlan and bridge take their parent's and
# members' capabilities; here every parent can resolve). A tunnel takes large segments
# (TSO) and receives them (LRO); it encapsulates one whole when the interface its outer
# packet leaves by has VXLAN_HWTSO (tunnel GSO, `encap_gso`), else cuts it first.
EPAIR_CAPS = (IFCAP_HWCSUM | IFCAP_VLAN_MTU | IFCAP_TSO | IFCAP_LRO
              | IFCAP_RXCSUM_IPV6 | IFCAP_TXCSUM_IPV6 | IFCAP_VXLAN_HWTSO)
LOOP_CAPS = (IFCAP_HWCSUM | IFCAP_TSO | IFCAP_LRO | IFCAP_LINKSTATE
             | IFCAP_RXCSUM_IPV6 | IFCAP_TXCSUM_IPV6 | IFCAP_VXLAN_HWTSO)
CSUM_CAPS = IFCAP_HWCSUM | IFCAP_RXCSUM_IPV6 | IFCAP_TXCSUM_IPV6
RELAY_CAPS = CSUM_CAPS | IFCAP_TSO | IFCAP_LRO | IFCAP_VXLAN_HWTSO
TUNNEL_CAPS = CSUM_CAPS | IFCAP_TSO | IFCAP_LRO

PARTIAL = 1  # the TCP/UDP checksum may be missing
LARGE = 2  # a TCP segment may be larger than the MTU (cut at `gso` bytes of payload)
VXLAN = 4  # with PARTIAL: the first UDP datagram in the frame is a VXLAN encapsulation
# (set by a vxlan interface around its outer packet's output): the missing checksum is
# its inner frame's, and the outer UDP checksum is filled after it (zero over IPv4 stays)
TSO_MAX = 65535  # the largest IP packet TCP hands down (FreeBSD's if_hw_tsomax)

_PROTO_IPIP = 4
_PROTO_TCP = 6
_PROTO_UDP = 17
_PROTO_IPV6 = 41
_PROTO_GRE = 47
_GRE_IP = (b"\x08\x00", b"\x86\xdd")  # GRE protocol types of an inner IP packet
_WHOLE = 1 << 30  # an encapsulated packet is never cut: no MTU applies inside
_FIN_PSH = 0x09
_CWR = 0x80
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")


class Offload:
    """The kernel's offload mark (a kernel service): see the module docstring."""

    __slots__ = ("gso", "hooked", "partial", "segmented")

    def __init__(self, kernel: Kernel) -> None:
        self.partial = 0
        self.gso = 0
        self.segmented = 0  # large segments cut in software (a counter for tests and docs)
        # vnets with pfil hooks (a firewall, NAT, IPsec, fault injection), with the
        # (owner, head) points that hold some: an offloaded frame is resolved before it
        # enters one, so no hook ever sees a missing checksum or a large segment
        self.hooked: dict[Any, set[tuple[int, str]]] = {}

    def hooks_changed(self, vnet: Any, owner: Any, head: str, linked: bool) -> None:
        points = self.hooked.get(vnet)
        if linked:
            if points is None:
                points = self.hooked[vnet] = set()
            points.add((id(owner), head))
        elif points is not None:
            points.discard((id(owner), head))
            if not points:
                del self.hooked[vnet]

    def vnet_detach(self, vnet: Any) -> None:
        """A destroyed vnet leaves nothing here (its hooks may die linked)."""
        self.hooked.pop(vnet, None)


def state(kernel: Kernel) -> Offload:
    """The kernel's offload mark (one per kernel: frames never cross kernels in-process)."""
    return kernel.service(Offload)


def resend(offl: Offload, pkt: bytes, mtu: int, send: Any, *args: Any) -> None:
    """Resolve the IP packet `pkt` under the mark and call `send(piece, *args)` for each
    piece with the mark clear (before hooks, a hold queue, an encapsulation)."""
    pieces = resolve_ip(pkt, offl.gso, mtu, bool(offl.partial & VXLAN))
    if len(pieces) > 1:
        offl.segmented += 1
    saved = offl.partial
    offl.partial = 0
    try:
        for piece in pieces:
            send(piece, *args)
    finally:
        offl.partial = saved


class RxPort:
    """What the kernel queue delivers an offloaded frame to: the receiving interface's
    input, with the mark set around it (CHECKSUM_UNNECESSARY and, for a large segment,
    its gso size; VXLAN for a VXLAN packet whose inner frame is offloaded). It compares
    equal to its interface, so purging the queue of an interface purges its ports too."""

    __slots__ = ("gso", "ifp", "mark", "offl")

    def __init__(self, ifp: Ifnet, offl: Offload, gso: int = 0, extra: int = 0) -> None:
        self.ifp = ifp
        self.offl = offl
        self.gso = gso
        self.mark = (PARTIAL | LARGE if gso else PARTIAL) | extra

    def input(self, frame: bytes) -> None:
        offl = self.offl
        partial, gso = offl.partial, offl.gso
        offl.partial = self.mark
        offl.gso = self.gso
        try:
            self.ifp.input(frame)
        finally:
            offl.partial, offl.gso = partial, gso

    def __hash__(self) -> int:
        return hash(self.ifp)

    def __eq__(self, other: Any) -> bool:
        return other is self.ifp or other is self

    def __repr__(self) -> str:
        return f"<RxPort {self.ifp!r} gso={self.gso} mark={self.mark}>"


def pieces_fit(pkt: bytes, hl: int, gso: int, mtu: int) -> bool:
    """True if the pieces of the large TCP segment `pkt` (IP header `hl` bytes), or of
    the one it carries in an encapsulation (tunnel GSO), fit in `mtu`: a router passes
    it on whole, else it refuses it as it would refuse the pieces (ICMP need-fragment /
    packet too big, for the sender's path MTU discovery) or cuts it first."""
    if (pkt[9] if pkt[0] >> 4 == 4 else pkt[6]) == _PROTO_TCP:
        return len(pkt) > hl + 12 and hl + ((pkt[hl + 12] >> 4) << 2) + gso <= mtu
    head = gso_headers(pkt)
    return head > 0 and head + gso <= mtu


def piece_limit(pkt: bytes, hl: int, gso: int, limit: int) -> int:
    """The `mtu` argument of resolve_ip/resend that cuts the large packet `pkt` (IP header
    `hl` bytes) into the pieces its sender would have sent: a TCP segment at its `gso`
    (a router never re-cuts TCP to its own MTU), an encapsulation (tunnel GSO) within
    `limit`. For a router that must treat each piece on its own (too big for the way
    out, TTL or hop limit run out)."""
    if (pkt[9] if pkt[0] >> 4 == 4 else pkt[6]) == _PROTO_TCP:
        return hl + ((pkt[hl + 12] >> 4) << 2) + gso
    return limit


def gso_headers(pkt: bytes) -> int:
    """The length of every header before the TCP payload of the IP packet `pkt`, a TCP
    segment itself or one inside IP-in-IP, GRE without a checksum or sequence number,
    or UDP (under the LARGE mark only VXLAN carries a large segment in UDP: its header
    and an Ethernet frame follow); -1 for anything else. What one piece of the segment
    repeats (Linux's skb_inner_network_header and friends, found by walking)."""
    base = 0
    for _ in range(8):  # nesting depth: tunnels refuse more (max_nesting)
        if len(pkt) < base + 40:
            return -1
        version = pkt[base] >> 4
        if version == 4:
            hl = (pkt[base] & 0x0F) << 2
            if pkt[base + 6] & 0x3F or pkt[base + 7]:
                return -1
            proto = pkt[base + 9]
        elif version == 6:
            hl = 40
            proto = pkt[base + 6]
        else:
            return -1
        at = base + hl
        if proto == _PROTO_TCP:
            return at + ((pkt[at + 12] >> 4) << 2) if len(pkt) > at + 12 else -1
        if proto in (_PROTO_IPIP, _PROTO_IPV6):
            base = at
        elif proto == _PROTO_GRE:
            if (len(pkt) < at + 4 or pkt[at] & 0x90 or pkt[at + 1] & 0x07
                    or pkt[at + 2:at + 4] not in _GRE_IP):
                return -1
            base = at + 8 if pkt[at] & 0x20 else at + 4  # (a key)
        elif proto == _PROTO_UDP:
            base = at + 16 + 14  # UDP, VXLAN, the inner Ethernet header
            if len(pkt) > base and pkt[base - 2:base] == b"\x81\x00":
                base += 4  # an 802.1Q tag
            if len(pkt) < base or pkt[base - 2:base] not in _GRE_IP:  # (the same types)
                return -1
        else:
            return -1
    return -1


def set_caps(enabled: int, supported: int, on: int, off: int) -> int:
    """The enabled capabilities after `ifconfig IF` turned bits `on` and `off`: what the
    interface cannot do is ignored (ifconfig's setifcap), and TSO goes with the transmit
    checksum it needs (as FreeBSD drivers' SIOCSIFCAP do: "tso4 requires txcsum")."""
    if off & IFCAP_TXCSUM:
        off |= IFCAP_TSO4
    if off & IFCAP_TXCSUM_IPV6:
        off |= IFCAP_TSO6
    if on & IFCAP_TSO4:
        on |= IFCAP_TXCSUM
    if on & IFCAP_TSO6:
        on |= IFCAP_TXCSUM_IPV6
    return ((enabled | on) & ~off) & supported


def caps_text(caps: int) -> str:
    names = ",".join(name for bit, name in CAP_NAMES if caps & bit)
    return f"{caps:x}<{names}>"


# -- resolving a partial frame: fill checksums, cut large segments -------------------
def resolve_frame(frame: bytes, gso: int, mtu: int, ether: bool,
                  vxlan: bool = False) -> list[bytes]:
    """The wire frames for `frame` (Ethernet if `ether`, else a bare IP packet): its
    TCP/UDP checksum filled, a TCP segment longer than `mtu` cut into segments of at
    most `gso` payload bytes, the packet inside an IP-in-IP, GRE or (`vxlan`: the mark's
    VXLAN bit) VXLAN encapsulation filled likewise. Anything else (ARP, fragments,
    other protocols) is returned unchanged."""
    if not ether:
        return resolve_ip(frame, gso, mtu, vxlan)
    off = 14
    etype = frame[12:14]
    if etype == b"\x81\x00":  # an 802.1Q tag (a vlan's parent): the type follows it
        off = 18
        etype = frame[16:18]
    if etype != b"\x08\x00" and etype != b"\x86\xdd":
        return [frame]
    head = frame[:off]
    return [head + p for p in resolve_ip(frame[off:], gso, mtu, vxlan)]


def resolve_ip(pkt: bytes, gso: int, mtu: int, vxlan: bool = False) -> list[bytes]:
    """`resolve_frame` for an IPv4 or IPv6 packet."""
    if len(pkt) < 20:
        return [pkt]
    version = pkt[0] >> 4
    if version == 4:
        hl = (pkt[0] & 0x0F) << 2
        if pkt[6] & 0x3F or pkt[7]:  # a fragment: its sender filled the checksum
            return [pkt]
        proto = pkt[9]
        end = (pkt[2] << 8) | pkt[3]
        src = int.from_bytes(pkt[12:16], "big")
        dst = int.from_bytes(pkt[16:20], "big")
    elif version == 6 and len(pkt) >= 40:
        hl = 40
        proto = pkt[6]  # (extension headers: left as they are)
        end = 40 + ((pkt[4] << 8) | pkt[5])
        src = int.from_bytes(pkt[8:24], "big")
        dst = int.from_bytes(pkt[24:40], "big")
    else:
        return [pkt]
    if end > len(pkt) or end < hl:
        return [pkt]
    if proto == _PROTO_TCP:
        if end - hl < 20:
            return [pkt]
        doff = (pkt[hl + 12] >> 4) << 2
        room = mtu - hl - doff
        if end > mtu and gso > 0 and room > 0 and end - hl - doff > min(gso, room):
            return _segment(pkt, hl, doff, end, min(gso, room), src, dst, version)
        where = hl + 16
    elif proto == _PROTO_UDP:
        if end - hl < 8:
            return [pkt]
        if vxlan:
            if gso > 0 and end - hl > 30 + gso:
                pieces = _encap_cut(pkt, hl, end, hl + 16, version, gso, True)
                if pieces is not None:
                    return pieces
            return [_vxlan(pkt, hl, end, src, dst, version)]
        where = hl + 6
    elif proto in (_PROTO_IPIP, _PROTO_IPV6):  # gif (RFC 2003, 2473, 4213)
        if gso > 0 and end - hl > 40 + gso:
            pieces = _encap_cut(pkt, hl, end, hl, version, gso, False, vxlan)
            if pieces is not None:
                return pieces
        return [pkt[:hl] + resolve_ip(pkt[hl:end], 0, _WHOLE, vxlan)[0] + pkt[end:]]
    elif proto == _PROTO_GRE:
        if (gso > 0 and end - hl > 44 + gso and not pkt[hl] & 0x90 and not pkt[hl + 1] & 0x07
                and pkt[hl + 2:hl + 4] in _GRE_IP):
            at = hl + 8 if pkt[hl] & 0x20 else hl + 4
            pieces = _encap_cut(pkt, hl, end, at, version, gso, False, vxlan)
            if pieces is not None:
                return pieces
        return [_gre(pkt, hl, end, vxlan)]
    else:
        return [pkt]
    return [_fill(pkt, hl, end, where, proto, src, dst)]


def _encap_cut(pkt: bytes, hl: int, end: int, at: int, version: int, gso: int,
               ether: bool, vxlan: bool = False) -> list[bytes] | None:
    """Tunnel GSO resolved (Linux skb_udp_tunnel_segment, gre_gso_segment, ipip's
    inet_gso_segment): the large TCP segment the outer packet `pkt` carries from `at`
    (an IP packet, or with `ether` VXLAN's Ethernet frame) cut into pieces of `gso`
    payload bytes, each filled and put behind a copy of the outer headers [0:at] with
    what changes per piece: the outer IPv4 total length, ID (the outer one plus the
    piece's index: the IDs the tunnel reserved, `encap_gso`) and header checksum; the
    IPv6 payload length; VXLAN's UDP length, and its checksum filled unless it is zero
    over IPv4 (RFC 7348 5). A GRE header is copied unchanged (one with a checksum or
    sequence number is never sent whole). None if no large TCP segment is inside."""
    inner = pkt[at:end]
    off = 0
    if ether:
        off = 18 if inner[12:14] == b"\x81\x00" else 14
        if inner[off - 2:off] not in _GRE_IP:
            return None
    ipk = inner[off:]
    head = gso_headers(ipk)
    if head < 0 or len(ipk) - head <= gso:
        return None
    # the inner packet's own pieces (a plain TCP segment: cut at exactly `gso`; another
    # encapsulation: the same, recursively), then the outer headers around each
    pieces = resolve_ip(ipk, gso, head + gso, vxlan and not ether)
    outer = bytearray(pkt[:at])
    outer += inner[:off]
    ident = (pkt[4] << 8) | pkt[5] if version == 4 else 0
    zero_udp = ether and version == 4 and not (pkt[hl + 6] or pkt[hl + 7])
    src = dst = 0
    if ether and not zero_udp:
        src = int.from_bytes(pkt[12:16] if version == 4 else pkt[8:24], "big")
        dst = int.from_bytes(pkt[16:20] if version == 4 else pkt[24:40], "big")
    out = []
    for i, piece in enumerate(pieces):
        total = len(outer) + len(piece)
        if version == 4:
            _U16.pack_into(outer, 2, total)
            _U16.pack_into(outer, 4, (ident + i) & 0xFFFF)
            outer[10:12] = b"\x00\x00"
            _U16.pack_into(outer, 10, checksum(bytes(outer[:hl])))
        else:
            _U16.pack_into(outer, 4, total - 40)
        if ether:
            _U16.pack_into(outer, hl + 4, total - hl)
        whole = bytes(outer) + piece
        if ether and not zero_udp:
            whole = _fill(whole, hl, total, hl + 6, _PROTO_UDP, src, dst)
        out.append(whole)
    return out


def _gre(pkt: bytes, hl: int, end: int, vxlan: bool) -> bytes:
    """A GRE packet (RFC 2784, 2890) with the IP packet it carries resolved. A GRE
    checksum covers the inner packet: a gre interface with one resolves before it
    encapsulates, so such a packet (or one of another version or type) is left."""
    if end - hl < 4 or pkt[hl] & 0x80 or pkt[hl + 1] & 0x07 or pkt[hl + 2:hl + 4] not in _GRE_IP:
        return pkt
    inner = hl + 4 + 4 * (bool(pkt[hl] & 0x20) + bool(pkt[hl] & 0x10))  # key, sequence
    if inner >= end:
        return pkt
    return pkt[:inner] + resolve_ip(pkt[inner:end], 0, _WHOLE, vxlan)[0] + pkt[end:]


def fill_vxlan(payload: bytes) -> bytes:
    """A VXLAN payload (its header, then the inner Ethernet frame) with the inner frame
    resolved: what a UDP socket other than a vxlan one is given (the mark's VXLAN bit
    is no concern of an application reading the port)."""
    if len(payload) < 22:
        return payload
    return payload[:8] + resolve_frame(payload[8:], 0, _WHOLE, True)[0]


def _vxlan(pkt: bytes, hl: int, end: int, src: int, dst: int, version: int) -> bytes:
    """A VXLAN packet (RFC 7348) with its inner Ethernet frame resolved, then its UDP
    checksum filled: over IPv4 a zero one stays zero (RFC 7348 5, what vxlan sends)."""
    at = hl + 16  # UDP and VXLAN headers
    if end - at < 14:
        return pkt
    inner = resolve_frame(pkt[at:end], 0, _WHOLE, True)[0]
    out = pkt[:at] + inner + pkt[end:]
    if version == 4 and not (pkt[hl + 6] or pkt[hl + 7]):
        return out
    return _fill(out, hl, end, hl + 6, _PROTO_UDP, src, dst)


def _fill(pkt: bytes, hl: int, end: int, where: int, proto: int, src: int,
          dst: int) -> bytes:
    """`pkt` with the checksum at `where` computed over [hl:end] and the pseudo-header."""
    body = bytearray(pkt[hl:end])
    body[where - hl:where - hl + 2] = b"\x00\x00"
    value = checksum(body, pseudo_sum(src, dst, proto, end - hl))
    if value == 0 and proto == _PROTO_UDP:
        value = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    body[where - hl:where - hl + 2] = _U16.pack(value)
    return pkt[:hl] + body


def segment_frame(frame: bytes, gso: int, mtu: int, ether: bool) -> list[bytes]:
    """Cut a large TCP segment (Ethernet if `ether`, else a bare IP packet) into pieces
    of at most `gso` payload bytes that fit `mtu`, their checksums left unfilled: what
    a tunnel without TSO below it sends under the mark, one encapsulation per piece
    (Linux's software GSO before a tunnel's transmit). Anything else comes back whole."""
    off = 0
    if ether:
        off = 18 if frame[12:14] == b"\x81\x00" else 14
    pkt = frame[off:]
    if len(pkt) < 40:
        return [frame]
    version = pkt[0] >> 4
    if version == 4:
        hl = (pkt[0] & 0x0F) << 2
        if pkt[9] != _PROTO_TCP or pkt[6] & 0x3F or pkt[7]:
            return [frame]
        end = (pkt[2] << 8) | pkt[3]
    elif version == 6 and len(pkt) >= 60 and pkt[6] == _PROTO_TCP:
        hl = 40
        end = 40 + ((pkt[4] << 8) | pkt[5])
    else:
        return [frame]
    if end > len(pkt) or end - hl < 20:
        return [frame]
    doff = (pkt[hl + 12] >> 4) << 2
    room = mtu - hl - doff
    if end <= mtu or gso <= 0 or room <= 0 or end - hl - doff <= min(gso, room):
        return [frame]
    head = frame[:off]
    return [head + p for p in _segment(pkt, hl, doff, end, min(gso, room), 0, 0, version,
                                       fill=False)]


def _segment(pkt: bytes, hl: int, doff: int, end: int, gso: int, src: int, dst: int,
             version: int, fill: bool = True) -> list[bytes]:
    """Cut a large TCP segment (Linux tcp_gso_segment): consecutive sequence numbers,
    CWR on the first piece only, FIN and PSH on the last only, every checksum filled
    (unless not `fill`: then left for whoever resolves the pieces); IPv4 pieces take
    consecutive IP IDs, as a NIC's TSO engine gives them."""
    iph = bytearray(pkt[:hl])
    tcph = bytearray(pkt[hl:hl + doff])
    tcph[16:18] = b"\x00\x00"
    seq = _U32.unpack_from(tcph, 4)[0]
    flags = tcph[13]
    ident = (iph[4] << 8) | iph[5] if version == 4 else 0
    data = pkt[hl + doff:end]
    pieces = []
    count = (len(data) + gso - 1) // gso
    for i in range(count):
        chunk = data[i * gso:(i + 1) * gso]
        f = flags
        if i:
            f &= ~_CWR
        if i < count - 1:
            f &= ~_FIN_PSH
        tcph[13] = f
        _U32.pack_into(tcph, 4, (seq + i * gso) & 0xFFFFFFFF)
        tcph[16:18] = b"\x00\x00"
        length = doff + len(chunk)
        if fill:
            value = checksum(chunk, ones_sum(tcph, pseudo_sum(src, dst, _PROTO_TCP, length)))
            _U16.pack_into(tcph, 16, value)
        if version == 4:
            _U16.pack_into(iph, 2, hl + length)
            _U16.pack_into(iph, 4, (ident + i) & 0xFFFF)
            iph[10:12] = b"\x00\x00"
            _U16.pack_into(iph, 10, checksum(iph))
        else:
            _U16.pack_into(iph, 4, length)
        pieces.append(b"".join((iph, tcph, chunk)))
    return pieces
