"""`vimage topo up|down|list|show|exec|link|capture`: experiments in vimaged."""

from __future__ import annotations

import re
import struct
import subprocess
import threading

import pytest

from .conftest import names

LAB = """\
version: 1
name: lab
options: {auto_address: true}
nodes:
  pc1: {type: pc, auto_default_routes: true}
  r1: {type: router}
  pc2: {type: pc, auto_default_routes: true}
links:
  - [pc1, r1]
  - [r1, pc2]
"""


@pytest.fixture
def lab(vimaged):
    path = f"{vimaged.dir}/lab.yaml"
    with open(path, "w") as fh:
        fh.write(LAB)
    return path


def _fail(vimaged, *args):
    status, out, err = vimaged.cli(*args)
    assert status != 0 and out == "", (status, out, err)
    assert len(err.splitlines()) == 1, err
    return status, err.strip()


def test_up_list_show_exec_down(vimaged, lab):
    out = vimaged.ok("topo", "up", "-q", lab)
    assert out == "lab: 3 nodes, 2 links up\n"
    assert vimaged.ok("topo", "list").splitlines()[1].split() == ["lab", "3", "2", "lab"]
    assert names(vimaged.ok("-l", "-r")) == ["lab", "lab.pc1", "lab.pc2", "lab.r1"]
    show = vimaged.ok("topo", "show", "lab")
    assert show.startswith("experiment lab (topology lab): 3 nodes, 2 links\n")
    assert re.search(r"^pc2 +pc +lab\.pc2 +eth0 10\.0\.1\.20/24, lo0$", show, re.M), show
    assert re.search(r"^pc1:eth0--r1:eth0 +- ", show, re.M), show
    ping = vimaged.ok("topo", "exec", "lab", "pc1", "--", "ping", "-c", "1", "10.0.1.20")
    assert "1 packets received" in ping
    assert vimaged.ok("lab.r1", "sysctl", "-n", "net.inet.ip.forwarding") == "1\n"
    assert vimaged.ok("topo", "down", "lab") == "lab: down (3 nodes destroyed)\n"
    assert names(vimaged.ok("-l", "-r")) == []
    assert vimaged.ok("topo", "list").splitlines() == ["Name  Nodes  Links  Topology"]


def test_exec_runs_a_program_in_the_node(vimaged, lab):
    vimaged.ok("topo", "up", "-q", lab)
    done = vimaged.run("topo", "exec", "lab", "pc2", "--", "sh", "-c", 'echo "in $VIMAGE"')
    assert (done.returncode, done.stdout) == (0, "in lab.pc2\n"), done.stderr
    status, err = _fail(vimaged, "topo", "exec", "lab", "pc9", "--", "ifconfig")
    assert err == "vimage: experiment lab has no node 'pc9'"


def test_experiments_side_by_side(vimaged, lab):
    assert vimaged.ok("topo", "up", "-q", "-e", "a", lab) == "a: 3 nodes, 2 links up\n"
    assert vimaged.ok("topo", "up", "-q", "-e", "b", lab) == "b: 3 nodes, 2 links up\n"
    assert [r.split()[0] for r in vimaged.ok("topo", "list").splitlines()[1:]] == ["a", "b"]
    vimaged.ok("topo", "down", "a")
    assert "1 packets received" in vimaged.ok("b.pc1", "ping", "-c", "1", "10.0.1.20")
    assert names(vimaged.ok("-l")) == ["b"]
    _, err = _fail(vimaged, "topo", "up", "-q", "-e", "b", lab)
    assert err == "vimage: vnet b already exists"


def test_a_bad_file_is_one_line_and_creates_nothing(vimaged):
    bad = f"{vimaged.dir}/bad.yaml"
    with open(bad, "w") as fh:
        fh.write("version: 1\nnodes:\n  a: {type: wlan}\n")
    _, err = _fail(vimaged, "topo", "up", bad)
    assert err == f"vimage: {bad}:3: nodes.a.type: unknown node type 'wlan'"
    _, err = _fail(vimaged, "topo", "up", f"{vimaged.dir}/none.yaml")
    assert err == f"vimage topo: {vimaged.dir}/none.yaml: No such file or directory"
    assert names(vimaged.ok("-l", "-r")) == []


def test_up_is_all_or_nothing(vimaged, lab):
    broken = LAB.replace("r1: {type: router}", "r1: {type: router, commands: [nosuchtool -x]}")
    path = f"{vimaged.dir}/broken.yaml"
    with open(path, "w") as fh:
        fh.write(broken)
    _, err = _fail(vimaged, "topo", "up", "-q", path)
    assert err.startswith("vimage: experiment lab: node r1: 'nosuchtool -x' failed"), err
    assert names(vimaged.ok("-l", "-r")) == []
    assert vimaged.ok("topo", "list").splitlines()[1:] == []
    assert vimaged.ok("topo", "up", "-q", lab) == "lab: 3 nodes, 2 links up\n"  # name free


def test_unknown_experiment_and_bad_link_words(vimaged, lab):
    assert _fail(vimaged, "topo", "down", "nope")[1] == "vimage: no experiment nope"
    assert _fail(vimaged, "topo", "show", "nope")[1] == "vimage: no experiment nope"
    vimaged.ok("topo", "up", "-q", lab)
    assert _fail(vimaged, "topo", "link", "lab", "pc1", "pc2")[1] == \
        "vimage: experiment lab has no link between pc1 and pc2"
    status, out, err = vimaged.cli("topo", "link", "lab", "pc1", "r1", "speed", "1")
    assert status == 64 and err.splitlines()[0].startswith(
        "vimage: topo link: unknown parameter 'speed'")
    assert _fail(vimaged, "topo", "link", "lab", "pc1", "r1", "delay", "soon")[1].startswith(
        "vimage: link pc1-r1: ")


def test_vimage_destroy_forgets_the_experiment(vimaged, lab):
    vimaged.ok("topo", "up", "-q", lab)
    vimaged.ok("-d", "lab")
    assert vimaged.ok("topo", "list").splitlines()[1:] == []
    assert vimaged.ok("topo", "up", "-q", lab) == "lab: 3 nodes, 2 links up\n"


def _rtt_ms(output: str) -> float:
    return float(re.search(r"time=([\d.]+) ms", output).group(1))


def test_link_changes_a_live_link(vimaged, lab):
    vimaged.ok("topo", "up", "-q", lab)
    assert vimaged.ok("topo", "link", "lab", "pc1", "r1") == "pc1:eth0--r1:eth0: -\n"
    out = vimaged.ok("topo", "link", "lab", "r1", "pc1", "delay", "40ms", "loss", "0",
                     "bw", "10M")
    assert out == "pc1:eth0--r1:eth0: bandwidth=10Mbit/s delay=40ms\n"
    ping = vimaged.ok("topo", "exec", "lab", "pc1", "--", "ping", "-c", "1", "10.0.0.1")
    assert _rtt_ms(ping) >= 80.0  # 40 ms each way
    out = vimaged.ok("topo", "link", "lab", "pc1", "r1", "delay", "default")
    assert out == "pc1:eth0--r1:eth0: bandwidth=10Mbit/s\n"
    assert "delay" not in vimaged.ok("topo", "show", "lab")


def test_capture_on_a_link(vimaged, lab):
    vimaged.ok("topo", "up", "-q", lab)
    pcap = f"{vimaged.dir}/r1-pc2.pcap"
    capture = subprocess.Popen(["vimage", "topo", "capture", "lab", "r1", "pc2", "-w", pcap,
                                "-c", "2"], env=vimaged.env(), cwd=vimaged.dir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    for _ in range(200):  # traffic until the capture has its two packets
        vimaged.ok("topo", "exec", "lab", "pc1", "--", "ping", "-c", "1", "10.0.1.20")
        if capture.poll() is not None or stop.wait(0.05):
            break
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err
    with open(pcap, "rb") as fh:
        data = fh.read()
    assert struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D)
    records, at = 0, 24
    while at < len(data):
        records += 1
        at += 16 + struct.unpack("<I", data[at + 8:at + 12])[0]
    assert records == 2


def test_progress_lines_on_stderr(vimaged):
    chain = ["version: 1", "name: chain", "options: {auto_address: true}", "nodes:"]
    chain += [f"  r{i}: {{type: router}}" for i in range(60)]
    chain += ["links:"] + [f"  - [r{i}, r{i + 1}]" for i in range(59)]
    path = f"{vimaged.dir}/chain.yaml"
    with open(path, "w") as fh:
        fh.write("\n".join(chain) + "\n")
    status, out, err = vimaged.cli("topo", "up", path, "--wait-converged")
    assert status == 0 and out == "chain: 60 nodes, 59 links up (converged)\n"
    lines = err.splitlines()
    assert lines and lines[-1] == f"vimage topo: {path}: 119/119 link r58-r59", err
    assert all(re.fullmatch(rf"vimage topo: {re.escape(path)}: \d+/119 .+", x) for x in lines)


def test_experiments_from_inside_a_vnet(vimaged, lab):
    vimaged.ok("create", "box", "children.max=5")
    done = vimaged.run("exec", "box", "--", "vimage", "topo", "up", "-q", lab)
    assert (done.returncode, done.stdout) == (0, "lab: 3 nodes, 2 links up\n"), done.stderr
    assert names(vimaged.ok("-l", "-r")) == ["box", "box.lab", "box.lab.pc1", "box.lab.pc2",
                                             "box.lab.r1"]
    done = vimaged.run("exec", "box", "--", "vimage", "topo", "list")
    assert done.stdout.splitlines()[1].split()[0] == "lab"
    assert vimaged.ok("topo", "list").splitlines()[1].split()[0] == "box.lab"
    done = vimaged.run("exec", "box", "--", "vimage", "topo", "up", "-q", "-e", "two", lab)
    assert done.returncode == 77 and done.stderr == (
        "vimage: children.max (5) of this vnet is too small for 4 vnets\n")
    vimaged.ok("topo", "down", "box.lab")


def test_delegated_channels_may_not_run_start_up_commands(vimaged, lab):
    path = f"{vimaged.dir}/cmds.yaml"
    with open(path, "w") as fh:
        fh.write(LAB.replace("r1: {type: router}", "r1: {type: router, commands: [arp -a]}"))
    vimaged.ok("create", "box")
    done = vimaged.run("exec", "box", "--", "vimage", "topo", "up", "-q", path)
    assert done.returncode == 77 and done.stderr == (
        "vimage: node r1: start-up commands are run only for experiments made from the host\n")
    assert names(vimaged.ok("-l", "-r")) == ["box"]
    assert vimaged.ok("topo", "up", "-q", path) == "lab: 3 nodes, 2 links up\n"  # the host may


def test_imn_file_with_unsupported_nodes(vimaged):
    path = f"{vimaged.dir}/air.imn"
    with open(path, "w") as fh:
        fh.write("node n0 {\n    type pc\n    network-config {\n\thostname pc1\n\t!\n    }\n}\n"
                 "node n1 {\n    type wlan\n    network-config {\n\thostname air\n\t!\n    }\n}\n")
    _, err = _fail(vimaged, "topo", "up", "-q", path)
    assert err.startswith(f"vimage: {path}: unsupported node types wlan: air (wlan)"), err
    assert vimaged.ok("topo", "up", "-q", "--skip-unsupported", path) == "air: 1 node, 0 links up\n"
    assert names(vimaged.ok("-l", "-r")) == ["air", "air.pc1"]


def test_skip_ipv6(vimaged):
    path = f"{vimaged.dir}/six.yaml"
    with open(path, "w") as fh:
        fh.write(LAB.replace("options: {auto_address: true}",
                             "options: {auto_address: true, auto_address6: true}"))
    vimaged.ok("topo", "up", "-q", path)
    assert "fc00:1::20/64" in vimaged.ok("topo", "show", "lab")
    assert "fc00:1::20" in vimaged.ok("lab.pc2", "ifconfig", "eth0")
    vimaged.ok("topo", "down", "lab")
    vimaged.ok("topo", "up", "-q", "--skip-ipv6", path)
    assert "fc00" not in vimaged.ok("topo", "show", "lab")
    assert "fc00" not in vimaged.ok("lab.pc2", "ifconfig", "eth0")


def test_wait_converged_with_routed(vimaged):
    """examples/routing.yaml through the daemon: `--wait-converged` returns once the three
    RIP routers reach every subnet (about a second of real time), and pc1 reaches pc2."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "routing.yaml"
    status, out, err = vimaged.cli("topo", "up", "-q", str(path), "--wait-converged",
                                   "--timeout", "30")
    assert (status, out) == (0, "routing: 5 nodes, 4 links up (converged)\n"), err
    assert "0.0% packet loss" in vimaged.ok("routing.pc1", "ping", "-c", "1", "10.0.3.20")
    vimaged.ok("topo", "down", "routing")


def test_show_one_node_or_one_link(vimaged, lab):
    vimaged.ok("topo", "up", "-q", lab)
    node = vimaged.ok("topo", "show", "lab", "pc2")
    assert node.splitlines()[0].split() == ["Node", "Type", "Vnet", "Interfaces"]
    assert re.match(r"pc2 +pc +lab\.pc2 +eth0 10\.0\.1\.20/24, lo0$", node.splitlines()[1]), node
    assert len(node.splitlines()) == 2
    link = vimaged.ok("topo", "show", "lab", "r1", "pc1")
    assert re.match(r"Link +Parameters +Packets out>/in<\npc1:eth0--r1:eth0 +- +eth0:\d+>/\d+< "
                    r"eth0:\d+>/\d+<\n$", link), link
    status, err = _fail(vimaged, "topo", "show", "lab", "pc9")
    assert (status, err) == (1, "vimage: experiment lab has no node 'pc9'")
    vimaged.ok("topo", "down", "lab")
