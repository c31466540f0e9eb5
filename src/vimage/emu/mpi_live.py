"""One rank's part of an interactive partitioned experiment, in real time (docs/mpi.md).

`mpirun -n N vimage gui FILE` keeps the experiment of the GUI split across the ranks: every
rank holds a `LivePartition`, which builds the nodes the partition gives it (the same
`Engine` and `PartitionedExperiment` as `topo run --realtime`, vimage.emu.mpi and
mpi_realtime: a keyed kernel on the real clock, each cut link a VXLAN tunnel), starts
its kernel, and then serves requests for its nodes and links until taken down: a tool
line on a node, a live link change (each rank changes its ends of the link: both pipes
of a cut link), the counters of its ends, a capture on the `a` ends it holds. Unlike
`topo serve` (vimage.emu.mpi_serve, a vimaged per rank), the experiment is built and
taken down again at will (the GUI's Start and Stop, the topology edited in between), so
a rank holds no daemon, only this.

Requests reach a rank through the PartitionedControl mesh (vimage.emu.mpi_control): its
`handler` is `LivePartition.handle`, which answers the control protocol's JSON requests
(`REQUESTS`; `tool` is the request `PartitionedControl.node_tool` sends). Refusals are
error replies: not-found (no such node or link end here), bad-request (bad parameters),
failed (cannot build).
"""

from __future__ import annotations

import base64
import copy
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.ctl import protocol
from vimage.emu.mpi import Engine

if TYPE_CHECKING:
    from vimage.emu.model import Topology
    from vimage.emu.mpi import PartitionedExperiment
    from vimage.emu.mpi_control import PartitionedControl
    from vimage.net.bpf import Session
    from vimage.net.ifnet import Ifnet

CAPTURE_BUFFER = 100_000  # frames a capture keeps (the rest are counted as dropped)
MAX_PCAP = 40 << 20
"""Bytes of pcap a rank sends rank 0 (base64 in a JSON frame: under the mesh's 64 MB)."""


@dataclass(frozen=True)
class RankPlace:
    """The `comm` an Engine needs to plan and build: which rank of how many."""

    rank: int
    size: int


@dataclass
class LiveCapture:
    ifname: str
    session: Session
    linktype: int

    def state(self) -> dict[str, Any]:
        captured, _, dropped = self.session.stats()
        return {"ifname": self.ifname, "running": not self.session.closed,
                "captured": captured, "dropped": dropped}


def plan(topology: Topology, size: int, bind: str = "127.0.0.1") -> dict[str, int]:
    """The partition of `topology` into `size` ranks (node -> rank), as every rank
    computes it; RunError if it cannot be made."""
    engine = Engine(topology, RankPlace(0, size), realtime=True, bind=bind)
    engine.plan()
    return dict(engine.assignment)


def link_ends(topology: Topology, exp: PartitionedExperiment) -> dict[int, list[Ifnet]]:
    """Link index -> the ends `exp` (one rank's part) holds: both for a link inside the
    partition, one for a cut link."""
    index = {(link.a, link.b): i for i, link in enumerate(topology.links)}
    ends: dict[int, list[Ifnet]] = {}
    for live in exp.links:
        ends[index[(live.model.a, live.model.b)]] = list(live.ends)
    for (i, _), end in sorted(exp.cut_ends.items()):
        ends.setdefault(i, []).append(end)
    return ends


class LivePartition:
    """The nodes and link ends rank `rank` of `size` holds (see the module doc)."""

    def __init__(self, rank: int, size: int, bind: str = "127.0.0.1") -> None:
        self.rank = rank
        self.size = size
        self.bind = bind
        self.engine: Engine | None = None
        self.captures: dict[int, LiveCapture] = {}
        self.lock = threading.RLock()
        self.control: PartitionedControl | None = None  # told each new topology
        self.ends: dict[int, list[Ifnet]] = {}  # link index -> this rank's ends of it

    # -- up and down --------------------------------------------------------------------------
    def build(self, topology: Topology, seed: int = 1) -> dict[str, Any]:
        """Build this rank's nodes (the kernel not yet running); its tunnel ends'
        addresses (for `start`) and the experiment's warnings."""
        with self.lock:
            self.down()
            self.captures.clear()  # rank 0 fetched what it keeps when they stopped
            engine = Engine(topology, RankPlace(self.rank, self.size), seed, realtime=True,
                            bind=self.bind)
            engine.plan()
            try:
                engine.build()
            except BaseException:
                engine.close()
                raise
            self.engine = engine
            assert engine.tunnels is not None and engine.exp is not None
            self.ends = link_ends(topology, engine.exp)
            if self.control is not None:  # who holds what, for requests from this rank
                self.control.topology = topology
                self.control.assignment = dict(engine.assignment)
                self.control.name = str(engine.exp.name)
            return {"tunnels": engine.tunnels.addresses(), "warnings": list(engine.exp.warnings)}

    def start(self, everyone: dict[tuple[int, str], tuple[str, int]]) -> None:
        """Point the tunnels at the other ends (every rank's `build` addresses), start
        receiving and run the kernel."""
        with self.lock:
            engine = self._engine()
            assert engine.tunnels is not None and engine.kernel is not None
            engine.tunnels.connect(everyone)
            engine.tunnels.start()
            engine.kernel.start()

    def down(self) -> None:
        """Stop the kernel and the tunnels, destroy the nodes; captures keep their frames."""
        with self.lock:
            for capture in self.captures.values():
                capture.session.close()
            if self.engine is not None:
                engine, self.engine = self.engine, None
                self.ends = {}
                engine.close()

    @property
    def is_up(self) -> bool:
        return self.engine is not None

    def _engine(self) -> Engine:
        if self.engine is None or self.engine.exp is None:
            raise LookupError(f"rank {self.rank} holds no running experiment")
        return self.engine

    # -- requests ------------------------------------------------------------------------------
    def node_cmd(self, node: str, argv: list[str]) -> tuple[int, str]:
        """Run a vimage tool line in `node`'s vnet (blocks while it runs)."""
        with self.lock:
            exp = self._engine().exp
            assert exp is not None
            vnet = exp.node(node)  # LookupError: not here
        result = vnet.cmd(argv)
        return result.status, result.output

    def _ends(self, index: int) -> list[Ifnet]:
        """This rank's ends of link `index` of the topology: two, one (a cut link) or none."""
        self._engine()
        return self.ends.get(index, [])

    def link_set(self, index: int, values: dict[str, Any]) -> dict[str, Any]:
        """Change this rank's ends of link `index` (YAML-style values, None: the default)."""
        from vimage.emu.experiment import ExpLink

        with self.lock:
            engine = self._engine()
            ends = self._ends(index)
            if not ends:
                raise LookupError(f"rank {self.rank} holds no end of link {index}")
            model = engine.topology.links[index]
            exp = engine.exp
            assert exp is not None
            probe = copy.copy(model)
            ExpLink(probe, ()).set(**values)  # type: ignore[arg-type]  # checks everything
            if probe.direct and any(i == index for i, _ in exp.cut_ends):
                raise ValueError("a link cut between ranks cannot be direct (its ends are "
                                 "tunnels)")
            ExpLink(model, tuple(ends)).set(**values)  # type: ignore[arg-type]
            return dict(model.params())

    def counters(self) -> dict[str, Any]:
        """Bytes and packets sent by this rank's ends of each link it holds, by index,
        and the kernel's clock."""
        with self.lock:
            if self.engine is None or self.engine.exp is None or self.engine.kernel is None:
                return {"time": None, "links": {}}
            links = {index: (sum(e.obytes for e in ends), sum(e.opackets for e in ends))
                     for index, ends in self.ends.items()}
            return {"time": self.engine.kernel.now, "links": links}

    def capture_start(self, index: int) -> dict[str, Any]:
        """Capture on link `index`'s a end (this rank must hold it), frames in memory."""
        from vimage.net.bpf import linktype_of, open_capture

        with self.lock:
            exp = self._engine().exp
            assert exp is not None
            end = exp.ends_a.get(index)
            if end is None:
                raise LookupError(f"rank {self.rank} does not hold the a end of link {index}")
            old = self.captures.get(index)
            if old is not None:
                old.session.close()
            session = open_capture(end, keep=True, buffer=CAPTURE_BUFFER)
            capture = self.captures[index] = LiveCapture(end.name, session, linktype_of(end))
            return capture.state()

    def _capture(self, index: int) -> LiveCapture:
        capture = self.captures.get(index)
        if capture is None:
            raise LookupError(f"rank {self.rank} has no capture on link {index}")
        return capture

    def capture_state(self, index: int) -> dict[str, Any]:
        with self.lock:
            return self._capture(index).state()

    def capture_stop(self, index: int) -> dict[str, Any]:
        with self.lock:
            capture = self._capture(index)
            capture.session.close()
            return capture.state()

    def capture_pcap(self, index: int, limit: int = MAX_PCAP) -> bytes:
        """The capture as a pcap file: the first frames that fit in `limit` bytes (a
        reply between ranks is one frame of the control protocol, base64 in JSON)."""
        from vimage.wire.pcap import RECORD_HEADER, dumps

        with self.lock:
            capture = self._capture(index)
            packets = list(capture.session.packets or ())
        size, kept = 24, 0  # the file header
        for _, data in packets:
            size += RECORD_HEADER.size + len(data)
            if size > limit:
                break
            kept += 1
        return dumps(packets[:kept], capture.linktype)

    def close(self) -> None:
        with self.lock:
            self.down()
            self.captures.clear()

    # -- the control protocol -------------------------------------------------------------------
    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """A request from rank 0 (PartitionedControl's handler): the reply, never raises."""
        rid = body.get("id")
        op = body.get("op")
        serve = REQUESTS.get(op) if isinstance(op, str) else None
        if serve is None:
            return protocol.error_reply(rid, protocol.UNKNOWN_OP, f"unknown request {op!r}")
        try:
            return {"id": rid, "ok": True, **serve(self, body)}
        except LookupError as exc:
            return protocol.error_reply(rid, protocol.NOT_FOUND,
                                        str(exc.args[0]) if exc.args else str(exc))
        except (TypeError, ValueError) as exc:
            return protocol.error_reply(rid, protocol.BAD_REQUEST, str(exc))
        except Exception as exc:  # cannot build (ExperimentError, RunError), or a bug
            return protocol.error_reply(rid, protocol.FAILED, str(exc))


def _build(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    from vimage.emu.model import Topology

    built = part.build(Topology.from_dict(body["topology"]), int(body.get("seed", 1)))
    tunnels = [[index, side, host, port] for (index, side), (host, port)
               in built["tunnels"].items()]
    return {"tunnels": tunnels, "warnings": built["warnings"]}


def _start(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    part.start({(int(i), str(side)): (str(host), int(port))
                for i, side, host, port in body["tunnels"]})
    return {}


def _down(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    part.down()
    return {}


def _tool(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    """`tool` as PartitionedControl.node_tool sends it: vnet `EXPERIMENT.NODE`."""
    vnet, argv = str(body["vnet"]), [str(word) for word in body["argv"]]
    with part.lock:
        engine = part._engine()
        prefix = f"{engine.exp.name if engine.exp is not None else ''}."
    node = vnet[len(prefix):] if vnet.startswith(prefix) else vnet
    status, output = part.node_cmd(node, argv)
    return {"status": status, "output": output}


def _link(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    return {"params": part.link_set(int(body["index"]), dict(body["params"]))}


def _counters(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    counters = part.counters()
    return {"time": counters["time"],
            "links": [[i, nbytes, packets] for i, (nbytes, packets) in counters["links"].items()]}


def _capture(part: LivePartition, body: dict[str, Any]) -> dict[str, Any]:
    action, index = body.get("action"), int(body["index"])
    if action == "start":
        return part.capture_start(index)
    if action == "state":
        return part.capture_state(index)
    if action == "stop":
        return part.capture_stop(index)
    if action == "pcap":
        return {"pcap": base64.b64encode(part.capture_pcap(index)).decode()}
    raise ValueError(f"no capture action {action!r} (start, state, stop, pcap)")


REQUESTS = MappingProxyType({
    "gui_build": _build, "gui_start": _start, "gui_down": _down, "tool": _tool,
    "gui_link": _link, "gui_counters": _counters, "gui_capture": _capture,
})
"""The requests a rank of `vimage gui` serves (LivePartition.handle)."""
