"""The sockets of one protocol in a vnet, held weakly (FreeBSD keeps PCBs in in_pcb.c).

A socket that the program no longer references is gone from the table, as a
Python socket's file descriptor is closed when the object is collected: a
forgotten socket does not keep its port, or its vnet, alive.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from vimage.netinet.tcp.var import Tcb
    from vimage.socket.socket import Socket

T = TypeVar("T")


class PcbList:
    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: list[weakref.ref[Socket]] = []

    def add(self, sock: Socket) -> None:
        self._refs.append(weakref.ref(sock))

    def discard(self, sock: Socket) -> None:
        self._refs = [r for r in self._refs if (s := r()) is not None and s is not sock]

    def live(self) -> list[Socket]:
        """The sockets still open or referenced, in the order they were added."""
        socks = [s for r in self._refs if (s := r()) is not None]
        if len(socks) != len(self._refs):
            self._refs = [r for r in self._refs if r() is not None]
        return socks

    def __iter__(self) -> Iterator[Socket]:
        return iter(self.live())

    def __len__(self) -> int:
        return len(self.live())

    def __bool__(self) -> bool:
        return any(r() is not None for r in self._refs)


# -- IPv6 PCBs and IPv4-mapped addresses (FreeBSD in6_pcb.c, RFC 4291 2.5.5.2) --------------
MAPPED_PREFIX = 0xFFFF << 32
"""::ffff:0:0/96: a dual-stack AF_INET6 socket names an IPv4 peer as ::ffff:a.b.c.d."""


def is_mapped(addr: int) -> bool:
    return addr >> 32 == 0xFFFF


def mapped(addr4: int) -> int:
    """The IPv4-mapped IPv6 address of an IPv4 address."""
    return MAPPED_PREFIX | addr4


def unmapped(addr6: int) -> int:
    """The IPv4 address inside an IPv4-mapped one (0 stays 0: the wildcard)."""
    return addr6 & 0xFFFFFFFF


# -- SO_REUSEPORT and SO_REUSEPORT_LB (FreeBSD in_pcb.c: in_pcbbind_setup, lbgroups) ----------
def shares_port(a: object, b: object) -> bool:
    """May two sockets hold the same address and port? FreeBSD's in_pcbbind_setup: when
    both set SO_REUSEPORT, or both SO_REUSEPORT_LB (which forms a load-balancing group)."""
    return bool((getattr(a, "reuseport", False) and getattr(b, "reuseport", False))
                or (getattr(a, "reuseport_lb", False) and getattr(b, "reuseport_lb", False)))


def lb_hash(faddr: int, fport: int, laddr: int, lport: int) -> int:
    """A hash of a connection's 4-tuple that picks a member of a SO_REUSEPORT_LB group
    (FreeBSD's INP_PCBLBGROUP_PKTHASH plays this part; this is a function of our own,
    deterministic, so the same peers reach the same listener run after run)."""
    h = (faddr ^ (faddr >> 32) ^ (faddr >> 64) ^ (faddr >> 96)) & 0xFFFFFFFF
    h ^= (fport << 16) | lport
    h ^= laddr & 0xFFFFFFFF
    h = (h * 0x9E3779B1) & 0xFFFFFFFF  # spread the low bits (Knuth's multiplicative hash)
    return h ^ (h >> 16)


def lb_pick(group: list[T], faddr: int, fport: int, laddr: int, lport: int) -> T:
    """The member of a load-balancing group (in the order its members were bound, as
    FreeBSD's il_inp array) a connection from faddr:fport to laddr:lport goes to."""
    return group[lb_hash(faddr, fport, laddr, lport) % len(group)]


def pick_listener(listeners: Iterable[Tcb], src: int, sport: int, dst: int, dport: int,
                  v6: bool) -> Tcb | None:
    """The listener a SYN from src:sport to dst:dport goes to, as FreeBSD's
    in_pcblookup_hash_locked looks: a SO_REUSEPORT_LB group first (the one bound to `dst`
    before the wildcard one), a member picked by the 4-tuple; then a listener bound to
    `dst`, then a wildcard one, then (an IPv4 SYN) a dual-stack IPv6 wildcard; among
    equals (SO_REUSEPORT) the last to listen."""
    best: list[Tcb | None] = [None, None, None]  # mapped wildcard, wildcard, exact
    groups: tuple[list[Tcb], list[Tcb]] = ([], [])  # wildcard, exact
    for t in listeners:
        if t.v6 != v6:
            if v6 or t.v6only or t.laddr:
                continue  # an IPv4 SYN reaches only an IPv6 listener's dual-stack wildcard
            rank = 0
        elif t.laddr == dst:
            rank = 2
        elif t.laddr == 0:
            rank = 1
        else:
            continue
        if rank and getattr(t.sock, "reuseport_lb", False):
            groups[rank - 1].append(t)
        else:
            best[rank] = t
    for group in (groups[1], groups[0]):
        if group:
            return lb_pick(group, src, sport, dst, dport)
    return best[2] or best[1] or best[0]
