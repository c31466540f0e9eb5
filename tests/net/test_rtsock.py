"""Routing sockets: FreeBSD's message layouts byte for byte, requests, errors, and the
messages the stack broadcasts (addresses, interfaces, misses, redirects, losing)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import struct
from socket import SOL_SOCKET

import pytest

import vimage
from vimage.kernel import Kernel
from vimage.net.route import RTF_DONE, RTF_DYNAMIC, RTF_GATEWAY, RTF_HOST, RTF_STATIC, RTF_UP
from vimage.socket.rtsock import (
    AF_ROUTE,
    ROUTE_MSGFILTER,
    SO_SETFIB,
    SO_USELOOPBACK,
    RouteSocket,
    route_filter,
)
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire import icmp as wicmp
from vimage.wire import rtmsg as m

SOCK_RAW = 3

# The layouts of FreeBSD's net/route.h and net/if.h on amd64, written down here from the
# headers (not from vimage.wire.rtmsg): u_long is 8 bytes, pid_t and int 4, natural alignment.
RT_METRICS_FMT = "<" + "Q" * 14  # locks mtu hopcount expire recvpipe sendpipe ssthresh rtt
#                                  rttvar pksent weight nhidx filler[2]
RT_MSGHDR_FMT = "<HBBHH" + "i" * 6 + "Q" + RT_METRICS_FMT[1:]
IF_DATA_FMT = "<BBBBBBHII" + "Q" * 17  # ... mtu metric baudrate 12 counters hwassist epoch
#                                      lastchange(2)
IF_MSGHDR_FMT = "<HBBiiHH" + IF_DATA_FMT[1:]
IFA_MSGHDR_FMT = "<HBBiiHHi"
IF_ANNOUNCEMSGHDR_FMT = "<HBBH16sH"
SOCKADDR_IN_FMT = "<BBH4s8x"


def test_struct_sizes_are_freebsds() -> None:
    assert struct.calcsize(RT_METRICS_FMT) == 112
    assert struct.calcsize(RT_MSGHDR_FMT) == 152 == m.RT_MSGHDR.size
    assert struct.calcsize(IF_DATA_FMT) == 152 == m.IF_DATA.size
    assert struct.calcsize(IF_MSGHDR_FMT) == 168 == m.IF_MSGHDR.size
    assert struct.calcsize(IFA_MSGHDR_FMT) == 20 == m.IFA_MSGHDR.size
    assert struct.calcsize(IF_ANNOUNCEMSGHDR_FMT) == 24 == m.IF_ANNOUNCEMSGHDR.size
    assert struct.calcsize(SOCKADDR_IN_FMT) == 16


def test_rt_msghdr_bytes() -> None:
    rmx = tuple(range(100, 114))
    msg = m.RtMsg(m.RTM_ADD, RTF_UP | RTF_GATEWAY, {
        m.RTA_DST: m.sockaddr_in(0x0A010000), m.RTA_GATEWAY: m.sockaddr_in(0x0A000002),
        m.RTA_NETMASK: m.sockaddr_in(0xFFFF0000)}, index=3, pid=77, seq=9, errno=17,
        fmask=5, inits=m.RTV_MTU | m.RTV_WEIGHT, rmx=rmx).pack()
    assert len(msg) == 200  # route monitor's "len 200" for DST,GATEWAY,NETMASK
    fields = struct.unpack_from(RT_MSGHDR_FMT, msg)
    assert fields[:12] == (200, 5, 1, 3, 0, 3, 7, 77, 9, 17, 5, 0x101)
    assert fields[12:] == rmx
    # by offset, as a C program reads them
    assert msg[3] == m.RTM_ADD and int.from_bytes(msg[16:20], "little") == 77
    assert int.from_bytes(msg[48:56], "little") == 101  # rmx_mtu
    assert int.from_bytes(msg[120:128], "little") == 110  # rmx_weight
    sa = [struct.unpack_from(SOCKADDR_IN_FMT, msg, 152 + 16 * i) for i in range(3)]
    assert sa == [(16, 2, 0, bytes([10, 1, 0, 0])), (16, 2, 0, bytes([10, 0, 0, 2])),
                  (16, 2, 0, bytes([255, 255, 0, 0]))]
    parsed = m.parse_rtmsg(msg)
    assert parsed.addrs[m.RTA_NETMASK].addr == 0xFFFF0000 and parsed.metric("nhidx") == 111


def test_sockaddrs_are_padded_to_long() -> None:
    assert m.sa_size(0) == 8 and m.sa_size(16) == 16 and m.sa_size(20) == 24
    assert m.sa_size(28) == 32 and m.sa_size(54) == 56  # sockaddr_in6, sockaddr_dl
    dl = m.sockaddr_dl(4, "epair0a", bytes.fromhex("02000000000a"))
    assert dl[:8] == bytes([54, 18, 4, 0, 6, 7, 6, 0]) and dl[8:15] == b"epair0a"
    assert dl[15:21] == bytes.fromhex("02000000000a") and len(dl) == 54
    assert m.sockaddr_dl(4)[:8] == bytes([16, 18, 4, 0, 6, 0, 0, 0])  # sockaddr_dl_short
    mask, body = m.pack_addrs({m.RTA_IFP: dl, m.RTA_DST: m.sockaddr_in6(1)})
    assert mask == 0x11 and len(body) == 32 + 56
    assert body[:2] == bytes([28, 28]) and body[32:34] == bytes([54, 18])
    parsed = m.parse_addrs(body, mask)
    assert parsed[m.RTA_DST].addr == 1 and parsed[m.RTA_IFP].addr == "epair0a"
    # a short netmask (sa_len 6: the zero tail dropped, as BSD did) reads as zero-filled
    assert m.parse_sockaddr(bytes([6, 2, 0, 0, 255, 255])).addr == 0xFFFF0000


def test_if_msghdr_ifa_msghdr_announce_bytes() -> None:
    counters = tuple(range(1, 13))
    msg = m.if_msg(m.RTM_IFINFO, 5, 0x8843, m.LINK_STATE_UP, 1500, counters)
    f = struct.unpack(IF_MSGHDR_FMT, msg)
    assert f[:7] == (168, 5, m.RTM_IFINFO, 0, 0x8843, 5, 0)
    assert f[11] == m.LINK_STATE_UP and f[13] == 152 and f[14] == 1500  # datalen, mtu
    assert f[17:29] == counters  # ipackets .. noproto at offset 40
    assert int.from_bytes(msg[40:48], "little") == 1
    ifa = m.ifa_msg(m.RTM_NEWADDR, 2, 1, {m.RTA_IFA: m.sockaddr_in(0x0A000001)}, metric=4)
    assert struct.unpack_from(IFA_MSGHDR_FMT, ifa) == (36, 5, m.RTM_NEWADDR, 0x20, 1, 2, 0, 4)
    ann = m.ifannounce_msg(7, "epair3b", m.IFAN_DEPARTURE)
    assert struct.unpack(IF_ANNOUNCEMSGHDR_FMT, ann) == (
        24, 5, m.RTM_IFANNOUNCE, 7, b"epair3b".ljust(16, b"\0"), 1)


# -- requests ---------------------------------------------------------------------------------
@pytest.fixture
def pair() -> tuple[Kernel, Vnet, Vnet]:
    kernel = Kernel(clock="virtual", seed=2)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    kernel.run(1)
    return kernel, a, b


def add_msg(dst: int, plen: int, gw: int, seq: int = 1, **kw: object) -> bytes:
    addrs = {m.RTA_DST: m.sockaddr_in(dst), m.RTA_GATEWAY: m.sockaddr_in(gw),
             m.RTA_NETMASK: m.sockaddr_in((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)}
    return m.RtMsg(m.RTM_ADD, RTF_UP | RTF_GATEWAY | RTF_STATIC, addrs, seq=seq,
                   **kw).pack()  # type: ignore[arg-type]


def drain(sock: RouteSocket) -> list[m.ParsedRtMsg | bytes]:
    out: list[m.ParsedRtMsg | bytes] = []
    while True:
        try:
            raw = sock.recv(4096, 0x40)
        except BlockingIOError:
            return out
        out.append(m.parse_rtmsg(raw) if raw[3] <= m.RTM_RESOLVE else raw)


def test_add_get_change_delete(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    assert isinstance(s, RouteSocket)
    s.send(add_msg(0x0A010000, 16, 0x0A000002, seq=5))
    (reply,) = drain(s)
    assert isinstance(reply, m.ParsedRtMsg)
    assert reply.type == m.RTM_ADD and reply.seq == 5 and reply.errno == 0
    assert reply.flags & RTF_DONE and reply.addrs[m.RTA_GATEWAY].addr == 0x0A000002
    route = a.rt.get(0x0A010000, 16)
    assert route is not None and route.ifp.name == "epair0a" and route.flags & RTF_STATIC
    # RTM_GET: longest match, with the interface when RTA_IFP is asked for
    s.send(m.RtMsg(m.RTM_GET, RTF_UP, {m.RTA_DST: m.sockaddr_in(0x0A010203),
                                       m.RTA_IFP: m.sockaddr_dl(0)}, seq=6).pack())
    (got,) = drain(s)
    assert got.type == m.RTM_GET and got.addrs[m.RTA_DST].addr == 0x0A010000
    assert got.addrs[m.RTA_IFP].addr == "epair0a" and got.addrs[m.RTA_IFA].addr == 0x0A000001
    assert got.metric("nhidx") == route.nhidx > 0
    # RTM_CHANGE: the MTU metric
    change = m.RtMsg(m.RTM_CHANGE, RTF_UP | RTF_GATEWAY | RTF_STATIC, {
        m.RTA_DST: m.sockaddr_in(0x0A010000), m.RTA_NETMASK: m.sockaddr_in(0xFFFF0000)},
        inits=m.RTV_MTU, rmx=(0, 1280) + (0,) * 12, seq=7).pack()
    s.send(change)
    assert drain(s)[0].metric("mtu") == 1280 and route.mtu == 1280
    s.send(m.RtMsg(m.RTM_DELETE, RTF_UP, {m.RTA_DST: m.sockaddr_in(0x0A010000),
                                          m.RTA_NETMASK: m.sockaddr_in(0xFFFF0000)}).pack())
    assert drain(s)[0].type == m.RTM_DELETE and a.rt.get(0x0A010000, 16) is None


def test_errors_come_back_in_rtm_errno(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    s.send(add_msg(0x0A010000, 16, 0x0A000002))
    drain(s)
    with pytest.raises(OSError) as exc:
        s.send(add_msg(0x0A010000, 16, 0x0A000002, seq=2))
    assert exc.value.errno == errno.EEXIST
    (reply,) = drain(s)
    assert reply.errno == errno.EEXIST and reply.seq == 2 and not reply.flags & RTF_DONE
    for mtype in (m.RTM_DELETE, m.RTM_GET):
        with pytest.raises(OSError) as exc:
            s.send(m.RtMsg(mtype, RTF_UP, {m.RTA_DST: m.sockaddr_in(0xC0000200),
                                           m.RTA_NETMASK: m.sockaddr_in(0xFFFFFF00)}).pack())
        assert exc.value.errno == errno.ESRCH and drain(s)[0].errno == errno.ESRCH
    with pytest.raises(OSError) as exc:  # a gateway not on a connected network
        s.send(add_msg(0x0A020000, 16, 0xC0000201))
    assert exc.value.errno == errno.ENETUNREACH


@pytest.mark.parametrize("mangle", ["short", "longer", "msglen", "sa_overrun", "sa_family",
                                    "no_dst", "mask"])
def test_bad_messages_get_einval_and_change_nothing(pair: tuple[Kernel, Vnet, Vnet],
                                                    mangle: str) -> None:
    _, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    listener = a.socket(AF_ROUTE, SOCK_RAW, 0)
    msg = bytearray(add_msg(0x0A010000, 16, 0x0A000002))
    if mangle == "short":
        msg = msg[:100]
    elif mangle == "longer":
        msg += b"\0" * 8
    elif mangle == "msglen":
        msg[0:2] = (150).to_bytes(2, "little")
    elif mangle == "sa_overrun":
        msg[152 + 32] = 200  # the netmask's sa_len runs past the end
    elif mangle == "sa_family":
        msg[152 + 1] = 99
    elif mangle == "no_dst":
        msg[12:16] = (m.RTA_GATEWAY | m.RTA_NETMASK).to_bytes(4, "little")
        msg = msg[:152] + msg[168:]
        msg[0:2] = len(msg).to_bytes(2, "little")
    elif mangle == "mask":
        msg[152 + 32 + 4:152 + 32 + 8] = bytes([255, 0, 255, 0])  # not contiguous
    before = [(r.dst, r.plen) for r in a.rt.routes()]
    with pytest.raises(OSError) as exc:
        s.send(bytes(msg))
    assert exc.value.errno == errno.EINVAL
    assert [(r.dst, r.plen) for r in a.rt.routes()] == before
    assert drain(s) == [] and drain(listener) == []


def test_bad_version_is_eprotonosupport(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    msg = bytearray(add_msg(0x0A010000, 16, 0x0A000002))
    msg[2] = 4
    with pytest.raises(OSError) as exc:
        s.send(bytes(msg))
    assert exc.value.errno == errno.EPROTONOSUPPORT  # FreeBSD route_output's answer
    assert a.rt.get(0x0A010000, 16) is None and drain(s) == []


def test_useloopback_msgfilter_and_family(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    sender = a.socket(AF_ROUTE, SOCK_RAW, 0)
    other = a.socket(AF_ROUTE, SOCK_RAW, 0)
    only_delete = a.socket(AF_ROUTE, SOCK_RAW, 0)
    inet6_only = a.socket(AF_ROUTE, SOCK_RAW, m.AF_INET6)
    assert sender.getsockopt(SOL_SOCKET, SO_USELOOPBACK) == 1
    sender.setsockopt(SOL_SOCKET, SO_USELOOPBACK, 0)
    only_delete.setsockopt(AF_ROUTE, ROUTE_MSGFILTER, route_filter(m.RTM_DELETE))
    assert only_delete.getsockopt(AF_ROUTE, ROUTE_MSGFILTER) == 1 << m.RTM_DELETE
    sender.send(add_msg(0x0A010000, 16, 0x0A000002))
    assert drain(sender) == []
    assert [r.type for r in drain(other)] == [m.RTM_ADD]
    assert drain(only_delete) == [] and drain(inet6_only) == []
    sender.send(m.RtMsg(m.RTM_DELETE, RTF_UP, {m.RTA_DST: m.sockaddr_in(0x0A010000),
                                               m.RTA_NETMASK: m.sockaddr_in(0xFFFF0000)}).pack())
    assert [r.type for r in drain(only_delete)] == [m.RTM_DELETE]


def test_messages_stay_in_their_fib() -> None:
    kernel = Kernel(clock="virtual", seed=2)
    a, b = kernel.create("a", fibs=2), kernel.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    a.cmd("sysctl net.add_addr_allfibs=1")
    a.iface("epair0a").add_addr("10.0.1.1/24")  # its prefix in both fibs
    fib0, fib1 = a.socket(AF_ROUTE, SOCK_RAW, 0), a.socket(AF_ROUTE, SOCK_RAW, 0)
    fib1.setsockopt(SOL_SOCKET, SO_SETFIB, 1)
    with pytest.raises(OSError) as exc:
        fib1.setsockopt(SOL_SOCKET, SO_SETFIB, 2)
    assert exc.value.errno == errno.EINVAL
    fib1.send(add_msg(0x0A050000, 16, 0x0A000102))
    assert a.route.tables[1].get(0x0A050000, 16) is not None
    assert a.rt.get(0x0A050000, 16) is None
    assert [r.type for r in drain(fib1)] == [m.RTM_ADD] and drain(fib0) == []


# -- what the stack tells listeners --------------------------------------------------------------
def kinds(sock: RouteSocket) -> list[int]:
    return [msg[3] if isinstance(msg, bytes) else msg.type for msg in drain(sock)]


def test_address_and_interface_events(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, b = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    a.cmd("ifconfig epair0a 10.0.9.1/24 alias")
    msgs = drain(s)
    assert [x[3] if isinstance(x, bytes) else x.type for x in msgs] == [
        m.RTM_NEWADDR, m.RTM_ADD, m.RTM_ADD]  # the address, its prefix, its local route
    newaddr = msgs[0]
    assert isinstance(newaddr, bytes)
    mask = struct.unpack_from(IFA_MSGHDR_FMT, newaddr)[3]
    addrs = m.parse_addrs(newaddr[20:], mask)
    assert addrs[m.RTA_IFA].addr == 0x0A000901 and addrs[m.RTA_NETMASK].addr == 0xFFFFFF00
    assert addrs[m.RTA_IFP].addr == "epair0a" and addrs[m.RTA_BRD].addr == 0x0A0009FF
    a.cmd("ifconfig epair0a inet 10.0.9.1 -alias")
    assert kinds(s) == [m.RTM_DELETE, m.RTM_DELETE, m.RTM_DELADDR]
    a.cmd("ifconfig epair0a down")
    a.cmd("ifconfig epair0a up")
    infos = drain(s)
    assert [x[3] for x in infos if isinstance(x, bytes)] == [m.RTM_IFINFO] * 2
    states = [struct.unpack(IF_MSGHDR_FMT, x)[11] for x in infos if isinstance(x, bytes)]
    assert states == [m.LINK_STATE_DOWN, m.LINK_STATE_UP]
    kernel.cmd("ifconfig epair create")
    kernel.cmd("ifconfig epair1a vnet a")
    (arrival,) = [x for x in drain(s) if isinstance(x, bytes) and x[3] == m.RTM_IFANNOUNCE]
    assert struct.unpack(IF_ANNOUNCEMSGHDR_FMT, arrival)[4].rstrip(b"\0") == b"epair1a"
    assert struct.unpack(IF_ANNOUNCEMSGHDR_FMT, arrival)[5] == m.IFAN_ARRIVAL
    assert kernel.cmd("ifconfig epair1a -vnet a").ok
    what = [struct.unpack(IF_ANNOUNCEMSGHDR_FMT, x)[5] for x in drain(s)
            if isinstance(x, bytes) and x[3] == m.RTM_IFANNOUNCE]
    assert what == [m.IFAN_DEPARTURE]
    assert b.alive


def test_miss_on_output_and_forwarding(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, b = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    u = a.socket(2, 2)
    with pytest.raises(OSError):
        u.sendto(b"x", ("192.0.2.9", 9))
    (miss,) = drain(s)
    assert miss.type == m.RTM_MISS and miss.addrs[m.RTA_DST].addr == 0xC0000209
    # a forwarded packet with no route: the router's listeners hear of it too
    a.cmd("sysctl net.inet.ip.forwarding=1")
    b.cmd("route add default 10.0.0.1")
    tx = b.socket(2, 2)
    tx.sendto(b"x", ("198.51.100.1", 9))
    kernel.run(1)
    assert [x.type for x in drain(s)] == [m.RTM_MISS]


def test_icmp_redirect_installs_dynamic_route(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, b = pair
    a.cmd("route add default 10.0.0.2")
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    # b tells a: for 192.0.2.7 use 10.0.0.3 (quoting a's datagram's header)
    quoted = bytes.fromhex("450000250001000040110000") + bytes([10, 0, 0, 1, 192, 0, 2, 7])
    msg = wicmp.build(wicmp.REDIRECT, 1, 0x0A000003, quoted + b"\0" * 8)
    raw = b.socket(2, SOCK_RAW, 1)
    raw.sendto(msg, ("10.0.0.1", 0))
    kernel.run(1)
    route = a.rt.get(0xC0000207, 32)
    assert route is not None and route.gateway == 0x0A000003
    assert route.flags & (RTF_DYNAMIC | RTF_GATEWAY | RTF_HOST) == (
        RTF_DYNAMIC | RTF_GATEWAY | RTF_HOST)
    (redirect,) = [x for x in drain(s) if x.type == m.RTM_REDIRECT]
    assert redirect.addrs[m.RTA_AUTHOR].addr == 0x0A000002
    assert redirect.addrs[m.RTA_GATEWAY].addr == 0x0A000003
    kernel.run(601)  # net.inet.icmp.redirtimeout
    assert a.rt.get(0xC0000207, 32) is None
    assert [x.type for x in drain(s)] == [m.RTM_DELETE]


def test_tcp_retransmissions_report_losing(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, b = pair
    server = b.socket(2, 1)
    server.bind(("", 80))
    server.listen(1)
    client = a.socket(2, 1)
    client.connect(("10.0.0.2", 80))
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    b.cmd("ifconfig epair0b down")
    client.send(b"hello")
    kernel.run(60)
    losing = [x for x in drain(s) if x.type == m.RTM_LOSING]
    assert losing and losing[0].addrs[m.RTA_DST].addr == 0x0A000000


def test_asyncio_loop_reads_a_routing_socket(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair

    async def monitor() -> bytes:
        loop = asyncio.get_running_loop()
        s = a.socket(AF_ROUTE, SOCK_RAW, 0)
        s.setblocking(False)
        loop.call_later(5, lambda: a.cmd("route add 10.7.0.0/16 10.0.0.2"))
        try:
            return await loop.sock_recv(s, 4096)  # type: ignore[arg-type]
        finally:
            s.close()

    msg = vimage.run(monitor(), kernel=kernel)
    assert m.parse_rtmsg(msg).type == m.RTM_ADD
    assert kernel.sched.now_ns() >= 5 * 10**9


def test_destroy_closes_routing_sockets_and_expiry_timer(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    assert a.cmd("route add 10.7.0.0/16 10.0.0.2 -expire +100").ok
    assert kernel.sched.pending_timers(a) > 0
    kernel.destroy("a")
    assert s.closed and kernel.sched.pending_timers(a) == 0
    with pytest.raises(OSError):
        s.send(add_msg(0x0A010000, 16, 0x0A000002))


def test_mutated_messages_only_ever_raise_oserror(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    """Requests with random bytes changed, cut short or given a matching length: the
    answer is an OSError or a reply, never another exception, and the table still works."""
    _, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    rng = random.Random(5)
    addrs = {m.RTA_DST: m.sockaddr_in(0x0A010000), m.RTA_GATEWAY: m.sockaddr_in(0x0A000002),
             m.RTA_NETMASK: m.sockaddr_in(0xFFFF0000), m.RTA_IFP: m.sockaddr_dl(2, "epair0a"),
             m.RTA_IFA: m.sockaddr_in(0x0A000001)}
    seeds = [m.RtMsg(t, RTF_UP | RTF_GATEWAY, addrs, inits=m.RTV_MTU).pack() for t in range(1, 8)]
    for _ in range(3000):
        msg = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            msg[rng.randrange(len(msg))] = rng.getrandbits(8)
        if rng.random() < 0.2:
            msg = msg[:rng.randrange(len(msg))]
        if rng.random() < 0.5 and len(msg) >= 4:
            msg[0:2], msg[2] = len(msg).to_bytes(2, "little"), m.RTM_VERSION
        with contextlib.suppress(OSError):
            s.send(bytes(msg))
        drain(s)
    a.rt.changed()
    assert a.rt.lookup(0x0A000002) is not None  # the connected route is still there
    assert a.cmd("netstat -rnW").ok and a.cmd("netstat -onW").ok
