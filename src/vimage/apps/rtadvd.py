"""A router advertisement daemon (FreeBSD rtadvd(8), rtadvd.conf(5)) as a service on
the kernel loop.

It runs in one vnet, advertising on the interfaces it was given: unsolicited RAs to
ff02::1 at a random interval in [mininterval, maxinterval] (the first
MAX_INITIAL_RTR_ADVERTISEMENTS at most MAX_INITIAL_RTR_ADVERT_INTERVAL apart), and an
answer to each router solicitation after a random delay up to MAX_RA_DELAY_TIME, no
sooner than MIN_DELAY_BETWEEN_RAS after the last (RFC 4861 6.2.4, 6.2.6). It hears
solicitations through the kernel's ICMPv6 listeners (as rtadvd reads a raw ICMPv6
socket) and joins ff02::2 on its links. Stopping sends a final RA with router lifetime
0, so hosts drop it as their default router at once (RFC 4861 6.2.5).

Configuration per interface with rtadvd.conf(5)'s key words (termcap style: `epair0a:
:maxinterval#60:addr="2001:db8:1::":prefixlen#64:`); without an entry, the prefixes
of the interface's global addresses are advertised with the defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.net.route import MASKS6
from vimage.netinet6 import in6
from vimage.sched import NS_PER_S
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv6 as wip6

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vimage.net.ifnet import Ifnet
    from vimage.sched import Timer
    from vimage.vnet import Vnet

# RFC 4861 10: router constants
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS_NS = 3 * NS_PER_S
MAX_RA_DELAY_TIME_NS = NS_PER_S // 2

# rtadvd.conf(5) flag letters
_RAFLAGS = MappingProxyType({"m": wicmp6.RA_MANAGED, "o": wicmp6.RA_OTHER, "h": 0x08, "l": 0x18})
_PINFOFLAGS = MappingProxyType({"l": wicmp6.PREFIX_ONLINK, "a": wicmp6.PREFIX_AUTO})
NUMERIC_KEYS = frozenset({"maxinterval", "mininterval", "rltime", "prefixlen", "vltime",
                          "pltime", "chlim", "rtime", "retrans"})
KEYS = NUMERIC_KEYS | {"raflags", "pinfoflags", "addr", "mtu", "tc"}


class ConfigError(ValueError):
    """A bad rtadvd.conf entry."""


@dataclass
class RaConfig:
    """One interface's advertisement (rtadvd.conf(5) key words and defaults)."""

    maxinterval: int = 600
    mininterval: int | None = None  # default 0.33 * maxinterval
    rltime: int | None = None  # router lifetime, default 3 * maxinterval
    raflags: int = 0
    pinfoflags: int = wicmp6.PREFIX_ONLINK | wicmp6.PREFIX_AUTO
    prefixes: list[tuple[int, int]] = field(default_factory=list)  # (addr, prefixlen)
    vltime: int = 2592000
    pltime: int = 604800
    mtu: int | str = 0  # 0: no MTU option; "auto": the link's MTU
    chlim: int = 64
    rtime: int = 0  # reachable time (ms)
    retrans: int = 0  # retrans timer (ms)

    def check(self) -> None:
        if not 4 <= self.maxinterval <= 1800:
            raise ConfigError(f"maxinterval ({self.maxinterval}) must be within 4..1800")
        low = self.min_interval
        if not 3 <= low <= self.maxinterval * 3 // 4:
            raise ConfigError(f"mininterval ({low}) must be within 3..{self.maxinterval * 3 // 4}")
        if not 0 <= self.router_lifetime <= 9000:
            raise ConfigError(f"rltime ({self.router_lifetime}) must be within 0..9000")
        if self.pltime > self.vltime:
            raise ConfigError(f"pltime ({self.pltime}) is larger than vltime ({self.vltime})")

    @property
    def min_interval(self) -> int:
        return self.mininterval if self.mininterval is not None else max(
            3, self.maxinterval * 33 // 100)

    @property
    def router_lifetime(self) -> int:
        return self.rltime if self.rltime is not None else 3 * self.maxinterval


def _flags(value: str, letters: Mapping[str, int]) -> int:
    if value.isdigit():
        return int(value)
    out = 0
    for ch in value:
        if ch not in letters:
            raise ConfigError(f"unknown flag '{ch}'")
        out |= letters[ch]
    return out


def parse_conf(text: str) -> dict[str, RaConfig]:
    """rtadvd.conf: termcap-style entries `name|alias:key#num:key="str":flag:` with
    backslash continuations and `#` comments; `tc=name` copies another entry first."""
    joined = re.sub(r"\\\n\s*", "", text)
    raw: dict[str, dict[str, str]] = {}
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names, _, rest = line.partition(":")
        fields: dict[str, str] = {}
        for item in re.findall(r'(?:"[^"]*"|[^:])+', rest):  # colons inside quotes stay
            item = item.strip()
            if not item:
                continue
            m = re.fullmatch(r"([a-z]+\d?)(?:#(\S+)|=\"?([^\"]*)\"?)?", item)
            if m is None:
                raise ConfigError(f"bad field '{item}'")
            fields[m.group(1)] = m.group(2) if m.group(2) is not None else (m.group(3) or "")
        for name in names.split("|"):
            raw[name.strip()] = fields
    return {name: _entry(name, raw) for name in raw}


def _entry(name: str, raw: dict[str, dict[str, str]], depth: int = 0) -> RaConfig:
    fields = raw[name]
    cfg = RaConfig()
    if "tc" in fields:
        if fields["tc"] not in raw or depth > 8:
            raise ConfigError(f"{name}: tc={fields['tc']}: no such entry")
        cfg = _entry(fields["tc"], raw, depth + 1)
        cfg.prefixes = list(cfg.prefixes)
    addrs: dict[str, int] = {}
    plens: dict[str, int] = {}
    for key, value in fields.items():
        base, idx = key.rstrip("0123456789"), key[len(key.rstrip("0123456789")):]
        if base not in KEYS:
            raise ConfigError(f"{name}: unknown key word '{key}'")
        try:
            if base == "addr":
                addrs[idx] = wip6.aton(value)
            elif base == "prefixlen":
                plens[idx] = int(value)
            elif base == "raflags":
                cfg.raflags = _flags(value, _RAFLAGS)
            elif base == "pinfoflags":
                cfg.pinfoflags = _flags(value, _PINFOFLAGS)
            elif base == "mtu":
                cfg.mtu = value if value == "auto" else int(value)
            elif base in NUMERIC_KEYS:
                setattr(cfg, base, int(value))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{name}: {key}: bad value '{value}'") from exc
    if addrs:
        cfg.prefixes = []
        for idx, addr in sorted(addrs.items()):
            plen = plens.get(idx, plens.get("", 64))
            if not 0 <= plen <= 128:
                raise ConfigError(f"{name}: prefixlen {plen} out of range")
            cfg.prefixes.append((addr & MASKS6[plen], plen))
    cfg.check()
    return cfg


def interface_prefixes(ifp: Ifnet) -> list[tuple[int, int]]:
    """The prefixes of `ifp`'s global addresses (what rtadvd advertises by default)."""
    out: list[tuple[int, int]] = []
    for ia in in6.addrs(ifp):
        if wip6.scope(ia.addr) == wip6.SCOPE_GLOBAL and ia.plen <= 64:
            pfx = (ia.addr & MASKS6[ia.plen], ia.plen)
            if pfx not in out:
                out.append(pfx)
    return out


class _Link:
    __slots__ = ("cfg", "ifp", "initial", "last_ns", "timer")

    def __init__(self, ifp: Ifnet, cfg: RaConfig) -> None:
        self.ifp = ifp
        self.cfg = cfg
        self.initial = 0  # unsolicited RAs sent
        self.last_ns = -MIN_DELAY_BETWEEN_RAS_NS
        self.timer: Timer | None = None


class Rtadvd:
    """The daemon in one vnet (kept on `vnet.nd6.rtr.daemon`)."""

    def __init__(self, vnet: Vnet, configs: dict[str, RaConfig]) -> None:
        self.vnet = vnet
        self.links: dict[int, _Link] = {}
        self.sent = 0  # RAs sent
        self.solicits = 0  # RSs answered
        for name, cfg in configs.items():
            ifp = vnet.ifaces[name]
            self.links[ifp.index] = _Link(ifp, cfg)

    # -- life -----------------------------------------------------------------------------
    def start(self) -> None:
        rtr = self.vnet.nd6.rtr
        if rtr.daemon is not None:
            raise OSError(17, "rtadvd is already running in this vnet")
        rtr.daemon = self
        self.vnet.icmp6.add_listener(self._heard)
        for link in self.links.values():
            in6.join(link.ifp, wip6.ALL_ROUTERS)
            self._schedule(link, self._random_interval(link))

    def stop(self, final: bool = True) -> None:
        """Stop advertising; `final` sends RAs with router lifetime 0 first."""
        vnet = self.vnet
        if vnet.nd6.rtr_state is not None and vnet.nd6.rtr_state.daemon is self:
            vnet.nd6.rtr_state.daemon = None
        vnet.icmp6.remove_listener(self._heard)
        for link in self.links.values():
            if link.timer is not None:
                link.timer.cancel()
                link.timer = None
            if final and vnet.alive and link.ifp.vnet is vnet:
                self._advertise(link, lifetime=0)
            if link.ifp.vnet is vnet and in6.addrs_data(link.ifp) is not None:
                in6.leave(link.ifp, wip6.ALL_ROUTERS)
        self.links.clear()

    # -- timing ---------------------------------------------------------------------------
    def _random_interval(self, link: _Link) -> int:
        cfg = link.cfg
        low, high = cfg.min_interval * NS_PER_S, cfg.maxinterval * NS_PER_S
        delay = low + self.vnet.rng.randrange(high - low + 1)
        if link.initial < MAX_INITIAL_RTR_ADVERTISEMENTS:
            delay = min(delay, MAX_INITIAL_RTR_ADVERT_INTERVAL * NS_PER_S)
            if link.initial == 0:  # the first soon after starting
                delay = self.vnet.rng.randrange(MAX_RA_DELAY_TIME_NS)
        return delay

    def _schedule(self, link: _Link, delay_ns: int) -> None:
        if link.timer is not None:
            link.timer.cancel()
        link.timer = self.vnet.kernel.sched.call_later(delay_ns, self._tick, link,
                                                       owner=self.vnet)

    def _tick(self, link: _Link) -> None:
        link.timer = None
        if link.ifp.vnet is not self.vnet:
            return
        self._advertise(link)
        link.initial += 1
        self._schedule(link, self._random_interval(link))

    # -- solicitations -------------------------------------------------------------------
    def _heard(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """An ICMPv6 message: an RS on one of our links gets an answer (RFC 4861 6.2.6)."""
        if pkt[off] != wicmp6.ROUTER_SOLICIT or pkt[7] != 255 or pkt[off + 1] != 0:
            return
        link = self.links.get(ifp.index)
        if link is None or link.ifp is not ifp:
            return
        try:
            options = wicmp6.parse_options(pkt[off + 8:])
        except ValueError:
            return
        slla = wicmp6.find_lladdr(options, wicmp6.ND_OPT_SOURCE_LINKADDR)
        if slla is not None:
            if not src:
                return  # RFC 4861 6.1.1: no source link-layer option from ::
            self.vnet.nd6.cache_lladdr(ifp, src, slla)
        self.solicits += 1
        now = self.vnet.kernel.sched.now_ns()
        delay = self.vnet.rng.randrange(MAX_RA_DELAY_TIME_NS)
        earliest = link.last_ns + MIN_DELAY_BETWEEN_RAS_NS
        when = max(now + delay, earliest)
        pending = link.timer
        if pending is None or pending.when > when:
            self._schedule(link, when - now)

    # -- the advertisement ---------------------------------------------------------------
    def build(self, link: _Link, lifetime: int | None = None) -> tuple[int, bytes] | None:
        """(source, message) of an RA on `link`, or None without a ready link-local."""
        ifp = link.ifp
        cfg = link.cfg
        src = 0
        for ia in in6.addrs(ifp):
            if ia.ready and wip6.is_link_local(ia.addr):
                src = ia.addr
                break
        if not src or ifp.mac is None:
            return None
        opts = wicmp6.opt_lladdr(wicmp6.ND_OPT_SOURCE_LINKADDR, ifp.mac)
        mtu = ifp.mtu if cfg.mtu == "auto" else int(cfg.mtu)
        if mtu:
            opts += wicmp6.opt_mtu(mtu)
        prefixes = cfg.prefixes or interface_prefixes(ifp)
        for prefix, plen in prefixes:
            opts += wicmp6.opt_prefix(prefix, plen, cfg.pinfoflags, cfg.vltime, cfg.pltime)
        rl = cfg.router_lifetime if lifetime is None else lifetime
        msg = wicmp6.build_ra(cfg.chlim, cfg.raflags, rl, cfg.rtime, cfg.retrans, opts,
                              src, wip6.ALL_NODES)
        return src, msg

    def _advertise(self, link: _Link, lifetime: int | None = None) -> None:
        if not link.ifp.up:
            return
        built = self.build(link, lifetime)
        if built is None:
            return
        src, msg = built
        self.vnet.icmp6.send_link(link.ifp, wip6.multicast_mac(wip6.ALL_NODES), src,
                                  wip6.ALL_NODES, msg)
        self.sent += 1
        link.last_ns = self.vnet.kernel.sched.now_ns()


def start(vnet: Vnet, ifnames: list[str], conf_text: str | None = None) -> Rtadvd:
    """Start rtadvd in `vnet` on `ifnames`, configured by rtadvd.conf text (or defaults)."""
    entries = parse_conf(conf_text) if conf_text else {}
    configs: dict[str, RaConfig] = {}
    for name in ifnames:
        ifp = vnet.ifaces.get(name)
        if ifp is None or ifp.mac is None:
            raise ConfigError(f"{name}: no such Ethernet interface")
        configs[name] = entries.get(name) or entries.get("default") or RaConfig()
    daemon = Rtadvd(vnet, configs)
    daemon.start()
    return daemon


def running(vnet: Vnet) -> Rtadvd | None:
    state = vnet.nd6.rtr_state
    return state.daemon if state is not None else None
