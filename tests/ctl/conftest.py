"""Fixtures for the daemon tests: private vimaged instances in short temporary directories.

Every daemon a test starts (directly, or by a client auto-starting it) lives under a
directory of its own, given by VIMAGE_SOCKET / --socket; teardown stops it through
the protocol, kills it if it does not go, and fails the test if the process is
still there. The daemon runs the real clock: real time is what it is about.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import vimage
from vimage.cli import vimage as cli
from vimage.ctl import paths, protocol, shims
from vimage.ctl.client import Client, connect, daemon_pid


def names(listing: str) -> list[str]:
    """The vnet names in a `vimage -l` table (under its header)."""
    lines = listing.splitlines()
    assert lines and lines[0].split() == ["Name", "Hostname", "Interfaces"], listing
    return [line.split()[0] for line in lines[1:]]


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait for a process that is not our child to exit (pidfd, no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll a condition on the daemon's side (it runs in real time, on its own)."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        pause.wait(0.02)
    return predicate()


def processes_in(directory: str) -> list[int]:
    """Pids of processes (ours excepted) running in `directory` or naming it on their
    command line: what a test started there."""
    found = []
    mine = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == mine:
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
            cwd = os.readlink(f"/proc/{entry}/cwd")
            if os.fsencode(directory) in cmdline or cwd == directory \
                    or cwd.startswith(directory + os.sep):
                found.append(int(entry))
    return found


def daemon_processes(sock_path: str) -> list[int]:
    """Pids of vimaged processes serving `sock_path` (by their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                words = fh.read().split(b"\0")
            if b"vimage.ctl.daemon" in words and os.fsencode(sock_path) in words:
                found.append(int(entry))
    return found


class Vimaged:
    """A private daemon's place: its socket, a bin dir with `vimage`, and ways to talk."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.socket = os.path.join(directory, "ctl.sock")
        self.paths = paths.resolve(self.socket)
        self.bin = os.path.join(directory, "bin")
        os.makedirs(self.bin, exist_ok=True)
        # `vimage` on PATH: the launcher the exec shims use (it skips importing the whole
        # stack, which the console script pays for); test_daemon also runs `-m vimage.cli.vimage`
        package = os.path.dirname(os.path.abspath(vimage.__file__))
        wrapper = os.path.join(self.bin, "vimage")
        with open(wrapper, "w") as fh:
            fh.write(shims.SHIM.format(python=sys.executable, name="vimage", package=package,
                                       parent=os.path.dirname(package)))
        os.chmod(wrapper, 0o755)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIMAGE_CTL_FD", "VIMAGE")}
        env.update(VIMAGE_SOCKET=self.socket,
                   PATH=os.pathsep.join((self.bin, env.get("PATH", os.defpath))), SHELL="/bin/sh")
        env.update(extra)
        return env

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            **env: str) -> subprocess.CompletedProcess[str]:
        """The vimage command as a separate process."""
        return subprocess.run(["vimage", *args], env=self.env(**env), input=input,
                              capture_output=True, text=True, timeout=timeout, cwd=self.dir)

    def cli(self, *args: str) -> tuple[int, str, str]:
        """The vimage command in this process (fast): (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["--socket", self.socket, *args])
        return status, out.getvalue(), err.getvalue()

    def ok(self, *args: str) -> str:
        status, out, err = self.cli(*args)
        assert status == 0, (args, out, err)
        return out

    def client(self) -> Client:
        return connect(self.paths, autostart=False)

    def start(self) -> int:
        connect(self.paths, autostart=True).close()
        pid = daemon_pid(self.paths)
        assert pid is not None
        return pid

    def raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.socket)
        return sock

    def stop(self) -> None:
        """Stop the daemon if one runs here; fail if its process survives."""
        pid = daemon_pid(self.paths)
        with contextlib.suppress(protocol.CtlError), self.client() as c:
            c.request("stop")
        for stray in {*daemon_processes(self.socket), *([pid] if pid else [])}:
            if not wait_gone(stray, 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stray, signal.SIGKILL)
                wait_gone(stray, 5)
                pytest.fail(f"vimaged pid {stray} did not stop")
        # what the test started (inside its vnets, say) must end with the daemon
        left = [p for p in processes_in(self.dir) if not wait_gone(p, 5)]
        for stray in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)
            wait_gone(stray, 5)
        if left:
            pytest.fail(f"processes left behind by the test (now killed): {left}")


def send_frame(sock: socket.socket, obj: Any) -> None:
    protocol.send(sock, obj)


def recv_frame(sock: socket.socket) -> Any:
    frame = protocol.recv(sock, protocol.MAX_REPLY)
    if frame is None:
        return None
    obj, fds = frame
    protocol.close_fds(fds)
    return obj


def hello(sock: socket.socket) -> dict[str, Any]:
    send_frame(sock, {"id": 0, "op": "hello", "version": protocol.VERSION})
    reply = recv_frame(sock)
    assert reply["ok"], reply
    return reply


@contextlib.contextmanager
def private_daemon() -> Iterator[Vimaged]:
    directory = tempfile.mkdtemp(prefix="vimd-", dir="/tmp")
    daemon = Vimaged(directory)
    try:
        yield daemon
    finally:
        try:
            daemon.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def place() -> Iterator[Vimaged]:
    """A private daemon directory; nothing started yet."""
    with private_daemon() as daemon:
        yield daemon


@pytest.fixture
def vimaged() -> Iterator[Vimaged]:
    """A running private daemon, stopped after the test."""
    with private_daemon() as daemon:
        daemon.start()
        yield daemon


@pytest.fixture(scope="module")
def shared_vimaged() -> Iterator[Vimaged]:
    """One daemon for a whole module (tests use vnet names of their own)."""
    with private_daemon() as daemon:
        daemon.start()
        yield daemon
