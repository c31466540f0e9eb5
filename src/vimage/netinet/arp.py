"""ARP, and IPv4 output over Ethernet (FreeBSD if_ether.c)."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from vimage.net import offload
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
    ("proxyall", "Enable proxy ARP for all suitable requests", 0, 1),
    ("garp_rexmit_count",
     "Number of times to retransmit GARP packets; 0 to disable, maximum of 16", 0, 16),
    ("log_arp_wrong_iface", "log arp packets arriving on the wrong interface", 0, 1),
    ("log_arp_movements", "log arp replies from MACs different than the one in the cache",
     0, 1),
    ("log_arp_permanent_modify",
     "log arp replies from MACs different than the one in the permanent arp entry", 0, 1),
    ("allow_multicast", "accept multicast addresses", 0, 1),
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
    """One neighbour (FreeBSD's llentry). `hdr` is the Ethernet header that reaches it
    (destination, our source, IPv4 type), built once when it resolves, as FreeBSD's
    lle->r_linkdata: None while unresolved and once the entry has left the table, so a
    route's next-hop cache (Route.nh) holding the entry sees at once when it is stale."""

    __slots__ = ("addr", "asked", "expire_ns", "hdr", "hold", "ifp", "mac", "state", "timer")

    def __init__(self, addr: int, ifp: Ifnet, state: int) -> None:
        self.addr = addr
        self.ifp = ifp
        self.mac: bytes | None = None
        self.hdr: bytes | None = None
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

    __slots__ = ("allow_multicast", "garp", "garp_rexmit_count", "host_down_time",
                 "log_arp_movements", "log_arp_permanent_modify", "log_arp_wrong_iface",
                 "log_count", "log_second", "max_age", "max_entries", "max_log_per_second",
                 "maxhold", "maxtries", "per_ifp", "proxyall", "stats", "table", "vnet",
                 "wait")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # made here, not on first read: a hot-path class (see stats.LazySlots)
        self.stats = ArpStats()
        self.table: dict[int, ArpEntry] = {}
        self.per_ifp: dict[Ifnet, int] = {}  # entries in `table` on each interface
        self.max_age = 1200
        self.maxtries = 5
        self.maxhold = 16
        self.wait = 1
        self.host_down_time = 20
        self.max_entries = 4096
        self.max_log_per_second = 1
        self.log_second = -1
        self.log_count = 0
        # FreeBSD's defaults (if_ether.c)
        self.proxyall = 0
        self.garp_rexmit_count = 0
        self.log_arp_wrong_iface = 1
        self.log_arp_movements = 1
        self.log_arp_permanent_modify = 1
        self.allow_multicast = 0
        # (interface, address) -> its GARP retransmission timer and the retransmissions made
        self.garp: dict[tuple[Ifnet, int], tuple[Timer, int]] = {}

    # -- output ----------------------------------------------------------------------
    def output(self, ifp: Ifnet, packet: bytes, nexthop: int, broadcast: bool = False) -> None:
        """Send an IPv4 packet to `nexthop` on `ifp`, resolving it with ARP first."""
        if broadcast:
            frame = BROADCAST + ifp.mac + ETH_IP + packet  # type: ignore[operator]
            if ifp.output(frame) and ifp.flags & IFF_SIMPLEX:
                # if_simloop: a simplex link can't hear itself (a frame under the offload
                # mark keeps it: vimage.net.offload)
                ifp.queue_input(frame, ~0)
            return
        entry = self.table.get(nexthop)
        if entry is not None and entry.ifp is ifp:
            hdr = entry.hdr
            if hdr is not None:
                ifp.output(hdr + packet)
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
        if ifp.offl.partial:  # held, it leaves later without the offload mark: resolve it
            offload.resend(ifp.offl, packet, ifp.mtu, self._hold, hold)
        else:
            self._hold(packet, hold)

    def _hold(self, packet: bytes, hold: list[bytes]) -> None:
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
                     warp.build(warp.OP_REQUEST, ifp.mac, src, ZERO_MAC, entry.addr))  # type: ignore[arg-type]
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
        entry.hdr = None  # invalidates the next-hop caches holding it (Route.nh)
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
        ifp = entry.ifp
        entry.mac = mac
        entry.hdr = head = mac + ifp.mac + ETH_IP  # type: ignore[operator]
        entry.state = REACHABLE
        entry.asked = 0
        entry.timer = self._arm(entry, self.max_age, self._expire)
        hold, entry.hold = entry.hold, None
        if hold:
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
        if msg.sha[0] & 1 and (not self.allow_multicast or msg.sha == BROADCAST):
            stats.rxbad += 1  # (a vimage count: FreeBSD only logs these)
            if msg.sha == BROADCAST:
                self._log(logging.INFO, "link address is broadcast for IP address %s!",
                          ntoa(msg.spa))
            else:
                self._log(logging.INFO, "%s is multicast", msg.sha.hex(":"))
            return  # a multicast sender hardware address, unless allow_multicast
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
        if msg.op != warp.OP_REQUEST or msg.spa == msg.tpa:
            return
        if target is None and not self._proxy(ifp, msg.spa, msg.tpa):
            return
        stats.txreplies += 1
        ether_output(ifp, msg.sha, ETH_ARP,
                     warp.build(warp.OP_REPLY, ifp.mac, msg.tpa, msg.sha, msg.spa))  # type: ignore[arg-type]

    def _proxy(self, ifp: Ifnet, spa: int, tpa: int) -> bool:
        """net.inet.link.ether.inet.proxyall (in_arpinput): answer for an address we
        route elsewhere, not for one on the interface the request came in on ("or
        we'll get into a fight"), and only to a sender routed via this interface."""
        if not self.proxyall:
            return False
        route = self.vnet.route
        rt = route.tables[ifp.fib] if ifp.fib < len(route.tables) else self.vnet.rt
        there = rt.lookup(tpa)
        if there is None or there.ifp is ifp:
            return False
        back = rt.lookup(spa)
        if back is None or back.ifp is not ifp:
            if back is not None:
                self._log(logging.INFO, "proxy: ignoring request from %s via %s",
                          ntoa(spa), ifp.name)
            return False
        return True

    def _learn(self, ifp: Ifnet, spa: int, sha: bytes, to_us: bool) -> None:
        """Update the sender's entry, or create one (FreeBSD in_arpinput).

        An existing entry on this interface is refreshed by any ARP packet; a new one is
        made only for a request or reply aimed at our address, and only when the sender
        is on one of the receiving interface's networks (lltable_alloc_entry fails the
        in_lltable_rtcheck otherwise) and the interface has room.
        """
        entry = self.table.get(spa)
        if entry is not None and entry.ifp is ifp:
            if entry.mac is not None and entry.mac != sha:  # arp_check_update_lle
                if entry.state == STATIC:
                    if self.log_arp_permanent_modify:
                        self._log(logging.ERROR,
                                  "%s attempts to modify permanent entry for %s on %s",
                                  sha.hex(":"), ntoa(spa), ifp.name)
                    return
                if self.log_arp_movements:
                    self._log(logging.INFO, "%s moved from %s to %s on %s", ntoa(spa),
                              entry.mac.hex(":"), sha.hex(":"), ifp.name)
            if entry.state != STATIC:
                self._resolved(entry, sha)
            return
        if not to_us or (entry is not None and entry.state == STATIC):
            return
        if not on_link(ifp, spa):
            self.stats.notlocal += 1
            if entry is not None and self.log_arp_wrong_iface:
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
        """Gratuitous ARP for a newly configured address, then, with
        net.link.ether.inet.garp_rexmit_count N, N retransmissions 1, 2, 4 ... seconds
        apart (FreeBSD's garp_timer_start and garp_rexmit)."""
        self._send_garp(ifp, addr)
        old = self.garp.pop((ifp, addr), None)
        if old is not None:
            old[0].cancel()
        if self.garp_rexmit_count > 0:
            self._garp_arm(ifp, addr, 0)

    def _send_garp(self, ifp: Ifnet, addr: int) -> None:
        self.stats.txrequests += 1
        ether_output(ifp, BROADCAST, ETH_ARP,
                     warp.build(warp.OP_REQUEST, ifp.mac, addr, ZERO_MAC, addr))  # type: ignore[arg-type]

    def _garp_arm(self, ifp: Ifnet, addr: int, count: int) -> None:
        timer = self.vnet.kernel.sched.call_later((1 << count) * NS_PER_S, self._garp_rexmit,
                                                  ifp, addr, owner=self.vnet)
        self.garp[(ifp, addr)] = (timer, count)

    def _garp_rexmit(self, ifp: Ifnet, addr: int) -> None:
        _timer, count = self.garp.pop((ifp, addr), (None, 0))
        ia = self.vnet.ip.local.get(addr)
        if ia is None or ia.ifp is not ifp or not ifp.flags & 1:
            return  # the address went away (or the interface went down): stop
        self._send_garp(ifp, addr)
        count += 1
        if count < self.garp_rexmit_count:
            self._garp_arm(ifp, addr, count)

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

    def lladdr_changed(self, ifp: Ifnet) -> None:
        """`ifp` has a new MAC address: rebuild its entries' headers (FreeBSD's
        iflladdr_event -> lltable_update_ifaddr recomputes the prepended headers)."""
        for entry in self.table.values():
            if entry.ifp is ifp and entry.mac is not None:
                entry.hdr = entry.mac + ifp.mac + ETH_IP  # type: ignore[operator]

    def purge_ifp(self, ifp: Ifnet) -> None:
        for entry in [e for e in self.table.values() if e.ifp is ifp]:
            self._drop(entry)
        for key in [k for k in self.garp if k[0] is ifp]:
            self.garp.pop(key)[0].cancel()

    def clear(self) -> None:
        for entry in list(self.table.values()):
            self._drop(entry)
        for timer, _count in self.garp.values():
            timer.cancel()
        self.garp.clear()


def on_link(ifp: Ifnet, addr: int) -> bool:
    """True if `addr` is on the network of one of `ifp`'s addresses."""
    return any(addr & ia.mask == ia.net for ia in ifp.addrs)


def vnet_attach(vnet: Vnet) -> None:
    vnet.arp = ArpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.arp.clear()
