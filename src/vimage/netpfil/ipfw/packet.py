"""What ipfw's matcher reads of a packet, parsed once per pass (FreeBSD's `ip_fw_args` and
`ipfw_flow_id`, filled by ipfw_chk's header walk before the first rule).

Family-neutral: addresses are ints with a `family` (4 or 6), so a rule's predicates
test `family` before reading an address and an IPv6 option never matches an IPv4
packet. An IPv6 packet's extension headers are walked to the upper layer as ipfw_chk
does (hop-by-hop, routing, fragment, destination options, AH; ESP ends the walk):
`proto` is the upper layer's, `hlen` its offset, `off`/`mf` the fragment header's.
"""

from __future__ import annotations

import struct
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

PROTO_SCTP = 132
_PORTED = frozenset((PROTO_TCP, PROTO_UDP, PROTO_SCTP))
_V4 = struct.Struct("!BBHHHBBHII")
_PORTS = struct.Struct("!HH")
PROTO_ICMPV6 = 58
# ext6hdr bits (FreeBSD's EXT_FRAGMENT ... EXT_DSTOPTS, ip_fw.h)
EXT_FRAGMENT, EXT_HOPOPTS, EXT_ROUTING, EXT_AH, EXT_ESP, EXT_DSTOPTS = 1, 2, 4, 8, 16, 32
_EXT_BITS = MappingProxyType({0: EXT_HOPOPTS, 43: EXT_ROUTING, 44: EXT_FRAGMENT, 51: EXT_AH,
                              50: EXT_ESP, 60: EXT_DSTOPTS})
_MAX_EXT = 40  # headers walked before giving up (as ip6_input's MAX_EXTHDRS)


class Args:
    """One packet as the rules see it. `sport`/`dport` are -1 when the packet carries no
    ports (not TCP/UDP/SCTP, or a fragment after the first), `icmptype` -1 unless ICMP,
    `tcpflags` -1 unless a first TCP fragment with a whole header. IPv6: `ttl` -1 (ipttl,
    iplen and ipid are IPv4 only in ipfw), `icmp6type` the ICMPv6 type or -1, `ipid` the
    fragment header's identification, `ext6` the extension headers seen (EXT_* bits).
    `fib`: the FIB a `setfib` rule chose (-1: none)."""

    __slots__ = (
        "dport",
        "dst",
        "ext6",
        "family",
        "fib",
        "hlen",
        "icmp6type",
        "icmptype",
        "ifp",
        "ipid",
        "iplen",
        "mf",
        "off",
        "oif",
        "out",
        "pkt",
        "proto",
        "rcvif",
        "sport",
        "src",
        "tablearg",
        "tags",
        "tcpflags",
        "ttl",
    )

    def __init__(self, pkt: bytes, out: bool, ifp: Ifnet | None, rcvif: Ifnet | None) -> None:
        self.pkt = pkt
        self.out = out
        self.ifp = ifp
        self.rcvif = rcvif
        self.oif = ifp if out else None
        self.tablearg = 0
        self.tags: set[int] | None = None
        self.fib = -1
        self.ext6 = 0
        self.icmp6type = -1
        if pkt[0] >> 4 == 6:
            self._parse6(pkt)
            return
        self.family = 4
        b0, _tos, self.iplen, self.ipid, offw, self.ttl, proto, _sum, self.src, self.dst = \
            _V4.unpack_from(pkt)
        self.proto = proto
        self.hlen = hlen = (b0 & 0x0F) << 2
        self.off = off = offw & 0x1FFF
        self.mf = bool(offw & 0x2000)
        self.sport = self.dport = self.icmptype = self.tcpflags = -1
        if off == 0:
            n = len(pkt)
            if proto in _PORTED and n >= hlen + 4:
                self.sport, self.dport = _PORTS.unpack_from(pkt, hlen)
                if proto == PROTO_TCP and n >= hlen + 20:
                    self.tcpflags = pkt[hlen + 13]
            elif proto == PROTO_ICMP and n > hlen:
                self.icmptype = pkt[hlen]

    def _parse6(self, pkt: bytes) -> None:
        """ipfw_chk's IPv6 walk: extension headers up to the upper layer."""
        self.family = 6
        self.src = int.from_bytes(pkt[8:24], "big")
        self.dst = int.from_bytes(pkt[24:40], "big")
        self.iplen = n = len(pkt)
        self.ttl = -1
        self.ipid = 0
        self.off = 0
        self.mf = False
        self.sport = self.dport = self.icmptype = self.tcpflags = -1
        nxt, at, ext = pkt[6], 40, 0
        for _ in range(_MAX_EXT):
            bit = _EXT_BITS.get(nxt)
            if bit is None or bit == EXT_ESP:
                ext |= bit or 0
                break
            if at + 8 > n:
                break  # truncated: the upper layer is out of reach
            ext |= bit
            if nxt == 44:  # fragment: offset, M flag, identification
                offw = (pkt[at + 2] << 8) | pkt[at + 3]
                self.off = offw >> 3
                self.mf = bool(offw & 1)
                self.ipid = int.from_bytes(pkt[at + 4:at + 8], "big")
                nxt, at = pkt[at], at + 8
            elif nxt == 51:  # AH: length in 4-byte units, minus 2 (RFC 4302)
                nxt, at = pkt[at], at + ((pkt[at + 1] + 2) << 2)
            else:
                nxt, at = pkt[at], at + ((pkt[at + 1] + 1) << 3)
        self.ext6 = ext
        self.proto = nxt
        self.hlen = at
        if self.off == 0 and at < n:
            if nxt in _PORTED and n >= at + 4:
                self.sport, self.dport = _PORTS.unpack_from(pkt, at)
                if nxt == PROTO_TCP and n >= at + 20:
                    self.tcpflags = pkt[at + 13]
            elif nxt == PROTO_ICMPV6:
                self.icmp6type = pkt[at]

    def tcp_options(self) -> set[int]:
        """The kinds of the TCP options present (for `tcpoptions`)."""
        pkt, at = self.pkt, self.hlen
        end = at + ((pkt[at + 12] >> 4) << 2)
        end = min(end, len(pkt))
        at += 20
        kinds: set[int] = set()
        while at < end:
            kind = pkt[at]
            if kind == 0:
                break
            if kind == 1:
                at += 1
                continue
            kinds.add(kind)
            if at + 1 >= end or pkt[at + 1] < 2:
                break
            at += pkt[at + 1]
        return kinds
