"""Point-to-point IPv4 addresses on tunnel interfaces (FreeBSD in.c's IFF_POINTOPOINT
case of in_aifaddr: `ifconfig gif0 inet 10.0.0.1 10.0.0.2`).

The local address is a /32 (its host route via lo0, as any address); the peer gets a
host route through the interface, which is what carries packets into the tunnel. The
peer is kept on the tunnel (`ifp.peers`) for ifconfig's `inet A --> B` line.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.net.route import Route
from vimage.netinet.in_ import InAddr, in_add_addr, in_del_addr

if TYPE_CHECKING:
    from vimage.net.tunnel import Tunnel


def add_p2p_addr(ifp: Tunnel, addr: int, dst: int) -> InAddr:
    """Add `addr` with point-to-point destination `dst` to `ifp` (replacing the peer
    route if `dst` had one through this interface)."""
    rt = ifp.vnet.route.table(ifp.fib)  # the peer route in the interface's fib
    old = rt.get(dst, 32)
    if old is not None and old.ifp is not ifp:
        raise OSError(errno.EEXIST, f"a route to the destination exists via {old.ifp.name}")
    ia = in_add_addr(ifp, addr, 32)
    if old is not None:
        rt.delete(dst, 32)
    rt.add(Route(dst, 32, ifp, 0, ifa=ia))
    ifp.peers[addr] = dst
    return ia


def del_p2p_addr(ifp: Tunnel, addr: int) -> None:
    """Remove `addr` (its peer route goes with it)."""
    in_del_addr(ifp, addr)
    ifp.peers.pop(addr, None)
