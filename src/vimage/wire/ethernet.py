"""Ethernet II framing (no FCS)."""

from __future__ import annotations

import struct

from vimage.wire._common import Buffer, WireError, as_view

HEADER_LEN = 14
ETHERTYPE_IP = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
HEADER = struct.Struct("!6s6sH")
MIN_FRAME = 60
"""Minimum frame length without the FCS; shorter frames are padded by the sender."""

ADDR_LEN = 6
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def build(dst: bytes, src: bytes, ethertype: int, payload: Buffer) -> bytes:
    """Emit an Ethernet frame (no padding, no FCS)."""
    if len(dst) != ADDR_LEN or len(src) != ADDR_LEN:
        raise ValueError("MAC addresses must be 6 bytes")
    return b"".join((HEADER.pack(dst, src, ethertype), payload))


class EthernetFrame:
    """A zero-copy view of an Ethernet frame."""

    __slots__ = ("buf",)

    buf: memoryview

    def __init__(self, buf: Buffer) -> None:
        view = as_view(buf)
        if len(view) < HEADER_LEN:
            raise WireError("tooshort", f"ethernet frame of {len(view)} bytes")
        self.buf = view

    @property
    def dst(self) -> bytes:
        """Destination MAC address."""
        return bytes(self.buf[0:6])

    @property
    def src(self) -> bytes:
        """Source MAC address."""
        return bytes(self.buf[6:12])

    @property
    def ethertype(self) -> int:
        """The EtherType field."""
        return (self.buf[12] << 8) | self.buf[13]

    @property
    def payload(self) -> memoryview:
        """Everything after the header (including any padding)."""
        return self.buf[HEADER_LEN:]

    def __repr__(self) -> str:
        return (
            f"EthernetFrame(dst={mac_ntoa(self.dst)}, src={mac_ntoa(self.src)}, "
            f"ethertype={self.ethertype:#06x}, len={len(self.buf)})"
        )


def parse(buf: Buffer) -> EthernetFrame:
    """Parse an Ethernet frame; raises WireError("tooshort") if under 14 bytes."""
    return EthernetFrame(buf)


def mac_ntoa(mac: bytes) -> str:
    """Format a MAC address as lowercase colon-separated hex: ``02:ab:cd:00:00:01``."""
    return bytes(mac).hex(":")


def mac_aton(text: str) -> bytes:
    """Parse ``xx:xx:xx:xx:xx:xx`` (1 or 2 hex digits per group); WireError("badaddr")."""
    groups = text.split(":")
    if len(groups) != ADDR_LEN:
        raise WireError("badaddr", f"bad MAC address {text!r}")
    for group in groups:
        if not 1 <= len(group) <= 2 or not _HEXDIGITS.issuperset(group):
            raise WireError("badaddr", f"bad MAC address {text!r}")
    return bytes(int(group, 16) for group in groups)


def is_multicast(mac: bytes) -> bool:
    """True for group addresses (the I/G bit), which includes broadcast."""
    return bool(mac[0] & 1)
