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
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

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


class Timer:
    """A one-shot kernel timer. `owner` is the vnet it belongs to (or None)."""

    __slots__ = ("__weakref__", "args", "callback", "cancelled", "owner", "seq", "when")

    def __init__(self, when: int, seq: int, callback: Callable[..., Any], args: tuple,
                 owner: Any) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.args = args
        self.owner = owner
        self.cancelled = False

    def __lt__(self, other: Timer) -> bool:
        # (when, seq) order without building two tuples: heapq calls this a lot
        when, other_when = self.when, other.when
        return when < other_when or (when == other_when and self.seq < other.seq)

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = _noop
        self.args = ()
        self.owner = None


def _noop(*_args: Any) -> None:
    return None


class Scheduler:
    """Timers (a heap) and the packet queue (a deque of (receiver, frame)).

    `receiver` is any object with an `input(frame)` method, normally an
    interface. The loop pops entries and calls `receiver.input(frame)`, so one
    vnet's output never recurses into another's input.
    """

    def __init__(self, virtual: bool) -> None:
        self.virtual = virtual
        self._heap: list[Timer] = []
        self._seq = 0
        # timers by owner, so destroying a vnet cancels its own timers without a scan of
        # the heap; weak references, so a fired timer does not keep what it called alive
        # (the heap holds the pending ones); dead ones are pruned when a list doubles
        self._owned: dict[Any, list[weakref.ref[Timer]]] = {}
        self._owned_cap: dict[Any, int] = {}
        self._purged = 0  # timers cancelled by purge_timers still in the heap (at most)
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

    # -- time ---------------------------------------------------------------
    def now_ns(self) -> int:
        if self.virtual:
            return self._virtual_now
        return time.monotonic_ns() - self._real_base

    # -- timers ---------------------------------------------------------------
    def call_later(self, delay_ns: int, callback: Callable[..., Any], *args: Any,
                   owner: Any = None) -> Timer:
        self._seq += 1
        timer = Timer(self.now_ns() + max(0, int(delay_ns)), self._seq, callback, args, owner)
        if owner is not None:
            self._own(owner, timer)
        if self.virtual:
            heapq.heappush(self._heap, timer)
        else:
            with self.cond:
                heapq.heappush(self._heap, timer)
                self.notify()
        return timer

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and heap[0].cancelled:
            heapq.heappop(heap)
        return heap[0].when if heap else None

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
        if when_ns > self._virtual_now:
            self._virtual_now = when_ns

    def pending_timers(self, owner: Any = None) -> int:
        """Live timers (all, or those of one owner)."""
        return sum(1 for t in self._heap if not t.cancelled and (owner is None or t.owner is owner))

    def _own(self, owner: Any, timer: Timer) -> None:
        """Index `timer` under its owner. A list is pruned of dead timers each time it
        reaches twice its live size (at least 32): amortised O(1) per timer."""
        owned = self._owned.get(owner)
        if owned is None:
            owned = self._owned[owner] = []
        owned.append(weakref.ref(timer))
        if len(owned) >= self._owned_cap.get(owner, 32):
            owned[:] = [r for r in owned if (t := r()) is not None and not t.cancelled]
            self._owned_cap[owner] = max(32, 2 * len(owned))

    def purge_timers(self, owner: Any) -> None:
        """Cancel and forget every timer that belongs to `owner` (a vnet).

        Only the owner's own timers are touched (the index), so destroying n vnets is
        linear, not n scans and re-heapifications of the whole heap. Cancelled timers are
        left in the heap (the loop skips them) until they make up half of it: then one
        compaction, whose cost those cancellations paid for."""
        owned = self._owned.pop(owner, ())
        self._owned_cap.pop(owner, None)
        for ref in owned:
            t = ref()
            if t is not None and not t.cancelled and t.owner is owner:
                t.cancel()
                self._purged += 1
        heap = self._heap
        if self._purged and 2 * self._purged >= len(heap):
            live = [t for t in heap if not t.cancelled]
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

        Returns True if anything ran."""
        ran = False
        queue = self.queue
        heap = self._heap
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
            while heap and (heap[0].cancelled or heap[0].when <= now):
                timer = heapq.heappop(heap)
                if timer.cancelled:
                    continue
                timer.cancelled = True
                self.events += 1
                try:
                    timer.callback(*timer.args)
                except Exception as exc:
                    self.record_error(timer.callback, exc)
                fired = ran = True
                if queue:
                    break
            if not fired and not queue:
                return ran

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
            while True:
                self.run_ready()
                if until is not None and until():
                    return True
                nxt = self.next_deadline()
                now = self.now_ns()
                if now >= deadline_ns and (nxt is None or nxt > now):
                    return until is None
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

    def notify(self) -> None:
        """Wake every thread and selector waiting for the loop (the lock must be held)."""
        self.cond.notify_all()
        if self.waker is not None:
            self.waker()


FOREVER = 1 << 62
