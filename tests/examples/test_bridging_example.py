"""examples/bridging.yaml: three pcs on a lanswitch (a learning bridge)."""

from __future__ import annotations

import pytest

from vimage.emu import Experiment, load
from vimage.emu.address import auto_assign
from vimage.emu.experiment import ExperimentError, kernel_has_cloner
from vimage.kernel import Kernel


def test_bridging_example_addresses():
    topo = auto_assign(load("examples/bridging.yaml"))
    assert [n.interfaces["eth0"].ipv4 for n in topo.nodes.values() if n.type == "pc"] == [
        ["10.0.0.20/24"], ["10.0.0.21/24"], ["10.0.0.22/24"]]


def test_bridging_example_runs_or_says_what_it_needs():
    kernel = Kernel(clock="virtual", seed=1)
    exp = Experiment(load("examples/bridging.yaml"), kernel)
    if not kernel_has_cloner(kernel, "bridge"):
        with pytest.raises(ExperimentError, match="node sw1: lanswitch needs the bridge"):
            exp.up()
        assert kernel.vnets() == []
        return
    with exp:
        res = exp.node("pc1").cmd("ping -c 2 pc3")
        assert res.ok, res.output
