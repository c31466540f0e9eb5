"""Small helpers that build common topologies through the public API."""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

from vimage.net.route import RTF_GATEWAY, RTF_STATIC, Route
from vimage.wire import ipv4

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
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


def add_route(vnet: Vnet, dest: str, gateway: str) -> Route:
    """Static route: `dest` is 'a.b.c.d/len' or 'default'."""
    net, _, plen = ("0.0.0.0/0" if dest == "default" else dest).partition("/")
    gw = ipv4.aton(gateway)
    route = vnet.rt.lookup(gw)
    if route is None:
        raise OSError(f"gateway {gateway} is not reachable from {vnet.display_name}")
    with vnet.kernel.sched.cond:
        return vnet.rt.add(Route(ipv4.aton(net), int(plen or 32), route.ifp,
                                 RTF_GATEWAY | RTF_STATIC, gateway=gw))


def link_prefix(i: int) -> str:
    """The /24 of the i-th link of a chain: 10.X.Y.0 with X.Y = i."""
    return f"10.{(i >> 8) & 0xFF}.{i & 0xFF}"


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
    nodes = [kernel.create(f"{name}.a")]
    nodes += [kernel.create(f"{name}.r{i}") for i in range(1, routers + 1)]
    nodes.append(kernel.create(f"{name}.b"))
    for i in range(len(nodes) - 1):
        p = link_prefix(i)
        left, right = connect(nodes[i], f"{p}.1/24", nodes[i + 1], f"{p}.2/24")
        if delay is not None:
            left.impair(delay=delay)
            right.impair(delay=delay)
    last = len(nodes) - 1
    for i, node in enumerate(nodes):
        if 0 < i < last:
            node.ip.forwarding = 1
        if i < last:
            add_route(node, "default", f"{link_prefix(i)}.2")
            if i >= 2:
                for net, plen in link_blocks(0, i - 2):
                    add_route(node, f"{net}/{plen}", f"{link_prefix(i - 1)}.1")
        elif i > 0:
            add_route(node, "default", f"{link_prefix(i - 1)}.1")
    return nodes


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
