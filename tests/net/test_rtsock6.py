"""Routing sockets for AF_INET6: requests on `vnet.rt6` with sockaddr_in6 destinations,
gateways (link-local ones scoped by sin6_scope_id or embedded, KAME style) and netmasks;
RTM_NEWADDR / RTM_DELADDR for IPv6 addresses; the bytes of the messages."""

from __future__ import annotations

import contextlib
import errno
import random
import struct
from socket import AF_INET6

import pytest

from vimage.kernel import Kernel
from vimage.net.route import RTF_DONE, RTF_GATEWAY, RTF_STATIC, RTF_UP
from vimage.socket.rtsock import AF_ROUTE, RouteSocket
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire import ipv6 as wip6
from vimage.wire import rtmsg as m

SOCK_RAW = 3
SOCKADDR_IN6_FMT = "<BBHI16sI"  # len family port flowinfo addr scope_id (netinet6/in6.h)
NET = wip6.aton("2001:db8:1::")
MASK64 = ((1 << 64) - 1) << 64


@pytest.fixture
def pair() -> tuple[Kernel, Vnet, Vnet]:
    kernel = Kernel(clock="virtual", seed=2)
    a, b = kernel.create("a"), kernel.create("b")
    ea, eb = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    ea.add_addr("fd00::1/64", family=AF_INET6)
    eb.add_addr("fd00::2/64", family=AF_INET6)
    kernel.run(3)
    return kernel, a, b


def drain(sock: RouteSocket) -> list[bytes]:
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096, 0x40))
        except BlockingIOError:
            return out


def req(mtype: int, dst: int, gw: bytes | None, plen: int = 64, seq: int = 1) -> bytes:
    addrs = {m.RTA_DST: m.sockaddr_in6(dst),
             m.RTA_NETMASK: m.sockaddr_in6(((1 << plen) - 1) << (128 - plen))}
    if gw is not None:
        addrs[m.RTA_GATEWAY] = gw
    return m.RtMsg(mtype, RTF_UP | RTF_GATEWAY | RTF_STATIC, addrs, seq=seq).pack()


def test_sockaddr_in6_bytes() -> None:
    sa = m.sockaddr_in6(wip6.aton("fe80::1"), 3)
    assert struct.calcsize(SOCKADDR_IN6_FMT) == 28 == len(sa)
    assert struct.unpack(SOCKADDR_IN6_FMT, sa) == (
        28, 28, 0, 0, bytes.fromhex("fe800000000000000000000000000001"), 3)
    parsed = m.parse_sockaddr(sa)
    assert parsed.family == m.AF_INET6 and parsed.index == 3


def test_add_get_change_delete_global_gateway(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    s.send(req(m.RTM_ADD, NET, m.sockaddr_in6(wip6.aton("fd00::2")), seq=7))
    route = a.rt6.get(NET, 64)
    assert route is not None and route.gateway == wip6.aton("fd00::2")
    assert route.ifp.name == "epair0a" and route.flags & RTF_GATEWAY
    [reply] = drain(s)
    assert len(reply) == 152 + 3 * 32  # three sockaddr_in6, 28 bytes padded to 32
    hdr = m.parse_rtmsg(reply)
    assert (hdr.type, hdr.seq, hdr.errno) == (m.RTM_ADD, 7, 0) and hdr.flags & RTF_DONE
    assert hdr.addrs[m.RTA_DST].addr == NET and hdr.addrs[m.RTA_NETMASK].addr == MASK64
    # RTM_GET of an address inside the prefix (no netmask: longest match)
    get = m.RtMsg(m.RTM_GET, 0, {m.RTA_DST: m.sockaddr_in6(NET | 5)}, seq=8).pack()
    s.send(get)
    [reply] = drain(s)
    assert m.parse_rtmsg(reply).addrs[m.RTA_GATEWAY].addr == wip6.aton("fd00::2")
    s.send(req(m.RTM_CHANGE, NET, m.sockaddr_in6(wip6.aton("fd00::3"))))
    assert a.rt6.get(NET, 64).gateway == wip6.aton("fd00::3")  # type: ignore[union-attr]
    s.send(req(m.RTM_DELETE, NET, None))
    assert a.rt6.get(NET, 64) is None
    assert [r[3] for r in drain(s)] == [m.RTM_CHANGE, m.RTM_DELETE]


def test_link_local_gateway_scope_id_or_embedded(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, b = pair
    ifp = a.ifaces["epair0a"]
    ll = wip6.aton("fe80::2")
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    s.send(req(m.RTM_ADD, NET, m.sockaddr_in6(ll, ifp.index)))  # route(8)'s way
    route = a.rt6.get(NET, 64)
    assert route is not None and route.gateway == ll and route.ifp is ifp
    [reply] = drain(s)
    gw = reply[152 + 32:152 + 64]
    # what goes out: the zone in sin6_scope_id, the address clear (deembed_scopeid=1)
    assert struct.unpack_from(SOCKADDR_IN6_FMT, gw) == (
        28, 28, 0, 0, ll.to_bytes(16, "big"), ifp.index)
    other = wip6.aton("2001:db8:2::")
    s.send(req(m.RTM_ADD, other, m.sockaddr_in6(ll | ifp.index << 96)))  # KAME embedded
    assert a.rt6.get(other, 64).ifp is ifp  # type: ignore[union-attr]
    with pytest.raises(OSError) as exc:  # no zone at all: which link?
        s.send(req(m.RTM_ADD, wip6.aton("2001:db8:3::"), m.sockaddr_in6(ll)))
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        s.send(req(m.RTM_ADD, NET, m.sockaddr_in6(ll, ifp.index)))
    assert exc.value.errno == errno.EEXIST
    assert m.parse_rtmsg(drain(s)[-1]).errno == errno.EEXIST
    with pytest.raises(OSError) as exc:
        s.send(req(m.RTM_GET, wip6.aton("2001:db8:9::"), None))
    assert exc.value.errno == errno.ESRCH


def test_ipv6_newaddr_deladdr(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    ifp = a.ifaces["epair0a"]
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    v4only = a.socket(AF_ROUTE, SOCK_RAW, m.AF_INET)
    ifp.add_addr("2001:db8:5::1/48", family=AF_INET6)
    kernel.run(3)
    msgs = [r for r in drain(s) if r[3] == m.RTM_NEWADDR]
    assert len(msgs) == 1 and drain(v4only) == []
    msg = msgs[0]
    length, _, mtype, mask, _, index = struct.unpack_from("<HBBiiH", msg)
    assert (length, mtype, index) == (len(msg), m.RTM_NEWADDR, ifp.index)
    assert mask == m.RTA_NETMASK | m.RTA_IFP | m.RTA_IFA
    addrs = m.parse_addrs(msg[20:], mask)
    assert addrs[m.RTA_IFA].addr == wip6.aton("2001:db8:5::1")
    assert addrs[m.RTA_NETMASK].addr == ((1 << 48) - 1) << 80
    from vimage.netinet6 import in6
    in6.in6_del_addr(ifp, wip6.aton("2001:db8:5::1"))
    assert [r[3] for r in drain(s)] == [m.RTM_DELADDR]


def test_mutated_ipv6_requests_only_ever_raise_oserror(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    """AF_INET6 requests with random bytes changed or cut short: an OSError or a reply,
    never another exception, and the IPv6 table still works."""
    _, a, _ = pair
    ifp = a.ifaces["epair0a"]
    s = a.socket(AF_ROUTE, SOCK_RAW, 0)
    rng = random.Random(6)
    gws = [m.sockaddr_in6(wip6.aton("fd00::2")), m.sockaddr_in6(wip6.aton("fe80::2"), ifp.index),
           m.sockaddr_dl(ifp.index, ifp.name)]
    seeds = [req(t, NET, gw) for t in (1, 2, 3, 4) for gw in gws]
    for _ in range(2000):
        msg = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            msg[rng.randrange(len(msg))] = rng.getrandbits(8)
        if rng.random() < 0.2:
            msg = msg[:rng.randrange(len(msg))]
        if rng.random() < 0.6 and len(msg) >= 4:
            msg[0:2], msg[2] = len(msg).to_bytes(2, "little"), m.RTM_VERSION
        with contextlib.suppress(OSError):
            s.send(bytes(msg))
        drain(s)
    a.rt6.changed()
    assert a.rt6.lookup(wip6.aton("fd00::2")) is not None  # the connected prefix is there
    assert a.cmd("netstat -rn -f inet6").ok and a.cmd("route -6 get fd00::2").ok
