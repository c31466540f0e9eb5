"""IPv6 header and extension headers (RFC 8200), addresses (RFC 4291, RFC 5952).

Addresses are 128-bit ints, as IPv4's are 32-bit ints. Extension headers are built and
walked here; what a node does with them is netinet6's business.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view
from vimage.wire.checksum import ones_sum

HEADER_LEN = 40
HEADER = struct.Struct("!IHBB16s16s")
FRAG_HEADER = struct.Struct("!BBHI")
FRAG_LEN = 8
MIN_MTU = 1280  # RFC 8200 section 5
MAX_PAYLOAD = 65535

# next header values (IANA protocol numbers)
NXT_HOPOPTS = 0
NXT_TCP = 6
NXT_UDP = 17
NXT_IPV6 = 41
NXT_ROUTING = 43
NXT_FRAGMENT = 44
NXT_ESP = 50
NXT_AH = 51
NXT_ICMPV6 = 58
NXT_NONE = 59
NXT_DSTOPTS = 60
EXTENSION_HEADERS = frozenset({NXT_HOPOPTS, NXT_ROUTING, NXT_FRAGMENT, NXT_DSTOPTS})

# options (RFC 8200 4.2, RFC 2711)
OPT_PAD1 = 0
OPT_PADN = 1
OPT_ROUTER_ALERT = 5
OPT_JUMBO = 0xC2

ADDR_ANY = 0
ADDR_LOOPBACK = 1
ALL_NODES = 0xFF02 << 112 | 1
ALL_ROUTERS = 0xFF02 << 112 | 2
ALL_MLDV2_ROUTERS = 0xFF02 << 112 | 0x16
SOLICITED_NODE = 0xFF02 << 112 | 1 << 32 | 0xFF << 24  # ff02::1:ff00:0/104
LINK_LOCAL_PREFIX = 0xFE80 << 112

# scopes (RFC 4291 2.7, RFC 6724 3.1)
SCOPE_INTERFACE = 0x1
SCOPE_LINK = 0x2
SCOPE_SITE = 0x5
SCOPE_GLOBAL = 0xE

_FULL = (1 << 128) - 1
MASKS6: tuple[int, ...] = tuple((_FULL << (128 - p)) & _FULL for p in range(129))


def aton(text: str) -> int:
    """An IPv6 address in text form (no scope) as an int; WireError if it is not one."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except (OSError, ValueError):
        raise WireError("badaddr", f"not an IPv6 address: {text!r}") from None


def ntoa(addr: int) -> str:
    """The RFC 5952 text form of `addr`."""
    return socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, "big"))


def split_scope(text: str) -> tuple[int, str]:
    """'fe80::1%epair0a' -> (address, 'epair0a'); the zone is '' when absent."""
    addr, _, zone = text.partition("%")
    return aton(addr), zone


def is_multicast(addr: int) -> bool:
    return addr >> 120 == 0xFF


def is_link_local(addr: int) -> bool:
    """fe80::/10 unicast."""
    return addr >> 118 == 0x3FA


def is_loopback(addr: int) -> bool:
    return addr == ADDR_LOOPBACK


def is_v4mapped(addr: int) -> bool:
    return addr >> 32 == 0xFFFF


def scope(addr: int) -> int:
    """The scope of an address (RFC 6724 3.1): ::1 and fe80::/10 are link scope."""
    if addr >> 120 == 0xFF:
        return (addr >> 112) & 0xF
    if addr >> 118 == 0x3FA or addr == ADDR_LOOPBACK:
        return SCOPE_LINK
    if addr >> 118 == 0x3FB:  # fec0::/10, deprecated site-local
        return SCOPE_SITE
    return SCOPE_GLOBAL


def needs_zone(addr: int) -> bool:
    """True if `addr` means nothing without an interface: link-local unicast, and
    interface- or link-local multicast."""
    return addr >> 118 == 0x3FA or (addr >> 120 == 0xFF and (addr >> 112) & 0xF <= SCOPE_LINK)


def solicited_node(addr: int) -> int:
    """The solicited-node multicast group of `addr` (RFC 4291 2.7.1)."""
    return SOLICITED_NODE | (addr & 0xFFFFFF)


def multicast_mac(group: int) -> bytes:
    """The Ethernet address of an IPv6 multicast group (RFC 2464 section 7)."""
    return b"\x33\x33" + (group & 0xFFFFFFFF).to_bytes(4, "big")


def eui64(mac: bytes) -> int:
    """The modified EUI-64 interface identifier of a MAC address (RFC 4291 appendix A)."""
    return int.from_bytes(bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:6], "big")


def pseudo_sum(src: int, dst: int, length: int, nxt: int) -> int:
    """Ones'-complement sum of the IPv6 pseudo-header (RFC 8200 section 8.1)."""
    return ones_sum(src.to_bytes(16, "big") + dst.to_bytes(16, "big")
                    + length.to_bytes(4, "big") + nxt.to_bytes(4, "big"))


class Ipv6Header(NamedTuple):
    version: int
    tclass: int
    flow: int
    plen: int
    nxt: int
    hlim: int
    src: int
    dst: int


def parse(buf: Buffer) -> tuple[Ipv6Header, memoryview]:
    """Parse the fixed header; returns it and the payload (cut to the payload length)."""
    view = as_view(buf)
    if len(view) < HEADER_LEN:
        raise WireError("toosmall", f"IPv6 packet of {len(view)} bytes")
    vtf, plen, nxt, hlim, src, dst = HEADER.unpack_from(view)
    if vtf >> 28 != 6:
        raise WireError("badvers", f"IP version {vtf >> 28}")
    if HEADER_LEN + plen > len(view):
        raise WireError("tooshort", f"payload length {plen} > {len(view) - HEADER_LEN}")
    hdr = Ipv6Header(6, (vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nxt, hlim,
                     int.from_bytes(src, "big"), int.from_bytes(dst, "big"))
    return hdr, view[HEADER_LEN:HEADER_LEN + plen]


def build_header(src: int, dst: int, nxt: int, plen: int, hlim: int = 64, tclass: int = 0,
                 flow: int = 0) -> bytes:
    return HEADER.pack(0x60000000 | (tclass & 0xFF) << 20 | (flow & 0xFFFFF), plen, nxt, hlim,
                       src.to_bytes(16, "big"), dst.to_bytes(16, "big"))


def build(src: int, dst: int, nxt: int, payload: Buffer, hlim: int = 64, tclass: int = 0,
          flow: int = 0) -> bytes:
    """Emit an IPv6 packet; `payload` starts with the header `nxt` names."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("IPv6 payload too long (no jumbograms)")
    return build_header(src, dst, nxt, len(payload), hlim, tclass, flow) + bytes(payload)


# -- extension headers ------------------------------------------------------------------
def pad_options(options: bytes, start: int = 2) -> bytes:
    """`options` padded with Pad1/PadN so that `start` + their length is a multiple of 8."""
    need = -(start + len(options)) % 8
    if need == 0:
        return options
    if need == 1:
        return options + b"\x00"
    return options + bytes((OPT_PADN, need - 2)) + b"\x00" * (need - 2)


def build_options_header(nxt: int, options: bytes) -> bytes:
    """A hop-by-hop or destination options header (RFC 8200 4.3, 4.6), padded."""
    body = pad_options(options)
    return bytes((nxt, (2 + len(body)) // 8 - 1)) + body


def option(kind: int, data: bytes) -> bytes:
    return bytes((kind, len(data))) + data


ROUTER_ALERT_MLD = option(OPT_ROUTER_ALERT, b"\x00\x00")  # RFC 2711: value 0 = MLD


def build_routing(nxt: int, rtype: int, segleft: int, data: bytes = b"\x00" * 4) -> bytes:
    """A routing header (RFC 8200 4.4); `data` starts with the 4 type-specific bytes."""
    if (4 + len(data)) % 8:
        raise ValueError("routing header data must make a multiple of 8 bytes")
    return bytes((nxt, (4 + len(data)) // 8 - 1, rtype, segleft)) + data


def build_fragment(nxt: int, offset: int, more: bool, ident: int) -> bytes:
    """A fragment header (RFC 8200 4.5); `offset` in bytes, a multiple of 8."""
    return FRAG_HEADER.pack(nxt, 0, (offset & 0xFFF8) | int(more), ident & 0xFFFFFFFF)


def walk_options(buf: Buffer, start: int, end: int) -> list[tuple[int, int, int]]:
    """(offset, type, data length) of each option in `buf[start:end]` (Pad1 included,
    length 0); WireError('badoptions', ...) if an option runs past `end`."""
    out = []
    i = start
    while i < end:
        kind = buf[i]
        if kind == OPT_PAD1:
            out.append((i, kind, 0))
            i += 1
            continue
        if i + 2 > end or i + 2 + buf[i + 1] > end:
            raise WireError("badoptions", f"option at {i} runs past its header")
        out.append((i, kind, buf[i + 1]))
        i += 2 + buf[i + 1]
    return out


def ext_len(buf: Buffer, off: int, nxt: int) -> int:
    """Length in bytes of the extension header of type `nxt` at `off`."""
    if nxt == NXT_FRAGMENT:
        return FRAG_LEN
    if nxt == NXT_AH:
        return (buf[off + 1] + 2) << 2
    return (buf[off + 1] + 1) << 3
