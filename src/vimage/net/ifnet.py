"""Network interfaces: the common part, loopback and epair.

An interface that transmits puts the frame on the kernel's packet queue (or into
its link pipe); the kernel loop later calls the receiving interface's `input`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (IFF_UP, "UP"), (IFF_BROADCAST, "BROADCAST"), (IFF_LOOPBACK, "LOOPBACK"),
    (IFF_POINTOPOINT, "POINTOPOINT"), (IFF_RUNNING, "RUNNING"), (IFF_PROMISC, "PROMISC"),
    (IFF_SIMPLEX, "SIMPLEX"), (IFF_MULTICAST, "MULTICAST"),
)

LOOPBACK_MTU = 16384
ETHER_MTU = 1500
MIN_MTU = 68
MAX_MTU = 65535


class Ifnet:
    """State common to every interface. `vnet` is where it is now, `home` where it was born."""

    __slots__ = (
        "addrs",
        "bpf",
        "flags",
        "home",
        "ibytes",
        "ierrors",
        "index",
        "ipackets",
        "iqdrops",
        "kind",
        "mac",
        "mtu",
        "name",
        "obytes",
        "oerrors",
        "opackets",
        "oqdrops",
        "peer",
        "pipe",
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
        self.addrs: list[InAddr] = []
        self.peer: Ifnet | None = None
        self.pipe: LinkPipe | None = None
        self.bpf: Any = None  # a capture session (vimage.net.bpf) while someone listens
        self.index = 0
        self.txq = vnet.kernel.sched.queue  # the kernel's packet queue, bound once
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
            if not was_up and self.mac is not None:
                for ia in self.addrs:  # announce our addresses (gratuitous ARP)
                    self.vnet.arp.announce(self, ia.addr)
        else:
            self.flags &= ~(IFF_UP | IFF_RUNNING)

    # -- configuration API ----------------------------------------------------------
    def add_addr(self, cidr: str, broadcast: str | None = None) -> None:
        """Add an IPv4 address given as 'a.b.c.d/len' (an alias if one exists)."""
        from vimage.netinet.in_ import in_add_addr
        from vimage.wire import ipv4

        addr, _, plen = cidr.partition("/")
        with self.vnet.kernel.sched.cond:
            in_add_addr(self, ipv4.aton(addr), int(plen) if plen else 32,
                        ipv4.aton(broadcast) if broadcast else None)

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
        """Transmit `frame`; False (and a drop counted) if the interface cannot send."""
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
    for hook in vnet.kernel.if_attach_hooks:  # a kernel-wide trace follows new interfaces
        hook(ifp)


def _unlink(ifp: Ifnet) -> None:
    from vimage.netinet.in_ import in_purge_ifaddrs

    in_purge_ifaddrs(ifp)
    if ifp.pipe is not None:
        ifp.pipe.flush()
    vnet = ifp.vnet
    vnet.arp.purge_ifp(ifp)
    del vnet.ifaces[ifp.name]


class Loopback(Ifnet):
    """lo: what it transmits it receives, through the kernel queue."""

    __slots__ = ()

    def output(self, frame: bytes) -> bool:
        if not self.flags & IFF_UP:
            self.oqdrops += 1
            return False
        self.opackets += 1
        self.obytes += len(frame)
        if self.bpf is not None:  # captured once, on the way out
            self.bpf.tap(frame, True)
        self.txq.append((self, frame))
        return True

    def input(self, frame: bytes) -> None:
        self.ipackets += 1
        self.ibytes += len(frame)
        self.vnet.ip.input(self, frame)


class EtherIfnet(Ifnet):
    """An Ethernet interface: what it receives goes to ether input."""

    __slots__ = ()

    def input(self, frame: bytes) -> None:
        if not self.flags & IFF_UP:
            self.iqdrops += 1
            return
        self.ipackets += 1
        self.ibytes += len(frame)
        if self.bpf is not None:
            self.bpf.tap(frame, False)
        # the common case inline: IPv4 unicast to us from a unicast source
        if frame[12:14] == b"\x08\x00" and frame[:6] == self.mac and not frame[6] & 1:
            self.vnet.ip.input(self, frame[14:])
        else:
            self.vnet.arp.ether_input(self, frame)


class Epair(EtherIfnet):
    """One end of a virtual Ethernet cable (FreeBSD epair(4))."""

    __slots__ = ()

    def output(self, frame: bytes) -> bool:
        peer = self.peer
        if not self.flags & IFF_UP or peer is None:
            self.oqdrops += 1
            return False
        self.opackets += 1
        self.obytes += len(frame)
        if self.bpf is not None:
            self.bpf.tap(frame, True)
        if self.pipe is not None:
            self.pipe.send(frame)
        else:
            self.txq.append((peer, frame))
        return True


# -- cloners -------------------------------------------------------------------
def create_loopback(vnet: Vnet, unit: int | None = None) -> Loopback:
    if unit is None:
        used = {i.unit for i in vnet.ifaces.values() if i.kind == "lo"}
        unit = 0
        while unit in used:
            unit += 1
    return Loopback(vnet, "lo", unit, f"lo{unit}", IFF_LOOPBACK | IFF_MULTICAST,
                    LOOPBACK_MTU, None)


def create_epair(vnet: Vnet, unit: int | None = None) -> tuple[Epair, Epair]:
    kernel = vnet.kernel
    unit = kernel.alloc_unit(kernel._epair_units, unit)
    flags = IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST
    try:
        a = Epair(vnet, "epair", unit, f"epair{unit}a", flags, ETHER_MTU, kernel.random_mac())
        b = Epair(vnet, "epair", unit, f"epair{unit}b", flags, ETHER_MTU, kernel.random_mac())
    except FileExistsError:
        if f"epair{unit}a" in vnet.ifaces and vnet.ifaces[f"epair{unit}a"].unit == unit:
            _unlink(vnet.ifaces[f"epair{unit}a"])
        kernel._epair_units.discard(unit)
        raise
    a.peer, b.peer = b, a
    kernel._epairs[unit] = (a, b)
    kernel._epairs_born.setdefault(vnet, set()).add(unit)
    a.flags |= IFF_RUNNING
    b.flags |= IFF_RUNNING
    return a, b


def destroy(ifp: Ifnet) -> None:
    """Destroy an interface; an epair end takes its peer with it."""
    kernel = ifp.vnet.kernel
    if ifp.kind == "lo" and ifp.unit == 0 and ifp.vnet.alive:
        raise PermissionError("lo0 cannot be destroyed")
    ends = [e for e in (ifp, ifp.peer) if e is not None]
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
        kernel._epair_units.discard(ifp.unit)
        kernel._epairs.pop(ifp.unit, None)
        born = kernel._epairs_born.get(ifp.home)
        if born is not None:
            born.discard(ifp.unit)


def move(ifp: Ifnet, target: Vnet) -> None:
    """Move an interface to another vnet (FreeBSD if_vmove): addresses and routes are lost."""
    if target is ifp.vnet:
        raise ValueError(f"{ifp.name} is already in {target.display_name}")
    if not target.alive:
        raise LookupError(f"vnet {target.display_name} is being destroyed")
    if ifp.is_loopback:
        raise PermissionError(f"{ifp.name}: loopback interfaces cannot be moved")
    if ifp.name in target.ifaces:
        raise FileExistsError(f"interface {ifp.name} already exists in {target.display_name}")
    _unlink(ifp)
    ifp.set_up(False)
    if ifp.peer is not None:
        ifp.flags |= IFF_RUNNING
    _link(target, ifp)


# -- vnet attach/detach ------------------------------------------------------------
def vnet_attach(vnet: Vnet) -> None:
    from vimage.netinet.in_ import in_add_addr

    lo = Loopback(vnet, "lo", 0, "lo0", IFF_UP | IFF_RUNNING | IFF_LOOPBACK | IFF_MULTICAST,
                  LOOPBACK_MTU, None)
    in_add_addr(lo, 0x7F000001, 8)


def vnet_detach(vnet: Vnet) -> None:
    kernel = vnet.kernel
    for ifp in list(vnet.ifaces.values()):
        if vnet.ifaces.get(ifp.name) is not ifp:
            continue  # already gone with its peer
        home = ifp.home
        if home is not vnet and home.alive:
            move(ifp, home)
        else:
            destroy(ifp)
    # epairs born here whose ends both live elsewhere die with their home
    for unit in sorted(kernel._epairs_born.pop(vnet, ())):
        pair = kernel._epairs.get(unit)
        if pair is not None:
            destroy(pair[0])
