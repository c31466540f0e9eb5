"""route6d: a RIPng daemon (RFC 2080) as a service of a vnet, routed's IPv6 sibling.

One `Route6d` per vnet, driven by the kernel loop as `vimage.apps.routed` is (no
thread): a UDP socket bound to [::]:521 wakes it when datagrams arrive, one kernel
timer fires at the earliest of the next regular update, the end of the triggered-update
damping and the route timeouts. Routes go in and out of the IPv6 table of the fib it
was started in (`setfib N route6d -s`, as FreeBSD's route6d works in its process's
fib; fib 0's is `vnet.rt6`) through an AF_INET6 routing socket (RTM_ADD/CHANGE/DELETE
with RTF_GATEWAY, the gateway the neighbour's link-local address with the interface in
sin6_scope_id, as FreeBSD route6d's addroute/delroute send them; the metric as
RTV_HOPCOUNT).

RFC 2080 sections in the code: metric = received + 1, infinity 16; a route from its
own gateway always updates, from another only if better (2.4.2); timers 30/180/120 s
(2.3, scaled by -P); split horizon with poisoned reverse (2.5 via RFC 2453 3.4.3);
triggered updates damped by a random 1-5 s (2.5.1); requests (2.4.1). Updates go to
ff02::9 on each interface (the daemon joins the group on each interface it runs on),
from port 521 with hop limit 255; responses are accepted only from port 521 and a
link-local source (2.4.2). The next hop of a learnt route is the sender's link-local
address, or a next-hop entry's link-local address (2.1.1), scoped to the interface.
"""

from __future__ import annotations

import errno
import random
from socket import AF_INET6
from typing import TYPE_CHECKING, Any

from vimage.apps.routed import DaemonService, RipParams
from vimage.net.route import MASKS6, RTF_GATEWAY, RTF_STATIC
from vimage.netinet6 import in6
from vimage.sched import NS_PER_S
from vimage.socket.inet6 import IPPROTO_IPV6, IPV6_MULTICAST_HOPS
from vimage.wire import WireError, ripng, rtmsg
from vimage.wire.ipv6 import is_link_local, is_multicast, ntoa

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.net.route import RouteTable
    from vimage.sched import Timer
    from vimage.vnet import Vnet

AF_ROUTE = 17
SOCK_DGRAM, SOCK_RAW = 2, 3
SOL_SOCKET, SO_USELOOPBACK = 1, 0x0040
RTF_HOST = 0x4
ZONE = 0xFFFF << 96

COUNTERS: tuple[tuple[str, str], ...] = (
    ("inpackets", "packets received"),
    ("outpackets", "packets sent"),
    ("requests", "requests answered"),
    ("badpackets", "malformed packets ignored"),
    ("badport", "responses not from port 521 ignored"),
    ("badsource", "responses not from a link-local address ignored"),
    ("badentries", "entries ignored (bad prefix or prefix length)"),
    ("badmetric", "entries with an invalid metric ignored"),
    ("overflow", "routes refused: the table is full (max_routes)"),
    ("changes", "route changes"),
    ("triggered", "triggered updates sent"),
    ("kernelerrors", "routing socket requests that failed"),
)


class Params(RipParams):
    """route6d's -s/-q and -P parameters: routed's timers and table limit, no more."""


class Rt6:
    """One entry of the daemon's table; `gateway` is a bare link-local address on
    interface `ifname`."""

    __slots__ = ("changed", "dst", "expire", "gateway", "ifname", "installed", "kind",
                 "metric", "plen", "tag")

    def __init__(self, dst: int, plen: int, metric: int, gateway: int, ifname: str,
                 kind: str, tag: int = 0) -> None:
        self.dst, self.plen, self.metric, self.gateway = dst, plen, metric, gateway
        self.ifname, self.kind, self.tag = ifname, kind, tag
        self.expire = 0
        self.changed = True
        self.installed = False


class Route6d:
    """The daemon of one vnet."""

    def __init__(self, vnet: Vnet, params: Params) -> None:
        self.vnet = vnet
        self.kernel: Kernel = vnet.kernel
        self.params = params
        self.stats: dict[str, int] = dict.fromkeys((name for name, _ in COUNTERS), 0)
        self.routes: dict[tuple[int, int], Rt6] = {}
        self.rng = random.Random(int.from_bytes(vnet.secret[48:56], "big"))
        self.running = False
        self._timer: Timer | None = None
        self._drain_timer: Timer | None = None
        self._next_update = 0
        self._damp_until = 0
        self._trigger_pending = False
        self._joined: set[Ifnet] = set()
        self.sock: Any = None
        self.rtsock: Any = None

    # -- life ----------------------------------------------------------------------------
    def start(self) -> None:
        vnet = self.vnet
        sock = vnet.socket(AF_INET6, SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)  # RFC 2080 2.5
            sock.bind(("::", ripng.PORT))
            rts = vnet.socket(AF_ROUTE, SOCK_RAW, 0)
        except OSError:
            sock.close()
            raise
        rts.setsockopt(SOL_SOCKET, SO_USELOOPBACK, 0)
        rts.setblocking(False)
        self.sock, self.rtsock = sock, rts
        sock._poll = rts._poll = self
        self.running = True
        now = self.kernel.now_ns()
        self.scan_interfaces(now)  # joins ff02::9 and asks for the neighbours' tables
        self._next_update = now
        self._arm(now)

    def stop(self) -> None:
        """Withdraw our kernel routes, leave ff02::9, close everything."""
        if not self.running:
            return
        self.running = False
        for timer in (self._timer, self._drain_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._drain_timer = None
        if self.vnet.alive:
            for route in list(self.routes.values()):
                if route.installed:
                    self._kernel(rtmsg.RTM_DELETE, route)
            for ifp in self._joined:
                if ifp.vnet is self.vnet:
                    in6.leave(ifp, ripng.GROUP)
        self._joined.clear()
        self.routes.clear()
        for sock in (self.sock, self.rtsock):
            if sock is not None:
                sock._poll = None
                sock.close()
        self.sock = self.rtsock = None

    @property
    def supplying(self) -> bool:
        if self.params.supply is not None:
            return self.params.supply
        return bool(self.vnet.ip6.forwarding)

    # -- the kernel loop's entry points ------------------------------------------------------
    def touch(self, _sock: object) -> None:
        if self._drain_timer is None and self.running:
            self._drain_timer = self.kernel.sched.call_later(0, self._drain, owner=self.vnet)

    def _drain(self) -> None:
        self._drain_timer = None
        if not self.running:
            return
        now = self.kernel.now_ns()
        while True:
            try:
                data, src, sport = self.sock._recv(65536, 0)
            except (BlockingIOError, OSError):
                break
            self.receive(data, src, sport, now)
        changed = False
        while True:
            try:
                self.rtsock.recv(4096)
            except (BlockingIOError, OSError):
                break
            changed = True
        if changed:
            self.scan_interfaces(now)
        self._arm(now)

    def _on_timer(self) -> None:
        self._timer = None
        if self.running:
            self.timer(self.kernel.now_ns())

    def timer(self, now: int) -> None:
        self.scan_interfaces(now)
        self._age(now)
        if now >= self._next_update:
            self._next_update = now + int(self.params.update * NS_PER_S)
            if self.supplying:
                self.broadcast(changed_only=False)
            self._trigger_pending = False
            for route in self.routes.values():
                route.changed = False
        elif self._trigger_pending and now >= self._damp_until:
            self._send_triggered(now)
        self._arm(now)

    def _arm(self, now: int) -> None:
        if not self.running:
            return
        when = self._next_update
        if self._trigger_pending:
            when = min(when, max(now, self._damp_until))
        for route in self.routes.values():
            if route.expire:
                when = min(when, route.expire)
        if self._waiting_dad():
            when = min(when, now + NS_PER_S)  # look again when DAD may be done
        if self._timer is not None:
            if self._timer.when == when:
                return
            self._timer.cancel()
        self._timer = self.kernel.sched.call_later(when - now, self._on_timer, owner=self.vnet)

    # -- interfaces ----------------------------------------------------------------------
    def interfaces(self) -> list[Ifnet]:
        """Interfaces RIPng runs on: up, not loopback, with a usable link-local address."""
        out = []
        for ifp in self.vnet.ifaces.values():
            if ifp.flags & 0x1 and not ifp.flags & 0x8 and any(
                    is_link_local(ia.addr) and ia.ready for ia in in6.addrs(ifp)):
                out.append(ifp)
        return out

    def _waiting_dad(self) -> bool:
        """An interface up whose addresses are still tentative (no event tells us when
        duplicate address detection ends: the daemon looks every second meanwhile)."""
        return any(ifp.flags & 0x1 and not ifp.flags & 0x8
                   and ia.flags & in6.IN6_IFF_TENTATIVE
                   for ifp in self.vnet.ifaces.values() for ia in in6.addrs(ifp))

    def scan_interfaces(self, now: int) -> None:
        """Connected prefixes (not link-local) and static kernel routes are ours to
        advertise; those gone are poisoned. Joins ff02::9 on new interfaces."""
        seen: set[tuple[int, int]] = set()
        ifps = self.interfaces()
        for ifp in ifps:
            if ifp not in self._joined:
                in6.join(ifp, ripng.GROUP)
                self._joined.add(ifp)
                self._send(ripng.whole_table_request(), ifp)  # 2.4.1, as at start
            for ia in in6.addrs(ifp):
                if is_link_local(ia.addr) or ia.plen >= 128 or not ia.ready:
                    continue
                key = (ia.addr & MASKS6[ia.plen], ia.plen)
                seen.add(key)
                route = self.routes.get(key)
                if route is None or route.kind != "if" or route.metric >= ripng.INFINITY:
                    if route is not None and route.installed:
                        self._kernel(rtmsg.RTM_DELETE, route)
                    self.routes[key] = Rt6(key[0], key[1], 1, 0, ifp.name, "if")
                    self._changed()
        for kr in self._table().routes():
            if kr.flags & RTF_STATIC and kr.flags & RTF_GATEWAY and kr.plen < 128:
                key = (kr.dst, kr.plen)
                seen.add(key)
                route = self.routes.get(key)
                if route is None or (route.kind == "rip" and not route.installed):
                    self.routes[key] = Rt6(kr.dst, kr.plen, max(1, kr.hopcount), kr.gateway,
                                           kr.ifp.name, "static")
                    self._changed()
        names = {ifp.name for ifp in ifps}
        for key, route in list(self.routes.items()):
            if route.kind in ("if", "static") and key not in seen:
                if route.metric < ripng.INFINITY:
                    self._unreachable(route, now)
            elif route.kind == "rip" and route.metric < ripng.INFINITY \
                    and route.ifname not in names:
                self._unreachable(route, now)

    # -- input ---------------------------------------------------------------------------
    def receive(self, data: bytes, src: int, sport: int, now: int) -> None:
        """One datagram to port 521 (RFC 2080 2.4). `src` is as the socket layer gives
        it: a link-local source with its zone embedded (in6.zkey)."""
        st = self.stats
        if src in self.vnet.ip6.local:
            return  # our own multicast
        st["inpackets"] += 1
        try:
            pkt = ripng.parse(data)
        except WireError:
            st["badpackets"] += 1
            return
        if pkt.command == ripng.REQUEST:
            self._answer(pkt, src, sport)
            return
        if sport != ripng.PORT:
            st["badport"] += 1
            return
        addr = src & ~ZONE
        ifp = self._ifp_of_zone((src >> 96) & 0xFFFF)
        if not is_link_local(addr) or ifp is None:
            st["badsource"] += 1
            return
        nexthop = addr
        for e in pkt.entries:
            if e.metric == ripng.NEXTHOP_METRIC:  # 2.1.1: applies to the entries after it
                nexthop = e.prefix if is_link_local(e.prefix) else addr
                continue
            self._entry(e, nexthop, ifp, now)

    def _ifp_of_zone(self, index: int) -> Ifnet | None:
        for ifp in self.interfaces():
            if ifp.index == index:
                return ifp
        return None

    def _entry(self, e: ripng.RipngEntry, gateway: int, ifp: Ifnet, now: int) -> None:
        st = self.stats
        if not 1 <= e.metric <= ripng.INFINITY:
            st["badmetric"] += 1
            return
        if not _valid_prefix(e.prefix, e.plen):
            st["badentries"] += 1
            return
        metric = min(e.metric + 1, ripng.INFINITY)
        self._update((e.prefix, e.plen), metric, gateway, ifp.name, e.tag, now)

    def _update(self, key: tuple[int, int], metric: int, gateway: int, ifname: str, tag: int,
                now: int) -> None:
        """RFC 2080 2.4.2 (RFC 2453 3.9.2's rules) for one received route."""
        route = self.routes.get(key)
        timeout = now + int(self.params.timeout * NS_PER_S)
        if route is None:
            if metric >= ripng.INFINITY:
                return
            if len(self.routes) >= self.params.max_routes and sum(
                    1 for r in self.routes.values() if r.kind == "rip") >= self.params.max_routes:
                self.stats["overflow"] += 1
                return
            route = Rt6(key[0], key[1], metric, gateway, ifname, "rip", tag)
            route.expire = timeout
            self.routes[key] = route
            self._install(route)
            self._changed()
            return
        if route.kind != "rip":
            return
        if route.gateway == gateway and route.ifname == ifname:
            if metric < ripng.INFINITY:
                route.expire = timeout
            if metric != route.metric:
                if metric >= ripng.INFINITY:
                    self._unreachable(route, now)
                else:
                    was_dead = route.metric >= ripng.INFINITY
                    route.metric, route.tag = metric, tag
                    if was_dead or not route.installed:
                        self._install(route)
                    else:
                        self._kernel(rtmsg.RTM_CHANGE, route)
                    self._changed()
                    route.changed = True
        elif metric < route.metric:
            dead = route.metric >= ripng.INFINITY
            route.metric, route.gateway, route.ifname, route.tag = metric, gateway, ifname, tag
            route.expire = timeout
            if dead or not route.installed:
                self._install(route)
            else:
                self._kernel(rtmsg.RTM_CHANGE, route)
            self._changed()
            route.changed = True

    def _unreachable(self, route: Rt6, now: int) -> None:
        route.metric = ripng.INFINITY
        route.expire = now + int(self.params.garbage * NS_PER_S)
        if route.installed:
            self._kernel(rtmsg.RTM_DELETE, route)
            route.installed = False
        self._changed()
        route.changed = True

    def _age(self, now: int) -> None:
        for key, route in list(self.routes.items()):
            if route.expire and now >= route.expire:
                if route.metric < ripng.INFINITY:
                    self._unreachable(route, now)
                else:
                    del self.routes[key]

    def _changed(self) -> None:
        self.stats["changes"] += 1
        self._trigger_pending = True

    # -- output --------------------------------------------------------------------------
    def entries_for(self, ifname: str | None, changed_only: bool) -> list[ripng.RipngEntry]:
        """The table as sent on `ifname`, split horizon with poisoned reverse; None (a
        query from another port) gets it as it is."""
        out = []
        for route in sorted(self.routes.values(), key=lambda r: (r.dst, r.plen)):
            if changed_only and not route.changed:
                continue
            if route.kind == "if" and route.ifname == ifname and route.metric < ripng.INFINITY:
                continue
            metric = route.metric
            if ifname is not None and route.kind == "rip" and route.ifname == ifname:
                metric = ripng.INFINITY
            out.append(ripng.RipngEntry(route.dst, route.plen, metric, route.tag))
        return out

    def broadcast(self, changed_only: bool) -> None:
        for ifp in self.interfaces():
            entries = self.entries_for(ifp.name, changed_only)
            per = ripng.max_entries(ifp.mtu)
            for i in range(0, len(entries), per):
                self._send(ripng.build(ripng.RESPONSE, entries[i:i + per]), ifp)

    def _send_triggered(self, now: int) -> None:
        self._trigger_pending = False
        if self.supplying:
            self.broadcast(changed_only=True)
            self.stats["triggered"] += 1
        for route in self.routes.values():
            route.changed = False
        p = self.params
        self._damp_until = now + int(self.rng.uniform(p.damp_min, p.damp_max) * NS_PER_S)

    def _answer(self, pkt: ripng.RipngPacket, src: int, sport: int) -> None:
        """RFC 2080 2.4.1: the whole table (split horizon for a router on port 521), or
        the entries asked for, unicast back to the asker."""
        if not self.supplying and sport == ripng.PORT:
            return
        self.stats["requests"] += 1
        ifp = self._ifp_of_zone((src >> 96) & 0xFFFF) if is_link_local(src & ~ZONE) else None
        ifname = ifp.name if ifp is not None and sport == ripng.PORT else None
        ents = pkt.entries
        if len(ents) == 1 and ents[0].prefix == 0 and ents[0].plen == 0 \
                and ents[0].metric == ripng.INFINITY:
            answer = self.entries_for(ifname, changed_only=False)
        else:
            answer = []
            for e in ents:
                r = self.routes.get((e.prefix, e.plen))
                answer.append(e._replace(metric=r.metric if r is not None else ripng.INFINITY))
        per = ripng.max_entries(1280)
        for i in range(0, max(1, len(answer)), per):
            self._sendto(ripng.build(ripng.RESPONSE, answer[i:i + per]), src, sport)

    def _send(self, pkt: bytes, ifp: Ifnet) -> None:
        self._sendto(pkt, ripng.GROUP, ripng.PORT, ifp.index)

    def _sendto(self, pkt: bytes, dst: int, port: int, scope: int = 0) -> None:
        if dst & ZONE and is_link_local(dst & ~ZONE):
            dst, scope = dst & ~ZONE, (dst >> 96) & 0xFFFF
        try:
            self.sock.sendto(pkt, (ntoa(dst), port, 0, scope))
            self.stats["outpackets"] += 1
        except OSError:
            pass

    # -- the kernel table ----------------------------------------------------------------------
    def _table(self) -> RouteTable:
        """The IPv6 table of our fib (our routing socket's, the process's at start)."""
        fib = self.rtsock.fib if self.rtsock is not None else 0
        return self.vnet.route.table6(fib)

    def _install(self, route: Rt6) -> None:
        if self._table().get(route.dst, route.plen) is not None:
            route.installed = False
            return
        route.installed = self._kernel(rtmsg.RTM_ADD, route)

    def _kernel(self, mtype: int, route: Rt6) -> bool:
        if self.rtsock is None or not self.vnet.alive:
            return False
        ifp = self.vnet.ifaces.get(route.ifname)
        if ifp is None and mtype != rtmsg.RTM_DELETE:
            return False
        flags = RTF_GATEWAY | (RTF_HOST if route.plen == 128 else 0)
        addrs = {rtmsg.RTA_DST: rtmsg.sockaddr_in6(route.dst),
                 rtmsg.RTA_GATEWAY: rtmsg.sockaddr_in6(route.gateway,
                                                      ifp.index if ifp is not None else 0)}
        if route.plen != 128:
            addrs[rtmsg.RTA_NETMASK] = rtmsg.sockaddr_in6(MASKS6[route.plen])
        if mtype == rtmsg.RTM_DELETE:
            del addrs[rtmsg.RTA_GATEWAY]
        rmx = [0] * 14
        rmx[2] = min(route.metric, ripng.INFINITY)
        msg = rtmsg.RtMsg(mtype, flags, addrs, inits=rtmsg.RTV_HOPCOUNT, rmx=tuple(rmx))
        try:
            self.rtsock.send(msg.pack())
        except OSError as exc:
            if not (mtype == rtmsg.RTM_DELETE and exc.errno == errno.ESRCH):
                self.stats["kernelerrors"] += 1
            return False
        return True

    # -- the status view -------------------------------------------------------------------
    def status(self) -> list[str]:
        now = self.kernel.now_ns()
        lines = [f"route6d: {'supplying' if self.supplying else 'quiet'}, RIPng, "
                 f"{len(self.routes)} routes"]
        lines.append(f"{'Destination':<28}{'Gateway':<28}{'Metric':>6}  {'Netif':<10}"
                     f"{'Source':<8}{'Expire':>6}")
        for r in sorted(self.routes.values(), key=lambda r: (r.dst, r.plen)):
            expire = f"{max(0, r.expire - now) // NS_PER_S}" if r.expire else ""
            gw = f"{ntoa(r.gateway)}%{r.ifname}" if r.gateway else "-"
            lines.append(f"{ntoa(r.dst) + '/' + str(r.plen):<28}{gw:<28}{r.metric:>6}  "
                         f"{r.ifname:<10}{r.kind:<8}{expire:>6}")
        for name, text in COUNTERS:
            lines.append(f"\t{self.stats[name]} {text}")
        return lines


def _valid_prefix(prefix: int, plen: int) -> bool:
    """RFC 2080 2.4.2: a prefix length up to 128, not multicast, not link-local, no bits
    beyond the prefix length (the default route ::/0 is fine)."""
    if plen > 128 or prefix & ~MASKS6[plen] & MASKS6[128]:
        return False
    return not is_multicast(prefix) and not is_link_local(prefix) and not (
        prefix == 1 and plen == 128)


class Route6dService(DaemonService[Route6d]):
    name = "route6d"
    daemon = Route6d
