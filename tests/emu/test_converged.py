"""Experiment.converged(): what `vimage topo up --wait-converged` waits for."""

from pathlib import Path

import pytest

from vimage import Kernel
from vimage.emu import load
from vimage.emu.experiment import Experiment, ExperimentError
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


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_up_waits_until_routed_has_converged_in_virtual_time():
    kernel = Kernel(clock="virtual", seed=1)
    exp = Experiment(load(EXAMPLES / "routing.yaml"), kernel)
    assert not exp.up().converged()  # routed has only just started: r1 knows its own nets
    exp.down()
    start = kernel.sched.now_ns()
    with Experiment(load(EXAMPLES / "routing.yaml"), kernel).up(wait_converged=True) as exp:
        took = (kernel.sched.now_ns() - start) / 1e9
        assert exp.converged() and 0 < took < 1, took  # 10 ms of RIP, checked per 10 ms
        for r in ("r1", "r2", "r3"):  # every router reaches every one of the four subnets
            table = exp.node(r).cmd("netstat -rn -f inet").output
            assert all(f"10.0.{n}.0/24" in table for n in range(4)), table
        assert exp.node("pc1").cmd("ping -c 1 10.0.3.20").ok  # at once, no kernel.run
        assert (kernel.sched.now_ns() - start) / 1e9 - took < 0.1


def test_up_that_does_not_converge_fails_and_leaves_nothing():
    topo = Topology(name="stuck", auto_address=True)
    topo.add_node("r1", "router", routing=("rip",))
    topo.add_node("r2", "router")  # static: never tells r1 of the net behind it
    topo.add_node("r3", "router")
    topo.connect("r1", "r2")
    topo.connect("r2", "r3")
    kernel = Kernel(clock="virtual", seed=1)
    start = kernel.sched.now_ns()
    exp = Experiment(topo, kernel)
    with pytest.raises(ExperimentError, match="did not converge in 5 s"):
        exp.up(wait_converged=True, timeout=5)
    assert 5 <= (kernel.sched.now_ns() - start) / 1e9 < 5.2
    assert not exp.is_up and kernel.vnets() == []


def test_routed_gets_a_table_sized_to_a_topology_larger_than_its_limit(monkeypatch):
    """The daemons refuse learnt routes past max_routes (1,024 by default); an experiment
    with more subnets than that starts them with a table twice the topology's size.
    Here the limit is lowered to 4 so that a ring of 6 routers (6 subnets) exceeds it."""
    from vimage.apps.routed import RipParams, RoutedService

    monkeypatch.setattr(RipParams, "max_routes", 4)
    topo = Topology(name="ring", auto_address=True)
    names = [f"r{i}" for i in range(6)]
    for name in names:
        topo.add_node(name, "router", routing=("rip",))
    for a, b in zip(names, names[1:] + names[:1], strict=True):
        topo.connect(a, b)
    kernel = Kernel(clock="virtual", seed=1)
    with Experiment(topo, kernel).up(wait_converged=True) as exp:
        daemon = kernel.service(RoutedService).get(exp.node("r0"))
        assert daemon is not None and daemon.params.max_routes == 12
        assert daemon.stats["overflow"] == 0
