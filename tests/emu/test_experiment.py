"""Experiments: a topology realised in a kernel, in virtual time; up, live changes, down."""

from __future__ import annotations

import gc
import json
import re
import socket
import textwrap
from pathlib import Path

import pytest

from vimage.cli import TOOLS
from vimage.emu import Experiment, imn, load, yamlfmt
from vimage.emu.experiment import ExperimentError, kernel_has_cloner, kernel_has_ipv6
from vimage.emu.model import Topology
from vimage.kernel import Kernel
from vimage.net.ifnet import EpairCloner
from vimage.netinet6 import in6_proto
from vimage.wire import ipv4

DATA = Path(__file__).parent / "data"


def rtts(output: str) -> list[str]:
    return re.findall(r"time=([0-9.]+) ms", output)


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(clock="virtual", seed=1)


@pytest.fixture
def exp(kernel: Kernel):
    experiment = Experiment(load(DATA / "static-v2.imn"), kernel).up()
    yield experiment
    experiment.down()


def test_nodes_are_vnets_named_under_the_experiment(exp, kernel):
    assert [v.name for v in kernel.vnets()] == [
        "static-v2", "static-v2.pc1", "static-v2.pc2", "static-v2.router1", "static-v2.router2"]
    assert exp.node("router1") is kernel.get("static-v2.router1")
    assert sorted(exp.node("router1").ifaces) == ["eth0", "eth10", "eth2", "lo0"]
    assert exp.node("pc1").iface("eth0").mac == bytes.fromhex("4200aa000000")
    assert exp.node("router1").ip.forwarding == 1 and exp.node("pc1").ip.forwarding == 0  # G5


def test_ping_across_two_routers_in_virtual_time(exp):
    res = exp.node("pc1").cmd("ping -c 2 10.0.3.20")
    assert res.status == 0, res.output
    # 10 ms + 5 ms each way, and 98-byte frames serialised at 1 Mbit/s on the last link
    assert rtts(res.output)[1] == "31.568"


def test_link_delay_gives_twice_the_delay_as_rtt(exp):
    """G6: the delay (µs in the file) applies once in each direction."""
    assert rtts(exp.node("pc1").cmd("ping -c 2 10.0.0.1").output)[1] == "20.000"
    assert rtts(exp.node("pc2").cmd("ping -c 2 10.0.3.1").output)[1] == "1.568"  # bandwidth


def test_lo0_address_and_static_routes(exp):
    res = exp.node("pc2").cmd("ping -c 1 10.255.0.1")
    assert res.status == 0, res.output


def test_auto_default_route(exp, kernel):
    """G2: pc1 ("enabled") defaults to the router on its segment."""
    route = exp.node("pc1").rt.lookup(ipv4.aton("192.0.2.1"))
    assert route is not None and ipv4.ntoa(route.gateway) == "10.0.0.1"


def test_legacy_auto_default_routes_are_disabled(kernel):
    with Experiment(imn.load(DATA / "static-legacy.imn"), kernel) as exp:
        assert exp.node("pc1").rt.lookup(ipv4.aton("10.0.3.20")) is None
        assert exp.node("pc1").cmd("ping -c 1 10.0.3.20").status != 0


def test_a_live_link_change(exp):
    exp.link("router1", "pc1").set(delay="50ms")
    assert exp.link("pc1", "router1").params == {"delay": 50_000}
    assert rtts(exp.node("pc1").cmd("ping -c 2 10.0.0.1").output)[1] == "100.000"
    exp.link("pc1", "router1").set(delay=None, bandwidth="1Mbit/s")
    assert exp.link("pc1", "router1").params == {"bandwidth": 1_000_000}
    assert exp.topology.links[0].bandwidth == 1_000_000  # the model follows
    assert rtts(exp.node("pc1").cmd("ping -c 2 10.0.0.1").output)[1] == "1.568"
    exp.link("pc1", "router1").set(direct=True)
    assert exp.link("pc1", "router1").ends[0].pipe is None
    with pytest.raises(ValueError, match="not between 0 and 100"):
        exp.link("pc1", "router1").set(delay="1ms", loss="200%")
    assert exp.link("pc1", "router1").model.delay == 0  # nothing changed
    with pytest.raises(ValueError, match="unknown link parameter 'speed'"):
        exp.link("pc1", "router1").set(speed=1)
    with pytest.raises(LookupError):
        exp.link("pc1", "pc2")


def test_state_is_json(exp):
    exp.node("pc1").cmd("ping -c 1 10.0.0.1")
    state = json.loads(json.dumps(exp.state()))
    assert state["up"] is True and state["nodes"]["pc1"]["vnet"] == "static-v2.pc1"
    assert state["links"][0]["params"] == {"delay": 10_000}
    assert state["links"][0]["counters"][0]["opackets"] >= 2


def test_down_leaves_nothing(kernel):
    exp = Experiment(load(DATA / "static-v2.imn"), kernel).up()
    vnets = list(exp.nodes.values())
    exp.node("pc1").cmd("ping -c 1 10.0.3.20")
    exp.node("pc1").socket(2, 2).sendto(b"x", ("10.0.3.20", 9))  # frames in flight
    exp.down()
    assert kernel.vnets() == [] and not exp.is_up
    assert [ifp.name for ifp in kernel.interfaces()] == ["lo0"]
    assert kernel.service(EpairCloner).pairs == {}
    assert all(kernel.sched.pending_timers(v) == 0 for v in vnets)
    exp.down()  # twice is harmless
    exp.up()  # and it comes up again
    assert exp.node("pc1").cmd("ping -c 1 10.0.3.20").ok
    exp.down()


def test_a_big_experiment_is_frozen_after_its_build_and_thawed_by_down(kernel):
    """The kernel's collector policy (vimage.gcpolicy) freezes the nodes made in the
    build's paused block once, at its end; down() destroys them and thaws."""
    if gc.get_freeze_count() or not gc.isenabled():
        pytest.skip("objects are frozen already, or the collector is off: the policy stays off")
    kernel.collector.batch = 3  # as if the topology were thousands of nodes
    exp = Experiment(load(DATA / "static-v2.imn"), kernel).up()
    try:
        assert kernel.collector.freezes == 1 and gc.get_freeze_count() > 0
        assert exp.node("pc1").cmd("ping -c 1 10.0.3.20").ok  # frozen is not stopped
        exp.down()
        assert kernel.collector.thaws == 1 and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_a_link_dies_with_either_node(exp, kernel):
    end = exp.link("pc1", "router1").ends[1]
    kernel.destroy(exp.node("pc1"))
    assert "eth0" not in exp.node("router1").ifaces and end.peer is None


def test_up_is_all_or_nothing(kernel):
    topo = load(DATA / "static-v2.imn")
    topo.nodes["pc2"].commands = ["sysctl net.inet.ip.ttl=32", "nosuchtool -x"]
    with pytest.raises(ExperimentError) as info:
        Experiment(topo, kernel).up()
    assert str(info.value) == ("experiment static-v2: node pc2: 'nosuchtool -x' failed: "
                               "vimage: nosuchtool: command not found")
    assert kernel.vnets() == [] and kernel.service(EpairCloner).pairs == {}
    assert [ifp.name for ifp in kernel.interfaces()] == ["lo0"]


def test_startup_commands_run_in_the_node(kernel):
    topo = load(DATA / "static-v2.imn")
    topo.nodes["pc2"].commands = ["sysctl net.inet.ip.ttl=32"]
    with Experiment(topo, kernel) as exp:
        assert exp.node("pc2").cmd("sysctl -n net.inet.ip.ttl").output.strip() == "32"


def test_a_second_experiment_of_the_same_name_is_refused(exp, kernel):
    with pytest.raises(ExperimentError, match="vnet static-v2 already exists"):
        Experiment(exp.topology, kernel).up()
    assert exp.node("pc1").cmd("ping -c 1 10.0.0.1").ok  # the first is untouched
    with Experiment(exp.topology, kernel, name="second") as other:
        assert other.node("pc1").name == "second.pc1"
        assert other.node("pc1").cmd("ping -c 1 10.0.3.20").ok


class NoBridgeKernel(Kernel):
    standard_cloners = (("epair", EpairCloner),)


def test_lanswitch_needs_the_bridge():
    kernel = NoBridgeKernel(clock="virtual", seed=1)
    with pytest.raises(ExperimentError) as info:
        Experiment(imn.load(DATA / "switched.imn"), kernel, skip_ipv6=True).up()
    assert str(info.value) == ("experiment switched: node switch1: lanswitch needs the bridge "
                               "interface")
    assert kernel.vnets() == []


def kernel_without_ipv6() -> Kernel:
    """A kernel built without IPv6: no inet6 descriptors (route6, ip6, nd6, icmp6) and
    nothing of the AF_INET6 domain (udp6, tcp6, raw6, esp6, ...)."""
    names = {p.name for p in in6_proto.PROTOCOLS}
    return Kernel(clock="virtual", seed=1, protocols=tuple(
        p for p in Kernel.standard_protocols
        if p.name not in names and p.domain != socket.AF_INET6))


def test_rip_and_ipv6_are_refused_before_anything_is_made():
    kernel = kernel_without_ipv6()
    assert not kernel_has_ipv6(kernel)
    topo = imn.load(DATA / "rip-line.imn")
    with pytest.raises(ExperimentError) as info:
        Experiment(topo, kernel).up()
    no_ipv6 = "IPv6 addresses need IPv6 in the kernel (or skip_ipv6 / --skip-ipv6)"
    rip = ("node router1: model rip ripng needs the routed daemon, which this vimage does "
           "not have (use model static)")
    # the RIP refusal applies only while vimage has no routed tool
    expected = ([rip] if "routed" not in TOOLS else []) + [
        f"node {name}: {no_ipv6}" for name in ("router1", "pc1", "pc2")]
    assert info.value.problems == expected
    assert str(info.value) == f"experiment rip-line: {expected[0]}"
    assert kernel.vnets() == []


def test_skip_ipv6_brings_up_an_imunes_file_with_ipv6_addresses(kernel):
    topo = imn.load(DATA / "rip-line.imn")
    topo.nodes["router1"].routing = ()  # as model static
    with Experiment(topo, kernel, skip_ipv6=True) as exp:
        res = exp.node("pc1").cmd("ping -c 1 10.0.1.20")
        assert res.ok, res.output


def test_hosts_and_progress(kernel):
    topo = imn.load(DATA / "crosscanvas-v1.imn")  # hostsAutoAssign
    steps: list[tuple[int, int, str]] = []
    with Experiment(topo, kernel, progress=lambda *a: steps.append(a)) as exp:
        assert exp.node("pc1").cmd("ping -c 1 router1").ok
    assert steps == [(1, 3, "node pc1"), (2, 3, "node router1"), (3, 3, "link pc1-router1")]


def test_auto_addressing_on_a_model_built_in_python(kernel):
    topo = Topology(name="lab", auto_address=True)
    topo.add_node("a", auto_default_routes=True)
    topo.add_node("r", "router")
    topo.add_node("b", "host", auto_default_routes=True)
    topo.connect("a", "r", delay=1000)
    topo.connect("r", "b")
    with Experiment(topo, kernel) as exp:
        assert exp.node("a").iface("eth0").addrs[0].addr == ipv4.aton("10.0.0.20")
        assert exp.node("b").iface("eth0").addrs[0].addr == ipv4.aton("10.0.1.10")
        assert rtts(exp.node("a").cmd("ping -c 2 10.0.1.10").output)[1] == "2.000"
    assert topo.nodes["a"].interfaces["eth0"].ipv4 == []  # the model itself is unchanged


def test_hub_and_ext_nodes_are_refused_with_what_they_need():
    topo = Topology(name="lab")
    topo.add_node("pc1")
    topo.add_node("hub1", "hub")
    topo.add_node("out", "ext")
    topo.connect("pc1", "hub1")
    topo.connect("out", "hub1")
    kernel = NoBridgeKernel(clock="virtual", seed=1)
    with pytest.raises(ExperimentError) as info:
        Experiment(topo, kernel).up()
    assert info.value.problems == ["node hub1: hub needs the hub or bridge interface",
                                   "node out: ext nodes need the real clock (a TAP into Linux, "
                                   "which does not wait for virtual time)"]
    assert kernel.vnets() == []


def test_bridge_detection():
    assert kernel_has_cloner(Kernel(), "epair")
    assert not kernel_has_cloner(NoBridgeKernel(), "bridge")


def test_services_vimage_provides_start_and_others_are_warned_about():
    kernel = Kernel(clock="virtual", seed=1)
    topo = yamlfmt.loads(textwrap.dedent("""\
        version: 1
        name: svc
        nodes:
          r1: {type: router, services: [routed, ssh], interfaces: {eth0: {ipv4: [10.0.0.1/24]}}}
          r2: {type: router, interfaces: {eth0: {ipv4: [10.0.0.2/24]}}}
        links:
          - {a: r1:eth0, b: r2:eth0}
        """), "svc.yaml")
    with Experiment(topo, kernel) as exp:
        assert exp.node("r1").cmd("routed -S").ok  # the routed service runs in r1
        assert not exp.node("r2").cmd("routed -S").ok
        assert exp.warnings == ["node r1: service ssh is not provided by vimage "
                                "(it has rip, ripng, route6d, routed)"]
