"""Network interfaces: the common part, loopback and epair, and the epair cloner.

An interface that transmits puts the frame on the kernel's packet queue (or into
its link pipe); the kernel loop later calls the receiving interface's `input`.
This layer knows no network protocol: Ethernet frames go to `ether_input`
(vimage.net.ether), which dispatches by ethertype through the vnet's table, and
protocols learn of interfaces through the kernel's interface events
(`Kernel.ifnet_arrival`, `ifnet_departure`, `ifnet_up`), as FreeBSD's
ifnet_arrival_event and ifnet_departure_event tell them.
"""

from __future__ import annotations

import errno
from socket import AF_INET
from typing import TYPE_CHECKING, Any

from vimage.compiled import mypyc_attr
from vimage.kernel import UnitSet

# ether: a module reference (it imports this module too)
from vimage.net import ether, offload, pfil, rtsock
from vimage.net.offload import (
    IFCAP_LRO,
    IFCAP_RXCSUM,
    IFCAP_RXCSUM_IPV6,
    IFCAP_TSO4,
    IFCAP_TSO6,
    IFCAP_TXCSUM,
    IFCAP_TXCSUM_IPV6,
    LARGE,
    PARTIAL,
    VXLAN,
    RxPort,
)
from vimage.protosw import Protocol
from vimage.wire.ethernet import ETHERTYPE_IP, ETHERTYPE_IPV6

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.pipe import LinkPipe
    from vimage.netinet.in_ import InAddr
    from vimage.vnet import Vnet

IFF_UP = 0x1
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_RUNNING = 0x40
IFF_PROMISC = 0x100
IFF_SIMPLEX = 0x800
IFF_MULTICAST = 0x8000
# vimage-private, never shown: the interface's vnet has link-layer pfil hooks, so the
# data path tests one flag word for "up, and no hooks" (see Ifnet.sync_link_hooks)
IFF_LINK_HOOKS = 0x40000000
_UP_OR_HOOKS = IFF_UP | IFF_LINK_HOOKS
# vimage-private, never shown: a link-layer taker (`Ifnet.l2`: the bridge the interface is
# a member of, or its VLAN trunk) sees received frames before Ethernet input, as FreeBSD's
# ether_input hands them to bridge_input_p / vlan_input_p; tested with the hooks bit
IFF_L2 = 0x20000000
_L2_OR_HOOKS = IFF_L2 | IFF_LINK_HOOKS

FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (IFF_UP, "UP"), (IFF_BROADCAST, "BROADCAST"), (IFF_LOOPBACK, "LOOPBACK"),
    (IFF_POINTOPOINT, "POINTOPOINT"), (IFF_RUNNING, "RUNNING"), (IFF_PROMISC, "PROMISC"),
    (IFF_SIMPLEX, "SIMPLEX"), (IFF_MULTICAST, "MULTICAST"),
)

# a looped packet's IP version -> the ethertype whose input takes it: IPv6 for 6, else
# IPv4, whose input counts and drops a bad version as it always did
_LOOP_TYPES: tuple[int, ...] = tuple(ETHERTYPE_IPV6 if v == 6 else ETHERTYPE_IP for v in range(16))
_LOOP_EMPTY = ETHERTYPE_IP

LOOPBACK_MTU = 16384
ETHER_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65535


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled: tunnels, tap ... subclass it
class Ifnet:
    """State common to every interface. `vnet` is where it is now, `home` where it was born."""

    __slots__ = (
        "addrs",
        "afdata",
        "bpf",
        "capabilities",
        "capenable",
        "fib",
        "flags",
        "home",
        "ibytes",
        "ierrors",
        "index",
        "ipackets",
        "iqdrops",
        "kind",
        "l2",
        "mac",
        "mtu",
        "name",
        "obytes",
        "oerrors",
        "offl",
        "opackets",
        "oqdrops",
        "peer",
        "pipe",
        "rxport",
        "txq",
        "unit",
        "vnet",
    )

    def __init__(self, vnet: Vnet, kind: str, unit: int, name: str, flags: int, mtu: int,
                 mac: bytes | None) -> None:
        self.vnet = vnet
        self.home = vnet
        self.kind = kind
        self.unit = unit
        self.name = name
        self.flags = flags
        self.mtu = mtu
        self.mac = mac
        # per-family address data: INET's addresses in their own slot (read on hot
        # paths), other families' under their AF number in `afdata`, made on first use
        self.addrs: list[InAddr] = []
        self.afdata: dict[int, Any] | None = None
        self.peer: Any = None  # an Ifnet, or a test's stand-in with input(frame)
        self.pipe: LinkPipe | None = None
        self.bpf: Any = None  # a capture session (vimage.net.bpf) while someone listens
        # a link-layer taker with `l2input(ifp, frame) -> bool` (True: taken), set with
        # IFF_L2 by a bridge (if_bridge) or a VLAN trunk (if_vlan); None for most
        self.l2: Any = None
        self.index = 0
        self.fib = 0  # the FIB its addresses' routes go in (ifconfig IF fib N)
        self.txq = vnet.kernel.sched.queue  # the kernel's packet queue, bound once
        # offloads (vimage.net.offload): what the interface can do (FreeBSD's if_capabilities)
        # and what is on (if_capenable); the kernel's offload mark; the receiver an
        # in-process sender queues an offloaded frame for
        self.capabilities = self.capenable = 0
        self.offl = offload.state(vnet.kernel)
        self.rxport: RxPort | None = None  # made on first use (most interfaces never need one)
        self.ipackets = self.ierrors = self.iqdrops = self.ibytes = 0
        self.opackets = self.oerrors = self.oqdrops = self.obytes = 0
        _link(vnet, self)

    # -- properties ------------------------------------------------------------
    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def is_loopback(self) -> bool:
        return bool(self.flags & IFF_LOOPBACK)

    def set_up(self, up: bool) -> None:
        if up:
            was_up = self.flags & IFF_UP
            self.flags |= IFF_UP | IFF_RUNNING
            if not was_up:
                self.vnet.kernel.ifnet_up(self)  # e.g. gratuitous ARP for its addresses
                rtsock.ifinfo(self)
        elif self.flags & IFF_UP:
            self.flags &= ~(IFF_UP | IFF_RUNNING)
            rtsock.ifinfo(self)
        else:
            self.flags &= ~IFF_RUNNING

    def sync_link_hooks(self) -> None:
        """Set IFF_LINK_HOOKS as the vnet's link-layer pfil points say (Ethernet only)."""
        vnet = self.vnet
        if self.mac is not None and self.flags and (
                vnet.pfil_link_in is not None or vnet.pfil_link_out is not None):
            self.flags |= IFF_LINK_HOOKS
        else:
            self.flags &= ~IFF_LINK_HOOKS

    # -- configuration API ----------------------------------------------------------
    def add_addr(self, cidr: str, broadcast: str | None = None, family: int = AF_INET) -> None:
        """Add an address given in its family's text form, 'a.b.c.d/len' for IPv4 (an
        alias if one exists), through that family's `add_addr` in the protocol switch."""
        with self.vnet.kernel.sched.cond:
            for proto in self.vnet.kernel.protocols:
                if proto.domain == family and proto.add_addr is not None:
                    proto.add_addr(self, cidr, broadcast)
                    return
        raise OSError(errno.EAFNOSUPPORT, f"address family {family} is not supported")

    def move_to(self, vnet: Vnet) -> None:
        with self.vnet.kernel.sched.cond:
            move(self, vnet)

    def destroy(self) -> None:
        with self.vnet.kernel.sched.cond:
            destroy(self)

    def impair(self, **settings: object) -> LinkPipe:
        """Impair what this interface transmits: bandwidth, delay, loss, ber, dup, queue.

        Values take numbers (bit/s, seconds, probabilities, frames) or the strings
        vlink accepts ('1Mbit/s', '50ms', '1%').
        """
        from vimage.net.pipe import configure

        if self.kind != "epair":
            raise ValueError(f"{self.name}: link impairment needs an epair interface")
        with self.vnet.kernel.sched.cond:
            return configure(self, settings)

    def clear_impairment(self) -> None:
        with self.vnet.kernel.sched.cond:
            if self.pipe is not None:
                self.pipe.flush()
                self.pipe = None

    # -- data path ---------------------------------------------------------------
    def output(self, frame: bytes) -> bool:
        """Transmit `frame`; False (and a drop counted) if the interface cannot send.

        The one transmit path of every interface (FreeBSD's if_transmit plus the
        BPF_MTAP every driver does): the counters and the capture tap are here, the
        driver's part is `transmit`, except that a frame for a peer (an epair without
        impairment, the hottest case) is queued here, saving a call per frame. A frame
        under the offload mark goes to `output_partial`.
        """
        if self.offl.partial:
            return self.output_partial(frame)
        flags = self.flags
        if flags & _UP_OR_HOOKS != IFF_UP:  # down, or link hooks to run: one test for both
            if not flags & IFF_UP:
                self.oqdrops += 1
                return False
            hooks = self.vnet.pfil_link_out
            if hooks is not None:
                passed = pfil.run(hooks, frame, self)
                if passed is None:
                    return True  # taken by a hook, which counted it
                frame = passed
        self.opackets += 1
        self.obytes += len(frame)
        if self.bpf is not None:  # captured once, on the way out
            self.bpf.tap(frame, True)
        peer = self.peer
        if peer is not None and self.pipe is None:  # an epair's common case, inline
            self.txq.append((peer, frame))
            return True
        return self.transmit(frame)

    def output_partial(self, frame: bytes) -> bool:
        """Transmit a frame whose TCP/UDP checksum may be missing and which may be a
        large TCP segment (see vimage.net.offload): whole to an in-process receiver that
        takes it (no capture, hook or impairment on the way, the capabilities on both
        ends); through a relay (a VLAN, a bridge, a tunnel: `relays`) whole to what it
        sends through, which decides in turn; else filled in and cut to the MTU here and
        sent the ordinary way."""
        offl = self.offl
        rx = self.offload_peer()
        if rx is not None:
            if self.bpf is None and rx.bpf is None \
                    and not (self.flags | rx.flags) & IFF_LINK_HOOKS and self.flags & IFF_UP \
                    and rx.vnet not in offl.hooked:
                if self.mac is None:  # (frame_kind, inline: this is TCP's hot path)
                    v6 = bool(frame) and frame[0] >> 4 == 6
                    large = len(frame) > self.mtu
                else:
                    etype = frame[12:14]
                    hl = 14
                    if etype == b"\x81\x00":  # tagged (a VLAN's parent)
                        etype = frame[16:18]
                        hl = 18
                    v6 = etype == b"\x86\xdd"
                    large = len(frame) > self.mtu + hl
                tx_on = self.capenable
                rx_on = rx.capenable
                if v6:
                    ok = tx_on & IFCAP_TXCSUM_IPV6 and rx_on & IFCAP_RXCSUM_IPV6 and (
                        not large or (tx_on & IFCAP_TSO6 and rx_on & IFCAP_LRO))
                else:
                    ok = tx_on & IFCAP_TXCSUM and rx_on & IFCAP_RXCSUM and (
                        not large or (tx_on & IFCAP_TSO4 and rx_on & IFCAP_LRO))
                if ok:
                    self.opackets += 1
                    self.obytes += len(frame)
                    vxlan = offl.partial & VXLAN
                    if large:
                        port = RxPort(rx, offl, offl.gso, vxlan)
                    elif vxlan:
                        port = RxPort(rx, offl, 0, vxlan)
                    else:  # (rx_port, inlined)
                        cached = rx.rxport
                        port = cached if cached is not None else rx.rx_port()
                    self.txq.append((port, frame))
                    return True
        elif self.bpf is None and self.flags & _UP_OR_HOOKS == IFF_UP and self.relays(frame):
            self.opackets += 1
            self.obytes += len(frame)
            return self.transmit(frame)  # under the mark still
        pieces = offload.resolve_frame(frame, offl.gso, self.mtu, self.mac is not None,
                                       bool(offl.partial & VXLAN))
        if len(pieces) > 1:
            offl.segmented += 1
        saved = offl.partial
        offl.partial = 0
        try:
            sent = True
            for piece in pieces:
                sent = self.output(piece) and sent
        finally:
            offl.partial = saved
        return sent

    def rx_port(self) -> RxPort:
        """The receiver to queue an offloaded frame of MTU size for (vimage.net.offload)."""
        port = self.rxport
        if port is None:
            port = self.rxport = RxPort(self, self.offl)
        return port

    def frame_kind(self, frame: bytes) -> tuple[bool, bool]:
        """(IPv6, larger than the MTU) for a frame of this interface (Ethernet, with or
        without an 802.1Q tag, or a bare IP packet)."""
        if self.mac is None:
            return bool(frame) and frame[0] >> 4 == 6, len(frame) > self.mtu
        if frame[12:14] == b"\x81\x00":
            return frame[16:18] == b"\x86\xdd", len(frame) > self.mtu + 18
        return frame[12:14] == b"\x86\xdd", len(frame) > self.mtu + 14

    def tx_takes(self, frame: bytes) -> bool:
        """Whether the transmit capabilities let `frame` go on under the offload mark."""
        v6, large = self.frame_kind(frame)
        on = self.capenable
        if v6:
            return bool(on & IFCAP_TXCSUM_IPV6 and (not large or on & IFCAP_TSO6))
        return bool(on & IFCAP_TXCSUM and (not large or on & IFCAP_TSO4))

    def rx_takes(self, frame: bytes) -> bool:
        """Whether this interface's input takes `frame` under the offload mark as it is
        (RXCSUM, RXCSUM_IPV6, and LRO for a large one); a relay's receiving side asks."""
        v6, large = self.frame_kind(frame)
        on = self.capenable
        return bool(on & (IFCAP_RXCSUM_IPV6 if v6 else IFCAP_RXCSUM)
                    and (not large or on & IFCAP_LRO))

    def relays(self, frame: bytes) -> bool:
        """Whether `transmit` may take `frame` under the offload mark: an interface that
        hands its frames synchronously to another one's output or to IP output (VLAN,
        bridge, tunnels) and can pass the mark on says so when its capabilities allow."""
        return False

    def gso_transmit(self, frame: bytes, send: Any) -> bool:
        """A relay that encapsulates (a tunnel) and takes a large TCP segment under the
        mark: cut it into MTU-sized pieces, still unfilled, and `send(piece)` each with
        the mark's LARGE bit clear (Linux's software GSO at a tunnel device)."""
        offl = self.offl
        ether = self.mac is not None
        pieces = offload.segment_frame(frame, offl.gso, self.mtu, ether)
        saved = offl.partial
        if len(pieces) > 1:
            offl.segmented += 1
            offl.partial = saved & ~LARGE
        elif len(frame) > self.mtu + (14 if ether else 0):
            # no plain TCP segment: another tunnel's whole (GSO) outer packet, which this
            # one does not carry whole (nested tunnels): cut and filled here
            pieces = offload.resolve_frame(frame, offl.gso, self.mtu, ether,
                                           bool(saved & VXLAN))
            if len(pieces) > 1:
                offl.segmented += 1
            offl.partial = 0
        else:
            offl.partial = saved & ~LARGE
        try:
            sent = True
            for piece in pieces:
                sent = send(piece) and sent
        finally:
            offl.partial = saved
        return sent

    def input_offloaded(self, frame: bytes) -> None:
        """`input` for a frame a relay passes up under the offload mark (a VLAN's parent,
        a bridge member): resolved first if this interface does not take it as it is."""
        offl = self.offl
        if not offl.partial or self.rx_takes(frame):
            self.input(frame)
            return
        pieces = offload.resolve_frame(frame, offl.gso, self.mtu, self.mac is not None,
                                       bool(offl.partial & VXLAN))
        saved = offl.partial
        offl.partial = 0
        try:
            for piece in pieces:
                self.input(piece)
        finally:
            offl.partial = saved

    def queue_input(self, frame: bytes, keep: int = ~VXLAN) -> None:
        """Queue a decapsulated frame for this interface's input (the kernel loop delivers
        it, as FreeBSD's netisr does) with the bits `keep` of the current offload mark:
        the offload crosses the queue as it crosses a link (vimage.net.offload)."""
        offl = self.offl
        mark = offl.partial & keep  # (LARGE: a segment a tunnel carried whole, tunnel GSO)
        if not mark:
            self.txq.append((self, frame))
        elif not self.rx_takes(frame) or (mark & LARGE and self.bpf is not None):
            # -rxcsum, -lro: it arrives filled and cut; and a captured tunnel interface
            # gets the pieces, as it gets them when the sender's tunnel cut them
            vxlan = bool(mark & VXLAN)
            gso = offl.gso if mark & LARGE else 0
            pieces = offload.resolve_frame(frame, gso, self.mtu, self.mac is not None, vxlan)
            if len(pieces) > 1:
                offl.segmented += 1
            for piece in pieces:
                self.txq.append((self, piece))
        elif mark == PARTIAL:
            self.txq.append((self.rx_port(), frame))
        elif mark & LARGE and self.frame_kind(frame)[1]:
            self.txq.append((RxPort(self, offl, offl.gso, mark & VXLAN), frame))
        else:
            self.txq.append((RxPort(self, offl, 0, mark & VXLAN), frame))

    def offload_peer(self) -> Ifnet | None:
        """The in-process interface that receives what this one transmits, when it can
        take an offloaded frame (an epair's peer without impairment); None otherwise."""
        return None

    def transmit(self, frame: bytes) -> bool:
        """The driver: put a counted, captured frame on its way; False if it failed."""
        raise NotImplementedError

    def input(self, frame: bytes) -> None:
        raise NotImplementedError

    def close_device(self) -> None:
        """Release what backs the interface outside the process (a TAP device)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} in {self.vnet.display_name}>"


def _link(vnet: Vnet, ifp: Ifnet) -> None:
    if ifp.name in vnet.ifaces:
        raise FileExistsError(f"interface {ifp.name} already exists in {vnet.display_name}")
    ifp.index = vnet.next_ifindex
    vnet.next_ifindex += 1
    ifp.vnet = vnet
    vnet.ifaces[ifp.name] = ifp
    ifp.sync_link_hooks()  # this vnet's link-layer pfil hooks, not the last one's
    vnet.kernel.ifnet_arrival(ifp)  # protocols (lo0's 127.0.0.1), then traces


def _unlink(ifp: Ifnet) -> None:
    """Take `ifp` out of its vnet: protocols drop its addresses, routes, ARP entries."""
    vnet = ifp.vnet
    vnet.kernel.ifnet_departure(ifp)
    if ifp.pipe is not None:
        ifp.pipe.flush()
    del vnet.ifaces[ifp.name]


class Loopback(Ifnet):
    """lo: what it transmits it receives, through the kernel queue."""

    __slots__ = ()

    def offload_peer(self) -> Ifnet | None:
        return self

    def transmit(self, frame: bytes) -> bool:
        self.txq.append((self, frame))
        return True

    def input(self, frame: bytes) -> None:
        """A looped packet has no link header: its IP version stands in for the
        ethertype (FreeBSD's if_loop hands the address family along instead)."""
        self.ipackets += 1
        self.ibytes += len(frame)
        ether.demux(self, _LOOP_TYPES[frame[0] >> 4] if frame else _LOOP_EMPTY, frame)


@mypyc_attr(allow_interpreted_subclasses=True)
class EtherIfnet(Ifnet):
    """An Ethernet interface: what it receives goes to ether input."""

    __slots__ = ()

    def input(self, frame: bytes) -> None:
        flags = self.flags
        if not flags & IFF_UP:
            self.iqdrops += 1
            return
        self.ipackets += 1
        self.ibytes += len(frame)
        if self.bpf is not None:
            if self.offl.partial:  # a capture started with offloaded frames queued
                for piece in offload.resolve_frame(frame, self.offl.gso, self.mtu, True,
                                                   bool(self.offl.partial & VXLAN)):
                    self.bpf.tap(piece, False)
            else:
                self.bpf.tap(frame, False)
        vnet = self.vnet
        if flags & _L2_OR_HOOKS:  # one test for a bridge / VLAN trunk and link hooks
            if flags & IFF_L2 and self.l2.l2input(self, frame):
                return  # the bridge or a VLAN took it (after the tap, before the hooks)
            if flags & IFF_LINK_HOOKS and vnet.pfil_link_in is not None:  # after the tap
                passed = pfil.run(vnet.pfil_link_in, frame, self)
                if passed is None:
                    return
                frame = passed
        # the common case inline: the vnet's first ethertype (IPv4), then any type the
        # table knows (IPv6), unicast to us from a unicast source; everything else (and a
        # vnet's first frame, which binds the table) goes through ether_input
        if frame[12:14] == vnet.ether_fast_type and frame[:6] == self.mac and not frame[6] & 1:
            vnet.ether_fast(self, frame[14:])  # type: ignore[misc]
            return
        if len(frame) >= 14 and frame[:6] == self.mac and not frame[6] & 1:
            # unicast to us of another known type (IPv6): its input without ether_input
            handler = vnet.ethertypes.get((frame[12] << 8) | frame[13])
            if handler is not None:
                handler(self, frame[14:])
                return
        ether.ether_input(self, frame)


@mypyc_attr(allow_interpreted_subclasses=True)
class Epair(EtherIfnet):
    """One end of a virtual Ethernet cable (FreeBSD epair(4))."""

    __slots__ = ()

    def offload_peer(self) -> Ifnet | None:
        peer = self.peer  # (a test may plug in a stand-in that is no interface)
        return peer if self.pipe is None and isinstance(peer, Ifnet) else None

    def transmit(self, frame: bytes) -> bool:
        """Through the link's impairment pipe (`output` queues to the peer itself)."""
        if self.pipe is not None:
            self.pipe.send(frame)
            return True
        self.oerrors += 1  # no peer: a destroyed end someone brought up again
        return False


# -- cloners -------------------------------------------------------------------
def create_loopback(vnet: Vnet, unit: int | None = None) -> Loopback:
    """`ifconfig lo create`: a cloned loopback (lo1, lo2 ...), down until configured."""
    return vnet.kernel.service(LoopbackCloner).create(vnet, unit)


class LoopbackCloner:
    """The lo(4) cloner, a kernel service. As FreeBSD's, each vnet numbers its own
    loopbacks (lo0 is every vnet's own, its unit always taken), and a unit stays taken
    while its interface lives in another vnet (moved there as vnet_mkloopback does), so
    it can come home without a clash. A loopback dies with the vnet that made it (its
    cloner goes with that vnet), wherever it lives then."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.units: dict[Vnet, UnitSet] = {}  # units in use, by the vnet that made them
        self.born: dict[Vnet, dict[int, Loopback]] = {}

    def create(self, vnet: Vnet, unit: int | None = None) -> Loopback:
        units = self.units.get(vnet)
        if units is None:
            units = self.units[vnet] = UnitSet()
            units.add(0)
        unit = self.kernel.alloc_unit(units, unit)
        try:
            ifp = Loopback(vnet, "lo", unit, f"lo{unit}", IFF_LOOPBACK | IFF_MULTICAST,
                           LOOPBACK_MTU, None)
            ifp.capabilities = ifp.capenable = offload.LOOP_CAPS
        except FileExistsError:
            units.discard(unit)
            raise
        self.born.setdefault(vnet, {})[unit] = ifp
        return ifp

    def destroyed(self, ifp: Ifnet) -> None:
        units = self.units.get(ifp.home)
        if units is not None and ifp.unit:
            units.discard(ifp.unit)
        born = self.born.get(ifp.home)
        if born is not None and born.get(ifp.unit) is ifp:
            del born[ifp.unit]

    def vnet_detach(self, vnet: Vnet) -> None:
        """Loopbacks made in `vnet` that live elsewhere die with it."""
        for ifp in list(self.born.pop(vnet, {}).values()):
            if ifp.vnet is not vnet and ifp.vnet.ifaces.get(ifp.name) is ifp:
                destroy(ifp)
        self.units.pop(vnet, None)


class EpairCloner:
    """The epair(4) cloner, a kernel service (`kernel.service(EpairCloner)`): unit
    numbers are kernel-wide, and a pair dies with the vnet that created it once both
    ends live elsewhere (FreeBSD destroys cloned interfaces with their home vnet)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.units = UnitSet()
        self.pairs: dict[int, tuple[Ifnet, Ifnet]] = {}
        self.born: dict[Vnet, set[int]] = {}  # units of the epairs each vnet created

    def create(self, vnet: Vnet, unit: int | None = None) -> tuple[Epair, Epair]:
        kernel = self.kernel
        unit = kernel.alloc_unit(self.units, unit)
        flags = IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST
        try:
            a = Epair(vnet, "epair", unit, f"epair{unit}a", flags, ETHER_MTU,
                      kernel.random_mac(vnet))
            b = Epair(vnet, "epair", unit, f"epair{unit}b", flags, ETHER_MTU,
                      kernel.random_mac(vnet))
        except FileExistsError:
            if f"epair{unit}a" in vnet.ifaces and vnet.ifaces[f"epair{unit}a"].unit == unit:
                _unlink(vnet.ifaces[f"epair{unit}a"])
            self.units.discard(unit)
            raise
        a.peer, b.peer = b, a
        a.capabilities = a.capenable = b.capabilities = b.capenable = offload.EPAIR_CAPS
        self.pairs[unit] = (a, b)
        self.born.setdefault(vnet, set()).add(unit)
        a.flags |= IFF_RUNNING
        b.flags |= IFF_RUNNING
        return a, b

    def destroyed(self, ifp: Ifnet) -> None:
        """Forget the pair `ifp` belonged to (both ends are gone)."""
        self.units.discard(ifp.unit)
        self.pairs.pop(ifp.unit, None)
        born = self.born.get(ifp.home)
        if born is not None:
            born.discard(ifp.unit)

    def vnet_detach(self, vnet: Vnet) -> None:
        """Epairs born in `vnet` whose ends both live elsewhere die with it."""
        for unit in sorted(self.born.pop(vnet, ())):
            pair = self.pairs.get(unit)
            if pair is not None:
                destroy(pair[0])


def create_epair(vnet: Vnet, unit: int | None = None) -> tuple[Epair, Epair]:
    return vnet.kernel.service(EpairCloner).create(vnet, unit)


def destroy(ifp: Ifnet) -> None:
    """Destroy an interface; an epair end takes its peer with it."""
    kernel = ifp.vnet.kernel
    if ifp.kind == "lo" and ifp.unit == 0 and ifp.vnet.alive:
        raise PermissionError("lo0 cannot be destroyed")
    peer = ifp.peer
    if peer is not None and ifp.kind != "epair":  # a netgraph cable: the far end stays
        peer.peer = None
        peer.flags &= ~IFF_RUNNING
        peer = None
    ends: list[Ifnet] = [e for e in (ifp, peer) if e is not None]
    for end in ends:
        if end.vnet.ifaces.get(end.name) is end:
            _unlink(end)
        end.peer = None
        end.flags = 0  # dead: anything still addressed to it is dropped
        if end.bpf is not None:
            end.bpf.close()  # ends the capture sessions on it (and flushes their files)
        end.close_device()
    kernel.sched.purge_queue(set(ends))
    if ifp.kind == "epair":
        kernel.service(EpairCloner).destroyed(ifp)
    elif ifp.kind == "lo":
        kernel.service(LoopbackCloner).destroyed(ifp)


def move(ifp: Ifnet, target: Vnet) -> None:
    """Move an interface to another vnet (FreeBSD if_vmove): addresses and routes are lost."""
    if target is ifp.vnet:
        raise ValueError(f"{ifp.name} is already in {target.display_name}")
    if not target.alive:
        raise LookupError(f"vnet {target.display_name} is being destroyed")
    if ifp.is_loopback and ifp.kind == "lo" and ifp.unit == 0:
        raise PermissionError(f"{ifp.name}: loopback interfaces cannot be moved")  # lo0 only
    if ifp.name in target.ifaces:
        raise FileExistsError(f"interface {ifp.name} already exists in {target.display_name}")
    _unlink(ifp)
    ifp.set_up(False)
    if ifp.peer is not None:
        ifp.flags |= IFF_RUNNING
    if ifp.fib >= target.route.fibs:  # a fib the new vnet lacks: its default one
        ifp.fib = 0
    _link(target, ifp)


# -- vnet attach/detach ------------------------------------------------------------
def vnet_attach(vnet: Vnet) -> None:
    """Every vnet has lo0 (the INET protocol gives it 127.0.0.1 as it arrives)."""
    lo0 = Loopback(vnet, "lo", 0, "lo0", IFF_UP | IFF_RUNNING | IFF_LOOPBACK | IFF_MULTICAST,
                   LOOPBACK_MTU, None)
    lo0.capabilities = lo0.capenable = offload.LOOP_CAPS


def vnet_detach(vnet: Vnet) -> None:
    """Interfaces born elsewhere go home; the others are destroyed (if_vnet_shutdown)."""
    for ifp in list(vnet.ifaces.values()):
        if vnet.ifaces.get(ifp.name) is not ifp:
            continue  # already gone with its peer
        home = ifp.home
        if home is not vnet and home.alive:
            move(ifp, home)
        else:
            destroy(ifp)


PROTOCOL = Protocol("ifnet", 90, None, vnet_attach, vnet_detach)
"""Interfaces attach last, so lo0 arrives with every protocol ready for it, and detach
first, while the protocols can still let go of them."""
