"""ping6(8) (and `ping -6`, FreeBSD 13+): ICMPv6 echo, output as FreeBSD's ping6 prints it.

    ping6 [-Dnq] [-c count] [-h hoplimit] [-I iface] [-i wait] [-S sourceaddr]
          [-s packetsize] [-t timeout] [-W waittime] host

There are no raw ICMPv6 sockets yet: ping6 listens on the vnet's ICMPv6 input
(`vnet.icmp6.add_listener`) and sends through `vnet.ip6.output`. One of -c or -t is
required (there is no ^C inside `vnet.cmd`). A link-local host takes its zone as
`fe80::1%epair0a` or from -I.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import ToolError, destroyed
from vimage.cli._inet6 import parse_scoped
from vimage.cli._ping_common import (
    MAXWAIT_MS,
    PingBase,
    PingOptions,
    int_arg,
    run,
    timeout_for,
)
from vimage.cli._util import getopts
from vimage.socket.socket import initial_fib
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6
from vimage.wire.ipv6 import NXT_ICMPV6

if TYPE_CHECKING:
    from vimage.cli import Context
    from vimage.net.ifnet import Ifnet

DEFDATALEN = 56
MAXDATALEN = 65535 - 8
USAGE = """\
usage: ping6 [-Dnq] [-c count] [-h hoplimit] [-I iface] [-i wait]
             [-S sourceaddr] [-s packetsize] [-t timeout] [-W waittime] host
"""

_UNREACH = MappingProxyType({
    wicmp6.UNREACH_NOROUTE: "No Route to Destination",
    wicmp6.UNREACH_ADMIN: "Administratively Prohibited",
    wicmp6.UNREACH_BEYONDSCOPE: "Beyond Scope of Source Address",
    wicmp6.UNREACH_ADDR: "Destination Host Unreachable",
    wicmp6.UNREACH_NOPORT: "Destination Port Unreachable",
})
_PARAMPROB = MappingProxyType({
    wicmp6.PARAMPROB_HEADER: "Erroneous Header Field",
    wicmp6.PARAMPROB_NEXTHEADER: "Unknown Nextheader",
    wicmp6.PARAMPROB_OPTION: "Unrecognized Option",
})


def describe(msg: wicmp6.Icmp6Repr) -> str:
    """ping6.c pr_icmph's words for an error."""
    if msg.type == wicmp6.DST_UNREACH:
        return _UNREACH.get(msg.code, f"Destination Unreachable, Bad Code: {msg.code}")
    if msg.type == wicmp6.PACKET_TOO_BIG:
        return f"Packet too big mtu = {msg.rest}"
    if msg.type == wicmp6.TIME_EXCEEDED:
        if msg.code == wicmp6.TIME_EXCEED_TRANSIT:
            return "Time to live exceeded"
        if msg.code == wicmp6.TIME_EXCEED_REASSEMBLY:
            return "Frag reassembly time exceeded"
        return f"Time exceeded, Bad Code: {msg.code}"
    if msg.type == wicmp6.PARAM_PROB:
        text = _PARAMPROB.get(msg.code, f"Bad Code: {msg.code}")
        return f"Parameter problem: {text} pointer = 0x{msg.rest:02x}"
    return f"Bad ICMP type: {msg.type}"


class Pinger6(PingBase):
    """One run: what was sent and heard, and the round-trip sums."""

    PROG = "ping6"
    STDDEV = "std-dev"
    CHECK_EXCESS = False

    def __init__(self, ctx: Context, dst: int, src: int, ifp: Ifnet | None, ident: int,
                 datalen: int, hlim: int | None, quiet: bool, dontfrag: bool) -> None:
        super().__init__(ctx, ident, datalen, quiet)
        self.vnet = ctx.vnet
        self.dst, self.src, self.ifp = dst, src, ifp
        self.hlim = hlim
        self.dontfrag = dontfrag
        self.fib = initial_fib(self.vnet)  # setfib: the process's fib, as its socket's
        self.inbox: list[tuple[bytes, int, int]] = []

    def hear(self, _ifp: Ifnet, pkt: bytes, off: int, src: int, _dst: int) -> None:
        self.inbox.append((pkt, off, src))

    def running(self) -> bool:
        return self.vnet.alive

    def poll(self, timeout_ns: int) -> None:
        """Wait for the listener to hear something, then read all it heard."""
        if not self.inbox:
            self.kernel.wait(lambda: bool(self.inbox) or not self.vnet.alive,
                             timeout_for(timeout_ns))
        while self.inbox:
            self.receive(*self.inbox.pop(0))

    def send(self) -> None:
        seq, data = self.next_echo()
        msg = wicmp6.build_echo(wicmp6.ECHO_REQUEST, self.ident, seq, data, self.src, self.dst)
        try:
            self.vnet.ip6.output(NXT_ICMPV6, self.src, self.dst, msg, hlim=self.hlim,
                                 ifp=self.ifp, dontfrag=self.dontfrag, fib=self.fib)
            self.vnet.icmp6.stats.outhist[wicmp6.ECHO_REQUEST] += 1
        except OSError as exc:
            self.ctx.print(f"ping6: sendmsg: {exc.strerror or exc}")
        self.ntransmitted += 1

    def receive(self, pkt: bytes, off: int, src: int) -> None:
        """pr_pack: an echo reply of ours, or an error quoting one of our requests."""
        try:
            msg = wicmp6.parse(pkt[off:], src, int.from_bytes(pkt[24:40], "big"))
        except ValueError:
            return
        cc = len(pkt) - off
        if msg.type == wicmp6.ECHO_REPLY and msg.ident == self.ident:
            self._reply(msg, cc, src, pkt[7])
        elif msg.is_error and not self.quiet:
            quoted = bytes(msg.payload)
            if (len(quoted) >= 48 and int.from_bytes(quoted[24:40], "big") == self.dst
                    and quoted[40] == wicmp6.ECHO_REQUEST
                    and int.from_bytes(quoted[44:46], "big") == self.ident):
                self.ctx.print(f"{cc} bytes from {wip6.ntoa(src)}: {describe(msg)}")

    def _reply(self, msg: wicmp6.Icmp6Repr, cc: int, src: int, hlim: int) -> None:
        timed, triptime = self.time_reply(msg.payload)
        seq = msg.seq
        dup = self.is_dup(seq)
        if self.quiet:
            return
        name = wip6.ntoa(src) + (f"%{self.ifp.name}" if self.ifp is not None
                                 and wip6.needs_zone(src) else "")
        line = f"{cc} bytes from {name}, icmp_seq={seq} hlim={hlim}"
        if timed:
            line += f" time={triptime:.3f} ms"
        if dup:
            line += "(DUP!)"
        self.ctx.print(line)


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "6c:Dh:I:i:m:nqS:s:t:W:")
    o = PingOptions(waittime_ms=MAXWAIT_MS)
    datalen = DEFDATALEN
    hlim: int | None = None
    iface: str | None = None
    for opt, val in opts:
        if o.take(opt, val):
            continue
        if opt in ("-h", "-m"):
            hlim = int_arg(val, "hoplimit", 0, 255)
        elif opt == "-I":
            iface = val
        elif opt == "-s":
            datalen = int_arg(val, "packet size", 0, MAXDATALEN)
    hostname = o.host(args)
    vnet = ctx.vnet
    dst, ifp = parse_scoped(vnet, hostname, "host")
    if iface is not None:
        ifp = vnet.ifaces.get(iface)
        if ifp is None:
            raise ToolError(f"{iface}: no such interface")
    if ifp is None and wip6.needs_zone(dst):
        raise ToolError(f"{hostname}: a link-local or multicast host needs a zone (-I or %if)")
    try:
        src = (parse_scoped(vnet, o.source, "source")[0] if o.source is not None
               else vnet.ip6.select_source(dst, ifp, initial_fib(vnet)))
    except OSError as exc:
        raise ToolError(f"UDP connect: {exc.strerror or exc}") from None
    ctx.print(f"PING6({40 + 8 + datalen}=40+8+{datalen} bytes) {wip6.ntoa(src)} --> "
              f"{wip6.ntoa(dst)}")
    pinger = Pinger6(ctx, dst, src, ifp, vnet.rng.getrandbits(16), datalen, hlim, o.quiet,
                     o.dontfrag)
    vnet.icmp6.add_listener(pinger.hear)
    try:
        run(pinger, o.npackets, o.interval_ns, o.alarm, False, o.waittime_ms)
    finally:
        vnet.icmp6.remove_listener(pinger.hear)
    pinger.summary(hostname)
    if not vnet.alive:
        raise ToolError(destroyed(vnet))
    return 0 if pinger.nreceived else 2
