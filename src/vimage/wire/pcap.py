"""The classic pcap file format (libpcap's savefile, pcap(5)): link types, writer, reader.

Files are little-endian when written, with nanosecond time stamps by default (magic
a1b23c4d): in virtual time a packet's stamp is exactly the kernel time it was seen;
`precision="micro"` writes the original a1b2c3d4 format. The reader takes either byte
order and either precision, and words its errors as libpcap does. Loopback captures use
LINKTYPE_NULL: a 4-byte address family (AF_INET = 2, in the file's byte order) before
each packet, as BSD lo0 does.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from typing import IO, NamedTuple

LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family, then the packet
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # bare IPv4/IPv6 packets
LINKTYPE_IPV4 = 228

# (linktype, tcpdump's name, description)
LINKTYPE_NAMES: tuple[tuple[int, str, str], ...] = (
    (LINKTYPE_NULL, "NULL", "BSD loopback"),
    (LINKTYPE_ETHERNET, "EN10MB", "Ethernet"),
    (LINKTYPE_RAW, "RAW", "Raw IP"),
    (LINKTYPE_IPV4, "IPV4", "Raw IPv4"),
)

DEFAULT_SNAPLEN = 262144
MAX_SNAPLEN = 262144
AF_INET = 2
AF_INET6_VALUES = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, macOS

MAGIC_MICRO = 0xA1B2C3D4
MAGIC_NANO = 0xA1B23C4D
PCAPNG_MAGIC = 0x0A0D0D0A
VERSION_MAJOR = 2
VERSION_MINOR = 4
FILE_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")
NULL_HEADER_INET = struct.pack("<I", AF_INET)


def linktype_name(linktype: int) -> tuple[str, str] | None:
    """(name, description) as tcpdump prints them, or None if unknown."""
    for value, name, descr in LINKTYPE_NAMES:
        if value == linktype:
            return name, descr
    return None


class Record(NamedTuple):
    """One packet of a pcap file: kernel time, captured bytes, length on the wire."""

    time_ns: int
    data: bytes
    wirelen: int


class PcapWriter:
    """Writes a classic pcap file (little-endian; nanosecond or microsecond stamps)."""

    __slots__ = ("_fh", "_owns", "flush_each", "linktype", "nano", "path", "snaplen")

    def __init__(self, dest: str | IO[bytes], linktype: int, snaplen: int = DEFAULT_SNAPLEN,
                 precision: str = "nano", flush_each: bool = False) -> None:
        if precision not in ("nano", "micro"):
            raise ValueError(f"time stamp precision must be 'nano' or 'micro', not {precision!r}")
        self.linktype = linktype
        self.snaplen = snaplen
        self.nano = precision == "nano"
        self.flush_each = flush_each
        if isinstance(dest, str):
            self.path: str | None = dest
            self._fh: IO[bytes] | None = open(dest, "wb")  # noqa: SIM115 - closed in close()
            self._owns = True
        else:
            self.path = None
            self._fh = dest
            self._owns = False
        magic = MAGIC_NANO if self.nano else MAGIC_MICRO
        self._fh.write(FILE_HEADER.pack(magic, VERSION_MAJOR, VERSION_MINOR, 0, 0, snaplen,
                                        linktype))

    def write(self, time_ns: int, data: bytes, wirelen: int) -> None:
        fh = self._fh
        if fh is None:
            raise ValueError("pcap file is closed")
        sec, frac = divmod(time_ns, 1_000_000_000)
        if not self.nano:
            frac //= 1000
        fh.write(RECORD_HEADER.pack(sec & 0xFFFFFFFF, frac, len(data), wirelen))
        fh.write(data)
        if self.flush_each:
            fh.flush()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            if self._owns:
                fh.close()
            else:
                fh.flush()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dumps(packets: Iterable[tuple[int, bytes]], linktype: int) -> bytes:
    """(time_ns, frame) pairs as a whole pcap file in memory (nanosecond stamps)."""
    out = io.BytesIO()
    with PcapWriter(out, linktype) as writer:
        for time_ns, data in packets:
            writer.write(time_ns, data, len(data))
    return out.getvalue()


class PcapFile(NamedTuple):
    """What `read_pcap` found: the header fields and the packets."""

    linktype: int
    snaplen: int
    nano: bool
    records: list[Record]


def _read_exact(fh: IO[bytes], n: int, what: str) -> bytes | None:
    data = fh.read(n)
    if not data:
        return None
    if len(data) < n:
        raise ValueError(f"truncated dump file; tried to read {n} {what} bytes, "
                         f"only got {len(data)}")
    return data


def iter_pcap(fh: IO[bytes]) -> tuple[int, int, bool, Iterator[Record]]:
    """Parse a classic pcap stream (either byte order, either precision).

    Returns (linktype, snaplen, nano, records); errors are ValueErrors with libpcap's
    wording ("bad dump file format", "truncated dump file; ...").
    """
    head = fh.read(FILE_HEADER.size)
    if len(head) < 4:
        if head:
            raise ValueError("bad dump file format")
        raise ValueError("truncated dump file; tried to read 4 file header bytes, only got 0")
    magic_le = int.from_bytes(head[:4], "little")
    magic_be = int.from_bytes(head[:4], "big")
    if magic_le == PCAPNG_MAGIC:
        raise ValueError("pcapng dump files are not supported (write classic pcap)")
    if magic_le in (MAGIC_MICRO, MAGIC_NANO):
        order, magic = "<", magic_le
    elif magic_be in (MAGIC_MICRO, MAGIC_NANO):
        order, magic = ">", magic_be
    else:
        raise ValueError("bad dump file format")
    if len(head) < FILE_HEADER.size:
        raise ValueError(f"truncated dump file; tried to read {FILE_HEADER.size} file header "
                         f"bytes, only got {len(head)}")
    _magic, major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(
        order + "IHHiIII", head)
    if major != VERSION_MAJOR:
        raise ValueError(f"unsupported pcap savefile version {major}")
    nano = magic == MAGIC_NANO
    rec = struct.Struct(order + "IIII")
    scale = 1 if nano else 1000
    linktype &= 0x03FFFFFF  # the upper bits carry FCS information

    def records() -> Iterator[Record]:
        while True:
            hdr = _read_exact(fh, rec.size, "header")
            if hdr is None:
                return
            sec, frac, caplen, wirelen = rec.unpack(hdr)
            if caplen > max(snaplen, MAX_SNAPLEN):
                raise ValueError(f"invalid packet capture length {caplen}, bigger than "
                                 f"snaplen of {max(snaplen, MAX_SNAPLEN)}")
            data = _read_exact(fh, caplen, "captured packet") if caplen else b""
            if data is None:
                raise ValueError(f"truncated dump file; tried to read {caplen} captured "
                                 "packet bytes, only got 0")
            yield Record(sec * 1_000_000_000 + frac * scale, data, wirelen)

    return linktype, snaplen, nano, records()


def read_pcap(path: str) -> PcapFile:
    """Read a whole classic pcap file."""
    with open(path, "rb") as fh:
        linktype, snaplen, nano, records = iter_pcap(fh)
        return PcapFile(linktype, snaplen, nano, list(records))
