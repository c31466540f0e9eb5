"""ndp(8): show and edit the vnet's IPv6 neighbour cache.

    ndp -a [-n]             every entry (our own addresses as permanent ones)
    ndp -c [-n]             flush the dynamic entries
    ndp -d HOST             delete one
    ndp -s HOST MAC         a permanent entry
    ndp HOST                one entry

A link-local HOST takes its zone as `fe80::1%epair0a`. Columns and the S column's
letters (I, R, S, D, P) as FreeBSD's ndp.c prints them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._inet6 import parse_scoped
from vimage.cli._util import getopts, parse_mac
from vimage.netinet6 import in6
from vimage.netinet6.nd6 import STATE_LETTERS
from vimage.sched import NS_PER_S
from vimage.wire import ipv6 as wip6

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

W_ADDR, W_LL, W_IF = 36, 17, 6  # ndp.c's widths (a longer interface name is not cut)
USAGE = """\
usage: ndp [-nt] hostname
       ndp [-nt] -a | -c
       ndp [-nt] -d hostname
       ndp [-nt] -s nodename etheraddr [temp] [proxy]
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "acdnst")
    given = {o for o, _ in opts}
    modes = given & {"-a", "-c", "-d", "-s"}
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(sorted(modes))} cannot be combined", synopsis=True)
    vnet = ctx.vnet
    if "-a" in given or "-c" in given:
        if args:
            raise UsageError(f"unexpected argument '{args[0]}'", synopsis=True)
        if "-c" in given:
            for entry in [e for e in vnet.nd6.entries() if not e.static]:
                vnet.nd6.delete(entry.ifp, entry.addr)
                ctx.print(f"{_name(entry.addr, entry.ifp)} ({_name(entry.addr, entry.ifp)})"
                          " deleted")
            return 0
        for line in table_lines(vnet):
            ctx.print(line)
        return 0
    if "-s" in given:
        if len(args) not in (2, 3) or (len(args) == 3 and args[2] != "temp"):
            raise UsageError(synopsis=True)
        addr, ifp = _host(vnet, args[0])
        vnet.nd6.set_static(ifp, addr, parse_mac(args[1]))
        return 0
    if len(args) != 1:
        raise UsageError(synopsis=True)
    addr, ifp = _host(vnet, args[0])
    if "-d" in given:
        if not vnet.nd6.delete(ifp, addr):
            raise ToolError(f"delete: cannot locate {args[0]}")
        ctx.print(f"{_name(addr, ifp)} ({_name(addr, ifp)}) deleted")
        return 0
    rows = [r for r in _rows(vnet) if r[0] == addr and r[1] is ifp]
    if not rows:
        raise ToolError(f"{args[0]} ({args[0]}) -- no entry")
    ctx.print(_header())
    for row in rows:
        ctx.print(_format(vnet, *row))
    return 0


def _host(vnet: Vnet, text: str) -> tuple[int, Ifnet]:
    """The address and the link of HOST: its zone, or the interface its route leaves by."""
    addr, ifp = parse_scoped(vnet, text, "host")
    if ifp is None:
        route = vnet.rt6.lookup(addr)
        if route is None or route.ifp.is_loopback or route.ifp.mac is None:
            raise ToolError(f"{text}: not on an Ethernet link of this vnet")
        ifp = route.ifp
    return addr, ifp


def _name(addr: int, ifp: Ifnet) -> str:
    return wip6.ntoa(addr) + (f"%{ifp.name}" if wip6.needs_zone(addr) else "")


def _header() -> str:
    return (f"{'Neighbor':<{W_ADDR}} {'Linklayer Address':<{W_LL}} {'Netif':>{W_IF}} "
            f"{'Expire':<9} S Flags")


def sec2str(seconds: int) -> str:
    """ndp.c's sec2str: `1d2h3m4s`, leading zero units left out."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    out = ""
    if days:
        out += f"{days}d"
    if out or hours:
        out += f"{hours}h"
    if out or mins:
        out += f"{mins}m"
    return out + f"{secs}s"


# (address, interface, MAC or None, expiry ns or None for permanent, state letter, router)
_Row = tuple[int, "Ifnet", "bytes | None", "int | None", str, bool]


def _rows(vnet: Vnet) -> list[_Row]:
    rows: list[_Row] = []
    for ifp in vnet.ifaces.values():
        if ifp.mac is None:
            continue
        for ia in in6.addrs(ifp):  # our own addresses: permanent entries (LLE_IFADDR)
            rows.append((ia.addr, ifp, ifp.mac, None, "R", False))
    for e in vnet.nd6.entries():
        rows.append((e.addr, e.ifp, e.mac, None if e.static else e.expire_ns,
                     STATE_LETTERS[e.state], e.isrouter))
    rows.sort(key=lambda r: (r[1].index, r[0]))
    return rows


def _format(vnet: Vnet, addr: int, ifp: Ifnet, mac: bytes | None, expire: int | None,
            state: str, router: bool) -> str:
    now = vnet.kernel.now_ns()
    if expire is None:
        when = "permanent"
    elif expire > now:
        when = sec2str((expire - now + NS_PER_S - 1) // NS_PER_S)
    else:
        when = "expired"
    ll = mac.hex(":") if mac is not None else "(incomplete)"
    return (f"{_name(addr, ifp):<{W_ADDR}.{W_ADDR}} {ll:<{W_LL}.{W_LL}} "
            f"{ifp.name:>{W_IF}} {when:<9.9} {state} {'R' if router else ''}")


def table_lines(vnet: Vnet) -> list[str]:
    return [_header(), *(_format(vnet, *row) for row in _rows(vnet))]
