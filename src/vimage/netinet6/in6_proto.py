"""The IPv6 protocol family's descriptors (FreeBSD netinet6/in6_proto.c: `inet6sw[]`).

IPv6 registers for ethertype 0x86DD and ICMPv6 for next header 58 in the AF_INET6
domain, so `Ip6State.deliver` finds it through the switch as IPv4 finds ICMP; ND
and the IPv6 routing table are subsystems with state only. Transports over IPv6
register here later with `domain=AF_INET6` and their next header.
"""

from __future__ import annotations

from socket import AF_INET6
from typing import TYPE_CHECKING

from vimage.netinet import raw, udp
from vimage.netinet.tcp.input import tcp6_input
from vimage.netinet.tcp.subr import tcp6_attach, tcp6_ctlinput, tcp6_detach
from vimage.netinet6 import icmp6, in6, ip6, nd6, nd6_rtr
from vimage.protosw import ANY, Protocol, existing
from vimage.wire.ethernet import ETHERTYPE_IPV6
from vimage.wire.ipv6 import NXT_ICMPV6

NXT_TCP = 6
NXT_UDP = 17

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet


def _rt6_attach(vnet: Vnet) -> None:
    """IPv6's fib 0 (the tables of every fib are the route subsystem's,
    `vnet.route.tables6`, made now as net.fibs says)."""
    vnet.rt6 = vnet.route.table6(0)


def _rt6_detach(vnet: Vnet) -> None:
    vnet.route.clear6()


def _ip6_ifdetach(ifp: Ifnet) -> None:
    ip6_state = existing(ifp.vnet, "ip6")
    if ip6_state is None:  # IPv6 never used in this vnet: no address, no fragment
        return
    if ip6_state.reass is not None:
        ip6_state.reass.purge_ifp(ifp)
    in6.in6_purge_ifaddrs(ifp)


RT6 = Protocol("route6", 11, "rt6", _rt6_attach, _rt6_detach)
IP6 = Protocol(
    "ip6", 21, "ip6", ip6.vnet_attach, ip6.vnet_detach, domain=AF_INET6,
    ethertype=ETHERTYPE_IPV6, input=ip6.Ip6State.input, sysctls=ip6.SYSCTLS,
    stats=ip6.STAT_LINES, stats_order=60, add_addr=in6.in6_add_addr_text,
    ifattach=in6.in6_ifattach, ifdetach=_ip6_ifdetach, ifup=in6.in6_ifup)


def _nd6_iflladdr(ifp: Ifnet) -> None:
    nd6_state = existing(ifp.vnet, "nd6")  # never used: no header to rebuild
    if nd6_state is not None:
        nd6_state.lladdr_changed(ifp)


ND6 = Protocol("nd6", 31, "nd6", nd6.vnet_attach, nd6.vnet_detach,
               sysctls=nd6.SYSCTLS + nd6_rtr.SYSCTLS, iflladdr=_nd6_iflladdr)
ICMP6 = Protocol(
    "icmp6", 41, "icmp6", icmp6.vnet_attach, icmp6.vnet_detach, domain=AF_INET6,
    protocol=NXT_ICMPV6, input=icmp6.Icmp6State.input, sysctls=icmp6.SYSCTLS,
    stats=icmp6.STAT_LINES, stats_order=70)

# transports over IPv6 share their IPv4 state (one port space and set of counters, as
# FreeBSD's udbinfo/tcbinfo and udpstat/tcpstat): their slots name the same objects
UDP6 = Protocol(
    "udp6", 51, "udp6", udp.udp6_attach, udp.udp6_detach, domain=AF_INET6,
    protocol=NXT_UDP, input=udp.UdpState.input6, ctlinput=udp.UdpState.ctlinput6)
TCP6 = Protocol(
    "tcp6", 56, "tcp6", tcp6_attach, tcp6_detach, domain=AF_INET6,
    protocol=NXT_TCP, input=tcp6_input, ctlinput=tcp6_ctlinput)
RAW6 = Protocol(
    "raw6", 61, "raw6", raw.raw6_attach, raw.raw6_detach, domain=AF_INET6,
    protocol=ANY, input=raw.RawState.ip6_input)

PROTOCOLS: tuple[Protocol, ...] = (RT6, IP6, ND6, ICMP6)
"""The IPv6 family in attach order (without the transports: see TRANSPORTS)."""
TRANSPORTS: tuple[Protocol, ...] = (UDP6, TCP6, RAW6)
"""UDP, TCP and raw IP over IPv6, without socket factories (see vimage/__init__.py)."""
