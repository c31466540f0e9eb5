"""rtquery(8): ask a RIP speaker for its routing table and print the answer.

    rtquery [-1] [-n] [-r addr] [-w timeout] host ...

A RIPv2 request (-1: RIPv1) for the whole table, or with -r for the route to `addr`,
sent from an ephemeral port to `host` port 520; every response until `timeout`
seconds (default 15, the kernel's clock: virtual time costs nothing) is printed as
FreeBSD's rtquery prints it: a line per response, then one per entry. -n is accepted
(vimage prints addresses numerically anyway).
"""

from __future__ import annotations

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts, parse_addr
from vimage.net.route import MASKS
from vimage.wire import WireError, ipv4, rip

USAGE = "usage: rtquery [-1] [-n] [-r addr] [-w timeout] host ...\n"


def main(ctx: Context, argv: list[str]) -> int:
    opts, hosts = getopts(argv, "1nr:w:")
    if not hosts:
        raise UsageError(synopsis=True)
    version, timeout, target = 2, 15.0, None
    for opt, value in opts:
        if opt == "-1":
            version = 1
        elif opt == "-w":
            try:
                timeout = float(value)
            except ValueError:
                raise UsageError(f"bad timeout: {value}", synopsis=True) from None
        elif opt == "-r":
            target = parse_addr(value)
    if target is None:
        entry = rip.RipEntry(0, 0, rip.INFINITY, afi=rip.AF_UNSPEC)
    else:
        entry = rip.RipEntry(target, 0 if version == 1 else MASKS[32], rip.INFINITY)
    request = rip.build(rip.REQUEST, version, [entry])
    answered = 0
    for host in hosts:
        answered += _query(ctx, host, request, timeout)
    return 0 if answered else 1


def _query(ctx: Context, host: str, request: bytes, timeout: float) -> int:
    addr = parse_addr(host, "host")
    sock = ctx.vnet.socket(2, 2)
    try:
        sock.settimeout(timeout)
        sock.sendto(request, (ipv4.ntoa(addr), rip.PORT))
        answers = 0
        while True:
            try:
                data, (src, _port) = sock.recvfrom(rip.MAX_PACKET + 512)
            except TimeoutError:
                break
            answers += 1
            _print(ctx, src, data)
            if len(data) < rip.HEADER_LEN + rip.ENTRY_LEN * rip.MAX_ENTRIES:
                break  # a short response is the last one
        if not answers:
            raise ToolError(f"{host}: no response")
        return answers
    finally:
        sock.close()


def _print(ctx: Context, src: str, data: bytes) -> None:
    try:
        pkt = rip.parse(data)
    except WireError as exc:
        ctx.print(f"{src}: bad RIP packet ({exc.reason}), {len(data)} bytes")
        return
    auth = "" if pkt.auth is None else (" (simple password)" if pkt.auth.type == rip.AUTH_SIMPLE
                                        else " (MD5 authenticated)")
    ctx.print(f"{src}:  RIPv{pkt.version}{auth} {len(data)} bytes")
    for e in pkt.entries:
        if e.afi != rip.AF_INET:
            continue
        name = ipv4.ntoa(e.addr)
        if e.mask:
            plen = 32 - (~e.mask & 0xFFFFFFFF).bit_length()
            name += f"/{plen}"
        line = f"     {name:<18} metric {e.metric:2d}"
        if e.nexthop:
            line += f" --> {ipv4.ntoa(e.nexthop)}"
        if e.tag:
            line += f" tag={e.tag:#x}"
        ctx.print(line)
