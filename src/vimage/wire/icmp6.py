"""ICMPv6 (RFC 4443), neighbour discovery (RFC 4861) and MLDv2 reports (RFC 3810).

The checksum covers the IPv6 pseudo-header, so building and verifying need the
packet's source and destination addresses.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view
from vimage.wire.checksum import checksum, ones_sum
from vimage.wire.icmp import HEADER, HEADER_LEN, IcmpRepr, echo_rest
from vimage.wire.ipv6 import NXT_ICMPV6, pseudo_sum

# types
DST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROB = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
MLD_QUERY = 130
MLD_REPORT = 131
MLD_DONE = 132
ROUTER_SOLICIT = 133
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137
MLDV2_REPORT = 143

# codes
UNREACH_NOROUTE = 0
UNREACH_ADMIN = 1
UNREACH_BEYONDSCOPE = 2
UNREACH_ADDR = 3
UNREACH_NOPORT = 4
TIME_EXCEED_TRANSIT = 0
TIME_EXCEED_REASSEMBLY = 1
PARAMPROB_HEADER = 0
PARAMPROB_NEXTHEADER = 1
PARAMPROB_OPTION = 2


# ND option types (RFC 4861 4.6)
ND_OPT_SOURCE_LINKADDR = 1
ND_OPT_TARGET_LINKADDR = 2
ND_OPT_PREFIX_INFORMATION = 3
ND_OPT_REDIRECTED_HEADER = 4
ND_OPT_MTU = 5

# NA flags (in the first byte of the reserved word)
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
# RA flags and prefix option flags
RA_MANAGED = 0x80
RA_OTHER = 0x40
PREFIX_ONLINK = 0x80
PREFIX_AUTO = 0x40

# MLDv2 record types (RFC 3810 5.2.12)
MODE_IS_INCLUDE = 1
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4

# types up to 127 are errors (RFC 4443 2.1)
_PREFIX = struct.Struct("!BBBBIII16s")


class Icmp6Repr(NamedTuple):
    type: int
    code: int
    checksum: int
    rest: int  # the 32-bit word after the checksum
    payload: memoryview

    # echo identifier and sequence number, laid out as ICMPv4's (RFC 4443 4.1)
    ident = IcmpRepr.ident
    seq = IcmpRepr.seq

    @property
    def is_error(self) -> bool:
        return self.type < 128


def parse(buf: Buffer, src: int, dst: int, verify_checksum: bool = True) -> Icmp6Repr:
    view = as_view(buf)
    if len(view) < HEADER_LEN:
        raise WireError("tooshort", f"icmp6 message of {len(view)} bytes")
    type_, code, cksum, rest = HEADER.unpack_from(view)
    if verify_checksum and ones_sum(view, pseudo_sum(src, dst, len(view), NXT_ICMPV6)) != 0xFFFF:
        raise WireError("badsum", "icmp6 checksum")
    return Icmp6Repr(type_, code, cksum, rest, view[HEADER_LEN:])


def build(type_: int, code: int, rest: int, payload: Buffer, src: int, dst: int) -> bytes:
    """An ICMPv6 message with its checksum over the pseudo-header of `src` -> `dst`."""
    body = HEADER.pack(type_, code, 0, rest) + bytes(payload)
    csum = checksum(body, pseudo_sum(src, dst, len(body), NXT_ICMPV6))
    return body[:2] + csum.to_bytes(2, "big") + body[4:]


def build_echo(type_: int, ident: int, seq: int, data: Buffer, src: int, dst: int) -> bytes:
    return build(type_, 0, echo_rest(ident, seq), data, src, dst)


# -- neighbour discovery ------------------------------------------------------------------
def opt_lladdr(kind: int, mac: bytes) -> bytes:
    """Source/target link-layer address option (Ethernet: 8 bytes)."""
    return bytes((kind, 1)) + mac


def opt_mtu(mtu: int) -> bytes:
    return bytes((ND_OPT_MTU, 1, 0, 0)) + mtu.to_bytes(4, "big")


def opt_prefix(prefix: int, plen: int, flags: int, valid: int, preferred: int) -> bytes:
    return _PREFIX.pack(ND_OPT_PREFIX_INFORMATION, 4, plen, flags, valid, preferred, 0,
                        prefix.to_bytes(16, "big"))


def opt_redirected(packet: Buffer) -> bytes:
    """Redirected header option quoting `packet` (cut to a multiple of 8)."""
    data = bytes(packet[:len(packet) - len(packet) % 8])
    return bytes((ND_OPT_REDIRECTED_HEADER, (len(data) + 8) // 8)) + b"\x00" * 6 + data


def build_ns(target: int, options: bytes, src: int, dst: int) -> bytes:
    return build(NEIGHBOR_SOLICIT, 0, 0, target.to_bytes(16, "big") + options, src, dst)


def build_na(flags: int, target: int, options: bytes, src: int, dst: int) -> bytes:
    return build(NEIGHBOR_ADVERT, 0, flags, target.to_bytes(16, "big") + options, src, dst)


def build_rs(options: bytes, src: int, dst: int) -> bytes:
    return build(ROUTER_SOLICIT, 0, 0, options, src, dst)


def build_ra(curhlim: int, flags: int, lifetime: int, reachable: int, retrans: int,
             options: bytes, src: int, dst: int) -> bytes:
    rest = curhlim << 24 | flags << 16 | lifetime
    return build(ROUTER_ADVERT, 0, rest, reachable.to_bytes(4, "big")
                 + retrans.to_bytes(4, "big") + options, src, dst)


def build_redirect(target: int, dest: int, options: bytes, src: int, dst: int) -> bytes:
    return build(REDIRECT, 0, 0, target.to_bytes(16, "big") + dest.to_bytes(16, "big")
                 + options, src, dst)


def parse_options(buf: Buffer) -> list[tuple[int, memoryview]]:
    """(type, whole option) of each ND option; WireError('badopt') for a zero length or
    one running past the message (RFC 4861 4.6: such a message is discarded)."""
    view = as_view(buf)
    out = []
    i = 0
    n = len(view)
    while i < n:
        if i + 2 > n or view[i + 1] == 0 or i + view[i + 1] * 8 > n:
            raise WireError("badopt", f"ND option at {i}")
        size = view[i + 1] * 8
        out.append((view[i], view[i:i + size]))
        i += size
    return out


def find_lladdr(options: list[tuple[int, memoryview]], kind: int) -> bytes | None:
    for k, opt in options:
        if k == kind and len(opt) >= 8:
            return bytes(opt[2:8])
    return None


class PrefixInfo(NamedTuple):
    prefix: int
    plen: int
    flags: int
    valid: int
    preferred: int


def parse_prefix(opt: Buffer) -> PrefixInfo:
    if len(opt) != 32:
        raise WireError("badopt", "prefix information option length")
    _, _, plen, flags, valid, preferred, _, prefix = _PREFIX.unpack_from(opt)
    return PrefixInfo(int.from_bytes(prefix, "big"), plen, flags, valid, preferred)


# -- MLDv2 --------------------------------------------------------------------------------
def build_mldv2_report(records: list[tuple[int, int, list[int]]], src: int, dst: int) -> bytes:
    """An MLDv2 report: records of (record type, multicast address, sources)."""
    body = b"".join(bytes((rtype, 0)) + len(sources).to_bytes(2, "big") + group.to_bytes(16, "big")
                    + b"".join(s.to_bytes(16, "big") for s in sources)
                    for rtype, group, sources in records)
    return build(MLDV2_REPORT, 0, len(records), body, src, dst)
