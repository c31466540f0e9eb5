"""Small helpers that build common topologies through the public API."""

from __future__ import annotations

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


def router_chain(kernel: Kernel, routers: int, name: str = "chain") -> list[Vnet]:
    """host `name.a` - `routers` routers - host `name.b`, each link a /24.

    Link i joins node i (address .1) and node i+1 (address .2). Every router
    forwards, routes back to the first link through its left neighbour and
    defaults to its right one, so any node reaches any other.
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
        connect(nodes[i], f"{p}.1/24", nodes[i + 1], f"{p}.2/24")
    first = link_prefix(0)
    for i, node in enumerate(nodes):
        if 0 < i < len(nodes) - 1:
            node.ip.forwarding = 1
            if i > 1:
                add_route(node, f"{first}.0/24", f"{link_prefix(i - 1)}.1")
        if i < len(nodes) - 1:
            add_route(node, "default", f"{link_prefix(i)}.2")
        elif i > 0:
            add_route(node, "default", f"{link_prefix(i - 1)}.1")
    return nodes


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
