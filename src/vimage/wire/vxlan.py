"""VXLAN header (RFC 7348 §5): 8 bytes before an inner Ethernet frame, over UDP 4789.

    |R|R|R|R|I|R|R|R|            Reserved                           |
    |                VXLAN Network Identifier (VNI) |   Reserved    |

The I flag must be set; the reserved bits are ignored on receipt (RFC 7348 §5).
"""

from __future__ import annotations

from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view

PORT = 4789  # IANA
HEADER_LEN = 8
FLAG_I = 0x08
VNI_MAX = (1 << 24) - 1
_ETHER_MIN = 14


class VxlanRepr(NamedTuple):
    vni: int
    payload: memoryview  # the inner Ethernet frame


def parse(buf: Buffer) -> VxlanRepr:
    """Parse a VXLAN header; WireError "tooshort" (no room for it and an Ethernet
    header) or "badflags" (the I flag clear)."""
    view = as_view(buf)
    if len(view) < HEADER_LEN + _ETHER_MIN:
        raise WireError("tooshort", f"{len(view)} bytes, VXLAN needs {HEADER_LEN + 14}")
    if not view[0] & FLAG_I:
        raise WireError("badflags", f"VXLAN flags {view[0]:#04x} without the I flag")
    return VxlanRepr(int.from_bytes(view[4:7], "big"), view[HEADER_LEN:])


def header(vni: int) -> bytes:
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} is outside 0..{VNI_MAX}")
    return bytes((FLAG_I, 0, 0, 0)) + vni.to_bytes(3, "big") + b"\x00"


def build(vni: int, frame: Buffer) -> bytes:
    return header(vni) + bytes(frame)
