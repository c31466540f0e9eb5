"""tcpdump(1): capture packets on an interface of this vnet, or read a pcap file.

    tcpdump [-enpqSUvx] [-c count] [-i interface] [-Q in|out|inout] [-r file]
            [-s snaplen] [-t[tttt]] [-w file] [--duration seconds]
            [--time-stamp-precision micro|nano] [expression]

There is no ^C inside `vnet.cmd`, so a live capture needs `-c count` (stop after
that many packets) or `--duration seconds` (stop after that much kernel time), or
both. While it captures, tcpdump drives the kernel loop: in virtual time the clock
jumps from event to event, so a capture of `--duration 10` returns at once with
exactly ten seconds of traffic. Timestamps are the kernel clock, printed as the time
of day since the kernel started (`00:00:01.500000` is 1.5 s after time 0).

Output follows tcpdump 4.99 for Ethernet, loopback (DLT_NULL), IPv4, ARP, ICMP, UDP
and TCP, with these differences: names are never looked up (always as with -nn),
application protocols are not decoded (port 53 is `UDP, length N`), and the lines
tcpdump writes to stderr (`listening on ...`, the closing counts) are part of the
output. Files written with -w are classic pcap with nanosecond timestamps unless
`--time-stamp-precision micro` is given; printed timestamps have microseconds unless
`--time-stamp-precision nano` is given. `-r -` reads standard input (the `stdin` of
`vnet.cmd`; through vimage, the client's).

Reading a file needs no kernel, so tcpdump takes the kernel lock itself, for a live
capture only: a -r file that is a silent pipe holds up nobody but its reader.
"""

from __future__ import annotations

import getopt
import io
import struct
import time
from typing import TYPE_CHECKING

from vimage.cli import ToolError, UsageError, _tcpdump6, getopt_message
from vimage.cli._util import ifaces_by_index
from vimage.net import bpf, bpf_filter
from vimage.sched import NS_PER_S
from vimage.wire import WireError, checksum, ipv4, pcap
from vimage.wire import arp as warp
from vimage.wire import icmp as wicmp
from vimage.wire import udp as wudp
from vimage.wire.ethernet import (
    ETHERTYPE_ARP,
    ETHERTYPE_IP,
    ETHERTYPE_IPV6,
    ETHERTYPE_RARP,
    ETHERTYPE_VLAN,
    mac_ntoa,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from vimage.cli import Context
    from vimage.net.ifnet import Ifnet

# tcpdump(1)'s usage, the options vimage implements
USAGE = """\
usage: tcpdump [-enpqStUvx] [-c count] [-i interface] [-Q in|out|inout]
               [-r file] [-s snaplen] [-w file] [--duration seconds]
               [--time-stamp-precision micro|nano] [expression]
"""

ETHERTYPE_NAMES: tuple[tuple[int, str], ...] = (
    (ETHERTYPE_IP, "IPv4"), (ETHERTYPE_ARP, "ARP"), (ETHERTYPE_RARP, "Reverse ARP"),
    (ETHERTYPE_IPV6, "IPv6"), (ETHERTYPE_VLAN, "802.1Q"), (0x88CC, "LLDP"),
)
AF_NAMES: tuple[tuple[int, str], ...] = (
    (2, "IPv4"), (24, "IPv6"), (28, "IPv6"), (30, "IPv6"),
)
IPPROTO_NAMES: tuple[tuple[int, str], ...] = (
    (1, "ICMP"), (2, "IGMP"), (4, "IPIP"), (6, "TCP"), (17, "UDP"), (41, "IPv6"),
    (47, "GRE"), (50, "ESP"), (51, "AH"), (89, "OSPF"), (103, "PIM"), (112, "VRRP"),
    (132, "SCTP"),
)
IPOPT_NAMES: tuple[tuple[int, str], ...] = (
    (0, "EOL"), (1, "NOP"), (68, "timestamp"), (130, "security"), (7, "RR"), (137, "SSRR"),
    (131, "LSRR"), (148, "RA"), (82, "traceroute"),
)
ICMP_SIMPLE: tuple[tuple[int, str], ...] = (
    (wicmp.SOURCE_QUENCH, "source quench"), (9, "router advertisement"),
    (10, "router solicitation"), (15, "information request"), (16, "information reply"),
    (17, "address mask request"),
)
# code -> (format, whose address): "net"/"host" print the quoted destination
UNREACH_FORMATS: tuple[tuple[int, str], ...] = (
    (wicmp.UNREACH_NET, "net {} unreachable"),
    (wicmp.UNREACH_HOST, "host {} unreachable"),
    (wicmp.UNREACH_SRCFAIL, "{} unreachable - source route failed"),
    (wicmp.UNREACH_NET_UNKNOWN, "net {} unreachable - unknown"),
    (wicmp.UNREACH_HOST_UNKNOWN, "host {} unreachable - unknown"),
    (8, "{} unreachable - source host isolated"),
    (9, "net {} unreachable - admin prohibited"),
    (10, "host {} unreachable - admin prohibited"),
    (11, "net {} unreachable - tos prohibited"),
    (12, "host {} unreachable - tos prohibited"),
    (wicmp.UNREACH_FILTER_PROHIB, "host {} unreachable - admin prohibited filter"),
    (14, "host {} unreachable - host precedence violation"),
    (15, "host {} unreachable - precedence cutoff"),
)
TCP_FLAGS: tuple[tuple[int, str], ...] = (
    (0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"),
    (0x40, "E"), (0x80, "W"), (0x100, "e"),
)
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x10, 0x20
TCP_HEADER = struct.Struct("!HHIIBBHHH")
TCPOPT_NAMES: tuple[tuple[int, str], ...] = (
    (0, "eol"), (1, "nop"), (2, "mss"), (3, "wscale"), (4, "sackOK"), (5, "sack"),
    (8, "TS"), (19, "md5"), (28, "uto"), (29, "tcp-ao"), (30, "mptcp"), (34, "tfo"),
)
MAX_U32 = 0xFFFFFFFF
LOCKS_ITSELF = True  # main() takes the kernel lock for a live capture only (see above)


def _name(table: tuple[tuple[int, str], ...], key: int, default: str) -> str:
    for k, v in table:
        if k == key:
            return v
    return default


def hexdump(data: bytes) -> list[str]:
    """tcpdump -x: 16 bytes a line, in 16-bit groups."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        groups = " ".join(chunk[i:i + 2].hex() for i in range(0, len(chunk), 2))
        lines.append(f"\t0x{off:04x}:  {groups}")
    return lines


class Printer:
    """Turns captured packets into tcpdump's lines; keeps TCP's relative sequence state."""

    def __init__(self, linktype: int, *, eflag: bool = False, qflag: bool = False,
                 vflag: int = 0, xflag: int = 0, sflag: bool = False, tmode: int = 0,
                 nano: bool = False) -> None:
        self.linktype = linktype
        self.eflag = eflag
        self.qflag = qflag
        self.vflag = vflag
        self.xflag = xflag
        self.sflag = sflag  # -S: absolute TCP sequence numbers
        self.tmode = tmode
        self.nano = nano
        self.prev_ns: int | None = None
        self.first_ns: int | None = None
        self.tcp_bases: dict[tuple[int, int, int, int], tuple[int, int]] = {}

    # -- timestamps ---------------------------------------------------------------------
    def frac(self, ns: int) -> str:
        return f"{ns % NS_PER_S:09d}" if self.nano else f"{ns % NS_PER_S // 1000:06d}"

    def clock(self, ns: int) -> str:
        sec = ns // NS_PER_S
        return f"{sec // 3600 % 24:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{self.frac(ns)}"

    def timestamp(self, ns: int) -> str:
        """The line's time field (with its trailing space), per -t count."""
        mode = self.tmode
        if self.first_ns is None:
            self.first_ns = ns
        prev = self.prev_ns if self.prev_ns is not None else ns
        self.prev_ns = ns
        if mode == 1:
            return ""
        if mode == 2:
            return f"{ns // NS_PER_S}.{self.frac(ns)} "
        if mode == 3:
            return self.clock(ns - prev) + " "
        if mode == 4:
            return time.strftime("%Y-%m-%d ", time.gmtime(ns // NS_PER_S)) + self.clock(ns) + " "
        if mode == 5:
            return self.clock(ns - self.first_ns) + " "
        return self.clock(ns) + " "

    # -- link layer ----------------------------------------------------------------------
    def packet(self, rec: pcap.Record) -> list[str]:
        """The lines for one packet."""
        text, net_off, undecoded = self.link(rec.data, rec.wirelen)
        lines = (self.timestamp(rec.time_ns) + text).split("\n")
        if self.xflag or undecoded:
            start = 0 if self.xflag > 1 else net_off
            lines.extend(hexdump(rec.data[start:]))
        return lines

    def link(self, data: bytes, wirelen: int) -> tuple[str, int, bool]:
        """(text, offset of the network layer, True if it could not be decoded)."""
        lt = self.linktype
        if lt == pcap.LINKTYPE_ETHERNET:
            if len(data) < 14:
                return "[|ether]", 0, False
            etype = int.from_bytes(data[12:14], "big")
            known = etype in (ETHERTYPE_IP, ETHERTYPE_ARP, ETHERTYPE_RARP, ETHERTYPE_IPV6)
            head = ""
            if self.eflag or not known:
                head = f"{mac_ntoa(data[6:12])} > {mac_ntoa(data[0:6])}, "
                if self.qflag and known:
                    head += f"length {wirelen}: "
                else:
                    ename = _name(ETHERTYPE_NAMES, etype, "Unknown")
                    head += f"ethertype {ename} (0x{etype:04x}), length {wirelen}: "
            if not known:
                return head.rstrip(), 14, True
            return head + self.network(etype, data[14:], wirelen - 14), 14, False
        if lt == pcap.LINKTYPE_NULL:
            if len(data) < 4:
                return "[|null]", 0, False
            af = int.from_bytes(data[:4], "little")
            if af > 0xFFFF:
                af = int.from_bytes(data[:4], "big")
            head = ""
            if self.eflag:
                head = f"AF {_name(AF_NAMES, af, 'Unknown')} ({af}), length {wirelen}: "
            if af in pcap.AF_INET6_VALUES:
                return head + self.network(ETHERTYPE_IPV6, data[4:], wirelen - 4), 4, False
            if af != pcap.AF_INET:
                return (head or f"AF {af}, length {wirelen}: ").rstrip(), 4, True
            return head + self.network(ETHERTYPE_IP, data[4:], wirelen - 4), 4, False
        if lt in (pcap.LINKTYPE_RAW, pcap.LINKTYPE_IPV4):
            if data and data[0] >> 4 == 4:
                return self.network(ETHERTYPE_IP, data, wirelen), 0, False
            if data and data[0] >> 4 == 6 and lt == pcap.LINKTYPE_RAW:
                return self.network(ETHERTYPE_IPV6, data, wirelen), 0, False
            return f"raw packet, length {wirelen}", 0, True
        return f"link-type {lt}, length {wirelen}", 0, True

    def network(self, etype: int, payload: bytes, length: int) -> str:
        if etype == ETHERTYPE_IP:
            return self.ip(payload)
        if etype == ETHERTYPE_IPV6:
            return _tcpdump6.ip6(self, payload)
        return self.arp(payload, length)

    # -- ARP -----------------------------------------------------------------------------
    def arp(self, payload: bytes, length: int) -> str:
        prefix = "" if self.eflag else "ARP, "
        if len(payload) < 8:
            return prefix + "[|arp]"
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", payload)
        if ptype != warp.PTYPE_IP or plen != 4 or hlen != 6 or self.vflag:
            hw = "Ethernet" if htype == warp.HTYPE_ETHER else f"Unknown Hardware ({htype})"
            pr = "IPv4" if ptype == warp.PTYPE_IP else f"Unknown Protocol (0x{ptype:04x})"
            prefix += f"{hw} (len {hlen}), {pr} (len {plen})"
            if not self.vflag or ptype != warp.PTYPE_IP or plen != 4 or hlen != 6:
                return f"{prefix}, length {length}"
            prefix += ", "
        if len(payload) < warp.LENGTH:
            return prefix + "[|arp]"
        _h, _p, _hl, _pl, _op, sha, spa, tha, tpa = warp.PACKET.unpack_from(payload)
        if op == warp.OP_REQUEST:
            known = f" ({mac_ntoa(tha)})" if any(tha) else ""
            text = f"Request who-has {ipv4.ntoa(tpa)}{known} tell {ipv4.ntoa(spa)}"
        elif op == warp.OP_REPLY:
            text = f"Reply {ipv4.ntoa(spa)} is-at {mac_ntoa(sha)}"
        elif op == 3:
            text = f"Reverse Request who-is {mac_ntoa(tha)} tell {mac_ntoa(sha)}"
        elif op == 4:
            text = f"Reverse Reply {mac_ntoa(tha)} at {ipv4.ntoa(tpa)}"
        else:
            text = f"Unknown ({op})"
        return f"{prefix}{text}, length {length}"

    # -- IPv4 ----------------------------------------------------------------------------
    def ip(self, pkt: bytes) -> str:
        prefix = "" if self.eflag else "IP "
        try:
            ip = ipv4.parse_quoted(pkt)
        except WireError:
            return prefix + "[|ip]"
        src, dst = ipv4.ntoa(ip.src), ipv4.ntoa(ip.dst)
        plen = ip.total_length - ip.header_len  # payload length on the wire
        payload = bytes(ip.payload)
        if self.vflag:
            prefix += self.ip_verbose(ip, pkt) + "\n    "
        if ip.flags_frag & ipv4.OFFMASK:
            return f"{prefix}{src} > {dst}: ip-proto-{ip.proto}"
        fragmented = ip.is_fragment
        if ip.proto == ipv4.PROTO_UDP:
            return prefix + self.udp(src, dst, payload, plen, fragmented)
        if ip.proto == ipv4.PROTO_TCP:
            return prefix + self.tcp(ip.src, ip.dst, payload, plen)
        if ip.proto == ipv4.PROTO_ICMP:
            return f"{prefix}{src} > {dst}: {self.icmp(payload, plen, fragmented)}"
        if ip.proto == 50:  # ESP, as tcpdump's esp_print (print-esp.c) without keys
            if len(payload) < 8:
                return f"{prefix}{src} > {dst}: [|ESP]"
            spi, seq = int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big")
            return f"{prefix}{src} > {dst}: ESP(spi=0x{spi:08x},seq=0x{seq:x}), length {plen}"
        return f"{prefix}{src} > {dst}:  ip-proto-{ip.proto} {plen}"

    def ip_verbose(self, ip: ipv4.Ipv4Header, pkt: bytes) -> str:
        """-v: tcpdump's parenthesised IP header summary."""
        ecn = ("", ",ECT(1)", ",ECT(0)", ",CE")[ip.tos & 3]
        ttl = f", ttl {ip.ttl}" if ip.ttl else ""
        ff = ip.flags_frag
        flags = ", ".join(name for bit, name in ((ipv4.FLAG_MF, "+"), (ipv4.FLAG_DF, "DF"),
                                                 (0x8000, "rsvd")) if ff & bit) or "none"
        text = (f"(tos 0x{ip.tos:x}{ecn}{ttl}, id {ip.ident}, offset {(ff & ipv4.OFFMASK) * 8}, "
                f"flags [{flags}], proto {_name(IPPROTO_NAMES, ip.proto, 'unknown')} "
                f"({ip.proto}), length {ip.total_length}")
        if ip.header_len > ipv4.MIN_HEADER_LEN:
            text += f", options ({self.ip_options(bytes(ip.options))})"
        header = bytearray(pkt[:ip.header_len])
        if len(header) == ip.header_len and not checksum.verify(header):
            header[10:12] = b"\0\0"
            text += f", bad cksum {ip.checksum:x} (->{checksum.checksum(header):x})!"
        return text + ")"

    @staticmethod
    def ip_options(opts: bytes) -> str:
        out = []
        i = 0
        while i < len(opts):
            code = opts[i]
            name = _name(IPOPT_NAMES, code, f"unknown {code}")
            if code in (0, 1):
                out.append(name)
                if code == 0:
                    break
                i += 1
                continue
            olen = opts[i + 1] if i + 1 < len(opts) else 0
            if olen < 2 or i + olen > len(opts):
                out.append(f"{name} [bad length {olen}]")
                break
            if code in (7, 131, 137) and olen >= 3:
                addrs = [ipv4.ntoa(int.from_bytes(opts[j:j + 4], "big"))
                         for j in range(i + 3, i + olen - 3, 4)]
                name += "".join(f" {a}" for a in addrs)
            elif code == 148 and olen >= 4 and opts[i + 2:i + 4] != b"\0\0":
                name += f" value {int.from_bytes(opts[i + 2:i + 4], 'big')}"
            out.append(name)
            i += olen
        return ",".join(out)

    # -- UDP -----------------------------------------------------------------------------
    def udp(self, src: str, dst: str, seg: bytes, plen: int, fragmented: bool) -> str:
        if len(seg) < wudp.HEADER_LEN:
            return f"{src} > {dst}: [|udp]"
        sport, dport, ulen, _sum = wudp.HEADER.unpack_from(seg)
        ends = f"{src}.{sport} > {dst}.{dport}: "
        if ulen < wudp.HEADER_LEN:
            return f"{ends}UDP, bad length {ulen} < {wudp.HEADER_LEN}"
        data_len, avail = ulen - wudp.HEADER_LEN, plen - wudp.HEADER_LEN
        if data_len > avail and not fragmented:
            return f"{ends}UDP, bad length {data_len} > {avail}"
        return f"{ends}UDP, length {data_len}"

    # -- ICMP ----------------------------------------------------------------------------
    def icmp(self, msg: bytes, plen: int, fragmented: bool) -> str:
        try:
            m = wicmp.parse(msg, verify_checksum=False)
        except WireError:
            return "ICMP [|icmp]"
        text = f"ICMP {self.icmp_text(m)}, length {plen}"
        if self.vflag and not fragmented and len(msg) >= plen and not checksum.verify(msg[:plen]):
            fixed = bytearray(msg[:plen])
            fixed[2:4] = b"\0\0"
            text += f" (wrong icmp cksum {m.checksum:x} (->{checksum.checksum(fixed):x})!)"
        return text

    @staticmethod
    def icmp_text(m: wicmp.IcmpRepr) -> str:
        t, code = m.type, m.code
        if t in (wicmp.ECHO, wicmp.ECHO_REPLY):
            return f"echo {'request' if t == wicmp.ECHO else 'reply'}, id {m.ident}, seq {m.seq}"
        quoted = bytes(m.payload)
        qdst = ipv4.ntoa(int.from_bytes(quoted[16:20], "big")) if len(quoted) >= 20 else None
        if t == wicmp.UNREACH:
            if qdst is None:
                return "[|icmp]"
            if code == wicmp.UNREACH_PROTOCOL:
                return f"{qdst} protocol {quoted[9]} unreachable"
            if code == wicmp.UNREACH_PORT:
                qhl = (quoted[0] & 0x0F) << 2
                if len(quoted) < qhl + 4:
                    return "[|icmp]"
                port = int.from_bytes(quoted[qhl + 2:qhl + 4], "big")
                proto = {6: "tcp", 17: "udp"}.get(quoted[9])
                if proto is None:
                    return f"{qdst} protocol {quoted[9]} port {port} unreachable"
                return f"{qdst} {proto} port {port} unreachable"
            if code == wicmp.UNREACH_NEEDFRAG:
                if m.mtu:
                    return f"{qdst} unreachable - need to frag (mtu {m.mtu})"
                return f"{qdst} unreachable - need to frag"
            fmt = _name(UNREACH_FORMATS, code, "")
            return fmt.format(qdst) if fmt else f"{qdst} unreachable - #{code}"
        if t == wicmp.REDIRECT:
            if qdst is None:
                return "[|icmp]"
            gw = ipv4.ntoa(m.rest)
            kind = ("redirect {} to net {}", "redirect {} to host {}",
                    "redirect-tos {} to net {}", "redirect-tos {} to host {}")
            if code < len(kind):
                return kind[code].format(qdst, gw)
            return f"redirect-#{code} {qdst} to {gw}"
        if t == wicmp.TIMXCEED:
            if code == wicmp.TIMXCEED_INTRANS:
                return "time exceeded in-transit"
            if code == wicmp.TIMXCEED_REASS:
                return "ip reassembly time exceeded"
            return f"time exceeded-#{code}"
        if t == wicmp.PARAMPROB:
            if code:
                return f"parameter problem - code {code}"
            return f"parameter problem - octet {m.rest >> 24}"
        if t == wicmp.TSTAMP:
            return f"time stamp query id {m.ident} seq {m.seq}"
        if t == wicmp.TSTAMP_REPLY:
            text = f"time stamp reply id {m.ident} seq {m.seq}"
            if len(quoted) >= 12:
                org, recv, xmit = struct.unpack_from("!III", quoted)
                text += (f": org {_ms_clock(org)}, recv {_ms_clock(recv)}, "
                         f"xmit {_ms_clock(xmit)}")
            return text
        if t == 18 and len(quoted) >= 4:
            return f"address mask is 0x{int.from_bytes(quoted[:4], 'big'):08x}"
        return _name(ICMP_SIMPLE, t, f"type-#{t}")

    # -- TCP (vimage.wire has no TCP yet: the header is read here) ------------------------
    def tcp(self, src: int, dst: int, seg: bytes, plen: int,
            ntoa: Callable[[int], str] = ipv4.ntoa) -> str:
        s, d = ntoa(src), ntoa(dst)
        if len(seg) < 4:
            return f"{s} > {d}: [|tcp]"
        sport, dport = struct.unpack_from("!HH", seg)
        ends = f"{s}.{sport} > {d}.{dport}: "
        if len(seg) < TCP_HEADER.size:
            return ends + "[|tcp]"
        _sp, _dp, seq, ack, offx, flags8, win, _sum, urp = TCP_HEADER.unpack_from(seg)
        hlen = (offx >> 4) * 4
        if hlen < TCP_HEADER.size:
            return f"{ends}tcp {plen - hlen} [bad hdr length {hlen} - too short, < 20]"
        if self.qflag:
            return f"{ends}tcp {plen - hlen}"
        flags = flags8 | (offx & 1) << 8
        text = ends + "Flags [" + ("".join(n for bit, n in TCP_FLAGS if flags & bit) or "none")
        text += "]"
        if not self.sflag and flags & TCP_ACK:
            seq, ack = self.relative(src, sport, dst, dport, seq, ack, bool(flags & TCP_SYN))
        if hlen > plen:
            return f"{text} [bad hdr length {hlen} - too long, > {plen}]"
        length = plen - hlen
        if length > 0 or flags & (TCP_SYN | TCP_FIN | TCP_RST):
            text += f", seq {seq}"
            if length > 0:
                text += f":{(seq + length) & MAX_U32}"
        if flags & TCP_ACK:
            text += f", ack {ack}"
        text += f", win {win}"
        if flags & TCP_URG:
            text += f", urg {urp}"
        if hlen > TCP_HEADER.size:
            text += f", options [{self.tcp_options(seg[TCP_HEADER.size:hlen])}]"
        return f"{text}, length {length}"

    def relative(self, src: int, sport: int, dst: int, dport: int, seq: int, ack: int,
                 syn: bool) -> tuple[int, int]:
        """Sequence numbers relative to the first ones seen in this conversation."""
        rev = sport > dport or (sport == dport and src > dst)
        key = (dst, dport, src, sport) if rev else (src, sport, dst, dport)
        bases = self.tcp_bases.get(key)
        if bases is None or syn:
            # (initial seq of the key's forward direction, of its reverse direction)
            self.tcp_bases[key] = (ack - 1, seq) if rev else (seq, ack - 1)
            return seq, ack
        fwd, back = bases
        if rev:
            return (seq - back) & MAX_U32, (ack - fwd) & MAX_U32
        return (seq - fwd) & MAX_U32, (ack - back) & MAX_U32

    @staticmethod
    def tcp_options(opts: bytes) -> str:
        out = []
        i = 0
        while i < len(opts):
            kind = opts[i]
            name = _name(TCPOPT_NAMES, kind, f"unknown-{kind}")
            if kind in (0, 1):
                out.append(name)
                i += 1
                if kind == 0:
                    break
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2 or i + opts[i + 1] > len(opts):
                out.append(f"{name} [bad opt]")
                break
            olen = opts[i + 1]
            body = opts[i + 2:i + olen]
            if kind == 2 and olen == 4:
                name += f" {int.from_bytes(body, 'big')}"
            elif kind == 3 and olen == 3:
                name += f" {body[0]}"
            elif kind == 8 and olen == 10:
                val, ecr = struct.unpack("!II", body)
                name += f" val {val} ecr {ecr}"
            elif kind == 5 and (olen - 2) % 8 == 0:
                blocks = [struct.unpack_from("!II", body, j) for j in range(0, len(body), 8)]
                name += f" {len(blocks)} " + "".join(f"{{{a}:{b}}}" for a, b in blocks)
            elif kind not in (4,) and body:
                name += f" 0x{body.hex()}"
            out.append(name)
            i += olen
        return ",".join(out)


def _ms_clock(ms: int) -> str:
    """An ICMP timestamp (ms since midnight UT) as tcpdump prints it."""
    sec, msec = divmod(ms, 1000)
    return f"{sec // 3600 % 24:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{msec:03d}"


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


def _link_desc(linktype: int) -> str:
    named = pcap.linktype_name(linktype)
    return f"link-type {linktype}" if named is None else f"link-type {named[0]} ({named[1]})"


# -- the command -------------------------------------------------------------------------------
def main(ctx: Context, argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "c:ei:npqQ:r:s:StUvw:x",
                                   ["duration=", "time-stamp-precision="])
    except getopt.GetoptError as exc:
        raise UsageError(getopt_message(exc), synopsis=True) from None
    count: int | None = None
    duration: float | None = None
    iface: str | None = None
    rfile: str | None = None
    wfile: str | None = None
    snaplen = pcap.DEFAULT_SNAPLEN
    direction = "inout"
    precision: str | None = None
    eflag = qflag = sflag = flush = False
    vflag = xflag = tmode = 0
    for opt, val in opts:
        if opt == "-c":
            if not val.isdigit() or int(val) <= 0:
                raise ToolError(f"invalid packet count {val}")
            count = int(val)
        elif opt == "--duration":
            try:
                duration = float(val)
            except ValueError:
                duration = -1.0
            if not 0 < duration < 1e9:
                raise ToolError(f"invalid duration {val}")
        elif opt == "-e":
            eflag = True
        elif opt == "-i":
            iface = val
        elif opt == "-q":
            qflag = True
        elif opt == "-Q":
            if val not in bpf.DIRECTIONS:
                raise ToolError(f"{val}: invalid direction (use in, out or inout)")
            direction = val
        elif opt == "-r":
            rfile = val
        elif opt == "-s":
            try:
                snaplen = int(val, 0)
            except ValueError:
                snaplen = -1
            if not 0 <= snaplen <= pcap.MAX_SNAPLEN:
                raise ToolError(f"invalid snaplen {val}")
            snaplen = snaplen or pcap.DEFAULT_SNAPLEN
        elif opt == "-S":
            sflag = True
        elif opt == "-t":
            tmode += 1
        elif opt == "-U":
            flush = True
        elif opt == "-v":
            vflag += 1
        elif opt == "-w":
            wfile = val
        elif opt == "-x":
            xflag += 1
        elif opt == "--time-stamp-precision":
            if val not in ("micro", "nano"):
                raise ToolError(f"unsupported time stamp precision {val}")
            precision = val
        # -n, -p: accepted; names are never looked up and there is no promiscuity
    expr = " ".join(args)
    printer_opts = {"eflag": eflag, "qflag": qflag, "vflag": vflag, "xflag": xflag,
                    "sflag": sflag, "tmode": min(tmode, 5), "nano": precision == "nano"}
    file_precision = precision or "nano"
    if rfile is not None:
        return read_file(ctx, rfile, wfile, expr, count, printer_opts, file_precision)
    if count is None and duration is None:
        raise UsageError("-c count or --duration seconds is required (there is no ^C in "
                         "vnet.cmd)")
    vnet = ctx.vnet
    with vnet.kernel.sched.cond:
        if not vnet.alive:
            raise ToolError(f"vnet {vnet.display_name} is destroyed")
        ifp = pick_interface(ctx, iface)
        return live(ctx, ifp, wfile, expr, count, duration, snaplen, direction,
                    printer_opts, file_precision, flush)


def pick_interface(ctx: Context, name: str | None) -> Ifnet:
    """-i NAME, or the first interface that is up and not loopback (then any up one)."""
    vnet = ctx.vnet
    if name is not None:
        ifp = vnet.ifaces.get(name)
        if ifp is None:
            raise ToolError(f"{name}: No such device exists")
        return ifp
    up = [i for i in ifaces_by_index(vnet) if i.up]
    for ifp in up:
        if not ifp.is_loopback:
            return ifp
    if up:
        return up[0]
    raise ToolError("no suitable device found")


def open_output(path: str, linktype: int, snaplen: int, precision: str,
                flush: bool = False, label: str | None = None) -> pcap.PcapWriter:
    try:
        return pcap.PcapWriter(path, linktype, snaplen, precision, flush)
    except OSError as exc:
        raise ToolError(f"{label or path}: {exc.strerror or exc}") from None


def compile_or_fail(expr: str, linktype: int, netmask: int | None) -> bpf_filter.Matcher | None:
    if not expr.strip():
        return None
    try:
        return bpf_filter.compile_filter(expr, linktype, netmask)
    except ValueError as exc:
        raise ToolError(f"can't parse filter expression: {exc}") from None


def live(ctx: Context, ifp: Ifnet, wfile: str | None, expr: str, count: int | None,
         duration: float | None, snaplen: int, direction: str, printer_opts: dict,
         precision: str, flush: bool) -> int:
    linktype = bpf.linktype_of(ifp)
    netmask = ifp.addrs[0].mask if ifp.addrs else None
    compile_or_fail(expr, linktype, netmask)  # report a bad filter before opening anything
    records: list[pcap.Record] = []

    def collect(time_ns: int, data: bytes, wirelen: int) -> None:
        records.append(pcap.Record(time_ns, data, wirelen))

    try:
        session = bpf.open_capture(ifp, wfile, expr, snaplen, count=count, keep=False,
                                   callback=None if wfile else collect, direction=direction,
                                   precision=precision, netmask=netmask, flush_each=flush)
    except OSError as exc:
        if wfile is None:
            raise
        raise ToolError(f"{ctx.label(wfile)}: {exc.strerror or exc}") from None
    if wfile is None and not printer_opts["vflag"]:
        ctx.print("tcpdump: verbose output suppressed, use -v[v]... for full protocol decode")
    lead = "tcpdump: " if wfile is not None or printer_opts["vflag"] else ""
    ctx.print(f"{lead}listening on {ifp.name}, {_link_desc(linktype)}, "
              f"snapshot length {snaplen} bytes")
    kernel = ctx.vnet.kernel
    idle = False
    try:
        kernel.run_until(lambda: session.closed, duration)
    except RuntimeError:
        if not kernel.sched.virtual:
            raise
        idle = True  # virtual time: nothing is left that could ever send a packet
    finally:
        session.close()
    printer = Printer(linktype, **printer_opts)
    for rec in records:
        for line in printer.packet(rec):
            ctx.print(line)
    status = 0
    if session.error is not None:
        ctx.print(f"tcpdump: pcap_loop: {session.error}")
        status = 1
    elif idle:
        ctx.print("tcpdump: virtual time is idle: no more packets can arrive")
    captured, received, dropped = session.stats()
    ctx.print(f"{captured} packet{_plural(captured)} captured")
    ctx.print(f"{received} packet{_plural(received)} received by filter")
    ctx.print(f"{dropped} packet{_plural(dropped)} dropped by kernel")
    return status


def read_file(ctx: Context, rfile: str, wfile: str | None, expr: str, count: int | None,
              printer_opts: dict, precision: str) -> int:
    """-r: print (or, with -w, copy) the packets of a pcap file that pass the filter;
    `-r -` reads ctx.stdin. Messages name the file as the user did (ctx.label)."""
    name = ctx.label(rfile)
    try:
        fh = io.BytesIO(ctx.stdin or b"") if rfile == "-" else open(rfile, "rb")  # noqa: SIM115
    except OSError as exc:
        raise ToolError(f"{name}: {exc.strerror or exc}") from None
    with fh:
        try:
            linktype, snaplen, _nano, records = pcap.iter_pcap(fh)
        except ValueError as exc:
            raise ToolError(f"{name}: {exc}") from None
        except OSError as exc:
            raise ToolError(f"{name}: {exc.strerror or exc}") from None
        match = compile_or_fail(expr, linktype, None)
        ctx.print(f"reading from file {name}, {_link_desc(linktype)}, snapshot length {snaplen}")
        writer = None
        if wfile:
            writer = open_output(wfile, linktype, snaplen, precision, label=ctx.label(wfile))
        printer = Printer(linktype, **printer_opts)
        done = 0
        try:
            for rec in records:
                if match is not None and not match(rec.data):
                    continue
                if writer is not None:
                    writer.write(rec.time_ns, rec.data, rec.wirelen)
                else:
                    for line in printer.packet(rec):
                        ctx.print(line)
                done += 1
                if count is not None and done >= count:
                    break
        except ValueError as exc:
            ctx.print(f"tcpdump: pcap_loop: {exc}")
            return 1
        finally:
            if writer is not None:
                writer.close()
    return 0
