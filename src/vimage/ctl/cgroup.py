"""Linux cgroup v2 for the processes of vnets (`vimage exec`): accounting and limits.

vimaged keeps a subtree of its own, `<cgroup2 mount>/vimage/vimaged-<pid>-<ino>`, and
in it a cgroup per vnet whose processes it was asked to run or limit, nested as the
vnets are (`a@3/b@5` for vnet a.b; the serial tells a vnet from a later one of the
same name), each with a leaf `self` holding the vnet's own processes (cgroup v2 puts
processes only in leaves once a controller is enabled below a cgroup). Nesting makes
a limit cover the subtree: a process in a vnet limited by cpu.max cannot escape the
limit by creating a child vnet and running there. A process started by
`vimage exec NAME` is born there: the daemon moves the client into the cgroup just
before it forks the program and back to its own cgroup just after (a child starts in
its parent's cgroup), so the program and everything it forks count to the vnet from
their first instruction: `cpu.stat`'s usage_usec is the vnet's process CPU time, and `cpu.max`
and `cpu.weight` (Documentation/admin-guide/cgroup-v2.rst, "CPU") limit them once the
cpu controller is enabled down the subtree. Destroying the vnet removes its cgroup;
the processes still in it (the daemon kills those holding the vnet's channel, as
before; one that closed its channel has left the vnet, ctl/procs.py) are moved to
the daemon's own cgroup first.

Where there is no writable cgroup2 hierarchy (not Linux, not root, a read-only
mount), `Cgroups.root` is None and `reason` says why; the client then reports each
process's rusage as it exits instead (ops `exec_attach`/`exec_done`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from vimage.vnet import Vnet

DEFAULT_PERIOD = 100_000
"""cpu.max's default period in microseconds (cgroup-v2.rst)."""
MIN_QUOTA, MAX_PERIOD = 1000, 1_000_000  # the kernel's bounds on cpu.max (1 ms, 1 s)
LEAF = "self"  # the leaf cgroup of a vnet's own processes
REMOVE_WAIT = 5.0  # seconds a destroyed vnet's cgroup is retried while its processes die


def cgroup2_mount(mounts: str = "/proc/self/mounts") -> str | None:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a
    hybrid system), or None."""
    try:
        with open(mounts, encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "cgroup2":
                    return fields[1].replace("\\040", " ")
    except OSError:
        pass
    return None


def parse_max(text: str) -> tuple[int | None, int]:
    """`cpu.max` as given to vimage -m (`QUOTA [PERIOD]`, `max [PERIOD]`, in
    microseconds; a `/` may stand for the space): (quota or None for max, period)."""
    words = text.replace("/", " ").split()
    if not 1 <= len(words) <= 2:
        raise ValueError(f"cpu.max: {text!r} is not QUOTA [PERIOD] (microseconds) or max")
    period = DEFAULT_PERIOD
    if len(words) == 2:
        if not words[1].isdigit() or not MIN_QUOTA <= int(words[1]) <= MAX_PERIOD:
            raise ValueError(f"cpu.max: period {words[1]!r} is not {MIN_QUOTA}..{MAX_PERIOD}")
        period = int(words[1])
    if words[0] == "max":
        return None, period
    if not words[0].isdigit() or int(words[0]) < MIN_QUOTA:
        raise ValueError(f"cpu.max: quota {words[0]!r} is not max or at least {MIN_QUOTA}")
    return int(words[0]), period


class Cgroups:
    """The daemon's cgroup subtree (see the module docstring)."""

    def __init__(self, root: str | None, reason: str = "") -> None:
        self.root = root
        self.reason = reason
        self._lock = threading.Lock()
        self._paths: dict[Vnet, str] = {}

    @classmethod
    def open(cls, name: str, mount: str | None = None) -> Cgroups:
        """The subtree `<mount>/vimage/<name>`, made now; unavailable (root None) if it
        cannot be."""
        mount = mount or cgroup2_mount()
        if mount is None:
            return cls(None, "no cgroup2 hierarchy is mounted")
        root = os.path.join(mount, "vimage", name)
        _prune(os.path.dirname(root))
        try:
            os.makedirs(root, exist_ok=True)
            probe = os.path.join(root, "cgroup.procs")
            if not os.access(probe, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable", probe)
        except OSError as exc:
            return cls(None, f"{root}: {exc.strerror or exc}")
        return cls(root)

    @property
    def available(self) -> bool:
        return self.root is not None

    def path(self, vnet: Vnet) -> str | None:
        """The vnet's cgroup if it has one."""
        return self._paths.get(vnet)

    def ensure(self, vnet: Vnet) -> str:
        """The vnet's cgroup, made on first use; OSError if cgroups are unavailable."""
        path = self._paths.get(vnet)
        if path is not None:
            return path
        if self.root is None:
            raise OSError(errno.ENOTSUP, f"no cgroups for vnet processes ({self.reason})")
        parent = vnet.parent
        above = self.root if parent is None or parent.parent is None else self.ensure(parent)
        path = os.path.join(above, f"{vnet.name.rpartition('.')[2]}@{vnet.serial}")
        os.makedirs(os.path.join(path, LEAF), exist_ok=True)
        with self._lock:
            self._paths[vnet] = path
        return path

    def attach(self, vnet: Vnet, pid: int) -> str:
        """Move process `pid` into the vnet's cgroup (its leaf); the cgroup's path."""
        path = self.ensure(vnet)
        _write(os.path.join(path, LEAF, "cgroup.procs"), str(pid))
        return path

    def home(self, pid: int) -> str:
        """The cgroup process `pid` is in now (a directory under the mount), or ""."""
        assert self.root is not None
        try:
            with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("0::/"):
                        mount = os.path.dirname(os.path.dirname(self.root))
                        return os.path.join(mount, line[4:].rstrip("\n"))
        except OSError:
            pass
        return ""

    def send_home(self, pid: int, home: str) -> None:
        """Move process `pid` back to cgroup `home` (from `home()`)."""
        if home:
            with contextlib.suppress(OSError):
                _write(os.path.join(home, "cgroup.procs"), str(pid))

    def usage_ns(self, vnet: Vnet) -> int:
        """usage_usec of the cpu.stat of the vnet's own processes (its leaf: not those
        of its children, which have their own figures) in ns; 0 without a cgroup."""
        path = self._paths.get(vnet)
        if path is None:
            return 0
        try:
            with open(os.path.join(path, LEAF, "cpu.stat"), encoding="ascii") as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) * 1000
        except (OSError, ValueError):
            pass
        return 0

    # -- limits ---------------------------------------------------------------------------
    def enable_cpu(self, path: str) -> None:
        """Enable the cpu controller in every cgroup from the mount down to the parent of
        `path`, so `path` has cpu.max and cpu.weight; OSError (ENOTSUP) if it cannot be."""
        assert self.root is not None
        mount = os.path.dirname(os.path.dirname(self.root))
        parents = [os.path.dirname(path)]
        while parents[-1] != mount and len(parents[-1]) > len(mount):
            parents.append(os.path.dirname(parents[-1]))
        for parent in reversed(parents):
            control = os.path.join(parent, "cgroup.subtree_control")
            try:
                with open(control, encoding="ascii") as fh:
                    if "cpu" in fh.read().split():
                        continue
                _write(control, "+cpu")
            except OSError as exc:
                raise OSError(errno.ENOTSUP, f"the cgroup cpu controller is not available "
                                             f"here ({control}: {exc.strerror or exc})"
                              ) from None

    def set_limit(self, vnet: Vnet, name: str, value: str) -> str:
        """Write cpu.max or cpu.weight of the vnet's cgroup and read it back."""
        path = self.ensure(vnet)
        self.enable_cpu(path)
        target = os.path.join(path, name)
        _write(target, value)
        return self.read(vnet, name)

    def read(self, vnet: Vnet, name: str) -> str:
        path = self._paths.get(vnet)
        if path is None:
            return ""
        try:
            with open(os.path.join(path, name), encoding="ascii") as fh:
                return fh.read().strip()
        except OSError:
            return ""

    # -- removal --------------------------------------------------------------------------
    def retire_dead(self, among: Iterable[Vnet] | None = None) -> None:
        """Kill what is left in the cgroups of destroyed vnets (of `among`, the vnets just
        destroyed, else of all) and remove them, in a thread of its own (their processes
        take a moment to die)."""
        with self._lock:
            candidates = self._paths if among is None else [v for v in among if v in self._paths]
            dead = [v for v in candidates if not v.alive]
            paths = [self._paths.pop(v) for v in dead]
        if paths:
            threading.Thread(target=_remove_all, args=(paths, self.home(os.getpid())),
                             name="vimaged-cgroup", daemon=True).start()

    def close(self) -> None:
        """Remove every cgroup of the daemon's, then its subtree (the daemon stops)."""
        with self._lock:
            paths = list(self._paths.values())
            self._paths.clear()
        if self.root is None:
            return
        _remove_all(paths, self.home(os.getpid()))
        with contextlib.suppress(OSError):
            os.rmdir(self.root)
        with contextlib.suppress(OSError):  # the shared parent, once no daemon uses it
            os.rmdir(os.path.dirname(self.root))


def _prune(parent: str) -> None:
    """Remove the subtrees of daemons that died without stopping (`vimaged-PID-...` with
    no process PID), those of their cgroups no process is left in."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        pid = entry.split("-")[1] if entry.startswith("vimaged-") else ""
        if not pid.isdigit() or os.path.exists(f"/proc/{pid}"):
            continue
        subtree = os.path.join(parent, entry)
        for top, dirs, _files in os.walk(subtree, topdown=False):  # deepest first
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(top, name))
        with contextlib.suppress(OSError):
            os.rmdir(subtree)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


def _remove_all(paths: list[str], refuge: str) -> None:
    """Remove vnets' cgroups, deepest first, moving the processes left in their leaves to
    `refuge` first (again while one of them forks into a cgroup being emptied)."""
    deadline = time.monotonic() + REMOVE_WAIT
    for path in sorted(paths, key=len, reverse=True):
        leaf = os.path.join(path, LEAF)
        while True:
            _evict(leaf, refuge)
            try:
                if os.path.isdir(leaf):
                    os.rmdir(leaf)
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)


def _evict(path: str, refuge: str) -> None:
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as fh:
            pids = fh.read().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            _write(os.path.join(refuge, "cgroup.procs"), pid)
