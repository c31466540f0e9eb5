"""tcpdump's IPv6 and ICMPv6 decoding (tcpdump print-ip6.c, print-icmp6.c), used by
`vimage.cli.tcpdump`: `IP6 a > b: ICMP6, neighbor solicitation, who has fe80::1,
length 32`, UDP and TCP over IPv6 with ports, extension headers (HBH, DSTOPT, frag).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.wire import WireError
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6

if TYPE_CHECKING:
    from vimage.cli.tcpdump import Printer

_NXT_NAMES = MappingProxyType({0: "Options", 6: "TCP", 17: "UDP", 43: "Routing", 44: "Fragment",
              58: "ICMPv6", 59: "NONE", 60: "DSTOPT"})
_UNREACH = MappingProxyType({  # print-icmp6.c icmp6_print's words, by code
    wicmp6.UNREACH_NOROUTE: "{} unreachable route",
    wicmp6.UNREACH_ADMIN: "{} unreachable prohibited",
    wicmp6.UNREACH_BEYONDSCOPE: "{} beyond scope",
    wicmp6.UNREACH_ADDR: "{} unreachable address",
})
_SIMPLE = MappingProxyType({
    wicmp6.ROUTER_SOLICIT: "router solicitation",
    wicmp6.MLD_QUERY: "multicast listener query",
    wicmp6.MLD_REPORT: "multicast listener report",
    wicmp6.MLD_DONE: "multicast listener done",
})


def ip6(pr: Printer, pkt: bytes) -> str:
    """One IPv6 packet as tcpdump prints it."""
    prefix = "" if pr.eflag else "IP6 "
    if len(pkt) < wip6.HEADER_LEN or pkt[0] >> 4 != 6:
        return prefix + "[|ip6]"
    plen = int.from_bytes(pkt[4:6], "big")
    src = wip6.ntoa(int.from_bytes(pkt[8:24], "big"))
    dst = wip6.ntoa(int.from_bytes(pkt[24:40], "big"))
    nxt = pkt[6]
    if pr.vflag:
        word = int.from_bytes(pkt[0:4], "big")
        tclass, flow = (word >> 20) & 0xFF, word & 0xFFFFF
        head = "("
        if tclass:
            head += f"class 0x{tclass:02x}, "
        if flow:
            head += f"flowlabel 0x{flow:05x}, "
        head += (f"hlim {pkt[7]}, next-header {_NXT_NAMES.get(nxt, 'unknown')} ({nxt}) "
                 f"payload length: {plen}) ")
        prefix += head
    off = wip6.HEADER_LEN
    end = min(len(pkt), off + plen)
    ext = ""
    for _ in range(8):
        if nxt in (wip6.NXT_HOPOPTS, wip6.NXT_DSTOPTS, wip6.NXT_ROUTING):
            if off + 2 > end:
                return f"{prefix}{src} > {dst}: {ext}[|ip6]"
            ext += {0: "HBH ", 60: "DSTOPT ", 43: "srcrt "}[nxt]
            nxt, off = pkt[off], off + ((pkt[off + 1] + 1) << 3)
            continue
        if nxt == wip6.NXT_FRAGMENT:
            if off + 8 > end:
                return f"{prefix}{src} > {dst}: {ext}[|frag]"
            offlg = int.from_bytes(pkt[off + 2:off + 4], "big")
            fragoff = offlg & 0xFFF8
            flen = end - off - 8
            ext += f"frag ({fragoff}|{flen}) "
            if fragoff:
                return f"{prefix}{src} > {dst}: {ext.rstrip()}"
            nxt, off = pkt[off], off + 8
            continue
        break
    ulen = max(0, end - off)
    body = pkt[off:end]
    if nxt == wip6.NXT_UDP:
        return prefix + ext + pr.udp(src, dst, body, ulen, "frag" in ext)
    if nxt == wip6.NXT_TCP:
        return prefix + ext + pr.tcp(int.from_bytes(pkt[8:24], "big"),
                                     int.from_bytes(pkt[24:40], "big"), body, ulen,
                                     ntoa=wip6.ntoa)
    if nxt == wip6.NXT_ICMPV6:
        return f"{prefix}{src} > {dst}: {ext}{icmp6(body, ulen)}"
    if nxt == wip6.NXT_NONE:
        return f"{prefix}{src} > {dst}: {ext}no next header"
    return f"{prefix}{src} > {dst}: {ext}ip-proto-{nxt} {ulen}"


def icmp6(msg: bytes, length: int) -> str:
    """`ICMP6, <what>, length N` (print-icmp6.c)."""
    try:
        m = wicmp6.parse(msg, 0, 0, verify_checksum=False)
    except WireError:
        return "ICMP6, [|icmp6]"
    return f"ICMP6, {icmp6_text(m)}, length {length}"


def _addr(buf: memoryview | bytes, at: int) -> str:
    return wip6.ntoa(int.from_bytes(buf[at:at + 16], "big")) if len(buf) >= at + 16 else "[|]"


def _quoted_dst(m: wicmp6.Icmp6Repr) -> str:
    return _addr(m.payload, 24)


def icmp6_text(m: wicmp6.Icmp6Repr) -> str:
    t, code, body = m.type, m.code, m.payload
    if t == wicmp6.DST_UNREACH:
        if code == wicmp6.UNREACH_NOPORT:
            q = bytes(body)
            if len(q) >= 44 and q[6] in (6, 17):
                proto = "udp" if q[6] == 17 else "tcp"
                port = int.from_bytes(q[42:44], "big")
                return f"{_quoted_dst(m)} {proto} port {port} unreachable"
            return f"{_quoted_dst(m)} unreachable port"
        fmt = _UNREACH.get(code)
        return fmt.format(_quoted_dst(m)) if fmt else f"destination unreachable, code {code}"
    if t == wicmp6.PACKET_TOO_BIG:
        return f"packet too big, mtu {m.rest}"
    if t == wicmp6.TIME_EXCEEDED:
        if code == wicmp6.TIME_EXCEED_TRANSIT:
            return f"time exceeded in-transit for {_quoted_dst(m)}"
        if code == wicmp6.TIME_EXCEED_REASSEMBLY:
            return "ip6 reassembly time exceeded"
        return f"time exceeded, code {code}"
    if t == wicmp6.PARAM_PROB:
        what = {0: "erroneous", 1: "next header", 2: "option"}.get(code)
        return (f"parameter problem, {what} - octet {m.rest}" if what
                else f"parameter problem, code {code}")
    if t in (wicmp6.ECHO_REQUEST, wicmp6.ECHO_REPLY):
        word = "request" if t == wicmp6.ECHO_REQUEST else "reply"
        return f"echo {word}, id {m.ident}, seq {m.seq}"
    if t == wicmp6.NEIGHBOR_SOLICIT:
        return f"neighbor solicitation, who has {_addr(body, 0)}"
    if t == wicmp6.NEIGHBOR_ADVERT:
        return f"neighbor advertisement, tgt is {_addr(body, 0)}"
    if t == wicmp6.ROUTER_ADVERT:
        return "router advertisement"
    if t == wicmp6.REDIRECT:
        return f"redirect, {_addr(body, 16)} to {_addr(body, 0)}"
    if t == wicmp6.MLDV2_REPORT:
        n = m.rest & 0xFFFF
        return f"multicast listener report v2, {n} group record(s)"
    text = _SIMPLE.get(t)
    return text if text is not None else f"icmp6: type-#{t}"
