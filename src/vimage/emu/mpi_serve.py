"""An interactive partitioned experiment: `mpirun -n N vimage topo serve FILE` (docs/mpi.md).

Every rank builds its partition as `topo run --realtime` does (vimage.emu.mpi: a keyed
kernel on the real clock, each cut link a VXLAN tunnel, vimage.emu.mpi_realtime) and
then serves it with a vimaged Daemon of its own, in this process: rank 0 on the control
socket a plain vimaged would use (`vimage --socket PATH`, $VIMAGE_SOCKET, the default),
rank K on `PATH.rank-K`. The ranks are joined by a PartitionedControl mesh
(vimage.emu.mpi_control) and each daemon gets the front of vimage.ctl.partops, so
`vimage topo show|link|capture|exec|down`, `vimage exec NAME.NODE` and every tool work
from rank 0's socket whatever rank holds the node.

The start is collective: the ranks exchange (one MPI alltoall each time) their tunnel
sockets, control address, daemon socket and host, after building and again after
opening their daemons; a rank that failed says so (one line, naming itself and its
nodes) and every rank undoes what it made and exits 1. Then MPI is no longer used.

The end: `vimage topo down NAME` (or `vimage -d NAME`), SIGINT or SIGTERM (what mpirun
sends its ranks on ^C), or a `stop` from another rank: each rank stops its daemon
(every vnet, timer, socket and the socket file go), tells the others, stops its tunnels
and exits 0. A rank whose control connection ends without a `stop` (kill -9, a crash)
is dead: every other rank prints `vimage topo serve: rank 1 of 2 (nodes pc2, r2) died:
ending experiment lab`, tears down the same way and exits 1 (without MPI_Finalize, which
could wait for the dead rank).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from vimage.ctl import partops, paths
from vimage.ctl.daemon import Daemon, Session
from vimage.emu.model import Topology
from vimage.emu.mpi import Engine, RunError, world
from vimage.emu.mpi_control import PartitionedControl

FAIL_ENV = "VIMAGE_MPI_SERVE_FAIL_RANK"
"""Tests: the rank named here raises once its experiment is up (a crashing rank)."""
FINISH_WAIT = 3.0
"""Seconds a stopping rank waits for the others' `stop` (or end) before calling them dead."""


def rank_paths(front: paths.Paths, rank: int) -> paths.Paths:
    """The daemon files of `rank`: rank 0 has the front's, rank K `SOCKET.rank-K`."""
    if rank == 0:
        return front
    sock = f"{front.socket}.rank-{rank}"
    return paths.Paths(sock, sock + ".lock", sock + ".start", sock + ".pid", sock + ".log",
                       front.default_dir)


class _Serve:
    """One rank of `topo serve`: what it made, so that any failure undoes all of it."""

    def __init__(self, engine: Engine, where: paths.Paths, out: Callable[[str], None]) -> None:
        self.engine = engine
        self.comm = engine.comm
        self.where = where
        self.out = out
        self.control: PartitionedControl | None = None
        self.daemon: Daemon | None = None
        self.opened = False
        self.reported: set[int] = set()
        self._lock = threading.Lock()

    @property
    def rank(self) -> int:
        return int(self.comm.rank)

    def describe(self, rank: int) -> str:
        assert self.control is not None
        return self.control.describe(rank)

    def exchange(self, mine: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.comm.alltoall([mine] * self.comm.size))

    # -- the start --------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        """Build the partition, bind the tunnels, listen for the other ranks."""
        engine = self.engine
        engine.build()
        assert engine.exp is not None and engine.tunnels is not None
        self.control = PartitionedControl(self.rank, self.comm.size, engine.topology,
                                          engine.assignment, self._handle,
                                          str(engine.exp.name), engine.bind)
        return {"tunnels": engine.tunnels.addresses(), "control": self.control.listen(),
                "socket": self.where.socket, "host": socket.gethostname(), "pid": os.getpid()}

    def connect(self, everyone: list[dict[str, Any]]) -> None:
        engine = self.engine
        assert self.control is not None and engine.tunnels is not None
        addresses: dict[tuple[int, str], tuple[str, int]] = {}
        for info in everyone:
            addresses.update(info["tunnels"])
        engine.tunnels.connect(addresses)
        engine.tunnels.start()
        self.control.connect([tuple(info["control"]) for info in everyone])  # type: ignore[misc]
        self.daemon = Daemon(self.where, kernel=engine.kernel)

    def open(self) -> None:
        assert self.daemon is not None
        self.daemon.open()  # starts the kernel: the experiment runs from here
        self.opened = True

    def install(self, everyone: list[dict[str, Any]]) -> None:
        engine, daemon, control = self.engine, self.daemon, self.control
        assert engine.exp is not None and daemon is not None and control is not None
        ranks = [{"socket": i["socket"], "host": i["host"], "pid": i["pid"]} for i in everyone]
        state = partops.PartState(engine.exp, control, ranks, self.end, engine.tunnels)
        partops.install(daemon, state)
        control.on_stop = lambda rank, why: daemon.request_stop()
        control.on_dead = self.dead

    def _handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """A request from another rank: run by this rank's daemon, on a host session."""
        daemon = self.daemon
        if daemon is None or not self.opened:
            return {"id": body.get("id"), "ok": False, "error": {
                "code": "failed", "message": f"rank {self.rank} is not serving yet"}}
        session = Session(None, daemon.kernel.base, scoped=False)  # type: ignore[arg-type]
        session.hello = True
        reply, fds, _ = daemon.handle(session, body, [])
        for fd in fds:  # requests between ranks carry no descriptors; never leak one
            with contextlib.suppress(OSError):
                os.close(fd)
        return reply

    # -- the end ----------------------------------------------------------------------------
    def end(self, why: str) -> None:
        """`topo down` here: tell every other rank (this daemon is stopped by the op)."""
        if self.control is not None:
            self.control.stop(why)

    def dead(self, rank: int) -> None:
        """Another rank died (a reader thread): say so once, and stop serving."""
        self.report(rank)
        if self.daemon is not None:
            self.daemon.request_stop()

    def report(self, rank: int) -> None:
        with self._lock:
            if rank in self.reported:
                return
            self.reported.add(rank)
        name = self.engine.exp.name if self.engine.exp is not None else "?"
        print(f"vimage topo serve: {self.describe(rank)} died: ending experiment {name}",
              file=sys.stderr, flush=True)

    def teardown(self, why: str, failed: bool = False) -> list[int]:
        """Undo everything; the ranks found dead. A failing rank sends no stop: the others
        must see it go as a death."""
        dead: list[int] = []
        if self.daemon is not None:
            partops.close(self.daemon)
            if self.opened:
                self.daemon.request_stop()
                if not self.daemon.stopped.is_set():
                    with contextlib.suppress(Exception):
                        self.daemon.serve_forever()  # runs the shutdown at once
            else:
                self.daemon.sockets.close()
                self.daemon.abandon()
        if self.control is not None:
            if not failed:
                self.control.stop(why)
                dead = self.control.finish(FINISH_WAIT)
            self.control.close()
        self.engine.close()
        if self.rank > 0:  # nothing of this rank's own files stays
            with contextlib.suppress(OSError):
                os.unlink(self.where.lock)
        return dead

    def sweep(self, everyone: list[dict[str, Any]], dead: list[int]) -> None:
        """The files of a dead rank on this host (a killed daemon cannot remove them), once
        nothing listens on its socket any more."""
        host = socket.gethostname()
        for rank in dead:
            info = everyone[rank]
            if info["host"] != host or _listening(info["socket"]):
                continue
            # the front's lock stays, as a vimaged leaves it; a rank's own lock goes
            for suffix in ("", ".pid", *((".lock",) if rank > 0 else ())):
                with contextlib.suppress(OSError):
                    os.unlink(info["socket"] + suffix)


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def serve(topology: Topology, socket_option: str | None = None, name: str | None = None,
          seed: int = 1, bind: str = "127.0.0.1", skip_ipv6: bool = False,
          out: Callable[[str], None] = print) -> int:
    """`vimage topo serve` on this rank: 0 after a normal end, 1 after a failure or a
    death (then the caller should leave with os._exit: see main)."""
    try:
        comm = world()
    except RunError as exc:
        print(f"vimage topo serve: {exc}", file=sys.stderr)
        return 1
    front = paths.resolve(socket_option)
    engine = Engine(topology, comm, seed, None, skip_ipv6, realtime=True, bind=bind,
                    name=name or topology.name)
    try:
        engine.plan()
    except RunError as exc:  # the same on every rank: rank 0 says it
        if comm.rank == 0:
            print(f"vimage topo serve: {exc}", file=sys.stderr)
        return 1
    run = _Serve(engine, rank_paths(front, comm.rank), out)
    nodes = sorted(engine.local_nodes())
    shown = ", ".join(nodes[:8]) + (f" ... ({len(nodes)} nodes)" if len(nodes) > 8 else "")
    who = f"rank {comm.rank} of {comm.size} (nodes {shown or '-'})"

    def step(action: Callable[[], Any]) -> tuple[Any, str | None]:
        try:
            return action(), None
        except Exception as exc:
            return None, f"vimage topo serve: {who} failed: {type(exc).__name__}: {exc}"

    mine, problem = step(run.build)
    everyone = run.exchange({"ok": problem is None, **(mine or {})})
    if problem is None and all(i["ok"] for i in everyone):
        _, problem = step(lambda: run.connect(everyone))
        if problem is None:
            _, problem = step(run.open)
        if not all(i["ok"] for i in run.exchange({"ok": problem is None})):
            problem = problem or ""
    elif problem is None:
        problem = ""  # another rank failed and says so
    if problem is not None:
        if problem:
            print(problem, file=sys.stderr, flush=True)
        run.teardown("the start failed", failed=True)
        return 1
    run.install(everyone)
    handlers = {s: signal.signal(s, lambda *_: run.daemon.signal_stop())  # type: ignore[union-attr]
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if comm.rank == 0:
            for line in ready_lines(engine, everyone, run.control):  # type: ignore[arg-type]
                out(line)
            sys.stdout.flush()
        if os.environ.get(FAIL_ENV) == str(comm.rank):
            raise RuntimeError(f"{FAIL_ENV} asked this rank to fail")
        assert run.daemon is not None
        run.daemon.serve_forever()
    except Exception as exc:
        print(f"vimage topo serve: {who} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        run.teardown("failed", failed=True)
        return 1
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    dead = run.teardown(f"rank {comm.rank} stopped")
    for rank in dead:
        run.report(rank)
    run.sweep(everyone, dead)
    if not dead and comm.rank == 0:
        out(f"topo serve: experiment {engine.name} down on every rank")
        sys.stdout.flush()
    return 1 if dead else 0


def ready_lines(engine: Engine, everyone: list[dict[str, Any]],
                control: PartitionedControl) -> list[str]:
    """What rank 0 prints once every rank serves."""
    from vimage.emu import partition as parting

    cut = len(parting.cut_links(engine.topology, engine.assignment))
    lines = [f"topo serve: experiment {control.name}, {len(engine.topology.nodes)} nodes on "
             f"{control.size} rank(s), {cut} cut link(s) as VXLAN tunnels; "
             f"control socket {everyone[0]['socket']}"]
    for rank, info in enumerate(everyone):
        nodes = control.nodes_of(rank)
        shown = ", ".join(nodes[:8]) + (f" ... ({len(nodes)} nodes)" if len(nodes) > 8 else "")
        lines.append(f"rank {rank} (host {info['host']}, pid {info['pid']}): {shown or '-'}; "
                     f"socket {info['socket']}")
    return lines


def main(topology: Topology, socket_option: str | None = None, name: str | None = None,
         seed: int = 1, bind: str = "127.0.0.1", skip_ipv6: bool = False) -> int:
    """`vimage topo serve`: a normal end returns 0 (MPI is finalised as the process
    exits); a failure or a dead rank leaves at once with status 1, flushing first."""
    status = serve(topology, socket_option, name, seed, bind, skip_ipv6)
    if status != 0 and any(os.environ.get(v) for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
