"""The GUI on an experiment partitioned across MPI ranks: `mpirun -n N vimage gui FILE`.

Rank 0 serves the GUI (the same app, guard and page as `vimage gui`) with a
`PartitionedRuntime`; every rank, rank 0 included, holds a `LivePartition`
(vimage.emu.mpi_live), and ranks 1..N-1 only answer rank 0's requests (vimage.emu.mpi_rpc)
until told to quit. *Start* partitions the topology as `topo run` does (the same
partitioner, pins honoured), has every rank build its nodes in a real-time keyed kernel
(cut links: VXLAN tunnels between the ranks), exchanges the tunnels' addresses and starts
them all; *Stop* takes every rank's part down. Each request goes to the rank holding the
node (console lines) or the link's ends (live changes: both ranks of a cut link; counters:
summed over the ranks; captures: the rank holding the `a` end, which keeps the frames).

Editing the topology while stopped is as in one process (rank 0 keeps it; the next Start
sends it to the ranks and partitions it again); while running, only positions change.
^C or SIGTERM (mpirun forwards it) ends every rank: rank 0 stops the experiment and tells
the others to quit; a rank that dies makes requests to it fail with its name and nodes.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

from vimage.emu.mpi_rpc import RankCallError, RankUnreachable
from vimage.web.runtime import CaptureHandle, GuiError

if TYPE_CHECKING:
    from vimage.emu.model import Link, Topology

CALL_STATUS = MappingProxyType({"LookupError": 404, "KeyError": 404, "ValueError": 400,
                                "TypeError": 400})  # a rank's exception -> HTTP status


class PartitionedRuntime:
    """Rank 0's Runtime: each request served by the rank holding the node or link.
    `channels[k]` is rank k's request channel (`call(op, *args, timeout=...)`): rank 0's
    own partition in process, the others through vimage.emu.mpi_rpc."""

    def __init__(self, channels: list[Any], seed: int = 1, bind: str = "127.0.0.1") -> None:
        self.channels = channels
        self.seed = seed
        self.bind = bind
        self.assignment: dict[str, int] = {}
        self.topology: Topology | None = None
        self._warnings: list[str] = []
        self._pool = ThreadPoolExecutor(max(2, len(channels)), thread_name_prefix="vimage-ranks")

    @property
    def size(self) -> int:
        return len(self.channels)

    @property
    def is_up(self) -> bool:
        return self.topology is not None

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def ranks(self) -> dict[str, int]:
        return dict(self.assignment)

    # -- requests ------------------------------------------------------------------------------
    def _nodes_of(self, rank: int) -> str:
        names = sorted(n for n, r in self.assignment.items() if r == rank)
        return ", ".join(names[:8]) + (f" ... ({len(names)} nodes)" if len(names) > 8 else "")

    def _call(self, rank: int, op: str, *args: Any, timeout: float | None = 30.0) -> Any:
        try:
            return self.channels[rank].call(op, *args, timeout=timeout)
        except RankUnreachable as exc:
            held = self._nodes_of(rank)
            raise GuiError(f"{exc}" + (f": nodes {held} are out of reach" if held else ""),
                           502) from None
        except RankCallError as exc:
            status = CALL_STATUS.get(exc.kind, 409)
            text = str(exc) if status != 409 or rank == 0 else f"rank {rank}: {exc}"
            raise GuiError(text.replace("\n", " "), status) from None

    def _everyone(self, op: str, *args: Any) -> list[Any]:
        """`op` on every rank at once; the answers in rank order (the first error raised
        once all have answered)."""
        futures = [self._pool.submit(self._call, rank, op, *args) for rank in range(self.size)]
        answers, problem = [], None
        for future in futures:
            try:
                answers.append(future.result())
            except GuiError as exc:
                answers.append(None)
                problem = problem or exc
        if problem is not None:
            raise problem
        return answers

    # -- up and down -----------------------------------------------------------------------------
    def up(self, topology: Topology) -> None:
        from vimage.emu.mpi import RunError
        from vimage.emu.mpi_live import plan

        topo = copy.deepcopy(topology)
        try:
            assignment = plan(topo, self.size, self.bind)
        except RunError as exc:
            raise GuiError(str(exc), 409) from None
        self.assignment = assignment
        try:
            built = self._everyone("build", topo, self.seed)
            everyone: dict[tuple[int, str], tuple[str, int]] = {}
            for answer in built:
                everyone.update(answer["tunnels"])
            self._everyone("start", everyone)
        except GuiError:
            self._down()
            raise
        self._warnings = [w for answer in built for w in answer["warnings"]]
        self.topology = topo

    def _down(self) -> None:
        problem = None
        try:
            self._everyone("down")
        except GuiError as exc:
            problem = exc
        self.topology = None
        self.assignment = {}
        if problem is not None:
            raise problem

    def down(self) -> None:
        if self.is_up:
            self._down()

    def close(self) -> None:
        """Take every rank's part down (server shutdown). A rank that does not answer
        is ending already (mpirun sends SIGTERM to every rank) and tears itself down."""
        try:
            self.down()
        except GuiError:
            pass
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the experiment ----------------------------------------------------------------------------
    def node_cmd(self, node: str, argv: list[str]) -> tuple[int, str]:
        rank = self.assignment.get(node)
        if rank is None or self.topology is None:
            name = self.topology.name if self.topology is not None else "?"
            raise GuiError(f"experiment {name} has no node {node!r}", 404)
        status, output = self._call(rank, "node_cmd", node, argv, timeout=None)
        return status, output

    def _link_ranks(self, link: Link) -> list[int]:
        return sorted({self.assignment[link.a[0]], self.assignment[link.b[0]]})

    def link_set(self, index: int, link: Link, values: dict[str, Any]) -> None:
        """Both ranks of a cut link change their end (the first refusal stops it: the
        values were checked on rank 0 before, so a refusal means a rank is gone)."""
        for rank in self._link_ranks(link):
            self._call(rank, "link_set", index, values)

    def counters(self) -> dict[str, Any]:
        if self.topology is None:
            return {"up": False, "links": []}
        answers = self._everyone("counters")
        totals: dict[int, list[int]] = {}
        for answer in answers:
            for index, (nbytes, packets) in answer["links"].items():
                total = totals.setdefault(index, [0, 0])
                total[0] += nbytes
                total[1] += packets
        links = [{"a": link.a[0], "b": link.b[0], "bytes": totals.get(i, [0, 0])[0],
                  "packets": totals.get(i, [0, 0])[1]}
                 for i, link in enumerate(self.topology.links)]
        return {"up": True, "time": answers[0]["time"], "links": links}

    def capture(self, index: int, link: Link) -> CaptureHandle:
        rank = self.assignment[link.a[0]]
        capture = RemoteCapture(self, rank, index, (link.a[0], link.b[0]))
        capture.remember(self._call(rank, "capture_start", index))
        return capture


class RemoteCapture:
    """A capture held by the rank of the link's a end; once stopped, its frames are
    fetched and kept here (the rank may be taken down later)."""

    def __init__(self, runtime: PartitionedRuntime, rank: int, index: int,
                 link: tuple[str, str]) -> None:
        self.runtime = runtime
        self.rank = rank
        self.index = index
        self.link = link
        self.last: dict[str, Any] = {}
        self.frames: bytes | None = None  # the pcap, once stopped
        self.lock = threading.Lock()

    def remember(self, state: dict[str, Any]) -> dict[str, Any]:
        self.last = {"a": self.link[0], "b": self.link[1], **state, "rank": self.rank}
        return self.last

    def state(self) -> dict[str, Any]:
        with self.lock:
            if self.frames is not None:
                return dict(self.last)
        try:
            return self.remember(self.runtime._call(self.rank, "capture_state", self.index))
        except GuiError:
            return dict(self.last, running=False)

    def stop(self) -> None:
        with self.lock:
            if self.frames is not None:
                return
            self.remember(self.runtime._call(self.rank, "capture_stop", self.index))
            self.frames = self.runtime._call(self.rank, "capture_pcap", self.index)

    def pcap(self) -> bytes:
        with self.lock:
            if self.frames is not None:
                return self.frames
        return self.runtime._call(self.rank, "capture_pcap", self.index)  # type: ignore[no-any-return]


# -- mpirun -n N vimage gui ----------------------------------------------------------------------
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_partitioned(comm: Any, path: str | Path | None, port: int = 0,
                      bind: str = "127.0.0.1", seed: int = 1,
                      out: TextIO | None = None) -> int:
    """Every rank of `mpirun -n N vimage gui`: rank 0 serves the GUI, the others their
    partitions. A bad file is reported once, by rank 0, and every rank exits 1."""
    from vimage.emu import load
    from vimage.emu.model import TopologyError
    from vimage.emu.mpi_live import LivePartition
    from vimage.emu.mpi_rpc import LocalRank, RankClient, RankServer

    out = out or sys.stdout
    problem = None
    if comm.rank == 0 and path is not None and Path(path).exists():
        try:
            load(path)
        except (TopologyError, OSError) as exc:
            problem = str(exc)
    key = comm.bcast(secrets.token_bytes(32) if problem is None and comm.rank == 0 else None)
    if key is None:
        if problem is not None:
            print(f"vimage gui: {problem}", file=sys.stderr)
        return 1
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # mpirun forwards SIGTERM: end cleanly
    partition = LivePartition(comm.rank, comm.size, bind)
    if comm.rank != 0:
        server = RankServer(partition, LivePartition.OPS, bind, key)
        server.start()
        comm.gather(server.address)
        try:
            server.quit.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            partition.close()
        return 0
    addresses = comm.gather(None)
    ranks: list[Any] = [LocalRank(partition, LivePartition.OPS)]
    ranks += [RankClient(k, tuple(addresses[k]), key) for k in range(1, comm.size)]
    runtime = PartitionedRuntime(ranks, seed, bind)
    from vimage.web.server import serve

    try:
        print(f"vimage gui: {comm.size} ranks, the experiment partitioned on Start",
              file=out, flush=True)
        return serve(path, port, out, runtime=runtime)
    finally:
        for rank in ranks[1:]:
            with contextlib.suppress(RankUnreachable, RankCallError):
                rank.call("quit", timeout=10)
            rank.close()
        partition.close()
