"""The daemon's request operations: a table of small functions.

Each op takes the daemon, the session (whose `scope` vnet is fixed on the daemon's
side of the connection) and the request, and returns the reply's fields. It raises
CtlError, PermissionError, LookupError, FileExistsError or ValueError for an error
reply; `Daemon.handle` turns those into replies, so an op never has to. New ops
(the socket relay of `vimage exec`) are added with `Daemon.register`.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import re
import socket
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from vimage.ctl import names, policy, procs
from vimage.ctl.protocol import (
    BAD_REQUEST,
    BAD_VERSION,
    MAX_FDS,
    MAX_STDIN,
    PERMISSION,
    VERSION,
    CtlError,
    shown,
)

if TYPE_CHECKING:
    from vimage.ctl.daemon import Daemon, Session
    from vimage.vnet import Vnet

DEFAULT_CHILDREN_MAX = 256
"""How many vnets processes inside a vnet may create below it, unless children.max says."""

_IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,14}\Z")
_TEXT_RE = re.compile(r"[ -~]{0,255}\Z")


class Request:
    """One decoded request: its fields, the descriptors that came with it, and the
    descriptors to send back (`out_fds`, closed by the transport once sent)."""

    __slots__ = ("args", "close", "fds", "id", "op", "out_fds")

    def __init__(self, rid: int, op: str, args: dict[str, Any], fds: list[int]) -> None:
        self.id = rid
        self.op = op
        self.args = args
        self.fds = fds
        self.out_fds: list[int] = []
        self.close = False  # close the connection once the reply is sent

    def str(self, key: str, default: str | None = None) -> str:
        value = self.args.get(key, default)
        if not isinstance(value, str):
            raise CtlError(BAD_REQUEST, f"{self.op}: field {key!r} must be a string")
        return value

    def int(self, key: str, default: int) -> int:
        value = self.args.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CtlError(BAD_REQUEST, f"{self.op}: field {key!r} must be an integer")
        return value

    def bool(self, key: str) -> bool:
        value = self.args.get(key, False)
        if not isinstance(value, bool):
            raise CtlError(BAD_REQUEST, f"{self.op}: field {key!r} must be true or false")
        return value

    def strings(self, key: str, most: int = 4096) -> list[str]:
        value = self.args.get(key, [])
        if not isinstance(value, list) or len(value) > most \
                or not all(isinstance(v, str) for v in value):
            raise CtlError(BAD_REQUEST, f"{self.op}: field {key!r} must be a list of at most "
                                        f"{most} strings")
        return value

    def base64(self, key: str, most: int) -> bytes:
        """A field of bytes, sent base64-encoded, at most `most` of them."""
        value = self.args.get(key, "")
        try:
            if not isinstance(value, str) or len(value) > (most + 2) // 3 * 4:
                raise ValueError
            return binascii.a2b_base64(value, strict_mode=True)
        except (ValueError, binascii.Error):
            raise CtlError(BAD_REQUEST, f"{self.op}: field {key!r} must be base64 of at most "
                                        f"{most} bytes") from None

    def params(self) -> dict[str, str]:
        value = self.args.get("params", {})
        if not isinstance(value, dict) or len(value) > 256 \
                or not all(isinstance(v, str) for v in value.values()):
            raise CtlError(BAD_REQUEST, f"{self.op}: 'params' must map names to strings")
        return value


OpFunc = Callable[["Daemon", "Session", Request], dict[str, Any]]


class Op(NamedTuple):
    func: OpFunc
    fields: frozenset[str]  # allowed request fields besides "id" and "op"
    host_only: bool = False  # refused on channels scoped to a vnet
    fds: bool = False  # may carry descriptors


class VnetMeta:
    """What the daemon keeps about a vnet besides the kernel's state (jail parameters)."""

    __slots__ = ("children_max", "domainname", "hostname", "jid")

    def __init__(self, jid: int, hostname: str) -> None:
        self.jid = jid
        self.hostname = hostname
        self.domainname = ""
        self.children_max = DEFAULT_CHILDREN_MAX


# -- ops -----------------------------------------------------------------------------------
def op_hello(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    version = req.int("version", -1)
    if version != VERSION:
        raise CtlError(BAD_VERSION, f"protocol version {version} is not supported "
                                    f"(this daemon speaks version {VERSION})", fatal=True)
    req.str("client", "")
    s.hello = True
    return {"version": VERSION, "daemon": "vimaged", "pid": os.getpid(),
            "vnet": s.scope.display_name, "scoped": s.scoped}


def op_nop(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    return {}


def op_status(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    with d.kernel.sched.cond:
        count = sum(1 for _ in names.descendants(s.scope))
    out: dict[str, Any] = {"pid": os.getpid(), "version": VERSION, "vnets": count,
                           "uptime": round(d.uptime(), 3), "vnet": s.scope.display_name}
    if not s.scoped:
        out.update(socket=shown(d.paths.socket), connections=d.connection_count(),
                   doorbells=d.doorbell_count())
    return out


def op_create(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = req.str("name")
    params = req.params()
    kernel = d.kernel
    with kernel.sched.cond:
        scope = d.live_scope(s)
        full = names.full_name(scope, rel)
        if full in names.BASE_ALIASES:
            raise ValueError(f"{rel} is the base vnet's name")
        if full in kernel:
            raise FileExistsError(f"vnet {rel} already exists")
        parent_rel = rel.rpartition(".")[0]
        parent = names.lookup(kernel, scope, parent_rel)  # LookupError names it relatively
        if s.scoped:
            check_children_max(d, parent, scope)
        vnet = kernel.create(full)
        parent_meta = d.meta.get(parent)
        d.next_jid += 1
        d.meta[vnet] = VnetMeta(d.next_jid, rel.rpartition(".")[2])
        if parent_meta is not None:
            d.meta[vnet].domainname = parent_meta.domainname
        try:
            apply_params(d, vnet, params)
        except BaseException:
            kernel.destroy(vnet)
            d.meta.pop(vnet, None)
            raise
    return {"name": rel}


def op_modify(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = req.str("name")
    params = req.params()
    with d.kernel.sched.cond:
        scope = d.live_scope(s)
        vnet = names.lookup(d.kernel, scope, rel)
        if vnet is scope:
            raise PermissionError("a vnet's own parameters are set from its parent")
        apply_params(d, vnet, params)
    return {"name": rel}


def op_destroy(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = req.str("name")
    with d.kernel.sched.cond:
        scope = d.live_scope(s)
        vnet = names.lookup(d.kernel, scope, rel)
        if vnet is scope:
            raise PermissionError("the base vnet cannot be destroyed" if not scope.name
                                  else "a vnet cannot destroy itself; its parent can")
        d.destroy_vnet(vnet)
    return {"name": rel}


def op_list(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = req.str("name", "")
    recursive = req.bool("recursive")
    with d.kernel.sched.cond:
        scope = d.live_scope(s)
        if rel:
            top = names.lookup(d.kernel, scope, rel)
            chosen = [top, *(names.descendants(top) if recursive else ())]
        elif recursive:
            chosen = list(names.descendants(scope))
        else:
            chosen = list(scope.children or ())
        rows = [describe(d, v, scope) for v in sorted(chosen, key=lambda v: v.name)]
    return {"vnets": rows}


def op_ifmove(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    from vimage.net import ifnet

    rel = req.str("vnet")
    ifname = req.str("ifname")
    newname = req.str("newname", "")
    if newname and not _IFNAME_RE.match(newname):
        raise ValueError(f"bad interface name {newname!r}")
    with d.kernel.sched.cond:
        scope = d.live_scope(s)
        target = names.lookup(d.kernel, scope, rel)
        if target is scope:
            raise ValueError(f"{ifname} is already in this vnet")
        ifp = scope.ifaces.get(ifname)
        if ifp is None:
            raise LookupError(f"interface {ifname} does not exist")
        if ifp.is_loopback and ifp.kind == "lo" and ifp.unit == 0:  # cloned lo1... move
            raise PermissionError(f"{ifname}: loopback interfaces cannot be moved")
        final = newname or ifname
        if final in target.ifaces:
            raise FileExistsError(f"interface {final} already exists in vnet {rel}")
        ifnet.move(ifp, target)
        if final != ifname:
            d.rename(ifp, final)
    return {"ifname": final, "vnet": rel}


def op_tool(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """Run a tool. Most run under the kernel lock, screened and run in one hold of it; a
    tool that takes the lock itself (tcpdump, whose -r may wait on a pipe for ever) runs
    outside it, so it can only hold up its own connection."""
    from vimage.cli import locks_itself, run_command

    rel = req.str("vnet", "")
    argv = req.strings("argv")
    if not argv:
        raise CtlError(BAD_REQUEST, "tool: 'argv' is empty")
    files = req.strings("files", MAX_FDS) if "files" in req.args else None
    stdin = req.base64("stdin", MAX_STDIN) if "stdin" in req.args else None
    kernel = d.kernel
    with kernel.sched.cond:
        scope = d.live_scope(s)
        here = names.lookup(kernel, scope, rel)
        if s.scoped:
            policy.screen(argv, here, scope)
        argv, labels = policy.bind_files(argv, req.fds, files)
        if not locks_itself(argv[0]):
            result = run_command(here, argv, stdin=stdin, labels=labels)
            return {"status": result.status, "output": result.output}
    result = run_command(here, argv, stdin=stdin, labels=labels)
    return {"status": result.status, "output": result.output}


def op_exec(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = req.str("vnet", "")
    with d.kernel.sched.cond:
        scope = d.live_scope(s)
        target = names.lookup(d.kernel, scope, rel)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        d.add_doorbell(ours, target, os.fstat(theirs.fileno()).st_ino, procs.peer_pid(s.conn))
    req.out_fds.append(theirs.detach())
    return {"vnet": target.display_name}


def op_exec_enter(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """`vimage exec` is about to fork its program: move it (the caller) into the cgroup
    of vnet `vnet` (ctl/cgroup.py), so the child is born there; exec_started moves it
    back. Where there are no cgroups, nothing moves ("cgroup" is empty)."""
    rel = req.str("vnet", "")
    asker = procs.peer_pid(s.conn)
    if not asker:
        raise PermissionError("exec_enter: the caller's process is unknown")
    with d.kernel.sched.cond:
        target = names.lookup(d.kernel, d.live_scope(s), rel)
    path, reason = "", d.cgroups.reason
    if d.cgroups.available:
        home = d.cgroups.home(asker)
        try:
            path = d.cgroups.attach(target, asker)
        except OSError as exc:
            reason = f"{exc.filename or 'cgroup'}: {exc.strerror or exc}"
        else:
            with d.kernel.sched.cond:
                d.exec_homes[asker] = home
    return {"cgroup": path, "reason": "" if path else reason}


def op_exec_started(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """`vimage exec` forked `pid` (in the cgroup of exec_enter, if any): it goes back to
    its own cgroup, and the child is noted as a process of vnet `vnet`, to be charged
    its rusage by exec_done where no cgroup counts it."""
    rel = req.str("vnet", "")
    pid = req.int("pid", 0)
    asker = procs.peer_pid(s.conn)
    with d.kernel.sched.cond:
        home = d.exec_homes.pop(asker, None)
    if home is not None:
        d.cgroups.send_home(asker, home)
    if pid <= 0 or not asker or procs.parent_pid(pid) != asker:
        raise PermissionError(f"exec_started: process {pid} is not a child of the caller")
    in_cgroup = home is not None
    with d.kernel.sched.cond:
        target = names.lookup(d.kernel, d.live_scope(s), rel)
        if not in_cgroup:  # its rusage is to come (exec_done)
            d.exec_pids[pid] = (target, asker, in_cgroup)
    return {"cgroup": in_cgroup}


def op_exec_done(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    """A process of exec_started has exited: without a cgroup, its CPU time (its rusage,
    and its waited-for descendants', reported by the `vimage exec` that waited for it)
    is charged to its vnet."""
    pid = req.int("pid", 0)
    usec = req.int("cpu_usec", 0)
    if usec < 0:
        raise CtlError(BAD_REQUEST, "exec_done: 'cpu_usec' must not be negative")
    with d.kernel.sched.cond:
        entry = d.exec_pids.get(pid)
        if entry is None or entry[1] != procs.peer_pid(s.conn):
            raise LookupError(f"exec_done: no process {pid} of the caller")
        del d.exec_pids[pid]
        vnet, _asker, in_cgroup = entry
        if not in_cgroup and vnet.alive:
            vnet.cpu.proc_ns += usec * 1000
    return {"charged": not in_cgroup}


def op_stop(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    d.request_stop(s)
    if not d.stopped.wait(60):
        raise CtlError("failed", "the daemon did not stop within 60 s")
    req.close = True
    return {"stopped": True}


OPS: Mapping[str, Op] = MappingProxyType({
    "hello": Op(op_hello, frozenset(("version", "client"))),
    "nop": Op(op_nop, frozenset()),
    "status": Op(op_status, frozenset()),
    "create": Op(op_create, frozenset(("name", "params"))),
    "modify": Op(op_modify, frozenset(("name", "params"))),
    "destroy": Op(op_destroy, frozenset(("name",))),
    "list": Op(op_list, frozenset(("name", "recursive"))),
    "ifmove": Op(op_ifmove, frozenset(("vnet", "ifname", "newname"))),
    "tool": Op(op_tool, frozenset(("vnet", "argv", "files", "stdin")), fds=True),
    "exec": Op(op_exec, frozenset(("vnet",))),
    "exec_enter": Op(op_exec_enter, frozenset(("vnet",))),
    "exec_started": Op(op_exec_started, frozenset(("vnet", "pid"))),
    "exec_done": Op(op_exec_done, frozenset(("pid", "cpu_usec"))),
    "stop": Op(op_stop, frozenset(), host_only=True),
})


# -- helpers -------------------------------------------------------------------------------
def check_children_max(d: Daemon, parent: Vnet, scope: Vnet) -> None:
    """A delegated create counts against children.max of every vnet above the new one."""
    vnet: Vnet | None = parent
    while vnet is not None and vnet.parent is not None:
        meta = d.meta.get(vnet)
        limit = DEFAULT_CHILDREN_MAX if meta is None else meta.children_max
        if sum(1 for _ in names.descendants(vnet)) >= limit:
            if names.within(vnet, scope):
                rel = names.relative(vnet, scope)
                label = f"vnet {rel}" if rel else "this vnet"
            else:
                label = "an enclosing vnet"
            raise CtlError(PERMISSION, f"children.max ({limit}) of {label} reached")
        vnet = vnet.parent


def apply_params(d: Daemon, vnet: Vnet, params: dict[str, str]) -> None:
    """jail(8)-style parameters: children.max, host.hostname, host.domainname, sysctls."""
    meta = d.meta[vnet]
    for name, value in params.items():
        if name == "children.max":
            if not value.isdigit() or int(value) > 1 << 20:
                raise ValueError(f"children.max: {value!r} is not a count")
            meta.children_max = int(value)
        elif name in ("host.hostname", "host.domainname"):
            if not _TEXT_RE.match(value):
                raise ValueError(f"{name}: printable ASCII of at most 255 characters")
            setattr(meta, name[5:], value)
        elif name in ("cpu.weight", "cpu.max"):
            apply_cpu(d, vnet, name, value)
        elif name in d.kernel.oids:
            vnet.sysctl(name, value)
        else:
            raise ValueError(f"unknown parameter {name!r}")


def apply_cpu(d: Daemon, vnet: Vnet, name: str, value: str) -> None:
    """cpu.weight=N (1..10000): the vnet's share of the kernel loop (vimage.cpu), and of
    the CPU for its processes where the cgroup cpu controller is there; cpu.max=QUOTA
    [PERIOD] or max: a limit on its processes, through its cgroup only (OSError if
    there is none). Written to the cgroup and read back from it (`vimage -l -v`)."""
    from vimage.ctl.cgroup import parse_max

    if name == "cpu.weight":
        if not value.isdigit():
            raise ValueError(f"cpu.weight: {value!r} is not a number")
        weight = int(value)
        d.kernel.set_cpu_weight(vnet, weight)  # ValueError if out of range
        if d.cgroups.available:
            with contextlib.suppress(OSError):  # the loop's share is set either way
                d.cgroups.set_limit(vnet, "cpu.weight", str(weight))
        return
    quota, period = parse_max(value)
    d.cgroups.set_limit(vnet, "cpu.max", f"{'max' if quota is None else quota} {period}")


def cpu_figures(d: Daemon, vnet: Vnet) -> dict[str, Any]:
    """The vnet's CPU figures (vimage.cpu), with its processes' from its cgroup."""
    cpu = vnet.cpu
    if d.cgroups.path(vnet) is not None:
        cpu.cgroup_ns = d.cgroups.usage_ns(vnet)
    out = cpu.figures(d.kernel.now_ns())
    out["cgroup"] = d.cgroups.path(vnet) or ""
    out["cpu_max"] = d.cgroups.read(vnet, "cpu.max")
    return out


def describe(d: Daemon, vnet: Vnet, scope: Vnet) -> dict[str, Any]:
    meta = d.meta.get(vnet)
    parent_meta = d.meta.get(vnet.parent) if vnet.parent is not None else None
    ifaces = sorted(vnet.ifaces.values(), key=lambda i: i.index)
    return {
        "name": names.relative(vnet, scope),
        "children": sum(1 for _ in names.descendants(vnet)),
        "children_max": meta.children_max if meta else DEFAULT_CHILDREN_MAX,
        "hostname": meta.hostname if meta else vnet.name.rpartition(".")[2],
        "domainname": meta.domainname if meta else "",
        "jid": meta.jid if meta else 0,
        "pjid": parent_meta.jid if parent_meta else 0,
        "interfaces": [i.name for i in ifaces],
        **cpu_figures(d, vnet),
    }


def check_fds(req_fds: list[int], op: Op) -> None:
    if req_fds and not op.fds:
        raise CtlError(BAD_REQUEST, "this request takes no descriptors")
    if len(req_fds) > MAX_FDS:
        raise CtlError(BAD_REQUEST, f"at most {MAX_FDS} descriptors")
