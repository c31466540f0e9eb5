"""arp(8): show and edit the vnet's ARP table.

    arp [-n] [-i IF] HOST
    arp [-n] [-i IF] -a
    arp -d HOST
    arp -d [-i IF] -a
    arp -s | -S HOST MAC [temp]
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError, _libxo
from vimage.cli._util import find_iface, getopts, parse_addr, parse_mac
from vimage.net.route import RTF_BLACKHOLE, RTF_GATEWAY, RTF_REJECT
from vimage.netinet.arp import REACHABLE, STATIC
from vimage.sched import NS_PER_S
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.cli._libxo import Xo
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


XO_VERSION = "1"  # arp.h's ARP_XO_VERSION


def main(ctx: Context, argv: list[str]) -> int:
    argv, style, pretty = _libxo.parse_args(argv)
    opts, args = getopts(argv, "adi:nSs")
    given = {o for o, _ in opts}
    only = find_iface(ctx.vnet, dict(opts)["-i"]) if "-i" in given else None
    modes = given & {"-d", "-s", "-S"}
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(sorted(modes))} cannot be combined")
    vnet = ctx.vnet
    if "-i" in given and (modes - {"-d"} or ("-d" in given and "-a" not in given)):
        raise ToolError("-i not applicable to this operation")
    if "-s" in given or "-S" in given:
        if "-a" in given:
            raise UsageError("-s cannot be combined with -a")
        if not 2 <= len(args) <= 6:
            raise UsageError()
        if "-S" in given:  # F_REPLACE: delete() first, whatever it says
            delete(ctx, args[0])
        return set_entry(vnet, args)
    if "-d" in given:
        if "-a" not in given:
            if len(args) != 1:
                raise UsageError()
            return delete(ctx, args[0])
        if args:
            raise UsageError(f"unexpected argument '{args[0]}' with -d -a")
        # nuke_entries(): every entry but the pinned ones (the vnet's own addresses)
        for entry in [e for e in vnet.arp.entries() if only is None or e.ifp is only]:
            delete(ctx, ntoa(entry.addr))
        return 0
    if "-a" in given:
        if args:
            raise UsageError(f"unexpected argument '{args[0]}' with -a")
        xo = _open(style, pretty)
        for entry in table_entries(vnet, only):
            _print_entry(xo, vnet, *entry)
        return _close(ctx, xo, 0)
    if len(args) != 1:
        raise UsageError()
    return get(ctx, args[0], only, style, pretty)


def _open(style: str, pretty: bool) -> Xo:
    xo = _libxo.Xo(style, pretty, version=XO_VERSION)
    xo.open_container("arp")
    xo.open_list("arp-cache")
    return xo


def _close(ctx: Context, xo: Xo, status: int) -> int:
    xo.close_list()
    xo.close_container()
    xo.finish(ctx)
    return status


def getaddr(host: str) -> int:
    """arp.c getaddr(): a dotted quad (or a name vimage knows); hstrerror()'s words
    when it is neither."""
    try:
        return parse_addr(host, "host")
    except ToolError:
        raise ToolError(f"{host}: Unknown host") from None


def get(ctx: Context, host: str, only: Ifnet | None, style: str, pretty: bool) -> int:
    """arp.c get(): the entry of `host`, or `-- no entry` (exit status 1)."""
    addr = getaddr(host)
    xo = _open(style, pretty)
    found = [e for e in table_entries(ctx.vnet, only) if e[0] == addr]
    for entry in found:
        _print_entry(xo, ctx.vnet, *entry)
    if not found:
        xo.emit("{d:hostname/%s} ({d:ip-address/%s}) -- no entry", host, ntoa(addr))
        if only is not None:
            xo.emit(" on {d:interface/%s}", only.name)
        xo.emit("\n")
    return _close(ctx, xo, 0 if found else 1)


def delete(ctx: Context, host: str) -> int:
    """arp.c delete_nl(): `HOST (ADDR) deleted`, or why not (as xo_warnx says it)."""
    vnet = ctx.vnet
    addr = getaddr(host)
    if _arp_ifp(vnet, addr) is None:  # fix_ifindex() found no interface
        ctx.print(f"arp: delete: cannot locate {host}")
        return 1
    if addr not in vnet.arp.table:
        ctx.print(f"arp: delete {host}: No such file or directory")  # ENOENT
        return 1
    vnet.arp.delete(addr)
    ctx.print(f"{host} ({ntoa(addr)}) deleted")
    return 0


def _arp_ifp(vnet: Vnet, addr: int) -> Ifnet | None:
    """The Ethernet interface `addr` is directly reachable on (not through a gateway,
    not one of the vnet's own addresses), or None."""
    route = vnet.rt.lookup(addr)
    if (route is None or route.flags & (RTF_GATEWAY | RTF_REJECT | RTF_BLACKHOLE)
            or route.ifp.mac is None or addr in vnet.ip.local):
        return None
    return route.ifp


_STATUS_FIELDS = MappingProxyType({
    "permanent": "{d:/ permanent}{en:permanent/true}",
    "expired": "{d:/ expired}{en:expired/true}",
})


def _print_entry(xo: Xo, vnet: Vnet, addr: int, mac: bytes | None, ifp: Ifnet,
                 left: int | None) -> None:
    """arp.c print_entry(): `? (ADDR) at MAC on IF STATUS [ethernet]` and its fields."""
    xo.open_instance("arp-cache")
    xo.emit("{:hostname/%s} ({:ip-address/%s}) at ", "?", ntoa(addr))
    if mac is not None:
        xo.emit("{:mac-address/%s}", mac.hex(":"))
    else:
        xo.emit("{d:/(incomplete)}{en:incomplete/true}")
    xo.emit(" on {:interface/%s}", ifp.name)
    if left is None:
        xo.emit(_STATUS_FIELDS["permanent"])
    elif left > 0:
        xo.emit(" expires in {:expires/%d} seconds", left)
    else:
        xo.emit(_STATUS_FIELDS["expired"])
    xo.emit(" [{:type/ethernet}]\n")
    xo.close_instance()


def _left(vnet: Vnet, entry: ArpEntry) -> int | None:
    """Seconds until `entry` expires: None if it never does, 0 if it has."""
    if entry.state == STATIC:
        return None
    if entry.state == REACHABLE and entry.mac is not None:
        return max(0, (entry.expire_ns - vnet.kernel.now_ns()) // NS_PER_S)
    return 0


def table_entries(vnet: Vnet, only: Ifnet | None = None
                  ) -> list[tuple[int, bytes | None, Ifnet, int | None]]:
    """(address, MAC, interface, seconds left) of every entry, the vnet's own Ethernet
    addresses included (permanent), by address."""
    rows: dict[int, tuple[int, bytes | None, Ifnet, int | None]] = {}
    for ifp in vnet.ifaces.values():
        if ifp.mac is None or (only is not None and ifp is not only):
            continue
        for ia in ifp.addrs:
            rows[ia.addr] = (ia.addr, ifp.mac, ifp, None)
    for entry in vnet.arp.entries():
        if entry.addr in rows or (only is not None and entry.ifp is not only):
            continue
        rows[entry.addr] = (entry.addr, entry.mac, entry.ifp, _left(vnet, entry))
    return [rows[a] for a in sorted(rows)]


def set_entry(vnet: Vnet, args: list[str]) -> int:
    """`arp -s HOST MAC [temp]`: a static (or, with temp, an expiring) entry."""
    temp = False
    for word in args[2:]:
        if word == "temp":
            temp = True
        elif word in ("pub", "only", "blackhole", "reject"):
            raise ToolError(f"'{word}' entries are not supported")
        else:
            raise UsageError(f"Invalid parameter '{word}'", synopsis=True)
    addr = getaddr(args[0])
    mac = parse_mac(args[1])
    if mac[0] & 1:
        raise ToolError(f"{args[1]}: multicast or broadcast address")
    ifp = _arp_ifp(vnet, addr)
    if ifp is None:
        raise ToolError(f"cannot intuit interface index and type for {args[0]}")
    vnet.arp.set_static(ifp, addr, mac, temporary=temp)
    return 0
