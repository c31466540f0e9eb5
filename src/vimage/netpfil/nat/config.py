"""`ipfw nat N config ...`: parsing and printing a NAT instance's configuration.

The syntax and the text `nat N show config` prints follow ipfw(8) ("NETWORK ADDRESS
TRANSLATION (NAT)") and sbin/ipfw/nat.c (`nat_show_cfg`, `ipfw_config_nat`); the
mode flags are libalias's (PKT_ALIAS_LOG, _DENY_INCOMING, _SAME_PORTS, ...), printed
in the order nat.c tests them. Errors are `ValueError` with ipfw's one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from vimage.wire import WireError
from vimage.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, aton, ntoa

# libalias mode flags, in the order nat_show_cfg prints them
MODE_FLAGS: tuple[str, ...] = ("log", "deny_in", "same_ports", "skip_global", "unreg_only",
                               "unreg_cgn", "reset", "reverse", "proxy_only")
PROTO_BY_NAME = MappingProxyType({"icmp": PROTO_ICMP, "tcp": PROTO_TCP, "udp": PROTO_UDP,
                                  "gre": 47, "esp": 50, "ah": 51, "sctp": 132, "ipip": 4,
                                  "ipv6": 41})
NAME_BY_PROTO = MappingProxyType({v: k for k, v in PROTO_BY_NAME.items()})


@dataclass(frozen=True, slots=True)
class RedirectPort:
    """redirect_port PROTO LADDR:LPORT[-LPORT] [PADDR:]PPORT[-PPORT] [RADDR[:RPORT]]."""

    proto: int
    laddr: int
    lport: int
    pport: int
    count: int = 1
    paddr: int = 0  # 0: the instance's alias address
    raddr: int = 0  # 0: any remote
    rport: int = 0  # 0: any remote port


@dataclass(frozen=True, slots=True)
class RedirectAddr:
    """redirect_addr LADDR PADDR: static NAT of one inside address, every protocol."""

    laddr: int
    paddr: int


@dataclass(frozen=True, slots=True)
class RedirectProto:
    """redirect_proto PROTO LADDR [PADDR [RADDR]]: one IP protocol to an inside host."""

    proto: int
    laddr: int
    paddr: int = 0
    raddr: int = 0


Redirect = RedirectPort | RedirectAddr | RedirectProto


@dataclass(slots=True)
class NatConfig:
    number: int
    ip: int = 0
    ifname: str = ""
    modes: frozenset[str] = frozenset()
    redirects: list[Redirect] = field(default_factory=list)
    port_range: tuple[int, int] | None = None


def _addr(text: str) -> int:
    try:
        return aton(text)
    except WireError:
        raise ValueError(f"bad ip address ``{text}''") from None


def _proto(text: str, what: str, allowed: tuple[int, ...] | None = None) -> int:
    number = PROTO_BY_NAME.get(text.lower())
    if number is None and text.isdigit() and 0 < int(text) < 256:
        number = int(text)
    if number is None or (allowed is not None and number not in allowed):
        raise ValueError(f"{what}: unknown protocol {text}")
    return number


def _ports(text: str, error: str) -> tuple[int, int]:
    """'80' or '8000-8010' -> (first, count); ValueError(error) if it is not one."""
    lo, dash, hi = text.partition("-")
    try:
        first = int(lo)
        last = int(hi) if dash else first
    except ValueError:
        first = last = -1
    if not (0 < first <= last <= 65535):
        raise ValueError(error)
    return first, last - first + 1


def _need(argv: list[str], i: int, n: int, what: str) -> None:
    if i + n > len(argv):  # nat.c: "missing option" after ip/if, else not enough arguments
        raise ValueError("missing option" if what in ("ip", "if", "port_range")
                         else f"{what}: not enough arguments")


def _is_addr_token(text: str) -> bool:
    return text[:1].isdigit() and "." in text.partition(":")[0]


def parse_config(number: int, argv: list[str]) -> NatConfig:
    """The tokens after `nat N config` -> a NatConfig (ipfw_config_nat's grammar)."""
    cfg = NatConfig(number)
    modes: set[str] = set()
    i = 0
    while i < len(argv):
        tok = argv[i]
        i += 1
        if tok == "ip":
            _need(argv, i, 1, "ip")
            cfg.ip, cfg.ifname = _addr(argv[i]), ""
            i += 1
        elif tok == "if":
            _need(argv, i, 1, "if")
            cfg.ifname, cfg.ip = argv[i], 0
            i += 1
        elif tok in MODE_FLAGS:
            modes.add(tok)
        elif tok == "port_range":
            _need(argv, i, 1, "port_range")
            bad = f"invalid port_range ``{argv[i]}''"
            first, count = _ports(argv[i], bad)
            if count < 2 or first < 1024:
                raise ValueError(bad)
            cfg.port_range = (first, first + count - 1)
            i += 1
        elif tok == "redirect_addr":
            _need(argv, i, 2, "redirect_addr")
            cfg.redirects.append(RedirectAddr(_addr(argv[i]), _addr(argv[i + 1])))
            i += 2
        elif tok == "redirect_proto":
            _need(argv, i, 2, "redirect_proto")
            proto = _proto(argv[i], "redirect_proto")
            laddr = _addr(argv[i + 1])
            i += 2
            paddr = raddr = 0
            if i < len(argv) and _is_addr_token(argv[i]):
                paddr = _addr(argv[i])
                i += 1
                if i < len(argv) and _is_addr_token(argv[i]):
                    raddr = _addr(argv[i])
                    i += 1
            cfg.redirects.append(RedirectProto(proto, laddr, paddr, raddr))
        elif tok == "redirect_port":
            i = _parse_redirect_port(argv, i, cfg)
        else:
            raise ValueError(f"unrecognised option ``{tok}''")
    cfg.modes = frozenset(modes)
    return cfg


def _parse_redirect_port(argv: list[str], i: int, cfg: NatConfig) -> int:
    what = "redirect_port"
    _need(argv, i, 3, what)
    proto = _proto(argv[i], what, (PROTO_TCP, PROTO_UDP))
    local, colon, lports = argv[i + 1].partition(":")
    if not colon:
        raise ValueError(f"{what}: invalid local port range")
    laddr = _addr(local)
    lport, lcount = _ports(lports, f"{what}: invalid local port range")
    public = argv[i + 2]
    paddr = 0
    if ":" in public:
        ptext, _, public = public.partition(":")
        paddr = _addr(ptext)
    pport, pcount = _ports(public, f"{what}: invalid public port range")
    if lcount != pcount:
        raise ValueError(f"{what}: port ranges must be equal in size")
    i += 3
    raddr = rport = 0
    if i < len(argv) and _is_addr_token(argv[i]):
        rtext, colon, rports = argv[i].partition(":")
        raddr = _addr(rtext)
        if colon:
            rport = _ports(rports, f"{what}: invalid remote port range")[0]
        i += 1
    cfg.redirects.append(RedirectPort(proto, laddr, lport, pport, pcount, paddr, raddr, rport))
    return i


def _range(first: int, count: int) -> str:
    return f"{first}-{first + count - 1}" if count > 1 else str(first)


def format_config(cfg: NatConfig) -> str:
    """One line, as `ipfw nat N show config` prints it (nat.c nat_show_cfg)."""
    out = [f"ipfw nat {cfg.number} config"]
    if cfg.ifname:
        out.append(f"if {cfg.ifname}")
    elif cfg.ip:
        out.append(f"ip {ntoa(cfg.ip)}")
    out += [flag for flag in MODE_FLAGS if flag in cfg.modes]
    for r in cfg.redirects:
        if isinstance(r, RedirectAddr):
            out.append(f"redirect_addr {ntoa(r.laddr)} {ntoa(r.paddr)}")
        elif isinstance(r, RedirectPort):
            public = f"{ntoa(r.paddr)}:" if r.paddr else ""
            text = (f"redirect_port {NAME_BY_PROTO[r.proto]} {ntoa(r.laddr)}:"
                    f"{_range(r.lport, r.count)} {public}{_range(r.pport, r.count)}")
            if r.raddr:
                text += f" {ntoa(r.raddr)}" + (f":{r.rport}" if r.rport else "")
            out.append(text)
        else:
            name = NAME_BY_PROTO.get(r.proto, str(r.proto))
            text = f"redirect_proto {name} {ntoa(r.laddr)}"
            if r.paddr:
                text += f" {ntoa(r.paddr)}" + (f" {ntoa(r.raddr)}" if r.raddr else "")
            out.append(text)
    if cfg.port_range is not None:
        out.append(f"port_range {cfg.port_range[0]}-{cfg.port_range[1]}")
    return " ".join(out)
