"""route(8): manipulate the vnet's routing table.

    route [-n] add [-net | -host] DEST[/LEN] GATEWAY [NETMASK] [-netmask MASK]
                   [-blackhole | -reject] [-interface] [-mtu N]
    route [-n] add default GATEWAY
    route [-n] change DEST[/LEN] GATEWAY [modifiers]
    route [-n] delete DEST[/LEN]
    route [-n] get | show DEST
    route [-n] flush
    route -6 | add -inet6 ...: the same commands for IPv6 (`route add -inet6 default
                               fe80::1%epair0a`, `route -6 add 2001:db8:1::/48 GW`)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError, _inet6
from vimage.cli._util import getopts, parse_addr, parse_netmask, parse_plen
from vimage.net.route import (
    MASKS,
    RTF_BLACKHOLE,
    RTF_GATEWAY,
    RTF_HOST,
    RTF_REJECT,
    RTF_STATIC,
    Route,
)
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.in_ import InAddr
    from vimage.vnet import Vnet

RTF_DONE = 0x40  # set on every reply from the kernel
# route(8)'s names for the flag bits, in bit order
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (0x1, "UP"), (0x2, "GATEWAY"), (0x4, "HOST"), (0x8, "REJECT"), (0x10, "DYNAMIC"),
    (0x20, "MODIFIED"), (0x40, "DONE"), (0x800, "STATIC"), (0x1000, "BLACKHOLE"),
    (0x100000, "PINNED"),
)
COMMANDS = ("add", "change", "delete", "flush", "get", "show")
UNREACHABLE = "writing to routing socket: Network is unreachable"
NOT_FOUND = "route has not been found"


# route(8)'s usage() is one line; the commands vimage implements follow it
USAGE = """\
usage: route [-46dnqtv] command [[modifiers] args]
       route add [-net | -host] destination[/len] gateway [netmask] [modifiers]
       route add default gateway
       route change destination[/len] gateway [modifiers]
       route delete destination[/len]
       route get | show destination
       route flush
       route -6 command ... | route command -inet6 ...
modifiers: -netmask mask, -prefixlen len (inet6), -blackhole, -reject,
           -interface, -mtu n
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "46dnqtv")
    quiet = any(o == "-q" for o, _ in opts)
    if not args:
        raise UsageError()
    cmd, rest = args[0], args[1:]
    if cmd not in COMMANDS:
        raise UsageError(f"bad command '{cmd}'", synopsis=True)
    out: Callable[..., None] = _silent if quiet else ctx.print
    vnet = ctx.vnet
    if any(o == "-6" for o, _ in opts) or "-inet6" in rest:  # IPv6: vimage.cli._inet6
        return _inet6.route_main(out if cmd != "get" else ctx.print, vnet, cmd, rest)
    if cmd == "flush":
        return flush(vnet, rest, out)
    req = _parse(cmd, rest)
    if cmd in ("get", "show"):
        for line in get_lines(vnet, req):
            ctx.print(line)
        return 0
    if cmd == "delete":
        route = vnet.rt.get(req.dst, req.plen)
        if route is None:
            raise ToolError(NOT_FOUND)
        vnet.rt.delete(req.dst, req.plen)
        out(f"delete {req.kind} {req.dest_text}" + _gw_suffix(req))
        return 0
    ifp, ifa, gateway, flags = _nexthop(vnet, req)
    if cmd == "add":
        if vnet.rt.get(req.dst, req.plen) is not None:
            raise ToolError("writing to routing socket: File exists")
        vnet.rt.add(Route(req.dst, req.plen, ifp, flags, gateway, ifa=ifa, mtu=req.mtu))
    else:  # change
        route = vnet.rt.get(req.dst, req.plen)
        if route is None:
            raise ToolError(NOT_FOUND)
        route.ifp, route.ifa, route.gateway = ifp, ifa, gateway
        route.flags = (route.flags & ~RTF_GATEWAY) | flags
        if req.mtu:
            route.mtu = req.mtu
        vnet.rt.changed()
    out(f"{cmd} {req.kind} {req.dest_text}" + _gw_suffix(req))
    return 0


def _silent(*_args: object) -> None:
    pass


# -- parsing -----------------------------------------------------------------------------
class _Request:
    __slots__ = ("dest_text", "dst", "exact", "flags", "gateway_text", "interface", "kind",
                 "mtu", "plen")

    def __init__(self) -> None:
        self.dest_text = ""
        self.dst = 0
        self.plen = 32
        self.kind = "host"
        self.exact = False  # a prefix was given: `route get` looks it up exactly
        self.gateway_text = ""
        self.flags = 0
        self.interface = False
        self.mtu = 0


def _parse(cmd: str, words: list[str]) -> _Request:
    req = _Request()
    force: str | None = None
    netmask: int | None = None
    operands: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-net", "-host"):
            force = word[1:]
        elif word == "-netmask":
            if i + 1 >= len(words):
                raise UsageError("-netmask requires an argument")
            netmask = parse_netmask(words[i + 1])
            i += 1
        elif word == "-mtu":
            if i + 1 >= len(words) or not words[i + 1].isdigit():
                raise UsageError("-mtu requires a number")
            req.mtu = int(words[i + 1])
            if not 68 <= req.mtu <= 65535:
                raise ToolError(f"bad mtu: {req.mtu} (68..65535)")
            i += 1
        elif word == "-blackhole":
            req.flags |= RTF_BLACKHOLE
        elif word == "-reject":
            req.flags |= RTF_REJECT
        elif word in ("-interface", "-iface"):
            req.interface = True
        elif word in ("-static", "-inet", "-4"):
            pass
        elif word == "-fib":
            if i + 1 >= len(words) or words[i + 1] != "0":
                raise ToolError("only fib 0 exists")
            i += 1
        elif word.startswith("-") and len(word) > 1:
            raise UsageError(f"bad modifier '{word}'")
        else:
            operands.append(word)
        i += 1
    wants_gateway = cmd in ("add", "change")
    limit = 3 if wants_gateway else 2 if cmd == "delete" else 1
    if not operands:
        raise UsageError(f"{cmd}: destination required")
    if len(operands) > limit:
        raise UsageError(f"{cmd}: unexpected argument '{operands[limit]}'")
    if wants_gateway:
        if len(operands) < 2:
            raise UsageError(f"{cmd}: gateway required")
        req.gateway_text = operands[1]
        if len(operands) == 3:  # the old `route add -net DEST GW MASK` form
            netmask = parse_netmask(operands[2])
    elif len(operands) == 2:
        req.gateway_text = operands[1]  # `route delete DEST GW`: shown, not checked
    _destination(req, operands[0], force, netmask)
    return req


def _destination(req: _Request, text: str, force: str | None, netmask: int | None) -> None:
    req.dest_text = text.partition("/")[0]
    if text == "default":
        req.dst, req.plen, req.kind, req.exact = 0, 0, "net", True
        return
    addr_text, slash, plen_text = text.partition("/")
    if slash:
        req.dst, req.plen, req.kind, req.exact = _net_addr(addr_text), parse_plen(plen_text), \
            "net", True
    elif netmask is not None:
        req.dst, req.plen, req.kind, req.exact = _net_addr(addr_text), netmask, "net", True
    elif force == "net":
        req.dst = _net_addr(addr_text)
        req.plen, req.kind, req.exact = _natural_plen(req.dst), "net", True
    else:
        req.dst, req.plen, req.kind = parse_addr(addr_text), 32, "host"
        req.exact = force == "host"
    if force == "host" and req.plen != 32:
        raise ToolError(f"-host {text}: a host route cannot have a netmask")
    req.dst &= MASKS[req.plen]


def _net_addr(text: str) -> int:
    """A network number: a dotted quad, or a short form such as `10.1` (= 10.1.0.0)."""
    parts = text.split(".")
    if len(parts) == 4 or not 1 <= len(parts) <= 4 or not all(
            p.isdigit() and int(p) < 256 for p in parts):
        return parse_addr(text)
    value = 0
    for p in parts:
        value = (value << 8) | int(p)
    return value << (8 * (4 - len(parts)))


def _natural_plen(net: int) -> int:
    """route(8)'s mask for `-net` without one: cover every byte up to the last non-zero one."""
    if net == 0:
        return 0
    plen = 32
    while not net & 0xFF:
        net >>= 8
        plen -= 8
    return plen


def _gw_suffix(req: _Request) -> str:
    return f": gateway {req.gateway_text}" if req.gateway_text else ""


def _nexthop(vnet: Vnet, req: _Request) -> tuple[Ifnet, InAddr | None, int, int]:
    """Interface, interface address, gateway and flags for an add/change request."""
    flags = RTF_STATIC | req.flags
    text = req.gateway_text
    local = vnet.ip.local
    if req.interface:
        ifp = vnet.ifaces.get(text)
        if ifp is None:
            addr = parse_addr(text, "gateway")
            ia = local.get(addr)
            if ia is None:
                raise ToolError(UNREACHABLE)
            return ia.ifp, ia, 0, flags
        return ifp, (ifp.addrs[0] if ifp.addrs else None), 0, flags
    gateway = parse_addr(text, "gateway")
    ia = local.get(gateway)
    if ia is not None and not ia.ifp.is_loopback:
        # our own address on a network: the destination is on that link (BSD's old idiom)
        return ia.ifp, ia, 0, flags
    route = vnet.rt.lookup(gateway)
    if route is None or route.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE):
        raise ToolError(UNREACHABLE)
    ifa = route.ifa if route.ifa is not None and route.ifa.ifp is route.ifp else None
    return route.ifp, ifa, gateway, flags | RTF_GATEWAY


# -- get / flush ----------------------------------------------------------------------------
def _name(addr: int) -> str:
    return "default" if addr == 0 else ntoa(addr)


def get_lines(vnet: Vnet, req: _Request) -> list[str]:
    route = vnet.rt.get(req.dst, req.plen) if req.exact else vnet.rt.lookup(req.dst)
    if route is None:
        raise ToolError(NOT_FOUND)
    lines = [f"   route to: {_name(req.dst)}", f"destination: {_name(route.dst)}"]
    if not route.flags & RTF_HOST:
        lines.append(f"       mask: {_name(MASKS[route.plen])}")
    if route.flags & RTF_GATEWAY:
        lines.append(f"    gateway: {ntoa(route.gateway)}")
    flags = route.flags | RTF_DONE
    names = ",".join(name for bit, name in FLAG_NAMES if flags & bit)
    lines += [
        "        fib: 0",
        f"  interface: {route.ifp.name}",
        f"      flags: <{names}>",
        " recvpipe  sendpipe  ssthresh  rtt,msec    mtu        weight    expire",
        "".join(f"{v:8d}  " for v in (0, 0, 0, 0, route.mtu or route.ifp.mtu, 1, 0)).rstrip(),
    ]
    return lines


def flush(vnet: Vnet, words: list[str], out: Callable[..., None]) -> int:
    """Remove every gateway route, as route(8) does, listing each one."""
    extra = [w for w in words if w not in ("-inet", "-4")]
    if extra:
        raise UsageError(f"flush: unexpected argument '{extra[0]}'")
    for route in [r for r in vnet.rt.routes() if r.flags & RTF_GATEWAY]:
        vnet.rt.delete(route.dst, route.plen)
        if route.flags & RTF_HOST:
            dest = ntoa(route.dst)
        else:
            dest = "default" if route.plen == 0 else f"{ntoa(route.dst)}/{route.plen}"
        out(f"{dest:<20.20} {ntoa(route.gateway):<20.20} done")
    return 0
