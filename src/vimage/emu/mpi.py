"""An experiment split across MPI ranks, run in exact virtual time (docs/mpi.md).

`mpirun -n N vimage topo run FILE --duration S [--seed S] [--pcap DIR]`: every rank
reads the topology, partitions it the same way (vimage.emu.partition) and builds, in a
keyed kernel of its own (Kernel(clock="virtual", keyed=True)), the nodes of its
partition: a `PartitionedExperiment`. A link inside a partition is an epair as usual;
a cut link is an epair end in the local node whose pipe (vimage.net.pipe) computes the
arrival time as always (queue, bandwidth, delay, jitter, loss) and then, instead of
arming a local timer, hands the frame to the engine, which sends it to the rank of the
other end stamped with its arrival time and ordering key; that rank delivers it then.

Synchronisation is conservative, in windows (a global lower bound on timestamps): each
round every rank sends its outgoing frames and the time of its next event to every
other (one MPI alltoall), inserts what it received, and all agree on G, the earliest
event anywhere; every rank then runs its events before G + L, where L, the lookahead,
is the smallest delay of the cut links: a frame sent at t >= G arrives at t + delay >=
G + L, so no rank can receive anything in the past. A cut link without delay gives no
lookahead and is refused, naming it.

Determinism (the same seed gives the same bytes with 1 rank or N): a keyed kernel
derives each vnet's secret and random stream from its name, not from creation order;
timers due at the same instant run in the order (owner vnet's key, the owner's own
count), and a frame from another rank carries the key its sender allocated, so it
takes the place its local timer would have; link MACs derive from the seed and the
interface's name; per-link pcaps are taken at the `a` end by the rank holding it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimage.emu import partition as parting
from vimage.emu.experiment import Experiment, ExperimentError, kernel_has_ipv6, pipe_settings
from vimage.emu.model import Link, Topology
from vimage.kernel import Kernel
from vimage.net.bpf import Session, open_capture
from vimage.net.ifnet import Ifnet
from vimage.net.pipe import LinkPipe
from vimage.sched import NS_PER_S

MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
"""Environment variables that say this process was started by mpirun (Open MPI, MPICH)."""
FAIL_ENV = "VIMAGE_MPI_FAIL_RANK"
"""Tests: the rank named here raises in its second round (the others wait for it)."""


class RunError(ValueError):
    """A partitioned run that cannot start (one line, the same on every rank)."""


class RankFailure(RuntimeError):
    """This rank failed while building or running its partition."""

    def __init__(self, rank: int, size: int, nodes: list[str], exc: BaseException) -> None:
        shown = ", ".join(nodes[:8]) + (f" ... ({len(nodes)} nodes)" if len(nodes) > 8 else "")
        super().__init__(f"rank {rank} of {size} failed (nodes {shown}): "
                         f"{type(exc).__name__}: {exc}")
        self.rank = rank
        self.nodes = nodes


# -- communication -----------------------------------------------------------------------------
class SoloComm:
    """One rank, no MPI: the same engine in one process (and the reference run)."""

    rank = 0
    size = 1

    def alltoall(self, payloads: list[Any]) -> list[Any]:
        return payloads

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def bcast(self, obj: Any) -> Any:
        return obj

    def abort(self, code: int) -> None:
        raise SystemExit(code)


class MpiComm:
    """COMM_WORLD through mpi4py (pickled Python objects)."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    def alltoall(self, payloads: list[Any]) -> list[Any]:
        return self.comm.alltoall(payloads)  # type: ignore[no-any-return]

    def gather(self, obj: Any) -> list[Any] | None:
        return self.comm.gather(obj, root=0)  # type: ignore[no-any-return]

    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def abort(self, code: int) -> None:
        self.comm.Abort(code)


def under_mpirun() -> bool:
    return any(os.environ.get(name) for name in MPI_ENV)


def world() -> SoloComm | MpiComm:
    """MPI's world when started by mpirun (mpi4py needed), else one rank without MPI."""
    if not under_mpirun():
        return SoloComm()
    try:
        return MpiComm()
    except ImportError:
        raise RunError("started by mpirun, but mpi4py is not installed "
                       "(pip install 'vimage[mpi]')") from None


# -- determinism helpers -----------------------------------------------------------------------
def derived_mac(seed: int | None, node: str, ifname: str) -> str:
    """A locally administered unicast MAC from the seed and the interface's name."""
    raw = bytearray(hashlib.blake2b(f"{seed!r}/{node}/{ifname}".encode(), digest_size=6,
                                    person=b"vimage.mac").digest())
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def deterministic(topo: Topology, seed: int | None) -> Topology:
    """A copy of `topo` whose linked interfaces without a MAC get `derived_mac` ones."""
    out = copy.deepcopy(topo)
    for link in out.links:
        for node_name, ifname in (link.a, link.b):
            iface = out.nodes[node_name].interfaces[ifname]
            if iface.mac is None:
                iface.mac = derived_mac(seed, node_name, ifname)
    return out


def pcap_name(link: Link) -> str:
    """The file name of a link's capture: its two ends, the same whatever the ranks."""
    return f"{link.a[0]}.{link.a[1]}--{link.b[0]}.{link.b[1]}.pcap"


# -- the cut links -----------------------------------------------------------------------------
class RemotePipe(LinkPipe):
    """The pipe of a cut link's local end: frames leave for the rank of the other end."""

    __slots__ = ("engine", "key")

    def __init__(self, ifp: Ifnet, engine: Engine, key: tuple[int, str]) -> None:
        super().__init__(ifp)
        self.engine = engine
        self.key = key  # (link index, side of the *other* end)

    def schedule(self, arrive: int, frame: bytes) -> None:
        seq = self.ifp.vnet.kernel.sched.next_seq(self.ifp.vnet)  # as a local timer's
        self.delivered += 1
        self.engine.send(self.key, arrive, seq, frame)


@dataclass
class PartitionedExperiment(Experiment):
    """The part of an experiment one rank holds: its nodes and its ends of cut links."""

    local: frozenset[str] = frozenset()
    engine: Engine | None = None
    cut_ends: dict[tuple[int, str], Ifnet] = field(default_factory=dict)  # (link, side)
    ends_a: dict[int, Ifnet] = field(default_factory=dict)  # link index -> its local a end

    def _preflight(self, topo: Topology) -> None:
        problems = [f"node {n.name}: an ext node cannot be part of a partitioned run"
                    for n in topo.nodes.values() if n.type == "ext"]
        if problems:
            raise ExperimentError(f"experiment {self.name}: {problems[0]}", problems)
        super()._preflight(topo)

    def _resolved(self) -> Topology:
        return deterministic(super()._resolved(), self.kernel.seed)

    def _build(self, topo: Topology) -> None:
        """As Experiment._build, for the local nodes only; DAD and everything else runs
        in the synchronised loop (nothing may advance this kernel alone)."""
        kernel = self.kernel
        local = self.local
        use_ipv6 = kernel_has_ipv6(kernel) and not self.skip_ipv6
        self.resolved = topo
        mine = [n for n in topo.nodes.values() if n.name in local]
        with kernel.sched.cond:
            self.vnet = kernel.create(str(self.name))
            for node in mine:
                self.nodes[node.name] = vnet = kernel.create(f"{self.name}.{node.name}")
                if node.type == "router":
                    vnet.ip.forwarding = 1
                    if use_ipv6:
                        vnet.ip6.forwarding = 1
            for i, link in enumerate(self.topology.links):
                a_in, b_in = link.a[0] in local, link.b[0] in local
                if a_in and b_in:
                    exp = self._make_link(topo, link)
                    self.links.append(exp)
                    self.ends_a[i] = exp.ends[0]
                elif a_in or b_in:
                    self._make_cut_end(topo, i, link, "a" if a_in else "b")
            for node in mine:
                self._configure(node, use_ipv6)
            for node in mine:
                if node.type in ("lanswitch", "hub"):
                    self._switch(node)
            for node in mine:
                self._routes(node, node.routes, use_ipv6)
            for name, routes in parting_defaults(topo).items():
                if name in local:
                    self._auto_defaults(topo.nodes[name], routes, use_ipv6)
            if topo.hosts:
                self._hosts(topo)
        for node in mine:
            self._start(node)

    def _make_cut_end(self, topo: Topology, index: int, link: Link, side: str) -> None:
        """This rank's end of a cut link: an epair end whose pipe sends to the other rank
        (the other end of the pair stays, down and unused, in the experiment's vnet)."""
        assert self.vnet is not None and self.engine is not None
        node_name, ifname = link.a if side == "a" else link.b
        end = self.kernel.epair(self.vnet)[0]
        vnet = self.nodes[node_name]
        end.move_to(vnet)
        _rename(end, ifname)
        end.home = vnet
        iface = topo.nodes[node_name].interfaces[ifname]
        if iface.mac is not None:
            end.mac = bytes.fromhex(iface.mac.replace(":", ""))
        if iface.mtu is not None:
            end.mtu = iface.mtu
        tunnels = self.engine.tunnels
        if tunnels is not None:  # real time: a VXLAN tunnel (vimage.emu.mpi_realtime)
            far = link.b[0] if side == "a" else link.a[0]
            end.pipe = tunnels.attach((index, side), end, self.engine.remote.get(far))
        else:
            end.pipe = RemotePipe(end, self.engine, (index, "b" if side == "a" else "a"))
        end.impair(**pipe_settings(link, every=True))
        end.set_up(True)
        self.cut_ends[(index, side)] = end
        if side == "a":
            self.ends_a[index] = end


def parting_defaults(topo: Topology) -> dict[str, Any]:
    from vimage.emu import address

    return address.default_routes(topo)


def _rename(ifp: Ifnet, name: str) -> None:
    from vimage.emu.experiment import _rename as rename

    rename(ifp, name)


# -- the engine --------------------------------------------------------------------------------
@dataclass
class RankStats:
    rank: int
    nodes: int
    events: int = 0
    rounds: int = 0
    frames_out: int = 0
    frames_in: int = 0
    wall: float = 0.0  # seconds, the whole run loop
    work: float = 0.0  # seconds running the kernel
    sync: float = 0.0  # seconds in the exchange (waiting for the others included)
    build: float = 0.0  # seconds bringing the partition up
    cpu: float = 0.0  # CPU seconds of the run loop (time.process_time)
    cpu_work: float = 0.0  # CPU seconds running the kernel


@dataclass
class Engine:
    """One rank's side of a partitioned run."""

    topology: Topology
    comm: Any
    seed: int = 1
    pcap_dir: str | None = None
    skip_ipv6: bool = False
    realtime: bool = False  # cut links as VXLAN tunnels, the real clock
    bind: str = "127.0.0.1"  # the host address of this rank's tunnels
    remote: dict[str, tuple[str, int]] = field(default_factory=dict)  # node -> far VTEP
    progress: Callable[[str], None] | None = None
    name: str | None = None  # the experiment's vnet name (default: the topology's name)
    tunnels: Any = None  # real time: vimage.emu.mpi_realtime.Tunnels
    assignment: dict[str, int] = field(default_factory=dict)
    lookahead_ns: int = 0
    kernel: Kernel | None = None
    exp: PartitionedExperiment | None = None
    stats: RankStats | None = None
    captures: list[Session] = field(default_factory=list)
    _outbox: list[list[tuple[Any, ...]]] = field(default_factory=list)
    _peer_rank: dict[tuple[int, str], int] = field(default_factory=dict)

    # -- set-up -----------------------------------------------------------------------------
    def plan(self) -> None:
        """Partition (every rank the same way) and check the cut links."""
        self.check_remote()
        try:
            self.assignment = parting.partition(self.topology, self.comm.size)
        except parting.PartitionError as exc:
            raise RunError(str(exc)) from None
        self.plan_cuts()

    def check_remote(self) -> None:
        """A remote node (--remote NODE=ADDR:PORT) is outside vimage: it needs the real
        clock, and one link (its tunnel binds the port ADDR's VTEP sends to)."""
        for name in self.remote:
            node = self.topology.nodes.get(name)
            if node is None:
                raise RunError(f"--remote {name}: no such node")
            if not self.realtime:
                raise RunError(f"--remote {name}: a remote node needs --realtime")
            links = [li for li in self.topology.links if name in (li.a[0], li.b[0])]
            if len(links) != 1 or links[0].a[0] == links[0].b[0]:
                raise RunError(f"--remote {name}: a remote node needs exactly one link "
                               f"(it has {len(links)})")

    def plan_cuts(self) -> None:
        """The ranks of each cut link's ends, and the lookahead; RunError if a cut link
        has no delay (the partitioner never cuts one, pins aside)."""
        topo = self.topology
        delays = []
        for i in parting.cut_links(topo, self.assignment):
            link = topo.links[i]
            ra, rb = self.assignment[link.a[0]], self.assignment[link.b[0]]
            if (link.delay == 0 or link.direct) and not self.realtime:
                raise RunError(f"link {':'.join(link.a)}-{':'.join(link.b)} is cut between "
                               f"ranks {ra} and {rb} and has no delay: give it a delay (the "
                               "lookahead) or pin both ends to one partition")
            delays.append(max(1, link.delay) * 1000)
            self._peer_rank[(i, "a")] = ra
            self._peer_rank[(i, "b")] = rb
        self.lookahead_ns = min(delays) if delays else 0

    def local_nodes(self) -> frozenset[str]:
        return frozenset(n for n, r in self.assignment.items()
                         if r == self.comm.rank and n not in self.remote)

    def build(self) -> None:
        start = time.perf_counter()
        local = self.local_nodes()
        self.stats = RankStats(self.comm.rank, len(local))
        self._outbox = [[] for _ in range(self.comm.size)]
        self.kernel = Kernel(clock="real" if self.realtime else "virtual", seed=self.seed,
                             keyed=True)
        if self.realtime:
            from vimage.emu.mpi_realtime import Tunnels

            self.tunnels = Tunnels(self, self.bind)
        self.exp = PartitionedExperiment(self.topology, self.kernel, name=self.name,
                                         skip_ipv6=self.skip_ipv6, local=local, engine=self)
        self.exp.up()
        if self.pcap_dir is not None:
            Path(self.pcap_dir).mkdir(parents=True, exist_ok=True)
            for i, end in sorted(self.exp.ends_a.items()):
                path = os.path.join(self.pcap_dir, pcap_name(self.topology.links[i]))
                self.captures.append(open_capture(end, path))
        self.stats.build = time.perf_counter() - start

    # -- frames across ranks ------------------------------------------------------------------
    def send(self, key: tuple[int, str], arrive: int, seq: Any, frame: bytes) -> None:
        """A frame for the other end `key` (link, side), due at `arrive` with order `seq`."""
        self._outbox[self._peer_rank[key]].append((arrive, seq, key, frame))

    def _deliver(self, incoming: list[tuple[Any, ...]]) -> None:
        assert self.exp is not None and self.kernel is not None
        sched = self.kernel.sched
        ends = self.exp.cut_ends
        for arrive, seq, key, frame in incoming:
            end = ends.get(key)
            if end is not None and end.vnet.alive:
                sched.call_at(arrive, end.input, frame, owner=end.vnet, seq=seq)

    # -- the run -----------------------------------------------------------------------------
    def run(self, duration: float) -> RankStats:
        """Run to `duration` seconds of virtual time in step with the other ranks."""
        assert self.kernel is not None and self.stats is not None
        if self.realtime:
            from vimage.emu.mpi_realtime import run_realtime

            return run_realtime(self, duration)  # type: ignore[no-any-return]
        kernel, comm, stats = self.kernel, self.comm, self.stats
        sched = kernel.sched
        end_ns = int(duration * NS_PER_S)
        lookahead = self.lookahead_ns or end_ns + 1  # one partition: one window
        fail = os.environ.get(FAIL_ENV) == str(comm.rank)
        started = time.perf_counter()
        cpu0 = time.process_time()
        events0 = sched.events
        while True:
            t0 = time.perf_counter()
            outbox = self._outbox
            mine = sched.next_event() if not sched.queue else sched.now_ns()
            for box in outbox:
                for item in box:
                    mine = item[0] if mine is None else min(mine, item[0])
            self._outbox = [[] for _ in range(comm.size)]
            stats.frames_out += sum(len(box) for box in outbox)
            received = comm.alltoall([(mine, box) for box in outbox])
            stats.sync += time.perf_counter() - t0
            stats.rounds += 1
            times = [t for t, _ in received if t is not None]
            for _, box in received:
                stats.frames_in += len(box)
                self._deliver(box)
            earliest = min(times) if times else None
            if earliest is None or earliest > end_ns:
                break
            horizon = min(earliest + lookahead, end_ns + 1)
            if fail and stats.rounds == 2:  # the others wait in the next exchange
                raise RuntimeError(f"{FAIL_ENV} asked this rank to fail")
            t1, c1 = time.perf_counter(), time.process_time()
            sched.advance(horizon - 1)
            stats.work += time.perf_counter() - t1
            stats.cpu_work += time.process_time() - c1
        sched.jump_to(end_ns)
        stats.events = sched.events - events0
        stats.wall = time.perf_counter() - started
        stats.cpu = time.process_time() - cpu0
        return stats

    def close(self) -> None:
        if self.kernel is not None and self.realtime:
            self.kernel.stop()
        if self.tunnels is not None:
            self.tunnels.stop()
            self.tunnels = None
        for session in self.captures:
            session.close()
        self.captures = []
        if self.exp is not None:
            self.exp.down()


def run(topology: Topology, duration: float, seed: int = 1, pcap_dir: str | None = None,
        comm: Any = None, skip_ipv6: bool = False,
        out: Callable[[str], None] | None = None, realtime: bool = False,
        bind: str = "127.0.0.1",
        remote: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
    """The whole batch run on this rank; rank 0 gets the summary (others: {})."""
    comm = comm if comm is not None else world()
    engine = Engine(topology, comm, seed, pcap_dir, skip_ipv6, realtime, bind, dict(remote or {}))
    engine.plan()
    try:
        engine.build()
        stats = engine.run(duration)
        assert engine.exp is not None
        errors = engine.kernel.sched.errors if engine.kernel is not None else 0
        jobs = engine.exp.jobs.lines()
    except Exception as exc:
        raise RankFailure(comm.rank, comm.size, sorted(engine.local_nodes()), exc) from exc
    finally:
        engine.close()
    gathered = comm.gather({"stats": vars(stats), "jobs": jobs, "errors": errors})
    if comm.rank != 0 or gathered is None:
        return {}
    summary = {
        "ranks": comm.size, "duration": duration, "seed": seed, "realtime": realtime,
        "lookahead_us": engine.lookahead_ns / 1000 if engine.lookahead_ns else None,
        "partition": parting.summary(topology, engine.assignment, comm.size),
        "per_rank": [g["stats"] for g in gathered],
        "jobs": sorted(line for g in gathered for line in g["jobs"]),
        "loop_errors": sum(g["errors"] for g in gathered),
    }
    if out is not None:
        for line in format_summary(summary):
            out(line)
    return summary


def format_summary(summary: dict[str, Any]) -> list[str]:
    part = summary["partition"]
    look = summary["lookahead_us"]
    clock = "real" if summary.get("realtime") else "virtual"
    lines = [f"topo run: {summary['ranks']} rank(s), {summary['duration']:g} s of {clock} "
             f"time, seed {summary['seed']}, {part['cut']} cut link(s), "
             + ("VXLAN tunnels" if clock == "real" else "lookahead "
                + (f"{look:g} us" if look is not None else "none (one partition)"))]
    lines.append("rank  nodes    events  rounds  frames-out  frames-in  build-s  wall-s  "
                 "work-s  sync-s")
    for s in summary["per_rank"]:
        lines.append(f"{s['rank']:>4}  {s['nodes']:>5}  {s['events']:>8}  {s['rounds']:>6}  "
                     f"{s['frames_out']:>10}  {s['frames_in']:>9}  {s['build']:>7.2f}  "
                     f"{s['wall']:>6.2f}  {s['work']:>6.2f}  {s['sync']:>6.2f}")
    lines.extend(f"job {line}" for line in summary["jobs"])
    if summary["loop_errors"]:
        lines.append(f"warning: {summary['loop_errors']} exception(s) in kernel loops")
    return lines


def main(topology: Topology, duration: float, seed: int = 1, pcap_dir: str | None = None,
         skip_ipv6: bool = False, summary_json: str | None = None, realtime: bool = False,
         bind: str = "127.0.0.1", remote: dict[str, tuple[str, int]] | None = None) -> int:
    """`vimage topo run`: run, print rank 0's summary; a failing rank names itself and
    its nodes on stderr and aborts every rank (MPI_Abort), so nothing is left running."""
    try:
        comm = world()
    except RunError as exc:
        print(f"vimage topo run: {exc}", file=sys.stderr)
        return 1
    try:
        summary = run(topology, duration, seed, pcap_dir, comm, skip_ipv6, print, realtime,
                      bind, remote)
        if summary_json is not None and comm.rank == 0:
            Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    except RunError as exc:  # the same on every rank: rank 0 says it
        if comm.rank == 0:
            print(f"vimage topo run: {exc}", file=sys.stderr)
        return 1
    except RankFailure as exc:
        print(f"vimage topo run: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        if comm.size > 1:
            comm.abort(1)
        return 1
    return 0
