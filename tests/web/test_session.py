"""GuiSession, the GUI without HTTP: opening files, refusals, console confinement, cleanup."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vimage.emu import yamlfmt
from vimage.web.session import GuiError, GuiSession, console_argv

ROUTING = Path(__file__).resolve().parent / "data" / "routing.yaml"  # static routes


def test_a_missing_file_starts_an_empty_topology_saved_there(tmp_path):
    path = tmp_path / "my lab.yaml"
    gui = GuiSession.open(path)
    assert gui.topology.name == "my-lab" and not gui.topology.nodes
    gui.replace({"version": 1, "name": "my-lab", "nodes": {"a": {"type": "pc"}}, "links": []})
    assert gui.save() == str(path)
    assert yamlfmt.load(path).nodes["a"].position is not None  # the layout placed it


@pytest.mark.parametrize("line", ["ping -c 3 10.0.3.20", "tcpdump -c 1 -i eth0 -n icmp",
                                  "tcpdump --time-stamp-precision nano -c 1", "netstat -rn"])
def test_console_lines_of_the_tools_pass(line):
    assert console_argv(line)[0] == line.split()[0]


@pytest.mark.parametrize(("line", "why"), [
    ("", "a console line is a non-empty string"),
    (None, "a console line is a non-empty string"),
    ("bash", "bash: not a vimage tool"),
    ("vimage exec x -- sh", "vimage: not a vimage tool"),
    ("tcpdump -w/tmp/x -c 1", "tcpdump: -r and -w"),
    ("tcpdump -c 1 -nvw out.pcap", "tcpdump: -r and -w"),
    ("ping " + "1" * 1000, "a console line has at most 1000 characters"),
])
def test_console_lines_that_are_refused(line, why):
    with pytest.raises(GuiError) as refused:
        console_argv(line)
    assert str(refused.value).startswith(why)


def test_a_failed_start_leaves_nothing_and_close_stops_the_kernel(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nname: t\nnodes:\n  a: {type: pc}\n"
                    "  x: {type: pc, commands: [nosuchtool -x]}\nlinks: [[a, x]]\n")
    gui = GuiSession.open(path)
    with pytest.raises(GuiError) as refused:
        gui.up()
    assert refused.value.status == 409
    assert "node x: 'nosuchtool -x' failed" in str(refused.value)
    assert gui.kernel is not None and gui.kernel.vnets() == []
    assert not gui.is_up
    gui.close()
    assert gui.kernel is None


def test_down_destroys_the_experiment_and_its_captures(tmp_path):
    path = tmp_path / "routing.yaml"
    shutil.copy(ROUTING, path)
    gui = GuiSession.open(path)
    gui.up()
    kernel = gui.kernel
    assert kernel is not None and len(kernel.vnets()) == 6  # routing and its five nodes
    capture = gui.capture_start("r1", "r2")
    assert capture["running"]
    ends = gui.experiment.link("r1", "r2").ends
    gui.down()
    assert kernel.vnets() == []
    assert all(e.bpf is None for e in ends)
    assert gui.capture_stop("r1", "r2")["running"] is False
    with pytest.raises(GuiError, match="start the experiment first"):
        gui.run("pc1", "ifconfig")
    gui.close()


def test_the_console_runs_ping6_across_a_router(tmp_path):
    """IPv6 in the GUI's experiments: IMUNES fc00:N::/64 addresses, automatic defaults."""
    path = tmp_path / "six.yaml"
    path.write_text("version: 1\nname: six\noptions: {auto_address: true, auto_address6: true}\n"
                    "nodes:\n  pc1: {type: pc, auto_default_routes: true}\n"
                    "  r1: {type: router}\n  pc2: {type: pc, auto_default_routes: true}\n"
                    "links: [[pc1, r1], [r1, pc2]]\n")
    gui = GuiSession.open(path)
    try:
        gui.up()
        status, output = gui.run("pc1", "ping6 -c 1 fc00:1::20")
        assert status == 0, output
        assert "from fc00:1::20" in output and "hlim=63" in output
    finally:
        gui.close()
