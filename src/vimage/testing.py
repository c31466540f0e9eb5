"""Topologies for tests in a few lines: `Net`, and the builders behind the pytest fixtures.

    net = Net(Kernel(clock="virtual", seed=1))
    a, b = net.hosts("a", "b")
    r = net.routers("r")
    net.link(a, r, delay="5ms")
    net.link(r, b, loss="1%")
    net.route()                 # static routes along shortest paths, names in every vnet

Each link gets its own /24 (`topo.link_prefix`), the lower-named end .1 and the other
.2. A host (one link) gets a default route; a router forwards and gets a route to
every link it does not touch, through its neighbour on a shortest path. Every vnet's
hosts table learns every node's name (its first address), so programs connect by name.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from vimage import topo
from vimage.wire.ipv4 import ntoa as _ntoa

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet


class Net:
    """A topology under construction; see the module docstring."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.nodes: dict[str, Vnet] = {}
        self.routers_: set[str] = set()
        self.links: list[tuple[Ifnet, Ifnet]] = []
        self._routed = 0  # number of links when routes were last computed
        self.auto_route = False  # route() after every link (set once a test body runs)

    # -- nodes ------------------------------------------------------------------------------
    def _names(self, spec: tuple[Any, ...], prefix: str) -> list[str]:
        if len(spec) == 1 and isinstance(spec[0], int):
            start = sum(1 for n in self.nodes if n.startswith(prefix)) + 1
            return [f"{prefix}{i}" for i in range(start, start + spec[0])]
        return [str(s) for s in spec]

    def hosts(self, *spec: Any, prefix: str = "h") -> list[Vnet]:
        """`hosts(3)` makes h1..h3 (continuing the numbering); `hosts("a", "b")` names them."""
        out = []
        for name in self._names(spec, prefix):
            self.nodes[name] = vnet = self.kernel.create(name)
            out.append(vnet)
        return out

    def routers(self, *spec: Any, prefix: str = "r") -> list[Vnet]:
        """Like hosts(), with forwarding on."""
        out = self.hosts(*spec, prefix=prefix)
        for vnet in out:
            vnet.ip.forwarding = 1
            self.routers_.add(vnet.name)
        return out

    def __getitem__(self, name: str) -> Vnet:
        return self.nodes[name]

    # -- links ------------------------------------------------------------------------------
    def link(self, a: Vnet, b: Vnet, **impair: Any) -> tuple[Ifnet, Ifnet]:
        """An epair between `a` and `b`, addressed, up, impaired both ways if asked
        (`delay`, `bandwidth`, `loss`, `ber`, `dup`, `queue` as `vlink` takes them)."""
        p = topo.link_prefix(len(self.links))
        end_a, end_b = topo.connect(a, f"{p}.1/24", b, f"{p}.2/24")
        if impair:
            end_a.impair(**impair)
            end_b.impair(**impair)
        self.links.append((end_a, end_b))
        if self.auto_route:
            self.route()
        return end_a, end_b

    def link_between(self, a: Vnet, b: Vnet) -> tuple[Ifnet, Ifnet]:
        for end_a, end_b in self.links:
            if (end_a.vnet, end_b.vnet) in ((a, b), (b, a)):
                return (end_a, end_b) if end_a.vnet is a else (end_b, end_a)
        raise LookupError(f"no link between {a.name} and {b.name}")

    def addr(self, vnet: Vnet | str) -> str:
        """The node's first address (the one its name resolves to)."""
        vnet = self.nodes[vnet] if isinstance(vnet, str) else vnet
        for end_a, end_b in self.links:
            for end in (end_a, end_b):
                if end.vnet is vnet:
                    return _ntoa(end.addrs[0].addr)
        raise LookupError(f"{vnet.name} has no link")

    # -- routes and names --------------------------------------------------------------------
    def route(self) -> Net:
        """Install routes and names for the links made so far (again after adding links)."""
        if self._routed == len(self.links):
            return self
        adj: dict[Vnet, list[tuple[Vnet, Ifnet, Ifnet]]] = {v: [] for v in self.nodes.values()}
        for end_a, end_b in self.links:
            adj.setdefault(end_a.vnet, []).append((end_b.vnet, end_a, end_b))
            adj.setdefault(end_b.vnet, []).append((end_a.vnet, end_b, end_a))
        for node, edges in adj.items():
            if not edges:
                continue
            if len(edges) == 1 and node.name not in self.routers_:
                gateway = _ntoa(edges[0][2].addrs[0].addr)
                _replace_route(node, "default", gateway)
                continue
            node.ip.forwarding = 1
            first_hop = _first_hops(node, adj)
            touching = {id(end) for _, end, _ in edges}
            for end_a, end_b in self.links:
                if id(end_a) in touching or id(end_b) in touching:
                    continue
                hop = first_hop.get(end_a.vnet) or first_hop.get(end_b.vnet)
                if hop is None:
                    continue  # not connected to this part of the graph
                net = _ntoa(end_a.addrs[0].addr & 0xFFFFFF00)
                _replace_route(node, f"{net}/24", _ntoa(hop.addrs[0].addr))
        names = [(name, self.addr(v)) for name, v in self.nodes.items() if adj.get(v)]
        for vnet in self.nodes.values():
            for name, address in names:
                if address not in [_ntoa(a) for a in vnet.hosts.lookup(name)]:
                    vnet.hosts.add(address, name)
        self._routed = len(self.links)
        return self


def _replace_route(vnet: Vnet, dest: str, gateway: str) -> None:
    vnet.cmd(f"route delete {dest}")
    topo.add_route(vnet, dest, gateway)


def _first_hops(src: Vnet, adj: dict[Vnet, list[tuple[Vnet, Ifnet, Ifnet]]]) -> dict[Vnet, Ifnet]:
    """For every node reachable from `src`: the neighbour's interface to send through."""
    hops: dict[Vnet, Ifnet] = {}
    seen = {src}
    todo: deque[Vnet] = deque()
    for peer, _mine, theirs in adj[src]:
        if peer not in seen:
            seen.add(peer)
            hops[peer] = theirs
            todo.append(peer)
    while todo:
        node = todo.popleft()
        for peer, _mine, _theirs in adj.get(node, ()):
            if peer not in seen:
                seen.add(peer)
                hops[peer] = hops[node]
                todo.append(peer)
    return hops


def star(kernel: Kernel, n: int, prefix: str = "h", center: str = "r", **impair: Any) -> Net:
    """`n` hosts h1..hn, each on its own link to router `center`."""
    net = Net(kernel)
    (router,) = net.routers(center)
    for host in net.hosts(n, prefix=prefix):
        net.link(host, router, **impair)
    return net.route()


def line(kernel: Kernel, n: int, prefix: str = "n", **impair: Any) -> Net:
    """`n` nodes n1..nn in a chain; the inner ones forward."""
    net = Net(kernel)
    nodes = net.hosts(n, prefix=prefix)
    for left, right in pairwise(nodes):
        net.link(left, right, **impair)
    for node in nodes[1:-1]:
        net.routers_.add(node.name)
    return net.route()
