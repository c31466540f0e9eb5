"""ndp(8): show and edit the vnet's IPv6 neighbour cache.

    ndp -a [-n]             every entry (our own addresses as permanent ones)
    ndp -c [-n]             flush the dynamic entries
    ndp -d HOST             delete one
    ndp -s HOST MAC         a permanent entry
    ndp HOST                one entry
    ndp -r                  the default router list (learnt from RAs)
    ndp -p                  the prefix list (learnt from RAs)
    ndp -i IF [[-]FLAG ...] the link's ND data and flags (nud, accept_rtadv,
                            auto_linklocal, no_dad, ifdisabled), or set flags

A link-local HOST takes its zone as `fe80::1%epair0a`. Columns and the S column's
letters (I, R, S, D, P) as FreeBSD's ndp.c prints them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._inet6 import parse_scoped
from vimage.cli._util import getopts, parse_mac
from vimage.netinet6 import in6, nd6_rtr
from vimage.netinet6.nd6 import STATE_LETTERS, STATE_NAMES
from vimage.sched import NS_PER_S
from vimage.socket.socket import initial_fib
from vimage.wire import icmp6 as wicmp6
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
       ndp -i interface [flags...]
       ndp -p
       ndp -r
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "acdinprst")
    given = {o for o, _ in opts}
    modes = given & {"-a", "-c", "-d", "-s", "-i", "-p", "-r"}
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(sorted(modes))} cannot be combined", synopsis=True)
    vnet = ctx.vnet
    if "-r" in given or "-p" in given:
        if args:
            raise UsageError(f"unexpected argument '{args[0]}'", synopsis=True)
        for line in (router_lines(vnet) if "-r" in given else prefix_lines(vnet)):
            ctx.print(line)
        return 0
    if "-i" in given:
        if not args:
            raise UsageError(synopsis=True)
        for line in ifinfo(vnet, args[0], args[1:]):
            ctx.print(line)
        return 0
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
        route = vnet.route.table6(initial_fib(vnet)).lookup(addr)  # setfib's fib
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


# -- routers, prefixes, interface data (ndp.c rtrlist, plist, ifinfo) -----------------------
_IFINFO_WORDS = (("nud", in6.ND6_IFF_PERFORMNUD), ("ifdisabled", in6.ND6_IFF_IFDISABLED),
                 ("accept_rtadv", in6.ND6_IFF_ACCEPT_RTADV),
                 ("auto_linklocal", in6.ND6_IFF_AUTO_LINKLOCAL),
                 ("no_dad", in6.ND6_IFF_NO_DAD))


def _expire(vnet: Vnet, expire_ns: int) -> str:
    now = vnet.kernel.now_ns()
    if not expire_ns:
        return "Never"
    if expire_ns < now:
        return "expired"
    return sec2str((expire_ns - now) // NS_PER_S)


def router_lines(vnet: Vnet) -> list[str]:
    state = vnet.nd6.rtr_state
    lines = []
    for dr in state.routers if state is not None else ():
        flags = "".join(letter for bit, letter in nd6_rtr.NDRF_ROUTER_FLAGS if dr.flags & bit)
        lines.append(f"{_name(dr.addr, dr.ifp)} if={dr.ifp.name}, flags={flags}, "
                     f"pref={nd6_rtr.PREF_NAMES[dr.pref]}, expire={_expire(vnet, dr.expire_ns)}")
    return lines


def _lifetime(value: int) -> str:
    return "infinity" if value == nd6_rtr.INFINITE else str(value)


def prefix_lines(vnet: Vnet) -> list[str]:
    state = vnet.nd6.rtr_state
    lines = []
    for pr in state.prefixes if state is not None else ():
        flags = ("L" if pr.flags & wicmp6.PREFIX_ONLINK else "") + (
            "A" if pr.flags & wicmp6.PREFIX_AUTO else "") + ("O" if pr.route else "")
        lines.append(f"{wip6.ntoa(pr.prefix)}/{pr.plen} if={pr.ifp.name}")
        lines.append(f"flags={flags} vltime={_lifetime(pr.vltime)}, "
                     f"pltime={_lifetime(pr.pltime)}, expire={_expire(vnet, pr.expire_ns)}, "
                     f"ref={len(pr.advrtrs)}")
        if pr.advrtrs:
            lines.append("  advertised by")
            for addr in sorted(pr.advrtrs):
                entry = vnet.nd6.lookup(pr.ifp, addr)
                st = "no neighbor state" if entry is None else STATE_NAMES[entry.state].lower()
                lines.append(f"    {_name(addr, pr.ifp)} ({st})")
        else:
            lines.append("  No advertising router")
    return lines


def _ms(ms: int) -> str:
    return f"{ms // 1000}s{ms % 1000}ms"


def ifinfo(vnet: Vnet, name: str, words: list[str]) -> list[str]:
    """`ndp -i IF`: the link's ND data; with flag words, set or clear them first."""
    ifp = vnet.ifaces.get(name)
    if ifp is None:
        raise ToolError(f"ioctl(SIOCGIFINFO_IN6): {name}: Invalid argument")
    data = in6.ifdata(ifp)
    table = dict(_IFINFO_WORDS)
    for word in words:
        bit = table.get(word.lstrip("-"))
        if bit is None:
            raise ToolError(f"{word}: unknown flag")
        if word.startswith("-"):
            data.nd_flags &= ~bit
        else:
            before = data.nd_flags
            data.nd_flags |= bit
            if bit == in6.ND6_IFF_ACCEPT_RTADV and not before & bit and ifp.up:
                vnet.nd6.rtr.start_solicit(ifp)
    nd6 = vnet.nd6
    info = nd6.rtr_state.ifinfo.get(ifp.index) if nd6.rtr_state is not None else None
    base = info.basereachable if info is not None and info.basereachable else (
        nd6.nd6_basereachable)
    retrans = info.retrans if info is not None and info.retrans else nd6.nd6_retrans
    reachable = info.reachable if info is not None and info.reachable else base
    linkmtu = info.linkmtu if info is not None and info.linkmtu else ifp.mtu
    chlim = info.chlim if info is not None and info.chlim else vnet.ip6.hlim
    flags = " ".join(w for w, bit in _IFINFO_WORDS if data.nd_flags & bit)
    return [f"linkmtu={linkmtu}, maxmtu={ifp.mtu}, curhlim={chlim}, "
            f"basereachable={_ms(base)}, reachable={reachable // 1000}s, "
            f"retrans={_ms(retrans)}",
            f"Flags: {flags}"]
