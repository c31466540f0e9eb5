"""Capture filters: pcap-filter(7) expressions compiled into `match(frame) -> bool`.

`compile_filter(expr, linktype)` parses once (recursive descent, libpcap's precedence)
into a tree of closures over the raw frame bytes, so a filter costs a few slice
compares per packet. It knows where the network header sits for each link type
(Ethernet, BSD loopback, raw IP), so anything that sees frames can use it: capture
sessions (`net.bpf`), and a packet filter matching on frames. FreeBSD's bpf_filter.c
interprets compiled BPF programs; here the program is the closure tree.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import NamedTuple

from vimage.wire import WireError, ipv4, ipv6
from vimage.wire.ethernet import (
    ETHERTYPE_ARP,
    ETHERTYPE_IP,
    ETHERTYPE_IPV6,
    ETHERTYPE_RARP,
    mac_aton,
)
from vimage.wire.pcap import (
    AF_INET,
    AF_INET6_VALUES,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    NULL_HEADER_INET,
)

Matcher = Callable[[bytes], bool]


PROTO_NAMES: tuple[tuple[str, int], ...] = (
    ("icmp", 1), ("igmp", 2), ("tcp", 6), ("udp", 17), ("sctp", 132), ("icmp6", 58),
    ("esp", 50), ("ah", 51), ("gre", 47),  # esp and ah are libpcap keywords; gre a name
)
_V4_ONLY = frozenset({"icmp", "igmp"})  # libpcap: `tcp` is IPv4 or IPv6, `icmp` IPv4 only
_V6_ONLY = frozenset({"icmp6"})
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
                              "ip6", "icmp6", "esp", "ah"})
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
                    return self.ip_proto(self.take(), v6=False)
                if proto == "ip6":
                    return self.ip_proto(self.take(), v4=False)
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
        return bool(tok[:1].isdigit() or _MAC_RE.match(tok) or ":" in tok)

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
        return self.ip_proto(str(number), v4=proto not in _V6_ONLY, v6=proto not in _V4_ONLY)

    def ip_proto(self, tok: str, v4: bool = True, v6: bool = False) -> Matcher:
        """`ip proto N` (IPv4); `ip6 proto N` looks at the fixed header's next header
        and through a hop-by-hop header (MLD is hop-by-hop then ICMPv6)."""
        name = tok.lstrip("\\")
        number = _lookup(PROTO_NAMES, name)
        if number is None:
            number = self.number(tok, 0, 255)
        is_ip, at = self.link.is_ip, self.link.off + 9
        is_ip6, nxt = self.link.is_ip6, self.link.off + 6

        def v4_match(f: bytes) -> bool:
            return is_ip(f) and f[at] == number

        def v6_match(f: bytes) -> bool:
            if not is_ip6(f):
                return False
            if f[nxt] == 0 and number != 0:
                return len(f) > nxt + 34 and f[nxt + 34] == number
            return f[nxt] == number

        if v4 and v6:
            return _or(v4_match, v6_match)
        return v4_match if v4 else v6_match

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
        if proto == "ip6" and word == "multicast":
            is_ip6, at6 = self.link.is_ip6, self.link.off + 24
            return lambda f: is_ip6(f) and f[at6] == 0xFF
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
        if ":" in tok and proto in (None, "ip6"):
            return self.v6_operand(direction, qtype, tok)
        if proto in ("tcp", "udp", "icmp", "sctp", "ip6", "icmp6"):
            raise ValueError(f"'{proto}' modifier applied to '{qtype or 'host'}' ('{tok}')")
        if qtype == "net" or (qtype is None and "/" in tok) or (
                qtype is None and _PARTIAL_NET_RE.match(tok) and tok.count(".") < 3):
            net, mask = self.network(tok)
        else:
            net, mask = self.host(tok), 0xFFFFFFFF
        return self.addr_match(proto, direction, net, mask)

    def v6_operand(self, direction: str, qtype: str | None, tok: str) -> Matcher:
        """`host ADDR6`, `net PREFIX6/len`: the IPv6 header's source/destination."""
        text, slash, plen_text = tok.partition("/")
        try:
            addr = ipv6.aton(text.partition("%")[0])
        except WireError:
            raise ValueError(f"bad IPv6 address '{tok}'") from None
        plen = 128
        if slash:
            if not plen_text.isdigit() or int(plen_text) > 128:
                raise ValueError(f"bad mask length '{tok}'")
            plen = int(plen_text)
        mask = ipv6.MASKS6[plen]
        if addr & ~mask:
            raise ValueError(f"non-network bits set in '{tok}'")
        is_ip6, off = self.link.is_ip6, self.link.off
        want = addr.to_bytes(16, "big")

        def field(at: int) -> Matcher:
            if plen == 128:
                return lambda f: is_ip6(f) and f[at:at + 16] == want
            return lambda f: is_ip6(f) and int.from_bytes(f[at:at + 16], "big") & mask == addr

        return _directed(direction, field(off + 8), field(off + 24))

    def host(self, tok: str) -> int:
        if tok == "localhost":
            return ipv4.INADDR_LOOPBACK
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
        is_ip, is_ip6, off = self.link.is_ip, self.link.is_ip6, self.link.off
        protos = frozenset((_lookup(PROTO_NAMES, proto),) if proto else (6, 17, 132))

        def transport(f: bytes) -> int:
            """Where the transport header starts, or -1 if it has no ports for us."""
            if not is_ip(f):  # IPv6: right after the fixed header, as libpcap looks
                if is_ip6(f) and f[off + 6] in protos and len(f) >= off + 44:
                    return off + 40
                return -1
            if f[off + 9] not in protos:
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
