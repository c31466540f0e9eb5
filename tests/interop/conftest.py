"""Interop fixtures: vnets wired to real Linux network namespaces through TAP devices.

Every test gets a `lab`: a real-clock Kernel (run in the background once the
test calls `lab.start()`), plus helpers that create Linux network namespaces
(`vimg-<pid>-<n>`), join them to vnets with a TAP interface, and run real
programs (ping, traceroute, socat, python3) inside them. Whatever a test
creates is torn down even when it fails: spawned processes are killed, the
kernel thread is stopped, TAP devices are destroyed and the namespaces deleted;
an exception the kernel loop swallowed (`sched.errors`) fails the test. A
session-wide check then asserts that nothing of ours is left: no namespace with
our prefix, no `vimg*` link in the host namespace, no TAP device open, no
process running.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from vimage.kernel import Kernel
from vimage.net.tap import TUN_PATH, create_tap
from vimage.wire.ethernet import mac_ntoa

if TYPE_CHECKING:
    from vimage.net.tap import Tap
    from vimage.vnet import Vnet

NS_PREFIX = f"vimg-{os.getpid()}-"
LINK_PREFIX = "vimg"
RUN_TIMEOUT = 20.0  # no single program of a test may run longer than this

# Programs a test may need, with the Debian package that provides each.
PACKAGES = {
    "ping": "iputils-ping",
    "traceroute": "traceroute",
    "socat": "socat",
    "ip": "iproute2",
}


def requirements_missing() -> str | None:
    """Why the interop tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "interop tests need root for network namespaces and TAP devices"
    if not os.path.exists(TUN_PATH):
        return f"interop tests need {TUN_PATH} (the TUN/TAP driver)"
    if shutil.which("ip") is None:
        return "interop tests need the `ip` program (Debian package iproute2)"
    return None


def need(program: str) -> str:
    """The path of `program`; skip the test, naming the program, if it is missing."""
    path = shutil.which(program)
    if path is None:
        package = PACKAGES.get(program, program)
        pytest.skip(f"needs the `{program}` program (Debian package {package})")
    return path


def host_links() -> list[str]:
    """Names of the `vimg*` links in the host (this process's) network namespace."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True,
                         timeout=RUN_TIMEOUT).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(LINK_PREFIX):
                names.append(name)
    return names


def our_tap_links() -> set[str]:
    """Names of the TAP devices whose file descriptors this process holds open."""
    names = set()
    fd_dir = f"/proc/{os.getpid()}/fdinfo"
    for fd in os.listdir(fd_dir):
        try:
            with open(os.path.join(fd_dir, fd)) as f:
                info = f.read()
        except OSError:
            continue
        match = re.search(r"^iff:\s*(\S+)", info, re.MULTILINE)
        if match:
            names.add(match.group(1))
    return names


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True,
                         timeout=RUN_TIMEOUT).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                         timeout=RUN_TIMEOUT).stdout
    return [int(p) for p in out.split() if p.isdigit()]


@dataclass
class Registry:
    """Session-wide record of what the interop tests created (for the final check)."""

    counter: Iterator[int] = field(default_factory=itertools.count)
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def new_name(self) -> str:
        name = f"{NS_PREFIX}{next(self.counter)}"
        self.namespaces.append(name)
        return name

    def leftovers(self) -> list[str]:
        """What of ours still exists: namespaces, host links, live processes."""
        problems = [f"namespace {ns}" for ns in netns_list() if ns.startswith(NS_PREFIX)]
        links = host_links()
        if os.environ.get("PYTEST_XDIST_WORKER"):  # other workers may hold TAPs right now
            ours = our_tap_links()
            links = [name for name in links if name in ours]
        problems += [f"host link {name}" for name in links]
        problems += [f"TAP device {name} still open in this process (a namespace or the host)"
                     for name in sorted(our_tap_links())]
        problems += [f"process {p.pid} ({p.args!r})" for p in self.processes
                     if p.poll() is None]
        return problems


@dataclass
class Link:
    """A TAP link: the vnet's end (`tap`) and the Linux end (`dev` in namespace `ns`)."""

    tap: Tap
    ns: str
    dev: str
    linux_addr: str
    linux_mac: str
    our_addr: str
    our_mac: str


class Lab:
    """One test's world: a kernel with vnets, Linux namespaces and the programs in them."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.kernel = Kernel(clock="real")
        self.namespaces: list[str] = []
        self.taps: list[Tap] = []  # made by tap() (the tools' taps are found at teardown)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.threads: list[threading.Thread] = []

    # -- Linux namespaces --------------------------------------------------------
    def netns(self) -> str:
        """A new Linux network namespace with its loopback up."""
        name = self.registry.new_name()
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True,
                       timeout=RUN_TIMEOUT)
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        return name

    def ip(self, ns: str, *args: str) -> str:
        """`ip -n NS ARGS...`; raises (with ip's message) if it fails."""
        proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
        if proc.returncode != 0:
            raise AssertionError(f"ip -n {ns} {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def run(self, ns: str, *argv: str,
            timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a program inside `ns` to completion (bounded by `timeout`)."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=timeout)

    def spawn(self, ns: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start a program inside `ns` in the background; killed at teardown."""
        # unbuffered, so that select() in readline() sees every line not yet read
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self.processes.append(proc)
        self.registry.processes.append(proc)
        return proc

    def python(self, ns: str, code: str, *args: str,
               timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet inside `ns` (same interpreter as the tests)."""
        return self.run(ns, sys.executable, "-c", code, *args, timeout=timeout)

    def spawn_python(self, ns: str, code: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a Python snippet inside `ns` in the background; killed at teardown."""
        return self.spawn(ns, sys.executable, "-u", "-c", code, *args)

    @staticmethod
    def readline(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> str:
        """The next line `proc` prints, waiting at most `timeout` seconds for it."""
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"{proc.args!r} printed nothing in {timeout} s")
        line = proc.stdout.readline().decode()
        if not line:
            proc.wait(timeout=5)
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"{proc.args!r} exited ({proc.returncode}): {err.strip()}")
        return line.rstrip("\n")

    def set_forwarding(self, ns: str, on: bool = True) -> None:
        """Turn IPv4 forwarding on in a Linux namespace (no sysctl program needed)."""
        proc = self.python(ns, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                           "/proc/sys/net/ipv4/ip_forward", str(int(on)))
        assert proc.returncode == 0, proc.stderr

    # -- vnets and TAP links -----------------------------------------------------------
    def vnet(self, name: str, forwarding: bool = False) -> Vnet:
        vnet = self.kernel.create(name)
        if forwarding:
            assert vnet.cmd("sysctl net.inet.ip.forwarding=1").status == 0
        return vnet

    def tap(self, vnet: Vnet, ns: str, ours: str, linux: str, mtu: int = 1500) -> Link:
        """Join `vnet` to namespace `ns` with a TAP link; address and bring up both sides.

        `ours` and `linux` are 'a.b.c.d/len' for the vnet's and Linux's ends.
        """
        tap = create_tap(vnet, netns=ns, mtu=mtu)
        self.taps.append(tap)
        tap.add_addr(ours)
        with self.kernel.sched.cond:
            tap.set_up(True)
        dev = tap.linux_name
        self.ip(ns, "addr", "add", linux, "dev", dev)
        self.ip(ns, "link", "set", dev, "up")
        out = self.ip(ns, "-o", "link", "show", "dev", dev)
        mac = re.search(r"link/ether (\S+)", out)
        assert mac is not None, out
        assert tap.mac is not None
        return Link(tap, ns, dev, linux.partition("/")[0], mac.group(1).lower(),
                    ours.partition("/")[0], mac_ntoa(tap.mac).lower())

    def thread(self, target: Callable[[], None]) -> threading.Thread:
        """Run `target` in a daemon thread (a vnet program beside the Linux one)."""
        t = threading.Thread(target=target, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    need = staticmethod(need)

    def start(self) -> None:
        self.kernel.start()

    # -- teardown ----------------------------------------------------------------------
    def close(self) -> list[str]:
        """Tear everything down; returns the problems met (never raises)."""
        problems: list[str] = []
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError) as exc:
                problems.append(f"process {proc.pid}: {exc}")
        try:
            self.kernel.stop()
        except Exception as exc:
            problems.append(f"kernel stop: {exc!r}")
        sched = self.kernel.sched
        if sched.errors:
            problems.append(f"{sched.errors} exception(s) in the kernel loop, the last: "
                            f"{sched.last_error!r}")
        for t in self.threads:
            t.join(timeout=10)
            if t.is_alive():
                problems.append(f"thread {t.name} still running")
        in_kernel = [i for i in self.kernel.interfaces() if i.kind == "tap"]
        for tap in [*self.taps, *(t for t in in_kernel if t not in self.taps)]:
            try:
                if tap.flags or tap.vnet.ifaces.get(tap.name) is tap:
                    tap.destroy()
                tap.close_device()  # idempotent: makes sure the fd is closed
            except Exception as exc:
                problems.append(f"destroy {tap.name}: {exc!r}")
        for vnet in reversed(self.kernel.vnets()):
            if vnet.alive and vnet.parent is self.kernel.base:
                try:
                    self.kernel.destroy(vnet)
                except Exception as exc:
                    problems.append(f"destroy vnet {vnet.name}: {exc!r}")
        for ns in self.namespaces:
            try:
                for pid in netns_pids(ns):  # only our programs live in our namespaces
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc = subprocess.run(["ip", "netns", "del", ns], capture_output=True,
                                      text=True, timeout=RUN_TIMEOUT)
            except subprocess.SubprocessError as exc:
                problems.append(f"deleting namespace {ns}: {exc}")
                continue
            if proc.returncode != 0:
                problems.append(f"ip netns del {ns}: {proc.stderr.strip()}")
        return problems


@pytest.fixture(scope="session")
def interop_registry() -> Iterator[Registry]:
    """Skips the whole directory where it cannot run; at the end, checks nothing is left."""
    reason = requirements_missing()
    if reason is not None:
        pytest.skip(reason)
    registry = Registry()
    yield registry
    leftovers = registry.leftovers()
    assert not leftovers, f"interop tests left behind: {', '.join(leftovers)}"


@pytest.fixture(autouse=True)
def _interop_requirements(interop_registry: Registry) -> None:
    """Every test in this directory needs the session checks (and skips with them)."""


@pytest.fixture
def lab(interop_registry: Registry) -> Iterator[Lab]:
    world = Lab(interop_registry)
    try:
        yield world
    finally:
        problems = world.close()
    assert not problems, "; ".join(problems)


@dataclass
class Pair:
    """One vnet joined to one Linux namespace: the vnet is .1, Linux .2 of 10.9.0.0/24."""

    lab: Lab
    vnet: Vnet
    link: Link

    def ok(self, line: str, stdin: str | None = None) -> str:
        """Run a tool in the vnet; its output, asserting it succeeded."""
        res = self.vnet.cmd(line, stdin=None if stdin is None else stdin.encode())
        assert res.status == 0, f"{line}: {res.output}"
        return res.output

    def tcp_from_linux(self, ours: str, theirs: str | None = None) -> None:
        """A Linux client (bound to `theirs` if given) sends 200 kB to a server in the
        vnet at `ours`; asserts every byte arrived."""
        import socket

        srv = self.vnet.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((ours, 5001))
        srv.listen(1)
        bind = f"source_address=('{theirs}',0)," if theirs else ""
        code = ("import socket\n"
                f"s=socket.create_connection(('{ours}',5001),timeout=20,{bind})\n"
                "s.sendall(bytes(range(256))*800)\ns.close()\n")
        client = self.lab.spawn_python(self.link.ns, code)
        srv.settimeout(20)
        conn, _ = srv.accept()
        conn.settimeout(20)
        got = bytearray()
        while chunk := conn.recv(65536):
            got += chunk
        conn.close()
        srv.close()
        assert client.wait(timeout=20) == 0
        assert bytes(got) == bytes(range(256)) * 800


@pytest.fixture
def pair(lab: Lab) -> Pair:
    """A started lab with vnet `h` (10.9.0.1) joined by TAP to a namespace (10.9.0.2)."""
    vnet = lab.vnet("h")
    ns = lab.netns()
    link = lab.tap(vnet, ns, "10.9.0.1/24", "10.9.0.2/24")
    lab.start()
    return Pair(lab, vnet, link)
