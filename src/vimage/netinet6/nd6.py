"""Neighbour discovery (RFC 4861) and duplicate address detection (RFC 4862 5.4)
(FreeBSD nd6.c, nd6_nbr.c).

The neighbour cache of each link lives in its interface's IPv6 data
(`in6.ifdata(ifp).nd`), keyed by address. An entry moves through the RFC's states:
INCOMPLETE (multicast NS every retrans time, packets held), REACHABLE (for the
reachable time), STALE (kept until traffic or nd6_gctimer), DELAY (nd6_delay seconds
for an upper layer to confirm) and PROBE (unicast NS every retrans time, nd6_umaxtries
of them). The timers are sysctls under net.inet6.icmp6 (as FreeBSD names them), with
the per-interface base reachable and retrans times of FreeBSD's `ndp -i` as
vimage-wide nd6_basereachable / nd6_retrans (ms).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vimage.net import offload
from vimage.netinet6 import in6, nd6_rtr
from vimage.sched import NS_PER_S
from vimage.sysctl import Oid, oids
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6
from vimage.wire.ethernet import ETHERTYPE_IPV6

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.sched import Timer
    from vimage.vnet import Vnet

ETH_IP6 = ETHERTYPE_IPV6.to_bytes(2, "big")

# ND6_LLINFO_* (nd6.h), as `ndp -a` prints them in its S column
INCOMPLETE = 0
REACHABLE = 1
STALE = 2
DELAY = 3
PROBE = 4
STATE_LETTERS = ("I", "R", "S", "D", "P")
STATE_NAMES = ("INCOMPLETE", "REACHABLE", "STALE", "DELAY", "PROBE")

NS_PER_MS = 1_000_000

SYSCTLS: tuple[Oid, ...] = oids("net.inet6.icmp6", "nd6", (
    ("nd6_delay", "Delay before the first NUD probe, in seconds", 1, 3600),
    ("nd6_umaxtries", "Maximum unicast NS probes", 1, 100),
    ("nd6_mmaxtries", "Maximum multicast NS probes", 1, 100),
    ("nd6_maxqueuelen", "Packets held per unresolved neighbour", 1, 10000),
    ("nd6_gctimer", "Seconds a STALE entry is kept", 1, 2**31 - 1),
    ("nd6_basereachable", "Base reachable time in ms (vimage: ndp -i's per link)",
     1000, 3_600_000),
    ("nd6_retrans", "Retransmission time of NS in ms (vimage: ndp -i's per link)",
     100, 3_600_000),
    ("nd6_maxentries", "Maximum neighbour entries per interface (vimage)", 1, 2**20),
)) + oids("net.inet6.ip6", "nd6", (
    ("dad_count", "Number of DAD probes to send (0 turns DAD off)", 0, 15),
))


class NdEntry:
    """One neighbour (struct llentry with its nd6 timer). `hdr` is the Ethernet header
    that reaches it (destination, our source, IPv6 type), built whenever its link
    address is learnt or changes, as FreeBSD's lle->r_linkdata: None while unresolved
    and once the entry has left the cache, so a route's next-hop cache (Route.nh)
    holding the entry sees at once that it is stale. The forwarding fast path uses it
    only while the entry is REACHABLE (the other states need nd6_resolve's steps)."""

    __slots__ = ("addr", "asked", "expire_ns", "hdr", "hold", "ifp", "isrouter", "mac",
                 "state", "static", "timer")

    def __init__(self, addr: int, ifp: Ifnet, state: int) -> None:
        self.addr = addr
        self.ifp = ifp
        self.state = state
        self.mac: bytes | None = None
        self.hdr: bytes | None = None
        self.hold: list[bytes] | None = None
        self.asked = 0
        self.isrouter = False
        self.static = False
        self.timer: Timer | None = None
        self.expire_ns = 0


class Nd6State:
    """A vnet's neighbour discovery: its tunables and the timers of every link's cache."""

    __slots__ = ("accept_rtadv", "dad_count", "nd6_basereachable", "nd6_delay", "nd6_gctimer",
                 "nd6_maxentries", "nd6_maxqueuelen", "nd6_mmaxtries", "nd6_retrans",
                 "nd6_umaxtries", "rediraccept", "redirect", "redirtimeout", "rtr_state",
                 "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.nd6_delay = 5
        self.nd6_umaxtries = 3
        self.nd6_mmaxtries = 3
        self.nd6_maxqueuelen = 16
        self.nd6_gctimer = 86400
        self.nd6_basereachable = 30000
        self.nd6_retrans = 1000
        self.nd6_maxentries = 4096
        self.dad_count = 1
        self.accept_rtadv = 0  # net.inet6.ip6.accept_rtadv: ACCEPT_RTADV on new links
        self.redirect = 1  # net.inet6.ip6.redirect: send redirects when forwarding
        self.rediraccept = 1  # net.inet6.icmp6.rediraccept
        self.redirtimeout = nd6_rtr.REDIRECT_TIMEOUT_S
        self.rtr_state: nd6_rtr.NdRouterState | None = None  # made on first use

    @property
    def rtr(self) -> nd6_rtr.NdRouterState:
        """Routers, prefixes, RA data (nd6_rtr), made when first needed."""
        state = self.rtr_state
        if state is None:
            state = self.rtr_state = nd6_rtr.NdRouterState(self.vnet)
        return state

    # -- timers --------------------------------------------------------------------------
    def _arm(self, entry: NdEntry, delay_ns: int) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        sched = self.vnet.kernel.sched
        entry.expire_ns = sched.now_ns() + delay_ns
        entry.timer = sched.call_later(delay_ns, self._timer, entry, owner=self.vnet)

    def reachable_ns(self, ifp: Ifnet | None = None) -> int:
        """ND_COMPUTE_RTIME: the base reachable time times a random 0.5 .. 1.5; the
        link's own base if a router advertised one (RFC 4861 6.3.4)."""
        base = self.nd6_basereachable
        rtr = self.rtr_state
        if rtr is not None and ifp is not None and rtr.ifinfo:
            info = rtr.ifinfo.get(ifp.index)
            if info is not None and info.basereachable:
                base = info.basereachable
        return (base // 2 + self.vnet.rng.randrange(base)) * NS_PER_MS

    def retrans_ms(self, ifp: Ifnet) -> int:
        """The retransmission timer: the link's advertised one, else the sysctl."""
        rtr = self.rtr_state
        if rtr is not None and rtr.ifinfo:
            info = rtr.ifinfo.get(ifp.index)
            if info is not None and info.retrans:
                return info.retrans
        return self.nd6_retrans

    def _timer(self, entry: NdEntry) -> None:
        """nd6_llinfo_timer: what each state does when its time is up."""
        entry.timer = None
        data = in6.addrs_data(entry.ifp)
        if data is None or data.nd.get(entry.addr) is not entry:
            return
        state = entry.state
        if state == INCOMPLETE:
            if entry.asked < self.nd6_mmaxtries:
                self._solicit(entry, None)
                return
            self._unreachable(entry)
            self._drop(entry)
        elif state == REACHABLE:
            entry.state = STALE
            self._arm(entry, self.nd6_gctimer * NS_PER_S)
        elif state == STALE:
            self._drop(entry)
        elif state == DELAY:
            entry.state = PROBE
            entry.asked = 0
            self._solicit(entry, entry.mac)
        elif state == PROBE:
            if entry.asked < self.nd6_umaxtries:
                self._solicit(entry, entry.mac)
            else:
                self._drop(entry)

    def _unreachable(self, entry: NdEntry) -> None:
        """Address unreachable errors for what waited (RFC 4861 7.2.2)."""
        icmp6 = self.vnet.icmp6
        for pkt in entry.hold or ():
            icmp6.error(entry.ifp, pkt, wicmp6.DST_UNREACH, wicmp6.UNREACH_ADDR, 0)
        entry.hold = None

    # -- the cache ----------------------------------------------------------------------
    def _drop(self, entry: NdEntry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.hdr = None  # invalidates the next-hop caches holding it (Route.nh)
        data = in6.addrs_data(entry.ifp)
        if data is not None and data.nd.get(entry.addr) is entry:
            del data.nd[entry.addr]

    def _new(self, ifp: Ifnet, addr: int, state: int) -> NdEntry | None:
        nd = in6.ifdata(ifp).nd
        if len(nd) >= self.nd6_maxentries:
            self.vnet.icmp6.stats.ndtablefull += 1
            return None
        entry = nd[addr] = NdEntry(addr, ifp, state)
        return entry

    def lookup(self, ifp: Ifnet, addr: int) -> NdEntry | None:
        data = in6.addrs_data(ifp)
        return data.nd.get(addr) if data is not None else None

    # -- output -------------------------------------------------------------------------
    def output(self, ifp: Ifnet, pkt: bytes, nexthop: int) -> None:
        """Send an IPv6 packet to neighbour `nexthop` on `ifp` (nd6_resolve)."""
        nd = in6.ifdata(ifp).nd
        entry = nd.get(nexthop)
        if entry is not None and entry.mac is not None:
            if entry.state == STALE:  # RFC 4861 7.3.3: traffic to a stale entry
                entry.state = DELAY
                entry.asked = 0
                self._arm(entry, self.nd6_delay * NS_PER_S)
            ifp.output((entry.hdr or entry.mac + ifp.mac + ETH_IP6) + pkt)  # type: ignore[operator]
            return
        if entry is None:
            entry = self._new(ifp, nexthop, INCOMPLETE)
            if entry is None:
                self.vnet.ip6.stats.odropped += 1
                return
            entry.hold = []
            self._hold(pkt, ifp, entry)
            self._solicit(entry, None)
            return
        self._hold(pkt, ifp, entry)

    def _hold(self, pkt: bytes, ifp: Ifnet, entry: NdEntry) -> None:
        """Queue `pkt` until `entry` resolves; it leaves later without the offload mark,
        so a packet under it is resolved first (vimage.net.offload)."""
        if ifp.offl.partial:
            offload.resend(ifp.offl, pkt, ifp.mtu, self._hold, ifp, entry)
            return
        hold = entry.hold
        if hold is None:
            hold = entry.hold = []
        if len(hold) >= self.nd6_maxqueuelen:
            hold.pop(0)
            self.vnet.ip6.stats.odropped += 1
        hold.append(pkt)

    def _solicit(self, entry: NdEntry, mac: bytes | None) -> None:
        """A neighbour solicitation for `entry`: multicast to its solicited-node group,
        or unicast to `mac` (a NUD probe), from the best source on the link."""
        ifp = entry.ifp
        target = entry.addr
        entry.asked += 1
        src_ia = in6.select_source([ifp], target, ifp)
        if src_ia is not None:
            src = src_ia.addr
            dst = target if mac is not None else wip6.solicited_node(target)
            opts = wicmp6.opt_lladdr(wicmp6.ND_OPT_SOURCE_LINKADDR, ifp.mac)  # type: ignore[arg-type]
            msg = wicmp6.build_ns(target, opts, src, dst)
            dmac = mac if mac is not None else wip6.multicast_mac(dst)
            self.vnet.icmp6.send_link(ifp, dmac, src, dst, msg)
        # else no usable source yet (every address still tentative): nothing is sent, as
        # FreeBSD's nd6_ns_output gives up; an NS from :: would be a DAD probe and make
        # the target's owner, if its address is tentative too, think it a duplicate
        self._arm(entry, self.retrans_ms(ifp) * NS_PER_MS)

    @staticmethod
    def _set_mac(entry: NdEntry, mac: bytes) -> None:
        """Learn `entry`'s link address and build the header that reaches it."""
        entry.mac = mac
        own = entry.ifp.mac
        entry.hdr = mac + own + ETH_IP6 if own is not None else None

    def _resolved(self, entry: NdEntry, mac: bytes, state: int) -> None:
        self._set_mac(entry, mac)
        entry.state = state
        entry.asked = 0
        if state == REACHABLE:
            self._arm(entry, self.reachable_ns(entry.ifp))
        elif not entry.static:
            self._arm(entry, self.nd6_gctimer * NS_PER_S)
        hold, entry.hold = entry.hold, None
        if hold:
            ifp = entry.ifp
            head = mac + ifp.mac + ETH_IP6  # type: ignore[operator]
            if state == STALE:  # sending moves it to DELAY (nd6_output_ifp)
                entry.state = DELAY
                self._arm(entry, self.nd6_delay * NS_PER_S)
            for pkt in hold:
                ifp.output(head + pkt)

    def confirm(self, ifp: Ifnet, addr: int) -> None:
        """An upper layer saw forward progress (nd6_nud_hint): the entry is reachable."""
        entry = self.lookup(ifp, addr)
        if entry is not None and entry.mac is not None and not entry.static:
            entry.state = REACHABLE
            self._arm(entry, self.reachable_ns(entry.ifp))

    def cache_lladdr(self, ifp: Ifnet, addr: int, mac: bytes) -> None:
        """nd6_cache_lladdr for an NS, RS or redirect carrying a source link address:
        a new entry, or one whose address changed, becomes STALE."""
        entry = self.lookup(ifp, addr)
        if entry is None:
            entry = self._new(ifp, addr, STALE)
            if entry is None:
                return
            self._resolved(entry, mac, STALE)
        elif entry.static:
            return
        elif entry.mac is None:
            self._resolved(entry, mac, STALE)
        elif entry.mac != mac:
            self._set_mac(entry, mac)
            entry.state = STALE
            self._arm(entry, self.nd6_gctimer * NS_PER_S)

    # -- input --------------------------------------------------------------------------
    def ns_input(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int,
                 msg: wicmp6.Icmp6Repr) -> None:
        """nd6_ns_input: validate (RFC 4861 7.1.1), DAD, learn, answer."""
        st = self.vnet.icmp6.stats
        body = msg.payload
        if pkt[7] != 255 or msg.code != 0 or len(body) < 16:
            st.badns += 1
            return
        target = int.from_bytes(body[:16], "big")
        if wip6.is_multicast(target):
            st.badns += 1
            return
        try:
            options = wicmp6.parse_options(body[16:])
        except ValueError:
            st.nd_badopt += 1
            return
        slla = wicmp6.find_lladdr(options, wicmp6.ND_OPT_SOURCE_LINKADDR)
        dad = src == 0
        if dad and (dst >> 24 != wip6.SOLICITED_NODE >> 24 or slla is not None):
            st.badns += 1
            return
        ia = self.vnet.ip6.local.get(in6.zkey(target, ifp.index))
        if ia is None or ia.ifp is not ifp:
            return  # not for us (no proxy ND)
        if ia.flags & in6.IN6_IFF_TENTATIVE:
            if dad:  # another node is doing DAD for our tentative address (5.4.3)
                self.dad_duplicated(ia)
            return
        if ia.flags & in6.IN6_IFF_DUPLICATED:
            return
        flags = wicmp6.NA_OVERRIDE | (wicmp6.NA_ROUTER if self.vnet.ip6.forwarding else 0)
        tlla = wicmp6.opt_lladdr(wicmp6.ND_OPT_TARGET_LINKADDR, ifp.mac)  # type: ignore
        if dad:  # answer to all nodes, unsolicited
            reply_dst = wip6.ALL_NODES
            dmac = wip6.multicast_mac(reply_dst)
        else:
            if slla is not None:
                self.cache_lladdr(ifp, src, slla)
            entry = self.lookup(ifp, src)
            if entry is None or entry.mac is None:
                return  # no way back without a link address
            reply_dst = src
            dmac = entry.mac
            flags |= wicmp6.NA_SOLICITED
        msg_out = wicmp6.build_na(flags, target, tlla, ia.addr, reply_dst)
        self.vnet.icmp6.send_link(ifp, dmac, ia.addr, reply_dst, msg_out)

    def na_input(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int,
                 msg: wicmp6.Icmp6Repr) -> None:
        """nd6_na_input: validate (7.1.2), DAD, then RFC 4861 7.2.5's update rules."""
        st = self.vnet.icmp6.stats
        body = msg.payload
        if pkt[7] != 255 or msg.code != 0 or len(body) < 16:
            st.badna += 1
            return
        target = int.from_bytes(body[:16], "big")
        solicited = bool(msg.rest & wicmp6.NA_SOLICITED)
        if wip6.is_multicast(target) or (solicited and wip6.is_multicast(dst)):
            st.badna += 1
            return
        try:
            options = wicmp6.parse_options(body[16:])
        except ValueError:
            st.nd_badopt += 1
            return
        tlla = wicmp6.find_lladdr(options, wicmp6.ND_OPT_TARGET_LINKADDR)
        ia = self.vnet.ip6.local.get(in6.zkey(target, ifp.index))
        if ia is not None:
            if ia.flags & in6.IN6_IFF_TENTATIVE:
                self.dad_duplicated(ia)
            elif tlla is not None and tlla != ifp.mac:
                logging.getLogger("vimage.nd6").error(
                    "nd6_na_input: duplicate IP6 address %s (vnet %s)", wip6.ntoa(target),
                    self.vnet.name)
            return
        entry = self.lookup(ifp, target)
        if entry is None or entry.static:
            return
        override = bool(msg.rest & wicmp6.NA_OVERRIDE)
        if entry.mac is None:  # INCOMPLETE
            if tlla is None:
                return
            entry.isrouter = bool(msg.rest & wicmp6.NA_ROUTER)
            self._resolved(entry, tlla, REACHABLE if solicited else STALE)
            return
        changed = tlla is not None and tlla != entry.mac
        if not override and changed:
            if entry.state == REACHABLE:
                entry.state = STALE
                self._arm(entry, self.nd6_gctimer * NS_PER_S)
            return
        if tlla is not None and tlla != entry.mac:
            self._set_mac(entry, tlla)
        if solicited:
            entry.state = REACHABLE
            entry.asked = 0
            self._arm(entry, self.reachable_ns(entry.ifp))
        elif changed:
            entry.state = STALE
            self._arm(entry, self.nd6_gctimer * NS_PER_S)
        entry.isrouter = bool(msg.rest & wicmp6.NA_ROUTER)

    # -- duplicate address detection (nd6_nbr.c nd6_dad_*) ----------------------------------
    def dad_start(self, ia: in6.In6Addr) -> None:
        ia.dad_count = 0
        self._dad_probe(ia)

    def _dad_probe(self, ia: in6.In6Addr) -> None:
        ifp = ia.ifp
        ia.dad_count += 1
        dst = wip6.solicited_node(ia.addr)
        msg = wicmp6.build_ns(ia.addr, b"", 0, dst)
        self.vnet.icmp6.send_link(ifp, wip6.multicast_mac(dst), 0, dst, msg)
        ia.dad_timer = self.vnet.kernel.sched.call_later(
            self.nd6_retrans * NS_PER_MS, self._dad_timer, ia, owner=self.vnet)

    def _dad_timer(self, ia: in6.In6Addr) -> None:
        ia.dad_timer = None
        if not ia.flags & in6.IN6_IFF_TENTATIVE or ia not in in6.addrs(ia.ifp):
            return
        if ia.dad_count < self.dad_count:
            self._dad_probe(ia)
            return
        ia.flags &= ~in6.IN6_IFF_TENTATIVE  # no one objected: the address is ours

    def dad_duplicated(self, ia: in6.In6Addr) -> None:
        """nd6_dad_duplicated: the address is someone else's."""
        if ia.dad_timer is not None:
            ia.dad_timer.cancel()
            ia.dad_timer = None
        ia.flags = (ia.flags & ~in6.IN6_IFF_TENTATIVE) | in6.IN6_IFF_DUPLICATED
        logging.getLogger("vimage.nd6").error(
            "%s: DAD detected duplicate IPv6 address %s (vnet %s)", ia.ifp.name,
            wip6.ntoa(ia.addr), self.vnet.name)

    # -- administration (ndp) -----------------------------------------------------------
    def set_static(self, ifp: Ifnet, addr: int, mac: bytes) -> None:
        """`ndp -s`: a permanent entry; what waited for it goes now."""
        old = self.lookup(ifp, addr)
        hold = old.hold if old is not None else None
        if old is not None:
            self._drop(old)
        entry = self._new(ifp, addr, REACHABLE)
        if entry is None:
            return
        entry.static = True
        entry.hold = hold
        self._resolved(entry, mac, REACHABLE)
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def delete(self, ifp: Ifnet, addr: int) -> bool:
        entry = self.lookup(ifp, addr)
        if entry is None:
            return False
        self._drop(entry)
        return True

    def entries(self) -> list[NdEntry]:
        out: list[NdEntry] = []
        for ifp in self.vnet.ifaces.values():
            data = in6.addrs_data(ifp)
            if data is not None:
                out.extend(data.nd.values())
        out.sort(key=lambda e: (e.addr, e.ifp.index))
        return out

    def lladdr_changed(self, ifp: Ifnet) -> None:
        """`ifp` has a new MAC address: rebuild its neighbours' headers (FreeBSD's
        iflladdr_event -> lltable_update_ifaddr), as ArpState.lladdr_changed does."""
        data = in6.addrs_data(ifp)
        if data is not None and ifp.mac is not None:
            for entry in data.nd.values():
                if entry.mac is not None:
                    entry.hdr = entry.mac + ifp.mac + ETH_IP6  # type: ignore[operator]

    def purge_ifp(self, ifp: Ifnet) -> None:
        data = in6.addrs_data(ifp)
        if data is not None:
            for entry in list(data.nd.values()):
                self._drop(entry)

    def clear(self) -> None:
        for ifp in list(self.vnet.ifaces.values()):
            self.purge_ifp(ifp)


def vnet_attach(vnet: Vnet) -> None:
    vnet.nd6 = Nd6State(vnet)  # type: ignore[attr-defined]


def vnet_detach(vnet: Vnet) -> None:
    if vnet.nd6.rtr_state is not None:
        vnet.nd6.rtr_state.clear()
    vnet.nd6.clear()
