"""dummynet's scheduling disciplines: which queue of a scheduler instance sends next.

A scheduler instance (`SchedInstance`, vimage.netpfil.dummynet.core) owns the link it
serialises packets onto; its discipline only picks the queue whose head packet goes
next. Each discipline is a small object with
    activate(q)   queue `q` just got its first packet (it was empty)
    dequeue()     the queue to send from, its head packet removed by the caller; None
                  when every queue is empty
    forget(q)     `q` is being freed (its packets were dropped)
    reweight(q, w)  `queue N config weight W` changed the weight of `q`
FreeBSD's equivalents are the `dn_alg` tables of dn_sched_fifo.c, dn_sched_wf2q.c and
dn_sched_rr.c and dn_sched_qfq.c.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vimage.netpfil.dummynet.core import Queue

RR_QUANTUM = 1514
"""Bytes a DRR queue of weight 1 may send per round (dn_sched_rr.c's default quantum,
an Ethernet frame)."""


class Fifo:
    """One queue, first come first served (dn_sched_fifo.c): a pipe's own scheduler."""

    name = "FIFO"
    multiqueue = False
    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: Queue | None = None

    def activate(self, q: Queue) -> None:
        self.queue = q

    def dequeue(self) -> Queue | None:
        q = self.queue
        return q if q is not None and q.pkts else None

    def forget(self, q: Queue) -> None:
        if self.queue is q:
            self.queue = None

    def reweight(self, q: Queue, weight: int) -> None:
        q.weight = weight


class Wf2q:
    """Worst-case Fair Weighted Fair Queueing (WF2Q+, Bennett & Zhang 1997), as
    dn_sched_wf2q.c: every backlogged queue has a virtual start S and finish F (F = S +
    head length / weight); the scheduler's virtual time V advances by the length sent
    over the sum of the backlogged weights; among the queues eligible (S <= V) the one
    with the smallest F sends. A queue that returns after idling restarts at max(F, V),
    so it cannot save up credit while idle."""

    name = "WF2Q+"
    multiqueue = True
    __slots__ = ("active", "seq", "vtime", "wsum")

    def __init__(self) -> None:
        self.vtime = 0.0
        self.wsum = 0
        self.active: list[Queue] = []
        self.seq = 0

    def activate(self, q: Queue) -> None:
        q.start = max(q.finish, self.vtime)
        q.finish = q.start + q.head_len() / q.weight
        self.seq += 1
        q.order = self.seq
        self.wsum += q.weight
        self.active.append(q)

    def dequeue(self) -> Queue | None:
        active = self.active
        if not active:
            return None
        vtime = self.vtime
        best = None
        for q in active:
            if q.start <= vtime and (best is None or (q.finish, q.order) < (best.finish,
                                                                              best.order)):
                best = q
        if best is None:  # nobody eligible: V jumps to the smallest start (wf2q_dequeue)
            vtime = min(q.start for q in active)
            best = min((q for q in active if q.start <= vtime),
                       key=lambda q: (q.finish, q.order))
        self.vtime = vtime + best.head_len() / self.wsum
        if len(best.pkts) > 1:  # the caller removes the head: the next one is [1]
            best.start = best.finish
            best.finish = best.start + len(best.pkts[1][0]) / best.weight
        else:
            active.remove(best)
            self.wsum -= best.weight
        return best

    def forget(self, q: Queue) -> None:
        if q in self.active:
            self.active.remove(q)
            self.wsum -= q.weight

    def reweight(self, q: Queue, weight: int) -> None:
        """A new weight counts from the next packet; the sum of the backlogged weights
        follows at once."""
        if q in self.active:
            self.wsum += weight - q.weight
        q.weight = weight


class Drr:
    """Deficit round robin (Shreedhar & Varghese 1995), as dn_sched_rr.c: the queue at
    the head of the ring sends while its head packet fits its credit; otherwise it
    earns `weight * RR_QUANTUM` bytes and goes to the back of the ring."""

    name = "RR"
    multiqueue = True
    __slots__ = ("ring",)

    def __init__(self) -> None:
        self.ring: deque[Queue] = deque()

    def activate(self, q: Queue) -> None:
        q.credit = q.weight * RR_QUANTUM  # rr_enqueue: a new queue starts with a quantum
        self.ring.append(q)

    def dequeue(self) -> Queue | None:
        ring = self.ring
        while ring:
            q = ring[0]
            size = q.head_len()
            if size <= q.credit:
                q.credit -= size
                if len(q.pkts) == 1:
                    ring.popleft()
                return q
            q.credit += q.weight * RR_QUANTUM
            ring.rotate(-1)
        return None

    def forget(self, q: Queue) -> None:
        if q in self.ring:
            self.ring.remove(q)

    def reweight(self, q: Queue, weight: int) -> None:
        q.weight = weight


# QFQ's fixed-point layout (Checconi, Rizzo, Valente, "QFQ: Efficient Packet Scheduling
# With Tight Guarantees", 2013; dn_sched_qfq.c)
QFQ_FRAC_BITS = 30
QFQ_ONE = 1 << QFQ_FRAC_BITS
QFQ_MAX_INDEX = 19
QFQ_MTU_SHIFT = 11
QFQ_MIN_SLOT_SHIFT = QFQ_FRAC_BITS + QFQ_MTU_SHIFT - QFQ_MAX_INDEX
QFQ_IWSUM = QFQ_ONE // (2 << 16)  # V advances as if the weights summed to 2 * 65536
QFQ_LMAX = 1500  # a flowset's default maximum packet length (qfq_new_fsk)
ER, IR, EB, IB = 0, 1, 2, 3  # eligible/ineligible, ready/blocked group sets


def _lowest(bitmap: int) -> int:
    return (bitmap & -bitmap).bit_length() - 1


class _QfqGroup:
    """Queues whose lmax / weight round to one power of two (slot size 2^shift), kept in
    buckets by their start time rounded down to a slot."""

    __slots__ = ("finish", "index", "shift", "slots", "start")

    def __init__(self, index: int) -> None:
        self.index = index
        self.shift = QFQ_MIN_SLOT_SHIFT + index
        self.start = self.finish = 0
        self.slots: dict[int, deque[Queue]] = {}

    def round(self, ts: int) -> int:
        return ts >> self.shift << self.shift

    def front(self) -> int:
        return min(self.slots)

    def remove_front(self) -> None:
        key = self.front()
        bucket = self.slots[key]
        bucket.popleft()
        if not bucket:
            del self.slots[key]

    def insert(self, q: Queue, rounded: int) -> None:
        self.slots.setdefault(rounded, deque()).append(q)


class Qfq:
    """Quick Fair Queueing: WF2Q+'s service order approximated in O(1). Queues are
    grouped by lmax / weight; a group's timestamps are its queues' rounded to its slot;
    four bitmaps (eligible or not, ready or blocked by a group of larger slot) pick
    the group to serve, its front bucket the queue. Bitmaps and buckets are Python ints
    and dicts, so there is no wraparound and no 32-slot limit."""

    name = "QFQ"
    multiqueue = True
    __slots__ = ("bitmaps", "groups", "vtime")

    def __init__(self) -> None:
        self.vtime = 0
        self.bitmaps = [0, 0, 0, 0]
        self.groups = [_QfqGroup(i) for i in range(QFQ_MAX_INDEX + 1)]

    @staticmethod
    def index_of(inv_w: int, lmax: int) -> int:
        """The group of a queue: log2 of its slot size lmax / weight, scaled."""
        size = lmax * inv_w
        index = (size >> QFQ_MIN_SLOT_SHIFT).bit_length()
        if index and size == 1 << (index + QFQ_MIN_SLOT_SHIFT - 1):
            index -= 1  # an exact power of two fits the group below
        return min(max(index, 0), QFQ_MAX_INDEX)

    def _ffs(self, bitmap: int) -> _QfqGroup:
        return self.groups[_lowest(bitmap)]

    def _state(self, grp: _QfqGroup) -> int:
        state = IR if grp.start > self.vtime else ER
        higher = self.bitmaps[ER] >> grp.index << grp.index
        if higher and grp.finish > self._ffs(higher).finish:
            state |= EB
        return state

    def _move(self, mask: int, src: int, dst: int) -> None:
        bm = self.bitmaps
        bm[dst] |= bm[src] & mask
        bm[src] &= ~mask

    def _set_state(self, grp: _QfqGroup) -> None:
        bit = 1 << grp.index
        for i in range(4):
            self.bitmaps[i] &= ~bit
        self.bitmaps[self._state(grp)] |= bit

    def activate(self, q: Queue) -> None:
        q.inv_w = QFQ_ONE // q.weight
        lmax = min(max(q.fs.lmax or QFQ_LMAX, 1), 2000)
        grp = self.groups[self.index_of(q.inv_w, lmax)]
        q.order = grp.index
        vtime = self.vtime
        # the start: the old finish if still sensible, else V, but not before the finish
        # of a ready group of larger slot that would otherwise be overtaken
        rounded_f = grp.round(int(q.finish))
        if q.finish <= vtime or rounded_f > grp.round(vtime) + (1 << grp.shift):
            higher = self.bitmaps[ER] >> grp.index << grp.index
            nxt = self._ffs(higher) if higher else None
            q.start = nxt.finish if nxt is not None and rounded_f > nxt.finish else vtime
        else:
            q.start = q.finish
        q.finish = q.start + q.head_len() * q.inv_w
        rounded = grp.round(int(q.start))
        if grp.slots:
            if rounded >= grp.start:
                grp.insert(q, rounded)
                return
            self.bitmaps[IR] &= ~(1 << grp.index)  # the group's start moves back
            self.bitmaps[IB] &= ~(1 << grp.index)
        elif not self.bitmaps[ER] and rounded > vtime:
            self.vtime = rounded
        grp.start = rounded
        grp.finish = rounded + (2 << grp.shift)
        self.bitmaps[self._state(grp)] |= 1 << grp.index
        grp.insert(q, rounded)

    def dequeue(self) -> Queue | None:
        if not self.bitmaps[ER]:
            return None
        grp = self._ffs(self.bitmaps[ER])
        q = grp.slots[grp.front()][0]
        old_v = self.vtime
        self.vtime += q.head_len() * QFQ_IWSUM
        q.start = q.finish
        if len(q.pkts) > 1:  # the caller removes the head: the next one is [1]
            q.finish = q.start + len(q.pkts[1][0]) * q.inv_w
            rounded = grp.round(int(q.start))
            if rounded == grp.start:
                self._update_eligible(old_v)
                return q
            grp.remove_front()
            grp.insert(q, rounded)
        else:
            grp.remove_front()
        old_f = grp.finish
        if not grp.slots:
            self.bitmaps[ER] &= ~(1 << grp.index)
        else:
            rounded = grp.front()
            if rounded == grp.start:
                self._update_eligible(old_v)
                return q
            grp.start = rounded
            grp.finish = rounded + (2 << grp.shift)
            self.bitmaps[ER] &= ~(1 << grp.index)
            self.bitmaps[self._state(grp)] |= 1 << grp.index
        self._unblock(grp.index, old_f)
        self._update_eligible(old_v)
        return q

    def _unblock(self, index: int, old_finish: int) -> None:
        """Groups of smaller slot blocked by this one are ready again, unless another
        ready group of larger slot still blocks them."""
        higher = self.bitmaps[ER] >> (index + 1) << (index + 1)
        if higher and self._ffs(higher).finish <= old_finish:
            return
        mask = (1 << index) - 1
        self._move(mask, EB, ER)
        self._move(mask, IB, IR)

    def _update_eligible(self, old_v: int) -> None:
        ineligible = self.bitmaps[IR] | self.bitmaps[IB]
        if not ineligible:
            return
        if not self.bitmaps[ER]:
            grp = self._ffs(ineligible)
            if grp.start > self.vtime:
                self.vtime = grp.start
        crossed = (self.vtime >> QFQ_MIN_SLOT_SHIFT) ^ (old_v >> QFQ_MIN_SLOT_SHIFT)
        if crossed:  # V entered a new slot: groups up to that slot size may be eligible
            mask = (1 << crossed.bit_length()) - 1
            self._move(mask, IR, ER)
            self._move(mask, IB, EB)

    def forget(self, q: Queue) -> None:
        """Take `q` out wherever it is, then recompute every group's set from scratch
        (rare: a queue freed while backlogged)."""
        for grp in self.groups:
            for key, bucket in list(grp.slots.items()):
                if q in bucket:
                    bucket.remove(q)
                    if not bucket:
                        del grp.slots[key]
        self.bitmaps = [0, 0, 0, 0]
        for grp in reversed(self.groups):  # larger slots first: _state reads their ER bits
            if grp.slots:
                grp.start = grp.front()
                grp.finish = grp.start + (2 << grp.shift)
                self._set_state(grp)
        self._update_eligible(self.vtime)

    def reweight(self, q: Queue, weight: int) -> None:
        q.weight = weight  # takes effect when the queue next becomes busy


Discipline = type[Fifo] | type[Wf2q] | type[Drr] | type[Qfq]
DISCIPLINES: tuple[tuple[str, Discipline], ...] = (
    ("fifo", Fifo), ("wf2q+", Wf2q), ("wf2q", Wf2q), ("rr", Drr), ("drr", Drr), ("qfq", Qfq),
)
"""`sched N config type NAME`: the names accepted (case-insensitive)."""


def discipline(name: str) -> Discipline:
    for key, cls in DISCIPLINES:
        if key == name.lower():
            return cls
    raise ValueError(f"invalid scheduler type {name}")
