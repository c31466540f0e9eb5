"""netstat(1): routing table, protocol statistics, interfaces and sockets of a vnet.

    netstat [-aLn] [-f inet] [-p tcp|udp|ip|icmp]    sockets
    netstat -r [-nW] [-F fib] [-f inet | inet6]      routing table (-W: nexthops, MTU; -6: inet6)
    netstat -o [-nW] [-F fib]                        nexthop objects
    netstat -s [-s] [-z] [-p tcp|udp|ip|icmp|arp]    protocol statistics
    netstat -i [-bdn] [-I interface]                 interfaces

Nothing is resolved to a name, so `-n` changes nothing. Per-address rows of
`netstat -i` print "-" for their packet counts: vimage counts packets per
interface, not per address. Raw IP sockets are listed like FreeBSD lists them
(`icm4` for IPPROTO_ICMP, `ip4` for the others). TCP sockets are the connection
table's control blocks, listeners first: Recv-Q and Send-Q are the bytes in the
receive and send buffers, and the state is FreeBSD's name for it. A TCP socket
that is neither listening nor connected has no control block in the table yet
and is not listed. `-L` shows the listen queues of TCP listeners as
qlen/incqlen/maxqlen (completed connections, embryonic ones, the backlog).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.cli import UsageError, _inet6
from vimage.cli._util import getopts, ifaces_by_index
from vimage.context import current_fib
from vimage.net.route import RTF_BLACKHOLE, RTF_GATEWAY, RTF_REJECT, RTF_UP, flag_string
from vimage.netinet import icmp, tcp
from vimage.socket.inet6 import IPPROTO_ICMPV6
from vimage.socket.socket import AF_INET6, IPPROTO_ICMP, SOCK_RAW
from vimage.wire import ipv4
from vimage.wire import ipv6 as wip6
from vimage.wire.ethernet import mac_ntoa

if TYPE_CHECKING:
    from vimage.cli import Context
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
FAMILIES = frozenset({"inet", "inet6"})


# netstat(1)'s usage(), the forms vimage implements
USAGE = """\
usage: netstat [-aLn] [-f address_family] [-p protocol]
       netstat -i [-bdn] [-I interface]
       netstat -r [-nW] [-F fibnum] [-f address_family]
       netstat -o [-nW] [-F fibnum]
       netstat -s [-sz] [-p protocol]
protocol: tcp, udp, ip, icmp (and arp, ip6, icmp6 with -s)
address_family: inet, inet6
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "46abdF:f:I:iLnop:rsWz")
    if args:
        raise UsageError(f"unexpected argument: {args[0]}", synopsis=True)
    mode = ""
    sflag = 0
    aflag = bflag = dflag = lflag = zflag = False
    proto: str | None = None
    iface: str | None = None
    fib = current_fib.get()
    wide = False
    family: str | None = None
    for opt, val in opts:
        if opt == "-r":
            mode = mode or "r"
        elif opt == "-o":
            mode = "o" if mode in ("", "r") else mode
        elif opt == "-W":
            wide = True
        elif opt == "-F":
            if not val.isdigit() or int(val) >= ctx.vnet.route.fibs:
                raise UsageError(f"{val}: invalid fib")
            fib = int(val)
        elif opt == "-s":
            mode = "s"
            sflag += 1
        elif opt == "-i":
            mode = mode or "i"
        elif opt == "-I":
            mode, iface = "i", val
        elif opt == "-a":
            aflag = True
        elif opt == "-b":
            bflag = True
        elif opt == "-d":
            dflag = True
        elif opt == "-L":
            lflag = True
        elif opt == "-z":
            zflag = True
        elif opt == "-f":
            if val not in FAMILIES:
                raise UsageError(f"{val}: unknown address family")
            family = val
        elif opt == "-p":
            if val not in {p.name for p in stat_protos(ctx.vnet)}:
                raise UsageError(f"{val}: unknown or uninstrumented protocol")
            proto = val
        elif opt == "-6":
            family = "inet6"
        elif opt == "-4":
            family = "inet"
        # -n: nothing to change
    vnet = ctx.vnet
    if mode == "r":
        lines = route_lines(vnet, fib, wide) if family != "inet6" else ["Routing tables"]
        if family != "inet":
            lines += ["", *_inet6.netstat_route_lines(vnet)]
    elif mode == "o":
        lines = nhop_lines(vnet, fib)
    elif mode == "s":
        lines = stat_lines(vnet, proto, sflag > 1, zflag)
    elif mode == "i":
        lines = iface_lines(vnet, iface, bflag, dflag)
    else:
        if proto is not None and proto not in SOCKET_PROTOS:
            raise UsageError(f"{proto}: no socket list for this protocol")
        if lflag:
            lines = listen_lines(vnet, proto)
        else:
            lines = socket_lines(vnet, aflag, proto, family)
    for line in lines:
        ctx.print(line)
    return 0


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


def route_lines(vnet: Vnet, fib: int = 0, wide: bool = False) -> list[str]:
    """FreeBSD's netstat -r: one row per path (a multipath prefix has several), the
    nexthop index and MTU with -W (usr.bin/netstat/route.c)."""
    title = "Routing tables" + (f" (fib: {fib})" if fib else "")
    head = f"{'Destination':<18} {'Gateway':<18} {'Flags':<6}"
    head += f" {'Nhop#':>6} {'Mtu':>6} {'Netif':>10} Expire" if wide else \
        f" {'Netif':>8} Expire"
    out = [title, "", "Internet:", head]
    for r in vnet.route.table(fib).all_paths():
        row = f"{_dst_name(r.dst, r.plen):<18} {_gateway(r):<18} {flag_string(r.flags):<6}"
        if wide:
            row += f" {r.nhidx:>6} {r.mtu or r.ifp.mtu:>6} {r.ifp.name:>10}"
        else:
            row += f" {r.ifp.name:>8}"
        expire = _expire(vnet, r)
        out.append(row + (f" {expire:>6}" if expire else ""))
    return out


def _nhop_type(r: Route) -> str:
    if r.flags & RTF_BLACKHOLE:
        return "v4/blackhole"
    if r.flags & RTF_REJECT:
        return "v4/reject"
    return "v4/gw" if r.flags & RTF_GATEWAY else "v4/resolve"


def nhop_lines(vnet: Vnet, fib: int = 0) -> list[str]:
    """FreeBSD 13's `netstat -onW` (usr.bin/netstat/nhops.c): the nexthop objects of a
    fib. vimage keeps one per path, where FreeBSD shares equal ones between routes; a
    multipath group's paths are listed with their weights after them."""
    title = "Nexthop data" + (f" (fib: {fib})" if fib else "")
    out = [title, "", "Internet:",
           f"{'Idx':<5} {'Type':<12} {'IFA':<18} {'Gateway':<18} {'Flags':<8} {'Use':>8} "
           f"{'Mtu':>6} {'Netif':>10} {'Addrif':>10} {'Refcnt':>6} Prepend"]
    paths = sorted(vnet.route.table(fib).all_paths(), key=lambda r: r.nhidx)
    for r in paths:
        ifa = ipv4.ntoa(r.ifa.addr) if r.ifa is not None else ""
        addrif = r.ifa.ifp.name if r.ifa is not None and r.ifa.ifp is not r.ifp else ""
        gw = ipv4.ntoa(r.gateway) if r.flags & RTF_GATEWAY else r.ifp.name
        out.append(f"{r.nhidx:<5} {_nhop_type(r):<12} {ifa:<18} {gw:<18} "
                   f"{hex(r.flags & ~RTF_UP):<8} {r.use:>8} {r.mtu or r.ifp.mtu:>6} "
                   f"{r.ifp.name:>10} {addrif:>10} {1:>6}")
    groups = [r for r in vnet.route.table(fib).routes() if r.group is not None]
    if groups:
        out += ["", "Nexthop groups:", f"{'Destination':<18} Nhops (idx:weight)"]
        for r in groups:
            members = " ".join(f"{p.nhidx}:{p.weight}" for p in r.paths)
            out.append(f"{_dst_name(r.dst, r.plen):<18} {members}")
    return out


# -- netstat -s ---------------------------------------------------------------------
def _histogram(title: str, hist: list[int] | dict[int, int], stats: object) -> list[str]:
    """ICMP's or ICMPv6's per-type lines (the names come with the counters' class)."""
    rows = []
    names = getattr(stats, "TYPE_NAMES", icmp.TYPE_NAMES)
    unknown = "unknown ICMP" if names is icmp.TYPE_NAMES else "unknown ICMPv6"
    counts = sorted(hist.items()) if isinstance(hist, dict) else enumerate(hist)
    for type_, count in counts:
        if count:
            name = names[type_] if type_ < len(names) else ""
            label = name or f"{unknown} #{type_}"
            rows.append(f"\t\t{label}: {count}")
    return [f"\t{title}:", *rows] if rows else []


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


def stat_lines(vnet: Vnet, only: str | None, nonzero: bool, zero: bool) -> list[str]:
    out: list[str] = []
    for proto in stat_protos(vnet):
        name, table = proto.name, proto.stats
        if only is not None and name != only:
            continue
        stats = getattr(vnet, proto.slot).stats  # type: ignore[arg-type]
        out.append(f"{name}:")
        for attr, fmt in table:
            if hasattr(stats, "outhist") and attr == "badcode":
                out.extend(_histogram("Output histogram", stats.outhist, stats))
            elif hasattr(stats, "inhist") and attr == "reflect":
                out.extend(_histogram("Input histogram", stats.inhist, stats))
            value = getattr(stats, attr)
            if value or not nonzero:
                out.append("\t" + counted(fmt, value))
        if zero:
            for attr, _ in table:
                setattr(stats, attr, 0)
            for hist in (getattr(stats, "inhist", None), getattr(stats, "outhist", None)):
                if isinstance(hist, dict):
                    hist.clear()
                elif hist is not None:
                    hist[:] = [0] * len(hist)
    return out


# -- netstat -i ---------------------------------------------------------------------
def iface_lines(vnet: Vnet, only: str | None, bflag: bool, dflag: bool) -> list[str]:
    def row(name: str, mtu: str, net: str, addr: str, cnt: tuple[str, ...]) -> str:
        ipk, ierr, idrop, ibytes, opk, oerr, obytes, coll, drop = cnt
        line = f"{name:<7}{mtu:>6} {net:<18} {addr:<17} {ipk:>13} {ierr:>5} {idrop:>5}"
        if bflag:
            line += f" {ibytes:>10}"
        line += f" {opk:>9} {oerr:>5}"
        if bflag:
            line += f" {obytes:>10}"
        line += f" {coll:>5}"
        if dflag:
            line += f" {drop:>5}"
        return line

    out = [row("Name", "Mtu", "Network", "Address",
               ("Ipkts", "Ierrs", "Idrop", "Ibytes", "Opkts", "Oerrs", "Obytes", "Coll",
                "Drop"))]
    ifaces: list[Ifnet] = ifaces_by_index(vnet)
    if only is not None:
        ifaces = [i for i in ifaces if i.name == only]
        if not ifaces:
            raise LookupError(f"{only}: no such interface")
    for ifp in ifaces:
        name = ifp.name if ifp.up else ifp.name + "*"
        link_addr = mac_ntoa(ifp.mac) if ifp.mac is not None else ifp.name
        counts = tuple(str(v) for v in (ifp.ipackets, ifp.ierrors, ifp.iqdrops, ifp.ibytes,
                                        ifp.opackets, ifp.oerrors, ifp.obytes, 0,
                                        ifp.oqdrops))
        out.append(row(name, str(ifp.mtu), f"<Link#{ifp.index}>", link_addr, counts))
        for ia in ifp.addrs:
            net = f"{ipv4.ntoa(ia.net)}/{ia.plen}"
            out.append(row(name, "-", net, ipv4.ntoa(ia.addr), ("-",) * 9))
    return out


# -- netstat [-a] ---------------------------------------------------------------------
def _endpoint(addr: int, port: int, v6: bool = False, zone: str = "") -> str:
    """FreeBSD's inetprint: `10.0.0.1.80`, `2001:db8::1.80`, `fe80::1%epair0a.22`, `*.*`."""
    if not addr:
        host = "*"
    elif v6:
        host = wip6.ntoa(addr) + (f"%{zone}" if zone and wip6.needs_zone(addr) else "")
    else:
        host = ipv4.ntoa(addr)
    return f"{host}.{port if port else '*'}"


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


def socket_lines(vnet: Vnet, aflag: bool, proto: str | None,
                 family: str | None = None) -> list[str]:
    """netstat [-a]: the sockets, rows named as FreeBSD's (tcp4, tcp6, tcp46, udp6 ...);
    `-f inet` or `-f inet6` keeps one family's (a dual-stack one is in both)."""
    out = _socket_lines(vnet, aflag, proto)
    if family is None:
        return out
    keep = ("4", "46") if family == "inet" else ("6", "46")
    return out[:2] + [line for line in out[2:] if line.split()[0].endswith(keep)]


def _socket_lines(vnet: Vnet, aflag: bool, proto: str | None) -> list[str]:
    title = "Active Internet connections" + (" (including servers)" if aflag else "")
    out = [title, f"{'Proto':<5} Recv-Q Send-Q {'Local Address':<22} "
                  f"{'Foreign Address':<22} (state)"]
    if proto in (None, "tcp"):
        for t in _tcp_rows(vnet):
            if not aflag and (t.state == tcp.LISTEN or not t.laddr):
                continue  # servers are shown with -a only
            zone = t.zone.name if t.zone is not None else ""
            out.append(f"{_tcp_proto(t):<5} {len(t.rcv_buf):>6} {len(t.snd_buf):>6} "
                       f"{_endpoint(t.laddr, t.lport, t.v6, zone):<22} "
                       f"{_endpoint(t.faddr, t.fport, t.v6, zone):<22} {t.state_name:<11}")
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
        out.append(f"{name:<5} {s._rcvbytes:>6} {0:>6} {_endpoint(s.laddr, lport, v6, zone):<22} "
                   f"{_endpoint(s.faddr, fport, v6, zone):<22} ")
    return out


def listen_lines(vnet: Vnet, proto: str | None) -> list[str]:
    """netstat -L: the queues of listening sockets (only TCP has them)."""
    out = ["Current listen queue sizes (qlen/incqlen/maxqlen)",
           f"{'Proto':<5} {'Listen':<32} Local Address"]
    if proto in (None, "tcp"):
        for t in _tcp_rows(vnet):
            if t.state != tcp.LISTEN:
                continue
            queues = f"{len(t.accept_q or ())}/{t.syn_q}/{t.backlog}"
            out.append(f"{_tcp_proto(t):<5} {queues:<32} "
                       f"{_endpoint(t.laddr, t.lport, t.v6):<22} ")
    return out
