"""A partitioned experiment in the daemon of each rank (`vimage topo serve`, docs/mpi.md).

vimage.emu.mpi_serve runs a Daemon on every rank, holding that rank's part of the
experiment, and `install`s on it two things: the front (vimage.ctl.partfront), which
answers a request about a node another rank holds through that rank, and, here, the
`part_*` requests that vimage.emu.mpi_control sends between ranks: this rank's share of
`topo show` (its nodes, its links and its ends of cut links, with counters), of `topo
link` (a cut link is changed on both ranks: each end's pipe), captures at a local link
end (frames kept and handed out by polls), `topo capture` relayed from another host
(`part_pcap`), its plain vnet list and its figures.
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
from vimage.ctl.protocol import BAD_REQUEST, CtlError

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
    from vimage.ctl.partfront import FRONT

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


def ours(d: Daemon, s: Session, rel: str) -> PartState | None:
    """The partitioned experiment, if `rel` (from the session's scope) names it."""
    state: PartState | None = d.partition
    if state is None or not rel:
        return None
    return state if names.full_name(d.live_scope(s), rel) == state.full else None


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
            updated = checked_link(model, params_of(params))
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


def params_of(params: Any) -> dict[str, str | None]:
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
    """`action` start (link `index`, `side`; `count`, `filter`), poll (`capture`, `wait`
    seconds for frames) or stop (`capture`) a capture at a link end this rank holds."""
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
            return {"capture": cid, "ifname": end.name, "linktype": session.linktype}
    cid = req.int("capture", -1)
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


def op_part_pcap(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """`topo capture` of a link end on another host (where the client cannot follow a
    `moved`): the frames come from the holding rank through the request layer and are
    written here, to the pcap file the client passed; `count` and/or `duration` end it."""
    import os
    import time

    from vimage.emu.mpi_control import POLL_WAIT
    from vimage.wire.pcap import DEFAULT_SNAPLEN, PcapWriter

    rel = req.str("name")
    state = ours(d, s, rel)
    if state is None:
        raise LookupError(f"no partitioned experiment {rel}")
    if len(req.fds) != 1:
        raise CtlError(BAD_REQUEST, "part_pcap: the pcap file must come as one descriptor")
    count = req.int("count", 0) or None
    duration = req.args.get("duration")
    if duration is not None and (not isinstance(duration, int | float) or duration < 0):
        raise CtlError(BAD_REQUEST, "part_pcap: 'duration' must be a number of seconds")
    control = state.control
    handle = control.capture_start(req.str("a"), req.str("b"), count)
    deadline = None if duration is None else time.monotonic() + duration
    out = os.fdopen(os.dup(req.fds[0]), "wb")
    try:
        writer = PcapWriter(out, handle["linktype"])
        while True:
            left = POLL_WAIT if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            frames, still = control.capture_poll(handle, min(POLL_WAIT, left))
            for stamp, data in frames:
                writer.write(stamp, data, len(data))
            if not still:
                break
        writer.close()
    finally:
        out.close()
        result = control.capture_stop(handle)
    return {"ifname": handle["ifname"], "linktype": handle["linktype"],
            "snaplen": DEFAULT_SNAPLEN, "captured": result["captured"],
            "received": result["received"], "dropped": result["dropped"]}


def op_part_stats(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    with d.kernel.sched.cond:
        state = _state(d, req)
        sched = d.kernel.sched
        tunnels = state.tunnels
        pipes = tunnels.pipes.values() if tunnels is not None else ()
        info = state.ranks[state.rank]
        return {"stats": {
            "rank": state.rank, "nodes": len(state.exp.nodes),
            "converged": state.exp.converged(),
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
        ("name", "action", "index", "side", "count", "filter", "capture", "wait")),
        host_only=True),
    "part_stats": ops.Op(op_part_stats, frozenset(("name",)), host_only=True),
    # the plain `list` of this rank's vnets (the front's `list` asks the others for it)
    "part_list": ops.Op(ops.op_list, frozenset(("name", "recursive")), host_only=True),
    "part_pcap": ops.Op(op_part_pcap, frozenset(("name", "a", "b", "count", "duration")),
                        host_only=True, fds=True),
})
