"""Packet capture (FreeBSD bpf(4)): sessions on an interface, capture filters, pcap files.

An interface's `bpf` slot is None while nobody captures, so the data path pays one
attribute test. `open_capture(ifp, ...)` puts a `BpfIf` dispatcher there; the
interface hands it every frame it sends or receives (`tap(frame, outbound)`), and
the dispatcher gives each open `Session` a copy stamped with the kernel clock. When
the last session closes, `ifp.bpf` is None again. Destroying the interface ends
every session on it (`Session.error` then says why).

Link types: Ethernet interfaces capture whole frames (LINKTYPE_ETHERNET); loopback
carries bare IPv4 packets and captures them as BSD lo0 does, behind a 4-byte
address family header (LINKTYPE_NULL, AF_INET = 2 in the file's byte order).

Files are classic pcap, little-endian, with nanosecond timestamps by default
(magic a1b23c4d): in virtual time a packet's timestamp is exactly the kernel time it
was seen. `precision="micro"` writes the original a1b2c3d4 format instead.

Capture filters use pcap-filter(7) syntax and are compiled once into a tree of
closures (`compile_filter`); see that function for what is understood.
"""

from __future__ import annotations

import errno
import re
import struct
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from vimage.wire import WireError, ipv4
from vimage.wire.ethernet import mac_aton

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

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

DIRECTIONS = ("inout", "in", "out")

Matcher = Callable[[bytes], bool]
PacketCallback = Callable[[int, bytes, int], None]


def linktype_of(ifp: Ifnet) -> int:
    """The link type a capture on `ifp` records: Ethernet, or NULL for loopback."""
    return LINKTYPE_NULL if ifp.mac is None else LINKTYPE_ETHERNET


def linktype_name(linktype: int) -> tuple[str, str] | None:
    """(name, description) as tcpdump prints them, or None if unknown."""
    for value, name, descr in LINKTYPE_NAMES:
        if value == linktype:
            return name, descr
    return None


# -- pcap files ----------------------------------------------------------------------
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


# -- capture filters -------------------------------------------------------------------
ETHERTYPE_IP = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_RARP = 0x8035
ETHERTYPE_IPV6 = 0x86DD

PROTO_NAMES: tuple[tuple[str, int], ...] = (
    ("icmp", 1), ("igmp", 2), ("tcp", 6), ("udp", 17), ("sctp", 132),
)
ETHER_PROTO_NAMES: tuple[tuple[str, int], ...] = (
    ("ip", ETHERTYPE_IP), ("arp", ETHERTYPE_ARP), ("rarp", ETHERTYPE_RARP),
    ("ip6", ETHERTYPE_IPV6),
)
# a few /etc/services names, so `port domain` works as in tcpdump
SERVICE_NAMES: tuple[tuple[str, int], ...] = (
    ("echo", 7), ("discard", 9), ("daytime", 13), ("ftp-data", 20), ("ftp", 21),
    ("ssh", 22), ("telnet", 23), ("smtp", 25), ("domain", 53), ("bootps", 67),
    ("bootpc", 68), ("tftp", 69), ("http", 80), ("ntp", 123), ("snmp", 161),
    ("https", 443), ("syslog", 514),
)

PROTO_QUALIFIERS = frozenset({"ether", "link", "ip", "arp", "rarp", "tcp", "udp", "icmp", "sctp",
                              "ip6"})
DIR_QUALIFIERS = frozenset({"src", "dst"})
TYPE_QUALIFIERS = frozenset({"host", "net", "port", "portrange"})
OPERATORS = frozenset({"and", "&&", "or", "||", "not", "!", "(", ")"})
TRANSPORTS = frozenset({"tcp", "udp", "sctp"})
_TOKEN_RE = re.compile(r"\s+|(&&|\|\||[()])|(!)(?!=)")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{1,2}([:.-])[0-9A-Fa-f]{1,2}(\1[0-9A-Fa-f]{1,2}){4}$")
_PARTIAL_NET_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){0,3}$")


def _tokens(expr: str) -> list[str]:
    return [t for t in _TOKEN_RE.split(expr) if t]


def _lookup(table: tuple[tuple[str, int], ...], name: str) -> int | None:
    for key, value in table:
        if key == name:
            return value
    return None


class _Link(NamedTuple):
    """How to find the network layer in a frame of one link type."""

    linktype: int
    off: int  # where the IP/ARP header starts
    is_ip: Matcher
    is_arp: Matcher
    is_rarp: Matcher
    is_ip6: Matcher


def _never(_frame: bytes) -> bool:
    return False


def _always(_frame: bytes) -> bool:
    return True


def _link_for(linktype: int) -> _Link:
    if linktype == LINKTYPE_ETHERNET:
        def ether_is(etype: int, minlen: int) -> Matcher:
            want = etype.to_bytes(2, "big")
            return lambda f: f[12:14] == want and len(f) >= minlen
        return _Link(linktype, 14, ether_is(ETHERTYPE_IP, 34), ether_is(ETHERTYPE_ARP, 42),
                     ether_is(ETHERTYPE_RARP, 42), ether_is(ETHERTYPE_IPV6, 54))
    if linktype == LINKTYPE_NULL:
        inet = (NULL_HEADER_INET, struct.pack(">I", AF_INET))
        inet6 = frozenset(struct.pack(o, v) for v in AF_INET6_VALUES for o in ("<I", ">I"))
        return _Link(linktype, 4, lambda f: f[:4] in inet and len(f) >= 24, _never, _never,
                     lambda f: f[:4] in inet6)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        return _Link(linktype, 0, lambda f: len(f) >= 20 and f[0] >> 4 == 4, _never, _never,
                     lambda f: len(f) >= 40 and f[0] >> 4 == 6)
    raise ValueError(f"capture filters are not supported on link type {linktype}")


class _Qual(NamedTuple):
    proto: str | None  # ether/ip/arp/rarp/tcp/udp/icmp/sctp/ip6
    dir: str  # "src", "dst", "src or dst", "src and dst"
    type: str | None  # host/net/port/portrange


class _Parser:
    """Recursive descent over pcap-filter(7); builds closures as it goes.

    As in libpcap, `and` and `or` have equal precedence and associate left to right,
    `not` binds tightest, and a bare operand after `and`/`or` reuses the qualifiers of
    the primitive before it (`host a or b`).
    """

    def __init__(self, expr: str, link: _Link, netmask: int | None) -> None:
        self.toks = _tokens(expr)
        self.pos = 0
        self.link = link
        self.netmask = netmask
        self.last: _Qual | None = None

    # -- token helpers -----------------------------------------------------------------
    def peek(self, ahead: int = 0) -> str | None:
        i = self.pos + ahead
        return self.toks[i] if i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            after = f" after '{self.toks[self.pos - 1]}'" if self.pos else ""
            raise ValueError(f"syntax error: expression ends{after}")
        self.pos += 1
        return tok

    def parse(self) -> Matcher:
        if not self.toks:
            return _always
        m = self.expr()
        if self.peek() is not None:
            raise ValueError(f"syntax error at '{self.peek()}'")
        return m

    def expr(self) -> Matcher:
        left = self.term()
        while (op := self.peek()) in ("and", "&&", "or", "||"):
            self.take()
            if self.peek() is None:
                raise ValueError(f"syntax error: nothing after '{op}'")
            right = self.term()
            left = _and(left, right) if op in ("and", "&&") else _or(left, right)
        return left

    def term(self) -> Matcher:
        tok = self.peek()
        if tok is None:
            self.take()  # raises, naming the word the expression ends after
        if tok in ("not", "!"):
            self.take()
            return _not(self.term())
        if tok == "(":
            self.take()
            inner = self.expr()
            if self.peek() != ")":
                raise ValueError(f"syntax error: missing ')' at '{self.peek() or 'end'}'")
            self.take()
            return inner
        if tok in (")", "and", "&&", "or", "||"):
            raise ValueError(f"syntax error at '{tok}'")
        return self.primitive()

    # -- primitives --------------------------------------------------------------------
    def primitive(self) -> Matcher:
        start = self.pos
        tok = self.take()
        if tok in ("broadcast", "multicast"):
            return self.link_cast(tok)
        if tok in ("less", "greater"):
            n = self.number(self.take(), 0, 1 << 32)
            return (lambda f: len(f) <= n) if tok == "less" else (lambda f: len(f) >= n)
        if tok == "proto":
            return self.ip_proto(self.take())
        proto: str | None = None
        if tok in PROTO_QUALIFIERS:
            proto = "ether" if tok == "link" else tok
            nxt = self.peek()
            if nxt in ("broadcast", "multicast"):
                self.take()
                return self.proto_cast(proto, nxt)
            if nxt == "proto":
                self.take()
                if proto == "ether":
                    return self.ether_proto(self.take())
                if proto == "ip":
                    return self.ip_proto(self.take())
                raise ValueError(f"'{tok} proto' is not supported")
            if nxt is None or nxt in OPERATORS or (
                    nxt not in DIR_QUALIFIERS and nxt not in TYPE_QUALIFIERS
                    and not self.looks_like_id(nxt)):
                return self.protocol(proto, tok)
            tok = self.take()
        direction = "src or dst"
        explicit = proto is not None
        if tok in DIR_QUALIFIERS:
            explicit = True
            direction = tok
            if self.peek() in ("or", "and") and self.peek(1) == ("dst" if tok == "src" else "src"):
                direction = f"src {self.take()} dst"
                self.take()
            tok = self.take()
        qtype: str | None = None
        if tok in TYPE_QUALIFIERS:
            explicit = True
            qtype = tok
            tok = self.take()
        if not explicit:
            if self.last is not None and start > 0 and self.toks[start - 1] in (
                    "and", "&&", "or", "||"):
                return self.operand(self.last, tok)
            if not self.looks_like_id(tok):
                raise ValueError(f"unknown word '{tok}'")
        qual = _Qual(proto, direction, qtype)
        self.last = qual
        return self.operand(qual, tok)

    @staticmethod
    def looks_like_id(tok: str) -> bool:
        return bool(tok[:1].isdigit() or _MAC_RE.match(tok))

    def number(self, tok: str, lo: int, hi: int) -> int:
        try:
            value = int(tok, 0)
        except ValueError:
            raise ValueError(f"bad number '{tok}'") from None
        if not lo <= value <= hi:
            raise ValueError(f"number out of range '{tok}'")
        return value

    def protocol(self, proto: str, tok: str) -> Matcher:
        link = self.link
        if proto == "ip":
            return link.is_ip
        if proto == "arp":
            return link.is_arp
        if proto == "rarp":
            return link.is_rarp
        if proto == "ip6":
            return link.is_ip6
        if proto == "ether":
            raise ValueError(f"'{tok}' needs a qualifier (host, src, dst, proto, broadcast)")
        number = _lookup(PROTO_NAMES, proto)
        assert number is not None
        return self.ip_proto(str(number))

    def ip_proto(self, tok: str) -> Matcher:
        name = tok.lstrip("\\")
        number = _lookup(PROTO_NAMES, name)
        if number is None:
            number = self.number(tok, 0, 255)
        is_ip, at = self.link.is_ip, self.link.off + 9
        return lambda f: is_ip(f) and f[at] == number

    def ether_proto(self, tok: str) -> Matcher:
        self.need_ether(f"ether proto {tok}")
        name = tok.lstrip("\\")
        number = _lookup(ETHER_PROTO_NAMES, name)
        if number is None:
            number = self.number(tok, 0, 0xFFFF)
        want = number.to_bytes(2, "big")
        return lambda f: f[12:14] == want

    def need_ether(self, what: str) -> None:
        if self.link.linktype != LINKTYPE_ETHERNET:
            raise ValueError(f"'{what}' needs an Ethernet link")

    def link_cast(self, word: str) -> Matcher:
        self.need_ether(word)
        if word == "broadcast":
            return lambda f: f[:6] == b"\xff\xff\xff\xff\xff\xff"
        return lambda f: len(f) >= 6 and bool(f[0] & 1)

    def proto_cast(self, proto: str, word: str) -> Matcher:
        if proto == "ether":
            return self.link_cast(word)
        if proto != "ip":
            raise ValueError(f"'{proto} {word}' is not supported")
        is_ip, at = self.link.is_ip, self.link.off + 16
        if word == "multicast":
            return lambda f: is_ip(f) and f[at] >> 4 == 0xE
        if self.netmask is None:
            raise ValueError("netmask not known, so 'ip broadcast' not supported")
        hostmask = ~self.netmask & 0xFFFFFFFF

        def ip_broadcast(f: bytes) -> bool:
            if not is_ip(f):
                return False
            host = int.from_bytes(f[at:at + 4], "big") & hostmask
            return host == hostmask or host == 0

        return ip_broadcast

    # -- operands ----------------------------------------------------------------------
    def operand(self, qual: _Qual, tok: str) -> Matcher:
        proto, direction, qtype = qual
        if qtype in ("port", "portrange"):
            if proto not in (None, *TRANSPORTS):
                raise ValueError(f"illegal qualifier of '{qtype}': '{proto}'")
            lo, hi = self.port_range(tok) if qtype == "portrange" else (self.port(tok),) * 2
            return self.ports(proto, direction, lo, hi)
        if proto == "ether" or (qtype in (None, "host") and proto is None and _MAC_RE.match(tok)):
            if qtype not in (None, "host"):
                raise ValueError(f"'ether {qtype}' is not supported: '{tok}'")
            self.need_ether(f"ether host {tok}")
            try:
                mac = mac_aton(tok.replace("-", ":").replace(".", ":"))
            except WireError:
                raise ValueError(f"bad Ethernet address '{tok}'") from None
            return _directed(direction, lambda f: f[6:12] == mac, lambda f: f[:6] == mac)
        if proto in ("tcp", "udp", "icmp", "sctp", "ip6"):
            raise ValueError(f"'{proto}' modifier applied to '{qtype or 'host'}' ('{tok}')")
        if qtype == "net" or (qtype is None and "/" in tok) or (
                qtype is None and _PARTIAL_NET_RE.match(tok) and tok.count(".") < 3):
            net, mask = self.network(tok)
        else:
            net, mask = self.host(tok), 0xFFFFFFFF
        return self.addr_match(proto, direction, net, mask)

    def host(self, tok: str) -> int:
        if tok == "localhost":
            return 0x7F000001
        try:
            return ipv4.aton(tok)
        except WireError:
            raise ValueError(f"unknown host '{tok}'") from None

    def network(self, tok: str) -> tuple[int, int]:
        text, slash, plen_text = tok.partition("/")
        if self.peek() == "mask" and not slash:
            self.take()
            mask_tok = self.take()
            mask = self.host(mask_tok)
            try:
                ipv4.mask_to_prefix(mask)
            except WireError:
                raise ValueError(f"bad netmask '{mask_tok}'") from None
            addr = self.host(text)
        else:
            parts = text.split(".")
            if not _PARTIAL_NET_RE.match(text) or any(int(p) > 255 for p in parts):
                raise ValueError(f"bad network address '{tok}'")
            addr = 0
            for p in parts:
                addr = (addr << 8) | int(p)
            addr <<= 8 * (4 - len(parts))
            if slash:
                if not plen_text.isdigit() or int(plen_text) > 32:
                    raise ValueError(f"bad mask length '{tok}'")
                plen = int(plen_text)
            else:
                plen = 8 * len(parts)
            mask = ipv4.prefix_to_mask(plen)
        if addr & ~mask & 0xFFFFFFFF:
            raise ValueError(f"non-network bits set in '{tok}'")
        return addr, mask

    def port(self, tok: str) -> int:
        named = _lookup(SERVICE_NAMES, tok)
        if named is not None:
            return named
        if not tok.isdigit() or int(tok) > 65535:
            raise ValueError(f"bad port '{tok}'")
        return int(tok)

    def port_range(self, tok: str) -> tuple[int, int]:
        lo_text, dash, hi_text = tok.partition("-")
        if not dash:
            raise ValueError(f"bad port range '{tok}'")
        lo, hi = self.port(lo_text), self.port(hi_text)
        return min(lo, hi), max(lo, hi)

    def ports(self, proto: str | None, direction: str, lo: int, hi: int) -> Matcher:
        """TCP/UDP/SCTP ports, only in unfragmented packets and first fragments."""
        is_ip, off = self.link.is_ip, self.link.off
        protos = frozenset((_lookup(PROTO_NAMES, proto),) if proto else (6, 17, 132))

        def transport(f: bytes) -> int:
            """Where the transport header starts, or -1 if it has no ports for us."""
            if not is_ip(f) or f[off + 9] not in protos:
                return -1
            if f[off + 6] & 0x1F or f[off + 7]:
                return -1  # not the first fragment: no transport header
            start = off + ((f[off] & 0x0F) << 2)
            return start if len(f) >= start + 4 else -1

        def src(f: bytes) -> bool:
            t = transport(f)
            return t >= 0 and lo <= (f[t] << 8 | f[t + 1]) <= hi

        def dst(f: bytes) -> bool:
            t = transport(f)
            return t >= 0 and lo <= (f[t + 2] << 8 | f[t + 3]) <= hi

        return _directed(direction, src, dst)

    def addr_match(self, proto: str | None, direction: str, net: int, mask: int) -> Matcher:
        """IPv4 addresses of IP packets, and the protocol addresses of (R)ARP ones."""
        link = self.link
        matchers: list[Matcher] = []
        if proto in (None, "ip"):
            matchers.append(_directed(direction, _field(link.is_ip, link.off + 12, net, mask),
                                      _field(link.is_ip, link.off + 16, net, mask)))
        if proto in (None, "arp") and link.linktype == LINKTYPE_ETHERNET:
            matchers.append(_directed(direction, _field(link.is_arp, 28, net, mask),
                                      _field(link.is_arp, 38, net, mask)))
        if proto in (None, "rarp") and link.linktype == LINKTYPE_ETHERNET:
            matchers.append(_directed(direction, _field(link.is_rarp, 28, net, mask),
                                      _field(link.is_rarp, 38, net, mask)))
        if not matchers:
            return _never
        result = matchers[0]
        for m in matchers[1:]:
            result = _or(result, m)
        return result


def _field(guard: Matcher, at: int, net: int, mask: int) -> Matcher:
    """A 32-bit address at byte `at` is in net/mask (when `guard` holds)."""
    if mask == 0xFFFFFFFF:
        want = net.to_bytes(4, "big")
        return lambda f: guard(f) and f[at:at + 4] == want
    return lambda f: guard(f) and int.from_bytes(f[at:at + 4], "big") & mask == net


def _directed(direction: str, src: Matcher, dst: Matcher) -> Matcher:
    if direction == "src":
        return src
    if direction == "dst":
        return dst
    if direction == "src and dst":
        return _and(src, dst)
    return _or(src, dst)


def _and(a: Matcher, b: Matcher) -> Matcher:
    return lambda f: a(f) and b(f)


def _or(a: Matcher, b: Matcher) -> Matcher:
    return lambda f: a(f) or b(f)


def _not(a: Matcher) -> Matcher:
    return lambda f: not a(f)


def compile_filter(expr: str | None, linktype: int = LINKTYPE_ETHERNET,
                   netmask: int | None = None) -> Matcher:
    """Compile a pcap-filter(7) expression into `match(frame) -> bool` for one link type.

    Understood: `host`, `net N/len` (also `net a.b.c`, `net N mask M`), `port`,
    `portrange lo-hi`, each with `src`/`dst`/`src or dst`/`src and dst` and a protocol
    qualifier (`ip`, `arp`, `rarp`, `ether`, `tcp`, `udp`, `sctp`); `ether host|src|dst
    MAC`; the protocols `ip`, `ip6`, `arp`, `rarp`, `icmp`, `tcp`, `udp`, `sctp`,
    `ip proto N`, `ether proto N`; `broadcast`, `multicast` (Ethernet), `ip broadcast`
    (needs `netmask`), `ip multicast`; `less N`, `greater N`; `and`/`&&`, `or`/`||`,
    `not`/`!` and parentheses. `host` without a protocol also matches ARP and RARP
    sender/target addresses, as in libpcap. Ports only match unfragmented packets and
    first fragments; the IP header length is honoured. Anything else raises
    ValueError naming the offending word. An empty expression matches everything.
    """
    return _Parser(expr or "", _link_for(linktype), netmask).parse()


# -- sessions ----------------------------------------------------------------------------
class Session:
    """One capture on one interface (one open /dev/bpf descriptor).

    Counters as bpf(4) keeps them: `received` counts every packet that reached this
    session (in the chosen direction), `captured` those that passed the filter and were
    stored, `dropped` those that passed but found the in-memory buffer full. The
    session closes itself after `count` captured packets, and when the interface is
    destroyed (then `error` is "The interface disappeared").
    """

    __slots__ = ("__weakref__", "buffer", "callback", "captured", "closed", "count",
                 "direction", "dispatcher", "dropped", "error", "filter", "ifp", "linktype",
                 "match", "packets", "path", "received", "snaplen", "writer")

    def __init__(self, ifp: Ifnet, dispatcher: BpfIf, match: Matcher | None, filter_text: str,
                 snaplen: int, writer: PcapWriter | None, keep: bool,
                 callback: PacketCallback | None, count: int | None, direction: str,
                 buffer: int | None) -> None:
        self.ifp = ifp
        self.dispatcher = dispatcher
        self.linktype = dispatcher.linktype
        self.match = match
        self.filter = filter_text
        self.snaplen = snaplen
        self.writer = writer
        self.path = writer.path if writer is not None else None
        self.packets: list[tuple[int, bytes]] | None = [] if keep else None
        self.callback = callback
        self.count = count
        self.direction = direction
        self.buffer = buffer
        self.received = self.captured = self.dropped = 0
        self.closed = False
        self.error: str | None = None

    def _deliver(self, now: int, frame: bytes, outbound: bool) -> None:
        direction = self.direction
        if direction != "inout" and outbound != (direction == "out"):
            return
        self.received += 1
        match = self.match
        if match is not None and not match(frame):
            return
        packets = self.packets
        if packets is not None and self.buffer is not None and len(packets) >= self.buffer:
            self.dropped += 1
            return
        wirelen = len(frame)
        data = frame if wirelen <= self.snaplen else frame[:self.snaplen]
        self.captured += 1
        if self.writer is not None:
            try:
                self.writer.write(now, data, wirelen)
            except OSError as exc:
                self.captured -= 1
                self.dropped += 1
                self.error = exc.strerror or str(exc)
        if packets is not None:
            packets.append((now, data))
        if self.callback is not None:
            self.callback(now, data, wirelen)
        if self.count is not None and self.captured >= self.count:
            self.close()

    def close(self) -> None:
        """Stop capturing; the file (if any) is complete once this returns."""
        if self.closed:
            return
        with self.ifp.vnet.kernel.sched.cond:
            self.closed = True
            self.dispatcher.remove(self)
            if self.writer is not None:
                self.writer.close()

    def _detached(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.error = reason
            if self.writer is not None:
                self.writer.close()

    def stats(self) -> tuple[int, int, int]:
        """(captured, received by filter, dropped), tcpdump's closing numbers."""
        return self.captured, self.received, self.dropped

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"<Session {self.ifp.name} {state} filter={self.filter!r} "
                f"captured={self.captured}>")


class BpfIf:
    """The dispatcher in `ifp.bpf` (FreeBSD's bpf_if): the open sessions of one interface."""

    __slots__ = ("__weakref__", "clock", "ifp", "linktype", "sessions")

    def __init__(self, ifp: Ifnet) -> None:
        self.ifp = ifp
        self.linktype = linktype_of(ifp)
        self.clock = ifp.vnet.kernel.sched.now_ns
        self.sessions: tuple[Session, ...] = ()

    def tap(self, frame: bytes, outbound: bool) -> None:
        """Called by the interface for every frame it sends or receives."""
        if self.linktype == LINKTYPE_NULL:
            frame = NULL_HEADER_INET + frame
        now = self.clock()
        for session in self.sessions:  # a tuple: a session may close itself meanwhile
            session._deliver(now, frame, outbound)

    def remove(self, session: Session) -> None:
        self.sessions = tuple(s for s in self.sessions if s is not session)
        if not self.sessions and self.ifp.bpf is self:
            self.ifp.bpf = None

    def close(self) -> None:
        """The interface is being destroyed: every session on it ends."""
        sessions, self.sessions = self.sessions, ()
        for session in sessions:
            session._detached("The interface disappeared")
        if self.ifp.bpf is self:
            self.ifp.bpf = None


def _alive(ifp: Ifnet) -> bool:
    return ifp.flags != 0 and ifp.vnet.ifaces.get(ifp.name) is ifp


def open_capture(ifp: Ifnet, path: str | IO[bytes] | None = None, filter: str | None = None,
                 snaplen: int = DEFAULT_SNAPLEN, *, count: int | None = None,
                 keep: bool | None = None, callback: PacketCallback | None = None,
                 direction: str = "inout", precision: str = "nano",
                 buffer: int | None = None, netmask: int | None = None,
                 flush_each: bool = False) -> Session:
    """Start capturing on `ifp`; returns the Session (also a context manager).

    `path` (a file name or a binary file object) receives a pcap file; `keep` (default:
    when there is neither `path` nor `callback`) collects `(time_ns, frame)` pairs in
    `session.packets`; `callback(time_ns, data, wirelen)` is called for each captured
    packet. `filter` is a pcap-filter(7) expression (ValueError if bad), `snaplen`
    truncates what is stored (0 means the default 262144), `count` closes the session
    after that many packets, `direction` is "inout", "in" or "out" (tcpdump -Q),
    `buffer` bounds `packets` (the rest is counted as dropped). `netmask` serves
    `ip broadcast`; by default it is that of the interface's first address.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if snaplen == 0:
        snaplen = DEFAULT_SNAPLEN
    if not 0 < snaplen <= MAX_SNAPLEN:
        raise ValueError(f"invalid snaplen {snaplen}")
    if count is not None and count <= 0:
        raise ValueError(f"invalid packet count {count}")
    if buffer is not None and buffer < 0:
        raise ValueError(f"invalid buffer size {buffer}")
    kernel = ifp.vnet.kernel
    with kernel.sched.cond:
        if not _alive(ifp):
            raise OSError(errno.ENXIO, f"{ifp.name}: Device not configured")
        linktype = linktype_of(ifp)
        if netmask is None and ifp.addrs:
            netmask = ifp.addrs[0].mask
        match = compile_filter(filter, linktype, netmask) if (filter or "").strip() else None
        writer = None
        if path is not None:
            writer = PcapWriter(path, linktype, snaplen, precision, flush_each)
        dispatcher = ifp.bpf
        if dispatcher is None:
            dispatcher = BpfIf(ifp)
        if keep is None:
            keep = path is None and callback is None
        session = Session(ifp, dispatcher, match, filter or "", snaplen, writer, keep, callback,
                          count, direction, buffer)
        dispatcher.sessions = (*dispatcher.sessions, session)
        ifp.bpf = dispatcher
        return session


def sessions_of(ifp: Ifnet) -> tuple[Session, ...]:
    """The open capture sessions on `ifp` (empty when nobody captures)."""
    bpf: Any = ifp.bpf
    return bpf.sessions if bpf is not None else ()
