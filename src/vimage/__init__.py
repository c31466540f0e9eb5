"""vimage: a clonable network stack — many independent FreeBSD-style stacks in one process.

Importing the package assembles the standard protocol set, as a kernel config does:
the protocol switch (vimage.protosw) sits below the protocols and cannot name them,
so the set is built here, at the top, from each layer's descriptors, the socket
factories (socket layer) added to the Internet protocols (netinet layer), and set
once as `Kernel.standard_protocols`, an immutable tuple (and the interface cloners as
`Kernel.standard_cloners`). Python imports this module
before any submodule, so `from vimage.kernel import Kernel; Kernel()` always has it.
"""

from dataclasses import replace as _replace

# cli and stdlib install the userland the core reaches through vimage.context.Userland when
# imported: vnet.cmd() (the tools) and the stdlib's socket API under vnet.activate()
from vimage import cli, stdlib  # noqa: F401
from vimage import cpu as _cpu
from vimage import netdb as _netdb
from vimage.aio import VimageEventLoop, run, service, spawn
from vimage.context import get_vnet
from vimage.kernel import Kernel
from vimage.net import if_bridge as _if_bridge
from vimage.net import if_gif as _if_gif
from vimage.net import if_gre as _if_gre
from vimage.net import if_vlan as _if_vlan
from vimage.net import if_vxlan as _if_vxlan
from vimage.net import ifnet as _ifnet
from vimage.net import netgraph as _netgraph
from vimage.net import route as _route
from vimage.net import rtsock as _rtsock
from vimage.netinet import in_proto as _in_proto
from vimage.netinet import ip_divert as _ip_divert
from vimage.netinet6 import in6_proto as _in6_proto
from vimage.netipsec import PROTOCOL as _ESP
from vimage.netipsec import PROTOCOL6 as _ESP6
from vimage.netpfil import dummynet as _dummynet
from vimage.netpfil import ipfw as _ipfw
from vimage.netpfil import nat as _nat
from vimage.socket.divert import DivertSocket
from vimage.socket.rtsock import RouteSocket
from vimage.socket.socket import SOCK_DGRAM, SOCK_RAW, SOCK_STREAM, Socket
from vimage.socket.tcp_socket import TcpSocket
from vimage.vnet import Vnet

Kernel.standard_protocols = (
    _route.PROTOCOL,
    _replace(_rtsock.PROTOCOL, sockets=((SOCK_RAW, RouteSocket),), lazy=True),
    _in_proto.IP,
    _replace(_in_proto.ARP, lazy=True),  # on the first interface up or ARP packet
    _replace(_in_proto.ICMP, lazy=True),
    _replace(_ipfw.PROTOCOL, lazy=True),  # lazy: made on first use
    _replace(_in_proto.UDP, sockets=((SOCK_DGRAM, Socket),), lazy=True),
    _replace(_in_proto.TCP, sockets=((SOCK_STREAM, TcpSocket),), lazy=True),
    _replace(_in_proto.RAW, sockets=((SOCK_RAW, Socket),), lazy=True),
    _replace(_dummynet.PROTOCOL, lazy=True),
    _replace(_ip_divert.PROTOCOL, sockets=((SOCK_RAW, DivertSocket),), lazy=True),
    _replace(_if_gif.PROTOCOL, lazy=True),  # IPPROTO_IPV4 input
    _replace(_if_gre.PROTOCOL, lazy=True),  # IPPROTO_GRE input
    _replace(_if_vxlan.PROTOCOL, lazy=True),
    _replace(_ESP, lazy=True),  # IPPROTO_ESP input, the SAD and SPD (vnet.ipsec)
    *(_replace(p, lazy=True) for p in _in6_proto.PROTOCOLS),  # route6, ip6, nd6, icmp6
    _replace(_ESP6, lazy=True),  # ESP after IPv6 (vnet.ipsec6 is vnet.ipsec)
    _replace(_in6_proto.UDP6, sockets=((SOCK_DGRAM, Socket),), lazy=True),
    _replace(_in6_proto.TCP6, sockets=((SOCK_STREAM, TcpSocket),), lazy=True),
    _replace(_in6_proto.RAW6, sockets=((SOCK_RAW, Socket),), lazy=True),
    *_if_gif.INPUTS,  # IPv6 in IPv4 (41), IPv4 and IPv6 in IPv6 (4, 41)
    _if_gre.INPUT6,  # GRE over IPv6 (47)
    _replace(_netdb.PROTOCOL, lazy=True),  # the hosts table, made on first lookup
    _ifnet.PROTOCOL,
    _replace(_nat.PROTOCOL, lazy=True),
    _replace(_netgraph.PROTOCOL, lazy=True),  # ngctl's graph, in the vnets that use it
    _cpu.PROTOCOL,  # kern.vnet_cpu_accounting
)
Kernel.standard_cloners = (
    ("epair", _ifnet.EpairCloner),
    ("lo", _ifnet.LoopbackCloner),
    ("bridge", _if_bridge.BridgeCloner),
    ("hub", _if_bridge.HubCloner),
    ("vlan", _if_vlan.VlanCloner),
    ("gif", _if_gif.GifCloner),
    ("gre", _if_gre.GreCloner),
    ("vxlan", _if_vxlan.VxlanCloner),
)

__all__ = ["Kernel", "VimageEventLoop", "Vnet", "get_vnet", "run", "service", "spawn"]
__version__ = "0.1.0"
