"""Fault injection: partitions, cut and impaired links, crashed and restarted vnets.

All state lives on one `Faults` object per kernel, a kernel service
(`Faults.of(kernel)` is `kernel.service(Faults)`). Every fault happens now (`at=None`)
or at kernel time `at` (seconds; virtual seconds on a virtual clock). A scheduled fault
is a kernel timer owned by the vnet it concerns, so destroying that vnet cancels it.

- A partition is a pfil hook (vimage.net.pfil) at IPv4 input (`IpState.pfil_in`)
  and at IPv6 input (`Ip6State.pfil_in`: global addresses; link-local ones pass),
  ordered before any firewall, on every member vnet: a
  packet whose source is an address of the other side, and whose destination is
  this vnet or its own side, is dropped and counted (`ip.stats.faultdrop` and
  `Partition.drops`). Addresses are looked up live in the other side's address
  tables, so addresses added or removed during a partition are honoured; the cost
  is one dict lookup per vnet of the other side for each packet a member receives.
  Packets passing through a member towards a vnet of neither side are not touched.
- A cut replaces the pipe of both ends of an epair by a `CutPipe` that discards
  (and counts) everything; frames in flight are lost. Restoring puts the
  impairment settings back, including any changed during the cut.
- A crash silences a vnet without a word on the wire: see `Faults.crash`.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

from vimage.net import pfil
from vimage.net.ifnet import IFF_LOOPBACK, IFF_UP
from vimage.net.pipe import LinkPipe, configure
from vimage.netinet.arp import STATIC as ARP_STATIC
from vimage.netinet.tcp import LISTEN, detach, drop
from vimage.sched import NS_PER_S
from vimage.wire.ipv4 import ADDRESSES

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.ip import IpState
    from vimage.netinet6.ip6 import Ip6State
    from vimage.sched import Timer
    from vimage.vnet import Vnet

    Link = tuple[Ifnet, Ifnet]

# what a pipe carries over when a cut replaces it and back again
_PIPE_SETTINGS = ("bandwidth", "delay_ns", "loss", "ber", "dup", "queue")
_PIPE_COUNTERS = ("delivered", "dropped_queue", "dropped_loss", "dropped_ber", "duplicated")


class FaultEvent(NamedTuple):
    """One fault that took effect: kernel time in seconds, what, and on what."""

    time: float
    action: str  # partition, heal, cut, restore, impair, crash, restart
    target: str


class Scheduled:
    """A fault waiting for its time (a kernel timer)."""

    __slots__ = ("action", "fault", "target", "timer", "when_ns")

    def __init__(self, when_ns: int, action: str, target: str,
                 fault: Partition | Cut | Crash | None) -> None:
        self.when_ns = when_ns
        self.action = action
        self.target = target
        self.fault = fault  # the fault this timer begins, marked cancelled if the timer dies
        self.timer: Timer | None = None

    @property
    def when(self) -> float:
        return self.when_ns / NS_PER_S


class Partition:
    """Two disjoint groups of vnets that cannot exchange IPv4 packets while active."""

    __slots__ = ("drops", "groups", "id", "since", "state", "until")

    def __init__(self, pid: int, side_a: tuple[Vnet, ...], side_b: tuple[Vnet, ...]) -> None:
        self.id = pid
        self.groups = (side_a, side_b)
        self.state = "scheduled"  # then active, then healed; or cancelled before it began
        self.since: float | None = None
        self.until: float | None = None
        self.drops = 0  # packets dropped between the two sides, all members together

    @property
    def active(self) -> bool:
        return self.state == "active"

    def describe(self) -> str:
        a, b = (",".join(v.display_name for v in side) for side in self.groups)
        return f"{a} | {b}"

    def __repr__(self) -> str:
        return f"<Partition {self.id} {self.state} {self.describe()} drops={self.drops}>"


class Cut:
    """Both directions of one epair link carry nothing while active."""

    __slots__ = ("drops", "ends", "since", "state", "until")

    def __init__(self, ends: Link) -> None:
        self.ends = ends
        self.state = "scheduled"  # then active, then restored; or cancelled
        self.since: float | None = None
        self.until: float | None = None
        self.drops = 0  # frames sent into the cut, and frames in flight when it was cut

    @property
    def active(self) -> bool:
        return self.state == "active"

    def describe(self) -> str:
        return " - ".join(f"{e.vnet.display_name}:{e.name}" for e in self.ends)

    def __repr__(self) -> str:
        return f"<Cut {self.describe()} {self.state} drops={self.drops}>"


class Crash:
    """One crash of a vnet, and what it took down."""

    __slots__ = ("conns", "iqdrops_base", "listeners", "restarted_drops", "since", "sockets",
                 "state", "until", "up", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.state = "scheduled"  # then crashed, then restarted; or cancelled
        self.since: float | None = None
        self.until: float | None = None
        self.up: list[Ifnet] = []  # interfaces that were up, brought up again on restart
        self.conns = self.listeners = self.sockets = 0  # what the crash reset or closed
        self.iqdrops_base = 0
        self.restarted_drops = 0

    @property
    def active(self) -> bool:
        return self.state == "crashed"

    @property
    def drops(self) -> int:
        """Frames that reached the vnet's interfaces while it was down."""
        if self.state != "crashed":
            return self.restarted_drops
        return sum(i.iqdrops for i in self.up if i.vnet is self.vnet) - self.iqdrops_base

    def __repr__(self) -> str:
        return f"<Crash {self.vnet.display_name} {self.state} drops={self.drops}>"


class CutPipe(LinkPipe):
    """The pipe of a cut epair end: keeps the impairment settings, delivers nothing."""

    __slots__ = ("cut", "had_pipe")

    def __init__(self, ifp: Ifnet, cut: Cut, old: LinkPipe | None) -> None:
        super().__init__(ifp)
        self.cut = cut
        self.had_pipe = old is not None
        if old is not None:
            for name in _PIPE_SETTINGS + _PIPE_COUNTERS:
                setattr(self, name, getattr(old, name))

    def send(self, frame: bytes) -> None:
        self.cut.drops += 1


class _PartitionHook:
    """The IPv4 input hook of one member vnet, for every partition it is part of."""

    __slots__ = ("ip", "rules")

    def __init__(self, ip: IpState) -> None:
        self.ip = ip
        # (partition, address tables of this side, address tables of the other side)
        self.rules: list[tuple[Partition, tuple[dict, ...], tuple[dict, ...]]] = []

    def __call__(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        if ifp is not None and ifp.flags & IFF_LOOPBACK:
            return pkt  # 127.0.0.1 is everybody's: traffic on lo0 never crosses a partition
        src, dst = ADDRESSES.unpack_from(pkt, 12)
        for part, mine, other in self.rules:
            for table in other:
                if src in table:
                    break
            else:
                continue
            ip = self.ip
            if (dst in ip.bcast or dst == 0xFFFFFFFF or dst >> 28 == 0xE
                    or any(dst in table for table in mine)):
                ip.stats.faultdrop += 1
                part.drops += 1
                return None
        return pkt


class _Partition6Hook:
    """The IPv6 input hook of one member vnet (issue 11): the same rule over the IPv6
    address tables (`ip6.local`). Link-local sources pass, as ARP passes an IPv4
    partition: neighbour discovery still works, what rides on global addresses does not."""

    __slots__ = ("ip6", "rules")

    def __init__(self, ip6: Ip6State) -> None:
        self.ip6 = ip6
        self.rules: list[tuple[Partition, tuple[dict, ...], tuple[dict, ...]]] = []

    def __call__(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        if ifp is not None and ifp.flags & IFF_LOOPBACK:
            return pkt
        src = int.from_bytes(pkt[8:24], "big")
        if src >> 118 == 0x3FA:
            return pkt
        dst = int.from_bytes(pkt[24:40], "big")
        for part, mine, other in self.rules:
            for table in other:
                if src in table:
                    break
            else:
                continue
            if dst >> 120 == 0xFF or any(dst in table for table in mine):
                self.ip6.stats.faultdrop += 1
                part.drops += 1
                return None
        return pkt


class Faults:
    """The faults of one kernel: what is active, what is scheduled, and what happened."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.events: list[FaultEvent] = []
        self.partitions: list[Partition] = []  # every partition made, in id order
        self.cuts: list[Cut] = []
        self.crashes: list[Crash] = []
        # called with the vnet after a crash (so a runtime can cancel its tasks) and
        # after a restart; an exception is counted as a loop fault and does not propagate
        self.on_crash: list[Callable[[Vnet], object]] = []
        self.on_restart: list[Callable[[Vnet], object]] = []
        self._pending: list[Scheduled] = []
        self._hooks: dict[Vnet, _PartitionHook] = {}
        self._hooks6: dict[Vnet, _Partition6Hook] = {}
        self._crashed: dict[Vnet, Crash] = {}
        self._next_id = 1

    @classmethod
    def of(cls, kernel: Kernel) -> Faults:
        """The kernel's fault state: its `Faults` service, made on first use."""
        return kernel.service(cls)

    # -- scheduling -------------------------------------------------------------------
    def _when_ns(self, at: float) -> int:
        if isinstance(at, bool) or not isinstance(at, (int, float)) or at != at:
            raise ValueError(f"bad time {at!r}: kernel seconds expected")
        when = round(at * NS_PER_S)
        now = self.kernel.sched.now_ns()
        if when < now:
            raise ValueError(f"time {at:g} s is in the past (now {now / NS_PER_S:g} s)")
        return when

    def _at(self, at: float | None, owner: Vnet, action: str, target: str,
            apply: Callable[[], None], fault: Partition | Cut | Crash | None = None) -> None:
        """Run `apply` now, or at kernel time `at` on a timer owned by `owner`."""
        if at is None:
            apply()
            return
        when = self._when_ns(at)
        sched = self.kernel.sched
        if when == sched.now_ns():
            apply()
            return
        entry = Scheduled(when, action, target, fault)
        entry.timer = sched.call_later(when - sched.now_ns(), self._fire, entry, apply,
                                       owner=owner)
        self._pending.append(entry)

    def _fire(self, entry: Scheduled, apply: Callable[[], None]) -> None:
        self._pending.remove(entry)
        apply()

    def scheduled(self) -> list[Scheduled]:
        """Faults still waiting for their time (those of destroyed vnets are gone)."""
        live = []
        for entry in self._pending:
            if entry.timer is not None and not entry.timer.cancelled:
                live.append(entry)
            elif entry.fault is not None and entry.fault.state == "scheduled":
                entry.fault.state = "cancelled"  # its owner was destroyed
        self._pending[:] = live
        return sorted(live, key=lambda e: e.when_ns)

    def _log(self, action: str, target: str) -> None:
        self.events.append(FaultEvent(self.kernel.now, action, target))

    # -- partitions ---------------------------------------------------------------------
    def partition(self, group_a: Iterable[Vnet | str] | Vnet | str,
                  group_b: Iterable[Vnet | str] | Vnet | str,
                  at: float | None = None) -> Partition:
        """Drop all IPv4 traffic between the vnets of `group_a` and those of `group_b`."""
        with self.kernel.sched.cond:
            side_a, side_b = self._group(group_a), self._group(group_b)
            both = set(side_a) & set(side_b)
            if both:
                raise ValueError(f"vnet {next(iter(both)).display_name} is on both sides")
            part = Partition(self._next_id, side_a, side_b)
            self._next_id += 1
            self.partitions.append(part)
            self._at(at, side_a[0], "partition", f"{part.id}: {part.describe()}",
                     lambda: self._start(part), part)
            return part

    def heal(self, partition: Partition | int | None = None, at: float | None = None) -> None:
        """End one partition (one not begun yet never begins), or with None every active one."""
        with self.kernel.sched.cond:
            if partition is None:
                self._at(at, self.kernel.base, "heal", "all", self._heal_all)
                return
            part = self.get_partition(partition)
            if part.state in ("healed", "cancelled"):
                raise ValueError(f"partition {part.id} is already {part.state}")
            owner = next((v for v in part.groups[0] if v.alive), self.kernel.base)
            self._at(at, owner, "heal", str(part.id), lambda: self._end(part))

    def get_partition(self, partition: Partition | int) -> Partition:
        if isinstance(partition, Partition):
            if partition not in self.partitions:
                raise LookupError("that partition belongs to another kernel")
            return partition
        for part in self.partitions:
            if part.id == partition:
                return part
        raise LookupError(f"no such partition: {partition}")

    def active_partitions(self) -> list[Partition]:
        return [p for p in self.partitions if p.active]

    def _group(self, group: Iterable[Vnet | str] | Vnet | str) -> tuple[Vnet, ...]:
        items = [group] if isinstance(group, str) or not isinstance(group, Iterable) else group
        out: list[Vnet] = []
        for item in items:
            vnet = self.kernel.get(item) if isinstance(item, str) else item
            if vnet.kernel is not self.kernel or not vnet.alive:
                raise LookupError(f"no such vnet: {vnet.display_name}")
            if vnet not in out:
                out.append(vnet)
        if not out:
            raise ValueError("a partition needs at least one vnet on each side")
        return tuple(out)

    def _start(self, part: Partition) -> None:
        if part.state != "scheduled":
            return
        side_a = [v for v in part.groups[0] if v.alive]
        side_b = [v for v in part.groups[1] if v.alive]
        part.state = "active"
        part.since = self.kernel.now
        tables_a = tuple(v.ip.local for v in side_a)
        tables_b = tuple(v.ip.local for v in side_b)
        for members, mine, other in ((side_a, tables_a, tables_b), (side_b, tables_b, tables_a)):
            for vnet in members:
                hook = self._hooks.get(vnet)
                if hook is None:
                    hook = self._hooks[vnet] = _PartitionHook(vnet.ip)
                    pfil.link(vnet.ip, "pfil_in", hook, order=pfil.ORDER_FAULT, name="partition")
                hook.rules.append((part, mine, other))
        tables_a6 = tuple(v.ip6.local for v in side_a)
        tables_b6 = tuple(v.ip6.local for v in side_b)
        for members, mine, other in ((side_a, tables_a6, tables_b6),
                                     (side_b, tables_b6, tables_a6)):
            for vnet in members:
                hook6 = self._hooks6.get(vnet)
                if hook6 is None:
                    hook6 = self._hooks6[vnet] = _Partition6Hook(vnet.ip6)
                    pfil.link(vnet.ip6, "pfil_in", hook6, order=pfil.ORDER_FAULT,
                              name="partition")
                hook6.rules.append((part, mine, other))
        self._log("partition", f"{part.id}: {part.describe()}")

    def _end(self, part: Partition) -> None:
        if part.state == "scheduled":
            part.state = "cancelled"  # not an event: nothing changed on the network
            return
        if part.state == "active":
            part.state = "healed"
            part.until = self.kernel.now
            for vnet in part.groups[0] + part.groups[1]:
                hook6 = self._hooks6.get(vnet)
                if hook6 is not None:
                    hook6.rules = [r for r in hook6.rules if r[0] is not part]
                    if not hook6.rules:
                        del self._hooks6[vnet]
                        pfil.unlink(vnet.ip6, "pfil_in", hook6)
                hook = self._hooks.get(vnet)
                if hook is None:
                    continue
                hook.rules = [r for r in hook.rules if r[0] is not part]
                if not hook.rules:
                    del self._hooks[vnet]
                    pfil.unlink(vnet.ip, "pfil_in", hook)
        else:
            return
        self._log("heal", str(part.id))

    def _heal_all(self) -> None:
        for part in self.active_partitions():
            self._end(part)

    # -- links ------------------------------------------------------------------------
    def cut(self, link: Ifnet | Link, at: float | None = None) -> Cut:
        """Cut an epair link (given by either end, or both): nothing crosses it either way."""
        with self.kernel.sched.cond:
            ends = _link(link)
            if at is None and self._active_cut(ends) is not None:
                raise ValueError(f"{ends[0].name} is already cut")
            cut = Cut(ends)
            self.cuts.append(cut)
            self._at(at, ends[0].vnet, "cut", cut.describe(), lambda: self._apply_cut(cut),
                     cut)
            return cut

    def restore(self, link: Cut | Ifnet | Link, at: float | None = None) -> None:
        """Mend a cut link (or cancel a cut not made yet); its impairment is as before."""
        with self.kernel.sched.cond:
            if isinstance(link, Cut):
                cut: Cut | None = link
            else:
                ends = _link(link)
                cut = self._active_cut(ends) or next(
                    (c for c in self.cuts if c.state == "scheduled" and set(c.ends) == set(ends)),
                    None)
            if cut is None or cut.state not in ("active", "scheduled"):
                name = link.describe() if isinstance(link, Cut) else _link(link)[0].name
                raise ValueError(f"{name} is not cut")
            self._at(at, cut.ends[0].vnet, "restore", cut.describe(),
                     lambda: self._undo_cut(cut))

    def active_cuts(self) -> list[Cut]:
        return [c for c in self.cuts if c.active]

    def _active_cut(self, ends: Link) -> Cut | None:
        return next((c for c in self.cuts if c.active and set(c.ends) == set(ends)), None)

    def _apply_cut(self, cut: Cut) -> None:
        a, b = cut.ends
        if cut.state != "scheduled" or a.peer is not b or self._active_cut(cut.ends):
            cut.state = "cancelled"  # destroyed, relinked or cut meanwhile
            return
        for end in cut.ends:
            old = end.pipe
            if old is not None:
                cut.drops += old.in_flight
                old.flush()
            end.pipe = CutPipe(end, cut, old)
        cut.state = "active"
        cut.since = self.kernel.now
        self._log("cut", cut.describe())

    def _undo_cut(self, cut: Cut) -> None:
        if cut.state == "scheduled":
            cut.state = "cancelled"
            return
        if cut.state != "active":
            return
        for end in cut.ends:
            pipe = end.pipe
            if not isinstance(pipe, CutPipe) or pipe.cut is not cut:
                continue  # `vlink IF clear` removed it already
            fresh = LinkPipe(end)
            if not pipe.had_pipe and all(getattr(pipe, n) == getattr(fresh, n)
                                         for n in _PIPE_SETTINGS):
                end.pipe = None
                continue
            for name in _PIPE_SETTINGS + _PIPE_COUNTERS:
                setattr(fresh, name, getattr(pipe, name))
            end.pipe = fresh
        cut.state = "restored"
        cut.until = self.kernel.now
        self._log("restore", cut.describe())

    def impair(self, ifp: Ifnet, at: float | None = None, *, both: bool = False,
               clear: bool = False, **settings: object) -> None:
        """Set the link impairment of `ifp` (and of its peer with `both`) now or at `at`.

        `settings` are those of `Ifnet.impair` (bandwidth, delay, loss, ber, dup, queue),
        checked now; `clear=True` removes every impairment instead.
        """
        with self.kernel.sched.cond:
            ends = _link(ifp)
            if not both:
                ends = (ifp, ifp)
            if clear == bool(settings):
                raise ValueError("give impairment settings, or clear alone")
            if settings:
                probe = LinkPipe(ifp)
                configure(_Probe(probe), settings)  # type: ignore[arg-type]  # validates
            words = "clear" if clear else " ".join(f"{k} {v}" for k, v in settings.items())
            target = f"{ifp.vnet.display_name}:{ifp.name}{' (both ends)' if both else ''} {words}"

            def apply() -> None:
                if ifp.peer is None or ifp.vnet.ifaces.get(ifp.name) is not ifp:
                    return  # destroyed or moved meanwhile
                for end in dict.fromkeys(ends):
                    if not clear:
                        configure(end, settings)
                    elif isinstance(end.pipe, CutPipe):
                        fresh = LinkPipe(end)
                        for name in _PIPE_SETTINGS:
                            setattr(end.pipe, name, getattr(fresh, name))
                    elif end.pipe is not None:
                        end.pipe.flush()
                        end.pipe = None
                self._log("impair", target)

            self._at(at, ifp.vnet, "impair", target, apply)

    # -- crash and restart ---------------------------------------------------------------
    def crash(self, vnet: Vnet | str, at: float | None = None) -> Crash:
        """Stop `vnet` as a host that loses power: it says nothing on the wire.

        Every TCP connection is dropped without a segment sent and its socket gets
        ECONNRESET (recv/send raise ConnectionResetError). Listening sockets are closed
        (a blocked accept() raises OSError EBADF) and leave the selector watching them.
        UDP and raw sockets lose their queued datagrams and their port (free again after
        a restart), and their next call raises ConnectionResetError; they stay open but
        receive nothing again.
        The ARP cache (static entries kept) and the reassembly queues are flushed and
        every interface goes down: frames reaching the vnet are dropped and counted
        (interface input drops, `Crash.drops`). Addresses, routes and sysctls stay,
        as on a disk: `restart` brings up the interfaces that were up.
        """
        with self.kernel.sched.cond:
            vnet = self._vnet(vnet)
            if at is None and vnet in self._crashed:
                raise ValueError(f"{vnet.display_name} is already crashed")
            crash = Crash(vnet)
            self.crashes.append(crash)
            self._at(at, vnet, "crash", vnet.display_name, lambda: self._crash(crash),
                     crash)
            return crash

    def restart(self, vnet: Vnet | str, at: float | None = None) -> None:
        """Boot a crashed vnet again: the interfaces that were up come up, configured."""
        with self.kernel.sched.cond:
            vnet = self._vnet(vnet)
            if at is None and vnet not in self._crashed:
                raise ValueError(f"{vnet.display_name} is not crashed")
            self._at(at, vnet, "restart", vnet.display_name, lambda: self._restart(vnet))

    def crashed(self, vnet: Vnet) -> bool:
        return vnet in self._crashed and vnet.alive

    def active_crashes(self) -> list[Crash]:
        return [c for c in self.crashes if c.active and c.vnet.alive]

    def _vnet(self, vnet: Vnet | str) -> Vnet:
        if isinstance(vnet, str):
            return self.kernel.get(vnet)
        if vnet.kernel is not self.kernel or not vnet.alive:
            raise LookupError(f"no such vnet: {vnet.display_name}")
        return vnet

    def _crash(self, crash: Crash) -> None:
        vnet = crash.vnet
        if crash.state != "scheduled":
            return
        if vnet in self._crashed or not vnet.alive:
            crash.state = "cancelled"
            return
        crash.state = "crashed"
        crash.since = self.kernel.now
        self._crashed[vnet] = crash
        crash.up = [i for i in vnet.ifaces.values() if i.flags & IFF_UP]
        for ifp in crash.up:  # first, so that nothing below can reach the wire
            ifp.set_up(False)
        loopbacks = {i for i in vnet.ifaces.values() if i.flags & IFF_LOOPBACK}
        self.kernel.sched.purge_queue(loopbacks)  # what it was sending itself dies with it
        crash.iqdrops_base = sum(i.iqdrops for i in crash.up)
        self._reset_tcp(vnet, crash)
        self._reset_datagram_sockets(vnet, crash)
        arp = vnet.arp
        for entry in arp.entries():
            if entry.state != ARP_STATIC:  # `arp -s` entries are configuration
                arp.delete(entry.addr)
        ip = vnet.ip
        if ip.reass is not None:
            ip.reass.clear()
            ip.reass = None
        self.kernel.sched.cond.notify_all()  # wake blocked callers on the other threads
        self._log("crash", vnet.display_name)
        self._call(self.on_crash, vnet)

    def _reset_tcp(self, vnet: Vnet, crash: Crash) -> None:
        tcp = vnet.tcp
        tcbs = tcp.tcbs()
        for tcb in tcbs:
            if tcb.state != LISTEN:
                drop(tcb, errno.ECONNRESET)  # no RST: a crashed host says nothing
                if tcb.sock is not None:
                    crash.conns += 1
        for tcb in tcbs:
            if tcb.state == LISTEN:
                if tcb.accept_q:
                    tcb.accept_q.clear()  # its children were dropped above, silently
                sock = tcb.sock
                if sock is not None:
                    if sock._poll is not None:  # as a closed descriptor leaves an epoll set
                        with contextlib.suppress(KeyError, ValueError):
                            sock._poll.unregister(sock)
                    sock.closed = True
                    crash.listeners += 1
                tcb.so_error = errno.ECONNRESET
                detach(tcb)  # frees the port and wakes a blocked accept()

    def _reset_datagram_sockets(self, vnet: Vnet, crash: Crash) -> None:
        udp, raw = vnet.udp, vnet.raw
        socks = udp.sockets() + udp.sockets6()  # AF_INET6 ones too
        for sock in socks:
            udp.unbind(sock)
        raw_socks = raw.sockets.live() + raw.sockets6.live()
        for sock in raw_socks:
            raw.discard(sock)
        for sock in socks + raw_socks:
            # the receive queue Socket.enqueue fills: the datagrams die with the host
            sock._rcvq.clear()
            sock._rcvbytes = 0
            sock.set_error(errno.ECONNRESET)
            crash.sockets += 1

    def _restart(self, vnet: Vnet) -> None:
        crash = self._crashed.pop(vnet, None)
        if crash is None:
            return
        crash.restarted_drops = crash.drops
        crash.state = "restarted"
        crash.until = self.kernel.now
        for ifp in crash.up:
            if vnet.ifaces.get(ifp.name) is ifp:
                ifp.set_up(True)  # announces its addresses, as a booting host does
        self._log("restart", vnet.display_name)
        self._call(self.on_restart, vnet)

    def _call(self, hooks: list[Callable[[Vnet], object]], vnet: Vnet) -> None:
        for hook in list(hooks):
            try:
                hook(vnet)
            except Exception as exc:  # a runtime's bug must not leave the crash half done
                self.kernel.sched.record_error(hook, exc)

    def __repr__(self) -> str:
        return (f"<Faults partitions={len(self.active_partitions())} "
                f"cuts={len(self.active_cuts())} crashed={len(self.active_crashes())}>")


class _Probe:
    """Stands in for an interface so `configure` can validate settings on a spare pipe."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: LinkPipe) -> None:
        self.pipe = pipe


def _link(link: Ifnet | Link) -> Link:
    """Both ends of an epair link, given one end or both."""
    if isinstance(link, tuple):
        if len(link) != 2 or link[0].peer is not link[1]:
            raise ValueError("a link is the two ends of one epair")
        return link[0], link[1]
    if link.kind != "epair":
        raise ValueError(f"{link.name}: not an epair (only epair links can be cut or impaired)")
    if link.peer is None:
        raise ValueError(f"{link.name}: the link has no other end")
    return link, link.peer


def faults(kernel: Kernel) -> Faults:
    """The fault state of `kernel` (shorthand for `Faults.of`)."""
    return Faults.of(kernel)


__all__ = ["Crash", "Cut", "CutPipe", "FaultEvent", "Faults", "Partition", "Scheduled",
           "faults"]
