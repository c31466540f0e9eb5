"""ifconfig(8): show and configure interfaces, clone epair/lo, move them between vnets.

    ifconfig [-a | -l] [-d] [-u] [inet | ether]
    ifconfig IF [inet | ether]
    ifconfig IF [inet] ADDR[/LEN] [netmask MASK] [broadcast BCAST] [alias | -alias | delete]
                [up | down] [mtu N] [fib N] [ether | lladdr MAC] [promisc | -promisc]
                [[-]txcsum] [[-]rxcsum] [[-]txcsum6] [[-]rxcsum6] [[-]tso[4|6]] [[-]lro]
                [vnet NAME | -vnet NAME] [destroy]
    ifconfig IF inet6 ADDR[%IF][/LEN] [prefixlen LEN] [alias | -alias | delete]
                [[-]auto_linklocal] [[-]nud] [[-]no_dad] [[-]accept_rtadv]
    ifconfig epair[N] | lo[N] | tap[N] create [netns LINUX_NETNS] [parameters...]
    ifconfig bridge[N] | hub[N] create [bridge parameters...]; ifconfig bridgeN addr
    ifconfig vlan[N] create [vlan VID vlandev PARENT] [vlanpcp N]; ifconfig PARENT.VID create
    ifconfig gif[N] | gre[N] | vxlan[N] create [parameters...]  (see ifconfig_tunnel.py)
"""

from __future__ import annotations

import errno
import os
import re
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError, _libxo, ifconfig_xo
from vimage.cli import ifconfig_tunnel as tunnel_cli
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
from vimage.net import offload
from vimage.net.if_bridge import IFBAF_NAMES, IFBIF_NAMES, Bridge, create_bridge
from vimage.net.if_vlan import Vlan, create_vlan
from vimage.net.ifnet import (
    FLAG_NAMES,
    IFF_L2,
    IFF_LINK_HOOKS,
    IFF_PROMISC,
    IFF_RUNNING,
    MAX_MTU,
    MIN_MTU,
)
from vimage.net.offload import CAP_WORDS, caps_text
from vimage.netinet.in_ import in_add_addr, in_del_addr
from vimage.netinet6 import in6
from vimage.wire import ipv6 as wip6
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.cli._libxo import Xo
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

# FreeBSD's epair sets a driver bit (0x20) that ifconfig prints in the hex word
# but has no name for; shown so the flag word reads as on FreeBSD (8863).
_EPAIR_DRV_FLAG = 0x20
_CLONER_RE = re.compile(r"(epair|lo|tap|bridge|hub|vlan)(\d*)\Z")
_FAMILIES = frozenset(("inet", "inet6", "ether", "link", "lladdr"))
# ifconfig's ND flag words (af_inet6.c): word -> ND6_IFF_* bit
_ND6_WORDS = MappingProxyType({"auto_linklocal": in6.ND6_IFF_AUTO_LINKLOCAL,
                               "nud": in6.ND6_IFF_PERFORMNUD, "no_dad": in6.ND6_IFF_NO_DAD,
                               "ifdisabled": in6.ND6_IFF_IFDISABLED,
                               "accept_rtadv": in6.ND6_IFF_ACCEPT_RTADV})
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
                [[-]no_dad] [[-]accept_rtadv]
       ifconfig interface [parameters]
       ifconfig interface create [netns linux_netns] [parameters]
       ifconfig interface destroy
       ifconfig interface -vnet vnet
address_family: inet, inet6, ether
parameters: up, down, mtu n, fib n, ether mac, [-]promisc, [-]txcsum, [-]rxcsum,
       [-]txcsum6, [-]rxcsum6, [-]tso, [-]tso4, [-]tso6, [-]lro
bridge (and hub) parameters: addm if, deletem if, [-]learn if, [-]discover if,
       [-]private if, [-]span if, static if mac, deladdr mac, flush, flushall,
       maxaddr n, timeout s, ifmaxaddr if n; ifconfig bridgeN addr
vlan parameters: vlan vid, vlandev if, -vlandev, vlanpcp n, vlanproto 802.1q
tunnels (gif, gre, vxlan): tunnel src dst, -tunnel, [inet] address dest_address,
       grekey key, [-]enable_csum, [-]enable_seq, vxlanid vni, vxlanlocal addr,
       vxlanremote addr, vxlangroup addr, vxlandev if, vxlanlocalport port,
       vxlanremoteport port, vxlanportrange low high, vxlanttl ttl,
       [-]vxlanlearn, vxlantimeout seconds, vxlanmaxaddr n, vxlanflush[all]
"""


def main(ctx: Context, argv: list[str]) -> int:
    argv, style, pretty = _libxo.parse_args(argv)
    xo = _libxo.Xo(style, pretty) if style != "text" else None
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
        elif xo is not None:
            _emit_xo(ctx, xo, chosen, family)
        else:
            for ifp in chosen:
                for line in render(ifp, family, "-m" in flags):
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
        if isinstance(ifp, Vlan) and params:
            params = _vlan_create_params(ifp, params)  # applied before the name is printed
        ctx.print(ifp.name)
        if not params:
            return 0
    else:
        ifp = vnet.ifaces.get(name)
        if ifp is None:
            raise ToolError(f"interface {name} does not exist")
    if params == ["addr"] and isinstance(ifp, Bridge):
        for line in bridge_addr_lines(ifp):
            ctx.print(line)
        return 0
    if not params or (len(params) == 1 and params[0] in _FAMILIES):
        if xo is not None:
            _emit_xo(ctx, xo, [ifp], params[0] if params else None)
            return 0
        for line in render(ifp, params[0] if params else None, "-m" in flags):
            ctx.print(line)
        return 0
    if params == ["destroy"]:
        ifnet_mod.destroy(ifp)
        return 0
    configure(ctx, ifp, params)
    return 0


# -- display --------------------------------------------------------------------------
def _emit_xo(ctx: Context, xo: Xo, ifaces: list[Ifnet], family: str | None) -> None:
    """--libxo json|xml: an `interface` instance per interface in an `ifconfig`
    container (see ifconfig_xo)."""
    xo.open_container("ifconfig")
    xo.open_list("interface")
    for ifp in ifaces:
        ifconfig_xo.emit_interface(xo, ifp, family, flag_word(ifp))
    xo.close_list()
    xo.close_container()
    xo.finish(ctx)


def flag_word(ifp: Ifnet) -> str:
    names = ",".join(name for bit, name in FLAG_NAMES if ifp.flags & bit)
    value = ifp.flags & ~(IFF_LINK_HOOKS | IFF_L2)  # vimage-private bits are not shown
    value |= _EPAIR_DRV_FLAG if ifp.kind == "epair" else 0
    return f"flags={value:x}<{names}>"


def render(ifp: Ifnet, family: str | None = None, caps: bool = False) -> list[str]:
    """The lines `ifconfig IF` prints; `family` limits them to inet or link addresses;
    `caps` (-m) adds the capabilities line."""
    lines = [f"{ifp.name}: {flag_word(ifp)} metric 0 mtu {ifp.mtu}"]
    if family is None and ifp.capenable:  # (FreeBSD prints them after the flags)
        lines.append(f"\toptions={caps_text(ifp.capenable)}")
    if family is None and caps and ifp.capabilities:
        lines.append(f"\tcapabilities={caps_text(ifp.capabilities)}")
    lines += tunnel_cli.head_lines(ifp)  # gif, gre: `tunnel inet A --> B`
    if ifp.mac is not None and family in (None, "ether", "link", "lladdr"):
        lines.append(f"\tether {ifp.mac.hex(':')}")
    if family in (None, "inet"):
        for ia in ifp.addrs:
            peer = tunnel_cli.inet_peer(ifp, ia)  # a point-to-point address: ` --> B`
            line = f"\tinet {ntoa(ia.addr)}{peer} netmask {mask_hex(ia.plen)}"
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
        lines.extend(l2_status_lines(ifp))
        lines.append(f"\tgroups: {ifp.kind}")
        lines += tunnel_cli.tail_lines(ifp)  # gre key and options, vxlan configuration
        data = in6.addrs_data(ifp)
        if data is not None:  # last, as FreeBSD's ifconfig prints af_inet6's nd6 status
            lines.append(f"\tnd6 {nd6_options(data.nd_flags)}")
        lines.extend(l2_trailer_lines(ifp, lines))
    return lines


def inet6_lines(ifp: Ifnet) -> list[str]:
    """`inet6 fe80::1%lo0 prefixlen 64 scopeid 0x1`, as af_inet6.c's in6_status prints."""
    out = []
    for ia in in6.addrs(ifp):
        scoped = wip6.needs_zone(ia.addr)
        text = wip6.ntoa(ia.addr) + (f"%{ifp.name}" if scoped else "")
        peer = tunnel_cli.inet6_peer(ifp, ia.addr)  # a point-to-point address: ` --> B`
        line = f"\tinet6 {text}{peer} prefixlen {ia.plen}"
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
    tunnel = tunnel_cli.create(vnet, name)  # gif, gre, vxlan
    if tunnel is not None:
        return tunnel
    match = _CLONER_RE.match(name)
    if match is None and "." in name:
        return _create_dotted_vlan(vnet, name)
    if match is None:
        raise ToolError(f"SIOCIFCREATE2 ({name}): cannot create: the name must be"
                        " epair[N], lo[N], tap[N], bridge[N], hub[N], vlan[N], gif[N], gre[N],"
                        " vxlan[N] or IF.VID")
    if netns is not None and match.group(1) != "tap":
        raise UsageError("netns applies to tap interfaces only")
    kind, digits = match.groups()
    unit = int(digits) if digits else None
    if unit is not None and unit > 32767:
        raise ToolError(f"SIOCIFCREATE2 ({name}): unit number out of range")
    try:
        if kind == "epair":
            return ifnet_mod.create_epair(vnet, unit)[0]
        if kind in ("bridge", "hub"):
            return create_bridge(vnet, unit, kind)
        if kind == "vlan":
            return create_vlan(vnet, name)
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

    __slots__ = ("action", "addr", "addr6", "broadcast", "cap_clear", "cap_set", "fib", "inet6",
                 "mac", "moves", "mtu", "nd6_clear", "nd6_set", "netmask", "plen", "promisc",
                 "up")

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
        self.fib: int | None = None
        self.moves: list[str] = []
        self.inet6 = False  # `inet6`: the address words are IPv6
        self.addr6: tuple[int, int] | None = None
        self.nd6_set = 0
        self.nd6_clear = 0
        self.cap_set = 0  # txcsum, -tso...: capability bits to enable and disable
        self.cap_clear = 0


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
        elif word.lstrip("-") in CAP_WORDS:  # ifconfig.c's setifcap words
            bit = CAP_WORDS[word.lstrip("-")]
            if word.startswith("-"):
                req.cap_clear |= bit
            else:
                req.cap_set |= bit
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
        elif word == "fib":  # the FIB of the interface's address routes and forwarding
            text = value(word)
            if not text.isdigit():
                raise ToolError(f"fib {text}: not a number")
            req.fib = int(text)
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
    if isinstance(ifp, Bridge):
        params = _bridge_params(ifp, params)
    elif isinstance(ifp, Vlan):
        params = _vlan_params(ifp, params)
    params = tunnel_cli.configure(ifp, params)  # gif, gre, vxlan parameters
    if not params:
        return
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
    if req.cap_set or req.cap_clear:  # what the interface cannot do is ignored (setifcap)
        ifp.capenable = offload.set_caps(ifp.capenable, ifp.capabilities, req.cap_set,
                                         req.cap_clear)
    if req.fib is not None:
        if req.fib >= ifp.vnet.route.fibs:
            raise ToolError("ioctl (SIOCSIFFIB): Invalid argument")
        ifp.fib = req.fib
    added = _addresses6(ifp, req) if req.inet6 else _addresses(ifp, req)
    if req.nd6_set or req.nd6_clear:
        data = in6.ifdata(ifp)
        before = data.nd_flags
        data.nd_flags = (data.nd_flags | req.nd6_set) & ~req.nd6_clear
        if data.nd_flags & ~before & in6.ND6_IFF_ACCEPT_RTADV and ifp.up:
            ifp.vnet.nd6.rtr.start_solicit(ifp)  # solicit at once, as rtsol would
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
    ifp.vnet.kernel.ifnet_lladdr(ifp)  # the neighbours' prebuilt headers carry the old one
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


# -- bridge, hub and vlan (if_bridge(4), vlan(4); FreeBSD sbin/ifconfig/ifbridge.c,
#    ifvlan.c) --------------------------------------------------------------------------
_ND6_BRIDGE = "\tnd6 options=9<PERFORMNUD,IFDISABLED>"
_ND6_VLAN = "\tnd6 options=29<PERFORMNUD,IFDISABLED,AUTO_LINKLOCAL>"
# bridge words taking a member name and setting (+) or clearing (-) a member flag
_MEMBER_FLAG_WORDS = MappingProxyType(
    {"learn": 0x0001, "discover": 0x0002, "private": 0x0800, "sticky": 0x0010})
_BRIDGE_PATH_COST = 2000  # what FreeBSD shows for a 10 Gbit/s member


def _strerror(code: int) -> str:
    """strerror(3) as FreeBSD words it where Linux's wording differs."""
    return "Device busy" if code == errno.EBUSY else os.strerror(code)


def _bits(value: int, names: tuple[tuple[int, str], ...]) -> str:
    return f"flags={value:x}<{','.join(name for bit, name in names if value & bit)}>"


def l2_status_lines(ifp: Ifnet) -> list[str]:
    """Bridge and vlan lines of `ifconfig IF`, printed before `groups:` (bridge_status,
    vlan_status)."""
    if isinstance(ifp, Bridge):
        mac = ifp.mac.hex(":") if ifp.mac else "00:00:00:00:00:00"
        lines = [] if ifp.hub else [  # a hub has no spanning-tree or cache parameters
            f"\tid {mac} priority 32768 hellotime 2 fwddelay 15",
            f"\tmaxage 20 holdcnt 6 proto rstp maxaddr {ifp.maxaddr} timeout {ifp.timeout}",
            f"\troot id {mac} priority 32768 ifcost 0 port 0"]
        # FreeBSD inserts members at the head of its list: the newest is shown first
        ports = [*reversed(ifp.members.values()), *reversed(ifp.spans.values())]
        for member in ports:
            lines.append(f"\tmember: {member.ifp.name} {_bits(member.flags, IFBIF_NAMES)}")
            lines.append(f"\t        ifmaxaddr {member.ifmaxaddr} port {member.ifp.index} "
                         f"priority 128 path cost {_BRIDGE_PATH_COST}")
        return lines
    if isinstance(ifp, Vlan):
        parent = ifp.parent.name if ifp.parent is not None else "<none>"
        return [f"\tvlan: {ifp.vid} vlanproto: 802.1q vlanpcp: {ifp.pcp} "
                f"parent interface: {parent}",
                f"\tstatus: {'active' if ifp.flags & IFF_RUNNING else 'no carrier'}"]
    return []


def l2_trailer_lines(ifp: Ifnet, so_far: list[str]) -> list[str]:
    """The `nd6 options` line FreeBSD prints for bridges and vlans (unless another part
    of ifconfig printed one already)."""
    if any(line.startswith("\tnd6 options") for line in so_far):
        return []
    if isinstance(ifp, Bridge):
        return [_ND6_BRIDGE]
    if isinstance(ifp, Vlan):
        return [_ND6_VLAN]
    return []


def bridge_addr_lines(bridge: Bridge) -> list[str]:
    """`ifconfig bridgeN addr` (bridge_addresses): MAC, VLAN, member, seconds left, flags."""
    return [f"{mac.hex(':')} Vlan1 {ifp.name} {left} "
            f"{_bits(flags, IFBAF_NAMES)}"
            for mac, ifp, left, flags in bridge.addresses()]


def _bridge_err(cmd: str, arg: str, exc: OSError) -> ToolError:
    return ToolError(f"{cmd} {arg}: {_strerror(exc.errno or errno.EINVAL)}")


def _port(bridge: Bridge, cmd: str, name: str) -> Ifnet:
    ifp = bridge.vnet.ifaces.get(name)
    if ifp is None:
        raise ToolError(f"{cmd} {name}: {_strerror(errno.ENOENT)}")
    return ifp


def _bridge_params(bridge: Bridge, params: list[str]) -> list[str]:
    """Apply the bridge words of `params` in order (as ifconfig does, one ioctl each);
    returns the other words for the generic parser."""
    rest: list[str] = []
    i = 0
    while i < len(params):
        word = params[i]
        base = word.removeprefix("-")
        if word in ("flush", "flushall"):
            bridge.flush(all_entries=word == "flushall")
            i += 1
            continue
        nargs = {"addm": 1, "deletem": 1, "span": 1, "-span": 1, "deladdr": 1, "maxaddr": 1,
                 "timeout": 1, "static": 2, "ifmaxaddr": 2, "mtu": 1}.get(word)
        if nargs is None and base in _MEMBER_FLAG_WORDS:
            nargs = 1
        if nargs is None:
            rest.append(word)
            i += 1
            continue
        if i + nargs >= len(params):
            raise UsageError(f"'{word}' requires argument")
        _bridge_word(bridge, word, params[i + 1:i + 1 + nargs])
        i += 1 + nargs
    return rest


def _bridge_word(bridge: Bridge, word: str, args: list[str]) -> None:
    arg = args[0]
    try:
        if word == "addm":
            bridge.add_member(_port(bridge, "BRDGADD", arg))
        elif word == "deletem":
            bridge.delete_member(_port(bridge, "BRDGDEL", arg))
        elif word == "span":
            bridge.add_span(_port(bridge, "BRDGADDS", arg))
        elif word == "-span":
            bridge.delete_span(_port(bridge, "BRDGDELS", arg))
        elif word == "deladdr":
            bridge.delete_addr(parse_mac(arg))
        elif word == "static":
            bridge.add_static(_port(bridge, "BRDGSADDR", arg), parse_mac(args[1]))
        elif word in ("maxaddr", "timeout", "ifmaxaddr", "mtu"):
            text = args[-1]
            if not text.isdigit():
                raise ToolError(f"invalid value: {text}")
            if word == "mtu":
                _bridge_mtu(bridge, int(text))
            elif word == "maxaddr":
                bridge.set_maxaddr(int(text))
            elif word == "timeout":
                bridge.set_timeout(int(text))
            else:
                bridge.member(_port(bridge, "BRDGSIFMAXADDR", arg)).ifmaxaddr = int(text)
        else:
            member = bridge.member(_port(bridge, "BRDGGIFFLGS", arg))
            bit = _MEMBER_FLAG_WORDS[word.removeprefix("-")]
            member.flags = member.flags & ~bit if word.startswith("-") else member.flags | bit
    except OSError as exc:
        cmd = {"addm": "BRDGADD", "deletem": "BRDGDEL", "span": "BRDGADDS",
               "-span": "BRDGDELS", "deladdr": "BRDGDADDR", "static": "BRDGSADDR"}.get(
                   word, "BRDGSIFFLGS")
        raise _bridge_err(cmd, arg, exc) from None


def _bridge_mtu(bridge: Bridge, mtu: int) -> None:
    """`mtu N` on a bridge sets every member's MTU too (if_bridge.c, SIOCSIFMTU)."""
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ToolError(f"ioctl SIOCSIFMTU (set mtu): Invalid argument "
                        f"(mtu {mtu} is outside {MIN_MTU}..{MAX_MTU})")
    for ifp in bridge.members:
        ifp.mtu = mtu
    bridge.mtu = mtu


def _vlan_params(vlan: Vlan, params: list[str]) -> list[str]:
    """Take `vlan VID`, `vlandev IF`, `-vlandev [IF]`, `vlanpcp N`, `vlanproto P` out of
    `params` and apply them together (SIOCSETVLAN); returns the other words."""
    rest: list[str] = []
    vid = pcp = None
    parent: Ifnet | None = None
    detach = False
    i = 0
    while i < len(params):
        word = params[i]
        if word == "-vlandev":
            detach = True
            if i + 1 < len(params) and params[i + 1] in vlan.vnet.ifaces:
                i += 1  # `-vlandev IF`: the name is optional
            i += 1
            continue
        if word not in ("vlan", "vlandev", "vlanpcp", "vlanproto"):
            rest.append(word)
            i += 1
            continue
        if i + 1 >= len(params):
            raise UsageError(f"'{word}' requires argument")
        value = params[i + 1]
        i += 2
        if word == "vlandev":
            parent = vlan.vnet.ifaces.get(value)
            if parent is None:
                raise ToolError(f"SIOCSETVLAN: {_strerror(errno.ENOENT)} ({value})")
        elif word == "vlanproto":
            if value.lower() not in ("802.1q", "0x8100"):
                raise ToolError(f"invalid value for vlanproto: {value} (802.1q only)")
        elif not value.isdigit():
            raise ToolError(f"value {value}: bad {word}")
        elif word == "vlan":
            vid = int(value)
        else:
            pcp = int(value)
    try:
        if detach:
            vlan.unconfigure()
        if vid is not None or parent is not None or pcp is not None:
            if parent is None and vlan.parent is None and vid is not None:
                vlan.vid = vid  # remembered until a vlandev is given (FreeBSD does too)
                vid = None
            vlan.configure(parent, vid, pcp)
    except OSError as exc:
        raise ToolError(f"SIOCSETVLAN: {_strerror(exc.errno or errno.EINVAL)} "
                        f"({exc.strerror})") from None
    return rest


def _vlan_create_params(vlan: Vlan, params: list[str]) -> list[str]:
    """`ifconfig vlan create vlan N vlandev IF ...`: an interface that cannot be
    configured is not left behind (the parameters go with SIOCIFCREATE2)."""
    try:
        return _vlan_params(vlan, params)
    except ToolError:
        ifnet_mod.destroy(vlan)
        raise


def _create_dotted_vlan(vnet: Vnet, name: str) -> Ifnet:
    """`ifconfig epair0a.10 create`: a VLAN with its parent and VID in its name."""
    parent, _, vid = name.rpartition(".")
    if not vid.isdigit() or not parent:
        raise ToolError(f"SIOCIFCREATE2 ({name}): Invalid argument")
    try:
        return create_vlan(vnet, name)
    except FileExistsError:
        raise ToolError(f"SIOCIFCREATE2 ({name}): File exists") from None
    except OSError as exc:
        raise ToolError(f"SIOCIFCREATE2 ({name}): {_strerror(exc.errno or errno.EINVAL)}"
                        f" ({exc.strerror})") from None
