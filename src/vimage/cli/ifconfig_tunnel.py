"""ifconfig(8)'s tunnel parts: gif(4), gre(4) and vxlan(4) (FreeBSD sbin/ifconfig
iftunnel.c, ifgre.c, ifvxlan.c). `ifconfig.py` calls `create`, `configure`,
`head_lines`, `tail_lines` and `inet_peer`; each returns quickly for other interfaces.

    ifconfig gif|gre[N] create
    ifconfig IF tunnel SRC DST | -tunnel | deletetunnel   (IPv4 or IPv6 outer addresses)
    ifconfig IF [inet] A B                 point-to-point address (netmask 0xffffffff)
    ifconfig IF inet6 A B prefixlen 128    point-to-point IPv6 address
    ifconfig greN grekey N | enable_csum | -enable_csum | enable_seq | -enable_seq
    ifconfig vxlan[N] create vxlanid N vxlanlocal A vxlanremote B | vxlangroup G vxlandev IF
             (A and B, or A and G, both IPv4 or both IPv6)
             [vxlanlocalport P] [vxlanremoteport P] [vxlanportrange LOW HIGH] [vxlanttl T]
             [vxlanlearn | -vxlanlearn] [vxlantimeout S] [vxlanmaxaddr N]
    ifconfig vxlanN vxlanflush | vxlanflushall
"""

from __future__ import annotations

import errno
import re
from socket import AF_INET, AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import ToolError, UsageError
from vimage.cli._util import parse_addr, try_addr
from vimage.net.if_gre import GRE_ENABLE_CSUM, GRE_ENABLE_SEQ, OPTION_NAMES, Gre
from vimage.net.if_vxlan import Vxlan
from vimage.net.tunnel import Tunnel
from vimage.netinet.in_tunnel import add_p2p_addr, del_p2p_addr
from vimage.netinet6.in6_tunnel import add_p2p_addr6, del_p2p_addr6
from vimage.wire import WireError
from vimage.wire import ipv6 as wip6
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.in_ import InAddr
    from vimage.vnet import Vnet

_CLONER_RE = re.compile(r"(gif|gre|vxlan)(\d*)\Z")
_GRE_FLAGS = MappingProxyType({"enable_csum": GRE_ENABLE_CSUM, "enable_seq": GRE_ENABLE_SEQ})
_DELETE_WORDS = frozenset(("-alias", "delete", "remove"))
_WITH_VALUE = frozenset(("netmask", "broadcast", "mtu", "ether", "lladdr", "link", "vnet",
                         "prefixlen", "fib"))
# vxlan parameters taking one number or address -> the setting
_VXLAN_INT = MappingProxyType({
    "vxlanid": "vni", "vxlanlocalport": "lport", "vxlanremoteport": "rport", "vxlanttl": "ttl",
    "vxlantimeout": "timeout", "vxlanmaxaddr": "maxaddr"})
_VXLAN_ADDR = MappingProxyType({"vxlanlocal": "local", "vxlanremote": "remote",
                                "vxlangroup": "group"})
_VXLAN_LIMITS = MappingProxyType({
    "vni": (0, (1 << 24) - 1), "lport": (1, 65535), "rport": (1, 65535), "ttl": (1, 255),
    "timeout": (0, 2**31 - 1), "maxaddr": (0, 2**31 - 1)})
_VXLAN_MEDIA = "media: Ethernet autoselect (autoselect <full-duplex>)"


def create(vnet: Vnet, name: str) -> Ifnet | None:
    """`ifconfig gif|gre|vxlan[N] create`; None if `name` is not one of ours."""
    match = _CLONER_RE.match(name)
    if match is None:
        return None
    kind, digits = match.groups()
    try:
        return vnet.kernel.cloner(kind).create(vnet, int(digits) if digits else None)
    except FileExistsError:
        raise ToolError(f"SIOCIFCREATE2 ({name}): File exists") from None


# -- configuration ----------------------------------------------------------------------
def configure(ifp: Ifnet, params: list[str]) -> list[str]:
    """Apply the tunnel parameters in `params`; the rest is returned for ifconfig."""
    if isinstance(ifp, Tunnel):
        return _configure_tunnel(ifp, params)
    if isinstance(ifp, Vxlan):
        return _configure_vxlan(ifp, params)
    return params


def _value(params: list[str], i: int, n: int = 1) -> list[str]:
    if i + n >= len(params):
        raise UsageError(f"'{params[i]}' requires argument")
    return params[i + 1:i + 1 + n]


def _configure_tunnel(ifp: Tunnel, params: list[str]) -> list[str]:
    rest: list[str] = []
    tunnel: tuple[int, int, int] | None = None
    delete_tunnel = False
    key: int | None = None
    addrs: list[int] = []
    i = 0
    while i < len(params):
        word = params[i]
        if word == "tunnel":
            src, dst = _value(params, i, 2)
            tunnel = _tunnel_addrs(src, dst)
            i += 3
            continue
        if word in ("-tunnel", "deletetunnel"):
            delete_tunnel = True
        elif word == "grekey" and isinstance(ifp, Gre):
            text = _value(params, i)[0]
            key = _number(text, "grekey", 0, 0xFFFFFFFF)
            i += 2
            continue
        elif word.lstrip("-") in _GRE_FLAGS and isinstance(ifp, Gre):
            bit = _GRE_FLAGS[word.lstrip("-")]
            ifp.options = ifp.options & ~bit if word.startswith("-") else ifp.options | bit
        elif word in _WITH_VALUE:  # ifconfig's, with its value (a netmask is no address)
            rest.extend(params[i:i + 2])
            i += 2
            continue
        elif (addr := try_addr(word)) is not None:
            addrs.append(addr)
        else:
            rest.append(word)
        i += 1
    if key is not None:
        _apply(lambda: ifp.set_key(key), "GRESKEY")  # type: ignore[attr-defined]
    if delete_tunnel:
        ifp.delete_tunnel()
    if tunnel is not None:
        ioctl = "SIOCSIFPHYADDR_IN6" if tunnel[2] == AF_INET6 else "SIOCSIFPHYADDR"
        _apply(lambda: ifp.set_tunnel(*tunnel), ioctl)
        if not ifp.up:
            ifp.set_up(True)  # FreeBSD marks a tunnel running once its addresses are set
    if "inet6" in rest:
        return _p2p_addresses6(ifp, rest)
    return _p2p_addresses(ifp, addrs, rest)


def _tunnel_addrs(src: str, dst: str) -> tuple[int, int, int]:
    """`tunnel SRC DST`: (source, destination, family), both IPv4 or both IPv6
    (iftunnel.c settunnel: "source and destination address families do not match")."""
    v4 = try_addr(src), try_addr(dst)
    if v4[0] is not None and v4[1] is not None:
        return v4[0], v4[1], AF_INET
    v6 = _try_addr6(src), _try_addr6(dst)
    if v6[0] is not None and v6[1] is not None:
        if wip6.is_multicast(v6[0]) or wip6.is_multicast(v6[1]):
            raise ToolError("ioctl (SIOCSIFPHYADDR_IN6): Invalid argument")
        return v6[0], v6[1], AF_INET6
    if (v4[0] is None and v6[0] is None) or (v4[1] is None and v6[1] is None):
        bad = src if v4[0] is None and v6[0] is None else dst
        raise ToolError(f"bad tunnel address: {bad}")
    raise ToolError("source and destination address families do not match")


def _try_addr6(text: str) -> int | None:
    try:
        return wip6.aton(text)
    except WireError:
        return None


def _p2p_addresses6(ifp: Tunnel, rest: list[str]) -> list[str]:
    """`inet6 A B [prefixlen 128]`: a point-to-point IPv6 address (in6_update_ifa with a
    destination; every inet6 address is an alias); `inet6 A delete` removes it. One
    address alone is ifconfig's business."""
    addrs: list[int] = []
    others: list[str] = []
    plen = 64  # ifconfig's default prefix length (af_inet6.c)
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "prefixlen" and i + 1 < len(rest):
            text = rest[i + 1]
            if not text.isdigit() or int(text) > 128:
                raise ToolError(f"{text}: bad value")
            plen = int(text)
            i += 2
            continue
        addr = _try_addr6(word)
        if addr is not None:
            addrs.append(addr)
        else:
            others.append(word)
        i += 1
    deleting = any(w in _DELETE_WORDS for w in others)
    if deleting and addrs and addrs[0] in ifp.peers6:
        _apply(lambda: del_p2p_addr6(ifp, addrs[0]), "SIOCDIFADDR_IN6")
        return []
    if len(addrs) < 2:
        return rest
    if len(addrs) > 2:
        raise ToolError(f"{wip6.ntoa(addrs[2])}: only one address pair per command")
    _apply(lambda: add_p2p_addr6(ifp, addrs[0], addrs[1], plen), "SIOCAIFADDR_IN6")
    if not ifp.up:
        ifp.set_up(True)
    return [w for w in others if w not in ("inet6", "alias", "add")]


def _p2p_addresses(ifp: Tunnel, addrs: list[int], rest: list[str]) -> list[str]:
    """`[inet] A B [alias]`: a point-to-point address (replacing the first one unless
    `alias`); `A [B] delete` removes it; one address alone is ifconfig's business."""
    if any(w in _DELETE_WORDS for w in rest) and addrs and addrs[0] in ifp.peers:
        _apply(lambda: del_p2p_addr(ifp, addrs[0]), "SIOCDIFADDR")
        return [w for w in rest if w not in _DELETE_WORDS and w != "inet"]
    if len(addrs) == 1:
        return [*rest, ntoa(addrs[0])]
    if len(addrs) > 2:
        raise ToolError(f"{ntoa(addrs[2])}: only one address pair per command")
    if addrs:
        alias = any(w in ("alias", "add") for w in rest)
        rest = [w for w in rest if w not in ("inet", "alias", "add")]
        for i, word in enumerate(rest):
            if word == "netmask":  # a point-to-point address is a /32 whatever the mask
                del rest[i:i + 2]
                break
        if not alias:  # without `alias` the address is replaced
            for old in [a for a in ifp.peers if a != addrs[0]]:
                del_p2p_addr(ifp, old)
        _apply(lambda: add_p2p_addr(ifp, addrs[0], addrs[1]), "SIOCAIFADDR")
        if not ifp.up:
            ifp.set_up(True)
    return rest


def _configure_vxlan(ifp: Vxlan, params: list[str]) -> list[str]:
    rest: list[str] = []
    settings: dict[str, object] = {}
    flush = False
    i = 0
    while i < len(params):
        word = params[i]
        step = 1
        if word in _VXLAN_INT:
            name = _VXLAN_INT[word]
            settings[name] = _number(_value(params, i)[0], word, *_VXLAN_LIMITS[name])
            step = 2
        elif word in _VXLAN_ADDR:
            addr, family = _vxlan_addr(_value(params, i)[0], word)
            settings[_VXLAN_ADDR[word]] = addr
            _vxlan_family(ifp, settings, family)
            step = 2
        elif word == "vxlandev":
            settings["dev"] = _value(params, i)[0]
            step = 2
        elif word == "vxlanportrange":
            low, high = (_number(v, word, 1, 65535) for v in _value(params, i, 2))
            if low > high:
                raise ToolError(f"vxlanportrange {low} {high}: invalid port range")
            settings["port_min"], settings["port_max"] = low, high
            step = 3
        elif word in ("vxlanlearn", "-vxlanlearn"):
            settings["learn"] = word == "vxlanlearn"
        elif word in ("vxlanflush", "vxlanflushall"):
            flush = True
        else:
            rest.append(word)
        i += step
    _vxlan_groups(settings)
    if settings:
        ifp.configure(**settings)
    if flush:
        ifp.flush()
    return rest


def _vxlan_addr(text: str, what: str) -> tuple[int, int]:
    """A vxlan address, IPv4 or IPv6 (ifvxlan.c: getaddrinfo with AF_UNSPEC)."""
    v6 = _try_addr6(text) if ":" in text else None
    if v6 is not None:
        return v6, AF_INET6
    return parse_addr(text, what), AF_INET


def _vxlan_family(ifp: Vxlan, settings: dict[str, object], family: int) -> None:
    """The outer addresses are all of one family (FreeBSD vxlan_ctrl_set_local/remote
    refuse a mix: EAFNOSUPPORT), counting those already set and not being replaced."""
    if settings.setdefault("family", family) != family:
        raise ToolError("vxlan: local and remote address families do not match")
    kept = [getattr(ifp, n) for n in ("local", "remote", "group") if n not in settings]
    if ifp.family != family and any(kept):
        raise ToolError("vxlan: local and remote address families do not match")


def _vxlan_groups(settings: dict[str, object]) -> None:
    """vxlangroup must be multicast; a multicast vxlanremote is the group (FreeBSD)."""
    v6 = settings.get("family") == AF_INET6
    show = wip6.ntoa if v6 else ntoa
    is_group = wip6.is_multicast if v6 else (lambda a: a >> 28 == 0xE)
    group = settings.get("group")
    if group is not None and not is_group(group):
        raise ToolError(f"vxlangroup {show(group)}: not a multicast address")  # type: ignore[arg-type]
    remote = settings.get("remote")
    if remote is not None and is_group(remote):
        settings["group"], settings["remote"] = remote, 0  # FreeBSD: a multicast remote


def _number(text: str, what: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ToolError(f"{what} {text}: invalid value") from None
    if not lo <= value <= hi:
        raise ToolError(f"{what} {text}: out of range {lo}..{hi}")
    return value


def _apply(action, ioctl: str) -> None:  # type: ignore[no-untyped-def]
    try:
        action()
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise ToolError(f"ioctl ({ioctl}): {reason}") from None


# -- display ----------------------------------------------------------------------------
def head_lines(ifp: Ifnet) -> list[str]:
    """Lines right after the flags line: `tunnel inet A --> B` (iftunnel.c)."""
    if isinstance(ifp, Tunnel) and ifp.dst:
        if ifp.family == AF_INET6:
            return [f"\ttunnel inet6 {wip6.ntoa(ifp.src)} --> {wip6.ntoa(ifp.dst)}"]
        return [f"\ttunnel inet {ntoa(ifp.src)} --> {ntoa(ifp.dst)}"]
    return []


def inet6_peer(ifp: Ifnet, addr: int) -> str:
    """` --> B` after a point-to-point IPv6 address (af_inet6.c in6_status)."""
    peers = getattr(ifp, "peers6", None)
    dst = peers.get(addr) if peers else None
    return f" --> {wip6.ntoa(dst)}" if dst else ""


def inet_peer(ifp: Ifnet, ia: InAddr) -> str:
    """` --> B` after a point-to-point address."""
    peers = getattr(ifp, "peers", None)
    dst = peers.get(ia.addr) if peers else None
    return f" --> {ntoa(dst)}" if dst else ""


def tail_lines(ifp: Ifnet) -> list[str]:
    """Lines after `groups:`: GRE's key and options (ifgre.c), vxlan's configuration
    (ifvxlan.c), media and status."""
    if isinstance(ifp, Gre):
        lines = []
        if ifp.key:
            lines.append(f"\tgrekey: {ifp.key:#x} ({ifp.key})")
        if ifp.options:
            names = ",".join(name for bit, name in OPTION_NAMES if ifp.options & bit)
            lines.append(f"\toptions={ifp.options:x}<{names}>")
        return lines
    if isinstance(ifp, Vxlan):
        lines = []
        if ifp.vni is not None:
            far = ifp.group or ifp.remote
            if ifp.family == AF_INET6:  # ifvxlan.c: an IPv6 address in brackets
                local, far_s = f"[{wip6.ntoa(ifp.local)}]", f"[{wip6.ntoa(far)}]"
            else:
                local, far_s = ntoa(ifp.local), ntoa(far)
            lines.append(f"\tvxlan vni {ifp.vni} local {local}:{ifp.lport} "
                         f"{'group' if ifp.group else 'remote'} {far_s}:{ifp.rport}")
        lines.append(f"\t{_VXLAN_MEDIA}")
        lines.append(f"\tstatus: {'active' if ifp.sock is not None else 'no carrier'}")
        return lines
    return []
