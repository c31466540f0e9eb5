"""AF_INET6 socket addresses and options, as CPython's socket module shows them on Linux.

A socket address is `(host, port, flowinfo, scope_id)` (a 2-tuple is accepted, as
CPython does); `host` may carry a zone (`fe80::1%epair0a`), or `scope_id` names the
interface by index. Addresses are returned without the zone: since Python 3.7 the
scope is only in `scope_id`. An IPv4 peer of a dual-stack socket is `::ffff:a.b.c.d`
(RFC 4291 2.5.5.2). The PCBs keep 128-bit ints (FreeBSD in6_pcb.c); a received
link-local source carries its zone in bits 96..111 as KAME embeds it (`in6.zkey`).
"""

from __future__ import annotations

import errno
import socket as _std
from typing import TYPE_CHECKING, Any

from vimage.netinet.in_pcb import is_mapped, mapped, unmapped
from vimage.netinet6.in6 import unzone, zkey
from vimage.wire import WireError, ipv6

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPPROTO_IPV6 = getattr(_std, "IPPROTO_IPV6", 41)
IPPROTO_ICMPV6 = getattr(_std, "IPPROTO_ICMPV6", 58)
IPV6_V6ONLY = getattr(_std, "IPV6_V6ONLY", 26)
IPV6_UNICAST_HOPS = getattr(_std, "IPV6_UNICAST_HOPS", 16)
IPV6_MULTICAST_HOPS = getattr(_std, "IPV6_MULTICAST_HOPS", 18)
IPV6_RECVPKTINFO = getattr(_std, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(_std, "IPV6_PKTINFO", 50)
IPV6_CHECKSUM = getattr(_std, "IPV6_CHECKSUM", 7)
IPV6_TCLASS = getattr(_std, "IPV6_TCLASS", 67)
IPV6_DONTFRAG = getattr(_std, "IPV6_DONTFRAG", 62)
ICMP6_FILTER = 1  # Linux's value (<netinet/icmp6.h>); the stdlib does not export it
LOOPBACK6 = 1


def parse_host6(vnet: Vnet, host: Any) -> tuple[int, int]:
    """'::1', '' (any), 'fe80::1%epair0a', 'localhost' -> (address, zone index or 0)."""
    if not isinstance(host, str):
        raise TypeError(f"str expected for the host, not {type(host).__name__}")
    if host in ("", "::"):
        return 0, 0
    if host in ("localhost", "ip6-localhost"):
        return LOOPBACK6, 0
    text, _, zone = host.partition("%")
    try:
        addr = ipv6.aton(text)
    except WireError:
        raise _std.gaierror(_std.EAI_NONAME, "Name or service not known") from None
    index = 0
    if zone:
        ifp = vnet.ifaces.get(zone)
        if ifp is not None:
            index = ifp.index
        elif zone.isdigit():
            index = int(zone)
        else:
            raise _std.gaierror(_std.EAI_NONAME, "Name or service not known")
    return addr, index


def parse_sockaddr6(vnet: Vnet, address: Any) -> tuple[int, int, int]:
    """(address, port, scope index) of an AF_INET6 socket address."""
    if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    host, port = address[0], address[1]
    flowinfo = address[2] if len(address) > 2 else 0
    scope_id = address[3] if len(address) > 3 else 0
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError("bind(): port must be 0-65535.")
    if not 0 <= flowinfo <= 0xFFFFF:
        raise OverflowError("flowinfo must be 0-1048575.")
    addr, zone = parse_host6(vnet, host)
    return addr, port, zone or (scope_id if ipv6.needs_zone(addr) else 0)


def format_addr6(key: int) -> tuple[str, int]:
    """(text, scope_id) of an address, a zone-embedded one (`in6.zkey`) included."""
    plain = unzone(key)
    return ipv6.ntoa(plain), (key >> 96) & 0xFFFF if plain != key else 0


def sockaddr6(key: int, port: int, scope: int = 0) -> tuple[str, int, int, int]:
    """The 4-tuple the stdlib gives for an AF_INET6 address."""
    text, zone = format_addr6(key)
    return text, port, 0, zone or (scope if ipv6.needs_zone(key) else 0)


def zone_ifp(vnet: Vnet, addr: int, scope: int) -> Ifnet | None:
    """The interface a scoped address's zone names (None for a global address);
    EINVAL for a link-local address without a zone, as Linux says."""
    if not ipv6.needs_zone(addr):
        return None
    if not scope:
        raise OSError(errno.EINVAL, "Invalid argument")
    for ifp in vnet.ifaces.values():
        if ifp.index == scope:
            return ifp
    raise OSError(errno.ENXIO, "No such device or address")


def check_local6(vnet: Vnet, addr: int, scope: int, v6only: bool) -> None:
    """in6_pcbbind's address check: ours (zone-matched), a group, the wildcard, or for a
    dual-stack socket one of our IPv4 addresses mapped."""
    if not addr or addr >> 120 == 0xFF:
        return
    if is_mapped(addr):
        if v6only:
            raise OSError(errno.EINVAL, "Invalid argument")
        a4 = unmapped(addr)
        if a4 and a4 not in vnet.ip.local:
            raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
        return
    ip6 = vnet.ip6
    if not ip6.lo_done:
        from vimage.netinet6 import in6

        in6.loopback_addrs(vnet)
    if ipv6.needs_zone(addr) and not scope:
        raise OSError(errno.EINVAL, "Invalid argument")
    ia = ip6.local.get(zkey(addr, scope))
    if ia is None or not ia.ready:
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")


def source6(vnet: Vnet, dst: int, zone: Ifnet | None, fib: int) -> int:
    """The source for `dst`: for a mapped destination IPv4's choice, mapped."""
    if is_mapped(dst):
        return mapped(vnet.ip.select_source(unmapped(dst), fib))
    return vnet.ip6.select_source(dst, zone, fib)


