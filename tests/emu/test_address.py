"""IMUNES automatic addressing (G8) and automatic default routes (G2), on the model."""

from __future__ import annotations

from vimage.emu.address import auto_assign, default_routes, segments
from vimage.emu.model import Route, Topology


def lan() -> Topology:
    """pc1, host1, r1, r2 on one lanswitch (through a hub); r1 - pc2 on a link."""
    topo = Topology(name="lan")
    topo.add_node("sw", "lanswitch")
    topo.add_node("hub", "hub")
    topo.add_node("pc1", auto_default_routes=True)
    topo.add_node("host1", "host", auto_default_routes=True)
    topo.add_node("r1", "router", auto_default_routes=True)
    topo.add_node("r2", "router")
    topo.add_node("pc2", auto_default_routes=True)
    topo.connect("pc1", "sw")
    topo.connect("sw", "hub")
    topo.connect("host1", "hub")
    topo.connect("r1", "sw")
    topo.connect("r2", "hub")
    topo.connect("r1", "pc2")
    return topo


def test_segments_follow_switches_and_hubs():
    assert segments(lan()) == [[("pc1", "eth0"), ("host1", "eth0"), ("r1", "eth0"),
                                ("r2", "eth0")], [("r1", "eth1"), ("pc2", "eth0")]]


def test_router_1_host_10_pc_20_in_the_next_free_subnet():
    topo = lan()
    topo.nodes["r1"].interfaces["eth1"].ipv4.append("10.0.0.1/24")  # 10.0.0 is taken
    done = auto_assign(topo, ipv6=True)
    addrs = {(n, i): (iface.ipv4, iface.ipv6) for n, node in done.nodes.items()
             for i, iface in node.interfaces.items() if iface.ipv4 or iface.ipv6}
    assert addrs[("pc1", "eth0")] == (["10.0.1.20/24"], ["fc00::20/64"])
    assert addrs[("host1", "eth0")] == (["10.0.1.10/24"], ["fc00::10/64"])
    assert addrs[("r1", "eth0")] == (["10.0.1.1/24"], ["fc00::1/64"])
    assert addrs[("r2", "eth0")] == (["10.0.1.2/24"], ["fc00::2/64"])
    # the r1 - pc2 segment keeps its IPv4 address (none added) and gets IPv6 in fc00:1::
    assert addrs[("r1", "eth1")] == (["10.0.0.1/24"], ["fc00:1::1/64"])
    assert ("pc2", "eth0") in addrs and addrs[("pc2", "eth0")][0] == []
    assert topo.nodes["pc1"].interfaces["eth0"].ipv4 == []  # a copy was changed


def test_default_routes_go_to_routers_on_the_segment():
    routes = default_routes(auto_assign(lan()))
    assert routes["pc1"] == [Route("0.0.0.0/0", "10.0.0.1"), Route("0.0.0.0/0", "10.0.0.2")]
    assert routes["host1"] == routes["pc1"]
    assert routes["pc2"] == [Route("0.0.0.0/0", "10.0.1.1")]
    assert "r1" not in routes  # a router defaults only towards ext nodes
    assert "r2" not in routes  # not enabled


def test_ext_gateways_come_first_and_subnets_must_match():
    topo = lan()
    topo.add_node("gw", "ext")
    topo.connect("gw", "sw")
    done = auto_assign(topo)
    assert done.nodes["gw"].interfaces["eth0"].ipv4 == ["10.0.0.3/24"]  # ext numbered as router
    routes = default_routes(done)
    assert routes["pc1"][0] == Route("0.0.0.0/0", "10.0.0.3")  # ext 2 > router 1
    assert routes["r1"] == [Route("0.0.0.0/0", "10.0.0.3")]
    done.nodes["gw"].interfaces["eth0"].ipv4 = ["192.168.0.1/24"]  # another subnet
    assert Route("0.0.0.0/0", "192.168.0.1") not in default_routes(done)["pc1"]


def test_default_routes_of_both_families_through_one_router():
    topo = Topology(auto_address=True, auto_address6=True)
    topo.add_node("pc", "pc", auto_default_routes=True)
    topo.add_node("r", "router")
    topo.connect("pc", "r")
    assert default_routes(auto_assign(topo, True, True)) == {
        "pc": [Route("0.0.0.0/0", "10.0.0.1"), Route("::/0", "fc00::1")]}
