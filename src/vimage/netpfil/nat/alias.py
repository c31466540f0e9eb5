"""One NAT instance: the translation engine (FreeBSD's libalias, sys/netinet/libalias).

A `Link` is libalias's `alias_link`: one flow seen from three sides, the inside end
(laddr, lport), the remote end (raddr, rport) and the alias end (aaddr, aport) the
outside sees. Outgoing packets are found by (proto, laddr, lport, raddr, rport),
incoming ones by (proto, raddr, rport, aaddr, aport) — libalias's FindLinkOut and
FindLinkIn with the endpoint-dependent keys. ICMP echo links use the echo id as the
inside "port" and the remote port 0; other IP protocols have ports 0.

Alias ports are drawn as libalias's GetNewPort: the inside port first with
`same_ports`, then random draws in the instance's range (32768-65535 or `port_range`)
from the instance's own generator (a keyed hash of the vnet's secret and the instance
number, so the same seed gives the same ports), then a linear scan from a random start,
so a free port is found whenever one exists. A port is taken for one remote end:
the alias (aaddr, aport) may serve several remote ends at once, as in libalias.

Checksums are updated incrementally (RFC 1624 eqn. 3 over the changed words); an ICMP
error's quoted header and transport checksum are rewritten and its ICMP checksum
recomputed, as libalias's IcmpAliasIn2/IcmpAliasOut2 do.

Timeouts are libalias's (alias_db.c: TCP_EXPIRE_INITIAL, _CONNECTED, _SINGLEDEAD, _DEAD,
UDP_EXPIRE_TIME, ICMP_EXPIRE_TIME, PROTO_EXPIRE_TIME), taken from the vnet's
`net.inet.ip.alias.*` sysctls, with its TCP state machine (TcpMonitorIn/Out). Expired
links are dropped by one kernel timer per instance, armed only while links exist, and
are never matched once past their time.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vimage.netpfil.nat.config import (
    NatConfig,
    RedirectAddr,
    RedirectPort,
    RedirectProto,
)
from vimage.stats import counters
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.sched import Timer
    from vimage.vnet import Vnet

NS = 1_000_000_000
PORT_LOW, PORT_HIGH = 0x8000, 0xFFFF  # libalias ALIAS_PORT_BASE .. 0xffff
PORT_TRIES = 20  # GET_NEW_PORT_MAX_ATTEMPTS
FRAGMENT_EXPIRE = 10  # FRAGMENT_ID_EXPIRE_TIME, seconds

# libalias's per-direction TCP states (alias_local.h)
TCP_NOT_CONNECTED, TCP_CONNECTED, TCP_DISCONNECTED = 0, 1, 2
TH_FIN, TH_SYN, TH_RST = 0x01, 0x02, 0x04

# ICMP types (RFC 792)
ICMP_ECHOREPLY, ICMP_ECHO, ICMP_TSTAMP, ICMP_TSTAMPREPLY = 0, 8, 13, 14
ICMP_QUERIES = frozenset({ICMP_ECHO, ICMP_TSTAMP})
ICMP_REPLIES = frozenset({ICMP_ECHOREPLY, ICMP_TSTAMPREPLY})
ICMP_ECHO_LIKE = ICMP_QUERIES | ICMP_REPLIES
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})

# RFC 1918 and RFC 6598 prefixes (libalias's unreg_only / unreg_cgn tests)
_UNREG = ((0x0A000000, 0xFF000000), (0xAC100000, 0xFFF00000), (0xC0A80000, 0xFFFF0000))
_CGN = (0x64400000, 0xFFC00000)

NatStats = counters("NatStats", (
    "translated_out", "translated_in", "passed", "created", "expired", "deny_in", "limit",
    "noport", "bad"))

Key = tuple[int, int, int, int, int]


class _Refused(Exception):
    """A new link could not be made (table full, no free port); already counted."""


@dataclass(slots=True, eq=False)
class Link:
    proto: int
    laddr: int
    lport: int
    raddr: int
    rport: int
    aaddr: int
    aport: int
    expire_ns: int = 0
    timeout: int = 0  # seconds: refreshed to now + timeout on each packet
    state_in: int = TCP_NOT_CONNECTED
    state_out: int = TCP_NOT_CONNECTED

    @property
    def out_key(self) -> Key:
        return (self.proto, self.laddr, self.lport, self.raddr, self.rport)

    @property
    def in_key(self) -> Key:
        return (self.proto, self.raddr, self.rport, self.aaddr, self.aport)


def is_unregistered(addr: int, cgn: bool) -> bool:
    if any(addr & mask == net for net, mask in _UNREG):
        return True
    return cgn and addr & _CGN[1] == _CGN[0]


# -- checksums -----------------------------------------------------------------------------
def _words(value: int) -> int:
    """The ones'-complement sum of a 32-bit value's two 16-bit words."""
    total = (value >> 16) + (value & 0xFFFF)
    return (total & 0xFFFF) + (total >> 16)


def adjust(cksum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for words whose sum went from `old` to
    `new` (ones'-complement sums of 16-bit words, each at most 0xFFFF)."""
    total = (~cksum & 0xFFFF) + (~old & 0xFFFF) + new
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PAIR16 = struct.Struct("!HH")  # two ports; the fragment word and the TTL/proto word
_PAIR32 = struct.Struct("!II")  # source and destination address


def _get16(pkt: bytearray, off: int) -> int:
    return _U16.unpack_from(pkt, off)[0]


def _put16(pkt: bytearray, off: int, value: int) -> None:
    _U16.pack_into(pkt, off, value)


def _get32(pkt: bytearray, off: int) -> int:
    return _U32.unpack_from(pkt, off)[0]


def rewrite_l4(pkt: bytearray, ip_off: int, src_side: bool, addr: int, port: int,
               length: int) -> None:
    """Replace the source (or destination) address and port of the IPv4 packet at
    `ip_off` in `pkt` (`length` bytes of it present), fixing the IP header checksum
    and the TCP/UDP/ICMP-echo checksum when present. The port of an ICMP query is its id."""
    hlen = (pkt[ip_off] & 0x0F) << 2
    a_off = ip_off + (12 if src_side else 16)
    old_addr = _U32.unpack_from(pkt, a_off)[0]
    proto = pkt[ip_off + 9]
    old_a, new_a = _words(old_addr), _words(addr)
    _U32.pack_into(pkt, a_off, addr)
    _U16.pack_into(pkt, ip_off + 10,
                   adjust(_U16.unpack_from(pkt, ip_off + 10)[0], old_a, new_a))
    if _U16.unpack_from(pkt, ip_off + 6)[0] & 0x1FFF:
        return  # a later fragment: no transport header
    l4 = ip_off + hlen
    end = ip_off + length
    if proto in (PROTO_TCP, PROTO_UDP):
        p_off = l4 if src_side else l4 + 2
        c_off = l4 + (16 if proto == PROTO_TCP else 6)
        if p_off + 2 > end:
            return
        old_port = _U16.unpack_from(pkt, p_off)[0]
        _U16.pack_into(pkt, p_off, port)
        if c_off + 2 > end:
            return  # a quote too short to hold the checksum
        cksum = _U16.unpack_from(pkt, c_off)[0]
        if proto == PROTO_UDP and cksum == 0:
            return  # no checksum (RFC 768)
        cksum = adjust(cksum, _fold(old_a + old_port), _fold(new_a + port))
        if proto == PROTO_UDP and cksum == 0:
            cksum = 0xFFFF
        _U16.pack_into(pkt, c_off, cksum)
    elif proto == PROTO_ICMP and l4 + 8 <= end and pkt[l4] in ICMP_ECHO_LIKE:
        old_id = _U16.unpack_from(pkt, l4 + 4)[0]
        _U16.pack_into(pkt, l4 + 4, port)
        _U16.pack_into(pkt, l4 + 2, adjust(_U16.unpack_from(pkt, l4 + 2)[0], old_id, port))


# -- the instance ----------------------------------------------------------------------------
class NatInstance:
    """One `ipfw nat N` instance of one vnet."""

    def __init__(self, vnet: Vnet, cfg: NatConfig) -> None:
        self.vnet = vnet
        self.cfg = cfg
        self.out: dict[Key, Link] = {}
        self.inn: dict[Key, Link] = {}
        # fragments: (raddr, aaddr, ip id, proto) -> (inside address, expiry)
        self.frags: dict[tuple[int, int, int, int], tuple[int, int]] = {}
        self.stats = NatStats()
        self.alias_cache = 0  # the alias address last used (`if IF` follows it)
        self.timer: Timer | None = None
        self.unreg: bool | None = None  # unreg_only: False, unreg_cgn: True, else None
        self._modes(cfg)
        seed = hashlib.blake2b(vnet.secret + b"ipfw_nat" + cfg.number.to_bytes(4, "big"),
                               digest_size=16).digest()
        self.rng = random.Random(seed)

    # -- configuration ------------------------------------------------------------------
    def configure(self, cfg: NatConfig) -> None:
        """Reconfigure (ipfw keeps the libalias instance and its links)."""
        self.cfg = cfg
        self._modes(cfg)

    def _modes(self, cfg: NatConfig) -> None:
        modes = cfg.modes
        self.unreg = True if "unreg_cgn" in modes else False if "unreg_only" in modes else None

    def alias_addr(self) -> int:
        """The alias address: `ip ADDR`, or the first address of `if IF` now; a changed
        address flushes the links with `reset` (PKT_ALIAS_RESET_ON_ADDR_CHANGE)."""
        cfg = self.cfg
        addr = cfg.ip
        if cfg.ifname:
            ifp = self.vnet.ifaces.get(cfg.ifname)
            addr = ifp.addrs[0].addr if ifp is not None and ifp.addrs else 0
        if addr != self.alias_cache:
            if self.alias_cache and "reset" in cfg.modes:
                self.flush()
            self.alias_cache = addr
        return addr

    def flush(self) -> None:
        self.out.clear()
        self.inn.clear()
        self.frags.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- links ---------------------------------------------------------------------------
    def _live(self, link: Link | None) -> Link | None:
        if link is not None and link.expire_ns <= self.vnet.kernel.sched.now_ns():
            self._remove(link)
            self.stats.expired += 1
            return None
        return link

    def _remove(self, link: Link) -> None:
        if self.out.get(link.out_key) is link:
            del self.out[link.out_key]
        if self.inn.get(link.in_key) is link:
            del self.inn[link.in_key]

    def _timeout(self, link: Link) -> int:
        nat = self.vnet.ipfw_nat
        if link.proto == PROTO_TCP:
            if TCP_DISCONNECTED in (link.state_in, link.state_out):
                if TCP_CONNECTED in (link.state_in, link.state_out):
                    return nat.tcp_singledead
                return nat.tcp_dead
            if link.state_in == link.state_out == TCP_CONNECTED:
                return nat.tcp_connected
            return nat.tcp_initial
        if link.proto == PROTO_UDP:
            return nat.udp_expire
        if link.proto == PROTO_ICMP:
            return nat.icmp_expire
        return nat.proto_expire

    def _touch(self, link: Link) -> None:
        """A packet of the link: it lives `link.timeout` more seconds (set when the link
        is made and when its TCP state changes, as libalias sets expire.time)."""
        link.expire_ns = expire = self.vnet.kernel.sched.now_ns() + link.timeout * NS
        timer = self.timer
        if timer is None or -(-expire // NS) * NS < timer.when:
            self._arm(expire)  # a shorter timeout (a TCP close) re-arms earlier

    def _arm(self, when_ns: int) -> None:
        """Sweep at `when_ns` rounded up to a whole second of kernel time (libalias's
        clock ticks in seconds): expiries of one second share one sweep, so a table of
        n links costs at most one O(n) sweep per second however they are refreshed. A
        link is never matched past its time (`_live`); the sweep only frees it."""
        if self.timer is not None:
            self.timer.cancel()
        when_ns = -(-when_ns // NS) * NS
        delay = max(0, when_ns - self.vnet.kernel.sched.now_ns())
        self.timer = self.vnet.kernel.sched.call_later(delay, self._sweep, owner=self.vnet)

    def _sweep(self) -> None:
        """Drop every expired link and fragment entry; re-arm for the next expiry."""
        self.timer = None
        now = self.vnet.kernel.sched.now_ns()
        for link in [lk for lk in self.out.values() if lk.expire_ns <= now]:
            self._remove(link)
            self.stats.expired += 1
        for link in [lk for lk in self.inn.values() if lk.expire_ns <= now]:
            self._remove(link)
            self.stats.expired += 1
        for key in [k for k, (_, t) in self.frags.items() if t <= now]:
            del self.frags[key]
        deadlines = [lk.expire_ns for lk in self.out.values()]
        deadlines += [lk.expire_ns for lk in self.inn.values()]
        deadlines += [t for _, t in self.frags.values()]
        if deadlines:
            self._arm(min(deadlines))

    def _add(self, link: Link) -> Link:
        """Enter a new link; _Refused (counted) when the table is full."""
        if len(self.out) >= self.vnet.ipfw_nat.max_links:
            self.stats.limit += 1
            raise _Refused
        self.out[link.out_key] = link
        self.inn[link.in_key] = link
        self.stats.created += 1
        link.timeout = self._timeout(link)
        self._touch(link)
        return link

    def _port_free(self, proto: int, raddr: int, rport: int, aaddr: int, port: int) -> bool:
        if self._live(self.inn.get((proto, raddr, rport, aaddr, port))) is not None:
            return False
        for r in self.cfg.redirects:  # a redirect's public ports are never handed out
            if isinstance(r, RedirectPort) and r.proto == proto and \
                    r.pport <= port < r.pport + r.count and r.paddr in (0, aaddr):
                return False
        return True

    def _new_port(self, proto: int, lport: int, raddr: int, rport: int,
                  aaddr: int) -> int:
        """GetNewPort: the inside port with same_ports, else random, then a scan;
        _Refused (counted) when every port of the range is taken."""
        if "same_ports" in self.cfg.modes and lport and \
                self._port_free(proto, raddr, rport, aaddr, lport):
            return lport
        low, high = self.cfg.port_range or (PORT_LOW, PORT_HIGH)
        span = high - low + 1
        rng = self.rng
        for _ in range(PORT_TRIES):
            port = low + rng.randrange(span)
            if self._port_free(proto, raddr, rport, aaddr, port):
                return port
        start = rng.randrange(span)
        for i in range(span):
            port = low + (start + i) % span
            if self._port_free(proto, raddr, rport, aaddr, port):
                return port
        self.stats.noport += 1
        raise _Refused

    # -- entry points ------------------------------------------------------------------------
    def translate(self, pkt: bytes, ifp: Ifnet | None, outgoing: bool) -> bytes | None:
        if "reverse" in self.cfg.modes:
            outgoing = not outgoing
        n = len(pkt)
        if n < 20 or pkt[0] >> 4 != 4 or (pkt[0] & 0x0F) < 5 or (pkt[0] & 0x0F) << 2 > n:
            self.stats.bad += 1
            return None
        alias = self.alias_addr()
        if not alias:
            self.stats.passed += 1
            return pkt  # `if IF` without an address yet: nothing to translate to
        buf = bytearray(pkt)
        try:
            ok = self._out(buf, alias) if outgoing else self._in(buf, alias)
        except _Refused:  # table full or no free port: counted where refused
            return None
        if ok is None:
            return None
        if not ok:
            self.stats.passed += 1
            return pkt
        if outgoing:
            self.stats.translated_out += 1
        else:
            self.stats.translated_in += 1
        return bytes(buf)

    # -- outgoing (LibAliasOut) ------------------------------------------------------------------
    def _static_alias(self, laddr: int, proto: int, default: int) -> int:
        """The alias address of an inside host: its redirect_addr / redirect_proto public
        address, else the instance's."""
        for r in self.cfg.redirects:
            if isinstance(r, RedirectAddr) and r.laddr == laddr:
                return r.paddr
            if isinstance(r, RedirectProto) and r.laddr == laddr and r.proto == proto:
                return r.paddr or default
        return default

    def _out(self, buf: bytearray, alias: int) -> bool | None:
        """Translate an outgoing packet in place: True if changed, False to pass it as it
        is, None to drop it (counted)."""
        src, dst = _PAIR32.unpack_from(buf, 12)
        if self.unreg is not None and not is_unregistered(src, self.unreg):
            return False  # unreg_only / unreg_cgn: a public source is left alone
        hlen = (buf[0] & 0x0F) << 2
        proto = buf[9]
        if _U16.unpack_from(buf, 6)[0] & 0x1FFF:  # a later fragment: FragmentOut
            rewrite_l4(buf, 0, True, self._static_alias(src, proto, alias), 0, len(buf))
            return True
        if proto in (PROTO_TCP, PROTO_UDP):
            if len(buf) < hlen + (20 if proto == PROTO_TCP else 8):
                self.stats.bad += 1
                return None
            sport, dport = _PAIR16.unpack_from(buf, hlen)
            link = self._link_out(proto, src, sport, dst, dport, alias)
            assert link is not None
            if proto == PROTO_TCP:
                self._tcp_monitor(link, buf[hlen + 13], outgoing=True)
            self._touch(link)
            if link.aaddr == src and link.aport == sport:
                return False  # a link to itself (see _identity): nothing to rewrite
            rewrite_l4(buf, 0, True, link.aaddr, link.aport, len(buf))
            return True
        if proto == PROTO_ICMP:
            return self._icmp_out(buf, hlen, src, dst, alias)
        link = self._link_out(proto, src, 0, dst, 0, alias)
        assert link is not None
        self._touch(link)
        rewrite_l4(buf, 0, True, link.aaddr, 0, len(buf))
        return True

    def _link_out(self, proto: int, src: int, sport: int, dst: int, dport: int,
                  alias: int, create: bool = True) -> Link | None:
        link = self._live(self.out.get((proto, src, sport, dst, dport)))
        if link is not None or not create:
            return link
        aaddr = self._static_alias(src, proto, alias)
        aport = 0
        if sport:
            for r in self.cfg.redirects:  # a reply from a redirect_port's inside end
                if isinstance(r, RedirectPort) and r.proto == proto and r.laddr == src and \
                        r.lport <= sport < r.lport + r.count and r.raddr in (0, dst):
                    aaddr, aport = r.paddr or alias, r.pport + sport - r.lport
                    break
            else:
                aport = self._new_port(proto, sport, dst, dport, aaddr)
        return self._add(Link(proto, src, sport, dst, dport, aaddr, aport))

    def _icmp_out(self, buf: bytearray, hlen: int, src: int, dst: int,
                  alias: int) -> bool | None:
        if len(buf) < hlen + 8:
            self.stats.bad += 1
            return None
        icmp_type = buf[hlen]
        if icmp_type in ICMP_QUERIES or icmp_type in ICMP_REPLIES:
            ident = _get16(buf, hlen + 4)
            link = self._link_out(PROTO_ICMP, src, ident, dst, 0, alias,
                                  create=icmp_type in ICMP_QUERIES)
            if link is None:  # a reply of no flow (to an untracked query)
                return self._addr_only_out(buf, src, alias)
            self._touch(link)
            if link.aaddr == src and link.aport == ident:
                return False  # a link to itself (see _identity)
            rewrite_l4(buf, 0, True, link.aaddr, link.aport, len(buf))
            return True
        if icmp_type in ICMP_ERRORS:
            return self._icmp_error(buf, hlen, alias, outgoing=True)
        return self._addr_only_out(buf, src, alias)

    def _addr_only_out(self, buf: bytearray, src: int, alias: int) -> bool:
        """A packet with no flow of its own (a reply to the host's own address, an ICMP
        type libalias does not track): the source becomes the alias address."""
        addr = self._static_alias(src, buf[9], alias)
        if addr == src:
            return False  # this host's own address already (an answer to a ping of it)
        rewrite_l4(buf, 0, True, addr, 0, len(buf))
        return True

    # -- incoming (LibAliasIn) -------------------------------------------------------------------
    def _in(self, buf: bytearray, alias: int) -> bool | None:
        hlen = (buf[0] & 0x0F) << 2
        proto = buf[9]
        src, dst = _PAIR32.unpack_from(buf, 12)
        ipid, frag = _PAIR16.unpack_from(buf, 4)
        if frag & 0x1FFF:  # a later fragment (FragmentIn)
            entry = self.frags.get((src, dst, ipid, proto))
            if entry is None:
                return self._unmatched()
            rewrite_l4(buf, 0, False, entry[0], 0, len(buf))
            return True
        if proto in (PROTO_TCP, PROTO_UDP):
            if len(buf) < hlen + (20 if proto == PROTO_TCP else 8):
                self.stats.bad += 1
                return None
            sport, dport = _PAIR16.unpack_from(buf, hlen)
            link = self._link_in(proto, src, sport, dst, dport, alias)
            if link is None:
                link = self._identity(proto, src, sport, dst, dport)
                if link is None:
                    return None
            if proto == PROTO_TCP:
                self._tcp_monitor(link, buf[hlen + 13], outgoing=False)
        elif proto == PROTO_ICMP:
            if len(buf) < hlen + 8:
                self.stats.bad += 1
                return None
            icmp_type = buf[hlen]
            if icmp_type in ICMP_ERRORS:
                return self._icmp_error(buf, hlen, alias, outgoing=False)
            link = None
            ident = _get16(buf, hlen + 4)
            if icmp_type in ICMP_REPLIES:
                link = self._live(self.inn.get((PROTO_ICMP, src, 0, dst, ident)))
            elif icmp_type in ICMP_QUERIES:
                link = self._link_in(PROTO_ICMP, src, 0, dst, ident, alias) or \
                    self._identity(PROTO_ICMP, src, 0, dst, ident)
                if link is None:
                    return None
            if link is None:
                return self._unmatched()
        else:
            link = self._link_in(proto, src, 0, dst, 0, alias)
            if link is None:
                return self._unmatched()
        self._touch(link)
        if link.laddr == dst and link.lport == link.aport:
            return False  # a link to itself: nothing to rewrite
        if frag & 0x2000:  # a first fragment: later ones follow its link
            self.frags[(src, dst, ipid, proto)] = (
                link.laddr, self.vnet.kernel.sched.now_ns() + FRAGMENT_EXPIRE * NS)
            if self.timer is None:
                self._arm(self.frags[(src, dst, ipid, proto)][1])
        rewrite_l4(buf, 0, False, link.laddr, link.lport, len(buf))
        return True

    def _identity(self, proto: int, src: int, sport: int, dst: int,
                  dport: int) -> Link | None:
        """The link of an incoming flow nothing redirects: None (counted) with deny_in,
        else a link to the destination itself (libalias's FindLinkIn with create, to
        FindOriginalAddress), so what answers it — the NAT host's own services, or an
        inside host with a public address — answers from the same port or id."""
        if "deny_in" in self.cfg.modes:
            self.stats.deny_in += 1
            return None
        return self._add(Link(proto, dst, dport, src, sport, dst, dport))

    def _unmatched(self) -> bool | None:
        """An incoming packet of no known flow: dropped with deny_in, else passed."""
        if "deny_in" in self.cfg.modes:
            self.stats.deny_in += 1
            return None
        return False

    def _link_in(self, proto: int, src: int, sport: int, dst: int, dport: int,
                 alias: int) -> Link | None:
        """The link of an incoming packet: an existing one, else one made from a
        redirect (libalias's partially specified links, made whole on first use)."""
        link = self._live(self.inn.get((proto, src, sport, dst, dport)))
        if link is not None:
            return link
        for r in self.cfg.redirects:
            if isinstance(r, RedirectPort):
                if r.proto == proto and (r.paddr or alias) == dst and \
                        r.pport <= dport < r.pport + r.count and r.raddr in (0, src) and \
                        r.rport in (0, sport):
                    lport = r.lport + dport - r.pport
                    return self._add(Link(proto, r.laddr, lport, src, sport, dst, dport))
            elif isinstance(r, RedirectProto):
                if r.proto == proto and (r.paddr or alias) == dst and r.raddr in (0, src) \
                        and proto not in (PROTO_TCP, PROTO_UDP, PROTO_ICMP):
                    return self._add(Link(proto, r.laddr, 0, src, 0, dst, 0))
            elif r.paddr == dst:  # redirect_addr: every protocol, ports kept
                # the inside end is keyed by the ports the remote sees, so replies match
                return self._add(Link(proto, r.laddr, dport, src, sport, dst, dport))
        return None

    # -- ICMP errors (IcmpAliasIn2 / IcmpAliasOut2) ---------------------------------------------
    def _icmp_error(self, buf: bytearray, hlen: int, alias: int, outgoing: bool) -> bool | None:
        """An ICMP error quoting a translated packet: rewrite the quote and the outer
        address, recompute the ICMP checksum. Quotes of no known flow are left alone."""
        q = hlen + 8
        n = len(buf)

        def unknown() -> bool | None:  # a quote of no known flow
            if outgoing:
                return self._addr_only_out(buf, _get32(buf, 12), alias)
            return self._unmatched()

        if n < q + 20 or buf[q] >> 4 != 4 or (buf[q] & 0x0F) < 5:
            return unknown()
        qhlen = (buf[q] & 0x0F) << 2
        qproto = buf[q + 9]
        qsrc, qdst = _get32(buf, q + 12), _get32(buf, q + 16)
        ql4 = q + qhlen
        sport = dport = 0
        if qproto in (PROTO_TCP, PROTO_UDP):
            if n < ql4 + 4:
                return unknown()
            sport, dport = _get16(buf, ql4), _get16(buf, ql4 + 2)
        elif qproto == PROTO_ICMP:
            if n < ql4 + 8 or buf[ql4] not in ICMP_QUERIES:
                return unknown()
            sport = _get16(buf, ql4 + 4)  # the query's id, on the side that sent it
        if outgoing:
            # the quote is an incoming packet an inside host got: remote -> inside
            key = (qproto, qdst, dport if qproto != PROTO_ICMP else sport, qsrc,
                   sport if qproto != PROTO_ICMP else 0)
            link = self._live(self.out.get(key))
            if link is None:
                return unknown()
            rewrite_l4(buf, q, False, link.aaddr, link.aport, n - q)
            rewrite_l4(buf, 0, True, link.aaddr, 0, q)
        else:
            # the quote is our outgoing packet: alias -> remote
            key = (qproto, qdst, dport if qproto != PROTO_ICMP else 0, qsrc, sport)
            link = self._live(self.inn.get(key))
            if link is None:
                return unknown()
            rewrite_l4(buf, q, True, link.laddr, link.lport, n - q)
            rewrite_l4(buf, 0, False, link.laddr, 0, q)
        buf[hlen + 2:hlen + 4] = b"\x00\x00"
        _put16(buf, hlen + 2, checksum(buf[hlen:]))
        return True

    # -- TCP state (TcpMonitorIn / TcpMonitorOut) --------------------------------------------------
    def _tcp_monitor(self, link: Link, flags: int, outgoing: bool) -> None:
        old = state = link.state_out if outgoing else link.state_in
        if state == TCP_NOT_CONNECTED:
            if flags & TH_RST:
                state = TCP_DISCONNECTED
            elif flags & TH_SYN:
                state = TCP_CONNECTED
        elif state == TCP_CONNECTED and flags & (TH_FIN | TH_RST):
            state = TCP_DISCONNECTED
        if state == old:
            return
        if outgoing:
            link.state_out = state
        else:
            link.state_in = state
        link.timeout = self._timeout(link)

    # -- reporting -----------------------------------------------------------------------------
    def link_counts(self) -> dict[str, int]:
        counts = {"icmp": 0, "udp": 0, "tcp": 0, "proto": 0}
        names = {PROTO_ICMP: "icmp", PROTO_UDP: "udp", PROTO_TCP: "tcp"}
        for link in self.out.values():
            counts[names.get(link.proto, "proto")] += 1
        return counts

    def close(self) -> None:
        self.flush()
