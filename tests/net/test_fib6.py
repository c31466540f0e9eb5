"""FIBs for IPv6: a table per fib (net.fibs), interface routes in the interface's fib
(net.add_addr_allfibs), output, source selection and forwarding by the socket's, the
process's or the receiving interface's fib, `route -6` / `netstat -rn -6 -F N`, AF_INET6
routing sockets, ND's routes and route6d.

The first tests port the IPv6 cases of FreeBSD's tests/sys/netinet/fibs_test.sh (its
taps become epairs, which need no root; udp_dontroute6 becomes SO_SETFIB, vimage having
no SO_DONTROUTE)."""

from __future__ import annotations

import errno
import re
from socket import AF_INET6, SOCK_DGRAM, SOCK_STREAM, SOL_SOCKET

import pytest
from tests.netinet6.conftest import DAD_DONE

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.net.route import RTF_GATEWAY, RTF_STATIC, RTF_UP
from vimage.socket.rtsock import AF_ROUTE
from vimage.socket.socket import SO_SETFIB
from vimage.vnet import Vnet
from vimage.wire import ipv4
from vimage.wire import ipv6 as wip6
from vimage.wire import rtmsg as m

SOCK_RAW = 3
ADDR0, ADDR1, GATEWAY = "2001:db8::2", "2001:db8::3", "2001:db8::1"


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def rows(vnet: Vnet, fib: int) -> list[str]:
    """The Internet6 rows of `setfib FIB netstat -rn -f inet6`."""
    out = ok(vnet, f"setfib {fib} netstat -rn -f inet6")
    return out.split("Destination", 1)[1].splitlines()[1:]


def has(vnet: Vnet, fib: int, pattern: str) -> bool:
    return any(re.search(pattern, row) for row in rows(vnet, fib))


def setup_iface(vnet: Vnet, ifname: str, fib: int, cidr: str, flags: str = "") -> None:
    """fibs_test.sh's setup_iface: `setfib FIB ifconfig IF inet6 ADDR/LEN fib FIB`."""
    ok(vnet, f"setfib {fib} ifconfig {ifname} inet6 {cidr} fib {fib} {flags}".rstrip())


def new_epair(vnet: Vnet) -> str:
    return ok(vnet, "ifconfig epair create").strip()


# -- fibs_test.sh ---------------------------------------------------------------------------
def test_loopback_and_network_routes_on_nondefault_fib_inet6() -> None:
    h = Kernel(clock="virtual", seed=1).create("h")
    ok(h, "sysctl net.fibs=2")  # get_fibs 1: FIB0=1
    tap = new_epair(h)
    setup_iface(h, tap, 1, f"{ADDR0}/64")
    assert has(h, 1, rf"^{ADDR0} .*UHS.*lo0")  # the host route in the interface's fib
    assert not has(h, 0, rf"^{ADDR0} .*UHS.*lo0")  # and not in the default one
    assert has(h, 1, rf"^2001:db8::/64 .*{tap}")  # the network route likewise
    assert not has(h, 0, rf"^2001:db8::/64 .*{tap}")


def test_default_route_with_multiple_fibs_on_same_subnet_inet6() -> None:
    h = Kernel(clock="virtual", seed=1).create("h")
    ok(h, "sysctl net.fibs=3")
    tap0, tap1 = new_epair(h), new_epair(h)
    setup_iface(h, tap0, 1, f"{ADDR0}/64")
    setup_iface(h, tap1, 2, f"{ADDR1}/64")
    ok(h, f"setfib 1 route -6 add default {GATEWAY}")
    ok(h, f"setfib 2 route -6 add default {GATEWAY}")  # not EEXIST: another table
    assert has(h, 1, rf"^default .*{tap0}$")
    assert has(h, 2, rf"^default .*{tap1}$")
    assert not has(h, 0, r"^default")


@pytest.mark.parametrize("remove", [1, 0])
def test_same_ip_multiple_ifaces_inet6(remove: int) -> None:
    """The same address on two interfaces in two fibs (/64 and /128); removing it from
    one takes its host route out of that one's fib only."""
    h = Kernel(clock="virtual", seed=1).create("h")
    ok(h, "sysctl net.fibs=3")
    taps = [new_epair(h), new_epair(h)]
    setup_iface(h, taps[0], 1, f"{ADDR0}/64")
    setup_iface(h, taps[1], 2, f"{ADDR0}/128")
    ok(h, f"ifconfig {taps[remove]} inet6 {ADDR0} -alias")
    assert not has(h, remove + 1, rf"^{ADDR0}\s")
    assert has(h, 2 - remove, rf"^{ADDR0}\s.*UHS.*lo0")  # the other keeps its own
    local = h.ip6.local[wip6.aton(ADDR0)]  # and the address is still ours
    assert local.ifp.name == taps[1 - remove]
    ok(h, f"ifconfig {taps[1]} destroy")
    ok(h, f"ifconfig {taps[0]} destroy")
    assert wip6.aton(ADDR0) not in h.ip6.local
    assert not any(has(h, fib, rf"^{ADDR0}\s") for fib in range(3))


def test_slaac_on_nondefault_fib6() -> None:
    """An RA received on an interface in fib 1: the autoconfigured address's local and
    prefix routes and the default router go in fib 1, and in no other fib."""
    k = Kernel(clock="virtual", seed=3)
    r, h = k.create("r"), k.create("h", fibs=3)
    er, eh = k.epair()
    er.move_to(r)
    eh.move_to(h)
    ok(r, "ifconfig epair0a inet6 2001:db8:7::1/64 up")
    r.sysctl("net.inet6.ip6.forwarding", 1)  # so that it advertises
    ok(h, "setfib 1 ifconfig epair0b inet6 -ifdisabled accept_rtadv fib 1 up")
    k.run(DAD_DONE)
    ok(r, "rtadvd epair0a")
    k.run(2 + 2 * DAD_DONE)
    assert re.search(r"inet6 2001:db8:7:.*prefixlen 64.*autoconf", ok(h, "ifconfig epair0b"))
    netstat1 = ok(h, "netstat -rnf inet6 -F 1")
    assert re.search(r"2001:db8:7:\S+ .*\bUHS\b.*lo0", netstat1)
    assert re.search(r"2001:db8:7::/64 .*\bU\b.*epair0b", netstat1)
    assert re.search(r"default .*\bUG\b.*epair0b", netstat1)
    for fib in (0, 2):
        other = ok(h, f"netstat -rnf inet6 -F {fib}")
        assert "2001:db8:7:" not in other and "default" not in other
    ok(h, "ifconfig epair0b fib 2")  # the router's interface moves: so does its route
    h.nd6.rtr.select_router()
    assert "default" not in ok(h, "netstat -rnf inet6 -F 1")
    assert re.search(r"default .*\bUG\b.*epair0b", ok(h, "netstat -rnf inet6 -F 2"))


def test_subnet_route_with_multiple_fibs_on_same_subnet_inet6() -> None:
    h = Kernel(clock="virtual", seed=1).create("h")
    ok(h, "sysctl net.fibs=3")
    tap0, tap1 = new_epair(h), new_epair(h)
    setup_iface(h, tap0, 1, f"{ADDR0}/64")
    setup_iface(h, tap1, 2, f"{ADDR1}/64")
    assert f"interface: {tap0}" in ok(h, f"setfib 1 route -6 get {ADDR1}")
    assert f"interface: {tap1}" in ok(h, f"setfib 2 route -6 get {ADDR0}")
    assert h.cmd(f"route -6 get {ADDR0}").status == 1  # fib 0 has neither


@pytest.fixture
def two_links() -> tuple[Kernel, Vnet, Vnet, Vnet]:
    """h has 2001:db8::2/64 on epair0a in fib 1 (to t1) and 2001:db8::3/64 on epair1a in
    fib 2 (to t2); t1 and t2 are both 2001:db8::100 and listen on UDP port 9."""
    k = Kernel(clock="virtual", seed=5)
    h = k.create("h", fibs=3)
    peers = []
    for n, (fib, addr) in enumerate(((1, ADDR0), (2, ADDR1))):
        t = k.create(f"t{n + 1}")
        ea, eb = k.epair()
        ea.move_to(h)
        eb.move_to(t)
        ok(h, f"ifconfig {ea.name} fib {fib} inet6 {addr}/64 no_dad up")
        ok(t, f"ifconfig {eb.name} inet6 2001:db8::100/64 no_dad up")
        peers.append(t)
    k.run(DAD_DONE)
    return k, h, peers[0], peers[1]


def test_udp_source_and_interface_by_socket_fib(two_links: tuple[Kernel, Vnet, Vnet, Vnet]
                                                ) -> None:
    """udp_dontroute6's point: a socket of one fib never leaves by another fib's
    interface, nor takes its source from another fib's route."""
    k, h, t1, t2 = two_links
    rx = []
    for t in (t1, t2):
        s = t.socket(AF_INET6, SOCK_DGRAM)
        s.bind(("::", 9))
        s.settimeout(0)
        rx.append(s)
    for fib, target, src in ((1, 0, ADDR0), (2, 1, ADDR1)):
        tx = h.socket(AF_INET6, SOCK_DGRAM)
        tx.setsockopt(SOL_SOCKET, SO_SETFIB, fib)
        tx.sendto(b"fib %d" % fib, (f"{'2001:db8::100'}", 9))
        k.run(1)
        data, addr = rx[target].recvfrom(100)
        assert data == b"fib %d" % fib and addr[0] == src
        with pytest.raises(BlockingIOError):
            rx[1 - target].recvfrom(100)
        tx.close()
    tx = h.socket(AF_INET6, SOCK_DGRAM)  # fib 0 has no route there at all
    with pytest.raises(OSError) as exc:
        tx.sendto(b"x", ("2001:db8::100", 9))
    assert exc.value.errno == errno.EHOSTUNREACH
    with pytest.raises(OSError) as exc:
        tx.setsockopt(SOL_SOCKET, SO_SETFIB, 3)
    assert exc.value.errno == errno.EINVAL


def test_tcp_connects_through_its_fib(two_links: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    k, h, _, t2 = two_links
    server = t2.socket(AF_INET6, SOCK_STREAM)
    server.bind(("::", 80))
    server.listen(1)
    c = h.socket(AF_INET6, SOCK_STREAM)
    c.setsockopt(SOL_SOCKET, SO_SETFIB, 2)
    c.connect(("2001:db8::100", 80))
    assert c.getsockname()[0] == ADDR1  # the source of fib 2's interface
    conn, peer = server.accept()
    assert peer[0] == ADDR1
    c.sendall(b"hello")
    assert conn.recv(10) == b"hello"
    # the other way: h listens in fib 2, the only fib with a route back to t2; the
    # accepted connection takes its listener's fib and answers through it
    listener = h.socket(AF_INET6, SOCK_STREAM)
    listener.setsockopt(SOL_SOCKET, SO_SETFIB, 2)
    listener.bind(("::", 81))
    listener.listen(1)
    client = t2.socket(AF_INET6, SOCK_STREAM)
    client.connect((ADDR1, 81))
    accepted, _ = listener.accept()
    assert accepted.getsockopt(SOL_SOCKET, SO_SETFIB) == 2
    accepted.sendall(b"back")
    assert client.recv(10) == b"back"


def test_ping6_and_traceroute6_under_setfib(two_links: tuple[Kernel, Vnet, Vnet, Vnet]
                                            ) -> None:
    _, h, t1, t2 = two_links
    before = t1.iface("epair0b").ipackets, t2.iface("epair1b").ipackets
    out = ok(h, "setfib 2 ping6 -c 1 2001:db8::100")
    assert f"{ADDR1} --> 2001:db8::100" in out and "1 packets received" in out
    assert t1.iface("epair0b").ipackets == before[0]  # not a packet by fib 1's link
    assert t2.iface("epair1b").ipackets > before[1]
    assert "1 packets received" in ok(h, "setfib 1 ping6 -c 1 2001:db8::100")
    assert h.cmd("ping6 -c 1 2001:db8::100").status != 0  # fib 0: no route
    trace = ok(h, "setfib 1 traceroute6 -n -q 1 2001:db8::100")
    assert f"from {ADDR0}" in trace and "2001:db8::100" in trace.splitlines()[-1]


# -- forwarding and ICMPv6 -----------------------------------------------------------------------
def test_forwarding_and_echo_replies_use_the_receiving_interfaces_fib() -> None:
    """a - r - {b1, b2}: r's interface towards a is in fib 1, whose route to the
    destination goes by b2 (fib 0's by b1). b2's own link is in its fib 1 too, where its
    only route back lives: its echo reply must be routed in fib 1."""
    k = Kernel(clock="virtual", seed=6)
    a, r, b1, b2 = k.create("a"), k.create("r", fibs=2), k.create("b1"), k.create("b2", fibs=2)

    def link(x: Vnet, xa: str, y: Vnet, ya: str, xfib: int = 0, yfib: int = 0
             ) -> tuple[Ifnet, Ifnet]:
        ex, ey = k.epair()
        ex.move_to(x)
        ey.move_to(y)
        ok(x, f"ifconfig {ex.name} fib {xfib} inet6 {xa} no_dad up")
        ok(y, f"ifconfig {ey.name} fib {yfib} inet6 {ya} no_dad up")
        return ex, ey

    link(a, "2001:db8:a::1/64", r, "2001:db8:a::2/64", yfib=1)
    ok(r, "sysctl net.add_addr_allfibs=1")  # r's other links in both fibs
    link(r, "2001:db8:b1::1/64", b1, "2001:db8:b1::2/64")
    link(r, "2001:db8:b2::1/64", b2, "2001:db8:b2::2/64", yfib=1)
    for b in (b1, b2):
        b.iface("lo0").add_addr("2001:db8:ff::1/128", family=AF_INET6)
    ok(r, "sysctl net.inet6.ip6.forwarding=1")
    ok(a, "route -6 add default 2001:db8:a::2")
    ok(r, "route -6 add 2001:db8:ff::/64 2001:db8:b1::2")
    ok(r, "route -6 add 2001:db8:ff::/64 2001:db8:b2::2 -fib 1")
    ok(r, "route -6 add 2001:db8:a::/64 -interface epair0b")  # (its link is in fib 1)
    ok(b1, "route -6 add default 2001:db8:b1::1")
    ok(b2, "route -6 add default 2001:db8:b2::1 -fib 1")  # only in fib 1
    k.run(DAD_DONE)
    before = b1.iface("epair1b").ipackets, b2.iface("epair2b").ipackets
    out = ok(a, "ping6 -c 1 2001:db8:ff::1")
    assert "1 packets received" in out  # b2 answered through its fib 1
    assert b1.iface("epair1b").ipackets == before[0]
    assert b2.iface("epair2b").ipackets > before[1]
    ok(r, "ifconfig epair0b fib 0")  # now fib 0: towards b1
    assert "1 packets received" in ok(a, "ping6 -c 1 2001:db8:ff::1")
    assert b1.iface("epair1b").ipackets > before[0]
    # fib 0's route and neighbour are now cached (the fast path's): back in fib 1, the
    # next packets must still go by b2, not by the cache
    ok(a, "ping6 -c 2 2001:db8:ff::1")
    ok(r, "ifconfig epair0b fib 1")
    at_b1 = b1.iface("epair1b").ipackets
    assert "3 packets received" in ok(a, "ping6 -c 3 2001:db8:ff::1")
    assert b1.iface("epair1b").ipackets == at_b1


# -- route -6, netstat -6, routing sockets --------------------------------------------------------
def test_route6_and_netstat6_output_per_fib() -> None:
    h = Kernel(clock="virtual", seed=1).create("h", fibs=2)
    tap = new_epair(h)
    ok(h, "sysctl net.add_addr_allfibs=1")
    setup_iface(h, tap, 0, f"{ADDR0}/64")
    assert ok(h, "route -6 add 2001:db8:5::/48 2001:db8::9 -fib 0,1") == (
        "add net 2001:db8:5::: gateway 2001:db8::9 fib 0\n"
        "add net 2001:db8:5::: gateway 2001:db8::9 fib 1\n")
    assert ok(h, "route -6 -F 1 delete 2001:db8:5::/48") == "delete net 2001:db8:5::\n"
    assert not has(h, 1, r"^2001:db8:5::/48") and has(h, 0, r"^2001:db8:5::/48 +2001:db8::9")
    assert ok(h, "setfib 1 route -6 add 2001:db8:6::/48 2001:db8::9") == (
        "add net 2001:db8:6::: gateway 2001:db8::9\n")
    got = ok(h, "setfib 1 route -6 get 2001:db8:6::1").splitlines()
    assert "        fib: 1" in got and "    gateway: 2001:db8::9" in got
    assert h.cmd("route -6 get 2001:db8:6::1").status == 1  # not in fib 0
    out = ok(h, "netstat -rn -6 -F 1")
    assert out.startswith("Routing tables (fib: 1)\n\nInternet6:\n")
    row = next(line for line in out.splitlines() if line.startswith("2001:db8:6::/48"))
    assert row.split() == ["2001:db8:6::/48", "2001:db8::9", "UGS", tap]
    assert "2001:db8:6::" not in ok(h, "netstat -rn -6")
    both = ok(h, "netstat -rn -F 1")  # both families of fib 1, IPv6's its own
    assert "Internet6:" in both and "2001:db8:6::/48" in both
    result = h.cmd("route -6 add 2001:db8:7::/48 2001:db8::9 -fib 2")
    assert result.status == 1 and result.output == "route: fib 2 is not valid (net.fibs=2)\n"
    assert h.cmd("netstat -rn -6 -F 2").status != 0
    assert ok(h, "route -6 -F 1 flush").startswith("2001:db8:6::/48")
    assert not has(h, 1, r"^2001:db8:6::") and has(h, 0, r"^2001:db8:5::")


def _req(mtype: int, dst: int, gw: str | None, plen: int = 48, seq: int = 1) -> bytes:
    addrs = {m.RTA_DST: m.sockaddr_in6(dst),
             m.RTA_NETMASK: m.sockaddr_in6(((1 << plen) - 1) << (128 - plen))}
    if gw is not None:
        addrs[m.RTA_GATEWAY] = m.sockaddr_in6(wip6.aton(gw))
    return m.RtMsg(mtype, RTF_UP | RTF_GATEWAY | RTF_STATIC, addrs, seq=seq).pack()


def _drain(sock) -> list[bytes]:  # type: ignore[no-untyped-def]
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(4096, 0x40))
        except BlockingIOError:
            return out


def test_routing_socket_requests_and_messages_by_fib() -> None:
    h = Kernel(clock="virtual", seed=1).create("h", fibs=2)
    ok(h, "sysctl net.add_addr_allfibs=1")
    setup_iface(h, new_epair(h), 0, f"{ADDR0}/64")
    net = wip6.aton("2001:db8:9::")
    s0, s1 = h.socket(AF_ROUTE, SOCK_RAW, 0), h.socket(AF_ROUTE, SOCK_RAW, 0)
    s1.setsockopt(SOL_SOCKET, SO_SETFIB, 1)
    s1.send(_req(m.RTM_ADD, net, "2001:db8::9", seq=3))
    assert h.route.table6(1).get(net, 48) is not None and h.rt6.get(net, 48) is None
    [reply] = _drain(s1)
    assert m.parse_rtmsg(reply).type == m.RTM_ADD and m.parse_rtmsg(reply).seq == 3
    assert _drain(s0) == []  # a listener of fib 0 hears nothing of fib 1
    with pytest.raises(OSError) as exc:
        s0.send(_req(m.RTM_GET, net, None))
    assert exc.value.errno == errno.ESRCH
    [failed] = _drain(s0)  # the request back with rtm_errno, to fib 0's listeners
    assert m.parse_rtmsg(failed).errno == errno.ESRCH
    s1.send(_req(m.RTM_GET, net, None, seq=4))
    assert m.parse_rtmsg(_drain(s1)[0]).addrs[m.RTA_GATEWAY].addr == wip6.aton("2001:db8::9")
    ok(h, "route -6 -F 1 delete 2001:db8:9::/48")  # route(8) tells fib 1's listeners
    [msg] = _drain(s1)
    assert m.parse_rtmsg(msg).type == m.RTM_DELETE
    assert _drain(s0) == []


# -- table life -----------------------------------------------------------------------------------
def test_ipv6_tables_follow_net_fibs_and_go_with_the_vnet() -> None:
    k = Kernel(clock="virtual", seed=1)
    h = k.create("h", fibs=2)
    assert [t.fibnum for t in h.route.tables6] == [0, 1] and h.rt6 is h.route.table6(0)
    ok(h, "sysctl net.fibs=4")
    assert [t.fibnum for t in h.route.tables6] == [0, 1, 2, 3]
    with pytest.raises(OSError) as exc:
        h.route.table6(4)
    assert exc.value.errno == errno.EINVAL
    one = k.create("one")
    assert len(one.route.tables6) == 1
    ok(h, "sysctl net.add_addr_allfibs=1")
    setup_iface(h, new_epair(h), 0, f"{ADDR0}/64")
    ok(h, "route -6 add default 2001:db8::1 -fib 3")
    assert all(t.get(wip6.aton("2001:db8::"), 64) is not None for t in h.route.tables6)
    tables = h.route.tables6
    k.destroy(h)
    assert all(len(t) == 0 for t in tables)


def test_route6d_installs_in_the_fib_it_runs_in() -> None:
    """r0 - r1 - r2 with RIPng; r0's route6d started under `setfib 1`: what it learns
    goes in r0's fib 1 (its routing socket's), none in fib 0."""
    k = Kernel(clock="virtual", seed=2)
    r = [k.create("r0", fibs=2), k.create("r1"), k.create("r2")]
    for i in range(2):
        ea, eb = k.epair()
        ea.move_to(r[i])
        eb.move_to(r[i + 1])
        ok(r[i], f"ifconfig {ea.name} inet6 fd00:0:0:{i}::1/64 up")
        ok(r[i + 1], f"ifconfig {eb.name} inet6 fd00:0:0:{i}::2/64 up")
    for v in r:
        v.ip6.forwarding = 1
    k.run(3)  # DAD
    ok(r[0], "setfib 1 route6d -s -P damping=0/0")
    for v in r[1:]:
        ok(v, "route6d -s -P damping=0/0")
    k.run(5)
    far = wip6.aton("fd00:0:0:1::")
    learnt = r[0].route.table6(1).get(far, 64)
    assert learnt is not None and learnt.flags & RTF_GATEWAY and learnt.hopcount == 2
    assert r[0].rt6.get(far, 64) is None
    assert r[1].rt6.get(far, 64) is not None  # r1's own link, untouched
    ok(r[0], "route6d -k")
    assert r[0].route.table6(1).get(far, 64) is None  # withdrawn from fib 1 on stop


def test_an_interface_moved_to_a_vnet_without_its_fib_takes_fib_0() -> None:
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a", fibs=3), k.create("b")
    ea, _ = k.epair()
    ea.move_to(a)
    ok(a, "ifconfig epair0a fib 2")
    ea.move_to(b)
    assert ea.fib == 0
    ok(b, "ifconfig epair0a inet6 2001:db8::1/64 up")
    ok(b, "ifconfig epair0a inet 192.0.2.1/24")
    assert b.rt6.get(wip6.aton("2001:db8::"), 64) is not None
    ea.move_to(a)
    assert ea.fib == 0  # not given back: the move lost it, as its addresses


def test_tunnel_peer_route_in_the_tunnel_interfaces_fib() -> None:
    h = Kernel(clock="virtual", seed=1).create("h", fibs=2)
    ok(h, "ifconfig gif0 create")
    ok(h, "ifconfig gif0 fib 1")
    ok(h, "ifconfig gif0 inet6 2001:db8:1::1 2001:db8:1::2 prefixlen 128")
    peer = wip6.aton("2001:db8:1::2")
    assert h.route.table6(1).get(peer, 128) is not None and h.rt6.get(peer, 128) is None
    ok(h, "ifconfig gif0 inet6 2001:db8:1::1 -alias")
    assert h.route.table6(1).get(peer, 128) is None


def test_ipv4_tunnel_peer_route_in_the_tunnel_interfaces_fib() -> None:
    h = Kernel(clock="virtual", seed=1).create("h", fibs=2)
    ok(h, "ifconfig gif0 create")
    ok(h, "ifconfig gif0 fib 1")
    ok(h, "ifconfig gif0 inet 10.9.0.1 10.9.0.2")
    peer = ipv4.aton("10.9.0.2")
    assert h.route.table(1).get(peer, 32) is not None and h.rt.get(peer, 32) is None
    ok(h, "ifconfig gif0 inet 10.9.0.1 -alias")
    assert h.route.table(1).get(peer, 32) is None
