"""The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

The ones'-complement sum of 16-bit big-endian words is congruent to the whole
buffer read as one big-endian integer modulo 0xFFFF (since 2**16 == 1 mod 0xFFFF),
so the sum is computed with a single ``int.from_bytes`` and a modulo, no loops.
"""

from __future__ import annotations

from vimage.wire._common import Buffer


def _fold(total: int) -> int:
    """Reduce a non-negative integer to its 16-bit ones'-complement representation.

    Zero stays 0 (no word was ever nonzero); any positive value maps into 1..0xFFFF.
    """
    if total == 0:
        return 0
    return total % 0xFFFF or 0xFFFF


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """16-bit ones'-complement sum of ``data`` plus the partial sum ``initial``, uncomplemented.

    An odd trailing byte is padded with a zero byte.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return _fold(value + initial)


def checksum(data: Buffer, initial: int = 0) -> int:
    """The value to store in a checksum field that covers ``data`` (field zeroed)."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: Buffer, initial: int = 0) -> bool:
    """True if ``data``, which includes its checksum field, carries a valid checksum."""
    return ones_sum(data, initial) == 0xFFFF


def pseudo_sum_v4(src: int, dst: int, proto: int, length: int) -> int:
    """Ones'-complement sum of the IPv4 pseudo-header (RFC 768 / RFC 793), or of the
    IPv6 one (RFC 8200 8.1) for 128-bit addresses: a field's value is congruent to
    the sum of its 16-bit words modulo 0xFFFF, so both are the sum of the values."""
    return _fold(src + dst + proto + length)


pseudo_sum = pseudo_sum_v4


def update16(cksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: the checksum field after a 16-bit word changes from ``old`` to ``new``.

    HC' = ~(~HC + ~m + m'), which gives what a full recomputation gives (unlike RFC 1141's
    HC + m - m', which can yield 0xFFFF for 0x0000). IPv4 forwarding inlines the case of
    the TTL byte dropping by one (`netinet.ip`, hot path); a NAT rewriting addresses and
    ports calls this.
    """
    total = (~cksum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
