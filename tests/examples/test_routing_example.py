"""examples/routing.yaml: two LANs joined by three RIP routers, in virtual time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from vimage.emu import load
from vimage.emu.experiment import pipe_settings


def test_routing_example_pings_end_to_end(topology, vimage_kernel):
    exp = topology("examples/routing.yaml")
    vimage_kernel.run(10)  # RIP converges (triggered updates, damped 1-5 s)
    res = exp.node("pc1").cmd("ping -c 2 10.0.3.20")
    assert res.status == 0, res.output
    # 1 + 5 + 5 + 1 ms each way, plus 98-byte frames serialised at 100 and 10 Mbit/s
    serialise_ms = 2 * (2 * 98 * 8 / 100e6 + 2 * 98 * 8 / 10e6) * 1e3
    rtt = float(re.findall(r"time=([0-9.]+) ms", res.output)[1])
    assert abs(rtt - (24 + serialise_ms)) < 0.002
    hops = re.findall(r"^ *\d+  (\S+)", exp.node("pc2").cmd("traceroute -n -q 1 10.0.0.20")
                      .output, re.MULTILINE)
    assert hops == ["10.0.3.1", "10.0.2.1", "10.0.1.1", "10.0.0.20"]  # r3, r2, r1, pc1


def test_routing_example_file_is_what_the_docs_say():
    topo = load("examples/routing.yaml")
    assert [n.type for n in topo.nodes.values()] == ["pc", "router", "router", "router", "pc"]
    assert [n.routing for n in topo.nodes.values()] == [(), ("rip",), ("rip",), ("rip",), ()]
    assert all(not n.routes for n in topo.nodes.values())
    assert pipe_settings(topo.links[1]) == {"bandwidth": 10_000_000, "delay": 0.005}


def test_routing_py_converges_then_heals_around_a_cut_link():
    script = Path(__file__).resolve().parents[2] / "examples" / "routing.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = done.stdout.split("# second run: the r1-r2 cable is cut")
    hops = re.findall(r"^ *\d+  (\S+)", first, re.MULTILINE)
    assert hops == ["10.1.0.1", "10.0.12.2", "10.2.0.20"]  # r1, r2, pc2
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in second
    hops = re.findall(r"^ *\d+  (\S+)", second, re.MULTILINE)
    assert hops == ["10.1.0.1", "10.0.41.4", "10.0.34.3", "10.0.23.2", "10.2.0.20"]
    assert "10.2.0.0/24        10.0.41.4          UG      epair5b" in second


def test_routing_example_converges_with_rip(vimage_kernel):
    """The emulator starts routed on the RIP routers; Experiment.converged() (what
    `vimage topo up --wait-converged` waits for) turns true once RIP has spread every
    subnet, within the first round of triggered updates."""
    from vimage.emu import Experiment

    with Experiment(load("examples/routing.yaml"), vimage_kernel) as exp:
        assert sorted(exp.routing) == ["r1", "r2", "r3"]
        assert not exp.converged()
        waited = 0.0
        while not exp.converged():
            vimage_kernel.run(0.5)
            waited += 0.5
            assert waited < 10, "RIP did not converge in 10 s"
        r1 = exp.node("r1").cmd("netstat -rn -f inet").output
        assert re.search(r"^10\.0\.3\.0/24 +10\.0\.1\.2 +UG ", r1, re.MULTILINE), r1
