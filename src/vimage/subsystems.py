"""The ordered list of per-vnet subsystems (FreeBSD's VNET_SYSINIT/SYSUNINIT).

Creating a vnet runs every `attach` in ascending order; destroying it runs the
`detach` functions in the reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from vimage import netdb
from vimage.net import ifnet, route
from vimage.netinet import arp, icmp, ip, raw, tcp, udp

if TYPE_CHECKING:
    from vimage.vnet import Vnet


class Subsystem(NamedTuple):
    order: int
    name: str
    attach: Callable[[Vnet], None]
    detach: Callable[[Vnet], None]


SUBSYSTEMS: tuple[Subsystem, ...] = (
    Subsystem(10, "route", route.vnet_attach, route.vnet_detach),
    Subsystem(20, "ip", ip.vnet_attach, ip.vnet_detach),
    Subsystem(30, "arp", arp.vnet_attach, arp.vnet_detach),
    Subsystem(40, "icmp", icmp.vnet_attach, icmp.vnet_detach),
    Subsystem(50, "udp", udp.vnet_attach, udp.vnet_detach),
    Subsystem(55, "tcp", tcp.vnet_attach, tcp.vnet_detach),
    Subsystem(60, "raw", raw.vnet_attach, raw.vnet_detach),
    Subsystem(70, "netdb", netdb.vnet_attach, netdb.vnet_detach),
    Subsystem(90, "ifnet", ifnet.vnet_attach, ifnet.vnet_detach),
)
