"""The sockets of one protocol in a vnet, held weakly (FreeBSD keeps PCBs in in_pcb.c).

A socket that the program no longer references is gone from the table, as a
Python socket's file descriptor is closed when the object is collected: a
forgotten socket does not keep its port, or its vnet, alive.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from vimage.socket.socket import Socket


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
