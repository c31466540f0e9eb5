"""netstat(1): routing table, protocol statistics, interfaces and sockets of a vnet.

    netstat [-aLn] [-f inet] [-p tcp|udp|ip|icmp]    sockets
    netstat -r [-nW] [-F fib] [-f inet | inet6]      routing table (-W: nexthops, MTU; -6: inet6)
    netstat -o [-nW] [-F fib]                        nexthop objects
    netstat -s [-s] [-z] [-p tcp|udp|ip|icmp|arp]    protocol statistics
    netstat -i [-bdnW] [-I interface] [-f link|inet] interfaces

Nothing is resolved to a name, so `-n` changes nothing. Per-address rows of
`netstat -i` print "-" for their packet counts: vimage counts packets per
interface, not per address. Raw IP sockets are listed like FreeBSD lists them
(`icm4` for IPPROTO_ICMP, `ip4` for the others). TCP sockets are the connection
table's control blocks, listeners first: Recv-Q and Send-Q are the bytes in the
receive and send buffers, and the state is FreeBSD's name for it. A TCP socket
that is neither listening nor connected has no control block in the table yet
and is not listed. `-L` shows the listen queues of TCP listeners as
qlen/incqlen/maxqlen (completed connections, embryonic ones, the backlog).

Every form takes libxo's `--libxo json|xml[,pretty]` (cli/_libxo.py) with the field
names of FreeBSD's netstat; `-s` is in netstat_stats.py.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import UsageError, _inet6, _libxo, netstat_stats
from vimage.cli._util import getopts, ifaces_by_index
from vimage.context import current_fib
from vimage.net.route import RTF_GATEWAY, flag_string
from vimage.netinet import tcp
from vimage.socket.inet6 import IPPROTO_ICMPV6
from vimage.socket.socket import AF_INET6, IPPROTO_ICMP, SOCK_RAW
from vimage.wire import ipv4
from vimage.wire import ipv6 as wip6
from vimage.wire.ethernet import mac_ntoa

if TYPE_CHECKING:
    from vimage.cli import Context
    from vimage.cli._libxo import Xo
    from vimage.net.ifnet import Ifnet
    from vimage.net.route import Route
    from vimage.netinet.tcp import Tcb
    from vimage.protosw import Protocol
    from vimage.socket.socket import Socket
    from vimage.vnet import Vnet


def stat_protos(vnet: Vnet) -> list[Protocol]:
    """The protocols `netstat -s` shows, in FreeBSD's order (their `stats_order`)."""
    return sorted((p for p in vnet.kernel.protocols if p.stats and p.slot is not None),
                  key=lambda p: p.stats_order)


SOCKET_PROTOS = frozenset({"tcp", "udp", "ip", "icmp", "ip6", "icmp6"})
FAMILIES = frozenset({"inet", "inet6", "link"})


# netstat(1)'s usage(), the forms vimage implements
USAGE = """\
usage: netstat [-aLn] [-f address_family] [-p protocol]
       netstat -i | -I interface [-bdnW] [-f address_family]
       netstat -r [-nW] [-F fibnum] [-f address_family]
       netstat -o [-nW] [-F fibnum]
       netstat -s [-sz] [-p protocol]
protocol: tcp, udp, ip, icmp (and arp, ip6, icmp6 with -s)
address_family: inet, inet6 (and link with -i)
every form takes --libxo json|xml[,pretty]
"""


def main(ctx: Context, argv: list[str]) -> int:
    argv, style, pretty = _libxo.parse_args(argv)
    opts, args = getopts(argv, "46abdF:f:I:iLnop:rsWz")
    if args:
        raise UsageError(f"unexpected argument: {args[0]}", synopsis=True)
    o = _Options(ctx.vnet)
    for opt, val in opts:
        o.take(opt, val)
    xo = _libxo.Xo(style, pretty, version=XO_VERSION)
    xo.open_container("statistics")
    _run(xo, ctx.vnet, o)
    xo.close_container()
    xo.finish(ctx)
    return 0


XO_VERSION = "1"  # netstat.h's NETSTAT_XO_VERSION


class _Options:
    """netstat's flags, as main.c keeps them."""

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.mode = ""
        self.sflag = 0
        self.aflag = self.bflag = self.dflag = self.lflag = self.zflag = self.wide = False
        self.proto: str | None = None
        self.iface: str | None = None
        self.fib = current_fib.get()
        self.family: str | None = None

    def take(self, opt: str, val: str) -> None:
        flags = {"-a": "aflag", "-b": "bflag", "-d": "dflag", "-L": "lflag", "-z": "zflag",
                 "-W": "wide"}
        if opt in flags:
            setattr(self, flags[opt], True)
        elif opt == "-r":
            self.mode = self.mode or "r"
        elif opt == "-o":
            self.mode = "o" if self.mode in ("", "r") else self.mode
        elif opt == "-F":
            if not val.isdigit() or int(val) >= self.vnet.route.fibs:
                raise UsageError(f"{val}: invalid fib")
            self.fib = int(val)
        elif opt == "-s":
            self.mode = "s"
            self.sflag += 1
        elif opt == "-i":
            self.mode = self.mode or "i"
        elif opt == "-I":
            self.mode, self.iface = "i", val
        elif opt == "-f":
            if val not in FAMILIES:
                raise UsageError(f"{val}: unknown address family")
            self.family = val
        elif opt == "-p":
            if val not in {p.name for p in stat_protos(self.vnet)}:
                raise UsageError(f"{val}: unknown or uninstrumented protocol")
            self.proto = val
        elif opt in ("-6", "-4"):
            self.family = "inet6" if opt == "-6" else "inet"
        # -n: nothing is resolved to a name anyway


def _run(xo: Xo, vnet: Vnet, o: _Options) -> None:
    if o.mode == "r":
        emit_routes(xo, vnet, o.fib, o.wide, o.family)
    elif o.mode == "o":
        emit_nhops(xo, vnet, o.fib, o.wide)
    elif o.mode == "s":
        emit_stats(xo, vnet, o.proto, o.sflag, o.zflag)
    elif o.mode == "i":
        if o.family == "inet6":
            raise UsageError("-i: no per-address rows for inet6 (vimage lists inet and link)")
        emit_ifaces(xo, vnet, o.iface, o.bflag, o.dflag, o.wide, o.family)
    else:
        if o.proto is not None and o.proto not in SOCKET_PROTOS:
            raise UsageError(f"{o.proto}: no socket list for this protocol")
        if o.family == "link":
            raise UsageError("link: no sockets in this address family")
        if o.lflag:
            emit_listen(xo, vnet, o.proto)
        else:
            emit_sockets(xo, vnet, o.aflag, o.proto, o.family)


# -- netstat -r ---------------------------------------------------------------------
def _dst_name(dst: int, plen: int) -> str:
    if plen == 0 and dst == 0:
        return "default"
    if plen == 32:
        return ipv4.ntoa(dst)
    return f"{ipv4.ntoa(dst)}/{plen}"


def _gateway(r: Route) -> str:
    if r.flags & RTF_GATEWAY:
        return ipv4.ntoa(r.gateway)
    owner = r.ifa.ifp if r.ifa is not None else r.ifp
    return f"link#{owner.index}"


def _expire(vnet: Vnet, r: Route) -> str:
    if not r.expire:
        return ""
    return str(max(0, (r.expire - vnet.kernel.sched.now_ns()) // 1_000_000_000))


def emit_routes(xo: Xo, vnet: Vnet, fib: int, wide: bool, family: str | None) -> None:
    """FreeBSD's netstat -r (usr.bin/netstat/route.c): one row per path (a multipath
    prefix has several), the nexthop index and MTU with -W; in libxo, the
    route-information container with an rt-family instance per address family."""
    xo.open_container("route-information")
    xo.emit("{T:Routing tables}")
    if fib:
        xo.emit(" ({L:fib}: {:fib/%d})", fib)
    xo.emit("\n")
    xo.open_container("route-table")
    xo.open_list("rt-family")
    if family != "inet6":
        _route_family(xo, "Internet", _inet_rows(vnet, fib), wide)
    if family != "inet":
        _route_family(xo, "Internet6", _inet6.route_rows(vnet, fib), False, v6=True)
    xo.close_list()
    xo.close_container()
    xo.close_container()


def _inet_rows(vnet: Vnet, fib: int) -> list[tuple[str, str, str, str, int, int, str]]:
    """(destination, gateway, flags, netif, nhop index, mtu, expire) of each IPv4 path."""
    return [(_dst_name(r.dst, r.plen), _gateway(r), flag_string(r.flags), r.ifp.name,
             r.nhidx, r.mtu or r.ifp.mtu, _expire(vnet, r))
            for r in vnet.route.table(fib).all_paths()]


def _route_family(xo: Xo, name: str, rows: list[tuple[str, str, str, str, int, int, str]],
                  wide: bool, v6: bool = False) -> None:
    """pr_family(), pr_rthdr() and p_rtentry_sysctl() for one address family (route.c's
    column widths: 18 for IPv4 addresses, 33 and 29 for numeric IPv6 ones)."""
    dst_w, gw_w = (33, 29) if v6 else (18, 18)
    xo.open_instance("rt-family")
    xo.emit("\n{k:address-family/%s}:\n", name)
    head = "{T:/%-*s} {T:/%-*s} {T:/%-6s}"
    head += " {T:/%6s} {T:/%6s} {T:/%10s} {T:Expire}\n" if wide else " {T:/%8s} {T:Expire}\n"
    xo.emit(head, dst_w, "Destination", gw_w, "Gateway", "Flags",
            *(("Nhop#", "Mtu", "Netif") if wide else ("Netif",)))
    xo.open_list("rt-entry")
    for dst, gw, flags, ifname, nhidx, mtu, expire in rows:
        xo.open_instance("rt-entry")
        xo.emit("{t:destination/%-*s} {t:gateway/%-*s} {t:flags/%-6s}",
                dst_w, dst, gw_w, gw, flags)
        if wide:
            xo.emit(" {t:nhop/%6d} {t:mtu/%6d} {t:interface-name/%10s}", nhidx, mtu, ifname)
        else:
            xo.emit(" {t:interface-name/%8s}", ifname)
        if expire:
            xo.emit(" {:expire-time/%6d}", int(expire))
        xo.emit("\n")
        xo.close_instance()
    xo.close_list()
    xo.close_instance()


def _nhop_type(r: Route) -> str:
    """nhops.c's nh_types[]: a nexthop resolves its destination on the link, or goes
    to a gateway (blackhole and reject nexthops are resolve ones with their flag)."""
    return "v4/gw" if r.flags & RTF_GATEWAY else "v4/resolve"


def emit_nhops(xo: Xo, vnet: Vnet, fib: int, wide: bool) -> None:
    """FreeBSD's `netstat -o[W]` (usr.bin/netstat/nhops.c): the nexthop objects of a
    fib, by index. vimage keeps one per path, where FreeBSD shares equal ones between
    routes; the paths of multipath groups follow, with their weights."""
    xo.open_container("route-nhop-information")
    xo.emit("{T:Nexthop data}")
    if fib:
        xo.emit(" ({L:fib}: {:fib/%d})", fib)
    xo.emit("\n")
    xo.open_container("nhop-table")
    xo.open_list("rt-family")
    paths = sorted(vnet.route.table(fib).all_paths(), key=lambda r: r.nhidx)
    if paths:
        xo.open_instance("rt-family")
        xo.emit("\n{k:address-family/%s}:\n", "Internet")
        if wide:
            xo.emit("{T:/%-5s} {T:/%-12s} {T:/%-18s} {T:/%-18s} {T:/%6s} {T:/%8s} {T:/%-6s} "
                    "{T:/%10s} {T:/%10s} {T:/%6s} {T:Prepend}\n", "Idx", "Type", "IFA",
                    "Gateway", "Flags", "Use", "Mtu", "Netif", "Addrif", "Refcnt")
        else:
            xo.emit("{T:/%-5s} {T:/%-18s} {T:/%-18s} {T:/%-6s} {T:/%8s}  {T:Refcnt}\n",
                    "Idx", "IFA", "Gateway", "Flags", "Netif")
        xo.open_list("nh-entry")
        for r in paths:
            _nhop_row(xo, r, wide)
        xo.close_list()
        xo.close_instance()
    xo.close_list()
    xo.close_container()
    _nhop_groups(xo, vnet, fib)
    xo.close_container()


def _nhop_row(xo: Xo, r: Route, wide: bool) -> None:
    """print_nhop_entry_sysctl(): index, (type), source address, gateway (`IF/resolve`
    without one), the route's flags, (use, MTU), interface, (address interface),
    reference count."""
    xo.open_instance("nh-entry")
    xo.emit("{:index/%-5d} ", r.nhidx)
    if wide:
        xo.emit("{t:type_str/%12s} ", _nhop_type(r))
    ifa = ipv4.ntoa(r.ifa.addr) if r.ifa is not None else ""
    gw = ipv4.ntoa(r.gateway) if r.flags & RTF_GATEWAY else f"{r.ifp.name}/resolve"
    xo.emit("{:ifa/%-18s} {:gateway/%-18s} {:flags/%-6s} ", ifa, gw, flag_string(r.flags))
    if wide:
        xo.emit("{t:use/%8d} {t:mtu/%6d} ", r.use, r.mtu or r.ifp.mtu)
        addrif = r.ifa.ifp.name if r.ifa is not None and r.ifa.ifp is not r.ifp else ""
        xo.emit("{t:interface-name/%10s}{t:address-interface-name/%10s}", r.ifp.name, addrif)
    else:
        xo.emit("{t:interface-name/%8.8s}", r.ifp.name)
    xo.emit("{t:refcount/%6d} \n", 1)
    xo.close_instance()


def _nhop_groups(xo: Xo, vnet: Vnet, fib: int) -> None:
    """vimage's multipath groups: each prefix with its paths' nexthop indexes and weights
    (FreeBSD shows its groups with nhgrp.c; the layout here is vimage's)."""
    groups = [r for r in vnet.route.table(fib).routes() if r.group is not None]
    if not groups:
        return
    xo.emit("\n{T:Nexthop groups}:\n{T:/%-18s} {T:Nhops (idx:weight)}\n", "Destination")
    xo.open_list("nhop-group")
    for r in groups:
        xo.open_instance("nhop-group")
        members = " ".join(f"{p.nhidx}:{p.weight}" for p in r.paths)
        xo.emit("{:destination/%-18s} {:members/%s}\n", _dst_name(r.dst, r.plen), members)
        xo.close_instance()
    xo.close_list()


# -- netstat -s ---------------------------------------------------------------------
# The counted nouns of the statistics, singular when the count is 1, as netstat's
# plural(), plurales() and pluralies() make them (usr.bin/netstat/main.c, inet.c).
_SINGULAR = MappingProxyType({
    "ACKs": "ACK", "IPs": "IP", "accepts": "accept", "acks": "ack", "addresses": "address",
    "attempts": "attempt", "bytes": "byte", "calls": "call", "checksums": "checksum",
    "connections": "connection", "cookies": "cookie", "datagrams": "datagram",
    "changes": "change", "entrys": "entry", "episodes": "episode", "errors": "error",
    "fields": "field",
    "fragments": "fragment", "messages": "message", "options": "option",
    "overflows": "overflow", "packets": "packet", "probes": "probe", "replies": "reply",
    "requests": "request", "resets": "reset", "responses": "response",
    "retransmits": "retransmit", "rexmits": "rexmit", "routes": "route",
    "segments": "segment", "timeouts": "timeout", "updates": "update",
})


def counted(fmt: str, value: int) -> str:
    """A statistics line: `1 packet sent`, `2 packets sent` (the first counted noun
    after the number agrees with it; `data`, `bad` and the like are skipped)."""
    if value == 1:
        head, mark, tail = fmt.partition("{}")
        words = tail.split(" ")
        for i, word in enumerate(words):
            if word in _SINGULAR:
                words[i] = _SINGULAR[word]
                break
        fmt = head + mark + " ".join(words)
    return fmt.format(value)


def emit_stats(xo: Xo, vnet: Vnet, only: str | None, sflag: int, zero: bool) -> None:
    """netstat -s [-p proto]: each protocol's block as inet.c prints it (see
    netstat_stats); -z zeroes the counters after printing them, as FreeBSD's
    fetch_stats() reads and zeroes in one sysctl."""
    for proto in stat_protos(vnet):
        if only is not None and proto.name != only:
            continue
        netstat_stats.emit_protocol(xo, vnet, proto, sflag)
        if zero:
            netstat_stats.zero(vnet, proto)


# -- netstat -i ---------------------------------------------------------------------
def emit_ifaces(xo: Xo, vnet: Vnet, only: str | None, bflag: bool, dflag: bool,
                wide: bool = False, family: str | None = None) -> None:
    """netstat -i (if.c intpr()): a link row per interface and a row per address;
    `-f link` keeps the link rows, `-f inet` the address rows; -W does not truncate
    names. Per-address rows print "-" for counts vimage keeps per interface only."""
    ifaces: list[Ifnet] = ifaces_by_index(vnet)
    if only is not None:
        ifaces = [i for i in ifaces if i.name == only]
        if not ifaces:
            raise LookupError(f"{only}: no such interface")
    name_w = 7
    if wide:
        name_w = max([name_w, *(len(i.name) + (not i.up) for i in ifaces)])
    _iface_header(xo, name_w, bflag, dflag)
    xo.open_list("interface")
    for ifp in ifaces:
        name = ifp.name if ifp.up else ifp.name + "*"
        if family in (None, "link"):
            link_addr = mac_ntoa(ifp.mac) if ifp.mac is not None else ifp.name
            counts = (ifp.ipackets, ifp.ierrors, ifp.iqdrops, ifp.ibytes, ifp.opackets,
                      ifp.oerrors, ifp.obytes, 0, ifp.oqdrops)
            _iface_row(xo, (name_w, name, ifp), f"<Link#{ifp.index}>", link_addr, counts,
                       (bflag, dflag))
        if family in (None, "inet"):
            for ia in ifp.addrs:
                _iface_row(xo, (name_w, name, ifp), f"{ipv4.ntoa(ia.net)}/{ia.plen}",
                           ipv4.ntoa(ia.addr), None, (bflag, dflag))
    xo.close_list()


def _iface_header(xo: Xo, name_w: int, bflag: bool, dflag: bool) -> None:
    xo.emit("{T:/%-*s}{T:/%6s} {T:/%-18s} {T:/%-17s} {T:/%13s} {T:/%5s} {T:/%5s}",
            name_w, "Name", "Mtu", "Network", "Address", "Ipkts", "Ierrs", "Idrop")
    if bflag:
        xo.emit(" {T:/%10s}", "Ibytes")
    xo.emit(" {T:/%9s} {T:/%5s}", "Opkts", "Oerrs")
    if bflag:
        xo.emit(" {T:/%10s}", "Obytes")
    xo.emit(" {T:/%5s}", "Coll")
    if dflag:
        xo.emit(" {T:/%5s}", "Drop")
    xo.emit("\n")


# if.c's show_stat() names, in the order of the columns (Ibytes/Obytes with -b, Drop -d)
_IF_COLUMNS = (("received-packets", 13), ("received-errors", 5), ("dropped-packets", 5),
               ("received-bytes", 10), ("sent-packets", 9), ("send-errors", 5),
               ("sent-bytes", 10), ("collisions", 5), ("dropped-packets", 5))


def _iface_row(xo: Xo, who: tuple[int, str, Ifnet], net: str, addr: str,
               counts: tuple[int, ...] | None, flags: tuple[bool, bool]) -> None:
    name_w, shown, ifp = who
    bflag, dflag = flags
    xo.open_instance("interface")
    xo.emit("{d:/%-*s}{etk:name}{eq:flags/0x%x}", name_w, shown, ifp.name, ifp.flags)
    if counts is None:
        xo.emit("{P:/%6s} ", "-")
    else:
        xo.emit("{:mtu/%6d} ", ifp.mtu)
    xo.emit("{t:network/%-18s} {t:address/%-17s}", net, addr)
    for i, (field, width) in enumerate(_IF_COLUMNS):
        if (i in (3, 6) and not bflag) or (i == 8 and not dflag):
            continue
        # per-address rows: FreeBSD shows their packet and byte counts; vimage has none
        if counts is None:
            xo.emit(" {P:/%*s}", width, "-")
        else:
            xo.emit(f" {{:{field}/%{width}d}}", counts[i])
    xo.emit("\n")
    xo.close_instance()


# -- netstat [-a] ---------------------------------------------------------------------
def _endpoint(addr: int, port: int, v6: bool = False, zone: str = "") -> tuple[str, str]:
    """FreeBSD's inetprint: (`10.0.0.1`, `80`), (`fe80::1%epair0a`, `22`), (`*`, `*`),
    printed joined by a dot."""
    if not addr:
        host = "*"
    elif v6:
        host = wip6.ntoa(addr) + (f"%{zone}" if zone and wip6.needs_zone(addr) else "")
    else:
        host = ipv4.ntoa(addr)
    return host, str(port) if port else "*"


def _tcp_proto(t: Tcb) -> str:
    """tcp4, tcp6, or tcp46 for a dual-stack listener (FreeBSD's vflag INP_IPV4|INP_IPV6)."""
    if not t.v6:
        return "tcp4"
    return "tcp46" if t.state == tcp.LISTEN and not t.v6only and not t.laddr else "tcp6"


def _sock_proto(base: str, s: Socket) -> str:
    if s.family != AF_INET6:
        return base + "4"
    if not s.v6only and not s.laddr and not s.faddr:
        return base + "46"
    return base + "6"


def _zone_name(vnet: Vnet, index: int) -> str:
    return next((ifp.name for ifp in vnet.ifaces.values() if ifp.index == index), "")


def _tcp_rows(vnet: Vnet) -> list[Tcb]:
    """The TCP control blocks of the vnet: listeners, then connections (TIME_WAIT too)."""
    return [t for t in vnet.tcp.tcbs() if t.state != tcp.CLOSED]


def emit_sockets(xo: Xo, vnet: Vnet, aflag: bool, proto: str | None,
                 family: str | None = None) -> None:
    """netstat [-a]: the sockets, rows named as FreeBSD's (tcp4, tcp6, tcp46, udp6 ...);
    `-f inet` or `-f inet6` keeps one family's (a dual-stack one is in both). In
    libxo, a `socket` instance per row with inet.c protopr()'s fields."""
    keep = {None: ("",), "inet": ("4", "46"), "inet6": ("6", "46")}[family]
    xo.emit("{T:Active Internet connections}")
    if aflag:
        xo.emit("{T: (including servers)}")
    xo.emit("\n{T:/%-5s} {T:/%6s} {T:/%6s} {T:/%-22s} {T:/%-22s} {T:(state)}\n",
            "Proto", "Recv-Q", "Send-Q", "Local Address", "Foreign Address")
    xo.open_list("socket")
    for row in _socket_rows(vnet, aflag, proto):
        if row[0].endswith(keep):
            _socket_row(xo, *row)
    xo.close_list()


SocketRow = tuple[str, int, int, tuple[str, str], tuple[str, str], str]


def _socket_row(xo: Xo, name: str, rcv: int, snd: int, local: tuple[str, str],
                remote: tuple[str, str], state: str) -> None:
    xo.open_instance("socket")
    xo.emit("{:protocol/%-5s} {:receive-bytes-waiting/%6d} {:send-bytes-waiting/%6d} ",
            name, rcv, snd)
    for container, (host, port) in (("local", local), ("remote", remote)):
        xo.open_container(container)
        xo.emit("{d:target/%-22s} {e:address/%s}{e:port/%s}", f"{host}.{port}", host, port)
        xo.close_container()
    if state:
        xo.emit("{:tcp-state/%-11s}", state)
    xo.emit("\n")
    xo.close_instance()


def _socket_rows(vnet: Vnet, aflag: bool, proto: str | None) -> list[SocketRow]:
    out: list[SocketRow] = []
    if proto in (None, "tcp"):
        for t in _tcp_rows(vnet):
            if not aflag and (t.state == tcp.LISTEN or not t.laddr):
                continue  # servers are shown with -a only
            zone = t.zone.name if t.zone is not None else ""
            out.append((_tcp_proto(t), len(t.rcv_buf), len(t.snd_buf),
                        _endpoint(t.laddr, t.lport, t.v6, zone),
                        _endpoint(t.faddr, t.fport, t.v6, zone), t.state_name))
    rows: list[tuple[str, Socket]] = []
    if proto in (None, "udp"):
        rows.extend(("udp4", s) for s in vnet.udp.sockets())
        rows.extend((_sock_proto("udp", s), s) for s in vnet.udp.sockets6())
    for s in vnet.raw.sockets:
        is_icmp = s.proto == IPPROTO_ICMP
        if proto is None or (proto == "icmp" and is_icmp) or (proto == "ip" and not is_icmp):
            rows.append(("icm4" if is_icmp else "ip4", s))
    for s in vnet.raw.sockets6:
        is_icmp = s.proto == IPPROTO_ICMPV6
        if proto is None or (proto == "icmp6" and is_icmp) or (proto == "ip6" and not is_icmp):
            rows.append(("icm6" if is_icmp else "ip6", s))
    for name, s in rows:
        if not aflag and not s.laddr:
            continue  # a server (wildcard) socket: shown with -a only
        lport = s.lport if s.type != SOCK_RAW else 0
        fport = s.fport if s.type != SOCK_RAW else 0
        v6 = getattr(s, "family", 0) == AF_INET6  # a kernel socket (vxlan) has none
        zone = _zone_name(vnet, s.scope) if v6 and s.scope else ""
        out.append((name, s._rcvbytes, 0, _endpoint(s.laddr, lport, v6, zone),
                    _endpoint(s.faddr, fport, v6, zone), ""))
    return out


def emit_listen(xo: Xo, vnet: Vnet, proto: str | None) -> None:
    """netstat -L (inet.c protopr() with Lflag): the queues of listening sockets (only
    TCP has them), qlen/incqlen/maxqlen."""
    xo.emit("Current listen queue sizes (qlen/incqlen/maxqlen)\n")
    xo.emit("{T:/%-5s} {T:/%-32s} {T:Local Address}\n", "Proto", "Listen")
    xo.open_list("socket")
    if proto in (None, "tcp"):
        for t in _tcp_rows(vnet):
            if t.state != tcp.LISTEN:
                continue
            xo.open_instance("socket")
            queues = f"{len(t.accept_q or ())}/{t.syn_q}/{t.backlog}"
            xo.emit("{:protocol/%-5s} {:listen-queue-sizes/%-32s} ", _tcp_proto(t), queues)
            host, port = _endpoint(t.laddr, t.lport, t.v6)
            xo.open_container("local")
            xo.emit("{d:target/%-22s} {e:address/%s}{e:port/%s}\n", f"{host}.{port}", host,
                    port)
            xo.close_container()
            xo.close_instance()
    xo.close_list()
