"""The GUI on an experiment partitioned across MPI ranks: `mpirun -n N vimage gui FILE`.

Rank 0 serves the GUI (the same app, guard and page as `vimage gui`) with a
`PartitionedRuntime`; every rank, rank 0 included, holds a `LivePartition`
(vimage.emu.mpi_live), and the ranks are joined for the whole run by a PartitionedControl
mesh (vimage.emu.mpi_control: TCP between every two ranks, control-protocol frames, a
dead rank named), whose handler on each rank is its LivePartition. *Start* partitions
the topology as `topo run` does (the same partitioner, pins honoured), has every rank
build its nodes in a real-time keyed kernel (cut links: VXLAN tunnels between the ranks),
exchanges the tunnels' addresses and starts them all; *Stop* takes every rank's part down.
Each request goes to the rank holding the node (console lines, `node_tool`) or the
link's ends (live changes: both ranks of a cut link; counters: summed over the ranks;
captures: the rank holding the `a` end, which keeps the frames).

Editing the topology while stopped is as in one process (rank 0 keeps it; the next Start
sends it to the ranks and partitions it again); while running, only positions change.
^C or SIGTERM (mpirun forwards it to every rank) ends every rank: rank 0 stops the
experiment and says `stop` to the others. A rank that dies is named (`rank 1 of 2 (nodes
pc1, r1) died`) by the others, which take their parts down and exit 1.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

from vimage.ctl import protocol
from vimage.ctl.protocol import CtlError
from vimage.web.runtime import CaptureHandle, GuiError

if TYPE_CHECKING:
    from vimage.emu.model import Link, Topology
    from vimage.emu.mpi_control import PartitionedControl

CALL_STATUS = MappingProxyType({protocol.NOT_FOUND: 404, protocol.BAD_REQUEST: 400,
                                protocol.UNKNOWN_OP: 400})  # error code -> HTTP status
FINISH_WAIT = 3.0  # seconds rank 0 waits for the others to say stop at the end
BUILD_TIMEOUT = 600.0  # seconds a rank may take to build its part (10,000 nodes: ~30 s)


class PartitionedRuntime:
    """Rank 0's Runtime: each request served, through `control`, by the rank holding
    the node or link (see the module doc)."""

    def __init__(self, control: PartitionedControl, seed: int = 1,
                 bind: str = "127.0.0.1") -> None:
        self.control = control
        self.seed = seed
        self.bind = bind
        self.topology: Topology | None = None
        self._warnings: list[str] = []
        self._pool = ThreadPoolExecutor(max(2, control.size), thread_name_prefix="vimage-ranks")

    @property
    def size(self) -> int:
        return self.control.size

    @property
    def is_up(self) -> bool:
        return self.topology is not None

    def warnings(self) -> list[str]:
        return list(self._warnings)

    def ranks(self) -> dict[str, int]:
        return dict(self.control.assignment) if self.is_up else {}

    # -- requests ------------------------------------------------------------------------------
    def _call(self, rank: int, body: dict[str, Any], timeout: float | None = None) -> Any:
        from vimage.emu.mpi_control import REQUEST_TIMEOUT

        try:
            return self.control.call(rank, body, timeout or REQUEST_TIMEOUT)
        except CtlError as exc:
            raise self._refusal(rank, exc) from None

    def _refusal(self, rank: int, exc: CtlError) -> GuiError:
        if rank in self.control.dead or "did not answer" in exc.message \
                or "has stopped" in exc.message:
            return GuiError(exc.message, 502)
        status = CALL_STATUS.get(exc.code, 409)
        if status == 409 and rank != self.control.rank:  # cannot build, or a bug: say where
            return GuiError(f"rank {rank}: {exc.message}", status)
        return GuiError(exc.message, status)

    def _everyone(self, body: dict[str, Any], timeout: float | None = None
                  ) -> list[dict[str, Any]]:
        """`body` on every rank at once; the replies in rank order (the first refusal
        raised once all have answered)."""
        futures = [self._pool.submit(self._call, rank, body, timeout)
                   for rank in range(self.size)]
        replies, problem = [], None
        for future in futures:
            try:
                replies.append(future.result())
            except GuiError as exc:
                replies.append({})
                problem = problem or exc
        if problem is not None:
            raise problem
        return replies

    # -- up and down -----------------------------------------------------------------------------
    def up(self, topology: Topology) -> None:
        from vimage.emu.mpi import RunError
        from vimage.emu.mpi_live import plan

        topo = copy.deepcopy(topology)
        try:
            assignment = plan(topo, self.size, self.bind)
        except RunError as exc:
            raise GuiError(str(exc), 409) from None
        self.control.topology = topo  # who holds what, as every rank will know it
        self.control.assignment = assignment
        self.control.name = topo.name
        try:
            built = self._everyone({"op": "gui_build", "topology": topo.to_dict(),
                                    "seed": self.seed}, BUILD_TIMEOUT)
            tunnels = [t for reply in built for t in reply["tunnels"]]
            self._everyone({"op": "gui_start", "tunnels": tunnels})
        except GuiError:
            with contextlib.suppress(GuiError):  # the first refusal is the one to show
                self._down()
            raise
        self._warnings = [w for reply in built for w in reply["warnings"]]
        self.topology = topo

    def _down(self) -> None:
        self.topology = None
        self._everyone({"op": "gui_down"}, BUILD_TIMEOUT)

    def down(self) -> None:
        if self.is_up:
            self._down()

    def close(self) -> None:
        """Take every rank's part down (server shutdown). A rank that does not answer
        is ending already (mpirun sends SIGTERM to every rank) and tears itself down."""
        try:
            with contextlib.suppress(GuiError):
                self.down()
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the experiment ----------------------------------------------------------------------------
    def node_cmd(self, node: str, argv: list[str]) -> tuple[int, str]:
        """The line on the rank holding `node` (PartitionedControl.node_tool)."""
        try:
            rank = self.control.owner(node)
        except LookupError as exc:
            raise GuiError(str(exc.args[0]), 404) from None
        try:
            return self.control.node_tool(node, argv)
        except CtlError as exc:
            raise self._refusal(rank, exc) from None

    def link_set(self, index: int, link: Link, values: dict[str, Any]) -> None:
        """Both ranks of a cut link change their end, in turn (the values were checked
        on rank 0 first; the second rank refuses what the first would have)."""
        from vimage.emu.experiment import ExpLink

        ranks = self.control.link_ranks(index)
        probe = copy.copy(link)
        ExpLink(probe, ()).set(**values)  # type: ignore[arg-type]  # checked: no error
        if probe.direct and len(ranks) > 1:
            raise GuiError(f"link {link.a[0]}-{link.b[0]} is cut between ranks: it cannot "
                           "be direct (its ends are tunnels)", 409)
        for rank in ranks:
            self._call(rank, {"op": "gui_link", "index": index, "params": values})

    def counters(self) -> dict[str, Any]:
        if self.topology is None:
            return {"up": False, "links": []}
        replies = self._everyone({"op": "gui_counters"})
        totals: dict[int, list[int]] = {}
        for reply in replies:
            for index, nbytes, packets in reply["links"]:
                total = totals.setdefault(int(index), [0, 0])
                total[0] += nbytes
                total[1] += packets
        links = [{"a": link.a[0], "b": link.b[0], "bytes": totals.get(i, [0, 0])[0],
                  "packets": totals.get(i, [0, 0])[1]}
                 for i, link in enumerate(self.topology.links)]
        return {"up": True, "time": replies[0]["time"], "links": links}

    def capture(self, index: int, link: Link) -> CaptureHandle:
        rank = self.control.owner(link.a[0])
        capture = RemoteCapture(self, rank, index, (link.a[0], link.b[0]))
        capture.remember(self._call(rank, capture.body("start")))
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

    def body(self, action: str) -> dict[str, Any]:
        return {"op": "gui_capture", "action": action, "index": self.index}

    def remember(self, state: dict[str, Any]) -> dict[str, Any]:
        self.last = {"a": self.link[0], "b": self.link[1], "ifname": state["ifname"],
                     "running": state["running"], "captured": state["captured"],
                     "dropped": state["dropped"], "rank": self.rank}
        return dict(self.last)

    def state(self) -> dict[str, Any]:
        with self.lock:
            if self.frames is not None:
                return dict(self.last)
        try:
            return self.remember(self.runtime._call(self.rank, self.body("state")))
        except GuiError:
            return dict(self.last, running=False)

    def _pcap(self) -> bytes:
        return base64.b64decode(self.runtime._call(self.rank, self.body("pcap"))["pcap"])

    def stop(self) -> None:
        with self.lock:
            if self.frames is not None:
                return
            self.remember(self.runtime._call(self.rank, self.body("stop")))
            self.frames = self._pcap()

    def pcap(self) -> bytes:
        with self.lock:
            if self.frames is not None:
                return self.frames
        return self._pcap()


# -- mpirun -n N vimage gui ----------------------------------------------------------------------
def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def connect_ranks(comm: Any, partition: Any, bind: str) -> PartitionedControl:
    """The control mesh between every rank (its addresses exchanged with one MPI
    alltoall), each rank's requests served by its `partition`."""
    from vimage.emu.model import Topology
    from vimage.emu.mpi_control import PartitionedControl

    control = PartitionedControl(comm.rank, comm.size, Topology(name="lab"), {},
                                 partition.handle, "lab", bind)
    partition.control = control
    addresses = comm.alltoall([control.listen()] * comm.size)
    control.connect([tuple(a) for a in addresses])
    return control


def serve_partitioned(comm: Any, path: str | Path | None, port: int = 0,
                      bind: str = "127.0.0.1", seed: int = 1,
                      out: TextIO | None = None) -> int:
    """Every rank of `mpirun -n N vimage gui`: rank 0 serves the GUI, the others their
    partitions; 0 after a normal end (^C, SIGTERM), 1 after a bad file (reported once,
    by rank 0) or when another rank died."""
    from vimage.emu import load
    from vimage.emu.model import TopologyError
    from vimage.emu.mpi_live import LivePartition

    out = out or sys.stdout
    problem = None
    if comm.rank == 0 and path is not None and Path(path).exists():
        try:
            load(path)
        except (TopologyError, OSError) as exc:
            problem = str(exc)
    if not comm.bcast(problem is None if comm.rank == 0 else None):
        if problem is not None:
            print(f"vimage gui: {problem}", file=sys.stderr)
        return 1
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # mpirun forwards SIGTERM: end cleanly
    partition = LivePartition(comm.rank, comm.size, bind)
    control = connect_ranks(comm, partition, bind)
    ended = threading.Event()

    def dead(rank: int) -> None:
        print(f"vimage gui: {control.describe(rank)} died: ending the experiment",
              file=sys.stderr, flush=True)
        ended.set()
        if comm.rank == 0:  # end the server as ^C would
            signal.raise_signal(signal.SIGTERM)

    control.on_dead = dead
    control.on_stop = lambda rank, why: ended.set()
    try:
        if comm.rank != 0:
            with contextlib.suppress(KeyboardInterrupt):
                ended.wait()
        else:
            from vimage.web.runtime import Runtime
            from vimage.web.server import serve

            runtime: Runtime = PartitionedRuntime(control, seed, bind)
            print(f"vimage gui: {comm.size} ranks, the experiment partitioned on Start",
                  file=out, flush=True)
            serve(path, port, out, runtime=runtime)
    finally:
        partition.close()
        control.stop(f"rank {comm.rank} ended")
        dead = control.finish(FINISH_WAIT)
        control.close()
    if comm.rank == 0 and not dead:
        print("vimage gui: stopped on every rank", file=out, flush=True)
    return 1 if dead else 0
