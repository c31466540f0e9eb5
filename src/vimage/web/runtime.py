"""Where the GUI's experiment runs: the narrow interface `GuiSession` uses, and the
single-process implementation.

`GuiSession` (session.py) edits a topology and, while it runs, touches the experiment
only through a `Runtime`: start and stop it, run a console line on a node, change a
link live, read the links' counters, open a capture on a link. `LocalRuntime` does this
with an `Experiment` in a real-time kernel of the server's own process (`vimage gui`);
`vimage.web.partitioned.PartitionedRuntime` does it across MPI ranks, each request served
by the rank holding the node or link (`mpirun -n N vimage gui`, docs/gui.md).

A capture is a `CaptureHandle`: its state (for the page), its frames as a pcap, stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from vimage.emu.experiment import Experiment, ExpLink
    from vimage.emu.model import Link, Topology
    from vimage.kernel import Kernel
    from vimage.net.bpf import Session

CAPTURE_BUFFER = 100_000  # frames kept per capture (the rest are counted as dropped)


class GuiError(Exception):
    """A refused request: a one-line message and the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class CaptureHandle(Protocol):
    """A capture on one link's `a` end, its frames kept in memory."""

    def state(self) -> dict[str, Any]: ...  # a, b, ifname, running, captured, dropped

    def pcap(self) -> bytes: ...

    def stop(self) -> None: ...


class Runtime(Protocol):
    """What GuiSession needs from a running experiment (see the module doc). Methods
    raise GuiError for what they refuse; `link` arguments are the session's topology's
    Link objects, `index` their position in its links."""

    @property
    def is_up(self) -> bool: ...

    def warnings(self) -> list[str]: ...

    def ranks(self) -> dict[str, int]: ...  # node -> rank holding it ({} in one process)

    def up(self, topology: Topology) -> None: ...

    def down(self) -> None: ...

    def close(self) -> None: ...

    def node_cmd(self, node: str, argv: list[str]) -> tuple[int, str]: ...

    def link_set(self, index: int, link: Link, values: dict[str, Any]) -> None: ...

    def counters(self) -> dict[str, Any]: ...  # {"time", "links": [{a, b, bytes, packets}]}

    def capture(self, index: int, link: Link) -> CaptureHandle: ...


@dataclass
class Capture:
    """A capture on one link in this process: a bpf session on the link's a end."""

    link: tuple[str, str]
    ifname: str
    session: Session
    linktype: int

    def pcap(self) -> bytes:
        from vimage.wire.pcap import dumps

        return dumps(list(self.session.packets or ()), self.linktype)

    def state(self) -> dict[str, Any]:
        captured, _, dropped = self.session.stats()
        return {"a": self.link[0], "b": self.link[1], "ifname": self.ifname,
                "running": not self.session.closed, "captured": captured, "dropped": dropped}

    def stop(self) -> None:
        self.session.close()


def open_link_capture(link: tuple[str, str], end: Any) -> Capture:
    """A Capture on interface `end` (a link's a end), frames kept in memory."""
    from vimage.net.bpf import linktype_of, open_capture

    session = open_capture(end, keep=True, buffer=CAPTURE_BUFFER)
    return Capture(link, end.name, session, linktype_of(end))


def link_counters(link: Link, ends: Any) -> dict[str, Any]:
    """What the page gets for one link: bytes and packets sent by both ends."""
    return {"a": link.a[0], "b": link.b[0], "bytes": sum(e.obytes for e in ends),
            "packets": sum(e.opackets for e in ends)}


class LocalRuntime:
    """The experiment in a real-time kernel of this process (created on first use)."""

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self.experiment: Experiment | None = None

    @property
    def is_up(self) -> bool:
        return self.experiment is not None and self.experiment.is_up

    def warnings(self) -> list[str]:
        return list(self.experiment.warnings) if self.experiment is not None else []

    def ranks(self) -> dict[str, int]:
        return {}

    def _kernel(self) -> Kernel:
        if self.kernel is None:
            from vimage import Kernel

            self.kernel = Kernel(clock="real")
            self.kernel.start()
        return self.kernel

    def up(self, topology: Topology) -> None:
        from vimage.emu.experiment import Experiment, ExperimentError
        from vimage.emu.model import TopologyError

        try:
            self.experiment = Experiment(topology, self._kernel()).up()
        except (ExperimentError, TopologyError) as exc:
            self.experiment = None
            raise GuiError(str(exc), 409) from None

    def down(self) -> None:
        if self.experiment is not None:
            self.experiment.down()
        self.experiment = None

    def close(self) -> None:
        self.down()
        if self.kernel is not None:
            self.kernel.stop()
            self.kernel = None

    def _live_link(self, link: Link) -> ExpLink:
        assert self.experiment is not None
        try:
            return self.experiment.link(link.a[0], link.b[0])
        except LookupError as exc:
            raise GuiError(str(exc), 404) from None

    def node_cmd(self, node: str, argv: list[str]) -> tuple[int, str]:
        if self.experiment is None:
            raise GuiError("start the experiment first", 409)
        try:
            vnet = self.experiment.node(node)
        except LookupError as exc:
            raise GuiError(str(exc), 404) from None
        result = vnet.cmd(argv)
        return result.status, result.output

    def link_set(self, index: int, link: Link, values: dict[str, Any]) -> None:
        try:
            self._live_link(link).set(**values)
        except (TypeError, ValueError) as exc:
            raise GuiError(f"link {link.a[0]}-{link.b[0]}: {exc}") from None

    def counters(self) -> dict[str, Any]:
        if self.kernel is None or self.experiment is None:
            return {"up": False, "links": []}
        return {"up": True, "time": self.kernel.now,
                "links": [link_counters(link.model, link.ends) for link in self.experiment.links]}

    def capture(self, index: int, link: Link) -> CaptureHandle:
        live = self._live_link(link)
        return open_link_capture((link.a[0], link.b[0]), live.ends[0])
