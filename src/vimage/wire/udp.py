"""UDP (RFC 768) over IPv4."""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire import checksum as _cksum
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
    view = as_view(buf)
    if len(view) < HEADER_LEN:
        raise WireError("tooshort", f"udp datagram of {len(view)} bytes")
    sport, dport, length, cksum = HEADER.unpack_from(view)
    if length < HEADER_LEN or length > len(view):
        raise WireError("badlen", f"udp length {length}, buffer {len(view)}")
    if src is not None and dst is not None and cksum != 0:
        pseudo = _cksum.pseudo_sum_v4(src, dst, PROTO_UDP, length)
        if not _cksum.verify(view[:length], pseudo):
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
    header = bytearray(HEADER.pack(sport, dport, length, 0))
    if with_checksum:
        partial = _cksum.ones_sum(header, _cksum.pseudo_sum_v4(src, dst, PROTO_UDP, length))
        struct.pack_into("!H", header, 6, _cksum.checksum(payload, partial) or 0xFFFF)
    return b"".join((header, payload))
