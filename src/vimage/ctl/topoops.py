"""Experiments in the daemon: the `topo_*` requests behind `vimage topo up|down|list|show|link`.

An experiment is a `vimage.emu.Experiment` brought up in the daemon's kernel: a vnet
named after it, relative to the channel's scope as every vnet name is, with a child vnet
per node (`lab.pc1`), so `vimage exec lab.pc1 -- ...` and every tool reach a node. The
daemon keeps them in `Daemon.experiments` by full vnet name; destroying the vnet (`topo
down`, `vimage -d lab`, the daemon stopping) forgets it.

The topology file travels as a descriptor, opened by the client where the user is (the
daemon never opens a path; see ctl/policy.py), with the name typed for messages; the
daemon parses it, so a mistake comes back as one line naming file, line and field.
`topo_up` sends progress frames (`{"id": N, "progress": {...}}`, no "ok") before its
reply while a large topology is built; clients that do not show them skip them.

Permissions as for `create`: a delegated channel makes experiments only in its own
subtree, counted against children.max, and the start-up commands of a topology (tools
run in its nodes) are refused there, since they are not screened (ctl/policy.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.ctl import names, ops
from vimage.ctl.protocol import BAD_REQUEST, FAILED, PERMISSION, CtlError, send

if TYPE_CHECKING:
    from vimage.ctl.daemon import Daemon, Session
    from vimage.ctl.ops import Request
    from vimage.emu.experiment import Experiment
    from vimage.emu.model import Topology
    from vimage.vnet import Vnet

MAX_TOPOLOGY = 64 << 20
"""Largest topology file (bytes) the daemon reads."""
PROGRESS_EVERY = 0.25
"""Seconds between progress frames while an experiment comes up."""
CONVERGE_TIMEOUT = 60.0
"""Default seconds `--wait-converged` waits for the routing daemons."""


# -- helpers ------------------------------------------------------------------------------------
def _read_topology(req: Request, label: str, skip_unsupported: bool,
                   warnings: list[str]) -> Topology:
    from vimage.emu import TopologyError, imn, yamlfmt

    if len(req.fds) != 1:
        raise CtlError(BAD_REQUEST, "topo_up: the topology file must come as one descriptor")
    chunks, size = [], 0
    while size <= MAX_TOPOLOGY:
        chunk = os.read(req.fds[0], 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_TOPOLOGY:
        raise ValueError(f"{label}: over {MAX_TOPOLOGY >> 20} MiB")
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{label}: not UTF-8 text (byte {exc.start})") from None
    try:
        if label.endswith(".imn"):
            name = imn._name_from(Path(label))
            return imn.loads(text, label, skip_unsupported=skip_unsupported,
                             warnings=warnings, name=name)
        return yamlfmt.loads(text, label)
    except TopologyError as exc:
        raise ValueError(str(exc)) from None


def find(d: Daemon, s: Session, rel: str) -> Experiment:
    """The experiment `rel` names from the session's scope (the kernel lock is held)."""
    scope = d.live_scope(s)
    full = names.full_name(scope, rel)
    exp = d.experiments.get(full)
    if exp is None or not exp.is_up:  # none, or one still coming up
        raise LookupError(f"no experiment {rel}")
    return exp


def _rel(vnet: Vnet, scope: Vnet) -> str:
    return names.relative(vnet, scope)


def _node_row(exp: Experiment, name: str, scope: Vnet) -> dict[str, Any]:
    from vimage.emu.experiment import kernel_has_ipv6

    vnet = exp.node(name)
    model = (exp.resolved or exp.topology).nodes[name]
    ipv6 = not exp.skip_ipv6 and kernel_has_ipv6(exp.kernel)  # as Experiment configures
    ifaces = []
    for ifname in sorted(vnet.ifaces):
        iface = model.interfaces.get(ifname)
        addresses = [] if iface is None else [*iface.ipv4, *(iface.ipv6 if ipv6 else ())]
        ifaces.append({"name": ifname, "addresses": addresses})
    return {"name": name, "type": model.type, "vnet": _rel(vnet, scope), "interfaces": ifaces}


def _link_row(exp: Experiment, a: str, b: str, scope: Vnet) -> dict[str, Any]:
    link = exp.link(a, b)
    from vimage.emu.model import _link_dict

    row = link.state()
    row["shown"] = {k: v for k, v in _link_dict(link.model).items() if k not in ("a", "b")}
    row["ends"] = [{"node": n, "ifname": i, "vnet": _rel(exp.node(n), scope)}
                   for n, i in (link.model.a, link.model.b)]
    return row


class _Progress:
    """Progress of an `up`, sent as frames by a thread of its own (never under the kernel
    lock, so a client slow to read holds up only itself), at most every PROGRESS_EVERY s."""

    def __init__(self, s: Session, rid: int, timeout: float) -> None:
        self.session = s
        self.rid = rid
        self.timeout = timeout  # a frame not taken in this long ends the progress
        self.latest: tuple[int, int, str] | None = None
        self.sent: tuple[int, int, str] | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vimaged-progress", daemon=True)

    def __call__(self, done: int, total: int, what: str) -> None:
        self.latest = (done, total, what)

    def _send(self) -> None:
        latest = self.latest
        if latest is None or latest == self.sent:
            return
        self.sent = latest
        done, total, what = latest
        try:
            self.session.conn.settimeout(self.timeout)  # the session thread is in the op
            send(self.session.conn, {"id": self.rid, "progress": {
                "done": done, "total": total, "what": what}})
        except OSError:
            self.done.set()  # the client went away; the reply will fail too

    def _run(self) -> None:
        while not self.done.wait(PROGRESS_EVERY):
            self._send()

    def __enter__(self) -> _Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        if exc[0] is None:
            self._send()  # the last step, so a client always sees where it ended


# -- ops ----------------------------------------------------------------------------------------
def op_topo_up(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    from vimage.emu.experiment import Experiment, ExperimentError

    label = req.str("file", "<topology>")
    rel = req.str("name", "")
    skip_ipv6, skip_unsupported = req.bool("skip_ipv6"), req.bool("skip_unsupported")
    wait = req.bool("wait_converged")
    timeout = req.int("timeout", int(CONVERGE_TIMEOUT))
    warnings: list[str] = []
    topology = _read_topology(req, label, skip_unsupported, warnings)
    rel = rel or topology.name
    kernel = d.kernel
    with kernel.sched.cond:
        scope = d.live_scope(s)
        full = names.full_name(scope, rel)
        if full in kernel or full in names.BASE_ALIASES or full in d.experiments:
            raise FileExistsError(f"vnet {rel} already exists")
        parent = names.lookup(kernel, scope, rel.rpartition(".")[0])
        if s.scoped:
            _check_delegated(d, topology, parent, scope)
        exp = Experiment(topology, kernel, name=full, skip_ipv6=skip_ipv6)
        d.experiments[full] = exp  # claimed: a second `up` of the name waits, then fails
    try:
        with _Progress(s, req.id, d.frame_timeout) as progress:
            exp.progress = progress
            exp.up()
    except ExperimentError as exc:
        with kernel.sched.cond:
            d.experiments.pop(full, None)
        message = str(exc).replace(f"experiment {full}", f"experiment {rel}")
        raise CtlError(FAILED, message) from None
    except BaseException:
        with kernel.sched.cond:
            d.experiments.pop(full, None)
        raise
    finally:
        exp.progress = None
    converged = None
    if wait:
        converged = _wait_converged(d, exp, timeout)
        if not converged:
            with kernel.sched.cond:
                if exp.is_up:
                    d.destroy_vnet(exp.vnet)
                exp.down()
                d.experiments.pop(full, None)
            raise CtlError(FAILED, f"experiment {rel}: the routing daemons did not converge "
                                   f"within {timeout} s (brought down)")
    return {"name": rel, "nodes": len(exp.nodes), "links": len(exp.links),
            "warnings": [*warnings, *exp.warnings], "converged": converged}


def _check_delegated(d: Daemon, topology: Topology, parent: Vnet, scope: Vnet) -> None:
    with_commands = [n.name for n in topology.nodes.values() if n.commands]
    if with_commands:
        raise CtlError(PERMISSION, f"node {with_commands[0]}: start-up commands are run "
                                   "only for experiments made from the host")
    vnet: Vnet | None = parent
    wanted = len(topology.nodes) + 1
    while vnet is not None and vnet.parent is not None:
        meta = d.meta.get(vnet)
        limit = ops.DEFAULT_CHILDREN_MAX if meta is None else meta.children_max
        if sum(1 for _ in names.descendants(vnet)) + wanted > limit:
            label = (f"vnet {names.relative(vnet, scope)}" if vnet is not scope
                     else "this vnet") if names.within(vnet, scope) else "an enclosing vnet"
            raise CtlError(PERMISSION, f"children.max ({limit}) of {label} is too small "
                                       f"for {wanted} vnets")
        vnet = vnet.parent


def _wait_converged(d: Daemon, exp: Experiment, timeout: int) -> bool:
    """Wait (real time: the daemon's kernel runs on its own) until every routing node has a
    route to every IPv4 subnet of the experiment."""
    pause = threading.Event()
    deadline = time.monotonic() + max(0, timeout)
    while True:
        with d.kernel.sched.cond:
            if not exp.is_up:
                return False
            if exp.converged():
                return True
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.1)


def op_topo_down(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = req.str("name")
    with d.kernel.sched.cond:
        exp = find(d, s, rel)
        nodes = len(exp.nodes)
        assert exp.vnet is not None
        d.destroy_vnet(exp.vnet)  # the daemon's bookkeeping (sockets, channels) goes too
        exp.down()
        d.experiments.pop(str(exp.name), None)
    return {"name": rel, "nodes": nodes}


def op_topo_list(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    with d.kernel.sched.cond:
        scope = d.live_scope(s)
        rows = []
        for _full, exp in sorted(d.experiments.items()):
            if exp.vnet is None or not exp.is_up or not names.within(exp.vnet, scope):
                continue  # one still coming up is not listed yet
            rows.append({"name": _rel(exp.vnet, scope), "nodes": len(exp.nodes),
                         "links": len(exp.links), "topology": exp.topology.name})
    return {"experiments": rows}


def op_topo_show(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """The experiment (nodes, links with parameters and counters), or one node (`node`),
    or one link (`a` and `b`)."""
    rel = req.str("name")
    node = req.str("node", "")
    a, b = req.str("a", ""), req.str("b", "")
    with d.kernel.sched.cond:
        exp = find(d, s, rel)
        scope = d.live_scope(s)
        if node:
            return {"node": _node_row(exp, node, scope)}
        if a or b:
            return {"link": _link_row(exp, a, b, scope)}
        return {"name": rel, "topology": exp.topology.name,
                "nodes": [_node_row(exp, n, scope) for n in exp.nodes],
                "links": [_link_row(exp, lk.model.a[0], lk.model.b[0], scope)
                          for lk in exp.links],
                "warnings": list(exp.warnings)}


def op_topo_link(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """Change a live link: `params` maps model fields (bandwidth, delay, ...) to values in
    the YAML format's words, or null for the default."""
    rel, a, b = req.str("name"), req.str("a"), req.str("b")
    params = req.args.get("params", {})
    if not isinstance(params, dict) or len(params) > 16 or not all(
            isinstance(v, str | None) for v in params.values()):
        raise CtlError(BAD_REQUEST, "topo_link: 'params' must map names to strings or null")
    with d.kernel.sched.cond:
        exp = find(d, s, rel)
        link = exp.link(a, b)
        try:
            link.set(**params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"link {a}-{b}: {exc}") from None
        return {"link": _link_row(exp, a, b, d.live_scope(s))}


OPS: Mapping[str, ops.Op] = MappingProxyType({
    "topo_up": ops.Op(op_topo_up, frozenset(("name", "file", "skip_ipv6", "skip_unsupported",
                                             "wait_converged", "timeout")), fds=True),
    "topo_down": ops.Op(op_topo_down, frozenset(("name",))),
    "topo_list": ops.Op(op_topo_list, frozenset()),
    "topo_show": ops.Op(op_topo_show, frozenset(("name", "node", "a", "b"))),
    "topo_link": ops.Op(op_topo_link, frozenset(("name", "a", "b", "params"))),
})
