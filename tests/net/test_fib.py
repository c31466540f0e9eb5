"""FIBs (net.fibs, SO_SETFIB, setfib, interface fibs, add_addr_allfibs), multipath
groups with weights and flow hashing, nexthop indexes and route expiry."""

from __future__ import annotations

import errno
from collections import Counter
from socket import SOL_SOCKET

import pytest

from vimage.kernel import Kernel
from vimage.net.route import Route, RouteTable, flow_hash, select
from vimage.socket.socket import SO_SETFIB
from vimage.topo import connect
from vimage.vnet import Vnet


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def test_fibs_is_a_creation_parameter_and_only_grows() -> None:
    kernel = Kernel(clock="virtual", seed=1)
    a = kernel.create("a", fibs=4)
    assert len(a.route.tables) == 4 and a.rt is a.route.tables[0]
    assert ok(a, "sysctl -n net.fibs") == "4\n"
    assert ok(a, "sysctl net.fibs=6") == "net.fibs: 4 -> 6\n"
    assert [t.fibnum for t in a.route.tables] == list(range(6))
    assert a.cmd("sysctl net.fibs=2").status == 1  # never fewer
    assert a.cmd("sysctl net.fibs=17").status == 1  # vimage's RT_MAXFIBS is 16
    assert ok(a, "sysctl net.my_fibnum") == "net.my_fibnum: 0\n"
    assert ok(a, "setfib 3 sysctl -n net.my_fibnum") == "3\n"
    assert a.cmd("sysctl net.my_fibnum=1").status == 1  # read-only
    assert ok(kernel.create("b"), "sysctl -n net.fibs") == "1\n"
    with pytest.raises(ValueError):
        kernel.create("c", fibs=0)


@pytest.fixture
def two_ways() -> tuple[Kernel, Vnet, Vnet]:
    """h has two links to r; fib 0 routes 192.0.2.0/24 over the first, fib 1 over the
    second (r answers on both)."""
    kernel = Kernel(clock="virtual", seed=4)
    h, r = kernel.create("h", fibs=2), kernel.create("r")
    connect(h, "10.0.1.1/24", r, "10.0.1.2/24")
    connect(h, "10.0.2.1/24", r, "10.0.2.2/24")
    r.iface("lo0").add_addr("192.0.2.1/32")
    ok(h, "sysctl net.add_addr_allfibs=1")
    for ifp in list(h.ifaces.values()):  # the connected routes in fib 1 as well
        for ia in list(ifp.addrs):
            if not ifp.is_loopback:
                ifp.add_addr(f"{ia.addr >> 24}.{ia.addr >> 16 & 255}.{ia.addr >> 8 & 255}."
                             f"{ia.addr & 255}/{ia.plen}")
    ok(h, "route add 192.0.2.0/24 10.0.1.2")
    ok(h, "route add 192.0.2.0/24 10.0.2.2 -fib 1")
    ok(r, "route add default 10.0.1.1")
    kernel.run(1)
    return kernel, h, r


def _out_iface(kernel: Kernel, h: Vnet, fib: int | None, tool: bool = False) -> str:
    before = {n: i.opackets for n, i in h.ifaces.items()}
    s = h.socket(2, 2)
    if fib is not None:
        s.setsockopt(SOL_SOCKET, SO_SETFIB, fib)
    s.sendto(b"x", ("192.0.2.1", 9))
    kernel.run(1)
    s.close()
    (name,) = [n for n, i in h.ifaces.items() if i.opackets > before[n] and n != "lo0"]
    return name


def test_so_setfib_chooses_the_table(two_ways: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h, _ = two_ways
    assert _out_iface(kernel, h, None) == "epair0a"
    assert _out_iface(kernel, h, 1) == "epair1a"
    s = h.socket(2, 2)
    assert s.getsockopt(SOL_SOCKET, SO_SETFIB) == 0
    with pytest.raises(OSError) as exc:
        s.setsockopt(SOL_SOCKET, SO_SETFIB, 2)
    assert exc.value.errno == errno.EINVAL
    t = h.socket(2, 1)
    t.setsockopt(SOL_SOCKET, SO_SETFIB, 1)
    assert t.getsockopt(SOL_SOCKET, SO_SETFIB) == 1


def test_setfib_runs_a_tool_in_a_fib(two_ways: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h, _ = two_ways
    sent = h.iface("epair1a").opackets
    assert "1 packets received" in ok(h, "setfib 1 ping -c 1 192.0.2.1")
    assert h.iface("epair1a").opackets > sent
    assert "gateway: 10.0.2.2" in ok(h, "setfib 1 route get 192.0.2.1")
    assert "gateway: 10.0.1.2" in ok(h, "route get 192.0.2.1")
    assert "fib: 1" in ok(h, "route -F 1 get 192.0.2.1")
    result = h.cmd("setfib 2 route get 192.0.2.1")
    assert result.status == 1 and result.output == "setfib: setfib: Invalid argument\n"


def test_tcp_connects_through_its_fib(two_ways: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h, r = two_ways
    server = r.socket(2, 1)
    server.bind(("192.0.2.1", 80))
    server.listen(1)
    c = h.socket(2, 1)
    c.setsockopt(SOL_SOCKET, SO_SETFIB, 1)
    sent = h.iface("epair1a").opackets
    c.connect(("192.0.2.1", 80))
    assert c.getsockname()[0] == "10.0.2.1"  # the source of fib 1's interface
    assert h.iface("epair1a").opackets > sent


def test_forwarding_uses_the_receiving_interfaces_fib() -> None:
    kernel = Kernel(clock="virtual", seed=6)
    a, r, b1, b2 = (kernel.create(n, fibs=2 if n == "r" else 1) for n in ("a", "r", "b1", "b2"))
    connect(a, "10.0.0.1/24", r, "10.0.0.2/24")
    ok(r, "ifconfig epair0b fib 1")
    assert r.iface("epair0b").fib == 1
    connect(r, "10.1.0.1/24", b1, "10.1.0.2/24")
    connect(r, "10.2.0.1/24", b2, "10.2.0.2/24")
    for b in (b1, b2):
        b.iface("lo0").add_addr("198.51.100.1/32")
        ok(b, f"route add default {'10.1.0.1' if b is b1 else '10.2.0.1'}")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(a, "route add default 10.0.0.2")
    ok(r, "route add 198.51.100.0/24 10.1.0.2")
    ok(r, "sysctl net.add_addr_allfibs=1")
    r.iface("epair2a").add_addr("10.2.0.1/24")  # again, now into fib 1 too
    ok(r, "route -F 1 add 198.51.100.0/24 10.2.0.2")
    ok(r, "route -F 1 add 10.0.0.0/24 -interface epair0b")
    rx1, rx2 = b1.socket(2, 2), b2.socket(2, 2)
    rx1.bind(("", 9))
    rx2.bind(("", 9))
    tx = a.socket(2, 2)
    tx.sendto(b"via fib 1", ("198.51.100.1", 9))
    kernel.run(1)
    rx2.settimeout(0)
    assert rx2.recv(100) == b"via fib 1"
    with pytest.raises(BlockingIOError):
        rx1.recv(100, 0x40)
    ok(r, "ifconfig epair0b fib 0")  # fib 0 sends it the other way
    tx.sendto(b"via fib 0", ("198.51.100.1", 9))
    kernel.run(1)
    rx1.settimeout(0)
    assert rx1.recv(100) == b"via fib 0"
    assert r.cmd("ifconfig epair0b fib 2").status == 1


def test_add_addr_allfibs() -> None:
    kernel = Kernel(clock="virtual", seed=1)
    a = kernel.create("a", fibs=3)
    b = kernel.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    assert a.route.tables[1].get(0x0A000000, 24) is None  # the default: 0, as FreeBSD 13
    ok(a, "sysctl net.add_addr_allfibs=1")
    a.iface("epair0a").add_addr("10.9.0.1/24")
    assert all(t.get(0x0A090000, 24) is not None for t in a.route.tables)
    ok(a, "ifconfig epair0a 10.9.0.1 -alias")
    assert all(t.get(0x0A090000, 24) is None for t in a.route.tables)


# -- multipath ----------------------------------------------------------------------------------
@pytest.fixture
def ecmp() -> tuple[Kernel, Vnet, list[Vnet]]:
    """h reaches 203.0.113.0/24 through three routers at once."""
    kernel = Kernel(clock="virtual", seed=9)
    h = kernel.create("h")
    routers = []
    for i in range(3):
        r = kernel.create(f"r{i}")
        connect(h, f"10.{i}.0.1/24", r, f"10.{i}.0.2/24")
        r.iface("lo0").add_addr("203.0.113.1/32")
        ok(r, f"route add default 10.{i}.0.1")
        routers.append(r)
    kernel.run(1)
    return kernel, h, routers


def test_multipath_group_with_weights(ecmp: tuple[Kernel, Vnet, list[Vnet]]) -> None:
    kernel, h, routers = ecmp
    ok(h, "route add 203.0.113.0/24 10.0.0.2")
    ok(h, "route add 203.0.113.0/24 10.1.0.2 -weight 2")
    ok(h, "route add 203.0.113.0/24 10.2.0.2 -weight 1")
    head = h.rt.get(0xCB007100, 24)
    assert head is not None and head.group is not None and len(head.paths) == 3
    assert Counter(p.gateway for p in head.slots) == {0x0A000002: 1, 0x0A010002: 2,
                                                      0x0A020002: 1}
    assert [p.weight for p in head.paths] == [1, 2, 1]
    # netstat shows each path; -onW lists the nexthops and the group
    rows = [line for line in ok(h, "netstat -rn").splitlines() if line.startswith("203.0")]
    assert [row.split()[1] for row in rows] == ["10.0.0.2", "10.1.0.2", "10.2.0.2"]
    nh = ok(h, "netstat -onW")
    assert "Nexthop groups:" in nh and "v4/gw" in nh
    assert f"{head.paths[0].nhidx}:1 {head.paths[1].nhidx}:2 {head.paths[2].nhidx}:1" in nh
    for i in range(3):  # resolve every gateway first
        ok(h, f"ping -c 1 10.{i}.0.2")
    before = [r.iface(f"epair{i}b").ipackets for i, r in enumerate(routers)]
    # flows spread by their hash; one flow always takes one path
    counts: Counter[int] = Counter()
    for sport in range(2000, 2400):
        s = h.socket(2, 2)
        s.bind(("", sport))
        s.sendto(b"x", ("203.0.113.1", 9))
        s.close()
    kernel.run(1)
    for i, r in enumerate(routers):
        counts[i] = r.iface(f"epair{i}b").ipackets - before[i]
    assert sum(counts.values()) == 400
    assert counts[1] > counts[0] and counts[1] > counts[2] and min(counts.values()) > 50
    before = [r.iface(f"epair{i}b").ipackets for i, r in enumerate(routers)]
    s = h.socket(2, 2)
    s.bind(("", 5555))
    for _ in range(20):
        s.sendto(b"y", ("203.0.113.1", 9))
    kernel.run(1)
    grew = [r.iface(f"epair{i}b").ipackets - before[i] for i, r in enumerate(routers)]
    assert sorted(grew) == [0, 0, 20]


def test_multipath_delete_one_path_and_sysctl(ecmp: tuple[Kernel, Vnet, list[Vnet]]) -> None:
    _, h, _ = ecmp
    ok(h, "route add 203.0.113.0/24 10.0.0.2")
    ok(h, "route add 203.0.113.0/24 10.1.0.2")
    assert h.cmd("route add 203.0.113.0/24 10.1.0.2").status == 1  # the same path
    assert ok(h, "route delete 203.0.113.0/24 10.0.0.2") == \
        "delete net 203.0.113.0: gateway 10.0.0.2\n"
    head = h.rt.get(0xCB007100, 24)
    assert head is not None and head.group is None and head.gateway == 0x0A010002
    assert h.cmd("route delete 203.0.113.0/24 10.2.0.2").status == 1  # not a path
    ok(h, "sysctl net.route.multipath=0")
    result = h.cmd("route add 203.0.113.0/24 10.2.0.2")
    assert result.output == "route: writing to routing socket: File exists\n"


def test_select_and_flow_hash_are_deterministic() -> None:
    kernel = Kernel(clock="virtual", seed=1)
    v = kernel.create("v")
    lo = v.iface("lo0")
    t = RouteTable()
    for gw in (1, 2, 3):
        t.add(Route(0x0A000000, 8, lo, 0x2, gw, weight=gw), multipath=True)
    head = t.lookup(0x0A010101)
    assert head is not None and len(head.slots) == 6
    picks = Counter(select(head, flow_hash(7, 0x01020304, 0x0A000000 + i, 99, 17)).gateway
                    for i in range(600))
    assert picks[3] > picks[2] > picks[1] > 50
    assert flow_hash(7, 1, 2, 3, 17) == flow_hash(7, 1, 2, 3, 17) != flow_hash(8, 1, 2, 3, 17)


# -- nexthops, metrics and expiry ----------------------------------------------------------------
def test_nexthop_indexes_and_route_flags(ecmp: tuple[Kernel, Vnet, list[Vnet]]) -> None:
    kernel, h, _ = ecmp
    ok(h, "route add 198.51.100.0/24 10.0.0.2 -proto1 -mtu 1400 -hopcount 3")
    route = h.rt.get(0xC6336400, 24)
    assert route is not None and route.mtu == 1400 and route.hopcount == 3
    assert "UGS1" in ok(h, "netstat -rn")
    wide = [line for line in ok(h, "netstat -rnW").splitlines() if line.startswith("198.51")]
    assert wide[0].split()[3:6] == [str(route.nhidx), "1400", "epair0a"]
    assert len({r.nhidx for r in h.rt.all_paths()}) == len(h.rt.all_paths())


def test_expire_in_virtual_time(ecmp: tuple[Kernel, Vnet, list[Vnet]]) -> None:
    kernel, h, _ = ecmp
    ok(h, "route add 198.51.100.0/24 10.0.0.2 -expire +30")
    ok(h, "route add 198.51.101.0/24 10.0.0.2 -expire +10")
    row = [line for line in ok(h, "netstat -rn").splitlines() if line.startswith("198.51.100")]
    assert row[0].split()[-1] == "30"
    assert ok(h, "route get 198.51.101.1").splitlines()[-1].split()[-1] == "10"
    kernel.run(10.5)
    assert h.rt.get(0xC6336500, 24) is None and h.rt.get(0xC6336400, 24) is not None
    kernel.run(20)
    assert h.rt.get(0xC6336400, 24) is None
    assert kernel.sched.pending_timers(h) == 0  # nothing left to expire: no timer


def test_route_cache_respects_the_fib() -> None:
    kernel = Kernel(clock="virtual", seed=1)
    v = kernel.create("v", fibs=2)
    lo = v.iface("lo0")
    v.route.tables[0].add(Route(0, 0, lo, 0x2, 1))
    v.route.tables[1].add(Route(0, 0, lo, 0x2, 2))
    for _ in range(2):  # the second time from the per-table caches
        assert v.route.tables[0].lookup(0x08080808).gateway == 1
        assert v.route.tables[1].lookup(0x08080808).gateway == 2
