"""ARP, and IPv4 output over Ethernet (FreeBSD if_ether.c)."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from vimage.net.ether import ether_output
from vimage.net.ifnet import IFF_SIMPLEX
from vimage.sched import NS_PER_S, Timer
from vimage.stats import counters
from vimage.sysctl import Oid, oids
from vimage.wire import WireError
from vimage.wire import arp as warp
from vimage.wire.ethernet import BROADCAST
from vimage.wire.ethernet import ETHERTYPE_ARP_BYTES as ETH_ARP
from vimage.wire.ethernet import ETHERTYPE_IP_BYTES as ETH_IP
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

ZERO_MAC = b"\x00" * 6

INCOMPLETE = 0
REACHABLE = 1
DOWN = 2
STATIC = 3

SYSCTLS: tuple[Oid, ...] = oids("net.link.ether.inet", "arp", (
    ("max_age", "ARP entry lifetime in seconds", 1, 2**31 - 1),
    ("maxtries", "ARP resolution attempts before returning error", 1, 100),
    ("maxhold", "Number of packets to hold per ARP entry", 1, 10000),
    ("wait", "Incomplete ARP entry lifetime in seconds", 1, 3600),
    ("host_down_time", "How long an unresolvable host is reported down, in seconds", 1, 3600),
    ("max_entries", "Maximum number of ARP entries per interface", 1, 2**20),
    ("max_log_per_second",
     "Maximum number of remotely triggered ARP messages that can be logged per second",
     0, 2**31 - 1),
))

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
    ("notlocal", "{} ARP packets from senders not on the receiving interface's networks"),
    ("tablefull", "{} ARP entries refused (interface table full)"),
    ("txerrors", "{} ARP requests failed to sent"),
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
    """The vnet's ARP table: one dict by address, with a count of entries per interface.

    FreeBSD keeps one table per interface and does not bound it; here each interface
    holds at most `max_entries` entries (net.link.ether.inet.max_entries, a vimage
    addition), so neither a flood of ARP packets nor traffic to many on-link addresses
    can grow the table (and its timers) without limit.
    """

    __slots__ = ("host_down_time", "log_count", "log_second", "max_age", "max_entries",
                 "max_log_per_second", "maxhold", "maxtries", "per_ifp", "stats", "table",
                 "vnet", "wait")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.table: dict[int, ArpEntry] = {}
        self.per_ifp: dict[Ifnet, int] = {}  # entries in `table` on each interface
        self.stats = ArpStats()
        self.max_age = 1200
        self.maxtries = 5
        self.maxhold = 16
        self.wait = 1
        self.host_down_time = 20
        self.max_entries = 4096
        self.max_log_per_second = 1
        self.log_second = -1
        self.log_count = 0

    # -- output ----------------------------------------------------------------------
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
            if not self._room(ifp, nexthop):
                raise OSError(errno.ENOBUFS, "No buffer space available")
            if entry is not None:
                self._drop(entry)
            entry = ArpEntry(nexthop, ifp, INCOMPLETE)
            entry.hold = []
            self._link(entry)
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
        ether_output(ifp, BROADCAST, ETH_ARP,
                     warp.build(warp.OP_REQUEST, ifp.mac, src, ZERO_MAC, entry.addr))
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
            self._unlink(entry)

    def _drop(self, entry: ArpEntry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if self.table.get(entry.addr) is entry:
            self._unlink(entry)

    # -- the table and its per-interface bound ------------------------------------------
    def _link(self, entry: ArpEntry) -> None:
        self.table[entry.addr] = entry
        per_ifp = self.per_ifp
        per_ifp[entry.ifp] = per_ifp.get(entry.ifp, 0) + 1

    def _unlink(self, entry: ArpEntry) -> None:
        del self.table[entry.addr]
        per_ifp = self.per_ifp
        left = per_ifp[entry.ifp] - 1
        if left:
            per_ifp[entry.ifp] = left
        else:
            del per_ifp[entry.ifp]

    def _room(self, ifp: Ifnet, addr: int) -> bool:
        """True if `ifp` may hold one more entry; a refusal is counted and logged."""
        if self.per_ifp.get(ifp, 0) < self.max_entries:
            return True
        self.stats.tablefull += 1
        self._log(logging.WARNING, "%s: table full (%d entries), no entry for %s",
                  ifp.name, self.max_entries, ntoa(addr))
        return False

    def count(self, ifp: Ifnet) -> int:
        """Entries on `ifp` (netstat, tests)."""
        return self.per_ifp.get(ifp, 0)

    def _log(self, level: int, fmt: str, *args: object) -> None:
        """FreeBSD's ARP_LOG: messages a remote host can trigger, at most
        net.link.ether.inet.max_log_per_second of them (if_ether.c, ppsratecheck)."""
        second = self.vnet.kernel.sched.now_ns() // NS_PER_S
        if second != self.log_second:
            self.log_second = second
            self.log_count = 0
        if self.log_count >= self.max_log_per_second:
            return
        self.log_count += 1
        logging.getLogger("vimage.arp").log(level, "arp: " + fmt + " (vnet %s)", *args,
                                            self.vnet.name)

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
            self._log(logging.ERROR, "%s is using my IP address %s on %s!",
                      msg.sha.hex(":"), ntoa(msg.spa), ifp.name)
            return
        target = local.get(msg.tpa)
        if target is not None and target.ifp is not ifp:
            target = None
        if msg.spa:
            self._learn(ifp, msg.spa, msg.sha, target is not None)
        # answered even when the sender is off-link and got no entry (in_arpinput: "we will
        # try to answer the request instead of dropping frame")
        if msg.op == warp.OP_REQUEST and target is not None and msg.spa != msg.tpa:
            stats.txreplies += 1
            ether_output(ifp, msg.sha, ETH_ARP,
                         warp.build(warp.OP_REPLY, ifp.mac, msg.tpa, msg.sha, msg.spa))

    def _learn(self, ifp: Ifnet, spa: int, sha: bytes, to_us: bool) -> None:
        """Update the sender's entry, or create one (FreeBSD in_arpinput).

        An existing entry on this interface is refreshed by any ARP packet; a new one is
        made only for a request or reply aimed at our address, and only when the sender
        is on one of the receiving interface's networks (lltable_alloc_entry fails the
        in_lltable_rtcheck otherwise) and the interface has room.
        """
        entry = self.table.get(spa)
        if entry is not None and entry.ifp is ifp:
            if entry.state != STATIC:
                self._resolved(entry, sha)
            return
        if not to_us or (entry is not None and entry.state == STATIC):
            return
        if not on_link(ifp, spa):
            self.stats.notlocal += 1
            if entry is not None:  # log_arp_wrong_iface
                self._log(logging.WARNING, "%s is on %s but got reply from %s on %s",
                          ntoa(spa), entry.ifp.name, sha.hex(":"), ifp.name)
            else:
                self._log(logging.INFO, 'IPv4 address: "%s" is not on the network of %s',
                          ntoa(spa), ifp.name)
            return
        if not self._room(ifp, spa):
            return
        if entry is not None:
            self._drop(entry)  # learnt on another interface: stop its timer too
        entry = ArpEntry(spa, ifp, REACHABLE)
        self._link(entry)
        self._resolved(entry, sha)

    def announce(self, ifp: Ifnet, addr: int) -> None:
        """Gratuitous ARP for a newly configured address."""
        self.stats.txrequests += 1
        ether_output(ifp, BROADCAST, ETH_ARP,
                     warp.build(warp.OP_REQUEST, ifp.mac, addr, ZERO_MAC, addr))

    # -- administration (arp -s / -d / -a) ------------------------------------------
    def set_static(self, ifp: Ifnet, addr: int, mac: bytes, temporary: bool = False) -> None:
        """`arp -s`: a permanent entry, or with `temporary` one that ages out after max_age."""
        old = self.table.get(addr)
        if old is not None:
            self._drop(old)
        entry = ArpEntry(addr, ifp, REACHABLE)
        self._link(entry)  # an administrator's entry is not refused at max_entries
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


def on_link(ifp: Ifnet, addr: int) -> bool:
    """True if `addr` is on the network of one of `ifp`'s addresses."""
    return any(addr & ia.mask == ia.net for ia in ifp.addrs)


def vnet_attach(vnet: Vnet) -> None:
    vnet.arp = ArpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.arp.clear()
