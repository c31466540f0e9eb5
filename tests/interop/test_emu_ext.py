"""ext nodes: a topology reached from a real Linux network namespace through a TAP.

The ext node's Linux namespace (`vimage-EXP.NODE`) is made by the experiment and gone
after `down()`; Linux's own ping crosses a vimage router to a pc, in IPv4 and IPv6.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from vimage.emu import Experiment, yamlfmt
from vimage.emu.experiment import ExperimentError
from vimage.emu.ext import exists
from vimage.kernel import Kernel

TOPO = """\
version: 1
name: {name}
nodes:
  out:
    type: ext
    interfaces: {{eth0: {{ipv4: [10.77.0.2/24], ipv6: ["fc00:77::2/64"]}}}}
    routes: [default 10.77.0.1, "::/0 fc00:77::1"]
  r1:
    type: router
    interfaces:
      eth0: {{ipv4: [10.77.0.1/24], ipv6: ["fc00:77::1/64"]}}
      eth1: {{ipv4: [10.77.1.1/24], ipv6: ["fc00:77:1::1/64"]}}
  pc1:
    type: pc
    interfaces: {{eth0: {{ipv4: [10.77.1.20/24], ipv6: ["fc00:77:1::20/64"]}}}}
    routes: [default 10.77.1.1, "::/0 fc00:77:1::1"]
links:
  - a: out:eth0
    b: r1:eth0
  - a: r1:eth1
    b: pc1:eth0
"""


def test_ping_from_the_linux_namespace_into_the_topology(lab):
    ping = lab.need("ping")
    name = f"ext{os.getpid()}"
    topo = yamlfmt.loads(TOPO.format(name=name), "ext.yaml")
    netns = f"vimage-{name}.out"
    with Experiment(topo, lab.kernel) as exp:
        lab.start()
        assert exists(netns)
        assert exp.node("r1").iface("eth0").kind == "tap"
        assert exp.state()["nodes"]["out"]["netns"] == netns
        links = lab.ip(netns, "-o", "addr", "show", "dev", "eth0")
        assert "10.77.0.2/24" in links and "fc00:77::2/64" in links
        for dst in ("10.77.1.20", "fc00:77:1::20"):
            proc = subprocess.run(["ip", "netns", "exec", netns, ping, "-c", "2", "-W", "2",
                                   dst], capture_output=True, text=True, timeout=20)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "ttl=63" in proc.stdout or "hlim=63" in proc.stdout, proc.stdout
        res = exp.node("pc1").cmd("ping -c 1 10.77.0.2")  # and back, from the pc
        assert res.ok, res.output
    assert not exists(netns)
    assert lab.kernel.vnets() == []


def test_an_existing_namespace_is_refused_before_anything_is_made(lab):
    """Another kernel (another process, say) holding the namespace: nothing is made."""
    name = f"ext{os.getpid()}b"
    topo = yamlfmt.loads(TOPO.format(name=name), "ext.yaml")
    other = Kernel(clock="real")
    with Experiment(topo, lab.kernel):
        with pytest.raises(ExperimentError) as info:
            Experiment(topo, other).up()
        assert info.value.problems == [
            f"node out: Linux network namespace vimage-{name}.out already exists"]
        assert other.vnets() == []
    assert not exists(f"vimage-{name}.out")


def test_a_failed_up_deletes_the_namespace(lab):
    name = f"ext{os.getpid()}c"
    text = TOPO.format(name=name).replace(
        "  pc1:\n    type: pc\n", "  pc1:\n    type: pc\n    commands: [nosuchtool]\n")
    with pytest.raises(ExperimentError, match="node pc1: 'nosuchtool' failed"):
        Experiment(yamlfmt.loads(text, "ext.yaml"), lab.kernel).up()
    assert not exists(f"vimage-{name}.out")
    assert lab.kernel.vnets() == []
