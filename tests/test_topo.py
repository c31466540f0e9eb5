"""Topology helpers: aggregated chain routes reach every link."""

import ipaddress

from vimage.kernel import Kernel
from vimage.topo import (
    chain_links,
    line,
    link_blocks,
    link_prefix,
    link_prefix6,
    router_chain,
    star,
    udp_delivered,
)


def test_link_blocks_cover_exactly_the_range():
    for last in (0, 1, 2, 6, 255, 256, 300, 1997):
        covered = set()
        for net, plen in link_blocks(0, last):
            block = ipaddress.ip_network(f"{net}/{plen}")
            covered |= {str(n.network_address) for n in block.subnets(new_prefix=24)}
        assert covered == {f"{link_prefix(i)}.0" for i in range(last + 1)}
        assert len(link_blocks(0, last)) <= 17  # logarithmic, not one per link


def test_long_chain_every_node_reaches_links_on_both_sides():
    k = Kernel(clock="virtual", seed=1)
    nodes = router_chain(k, 300)
    k.run(1)
    assert max(len(v.rt) for v in nodes) <= 20
    assert udp_delivered(nodes[200], nodes[150], "10.0.150.1")  # leftwards, aggregated
    assert udp_delivered(nodes[260], nodes[290], "10.1.34.1")  # rightwards, by default
    assert udp_delivered(nodes[-1], nodes[262], f"{link_prefix(261)}.2")
    links = chain_links(nodes)
    assert len(links) == 301 and links[5][0].vnet is nodes[5] and links[5][1].vnet is nodes[6]


def test_dual_stack_line_routes_ipv6_beside_ipv4():
    k = Kernel(clock="virtual", seed=1)
    net = line(k, 4, ipv6=True)
    k.run(3)  # duplicate address detection is over
    assert net.addr6("n4") == f"{link_prefix6(2)}2" == "fd00:0:0:2::2"
    out = net["n1"].cmd(f"ping6 -c 2 {net.addr6('n4')}")
    assert out.ok and "2 packets received" in out.output and "hlim=62" in out.output
    assert net["n1"].cmd(f"ping -c 1 {net.addr('n4')}").ok  # IPv4 as before
    routes = net["n2"].cmd("netstat -rn -f inet6").output
    assert "fd00:0:0:2::/64                   fd00:0:0:1::2                 UGS" in routes
    assert net["n2"].sysctl("net.inet6.ip6.forwarding") == 1


def test_dual_stack_star_and_ipv4_only_default():
    k = Kernel(clock="virtual", seed=1)
    net = star(k, 3, ipv6=True)
    k.run(3)
    assert net["h1"].cmd(f"ping6 -c 1 {net.addr6('h3')}").ok
    plain = star(Kernel(clock="virtual", seed=1), 2)
    assert not plain.ipv6
    assert "fd00:" not in plain["h1"].cmd("ifconfig -a").output


async def test_the_plugins_star_fixture_makes_a_dual_stack_star(star, vimage_kernel):
    net = star(2, ipv6=True, delay="5ms")
    vimage_kernel.run(3)
    out6 = net["h1"].cmd(f"ping6 -c 1 {net.addr6('h2')}")
    out4 = net["h1"].cmd(f"ping -c 1 {net.addr('h2')}")
    assert out6.ok and out4.ok
    rtt6 = out6.output.split("time=")[1].split()[0]
    assert rtt6 == out4.output.split("time=")[1].split()[0] and float(rtt6) >= 20


def test_net_records_what_it_builds_in_the_emulator_model():
    k = Kernel(clock="virtual", seed=1)
    net = star(k, 3, ipv6=True)
    topo = net.topology
    assert {n: node.type for n, node in topo.nodes.items()} == {
        "r": "router", "h1": "host", "h2": "host", "h3": "host"}
    assert not topo.problems()
    assert len(topo.links) == 3
    for end_a, end_b in net.links:  # every live interface is in the model, same addresses
        for end in (end_a, end_b):
            iface = topo.nodes[end.vnet.name].interfaces[end.name]
            assert iface.ipv4 == [f"{ipaddress.IPv4Address(a.addr)}/{a.plen}" for a in end.addrs]
            assert iface.ipv4[0].endswith((".1/24", ".2/24"))
            assert iface.ipv6 == [f"{net._addr6(end)}/64"]
    h1_routes = {(r.dest, r.gateway) for r in topo.nodes["h1"].routes}
    assert h1_routes == {("0.0.0.0/0", "10.0.0.2"), ("::/0", "fd00:0:0:0::2")}
    assert len(topo.nodes["r"].routes) == 0  # the router touches every link


def test_a_nets_model_comes_up_again_as_an_experiment():
    """The graph a test built is the emulator's: saved as YAML, loaded, brought up in
    another kernel, it has the same addresses and routes, and h1 reaches h3."""
    from vimage.emu import Experiment, yamlfmt

    net = line(Kernel(clock="virtual", seed=1), 4)
    net.link(net["n1"], net["n4"], delay="5ms", loss="1%")
    net.route()
    text = yamlfmt.dumps(net.topology)
    again = yamlfmt.loads(text)
    assert again.to_dict() == net.topology.to_dict()
    link = again.link_between("n1", "n4")
    assert (link.delay, link.loss) == (5000, 1.0)
    k2 = Kernel(clock="virtual", seed=2)
    with Experiment(again, k2, name="copy") as exp:
        for name, vnet in net.nodes.items():
            mine = {(i.name, ipv4_of(i)) for i in vnet.ifaces.values() if i.addrs}
            theirs = {(i.name, ipv4_of(i)) for i in exp.node(name).ifaces.values() if i.addrs}
            assert mine == theirs
        assert exp.node("n1").cmd(f"ping -c 1 {net.addr('n3')}").ok
        assert "1 packets received" in exp.node("n2").cmd(
            f"ping -c 1 -t 2 {net.addr('n4')}").output


def ipv4_of(ifp):
    return tuple(sorted((a.addr, a.plen) for a in ifp.addrs))
