"""UDP (RFC 768) over IPv4."""

from __future__ import annotations

import struct

# a global name for the NamedTuple's field type: mypyc (vimage.compiled) looks it up there
from builtins import memoryview
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view
from vimage.wire.ipv4 import PROTO_UDP

HEADER = struct.Struct("!HHHH")
HEADER_LEN = 8
MAX_PAYLOAD = 65535 - HEADER_LEN


class UdpRepr(NamedTuple):
    """A parsed UDP datagram; ``payload`` excludes anything past the length field."""

    sport: int
    dport: int
    length: int
    checksum: int
    payload: memoryview


def parse(buf: Buffer, src: int | None = None, dst: int | None = None) -> UdpRepr:
    """Parse a UDP datagram; the checksum is verified when ``src`` and ``dst`` are given."""
    view = buf if type(buf) is memoryview and buf.format == "B" else as_view(buf)
    n = len(view)
    if n < HEADER_LEN:
        raise WireError("tooshort", f"udp datagram of {n} bytes")
    sport, dport, length, cksum = HEADER.unpack_from(view)
    if length < HEADER_LEN or length > n:
        raise WireError("badlen", f"udp length {length}, buffer {n}")
    if src is not None and dst is not None and cksum != 0:
        # RFC 1071 in one pass: the datagram read as one integer is congruent to the sum
        # of its 16-bit words modulo 0xFFFF, and so is each pseudo-header field (RFC 768,
        # RFC 8200 8.1) to its words; valid when the whole sum is 0xFFFF (0 modulo it)
        value = int.from_bytes(view[:length] if length != n else view, "big")
        if length & 1:
            value <<= 8
        if (value + src + dst + PROTO_UDP + length) % 0xFFFF:
            raise WireError("badsum", "udp checksum")
    return UdpRepr(sport, dport, length, cksum, view[HEADER_LEN:length])


def build(
    sport: int,
    dport: int,
    payload: Buffer,
    src: int,
    dst: int,
    *,
    with_checksum: bool = True,
) -> bytes:
    """Emit a UDP datagram; a computed checksum of 0 is sent as 0xFFFF."""
    length = HEADER_LEN + len(payload)
    if length > 65535:
        raise ValueError(f"udp datagram too long: {length}")
    if not with_checksum:
        return HEADER.pack(sport, dport, length, 0) + payload
    # the header's words, the pseudo-header's and the payload's, summed as in parse();
    # the sum is never 0, so its complement modulo 0xFFFF is 1..0xFFFF: a computed 0 is
    # already sent as 0xFFFF (RFC 768)
    value = int.from_bytes(payload, "big")
    if length & 1:
        value <<= 8
    total = value + sport + dport + length + src + dst + PROTO_UDP + length
    return HEADER.pack(sport, dport, length, 0xFFFF - total % 0xFFFF) + payload
