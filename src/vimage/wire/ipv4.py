"""IPv4 header (RFC 791): parsing, emitting and address helpers."""

from __future__ import annotations

import re
import struct

# a global name for the NamedTuple's field type: mypyc (vimage.compiled) looks it up there
from builtins import memoryview
from socket import inet_aton as _inet_aton
from typing import TYPE_CHECKING, Any

from vimage.wire import checksum as _cksum
from vimage.wire._common import Buffer, WireError, as_view

if TYPE_CHECKING:
    from collections.abc import Iterator

INADDR_ANY = 0
INADDR_BROADCAST = 0xFFFFFFFF
INADDR_LOOPBACK = 0x7F000001

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_RAW = 255  # IPPROTO_RAW: a raw socket that supplies the IP header

FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFMASK = 0x1FFF

HEADER = struct.Struct("!BBHHHBBHII")
ADDRESSES = struct.Struct("!II")
"""The source and destination addresses, at offset 12 of the header."""
MIN_HEADER_LEN = 20
MAX_HEADER_LEN = 60
MAX_OPTIONS_LEN = MAX_HEADER_LEN - MIN_HEADER_LEN
MAX_PACKET = 65535

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_QUAD = re.compile(r"\.".join([_OCTET] * 4) + r"\Z")
"""A strict dotted quad: ASCII digits, no leading zeros, every octet at most 255."""


class Ipv4Header:
    """A parsed IPv4 header; ``buf`` views the packet up to ``total_length`` (no copy)."""

    __slots__ = (
        "buf",
        "checksum",
        "dst",
        "flags_frag",
        "header_len",
        "ident",
        "proto",
        "src",
        "tos",
        "total_length",
        "ttl",
    )

    buf: memoryview
    header_len: int
    tos: int
    total_length: int
    ident: int
    flags_frag: int
    ttl: int
    proto: int
    checksum: int
    src: int
    dst: int

    def __init__(
        self,
        buf: memoryview,
        header_len: int,
        tos: int,
        total_length: int,
        ident: int,
        flags_frag: int,
        ttl: int,
        proto: int,
        checksum: int,
        src: int,
        dst: int,
    ) -> None:
        self.buf = buf
        self.header_len = header_len
        self.tos = tos
        self.total_length = total_length
        self.ident = ident
        self.flags_frag = flags_frag
        self.ttl = ttl
        self.proto = proto
        self.checksum = checksum
        self.src = src
        self.dst = dst

    @property
    def version(self) -> int:
        """Always 4."""
        return 4

    @property
    def df(self) -> bool:
        """Don't Fragment flag."""
        return bool(self.flags_frag & FLAG_DF)

    @property
    def mf(self) -> bool:
        """More Fragments flag."""
        return bool(self.flags_frag & FLAG_MF)

    @property
    def frag_offset(self) -> int:
        """Fragment offset in bytes (the field times 8)."""
        return (self.flags_frag & OFFMASK) << 3

    @property
    def is_fragment(self) -> bool:
        """True if this is any fragment of a larger datagram (MF set or offset != 0)."""
        return bool(self.flags_frag & (FLAG_MF | OFFMASK))

    @property
    def header(self) -> memoryview:
        """The header bytes, options included."""
        return self.buf[: self.header_len]

    @property
    def options(self) -> memoryview:
        """The option bytes (between byte 20 and ``header_len``)."""
        return self.buf[MIN_HEADER_LEN : self.header_len]

    @property
    def payload(self) -> memoryview:
        """The bytes after the header, up to ``total_length`` (link padding excluded)."""
        return self.buf[self.header_len : self.total_length]

    def __repr__(self) -> str:
        return (
            f"Ipv4Header(src={ntoa(self.src)}, dst={ntoa(self.dst)}, proto={self.proto}, "
            f"hlen={self.header_len}, len={self.total_length}, id={self.ident}, "
            f"ff={self.flags_frag:#06x}, ttl={self.ttl}, tos={self.tos:#04x}, "
            f"sum={self.checksum:#06x})"
        )


def _parse(buf: Buffer, verify_checksum: bool, quoted: bool) -> Ipv4Header:
    view = as_view(buf)
    if len(view) < MIN_HEADER_LEN:
        raise WireError("tooshort", f"ipv4 packet of {len(view)} bytes")
    vhl, tos, total_length, ident, flags_frag, ttl, proto, cksum, src, dst = (
        HEADER.unpack_from(view)
    )
    if vhl >> 4 != 4:
        raise WireError("badvers", f"ip version {vhl >> 4}")
    header_len = (vhl & 0x0F) << 2
    if header_len < MIN_HEADER_LEN or header_len > len(view):
        raise WireError("badhlen", f"header length {header_len}, buffer {len(view)}")
    if verify_checksum and not _cksum.verify(view[:header_len]):
        raise WireError("badsum", "ipv4 header checksum")
    if total_length < header_len:
        raise WireError("badlen", f"total length {total_length} < header {header_len}")
    if total_length > len(view) and not quoted:
        raise WireError("tooshort", f"total length {total_length} > buffer {len(view)}")
    return Ipv4Header(
        view[:total_length],
        header_len,
        tos,
        total_length,
        ident,
        flags_frag,
        ttl,
        proto,
        cksum,
        src,
        dst,
    )


def parse(buf: Buffer, verify_checksum: bool = True) -> Ipv4Header:
    """Parse and validate an IPv4 packet; bytes past ``total_length`` are ignored.

    Reasons, in the order checked: "tooshort" (< 20 bytes), "badvers", "badhlen",
    "badsum" (if ``verify_checksum``), "badlen" (total length < header length),
    "tooshort" (total length > buffer).
    """
    return _parse(buf, verify_checksum, quoted=False)


def parse_quoted(buf: Buffer, verify_checksum: bool = False) -> Ipv4Header:
    """Parse the (usually truncated) IP packet quoted in an ICMP error.

    Like ``parse`` but ``total_length`` may exceed the buffer; ``buf`` and ``payload``
    then stop at the end of what was quoted.
    """
    return _parse(buf, verify_checksum, quoted=True)


def build_header(
    src: int,
    dst: int,
    proto: int,
    payload_len: int,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    flags_frag: int = 0,
    options: bytes = b"",
) -> bytes:
    """Emit an IPv4 header (with checksum) for a payload of ``payload_len`` bytes.

    Options are zero-padded (EOL) to a multiple of 4 bytes; more than 40 is a ValueError.
    """
    if len(options) > MAX_OPTIONS_LEN:
        raise ValueError(f"ipv4 options too long: {len(options)} > {MAX_OPTIONS_LEN}")
    pad = -len(options) % 4
    header_len = MIN_HEADER_LEN + len(options) + pad
    total_length = header_len + payload_len
    if payload_len < 0 or total_length > MAX_PACKET:
        raise ValueError(f"ipv4 total length {total_length} out of range")
    fixed = HEADER.pack(
        0x40 | (header_len >> 2), tos, total_length, ident, flags_frag, ttl, proto, 0, src, dst
    )
    header = bytearray(fixed)
    header += options
    header += bytes(pad)
    struct.pack_into("!H", header, 10, _cksum.checksum(header))
    return bytes(header)


def build(src: int, dst: int, proto: int, payload: Buffer, **header: Any) -> bytes:
    """Emit a complete IPv4 packet; ``header`` takes `build_header`'s keywords (ttl, tos,
    ident, flags_frag, options)."""
    return b"".join((build_header(src, dst, proto, len(payload), **header), payload))


def walk_options(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(offset, kind, length) of each option in `buf[start:end]` but the NOPs, up to an EOL.

    The option list of RFC 791 section 3.1, which TCP's shares (RFC 9293 section 3.1):
    kind 0 ends it, kind 1 is a byte of padding, any other kind is followed by its length,
    both bytes counted. A length that does not fit (no length byte, less than 2, past
    `end`) is yielded as 0 and ends the walk, so a reader never leaves `buf[:end]`.
    """
    i = start
    while i < end:
        kind = buf[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        length = buf[i + 1] if end - i > 1 else 0
        if not 2 <= length <= end - i:
            yield i, kind, 0
            return
        yield i, kind, length
        i += length


def aton(text: str) -> int:
    """Parse a strict dotted quad (``a.b.c.d``, decimal, no leading zeros); WireError("badaddr").

    The pattern is the strictness (inet_aton alone takes "1.2", "0x1.2.3.4", "010..."),
    inet_aton the conversion: half the time of splitting and checking in Python.
    """
    if not isinstance(text, str) or _QUAD.match(text) is None:
        raise WireError("badaddr", f"bad IPv4 address {text!r}")
    return int.from_bytes(_inet_aton(text), "big")


def ntoa(addr: int) -> str:
    """Format a 32-bit address as a dotted quad."""
    if not 0 <= addr <= 0xFFFFFFFF:
        raise ValueError(f"not a 32-bit address: {addr!r}")
    return f"{addr >> 24}.{(addr >> 16) & 0xFF}.{(addr >> 8) & 0xFF}.{addr & 0xFF}"


def prefix_to_mask(plen: int) -> int:
    """Netmask for a prefix length 0..32; WireError("badmask") otherwise."""
    if not 0 <= plen <= 32:
        raise WireError("badmask", f"prefix length {plen}")
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


def mask_to_prefix(mask: int) -> int:
    """Prefix length of a contiguous netmask; WireError("badmask") if not contiguous."""
    if not 0 <= mask <= 0xFFFFFFFF:
        raise WireError("badmask", f"not a 32-bit mask: {mask!r}")
    host = ~mask & 0xFFFFFFFF
    if host & (host + 1):
        raise WireError("badmask", f"non-contiguous mask {ntoa(mask)}")
    return 32 - host.bit_length()
