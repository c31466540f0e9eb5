"""What the GUI server holds: a topology, its file and the experiment's runtime.

`GuiSession` is the GUI without HTTP (so it is tested without a server): every page
action is a method here that checks its input and raises `GuiError` (a message and an
HTTP status) when it refuses. The experiment is reached only through a `Runtime`
(runtime.py): by default `LocalRuntime`, an `Experiment` in a real-time kernel running in
a background thread of the server's own process (so the GUI does not need vimaged); under
mpirun, `PartitionedRuntime` (partitioned.py), the experiment split across the ranks.

Console confinement: a console line runs through `vnet.cmd` in the node's vnet, which
runs only the vimage tools (`vimage.cli.TOOLS`), never a shell or a program; tcpdump's
file options (-r, -w) are refused as well, so a page cannot read or write the server's
files (a capture is downloaded with the capture buttons instead).
"""

from __future__ import annotations

import contextlib
import copy
import math
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vimage.emu import address, yamlfmt
from vimage.emu.model import NODE_TYPES, Topology, TopologyError
from vimage.web.runtime import CaptureHandle, GuiError, LocalRuntime, Runtime

if TYPE_CHECKING:
    from vimage.emu.experiment import Experiment
    from vimage.kernel import Kernel

__all__ = ["GuiError", "GuiSession", "console_argv", "layout"]

MAX_LINE = 1000  # characters in a console line
MAX_OUTPUT = 256 * 1024  # characters of a console command's output sent back
GRID_STEP = 160.0  # canvas units between nodes placed by the layout
FILE_OPTIONS = frozenset("rw")  # tcpdump's file options, refused in a console


def layout(topo: Topology) -> int:
    """Give every node without a position one (IMUNES files always have them; ours may
    not): a circle for a few nodes, a grid for many. Returns how many were placed."""
    missing = [n for n in topo.nodes.values() if n.position is None]
    if not missing:
        return 0
    if len(missing) <= 12:
        radius = max(GRID_STEP, GRID_STEP * len(missing) / (2 * math.pi))
        for k, node in enumerate(missing):
            angle = 2 * math.pi * k / len(missing) - math.pi / 2
            node.position = (round(radius + 80 + radius * math.cos(angle)),
                             round(radius + 80 + radius * math.sin(angle)))
        return len(missing)
    side = math.ceil(math.sqrt(len(missing)))
    for k, node in enumerate(missing):
        row, col = divmod(k, side)
        node.position = (80 + col * GRID_STEP, 80 + row * GRID_STEP)
    return len(missing)


def console_argv(line: Any) -> list[str]:
    """The words of a console line, or GuiError: a tool of vimage.cli.TOOLS, and no
    tcpdump option that names a file."""
    from vimage.cli import TOOLS

    if not isinstance(line, str) or not line.strip():
        raise GuiError("a console line is a non-empty string")
    if len(line) > MAX_LINE:
        raise GuiError(f"a console line has at most {MAX_LINE} characters")
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise GuiError(f"cannot parse the line: {exc}") from None
    if argv[0] not in TOOLS:
        raise GuiError(f"{argv[0]}: not a vimage tool (the console runs {', '.join(TOOLS)})")
    if argv[0] == "tcpdump":
        for word in argv[1:]:
            if word.startswith("-") and not word.startswith("--") and FILE_OPTIONS & set(word):
                raise GuiError("tcpdump: -r and -w are not available in the console "
                               "(use the link's capture buttons)")
    return argv


@dataclass
class GuiSession:
    """The topology being edited and, while it runs, its experiment (see the module doc)."""

    topology: Topology
    path: Path | None = None  # where Save writes (None: download only)
    runtime: Runtime = field(default_factory=LocalRuntime)
    captures: dict[tuple[str, str], CaptureHandle] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def open(cls, path: str | Path | None, runtime: Runtime | None = None) -> GuiSession:
        """A session for a topology file (YAML or .imn; saved as YAML), or an empty one."""
        from vimage.emu import load

        runtime = runtime if runtime is not None else LocalRuntime()
        if path is None:
            return cls(Topology(name="lab"), runtime=runtime)
        path = Path(path)
        topo = load(path) if path.exists() else Topology(name=_name_of(path))
        layout(topo)
        target = path if path.suffix in (".yaml", ".yml") else path.with_suffix(".yaml")
        return cls(topo, target, runtime)

    @property
    def kernel(self) -> Kernel | None:
        """The local runtime's kernel (None when partitioned)."""
        return getattr(self.runtime, "kernel", None)

    @property
    def experiment(self) -> Experiment | None:
        """The local runtime's experiment (None when partitioned)."""
        return getattr(self.runtime, "experiment", None)

    # -- the topology ------------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self.runtime.is_up

    def view(self) -> dict[str, Any]:
        """What the page draws: the topology as plain data (the YAML structure), the
        addresses the experiment gives (automatic ones included), and the run state."""
        with self.lock:
            topo = self.topology
            try:
                resolved = address.auto_assign(topo, topo.auto_address, topo.auto_address6)
            except ValueError:
                resolved = topo
            addresses = {n.name: {i.name: i.ipv4 + i.ipv6 for i in n.interfaces.values()}
                         for n in resolved.nodes.values()}
            return {"topology": topo.to_dict(), "addresses": addresses, "up": self.is_up,
                    "file": str(self.path) if self.path else None, "node_types": NODE_TYPES,
                    "warnings": self.runtime.warnings(), "ranks": self.runtime.ranks(),
                    "captures": [c.state() for c in self.captures.values()]}

    def replace(self, data: Any) -> None:
        """The page's edited topology (the YAML structure as JSON). While the experiment
        runs only positions may change (nodes dragged); anything else needs a stop."""
        if not isinstance(data, dict):
            raise GuiError("the topology is a JSON object")
        try:
            topo = Topology.from_dict(data)
        except TopologyError as exc:
            raise GuiError(str(exc)) from None
        with self.lock:
            if self.is_up:
                if _without_positions(topo) != _without_positions(self.topology):
                    raise GuiError("stop the experiment to change its topology "
                                   "(link parameters change live)", 409)
                for name, node in topo.nodes.items():
                    self.topology.nodes[name].position = node.position
                return
            layout(topo)
            self.topology = topo

    def yaml(self) -> str:
        with self.lock:
            return yamlfmt.dumps(self.topology)

    def save(self) -> str:
        """Write the topology to its file as YAML; returns the path."""
        with self.lock:
            if self.path is None:
                raise GuiError("no file to save to (started without one): use Download", 409)
            self.path.write_text(yamlfmt.dumps(self.topology))
            return str(self.path)

    # -- the experiment ------------------------------------------------------------------------
    def up(self) -> None:
        with self.lock:
            if self.is_up:
                raise GuiError("the experiment is already running", 409)
            self.runtime.up(self.topology)

    def down(self) -> None:
        with self.lock:
            for capture in self.captures.values():
                with contextlib.suppress(GuiError):  # its rank is gone: down says so
                    capture.stop()
            self.runtime.down()

    def close(self) -> None:
        """Stop the experiment and the runtime (server shutdown); a part that cannot be
        reached any more (a rank already ending) is not waited for."""
        with self.lock:
            for capture in self.captures.values():
                with contextlib.suppress(GuiError):
                    capture.stop()
            self.runtime.close()

    def set_link(self, a: Any, b: Any, params: Any) -> dict[str, Any]:
        """Change a link's parameters (YAML-style values), live when it runs. Everything
        is checked (on a copy of the link) before anything changes."""
        from vimage.emu.experiment import ExpLink

        if not isinstance(params, dict) or not params:
            raise GuiError("params is a non-empty JSON object of link parameters")
        with self.lock:
            model = self._link_model(a, b)
            values = {k: (None if v in ("", None) else v) for k, v in params.items()}
            try:
                ExpLink(copy.copy(model), ()).set(**values)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise GuiError(f"link {a}-{b}: {exc}") from None
            if self.is_up:
                self.runtime.link_set(self._index(model), model, values)
            ExpLink(model, ()).set(**values)  # type: ignore[arg-type]
            return dict(model.params())

    def _link_model(self, a: Any, b: Any) -> Any:
        if not isinstance(a, str) or not isinstance(b, str):
            raise GuiError("a link is named by its two node names a and b")
        try:
            return self.topology.link_between(a, b)
        except LookupError as exc:
            raise GuiError(str(exc), 404) from None

    def _index(self, model: Any) -> int:
        return next(i for i, link in enumerate(self.topology.links) if link is model)

    def counters(self) -> dict[str, Any]:
        """Per link, bytes and packets sent by both ends (the page turns them into
        rates), stamped with the kernel clock."""
        with self.lock:
            if not self.is_up:
                return {"up": False, "links": []}
            return self.runtime.counters()

    # -- consoles ----------------------------------------------------------------------------
    def run(self, node: Any, line: Any) -> tuple[int, str]:
        """Run a console line in `node`'s vnet (blocking: call it off the event loop)."""
        if not isinstance(node, str):
            raise GuiError("node is a node name")
        argv = console_argv(line)
        with self.lock:
            if not self.is_up:
                raise GuiError("start the experiment first", 409)
        status, output = self.runtime.node_cmd(node, argv)
        if len(output) > MAX_OUTPUT:
            output = output[:MAX_OUTPUT] + "\n[output cut]\n"
        return status, output

    # -- captures ----------------------------------------------------------------------------
    def capture_start(self, a: Any, b: Any) -> dict[str, Any]:
        with self.lock:
            model = self._link_model(a, b)
            if not self.is_up:
                raise GuiError("start the experiment first", 409)
            key = (model.a[0], model.b[0])
            old = self.captures.get(key)
            if old is not None and old.state()["running"]:
                raise GuiError(f"a capture on {a}-{b} is already running", 409)
            capture = self.captures[key] = self.runtime.capture(self._index(model), model)
            return capture.state()

    def capture_stop(self, a: Any, b: Any) -> dict[str, Any]:
        capture = self._capture(a, b)
        capture.stop()
        return capture.state()

    def capture_pcap(self, a: Any, b: Any) -> bytes:
        return self._capture(a, b).pcap()

    def _capture(self, a: Any, b: Any) -> CaptureHandle:
        with self.lock:
            model = self._link_model(a, b)
            capture = self.captures.get((model.a[0], model.b[0]))
            if capture is None:
                raise GuiError(f"no capture on {a}-{b}", 404)
            return capture


def _without_positions(topo: Topology) -> dict[str, Any]:
    data = copy.deepcopy(topo.to_dict())
    for node in data["nodes"].values():
        node.pop("position", None)
    return data


def _name_of(path: Path) -> str:
    name = "".join(c if c.isalnum() or c in "_-" else "-" for c in path.stem)
    return name[:64] or "lab"
