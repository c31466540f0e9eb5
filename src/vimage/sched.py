"""Clocks, timers and the run-to-completion packet queue of one kernel.

Time is an integer count of nanoseconds so that virtual time is exact: a
1 Mbit/s link serialises a 1500-byte frame in exactly 12_000_000 ns.

The scheduler is the only place the stack learns the time. In virtual time,
when nothing is runnable the clock jumps to the next timer; in real time the
loop sleeps (on a condition variable, so other threads can wake it).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from vimage.compiled import mypyc_attr

NS_PER_S = 1_000_000_000


class PpsLimit:
    """ppsratecheck(9) as icmp_error and icmp6_ratelimit use it (FreeBSD kern_time.c):
    at most `limit` events in each whole second of the kernel clock; a limit <= 0 is
    no limit."""

    __slots__ = ("count", "second")

    def __init__(self) -> None:
        self.second = -1
        self.count = 0

    def check(self, now_ns: int, limit: int) -> bool:
        """Count one event; False if it is over this second's limit."""
        if limit <= 0:
            return True
        second = now_ns // NS_PER_S
        if second != self.second:
            self.second = second
            self.count = 0
        self.count += 1
        return self.count <= limit


@mypyc_attr(native_class=False)  # compiled (vimage.compiled): weakly referable, as before
class Timer:
    """A one-shot kernel timer. `owner` is the vnet it belongs to (or None). `seq` orders
    timers due at the same instant: an int, or (owner's key, count) in keyed mode."""

    __slots__ = ("__weakref__", "args", "callback", "cancelled", "lazy", "owned", "owner",
                 "seq", "when")

    def __init__(self, when: int, seq: Any, callback: Callable[..., Any], args: tuple,
                 owner: Any) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.args = args
        self.owner = owner
        self.cancelled = False
        self.lazy = False  # armed by call_later_lazy and not in the heap yet
        self.owned: set[Timer] | None = None  # its owner's index (Scheduler._own) while armed

    def __lt__(self, other: Timer) -> bool:
        # (when, seq) order: the heap's entries are (when, seq, timer) tuples, which reach
        # this only if two timers share both (a seq given twice to call_at)
        when, other_when = self.when, other.when
        return when < other_when or (when == other_when and self.seq < other.seq)

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _noop
        self.args = ()
        self.owner = None
        owned = self.owned
        if owned is not None:
            self.owned = None
            owned.discard(self)


def _noop(*_args: Any) -> None:
    return None


@mypyc_attr(native_class=False)  # compiled (vimage.compiled): tests wrap its methods
class Scheduler:
    """Timers (a heap) and the packet queue (a deque of (receiver, frame)).

    `receiver` is any object with an `input(frame)` method, normally an
    interface. The loop pops entries and calls `receiver.input(frame)`, so one
    vnet's output never recurses into another's input.
    """

    def __init__(self, virtual: bool) -> None:
        self.virtual = virtual
        # (when, seq, timer) entries: tuples compare in C, where Timer.__lt__ would be a
        # Python call for each of the log(n) comparisons of every push and pop
        self._heap: list[tuple[int, Any, Timer]] = []
        self._seq = 0
        # keyed ordering (an experiment run across MPI ranks, docs/mpi.md): a timer's seq is
        # (its owner's key, the owner's own count), so timers due at the same instant run
        # in an order that does not depend on which other vnets share this kernel
        self.keyed = False
        self._owner_seq: dict[Any, int] = {}
        # the armed timers of each owner, so destroying a vnet cancels its own timers
        # without a scan of the heap; a timer leaves its set when it fires or is
        # cancelled, so the set holds nothing dead (and makes no garbage: a weak
        # reference per timer, kept until a prune, was one more object that outlived
        # two collections for each timer)
        self._owned: dict[Any, set[Timer]] = {}
        self._purged = 0  # timers cancelled by purge_timers still in the heap (at most)
        # timers of call_later_lazy armed in this instant, not yet in the heap (virtual
        # time): they enter it before the clock can move (`_settle`); one cancelled first
        # costs neither a push nor a pop, nor an entry in the owner index
        self._lazy: list[Timer] = []
        # for `passed`: the key of the last timer fired, and the last instant at which
        # the loop fired every timer due
        self._fired_when = -1
        self._fired_seq: Any = None
        self._drained_at = -1
        self.queue: deque[tuple[Any, bytes]] = deque()
        self._virtual_now = 0
        self._real_base = time.monotonic_ns()
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.events = 0  # packets delivered + timers fired, for determinism checks
        self.errors = 0  # exceptions caught inside the loop (each one is a bug)
        self.last_error: Exception | None = None
        # Called (under the lock) whenever work arrives from another thread, so a loop
        # that sleeps outside the condition variable (a selector) can be woken.
        self.waker: Callable[[], None] | None = None
        # per-vnet CPU accounting (vimage.cpu): on/off (kern.vnet_cpu_accounting, off by
        # default: it costs up to a few percent; vimaged turns it on), the vnet charged
        # for work of no vnet (the kernel's base vnet, set by Kernel), weighted service
        # (some vnet has a cpu.weight other than the default), load sampling
        self.accounting = False
        self.cpu_base: Any = None
        self.weighted = False
        self.cpu_dirty: set[Any] = set()
        self._next_sample = 0

    # -- time ---------------------------------------------------------------
    def now_ns(self) -> int:
        if self.virtual:
            return self._virtual_now
        return time.monotonic_ns() - self._real_base

    # -- timers ---------------------------------------------------------------
    def next_seq(self, owner: Any = None) -> Any:
        """The ordering key of the next timer of `owner`: a global count, or in keyed mode
        (owner's key, owner's count) with the owner's `serial` as its key."""
        self._seq += 1
        if not self.keyed:
            return self._seq
        if owner is None:
            return (-1, self._seq)
        count = self._owner_seq[owner] = self._owner_seq.get(owner, 0) + 1
        return (owner.serial, count)

    def call_later(self, delay_ns: int, callback: Callable[..., Any], *args: Any,
                   owner: Any = None) -> Timer:
        if self.keyed:
            seq = self.next_seq(owner)
        else:
            self._seq = seq = self._seq + 1
        when = self._virtual_now if self.virtual else self.now_ns()
        if delay_ns > 0:
            when += int(delay_ns)
        timer = Timer(when, seq, callback, args, owner)
        if owner is not None:
            self._own(owner, timer)
        if self.virtual:  # _push, inlined: TCP arms a timer or two per segment
            heapq.heappush(self._heap, (when, seq, timer))
        else:
            with self.cond:
                heapq.heappush(self._heap, (when, seq, timer))
                self.notify()
        return timer

    def call_later_lazy(self, delay_ns: int, callback: Callable[..., Any], *args: Any,
                        owner: Any = None) -> Timer:
        """`call_later` for a timer that is likely cancelled within the instant it was
        armed (TCP's retransmission timer of a request its answer acknowledges at once):
        in virtual time it enters the heap only when the clock is about to move, with the
        ordering key it was given now, so nothing can tell it from one pushed at once; if
        it is cancelled before, it never enters the heap. A delay of 0 and the real clock
        arm at once."""
        if not self.virtual or delay_ns <= 0:
            return self.call_later(delay_ns, callback, *args, owner=owner)
        if self.keyed:
            seq = self.next_seq(owner)
        else:
            self._seq = seq = self._seq + 1
        timer = Timer(self._virtual_now + int(delay_ns), seq, callback, args, owner)
        timer.lazy = True
        self._lazy.append(timer)
        return timer

    def withdraw(self, timer: Timer) -> bool:
        """Cancel `timer` if it is a lazy one not in the heap yet (True); False if it is
        in the heap, fired or cancelled (it is left alone). Its `when` and `seq` stay: a
        caller that may need it after all re-arms it with them (`call_at`), if
        `passed` says it would not have fired yet."""
        if timer.lazy and not timer.cancelled:
            timer.cancel()
            return True
        return False

    def passed(self, when: int, seq: Any) -> bool:
        """Whether a timer of key (`when`, `seq`), had it been in the heap, would have
        been popped by now: it is due before now, or now and the loop has fired a later
        key at this instant or every timer due now (virtual time)."""
        now = self._virtual_now if self.virtual else self.now_ns()
        if when != now:
            return when < now
        if self._drained_at == now:
            return True
        return self._fired_when == now and self._fired_seq > seq

    def _settle(self) -> None:
        """Push the lazy timers still armed (see call_later_lazy) into the heap."""
        lazy = self._lazy
        heap = self._heap
        for timer in lazy:
            timer.lazy = False
            if not timer.cancelled:
                owner = timer.owner
                if owner is not None:
                    self._own(owner, timer)
                heapq.heappush(heap, (timer.when, timer.seq, timer))
        lazy.clear()

    def call_at(self, when_ns: int, callback: Callable[..., Any], *args: Any,
                owner: Any = None, seq: Any = None) -> Timer:
        """A timer due at `when_ns` (not before now); `seq` its ordering key among timers
        due then (default: the next of `owner`'s, see next_seq), given when it was
        allocated elsewhere (a frame from another MPI rank, vimage.emu.mpi)."""
        if seq is None:
            seq = self.next_seq(owner)
        return self._push(Timer(max(when_ns, self.now_ns()), seq, callback, args, owner))

    def _push(self, timer: Timer) -> Timer:
        owner = timer.owner
        if owner is not None:
            self._own(owner, timer)
        if self.virtual:
            heapq.heappush(self._heap, (timer.when, timer.seq, timer))
        else:
            with self.cond:
                heapq.heappush(self._heap, (timer.when, timer.seq, timer))
                self.notify()
        return timer

    def next_deadline(self) -> int | None:
        if self._lazy:
            self._settle()
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def runnable(self) -> bool:
        """True if run_ready() has something to do now: a queued frame or a timer due (or a
        cancelled one at the head of the heap, which it would drop)."""
        heap = self._heap
        return bool(self.queue) or (bool(heap) and heap[0][0] <= self.now_ns())

    def next_event(self, deadline_ns: int | None = None) -> int | None:
        """When the loop next has something to do: the next live timer, or `deadline_ns`
        if that comes first (None: no timer armed and no deadline)."""
        nxt = self.next_deadline()
        if deadline_ns is None:
            return nxt
        return deadline_ns if nxt is None else min(nxt, deadline_ns)

    def jump_to(self, when_ns: int) -> None:
        """Move virtual time on to `when_ns` (never back): what a loop does when nothing is
        runnable before then. The only way the virtual clock moves; used by `advance` and by
        loops that wait for more than the kernel (vimage.aio.selector)."""
        if not self.virtual:
            raise RuntimeError("the real clock cannot be moved")
        if self._lazy:
            self._settle()
        if when_ns > self._virtual_now:
            self._virtual_now = when_ns

    def pending_timers(self, owner: Any = None) -> int:
        """Live timers (all, or those of one owner)."""
        if self._lazy:
            self._settle()
        return sum(1 for _w, _s, t in self._heap
                   if not t.cancelled and (owner is None or t.owner is owner))

    def _own(self, owner: Any, timer: Timer) -> None:
        """Index `timer` under its owner until it fires or is cancelled."""
        owned = self._owned.get(owner)
        if owned is None:
            owned = self._owned[owner] = set()
        owned.add(timer)
        timer.owned = owned

    def purge_timers(self, owner: Any) -> None:
        """Cancel and forget every timer that belongs to `owner` (a vnet).

        Only the owner's own timers are touched (the index), so destroying n vnets is
        linear, not n scans and re-heapifications of the whole heap. Cancelled timers are
        left in the heap (the loop skips them) until they make up half of it: then one
        compaction, whose cost those cancellations paid for."""
        for timer in self._lazy:  # (not indexed yet)
            if timer.owner is owner:
                timer.cancel()
        owned = self._owned.pop(owner, ())
        self._owner_seq.pop(owner, None)
        for t in owned:
            t.owned = None  # (cancel would take it out of the set being walked)
            if not t.cancelled and t.owner is owner:
                t.cancel()
                self._purged += 1
        heap = self._heap
        if self._purged and 2 * self._purged >= len(heap):
            live = [e for e in heap if not e[2].cancelled]
            heapq.heapify(live)
            heap[:] = live  # in place: a running loop holds a reference to the heap
            self._purged = 0

    def purge_queue(self, receivers: set[Any]) -> None:
        """Drop every queued frame addressed to one of `receivers`."""
        if receivers and self.queue:
            kept = [e for e in self.queue if e[0] not in receivers]
            self.queue.clear()  # in place: the loop and interfaces hold references to it
            self.queue.extend(kept)

    def queued_for(self, receivers: set[Any]) -> int:
        return sum(1 for e in self.queue if e[0] in receivers)

    # -- the loop ---------------------------------------------------------------
    def run_ready(self) -> bool:
        """Deliver queued frames and fire due timers until none is runnable.

        Returns True if anything ran. With `accounting` on, the CPU time of each frame is
        charged to the vnet of its receiver and that of each timer to its owner (vimage.cpu);
        with `weighted` set (a vnet with a cpu.weight other than the default), queued
        frames of competing vnets are served in proportion to their weights."""
        queue = self.queue
        heap = self._heap
        if (self.accounting or self.weighted) and (
                queue or (heap and heap[0][0] <= self.now_ns())):
            return self._run_accounted(self.weighted)
        ran = False
        heappop = heapq.heappop
        while True:
            if queue:
                ran = True
                count = 0
                popleft = queue.popleft
                while queue:
                    receiver, frame = popleft()
                    count += 1
                    try:
                        receiver.input(frame)
                    except Exception as exc:  # a stack bug must not stop every other vnet
                        self.record_error(receiver, exc)
                self.events += count
            now = self.now_ns()
            fired = False
            while heap and (heap[0][0] <= now or heap[0][2].cancelled):
                entry = heappop(heap)
                timer = entry[2]
                if timer.cancelled:
                    continue
                timer.cancelled = True
                owned = timer.owned
                if owned is not None:
                    timer.owned = None
                    owned.discard(timer)
                self._fired_when = entry[0]
                self._fired_seq = entry[1]
                self.events += 1
                try:
                    timer.callback(*timer.args)
                except Exception as exc:
                    self.record_error(timer.callback, exc)
                fired = ran = True
                if queue:
                    break
            else:
                self._drained_at = now
            if not fired and not queue:
                return ran

    def _run_accounted(self, weighted: bool) -> bool:
        """run_ready with CPU accounting: the clock is read once per run of consecutive
        work of one vnet (one frame's receiver, one timer's owner), not once per unit."""
        meter = _Meter()
        try:
            return self._run_metered(meter, weighted)
        finally:  # settled even if something got out (a KeyboardInterrupt)
            charged = meter.close()
            if charged:
                self._sample(charged, self.now_ns())

    def _run_metered(self, meter: _Meter, weighted: bool) -> bool:
        ran = False
        queue = self.queue
        heap = self._heap
        base = self.cpu_base
        heappop = heapq.heappop
        while True:
            if queue:
                ran = True
                if weighted:
                    self._drain_weighted(meter)
                else:
                    self._drain(meter)
            now = self.now_ns()
            fired = False
            while heap and (heap[0][0] <= now or heap[0][2].cancelled):
                entry = heappop(heap)
                timer = entry[2]
                if timer.cancelled:
                    continue
                timer.cancelled = True
                owned = timer.owned
                if owned is not None:
                    timer.owned = None
                    owned.discard(timer)
                self._fired_when = entry[0]
                self._fired_seq = entry[1]
                self.events += 1
                owner = timer.owner
                meter.switch(base if owner is None else owner)
                meter.count += 1
                try:
                    timer.callback(*timer.args)
                except Exception as exc:
                    self.record_error(timer.callback, exc)
                fired = ran = True
                if queue:
                    break
            else:
                self._drained_at = now
            if not fired and not queue:
                return ran

    def _drain(self, meter: _Meter) -> None:
        """Deliver every queued frame, charging each run of frames of one vnet (the
        meter's switch, inlined: this is the forwarding path)."""
        queue = self.queue
        popleft = queue.popleft
        base = self.cpu_base
        clock = time.perf_counter_ns
        spent = meter.spent
        cur, t0, n = meter.vnet, meter.t0, meter.count
        count = -n  # frames delivered: the sum of the runs' counts
        while queue:
            receiver, frame = popleft()
            try:
                vnet = receiver.vnet
            except AttributeError:  # a bare receiver (a test's, a benchmark's)
                vnet = base
            if vnet is not cur:
                t1 = clock()
                try:
                    cpu = cur.cpu
                    if not cpu.wall:
                        spent.append(cpu)
                    cpu.wall += t1 - t0
                    cpu.units += n
                except AttributeError:  # nobody (None), or a receiver's odd `vnet`
                    pass
                count += n
                cur = vnet
                t0 = t1
                n = 0
            n += 1
            try:
                receiver.input(frame)
            except Exception as exc:  # a stack bug must not stop every other vnet
                self.record_error(receiver, exc)
        meter.vnet, meter.t0, meter.count = cur, t0, n
        self.events += count + n

    def _drain_weighted(self, meter: _Meter) -> None:
        """Deficit round robin (Shreedhar and Varghese, 1995) over the queued frames, per
        receiving vnet: each turn a vnet earns its cpu.weight in credit and a frame costs
        QUANTUM (the default weight), so with several vnets backlogged each is served in
        proportion to its weight, in arrival order within the vnet. Frames queued while
        this runs wait for the next round; all are delivered before time moves on."""
        queue = self.queue
        base = self.cpu_base
        while queue:
            flows: dict[Any, deque[tuple[Any, bytes]]] = {}
            for entry in queue:
                vnet = getattr(entry[0], "vnet", base)
                flow = flows.get(vnet)
                if flow is None:
                    flow = flows[vnet] = deque()
                flow.append(entry)
            queue.clear()
            active = deque((vnet, flow, 0) for vnet, flow in flows.items())
            while active:
                vnet, flow, credit = active.popleft()
                if not getattr(vnet, "alive", True):
                    continue  # destroyed meanwhile: its frames go with it (purge_queue)
                cpu = getattr(vnet, "cpu", None)
                credit += QUANTUM if cpu is None else cpu.weight
                if credit >= QUANTUM:
                    meter.switch(vnet)
                while flow and credit >= QUANTUM:
                    credit -= QUANTUM
                    receiver, frame = flow.popleft()
                    meter.count += 1
                    self.events += 1
                    try:
                        receiver.input(frame)
                    except Exception as exc:
                        self.record_error(receiver, exc)
                if flow:
                    active.append((vnet, flow, credit))

    def _sample(self, charged: list[Any], now: int) -> None:
        """Every SAMPLE_NS of kernel time, fold the load averages of the vnets charged
        since the last sample (their VnetCpu records; vimage.cpu); idle ones are not
        touched."""
        self.cpu_dirty.update(charged)
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_NS
            for cpu in self.cpu_dirty:
                cpu.fold(now)
            self.cpu_dirty.clear()

    def record_error(self, where: Any, exc: Exception) -> None:
        """Count and log an exception raised inside the loop; the frame or timer is lost."""
        self.errors += 1
        self.last_error = exc
        logging.getLogger("vimage.sched").error("exception in %r: %r", where, exc,
                                                exc_info=exc)

    def advance(self, deadline_ns: int, until: Callable[[], bool] | None = None) -> bool:
        """Run the loop up to `deadline_ns`, or until `until()` turns true.

        Returns the value of `until()` (True if no condition was given).
        In virtual time the clock jumps between timers; in real time the calling
        thread sleeps on the condition variable until the next event.
        """
        with self.cond:
            heap = self._heap
            while True:
                self.run_ready()
                if until is not None and until():
                    return True
                now = self.now_ns()
                if now >= deadline_ns:  # done unless a timer is due now; lazy ones are
                    # not (they are due later), so they can stay out of the heap
                    while heap and heap[0][2].cancelled:
                        heapq.heappop(heap)
                    if not heap or heap[0][0] > now:
                        return until is None
                nxt = self.next_deadline()
                target = deadline_ns if nxt is None else min(nxt, deadline_ns)
                if self.virtual:
                    if target == deadline_ns and nxt is None and until is not None \
                            and deadline_ns >= FOREVER:
                        raise RuntimeError(
                            "would block forever: nothing can happen in virtual time")
                    self.jump_to(target)
                else:
                    wait = (target - now) / NS_PER_S
                    if wait > 0:
                        self.cond.wait(min(wait, 3600.0))

    def wake(self) -> None:
        if not self.virtual:
            with self.cond:
                self.notify()

    def wake_waiters(self) -> None:
        """Wake the threads blocked on the condition, if any (the lock must be held): a
        socket's state changed. Without waiters it costs one test, where notify_all, two
        Python calls, ran for every segment delivered to a socket."""
        if self.cond._waiters:  # type: ignore[attr-defined]
            self.cond.notify_all()

    def notify(self) -> None:
        """Wake every thread and selector waiting for the loop (the lock must be held)."""
        self.cond.notify_all()
        if self.waker is not None:
            self.waker()


class _Meter:
    """What one run of the loop spent on each vnet. Between switches the wall clock is
    read (time.perf_counter_ns: a thread CPU clock read is a system call, 4 to 5 times
    dearer, which matters at one read per forwarded frame) and added to the vnet's
    `cpu.wall`; at the end of the run each is charged its wall time scaled by the loop
    thread's CPU/wall ratio over the run (time.thread_time_ns, read at its start and
    end), so time the thread spent preempted or waiting for the GIL is not charged.
    `switch` starts charging another vnet (None: nobody)."""

    __slots__ = ("count", "cpu0", "spent", "t0", "vnet", "wall0")

    def __init__(self) -> None:
        self.vnet: Any = None
        self.count = 0  # units of `vnet` since the switch to it
        self.spent: list[Any] = []  # the VnetCpu records charged in this run
        self.cpu0 = time.thread_time_ns()
        self.t0 = self.wall0 = time.perf_counter_ns()

    def switch(self, vnet: Any) -> None:
        if vnet is self.vnet:
            return
        t1 = time.perf_counter_ns()
        cpu = getattr(self.vnet, "cpu", None)  # a timer's owner may be no vnet
        if cpu is not None:
            if not cpu.wall:
                self.spent.append(cpu)
            cpu.wall += t1 - self.t0
            cpu.units += self.count
        self.vnet = vnet
        self.t0 = t1
        self.count = 0

    def close(self) -> list[Any]:
        """Charge the run's time to the vnets; returns their VnetCpu records."""
        self.switch(None)
        spent = self.spent
        if not spent:
            return spent
        wall = time.perf_counter_ns() - self.wall0
        ratio = min(1.0, (time.thread_time_ns() - self.cpu0) / wall) if wall > 0 else 0.0
        for cpu in spent:
            cpu.loop_ns += int(cpu.wall * ratio)
            cpu.wall = 0
        return spent

QUANTUM = 100
"""What a frame costs in the weighted loop: the default cpu.weight (vimage.cpu)."""
SAMPLE_NS = 5 * NS_PER_S
"""How often the load averages of busy vnets are folded (vimage.cpu.SAMPLE_NS)."""

FOREVER = 1 << 62
