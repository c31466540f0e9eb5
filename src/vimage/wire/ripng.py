"""RIPng packets (RFC 2080 section 2.1), carried in UDP over IPv6 to port 521.

    0        8        16               31
    | command| version|   must be zero  |    header, 4 bytes (version 1)
    |                                   |
    |          IPv6 prefix (16)         |    then route table entries of 20 bytes
    |                                   |
    |                                   |
    |   route tag     | prefix len|metric|

A next-hop entry (RFC 2080 2.1.1) has metric 0xFF and the next hop in the prefix
field (tag and length zero); it applies to the entries after it, until the next one.
A whole-table request is a single entry ::/0 with metric 16 (2.4.1).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view

PORT = 521
GROUP = 0xFF02 << 112 | 9  # ff02::9, all RIP routers
REQUEST = 1
RESPONSE = 2
VERSION = 1
INFINITY = 16
NEXTHOP_METRIC = 0xFF
HEADER_LEN = 4
ENTRY_LEN = 20

_HEADER = struct.Struct("!BBH")
_ENTRY = struct.Struct("!16sHBB")


def max_entries(mtu: int) -> int:
    """RFC 2080 2.1: as many entries as the link's MTU allows (IPv6 40, UDP 8 bytes)."""
    return max(1, (mtu - 40 - 8 - HEADER_LEN) // ENTRY_LEN)


class RipngEntry(NamedTuple):
    """One route table entry (a next-hop entry: metric NEXTHOP_METRIC, the address in
    `prefix`)."""

    prefix: int
    plen: int = 0
    metric: int = 1
    tag: int = 0


class RipngPacket(NamedTuple):
    command: int
    version: int
    entries: tuple[RipngEntry, ...]


def parse(buf: Buffer) -> RipngPacket:
    """A RIPng packet; WireError "tooshort", "badlen" (not a whole number of entries),
    "badversion" (not 1) or "badcommand"."""
    data = as_view(buf)
    if len(data) < HEADER_LEN:
        raise WireError("tooshort", f"{len(data)} bytes is shorter than a RIPng header")
    if (len(data) - HEADER_LEN) % ENTRY_LEN:
        raise WireError("badlen", f"{len(data)} bytes is not a whole number of entries")
    command, version, _ = _HEADER.unpack_from(data)
    if version != VERSION:
        raise WireError("badversion", f"RIPng version {version}")
    if command not in (REQUEST, RESPONSE):
        raise WireError("badcommand", f"RIPng command {command}")
    entries = []
    for off in range(HEADER_LEN, len(data), ENTRY_LEN):
        prefix, tag, plen, metric = _ENTRY.unpack_from(data, off)
        entries.append(RipngEntry(int.from_bytes(prefix, "big"), plen, metric, tag))
    return RipngPacket(command, version, tuple(entries))


def build(command: int, entries: list[RipngEntry] | tuple[RipngEntry, ...]) -> bytes:
    out = bytearray(_HEADER.pack(command, VERSION, 0))
    for e in entries:
        out += _ENTRY.pack(e.prefix.to_bytes(16, "big"), e.tag, e.plen, e.metric)
    return bytes(out)


def whole_table_request() -> bytes:
    return build(REQUEST, [RipngEntry(0, 0, INFINITY)])
