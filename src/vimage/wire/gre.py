"""GRE header (RFC 2784) with the key and sequence number extensions (RFC 2890).

    0                   1                   2                   3
    |C| |K|S| Reserved0       | Ver |         Protocol Type         |
    |      Checksum (optional)      |       Reserved1 (optional)    |
    |                         Key (optional)                        |
    |                 Sequence Number (optional)                    |

The checksum, when present, covers the GRE header and its payload. A receiver
refuses a version other than 0 and the RFC 1701 bits (routing, strict source route,
recursion) as FreeBSD's gre_input does: it does not implement RFC 1701.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view
from vimage.wire.checksum import checksum

FLAG_C = 0x8000  # checksum present
FLAG_R = 0x4000  # RFC 1701 routing present
FLAG_K = 0x2000  # key present (RFC 2890)
FLAG_S = 0x1000  # sequence number present (RFC 2890)
FLAGS_KNOWN = FLAG_C | FLAG_K | FLAG_S
VERSION_MASK = 0x0007

PROTO_IPV4 = 0x0800
PROTO_IPV6 = 0x86DD
PROTO_TEB = 0x6558  # transparent Ethernet bridging

BASE = struct.Struct("!HH")
BASE_LEN = 4
MAX_HEADER_LEN = 16


class GreRepr(NamedTuple):
    """A parsed GRE header: what follows it is `payload` (a view, no copy)."""

    proto: int
    key: int | None
    seq: int | None
    csum: bool
    header_len: int
    payload: memoryview


def header_len(flags: int) -> int:
    return BASE_LEN + 4 * (bool(flags & FLAG_C) + bool(flags & FLAG_K) + bool(flags & FLAG_S))


def parse(buf: Buffer) -> GreRepr:
    """Parse a GRE header; WireError "tooshort", "badversion", "badflags" or "badsum"."""
    view = as_view(buf)
    if len(view) < BASE_LEN:
        raise WireError("tooshort", f"{len(view)} bytes, GRE needs {BASE_LEN}")
    flags, proto = BASE.unpack_from(view)
    if flags & VERSION_MASK:
        raise WireError("badversion", f"GRE version {flags & VERSION_MASK}")
    if flags & ~(FLAGS_KNOWN | VERSION_MASK):
        raise WireError("badflags", f"GRE flags {flags:#06x} (RFC 1701 fields)")
    hlen = header_len(flags)
    if len(view) < hlen:
        raise WireError("tooshort", f"{len(view)} bytes, the GRE header needs {hlen}")
    at = BASE_LEN
    if flags & FLAG_C:
        if checksum(view):
            raise WireError("badsum", "GRE checksum")
        at += 4
    key = seq = None
    if flags & FLAG_K:
        key = int.from_bytes(view[at:at + 4], "big")
        at += 4
    if flags & FLAG_S:
        seq = int.from_bytes(view[at:at + 4], "big")
    return GreRepr(proto, key, seq, bool(flags & FLAG_C), hlen, view[hlen:])


def build_header(proto: int, key: int | None = None, seq: int | None = None) -> bytes:
    """A GRE header without checksum (the common, precomputable case)."""
    flags = (FLAG_K if key is not None else 0) | (FLAG_S if seq is not None else 0)
    parts = [BASE.pack(flags, proto)]
    if key is not None:
        parts.append((key & 0xFFFFFFFF).to_bytes(4, "big"))
    if seq is not None:
        parts.append((seq & 0xFFFFFFFF).to_bytes(4, "big"))
    return b"".join(parts)


def build(proto: int, payload: Buffer, key: int | None = None, seq: int | None = None,
          csum: bool = False) -> bytes:
    """A GRE packet: header (with a checksum over header and payload if `csum`) + payload."""
    if not csum:
        return build_header(proto, key, seq) + bytes(payload)
    flags = FLAG_C | (FLAG_K if key is not None else 0) | (FLAG_S if seq is not None else 0)
    tail = b"".join(((key & 0xFFFFFFFF).to_bytes(4, "big") if key is not None else b"",
                     (seq & 0xFFFFFFFF).to_bytes(4, "big") if seq is not None else b"",
                     bytes(payload)))
    body = BASE.pack(flags, proto) + b"\x00\x00\x00\x00" + tail
    return body[:4] + checksum(body).to_bytes(2, "big") + body[6:]
