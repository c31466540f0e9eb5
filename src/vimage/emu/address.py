"""IMUNES's automatic addressing and automatic default routes, on the model alone.

Segments: the L3 interfaces that share one Ethernet, following links across lanswitch
and hub nodes (SEMANTICS G2). `auto_assign` gives each segment with no address one free
10.0.N.0/24 (lowest N no address of the topology uses; fc00:N::/64 for IPv6) and each
interface the first free host number from its node type's base: router .1, host .10,
pc .20 (G8; ext nodes as routers). `default_routes` returns the routes G2 adds to nodes
with `auto_default_routes`: a pc or host gets one per address family towards the
ext-then-router interfaces on its segment that share a subnet with it; a router only
towards ext nodes.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress

from vimage.emu.model import Route, Topology

HOST_BASE: tuple[tuple[str, int], ...] = (("router", 1), ("ext", 1), ("host", 10), ("pc", 20))
GATEWAY_PRIORITY: tuple[tuple[str, int], ...] = (("ext", 2), ("router", 1))

End = tuple[str, str]  # (node, interface)


def segments(topo: Topology) -> list[list[End]]:
    """The L3 interfaces of each Ethernet segment, in link order."""
    parent: dict[End, End] = {}

    def find(x: End) -> End:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(x: End, y: End) -> None:
        parent[find(x)] = find(y)

    for link in topo.links:
        union(link.a, link.b)
    for node in topo.nodes.values():
        if not node.is_l3:
            ends = [(node.name, name) for name in node.interfaces]
            for end in ends[1:]:
                union(ends[0], end)
    groups: dict[End, list[End]] = {}
    for link in topo.links:
        for end in (link.a, link.b):
            node = topo.nodes.get(end[0])
            if node is not None and node.is_l3:
                group = groups.setdefault(find(end), [])
                if end not in group:
                    group.append(end)
    return list(groups.values())


def auto_assign(topo: Topology, ipv4: bool = True, ipv6: bool = False) -> Topology:
    """A copy of `topo` with IMUNES addresses on each segment that has none."""
    topo = _with_own_interfaces(topo)
    for family, wanted in ((4, ipv4), (6, ipv6)):
        if not wanted:
            continue
        key = "ipv4" if family == 4 else "ipv6"
        used_nets = {ipaddress.ip_interface(a).network for n in topo.nodes.values()
                     for i in n.interfaces.values() for a in getattr(i, key)}
        n = 0
        for segment in segments(topo):
            ifaces = [topo.nodes[node].interfaces[name] for node, name in segment]
            if any(getattr(i, key) for i in ifaces):
                continue
            while _subnet(family, n) in used_nets:
                n += 1
            net = _subnet(family, n)
            used_nets.add(net)
            taken: set[int] = set()
            for (node_name, _), iface in zip(segment, ifaces, strict=True):
                host = dict(HOST_BASE).get(topo.nodes[node_name].type, 20)
                while host in taken:
                    host += 1
                taken.add(host)
                # IMUNES writes the same digits in both families: .20 and ::20
                index = host if family == 4 else int(str(host), 16)
                getattr(iface, key).append(f"{net[index]}/{net.prefixlen}")
    return topo


def _with_own_interfaces(topo: Topology) -> Topology:
    """A copy of `topo` whose interfaces (and address lists) are its own (a deep copy
    costs a second per thousand nodes; only the addresses change)."""
    new = copy.copy(topo)
    new.nodes = {
        name: dataclasses.replace(node, interfaces={
            k: dataclasses.replace(i, ipv4=list(i.ipv4), ipv6=list(i.ipv6))
            for k, i in node.interfaces.items()})
        for name, node in topo.nodes.items()}
    return new


def _subnet(family: int, n: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The n-th automatic subnet: 10.0.0.0/24, 10.0.1.0/24, ... 10.0.255.0/24, 10.1.0.0/24
    (the next network, as IMUNES's findFreeIPv4Subnet steps); fc00:N::/64 with N's
    decimal digits, as IMUNES writes it (10.0.1 ~ fc00:1::)."""
    if family == 4:
        if n >= 1 << 16:
            raise ValueError("no free automatic IPv4 subnet left in 10.0.0.0/8")
        return ipaddress.ip_network(f"10.{n >> 8}.{n & 0xFF}.0/24")
    if n >= 10_000:
        raise ValueError("no free automatic IPv6 subnet left (fc00:0:: to fc00:9999::)")
    return ipaddress.ip_network(f"fc00:{n}::/64")


def default_routes(topo: Topology) -> dict[str, list[Route]]:
    """node -> the default routes G2 gives it (nodes with auto_default_routes only); the
    first route of each family is the preferred gateway (ext 2 > router 1)."""
    out: dict[str, list[Route]] = {}
    for segment in segments(topo):
        for node_name, ifname in segment:
            node = topo.nodes[node_name]
            if not node.auto_default_routes:
                continue
            wanted = ("ext",) if node.type == "router" else ("ext", "router")
            mine = node.interfaces[ifname]
            candidates = []
            for order, (peer_name, peer_if) in enumerate(segment):
                peer = topo.nodes[peer_name]
                if peer_name == node_name or peer.type not in wanted:
                    continue
                for gateway in _same_subnet(mine.ipv4 + mine.ipv6,
                                            peer.interfaces[peer_if].ipv4
                                            + peer.interfaces[peer_if].ipv6):
                    prio = dict(GATEWAY_PRIORITY)[peer.type]
                    candidates.append((-prio, order, gateway))
            routes = out.setdefault(node_name, [])
            # one peer gives a gateway per family: never compare an IPv4 with an IPv6 one
            candidates.sort(key=lambda c: (c[0], c[1], c[2].version, int(c[2])))
            for _, _, gateway in candidates:
                dest = "0.0.0.0/0" if gateway.version == 4 else "::/0"
                route = Route(dest, str(gateway))
                if route not in routes:
                    routes.append(route)
    return {name: routes for name, routes in out.items() if routes}


def _same_subnet(mine: list[str], theirs: list[str]) -> list[ipaddress._BaseAddress]:
    nets = [ipaddress.ip_interface(a).network for a in mine]
    found = []
    for text in theirs:
        peer = ipaddress.ip_interface(text)
        if any(peer.ip in net for net in nets if net.version == peer.version):
            found.append(peer.ip)
    return found
