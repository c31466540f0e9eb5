"""traceroute6(8): UDP probes with growing hop limits; the answers are ICMPv6 time
exceeded (a router on the way) and port unreachable (the destination).

    traceroute6 [-n] [-f firsthop] [-m hoplimit] [-p port] [-q probes] [-s src]
                [-w waittime] target [datalen]

Until AF_INET6 sockets exist for tools, probes go out through `vnet.ip6.output` (a UDP
header made here, checksummed over the IPv6 pseudo-header) and answers are heard on
the vnet's ICMPv6 input (`vnet.icmp6.add_listener`), as ping6 does. Probe number
`seq` goes to port `port + seq` from one source port, which is how an answer quoting
it is matched, as traceroute6.c does. A destination with no UDP over IPv6 answers
with a parameter problem (unrecognised next header): that counts as got there.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import ToolError, UsageError, destroyed
from vimage.cli._inet6 import parse_scoped
from vimage.cli._ping_common import timeout_for
from vimage.cli._util import getopts
from vimage.cli.traceroute import _int_arg, hop_text, probe_data
from vimage.sched import NS_PER_S
from vimage.socket.socket import initial_fib
from vimage.wire import WireError
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6
from vimage.wire.checksum import checksum

if TYPE_CHECKING:
    from vimage.cli import Context
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

DEFAULT_PORT = 32768 + 666
DEFAULT_DATALEN = 20  # traceroute6.c: "20 byte packets" (UDP header and its data)
MAX_HOPS = 255
USAGE = """\
usage: traceroute6 [-n] [-f firsthop] [-m hoplimit] [-p port] [-q probes]
                   [-s src] [-w waittime] target [datalen]
"""

# ICMPv6 unreachable code -> (mark, counts as got there)
_MARKS = MappingProxyType({
    wicmp6.UNREACH_NOROUTE: (" !N", False),
    wicmp6.UNREACH_ADMIN: (" !P", False),
    wicmp6.UNREACH_BEYONDSCOPE: (" !S", False),
    wicmp6.UNREACH_ADDR: (" !A", False),
})


def udp6(sport: int, dport: int, data: bytes, src: int, dst: int) -> bytes:
    """A UDP datagram with its checksum over the IPv6 pseudo-header (RFC 8200 8.1)."""
    length = 8 + len(data)
    head = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + length.to_bytes(2, "big")
    csum = checksum(head + b"\x00\x00" + data, wip6.pseudo_sum(src, dst, length, wip6.NXT_UDP))
    return head + (csum or 0xFFFF).to_bytes(2, "big") + data


class Tracer:
    """Collects the ICMPv6 errors quoting our probes (a listener on icmp6 input)."""

    def __init__(self, vnet: Vnet, src: int, dst: int, sport: int) -> None:
        self.vnet = vnet
        self.src = src
        self.dst = dst
        self.sport = sport
        self.inbox: list[tuple[int, int, int, int, int]] = []  # (dport, type, code, from, hlim)

    def hear(self, _ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        try:
            msg = wicmp6.parse(pkt[off:], src, dst)
        except WireError:
            return
        if msg.type not in (wicmp6.TIME_EXCEEDED, wicmp6.DST_UNREACH, wicmp6.PARAM_PROB):
            return
        quoted = bytes(msg.payload)
        if len(quoted) < wip6.HEADER_LEN + 8 or quoted[6] != wip6.NXT_UDP:
            return
        if int.from_bytes(quoted[24:40], "big") != self.dst:
            return
        udp = quoted[wip6.HEADER_LEN:]
        if int.from_bytes(udp[0:2], "big") != self.sport:
            return
        self.inbox.append((int.from_bytes(udp[2:4], "big"), msg.type, msg.code, src, pkt[7]))


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "f:m:np:q:s:w:")
    vnet = ctx.vnet
    first, max_hops, nprobes, waittime, port = 1, vnet.ip6.hlim, 3, 5, DEFAULT_PORT
    source: str | None = None
    numeric = False
    for opt, val in opts:
        if opt == "-f":
            first = _int_arg(val, "first hop limit", 1, MAX_HOPS)
        elif opt == "-m":
            max_hops = _int_arg(val, "hoplimit", 1, MAX_HOPS)
        elif opt == "-n":
            numeric = True
        elif opt == "-p":
            port = _int_arg(val, "port", 1, 65535)
        elif opt == "-q":
            nprobes = _int_arg(val, "probes", 1, 1000)
        elif opt == "-s":
            source = val
        elif opt == "-w":
            waittime = _int_arg(val, "wait time", 1, 24 * 60 * 60)
    if not 1 <= len(args) <= 2:
        raise UsageError(synopsis=True)
    if first > max_hops:
        raise UsageError(f"first hop limit ({first}) may not be greater than hoplimit "
                         f"({max_hops})")
    datalen = DEFAULT_DATALEN
    if len(args) == 2:
        datalen = _int_arg(args[1], "datalen", 8, 65535 - 40)
    hostname = args[0]
    dst, zone = parse_scoped(vnet, hostname, "target")
    if wip6.needs_zone(dst) and zone is None:
        raise ToolError(f"{hostname}: a link-local target needs a zone (%interface)")
    try:
        src = (parse_scoped(vnet, source, "source")[0] if source is not None
               else vnet.ip6.select_source(dst, zone, initial_fib(vnet)))
    except OSError as exc:
        raise ToolError(f"connect: {exc.strerror or exc}") from None
    sport = 0x8000 | vnet.rng.getrandbits(15)  # traceroute6 binds an ephemeral port
    from_text = f" from {wip6.ntoa(src)}"
    ctx.print(f"traceroute6 to {hostname} ({wip6.ntoa(dst)}){from_text}, {max_hops} hops "
              f"max, {datalen} byte packets")
    tracer = Tracer(vnet, src, dst, sport)
    vnet.icmp6.add_listener(tracer.hear)
    try:
        trace(ctx, tracer, zone, range(first, max_hops + 1), nprobes, waittime * NS_PER_S,
              port, datalen - 8, numeric)
    finally:
        vnet.icmp6.remove_listener(tracer.hear)
    if not vnet.alive:
        raise ToolError(destroyed(vnet))
    return 0


def trace(ctx: Context, tracer: Tracer, zone: Ifnet | None, hops: range, nprobes: int,
          wait_ns: int, port: int, datalen: int, numeric: bool) -> None:
    vnet = tracer.vnet
    kernel = vnet.kernel
    seq = 0
    for hlim in hops:
        line = f"{hlim:2d} "
        lastaddr: int | None = None
        got_there = False
        unreachable = 0
        for _ in range(nprobes):
            seq += 1
            dport = (port + seq) & 0xFFFF
            sent = kernel.now_ns()
            data = probe_data(seq, hlim, sent, datalen)
            try:
                vnet.ip6.output(wip6.NXT_UDP, tracer.src, tracer.dst,
                                udp6(tracer.sport, dport, data, tracer.src, tracer.dst),
                                hlim=hlim, ifp=zone, fib=initial_fib(vnet))
            except OSError as exc:
                ctx.print(f"traceroute6: sendto: {exc.strerror or exc}")
            reply = _wait(kernel, tracer, sent + wait_ns, dport)
            if reply is None:
                line += " *"
                continue
            _dport, type_, code, frm, rhlim = reply
            if frm != lastaddr:
                line += hop_text(wip6.ntoa(frm), numeric)
                lastaddr = frm
            line += f"  {(kernel.now_ns() - sent) / 1e6:.3f} ms"
            if type_ == wicmp6.TIME_EXCEEDED:
                continue
            if type_ == wicmp6.PARAM_PROB or code == wicmp6.UNREACH_NOPORT:
                if type_ == wicmp6.DST_UNREACH and rhlim <= 1:
                    line += " !"
                got_there = True
                continue
            mark, there = _MARKS.get(code, (f" !<{code}>", False))
            line += mark
            if there:
                got_there = True
            else:
                unreachable += 1
        ctx.print(line)
        if not vnet.alive or got_there or (unreachable and unreachable >= nprobes - 1):
            return


def _wait(kernel, tracer: Tracer, deadline: int,  # type: ignore[no-untyped-def]
          dport: int) -> tuple[int, int, int, int, int] | None:
    while True:
        while tracer.inbox:
            reply = tracer.inbox.pop(0)
            if reply[0] == dport:
                return reply
        now = kernel.now_ns()
        if now >= deadline or not tracer.vnet.alive:
            return None
        kernel.wait(lambda: bool(tracer.inbox) or not tracer.vnet.alive,
                    timeout_for(deadline - now))
