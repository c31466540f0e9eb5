"""Ethernet input/output and ARP (FreeBSD if_ether.c / if_ethersubr.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.net.ifnet import IFF_PROMISC, IFF_SIMPLEX
from vimage.sched import NS_PER_S, Timer
from vimage.stats import counters
from vimage.sysctl import Oid
from vimage.wire import WireError
from vimage.wire import arp as warp
from vimage.wire.ethernet import BROADCAST

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

ETH_IP = b"\x08\x00"
ETH_ARP = b"\x08\x06"
ZERO_MAC = b"\x00" * 6

INCOMPLETE = 0
REACHABLE = 1
DOWN = 2
STATIC = 3

SYSCTLS: tuple[Oid, ...] = (
    Oid("net.link.ether.inet.max_age", "arp", "max_age",
        "ARP entry lifetime in seconds", 1, 2**31 - 1),
    Oid("net.link.ether.inet.maxtries", "arp", "maxtries",
        "ARP resolution attempts before returning error", 1, 100),
    Oid("net.link.ether.inet.maxhold", "arp", "maxhold",
        "Number of packets to hold per ARP entry", 1, 10000),
    Oid("net.link.ether.inet.wait", "arp", "wait",
        "Incomplete ARP entry lifetime in seconds", 1, 3600),
    Oid("net.link.ether.inet.host_down_time", "arp", "host_down_time",
        "How long an unresolvable host is reported down, in seconds", 1, 3600),
)

STAT_LINES: tuple[tuple[str, str], ...] = (
    ("txrequests", "{} ARP requests sent"),
    ("txreplies", "{} ARP replies sent"),
    ("rxrequests", "{} ARP requests received"),
    ("rxreplies", "{} ARP replies received"),
    ("received", "{} ARP packets received"),
    ("rxbad", "{} ARP packets with a bad format"),
    ("dropped", "{} total packets dropped due to no ARP entry"),
    ("timeouts", "{} ARP entrys timed out"),
    ("dupips", "{} Duplicate IPs seen"),
)


ArpStats = counters("ArpStats", tuple(name for name, _ in STAT_LINES))


class ArpEntry:
    __slots__ = ("addr", "asked", "expire_ns", "hold", "ifp", "mac", "state", "timer")

    def __init__(self, addr: int, ifp: Ifnet, state: int) -> None:
        self.addr = addr
        self.ifp = ifp
        self.mac: bytes | None = None
        self.state = state
        self.hold: list[bytes] | None = None
        self.asked = 0
        self.timer: Timer | None = None
        self.expire_ns = 0


class ArpState:
    __slots__ = ("host_down_time", "max_age", "maxhold", "maxtries", "stats", "table", "vnet",
                 "wait")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.table: dict[int, ArpEntry] = {}
        self.stats = ArpStats()
        self.max_age = 1200
        self.maxtries = 5
        self.maxhold = 16
        self.wait = 1
        self.host_down_time = 20

    # -- Ethernet ------------------------------------------------------------------
    def ether_input(self, ifp: Ifnet, frame: bytes) -> None:
        if len(frame) < 14 or frame[6] & 1:
            ifp.ierrors += 1
            return
        if frame[:6] != ifp.mac and not frame[0] & 1 and not ifp.flags & IFF_PROMISC:
            return  # not for us
        etype = frame[12:14]
        if etype == ETH_IP:
            self.vnet.ip.input(ifp, frame[14:])
        elif etype == ETH_ARP:
            self.input(ifp, frame[14:])
        else:
            ifp.iqdrops += 1  # unknown protocol

    def output(self, ifp: Ifnet, packet: bytes, nexthop: int, broadcast: bool = False) -> None:
        """Send an IPv4 packet to `nexthop` on `ifp`, resolving it with ARP first."""
        if broadcast:
            frame = BROADCAST + ifp.mac + ETH_IP + packet
            if ifp.output(frame) and ifp.flags & IFF_SIMPLEX:
                ifp.txq.append((ifp, frame))  # if_simloop: a simplex link can't hear itself
            return
        entry = self.table.get(nexthop)
        if entry is not None and entry.ifp is ifp:
            mac = entry.mac
            if mac is not None:
                ifp.output(mac + ifp.mac + ETH_IP + packet)
                return
            if entry.state == DOWN:
                raise OSError(errno.EHOSTDOWN, "Host is down")
        else:
            if entry is not None:
                self._drop(entry)
            entry = ArpEntry(nexthop, ifp, INCOMPLETE)
            entry.hold = []
            self.table[nexthop] = entry
            self._request(entry)
        hold = entry.hold
        assert hold is not None
        if len(hold) >= self.maxhold:
            hold.pop(0)
            self.stats.dropped += 1
        hold.append(packet)

    # -- resolution ----------------------------------------------------------------
    def _request(self, entry: ArpEntry) -> None:
        ifp = entry.ifp
        src = 0
        for ia in ifp.addrs:
            if (entry.addr & ia.mask) == ia.net:
                src = ia.addr
                break
        else:
            if ifp.addrs:
                src = ifp.addrs[0].addr
        entry.asked += 1
        self.stats.txrequests += 1
        ifp.output(BROADCAST + ifp.mac + ETH_ARP
                   + warp.build(warp.OP_REQUEST, ifp.mac, src, ZERO_MAC, entry.addr))
        entry.timer = self._arm(entry, self.wait, self._retry)

    def _arm(self, entry: ArpEntry, seconds: int, callback) -> Timer:  # type: ignore[no-untyped-def]
        if entry.timer is not None:
            entry.timer.cancel()
        sched = self.vnet.kernel.sched
        entry.expire_ns = sched.now_ns() + seconds * NS_PER_S
        return sched.call_later(seconds * NS_PER_S, callback, entry, owner=self.vnet)

    def _retry(self, entry: ArpEntry) -> None:
        entry.timer = None
        if self.table.get(entry.addr) is not entry or entry.state != INCOMPLETE:
            return
        if entry.asked < self.maxtries:
            self._request(entry)
            return
        # give up: drop what waited, report the host down for a while
        self.stats.dropped += len(entry.hold or ())
        self.stats.timeouts += 1
        entry.hold = None
        entry.state = DOWN
        entry.timer = self._arm(entry, self.host_down_time, self._expire)

    def _expire(self, entry: ArpEntry) -> None:
        entry.timer = None
        if self.table.get(entry.addr) is entry:
            if entry.state == REACHABLE:
                self.stats.timeouts += 1
            del self.table[entry.addr]

    def _drop(self, entry: ArpEntry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if self.table.get(entry.addr) is entry:
            del self.table[entry.addr]

    def _resolved(self, entry: ArpEntry, mac: bytes) -> None:
        entry.mac = mac
        entry.state = REACHABLE
        entry.asked = 0
        entry.timer = self._arm(entry, self.max_age, self._expire)
        hold, entry.hold = entry.hold, None
        if hold:
            ifp = entry.ifp
            head = mac + ifp.mac + ETH_IP
            for packet in hold:
                ifp.output(head + packet)

    def input(self, ifp: Ifnet, payload: bytes) -> None:
        stats = self.stats
        stats.received += 1
        try:
            msg = warp.parse(payload)
        except WireError:
            stats.rxbad += 1
            ifp.ierrors += 1
            return
        if msg.op == warp.OP_REQUEST:
            stats.rxrequests += 1
        else:
            stats.rxreplies += 1
        if msg.sha == ifp.mac:
            return  # our own frame looped back
        if msg.sha[0] & 1:
            stats.rxbad += 1
            return  # broadcast/multicast sender hardware address
        local = self.vnet.ip.local
        mine = local.get(msg.spa)
        if mine is not None and mine.ifp is ifp:
            stats.dupips += 1
            return
        target = local.get(msg.tpa)
        if target is not None and target.ifp is not ifp:
            target = None
        entry = self.table.get(msg.spa)
        if msg.spa:
            if entry is not None and entry.ifp is ifp:
                if entry.state != STATIC:
                    self._resolved(entry, msg.sha)
            elif target is not None and (entry is None or entry.state != STATIC):
                if entry is not None:
                    self._drop(entry)  # learnt on another interface: stop its timer too
                entry = ArpEntry(msg.spa, ifp, REACHABLE)
                self.table[msg.spa] = entry
                self._resolved(entry, msg.sha)
        if msg.op == warp.OP_REQUEST and target is not None and msg.spa != msg.tpa:
            stats.txreplies += 1
            ifp.output(msg.sha + ifp.mac + ETH_ARP
                       + warp.build(warp.OP_REPLY, ifp.mac, msg.tpa, msg.sha, msg.spa))

    def announce(self, ifp: Ifnet, addr: int) -> None:
        """Gratuitous ARP for a newly configured address."""
        self.stats.txrequests += 1
        ifp.output(BROADCAST + ifp.mac + ETH_ARP
                   + warp.build(warp.OP_REQUEST, ifp.mac, addr, ZERO_MAC, addr))

    # -- administration (arp -s / -d / -a) ------------------------------------------
    def set_static(self, ifp: Ifnet, addr: int, mac: bytes, temporary: bool = False) -> None:
        """`arp -s`: a permanent entry, or with `temporary` one that ages out after max_age."""
        old = self.table.get(addr)
        if old is not None:
            self._drop(old)
        entry = ArpEntry(addr, ifp, REACHABLE)
        self.table[addr] = entry
        entry.hold = old.hold if old is not None else None
        self._resolved(entry, mac)  # also sends what waited for this address
        if not temporary:
            entry.state = STATIC
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None

    def delete(self, addr: int) -> None:
        entry = self.table.get(addr)
        if entry is None:
            raise OSError(errno.ESRCH, "no such entry")
        self._drop(entry)

    def entries(self) -> list[ArpEntry]:
        return sorted(self.table.values(), key=lambda e: e.addr)

    def purge_ifp(self, ifp: Ifnet) -> None:
        for entry in [e for e in self.table.values() if e.ifp is ifp]:
            self._drop(entry)

    def clear(self) -> None:
        for entry in list(self.table.values()):
            self._drop(entry)


def vnet_attach(vnet: Vnet) -> None:
    vnet.arp = ArpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.arp.clear()
