"""Point-to-point IPv6 addresses on tunnel interfaces (FreeBSD in6.c's in6_update_ifa
with a destination address: `ifconfig gif0 inet6 2001:db8:1::1 2001:db8:1::2
prefixlen 128`).

As in FreeBSD, an address with a destination must have prefix length 128 (EINVAL
otherwise); the destination gets a host route through the interface, tied to the
address so that removing the address removes it. The peer is kept on the tunnel
(`ifp.peers6`) for ifconfig's `inet6 A --> B` line.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.net.route import Route
from vimage.netinet6.in6 import In6Addr, in6_add_addr, in6_del_addr, zkey

if TYPE_CHECKING:
    from vimage.net.tunnel import Tunnel


def add_p2p_addr6(ifp: Tunnel, addr: int, dst: int, plen: int = 128) -> In6Addr:
    """Add `addr` with point-to-point destination `dst` to `ifp`."""
    if plen != 128:  # in6_update_ifa: "prefixlen should be 128 with a destination"
        raise OSError(errno.EINVAL, "Invalid argument")
    rt6 = ifp.vnet.route.table6(ifp.fib)  # the peer route in the interface's fib
    key = zkey(dst, ifp.index)
    old = rt6.get(key, 128)
    if old is not None and old.ifp is not ifp:
        raise OSError(errno.EEXIST, f"a route to the destination exists via {old.ifp.name}")
    ia = in6_add_addr(ifp, addr, 128)
    if old is not None:
        rt6.delete(key, 128)
    rt6.add(Route(key, 128, ifp, 0, ifa=ia, width=128))  # type: ignore[arg-type]
    ifp.peers6[addr] = dst
    return ia


def del_p2p_addr6(ifp: Tunnel, addr: int) -> None:
    """Remove `addr`; its peer route goes with it (in6_remove purges the address's routes)."""
    in6_del_addr(ifp, addr)
    ifp.peers6.pop(addr, None)
