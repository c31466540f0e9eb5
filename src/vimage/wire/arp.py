"""ARP for IPv4 over Ethernet (RFC 826)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view
from vimage.wire.ethernet import ETHERTYPE_IP as PTYPE_IP

OP_REQUEST = 1
OP_REPLY = 2
LENGTH = 28

HTYPE_ETHER = 1
PACKET = struct.Struct("!HHBBH6sI6sI")


class ArpRepr(NamedTuple):
    """A parsed ARP packet; protocol addresses are 32-bit ints."""

    op: int
    sha: bytes
    spa: int
    tha: bytes
    tpa: int


def parse(buf: Buffer) -> ArpRepr:
    """Parse and validate an Ethernet/IPv4 ARP packet; trailing bytes are ignored."""
    view = as_view(buf)
    if len(view) < LENGTH:
        raise WireError("tooshort", f"arp packet of {len(view)} bytes")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = PACKET.unpack_from(view)
    if htype != HTYPE_ETHER or ptype != PTYPE_IP or hlen != 6 or plen != 4:
        raise WireError(
            "badtype", f"htype={htype} ptype={ptype:#06x} hlen={hlen} plen={plen}"
        )
    if op not in (OP_REQUEST, OP_REPLY):
        raise WireError("badop", f"arp op {op}")
    return ArpRepr(op, sha, spa, tha, tpa)


def build(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    """Emit a 28-byte Ethernet/IPv4 ARP packet."""
    if len(sha) != 6 or len(tha) != 6:
        raise ValueError("hardware addresses must be 6 bytes")
    return PACKET.pack(HTYPE_ETHER, PTYPE_IP, 6, 4, op, sha, spa, tha, tpa)
