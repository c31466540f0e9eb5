"""ifconfig(8)'s tunnel parts: gif(4), gre(4) and vxlan(4) (FreeBSD sbin/ifconfig
iftunnel.c, ifgre.c, ifvxlan.c). `ifconfig.py` calls `create`, `configure`,
`head_lines`, `tail_lines` and `inet_peer`; each returns quickly for other interfaces.

    ifconfig gif|gre[N] create
    ifconfig IF tunnel SRC DST | -tunnel | deletetunnel
    ifconfig IF [inet] A B                 point-to-point address (netmask 0xffffffff)
    ifconfig greN grekey N | enable_csum | -enable_csum | enable_seq | -enable_seq
    ifconfig vxlan[N] create vxlanid N vxlanlocal A vxlanremote B | vxlangroup G vxlandev IF
             [vxlanlocalport P] [vxlanremoteport P] [vxlanportrange LOW HIGH] [vxlanttl T]
             [vxlanlearn | -vxlanlearn] [vxlantimeout S] [vxlanmaxaddr N]
    ifconfig vxlanN vxlanflush | vxlanflushall
"""

from __future__ import annotations

import errno
import re
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import ToolError, UsageError
from vimage.cli._util import parse_addr, try_addr
from vimage.net.if_gre import GRE_ENABLE_CSUM, GRE_ENABLE_SEQ, OPTION_NAMES, Gre
from vimage.net.if_vxlan import Vxlan
from vimage.net.tunnel import Tunnel
from vimage.netinet.in_tunnel import add_p2p_addr, del_p2p_addr
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.in_ import InAddr
    from vimage.vnet import Vnet

_CLONER_RE = re.compile(r"(gif|gre|vxlan)(\d*)\Z")
_GRE_FLAGS = MappingProxyType({"enable_csum": GRE_ENABLE_CSUM, "enable_seq": GRE_ENABLE_SEQ})
_DELETE_WORDS = frozenset(("-alias", "delete", "remove"))
_WITH_VALUE = frozenset(("netmask", "broadcast", "mtu", "ether", "lladdr", "link", "vnet"))
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
    tunnel: tuple[int, int] | None = None
    delete_tunnel = False
    key: int | None = None
    addrs: list[int] = []
    i = 0
    while i < len(params):
        word = params[i]
        if word == "tunnel":
            src, dst = _value(params, i, 2)
            tunnel = (parse_addr(src, "tunnel source"), parse_addr(dst, "tunnel destination"))
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
        _apply(lambda: ifp.set_tunnel(*tunnel), "SIOCSIFPHYADDR")
        if not ifp.up:
            ifp.set_up(True)  # FreeBSD marks a tunnel running once its addresses are set
    return _p2p_addresses(ifp, addrs, rest)


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
            settings[_VXLAN_ADDR[word]] = parse_addr(_value(params, i)[0], word)
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
    group = settings.get("group")
    if group is not None and group >> 28 != 0xE:  # type: ignore[operator]
        raise ToolError(f"vxlangroup {ntoa(group)}: not a multicast address")  # type: ignore[arg-type]
    remote = settings.get("remote")
    if remote is not None and remote >> 28 == 0xE:  # type: ignore[operator]
        settings["group"], settings["remote"] = remote, 0  # FreeBSD: a multicast remote
    if settings:
        ifp.configure(**settings)
    if flush:
        ifp.flush()
    return rest


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
        return [f"\ttunnel inet {ntoa(ifp.src)} --> {ntoa(ifp.dst)}"]
    return []


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
            lines.append(f"\tvxlan vni {ifp.vni} local {ntoa(ifp.local)}:{ifp.lport} "
                         f"{'group' if ifp.group else 'remote'} {ntoa(far)}:{ifp.rport}")
        lines.append(f"\t{_VXLAN_MEDIA}")
        lines.append(f"\tstatus: {'active' if ifp.sock is not None else 'no carrier'}")
        return lines
    return []
