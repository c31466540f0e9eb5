"""`mpirun -n 2 vimage topo serve`: an interactive partitioned experiment (docs/mpi.md).

Each test starts the experiment under mpirun with a private control socket in tmp_path
(skipped without Open MPI or mpi4py), waits for rank 0's ready lines and drives it with
the vimage command, as a user would, from rank 0's socket: pc1 and r1 are on rank 1,
r2 and pc2 on rank 0, the r1-r2 link (5 ms) is a VXLAN tunnel between them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.mpi_run import mpirun, mpirun_env

from vimage.cli import vimage as cli
from vimage.emu import mpi_serve

SERVE = Path(__file__).parent / "data" / "mpi-serve.yaml"
ROOT = Path(__file__).resolve().parents[2]
NAME = "servelab"






class Served:
    """The running `topo serve`: its mpirun process, socket, ready lines, ranks' pids."""

    def __init__(self, proc: subprocess.Popen[str], sock: str, lines: list[str]) -> None:
        self.proc = proc
        self.sock = sock
        self.lines = lines
        self.pids = {int(m.group(1)): int(m.group(2)) for m in
                     (re.match(r"rank (\d+) \(host \S+, pid (\d+)\)", ln) for ln in lines) if m}

    def vimage(self, capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        capfd.readouterr()
        status = cli.main(["--socket", self.sock, *args])
        out, err = capfd.readouterr()
        return status, out, err

    def ok(self, capfd: pytest.CaptureFixture[str], *args: str) -> str:
        status, out, err = self.vimage(capfd, *args)
        assert status == 0, (args, out, err)
        return out

    def leftovers(self) -> list[str]:
        """What is left in the socket's directory but the front's lock (as vimaged's)."""
        where = Path(self.sock).parent
        return sorted(p.name for p in where.iterdir() if p.name != Path(self.sock).name + ".lock")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    # a rank gets SIGTERM, then SIGKILL this many seconds later (default 1): room to tear
    # down on a loaded machine; mpirun waits that long whatever the ranks do
    cmd = mpirun("--mca", "odls_base_sigkill_timeout", "3")
    (tmp_path / "run").mkdir()
    sock = str(tmp_path / "run" / "v.sock")
    proc = subprocess.Popen([*cmd, sys.executable, "-m", "vimage.cli.vimage", "--socket", sock,
                             "topo", "serve", str(SERVE), "--skip-ipv6"], env=mpirun_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    watchdog = threading.Timer(240, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]  # the summary, then one per rank
        assert lines[-1].startswith("rank 1 "), (lines, proc.stderr.read() if proc.stderr
                                                 else "")
        yield Served(proc, sock, lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        watchdog.cancel()


def _capture_while_pinging(served: Served, capfd: pytest.CaptureFixture[str],
                           pcap: Path) -> str:
    """`topo capture NAME r1 r2 -c 4` while pc1 pings pc2 (another process); its output."""
    pinger = subprocess.Popen([sys.executable, "-m", "vimage.cli.vimage", "--socket",
                               served.sock, "topo", "exec", NAME, "pc1", "--", "ping", "-c",
                               "40", "-i", "0.1", "10.0.2.20"], env=mpirun_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return served.ok(capfd, "topo", "capture", NAME, "r1", "r2", "-w", str(pcap), "-c",
                         "4", "--duration", "60")  # a bound, should the pings not come
    finally:
        pinger.wait(60)


def _icmp(pcap: Path) -> None:
    from scapy.all import ICMP, IP, rdpcap

    frames = rdpcap(str(pcap))
    assert len(frames) == 4
    icmp = [f for f in frames if ICMP in f]
    assert icmp and {f[IP].src for f in icmp} <= {"10.0.0.20", "10.0.2.20"}, frames


def _sent_on_cut_link(served: Served) -> int:
    """Frames r1 sent on the cut link (asked through rank 0's socket)."""
    from vimage.ctl import paths
    from vimage.ctl.client import connect

    with connect(paths.resolve(served.sock), autostart=False) as client:
        link = client.request("topo_show", name=NAME, a="r1", b="r2")["link"]
    return int(link["counters"][0]["opackets"])


def _until(predicate, timeout: float = 30.0) -> bool:
    """A condition on the experiment's side, which runs in real time on its own (as
    tests/ctl/conftest.py's until)."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        pause.wait(0.05)
    return predicate()


def _rtt(output: str) -> float:
    match = re.search(r"round-trip min/avg/max/stddev = ([\d.]+)/", output)
    assert match is not None, output
    return float(match.group(1))


def test_a_served_experiment_answers_for_every_rank(served, capfd, tmp_path, monkeypatch):
    assert served.lines[0].startswith(f"topo serve: experiment {NAME}, 4 nodes on 2 rank(s), "
                                      "1 cut link(s) as VXLAN tunnels; control socket ")
    assert served.lines[1].split(": ")[1].startswith("pc2, r2;"), served.lines
    assert served.lines[2].split(": ")[1].startswith("pc1, r1;"), served.lines
    listing = served.ok(capfd, "topo", "list").splitlines()
    assert listing[1].split() == [NAME, "4", "3", NAME]
    show = served.ok(capfd, "topo", "show", NAME)
    assert show.startswith(f"experiment {NAME} (topology {NAME}): 4 nodes, 3 links\n"), show
    for node, address in (("pc1", "10.0.0.20/24"), ("r2", "10.0.1.2/24"),
                          ("pc2", "10.0.2.20/24")):
        assert re.search(rf"^{node} +\w+ +{NAME}\.{node} +eth0 {address}", show, re.M), show
    assert re.search(r"^r1:eth1--r2:eth0 +delay=5ms +eth1:\d+>/\d+< eth0:\d+>/\d+<$", show,
                     re.M), show
    listing = served.ok(capfd, "-l", "-r").splitlines()
    assert [line.split()[0] for line in listing[1:]] == \
        [NAME, *(f"{NAME}.{n}" for n in ("pc1", "pc2", "r1", "r2"))], listing
    assert served.ok(capfd, "-l", f"{NAME}.pc1").splitlines()[1].split()[:2] == \
        [f"{NAME}.pc1", "pc1"]
    node = served.ok(capfd, "topo", "show", NAME, "pc1")
    assert re.search(rf"^pc1 +pc +{NAME}\.pc1 +eth0 10\.0\.0\.20/24, lo0$", node, re.M), node

    # pc1 (rank 1) pings pc2 (rank 0) across the tunnel, asked from rank 0's socket
    ping = served.ok(capfd, "topo", "exec", NAME, "pc1", "--", "ping", "-c", "2", "10.0.2.20")
    assert "2 packets transmitted, 2 packets received" in ping, ping
    assert 10.0 <= _rtt(ping) < 80.0
    # a cut link changes on both ranks: 40 ms each way
    assert served.ok(capfd, "topo", "link", NAME, "r1", "r2", "delay", "40ms") == \
        "r1:eth1--r2:eth0: delay=40ms\n"
    ping = served.ok(capfd, "topo", "exec", NAME, "pc1", "--", "ping", "-c", "1", "10.0.2.20")
    assert _rtt(ping) >= 80.0, ping
    status, out, err = served.vimage(capfd, "topo", "link", NAME, "r1", "r2", "delay", "2x")
    assert (status, out, err) == (1, "", "vimage: link r1-r2: bad duration '2x'\n")

    # live frames at r1's end (rank 1) of the cut link, while pc1 pings: the capture runs
    # in rank 1's daemon (followed there)...
    pcap = tmp_path / "r1-r2.pcap"
    followed = _capture_while_pinging(served, capfd, pcap)
    assert followed == ("tcpdump: listening on eth1, link-type EN10MB (Ethernet), snapshot "
                        "length 262144 bytes\n4 packets captured\n4 packets received by "
                        "filter\n0 packets dropped by kernel\n")
    _icmp(pcap)
    # ... or, as if rank 1 were on another host, rank 0 relays its frames; exec says where
    host = socket.gethostname()
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    relayed = _capture_while_pinging(served, capfd, pcap)
    assert relayed == followed
    _icmp(pcap)
    status, out, err = served.vimage(capfd, "exec", f"{NAME}.pc1", "--", "true")
    assert (status, out) == (1, "")
    rank1 = f"{served.sock}.rank-1"
    assert err == (f"vimage: node pc1 of experiment {NAME} is held by rank 1 on host {host}: "
                   f"its daemon's socket is {rank1}; run this on host {host} with vimage "
                   f"--socket {rank1}\n")
    monkeypatch.undo()

    # a program in pc1 (rank 1): its sockets are relayed by rank 1's daemon
    prog = tmp_path / "where.py"
    prog.write_text("import os, socket\n"
                    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    "s.connect(('10.0.2.20', 9))\n"
                    "print(os.environ['VIMAGE'], s.getsockname()[0])\n")
    out = served.ok(capfd, "exec", f"{NAME}.pc1", "--", sys.executable, str(prog))
    assert out == f"{NAME}.pc1 10.0.0.20\n"
    assert served.ok(capfd, f"{NAME}.r2", "sysctl", "-n", "net.inet.ip.forwarding") == "1\n"

    assert served.ok(capfd, "topo", "down", NAME) == f"{NAME}: down (4 nodes destroyed)\n"
    assert served.proc.wait(60) == 0  # every rank exited 0
    assert served.proc.stdout is not None
    assert f"topo serve: experiment {NAME} down on every rank" in served.proc.stdout.read()
    assert served.leftovers() == []


@pytest.mark.parametrize("rank, nodes", [(1, "pc1, r1"), (0, "pc2, r2")])
def test_a_killed_rank_ends_the_experiment_on_the_others(served, rank, nodes):
    # a ping forwarded to rank 1 is under way: its client gets one line, not a hang
    sent = _sent_on_cut_link(served)
    pinger = subprocess.Popen([sys.executable, "-m", "vimage.cli.vimage", "--socket",
                               served.sock, "topo", "exec", NAME, "pc1", "--", "ping", "-c",
                               "100", "10.0.2.20"], env=mpirun_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert pinger.stdout is not None and pinger.stderr is not None
    assert _until(lambda: _sent_on_cut_link(served) > sent)  # the ping has begun
    os.kill(served.pids[rank], signal.SIGKILL)
    assert pinger.wait(60) == 1
    said = pinger.stderr.read().splitlines()
    assert len(said) == 1 and (
        said[0] == "vimage: rank 1 of 2 (nodes pc1, r1) died (its control connection closed)"
        or said[0].startswith("vimage: lost the daemon")), said
    assert served.proc.wait(60) != 0
    assert served.proc.stderr is not None
    err = served.proc.stderr.read()
    assert (f"vimage topo serve: rank {rank} of 2 (nodes {nodes}) died: ending experiment "
            f"{NAME}" in err.splitlines()), err
    assert served.leftovers() == []  # the survivor's files, and the dead rank's, are gone


@pytest.fixture
def failing(monkeypatch):
    monkeypatch.setenv(mpi_serve.FAIL_ENV, "1")


def test_a_failing_rank_names_itself_and_the_others_end(failing, served):
    assert served.proc.wait(60) != 0
    assert served.proc.stderr is not None
    err = served.proc.stderr.read().splitlines()
    assert ("vimage topo serve: rank 1 of 2 (nodes pc1, r1) failed: RuntimeError: "
            f"{mpi_serve.FAIL_ENV} asked this rank to fail") in err, err
    assert f"vimage topo serve: rank 1 of 2 (nodes pc1, r1) died: ending experiment {NAME}" \
        in err, err
    assert served.leftovers() == []


def test_sigint_to_mpirun_ends_every_rank(served):
    served.proc.send_signal(signal.SIGINT)
    served.proc.wait(60)
    assert served.proc.stdout is not None and served.proc.stderr is not None
    out, err = served.proc.stdout.read(), served.proc.stderr.read()
    assert f"topo serve: experiment {NAME} down on every rank" in out, (out, err)
    assert "died" not in err, err
    assert served.leftovers() == []


# -- one rank: no mpirun needed ------------------------------------------------------------------
LAB = Path(__file__).parent / "data" / "mpi-lab.yaml"


def test_without_mpirun_one_process_serves_the_whole_experiment(tmp_path, capfd):
    (tmp_path / "run").mkdir()
    sock = str(tmp_path / "run" / "v.sock")
    proc = subprocess.Popen([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock,
                             "topo", "serve", str(LAB), "-e", "one", "--skip-ipv6",
                             "--wait-converged"],
                            env=mpirun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("topo serve: experiment one, 6 nodes on 1 rank(s), 0 cut "
                                   "link(s) as VXLAN tunnels, converged; "), lines
        served = Served(proc, sock, lines)
        assert served.pids == {0: proc.pid}
        show = served.ok(capfd, "topo", "show", "one", "r1", "r2")
        assert re.match(r"Link +Parameters +Packets out>/in<\nr1:eth1--r2:eth0 +bandwidth="
                        r"10Mbit/s delay=5ms jitter=1ms loss=1% ", show), show
        # RIP has converged: h1 reaches pc2 across r1 and r2 at once
        assert "1 packets received" in served.ok(capfd, "topo", "exec", "one", "h1", "--",
                                                 "ping", "-c", "1", "10.0.2.20")
        assert served.ok(capfd, "topo", "down", "one") == "one: down (6 nodes destroyed)\n"
        assert proc.wait(60) == 0
        assert served.leftovers() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_start_that_fails_says_why_in_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "run").mkdir()
    sock = str(tmp_path / "run" / "v.sock")
    done = subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock, "topo",
                           "serve", str(LAB), "--bind", "192.0.2.1"], env=mpirun_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("vimage topo serve: rank 0 of 1 (nodes h1, pc1, pc2, r1, r2, sw1) "
                           "failed: OSError: [Errno 99] Cannot assign requested address\n")
    assert list((tmp_path / "run").iterdir()) == []
    done = subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock, "topo",
                           "serve", str(SERVE)], env=mpirun_env(), capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (1, "vimage topo serve: node pc1 is pinned to "
                                                 "partition 1, but there are 1 (0..0)\n")
    done = subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock, "topo",
                           "serve", str(LAB), "--wait-converged", "--timeout", "0"],
                          env=mpirun_env(), capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("vimage topo serve: experiment mpilab: the routing daemons did not "
                           "converge within 0 s (on rank 0 of 1 (nodes h1, pc1, pc2, r1, r2, "
                           "sw1))\n")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["v.sock.lock"]  # as vimaged
    env = dict(mpirun_env(), VIMAGE_AUTOSTART="1")
    subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock, "daemon",
                    "start"], env=env, check=True, capture_output=True, timeout=60)
    try:
        done = subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock,
                               "topo", "serve", str(LAB)], env=mpirun_env(), capture_output=True,
                              text=True, timeout=120)
    finally:
        subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "--socket", sock, "daemon",
                        "stop"], env=env, check=True, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("vimage topo serve: rank 0 of 1 (nodes h1, pc1, pc2, r1, r2, sw1) "
                           f"failed: FileExistsError: {sock}: a daemon is serving there "
                           "already (vimage daemon stop, or another --socket)\n")
