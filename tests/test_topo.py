"""Topology helpers: aggregated chain routes reach every link."""

import ipaddress

from vimage.kernel import Kernel
from vimage.topo import chain_links, link_blocks, link_prefix, router_chain, udp_delivered


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
