"""The front of a partitioned experiment in each rank's daemon (docs/mpi.md).

vimage.ctl.partops.install wraps these ops of the daemon: `topo_list`, `topo_show`,
`topo_link`, `topo_down`, `destroy`, `list`, `tool`, `exec` and `exec_enter`. A request
about a node another rank holds is answered by that rank, through the request layer
(vimage.emu.mpi_control): a tool runs there and its output comes back (across hosts
too); a request that must pass descriptors (`exec`, whose channel and relayed sockets
belong to the holding daemon, and a tool with file operands such as `tcpdump -w`) is
answered `moved` with the holding daemon's socket and host, which the vimage command
follows on the same host. `topo down` (or `vimage -d` of the experiment) ends the
experiment on every rank. Requests about anything else go to the ordinary ops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.ctl import names, ops
from vimage.ctl.partops import checked_link, ours, params_of
from vimage.ctl.protocol import MOVED, CtlError

if TYPE_CHECKING:
    from vimage.ctl.daemon import Daemon, Session
    from vimage.ctl.ops import Request
    from vimage.ctl.partops import PartState

STOP_WAIT = 60.0
"""Seconds `topo down` waits for this rank's daemon to have stopped."""


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
            if ours(d, s, row["name"]) is not None:
                row.update(nodes=len(topo.nodes), links=len(topo.links))
    return result


def front_list(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    """`vimage -l [-r] [NAME]` from the host: the nodes other ranks hold are listed too
    (their rows come from their daemons: JIDs are per rank), and the experiment vnet's
    `children` counts every rank's."""
    state: PartState | None = d.partition
    rel = req.str("name", "")
    if state is None or s.scoped:
        return inner(d, s, req)
    control = state.control
    far = _elsewhere(d, s, rel) if rel else None
    if far is not None:
        _, rank, _, full = far
        return control.call(rank, {"op": "part_list", "name": full,
                                   "recursive": req.bool("recursive")})
    rows = inner(d, s, req)["vnets"]
    covers = req.bool("recursive") and (not rel or rel == state.full
                                        or state.full.startswith(rel + "."))
    mine = next((r for r in rows if r["name"] == state.full), None)
    if not covers and mine is None:
        return {"vnets": rows}
    others = [r for r in range(control.size) if r != state.rank]
    for part in control.call_all({"op": "part_list", "name": state.full, "recursive": True},
                                 others):
        for row in part["vnets"]:
            if row["name"] == state.full:
                if mine is not None:
                    mine["children"] += row["children"]
            elif covers:
                rows.append(row)
    return {"vnets": sorted(rows, key=lambda r: r["name"])}


def front_topo_show(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    rel = req.str("name")
    state = ours(d, s, rel)
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
    state = ours(d, s, rel)
    if state is None:
        return inner(d, s, req)
    a, b = req.str("a"), req.str("b")
    params = params_of(req.args.get("params", {}))
    _, model = state.control.find_link(a, b)
    checked_link(model, params)  # a bad value changes nothing, on any rank
    row = state.control.link_set(a, b, params)
    return {"link": _rescope(row, d.live_scope(s).name)}


def front_topo_down(d: Daemon, s: Session, req: Request, inner: ops.OpFunc) -> dict[str, Any]:
    rel = req.str("name")
    state = ours(d, s, rel)
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
    state = ours(d, s, rel)
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
    "exec": front_moved, "exec_enter": front_moved, "list": front_list,
})
