"""The Internet protocol family's descriptors (FreeBSD netinet/in_proto.c: `inetsw[]`).

Each entry tells the protocol switch (vimage.protosw) what one protocol is: its
place in vnet attach order, its per-vnet state slot, what it demultiplexes on (an
ethertype for ARP and IPv4, an IP protocol number for ICMP, UDP and TCP; raw IP takes
the rest), its input and ctlinput, its sysctls and `netstat -s` lines, and its
interface events. Socket factories live in the socket layer, above this one: the
package's `__init__` adds them when it assembles the standard set.
"""

from __future__ import annotations

from socket import AF_INET
from typing import TYPE_CHECKING

from vimage.net.ifnet import IFF_UP
from vimage.netinet import arp, icmp, in_, ip, raw, tcp, udp
from vimage.netinet.tcp.input import tcp_input
from vimage.netinet.tcp.subr import tcp_ctlinput_quoted
from vimage.protosw import ANY, Protocol, existing
from vimage.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IP
from vimage.wire.ipv4 import INADDR_LOOPBACK, PROTO_ICMP, PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet


def _in_ifattach(ifp: Ifnet) -> None:
    """lo0 gets 127.0.0.1/8 on arrival, as rc.conf configures it on FreeBSD."""
    if ifp.is_loopback and ifp.kind == "lo" and ifp.unit == 0:
        in_.in_add_addr(ifp, INADDR_LOOPBACK, 8)


def _arp_ifup(ifp: Ifnet) -> None:
    """An Ethernet interface coming up announces its addresses (gratuitous ARP)."""
    if ifp.mac is not None and ifp.flags & IFF_UP:
        for ia in ifp.addrs:
            ifp.vnet.arp.announce(ifp, ia.addr)


def _arp_ifdetach(ifp: Ifnet) -> None:
    arp_state = existing(ifp.vnet, "arp")  # never used: no entry to purge
    if arp_state is not None:
        arp_state.purge_ifp(ifp)


IP = Protocol(
    "ip", 20, "ip", ip.vnet_attach, ip.vnet_detach, domain=AF_INET,
    ethertype=ETHERTYPE_IP, input=ip.IpState.input, sysctls=ip.SYSCTLS,
    stats=ip.STAT_LINES, stats_order=30,
    add_addr=in_.in_add_addr_text, ifattach=_in_ifattach, ifdetach=in_.in_purge_ifaddrs)
def _arp_iflladdr(ifp: Ifnet) -> None:
    arp_state = existing(ifp.vnet, "arp")  # never used: no header to rebuild
    if arp_state is not None:
        arp_state.lladdr_changed(ifp)


ARP = Protocol(
    "arp", 30, "arp", arp.vnet_attach, arp.vnet_detach, domain=AF_INET,
    ethertype=ETHERTYPE_ARP, input=arp.ArpState.input, sysctls=arp.SYSCTLS,
    stats=arp.STAT_LINES, stats_order=50, ifdetach=_arp_ifdetach, ifup=_arp_ifup,
    iflladdr=_arp_iflladdr)
ICMP = Protocol(
    "icmp", 40, "icmp", icmp.vnet_attach, icmp.vnet_detach, domain=AF_INET,
    protocol=PROTO_ICMP, input=icmp.IcmpState.input, sysctls=icmp.SYSCTLS,
    stats=icmp.STAT_LINES, stats_order=40)
UDP = Protocol(
    "udp", 50, "udp", udp.vnet_attach, udp.vnet_detach, domain=AF_INET,
    protocol=PROTO_UDP, input=udp.UdpState.input, ctlinput=udp.UdpState.ctlinput_quoted,
    sysctls=udp.SYSCTLS, stats=udp.STAT_LINES, stats_order=20)
TCP = Protocol(
    "tcp", 55, "tcp", tcp.vnet_attach, tcp.vnet_detach, domain=AF_INET,
    protocol=PROTO_TCP, input=tcp_input, ctlinput=tcp_ctlinput_quoted,
    sysctls=tcp.SYSCTLS, stats=tcp.STAT_LINES, stats_order=10)
RAW = Protocol(
    "raw", 60, "raw", raw.vnet_attach, raw.vnet_detach, domain=AF_INET,
    protocol=ANY, input=raw.RawState.ip_input, sysctls=raw.SYSCTLS)

PROTOCOLS: tuple[Protocol, ...] = (IP, ARP, ICMP, UDP, TCP, RAW)  # attach order
"""The Internet family, without socket factories (see vimage/__init__.py)."""
