"""Per-vnet routing tables: FIBs, longest-prefix match, multipath and nexthops.

A vnet has `net.fibs` FIBs (FreeBSD's multiple FIBs, rt_tables[], one table per fib
and address family): `vnet.rt` is IPv4's table 0, the default one, and
`vnet.route.tables[n]` fib n's; `vnet.rt6` and `vnet.route.tables6[n]` the same for
IPv6 (FreeBSD's rib for AF_INET6, netinet6/in6_rmx.c). A socket's fib (SO_SETFIB,
`setfib`) chooses the table its packets are routed with.

Several routes for one prefix with different gateways form a multipath group
(FreeBSD ROUTE_MPATH, `net.route.multipath`): the table holds the group's first path,
whose `group` lists every path and whose `slots` repeats each path in proportion to
its weight (FreeBSD's nhgrp compiled slots); `select` picks a slot by a flow hash, so
one flow sticks to one path. Every path is a nexthop object with an index
(`netstat -onW`, rmx_nhidx).
"""

from __future__ import annotations

import errno
from math import gcd
from typing import TYPE_CHECKING, Any

from vimage.context import current_fib
from vimage.protosw import Protocol
from vimage.sysctl import Oid

if TYPE_CHECKING:
    from collections.abc import Callable

    from vimage.net.ifnet import Ifnet
    from vimage.netinet.in_ import InAddr
    from vimage.sched import Timer
    from vimage.vnet import Vnet

RTF_UP = 0x1
RTF_GATEWAY = 0x2
RTF_HOST = 0x4
RTF_REJECT = 0x8
RTF_DYNAMIC = 0x10
RTF_MODIFIED = 0x20
RTF_DONE = 0x40
RTF_XRESOLVE = 0x200
RTF_LLINFO = 0x400
RTF_STATIC = 0x800
RTF_BLACKHOLE = 0x1000
RTF_PROTO2 = 0x4000
RTF_PROTO1 = 0x8000
RTF_PROTO3 = 0x40000
RTF_FIXEDMTU = 0x80000
RTF_PINNED = 0x100000
RTF_LOCAL = 0x200000
RTF_BROADCAST = 0x400000
RTF_MULTICAST = 0x800000
RTF_STICKY = 0x10000000

# netstat(1)'s letters, in its rt_bits order (usr.bin/netstat/route.c)
FLAG_LETTERS: tuple[tuple[int, str], ...] = (
    (RTF_UP, "U"), (RTF_GATEWAY, "G"), (RTF_HOST, "H"), (RTF_REJECT, "R"),
    (RTF_DYNAMIC, "D"), (RTF_MODIFIED, "M"), (RTF_XRESOLVE, "X"), (RTF_STATIC, "S"),
    (RTF_PROTO1, "1"), (RTF_PROTO2, "2"), (RTF_PROTO3, "3"), (RTF_BLACKHOLE, "B"),
)

MASKS: tuple[int, ...] = tuple((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF for p in range(33))
MASKS6: tuple[int, ...] = tuple(((1 << 128) - 1) << (128 - p) & ((1 << 128) - 1)
                                for p in range(129))
"""IPv6's prefix masks: a table made with `RouteTable(width=128)` and its routes
(`Route(..., width=128)`) use these (`RouteState.tables6`; fib 0's is `vnet.rt6`)."""
_CACHE_LIMIT = 4096
RT_MAXFIBS = 16
"""vimage's limit on net.fibs (FreeBSD's RT_MAXFIBS is 65536; 16 keeps a vnet small and
is more than FreeBSD's own tests use)."""
MAX_SLOTS = 64  # a multipath group's weights are scaled to at most this many slots


class Route:
    """One route, which is also its nexthop object (FreeBSD's rtentry + nhop_object).

    `group` and `slots` are set on the first path of a multipath group only. `nh` is
    the next-hop cache of a gateway route: the link-layer entry its gateway resolved to
    (an ArpEntry, with the prebuilt header), set by IPv4 forwarding and output. The
    entry itself says when it is stale (its header is None once it left the table); a
    change to the route in place (`RouteTable.changed`) clears it.
    """

    __slots__ = ("dst", "expire", "fib", "flags", "gateway", "group", "hopcount", "ifa",
                 "ifp", "mtu", "nh", "nhidx", "plen", "slots", "use", "weight")

    def __init__(self, dst: int, plen: int, ifp: Ifnet, flags: int, gateway: int = 0,
                 ifa: InAddr | None = None, mtu: int = 0, weight: int = 1,
                 expire: int = 0, hopcount: int = 0, width: int = 32) -> None:
        self.dst = dst & (MASKS if width == 32 else MASKS6)[plen]
        self.plen = plen
        self.ifp = ifp
        self.flags = flags | RTF_UP | (RTF_HOST if plen == width else 0)
        self.gateway = gateway
        self.ifa = ifa
        self.mtu = mtu
        self.use = 0
        self.weight = weight
        self.expire = expire  # kernel time (ns) when the route goes away; 0: never
        self.hopcount = hopcount
        self.fib = 0
        self.nhidx = 0
        self.group: tuple[Route, ...] | None = None
        self.slots: tuple[Route, ...] = ()
        self.nh: Any = None

    def __repr__(self) -> str:
        return f"<Route {self.dst:#010x}/{self.plen} via {self.gateway:#010x} {self.ifp.name}>"

    @property
    def paths(self) -> tuple[Route, ...]:
        """Every path of this route's prefix (itself alone unless a multipath group)."""
        return self.group or (self,)


def flag_string(flags: int) -> str:
    return "".join(letter for bit, letter in FLAG_LETTERS if flags & bit)


def _fmix(h: int) -> int:
    """MurmurHash3's 32-bit finalizer: every input bit reaches every output bit."""
    h ^= h >> 16
    h = h * 0x85EBCA6B & 0xFFFFFFFF
    h ^= h >> 13
    h = h * 0xC2B2AE35 & 0xFFFFFFFF
    return h ^ (h >> 16)


def flow_hash(key: int, src: int, dst: int, ports: int = 0, proto: int = 0) -> int:
    """A deterministic flow hash keyed by the vnet's secret (what FreeBSD's RSS/flowid
    does for multipath selection): same flow, same path; another key, another spread."""
    h = _fmix(key ^ src)
    h = _fmix(h ^ dst)
    h = _fmix(h ^ ports)
    return _fmix(h ^ proto)


def select(route: Route, flowid: int) -> Route:
    """The path of `route`'s group a flow hashing to `flowid` takes."""
    slots = route.slots
    return slots[flowid % len(slots)] if slots else route


def _slots(paths: tuple[Route, ...]) -> tuple[Route, ...]:
    """Each path repeated in proportion to its weight (at most MAX_SLOTS in all)."""
    weights = [max(1, p.weight) for p in paths]
    g = 0
    for w in weights:
        g = gcd(g, w)
    weights = [w // g for w in weights]
    total = sum(weights)
    if total > MAX_SLOTS:
        weights = [max(1, w * MAX_SLOTS // total) for w in weights]
    return tuple(p for p, w in zip(paths, weights, strict=True) for _ in range(w))


class RouteTable:
    """Prefixes bucketed by length; a per-destination cache makes forwarding O(1)."""

    __slots__ = ("_by_len", "_cache", "_lens", "_masks", "fibnum", "owner")

    def __init__(self, fibnum: int = 0, width: int = 32) -> None:
        self._masks = MASKS if width == 32 else MASKS6
        self._by_len: dict[int, dict[int, Route]] = {}
        self._lens: tuple[int, ...] = ()
        self._cache: dict[int, Route] = {}
        self.fibnum = fibnum
        # the vnet's RouteState, told of each route added (nexthop index, expiry timer);
        # the object, not a bound method of it: one object fewer per vnet to track
        self.owner: RouteState | None = None

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

    def add(self, route: Route, multipath: bool = False) -> Route:
        """Add `route`; EEXIST if its prefix is there, unless `multipath` and its
        gateway differs from every path's: then it joins the prefix's group."""
        bucket = self._by_len.get(route.plen)
        if bucket is None:
            bucket = self._by_len[route.plen] = {}
            self._lens = tuple(sorted(self._by_len, reverse=True))
        route.fib = self.fibnum
        head = bucket.get(route.dst)
        if head is not None:
            if not multipath or not route.flags & RTF_GATEWAY or any(
                    not p.flags & RTF_GATEWAY or p.gateway == route.gateway
                    for p in head.paths):
                raise OSError(errno.EEXIST, "route already in table")
            self._regroup(bucket, (*head.paths, route))
        else:
            bucket[route.dst] = route
        self._cache.clear()
        if self.owner is not None:
            self.owner.added(route)
        return route

    def _regroup(self, bucket: dict[int, Route], paths: tuple[Route, ...]) -> None:
        for p in paths:
            p.group, p.slots = None, ()
        head = paths[0]
        if len(paths) > 1:
            head.group, head.slots = paths, _slots(paths)
        bucket[head.dst] = head

    def delete(self, dst: int, plen: int, gateway: int | None = None) -> Route:
        """Remove a prefix (every path), or with `gateway` only the path through it."""
        bucket = self._by_len.get(plen)
        head = bucket.get(dst & self._masks[plen]) if bucket else None
        if head is None or bucket is None:
            raise OSError(errno.ESRCH, "not in table")
        if gateway is not None and head.group is not None:
            path = next((p for p in head.group if p.gateway == gateway), None)
            if path is None:
                raise OSError(errno.ESRCH, "not in table")
            self._regroup(bucket, tuple(p for p in head.group if p is not path))
            path.group, path.slots = None, ()
            self._cache.clear()
            return path
        if gateway is not None and head.flags & RTF_GATEWAY and head.gateway != gateway:
            raise OSError(errno.ESRCH, "not in table")
        del bucket[head.dst]
        if not bucket:
            del self._by_len[plen]
            self._lens = tuple(sorted(self._by_len, reverse=True))
        self._cache.clear()
        return head

    def remove_path(self, path: Route) -> None:
        """Remove one path (a route as `routes()` or `all_paths()` gave it)."""
        head = self.get(path.dst, path.plen)
        if head is None or path not in head.paths:
            return
        self.delete(path.dst, path.plen, path.gateway if head.group is not None else None)

    def changed(self) -> None:
        """A route was changed in place (gateway, interface, metrics, weight)."""
        self._cache.clear()
        for bucket in self._by_len.values():  # a path's weight may have changed
            for head in list(bucket.values()):
                for path in head.paths:
                    path.nh = None  # its next hop may be another one now
                if head.group is not None:
                    self._regroup(bucket, head.group)

    def routes(self) -> list[Route]:
        """Every prefix's (first) route, sorted by destination then prefix length."""
        out = [r for bucket in self._by_len.values() for r in bucket.values()]
        out.sort(key=lambda r: (r.dst, r.plen))
        return out

    def all_paths(self) -> list[Route]:
        """Every path of every prefix, in netstat order (a group's paths together)."""
        return [p for r in self.routes() for p in r.paths]

    def purge(self, predicate) -> None:  # type: ignore[no-untyped-def]
        for route in [p for p in self.all_paths() if predicate(p)]:
            self.remove_path(route)

    def clear(self) -> None:
        self._by_len.clear()
        self._lens = ()
        self._cache.clear()

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_len.values())


class RouteState:
    """The vnet's routing: its FIBs and their tunables (net.fibs, net.my_fibnum,
    net.add_addr_allfibs, net.route.multipath), nexthop indexes and route expiry."""

    __slots__ = ("_fibs", "_more6", "_next_nhidx", "_rt6", "_timer", "_timer_at",
                 "add_addr_allfibs", "multipath", "on_expire", "tables", "vnet")

    def __init__(self, vnet: Vnet, fibs: int = 1) -> None:
        self.vnet = vnet
        self.tables: list[RouteTable] = []
        # IPv6's, one per fib too (`tables6`), made on first use as the IPv6 family is
        # (the lazy `route6` protocol asks for fib 0's): fib 0's here, the others in a
        # list. No owner: IPv6 routes take no nexthop index and their expiry is ND's own
        # timers (nd6_rtr).
        self._rt6: RouteTable | None = None
        self._more6: list[RouteTable] | None = None
        self._next_nhidx = 1
        self._timer: Timer | None = None
        self._timer_at = 0
        self.add_addr_allfibs = 0  # FreeBSD 13+'s default: addresses' routes in their fib
        self.multipath = 1
        # called with each expired route after it is removed (RTM_DELETE to listeners)
        self.on_expire: Callable[[Route], None] | None = None
        self._fibs = 0
        self.fibs = fibs

    # -- net.fibs ------------------------------------------------------------------------
    @property
    def fibs(self) -> int:
        return self._fibs

    @fibs.setter
    def fibs(self, n: int) -> None:
        """More FIBs may be added at run time (FreeBSD 13+); never fewer."""
        if not 1 <= n <= RT_MAXFIBS:
            raise ValueError(f"net.fibs: {n} is out of range [1..{RT_MAXFIBS}]")
        if n < self._fibs:
            raise ValueError("net.fibs: the number of fibs can only grow")
        while len(self.tables) < n:
            table = RouteTable(len(self.tables))
            table.owner = self
            self.tables.append(table)
        self._fibs = n
        if self._rt6 is not None:
            self._grow6()

    @property
    def my_fibnum(self) -> int:
        """The calling process's fib (setfib(1), SO_SETFIB's default): read-only."""
        return current_fib.get()

    @my_fibnum.setter
    def my_fibnum(self, _value: int) -> None:
        raise ValueError("net.my_fibnum: read-only (use setfib)")

    def table(self, fib: int) -> RouteTable:
        """FIB `fib`'s table; EINVAL as FreeBSD's SO_SETFIB for one that does not exist."""
        if not 0 <= fib < self._fibs:
            raise OSError(errno.EINVAL, f"fib {fib} does not exist (net.fibs={self._fibs})")
        return self.tables[fib]

    @property
    def tables6(self) -> list[RouteTable]:
        """Every fib's IPv6 table, by fib number (a new list each time)."""
        rt6 = self._grow6()
        more = self._more6
        return [rt6, *more] if more else [rt6]

    def table6(self, fib: int) -> RouteTable:
        """FIB `fib`'s IPv6 table (EINVAL as `table`)."""
        if not fib:
            rt6 = self._rt6
            return rt6 if rt6 is not None else self._grow6()
        if not 0 < fib < self._fibs:
            raise OSError(errno.EINVAL, f"fib {fib} does not exist (net.fibs={self._fibs})")
        more = self._more6
        if more is None or len(more) < fib:
            self._grow6()
            more = self._more6
        return more[fib - 1]  # type: ignore[index]

    def _grow6(self) -> RouteTable:
        """Make the IPv6 tables net.fibs asks for; fib 0's."""
        rt6 = self._rt6
        if rt6 is None:
            rt6 = self._rt6 = RouteTable(0, width=128)
        if self._fibs > 1:
            more = self._more6
            if more is None:
                more = self._more6 = []
            while len(more) < self._fibs - 1:
                more.append(RouteTable(len(more) + 1, width=128))
        return rt6

    def addr_tables(self, fib: int) -> list[RouteTable]:
        """The tables an interface address's routes go in (net.add_addr_allfibs)."""
        return list(self.tables) if self.add_addr_allfibs else [self.tables[fib]]

    def addr_tables6(self, fib: int) -> list[RouteTable]:
        """The IPv6 tables an interface address's routes go in (net.add_addr_allfibs,
        as FreeBSD's in6_ifaddloop and the prefix route of nd6_prefix_onlink)."""
        return self.tables6 if self.add_addr_allfibs else [self.table6(fib)]

    # -- nexthops and expiry ----------------------------------------------------------------
    def added(self, route: Route) -> None:
        if not route.nhidx:
            route.nhidx = self._next_nhidx
            self._next_nhidx += 1
        if route.expire:
            self.arm(route.expire)

    def arm(self, when: int) -> None:
        """Make sure the expiry timer runs no later than kernel time `when`."""
        if self._timer is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        sched = self.vnet.kernel.sched
        self._timer_at = when
        self._timer = sched.call_later(when - sched.now_ns(), self._expire, owner=self.vnet)

    def _expire(self) -> None:
        """Remove every route whose time has come (FreeBSD's rib expire callout)."""
        self._timer = None
        now = self.vnet.kernel.sched.now_ns()
        later = 0
        for table in self.tables:
            for path in table.all_paths():
                if not path.expire:
                    continue
                if path.expire <= now:
                    table.remove_path(path)
                    if self.on_expire is not None:
                        self.on_expire(path)
                elif not later or path.expire < later:
                    later = path.expire
        if later:
            self.arm(later)

    def clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for table in self.tables:
            table.clear()
        self.clear6()

    def clear6(self) -> None:
        """Empty the IPv6 tables that were made (making none)."""
        if self._rt6 is not None:
            self._rt6.clear()
        for table in self._more6 or ():
            table.clear()


SYSCTLS: tuple[Oid, ...] = (
    Oid("net.fibs", "route", "fibs", "Number of available FIBs", 1, RT_MAXFIBS),
    Oid("net.my_fibnum", "route", "my_fibnum", "default FIB of caller", 0, RT_MAXFIBS - 1),
    Oid("net.add_addr_allfibs", "route", "add_addr_allfibs",
        "Configure interface addresses in all FIBs", 0, 1),
    Oid("net.route.multipath", "route", "multipath", "Enable route multipath", 0, 1),
)


def vnet_attach(vnet: Vnet) -> None:
    vnet.route = RouteState(vnet, int(vnet.params.get("fibs", 1)))
    vnet.rt = vnet.route.tables[0]


def vnet_detach(vnet: Vnet) -> None:
    vnet.route.clear()


PROTOCOL = Protocol("route", 10, "route", vnet_attach, vnet_detach, sysctls=SYSCTLS)
