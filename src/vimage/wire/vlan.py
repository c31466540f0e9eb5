"""IEEE 802.1Q VLAN tags: insert, remove and read the 4-byte tag after the MAC addresses.

A tagged frame is dst(6) src(6) TPID 0x8100 (2) TCI (2) inner ethertype (2) payload;
the TCI holds the priority code point (PCP, 3 bits), the drop eligible indicator
(DEI, 1 bit) and the VLAN identifier (VID, 12 bits). VIDs 0 (priority tag) and 4095
are reserved (IEEE 802.1Q-2018 table 9-2), so an interface takes 1..4094.
"""

from __future__ import annotations

import struct

from vimage.wire._common import Buffer, WireError, as_view

TPID = 0x8100
TPID_BYTES = TPID.to_bytes(2, "big")
TAG_LEN = 4
TAGGED_HEADER_LEN = 18
VID_MIN = 1
VID_MAX = 4094
PCP_MAX = 7
_TCI = struct.Struct("!H")


def tci(vid: int, pcp: int = 0, dei: int = 0) -> int:
    """The tag control information word of `vid`, `pcp` and `dei`."""
    if not 0 <= vid <= 4095 or not 0 <= pcp <= PCP_MAX or dei not in (0, 1):
        raise ValueError(f"bad 802.1Q tag: vid {vid} pcp {pcp} dei {dei}")
    return (pcp << 13) | (dei << 12) | vid


def tag(frame: Buffer, vid: int, pcp: int = 0, dei: int = 0) -> bytes:
    """`frame` (an untagged Ethernet frame) with an 802.1Q tag inserted after the MACs."""
    view = as_view(frame)
    if len(view) < 14:
        raise WireError("tooshort", f"ethernet frame of {len(view)} bytes")
    return b"".join((view[:12], TPID_BYTES, _TCI.pack(tci(vid, pcp, dei)), view[12:]))


class VlanTag:
    """A zero-copy view of a tagged frame: its tag fields and the untagged frame."""

    __slots__ = ("buf",)

    buf: memoryview

    def __init__(self, buf: Buffer) -> None:
        view = as_view(buf)
        if len(view) < TAGGED_HEADER_LEN:
            raise WireError("tooshort", f"802.1Q frame of {len(view)} bytes")
        if view[12:14] != TPID_BYTES:
            raise WireError("badtype", f"TPID {(view[12] << 8) | view[13]:#06x} is not 0x8100")
        self.buf = view

    @property
    def tci(self) -> int:
        return (self.buf[14] << 8) | self.buf[15]

    @property
    def vid(self) -> int:
        return self.tci & 0x0FFF

    @property
    def pcp(self) -> int:
        return self.tci >> 13

    @property
    def dei(self) -> int:
        return (self.tci >> 12) & 1

    @property
    def ethertype(self) -> int:
        """The encapsulated (inner) ethertype."""
        return (self.buf[16] << 8) | self.buf[17]

    def untagged(self) -> bytes:
        """The frame with its tag removed (what the VLAN interface receives)."""
        return b"".join((self.buf[:12], self.buf[16:]))

    def __repr__(self) -> str:
        return (f"VlanTag(vid={self.vid}, pcp={self.pcp}, dei={self.dei}, "
                f"ethertype={self.ethertype:#06x})")


def parse(buf: Buffer) -> VlanTag:
    """Parse a tagged frame; WireError("tooshort") or ("badtype") if it is not one."""
    return VlanTag(buf)


def untag(frame: bytes) -> tuple[int, bytes] | None:
    """(TCI, untagged frame) of a tagged frame, or None if it is too short: the one
    call the data path makes (no view object per frame)."""
    if len(frame) < TAGGED_HEADER_LEN:
        return None
    return (frame[14] << 8) | frame[15], frame[:12] + frame[16:]
