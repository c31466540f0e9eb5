"""Experiment.converged(): what `vimage topo up --wait-converged` waits for."""

from vimage import Kernel
from vimage.emu.experiment import Experiment
from vimage.emu.model import Topology


def test_converged_when_every_routing_node_reaches_every_subnet():
    topo = Topology(name="line", auto_address=True)
    for name in ("r1", "r2", "r3"):
        topo.add_node(name, "router")
    topo.connect("r1", "r2")
    topo.connect("r2", "r3")
    with Experiment(topo, Kernel(clock="virtual", seed=1)) as exp:
        assert exp.converged()  # no routing daemon: nothing to wait for
        exp.routing = {"r1": ("rip",), "r3": ("rip",)}  # as if routed ran there
        assert not exp.converged()  # r1 has no route to 10.0.1.0/24, r3 none to 10.0.0.0/24
        assert exp.node("r1").cmd("route add 10.0.1.0/24 10.0.0.2").ok
        assert not exp.converged()
        assert exp.node("r3").cmd("route add 10.0.0.0/24 10.0.1.1").ok
        assert exp.converged()
    assert not exp.converged()  # down
