"""ifconfig --libxo json|xml: the interfaces `ifconfig` shows, as structure.

FreeBSD's ifconfig(8) prints text only; vimage's takes libxo's `--libxo` option as
netstat and arp do: an `ifconfig` container with an `interface` list, the names
netstat's libxo output uses where they meet (`name`, `flags`, `mtu`, `address`) and
the words of ifconfig's own lines for the rest (`ether`, `inet` with `netmask` and
`broadcast`, `inet6` with `prefixlen` and `scopeid`, `status`, `groups`). The text
output is unchanged by it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.cli import ifconfig_tunnel as tunnel_cli
from vimage.cli._util import mask_hex
from vimage.net.ifnet import IFF_RUNNING
from vimage.netinet6 import in6
from vimage.wire import ipv6 as wip6
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.cli._libxo import Xo
    from vimage.net.ifnet import Ifnet


def emit_interface(xo: Xo, ifp: Ifnet, family: str | None, flags: str) -> None:
    """One `interface` instance: the fields of the lines `ifconfig IF [family]` prints
    (`flags` is their `flags=8843<UP,...>` word)."""
    value, _, names = flags.removeprefix("flags=").partition("<")
    xo.open_instance("interface")
    xo.emit("{k:name/%s}{:flags/0x%s}{:flags-names/%s}{:metric/%d}{:mtu/%d}",
            ifp.name, value, names.rstrip(">"), 0, ifp.mtu)
    if ifp.mac is not None and family in (None, "ether", "link", "lladdr"):
        xo.emit("{:ether/%s}", ifp.mac.hex(":"))
    if family in (None, "inet"):
        _inet(xo, ifp)
    if family in (None, "inet6"):
        _inet6(xo, ifp)
    if family is None:
        status = _status(ifp)
        if status:
            xo.emit("{:status/%s}", status)
        xo.emit("{:groups/%s}", ifp.kind)
    xo.close_instance()


def _inet(xo: Xo, ifp: Ifnet) -> None:
    xo.open_list("inet")
    for ia in ifp.addrs:
        xo.open_instance("inet")
        xo.emit("{:address/%s}{:netmask/%s}", ntoa(ia.addr), mask_hex(ia.plen))
        peer = tunnel_cli.inet_peer(ifp, ia).removeprefix(" --> ")
        if peer:
            xo.emit("{:destination/%s}", peer)
        if ia.broadcast and not ifp.is_loopback:
            xo.emit("{:broadcast/%s}", ntoa(ia.broadcast))
        xo.close_instance()
    xo.close_list()


def _inet6(xo: Xo, ifp: Ifnet) -> None:
    in6.loopback_addrs(ifp.vnet)
    xo.open_list("inet6")
    for ia in in6.addrs(ifp):
        scoped = wip6.needs_zone(ia.addr)
        xo.open_instance("inet6")
        xo.emit("{:address/%s}{:prefixlen/%d}",
                wip6.ntoa(ia.addr) + (f"%{ifp.name}" if scoped else ""), ia.plen)
        for bit, word in in6.FLAG_WORDS:
            if ia.flags & bit:
                xo.emit("{n:%s/true}" % word)  # noqa: UP031 (a field named by a variable)
        if scoped:
            xo.emit("{:scopeid/0x%x}", ifp.index)
        xo.close_instance()
    xo.close_list()


def _status(ifp: Ifnet) -> str:
    """The `status:` word ifconfig prints for the interface, if it prints one."""
    if ifp.kind == "epair":
        return "active" if ifp.peer is not None else "no carrier"
    if ifp.kind in ("tap", "vlan"):
        return "active" if ifp.flags & IFF_RUNNING else "no carrier"
    return ""
