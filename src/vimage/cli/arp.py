"""arp(8): show and edit the vnet's ARP table.

    arp [-n] [-i IF] HOST
    arp [-n] [-i IF] -a
    arp -d HOST
    arp -d [-i IF] -a
    arp -s | -S HOST MAC [temp]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import find_iface, getopts, parse_addr, parse_mac
from vimage.net.route import RTF_BLACKHOLE, RTF_GATEWAY, RTF_REJECT
from vimage.netinet.arp import REACHABLE, STATIC
from vimage.sched import NS_PER_S
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.arp import ArpEntry
    from vimage.vnet import Vnet


# arp(8)'s usage(), the forms vimage implements (no pub, reject, blackhole or -f)
USAGE = """\
usage: arp [-n] [-i interface] hostname
       arp [-n] [-i interface] -a
       arp -d hostname
       arp -d [-i interface] -a
       arp -s hostname ether_addr [temp]
       arp -S hostname ether_addr [temp]
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "adi:nSs")
    given = {o for o, _ in opts}
    only = find_iface(ctx.vnet, dict(opts)["-i"]) if "-i" in given else None
    modes = given & {"-d", "-s", "-S"}
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(sorted(modes))} cannot be combined")
    vnet = ctx.vnet
    if "-s" in given or "-S" in given:
        if "-a" in given:
            raise UsageError("-s cannot be combined with -a")
        return set_entry(vnet, args)
    if "-d" in given:
        if "-a" in given:
            if args:
                raise UsageError(f"unexpected argument '{args[0]}' with -d -a")
            for entry in [e for e in vnet.arp.entries() if only is None or e.ifp is only]:
                vnet.arp.delete(entry.addr)
                ctx.print(f"{ntoa(entry.addr)} ({ntoa(entry.addr)}) deleted")
            return 0
        if len(args) != 1:
            raise UsageError()
        addr = parse_addr(args[0], "host")
        if addr not in vnet.arp.table:
            raise ToolError(f"{args[0]}: not in arp table")
        vnet.arp.delete(addr)
        ctx.print(f"{args[0]} ({ntoa(addr)}) deleted")
        return 0
    if "-a" in given:
        if args:
            raise UsageError(f"unexpected argument '{args[0]}' with -a")
        for _addr, line in table_lines(vnet, only):
            ctx.print(line)
        return 0
    if len(args) != 1:
        raise UsageError()
    addr = parse_addr(args[0], "host")
    for found, line in table_lines(vnet, only):
        if found == addr:
            ctx.print(line)
            return 0
    ctx.print(f"{args[0]} ({ntoa(addr)}) -- no entry")
    return 1


def _line(addr: int, mac: bytes | None, ifp: Ifnet, status: str) -> str:
    at = mac.hex(":") if mac is not None else "(incomplete)"
    return f"? ({ntoa(addr)}) at {at} on {ifp.name} {status} [ethernet]"


def _status(vnet: Vnet, entry: ArpEntry) -> str:
    if entry.state == STATIC:
        return "permanent"
    if entry.state == REACHABLE and entry.mac is not None:
        left = (entry.expire_ns - vnet.kernel.now_ns()) // NS_PER_S
        if left > 0:
            return f"expires in {left} seconds"
    return "expired"


def table_lines(vnet: Vnet, only: Ifnet | None = None) -> list[tuple[int, str]]:
    """(address, line) for every entry, the vnet's own Ethernet addresses included."""
    rows: dict[int, str] = {}
    for ifp in vnet.ifaces.values():
        if ifp.mac is None or (only is not None and ifp is not only):
            continue
        for ia in ifp.addrs:
            rows[ia.addr] = _line(ia.addr, ifp.mac, ifp, "permanent")
    for entry in vnet.arp.entries():
        if entry.addr in rows or (only is not None and entry.ifp is not only):
            continue
        rows[entry.addr] = _line(entry.addr, entry.mac, entry.ifp, _status(vnet, entry))
    return sorted(rows.items())


def set_entry(vnet: Vnet, args: list[str]) -> int:
    """`arp -s HOST MAC [temp]`: a static (or, with temp, an expiring) entry."""
    if len(args) < 2:
        raise UsageError()
    temp = False
    for word in args[2:]:
        if word == "temp":
            temp = True
        elif word in ("pub", "only", "blackhole", "reject"):
            raise ToolError(f"'{word}' entries are not supported")
        else:
            raise UsageError(f"unexpected argument '{word}'")
    addr = parse_addr(args[0], "host")
    mac = parse_mac(args[1])
    if mac[0] & 1:
        raise ToolError(f"{args[1]}: multicast or broadcast address")
    route = vnet.rt.lookup(addr)
    if (route is None or route.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE)
            or route.ifp.mac is None or addr in vnet.ip.local):
        raise ToolError(f"cannot intuit interface index and type for {ntoa(addr)}")
    arp = vnet.arp
    arp.set_static(route.ifp, addr, mac, temporary=temp)
    return 0
