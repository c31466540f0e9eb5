"""vxlan(4): Virtual eXtensible LAN, Ethernet frames in UDP (RFC 7348; FreeBSD if_vxlan.c).

`ifconfig vxlan create vxlanid 42 vxlanlocal 192.0.2.1 vxlanremote 192.0.2.2 up`: an
Ethernet interface whose frames travel to the remote VTEP (or the multicast group)
in UDP datagrams to port 4789. Like FreeBSD, the receiving side is a kernel socket:
`VxlanSocket` sits in the vnet's UDP table bound to (local address, port), so UDP's
own demultiplexing hands it the datagrams (FreeBSD's udp_set_kernel_tunneling), and
it passes each frame to the interface with that VNI. Several vxlan interfaces with
the same local address and port share one socket.

Forwarding table (FreeBSD's vxlan_ftable): a frame's source MAC is learnt with the
outer source address it came from (`vxlanlearn`), for `vxlantimeout` seconds (1200),
at most `vxlanmaxaddr` entries (2000). A unicast frame to a learnt MAC goes to that
VTEP; the rest (unknown, broadcast, multicast) to the remote, or the group. Expiry
is checked when an entry is used or the table is full: no timer runs.

Multicast groups (`vxlangroup G vxlandev IF`): sent with the group's Ethernet address
out of IF; received through an IPv4 pfil hook the first group interface of a vnet
installs (the stack has no IP multicast membership yet).

Over IPv6 (`vxlanlocal 2001:db8::1 vxlanremote 2001:db8::2`, FreeBSD vxlan_socket with
AF_INET6): the kernel socket sits in UDP's IPv6 table (`ports6`), frames go out through
`ip6.output` with a real UDP checksum (RFC 8200 8.1 makes it mandatory; RFC 7348 §5 asks
for it over IPv6), the hop limit is `vxlanttl`, VTEPs are learnt as IPv6 addresses, and
the default MTU is 1430 (Ethernet less 70 bytes of outer IPv6, UDP, VXLAN and inner
Ethernet headers, as Linux). An IPv6 group (`vxlangroup ff0e::42 vxlandev IF`) is sent
out of IF to the 33:33 Ethernet address and received through an IPv6 pfil hook, as
IPv4's (no MLD report is sent for it).
"""

from __future__ import annotations

import errno
import zlib
from socket import AF_INET, AF_INET6
from typing import TYPE_CHECKING, Any

from vimage.net import pfil
from vimage.net.ifnet import (
    ETHER_MTU,
    IFF_BROADCAST,
    IFF_MULTICAST,
    IFF_RUNNING,
    IFF_SIMPLEX,
    EtherIfnet,
)
from vimage.net.offload import LARGE, TUNNEL_CAPS, VXLAN
from vimage.net.tunnel import MAX_OUTER4, MAX_OUTER6, encap_gso, next_unit, reserve_ids
from vimage.protosw import Protocol
from vimage.stats import counters
from vimage.wire import WireError
from vimage.wire import ipv6 as wip6
from vimage.wire import udp as wudp
from vimage.wire import vxlan as wvxlan
from vimage.wire.checksum import checksum
from vimage.wire.ethernet import ETHERTYPE_IP_BYTES
from vimage.wire.ipv4 import HEADER as IP_HEADER

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

PROTO_UDP = 17
VXLAN_MTU = ETHER_MTU - 50  # outer IPv4 + UDP + VXLAN + inner Ethernet headers
VXLAN6_MTU = ETHER_MTU - 70  # the same with an outer IPv6 header (Linux's default too)
VXLAN_TTL = 64  # FreeBSD IPDEFTTL
FTABLE_MAX = 2000  # FreeBSD VXLAN_FTABLE_MAX
FTABLE_TIMEOUT = 20 * 60  # FreeBSD VXLAN_FTABLE_TIMEOUT, seconds

_SETTINGS = frozenset(("family", "local", "remote", "group", "dev", "lport", "rport", "ttl",
                       "learn", "timeout", "maxaddr", "port_min", "port_max"))
VXLAN_STATS = ("ipackets", "badheader", "novni", "ftable_nospace")
VxlanStats = counters("VxlanStats", VXLAN_STATS)


class VxlanState:
    """Per-vnet: the kernel sockets by (local address, port), groups, counters. Made
    when the vnet's first vxlan interface arrives (`state_of`): most vnets have none."""

    __slots__ = ("_stats", "groups", "hook", "hook6", "socks", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.socks: dict[tuple[int, int, int], VxlanSocket] = {}  # (family, addr, port)
        self.groups: dict[tuple[int, int], VxlanSocket] = {}  # (group, port) -> socket
        self.hook: Any = None  # group_hook bound once (pfil tells hooks apart by identity)
        self.hook6: Any = None  # group_hook6, the same for IPv6 groups
        self._stats: Any = None

    @property
    def stats(self) -> Any:
        """Counters (VXLAN_STATS), made on first use."""
        if self._stats is None:
            self._stats = VxlanStats()
        return self._stats

    def group_hook(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        """IPv4 pfil hook: take UDP datagrams to a joined group and port."""
        if pkt[9] != PROTO_UDP or pkt[16] >> 4 != 0xE or pkt[6] & 0x3F or pkt[7]:
            return pkt  # not UDP to a multicast group, or a fragment
        hlen = (pkt[0] & 0x0F) << 2
        if len(pkt) < hlen + 8:
            return pkt
        dst = int.from_bytes(pkt[16:20], "big")
        sock = self.groups.get((dst, (pkt[hlen + 2] << 8) | pkt[hlen + 3]))
        if sock is None:
            return pkt
        src = int.from_bytes(pkt[12:16], "big")
        try:
            dgram = wudp.parse(memoryview(pkt)[hlen:], src, dst)
        except WireError:
            self.vnet.udp.stats.badsum += 1
            return None
        sock.enqueue(bytes(dgram.payload), src, dgram.sport)
        return None

    def group_hook6(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        """IPv6 pfil hook: take UDP datagrams (no extension header) to a joined group."""
        if pkt[6] != PROTO_UDP or pkt[24] != 0xFF or len(pkt) < 48:
            return pkt
        dst = int.from_bytes(pkt[24:40], "big")
        sock = self.groups.get((dst, (pkt[42] << 8) | pkt[43]))
        if sock is None:
            return pkt
        src = int.from_bytes(pkt[8:24], "big")
        st = self.vnet.udp.stats
        try:
            dgram = wudp.parse(memoryview(pkt)[40:], src, dst)
        except WireError:
            st.badsum += 1
            return None
        if dgram.checksum == 0:  # mandatory over IPv6 (RFC 8200 8.1), as udp6_input
            st.nosum += 1
            return None
        sock.enqueue(bytes(dgram.payload), src, dgram.sport)
        return None

    def sync_hook(self) -> None:
        """A group hook is linked while some group of its family is joined, and only
        then (IPv4 groups are 32-bit addresses, IPv6 ones 128-bit)."""
        v4 = any(g <= 0xFFFFFFFF for g, _ in self.groups)
        v6 = any(g > 0xFFFFFFFF for g, _ in self.groups)
        ip = self.vnet.ip
        if v4 and self.hook is None:
            self.hook = self.group_hook
            pfil.link(ip, "pfil_in", self.hook, order=50, name="vxlan")
        elif not v4 and self.hook is not None:
            pfil.unlink(ip, "pfil_in", self.hook)
            self.hook = None  # no cycle left through the bound method
        ip6 = getattr(self.vnet, "ip6", None)
        if v6 and self.hook6 is None and ip6 is not None:
            self.hook6 = self.group_hook6
            pfil.link(ip6, "pfil_in", self.hook6, order=50, name="vxlan")
        elif not v6 and self.hook6 is not None:
            if ip6 is not None:  # (gone first when the whole vnet is destroyed)
                pfil.unlink(ip6, "pfil_in", self.hook6)
            self.hook6 = None

    def clear(self) -> None:
        for sock in list(self.socks.values()):
            sock.close()
        self.groups.clear()


class VxlanSocket:
    """A kernel UDP socket: what UDP input reads of a socket, and `enqueue`, which
    decapsulates instead of queueing for a reader (FreeBSD vxlan_rcv_udp_packet)."""

    __slots__ = ("__weakref__", "_rcvbytes", "faddr", "family", "fport", "laddr", "lport",
                 "reuseaddr", "reuseport", "state", "vnis")

    type = 2  # SOCK_DGRAM, for netstat
    offloaded_inner = True  # takes datagrams whose inner frame is unfilled (offload.VXLAN)
    recvopts = 0  # no control messages (UDP input reads it of every receiver)
    reuseport_lb = False
    scope = 0  # what UDP over IPv6 reads of a socket: no zone, IPv6 only
    v6only = True

    def __init__(self, state: VxlanState, family: int = AF_INET) -> None:
        self.state = state
        self.family = family
        self.laddr = self.lport = self.faddr = self.fport = 0
        self.reuseaddr = self.reuseport = False
        self._rcvbytes = 0
        self.vnis: dict[int, Vxlan] = {}

    def enqueue(self, data: bytes, src: int, sport: int, *_dst: object) -> bool:
        st = self.state.stats
        st.ipackets += 1
        try:
            vx = wvxlan.parse(data)
        except WireError:
            st.badheader += 1
            return True
        ifp = self.vnis.get(vx.vni)
        if ifp is None:
            st.novni += 1
            return True
        ifp.receive(vx.payload, src)
        return True

    def close(self) -> None:
        state = self.state
        key = (self.family, self.laddr, self.lport)
        if state.socks.get(key) is self:
            del state.socks[key]
        state.vnet.udp.unbind(self)
        for key in [k for k, s in state.groups.items() if s is self]:
            del state.groups[key]
        state.sync_hook()


class Vxlan(EtherIfnet):
    """A vxlan interface. Addresses are ints; `remote` 0 with a `group` set sends
    unknown destinations to the group."""

    __slots__ = ("dev", "family", "ftable", "group", "learn", "local", "lport", "maxaddr",
                 "port_max", "port_min", "remote", "rport", "sock", "timeout", "ttl", "vni")

    def __init__(self, vnet: Vnet, unit: int) -> None:
        self.vni: int | None = None
        self.family = AF_INET
        self.local = self.remote = 0
        self.group = 0
        self.dev: str | None = None
        self.lport = self.rport = wvxlan.PORT
        self.port_min, self.port_max = vnet.ip.port_first, vnet.ip.port_last
        self.ttl = VXLAN_TTL
        self.learn = True
        self.timeout = FTABLE_TIMEOUT
        self.maxaddr = FTABLE_MAX
        self.ftable: dict[bytes, list[int]] = {}  # MAC -> [VTEP address, expiry ns]
        self.sock: VxlanSocket | None = None
        super().__init__(vnet, "vxlan", unit, f"vxlan{unit}",
                         IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST, VXLAN_MTU,
                         vnet.kernel.random_mac(vnet))
        self.capabilities = self.capenable = TUNNEL_CAPS  # (vimage: see relays)

    # -- configuration ------------------------------------------------------------------
    def configure(self, **settings: object) -> None:
        """Set vni, family (of the outer addresses), local, remote, group, dev, lport,
        rport, ttl, learn, timeout, maxaddr; the kernel socket is reopened if the
        interface is up. A change of family moves a default MTU to the family's."""
        was_open = self.sock is not None
        self._close()
        for name, value in settings.items():
            if name == "vni":
                if not 0 <= int(value) <= wvxlan.VNI_MAX:  # type: ignore[call-overload]
                    raise ValueError(f"vxlanid {value}: out of range 0..{wvxlan.VNI_MAX}")
                self.vni = int(value)  # type: ignore[call-overload]
            elif name == "family":
                self._set_family(int(value))  # type: ignore[call-overload]
            elif name in _SETTINGS:
                setattr(self, name, value)
            else:
                raise TypeError(f"unknown vxlan setting {name}")
        if was_open or self.flags & 1:
            self._open()

    def _set_family(self, family: int) -> None:
        if family == self.family:
            return
        defaults = {AF_INET: VXLAN_MTU, AF_INET6: VXLAN6_MTU}
        if self.mtu == defaults[self.family]:
            self.mtu = defaults[family]
        self.family = family
        self.ftable.clear()  # the learnt VTEPs were of the other family

    def set_up(self, up: bool) -> None:
        """Up joins the kernel socket before the link comes up (its gratuitous ARP
        goes out); RUNNING only if that worked (vxlan_init)."""
        if not up:
            super().set_up(False)
            self._close()
            return
        self._open()
        super().set_up(True)
        if self.sock is None:
            self.flags &= ~IFF_RUNNING

    def _open(self) -> None:
        """vxlan_init: join the kernel socket for (local, port); not RUNNING without a
        complete configuration or if the VNI is taken there."""
        self._close()
        if self.vni is None or not self.local or not (self.remote or self.group):
            self.flags &= ~IFF_RUNNING
            return
        vnet = self.vnet
        if self.family == AF_INET6 and getattr(vnet, "ip6", None) is None:
            self.flags &= ~IFF_RUNNING  # no IPv6 in this kernel
            return
        state = state_of(vnet)
        key = (self.family, self.local, self.lport)
        sock = state.socks.get(key)
        if sock is None:
            sock = VxlanSocket(state, self.family)
            try:
                vnet.udp.bind(sock, self.local, self.lport)
            except OSError:
                self.flags &= ~IFF_RUNNING
                return
            state.socks[key] = sock
        if self.vni in sock.vnis:
            self.flags &= ~IFF_RUNNING
            return
        sock.vnis[self.vni] = self
        self.sock = sock
        if self.group:
            state.groups[(self.group, self.lport)] = sock
            state.sync_hook()
        self.flags |= IFF_RUNNING

    def _close(self) -> None:
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        self.flags &= ~IFF_RUNNING
        if sock.vnis.get(self.vni) is self:  # type: ignore[arg-type]
            del sock.vnis[self.vni]  # type: ignore[arg-type]
        if not sock.vnis:
            sock.close()
        elif self.group and not any(v.group == self.group for v in sock.vnis.values()):
            sock.state.groups.pop((self.group, self.lport), None)  # the last one leaves
            sock.state.sync_hook()

    def close_device(self) -> None:
        self._close()
        self.ftable.clear()

    def flush(self, all_entries: bool = False) -> None:
        """`vxlanflush` / `vxlanflushall` (all: static entries too; we have none)."""
        self.ftable.clear()

    def ftable_entries(self) -> list[tuple[bytes, int]]:
        now = self.vnet.kernel.sched.now_ns()
        return [(mac, e[0]) for mac, e in self.ftable.items() if e[1] > now]

    # -- data path ----------------------------------------------------------------------
    def relays(self, frame: bytes) -> bool:
        """An offloaded inner frame is encapsulated as it is and the outer datagram sent
        under the mark with its VXLAN bit (vimage.net.offload), so that wherever it is
        resolved the inner frame is filled first. A large TCP segment goes whole in one
        datagram when the outer packet's interface takes it (tunnel GSO, `_whole`), else
        it is cut into pieces, unfilled, one datagram each (`gso_transmit`); a vxlan
        inside another vxlan's offloaded frame fills it (one VXLAN bit)."""
        return (self.sock is not None and not self.offl.partial & VXLAN
                and self.tx_takes(frame))

    def transmit(self, frame: bytes) -> bool:
        """vxlan_transmit: pick the VTEP, encapsulate, send over UDP."""
        offl = self.offl
        mark = offl.partial
        if not mark:
            return self._transmit(frame, False)
        if mark & LARGE:  # whole (tunnel GSO), else one datagram per piece
            return self._whole(frame, mark)
        offl.partial = mark | VXLAN
        try:
            return self._transmit(frame, True)
        finally:
            offl.partial = mark

    def _whole(self, frame: bytes, mark: int) -> bool:
        """A large TCP segment in one datagram to a unicast VTEP (`tunnel.encap_gso`)."""
        offl = self.offl
        gso = None
        if self.sock is not None and len(frame) >= 14:
            dst = self._vtep(frame)
            limit = MAX_OUTER4 if self.family == AF_INET else MAX_OUTER6
            if dst != self.group and len(frame) + 16 <= limit:
                gso = encap_gso(self, frame, 18 if frame[12:14] == b"\x81\x00" else 14,
                                self.family, dst)
        if gso is None:
            return self.gso_transmit(frame, self.transmit)
        saved = offl.gso
        offl.partial = mark | VXLAN
        offl.gso = gso[0]
        try:
            return self._transmit(frame, True, gso[1])
        finally:
            offl.partial = mark
            offl.gso = saved
            reserve_ids(self.vnet, self.family, gso[1])

    def _vtep(self, frame: bytes) -> int:
        """The VTEP for `frame`: its learnt one, else the remote, or the group."""
        dst = 0
        if not frame[0] & 1:
            entry = self.ftable.get(frame[:6])
            if entry is not None:
                if entry[1] > self.vnet.kernel.sched.now_ns():
                    dst = entry[0]
                else:
                    del self.ftable[frame[:6]]
        return dst or self.remote or self.group

    def _transmit(self, frame: bytes, offloaded: bool, count: int = 1) -> bool:
        """Send `frame` in one datagram (the `count` pieces of a whole large segment
        count as the datagrams they become)."""
        sock = self.sock
        if sock is None or len(frame) < 14:
            self.oerrors += 1
            return False
        dst = self._vtep(frame)
        span = self.port_max - self.port_min + 1
        sport = self.port_min + zlib.crc32(frame[:14]) % span  # RFC 7348 §5: a flow hash
        if self.family == AF_INET6:
            return self._output6(sport, dst, frame, offloaded, count)
        # RFC 7348 §5: the UDP checksum SHOULD be zero over IPv4 (Linux's default too);
        # the headers and the frame joined in one copy (a frame may be 64 KB: tunnel GSO)
        payload = b"".join((wudp.HEADER.pack(sport, self.rport, 16 + len(frame), 0),
                            wvxlan.header(self.vni), frame))  # type: ignore[arg-type]
        try:
            if dst == self.group:
                return self._multicast(dst, payload)
            self.vnet.ip.output(PROTO_UDP, self.local, dst, payload, ttl=self.ttl)
        except OSError:
            self.oerrors += count
            return False
        self.vnet.udp.stats.opackets += count
        return True

    def _output6(self, sport: int, dst: int, frame: bytes, offloaded: bool,
                 count: int = 1) -> bool:
        """Over IPv6 the UDP checksum is computed (RFC 8200 8.1; RFC 7348 §5), the
        hop limit is `vxlanttl` (FreeBSD vxlan_encap6); under the offload mark it is
        left to whoever fills the inner frame's (vimage.net.offload)."""
        if offloaded:  # (one copy, as over IPv4)
            payload = b"".join((wudp.HEADER.pack(sport, self.rport, 16 + len(frame), 0),
                                wvxlan.header(self.vni), frame))  # type: ignore[arg-type]
        else:
            payload = wudp.build(sport, self.rport, wvxlan.header(self.vni) + frame,  # type: ignore[arg-type]
                                 self.local, dst)
        ip6 = self.vnet.ip6
        try:
            if dst == self.group:  # out of vxlandev, whatever the routes say
                dev = self.vnet.ifaces.get(self.dev) if self.dev else None
                if dev is None or not dev.flags & 1:
                    raise OSError(errno.ENETUNREACH, "vxlan: no multicast interface")
                pkt = wip6.build_header(self.local, dst, PROTO_UDP, len(payload), self.ttl)
                ip6.output_packet(pkt + payload, dev, dst, None, dst)
            else:
                ip6.output(PROTO_UDP, self.local, dst, payload, hlim=self.ttl)
        except OSError:
            self.oerrors += count
            return False
        self.vnet.udp.stats.opackets += count
        return True

    def _multicast(self, group: int, payload: bytes) -> bool:
        """Send to the group out of `vxlandev` with the RFC 1112 Ethernet address."""
        dev = self.vnet.ifaces.get(self.dev) if self.dev else None
        if dev is None or dev.mac is None or not dev.flags & 1:
            raise OSError(errno.ENETUNREACH, "vxlan: no multicast interface")
        ip = self.vnet.ip
        header = IP_HEADER.pack(0x45, 0, 20 + len(payload), ip.next_ident(), 0, self.ttl,
                                PROTO_UDP, 0, self.local, group)
        header = header[:10] + checksum(header).to_bytes(2, "big") + header[12:]
        mac = bytes((0x01, 0x00, 0x5E, (group >> 16) & 0x7F, (group >> 8) & 0xFF,
                     group & 0xFF))
        ip.stats.localout += 1
        self.vnet.udp.stats.opackets += 1
        return dev.output(b"".join((mac, dev.mac, ETHERTYPE_IP_BYTES, header, payload)))

    def receive(self, frame: memoryview, src: int) -> None:
        """A decapsulated frame from VTEP `src`: learn its source MAC, queue it."""
        if not self.flags & 1:
            self.iqdrops += 1
            return
        data = bytes(frame)
        if self.learn and not data[6] & 1:
            self._learn(data[6:12], src)
        self.queue_input(data)  # an offloaded outer datagram's inner frame stays so

    def _learn(self, mac: bytes, src: int) -> None:
        now = self.vnet.kernel.sched.now_ns()
        expire = now + self.timeout * 1_000_000_000
        entry = self.ftable.get(mac)
        if entry is not None:
            entry[0], entry[1] = src, expire
            return
        if len(self.ftable) >= self.maxaddr:
            for old in [m for m, e in self.ftable.items() if e[1] <= now]:
                del self.ftable[old]
            if len(self.ftable) >= self.maxaddr:
                state_of(self.vnet).stats.ftable_nospace += 1
                return
        self.ftable[mac] = [src, expire]


class VxlanCloner:
    """The vxlan cloner (kernel service): `create(vnet, unit=None)`."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def create(self, vnet: Vnet, unit: int | None = None) -> Vxlan:
        with self.kernel.sched.cond:
            return Vxlan(vnet, next_unit(vnet, "vxlan", unit))


def state_of(vnet: Vnet) -> VxlanState:
    """The vnet's vxlan state, made on first use."""
    state = vnet.vxlan
    if state is None:
        state = vnet.vxlan = VxlanState(vnet)
    return state


def vnet_attach(vnet: Vnet) -> None:
    vnet.vxlan = None


def vnet_detach(vnet: Vnet) -> None:
    if vnet.vxlan is not None:
        vnet.vxlan.clear()


PROTOCOL = Protocol("vxlan", 64, "vxlan", vnet_attach, vnet_detach)
"""Per-vnet vxlan state; its input comes through UDP's table, not the switch."""
