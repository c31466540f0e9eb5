"""ICMPv6 (RFC 4443; FreeBSD icmp6.c): echo, errors with rate limiting, packet too big
and path MTU (RFC 8201), neighbour discovery dispatch, MLDv2 join reports (mld6.c).

Until raw ICMPv6 sockets exist, `listeners` (`add_listener`, `remove_listener`) is
where a tool (ping6) hears ICMPv6 messages: each is called as fn(ifp, pkt, off, src,
dst) for every message received, as rip6_input would pass it to raw sockets.
"""

from __future__ import annotations

from collections import Counter
from socket import AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage import protosw
from vimage.netinet6 import in6
from vimage.sched import PpsLimit
from vimage.stats import LazySlots, count_drop, counters
from vimage.sysctl import Oid, oids
from vimage.wire import WireError
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6
from vimage.wire.ethernet import ETHERTYPE_IPV6
from vimage.wire.ipv6 import MIN_MTU, NXT_HOPOPTS, NXT_ICMPV6

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

ETH_IP6 = ETHERTYPE_IPV6.to_bytes(2, "big")

SYSCTLS: tuple[Oid, ...] = oids("net.inet6.icmp6", "icmp6", (
    ("errppslimit", "Maximum number of ICMPv6 errors per second (0 = unlimited)",
     0, 2**31 - 1),
))

# netstat's histogram labels (usr.bin/netstat/inet6.c icmp6names), by type
_NAMES = MappingProxyType({
    1: "destination unreachable", 2: "packet too big", 3: "time exceed",
    4: "parameter problem", 128: "echo", 129: "echo reply", 130: "multicast listener query",
    131: "MLDv1 listener report", 132: "multicast listener done",
    133: "router solicitation", 134: "router advertisement", 135: "neighbor solicitation",
    136: "neighbor advertisement", 137: "redirect", 143: "MLDv2 listener report",
})
TYPE_NAMES: tuple[str, ...] = tuple(_NAMES.get(t, "") for t in range(256))

STAT_LINES: tuple[tuple[str, str], ...] = (  # netstat/inet6.c icmp6_stats, in its order
    ("error", "{} calls to icmp6_error"),
    ("canterror", "{} errors not generated in response to an icmp6 message"),
    ("toofreq", "{} errors not generated because of rate limitation"),
    ("badcode", "{} messages with bad code fields"),
    ("tooshort", "{} messages < minimum length"),
    ("checksum", "{} bad checksums"),
    ("badlen", "{} messages with bad length"),
    ("reflect", "{} message responses generated"),
    ("nd_toomanyopt", "{} messages with too many ND options"),
    ("nd_badopt", "{} messages with bad ND options"),
    ("badns", "{} bad neighbor solicitation messages"),
    ("badna", "{} bad neighbor advertisement messages"),
    ("badrs", "{} bad router solicitation messages"),
    ("badra", "{} bad router advertisement messages"),
    ("badredirect", "{} bad redirect messages"),
    ("pmtuchg", "{} path MTU changes"),
    ("ndtablefull", "{} neighbor entries refused (interface table full)"),
    # icmp6_errcount(): the errors icmp6_error() is asked for, by type and code
    ("odst_unreach_noroute", "{} no route"),
    ("odst_unreach_admin", "{} administratively prohibited"),
    ("odst_unreach_beyondscope", "{} beyond scope"),
    ("odst_unreach_addr", "{} address unreachable"),
    ("odst_unreach_noport", "{} port unreachable"),
    ("opacket_too_big", "{} packet too big"),
    ("otime_exceed_transit", "{} time exceed transit"),
    ("otime_exceed_reassembly", "{} time exceed reassembly"),
    ("oparamprob_header", "{} erroneous header field"),
    ("oparamprob_nextheader", "{} unrecognized next header"),
    ("oparamprob_option", "{} unrecognized option"),
    ("oredirect", "{} redirect"),
    ("ounknown", "{} unknown"),
)

# icmp6_errcount() (FreeBSD sys/netinet6/icmp6.c): the counter of an error to generate
_ERRCOUNT = MappingProxyType({
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_NOROUTE): "odst_unreach_noroute",
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_ADMIN): "odst_unreach_admin",
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_BEYONDSCOPE): "odst_unreach_beyondscope",
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_ADDR): "odst_unreach_addr",
    (wicmp6.DST_UNREACH, wicmp6.UNREACH_NOPORT): "odst_unreach_noport",
    (wicmp6.PACKET_TOO_BIG, -1): "opacket_too_big",
    (wicmp6.TIME_EXCEEDED, wicmp6.TIME_EXCEED_TRANSIT): "otime_exceed_transit",
    (wicmp6.TIME_EXCEEDED, wicmp6.TIME_EXCEED_REASSEMBLY): "otime_exceed_reassembly",
    (wicmp6.PARAM_PROB, wicmp6.PARAMPROB_HEADER): "oparamprob_header",
    (wicmp6.PARAM_PROB, wicmp6.PARAMPROB_NEXTHEADER): "oparamprob_nextheader",
    (wicmp6.PARAM_PROB, wicmp6.PARAMPROB_OPTION): "oparamprob_option",
    (wicmp6.REDIRECT, -1): "oredirect",
})

_ND_ROUTER_TYPES = frozenset({wicmp6.ROUTER_SOLICIT, wicmp6.ROUTER_ADVERT, wicmp6.REDIRECT})
_PARSE_DROPS = MappingProxyType({"badsum": "checksum", "": "tooshort"})

_Counters = counters("_Icmp6Counters", tuple(name for name, _ in STAT_LINES))


class Icmp6Stats(_Counters):  # type: ignore[misc,valid-type]
    """The counters plus per-type input and output histograms: Counters, not lists of
    256 (two such lists would double a vnet's size, and the garbage collector's work)."""

    __slots__ = ("_inhist", "_outhist")
    TYPE_NAMES = TYPE_NAMES

    def __init__(self) -> None:
        super().__init__()
        self._inhist: Counter[int] | None = None  # made on first use: most vnets never count
        self._outhist: Counter[int] | None = None

    @property
    def inhist(self) -> Counter[int]:
        if self._inhist is None:
            self._inhist = Counter()
        return self._inhist

    @property
    def outhist(self) -> Counter[int]:
        if self._outhist is None:
            self._outhist = Counter()
        return self._outhist


class Icmp6State(LazySlots):
    __slots__ = ("ctlx", "errppslimit", "lim", "listeners", "stats", "vnet")
    lazy = MappingProxyType({"stats": Icmp6Stats, "lim": PpsLimit})  # on first read

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.errppslimit = 100
        self.ctlx: Mapping[int, Callable[..., None]] = protosw.UNBOUND
        self.listeners: tuple[Callable[..., None], ...] = ()  # replaced, never changed

    def add_listener(self, fn: Callable[..., None]) -> None:
        self.listeners = (*self.listeners, fn)

    def remove_listener(self, fn: Callable[..., None]) -> None:
        self.listeners = tuple(f for f in self.listeners if f is not fn)

    # -- input ---------------------------------------------------------------------------
    def input(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """icmp6_input: checksum, then by type."""
        st = self.stats
        try:
            msg = wicmp6.parse(memoryview(pkt)[off:], src, dst)
        except WireError as exc:
            count_drop(st, exc.reason, _PARSE_DROPS)
            return
        type_ = msg.type
        st.inhist[type_] += 1
        if type_ == wicmp6.ECHO_REQUEST:
            if msg.code:
                st.badcode += 1
            else:
                self._echo_reply(ifp, msg, src, dst)
        elif type_ == wicmp6.NEIGHBOR_SOLICIT:
            self.vnet.nd6.ns_input(ifp, pkt, off, src, dst, msg)
        elif type_ == wicmp6.NEIGHBOR_ADVERT:
            self.vnet.nd6.na_input(ifp, pkt, off, src, dst, msg)
        elif type_ < 128:
            if not self._error_input(msg):
                return
        elif type_ in _ND_ROUTER_TYPES:
            self._check_router_msg(ifp, pkt, msg, src)
        for listener in self.listeners:  # rip6_input: raw ICMPv6 listeners get a copy
            listener(ifp, pkt, off, src, dst)

    def _check_router_msg(self, ifp: Ifnet, pkt: bytes, msg: wicmp6.Icmp6Repr,
                          src: int) -> None:
        """RS, RA and redirect: validated and counted (RFC 4861 6.1, 8.1: hop limit 255,
        code 0, RA and redirect from a link-local source), then RAs and redirects are
        acted on (nd6_rtr); an RS is for a router advertisement daemon (a listener)."""
        st = self.stats
        bad = pkt[7] != 255 or msg.code != 0
        if msg.type == wicmp6.ROUTER_SOLICIT:
            st.badrs += bad
        elif msg.type == wicmp6.ROUTER_ADVERT:
            bad = bad or src >> 118 != 0x3FA
            st.badra += bad
            if not bad:
                self.vnet.nd6.rtr.ra_input(ifp, pkt, src, msg)
        else:
            bad = bad or src >> 118 != 0x3FA
            st.badredirect += bad
            if not bad:
                self.vnet.nd6.rtr.redirect_input(ifp, pkt, src, msg)

    def _echo_reply(self, ifp: Ifnet, msg: wicmp6.Icmp6Repr, src: int, dst: int) -> None:
        """icmp6_reflect for an echo request; from the address asked, or for a group
        from the best address on the link. Routed in the receiving interface's fib (the
        request's M_GETFIB)."""
        if not src:
            self.stats.badlen += 1
            return
        zone = ifp if wip6.needs_zone(src) else None
        try:
            fib = ifp.fib
            rsrc = (dst if dst >> 120 != 0xFF
                    else self.vnet.ip6.select_source(src, ifp, fib))
            reply = wicmp6.build(wicmp6.ECHO_REPLY, 0, msg.rest, msg.payload, rsrc, src)
            self.stats.reflect += 1
            self.stats.outhist[wicmp6.ECHO_REPLY] += 1
            self.vnet.ip6.output(NXT_ICMPV6, rsrc, src, reply, ifp=zone, fib=fib)
        except OSError:
            return

    def _error_input(self, msg: wicmp6.Icmp6Repr) -> bool:
        """An error quoting one of our packets: path MTU, then the transport's ctlinput
        (found through the switch by the quoted next header). False if malformed."""
        quoted = msg.payload
        if len(quoted) < wip6.HEADER_LEN:
            self.stats.badlen += 1
            return False
        qdst = int.from_bytes(quoted[24:40], "big")
        if msg.type == wicmp6.PACKET_TOO_BIG and msg.code == 0:
            mtu = msg.rest
            if mtu < MIN_MTU:
                mtu = MIN_MTU
            if self.vnet.ip6.update_pmtu(qdst, mtu):
                self.stats.pmtuchg += 1
        handler = self.ctlx.get(quoted[6])
        if handler is None and self.ctlx is protosw.UNBOUND:
            table = protosw.bound_table(self.vnet, "ctlinputs", AF_INET6)
            if table is None:
                return False
            self.ctlx = table
            handler = table.get(quoted[6])
        if handler is not None:
            handler(msg.type, msg.code, bytes(quoted), msg.rest)
        return True

    # -- errors ---------------------------------------------------------------------------
    def rate_ok(self) -> bool:
        """icmp6_ratelimit: at most errppslimit errors a second."""
        return self.lim.check(self.vnet.kernel.sched.now_ns(), self.errppslimit)

    def error(self, ifp: Ifnet, pkt: bytes, type_: int, code: int, param: int) -> None:
        """icmp6_error: an error about `pkt` (received on `ifp`) to its source, routed in
        `ifp`'s fib (the offending packet's)."""
        st = self.stats
        st.error += 1
        name = _ERRCOUNT.get((type_, code)) or _ERRCOUNT.get((type_, -1), "ounknown")
        setattr(st, name, getattr(st, name) + 1)
        if len(pkt) < wip6.HEADER_LEN:
            return
        src = int.from_bytes(pkt[8:24], "big")
        dst = int.from_bytes(pkt[24:40], "big")
        if dst >> 120 == 0xFF and not (
                type_ == wicmp6.PACKET_TOO_BIG
                or (type_ == wicmp6.PARAM_PROB and code == wicmp6.PARAMPROB_OPTION)):
            return  # RFC 4443 2.4 (e.3)
        if not src or src >> 120 == 0xFF:
            return  # (e.5): no error to an unspecified or multicast source
        if _is_error_or_redirect(pkt):
            st.canterror += 1
            return
        if not self.rate_ok():
            st.toofreq += 1
            return
        ip6 = self.vnet.ip6
        zone = ifp if wip6.needs_zone(src) else None
        quoted = pkt[:MIN_MTU - wip6.HEADER_LEN - wicmp6.HEADER_LEN]
        try:
            ours = ip6.local.get(in6.zkey(dst, ifp.index))
            fib = ifp.fib
            rsrc = (dst if ours is not None and ours.ready
                    else ip6.select_source(src, zone, fib))
            msg = wicmp6.build(type_, code, param, quoted, rsrc, src)
            st.outhist[type_] += 1
            ip6.output(NXT_ICMPV6, rsrc, src, msg, ifp=zone, fib=fib)
        except OSError:
            return

    # -- link-level senders (ND, MLD) ------------------------------------------------------
    def send_link(self, ifp: Ifnet, dmac: bytes, src: int, dst: int, msg: bytes,
                  hlim: int = 255, hbh: bytes = b"") -> None:
        """Send an ICMPv6 message straight to station `dmac` on `ifp` (ND, MLD: no route,
        no resolution), hop limit 255 as RFC 4861 requires."""
        if not ifp.flags & 1 or ifp.mac is None:
            return
        nxt = NXT_HOPOPTS if hbh else NXT_ICMPV6
        payload = hbh + msg
        pkt = wip6.build_header(src, dst, nxt, len(payload), hlim) + payload
        self.stats.outhist[msg[0]] += 1
        self.vnet.ip6.stats.localout += 1
        ifp.output(dmac + ifp.mac + ETH_IP6 + pkt)

    def mld_report(self, ifp: Ifnet, group: int) -> None:
        """An MLDv2 report that we joined `group` (RFC 3810: CHANGE_TO_EXCLUDE of no
        sources), from our link-local address or :: while it is tentative, with the
        router alert option, hop limit 1."""
        src = 0
        for ia in in6.addrs(ifp):
            if ia.ready and wip6.is_link_local(ia.addr):
                src = ia.addr
                break
        dst = wip6.ALL_MLDV2_ROUTERS
        msg = wicmp6.build_mldv2_report([(wicmp6.CHANGE_TO_EXCLUDE, group, [])], src, dst)
        hbh = wip6.build_options_header(NXT_ICMPV6, wip6.ROUTER_ALERT_MLD)
        self.send_link(ifp, wip6.multicast_mac(dst), src, dst, msg, hlim=1, hbh=hbh)


def _is_error_or_redirect(pkt: bytes) -> bool:
    """True if `pkt` carries an ICMPv6 error or a redirect (RFC 4443 2.4 (e.1)),
    looking through its extension headers (ip6_lasthdr)."""
    nxt = pkt[6]
    off = wip6.HEADER_LEN
    for _ in range(8):
        if nxt == NXT_ICMPV6:
            return off < len(pkt) and (pkt[off] < 128 or pkt[off] == wicmp6.REDIRECT)
        if nxt not in wip6.EXTENSION_HEADERS or off + 8 > len(pkt):
            return False
        if nxt == wip6.NXT_FRAGMENT and (pkt[off + 2] << 8 | pkt[off + 3]) & 0xFFF8:
            return False  # a later fragment: its upper layer is unknown
        nxt, off = pkt[off], off + wip6.ext_len(pkt, off, nxt)
    return False


def vnet_attach(vnet: Vnet) -> None:
    vnet.icmp6 = Icmp6State(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.icmp6.listeners = ()
