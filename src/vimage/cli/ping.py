"""ping(8): ICMP echo over a raw socket, as FreeBSD's ping does it.

    ping [-Dnoq] [-c count] [-i wait] [-m ttl] [-S src_addr] [-s packetsize]
         [-t timeout] [-W waittime] host

There is no ^C inside `vnet.cmd`, so one of -c or -t is required. Waiting is
done with socket timeouts; in virtual time the kernel clock jumps through them,
so a run is instant and its round-trip times are exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage import netdb
from vimage.cli import ToolError, UsageError, destroyed
from vimage.cli._ping_common import (
    MAXWAIT_MS,
    PingBase,
    PingOptions,
    int_arg,
    run,
    timeout_for,
)
from vimage.cli._util import getopts
from vimage.socket.socket import (
    AF_INET,
    IP_DONTFRAG,
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
usage: ping [-Dnoq] [-c count] [-i wait] [-m ttl] [-S src_addr] [-s packetsize]
            [-t timeout] [-W waittime] host
       ping -6 [ping6 options] host
"""

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
        return f"Redirect (New addr: {ipv4.ntoa(msg.rest)})"
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

    def send(self) -> None:
        """Send echo request number `ntransmitted`; a send error is reported, not fatal."""
        seq, data = self.next_echo()
        packet = wicmp.build_echo(wicmp.ECHO, self.ident, seq, data)
        try:
            self.sock.sendto(packet, (ipv4.ntoa(self.dst), 0))
        except OSError as exc:
            self.ctx.print(f"ping: sendto: {exc.strerror or exc}")
        self.ntransmitted += 1

    def poll(self, timeout_ns: int) -> None:
        self.sock.settimeout(timeout_for(timeout_ns))
        try:
            pkt, (src, _port) = self.sock.recvfrom(RECV_BUF)
        except TimeoutError:
            return
        self.receive(pkt, src)

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
            self._echo_reply(msg, cc, src, pkt[8])
        elif msg.type in wicmp.ERROR_TYPES:
            self._error(msg, cc, src)

    def _echo_reply(self, msg: wicmp.IcmpRepr, cc: int, src: str, ttl: int) -> None:
        timed, triptime = self.time_reply(msg.payload)
        if self.waittime_ms is not None and triptime > self.waittime_ms:
            self.nrcvtimeout += 1
            return
        seq = msg.seq
        dup = self.is_dup(seq)
        if self.quiet:
            return
        line = f"{cc} bytes from {src}: icmp_seq={seq} ttl={ttl}"
        if timed:
            line += f" time={triptime:.3f} ms"
        if dup:
            line += " (DUP!)"
        if len(msg.payload) < self.datalen:
            line += " (TRUNC!)"
        self.ctx.print(line)

    def _error(self, msg: wicmp.IcmpRepr, cc: int, src: str) -> None:
        """Print an ICMP error if it quotes one of our echo requests."""
        quoted = bytes(msg.payload)
        if len(quoted) < 20:
            return
        qhlen = (quoted[0] & 0x0F) << 2
        if len(quoted) < qhlen + 8:
            return
        if (int.from_bytes(quoted[16:20], "big") != self.dst or quoted[9] != IPPROTO_ICMP
                or quoted[qhlen] != wicmp.ECHO
                or int.from_bytes(quoted[qhlen + 4:qhlen + 6], "big") != self.ident):
            return
        if self.quiet:
            return
        self.ctx.print(f"{cc} bytes from {src}: {describe_error(msg)}")
        for line in dump_ip_header(quoted):
            self.ctx.print(line)
        self.ctx.print()


def main(ctx: Context, argv: list[str]) -> int:
    if "-6" in argv:  # FreeBSD 13+: `ping -6` is ping6 (vimage.cli.ping6)
        from vimage.cli import ping6

        return ping6.main(ctx, [a for a in argv if a != "-6"])
    opts, args = getopts(argv, "c:Di:m:noqS:s:t:W:")
    o = PingOptions()
    datalen = DEFDATALEN
    ttl: int | None = None
    once = False
    for opt, val in opts:
        if o.take(opt, val):
            continue
        if opt == "-m":
            ttl = int_arg(val, "TTL", 0, 255)
        elif opt == "-o":
            once = True
        elif opt == "-s":
            datalen = int_arg(val, "packet size", 0, 2**31 - 1)
            if datalen > MAXPAYLOAD:
                raise UsageError(f"packet size too large: {datalen} > {MAXPAYLOAD}")
        # -n: addresses are never resolved to names anyway
    hostname = o.host(args)
    vnet = ctx.vnet
    dst = resolve(vnet, hostname)
    with vnet.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) as sock:
        if o.source is not None:
            src = resolve(vnet, o.source)
            try:
                sock.bind((ipv4.ntoa(src), 0))
            except OSError as exc:
                raise ToolError(f"bind: {exc.strerror or exc}") from None
        if ttl is not None:
            sock.setsockopt(IPPROTO_IP, IP_TTL, ttl)
        if o.dontfrag:
            sock.setsockopt(IPPROTO_IP, IP_DONTFRAG, 1)
        sock.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)  # FreeBSD raw sockets may always broadcast
        sock.setsockopt(SOL_SOCKET, SO_RCVBUF, RECV_BUF)
        sock.setsockopt(SOL_SOCKET, SO_SNDBUF, RECV_BUF)
        from_text = f" from {o.source}" if o.source is not None else ""
        ctx.print(f"PING {hostname} ({ipv4.ntoa(dst)}){from_text}: {datalen} data bytes")
        pinger = Pinger(ctx, sock, dst, vnet.rng.getrandbits(16), datalen, o.quiet, o.waittime_ms)
        try:
            run(pinger, o.npackets, o.interval_ns, o.alarm, once,
                MAXWAIT_MS if o.waittime_ms is None else o.waittime_ms)
        except OSError:
            if vnet.alive:
                raise
            # destroyed under us (its sockets closed): the statistics so far, then why,
            # as an interrupted FreeBSD ping prints its statistics before it exits
    pinger.summary(hostname)
    if not vnet.alive:
        raise ToolError(destroyed(vnet))
    return 0 if pinger.nreceived else 2
