"""Divert sockets (FreeBSD netinet/ip_divert.c, divert(4)).

Per vnet, `vnet.divert` (a `DivertState`) maps divert ports to the socket bound to
each. ipfw's `divert PORT` and `tee PORT` actions hand a datagram to
`deliver(port, pkt, ifp, outgoing, rule)` (the issue-12 contract; `tee` delivers a copy
and goes on); the reader gets it with the sockaddr divert(4) describes: sin_addr the
first address of the receiving interface for an incoming packet, 0.0.0.0 for an
outgoing one, sin_port the number of the rule that diverted it, and the receiving
interface's name (FreeBSD's sin_zero; `DivertSocket.recvfrom_if` returns it).

Writing to the socket reinjects (div_output): a sockaddr with sin_addr 0.0.0.0 sends the
datagram out, an address of one of the vnet's interfaces (or an interface name) makes it
arrive on that interface; ipfw resumes at the first rule numbered above sin_port. That
is ipfw core's `vimage.netpfil.ipfw.reinject(vnet, pkt, outgoing, ifname, after_rule)`.
Without it (ipfw not built in, or not attached to the vnet) the datagram goes straight
on: out through IPv4 output after the pfil hooks (routed, fragmented if it must be,
header checksum filled in as ip_output does), or into IPv4 input after the pfil hooks
(local delivery or forwarding), from the kernel loop rather than from inside sendto.
"""

from __future__ import annotations

import errno
import weakref
from socket import AF_INET
from typing import TYPE_CHECKING, Any

from vimage.netinet.in_ import INADDR_BROADCAST
from vimage.protosw import Protocol
from vimage.stats import counters
from vimage.sysctl import Oid, oids
from vimage.wire.checksum import checksum

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPPROTO_DIVERT = 258  # FreeBSD netinet/in.h: not an IP protocol, the divert socket's number

SYSCTLS: tuple[Oid, ...] = oids("net.inet.divert", "divert", (
    ("recvspace", "Maximum space for incoming divert datagrams", 1, 2**26),
    ("sendspace", "Maximum outgoing divert datagram size", 1, 65535),
))

# counters of vnet.divert.stats (FreeBSD's divert keeps none that netstat shows)
STAT_LINES: tuple[tuple[str, str], ...] = (
    ("diverted", "{} packets diverted"),
    ("tee", "{} packets copied (tee)"),
    ("noport", "{} packets dropped: no socket on the divert port"),
    ("full", "{} packets dropped: socket buffer full"),
    ("outbound", "{} packets reinjected outbound"),
    ("inbound", "{} packets reinjected inbound"),
    ("badreinject", "{} reinjected packets refused"),
)
DivertStats = counters("DivertStats", tuple(name for name, _ in STAT_LINES))


class DivertState:
    """`vnet.divert`: port -> the divert socket bound to it (held weakly, as PCBs)."""

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.ports: dict[int, weakref.ref[Any]] = {}
        self.stats = DivertStats()
        self.recvspace = 65536  # net.inet.divert.recvspace (FreeBSD DIVRCVQ)
        self.sendspace = 65536  # net.inet.divert.sendspace (FreeBSD DIVSNDQ)

    # -- ports ------------------------------------------------------------------------
    def socket_on(self, port: int) -> Any:
        ref = self.ports.get(port)
        sock = ref() if ref is not None else None
        if sock is None or sock.closed:
            if ref is not None:
                del self.ports[port]
            return None
        return sock

    def bind(self, sock: Any, port: int) -> int:
        """Bind `sock` to divert port `port` (0: an ephemeral one); the port."""
        if port == 0:
            ip = self.vnet.ip
            for port in range(ip.port_first, ip.port_last + 1):
                if self.socket_on(port) is None:
                    break
            else:
                raise OSError(errno.EADDRINUSE, "Address already in use")
        elif self.socket_on(port) is not None:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        self.ports[port] = weakref.ref(sock)
        return port

    def unbind(self, sock: Any) -> None:
        for port, ref in list(self.ports.items()):
            if ref() is sock:
                del self.ports[port]

    # -- ipfw's divert and tee (divert_packet) ----------------------------------------------
    def deliver(self, port: int, pkt: bytes, ifp: Ifnet | None, outgoing: bool,
                rule: int, tee: bool = False) -> bool:
        """Queue `pkt` to the socket on `port`; False (counted) if none is bound, and
        the caller drops the packet. A full socket buffer drops it too (counted)."""
        sock = self.socket_on(port)
        if sock is None:
            self.stats.noport += 1
            return False
        addr = 0
        ifname = ""
        if not outgoing and ifp is not None:
            ifname = ifp.name
            if ifp.addrs:
                addr = ifp.addrs[0].addr
        if tee:
            self.stats.tee += 1
        else:
            self.stats.diverted += 1
        if not sock.divert_enqueue(bytes(pkt), addr, rule, ifname):
            self.stats.full += 1
        return True

    # -- reinjection (div_output) -------------------------------------------------------------
    def output(self, pkt: bytes, addr: int, rule: int, ifname: str | None) -> None:
        """Reinject what a divert socket wrote: out if `addr` is 0 and no interface is
        named, else in on the interface named or holding `addr`. OSError as sendto."""
        st = self.stats
        n = len(pkt)
        hlen = (pkt[0] & 0x0F) << 2 if n else 0
        if n < 20 or pkt[0] >> 4 != 4 or hlen < 20 or hlen > n or \
                int.from_bytes(pkt[2:4], "big") != n:
            st.badreinject += 1
            raise OSError(errno.EINVAL, "Invalid argument")
        vnet = self.vnet
        if addr == 0 and not ifname:
            st.outbound += 1
            self._reinject(pkt, True, None, rule)
            return
        ifp = vnet.ifaces.get(ifname) if ifname else None
        if ifp is None:
            ia = vnet.ip.local.get(addr)
            ifp = ia.ifp if ia is not None else None
        if ifp is None:
            st.badreinject += 1
            raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
        st.inbound += 1
        self._reinject(pkt, False, ifp.name, rule)

    def _reinject(self, pkt: bytes, outgoing: bool, ifname: str | None, rule: int) -> None:
        reinject = _ipfw_reinject() if hasattr(self.vnet, "ipfw") else None
        if reinject is not None:
            reinject(self.vnet, pkt, outgoing, ifname, rule)
        elif outgoing:
            self._output_direct(pkt)
        else:
            ifp = self.vnet.ifaces[ifname] if ifname else None
            self.vnet.kernel.call_later(0, self._input_direct, ifp, pkt, owner=self.vnet)

    def _output_direct(self, pkt: bytes) -> None:
        """The fallback without ipfw: IPv4 output after the pfil hooks (ip_output)."""
        ip = self.vnet.ip
        hlen = (pkt[0] & 0x0F) << 2
        header = bytearray(pkt[:hlen])
        header[10:12] = b"\x00\x00"
        header[10:12] = checksum(header).to_bytes(2, "big")
        pkt = bytes(header) + pkt[hlen:]
        dst = int.from_bytes(pkt[16:20], "big")
        route = ip.route_to(dst)
        ifp = route.ifp
        if not ifp.flags & 1:
            raise OSError(errno.ENETDOWN, "Network is down")
        from vimage.net.route import RTF_GATEWAY

        nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
        mtu = route.mtu or ifp.mtu
        ip.stats.localout += 1
        if len(pkt) > mtu:
            if pkt[6] & 0x40:
                ip.stats.cantfrag += 1
                raise OSError(errno.EMSGSIZE, "Message too long")
            ip._send_fragments(ifp, pkt, mtu, nexthop, dst)
            return
        ip._link_output(ifp, pkt, nexthop, dst == INADDR_BROADCAST or dst in ip.bcast)

    def _input_direct(self, ifp: Ifnet | None, pkt: bytes) -> None:
        """The fallback without ipfw: IPv4 input after the pfil hooks (a later loop turn)."""
        vnet = self.vnet
        if not vnet.alive or ifp is None or ifp.vnet is not vnet:
            return
        ip = vnet.ip
        hlen = (pkt[0] & 0x0F) << 2
        if int.from_bytes(pkt[:hlen], "big") % 0xFFFF:
            ip.stats.badsum += 1  # ip_input checks a reinjected header as any other
            return
        src = int.from_bytes(pkt[12:16], "big")
        dst = int.from_bytes(pkt[16:20], "big")
        if dst in ip.local or dst in ip.bcast or dst == INADDR_BROADCAST:
            ip.deliver(ifp, pkt, hlen, src, dst)
        else:
            ip.forward(ifp, pkt, hlen, dst)

    def clear(self) -> None:
        for ref in list(self.ports.values()):
            sock = ref()
            if sock is not None:
                sock.close()
        self.ports.clear()


def _ipfw_reinject() -> Any:
    """ipfw core's reinjection entry, or None while ipfw is not part of the build (used
    only for a vnet that has ipfw attached)."""
    try:
        from vimage.netpfil import ipfw
    except ImportError:
        return None
    return getattr(ipfw, "reinject", None)


def vnet_attach(vnet: Vnet) -> None:
    vnet.divert = DivertState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.divert.clear()


PROTOCOL = Protocol(
    "divert", 62, "divert", vnet_attach, vnet_detach, domain=AF_INET,
    protocol=IPPROTO_DIVERT, sysctls=SYSCTLS)
"""Divert's descriptor: its socket (added by the package's __init__, as for the others)
is found by its number, 258, ahead of raw IP's catch-all (protosw.socket_factory)."""
