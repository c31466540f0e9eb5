"""ifconfig(8): show and configure interfaces, clone epair/lo, move them between vnets.

    ifconfig [-a | -l] [-d] [-u] [inet | ether]
    ifconfig IF [inet | ether]
    ifconfig IF [inet] ADDR[/LEN] [netmask MASK] [broadcast BCAST] [alias | -alias | delete]
                [up | down] [mtu N] [ether | lladdr MAC] [promisc | -promisc]
                [vnet NAME | -vnet NAME] [destroy]
    ifconfig IF inet6 ADDR[%IF][/LEN] [prefixlen LEN] [alias | -alias | delete]
                [[-]auto_linklocal] [[-]nud] [[-]no_dad]
    ifconfig epair[N] | lo[N] | tap[N] create [netns LINUX_NETNS] [parameters...]
"""

from __future__ import annotations

import errno
import re
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import (
    classful_plen,
    getopts,
    ifaces_by_index,
    mask_hex,
    parse_addr,
    parse_mac,
    parse_netmask,
    parse_plen,
    try_addr,
)
from vimage.net import ifnet as ifnet_mod
from vimage.net.ifnet import (
    FLAG_NAMES,
    IFF_LINK_HOOKS,
    IFF_PROMISC,
    IFF_RUNNING,
    MAX_MTU,
    MIN_MTU,
)
from vimage.netinet.in_ import in_add_addr, in_del_addr
from vimage.netinet6 import in6
from vimage.wire import ipv6 as wip6
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

# FreeBSD's epair sets a driver bit (0x20) that ifconfig prints in the hex word
# but has no name for; shown so the flag word reads as on FreeBSD (8863).
_EPAIR_DRV_FLAG = 0x20
_CLONER_RE = re.compile(r"(epair|lo|tap)(\d*)\Z")
_FAMILIES = frozenset(("inet", "inet6", "ether", "link", "lladdr"))
# ifconfig's ND flag words (af_inet6.c): word -> ND6_IFF_* bit
_ND6_WORDS = MappingProxyType({"auto_linklocal": in6.ND6_IFF_AUTO_LINKLOCAL,
                               "nud": in6.ND6_IFF_PERFORMNUD, "no_dad": in6.ND6_IFF_NO_DAD,
                               "ifdisabled": in6.ND6_IFF_IFDISABLED})
_DELETE_WORDS = frozenset(("-alias", "delete", "remove"))
_ALIAS_WORDS = frozenset(("alias", "add"))
_MEDIA = "media: Ethernet 10Gbase-T (10Gbase-T <full-duplex>)"


# ifconfig(8)'s usage(), adapted to what vimage implements
USAGE = """\
usage: ifconfig [-a] [-du] [address_family]
       ifconfig -l [-du] [address_family]
       ifconfig interface [address_family]
       ifconfig interface [inet] address[/len] [netmask mask] [broadcast addr]
                [alias | -alias | delete] [parameters]
       ifconfig interface inet6 address[/len] [prefixlen len]
                [alias | -alias | delete] [[-]auto_linklocal] [[-]nud]
                [[-]no_dad]
       ifconfig interface [parameters]
       ifconfig interface create [netns linux_netns] [parameters]
       ifconfig interface destroy
       ifconfig interface -vnet vnet
address_family: inet, inet6, ether
parameters: up, down, mtu n, ether mac, [-]promisc
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "adlmuv")
    flags = {o for o, _ in opts}
    only_up, only_down = "-u" in flags, "-d" in flags
    vnet = ctx.vnet
    if "-l" in flags or "-a" in flags or not args:
        extra = [a for a in args if a not in _FAMILIES] or args[1:]
        if extra:
            raise UsageError(f"unexpected argument '{extra[0]}' with -a or -l", synopsis=True)
        family = args[0] if args else None
        chosen = [i for i in ifaces_by_index(vnet)
                  if not (only_up and not i.up) and not (only_down and i.up)]
        if "-l" in flags:
            ctx.print(" ".join(i.name for i in chosen))
        else:
            for ifp in chosen:
                for line in render(ifp, family):
                    ctx.print(line)
        return 0
    name, params = args[0], args[1:]
    if params and params[0] == "-vnet":
        if len(params) != 2:
            raise UsageError()
        _reclaim(vnet, name, params[1])
        return 0
    if params and params[0] == "create":
        params = params[1:]
        netns = None
        if len(params) >= 2 and params[0] == "netns":  # tap: put the Linux side there
            netns, params = params[1], params[2:]
        ifp = create(vnet, name, netns)
        ctx.print(ifp.name)
        if not params:
            return 0
    else:
        ifp = vnet.ifaces.get(name)
        if ifp is None:
            raise ToolError(f"interface {name} does not exist")
    if not params or (len(params) == 1 and params[0] in _FAMILIES):
        for line in render(ifp, params[0] if params else None):
            ctx.print(line)
        return 0
    if params == ["destroy"]:
        ifnet_mod.destroy(ifp)
        return 0
    configure(ctx, ifp, params)
    return 0


# -- display --------------------------------------------------------------------------
def flag_word(ifp: Ifnet) -> str:
    names = ",".join(name for bit, name in FLAG_NAMES if ifp.flags & bit)
    value = (ifp.flags & ~IFF_LINK_HOOKS) | (_EPAIR_DRV_FLAG if ifp.kind == "epair" else 0)
    return f"flags={value:x}<{names}>"


def render(ifp: Ifnet, family: str | None = None) -> list[str]:
    """The lines `ifconfig IF` prints; `family` limits them to inet or link addresses."""
    lines = [f"{ifp.name}: {flag_word(ifp)} metric 0 mtu {ifp.mtu}"]
    if ifp.mac is not None and family in (None, "ether", "link", "lladdr"):
        lines.append(f"\tether {ifp.mac.hex(':')}")
    if family in (None, "inet"):
        for ia in ifp.addrs:
            line = f"\tinet {ntoa(ia.addr)} netmask {mask_hex(ia.plen)}"
            if ia.broadcast and not ifp.is_loopback:
                line += f" broadcast {ntoa(ia.broadcast)}"
            lines.append(line)
    if family in (None, "inet6"):
        in6.loopback_addrs(ifp.vnet)  # (lo0's wait for a first use of IPv6)
        lines.extend(inet6_lines(ifp))
    if family is None:
        if ifp.kind == "epair":
            lines.append(f"\t{_MEDIA}")
            lines.append(f"\tstatus: {'active' if ifp.peer is not None else 'no carrier'}")
        elif ifp.kind == "tap":
            lines.append(f"\tstatus: {'active' if ifp.flags & IFF_RUNNING else 'no carrier'}")
            lines.append(f"\tLinux side: {ifp.linux_name}"
                         + (f" in netns {ifp.netns}" if ifp.netns else ""))
        lines.append(f"\tgroups: {ifp.kind}")
        data = in6.addrs_data(ifp)
        if data is not None:
            lines.append(f"\tnd6 {nd6_options(data.nd_flags)}")
    return lines


def inet6_lines(ifp: Ifnet) -> list[str]:
    """`inet6 fe80::1%lo0 prefixlen 64 scopeid 0x1`, as af_inet6.c's in6_status prints."""
    out = []
    for ia in in6.addrs(ifp):
        scoped = wip6.needs_zone(ia.addr)
        text = wip6.ntoa(ia.addr) + (f"%{ifp.name}" if scoped else "")
        line = f"\tinet6 {text} prefixlen {ia.plen}"
        for bit, word in in6.FLAG_WORDS:
            if ia.flags & bit:
                line += f" {word}"
        if scoped:
            line += f" scopeid {ifp.index:#x}"
        out.append(line)
    return out


def nd6_options(flags: int) -> str:
    names = ",".join(name for bit, name in in6.ND6_FLAG_NAMES if flags & bit)
    return f"options={flags:x}<{names}>"


# -- cloning --------------------------------------------------------------------------
def create(vnet: Vnet, name: str, netns: str | None = None) -> Ifnet:
    """`ifconfig epair[N] | lo[N] | tap[N] create`; returns the (a-end) interface."""
    match = _CLONER_RE.match(name)
    if match is None:
        raise ToolError(f"SIOCIFCREATE2 ({name}): cannot create: the name must be"
                        " epair[N], lo[N] or tap[N]")
    if netns is not None and match.group(1) != "tap":
        raise UsageError("netns applies to tap interfaces only")
    kind, digits = match.groups()
    unit = int(digits) if digits else None
    if unit is not None and unit > 32767:
        raise ToolError(f"SIOCIFCREATE2 ({name}): unit number out of range")
    try:
        if kind == "epair":
            return ifnet_mod.create_epair(vnet, unit)[0]
        if kind == "tap":
            from vimage.net.tap import TapError, create_tap

            try:
                return create_tap(vnet, unit, netns)
            except TapError as exc:
                raise ToolError(str(exc.strerror).removeprefix("tap: ")) from None
        return ifnet_mod.create_loopback(vnet, unit)
    except FileExistsError:
        raise ToolError(f"SIOCIFCREATE2 ({name}): File exists") from None


# -- configuration ----------------------------------------------------------------------
class _Request:
    """What one `ifconfig IF ...` command line asks for, applied in FreeBSD's order."""

    __slots__ = ("action", "addr", "addr6", "broadcast", "inet6", "mac", "moves", "mtu",
                 "nd6_clear", "nd6_set", "netmask", "plen", "promisc", "up")

    def __init__(self) -> None:
        self.addr: int | None = None
        self.plen: int | None = None
        self.netmask: int | None = None
        self.broadcast: int | None = None
        self.action = "set"  # set | alias | delete
        self.up: bool | None = None
        self.mtu: int | None = None
        self.mac: bytes | None = None
        self.promisc: bool | None = None
        self.moves: list[str] = []
        self.inet6 = False  # `inet6`: the address words are IPv6
        self.addr6: tuple[int, int] | None = None
        self.nd6_set = 0
        self.nd6_clear = 0


def _parse(params: list[str]) -> _Request:
    req = _Request()
    i = 0

    def value(word: str) -> str:
        if i + 1 >= len(params):
            raise UsageError(f"'{word}' requires argument")
        return params[i + 1]

    while i < len(params):
        word = params[i]
        step = 1
        if word == "inet":
            pass
        elif word == "inet6":
            req.inet6 = True
        elif word.lstrip("-") in _ND6_WORDS:
            bit = _ND6_WORDS[word.lstrip("-")]
            if word.startswith("-"):
                req.nd6_clear |= bit
            else:
                req.nd6_set |= bit
        elif word == "prefixlen" and req.inet6:
            text = value(word)
            if not text.isdigit() or int(text) > 128:
                raise ToolError(f"{text}: bad value")
            if req.addr6 is None:
                raise ToolError("prefixlen needs an address")
            req.addr6 = (req.addr6[0], int(text))
            step = 2
        elif word in ("up", "down"):
            req.up = word == "up"
        elif word in ("promisc", "-promisc"):
            req.promisc = word == "promisc"
        elif word in _ALIAS_WORDS:
            req.action = "alias"
        elif word in _DELETE_WORDS:
            req.action = "delete"
        elif word == "mtu":
            text = value(word)
            if not text.isdigit():
                raise ToolError(f"mtu {text}: not a number")
            req.mtu = int(text)
            step = 2
        elif word in ("ether", "lladdr", "link"):
            req.mac = parse_mac(value(word))
            step = 2
        elif word == "netmask":
            req.netmask = parse_netmask(value(word))
            step = 2
        elif word == "broadcast":
            req.broadcast = parse_addr(value(word), "broadcast address")
            step = 2
        elif word == "vnet":
            req.moves.append(value(word))
            step = 2
        elif word == "-vnet":
            raise UsageError("'-vnet NAME' must come right after the interface name, alone")
        elif word in ("create", "destroy"):
            raise UsageError(f"'{word}' must come right after the interface name, alone")
        elif req.inet6:
            if req.addr6 is not None:
                raise ToolError(f"{word}: only one address per command")
            try:
                req.addr6 = in6.parse_cidr(word)
            except (ValueError, OSError):
                raise ToolError(f"{word}: bad value (not an address or a known parameter)") \
                    from None
        else:
            text, slash, plen = word.partition("/")
            addr = try_addr(text)
            if addr is None:
                raise ToolError(f"{word}: bad value (not an address or a known parameter)")
            if req.addr is not None:
                raise ToolError(f"{word}: only one address per command")
            req.addr = addr
            req.plen = parse_plen(plen) if slash else None
        i += step
    return req


def configure(ctx: Context, ifp: Ifnet, params: list[str]) -> None:
    req = _parse(params)
    if req.mtu is not None:
        if not MIN_MTU <= req.mtu <= MAX_MTU:
            raise ToolError(f"ioctl SIOCSIFMTU (set mtu): Invalid argument "
                            f"(mtu {req.mtu} is outside {MIN_MTU}..{MAX_MTU})")
        ifp.mtu = req.mtu
    if req.mac is not None:
        _set_mac(ifp, req.mac)
    if req.promisc is not None:
        ifp.flags = ifp.flags | IFF_PROMISC if req.promisc else ifp.flags & ~IFF_PROMISC
    added = _addresses6(ifp, req) if req.inet6 else _addresses(ifp, req)
    if req.nd6_set or req.nd6_clear:
        data = in6.ifdata(ifp)
        data.nd_flags = (data.nd_flags | req.nd6_set) & ~req.nd6_clear
    if req.up is not None:
        ifp.set_up(req.up)
    elif added and not ifp.up:
        ifp.set_up(True)  # as on FreeBSD, configuring an address brings the interface up
    for name in req.moves:
        target = _vnet(ctx.vnet, name)
        if target is ifp.vnet:
            raise ToolError(f"{ifp.name} is already in vnet {target.display_name}")
        ifnet_mod.move(ifp, target)


def _set_mac(ifp: Ifnet, mac: bytes) -> None:
    if ifp.mac is None:
        raise ToolError(f"ioctl (SIOCSIFLLADDR): {ifp.name} has no link-level address")
    if mac[0] & 1:
        raise ToolError(f"ioctl (SIOCSIFLLADDR): {mac.hex(':')} is a multicast address")
    ifp.mac = mac
    if ifp.up:
        for ia in ifp.addrs:  # tell the neighbours (gratuitous ARP), as FreeBSD does
            ifp.vnet.arp.announce(ifp, ia.addr)


def _addresses(ifp: Ifnet, req: _Request) -> bool:
    """Apply the address part of the request; True if an address was added."""
    if req.action == "delete":
        if req.addr is None:
            if not ifp.addrs:
                raise ToolError("ioctl (SIOCDIFADDR): Can't assign requested address")
            req.addr = ifp.addrs[0].addr
        try:
            in_del_addr(ifp, req.addr)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ToolError(f"ioctl (SIOCDIFADDR): Can't assign requested address "
                                f"({ntoa(req.addr)} is not on {ifp.name})") from None
            raise
        return False
    if req.addr is None:
        if req.netmask is None and req.broadcast is None:
            return False
        if not ifp.addrs:  # netmask/broadcast alone change the first address
            raise ToolError(f"{ifp.name} has no address to change")
        first = ifp.addrs[0]
        req.addr, req.plen, req.action = first.addr, first.plen, "set"
    plen = req.netmask if req.netmask is not None else req.plen
    if plen is None:
        plen = classful_plen(req.addr)
    owner = ifp.vnet.ip.local.get(req.addr)
    if owner is not None and owner.ifp is not ifp:
        raise ToolError(f"ioctl (SIOCAIFADDR): File exists "
                        f"({ntoa(req.addr)} is configured on {owner.ifp.name})")
    if req.action == "set" and ifp.addrs and ifp.addrs[0].addr != req.addr:
        in_del_addr(ifp, ifp.addrs[0].addr)  # without `alias` the first address is replaced
    try:
        in_add_addr(ifp, req.addr, plen, req.broadcast)
    except OSError as exc:
        raise ToolError(f"ioctl (SIOCAIFADDR): {exc.strerror or exc} ({ntoa(req.addr)})") \
            from None
    return True


def _addresses6(ifp: Ifnet, req: _Request) -> bool:
    """`inet6 ADDR[/LEN] [alias | -alias | delete]`: add (every inet6 address is an
    alias on FreeBSD) or delete; True if one was added."""
    if req.addr6 is None:
        return False
    addr, plen = req.addr6
    if req.action == "delete":
        try:
            in6.in6_del_addr(ifp, addr)
        except OSError:
            raise ToolError(f"ioctl (SIOCDIFADDR_IN6): Can't assign requested address "
                            f"({wip6.ntoa(addr)} is not on {ifp.name})") from None
        return False
    try:
        in6.in6_add_addr(ifp, addr, plen)
    except OSError as exc:
        raise ToolError(f"ioctl (SIOCAIFADDR_IN6): {exc.strerror or exc} "
                        f"({wip6.ntoa(addr)})") from None
    return True


def _vnet(here: Vnet, name: str) -> Vnet:
    try:
        return here.resolve(name)
    except LookupError:
        raise ToolError(f"vnet {name} does not exist") from None


def _reclaim(here: Vnet, name: str, vnet_name: str) -> None:
    """`ifconfig IF -vnet NAME`: take IF back from vnet NAME into this one."""
    other = _vnet(here, vnet_name)
    if other is here:
        raise ToolError(f"{name} is already in vnet {here.display_name}")
    ifp = other.ifaces.get(name)
    if ifp is None:
        raise ToolError(f"interface {name} does not exist in vnet {other.display_name}")
    ifnet_mod.move(ifp, here)
