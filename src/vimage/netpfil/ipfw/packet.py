"""What ipfw's matcher reads of a packet, parsed once per pass (FreeBSD's `ip_fw_args` and
`ipfw_flow_id`, filled by ipfw_chk's header walk before the first rule).

Family-neutral: addresses are ints with a `family` (4 now, 6 once IPv6 lands), so a
rule's predicates test `family` before reading an address and an IPv6 option simply
never matches an IPv4 packet.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from vimage.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

PROTO_SCTP = 132
_PORTED = frozenset((PROTO_TCP, PROTO_UDP, PROTO_SCTP))
_V4 = struct.Struct("!BBHHHBBHII")
_PORTS = struct.Struct("!HH")


class Args:
    """One packet as the rules see it. `sport`/`dport` are -1 when the packet carries no
    ports (not TCP/UDP/SCTP, or a fragment after the first), `icmptype` -1 unless ICMP,
    `tcpflags` -1 unless a first TCP fragment with a whole header."""

    __slots__ = (
        "dport",
        "dst",
        "family",
        "hlen",
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
        self.family = 4
        self.tablearg = 0
        self.tags: set[int] | None = None
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
