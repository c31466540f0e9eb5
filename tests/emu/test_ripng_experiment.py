"""The emulator starts route6d for `ripng` routers: a dual-stack RIP + RIPng line
converges for both families, and converged() waits for both."""

from vimage import Kernel
from vimage.apps.route6d import Route6dService
from vimage.apps.routed import RoutedService
from vimage.emu.experiment import Experiment
from vimage.emu.model import Topology


def test_dual_stack_rip_and_ripng_converge() -> None:
    topo = Topology(name="dual", auto_address=True, auto_address6=True)
    for name in ("r1", "r2", "r3"):
        topo.add_node(name, "router", routing=("rip", "ripng"))
    topo.add_node("r4", "router", routing=("ripng",))
    topo.connect("r1", "r2")
    topo.connect("r2", "r3")
    topo.connect("r3", "r4")
    kernel = Kernel(clock="virtual", seed=1)
    with Experiment(topo, kernel) as exp:
        r1, r4 = exp.node("r1"), exp.node("r4")
        assert kernel.service(RoutedService).get(r1) is not None
        assert kernel.service(Route6dService).get(r1) is not None
        assert kernel.service(RoutedService).get(r4) is None  # ripng only
        assert kernel.service(Route6dService).get(r4) is not None
        assert not exp.converged()
        kernel.run(60)
        assert exp.converged()
        far6 = [a for a in exp.resolved.nodes["r4"].interfaces.values() for a in a.ipv6]
        assert far6
        res = r1.cmd(f"ping6 -c 1 {far6[0].partition('/')[0]}")
        assert res.ok, res.output
        far4 = [a for a in exp.resolved.nodes["r3"].interfaces.values() for a in a.ipv4]
        res = r1.cmd(f"ping -c 1 {far4[-1].partition('/')[0]}")
        assert res.ok, res.output
