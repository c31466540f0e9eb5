"""route(8): manipulate the vnet's routing tables through a routing socket.

    route [-n] [-F fib] add [-net | -host] DEST[/LEN] GATEWAY [NETMASK] [modifiers]
                      (-fib N, or a list: -fib 0,2 or -fib 1-3, one request each)
    route [-n] add default GATEWAY
    route [-n] change DEST[/LEN] [GATEWAY] [modifiers]
    route [-n] delete DEST[/LEN] [GATEWAY]
    route [-n] get | show DEST
    route [-n] flush
    route monitor [-fib N] [-count N]
    route -6 | add -inet6 ...: the same commands for IPv6 (`route add -inet6 default
                               fe80::1%epair0a`, `route -6 add 2001:db8:1::/48 GW`)

Every command writes FreeBSD's rt_msghdr messages to `socket(AF_ROUTE, SOCK_RAW, 0)`
(vimage.net.rtsock) and reads the kernel's reply, as FreeBSD's route.c does; `monitor`
prints every message it reads as route.c's print_rtmsg does. The fib is the process's
(setfib), or `-fib N` (FreeBSD's modifier) / `-F N` (a vimage shorthand).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError, _inet6, _libxo, destroyed, route_xo
from vimage.cli._util import getopts, parse_addr, parse_netmask, parse_plen, try_addr
from vimage.net.route import (
    MASKS,
    RTF_BLACKHOLE,
    RTF_GATEWAY,
    RTF_HOST,
    RTF_PROTO1,
    RTF_PROTO2,
    RTF_REJECT,
    RTF_STATIC,
    RTF_UP,
)
from vimage.net.rtsock import strerror
from vimage.socket.rtsock import AF_ROUTE, SO_SETFIB
from vimage.socket.socket import MSG_DONTWAIT, SOCK_RAW, SOL_SOCKET
from vimage.wire import rtmsg as m
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.socket.rtsock import RouteSocket
    from vimage.vnet import Vnet

RTF_DONE = 0x40  # set on every reply from the kernel
# route.c's routeflags, ifnetflags, addrnames and metricnames (%b strings), as bit -> name
FLAG_NAMES: tuple[tuple[int, str], ...] = tuple((1 << (b - 1), n) for b, n in (
    (1, "UP"), (2, "GATEWAY"), (3, "HOST"), (4, "REJECT"), (5, "DYNAMIC"), (6, "MODIFIED"),
    (7, "DONE"), (10, "XRESOLVE"), (11, "LLINFO"), (12, "STATIC"), (13, "BLACKHOLE"),
    (15, "PROTO2"), (16, "PROTO1"), (17, "PRCLONING"), (18, "WASCLONED"), (19, "PROTO3"),
    (20, "FIXEDMTU"), (21, "PINNED"), (22, "LOCAL"), (23, "BROADCAST"), (24, "MULTICAST"),
    (29, "STICKY")))
IFNET_FLAGS: tuple[tuple[int, str], ...] = tuple((1 << (b - 1), n) for b, n in (
    (1, "UP"), (2, "BROADCAST"), (3, "DEBUG"), (4, "LOOPBACK"), (5, "PTP"), (6, "b6"),
    (7, "RUNNING"), (8, "NOARP"), (9, "PPROMISC"), (10, "ALLMULTI"), (11, "OACTIVE"),
    (12, "SIMPLEX"), (13, "LINK0"), (14, "LINK1"), (15, "LINK2"), (16, "MULTICAST")))
ADDR_NAMES: tuple[tuple[int, str], ...] = tuple((1 << i, n) for i, n in enumerate(
    ("DST", "GATEWAY", "NETMASK", "GENMASK", "IFP", "IFA", "AUTHOR", "BRD")))
METRIC_NAMES: tuple[tuple[int, str], ...] = tuple((1 << (b - 1), n) for b, n in (
    (9, "weight"), (8, "rttvar"), (7, "rtt"), (6, "ssthresh"), (5, "sndpipe"),
    (4, "recvpipe"), (3, "expire"), (2, "hopcount"), (1, "mtu")))
MSG_TYPES: tuple[str, ...] = (
    "", "RTM_ADD: Add Route", "RTM_DELETE: Delete Route",
    "RTM_CHANGE: Change Metrics or flags", "RTM_GET: Report Metrics",
    "RTM_LOSING: Kernel Suspects Partitioning", "RTM_REDIRECT: Told to use different route",
    "RTM_MISS: Lookup failed on this address", "RTM_LOCK: fix specified metrics",
    "RTM_OLDADD: caused by SIOCADDRT", "RTM_OLDDEL: caused by SIOCDELRT",
    "RTM_RESOLVE: Route created by cloning", "RTM_NEWADDR: address being added to iface",
    "RTM_DELADDR: address being removed from iface", "RTM_IFINFO: iface status change",
    "RTM_NEWMADDR: new multicast group membership on iface",
    "RTM_DELMADDR: multicast group membership removed from iface",
    "RTM_IFANNOUNCE: interface arrival/departure", "RTM_IEEE80211: IEEE 802.11 wireless event",
)
COMMANDS = ("add", "change", "delete", "flush", "get", "show", "monitor")
UNREACHABLE = "writing to routing socket: Network is unreachable"
NOT_FOUND = "route has not been found"


# route(8)'s usage() is one line; the commands vimage implements follow it
USAGE = """\
usage: route [-46dnqtv] [-F fib] command [[modifiers] args]
       route add [-net | -host] destination[/len] gateway [netmask] [modifiers]
       route add default gateway
       route change destination[/len] [gateway] [modifiers]
       route delete destination[/len] [gateway]
       route get | show destination
       route flush
       route monitor [-fib n] [-count n]
       route -6 command ... | route command -inet6 ...
modifiers: -netmask mask, -prefixlen len (inet6), -blackhole, -reject,
       -interface, -ifp ifname, -ifa addr, -gateway addr, -prefsrc addr,
       -proto1, -proto2, -static, -nostatic, -fib n, -mtu n, -hopcount n,
       -expire [+]secs, -weight n (inet6: -netmask, -prefixlen, -blackhole,
       -reject, -interface, -mtu, -fib)
"""


def main(ctx: Context, argv: list[str]) -> int:
    argv, style, pretty = _libxo.parse_args(argv)  # `route get --libxo json` (route_xo)
    opts, args = getopts(argv, "46dnqtvF:")
    quiet = any(o == "-q" for o, _ in opts)
    fib = next((_number(v, "fib") for o, v in opts if o == "-F"), None)
    if not args:
        raise UsageError()
    cmd, rest = args[0], args[1:]
    if cmd not in COMMANDS:
        raise UsageError(f"bad command '{cmd}'", synopsis=True)
    out: Callable[..., None] = _silent if quiet else ctx.print
    vnet = ctx.vnet
    if cmd == "monitor":
        return monitor(ctx, rest, fib)
    if any(o == "-6" for o, _ in opts) or "-inet6" in rest:  # IPv6: vimage.cli._inet6
        if style != "text":
            raise UsageError("--libxo: only `route get` of an IPv4 destination has it")
        return _inet6.route_main(out if cmd != "get" else ctx.print, vnet, cmd, rest, fib)
    if cmd == "flush":
        extra = [w for w in rest if w not in ("-inet", "-4")]
        if extra:
            raise UsageError(f"flush: unexpected argument '{extra[0]}'")
        with _Rtsock(vnet, fib) as rs:
            return flush(vnet, rs, out)
    req = _parse(cmd, rest)
    if style != "text" and cmd not in ("get", "show"):
        raise UsageError("--libxo: only `route get` of an IPv4 destination has it")
    fibs = req.fibs or [fib]
    if cmd in ("get", "show"):
        with _Rtsock(vnet, fibs[0]) as rs:
            lines = get_lines(vnet, rs, req)
        if style != "text":
            route_xo.emit_get(ctx, lines, style, pretty)
            return 0
        for line in lines:
            ctx.print(line)
        return 0
    for each in fibs:  # route.c's newroute: one request per fib of a -fib list
        with _Rtsock(vnet, each) as rs:
            newroute(vnet, rs, cmd, req)
        suffix = f" fib {each}" if len(fibs) > 1 else ""
        out(f"{cmd} {req.kind} {req.dest_text}" + _gw_suffix(req) + suffix)
    return 0


def fib_list(text: str) -> list[int]:
    """route.c's fiboptlist_csv: `-fib 1`, `-fib 0,2`, `-fib 1-3`."""
    fibs: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.partition("-")
        first = _number(lo, "fib")
        last = _number(hi, "fib") if dash else first
        if last < first or last - first > 65535:
            raise ToolError(f"bad fib: {text}")
        fibs += [n for n in range(first, last + 1) if n not in fibs]
    return fibs


def _silent(*_args: object) -> None:
    pass


def _number(text: str, what: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise ToolError(f"bad {what}: {text}")
    return int(text)


# -- the routing socket ----------------------------------------------------------------------
class _Rtsock:
    """route(8)'s routing socket: sequence numbers, and the reply to a request."""

    def __init__(self, vnet: Vnet, fib: int | None) -> None:
        self.sock: RouteSocket = vnet.socket(AF_ROUTE, SOCK_RAW, 0)
        self.seq = 0
        self.pid = os.getpid()
        try:
            if fib is not None:
                self.sock.setsockopt(SOL_SOCKET, SO_SETFIB, fib)
        except OSError:
            self.sock.close()
            raise ToolError(f"fib {fib} is not valid (net.fibs={vnet.route.fibs})") from None
        self.fib = self.sock.fib

    def __enter__(self) -> _Rtsock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def request(self, msg: m.RtMsg) -> tuple[m.ParsedRtMsg, int]:
        """Write `msg` (a sequence number is given) and read its reply: (reply, errno)."""
        self.seq += 1
        data = msg._replace(seq=self.seq, pid=self.pid).pack()
        err = 0
        try:
            self.sock.send(data)
        except OSError as exc:
            err = exc.errno or errno.EINVAL
        while True:
            try:
                raw = self.sock.recv(4096, MSG_DONTWAIT)  # the reply is queued already
            except BlockingIOError:
                raise ToolError(f"writing to routing socket: {strerror(err)}") from None
            reply = m.parse_rtmsg(raw) if raw[3] <= m.RTM_RESOLVE else None
            if reply is not None and reply.seq == self.seq and reply.pid == self.pid:
                return reply, err or reply.errno


# -- parsing -----------------------------------------------------------------------------
class _Request:
    __slots__ = ("dest_text", "dst", "exact", "expire", "fibs", "flags", "gateway_text",
                 "hopcount", "ifa", "ifp", "interface", "kind", "mtu", "plen", "weight")

    def __init__(self) -> None:
        self.dest_text = ""
        self.dst = 0
        self.plen = 32
        self.kind = "host"
        self.exact = False  # a prefix was given: `route get` looks it up exactly
        self.gateway_text = ""
        self.flags = RTF_STATIC
        self.interface = False
        self.mtu = self.hopcount = self.weight = 0
        self.expire = ""
        self.ifp = ""
        self.ifa = ""
        self.fibs: list[int] = []


_FLAG_WORDS = MappingProxyType({"-blackhole": RTF_BLACKHOLE, "-reject": RTF_REJECT,
                                "-proto1": RTF_PROTO1, "-proto2": RTF_PROTO2,
                                "-static": RTF_STATIC})
_METRIC_WORDS = MappingProxyType({"-mtu": ("mtu", 68, 65535), "-hopcount": ("hopcount", 0, 255),
                                  "-weight": ("weight", 1, 2**24)})


def _parse(cmd: str, words: list[str]) -> _Request:
    req = _Request()
    force: str | None = None
    netmask: int | None = None
    operands: list[str] = []
    i = 0

    def arg() -> str:
        if i + 1 >= len(words):
            raise UsageError(f"{words[i]} requires an argument")
        return words[i + 1]

    while i < len(words):
        word = words[i]
        if word in ("-net", "-host"):
            force = word[1:]
        elif word in _FLAG_WORDS:
            req.flags |= _FLAG_WORDS[word]
        elif word == "-nostatic":
            req.flags &= ~RTF_STATIC
        elif word in ("-interface", "-iface"):
            req.interface = True
        elif word in ("-inet", "-4"):
            pass
        elif word in _METRIC_WORDS:
            name, lo, hi = _METRIC_WORDS[word]
            text = arg()
            if not text.isdigit():
                raise UsageError(f"{word} requires a number")
            if not lo <= int(text) <= hi:
                raise ToolError(f"bad {name}: {text} ({lo}..{hi})")
            setattr(req, name, int(text))
            i += 1
        elif word == "-netmask":
            netmask = parse_netmask(arg())
            i += 1
        elif word == "-expire":
            req.expire = arg()
            if not req.expire.lstrip("+").isdigit():
                raise ToolError(f"bad expire: {req.expire}")
            i += 1
        elif word == "-fib":
            req.fibs = fib_list(arg())
            i += 1
        elif word == "-ifp":
            req.ifp = arg()
            i += 1
        elif word in ("-ifa", "-prefsrc"):
            req.ifa = arg()
            parse_addr(req.ifa)
            i += 1
        elif word == "-gateway":
            req.gateway_text = arg()
            i += 1
        elif word.startswith("-") and len(word) > 1:
            raise UsageError(f"bad modifier '{word}'")
        else:
            operands.append(word)
        i += 1
    _operands(cmd, req, operands, force, netmask)
    return req


def _operands(cmd: str, req: _Request, operands: list[str], force: str | None,
              netmask: int | None) -> None:
    wants_gateway = cmd == "add"
    limit = 3 if cmd in ("add", "change") else 2 if cmd == "delete" else 1
    if not operands:
        raise UsageError(f"{cmd}: destination required")
    if len(operands) > limit:
        raise UsageError(f"{cmd}: unexpected argument '{operands[limit]}'")
    if len(operands) >= 2 and not req.gateway_text:
        req.gateway_text = operands[1]
    if len(operands) == 3:  # the old `route add -net DEST GW MASK` form
        netmask = parse_netmask(operands[2])
    no_gateway_ok = req.flags & (RTF_BLACKHOLE | RTF_REJECT) or (cmd == "change" and (
        req.ifp or req.ifa or req.mtu or req.hopcount or req.weight or req.expire))
    if wants_gateway and not req.gateway_text and not req.ifp and not no_gateway_ok:
        raise UsageError(f"{cmd}: gateway required")
    if cmd == "change" and not req.gateway_text and not no_gateway_ok:
        raise UsageError(f"{cmd}: gateway required")
    _destination(req, operands[0], force, netmask)


def _destination(req: _Request, text: str, force: str | None, netmask: int | None) -> None:
    req.dest_text = text.partition("/")[0]
    if text == "default":
        req.dst, req.plen, req.kind, req.exact = 0, 0, "net", True
        return
    addr_text, slash, plen_text = text.partition("/")
    if slash:
        req.dst, req.plen, req.kind, req.exact = _net_addr(addr_text), parse_plen(plen_text), \
            "net", True
    elif netmask is not None:
        req.dst, req.plen, req.kind, req.exact = _net_addr(addr_text), netmask, "net", True
    elif force == "net":
        req.dst = _net_addr(addr_text)
        req.plen, req.kind, req.exact = _natural_plen(req.dst), "net", True
    else:
        req.dst, req.plen, req.kind = parse_addr(addr_text), 32, "host"
        req.exact = force == "host"
    if force == "host" and req.plen != 32:
        raise ToolError(f"-host {text}: a host route cannot have a netmask")
    req.dst &= MASKS[req.plen]


def _net_addr(text: str) -> int:
    """A network number: a dotted quad, or a short form such as `10.1` (= 10.1.0.0)."""
    parts = text.split(".")
    if len(parts) == 4 or not 1 <= len(parts) <= 4 or not all(
            p.isdigit() and int(p) < 256 for p in parts):
        return parse_addr(text)
    value = 0
    for p in parts:
        value = (value << 8) | int(p)
    return value << (8 * (4 - len(parts)))


def _natural_plen(net: int) -> int:
    """route(8)'s mask for `-net` without one: cover every byte up to the last non-zero one."""
    if net == 0:
        return 0
    plen = 32
    while not net & 0xFF:
        net >>= 8
        plen -= 8
    return plen


def _gw_suffix(req: _Request) -> str:
    return f": gateway {req.gateway_text}" if req.gateway_text else ""


# -- add / change / delete -------------------------------------------------------------------
def _ifp_sa(vnet: Vnet, name: str) -> bytes:
    """An interface by name as a sockaddr_dl (route.c: if_nametoindex + link_addr)."""
    ifp = vnet.ifaces.get(name)
    if ifp is None:
        raise ToolError(f"bad interface name: {name}" if name.startswith("-") else UNREACHABLE)
    return m.sockaddr_dl(ifp.index, ifp.name)


def _message(vnet: Vnet, mtype: int, req: _Request) -> m.RtMsg:
    """The rt_msghdr route.c's rtmsg() builds for a request."""
    flags = req.flags | RTF_UP
    if req.plen == 32:
        flags |= RTF_HOST
    addrs = {m.RTA_DST: m.sockaddr_in(req.dst)}
    gw = req.gateway_text
    if not gw and req.flags & (RTF_BLACKHOLE | RTF_REJECT) and mtype == m.RTM_ADD:
        gw = "127.0.0.1"  # route(8) sends the loopback address for a gateway-less -blackhole
    if gw and (mtype != m.RTM_DELETE or try_addr(gw) is not None):
        if req.interface and try_addr(gw) is None:
            addrs[m.RTA_GATEWAY] = _ifp_sa(vnet, gw)
        else:
            addrs[m.RTA_GATEWAY] = m.sockaddr_in(parse_addr(gw, "gateway"))
            if not req.interface:
                flags |= RTF_GATEWAY
    if req.plen != 32 or (req.exact and req.kind == "net"):
        addrs[m.RTA_NETMASK] = m.sockaddr_in(MASKS[req.plen])
    if req.ifp:
        addrs[m.RTA_IFP] = _ifp_sa(vnet, req.ifp)
    if req.ifa:
        addrs[m.RTA_IFA] = m.sockaddr_in(parse_addr(req.ifa))
    inits, rmx = _metrics(vnet, req)
    return m.RtMsg(mtype, flags, addrs, inits=inits, rmx=rmx)


def _metrics(vnet: Vnet, req: _Request) -> tuple[int, tuple[int, ...]]:
    rmx = [0] * 14
    inits = 0
    for value, bit, idx in ((req.mtu, m.RTV_MTU, 1), (req.hopcount, m.RTV_HOPCOUNT, 2),
                            (req.weight, m.RTV_WEIGHT, 10)):
        if value:
            inits |= bit
            rmx[idx] = value
    if req.expire:
        secs = int(req.expire.lstrip("+"))
        if req.expire.startswith("+"):  # relative (a vimage convenience)
            secs += vnet.kernel.sched.now_ns() // 1_000_000_000
        inits |= m.RTV_EXPIRE
        rmx[3] = secs
    return inits, tuple(rmx)


def newroute(vnet: Vnet, rs: _Rtsock, cmd: str, req: _Request) -> None:
    mtype = {"add": m.RTM_ADD, "change": m.RTM_CHANGE, "delete": m.RTM_DELETE}[cmd]
    _reply, err = rs.request(_message(vnet, mtype, req))
    if err == errno.ESRCH:
        raise ToolError(NOT_FOUND)
    if err:
        raise ToolError(f"writing to routing socket: {strerror(err)}")


# -- get / flush ----------------------------------------------------------------------------
def _name(addr: int) -> str:
    return "default" if addr == 0 else ntoa(addr)


def get_lines(vnet: Vnet, rs: _Rtsock, req: _Request) -> list[str]:
    addrs = {m.RTA_DST: m.sockaddr_in(req.dst), m.RTA_IFP: m.sockaddr_dl(0)}
    if req.exact:
        addrs[m.RTA_NETMASK] = m.sockaddr_in(MASKS[req.plen])
    reply, err = rs.request(m.RtMsg(m.RTM_GET, RTF_UP | (RTF_HOST if req.exact and
                                                          req.plen == 32 else 0), addrs))
    if err:
        raise ToolError(NOT_FOUND if err == errno.ESRCH else strerror(err))
    a = reply.addrs
    dst = int(a[m.RTA_DST].addr)
    lines = [f"   route to: {_name(req.dst)}", f"destination: {_name(dst)}"]
    if m.RTA_NETMASK in a:
        lines.append(f"       mask: {_name(int(a[m.RTA_NETMASK].addr))}")
    gw = a.get(m.RTA_GATEWAY)
    if gw is not None and gw.family == m.AF_INET and reply.flags & RTF_GATEWAY:
        lines.append(f"    gateway: {ntoa(int(gw.addr))}")
    lines.append(f"        fib: {rs.fib}")
    ifp = a.get(m.RTA_IFP)
    if ifp is not None:
        lines.append(f"  interface: {ifp.addr}")
    lines.append(f"      flags: <{_bits(reply.flags, FLAG_NAMES)[1:-1]}>")
    expire = reply.metric("expire")
    if expire:
        expire -= vnet.kernel.sched.now_ns() // 1_000_000_000
    values = (0, 0, 0, 0, reply.metric("mtu"), reply.metric("weight"), expire)
    lines += [" recvpipe  sendpipe  ssthresh  rtt,msec    mtu        weight    expire",
              "".join(f"{v:8d}  " for v in values).rstrip()]
    return lines


def flush(vnet: Vnet, rs: _Rtsock, out: Callable[..., None]) -> int:
    """Remove every gateway route of the fib, as route(8) does, listing each one (route.c
    reads the table with sysctl NET_RT_DUMP: here the kernel's list)."""
    for route in [p for p in vnet.route.table(rs.fib).all_paths() if p.flags & RTF_GATEWAY]:
        addrs = {m.RTA_DST: m.sockaddr_in(route.dst), m.RTA_GATEWAY: m.sockaddr_in(
            route.gateway)}
        if not route.flags & RTF_HOST:
            addrs[m.RTA_NETMASK] = m.sockaddr_in(MASKS[route.plen])
        _reply, err = rs.request(m.RtMsg(m.RTM_DELETE, route.flags, addrs))
        if route.flags & RTF_HOST:
            dest = ntoa(route.dst)
        else:
            dest = "default" if route.plen == 0 else f"{ntoa(route.dst)}/{route.plen}"
        out(f"{dest:<20.20} {ntoa(route.gateway):<20.20} "
            + ("done" if not err else strerror(err)))
    return 0


# -- monitor ----------------------------------------------------------------------------------
def monitor(ctx: Context, words: list[str], fib: int | None) -> int:
    """Print every message the routing socket reads (route.c monitor + print_rtmsg).
    `-count N` (a vimage addition) stops after N messages."""
    count = 0
    i = 0
    while i < len(words):
        if words[i] in ("-fib", "-count") and i + 1 < len(words):
            value = _number(words[i + 1], words[i][1:])
            if words[i] == "-fib":
                fib = value
            else:
                count = value
            i += 2
        else:
            raise UsageError(f"monitor: bad argument '{words[i]}'")
    vnet = ctx.vnet
    with _Rtsock(vnet, fib) as rs:
        seen = 0
        while not count or seen < count:
            try:
                msg = rs.sock.recv(8192)
            except OSError:
                if not vnet.alive:
                    ctx.print(destroyed(vnet))
                    return 1
                raise
            seen += 1
            ctx.out.write(format_message(msg, vnet.kernel.sched.now_ns()))
    return 0


def ctime(ns: int) -> str:
    """C's ctime() of kernel time `ns` (seconds since the epoch), without its newline."""
    t = time.gmtime(ns // 1_000_000_000)
    return time.strftime(f"%a %b {t.tm_mday:2d} %H:%M:%S %Y", t)


def _bits(value: int, names: tuple[tuple[int, str], ...]) -> str:
    """route.c's printb(): `<NAME,NAME>` of the bits set, nothing for none."""
    if not value:
        return ""
    set_names = [n for bit, n in names if value & bit]
    return f"<{','.join(set_names)}>" if set_names else ""


def _sa_name(sa: m.Sockaddr) -> str:
    """route.c's routename() with -n: an address, link#N or name:lladdr, or `default`."""
    if sa.family == m.AF_LINK:
        raw = sa.raw
        nlen, alen = (raw[5], raw[6]) if len(raw) >= 8 else (0, 0)
        if not nlen and not alen:
            return f"link#{sa.index}"
        lladdr = raw[8 + nlen:8 + nlen + alen]
        return f"{sa.addr}:" + ".".join(f"{b:x}" for b in lladdr) if alen else f"{sa.addr}:"
    if sa.family == m.AF_INET:
        return _name(int(sa.addr))
    if sa.family == m.AF_INET6:
        return ":".join(f"{(int(sa.addr) >> s) & 0xFFFF:x}" for s in range(112, -16, -16))
    return "default" if sa.family == m.AF_UNSPEC else f"(family {sa.family})"


def _addrs_lines(body: bytes, mask: int) -> str:
    if not mask:
        return "\n"
    try:
        addrs = m.parse_addrs(body, mask)
    except ValueError:
        return f"\nsockaddrs: {_bits(mask, ADDR_NAMES)}\n (bad sockaddrs)\n"
    names = " ".join(_sa_name(addrs[bit]) for bit in sorted(addrs))
    return f"\nsockaddrs: {_bits(mask, ADDR_NAMES)}\n {names}\n"


def format_message(msg: bytes, now_ns: int) -> str:
    """What `route monitor` prints for one message (route.c print_rtmsg, verbose)."""
    text = f"\ngot message of size {len(msg)} on {ctime(now_ns)}\n"
    if len(msg) < 4:
        return text
    _, version, mtype = m.msg_type(msg)
    if version != m.RTM_VERSION:
        return text + f"routing message version {version} not understood\n"
    name = MSG_TYPES[mtype] if mtype < len(MSG_TYPES) else f"unknown type {mtype}"
    text += f"{name}: len {len(msg)}, "
    if mtype == m.RTM_IFINFO and len(msg) >= m.IF_MSGHDR.size:
        f = m.IF_MSGHDR.unpack_from(msg)
        state = {m.LINK_STATE_DOWN: "down", m.LINK_STATE_UP: "up"}.get(f[11], "unknown")
        return text + (f"if# {f[5]}, link: {state}, flags:{_bits(f[4], IFNET_FLAGS)}"
                       + _addrs_lines(msg[m.IF_MSGHDR.size:], f[3]))
    if mtype in (m.RTM_NEWADDR, m.RTM_DELADDR) and len(msg) >= m.IFA_MSGHDR.size:
        f = m.IFA_MSGHDR.unpack_from(msg)
        return text + (f"metric {f[7]}, flags:{_bits(f[4], FLAG_NAMES)}"
                       + _addrs_lines(msg[m.IFA_MSGHDR.size:], f[3]))
    if mtype == m.RTM_IFANNOUNCE and len(msg) >= m.IF_ANNOUNCEMSGHDR.size:
        f = m.IF_ANNOUNCEMSGHDR.unpack_from(msg)
        what = {m.IFAN_ARRIVAL: "arrival", m.IFAN_DEPARTURE: "departure"}.get(f[5], f"#{f[5]}")
        return text + f"if# {f[3]}, what: {what}\n"
    if mtype <= m.RTM_RESOLVE and len(msg) >= m.RT_MSGHDR.size:
        f = m.RT_MSGHDR.unpack_from(msg)
        text += (f"pid: {f[7]}, seq {f[8]}, errno {f[9]}, flags:{_bits(f[5], FLAG_NAMES)}"
                 f"\nlocks: {_bits(f[12], METRIC_NAMES)} inits: {_bits(f[11], METRIC_NAMES)}")
        if len(msg) > m.RT_MSGHDR.size:
            return text + _addrs_lines(msg[m.RT_MSGHDR.size:], f[6])
        return text
    return text + f"type: {mtype}, len: {len(msg)}\n"
