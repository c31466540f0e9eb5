"""The IPv6 parts of route(8) and netstat(1) (`route -6`, `route add -inet6`,
`netstat -rn -f inet6`), kept apart from the IPv4 code of those tools.

Both work on one fib's IPv6 table: the process's (setfib), `route -F N` / `-fib N`
(a list as route.c takes it: one change per fib), `netstat -F N`. Changes are told to
the routing sockets of that fib (RTM_ADD, RTM_CHANGE, RTM_DELETE), as route(8)'s
requests would be.

Scoped addresses are written `fe80::1%epair0a`; inside the table their zone is
embedded as KAME does (vimage.netinet6.in6.zkey).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vimage.cli import ToolError, UsageError
from vimage.context import current_fib
from vimage.net import rtsock
from vimage.net.route import (
    MASKS6,
    RTF_BLACKHOLE,
    RTF_GATEWAY,
    RTF_HOST,
    RTF_REJECT,
    RTF_STATIC,
    Route,
    flag_string,
)
from vimage.netinet6 import in6
from vimage.wire import WireError
from vimage.wire import ipv6 as wip6
from vimage.wire.rtmsg import RTM_ADD, RTM_CHANGE, RTM_DELETE

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.net.route import RouteTable
    from vimage.vnet import Vnet

UNREACHABLE = "writing to routing socket: Network is unreachable"
NOT_FOUND = "route has not been found"
RTF_DONE = 0x40


def scoped_name(vnet: Vnet, key: int) -> str:
    """A table key as text: `fe80::1%epair0a` for an embedded zone."""
    addr = in6.unzone(key)
    if addr != key or wip6.needs_zone(addr):
        index = (key >> 96) & 0xFFFF
        ifp = next((i for i in vnet.ifaces.values() if i.index == index), None)
        return f"{wip6.ntoa(addr)}%{ifp.name if ifp is not None else index}"
    return wip6.ntoa(addr)


def parse_scoped(vnet: Vnet, text: str, what: str = "address") -> tuple[int, Ifnet | None]:
    """'fe80::1%epair0a' -> (address, interface); a zone names an interface of `vnet`."""
    try:
        addr, zone = wip6.split_scope(text)
    except WireError:
        raise ToolError(f"bad {what}: {text}") from None
    if not zone:
        return addr, None
    ifp = vnet.ifaces.get(zone)
    if ifp is None:
        raise ToolError(f"bad {what}: {text} (no interface {zone})")
    return addr, ifp


# -- route -6 ---------------------------------------------------------------------------------
def route_main(ctx_print: Callable[..., None], vnet: Vnet, cmd: str, words: list[str],
               fib: int | None = None) -> int:
    """`route -6 add|change|delete|get|show|flush ...` in fib `fib` (None: the
    process's), or in each fib of a `-fib` list."""
    in6.loopback_addrs(vnet)
    words, fibs = _take_fibs(words)
    if fibs is None:
        fibs = [current_fib.get() if fib is None else fib]
    for each in fibs:
        if not 0 <= each < vnet.route.fibs:
            raise ToolError(f"fib {each} is not valid (net.fibs={vnet.route.fibs})")
    if cmd == "flush":
        for each in fibs:
            rt6 = vnet.route.table6(each)
            for route in [r for r in rt6.all_paths() if r.flags & RTF_GATEWAY]:
                rt6.remove_path(route)
                rtsock.route_event6(vnet, RTM_DELETE, route)
                ctx_print(f"{_dest_text(vnet, route.dst, route.plen):<20.20} "
                          f"{_gw_text(route):<20.20} done")
        return 0
    dst, plen, exact, gw_text, flags, interface, mtu = _parse(vnet, cmd, words)
    if cmd in ("get", "show"):
        for line in _get_lines(vnet, fibs[0], dst, plen, exact):
            ctx_print(line)
        return 0
    # route.c prints the destination as typed, cut at its '/' (getaddr cuts it in place)
    dest_text = next(w for w in words if not w.startswith("-")).partition("/")[0]
    kind = "host" if plen == 128 else "net"
    suffix = f": gateway {gw_text}" if gw_text else ""
    for each in fibs:  # route.c's newroute: one request per fib of a -fib list
        _change(vnet, vnet.route.table6(each), cmd, dst, plen, gw_text, flags, interface,
                mtu)
        fib_suffix = f" fib {each}" if len(fibs) > 1 else ""
        ctx_print(f"{cmd} {kind} {dest_text}{suffix}{fib_suffix}")
    return 0


def _take_fibs(words: list[str]) -> tuple[list[str], list[int] | None]:
    """`-fib N` (or a list, `-fib 0,2`, `-fib 1-3`) out of the words: (the others, the
    fibs or None)."""
    from vimage.cli.route import fib_list

    if "-fib" not in words:
        return words, None
    at = words.index("-fib")
    if at + 1 >= len(words):
        raise UsageError("-fib requires a number")
    return words[:at] + words[at + 2:], fib_list(words[at + 1])


def _change(vnet: Vnet, rt6: RouteTable, cmd: str, dst: int, plen: int, gw_text: str,
            flags: int, interface: bool, mtu: int) -> None:
    """add, change or delete in one table, telling that fib's routing sockets."""
    if cmd == "delete":
        if rt6.get(dst, plen) is None:
            raise ToolError(NOT_FOUND)
        for path in rt6.delete(dst, plen).paths:
            rtsock.route_event6(vnet, RTM_DELETE, path)
        return
    ifp, ifa, gateway, rflags = _nexthop(vnet, rt6, gw_text, interface)
    rflags |= flags
    if cmd == "add":
        if rt6.get(dst, plen) is not None:
            raise ToolError("writing to routing socket: File exists")
        route = rt6.add(Route(dst, plen, ifp, rflags, gateway, ifa=ifa, mtu=mtu,  # type: ignore
                              width=128))
        rtsock.route_event6(vnet, RTM_ADD, route)
        return
    route = rt6.get(dst, plen)  # type: ignore[assignment]
    if route is None:
        raise ToolError(NOT_FOUND)
    route.ifp, route.ifa, route.gateway = ifp, ifa, gateway  # type: ignore[assignment]
    route.flags = (route.flags & ~RTF_GATEWAY) | rflags
    if mtu:
        route.mtu = mtu
    rt6.changed()
    rtsock.route_event6(vnet, RTM_CHANGE, route)


def _parse(vnet: Vnet, cmd: str, words: list[str]
           ) -> tuple[int, int, bool, str, int, bool, int]:
    flags = 0
    interface = False
    mtu = 0
    prefixlen: int | None = None
    force: str | None = None
    operands: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-inet6", "-6", "-static"):
            pass
        elif word in ("-net", "-host"):
            force = word[1:]
        elif word == "-prefixlen":
            if i + 1 >= len(words) or not words[i + 1].isdigit() or int(words[i + 1]) > 128:
                raise UsageError("-prefixlen requires a number 0..128")
            prefixlen = int(words[i + 1])
            i += 1
        elif word == "-mtu":
            if i + 1 >= len(words) or not words[i + 1].isdigit():
                raise UsageError("-mtu requires a number")
            mtu = int(words[i + 1])
            if not wip6.MIN_MTU <= mtu <= 65535:
                raise ToolError(f"bad mtu: {mtu} (1280..65535)")
            i += 1
        elif word == "-blackhole":
            flags |= RTF_BLACKHOLE
        elif word == "-reject":
            flags |= RTF_REJECT
        elif word in ("-interface", "-iface"):
            interface = True
        elif word.startswith("-") and len(word) > 1:
            raise UsageError(f"bad modifier '{word}'")
        else:
            operands.append(word)
        i += 1
    wants_gateway = cmd in ("add", "change")
    limit = 2 if wants_gateway or cmd == "delete" else 1
    if not operands:
        raise UsageError(f"{cmd}: destination required")
    if len(operands) > limit:
        raise UsageError(f"{cmd}: unexpected argument '{operands[limit]}'")
    if wants_gateway and len(operands) < 2:
        raise UsageError(f"{cmd}: gateway required")
    gw_text = operands[1] if len(operands) == 2 else ""
    text = operands[0]
    if text == "default":
        return 0, 0, True, gw_text, flags, interface, mtu
    addr_text, slash, plen_text = text.partition("/")
    addr, zone = parse_scoped(vnet, addr_text, "destination")
    if slash:
        if not plen_text.isdigit() or int(plen_text) > 128:
            raise ToolError(f"bad prefix length: {plen_text}")
        plen, exact = int(plen_text), True
    elif prefixlen is not None:
        plen, exact = prefixlen, True
    elif force == "net":
        plen, exact = 64, True
    else:
        plen, exact = 128, force == "host"
    key = in6.zkey(addr, zone.index) if zone is not None else addr
    return key & MASKS6[plen], plen, exact, gw_text, flags, interface, mtu


def _nexthop(vnet: Vnet, rt6: RouteTable, text: str, interface: bool
             ) -> tuple[Ifnet, in6.In6Addr | None, int, int]:
    flags = RTF_STATIC
    if interface:
        ifp = vnet.ifaces.get(text)
        if ifp is None:
            raise ToolError(UNREACHABLE)
        return ifp, next(iter(in6.addrs(ifp)), None), 0, flags
    gateway, zone = parse_scoped(vnet, text, "gateway")
    if wip6.needs_zone(gateway):
        if zone is None:
            raise ToolError(f"{text}: a link-local gateway needs a zone (%interface)")
        return zone, None, gateway, flags | RTF_GATEWAY
    route = rt6.lookup(gateway)
    if route is None or route.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE):
        raise ToolError(UNREACHABLE)
    return route.ifp, route.ifa, gateway, flags | RTF_GATEWAY  # type: ignore[return-value]


def _gw_text(route: Route) -> str:
    if wip6.needs_zone(route.gateway):
        return f"{wip6.ntoa(route.gateway)}%{route.ifp.name}"
    return wip6.ntoa(route.gateway)


def _dest_text(vnet: Vnet, dst: int, plen: int) -> str:
    if plen == 0 and dst == 0:
        return "default"
    name = scoped_name(vnet, dst)
    return name if plen == 128 else f"{name}/{plen}"


def _get_lines(vnet: Vnet, fib: int, dst: int, plen: int, exact: bool) -> list[str]:
    rt6 = vnet.route.table6(fib)
    route = rt6.get(dst, plen) if exact else rt6.lookup(dst)
    if route is None:
        raise ToolError(NOT_FOUND)
    lines = [f"   route to: {scoped_name(vnet, dst) if dst else 'default'}",
             f"destination: {scoped_name(vnet, route.dst) if route.dst else 'default'}"]
    if not route.flags & RTF_HOST:
        lines.append(f"       mask: {wip6.ntoa(MASKS6[route.plen])}")
    if route.flags & RTF_GATEWAY:
        lines.append(f"    gateway: {_gw_text(route)}")
    from vimage.cli.route import FLAG_NAMES

    flags = route.flags | RTF_DONE
    names = ",".join(name for bit, name in FLAG_NAMES if flags & bit)
    lines += [
        f"        fib: {fib}",
        f"  interface: {route.ifp.name}",
        f"      flags: <{names}>",
        " recvpipe  sendpipe  ssthresh  rtt,msec    mtu        weight    expire",
        "".join(f"{v:8d}  " for v in (0, 0, 0, 0, route.mtu or route.ifp.mtu, 1, 0)).rstrip(),
    ]
    return lines


# -- netstat -rn -f inet6 -------------------------------------------------------------------
def route_rows(vnet: Vnet, fib: int = 0) -> list[tuple[str, str, str, str, int, int, str]]:
    """The Internet6 rows of fib `fib` for `netstat -rn` (destination, gateway, flags,
    netif, nexthop index, MTU, expire), as netstat's route table emitter takes them."""
    in6.loopback_addrs(vnet)
    rows = []
    for r in vnet.route.table6(fib).routes():
        if r.flags & RTF_GATEWAY:
            gw = _gw_text(r)
        else:
            owner = r.ifa.ifp if r.ifa is not None else r.ifp
            gw = f"link#{owner.index}"
        rows.append((_dest_text(vnet, r.dst, r.plen), gw, flag_string(r.flags), r.ifp.name,
                     0, r.ifp.mtu, ""))
    return rows
