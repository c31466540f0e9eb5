"""routed: a RIP daemon (RFC 2453, RIPv1 compatible) as a service of a vnet.

One `Routed` per vnet, a state machine the kernel loop drives (no thread): a UDP
socket bound to port 520 wakes it when datagrams arrive (`receive(data, src, sport,
now)`), one kernel timer (`timer(now)`) fires at the earliest of the next regular
update, the end of the triggered-update damping, and the route timeouts. Routes go
in and out of the kernel through a routing socket (RTM_ADD/CHANGE/DELETE with
RTF_GATEWAY, RTF_HOST for a host route, and the metric as RTV_HOPCOUNT: what FreeBSD
routed's fix_kern/kern_ioctl/rtioctl in table.c send).

What follows RFC 2453 (section numbers in the code): metric = received + 1 (the
interface cost), infinity 16; a route from its own gateway always updates, from
another only if better; timeout 180 s then 120 s of garbage collection advertising
16; split horizon with poisoned reverse; triggered updates of the changed routes,
damped by a random 1-5 s; requests for the whole table or for entries.
RIPv2 is sent to each interface's broadcast address (FreeBSD routed's `no_rip_mcast`
behaviour: vimage's IPv4 has no multicast yet), RIPv1 too with `-P ripv1`; both are
received. Connected networks, static kernel routes and gateways-file entries are
advertised (redistributed).
"""

from __future__ import annotations

import errno
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from vimage.net.route import MASKS, RTF_GATEWAY, RTF_STATIC
from vimage.netinet.in_ import is_multicast
from vimage.sched import NS_PER_S
from vimage.wire import WireError, rip, rtmsg
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.netinet.in_ import InAddr
    from vimage.sched import Timer
    from vimage.vnet import Vnet

AF_ROUTE = 17
SOCK_DGRAM, SOCK_RAW, AF_INET = 2, 3, 2
SOL_SOCKET, SO_BROADCAST, SO_USELOOPBACK = 1, 6, 0x0040
RTF_HOST = 0x4

COUNTERS: tuple[tuple[str, str], ...] = (
    ("inpackets", "packets received"),
    ("outpackets", "packets sent"),
    ("requests", "requests answered"),
    ("badpackets", "malformed packets ignored"),
    ("badport", "responses not from port 520 ignored"),
    ("nonneighbour", "packets from a non-neighbour ignored"),
    ("badauth", "packets with bad or missing authentication ignored"),
    ("badentries", "entries ignored (bad address, mask or family)"),
    ("badmetric", "entries with an invalid metric ignored"),
    ("overflow", "routes refused: the table is full (max_routes)"),
    ("changes", "route changes"),
    ("triggered", "triggered updates sent"),
    ("kernelerrors", "routing socket requests that failed"),
)


@dataclass
class RipParams:
    """What routed and route6d share: -s/-q and the timer and table -P parameters."""

    supply: bool | None = None  # -s True, -q False, None: supply when forwarding
    update: float = 30.0  # regular update interval (RFC 2453 §3.8, RFC 2080 §2.3)
    timeout: float = 180.0  # a route not refreshed for this long is unreachable
    garbage: float = 120.0  # then advertised at 16 for this long before deletion
    damp_min: float = 1.0  # triggered-update damping: a random delay in [min, max]
    damp_max: float = 5.0
    max_routes: int = 1024  # learnt routes at most (a flooding neighbour's limit)


@dataclass
class Params(RipParams):
    """routed's -s/-q and -P parameters (routed(8)'s names where it has one)."""

    version: int = 2  # ripv1: send RIPv1; ripv2 (the default): send RIPv2
    passwd: bytes | None = None  # passwd=XXX: simple password, sent and required
    md5_key: bytes | None = None  # md5_passwd=XXX|KEYID
    md5_keyid: int = 0
    gateways: list[tuple[int, int, int, int]] = field(default_factory=list)  # dst plen gw m


class RipRoute:
    """One entry of the daemon's table."""

    __slots__ = ("changed", "dst", "expire", "gateway", "ifname", "installed", "kind",
                 "metric", "plen", "tag")

    def __init__(self, dst: int, plen: int, metric: int, gateway: int, ifname: str,
                 kind: str, tag: int = 0) -> None:
        self.dst, self.plen, self.metric, self.gateway = dst, plen, metric, gateway
        self.ifname = ifname  # the interface it was learnt on (split horizon)
        self.kind = kind  # "rip" learnt, "if" connected, "static" kernel, "gw" gateways
        self.tag = tag
        self.expire = 0  # ns: timeout (metric < 16) or end of garbage collection (16)
        self.changed = True
        self.installed = False  # in the kernel through our routing socket


class Routed:
    """The daemon of one vnet."""

    def __init__(self, vnet: Vnet, params: Params) -> None:
        self.vnet = vnet
        self.kernel: Kernel = vnet.kernel
        self.params = params
        self.stats: dict[str, int] = dict.fromkeys((name for name, _ in COUNTERS), 0)
        self.routes: dict[tuple[int, int], RipRoute] = {}
        self.rng = random.Random(int.from_bytes(vnet.secret[40:48], "big"))
        self.md5_seq = 0
        self.running = False
        self._timer: Timer | None = None
        self._drain_timer: Timer | None = None
        self._next_update = 0
        self._damp_until = 0  # triggered updates wait until then
        self._trigger_pending = False
        self.sock: Any = None
        self.rtsock: Any = None

    # -- life ----------------------------------------------------------------------------
    def start(self) -> None:
        vnet = self.vnet
        sock = vnet.socket(AF_INET, SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(SOL_SOCKET, SO_BROADCAST, 1)
            sock.bind(("0.0.0.0", rip.PORT))
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
        self.scan_interfaces(now)
        self._install_gateways(now)
        self.request_all()
        self._next_update = now  # the first regular update goes at once
        self._arm(now)

    def stop(self) -> None:
        """Withdraw our kernel routes (as routed does on SIGTERM) and close everything."""
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
        return bool(self.vnet.ip.forwarding)

    # -- the kernel loop's entry points ------------------------------------------------------
    def touch(self, _sock: object) -> None:
        """A socket has data: read it from the loop's next pass (not from inside input)."""
        if self._drain_timer is None and self.running:
            self._drain_timer = self.kernel.sched.call_later(0, self._drain, owner=self.vnet)

    def _drain(self) -> None:
        self._drain_timer = None
        if not self.running:
            return
        now = self.kernel.now_ns()
        while True:
            try:
                data, src, sport = self.sock._recv(rip.MAX_PACKET + 512, 0)
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
        """Age routes, then send what is due: the regular update or a triggered one."""
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
        if self._timer is not None:
            if self._timer.when == when:
                return
            self._timer.cancel()
        self._timer = self.kernel.sched.call_later(when - now, self._on_timer, owner=self.vnet)

    # -- interfaces ----------------------------------------------------------------------
    def interfaces(self) -> list[InAddr]:
        """The addresses RIP runs on: of interfaces up, not loopback."""
        out = []
        for ifp in self.vnet.ifaces.values():
            if ifp.flags & 0x1 and not ifp.flags & 0x8:
                out.extend(ifp.addrs)
        return out

    def scan_interfaces(self, now: int) -> None:
        """Connected networks and static kernel routes become our routes (redistribution);
        those gone are poisoned (RFC 2453 §3.10: an interface going down)."""
        seen: set[tuple[int, int]] = set()
        for ia in self.interfaces():
            key = (ia.net, ia.plen)
            seen.add(key)
            route = self.routes.get(key)
            if route is None or route.kind != "if" or route.metric >= rip.INFINITY:
                if route is not None and route.installed:
                    self._kernel(rtmsg.RTM_DELETE, route)
                self.routes[key] = RipRoute(ia.net, ia.plen, 1, 0, ia.ifp.name, "if")
                self._changed(now)
        for kr in self.vnet.rt.routes():
            if kr.flags & RTF_STATIC and kr.flags & RTF_GATEWAY:
                key = (kr.dst, kr.plen)
                seen.add(key)
                route = self.routes.get(key)
                if route is None or (route.kind == "rip" and not route.installed):
                    self.routes[key] = RipRoute(kr.dst, kr.plen, max(1, kr.hopcount),
                                                kr.gateway, kr.ifp.name, "static")
                    self._changed(now)
        for key, route in list(self.routes.items()):
            if route.kind in ("if", "static") and key not in seen:
                if route.metric < rip.INFINITY:
                    self._unreachable(route, now)
            elif route.kind == "rip" and route.metric < rip.INFINITY and not any(
                    ia.ifp.name == route.ifname for ia in self.interfaces()):
                self._unreachable(route, now)

    def _neighbour(self, src: int) -> InAddr | None:
        """The address of ours whose network `src` is on (None: not a neighbour)."""
        for ia in self.interfaces():
            if src & ia.mask == ia.net and src != ia.addr and src != ia.broadcast:
                return ia
        return None

    # -- input ---------------------------------------------------------------------------
    def receive(self, data: bytes, src: int, sport: int, now: int) -> None:
        """One datagram to port 520 (RFC 2453 §3.9)."""
        st = self.stats
        if src in self.vnet.ip.local:
            return  # our own broadcast
        st["inpackets"] += 1
        try:
            pkt = rip.parse(data)
        except WireError:
            st["badpackets"] += 1
            return
        if not self._authentic(pkt, data):
            st["badauth"] += 1
            return
        if pkt.command == rip.REQUEST:
            self._answer(pkt, src, sport)
            return
        if sport != rip.PORT:
            st["badport"] += 1
            return
        ia = self._neighbour(src)
        if ia is None:
            st["nonneighbour"] += 1
            return
        for entry in pkt.entries:
            self._entry(entry, pkt.version, src, ia, now)

    def _authentic(self, pkt: rip.RipPacket, data: bytes) -> bool:
        """RFC 2453 §4.1, RFC 2082: with a key configured, only packets carrying it;
        without, only packets without authentication."""
        p = self.params
        auth = pkt.auth
        if p.md5_key is not None:
            return (auth is not None and auth.type == rip.AUTH_MD5
                    and auth.keyid == p.md5_keyid and rip.md5_valid(data, auth, p.md5_key))
        if p.passwd is not None:
            return auth is not None and auth.type == rip.AUTH_SIMPLE and auth.password == p.passwd
        return auth is None

    def _entry(self, e: rip.RipEntry, version: int, src: int, ia: InAddr, now: int) -> None:
        st = self.stats
        if e.afi != rip.AF_INET:
            st["badentries"] += 1
            return
        if not 1 <= e.metric <= rip.INFINITY:
            st["badmetric"] += 1
            return
        plen = self._plen(e, version, ia)
        if plen is None or not _valid_dest(e.addr, plen):
            st["badentries"] += 1
            return
        gateway = src
        if version >= 2 and e.nexthop and e.nexthop & ia.mask == ia.net \
                and e.nexthop not in self.vnet.ip.local:
            gateway = e.nexthop  # RFC 2453 §4.4
        metric = min(e.metric + 1, rip.INFINITY)
        self._update((e.addr, plen), metric, gateway, ia.ifp.name, e.tag, now)

    def _plen(self, e: rip.RipEntry, version: int, ia: InAddr) -> int | None:
        if version >= 2 and e.mask:
            try:
                return _mask_len(e.mask)
            except ValueError:
                return None
        if version >= 2 or (e.tag == 0 and e.nexthop == 0 and e.mask == 0):
            # RIPv1 (or a v2 entry without mask): the interface's subnet if the address
            # is in its network, else the classful mask; host bits make a host route
            classful = _classful(e.addr)
            if e.addr & MASKS[classful] == ia.addr & MASKS[classful] and ia.plen > classful:
                plen = ia.plen
            else:
                plen = classful
            return plen if e.addr & ~MASKS[plen] & 0xFFFFFFFF == 0 else 32
        return None  # a RIPv1 entry with must-be-zero fields set

    def _update(self, key: tuple[int, int], metric: int, gateway: int, ifname: str, tag: int,
                now: int) -> None:
        """RFC 2453 §3.9.2's rules for one received route."""
        route = self.routes.get(key)
        timeout = now + int(self.params.timeout * NS_PER_S)
        if route is None:
            if metric >= rip.INFINITY:
                return
            if len(self.routes) >= self.params.max_routes and sum(
                    1 for r in self.routes.values() if r.kind == "rip") >= self.params.max_routes:
                self.stats["overflow"] += 1
                return
            route = RipRoute(key[0], key[1], metric, gateway, ifname, "rip", tag)
            route.expire = timeout
            self.routes[key] = route
            self._install(route)
            self._changed(now)
            return
        if route.kind != "rip":
            return  # our connected and static routes win
        if route.gateway == gateway:
            if metric < rip.INFINITY:
                route.expire = timeout
            if metric != route.metric:
                if metric >= rip.INFINITY:
                    self._unreachable(route, now)
                else:
                    was_dead = route.metric >= rip.INFINITY
                    route.metric, route.tag = metric, tag
                    if was_dead:
                        self._install(route)
                    else:
                        self._kernel(rtmsg.RTM_CHANGE, route)
                    self._changed(now)
                    route.changed = True
        elif metric < route.metric:
            dead = route.metric >= rip.INFINITY
            route.metric, route.gateway, route.ifname, route.tag = metric, gateway, ifname, tag
            route.expire = timeout
            if dead or not route.installed:
                self._install(route)
            else:
                self._kernel(rtmsg.RTM_CHANGE, route)
            self._changed(now)
            route.changed = True

    def _unreachable(self, route: RipRoute, now: int) -> None:
        """Start deleting a route: metric 16, out of the kernel, garbage timer (§3.8)."""
        route.metric = rip.INFINITY
        route.expire = now + int(self.params.garbage * NS_PER_S)
        if route.installed:
            self._kernel(rtmsg.RTM_DELETE, route)
            route.installed = False
        self._changed(now)
        route.changed = True

    def _age(self, now: int) -> None:
        for key, route in list(self.routes.items()):
            if route.expire and now >= route.expire:
                if route.metric < rip.INFINITY:
                    self._unreachable(route, now)
                else:
                    del self.routes[key]

    def _changed(self, now: int) -> None:
        self.stats["changes"] += 1
        self._trigger_pending = True

    # -- output --------------------------------------------------------------------------
    def _auth(self) -> tuple[rip.RipAuth | None, bytes]:
        p = self.params
        if p.md5_key is not None:
            self.md5_seq += 1
            return rip.RipAuth(rip.AUTH_MD5, keyid=p.md5_keyid, seq=self.md5_seq), p.md5_key
        if p.passwd is not None:
            return rip.RipAuth(rip.AUTH_SIMPLE, p.passwd), b""
        return None, b""

    def packets(self, entries: list[rip.RipEntry], command: int = rip.RESPONSE) -> list[bytes]:
        """`entries` in packets of at most 25 entries (24 after an authentication one)."""
        auth, key = self._auth()
        per = rip.MAX_ENTRIES - (auth is not None)
        version = self.params.version
        out = []
        for i in range(0, max(1, len(entries)), per):
            chunk = entries[i:i + per]
            if not chunk and command == rip.RESPONSE:
                break
            out.append(rip.build(command, version, chunk, auth, key))
            if self.params.md5_key is not None:
                auth, key = self._auth()
        return out

    def entries_for(self, ifname: str | None, changed_only: bool) -> list[rip.RipEntry]:
        """The table as sent on `ifname`: split horizon with poisoned reverse (§3.4.3),
        None (a query) gets the table as it is."""
        v1 = self.params.version == 1
        out = []
        for route in sorted(self.routes.values(), key=lambda r: (r.dst, r.plen)):
            if changed_only and not route.changed:
                continue
            if route.kind == "if" and route.ifname == ifname and route.metric < rip.INFINITY:
                continue  # the network of the interface itself: the neighbour has it
            metric = route.metric
            if ifname is not None and route.kind == "rip" and route.ifname == ifname:
                metric = rip.INFINITY
            mask = 0 if v1 else MASKS[route.plen]
            out.append(rip.RipEntry(route.dst, mask, metric, 0, 0 if v1 else route.tag))
        return out

    def broadcast(self, changed_only: bool) -> None:
        for ia in self.interfaces():
            if not ia.broadcast:
                continue
            for pkt in self.packets(self.entries_for(ia.ifp.name, changed_only)):
                self._send(pkt, ia.broadcast, rip.PORT)

    def _send_triggered(self, now: int) -> None:
        """RFC 2453 §3.10.1: send the changed routes, then hold further triggered
        updates for a random 1-5 s."""
        self._trigger_pending = False
        if self.supplying:
            self.broadcast(changed_only=True)
            self.stats["triggered"] += 1
        for route in self.routes.values():
            route.changed = False
        p = self.params
        self._damp_until = now + int(self.rng.uniform(p.damp_min, p.damp_max) * NS_PER_S)

    def request_all(self) -> None:
        """Ask every neighbour for its table (§3.9.1), as routed does on start."""
        entry = [rip.RipEntry(0, 0, rip.INFINITY, afi=rip.AF_UNSPEC)]
        for ia in self.interfaces():
            if ia.broadcast:
                for pkt in self.packets(entry, rip.REQUEST):
                    self._send(pkt, ia.broadcast, rip.PORT)

    def _answer(self, pkt: rip.RipPacket, src: int, sport: int) -> None:
        """A request: the whole table, or the entries asked for (§3.9.1)."""
        if not self.supplying and sport == rip.PORT:
            return  # -q: a quiet routed answers queries (rtquery) but not routers
        ia = self._neighbour(src)
        if sport == rip.PORT and ia is None:
            self.stats["nonneighbour"] += 1
            return
        self.stats["requests"] += 1
        ents = pkt.entries
        ifname = ia.ifp.name if ia is not None and sport == rip.PORT else None
        if len(ents) == 1 and ents[0].afi == rip.AF_UNSPEC and ents[0].metric == rip.INFINITY:
            answer = self.entries_for(ifname, changed_only=False)
        else:
            answer = [self._lookup(e, ifname) for e in ents]
        for out in self.packets(answer):
            self._send(out, src, sport)

    def _lookup(self, e: rip.RipEntry, ifname: str | None) -> rip.RipEntry:
        """One entry of a specific request: a host address (no mask, or /32) gets the
        longest match, as rtquery -r wants; a prefix its exact route; 16 if none."""
        try:
            plen = _mask_len(e.mask) if e.mask and e.mask != 0xFFFFFFFF else None
        except ValueError:
            return e._replace(metric=rip.INFINITY)
        best = None
        for r in self.routes.values():
            if plen is not None:
                if (r.dst, r.plen) == (e.addr, plen):
                    best = r
            elif e.addr & MASKS[r.plen] == r.dst and (best is None or r.plen > best.plen):
                best = r
        if best is None:
            return e._replace(metric=rip.INFINITY)
        metric = best.metric
        if ifname is not None and best.kind == "rip" and best.ifname == ifname:
            metric = rip.INFINITY
        mask = 0 if self.params.version == 1 else MASKS[best.plen]
        return rip.RipEntry(best.dst, mask, metric, 0, best.tag)

    def _send(self, pkt: bytes, dst: int, port: int) -> None:
        try:
            self.sock.sendto(pkt, (ntoa(dst), port))
            self.stats["outpackets"] += 1
        except OSError:
            pass  # no route, interface down: routed counts and goes on

    # -- the kernel table ----------------------------------------------------------------------
    def _install(self, route: RipRoute) -> None:
        """Add the route unless the kernel has one for the prefix (an interface's or an
        operator's: it wins, and an add would join it as another multipath path)."""
        if self.vnet.rt.get(route.dst, route.plen) is not None:
            route.installed = False
            return
        route.installed = self._kernel(rtmsg.RTM_ADD, route)

    def _kernel(self, mtype: int, route: RipRoute) -> bool:
        if self.rtsock is None or not self.vnet.alive:
            return False
        flags = RTF_GATEWAY | (RTF_HOST if route.plen == 32 else 0)  # table.c rtioctl
        addrs = {rtmsg.RTA_DST: rtmsg.sockaddr_in(route.dst),
                 rtmsg.RTA_GATEWAY: rtmsg.sockaddr_in(route.gateway)}
        if route.plen != 32:
            addrs[rtmsg.RTA_NETMASK] = rtmsg.sockaddr_in(MASKS[route.plen])
        rmx = [0] * 14
        rmx[2] = min(route.metric, rip.INFINITY)
        msg = rtmsg.RtMsg(mtype, flags, addrs, inits=rtmsg.RTV_HOPCOUNT, rmx=tuple(rmx))
        try:
            self.rtsock.send(msg.pack())
        except OSError as exc:
            if not (mtype == rtmsg.RTM_DELETE and exc.errno == errno.ESRCH):
                self.stats["kernelerrors"] += 1
            return False
        return True

    def _install_gateways(self, now: int) -> None:
        """Gateways-file entries: kernel routes (static) that routed advertises."""
        for dst, plen, gw, metric in self.params.gateways:
            route = RipRoute(dst, plen, metric, gw, "", "gw")
            self.routes[(dst, plen)] = route
            self._install(route)
            self._changed(now)

    # -- the status view -------------------------------------------------------------------
    def status(self) -> list[str]:
        now = self.kernel.now_ns()
        lines = [f"routed: {'supplying' if self.supplying else 'quiet'}, RIPv"
                 f"{self.params.version}, {len(self.routes)} routes"]
        lines.append(f"{'Destination':<20}{'Gateway':<16}{'Metric':>6}  {'Netif':<8}"
                     f"{'Source':<8}{'Expire':>6}")
        for r in sorted(self.routes.values(), key=lambda r: (r.dst, r.plen)):
            expire = f"{max(0, r.expire - now) // NS_PER_S}" if r.expire else ""
            gw = ntoa(r.gateway) if r.gateway else "-"
            lines.append(f"{ntoa(r.dst) + '/' + str(r.plen):<20}{gw:<16}{r.metric:>6}  "
                         f"{r.ifname:<8}{r.kind:<8}{expire:>6}")
        for name, text in COUNTERS:
            lines.append(f"\t{self.stats[name]} {text}")
        return lines


def _mask_len(mask: int) -> int:
    plen = 32 - ((~mask & 0xFFFFFFFF).bit_length())
    if MASKS[plen] != mask:
        raise ValueError("non-contiguous mask")
    return plen


def _classful(addr: int) -> int:
    top = addr >> 24
    return 8 if top < 128 else 16 if top < 192 else 24


def _valid_dest(addr: int, plen: int) -> bool:
    """A destination routed accepts: not loopback, multicast, class E or 0/8 (except the
    default route), no host bits beyond the mask."""
    if addr & ~MASKS[plen] & 0xFFFFFFFF:
        return False
    if addr == 0:
        return plen == 0
    top = addr >> 24
    return top not in (0, 127) and not is_multicast(addr) and top < 240


class _Daemon(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


D = TypeVar("D", bound=_Daemon)


class DaemonService(Generic[D]):
    """A kernel's daemons of one kind, one per vnet at most; a vnet's dies with it.
    A subclass names the kind (`name`) and how one is made (`daemon`)."""

    name = ""
    daemon: Callable[[Vnet, Any], D]

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.daemons: dict[Vnet, D] = {}

    def start(self, vnet: Vnet, params: Any) -> D:
        if vnet in self.daemons:
            raise OSError(errno.EADDRINUSE, f"{self.name} is already running")
        daemon = type(self).daemon(vnet, params)
        daemon.start()
        self.daemons[vnet] = daemon
        return daemon

    def get(self, vnet: Vnet) -> D | None:
        return self.daemons.get(vnet)

    def stop(self, vnet: Vnet) -> bool:
        daemon = self.daemons.pop(vnet, None)
        if daemon is None:
            return False
        daemon.stop()
        return True

    def vnet_detach(self, vnet: Vnet) -> None:
        self.stop(vnet)


class RoutedService(DaemonService[Routed]):
    name = "routed"
    daemon = Routed


def parse_gateways(text: str) -> list[tuple[int, int, int, int]]:
    """/etc/gateways lines (routed(8)): `net DEST[/LEN] gateway GW metric M [passive|
    active|external]` or `host ...`; `#` comments. ValueError names a bad line."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        try:
            kind, dest, kw1, gw, kw2, metric = words[:6]
            if kind not in ("net", "host") or kw1 != "gateway" or kw2 != "metric":
                raise ValueError
            if kind == "host" and "/" not in dest:
                dest += "/32"
            net = ipaddress.IPv4Network(dest, strict=False) if "/" in dest else \
                ipaddress.IPv4Network((dest, _classful(int(ipaddress.IPv4Address(dest)))))
            m = int(metric)
            if not 1 <= m < rip.INFINITY or words[6:7] not in ([], ["passive"], ["active"],
                                                                 ["external"]):
                raise ValueError
            if words[6:7] == ["external"]:
                continue
            out.append((int(net.network_address), net.prefixlen,
                        int(ipaddress.IPv4Address(gw)), m))
        except ValueError:
            raise ValueError(f"bad gateways line {n}: {raw.strip()}") from None
    return out
