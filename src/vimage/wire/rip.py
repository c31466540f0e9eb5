"""RIP packets: RIPv1 (RFC 1058), RIPv2 (RFC 2453) and their authentication.

    0        8        16               31
    | command| version|   must be zero  |    header, 4 bytes
    | address family  |    route tag    |    then 1..25 entries of 20 bytes
    |              IP address           |    (RIPv1: tag, mask and next hop are zero)
    |              subnet mask          |
    |              next hop             |
    |              metric (1..16)       |

Authentication is a first entry with address family 0xFFFF (RFC 2453 §4.1):
type 2 carries a 16-byte password; type 3 is keyed MD5 (RFC 2082, RFC 4822 §2): the
entry holds the offset of the trailer, the key id, the length of the authentication data,
a sequence number and 8 zero bytes; the trailer after the last route entry is 0xFFFF,
0x0001 and the 16-byte MD5 digest of the packet up to and including those 4 bytes
followed by the key padded with zeros to 16 bytes.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view

PORT = 520
GROUP = 0xE0000009  # 224.0.0.9, RIP2-ROUTERS
REQUEST = 1
RESPONSE = 2
AF_INET = 2
AF_UNSPEC = 0  # a whole-table request's single entry (RFC 2453 §3.9.1)
AF_AUTH = 0xFFFF
AUTH_TRAILER = 1
AUTH_SIMPLE = 2
AUTH_MD5 = 3
INFINITY = 16
HEADER_LEN = 4
ENTRY_LEN = 20
MAX_ENTRIES = 25  # per packet, the authentication entry included (RFC 2453 §4)
MD5_LEN = 16
MD5_AUTH_LEN = 20  # the authentication data length sent: the trailer (RFC 4822 §2.2)
MAX_PACKET = HEADER_LEN + ENTRY_LEN * MAX_ENTRIES + 4 + MD5_LEN

_ENTRY = struct.Struct("!HHIIII")
_MD5_ENTRY = struct.Struct("!HHHBBI8x")


class RipEntry(NamedTuple):
    """One route entry (addresses as ints)."""

    addr: int
    mask: int = 0
    metric: int = 1
    nexthop: int = 0
    tag: int = 0
    afi: int = AF_INET


class RipAuth(NamedTuple):
    """The authentication entry: simple (`password`) or keyed MD5 (the other fields)."""

    type: int
    password: bytes = b""
    keyid: int = 0
    seq: int = 0
    offset: int = 0  # MD5: where the trailer starts (the packet length it covers)
    datalen: int = 0
    digest: bytes = b""  # MD5: the trailer's digest


class RipPacket(NamedTuple):
    command: int
    version: int
    entries: tuple[RipEntry, ...]
    auth: RipAuth | None = None


def parse(buf: Buffer) -> RipPacket:
    """Parse a RIP packet; WireError on a short packet ("tooshort"), a length that is not
    a whole number of entries ("badlen"), version 0 ("badvers"), an unknown command
    ("badcmd"), or a malformed authentication entry or MD5 trailer ("badauth")."""
    view = as_view(buf)
    n = len(view)
    if n < HEADER_LEN:
        raise WireError("tooshort", f"{n} bytes, RIP needs {HEADER_LEN}")
    command, version = view[0], view[1]
    if version == 0:
        raise WireError("badvers", "RIP version 0")
    if command not in (REQUEST, RESPONSE):
        raise WireError("badcmd", f"RIP command {command}")
    auth: RipAuth | None = None
    end = n
    off = HEADER_LEN
    if n >= HEADER_LEN + ENTRY_LEN and view[4] == 0xFF and view[5] == 0xFF:
        auth = _parse_auth(view)
        off += ENTRY_LEN
        if auth.type == AUTH_MD5:
            end = auth.offset
    if (end - HEADER_LEN) % ENTRY_LEN:
        raise WireError("badlen", f"{n} bytes is not a whole number of RIP entries")
    entries = tuple(RipEntry(addr, mask, metric, nexthop, tag, afi) for afi, tag, addr, mask,
                    nexthop, metric in _ENTRY.iter_unpack(view[off:end]))
    return RipPacket(command, version, entries, auth)


def _parse_auth(view: memoryview) -> RipAuth:
    atype = int.from_bytes(view[6:8], "big")
    if atype == AUTH_SIMPLE:
        return RipAuth(AUTH_SIMPLE, bytes(view[8:24]))
    if atype != AUTH_MD5:
        raise WireError("badauth", f"authentication type {atype}")
    _, _, offset, keyid, datalen, seq = _MD5_ENTRY.unpack_from(view, HEADER_LEN)
    n = len(view)
    if (offset < HEADER_LEN + ENTRY_LEN or (offset - HEADER_LEN) % ENTRY_LEN
            or offset + 4 + MD5_LEN != n or bytes(view[offset:offset + 4]) != b"\xff\xff\x00\x01"
            or datalen not in (MD5_LEN, MD5_AUTH_LEN)):
        raise WireError("badauth", "malformed keyed MD5 trailer")
    return RipAuth(AUTH_MD5, b"", keyid, seq, offset, datalen, bytes(view[offset + 4:]))


def build(command: int, version: int, entries: list[RipEntry] | tuple[RipEntry, ...],
          auth: RipAuth | None = None, key: bytes = b"") -> bytes:
    """A RIP packet; with `auth` of type AUTH_MD5, `key` signs it (RFC 2082 §3.2)."""
    out = bytearray((command, version, 0, 0))
    if auth is not None and auth.type == AUTH_SIMPLE:
        out += struct.pack("!HH16s", AF_AUTH, AUTH_SIMPLE, auth.password[:16])
    elif auth is not None and auth.type == AUTH_MD5:
        offset = HEADER_LEN + ENTRY_LEN * (len(entries) + 1)
        out += _MD5_ENTRY.pack(AF_AUTH, AUTH_MD5, offset, auth.keyid, MD5_AUTH_LEN, auth.seq)
    for e in entries:
        out += _ENTRY.pack(e.afi, e.tag, e.addr, e.mask, e.nexthop, e.metric)
    if auth is not None and auth.type == AUTH_MD5:
        out += b"\xff\xff\x00\x01"
        out += md5_digest(out, key)
    return bytes(out)


def md5_digest(signed: Buffer, key: bytes) -> bytes:
    """The keyed MD5 of `signed` (the packet through the trailer's 4-byte header)."""
    return hashlib.md5(bytes(signed) + key[:MD5_LEN].ljust(MD5_LEN, b"\0")).digest()


def md5_valid(buf: Buffer, auth: RipAuth, key: bytes) -> bool:
    """Whether a parsed packet's MD5 trailer matches `key`."""
    view = as_view(buf)
    return md5_digest(view[:auth.offset + 4], key) == auth.digest


def password_bytes(text: str) -> bytes:
    """A password as the 16 bytes on the wire (zero-padded, longer ones cut)."""
    return text.encode()[:16].ljust(16, b"\0")
