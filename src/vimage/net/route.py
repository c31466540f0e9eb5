"""Per-vnet IPv4 routing table with longest-prefix match."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.protosw import Protocol

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.in_ import InAddr
    from vimage.vnet import Vnet

RTF_UP = 0x1
RTF_GATEWAY = 0x2
RTF_HOST = 0x4
RTF_REJECT = 0x8
RTF_DYNAMIC = 0x10
RTF_STATIC = 0x800
RTF_BLACKHOLE = 0x1000
RTF_PINNED = 0x100000

FLAG_LETTERS: tuple[tuple[int, str], ...] = (
    (RTF_UP, "U"), (RTF_GATEWAY, "G"), (RTF_HOST, "H"), (RTF_REJECT, "R"),
    (RTF_DYNAMIC, "D"), (RTF_STATIC, "S"), (RTF_BLACKHOLE, "B"),
)

MASKS: tuple[int, ...] = tuple((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF for p in range(33))
MASKS6: tuple[int, ...] = tuple(((1 << 128) - 1) << (128 - p) & ((1 << 128) - 1)
                                for p in range(129))
"""IPv6's prefix masks: a table made with `RouteTable(width=128)` and its routes
(`Route(..., width=128)`) use these (vimage.netinet6 keeps such a table in `vnet.rt6`)."""
_CACHE_LIMIT = 4096


class Route:
    __slots__ = ("dst", "flags", "gateway", "ifa", "ifp", "mtu", "plen", "use")

    def __init__(self, dst: int, plen: int, ifp: Ifnet, flags: int, gateway: int = 0,
                 ifa: InAddr | None = None, mtu: int = 0, width: int = 32) -> None:
        self.dst = dst & (MASKS if width == 32 else MASKS6)[plen]
        self.plen = plen
        self.ifp = ifp
        self.flags = flags | RTF_UP | (RTF_HOST if plen == width else 0)
        self.gateway = gateway
        self.ifa = ifa
        self.mtu = mtu
        self.use = 0

    def __repr__(self) -> str:
        return f"<Route {self.dst:#010x}/{self.plen} via {self.gateway:#010x} {self.ifp.name}>"


def flag_string(flags: int) -> str:
    return "".join(letter for bit, letter in FLAG_LETTERS if flags & bit)


class RouteTable:
    """Prefixes bucketed by length; a per-destination cache makes forwarding O(1)."""

    __slots__ = ("_by_len", "_cache", "_lens", "_masks")

    def __init__(self, width: int = 32) -> None:
        self._masks = MASKS if width == 32 else MASKS6
        self._by_len: dict[int, dict[int, Route]] = {}
        self._lens: tuple[int, ...] = ()
        self._cache: dict[int, Route] = {}

    def lookup(self, dst: int) -> Route | None:
        route = self._cache.get(dst)
        if route is not None:
            return route
        by_len = self._by_len
        masks = self._masks
        for plen in self._lens:
            route = by_len[plen].get(dst & masks[plen])
            if route is not None:
                cache = self._cache
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[dst] = route
                return route
        return None

    def get(self, dst: int, plen: int) -> Route | None:
        bucket = self._by_len.get(plen)
        return bucket.get(dst & self._masks[plen]) if bucket else None

    def add(self, route: Route) -> Route:
        bucket = self._by_len.get(route.plen)
        if bucket is None:
            bucket = self._by_len[route.plen] = {}
            self._lens = tuple(sorted(self._by_len, reverse=True))
        if route.dst in bucket:
            raise OSError(errno.EEXIST, "route already in table")
        bucket[route.dst] = route
        self._cache.clear()
        return route

    def delete(self, dst: int, plen: int) -> Route:
        bucket = self._by_len.get(plen)
        route = bucket.pop(dst & self._masks[plen], None) if bucket else None
        if route is None:
            raise OSError(errno.ESRCH, "not in table")
        if not bucket:
            del self._by_len[plen]
            self._lens = tuple(sorted(self._by_len, reverse=True))
        self._cache.clear()
        return route

    def changed(self) -> None:
        self._cache.clear()

    def routes(self) -> list[Route]:
        """Every route, sorted by destination then prefix length (netstat order)."""
        out = [r for bucket in self._by_len.values() for r in bucket.values()]
        out.sort(key=lambda r: (r.dst, r.plen))
        return out

    def purge(self, predicate) -> None:  # type: ignore[no-untyped-def]
        for route in [r for r in self.routes() if predicate(r)]:
            self.delete(route.dst, route.plen)

    def clear(self) -> None:
        self._by_len.clear()
        self._lens = ()
        self._cache.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_len.values())


def vnet_attach(vnet: Vnet) -> None:
    vnet.rt = RouteTable()


def vnet_detach(vnet: Vnet) -> None:
    vnet.rt.clear()


PROTOCOL = Protocol("route", 10, "rt", vnet_attach, vnet_detach)
