"""A partitioned experiment in the daemon of each rank (`vimage topo serve`, docs/mpi.md).

vimage.emu.mpi_serve runs a Daemon on every rank, holding that rank's part of the
experiment, and installs here (`install`) two things:

- the `part_*` requests, which vimage.emu.mpi_control sends between ranks: this rank's
  share of `topo show` (its nodes, its links and its ends of cut links, with counters),
  of `topo link` (a cut link is changed on both ranks: each end's pipe), captures at a
  local link end (frames kept and handed out by polls), and its figures;
- the front: `topo_list`, `topo_show`, `topo_link`, `topo_down`, `tool`, `exec`,
  `exec_enter` and `destroy` are wrapped so that a request about a node another rank
  holds is answered by that rank. A tool runs there and its output comes back (across
  hosts too); a request that must pass descriptors (`exec`, whose channel and relayed
  sockets belong to the holding daemon, and a tool with file operands such as `tcpdump
  -w`) is answered `moved` with the holding daemon's socket and host, which the vimage
  command follows on the same host. `topo down` (or `vimage -d` of the experiment) ends
  the experiment on every rank.

Requests about anything else go to the daemon's ordinary ops unchanged.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.ctl import names, ops
from vimage.ctl.protocol import BAD_REQUEST, MOVED, CtlError

if TYPE_CHECKING:
    from vimage.ctl.daemon import Daemon, Session
    from vimage.ctl.ops import Request
    from vimage.emu.model import Link
    from vimage.emu.mpi import PartitionedExperiment
    from vimage.emu.mpi_control import PartitionedControl
    from vimage.net.bpf import Session as Capture
    from vimage.net.ifnet import Ifnet

CAPTURE_BUFFER = 10000
"""Frames a capture keeps between two polls (the rest is counted as dropped)."""
STOP_WAIT = 60.0
"""Seconds `topo down` waits for this rank's daemon to have stopped."""


@dataclass
class _Capture:
    session: Capture
    ready: threading.Event


@dataclass
class PartState:
    """What a rank's daemon knows of the partitioned experiment it serves."""

    exp: PartitionedExperiment
    control: PartitionedControl
    ranks: list[dict[str, Any]]  # per rank: socket, host, pid
    end: Callable[[str], None]  # ends the experiment on every rank (the reason)
    tunnels: Any = None  # vimage.emu.mpi_realtime.Tunnels
    captures: dict[int, _Capture] = field(default_factory=dict)
    next_capture: int = 0

    @property
    def full(self) -> str:
        return str(self.exp.name)

    @property
    def rank(self) -> int:
        return self.control.rank


def install(d: Daemon, state: PartState) -> None:
    """Serve `state`'s experiment from daemon `d`: the part_* requests and the front."""
    d.partition = state
    d.experiments[state.full] = state.exp
    for name, op in PART_OPS.items():
        d.register(name, op)
    for name, wrap in FRONT.items():
        inner = d.ops[name]
        d.register(name, ops.Op(_wrapped(wrap, inner.func), inner.fields, inner.host_only,
                                inner.fds))


def _wrapped(wrap: Callable[..., dict[str, Any]], inner: ops.OpFunc
             ) -> Callable[[Daemon, Session, Request], dict[str, Any]]:
    def func(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
        return wrap(d, s, req, inner)

    return func


def close(d: Daemon) -> None:
    """End this rank's captures (the experiment is going)."""
    state: PartState | None = d.partition
    if state is None:
        return
    for cap in state.captures.values():
        cap.session.close()
        cap.ready.set()
    state.captures.clear()


# -- this rank's part -------------------------------------------------------------------------
def _state(d: Daemon, req: Request) -> PartState:
    state: PartState | None = d.partition
    if state is None or req.str("name") != state.full or not state.exp.is_up:
        raise LookupError(f"no partitioned experiment {req.str('name')}")
    return state


def _local_ends(state: PartState, index: int) -> tuple[list[str], list[Ifnet]]:
    """The sides ("a", "b") of link `index` this rank holds, and their interfaces."""
    exp = state.exp
    model = exp.topology.links[index]
    for link in exp.links:
        if link.model is model:
            return ["a", "b"], list(link.ends)
    held = [(side, exp.cut_ends[(index, side)]) for side in ("a", "b")
            if (index, side) in exp.cut_ends]
    if not held:
        raise LookupError(f"rank {state.rank} holds no end of link {index}")
    return [s for s, _ in held], [e for _, e in held]


def _link_row(state: PartState, index: int) -> dict[str, Any]:
    from vimage.emu.experiment import ExpLink
    from vimage.emu.model import _link_dict

    model = state.exp.topology.links[index]
    held, ends = _local_ends(state, index)
    row = ExpLink(model, tuple(ends)).state()  # type: ignore[arg-type]
    row["shown"] = {k: v for k, v in _link_dict(model).items() if k not in ("a", "b")}
    row["ends"] = [{"node": n, "ifname": i, "vnet": f"{state.full}.{n}"}
                   for n, i in (model.a, model.b)]
    row["held"] = held
    return row


def op_part_show(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """This rank's nodes and the links it holds an end of (vnet names are full names)."""
    from vimage.ctl.topoops import _node_row

    with d.kernel.sched.cond:
        state = _state(d, req)
        exp = state.exp
        nodes = {n: _node_row(exp, n, d.kernel.base) for n in exp.nodes}
        indexes = {id(link): i for i, link in enumerate(exp.topology.links)}
        held = {indexes[id(link.model)] for link in exp.links}
        held.update(i for i, _ in exp.cut_ends)
        links = {str(i): _link_row(state, i) for i in sorted(held)}
        warnings = list(exp.warnings)
    return {"nodes": nodes, "links": links, "warnings": warnings}


def op_part_link(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """Show, or change (`params`), this rank's ends of link `index`: a cut end's pipe is
    its tunnel, which stays, reconfigured (a direct cut link keeps it, unimpaired)."""
    from vimage.emu.experiment import pipe_settings

    index = req.int("index", -1)
    params = req.args.get("params")
    with d.kernel.sched.cond:
        state = _state(d, req)
        links = state.exp.topology.links
        if not 0 <= index < len(links):
            raise LookupError(f"no link {index}")
        if params is not None:
            model = links[index]
            updated = checked_link(model, _params(params))
            held, ends = _local_ends(state, index)
            for key, value in vars(updated).items():
                setattr(model, key, value)
            plain = dataclasses.replace(updated, direct=False, bandwidth=0, delay=0,
                                        jitter=0, loss=0, ber=0, duplicate=0)
            for end in ends:
                if updated.direct and len(held) == 2:
                    end.clear_impairment()  # a link inside this rank: as ExpLink.set
                else:
                    end.impair(**pipe_settings(plain if updated.direct else updated,
                                               every=True))
        return {"link": _link_row(state, index)}


def _params(params: Any) -> dict[str, str | None]:
    if not isinstance(params, dict) or len(params) > 16 or not all(
            isinstance(v, str | None) for v in params.values()):
        raise CtlError(BAD_REQUEST, "topo_link: 'params' must map names to strings or null")
    return params


def checked_link(model: Link, params: dict[str, str | None]) -> Link:
    """`model` with `params` applied (a copy); ValueError naming the link if one is bad."""
    from vimage.emu.experiment import ExpLink

    updated = copy.copy(model)
    try:
        ExpLink(updated, ()).set(**params)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"link {model.a[0]}-{model.b[0]}: {exc}") from None
    return updated


def op_part_capture(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """`action` start (link `index`, `side`; `count`, `filter`), poll (`id`, `wait`
    seconds for frames) or stop (`id`) a capture at a link end this rank holds."""
    from vimage.net.bpf import open_capture

    action = req.str("action")
    state = _state(d, req)
    if action == "start":
        index, side = req.int("index", -1), req.str("side")
        count = req.int("count", 0) or None
        with d.kernel.sched.cond:
            sides, ends = _local_ends(state, index)
            if side not in sides:
                raise LookupError(f"rank {state.rank} does not hold the {side} end of "
                                  f"link {index}")
            end = ends[sides.index(side)]
            ready = threading.Event()
            session = open_capture(end, keep=True, count=count, buffer=CAPTURE_BUFFER,
                                   filter=req.str("filter", "") or None,
                                   callback=lambda *_: ready.set())
            state.next_capture += 1
            cid = state.next_capture
            state.captures[cid] = _Capture(session, ready)
            return {"id": cid, "ifname": end.name, "linktype": session.linktype}
    cid = req.int("id", -1)
    cap = state.captures.get(cid)
    if cap is None:
        raise LookupError(f"no capture {cid}")
    if action == "poll":
        wait = min(max(0.0, float(req.args.get("wait", 0) or 0)), 5.0)
        if not cap.session.packets and not cap.session.closed:
            cap.ready.wait(wait)
        with d.kernel.sched.cond:
            packets = cap.session.packets or []
            frames = [[ts, base64.b64encode(data).decode()] for ts, data in packets]
            packets.clear()
            cap.ready.clear()
            return {"frames": frames, "open": not cap.session.closed}
    if action == "stop":
        cap.session.close()
        cap.ready.set()
        state.captures.pop(cid, None)
        captured, received, dropped = cap.session.stats()
        return {"captured": captured, "received": received, "dropped": dropped,
                "error": cap.session.error}
    raise CtlError(BAD_REQUEST, f"part_capture: unknown action {action[:32]!r}")


def op_part_stats(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    with d.kernel.sched.cond:
        state = _state(d, req)
        sched = d.kernel.sched
        tunnels = state.tunnels
        pipes = tunnels.pipes.values() if tunnels is not None else ()
        info = state.ranks[state.rank]
        return {"stats": {
            "rank": state.rank, "nodes": len(state.exp.nodes),
            "cut_ends": len(state.exp.cut_ends), "events": sched.events,
            "loop_errors": sched.errors, "uptime": d.kernel.now,
            "frames_out": sum(p.sent for p in pipes),
            "frames_in": tunnels.received if tunnels is not None else 0,
            "malformed": tunnels.malformed if tunnels is not None else 0,
            "captures": len(state.captures), **info}}


PART_OPS: Mapping[str, ops.Op] = MappingProxyType({
    "part_show": ops.Op(op_part_show, frozenset(("name",)), host_only=True),
    "part_link": ops.Op(op_part_link, frozenset(("name", "index", "params")), host_only=True),
    "part_capture": ops.Op(op_part_capture, frozenset(
        ("name", "action", "index", "side", "count", "filter", "id", "wait")), host_only=True),
    "part_stats": ops.Op(op_part_stats, frozenset(("name",)), host_only=True),
})


# -- the front -------------------------------------------------------------------------------
def _ours(d: Daemon, s: Session, rel: str) -> PartState | None:
    """The partitioned experiment, if `rel` (from the session's scope) names it."""
    state: PartState | None = d.partition
    if state is None or not rel:
        return None
    return state if names.full_name(d.live_scope(s), rel) == state.full else None


def _elsewhere(d: Daemon, s: Session, rel: str) -> tuple[PartState, int, str, str] | None:
    """(state, rank, node, full name) if vnet `rel` is in a node another rank holds."""
    state: PartState | None = d.partition
    if state is None:
        return None
    scope = d.live_scope(s)
    full = names.full_name(scope, rel) if rel else scope.name
    prefix = state.full + "."
    if not full.startswith(prefix):
        return None
    node = full[len(prefix):].split(".")[0]
    rank = state.control.assignment.get(node)
    if rank is None or rank == state.rank:
        return None
    return state, rank, node, full


def _moved(state: PartState, rank: int, node: str) -> CtlError:
    where = state.ranks[rank]
    return CtlError(MOVED, f"node {node} of experiment {state.full} is held by rank {rank} "
                           f"on host {where['host']}: its daemon's socket is {where['socket']}",
                    detail={"rank": rank, "host": where["host"], "socket": where["socket"]})


def _rescope(row: Any, scope_name: str) -> Any:
    """Rows from other ranks name vnets in full: make them relative to the scope."""
    if not scope_name:
        return row
    if isinstance(row, dict):
        return {k: (v[len(scope_name) + 1:] if k == "vnet" and isinstance(v, str)
                    and v.startswith(scope_name + ".") else _rescope(v, scope_name))
                for k, v in row.items()}
    if isinstance(row, list):
        return [_rescope(v, scope_name) for v in row]
    return row


def front_topo_list(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    result = inner(d, s, req)
    state: PartState | None = d.partition
    if state is not None:
        topo = state.exp.topology
        for row in result["experiments"]:
            if _ours(d, s, row["name"]) is not None:
                row.update(nodes=len(topo.nodes), links=len(topo.links))
    return result


def front_topo_show(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    rel = req.str("name")
    state = _ours(d, s, rel)
    if state is None:
        return inner(d, s, req)
    control = state.control
    scope = d.live_scope(s).name
    node, a, b = req.str("node", ""), req.str("a", ""), req.str("b", "")
    if node:
        rank = control.owner(node)
        if rank == state.rank:
            return inner(d, s, req)
        return {"node": _rescope(control.node_info(node), scope)}
    if a or b:
        return {"link": _rescope(control.link_info(a, b), scope)}
    whole = control.show()
    return {"name": rel, "topology": state.exp.topology.name,
            "nodes": _rescope(whole["nodes"], scope), "links": _rescope(whole["links"], scope),
            "warnings": whole["warnings"]}


def front_topo_link(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    rel = req.str("name")
    state = _ours(d, s, rel)
    if state is None:
        return inner(d, s, req)
    a, b = req.str("a"), req.str("b")
    params = _params(req.args.get("params", {}))
    _, model = state.control.find_link(a, b)
    checked_link(model, params)  # a bad value changes nothing, on any rank
    row = state.control.link_set(a, b, params)
    return {"link": _rescope(row, d.live_scope(s).name)}


def front_topo_down(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    rel = req.str("name")
    state = _ours(d, s, rel)
    if state is None:
        return inner(d, s, req)
    nodes = len(state.exp.topology.nodes)
    _end_here(d, s, state, f"topo down {rel}")
    req.close = True
    return {"name": rel, "nodes": nodes}


def _end_here(d: Daemon, s: Session, state: PartState, why: str) -> None:
    """End the experiment on every rank; return once this rank's daemon has stopped."""
    if s.scoped:
        raise PermissionError(f"experiment {state.full} is served by `vimage topo serve`: "
                              "end it from the host")
    state.end(why)
    d.request_stop(s)
    if not d.stopped.wait(STOP_WAIT):
        raise CtlError("failed", f"the daemon did not stop within {STOP_WAIT:g} s")


def front_destroy(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    rel = req.str("name")
    state = _ours(d, s, rel)
    if state is not None:  # `vimage -d EXP`: the experiment ends, on every rank
        _end_here(d, s, state, f"vimage -d {rel}")
        req.close = True
        return {"name": rel}
    far = _elsewhere(d, s, rel)
    if far is None:
        return inner(d, s, req)
    state, rank, _node, full = far
    if s.scoped:
        raise PermissionError(f"vnet {rel} is held by rank {rank}")
    state.control.call(rank, {"op": "destroy", "name": full})
    return {"name": rel}


def front_tool(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    from vimage.emu.mpi_control import TOOL_TIMEOUT

    far = _elsewhere(d, s, req.str("vnet", ""))
    if far is None:
        return inner(d, s, req)
    state, rank, node, full = far
    if req.fds:  # file operands (tcpdump -w): the holding daemon must get the descriptors
        raise _moved(state, rank, node)
    if s.scoped:
        raise PermissionError(f"node {node} is held by rank {rank}: a channel reaches the "
                              "nodes of its own rank only")
    body: dict[str, Any] = {"op": "tool", "vnet": full, "argv": req.strings("argv")}
    if "stdin" in req.args:
        body["stdin"] = req.args["stdin"]
    return state.control.call(rank, body, TOOL_TIMEOUT)


def front_moved(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    """exec and exec_enter: the process's channel and sockets belong to the holding rank."""
    far = _elsewhere(d, s, req.str("vnet", ""))
    if far is None:
        return inner(d, s, req)
    state, rank, node, _ = far
    raise _moved(state, rank, node)


FRONT: Mapping[str, Callable[..., dict[str, Any]]] = MappingProxyType({
    "topo_list": front_topo_list, "topo_show": front_topo_show, "topo_link": front_topo_link,
    "topo_down": front_topo_down, "destroy": front_destroy, "tool": front_tool,
    "exec": front_moved, "exec_enter": front_moved,
})
