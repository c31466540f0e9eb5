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
dn_sched_rr.c; QFQ (dn_sched_qfq.c) is not provided.
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


DISCIPLINES: tuple[tuple[str, type[Fifo] | type[Wf2q] | type[Drr]], ...] = (
    ("fifo", Fifo), ("wf2q+", Wf2q), ("wf2q", Wf2q), ("rr", Drr), ("drr", Drr),
)
"""`sched N config type NAME`: the names accepted (case-insensitive)."""


def discipline(name: str) -> type[Fifo] | type[Wf2q] | type[Drr]:
    for key, cls in DISCIPLINES:
        if key == name.lower():
            return cls
    raise ValueError(f"invalid scheduler type {name}" if name.lower() != "qfq" else
                     "scheduler type qfq is not supported (use wf2q+, rr or fifo)")
