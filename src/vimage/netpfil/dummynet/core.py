"""dummynet's per-vnet state and packet path (FreeBSD sys/netpfil/ipfw/ip_dn_io.c).

The objects are FreeBSD's:
  Link       `pipe N`'s bandwidth and delay (struct dn_link)
  Sched      a scheduler N: its discipline, mask and instances (struct dn_schk); a pipe N
             has two, sched N (WF2Q+ unless `sched N config type`), fed by `queue`s, and
             sched N+65536 (FIFO), fed by packets sent straight to `pipe N`
  FlowSet    a flowset: `queue N`, or a pipe's own one N+131072 (struct dn_fsk): queue
             size, loss, RED, weight, the mask that splits it into queues
  SchedInstance  one instance of a scheduler (one per flow of its mask; struct dn_sch_inst):
             its queues, the packet on the link and the delay line
  Queue      one queue of a flowset in one instance (struct dn_queue), with its counters

Timing is exact (integer nanoseconds): a packet is serialised at the link's bandwidth
(its length in bits / bw, after the packets queued before it), then waits `delay`, then
dummynet calls its `resume`. FreeBSD runs dummynet from a 1-tick timer and lets a
packet leave when the link has credit for it; here each busy scheduler instance arms
one kernel timer for its next event (a transmission ending or the head of its delay
line leaving), so virtual time needs no tick and idle pipes cost nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.netpfil.dummynet.schedulers import Fifo
from vimage.sched import NS_PER_S
from vimage.stats import counters

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.sched import Timer
    from vimage.vnet import Vnet

DN_MAX_ID = 65536
"""Number space of pipes, queues and schedulers; a pipe N's own FIFO scheduler is N +
DN_MAX_ID, its own flowset N + 2 * DN_MAX_ID (ip_dummynet.h)."""
DEFAULT_QSIZE = 50
PLR_ONE = 0x7FFFFFFF  # FreeBSD keeps plr as a fraction of 2^31 - 1

NO_TABLE: Mapping[int, Any] = MappingProxyType({})
"""What `links`, `schedulers` and `flowsets` are before a vnet's first configuration."""

Resume = Callable[[bytes], None]
FlowKey = tuple[int, ...]
"""proto, src, dst, sport, dport: struct ipfw_flow_id's fields; an IPv6 flow adds src6,
dst6 and its flow label (and has zeros for src and dst). A masked IPv6 flow keeps the
three only while the mask has IPv6 bits, so an unmasked scheduler has one instance."""

Counts = counters("Counts", ("tot_pkts", "tot_bytes", "length", "len_bytes", "drops"))
"""struct dn_flow's counters: totals seen, what is queued now, drops."""


class Mask:
    """A flow mask (struct ipfw_flow_id used as a mask): the fields that tell flows apart."""

    __slots__ = ("dport", "dst", "dst6", "flow", "proto", "sport", "src", "src6")

    def __init__(self, proto: int = 0, src: int = 0, dst: int = 0, sport: int = 0,
                 dport: int = 0, src6: int = 0, dst6: int = 0, flow: int = 0) -> None:
        self.proto, self.src, self.dst, self.sport, self.dport = proto, src, dst, sport, dport
        self.src6, self.dst6, self.flow = src6, dst6, flow

    def __bool__(self) -> bool:
        return any(self.key())

    @property
    def ip6(self) -> bool:
        """Masks IPv6 fields (`pipe show` prints it the IPv6 way)."""
        return bool(self.src6 or self.dst6 or self.flow)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask) and self.key() == other.key()

    __hash__ = None  # type: ignore[assignment]

    def key(self) -> tuple[int, int, int, int, int, int, int, int]:
        return (self.proto, self.src, self.dst, self.sport, self.dport, self.src6, self.dst6,
                self.flow)

    def apply(self, fid: FlowKey) -> FlowKey:
        out = (fid[0] & self.proto, fid[1] & self.src, fid[2] & self.dst,
               fid[3] & self.sport, fid[4] & self.dport)
        if len(fid) > 5 and (self.src6 or self.dst6 or self.flow):
            return (*out, fid[5] & self.src6, fid[6] & self.dst6, fid[7] & self.flow)
        return out


def flow_id(pkt: bytes) -> FlowKey:
    """The flow of an IPv4 datagram: protocol, addresses and, for the first fragment of
    TCP, UDP or SCTP, ports (ipfw_chk's f_id). Malformed headers give zeros."""
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return flow_id6(pkt)
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return 0, 0, 0, 0, 0
    proto = pkt[9]
    src = int.from_bytes(pkt[12:16], "big")
    dst = int.from_bytes(pkt[16:20], "big")
    hlen = (pkt[0] & 0x0F) << 2
    sport = dport = 0
    if proto in (6, 17, 132) and not ((pkt[6] << 8) | pkt[7]) & 0x1FFF and \
            len(pkt) >= hlen + 4:
        sport = (pkt[hlen] << 8) | pkt[hlen + 1]
        dport = (pkt[hlen + 2] << 8) | pkt[hlen + 3]
    return proto, src, dst, sport, dport


def flow_id6(pkt: bytes) -> FlowKey:
    """The flow of an IPv6 packet: upper-layer protocol (past the extension headers, as
    ipfw_chk walks them), addresses, ports and the flow label."""
    from vimage.netpfil.ipfw.packet import Args

    a = Args(pkt, False, None, None)
    flow = int.from_bytes(pkt[1:4], "big") & 0xFFFFF
    return a.proto, 0, 0, max(a.sport, 0), max(a.dport, 0), a.src, a.dst, flow


def bucket_of(fid: FlowKey, buckets: int) -> int:
    """The hash bucket of a (masked) flow id, as `pipe show` prints it (BKT)."""
    if buckets <= 1:
        return 0
    h = fid[1] ^ fid[2] ^ ((fid[4] << 16) | fid[3]) ^ fid[0]
    if len(fid) > 5:  # IPv6: fold the addresses and the flow label in
        for word in (fid[5], fid[6]):
            while word:
                h ^= word & 0xFFFFFFFF
                word >>= 32
        h ^= fid[7]
    h ^= h >> 16
    return h % buckets


class Link:
    """`pipe N`'s link: bandwidth in bit/s (0: unlimited), delay in ms, burst."""

    __slots__ = ("burst", "bw", "delay_ms", "nr")

    def __init__(self, nr: int) -> None:
        self.nr = nr
        self.bw = 0
        self.delay_ms = 0
        self.burst = 0


class Red:
    """RED / gentle RED parameters of a flowset (Floyd & Jacobson 1993; dn_enqueue's
    red_drops). Thresholds are in slots, or bytes for a queue sized in bytes."""

    __slots__ = ("gentle", "max_p", "max_th", "min_th", "w_q")

    def __init__(self, w_q: float, min_th: int, max_th: int, max_p: float,
                 gentle: bool) -> None:
        self.w_q, self.min_th, self.max_th, self.max_p, self.gentle = (
            w_q, min_th, max_th, max_p, gentle)


class FlowSet:
    """A flowset (`queue N`, or pipe N's own N + 2*DN_MAX_ID)."""

    __slots__ = ("buckets", "lmax", "mask", "noerror", "nr", "plr", "pri", "qbytes",
                 "qsize", "queues", "red", "sched_nr", "weight")

    def __init__(self, nr: int, sched_nr: int) -> None:
        self.nr = nr
        self.sched_nr = sched_nr
        self.qsize = DEFAULT_QSIZE
        self.qbytes = False
        self.plr = 0  # probability * PLR_ONE
        self.red: Red | None = None
        self.mask = Mask()
        self.buckets = 1
        self.weight = 1
        self.lmax = 0
        self.pri = 0
        self.noerror = False
        self.queues: dict[tuple[SchedInstance, FlowKey], Queue] = {}


class Queue:
    """One queue: packets (bytes, resume, arrival ns) of one flow of a flowset in one
    scheduler instance, with its counters and its discipline's bookkeeping."""

    __slots__ = (
        "avg",
        "count",
        "credit",
        "fid",
        "finish",
        "fs",
        "idle_since",
        "inv_w",
        "ni",
        "order",
        "pkts",
        "seq",
        "si",
        "start",
        "weight",
    )

    def __init__(self, fs: FlowSet, si: SchedInstance, fid: FlowKey, seq: int) -> None:
        self.fs = fs
        self.si = si
        self.fid = fid
        self.seq = seq
        self.ni = Counts()
        self.pkts: deque[tuple[bytes, Resume, int]] = deque()
        self.weight = max(1, fs.weight)
        self.start = self.finish = 0.0  # WF2Q+
        self.order = 0
        self.inv_w = 0  # QFQ
        self.credit = 0  # DRR
        self.avg = 0.0  # RED: average queue length, and packets since the last drop
        self.count = -1
        self.idle_since = 0

    def head_len(self) -> int:
        return len(self.pkts[0][0])


class Sched:
    """A scheduler (struct dn_schk): discipline, mask, link, instances."""

    __slots__ = ("buckets", "cls", "instances", "link", "mask", "nr")

    def __init__(self, nr: int, cls: type, link: Link) -> None:
        self.nr = nr
        self.cls = cls
        self.link = link
        self.mask = Mask()
        self.buckets = 0
        self.instances: dict[FlowKey, SchedInstance] = {}

    @property
    def flags(self) -> int:
        return 1 if self.mask else 0  # DN_HAVE_MASK


class SchedInstance:
    """One instance of a scheduler: the queues it serves, the packet on its link and its
    delay line, and the one timer it arms while busy."""

    __slots__ = ("alg", "busy_until", "credit", "dline", "fid", "last_release", "ni",
                 "sched", "seq", "timer", "tx", "tx_end")

    def __init__(self, sched: Sched, fid: FlowKey, seq: int) -> None:
        self.sched = sched
        self.fid = fid
        self.seq = seq
        self.alg: Any = sched.cls()
        self.ni = Counts()
        self.tx: tuple[bytes, Resume] | None = None
        self.tx_end = 0
        self.busy_until = -1  # never busy yet
        self.credit = 0  # burst credit, in bit-nanoseconds per second (bits * 1e9)
        self.dline: deque[tuple[int, bytes, Resume]] = deque()
        self.last_release = 0
        self.timer: Timer | None = None

    @property
    def busy(self) -> bool:
        return self.tx is not None or bool(self.dline) or self.ni.length > 0


STAT_NAMES = ("io_pkt", "io_pkt_fast", "io_pkt_drop")


class DummynetState:
    """Per-vnet dummynet (`vnet.dummynet`): links, schedulers, flowsets, counters."""

    __slots__ = ("expire", "flowsets", "hash_size", "io_pkt", "io_pkt_drop", "io_pkt_fast",
                 "links", "max_chain_len", "pipe_byte_limit", "pipe_slot_limit",
                 "queue_count", "red_avg_pkt_size", "schedulers", "seq", "si_count", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # the shared empty table until the first `config` (own_tables): most vnets never
        # configure dummynet, and three dicts are half of what this object costs them
        self.links: dict[int, Link] = NO_TABLE  # type: ignore[assignment]
        self.schedulers: dict[int, Sched] = NO_TABLE  # type: ignore[assignment]
        self.flowsets: dict[int, FlowSet] = NO_TABLE  # type: ignore[assignment]
        # tunables (sysctl net.inet.ip.dummynet.*, FreeBSD's defaults), then counters
        self.hash_size = 64
        self.pipe_slot_limit = 100
        self.pipe_byte_limit = 1024 * 1024
        self.expire = 1
        self.max_chain_len = 16
        self.red_avg_pkt_size = 512
        self.seq = self.io_pkt = self.io_pkt_fast = self.io_pkt_drop = 0
        self.queue_count = self.si_count = 0

    def own_tables(self) -> None:
        """Give this vnet tables of its own, before a configuration change."""
        if self.links is NO_TABLE:
            self.links, self.schedulers, self.flowsets = {}, {}, {}

    # -- the packet path -------------------------------------------------------------
    def enqueue(self, number: int, is_queue: bool, pkt: bytes, ifp: Ifnet | None,
                outgoing: bool, resume: Resume) -> None:
        """dummynet_io(): put `pkt` on `pipe number` (or `queue number`); `resume(pkt)` is
        called when it leaves. Drops are counted, never raised."""
        self.io_pkt += 1
        fs = self.flowsets.get(number if is_queue else number + 2 * DN_MAX_ID)
        sched = None if fs is None else self.schedulers.get(fs.sched_nr)
        if fs is None or sched is None or not 0 < number < DN_MAX_ID:
            self.io_pkt_drop += 1  # no such pipe/queue, or a queue with no scheduler
            return
        fid = flow_id(pkt)
        si = self._instance(sched, fid)
        q = None if si is None else self._queue(fs, si, fid)
        if si is None or q is None:
            self.io_pkt_drop += 1  # too many flows: the tables are full
            return
        now = self.vnet.kernel.sched.now_ns()
        if not self._admit(q.fs, q, si, len(pkt), now):
            return
        was_empty = not q.pkts
        q.pkts.append((pkt, resume, now))
        if was_empty:
            si.alg.activate(q)
        link = sched.link
        if si.tx is None and not si.dline and not link.bw and not link.delay_ms:
            self.io_pkt_fast += 1  # leaves at once (FreeBSD's io_fast path)
        self._run(si)

    def _admit(self, fs: FlowSet, q: Queue, si: SchedInstance, size: int, now: int) -> bool:
        """dn_enqueue()'s checks: count the packet, then loss, RED, queue limit."""
        qn, sn = q.ni, si.ni
        qn.tot_pkts += 1
        qn.tot_bytes += size
        sn.tot_pkts += 1
        sn.tot_bytes += size
        drop = bool(fs.plr) and self.vnet.draws.random() * PLR_ONE < fs.plr
        if not drop and fs.red is not None:
            drop = self._red_drops(fs, q, si, size, now)
        if not drop:
            drop = (qn.len_bytes > fs.qsize) if fs.qbytes else (qn.length >= fs.qsize)
        if drop:
            self.io_pkt_drop += 1
            qn.drops += 1
            sn.drops += 1
            return False
        qn.length += 1
        qn.len_bytes += size
        sn.length += 1
        sn.len_bytes += size
        return True

    def _red_drops(self, fs: FlowSet, q: Queue, si: SchedInstance, size: int,
                   now: int) -> bool:
        """RED's drop decision (red_drops in ip_dn_io.c), in floating point: the average
        queue decays over idle time as if packets of red_avg_pkt_size had been sent."""
        red = fs.red
        assert red is not None
        qlen = q.ni.len_bytes if fs.qbytes else q.ni.length
        if qlen:
            q.avg += red.w_q * (qlen - q.avg)
        else:
            bw = si.sched.link.bw
            idle_pkts = 0.0
            if bw:
                idle_pkts = (now - q.idle_since) * bw / (NS_PER_S * 8 * self.red_avg_pkt_size)
            q.avg *= (1.0 - red.w_q) ** min(idle_pkts, 1e6)
        avg = q.avg
        if avg < red.min_th:
            q.count = -1
            return False
        if avg >= red.max_th:
            if not red.gentle or avg >= 2 * red.max_th:
                q.count = 0
                return True
            p_b = red.max_p + (1.0 - red.max_p) * (avg - red.max_th) / red.max_th
        else:
            p_b = red.max_p * (avg - red.min_th) / (red.max_th - red.min_th)
        q.count += 1
        p_a = p_b if q.count * p_b >= 1 else p_b / (1.0 - q.count * p_b)
        if self.vnet.draws.random() < p_a:
            q.count = 0
            return True
        return False

    def _instance(self, sched: Sched, fid: FlowKey) -> SchedInstance | None:
        key = sched.mask.apply(fid)
        si = sched.instances.get(key)
        if si is None:
            limit = max(1, sched.buckets) * self.max_chain_len
            if sched.mask and len(sched.instances) >= limit:
                self._expire_instances(sched)
                if len(sched.instances) >= limit:
                    return None
            self.seq += 1
            si = sched.instances[key] = SchedInstance(sched, key, self.seq)
            self.si_count += 1
        return si

    def _queue(self, fs: FlowSet, si: SchedInstance, fid: FlowKey) -> Queue | None:
        if not si.sched.cls.multiqueue:  # FIFO: the instance's single queue
            q = si.alg.queue
            if q is None:  # sized by the scheduler's own flowset if it has one (a pipe's)
                self.seq += 1
                own = self.flowsets.get(si.sched.nr + DN_MAX_ID, fs)
                q = Queue(own, si, si.fid, self.seq)
                si.alg.queue = q
            return q
        key = (si, fs.mask.apply(fid))
        q = fs.queues.get(key)
        if q is None:
            limit = max(1, fs.buckets) * self.max_chain_len
            if fs.mask and len(fs.queues) >= limit:
                self._expire_queues(fs)
                if len(fs.queues) >= limit:
                    return None
            self.seq += 1
            q = fs.queues[key] = Queue(fs, si, key[1], self.seq)
            self.queue_count += 1
        return q

    def _expire_instances(self, sched: Sched) -> None:
        """Free idle instances of a masked scheduler (FreeBSD's expiry of idle dynamic
        pipes, net.inet.ip.dummynet.expire)."""
        if not self.expire:
            return
        for key, si in list(sched.instances.items()):
            if not si.busy:
                self._free_instance(si)
                del sched.instances[key]

    def _expire_queues(self, fs: FlowSet) -> None:
        if not self.expire:
            return
        for key, q in list(fs.queues.items()):
            if not q.pkts:
                q.si.alg.forget(q)
                del fs.queues[key]
                self.queue_count -= 1

    # -- the link ----------------------------------------------------------------------
    def _run(self, si: SchedInstance) -> None:
        """Move `si` on to now: finish the transmission, start the next, release what the
        delay line holds; re-arm its timer; then resume the packets released."""
        if si.timer is not None and si.timer.cancelled:  # it fired: that is why we run
            si.timer = None
        kernel = self.vnet.kernel
        now = kernel.sched.now_ns()
        link = si.sched.link
        delay = link.delay_ms * 1_000_000
        dline = si.dline
        while True:
            if si.tx is not None:
                if si.tx_end > now:
                    break
                release = max(si.tx_end + delay, si.last_release)
                si.last_release = release
                dline.append((release, *si.tx))
                si.tx = None
            q = si.alg.dequeue()
            if q is None:
                break
            pkt, resume, arrived = q.pkts.popleft()
            size = len(pkt)
            for ni in (q.ni, si.ni):
                ni.length -= 1
                ni.len_bytes -= size
            if not q.pkts:
                q.idle_since = now
            start = max(si.busy_until, arrived)
            si.tx_end = start + self._serialisation(si, link, start, size * 8)
            si.busy_until = si.tx_end
            si.tx = (pkt, resume)
        due: list[tuple[bytes, Resume]] = []
        while dline and dline[0][0] <= now:
            _, pkt, resume = dline.popleft()
            due.append((pkt, resume))
        nxt = si.tx_end if si.tx is not None else None
        if dline and (nxt is None or dline[0][0] < nxt):
            nxt = dline[0][0]
        timer = si.timer
        if timer is not None and (nxt is None or timer.when != nxt):
            timer.cancel()
            si.timer = timer = None
        if nxt is not None and timer is None:
            si.timer = kernel.sched.call_later(nxt - now, self._run, si, owner=self.vnet)
        self._resume(due)

    @staticmethod
    def _serialisation(si: SchedInstance, link: Link, start: int, bits: int) -> int:
        """Nanoseconds `bits` occupy the link from `start` (rounded up). With `burst`, a
        link idle for a while has banked up to `burst` bytes of credit, sent at no cost
        (FreeBSD's si->credit after idle_time, dummynet(4) `burst`)."""
        bw = link.bw
        if not bw:
            return 0
        if link.burst:
            if start > si.busy_until:  # idle since busy_until: the bank fills at bw
                full = link.burst * 8 * NS_PER_S  # a new instance starts with it full
                si.credit = full if si.busy_until < 0 else min(
                    full, si.credit + (start - si.busy_until) * bw)
            spent = min(si.credit, bits * NS_PER_S)
            si.credit -= spent
            return -(-(bits * NS_PER_S - spent) // bw)
        return -(-bits * NS_PER_S // bw)

    def _resume(self, due: list[tuple[bytes, Resume]]) -> None:
        sched = self.vnet.kernel.sched
        for pkt, resume in due:
            try:
                resume(pkt)
            except Exception as exc:  # the caller's continuation failed: a bug there
                sched.record_error(resume, exc)

    # -- configuration helpers -----------------------------------------------------------
    def _free_instance(self, si: SchedInstance) -> int:
        """Forget an instance: cancel its timer, drop what it holds; the packets dropped."""
        if si.timer is not None:
            si.timer.cancel()
            si.timer = None
        dropped = len(si.dline) + (si.tx is not None)
        si.dline.clear()
        si.tx = None
        self.si_count -= 1
        alg = si.alg
        if isinstance(alg, Fifo):
            if alg.queue is not None:
                dropped += len(alg.queue.pkts)
                alg.queue.pkts.clear()
        else:
            for fs in self.flowsets.values():
                for key in [k for k in fs.queues if k[0] is si]:
                    q = fs.queues.pop(key)
                    dropped += len(q.pkts)
                    q.pkts.clear()
                    self.queue_count -= 1
        return dropped

    def free_sched_instances(self, sched: Sched, recreate: bool = True) -> None:
        """Free every instance of `sched` (its mask or discipline changed, or it goes);
        what they held is dropped and counted."""
        for si in list(sched.instances.values()):
            self.io_pkt_drop += self._free_instance(si)
        sched.instances.clear()
        if recreate:
            self.instance_for_unmasked(sched)

    def free_fs_queues(self, fs: FlowSet) -> None:
        """Free the queues of flowset `fs` (its mask or scheduler changed, or it goes)."""
        for q in fs.queues.values():
            q.si.alg.forget(q)
            self.io_pkt_drop += len(q.pkts)
            for ni in (q.ni, q.si.ni):
                ni.length -= len(q.pkts)
                ni.len_bytes -= sum(len(p[0]) for p in q.pkts)
            q.pkts.clear()
            self.queue_count -= 1
        fs.queues.clear()

    def instance_for_unmasked(self, sched: Sched) -> None:
        """An unmasked scheduler has its one instance from the start (FreeBSD creates it
        at configuration), so `show` lists it before any packet."""
        if not sched.mask and not sched.instances:
            self._instance(sched, (0, 0, 0, 0, 0))

    def clear(self) -> None:
        """Free everything: cancel every timer, drop every queued packet."""
        for sched in self.schedulers.values():
            for si in list(sched.instances.values()):
                self._free_instance(si)
            sched.instances.clear()
        for fs in self.flowsets.values():
            fs.queues.clear()
        self.links = self.schedulers = self.flowsets = NO_TABLE  # type: ignore[assignment]
        self.queue_count = self.si_count = 0


def vnet_attach(vnet: Vnet) -> None:
    vnet.dummynet = DummynetState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.dummynet.clear()
