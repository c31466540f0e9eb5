"""ICMP for IPv4 (RFC 792)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire import checksum as _cksum
from vimage.wire._common import Buffer, WireError, as_view

ECHO_REPLY = 0
UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO = 8
TIMXCEED = 11
PARAMPROB = 12
TSTAMP = 13
TSTAMP_REPLY = 14

UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_NEEDFRAG = 4
UNREACH_SRCFAIL = 5
UNREACH_NET_UNKNOWN = 6
UNREACH_HOST_UNKNOWN = 7
UNREACH_FILTER_PROHIB = 13

TIMXCEED_INTRANS = 0
TIMXCEED_REASS = 1

HEADER = struct.Struct("!BBHI")
HEADER_LEN = 8
ERROR_TYPES = frozenset({UNREACH, SOURCE_QUENCH, REDIRECT, TIMXCEED, PARAMPROB})


class IcmpRepr(NamedTuple):
    """A parsed ICMP message; ``rest`` is the 32-bit word after the checksum."""

    type: int
    code: int
    checksum: int
    rest: int
    payload: memoryview

    @property
    def ident(self) -> int:
        """Echo identifier."""
        return self.rest >> 16

    @property
    def seq(self) -> int:
        """Echo sequence number."""
        return self.rest & 0xFFFF

    @property
    def mtu(self) -> int:
        """Next-hop MTU of an UNREACH/NEEDFRAG message (RFC 1191)."""
        return self.rest & 0xFFFF

    @property
    def is_error(self) -> bool:
        """True for error messages (which quote an offending IP packet)."""
        return self.type in ERROR_TYPES


def parse(buf: Buffer, verify_checksum: bool = True) -> IcmpRepr:
    """Parse an ICMP message (the IP payload); the payload is everything after 8 bytes."""
    view = as_view(buf)
    if len(view) < HEADER_LEN:
        raise WireError("tooshort", f"icmp message of {len(view)} bytes")
    icmp_type, code, cksum, rest = HEADER.unpack_from(view)
    if verify_checksum and not _cksum.verify(view):
        raise WireError("badsum", "icmp checksum")
    return IcmpRepr(icmp_type, code, cksum, rest, view[HEADER_LEN:])


def build(type: int, code: int, rest: int, payload: Buffer) -> bytes:
    """Emit an ICMP message with its checksum."""
    header = bytearray(HEADER.pack(type, code, 0, rest))
    struct.pack_into("!H", header, 2, _cksum.checksum(payload, _cksum.ones_sum(header)))
    return b"".join((header, payload))


def echo_rest(ident: int, seq: int) -> int:
    """The word after an echo message's checksum: identifier, then sequence number
    (RFC 792; ICMPv6 echo, RFC 4443 4.1, lays it out the same)."""
    return ((ident & 0xFFFF) << 16) | (seq & 0xFFFF)


def build_echo(type: int, ident: int, seq: int, payload: Buffer) -> bytes:
    """Emit an echo request or reply (``type`` is ECHO or ECHO_REPLY)."""
    return build(type, 0, echo_rest(ident, seq), payload)


def build_error(type: int, code: int, quoted: Buffer, rest: int = 0) -> bytes:
    """Emit an error message quoting ``quoted`` (offending IP header plus data, pre-cut)."""
    if type not in ERROR_TYPES:
        raise ValueError(f"ICMP type {type} is not an error type")
    return build(type, code, rest, quoted)
