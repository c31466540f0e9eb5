"""ping(8): ICMP echo over a raw socket, as FreeBSD's ping does it (sbin/ping/ping.c).

    ping [-aDfnoQqR] [-c count] [-i wait] [-m ttl] [-p pattern] [-S src_addr]
         [-s packetsize] [-t timeout] [-W waittime] [-z tos] host
    ping [-aDfLnoQqR] ... [-T ttl] ... mcast-group

There is no ^C inside `vnet.cmd`, so one of -c or -t is required. Waiting is
done with socket timeouts; in virtual time the kernel clock jumps through them,
so a run is instant and its round-trip times are exact. -f is allowed to everyone
(FreeBSD: root only). -D, -R, -z and -T build the IP header (IP_HDRINCL) as
FreeBSD's F_HDRINCL does; -R puts the record route option there (FreeBSD sets it
with IP_OPTIONS: the packet on the wire is the same).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage import netdb
from vimage.cli import ToolError, UsageError, destroyed
from vimage.cli._ping_common import (
    FLOOD_INTERVAL_NS,
    MAXWAIT_MS,
    TIMELEN,
    PingBase,
    PingOptions,
    int_arg,
    run,
    timeout_for,
)
from vimage.cli._util import getopts
from vimage.netinet.in_ import is_multicast
from vimage.socket.socket import (
    AF_INET,
    IP_HDRINCL,
    IP_TTL,
    IPPROTO_ICMP,
    IPPROTO_IP,
    SO_BROADCAST,
    SO_RCVBUF,
    SO_SNDBUF,
    SOCK_RAW,
    SOL_SOCKET,
)
from vimage.wire import WireError, ipv4
from vimage.wire import icmp as wicmp

if TYPE_CHECKING:
    from vimage.cli import Context
    from vimage.socket.socket import Socket
    from vimage.vnet import Vnet

EX_NOHOST = 68
DEFDATALEN = 56
IP_MAXPACKET = 65535
MAXPAYLOAD = IP_MAXPACKET - 20 - 8
RECV_BUF = IP_MAXPACKET + 128
# ping(8)'s SYNOPSIS, the options vimage implements
USAGE = """\
usage: ping [-aDfnoQqR] [-c count] [-i wait] [-m ttl] [-p pattern] [-S src_addr]
            [-s packetsize] [-t timeout] [-W waittime] [-z tos] host
       ping [-aDfLnoQqR] [-c count] [-i wait] [-m ttl] [-p pattern]
            [-S src_addr] [-s packetsize] [-T ttl] [-t timeout] [-W waittime]
            [-z tos] mcast-group
       ping -6 [ping6 options] host
"""
MAX_IPOPTLEN = 40
IPOPT_RR = 7
IPOPT_LSRR = 131
IPOPT_SSRR = 137
IPOPT_MINOFF = 4
REDIRECT_TEXT = ("Redirect Network", "Redirect Host", "Redirect Type of Service and Network",
                 "Redirect Type of Service and Host")

UNREACH_TEXT: tuple[tuple[int, str], ...] = (
    (wicmp.UNREACH_NET, "Destination Net Unreachable"),
    (wicmp.UNREACH_HOST, "Destination Host Unreachable"),
    (wicmp.UNREACH_PROTOCOL, "Destination Protocol Unreachable"),
    (wicmp.UNREACH_PORT, "Destination Port Unreachable"),
    (wicmp.UNREACH_SRCFAIL, "Source Route Failed"),
    (wicmp.UNREACH_FILTER_PROHIB, "Communication prohibited by filter"),
)


def resolve(vnet: Vnet, text: str) -> int:
    """A dotted quad or a name in the vnet's hosts table; else unknown host (status 68)."""
    try:
        return netdb.resolve_host(vnet, text)[0]
    except OSError:
        raise ToolError(f"cannot resolve {text}: Unknown host", EX_NOHOST) from None


def describe_error(msg: wicmp.IcmpRepr) -> str:
    """FreeBSD ping's line for an ICMP error (pr_icmph)."""
    t, code = msg.type, msg.code
    if t == wicmp.UNREACH:
        if code == wicmp.UNREACH_NEEDFRAG:
            return (f"frag needed and DF set (MTU {msg.mtu})" if msg.mtu
                    else "frag needed and DF set")
        for c, text in UNREACH_TEXT:
            if c == code:
                return text
        return f"Dest Unreachable, Bad Code: {code}"
    if t == wicmp.TIMXCEED:
        if code == wicmp.TIMXCEED_INTRANS:
            return "Time to live exceeded"
        if code == wicmp.TIMXCEED_REASS:
            return "Frag reassembly time exceeded"
        return f"Time exceeded, Bad Code: {code}"
    if t == wicmp.SOURCE_QUENCH:
        return "Source Quench"
    if t == wicmp.REDIRECT:
        kind = REDIRECT_TEXT[code] if code < 4 else f"Redirect, Bad Code: {code}"
        return f"{kind}(New addr: {ipv4.ntoa(msg.rest)})"
    if t == wicmp.PARAMPROB:
        return f"Parameter problem: pointer = 0x{msg.rest >> 24:02x}"
    return f"Bad ICMP type: {t}"


def dump_ip_header(quoted: bytes) -> list[str]:
    """The returned IP header of an ICMP error, as FreeBSD's pr_iph prints it."""
    hlen = (quoted[0] & 0x0F) << 2
    off = int.from_bytes(quoted[6:8], "big")
    src = ipv4.ntoa(int.from_bytes(quoted[12:16], "big"))
    dst = ipv4.ntoa(int.from_bytes(quoted[16:20], "big"))
    options = quoted[20:hlen].hex()
    return [
        "Vr HL TOS  Len   ID Flg  off TTL Pro  cks      Src      Dst",
        f" {quoted[0] >> 4:1x}  {quoted[0] & 0x0F:1x}  {quoted[1]:02x} "
        f"{int.from_bytes(quoted[2:4], 'big'):04x} {int.from_bytes(quoted[4:6], 'big'):04x}"
        f"   {off >> 13:1x} {off & 0x1FFF:04x}  {quoted[8]:02x}  {quoted[9]:02x} "
        f"{int.from_bytes(quoted[10:12], 'big'):04x} {src}  {dst} {options}",
    ]


class Pinger(PingBase):
    """One run of ping: its socket, counters and timing sums."""

    def __init__(self, ctx: Context, sock: Socket, dst: int, ident: int, datalen: int,
                 quiet: bool, waittime_ms: int | None) -> None:
        super().__init__(ctx, ident, datalen, quiet)
        self.sock = sock
        self.dst = dst
        self.waittime_ms = waittime_ms
        self.header: bytes | None = None  # the IP header to send (F_HDRINCL), else None
        self.flood = False
        self.audible = False
        self.quiet2 = False  # -Q: no ICMP errors about our requests
        self.old_rr = b""  # the last record route printed: "(same route)" when it repeats

    def write(self, text: str) -> None:
        self.ctx.out.write(text)

    def send(self) -> None:
        """Send echo request number `ntransmitted` (pinger); a send error is reported, not
        fatal. In flood mode each request prints a dot."""
        seq, data = self.next_echo()
        packet = wicmp.build_echo(wicmp.ECHO, self.ident, seq, data)
        if self.header is not None:
            header = bytearray(self.header)
            header[2:4] = (len(header) + len(packet)).to_bytes(2, "big")
            packet = bytes(header) + packet
        try:
            self.sock.sendto(packet, (ipv4.ntoa(self.dst), 0))
        except OSError as exc:
            self.ctx.print(f"ping: sendto: {exc.strerror or exc}")
        self.ntransmitted += 1
        if self.flood and not self.quiet:
            self.write(".")

    def poll(self, timeout_ns: int) -> bool:
        self.sock.settimeout(timeout_for(timeout_ns))
        try:
            pkt, (src, _port) = self.sock.recvfrom(RECV_BUF)
        except TimeoutError:
            return False
        self.receive(pkt, src)
        return True

    def receive(self, pkt: bytes, src: str) -> None:
        """Account for (and print) one packet read from the raw socket (pr_pack)."""
        hlen = (pkt[0] & 0x0F) << 2
        if len(pkt) < hlen + wicmp.HEADER_LEN:
            return
        try:
            msg = wicmp.parse(pkt[hlen:])
        except WireError:
            return
        cc = len(pkt) - hlen
        if msg.type == wicmp.ECHO_REPLY:
            if msg.ident != self.ident:
                return  # not our echo
            text = self._echo_reply(msg, cc, src, pkt[8])
        elif msg.type in wicmp.ERROR_TYPES:
            text = self._error(msg, cc, src)
        else:
            return
        if text is None:
            return
        text += self.options_text(pkt[20:hlen])
        if not self.flood:
            text += "\n"
        self.write(text)

    def _echo_reply(self, msg: wicmp.IcmpRepr, cc: int, src: str, ttl: int) -> str | None:
        timed, triptime = self.time_reply(msg.payload)
        if self.waittime_ms is not None and triptime > self.waittime_ms:
            self.nrcvtimeout += 1
            return None
        seq = msg.seq
        dup = self.is_dup(seq)
        if self.quiet:
            return None
        if self.flood:
            return "\b"
        line = f"{cc} bytes from {src}: icmp_seq={seq} ttl={ttl}"
        if timed:
            line += f" time={triptime:.3f} ms"
        if dup:
            line += " (DUP!)"
        if self.audible:
            line += "\a"
        if len(msg.payload) < self.datalen:
            line += " (TRUNC!)"
        return line

    def _error(self, msg: wicmp.IcmpRepr, cc: int, src: str) -> str | None:
        """The lines for an ICMP error if it quotes one of our echo requests."""
        quoted = bytes(msg.payload)
        if len(quoted) < 20:
            return None
        qhlen = (quoted[0] & 0x0F) << 2
        if len(quoted) < qhlen + 8:
            return None
        if (int.from_bytes(quoted[16:20], "big") != self.dst or quoted[9] != IPPROTO_ICMP
                or quoted[qhlen] != wicmp.ECHO
                or int.from_bytes(quoted[qhlen + 4:qhlen + 6], "big") != self.ident):
            return None
        if self.quiet or self.quiet2:
            return None
        lines = [f"{cc} bytes from {src}: {describe_error(msg)}", *dump_ip_header(quoted)]
        return "\n".join(lines) + "\n"

    def options_text(self, opts: bytes) -> str:
        """What pr_pack prints for the IP options of a received packet: "RR: " and the
        recorded addresses a line each, "(same route)" when they repeat (not in flood
        mode), source routes, NOP and unknown options."""
        out: list[str] = []
        i, end = 0, len(opts)
        while i < end:
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                out.append("\nNOP")
                i += 1
                continue
            if kind in (IPOPT_LSRR, IPOPT_SSRR, IPOPT_RR) and i + 2 < end:
                i = self._route_option(opts, i, out)
                continue
            out.append(f"\nunknown option {kind:x}")
            i += 1
        return "".join(out)

    def _route_option(self, opts: bytes, i: int, out: list[str]) -> int:
        """A route option at `i` (pr_pack's IPOPT_RR and IPOPT_LSRR/SSRR cases); the
        offset to go on from."""
        kind, length, ptr = opts[i], opts[i + 1], opts[i + 2]
        room = len(opts) - (i + 2)  # bytes left from the pointer byte on
        if kind == IPOPT_RR:
            used = min(ptr, length) - IPOPT_MINOFF + 1
            if used < 0 or used > room:
                self.old_rr = b""
                return i + 3
            seen = opts[i + 2:i + 2 + used]  # ping.c compares from the pointer byte
            if seen == self.old_rr and not self.flood:
                out.append("\t(same route)")
                return i + 3 + used
            self.old_rr = seen
            out.append("\nRR: ")
        else:
            used = length - IPOPT_MINOFF + 1
            out.append("\nLSRR: " if kind == IPOPT_LSRR else "\nSSRR: ")
        if used < 4 or used > room:
            out.append("\t(truncated route)" + ("\n" if kind != IPOPT_RR else ""))
            return i + 3
        count = used // 4
        words = [ipv4.ntoa(int.from_bytes(opts[i + 3 + 4 * n:i + 7 + 4 * n], "big"))
                 for n in range(count)]
        out.append("\n".join(f"\t{w}" for w in words))
        return i + 3 + 4 * count


def parse_pattern(text: str) -> bytes:
    """-p: up to 16 bytes written as hex digits, two a byte (ping.c's fill)."""
    if any(c not in "0123456789abcdefABCDEF" for c in text):
        raise UsageError("patterns must be specified as hex digits")
    return bytes(int(text[i:i + 2], 16) for i in range(0, min(len(text), 32), 2))


def build_header(tos: int, df: bool, ttl: int, src: int, dst: int, rroute: bool) -> bytes:
    """The header ping sends with F_HDRINCL: id 0, source maybe 0 and checksum 0 for the
    kernel to fill, ip_len set per packet; -R adds a record route option with room for
    nine addresses (rspace: type, length 39, pointer 4, then an end-of-list byte)."""
    opts = b""
    if rroute:
        opts = bytes([IPOPT_RR, MAX_IPOPTLEN - 1, IPOPT_MINOFF]) + bytes(MAX_IPOPTLEN - 3)
    hlen = 20 + len(opts)
    return (bytes([0x40 | hlen >> 2, tos, 0, 0, 0, 0, 0x40 if df else 0, 0, ttl, IPPROTO_ICMP,
                   0, 0]) + src.to_bytes(4, "big") + dst.to_bytes(4, "big") + opts)


def main(ctx: Context, argv: list[str]) -> int:
    if "-6" in argv:  # FreeBSD 13+: `ping -6` is ping6 (vimage.cli.ping6)
        from vimage.cli import ping6

        return ping6.main(ctx, [a for a in argv if a != "-6"])
    opts, args = getopts(argv, "ac:DfLi:m:noQqRS:s:T:t:W:p:z:")
    o = PingOptions()
    datalen = DEFDATALEN
    ttl: int | None = None
    mttl: int | None = None
    tos = 0
    once = flood = audible = quiet2 = rroute = noloop = interval = False
    pattern: bytes | None = None
    for opt, val in opts:
        if o.take(opt, val):
            interval = interval or opt == "-i"
            continue
        if opt == "-m":
            ttl = int_arg(val, "TTL", 0, 255)
        elif opt == "-T":
            mttl = int_arg(val, "multicast TTL", 0, 255)
        elif opt == "-z":
            tos = int_arg(val, "TOS", 0, 255)
        elif opt == "-p":
            pattern = parse_pattern(val)
        elif opt == "-o":
            once = True
        elif opt == "-f":
            flood = True
        elif opt == "-a":
            audible = True
        elif opt == "-Q":
            quiet2 = True
        elif opt == "-R":
            rroute = True
        elif opt == "-L":
            noloop = True
        elif opt == "-s":
            datalen = int_arg(val, "packet size", 0, 2**31 - 1)
        # -n: addresses are never resolved to names anyway
    maxpayload = MAXPAYLOAD - (MAX_IPOPTLEN if rroute else 0)
    if datalen > maxpayload:
        raise UsageError(f"packet size too large: {datalen} > {maxpayload}")
    hostname = o.host(args)
    vnet = ctx.vnet
    dst = resolve(vnet, hostname)
    if flood and interval:
        raise UsageError("-f and -i: incompatible options")
    if flood and is_multicast(dst):
        raise UsageError("-f flag cannot be used with multicast destination")
    if (noloop or mttl is not None) and not is_multicast(dst):
        raise UsageError("-I, -L, -T flags cannot be used with unicast destination")
    if pattern is not None and not o.quiet:
        ctx.print("PATTERN: 0x" + pattern.hex())
    with vnet.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) as sock:
        src = 0
        if o.source is not None:
            src = resolve(vnet, o.source)
            try:
                sock.bind((ipv4.ntoa(src), 0))
            except OSError as exc:
                raise ToolError(f"bind: {exc.strerror or exc}") from None
        header = None
        if o.dontfrag or tos or rroute or mttl is not None:  # ping.c's F_HDRINCL
            hdr_ttl = ttl if ttl is not None else mttl if mttl is not None else vnet.ip.ttl
            header = build_header(tos, o.dontfrag, hdr_ttl, src, dst, rroute)
            sock.setsockopt(IPPROTO_IP, IP_HDRINCL, 1)
        elif ttl is not None:
            sock.setsockopt(IPPROTO_IP, IP_TTL, ttl)
        sock.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)  # FreeBSD raw sockets may always broadcast
        sock.setsockopt(SOL_SOCKET, SO_RCVBUF, RECV_BUF)
        sock.setsockopt(SOL_SOCKET, SO_SNDBUF, RECV_BUF)
        from_text = f" from {o.source}" if o.source is not None else ""
        ctx.print(f"PING {hostname} ({ipv4.ntoa(dst)}){from_text}: {datalen} data bytes")
        pinger = Pinger(ctx, sock, dst, vnet.rng.getrandbits(16), datalen, o.quiet, o.waittime_ms)
        pinger.header = header
        pinger.flood, pinger.audible, pinger.quiet2 = flood, audible, quiet2
        if pattern and datalen > TIMELEN:
            reps = -(-(datalen - TIMELEN) // len(pattern))
            pinger.filler = (pattern * reps)[:datalen - TIMELEN]
        try:
            run(pinger, o.npackets, FLOOD_INTERVAL_NS if flood else o.interval_ns, o.alarm,
                once, MAXWAIT_MS if o.waittime_ms is None else o.waittime_ms, flood=flood)
        except OSError:
            if vnet.alive:
                raise
            # destroyed under us (its sockets closed): the statistics so far, then why,
            # as an interrupted FreeBSD ping prints its statistics before it exits
    pinger.summary(hostname)
    if not vnet.alive:
        raise ToolError(destroyed(vnet))
    return 0 if pinger.nreceived else 2
