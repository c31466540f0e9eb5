"""traceroute(8): UDP probes with growing TTLs, answers read from a raw ICMP socket.

    traceroute [-Fn] [-f first_ttl] [-m max_ttl] [-p port] [-q nqueries]
               [-s src_addr] [-w waittime] host [packetlen]

Probe number `seq` (counting from 1 over the whole run) goes to UDP port
`port + seq` from the probe socket's own port, which is how an ICMP time
exceeded or port unreachable quoting it is matched to it, as in the classic
traceroute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage import netdb
from vimage.cli import ToolError, UsageError
from vimage.cli._ping_common import timeout_for
from vimage.cli._util import getopts
from vimage.sched import NS_PER_S
from vimage.socket.socket import (
    AF_INET,
    IP_DONTFRAG,
    IP_TTL,
    IPPROTO_ICMP,
    IPPROTO_IP,
    SOCK_DGRAM,
    SOCK_RAW,
)
from vimage.wire import WireError, ipv4
from vimage.wire import icmp as wicmp
from vimage.wire.ipv4 import PROTO_UDP

if TYPE_CHECKING:
    from vimage.cli import Context
    from vimage.kernel import Kernel
    from vimage.socket.socket import Socket
    from vimage.vnet import Vnet

DEFAULT_PORT = 32768 + 666
DEFAULT_PACKLEN = 40
MIN_PACKLEN = 20 + 8
MAX_PACKLEN = 32 * 1024
MAX_TTL = 255
RECV_BUF = 65535

# annotation of an ICMP unreachable code: (code, text, counts as "got there")
UNREACH_MARKS: tuple[tuple[int, str, bool], ...] = (
    (wicmp.UNREACH_NET, " !N", False),
    (wicmp.UNREACH_HOST, " !H", False),
    (wicmp.UNREACH_PROTOCOL, " !P", True),
    (wicmp.UNREACH_SRCFAIL, " !S", False),
    (wicmp.UNREACH_NET_UNKNOWN, " !U", False),
    (wicmp.UNREACH_HOST_UNKNOWN, " !W", False),
    (8, " !I", False),
    (9, " !A", False),
    (10, " !Z", False),
    (11, " !Q", False),
    (12, " !T", False),
    (wicmp.UNREACH_FILTER_PROHIB, " !X", False),
    (14, " !V", False),
    (15, " !C", False),
)


# traceroute(8)'s usage(), the options vimage implements
USAGE = """\
usage: traceroute [-Fn] [-f first_ttl] [-m max_ttl] [-p port] [-q nqueries]
                  [-s src_addr] [-w waittime] host [packetlen]
"""


def _int_arg(text: str, what: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"\"{text}\" bad value for {what}") from None
    if not lo <= value <= hi:
        raise UsageError(f"{what} must be > {lo - 1} and <= {hi}")
    return value


def _resolve(vnet: Vnet, text: str) -> int:
    try:
        return netdb.resolve_host(vnet, text)[0]
    except OSError:
        raise ToolError(f"unknown host {text}") from None


def probe_data(seq: int, ttl: int, sent_ns: int, datalen: int) -> bytes:
    """The classic probe payload: probe number, TTL and the send time, zero padded
    (traceroute.c's struct outdata; traceroute6.c sends the same)."""
    return (bytes((seq & 0xFF, ttl)) + sent_ns.to_bytes(8, "big") + bytes(datalen))[:datalen]


def hop_text(addr: str, numeric: bool) -> str:
    """A hop's address as printed, with its name in parentheses unless -n."""
    return f" {addr}" if numeric else f" {addr} ({addr})"


class Reply:
    """What answered a probe: -1 for time exceeded, else the unreachable code + 1."""

    __slots__ = ("code", "mtu", "src", "ttl")

    def __init__(self, code: int, src: str, ttl: int, mtu: int) -> None:
        self.code = code
        self.src = src
        self.ttl = ttl
        self.mtu = mtu


def packet_ok(pkt: bytes, src: str, dst: int, sport: int, dport: int) -> Reply | None:
    """The ICMP answer to our probe (dst, sport -> dport), or None if `pkt` is not one."""
    hlen = (pkt[0] & 0x0F) << 2
    try:
        msg = wicmp.parse(pkt[hlen:])
    except WireError:
        return None
    if not ((msg.type == wicmp.TIMXCEED and msg.code == wicmp.TIMXCEED_INTRANS)
            or msg.type == wicmp.UNREACH):
        return None
    quoted = bytes(msg.payload)
    if len(quoted) < 20:
        return None
    qhlen = (quoted[0] & 0x0F) << 2
    if len(quoted) < qhlen + 4 or quoted[9] != PROTO_UDP:
        return None
    if int.from_bytes(quoted[16:20], "big") != dst:
        return None
    if (int.from_bytes(quoted[qhlen:qhlen + 2], "big") != sport
            or int.from_bytes(quoted[qhlen + 2:qhlen + 4], "big") != dport):
        return None
    code = -1 if msg.type == wicmp.TIMXCEED else msg.code + 1
    return Reply(code, src, pkt[8], msg.mtu)


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "f:Fm:np:q:s:w:")
    vnet = ctx.vnet
    first_ttl = 1
    max_ttl = vnet.ip.ttl
    nprobes = 3
    waittime = 5
    port = DEFAULT_PORT
    source: str | None = None
    numeric = dontfrag = False
    for opt, val in opts:
        if opt == "-f":
            first_ttl = _int_arg(val, "first ttl", 1, MAX_TTL)
        elif opt == "-F":
            dontfrag = True
        elif opt == "-m":
            max_ttl = _int_arg(val, "max ttl", 1, MAX_TTL)
        elif opt == "-n":
            numeric = True
        elif opt == "-p":
            port = _int_arg(val, "port", 1, 65535)
        elif opt == "-q":
            nprobes = _int_arg(val, "nprobes", 1, 2**31 - 1)
        elif opt == "-s":
            source = val
        elif opt == "-w":
            waittime = _int_arg(val, "wait time", 1, 24 * 60 * 60)
    if not 1 <= len(args) <= 2:
        raise UsageError()
    if first_ttl > max_ttl:
        raise UsageError(f"first ttl ({first_ttl}) may not be greater than max ttl ({max_ttl})")
    packlen = DEFAULT_PACKLEN
    if len(args) == 2:
        packlen = _int_arg(args[1], "packet length", MIN_PACKLEN, MAX_PACKLEN)
    hostname = args[0]
    dst = _resolve(vnet, hostname)
    src = _resolve(vnet, source) if source is not None else 0
    if not src and dst not in vnet.ip.local and vnet.rt.lookup(dst) is None:
        raise ToolError("findsaddr: Network is unreachable")  # no source address to use
    with vnet.socket(AF_INET, SOCK_DGRAM) as udp, \
            vnet.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) as icmp:
        try:
            udp.bind((ipv4.ntoa(src) if src else "", 0))
            if src:
                icmp.bind((ipv4.ntoa(src), 0))
        except OSError as exc:
            raise ToolError(f"bind: {exc.strerror or exc}") from None
        if dontfrag:
            udp.setsockopt(IPPROTO_IP, IP_DONTFRAG, 1)
        from_text = f" from {source}" if source is not None else ""
        ctx.print(f"traceroute to {hostname} ({ipv4.ntoa(dst)}){from_text}, {max_ttl} hops max, "
                  f"{packlen} byte packets")
        trace(ctx, udp, icmp, dst, range(first_ttl, max_ttl + 1), nprobes,
              waittime * NS_PER_S, port, packlen - MIN_PACKLEN, numeric)
    return 0


def trace(ctx: Context, udp: Socket, icmp: Socket, dst: int, ttls: range, nprobes: int,
          wait_ns: int, port: int, datalen: int, numeric: bool) -> None:
    kernel = ctx.vnet.kernel
    sport = udp.lport
    dst_text = ipv4.ntoa(dst)
    seq = 0
    for ttl in ttls:
        line = f"{ttl:2d} "
        lastaddr: str | None = None
        got_there = False
        unreachable = 0
        try:
            for _probe in range(nprobes):
                seq += 1
                dport = (port + seq) & 0xFFFF
                sent = kernel.now_ns()
                data = probe_data(seq, ttl, sent, datalen)
                udp.setsockopt(IPPROTO_IP, IP_TTL, ttl)
                try:
                    udp.sendto(data, (dst_text, dport))
                except OSError as exc:
                    ctx.print(f"traceroute: sendto: {exc.strerror or exc}")
                reply = wait_for_reply(kernel, icmp, sent + wait_ns, dst, sport, dport)
                if reply is None:
                    line += " *"
                    continue
                if reply.src != lastaddr:
                    if lastaddr is not None:
                        line += "\n   "
                    line += hop_text(reply.src, numeric)
                    lastaddr = reply.src
                line += f"  {(kernel.now_ns() - sent) / 1e6:.3f} ms"
                if reply.code == -1:
                    continue  # time exceeded in transit
                code = reply.code - 1
                if code == wicmp.UNREACH_PORT:
                    if reply.ttl <= 1:
                        line += " !"
                    got_there = True
                elif code == wicmp.UNREACH_NEEDFRAG:
                    unreachable += 1
                    line += f" !F-{reply.mtu}"
                else:
                    mark = next((m for m in UNREACH_MARKS if m[0] == code), None)
                    if mark is None:
                        unreachable += 1
                        line += f" !<{code}>"
                    else:
                        line += mark[1]
                        if mark[2]:
                            got_there = True
                        else:
                            unreachable += 1
        except OSError:  # its vnet destroyed: the probes so far, as traceroute had written them
            ctx.print(line)
            raise
        ctx.print(line)
        if got_there or (unreachable > 0 and unreachable >= nprobes - 1):
            return


def wait_for_reply(kernel: Kernel, icmp: Socket, deadline: int, dst: int, sport: int,
                   dport: int) -> Reply | None:
    """Read the ICMP socket until the answer to this probe comes or `deadline` passes."""
    while True:
        now = kernel.now_ns()
        if now >= deadline:
            return None
        icmp.settimeout(timeout_for(deadline - now))
        try:
            pkt, (src, _port) = icmp.recvfrom(RECV_BUF)
        except TimeoutError:
            return None
        reply = packet_ok(pkt, src, dst, sport, dport)
        if reply is not None:
            return reply
