"""if_bridge(4) learning bridges and ng_hub(4)-style hubs, as interfaces of a vnet.

A bridge is an Ethernet interface of its vnet (`bridge0`: ARP and IP work on it) with
member interfaces of the same vnet. A member's received frames enter the bridge instead
of the member's own input: the member's `l2` is the bridge and IFF_L2 is set, so
`EtherIfnet.input` hands the frame over after counting and capturing it (FreeBSD's
ether_input calling bridge_input_p), and members go promiscuous. The bridge learns
source addresses per member (`rt`, aged in kernel time: an entry lives `timeout`
seconds after it was last seen), sends a frame for a learnt address out of exactly
one member, and floods only what it must: broadcast, multicast and unknown unicast
(the last only to members with DISCOVER), never back out of the port it came from.
Frames for the bridge's own address (or broadcast/multicast) are also given to the
bridge interface's own Ethernet input. Everything goes out through `Ifnet.output`,
which queues: a loop between two ports never recurses; and frames per tick (about a
millisecond of kernel time) per bridge are bounded by `max_per_tick`, the rest
dropped and counted in `storm_drops` (FreeBSD has no such bound: without STP a loop
melts it; here a loop costs a bounded amount of work per tick).

A hub (`ifconfig hub create`, our choice of syntax; FreeBSD builds one from ng_hub(4))
is the same interface without learning: every frame is repeated to every other member
and also given to the hub's own input, as ng_hub repeats every packet on all hooks.

Semantics follow FreeBSD sys/net/if_bridge.c (bridge_input, bridge_forward,
bridge_broadcast, bridge_span, bridge_rtupdate, bridge_timer) and if_bridge(4); STP
is not implemented.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.net import ether
from vimage.net.ifnet import (
    ETHER_MTU,
    IFF_BROADCAST,
    IFF_L2,
    IFF_MULTICAST,
    IFF_PROMISC,
    IFF_SIMPLEX,
    IFF_UP,
    EtherIfnet,
    Ifnet,
)
from vimage.net.offload import RELAY_CAPS

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.sched import Timer
    from vimage.vnet import Vnet

# member flags (FreeBSD net/if_bridgevar.h IFBIF_*) and their names in ifconfig's order
IFBIF_LEARNING = 0x0001
IFBIF_DISCOVER = 0x0002
IFBIF_STP = 0x0004
IFBIF_SPAN = 0x0008
IFBIF_STICKY = 0x0010
IFBIF_BSTP_EDGE = 0x0020
IFBIF_BSTP_AUTOEDGE = 0x0040
IFBIF_BSTP_PTP = 0x0080
IFBIF_BSTP_AUTOPTP = 0x0100
IFBIF_PRIVATE = 0x0800
IFBIF_DEFAULT = IFBIF_LEARNING | IFBIF_DISCOVER | IFBIF_BSTP_AUTOEDGE | IFBIF_BSTP_AUTOPTP
IFBIF_NAMES: tuple[tuple[int, str], ...] = (
    (IFBIF_LEARNING, "LEARNING"), (IFBIF_DISCOVER, "DISCOVER"), (IFBIF_STP, "STP"),
    (IFBIF_SPAN, "SPAN"), (IFBIF_STICKY, "STICKY"), (IFBIF_PRIVATE, "PRIVATE"),
    (IFBIF_BSTP_EDGE, "EDGE"), (IFBIF_BSTP_AUTOEDGE, "AUTOEDGE"), (IFBIF_BSTP_PTP, "PTP"),
    (IFBIF_BSTP_AUTOPTP, "AUTOPTP"),
)
IFBAF_STATIC = 0x01  # an address cache entry that never ages or moves
IFBAF_STICKY = 0x02  # learnt on a sticky member: never ages or moves, survives `flush`
_FIXED = IFBAF_STATIC | IFBAF_STICKY  # not IFBAF_DYNAMIC (FreeBSD's IFBAF_TYPEMASK test)
IFBAF_NAMES: tuple[tuple[int, str], ...] = ((IFBAF_STATIC, "STATIC"), (IFBAF_STICKY, "STICKY"))

BRIDGE_RTABLE_MAX = 2000  # default `maxaddr` (if_bridge.c)
BRIDGE_RTABLE_TIMEOUT = 1200  # default `timeout`, seconds
MAX_PER_TICK = 65536
"""Frames a bridge handles per tick before it drops (a loop's bound, not a rate limit:
far above what Python forwards in a millisecond of real time)."""
_TICK_SHIFT = 20  # a tick is 2**20 ns of kernel time, about a millisecond
_NS = 1_000_000_000


class BridgeMember:
    """One member (or span port) of a bridge: FreeBSD's struct bridge_iflist."""

    __slots__ = ("flags", "ifmaxaddr", "ifp", "naddrs", "was_promisc")

    def __init__(self, ifp: Ifnet, flags: int) -> None:
        self.ifp = ifp
        self.flags = flags
        self.ifmaxaddr = 0  # 0: no per-member limit
        self.naddrs = 0  # learnt entries pointing at this member
        self.was_promisc = bool(ifp.flags & IFF_PROMISC)


class RtEntry:
    """An address cache entry: FreeBSD's struct bridge_rtnode."""

    __slots__ = ("expire", "flags", "member")

    def __init__(self, member: BridgeMember, expire: int, flags: int) -> None:
        self.member = member
        self.expire = expire  # kernel ns; 0 for a static entry
        self.flags = flags


class Bridge(EtherIfnet):
    """A learning bridge (kind "bridge") or a hub (kind "hub") of one vnet."""

    __slots__ = ("ageing", "exceeded", "max_per_tick", "maxaddr", "members", "rt", "sched",
                 "spans", "storm_drops", "tick", "tick_count", "timeout")

    def __init__(self, vnet: Vnet, kind: str, unit: int) -> None:
        kernel = vnet.kernel
        self.members: dict[Ifnet, BridgeMember] = {}  # in order of addition
        self.spans: dict[Ifnet, BridgeMember] = {}
        self.rt: dict[bytes, RtEntry] = {}
        self.maxaddr = BRIDGE_RTABLE_MAX
        self.timeout = BRIDGE_RTABLE_TIMEOUT
        self.ageing: Timer | None = None  # armed only while a dynamic entry exists
        self.exceeded = 0  # learning refused: the cache was full (sc_brtexceeded)
        self.max_per_tick = MAX_PER_TICK
        self.storm_drops = 0
        self.tick = -1
        self.tick_count = 0
        self.sched = kernel.sched
        super().__init__(vnet, kind, unit, f"{kind}{unit}",
                         IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST,
                         ETHER_MTU, kernel.random_mac(vnet))
        self.capabilities = self.capenable = RELAY_CAPS

    @property
    def hub(self) -> bool:
        return self.kind == "hub"

    # -- membership ------------------------------------------------------------------
    def add_member(self, ifp: Ifnet) -> None:
        """addm (BRDGADD): OSError with FreeBSD's errno when `ifp` cannot join."""
        self._check_port(ifp)
        if self.members and ifp.mtu != self.mtu:
            ifp.mtu = self.mtu  # FreeBSD 14 sets a new member to the bridge's MTU
        elif not self.members:
            self.mtu = ifp.mtu
        member = BridgeMember(ifp, 0 if self.hub else IFBIF_DEFAULT)
        self.members[ifp] = member
        ifp.l2 = self
        ifp.flags |= IFF_L2 | IFF_PROMISC

    def delete_member(self, ifp: Ifnet) -> None:
        """deletem (BRDGDEL): the member leaves; its cache entries go with it."""
        member = self.members.pop(ifp, None)
        if member is None:
            raise OSError(errno.ENOENT, f"{ifp.name} is not a member of {self.name}")
        self.rt = {mac: e for mac, e in self.rt.items() if e.member is not member}
        self._release(member)

    def add_span(self, ifp: Ifnet) -> None:
        """span (BRDGADDS): `ifp` gets a copy of every frame the bridge handles."""
        if ifp in self.spans:
            raise OSError(errno.EEXIST, f"{ifp.name} is already a span port")
        if ifp in self.members or ifp.vnet is not self.vnet or ifp is self or ifp.mac is None:
            raise OSError(errno.EINVAL if ifp.vnet is self.vnet else errno.ENOENT, ifp.name)
        self.spans[ifp] = BridgeMember(ifp, IFBIF_SPAN)

    def delete_span(self, ifp: Ifnet) -> None:
        if self.spans.pop(ifp, None) is None:
            raise OSError(errno.ENOENT, f"{ifp.name} is not a span port of {self.name}")

    def member(self, ifp: Ifnet) -> BridgeMember:
        member = self.members.get(ifp)
        if member is None:
            raise OSError(errno.ENOENT, f"{ifp.name} is not a member of {self.name}")
        return member

    def release_all(self) -> None:
        """Every member and span port leaves (the bridge is destroyed or moved)."""
        for member in list(self.members.values()):
            self._release(member)
        self.members.clear()
        self.spans.clear()
        self.rt.clear()
        self._stop_ageing()

    def forget(self, ifp: Ifnet) -> None:
        """`ifp` is leaving the vnet (destroyed or moved away): it leaves the bridge."""
        if ifp in self.members:
            self.delete_member(ifp)
        self.spans.pop(ifp, None)

    def _check_port(self, ifp: Ifnet) -> None:
        if ifp.vnet is not self.vnet:
            raise OSError(errno.ENOENT, f"{ifp.name}: no such interface")
        if ifp in self.members:
            raise OSError(errno.EEXIST, f"{ifp.name} is already a member of {self.name}")
        if ifp in self.spans:
            raise OSError(errno.EBUSY, f"{ifp.name} is a span port of {self.name}")
        if ifp.l2 is not None:
            raise OSError(errno.EBUSY, f"{ifp.name} is already in use (a bridge or VLANs)")
        if isinstance(ifp, Bridge) or ifp.mac is None or not isinstance(ifp, EtherIfnet):
            raise OSError(errno.EINVAL, f"{ifp.name} cannot be a bridge member")

    @staticmethod
    def _release(member: BridgeMember) -> None:
        ifp = member.ifp
        ifp.l2 = None
        ifp.flags &= ~IFF_L2
        if not member.was_promisc:
            ifp.flags &= ~IFF_PROMISC

    # -- address cache ---------------------------------------------------------------
    def learn(self, src: bytes, member: BridgeMember) -> None:
        """bridge_rtupdate: note that `src` is behind `member`, for `timeout` seconds."""
        entry = self.rt.get(src)
        expire = self.sched.now_ns() + self.timeout * _NS
        if entry is not None:
            if entry.flags & _FIXED:
                return
            if entry.member is not member:  # the station moved
                entry.member.naddrs -= 1
                member.naddrs += 1
                entry.member = member
            entry.expire = expire
            return
        if len(self.rt) >= self.maxaddr or (member.ifmaxaddr and
                                            member.naddrs >= member.ifmaxaddr):
            self.exceeded += 1
            return
        sticky = member.flags & IFBIF_STICKY
        self.rt[src] = RtEntry(member, 0 if sticky else expire, IFBAF_STICKY if sticky else 0)
        member.naddrs += 1
        if self.ageing is None and self.timeout > 0:
            self.ageing = self.vnet.kernel.call_later(self.timeout, self._age, owner=self.vnet)

    def add_static(self, ifp: Ifnet, mac: bytes) -> None:
        """static IF MAC (BRDGSADDR)."""
        member = self.member(ifp)
        if mac[0] & 1:
            raise OSError(errno.EINVAL, "a multicast address cannot be a static entry")
        old = self.rt.get(mac)
        if old is not None and not old.flags & IFBAF_STATIC:
            old.member.naddrs -= 1
        self.rt[mac] = RtEntry(member, 0, IFBAF_STATIC)

    def delete_addr(self, mac: bytes) -> None:
        """deladdr MAC (BRDGDADDR)."""
        entry = self.rt.pop(mac, None)
        if entry is None:
            raise OSError(errno.ENOENT, f"{mac.hex(':')} is not in the address cache")
        if not entry.flags & IFBAF_STATIC:
            entry.member.naddrs -= 1

    def flush(self, all_entries: bool = False) -> None:
        """flush (dynamic entries) or flushall (every entry): BRDGFLUSH."""
        self.rt = {mac: e for mac, e in self.rt.items()
                   if not all_entries and e.flags & _FIXED}
        for member in self.members.values():
            member.naddrs = 0
        for entry in self.rt.values():
            if not entry.flags & IFBAF_STATIC:
                entry.member.naddrs += 1
        self._stop_ageing()  # nothing left to age

    def set_timeout(self, seconds: int) -> None:
        self.timeout = seconds
        self._stop_ageing()
        if seconds > 0:
            now = self.sched.now_ns()
            for entry in self.rt.values():
                if not entry.flags & _FIXED:
                    entry.expire = min(entry.expire, now + seconds * _NS)
            self._age()
        # timeout 0 disables ageing (if_bridge(4)): entries stay until flushed

    def set_maxaddr(self, count: int) -> None:
        """maxaddr N: the cache keeps its `count` freshest dynamic entries (bridge_rttrim)."""
        self.maxaddr = count
        dynamic = sorted((e.expire, mac) for mac, e in self.rt.items()
                         if not e.flags & _FIXED)
        for _expire, mac in dynamic[:max(0, len(self.rt) - count)]:
            self.delete_addr(mac)

    def addresses(self) -> list[tuple[bytes, Ifnet, int, int]]:
        """(mac, member, seconds left, flags) per cache entry (BRDGRTS), as listed."""
        now = self.sched.now_ns()
        return [(mac, e.member.ifp, 0 if e.flags & _FIXED else
                 max(0, (e.expire - now + _NS - 1) // _NS), e.flags)
                for mac, e in self.rt.items()]

    def _age(self) -> None:
        """bridge_timer: drop the entries whose time is up; rearm for the next one."""
        self.ageing = None
        now = self.sched.now_ns()
        nxt = None
        for mac, entry in list(self.rt.items()):
            if entry.flags & _FIXED:
                continue
            if entry.expire <= now:
                del self.rt[mac]
                entry.member.naddrs -= 1
            elif nxt is None or entry.expire < nxt:
                nxt = entry.expire
        if nxt is not None and self.timeout > 0:
            self.ageing = self.vnet.kernel.call_later((nxt - now) / _NS, self._age,
                                                      owner=self.vnet)

    def _stop_ageing(self) -> None:
        if self.ageing is not None:
            self.ageing.cancel()
            self.ageing = None

    # -- data path -----------------------------------------------------------------------
    def _over_budget(self) -> bool:
        """True (and counted) once this tick's frames are used up: a loop's bound."""
        tick = self.sched.now_ns() >> _TICK_SHIFT
        if tick != self.tick:
            self.tick = tick
            self.tick_count = 1
        elif self.tick_count < self.max_per_tick:
            self.tick_count += 1
        else:
            self.storm_drops += 1
            self.iqdrops += 1
            return True
        return False

    def l2input(self, ifp: Ifnet, frame: bytes) -> bool:
        """A member received `frame` (bridge_input); False gives it back to the member."""
        if not self.flags & IFF_UP:
            return False  # a bridge that is down passes frames on to its members
        member = self.members.get(ifp)
        if member is None:
            return False
        if len(frame) < 14 or frame[6] & 1:
            ifp.ierrors += 1  # runt, or a multicast source address
            return True
        if self.spans:
            self._span(frame)
        if self._over_budget():
            return True
        if self.hub:
            self._flood(frame, member, True)
            self.input_offloaded(frame)
            return True
        if member.flags & IFBIF_LEARNING:
            self.learn(frame[6:12], member)
        dst = frame[:6]
        if dst[0] & 1:  # broadcast or multicast: everyone, and us
            self._flood(frame, member, True)
            self.input_offloaded(frame)
            return True
        entry = self.rt.get(dst)
        if entry is not None:
            out = entry.member
            if out is member or member.flags & out.flags & IFBIF_PRIVATE:
                return True  # the station is on the segment it came from, or both private
            self.ipackets += 1  # forwarded frames are the bridge's input (bridge_forward)
            self.ibytes += len(frame)
            out.ifp.output(frame)
            return True
        if dst == self.mac:
            self.input_offloaded(frame)
            return True
        for other in self.members:  # for a member's own address: that member's stack
            if other.mac == dst:
                if other is ifp:
                    return False
                ether.ether_input(other, frame)
                return True
        self._flood(frame, member, False)  # unknown unicast
        return True

    def relays(self, frame: bytes) -> bool:
        """The bridge's own output passes an offloaded frame to its members still
        offloaded; each member keeps it whole or fills it (vimage.net.offload)."""
        return self.tx_takes(frame)

    def transmit(self, frame: bytes) -> bool:
        """The bridge interface's own output (bridge_output): to the one member behind
        a learnt address, else to every member."""
        if self.spans:
            self._span(frame)
        if self._over_budget():
            return False
        dst = frame[:6]
        if not self.hub and not dst[0] & 1:
            entry = self.rt.get(dst)
            if entry is not None:
                return entry.member.ifp.output(frame)
        sent = False
        for ifp in self.members:
            sent = ifp.output(frame) or sent
        return sent

    def _flood(self, frame: bytes, source: BridgeMember, group: bool) -> None:
        """bridge_broadcast: every member but the source; unknown unicast (not `group`)
        only to DISCOVER members; never between two private members."""
        private = source.flags & IFBIF_PRIVATE
        for ifp, member in self.members.items():
            if member is source or member.flags & private:
                continue
            if not group and not self.hub and not member.flags & IFBIF_DISCOVER:
                continue
            ifp.output(frame)

    def _span(self, frame: bytes) -> None:
        for ifp in self.spans:
            ifp.output(frame)


def _unit(vnet: Vnet, kind: str) -> int:
    used = {i.unit for i in vnet.ifaces.values() if i.kind == kind}
    unit = 0
    while unit in used:
        unit += 1
    return unit


class BridgeCloner:
    """The bridge and hub cloners, a kernel service: units per vnet, as FreeBSD's
    VNET-aware bridge cloner; told when an interface leaves a vnet, so a member moved
    or destroyed leaves its bridge and a bridge leaving releases its members."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def create(self, vnet: Vnet, unit: int | None = None, kind: str = "bridge") -> Bridge:
        if kind not in ("bridge", "hub"):
            raise ValueError(f"no such cloner {kind!r}")
        return Bridge(vnet, kind, _unit(vnet, kind) if unit is None else unit)

    def ifdetach(self, ifp: Ifnet) -> None:
        if isinstance(ifp, Bridge):
            ifp.release_all()
            return
        owner = ifp.l2
        if isinstance(owner, Bridge):
            owner.forget(ifp)
        for other in ifp.vnet.ifaces.values():  # a span port holds no l2 reference
            if isinstance(other, Bridge) and ifp in other.spans:
                other.spans.pop(ifp)


class HubCloner:
    """The `hub` cloner (`kernel.cloner("hub")`): hubs made by the bridge service, which
    also looks after their members."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def create(self, vnet: Vnet, unit: int | None = None) -> Bridge:
        return self.kernel.service(BridgeCloner).create(vnet, unit, "hub")


def create_bridge(vnet: Vnet, unit: int | None = None, kind: str = "bridge") -> Bridge:
    return vnet.kernel.service(BridgeCloner).create(vnet, unit, kind)
