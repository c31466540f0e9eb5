"""Topologies through the public API: the one builder behind benches, tests and the pytest plugin.

Functions for hand-made layouts: `connect(a, "10.0.0.1/24", b, "10.0.0.2/24")` (an
epair, addressed and up), `add_route`, `udp_delivered` (did one datagram arrive?).

`Net` builds a topology in a few lines (the pytest plugin's `net` fixture; also
`vimage.testing.Net`):

    net = Net(Kernel(clock="virtual", seed=1))
    a, b = net.hosts("a", "b")
    r = net.routers("r")
    net.link(a, r, delay="5ms")
    net.link(r, b, loss="1%")
    net.route()                 # static routes along shortest paths, names in every vnet

Each link gets its own /24 (`link_prefix`), the lower-named end .1 and the other
.2. `Net(kernel, ipv6=True)` (and `star(..., ipv6=True)`, `line(..., ipv6=True)`) makes
the topology dual-stack: link i also gets the /64 `link_prefix6(i)` (fd00:0:X:Y::/64,
ends ::1 and ::2), and route() installs the IPv6 routes beside the IPv4 ones; new
addresses are tentative during duplicate address detection (about a second of kernel
time) before they can be used.

A host (one link) gets a default route; a router forwards and gets a route to
every link it does not touch, through its neighbour on a shortest path. Every vnet's
hosts table learns every node's name (its first address), so programs connect by name.

What a `Net` builds is also recorded in the emulator's model (`net.topology`, a
`vimage.emu.Topology`: nodes of type host/router, links with their impairment, the
addresses, the static routes route() installs): the same graph `vimage topo up` and the
GUI read, so a test's topology can be saved (`vimage.emu.yamlfmt.dump(net.topology,
"t.yaml")`) and brought up again as an experiment, with the same addresses and routes.

`star`, `line` and `router_chain` are common shapes made with `Net`; `router_chain`
routes with a few aggregated prefixes per node instead of `route()`, so a chain of
thousands of routers stays small.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from vimage.emu.model import Route as ModelRoute
from vimage.emu.model import Topology
from vimage.net.pipe import DEFAULT_QUEUE
from vimage.net.route import RTF_GATEWAY, RTF_STATIC, Route
from vimage.wire import ipv4

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.net.pipe import LinkPipe
    from vimage.vnet import Vnet


def connect(a: Vnet, a_cidr: str, b: Vnet, b_cidr: str) -> tuple[Ifnet, Ifnet]:
    """Join two vnets with an epair, address both ends and bring them up."""
    kernel = a.kernel
    end_a, end_b = kernel.epair()
    end_a.move_to(a)
    end_b.move_to(b)
    end_a.add_addr(a_cidr)
    end_b.add_addr(b_cidr)
    end_a.set_up(True)
    end_b.set_up(True)
    return end_a, end_b


def add_route(vnet: Vnet, dest: str, gateway: str, *, replace: bool = False) -> Route:
    """Static route: `dest` is 'a.b.c.d/len' or 'default'; `replace` drops a route to
    the same prefix first (else that is EEXIST)."""
    net, _, plen_text = ("0.0.0.0/0" if dest == "default" else dest).partition("/")
    dst, plen, gw = ipv4.aton(net), int(plen_text or 32), ipv4.aton(gateway)
    route = vnet.rt.lookup(gw)
    if route is None:
        raise OSError(f"gateway {gateway} is not reachable from {vnet.display_name}")
    with vnet.kernel.sched.cond:
        if replace and vnet.rt.get(dst, plen) is not None:
            vnet.rt.delete(dst, plen)
        return vnet.rt.add(Route(dst, plen, route.ifp, RTF_GATEWAY | RTF_STATIC, gateway=gw))


def link_prefix(i: int) -> str:
    """The /24 of the i-th link of a chain: 10.X.Y.0 with X.Y = i."""
    return f"10.{(i >> 8) & 0xFF}.{i & 0xFF}"


def link_prefix6(i: int) -> str:
    """The /64 of the i-th link of a dual-stack Net, ending in "::" for the host part:
    fd00:0:X:Y:: with X.Y = i, as link_prefix's 10.X.Y."""
    return f"fd00:0:{(i >> 8) & 0xFF:x}:{i & 0xFF:x}::"


def _ok(vnet: Vnet, line: str) -> None:
    result = vnet.cmd(line)
    if not result.ok:
        raise OSError(f"{vnet.display_name}: {line}: {result.output.strip()}")


def _route6(vnet: Vnet, dest: str, gateway: str) -> None:
    """An IPv6 static route through the tools (replacing one to the same prefix)."""
    vnet.cmd(f"route -6 delete {dest}")
    _ok(vnet, f"route -6 add {dest} {gateway}")


def link_blocks(first: int, last: int) -> list[tuple[str, int]]:
    """The fewest prefixes covering the /24s of links first..last: [("10.0.0.0", 22), ...]."""
    blocks = []
    while first <= last:
        size = first & -first if first else 1 << 16
        while size > last - first + 1:
            size >>= 1
        blocks.append((f"{link_prefix(first)}.0", 24 - size.bit_length() + 1))
        first += size
    return blocks


def chain_links(nodes: list[Vnet]) -> list[tuple[Ifnet, Ifnet]]:
    """The (left, right) interfaces of each link of a chain of vnets."""
    links = []
    for left_node, right_node in pairwise(nodes):
        links.append(next((ifp, ifp.peer) for ifp in left_node.ifaces.values()
                          if ifp.peer is not None and ifp.peer.vnet is right_node))
    return links


def udp_delivered(src: Vnet, dst: Vnet, addr: str, port: int = 7000,
                  timeout: float = 1.0) -> bool:
    """Send one datagram from `src` to `addr`: True if `dst` receives it in `timeout` s."""
    rx = dst.socket(2, 2)
    tx = src.socket(2, 2)
    try:
        rx.bind(("", port))
        rx.settimeout(timeout)
        tx.sendto(b"data", (addr, port))
        try:
            return rx.recv(100) == b"data"
        except TimeoutError:
            return False
    finally:
        rx.close()
        tx.close()


class Net:
    """A topology under construction; see the module docstring."""

    def __init__(self, kernel: Kernel, *, ipv6: bool = False) -> None:
        self.kernel = kernel
        self.ipv6 = ipv6
        self.nodes: dict[str, Vnet] = {}
        self.routers_: set[str] = set()
        self.links: list[tuple[Ifnet, Ifnet]] = []
        self._routed = 0  # number of links when routes were last computed
        self.auto_route = False  # route() after every link (set once a test body runs)
        self.topology = Topology(name="net", hosts=True)  # the same graph, as the emulator's

    # -- nodes ------------------------------------------------------------------------------
    def _names(self, spec: tuple[Any, ...], prefix: str) -> list[str]:
        if len(spec) == 1 and isinstance(spec[0], int):
            start = sum(1 for n in self.nodes if n.startswith(prefix)) + 1
            return [f"{prefix}{i}" for i in range(start, start + spec[0])]
        return [str(s) for s in spec]

    def hosts(self, *spec: Any, prefix: str = "h") -> list[Vnet]:
        """`hosts(3)` makes h1..h3 (continuing the numbering); `hosts("a", "b")` names them."""
        names = self._names(spec, prefix)
        for name in names:  # first: a duplicate name creates nothing
            self.topology.add_node(name, "host")
        try:
            out = self.kernel.create_many(names)  # the collector paused
        except Exception:
            for name in names:
                if name not in self.nodes:
                    self.topology.nodes.pop(name, None)
            raise
        for vnet in out:
            self.nodes[vnet.name] = vnet
        return out

    def routers(self, *spec: Any, prefix: str = "r") -> list[Vnet]:
        """Like hosts(), with forwarding on."""
        out = self.hosts(*spec, prefix=prefix)
        for vnet in out:
            self._make_router(vnet)
        return out

    def _make_router(self, vnet: Vnet) -> None:
        vnet.ip.forwarding = 1
        self.routers_.add(vnet.name)
        self.topology.nodes[vnet.name].type = "router"

    def __getitem__(self, name: str) -> Vnet:
        return self.nodes[name]

    # -- links ------------------------------------------------------------------------------
    def link(self, a: Vnet, b: Vnet, **impair: Any) -> tuple[Ifnet, Ifnet]:
        """An epair between `a` and `b`, addressed, up, impaired both ways if asked
        (`delay`, `bandwidth`, `loss`, `ber`, `dup`, `queue` as `vlink` takes them)."""
        p = link_prefix(len(self.links))
        end_a, end_b = connect(a, f"{p}.1/24", b, f"{p}.2/24")
        if self.ipv6:
            p6 = link_prefix6(len(self.links))
            _ok(a, f"ifconfig {end_a.name} inet6 {p6}1/64 alias")
            _ok(b, f"ifconfig {end_b.name} inet6 {p6}2/64 alias")
        if impair:
            end_a.impair(**impair)
            end_b.impair(**impair)
        self.links.append((end_a, end_b))
        self._record_link(end_a, end_b)
        if self.auto_route:
            self.route()
        return end_a, end_b

    def _record_link(self, end_a: Ifnet, end_b: Ifnet) -> None:
        """The link in the model: its ends' names and addresses, its impairment."""
        params = {} if end_a.pipe is None else _model_params(end_a.pipe)
        for vnet in (end_a.vnet, end_b.vnet):
            if vnet.name not in self.topology.nodes:  # a vnet this Net did not make
                self.topology.add_node(vnet.name, "host")
        link = self.topology.connect(end_a.vnet.name, end_b.vnet.name, end_a.name, end_b.name,
                                     **params)
        for (node, ifname), end in zip((link.a, link.b), (end_a, end_b), strict=True):
            iface = self.topology.nodes[node].interfaces[ifname]
            iface.ipv4 = [f"{ipv4.ntoa(ia.addr)}/{ia.plen}" for ia in end.addrs]
            if self.ipv6:
                iface.ipv6 = [f"{self._addr6(end)}/64"]

    def _record_route(self, vnet: Vnet, dest: str, gateway: str) -> None:
        """A static route in the model, replacing one to the same destination."""
        routes = self.topology.nodes[vnet.name].routes
        dest = "::/0" if dest == "default" and ":" in gateway else dest
        dest = "0.0.0.0/0" if dest == "default" else dest
        routes[:] = [r for r in routes if r.dest != dest]
        routes.append(ModelRoute(dest, gateway))

    def _addr6(self, end: Ifnet) -> str:
        """The global IPv6 address route() gave link end `end`."""
        for i, (end_a, end_b) in enumerate(self.links):
            if end is end_a or end is end_b:
                return f"{link_prefix6(i)}{1 if end is end_a else 2}"
        raise LookupError(f"{end.name} is not an end of a link of this Net")

    def addr6(self, vnet: Vnet | str) -> str:
        """The node's first global IPv6 address (a dual-stack Net only)."""
        vnet = self.nodes[vnet] if isinstance(vnet, str) else vnet
        for end_a, end_b in self.links:
            for end in (end_a, end_b):
                if end.vnet is vnet:
                    return self._addr6(end)
        raise LookupError(f"{vnet.name} has no link")

    def addr(self, vnet: Vnet | str) -> str:
        """The node's first address (the one its name resolves to)."""
        vnet = self.nodes[vnet] if isinstance(vnet, str) else vnet
        for end_a, end_b in self.links:
            for end in (end_a, end_b):
                if end.vnet is vnet:
                    return ipv4.ntoa(end.addrs[0].addr)
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
                gateway = ipv4.ntoa(edges[0][2].addrs[0].addr)
                add_route(node, "default", gateway, replace=True)
                self._record_route(node, "default", gateway)
                if self.ipv6:
                    _route6(node, "default", self._addr6(edges[0][2]))
                    self._record_route(node, "default", self._addr6(edges[0][2]))
                continue
            node.ip.forwarding = 1
            self.topology.nodes[node.name].type = "router"
            if self.ipv6:
                _ok(node, "sysctl net.inet6.ip6.forwarding=1")
            first_hop = _first_hops(node, adj)
            touching = {id(end) for _, end, _ in edges}
            for end_a, end_b in self.links:
                if id(end_a) in touching or id(end_b) in touching:
                    continue
                hop = first_hop.get(end_a.vnet) or first_hop.get(end_b.vnet)
                if hop is None:
                    continue  # not connected to this part of the graph
                net = ipv4.ntoa(end_a.addrs[0].addr & 0xFFFFFF00)
                add_route(node, f"{net}/24", ipv4.ntoa(hop.addrs[0].addr), replace=True)
                self._record_route(node, f"{net}/24", ipv4.ntoa(hop.addrs[0].addr))
                if self.ipv6:
                    dest6 = f"{self._addr6(end_a).rsplit(':', 1)[0]}:/64"
                    _route6(node, dest6, self._addr6(hop))
                    self._record_route(node, dest6, self._addr6(hop))
        names = [(name, self.addr(v)) for name, v in self.nodes.items() if adj.get(v)]
        for vnet in self.nodes.values():
            for name, address in names:
                if address not in [ipv4.ntoa(a) for a in vnet.hosts.lookup(name)]:
                    vnet.hosts.add(address, name)
        self._routed = len(self.links)
        return self


def _model_params(pipe: LinkPipe) -> dict[str, Any]:
    """A link pipe's settings in the model's units (bit/s, µs, %, 1/N, frames)."""
    params: dict[str, Any] = {
        "bandwidth": pipe.bandwidth, "delay": pipe.delay_ns // 1000,
        "jitter": pipe.jitter_ns // 1000, "loss": pipe.loss * 100,
        "ber": round(1 / pipe.ber) if pipe.ber else 0, "duplicate": pipe.dup * 100,
    }
    if pipe.queue != DEFAULT_QUEUE:
        params["queue"] = pipe.queue
    return params


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


def star(kernel: Kernel, n: int, prefix: str = "h", center: str = "r", *,
         ipv6: bool = False, **impair: Any) -> Net:
    """`n` hosts h1..hn, each on its own link to router `center` (dual-stack with ipv6)."""
    net = Net(kernel, ipv6=ipv6)
    (router,) = net.routers(center)
    for host in net.hosts(n, prefix=prefix):
        net.link(host, router, **impair)
    return net.route()


def line(kernel: Kernel, n: int, prefix: str = "n", *, ipv6: bool = False,
         **impair: Any) -> Net:
    """`n` nodes n1..nn in a chain; the inner ones forward (dual-stack with ipv6)."""
    net = Net(kernel, ipv6=ipv6)
    nodes = net.hosts(n, prefix=prefix)
    for left, right in pairwise(nodes):
        net.link(left, right, **impair)
    for node in nodes[1:-1]:
        net.routers_.add(node.name)
        net.topology.nodes[node.name].type = "router"
    return net.route()


def router_chain(kernel: Kernel, routers: int, name: str = "chain",
                 delay: str | float | None = None) -> list[Vnet]:
    """host `name.a` - `routers` routers - host `name.b`; every node reaches every link.

    Link i joins node i (address .1) and node i+1 (address .2) on the /24 given by
    `link_prefix(i)`, and is delayed by `delay` each way if given. Each node
    defaults to its right neighbour and reaches the links on its left through a
    few aggregated prefixes, so a chain of thousands of routers stays small.
    """
    if routers < 0:
        raise ValueError("routers must be >= 0")
    if name not in kernel:
        kernel.create(name)
    net = Net(kernel)
    nodes = net.hosts(f"{name}.a")
    nodes += net.routers(*(f"{name}.r{i}" for i in range(1, routers + 1)))
    nodes += net.hosts(f"{name}.b")
    impair = {} if delay is None else {"delay": delay}
    for left, right in pairwise(nodes):
        net.link(left, right, **impair)
    last = len(nodes) - 1
    for i, node in enumerate(nodes):
        routes = []
        if i < last:
            routes.append(("default", f"{link_prefix(i)}.2"))
            if i >= 2:
                routes += [(f"{prefix}/{plen}", f"{link_prefix(i - 1)}.1")
                           for prefix, plen in link_blocks(0, i - 2)]
        elif i > 0:
            routes.append(("default", f"{link_prefix(i - 1)}.1"))
        for dest, gateway in routes:
            add_route(node, dest, gateway)
            net._record_route(node, dest, gateway)
    return nodes
