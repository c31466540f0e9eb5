"""Topologies and packet helpers for the IPv6 tests (virtual time throughout)."""

from __future__ import annotations

from socket import AF_INET6
from typing import NamedTuple

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.netinet6 import in6
from vimage.vnet import Vnet
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

A1 = wip6.aton("2001:db8:1::1")
A2 = wip6.aton("2001:db8:1::2")
R1 = wip6.aton("2001:db8:1::ff")
R2 = wip6.aton("2001:db8:2::ff")
B2 = wip6.aton("2001:db8:2::2")
DAD_DONE = 1.5  # seconds: one DAD probe and its retrans time


def link(a: Vnet, a_cidr: str, b: Vnet, b_cidr: str) -> tuple[Ifnet, Ifnet]:
    """An epair between `a` and `b` with one IPv6 address each, both ends up."""
    ea, eb = a.kernel.epair()
    ea.move_to(a)
    eb.move_to(b)
    ea.add_addr(a_cidr, family=AF_INET6)
    eb.add_addr(b_cidr, family=AF_INET6)
    ea.set_up(True)
    eb.set_up(True)
    return ea, eb


def link_local(ifp: Ifnet) -> int:
    return next(ia.addr for ia in in6.addrs(ifp) if wip6.is_link_local(ia.addr))


class Pair(NamedTuple):
    kernel: Kernel
    a: Vnet
    b: Vnet
    ea: Ifnet
    eb: Ifnet


def pair(seed: int = 1) -> Pair:
    """Two vnets on one link, 2001:db8:1::1 and ::2, DAD done."""
    k = Kernel(clock="virtual", seed=seed)
    a, b = k.create("a"), k.create("b")
    ea, eb = link(a, "2001:db8:1::1/64", b, "2001:db8:1::2/64")
    k.run(DAD_DONE)
    return Pair(k, a, b, ea, eb)


class Routed(NamedTuple):
    kernel: Kernel
    h1: Vnet
    r: Vnet
    h2: Vnet
    h1_if: Ifnet
    r1_if: Ifnet
    r2_if: Ifnet
    h2_if: Ifnet


def routed(seed: int = 1) -> Routed:
    """h1 -- r -- h2: 2001:db8:1::/64 and 2001:db8:2::/64, the hosts' default routes
    through the router's link-local addresses (as FreeBSD configures them by hand)."""
    k = Kernel(clock="virtual", seed=seed)
    h1, r, h2 = k.create("h1"), k.create("r"), k.create("h2")
    h1_if, r1_if = link(h1, "2001:db8:1::1/64", r, "2001:db8:1::ff/64")
    r2_if, h2_if = link(r, "2001:db8:2::ff/64", h2, "2001:db8:2::2/64")
    r.sysctl("net.inet6.ip6.forwarding", 1)
    for host, host_if, router_if in ((h1, h1_if, r1_if), (h2, h2_if, r2_if)):
        gw = wip6.ntoa(link_local(router_if))
        res = host.cmd(f"route add -inet6 default {gw}%{host_if.name}")
        assert res.ok, res.output
    k.run(DAD_DONE)
    return Routed(k, h1, r, h2, h1_if, r1_if, r2_if, h2_if)


_LINK_TYPES = frozenset({w6.ROUTER_SOLICIT, w6.ROUTER_ADVERT, w6.NEIGHBOR_SOLICIT,
                         w6.NEIGHBOR_ADVERT, w6.REDIRECT, w6.MLDV2_REPORT})


class Heard:
    """Collects the ICMPv6 messages a vnet receives (its `icmp6.listeners`), but ND's and
    MLD's."""

    def __init__(self, vnet: Vnet) -> None:
        self.msgs: list[tuple[int, w6.Icmp6Repr, bytes]] = []
        vnet.icmp6.add_listener(self)

    def __call__(self, _ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        msg = w6.parse(pkt[off:], src, dst)
        if msg.type not in _LINK_TYPES:
            self.msgs.append((src, msg, pkt))

    def of_type(self, type_: int) -> list[w6.Icmp6Repr]:
        return [m for _, m, _ in self.msgs if m.type == type_]


class Collector:
    """Stands in for an interface's peer: keeps the frames it is sent."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def input(self, frame: bytes) -> None:
        self.frames.append(frame)

    def ipv6(self) -> list[bytes]:
        return [f[14:] for f in self.frames if f[12:14] == b"\x86\xdd"]


def send(vnet: Vnet, src: int, dst: int, nxt: int, payload: bytes, hlim: int = 64,
         ifp: Ifnet | None = None) -> None:
    """Send a hand-made IPv6 packet (any extension headers in `payload`)."""
    with vnet.kernel.sched.cond:
        vnet.ip6.output(nxt, src, dst, payload, hlim=hlim, ifp=ifp)


def echo(ident: int, seq: int, src: int, dst: int, data: bytes = b"ping") -> bytes:
    return w6.build_echo(w6.ECHO_REQUEST, ident, seq, data, src, dst)


def inject(ifp: Ifnet, pkt: bytes, src_mac: bytes = b"\x02\x00\x00\x00\x00\x99") -> None:
    """Deliver an IPv6 packet to `ifp` as if its peer had sent it."""
    assert ifp.mac is not None
    ifp.input(ifp.mac + src_mac + b"\x86\xdd" + pkt)
