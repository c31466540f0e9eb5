"""Router and prefix lists, router advertisement processing, SLAAC and redirects
(RFC 4861 6.3.4, 6.3.7, 8; RFC 4862 5.5; RFC 4191 2.2; FreeBSD nd6_rtr.c, icmp6.c
icmp6_redirect_input/output).

A host (`net.inet6.ip6.forwarding` 0) whose interface has ACCEPT_RTADV (`ifconfig IF
inet6 accept_rtadv`, or `net.inet6.ip6.accept_rtadv` for new interfaces) solicits
routers when the interface comes up and learns from their advertisements: default
routers with their lifetimes and preferences (the best one is the `::/0` route),
on-link prefixes (a prefix route for their valid lifetime), addresses formed from
prefixes with the autonomous flag (prefix + EUI-64, DAD, deprecated after the
preferred lifetime, removed after the valid one, the 2-hour rule), the link MTU,
hop limit, reachable time and retransmission timer of the link.

Everything is kept by timers (no periodic scan): a router's lifetime, a prefix's valid
lifetime, an address's next lifetime event, a solicitation's next retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vimage.net.route import MASKS6, RTF_DYNAMIC, RTF_GATEWAY, Route
from vimage.netinet6 import in6
from vimage.sched import NS_PER_S
from vimage.sysctl import Oid, oids
from vimage.wire import WireError
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.sched import Timer
    from vimage.vnet import Vnet

INFINITE = 0xFFFFFFFF  # a lifetime that never ends (RFC 4861 4.6.2)
TWO_HOURS = 7200  # RFC 4862 5.5.3 e)
MAX_RTR_SOLICITATION_DELAY_NS = NS_PER_S  # RFC 4861 10: host constants
RTR_SOLICITATION_INTERVAL_NS = 4 * NS_PER_S
MAX_RTR_SOLICITATIONS = 3
REDIRECT_TIMEOUT_S = 600  # icmp6_redirtimeout: a redirect's host route lives 10 minutes
MAX_ROUTERS = 64  # bounds against a flood of bogus advertisements (vimage)
MAX_PREFIXES = 64

# RFC 4191 2.2 router preference (the Prf bits of an RA's flags byte)
PREF_HIGH, PREF_MEDIUM, PREF_LOW = 1, 0, 3
PREF_RANK = (1, 2, 1, 0)  # by the two bits: medium, high, (reserved: medium), low
PREF_NAMES = ("medium", "high", "medium", "low")
NDRF_ROUTER_FLAGS = ((wicmp6.RA_MANAGED, "M"), (wicmp6.RA_OTHER, "O"))

SYSCTLS: tuple[Oid, ...] = oids("net.inet6.ip6", "nd6", (
    ("accept_rtadv", "Default value of per-interface flag for accepting ICMPv6 RA messages",
     0, 1),
    ("redirect", "Send ICMPv6 redirects", 0, 1),
)) + oids("net.inet6.icmp6", "nd6", (
    ("rediraccept", "Accept ICMPv6 redirects", 0, 1),
    ("redirtimeout", "Delay in seconds before expiring a redirect route", 0, 2**31 - 1),
))


class DefRouter:
    """One entry of the default router list (struct nd_defrouter)."""

    __slots__ = ("addr", "expire_ns", "flags", "ifp", "lifetime", "timer")

    def __init__(self, addr: int, ifp: Ifnet) -> None:
        self.addr = addr
        self.ifp = ifp
        self.flags = 0  # the RA's flags byte (M, O, Prf)
        self.lifetime = 0  # seconds, as advertised
        self.expire_ns = 0
        self.timer: Timer | None = None

    @property
    def pref(self) -> int:
        return (self.flags >> 3) & 3


class NdPrefix:
    """One entry of the prefix list (struct nd_prefix)."""

    __slots__ = ("advrtrs", "expire_ns", "flags", "ifp", "plen", "pltime", "prefix", "route",
                 "timer", "vltime")

    def __init__(self, prefix: int, plen: int, ifp: Ifnet) -> None:
        self.prefix = prefix
        self.plen = plen
        self.ifp = ifp
        self.flags = 0  # L and A as last advertised
        self.vltime = 0
        self.pltime = 0
        self.expire_ns = 0  # 0: never
        self.timer: Timer | None = None
        self.route: Route | None = None  # the on-link route we installed
        self.advrtrs: set[int] = set()  # routers that advertised it


class NdIfInfo:
    """What the advertisements taught about one link (struct nd_ifinfo's RA part)."""

    __slots__ = ("basereachable", "chlim", "linkmtu", "reachable", "retrans", "rs_count",
                 "rs_timer")

    def __init__(self) -> None:
        self.linkmtu = 0  # 0: the interface's MTU
        self.chlim = 0  # 0: net.inet6.ip6.hlim
        self.basereachable = 0  # ms, 0: net.inet6.icmp6.nd6_basereachable
        self.reachable = 0  # ms, the last computed reachable time
        self.retrans = 0  # ms, 0: net.inet6.icmp6.nd6_retrans
        self.rs_count = 0
        self.rs_timer: Timer | None = None


class NdRouterState:
    """A vnet's router list, prefix list, per-link RA data and installed default route."""

    __slots__ = ("daemon", "ifinfo", "installed", "prefixes", "redirects", "routers", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.routers: list[DefRouter] = []  # in arrival order (defrouter list)
        self.prefixes: list[NdPrefix] = []
        self.ifinfo: dict[int, NdIfInfo] = {}  # by interface index
        # fib -> the ::/0 route made from the router list in that fib (defrouter_select_fib)
        self.installed: dict[int, Route] = {}
        self.daemon: Any = None  # a router advertisement daemon running here (apps.rtadvd)
        # (fib, destination) -> its host route's expiry
        self.redirects: dict[tuple[int, int], Timer] = {}

    # -- helpers --------------------------------------------------------------------------
    def info(self, ifp: Ifnet) -> NdIfInfo:
        info = self.ifinfo.get(ifp.index)
        if info is None:
            info = self.ifinfo[ifp.index] = NdIfInfo()
        return info

    def _later(self, delay_ns: int, fn: Any, *args: Any) -> Timer:
        return self.vnet.kernel.sched.call_later(delay_ns, fn, *args, owner=self.vnet)

    def _now(self) -> int:
        return self.vnet.kernel.sched.now_ns()

    def _expiry(self, seconds: int) -> int:
        return 0 if seconds == INFINITE else self._now() + seconds * NS_PER_S

    def accepts(self, ifp: Ifnet) -> bool:
        """RAs are acted on by hosts on links with ACCEPT_RTADV (nd6_ra_input)."""
        data = in6.addrs_data(ifp)
        return (data is not None and bool(data.nd_flags & in6.ND6_IFF_ACCEPT_RTADV)
                and not self.vnet.ip6.forwarding)

    # -- router solicitations (RFC 4861 6.3.7) ---------------------------------------------
    def start_solicit(self, ifp: Ifnet) -> None:
        """The interface came up (or began accepting RAs): up to MAX_RTR_SOLICITATIONS
        solicitations, the first after a random delay, until an RA arrives."""
        if not self.accepts(ifp) or ifp.mac is None or not ifp.up:
            return
        info = self.info(ifp)
        if info.rs_timer is not None:
            info.rs_timer.cancel()
        info.rs_count = 0
        delay = self.vnet.rng.randrange(MAX_RTR_SOLICITATION_DELAY_NS)
        info.rs_timer = self._later(delay, self._solicit, ifp)

    def _solicit(self, ifp: Ifnet) -> None:
        info = self.info(ifp)
        info.rs_timer = None
        if not ifp.up or self.vnet.ifaces.get(ifp.name) is not ifp or not self.accepts(ifp):
            return
        src = 0
        for ia in in6.addrs(ifp):
            if ia.ready and wip6.is_link_local(ia.addr):
                src = ia.addr
                break
        # a source link-layer option only with a source address (RFC 4861 4.1)
        opts = wicmp6.opt_lladdr(wicmp6.ND_OPT_SOURCE_LINKADDR, ifp.mac) if src else b""
        dst = wip6.ALL_ROUTERS
        msg = wicmp6.build_rs(opts, src, dst)
        self.vnet.icmp6.send_link(ifp, wip6.multicast_mac(dst), src, dst, msg)
        info.rs_count += 1
        if info.rs_count < MAX_RTR_SOLICITATIONS:
            info.rs_timer = self._later(RTR_SOLICITATION_INTERVAL_NS, self._solicit, ifp)

    # -- router advertisements (RFC 4861 6.3.4) -----------------------------------------------
    def ra_input(self, ifp: Ifnet, pkt: bytes, src: int, msg: wicmp6.Icmp6Repr) -> None:
        """nd6_ra_input for a validated RA (hop limit 255, link-local source, code 0)."""
        st = self.vnet.icmp6.stats
        body = msg.payload
        if len(body) < 8:
            st.badra += 1
            return
        try:
            options = wicmp6.parse_options(body[8:])
            prefixes = [wicmp6.parse_prefix(o) for k, o in options
                        if k == wicmp6.ND_OPT_PREFIX_INFORMATION]
        except WireError:
            st.nd_badopt += 1
            return
        if not self.accepts(ifp):
            return
        info = self.info(ifp)
        if info.rs_timer is not None:  # an answer: stop soliciting
            info.rs_timer.cancel()
            info.rs_timer = None
        chlim, flags, lifetime = msg.rest >> 24, (msg.rest >> 16) & 0xFF, msg.rest & 0xFFFF
        reachable = int.from_bytes(body[0:4], "big")
        retrans = int.from_bytes(body[4:8], "big")
        if chlim:
            info.chlim = chlim
        if reachable and reachable != info.basereachable and reachable <= 3_600_000:
            info.basereachable = reachable
            info.reachable = reachable // 2 + self.vnet.rng.randrange(reachable)
        if retrans:
            info.retrans = retrans
        slla = wicmp6.find_lladdr(options, wicmp6.ND_OPT_SOURCE_LINKADDR)
        if slla is not None:
            nd6 = self.vnet.nd6
            nd6.cache_lladdr(ifp, src, slla)
            entry = nd6.lookup(ifp, src)
            if entry is not None:
                entry.isrouter = True
        for kind, opt in options:
            if kind == wicmp6.ND_OPT_MTU and len(opt) == 8:
                self._mtu_option(ifp, int.from_bytes(opt[4:8], "big"))
        self._defrouter_update(ifp, src, flags, lifetime)
        for pi in prefixes:
            self._prefix_option(ifp, src, pi)

    def _mtu_option(self, ifp: Ifnet, mtu: int) -> None:
        """RFC 4861 6.3.4: an MTU within [1280, the link's maximum] becomes the link MTU."""
        if wip6.MIN_MTU <= mtu <= ifp.mtu:
            self.info(ifp).linkmtu = mtu

    def link_mtu(self, ifp: Ifnet) -> int:
        info = self.ifinfo.get(ifp.index)
        return info.linkmtu if info is not None and info.linkmtu else ifp.mtu

    # -- the default router list -----------------------------------------------------------
    def find_router(self, addr: int, ifp: Ifnet) -> DefRouter | None:
        for dr in self.routers:
            if dr.addr == addr and dr.ifp is ifp:
                return dr
        return None

    def _defrouter_update(self, ifp: Ifnet, src: int, flags: int, lifetime: int) -> None:
        dr = self.find_router(src, ifp)
        if not lifetime:
            if dr is not None:
                self.remove_router(dr)
            return
        if dr is None:
            if len(self.routers) >= MAX_ROUTERS:
                return
            dr = DefRouter(src, ifp)
            self.routers.append(dr)
        dr.flags = flags
        dr.lifetime = lifetime
        dr.expire_ns = self._now() + lifetime * NS_PER_S
        if dr.timer is not None:
            dr.timer.cancel()
        dr.timer = self._later(lifetime * NS_PER_S, self.remove_router, dr)
        self.select_router()

    def remove_router(self, dr: DefRouter) -> None:
        """defrtrlist_del: the router's lifetime ended (or it said 0)."""
        if dr.timer is not None:
            dr.timer.cancel()
            dr.timer = None
        if dr in self.routers:
            self.routers.remove(dr)
        for pr in self.prefixes:
            pr.advrtrs.discard(dr.addr)
        self.select_router()

    def select_router(self) -> None:
        """defrouter_select_fib for every fib with a router or a route of ours: each fib
        gets the best of the routers learnt on its interfaces (`ifconfig IF fib N`)."""
        for fib in sorted({dr.ifp.fib for dr in self.routers} | set(self.installed)):
            self._select_fib(fib)

    def _select_fib(self, fib: int) -> None:
        """The best router of `fib` (RFC 4191 preference, then a router known reachable,
        then the first learnt) is its `::/0` route, unless a default route not made from
        RAs is there."""
        best = None
        best_key: tuple[int, int] = (-1, -1)
        nd6 = self.vnet.nd6
        for dr in self.routers:
            if dr.ifp.fib != fib:
                continue
            entry = nd6.lookup(dr.ifp, dr.addr)
            key = (PREF_RANK[dr.pref], int(entry is not None and entry.mac is not None))
            if key > best_key:
                best, best_key = dr, key
        rt6 = self.vnet.route.table6(fib)
        current = rt6.get(0, 0)
        installed = self.installed.pop(fib, None)
        if current is not None and current is not installed:
            return  # an administrator's default route wins
        if best is None:
            if current is not None:
                rt6.remove_path(current)
            return
        if current is not None:
            if current.gateway == best.addr and current.ifp is best.ifp:
                self.installed[fib] = current
                return
            rt6.remove_path(current)
        self.installed[fib] = rt6.add(Route(0, 0, best.ifp, RTF_GATEWAY, best.addr,
                                            width=128))

    # -- prefixes and SLAAC ---------------------------------------------------------------
    def _prefix_option(self, ifp: Ifnet, src: int, pi: wicmp6.PrefixInfo) -> None:
        """RFC 4861 6.3.4 (on-link) and RFC 4862 5.5.3 (autonomous) for one option."""
        if pi.plen > 128 or wip6.is_link_local(pi.prefix) or wip6.is_multicast(pi.prefix):
            return  # 5.5.3 b), and nonsense
        if pi.preferred > pi.valid:
            return  # 5.5.3 c)
        prefix = pi.prefix & MASKS6[pi.plen]
        if pi.flags & wicmp6.PREFIX_ONLINK:
            self._onlink_update(ifp, src, prefix, pi)
        if pi.flags & wicmp6.PREFIX_AUTO and pi.plen == 64:  # 5.5.3 d): a 64-bit id
            self._autoconf(ifp, prefix, pi)

    def find_prefix(self, prefix: int, plen: int, ifp: Ifnet) -> NdPrefix | None:
        for pr in self.prefixes:
            if pr.prefix == prefix and pr.plen == plen and pr.ifp is ifp:
                return pr
        return None

    def _onlink_update(self, ifp: Ifnet, src: int, prefix: int,
                       pi: wicmp6.PrefixInfo) -> None:
        pr = self.find_prefix(prefix, pi.plen, ifp)
        if not pi.valid:
            if pr is not None:
                self.remove_prefix(pr)
            return
        if pr is None:
            if len(self.prefixes) >= MAX_PREFIXES:
                return
            pr = NdPrefix(prefix, pi.plen, ifp)
            self.prefixes.append(pr)
        pr.flags = pi.flags
        pr.vltime, pr.pltime = pi.valid, pi.preferred
        pr.advrtrs.add(src)
        pr.expire_ns = self._expiry(pi.valid)
        if pr.timer is not None:
            pr.timer.cancel()
            pr.timer = None
        if pi.valid != INFINITE:
            pr.timer = self._later(pi.valid * NS_PER_S, self.remove_prefix, pr)
        rt6 = self.vnet.route.table6(ifp.fib)  # the interface's fib (nd6_prefix_onlink)
        if pr.route is None and rt6.get(prefix, pi.plen) is None:
            pr.route = rt6.add(Route(prefix, pi.plen, ifp, 0, width=128))

    def remove_prefix(self, pr: NdPrefix) -> None:
        """The prefix's valid lifetime ended: its on-link route goes (prelist_remove)."""
        if pr.timer is not None:
            pr.timer.cancel()
            pr.timer = None
        if pr in self.prefixes:
            self.prefixes.remove(pr)
        if pr.route is not None:
            self.vnet.route.table6(pr.route.fib).remove_path(pr.route)
            pr.route = None

    def _autoconf(self, ifp: Ifnet, prefix: int, pi: wicmp6.PrefixInfo) -> None:
        ia = None
        for cand in in6.addrs(ifp):
            if (cand.flags & in6.IN6_IFF_AUTOCONF and cand.plen == pi.plen
                    and cand.addr & MASKS6[pi.plen] == prefix):
                ia = cand
                break
        now = self._now()
        if ia is None:
            if not pi.valid or ifp.mac is None:
                return  # 5.5.3 d): a new address needs a valid lifetime
            addr = prefix | wip6.eui64(ifp.mac)
            if self.vnet.ip6.local.get(addr) is not None:
                return
            ia = in6.in6_add_addr(ifp, addr, pi.plen, in6.IN6_IFF_AUTOCONF)
            ia.vexpire_ns = self._expiry(pi.valid)
        else:  # 5.5.3 e): the two-hour rule guards the valid lifetime
            remaining = (INFINITE if not ia.vexpire_ns
                         else max(0, (ia.vexpire_ns - now) // NS_PER_S))
            if pi.valid > TWO_HOURS or pi.valid > remaining:
                ia.vexpire_ns = self._expiry(pi.valid)
            elif remaining > TWO_HOURS:
                ia.vexpire_ns = now + TWO_HOURS * NS_PER_S
        ia.pexpire_ns = self._expiry(pi.preferred)
        if pi.preferred:
            ia.flags &= ~in6.IN6_IFF_DEPRECATED
        else:
            ia.flags |= in6.IN6_IFF_DEPRECATED
        self._arm_lifetime(ia)

    def _arm_lifetime(self, ia: in6.In6Addr) -> None:
        """One timer per address, for its next lifetime event."""
        if ia.lt_timer is not None:
            ia.lt_timer.cancel()
            ia.lt_timer = None
        now = self._now()
        events = [t for t in (ia.vexpire_ns, ia.pexpire_ns
                              if not ia.flags & in6.IN6_IFF_DEPRECATED else 0) if t]
        if events:
            ia.lt_timer = self._later(max(0, min(events) - now), self._lifetime, ia)

    def _lifetime(self, ia: in6.In6Addr) -> None:
        ia.lt_timer = None
        if ia not in in6.addrs(ia.ifp):
            return
        now = self._now()
        if ia.vexpire_ns and ia.vexpire_ns <= now:
            in6.in6_remove(ia)  # invalid: gone (RFC 4862 5.5.4)
            return
        if ia.pexpire_ns and ia.pexpire_ns <= now:
            ia.flags |= in6.IN6_IFF_DEPRECATED
        self._arm_lifetime(ia)

    # -- redirects (RFC 4861 8) --------------------------------------------------------------
    def redirect_input(self, ifp: Ifnet, pkt: bytes, src: int, msg: wicmp6.Icmp6Repr) -> None:
        """icmp6_redirect_input: validated (8.1), from our first hop for the destination,
        installs a host route (through the target, or on-link if target is the
        destination) and learns the target's link-layer address."""
        vnet = self.vnet
        st = vnet.icmp6.stats
        body = msg.payload
        if len(body) < 32:
            st.badredirect += 1
            return
        target = int.from_bytes(body[0:16], "big")
        dest = int.from_bytes(body[16:32], "big")
        if wip6.is_multicast(dest) or not (wip6.is_link_local(target) or target == dest):
            st.badredirect += 1
            return
        try:
            options = wicmp6.parse_options(body[32:])
        except WireError:
            st.nd_badopt += 1
            return
        if vnet.ip6.forwarding or not vnet.nd6.rediraccept:
            return
        rt6 = vnet.route.table6(ifp.fib)  # the fib the redirect came in on (M_GETFIB)
        route = rt6.lookup(dest)
        if (route is None or not route.flags & RTF_GATEWAY or route.gateway != src
                or route.ifp is not ifp):
            st.badredirect += 1  # not from the current first hop (8.1)
            return
        tlla = wicmp6.find_lladdr(options, wicmp6.ND_OPT_TARGET_LINKADDR)
        onlink = target == dest
        if tlla is not None:
            vnet.nd6.cache_lladdr(ifp, target, tlla)
            entry = vnet.nd6.lookup(ifp, target)
            if entry is not None and not onlink:
                entry.isrouter = True
        old = rt6.get(dest, 128)
        if old is not None:
            if not old.flags & RTF_DYNAMIC:
                return  # never override a static host route
            rt6.remove_path(old)
        expire = (self._now() + vnet.nd6.redirtimeout * NS_PER_S
                  if vnet.nd6.redirtimeout else 0)
        flags = RTF_DYNAMIC | (0 if onlink else RTF_GATEWAY)
        route = rt6.add(Route(dest, 128, ifp, flags, 0 if onlink else target, expire=expire,
                              width=128))
        timer = self.redirects.pop((ifp.fib, dest), None)
        if timer is not None:
            timer.cancel()
        if expire:
            self.redirects[(ifp.fib, dest)] = self._later(expire - self._now(),
                                                          self._redirect_expired, route)

    def _redirect_expired(self, route: Route) -> None:
        self.redirects.pop((route.fib, route.dst), None)
        self.vnet.route.table6(route.fib).remove_path(route)

    def redirect_output(self, ifp: Ifnet, pkt: bytes, src: int, dst: int,
                        route: Route) -> None:
        """icmp6_redirect_output: the packet leaves by the link it came on, from a
        neighbour on that link: tell it the better first hop (the route's gateway, or
        the destination itself when it is on-link)."""
        vnet = self.vnet
        if not vnet.nd6.redirect or not self._is_neighbour(ifp, src):
            return
        onlink = not route.flags & RTF_GATEWAY
        target = dst if onlink else route.gateway
        if not onlink and not wip6.is_link_local(target):
            return  # RFC 4861 8.2: the target of a router must be link-local
        rsrc = 0
        for ia in in6.addrs(ifp):
            if ia.ready and wip6.is_link_local(ia.addr):
                rsrc = ia.addr
                break
        if not rsrc or not vnet.icmp6.rate_ok():
            return
        opts = b""
        entry = vnet.nd6.lookup(ifp, target)
        if entry is not None and entry.mac is not None:
            opts = wicmp6.opt_lladdr(wicmp6.ND_OPT_TARGET_LINKADDR, entry.mac)
        room = wip6.MIN_MTU - wip6.HEADER_LEN - 40 - len(opts) - 8
        opts += wicmp6.opt_redirected(pkt[:room])
        msg = wicmp6.build_redirect(target, dst, opts, rsrc, src)
        vnet.ip6.stats.redirectsent += 1
        vnet.icmp6.stats.outhist[wicmp6.REDIRECT] += 1
        vnet.icmp6.stats.oredirect += 1  # icmp6_redirect_output: icmp6_errcount()
        try:
            vnet.ip6.output(wip6.NXT_ICMPV6, rsrc, src, msg, hlim=255, ifp=ifp)
        except OSError:
            return

    def _is_neighbour(self, ifp: Ifnet, addr: int) -> bool:
        """nd6_is_addr_neighbor: on a prefix of the link, or link-local."""
        if wip6.is_link_local(addr):
            return True
        route = self.vnet.route.table6(ifp.fib).lookup(addr)
        return route is not None and route.ifp is ifp and not route.flags & RTF_GATEWAY

    # -- teardown -------------------------------------------------------------------------
    def purge_ifp(self, ifp: Ifnet) -> None:
        for dr in [d for d in self.routers if d.ifp is ifp]:
            self.remove_router(dr)
        for pr in [p for p in self.prefixes if p.ifp is ifp]:
            self.remove_prefix(pr)
        info = self.ifinfo.pop(ifp.index, None)
        if info is not None and info.rs_timer is not None:
            info.rs_timer.cancel()

    def clear(self) -> None:
        if self.daemon is not None:
            self.daemon.stop(final=False)
        for ifp in list(self.vnet.ifaces.values()):
            self.purge_ifp(ifp)
        for info in self.ifinfo.values():
            if info.rs_timer is not None:
                info.rs_timer.cancel()
        self.ifinfo.clear()
        for timer in self.redirects.values():
            timer.cancel()
        self.redirects.clear()
        self.routers.clear()
        self.prefixes.clear()
        self.installed.clear()
