"""`vimage exec` and `vimage NAME cmd`: real processes with $VIMAGE, a scoped channel and
the tool shims first on PATH; their exit status is vimage's."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import termios

import pytest

from vimage.cli import TOOLS
from vimage.ctl import procs

from .conftest import until, wait_gone


@pytest.fixture(scope="module")
def vd(shared_vimaged):
    vd = shared_vimaged
    vd.ok("-c", "x")
    vd.ok("ifconfig", "epair", "create")
    vd.ok("-i", "x", "epair0a")
    yield vd
    vd.ok("-d", "x")
    vd.cli("ifconfig", "epair0a", "destroy")


def test_exec_sets_vimage_the_channel_and_the_shims(vd):
    script = ('echo "$VIMAGE"; test -n "$VIMAGE_CTL_FD" && echo fd; bin=${PATH%%:*}; '
              'ls "$bin"; command -v ifconfig; ifconfig -l; echo "$bin" >&2')
    done = vd.run("exec", "x", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    bindir = done.stderr.strip()
    assert lines[0] == "x" and lines[1] == "fd"
    assert {*TOOLS, "vimage"} <= set(lines[2:-2])  # a shim for every tool (and maybe more)
    assert lines[-2] == os.path.join(bindir, "ifconfig")
    assert lines[-1] == "lo0 epair0a"
    assert not os.path.exists(bindir)  # removed once the process is done
    assert "VIMAGE_SOCKET" not in done.stdout


def test_the_name_form_runs_a_process_when_the_command_is_not_a_tool(vd):
    done = vd.run("x", "sh", "-c", "ifconfig epair0a 10.1.0.1/24 up && netstat -rn; exit 7")
    assert done.returncode == 7
    assert "10.1.0.0/24" in done.stdout and "epair0a" in done.stdout
    assert "10.1.0.1 netmask 0xffffff00" in vd.ok("x", "ifconfig", "epair0a")
    assert vd.run("x", "true").returncode == 0


def test_exit_status_and_signals_come_back(vd):
    assert vd.run("exec", "x", "sh", "-c", "exit 42").returncode == 42
    assert vd.run("x", "sh", "-c", "kill -TERM $$").returncode == 128 + 15
    missing = vd.run("x", "no-such-program-here")
    assert missing.returncode == 127
    assert missing.stderr == "vimage: no-such-program-here: command not found\n"


def test_with_no_command_a_shell_reads_stdin(vd):
    done = vd.run("x", input="echo in $VIMAGE\nifconfig -l\nexit 3\n", SHELL="/bin/sh")
    assert done.returncode == 3
    assert done.stdout == "in x\nlo0 epair0a\n"  # no greeting: stdin is not a terminal
    done = vd.run("exec", "x", input="echo $0\n", SHELL="/bin/bash")
    assert done.stdout.strip() in ("bash", "/bin/bash")


def test_stdio_passes_through(vd):
    done = vd.run("x", "cat", input="through the vnet\n")
    assert done.stdout == "through the vnet\n"


def test_shims_in_parallel_each_get_their_own_connection(vd):
    script = ("for i in 1 2 3 4 5 6; do (sysctl -n net.inet.ip.ttl > out.$i) & done; wait; "
              "cat out.*; rm -f out.*")
    done = vd.run("x", "sh", "-c", script)
    assert done.returncode == 0 and done.stdout == "64\n" * 6, done.stderr


def test_nested_exec_reaches_a_child(vd):
    vd.ok("-c", "x.inner")
    done = vd.run("x", "sh", "-c", 'vimage inner sh -c \'echo "$VIMAGE"; ifconfig -l\'')
    assert done.returncode == 0, done.stderr
    assert done.stdout == "x.inner\nlo0\n"
    vd.ok("-d", "x.inner")


def test_the_channel_goes_away_with_the_process(vd):
    with vd.client() as c:
        before = c.request("status")["doorbells"]
        assert vd.run("x", "true").returncode == 0
        assert until(lambda: c.request("status")["doorbells"] == before)


HIDE_THE_CHANNEL = """
import os, socket, sys
fd = int(os.environ["VIMAGE_CTL_FD"])
a, b = socket.socketpair()
socket.send_fds(a, [b"c"], [fd])  # in flight, held by no process: out of the kill's sight
os.close(fd)
print("hidden", flush=True)
sys.stdin.readline()
os.dup2(socket.recv_fds(b, 1, 1)[1][0], fd)
os.execvp("ifconfig", ["ifconfig", "-l"])
"""


def test_a_channel_outlives_its_vnet_only_as_an_error(vd):
    # destroying the vnet kills the processes holding its channel; one that hid its
    # channel survives, and the channel reaches neither the old vnet nor a new one
    vd.ok("-c", "brief")
    proc = subprocess.Popen(["vimage", "brief", "python", "-c", HIDE_THE_CHANNEL],
                            env=vd.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "hidden\n"
    vd.ok("-d", "brief")
    vd.ok("-c", "brief")  # a new vnet of the same name is not the old channel's
    vd.ok("brief", "ifconfig", "lo1", "create")
    out, err = proc.communicate("go\n", timeout=30)
    assert proc.returncode == 1 and out == ""
    assert err == ("vimage: the control channel of vnet brief is closed "
                   "(the vnet or the daemon has gone)\n")
    vd.ok("-d", "brief")


def test_an_interactive_shell_on_a_terminal_greets_and_works(vd):
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen(["vimage", "x"], env=vd.env(SHELL="/bin/sh"), stdin=follower,
                                stdout=follower, stderr=follower, start_new_session=True,
                                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(follower)
        os.write(leader, b"ifconfig -l; exit 5\n")
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: every process on the terminal has gone
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(30) == 5
    finally:
        os.close(leader)
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    echo, greeting, rest = text.partition("Switched to vimage x\n")  # the terminal echoes
    assert greeting and "ifconfig -l" in echo
    assert "lo0 epair0a\n" in rest and "job control turned off" not in rest


def test_a_killed_vimage_leaves_its_shims_to_the_next_one(vd):
    done = vd.run("x", "sh", "-c", 'echo "${PATH%%:*}"; kill -KILL $PPID')
    assert done.returncode == -9
    bindir = done.stdout.strip()
    assert os.path.basename(bindir).startswith("vimage-bin-") and os.path.isdir(bindir)
    assert vd.run("x", "true").returncode == 0
    assert not os.path.exists(bindir)


def test_sweep_spares_live_and_foreign_directories(tmp_path):
    from vimage.ctl import shims

    gone = tmp_path / f"vimage-bin-{2**22 + 7}-abc"  # above pid_max: no such process
    live = tmp_path / f"vimage-bin-{os.getpid()}-abc"
    other = tmp_path / "vimage-bin-notapid"
    for d in (gone, live, other):
        d.mkdir()
    assert shims.sweep(str(tmp_path)) == 1
    assert not gone.exists() and live.exists() and other.exists()


# -- a vnet's processes are under control: they die with their vimage and with the vnet ------
LISTENER = """
import os, socket
s = socket.socket()
s.bind(("0.0.0.0", 7070))
s.listen()
print(os.getpid(), flush=True)
s.accept()
"""


def _spawn(vd, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["vimage", *argv], env=vd.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=vd.dir,
                            start_new_session=True)


def _cleanup(proc: subprocess.Popen[str], *pids: int) -> None:
    for pid in (proc.pid, *pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    proc.communicate(timeout=10)


def test_a_killed_vimage_exec_takes_its_program_and_its_port_with_it(vd):
    proc = _spawn(vd, "exec", "x", "--", "python", "-c", LISTENER)
    assert proc.stdout is not None
    program = int(proc.stdout.readline())
    try:
        assert "*.7070" in vd.ok("x", "netstat", "-an")
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_gone(program, 10)
        assert until(lambda: "*.7070" not in vd.ok("x", "netstat", "-an"), 10)
    finally:
        _cleanup(proc, program)


def test_destroying_a_vnet_ends_its_processes(vd):
    vd.ok("-c", "jailed")
    proc = _spawn(vd, "jailed", "sh", "-c", "sleep 300 & echo $$ $!; wait")
    assert proc.stdout is not None
    shell, child = map(int, proc.stdout.readline().split())
    try:
        vd.ok("-d", "jailed")
        assert wait_gone(shell, 10) and wait_gone(child, 10)  # its child too: it holds the channel
        assert proc.wait(10) == 128 + signal.SIGKILL
    finally:
        _cleanup(proc, shell, child)


def test_holders_of_a_channel_are_found_and_killed_but_the_spared():
    ours, theirs = socket.socketpair()
    inode = os.fstat(theirs.fileno()).st_ino
    holders = [subprocess.Popen(["sleep", "60"], pass_fds=(theirs.fileno(),)) for _ in range(2)]
    other = subprocess.Popen(["sleep", "60"])  # holds no channel
    try:
        theirs.close()
        assert sorted(procs.holders([inode])) == sorted(p.pid for p in holders)
        assert procs.kill_holders([inode], spare=[holders[1].pid]) == [holders[0].pid]
        assert holders[0].wait(10) == -9
        assert holders[1].poll() is None and other.poll() is None
        assert procs.holders([]) == []
    finally:
        for proc in (*holders, other):
            proc.kill()
            proc.wait(10)
        ours.close()
