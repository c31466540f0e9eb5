"""routed: RIP in virtual time — convergence with exact timings, failover after the
timeout, infinity 16, bad input ignored and counted, authentication, clean shutdown."""

from __future__ import annotations

import re
import weakref

import pytest

from vimage.apps.routed import RoutedService
from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire import ipv4, rip

D = 0.010  # link delay each way


def ring(kernel: Kernel, n: int,
         delay: float | None = D) -> tuple[list[Vnet], list[tuple[Ifnet, Ifnet]]]:
    """Routers r0..r{n-1}; link i (10.0.i.0/24) joins ri (.1) and r{i+1 mod n} (.2)."""
    routers = [kernel.create(f"r{i}") for i in range(n)]
    links = []
    for r in routers:
        r.ip.forwarding = 1
    for i in range(n):
        a, b = routers[i], routers[(i + 1) % n]
        ends = connect(a, f"10.0.{i}.1/24", b, f"10.0.{i}.2/24")
        if delay:
            for end in ends:
                end.impair(delay=delay)
        links.append(ends)
    return routers, links


def start(routers: list[Vnet], params: str = "") -> None:
    for r in routers:
        res = r.cmd(f"routed -s {params}".strip())
        assert res.ok, res.output


def rip_routes(vnet: Vnet) -> dict[str, tuple[str, int]]:
    """The routes routed installed: prefix -> (gateway, metric)."""
    out = {}
    for route in vnet.rt.routes():
        if route.flags & 0x2 and not route.flags & 0x800:
            out[f"{ipv4.ntoa(route.dst)}/{route.plen}"] = (ipv4.ntoa(route.gateway),
                                                           route.hopcount)
    return out


def daemon(vnet: Vnet):
    d = vnet.kernel.service(RoutedService).get(vnet)
    assert d is not None
    return d


def test_ring_converges_in_exact_time():
    """Without damping, news travels one link delay per hop: in a ring of 6 the
    farthest network (3 links away) is learnt exactly 2 delays after the start."""
    k = Kernel(clock="virtual", seed=1)
    routers, _ = ring(k, 6)
    start(routers, "-P damping=0/0")
    k.run(2 * D - 0.001)
    assert "10.0.3.0/24" not in rip_routes(routers[0])
    assert rip_routes(routers[0])["10.0.1.0/24"] == ("10.0.0.2", 2)
    k.run(0.002)
    table = rip_routes(routers[0])
    assert table == {"10.0.1.0/24": ("10.0.0.2", 2), "10.0.2.0/24": ("10.0.0.2", 3),
                     "10.0.3.0/24": ("10.0.5.1", 3), "10.0.4.0/24": ("10.0.5.1", 2)}
    for r in routers:
        assert len(rip_routes(r)) == 4  # every router: the 4 links it is not on
    res = routers[0].cmd("ping -c 1 10.0.3.1")
    assert res.ok and "ttl=62" in res.output, res.output


def test_convergence_with_damping_is_deterministic():
    def converge(seed: int) -> list[str]:
        k = Kernel(clock="virtual", seed=seed)
        routers, _ = ring(k, 8)
        start(routers)
        k.run(30)
        return [r.cmd("netstat -rn -f inet").output for r in routers]

    first = converge(3)
    assert first == converge(3)
    assert all(out.count("UG") == 6 for out in first)


def test_link_cut_is_routed_around_after_the_timeout():
    k = Kernel(clock="virtual", seed=1)
    routers, links = ring(k, 4)
    start(routers, "-P timeout=170")
    k.run(100)
    assert rip_routes(routers[0])["10.0.1.0/24"] == ("10.0.0.2", 2)  # through r1
    for end in links[0]:
        end.impair(loss=1.0)  # the r0-r1 cable is cut: no interface goes down
    # r1's last update reached r0 at 90 s + D: the route stays until 260 s + D
    k.run(259.9 - k.now)
    assert rip_routes(routers[0])["10.0.1.0/24"] == ("10.0.0.2", 2)
    k.run(260.0 + 2 * D - k.now)
    assert "10.0.1.0/24" not in rip_routes(routers[0])
    # r3's regular update at 270 s brings the other way round (metric 3)
    k.run(270.0 + 2 * D - k.now)
    assert rip_routes(routers[0])["10.0.1.0/24"] == ("10.0.3.1", 3)
    res = routers[0].cmd("traceroute -n -q 1 10.0.1.2")
    assert res.ok and [ln.split()[1] for ln in res.output.splitlines()[1:]] == [
        "10.0.3.1", "10.0.1.2"], res.output  # r3, then r2


def test_metric_is_bounded_at_16():
    """A line of 17 routers: a network 15 routers away has metric 16 there, which is
    unreachable — installed nowhere, advertised only as 16."""
    k = Kernel(clock="virtual", seed=1)
    routers = [k.create(f"l{i}") for i in range(17)]
    for i in range(16):
        connect(routers[i], f"10.1.{i}.1/24", routers[i + 1], f"10.1.{i}.2/24")
    for r in routers:
        r.ip.forwarding = 1
    start(routers, "-P damping=0/0")
    k.run(60)
    assert rip_routes(routers[15])["10.1.0.0/24"] == ("10.1.14.1", 15)
    assert "10.1.0.0/24" not in rip_routes(routers[16])
    assert len(rip_routes(routers[16])) == 14  # 10.1.1.0 .. 10.1.14.0


def test_count_to_infinity_is_bounded():
    """Triangle a, b, c; c's stub network goes away. Whatever loops form between the
    others, the metric climbs to 16 at most and the route disappears everywhere."""
    k = Kernel(clock="virtual", seed=5)
    routers, _ = ring(k, 3)
    stub = k.create("stub")
    _, c_end = connect(stub, "10.9.0.1/24", routers[2], "10.9.0.2/24")
    start(routers)
    k.run(60)
    assert rip_routes(routers[0])["10.9.0.0/24"][1] == 2
    seen = []
    for r in routers:
        d = daemon(r)
        orig = d._update

        def spy(key, metric, *args, _orig=orig):
            seen.append(metric)
            _orig(key, metric, *args)
        d._update = spy  # type: ignore[method-assign]
    routers[2].cmd(f"ifconfig {c_end.name} down")
    k.run(400)
    assert all("10.9.0.0/24" not in rip_routes(r) for r in routers)
    assert seen and max(seen) == 16
    assert all(r.cmd("routed -S").output.count("10.9.0.0/24") == 0 for r in routers)


def _neighbour_pair(params: str = ""):
    k = Kernel(clock="virtual", seed=1)
    r = k.create("r")
    n = k.create("n")
    far = k.create("far")
    connect(r, "10.0.0.1/24", n, "10.0.0.2/24")
    r.ip.forwarding = 1
    assert r.cmd(f"routed -s {params}".strip()).ok
    k.run(1)
    sock = n.socket(2, 2)
    sock.bind(("0.0.0.0", rip.PORT))
    return k, r, n, far, sock


def _inject(k, sock, pkt: bytes, dst: str = "10.0.0.1") -> None:
    sock.sendto(pkt, (dst, rip.PORT))
    k.run(0.1)


def entry(net: str, plen: int = 24, metric: int = 1) -> rip.RipEntry:
    return rip.RipEntry(ipv4.aton(net), ipv4.aton("255.255.255.255") << (32 - plen)
                        & 0xFFFFFFFF, metric)


def test_bad_input_is_ignored_and_counted():
    k, r, n, far, sock = _neighbour_pair("-P max_routes=3")
    d = daemon(r)
    good = rip.build(rip.RESPONSE, 2, [entry("10.5.0.0")])
    _inject(k, sock, good)
    assert rip_routes(r) == {"10.5.0.0/24": ("10.0.0.2", 2)}
    _inject(k, sock, b"\x02\x02\x00")  # truncated
    _inject(k, sock, good[:-3])  # not a whole entry
    _inject(k, sock, b"\x02\x00\x00\x00" + good[4:])  # version 0
    assert d.stats["badpackets"] == 3
    _inject(k, sock, rip.build(rip.RESPONSE, 2, [entry("10.6.0.0", metric=0),
                                                 entry("10.6.1.0", metric=17)]))
    assert d.stats["badmetric"] == 2
    _inject(k, sock, rip.build(rip.RESPONSE, 2, [
        entry("127.0.0.0", 8), entry("224.1.0.0", 16), rip.RipEntry(ipv4.aton("10.7.0.0"),
                                                                    0xFF00FF00, 1)]))
    assert d.stats["badentries"] == 3
    _inject(k, sock, rip.build(rip.RESPONSE, 2, [entry("10.8.0.0")],
                               rip.RipAuth(rip.AUTH_SIMPLE, rip.password_bytes("x"))))
    assert d.stats["badauth"] == 1
    # a response from another port than 520
    other = n.socket(2, 2)
    other.sendto(good, ("10.0.0.1", rip.PORT))
    k.run(0.1)
    assert d.stats["badport"] == 1
    # a neighbour flooding routes: the table stops at max_routes
    _inject(k, sock, rip.build(rip.RESPONSE, 2, [entry(f"10.20.{i}.0") for i in range(20)]))
    assert len(rip_routes(r)) == 3 and d.stats["overflow"] == 18
    assert set(rip_routes(r)) == {"10.5.0.0/24", "10.20.0.0/24", "10.20.1.0/24"}
    status = r.cmd("routed -S").output
    assert "18 routes refused: the table is full (max_routes)" in status


def test_non_neighbour_is_ignored_and_counted():
    k, r, n, far, sock = _neighbour_pair()
    connect(n, "10.3.0.1/24", far, "10.3.0.2/24")
    n.ip.forwarding = 1
    far.cmd("route add default 10.3.0.1")
    fsock = far.socket(2, 2)
    fsock.bind(("0.0.0.0", rip.PORT))
    fsock.sendto(rip.build(rip.RESPONSE, 2, [entry("10.44.0.0")]), ("10.0.0.1", rip.PORT))
    k.run(0.1)
    assert daemon(r).stats["nonneighbour"] == 1 and "10.44.0.0/24" not in rip_routes(r)


@pytest.mark.parametrize("params", ["passwd=sesame", "md5_passwd=sesame|7"])
def test_authenticated_routers_exchange_and_refuse_others(params: str):
    k = Kernel(clock="virtual", seed=1)
    routers, _ = ring(k, 3)
    start(routers, f"-P {params}")
    k.run(10)
    assert len(rip_routes(routers[0])) == 1
    # a neighbour without the key is refused
    intruder = k.create("intruder")
    connect(intruder, "10.0.7.2/24", routers[0], "10.0.7.1/24")
    sock = intruder.socket(2, 2)
    sock.bind(("0.0.0.0", rip.PORT))
    wrong = (rip.build(rip.RESPONSE, 2, [entry("10.66.0.0")], rip.RipAuth(rip.AUTH_MD5, keyid=7),
                       b"wrong") if "md5" in params else
             rip.build(rip.RESPONSE, 2, [entry("10.66.0.0")],
                       rip.RipAuth(rip.AUTH_SIMPLE, rip.password_bytes("wrong"))))
    for pkt in (wrong, rip.build(rip.RESPONSE, 2, [entry("10.66.0.0")])):
        sock.sendto(pkt, ("10.0.7.1", rip.PORT))
        k.run(0.5)
    assert "10.66.0.0/24" not in rip_routes(routers[0])
    assert daemon(routers[0]).stats["badauth"] == 2


def test_ripv1_is_received_and_sent():
    k, r, n, far, sock = _neighbour_pair("-P ripv1")
    v1 = rip.build(rip.RESPONSE, 1, [rip.RipEntry(ipv4.aton("172.16.0.0"), 0, 1),
                                     rip.RipEntry(ipv4.aton("10.0.5.0"), 0, 2)])
    _inject(k, sock, v1)
    # classful for another network, the interface's /24 inside 10/8
    assert rip_routes(r) == {"172.16.0.0/16": ("10.0.0.2", 2), "10.0.5.0/24": ("10.0.0.2", 3)}
    k.run(31)
    sock.setblocking(False)
    versions = set()
    while True:
        try:
            versions.add(rip.parse(sock.recv(600)).version)
        except BlockingIOError:
            break
    assert versions == {1}


def test_rtquery_prints_the_table():
    k = Kernel(clock="virtual", seed=1)
    routers, _ = ring(k, 3)
    start(routers)
    k.run(10)
    out = routers[0].cmd("rtquery -n 10.0.0.2").output.splitlines()
    assert out[0] == "10.0.0.2: RIPv2 64 bytes"
    assert out[1:] == ["  10.0.0.0/24        metric  1", "  10.0.1.0/24        metric  1",
                       "  10.0.2.0/24        metric  2"]
    one = routers[0].cmd("rtquery -n -r 10.0.2.9 10.0.0.2").output.splitlines()
    assert one[1] == "  10.0.2.0/24        metric  2"
    for r in routers:
        r.cmd("routed -k")
        assert r.cmd("routed -s -P md5_passwd=k|3").ok
    k.run(10)
    assert routers[0].cmd("rtquery -n -w 1 10.0.0.2").status == 1  # unsigned: refused
    md5 = routers[0].cmd("rtquery -n -a 'md5_passwd=k|3' 10.0.0.2").output.splitlines()
    assert md5[0] == "10.0.0.2: RIPv2 104 bytes"
    assert re.fullmatch(r"  MD5 Authentication len=84 KeyID=3 seqno=\d+ rsvd=0,0", md5[1])
    assert md5[2:] == ["  10.0.0.0/24        metric  1", "  10.0.1.0/24        metric  1",
                       "  10.0.2.0/24        metric  2"]
    assert routers[0].cmd("rtquery -w 1 10.0.0.77").status == 1


def test_routed_tool_options():
    k = Kernel(clock="virtual", seed=1)
    r = k.create("r")
    assert r.cmd("routed -S").status == 1
    assert r.cmd("routed -P bogus").output.strip() == 'routed: bad "bogus" in "-P bogus"'
    assert r.cmd("routed -s -q").status == 64
    assert r.cmd("routed -q").ok
    assert r.cmd("routed").status == 1  # already running
    assert r.cmd("routed -k").ok and r.cmd("routed -k").status == 1


def test_stop_withdraws_routes_and_destroy_leaves_nothing():
    k = Kernel(clock="virtual", seed=1)
    routers, _ = ring(k, 3)
    start(routers)
    k.run(10)
    assert len(rip_routes(routers[0])) == 1
    assert routers[0].cmd("routed -k").ok
    assert rip_routes(routers[0]) == {}
    d = daemon(routers[1])
    ref = weakref.ref(routers[1])
    sock = d.sock
    k.destroy(routers[1])
    assert k.sched.pending_timers(ref()) == 0 and sock.closed and not d.running
    assert k.service(RoutedService).get(ref()) is None
    k.run(300)  # the others age out what they learnt from r1
    assert rip_routes(routers[2]) == {}  # r0 was stopped: nobody else offers 10.0.0.0/24


def test_gateways_file(tmp_path):
    k = Kernel(clock="virtual", seed=1)
    routers, _ = ring(k, 3)
    gw = tmp_path / "gateways"
    gw.write_text("# static\nnet 10.50.0.0/16 gateway 10.0.0.2 metric 2 passive\n"
                  "host 10.60.0.1 gateway 10.0.0.2 metric 1\n"
                  "net 10.70.0.0/16 gateway 10.0.0.2 metric 1 external\n")
    assert routers[0].cmd(f"routed -s -G {gw}").ok
    start(routers[1:])
    k.run(10)
    assert rip_routes(routers[0])["10.50.0.0/16"] == ("10.0.0.2", 2)
    assert rip_routes(routers[2])["10.50.0.0/16"] == ("10.0.2.2", 3)
    assert rip_routes(routers[2])["10.60.0.1/32"] == ("10.0.2.2", 2)
    assert "10.70.0.0/16" not in rip_routes(routers[2])
    bad = tmp_path / "bad"
    bad.write_text("net 10.1.0.0 gw 1.2.3.4\n")
    assert "bad gateways line 1" in routers[0].cmd(f"routed -G {bad}").output


def test_random_and_mutated_packets_never_raise():
    """Garbage and bit-flipped packets, responses and requests alike, to the daemon:
    counted or answered, never an exception in the kernel loop (the suite's fixture)."""
    import random

    k, r, n, far, sock = _neighbour_pair()
    rng = random.Random(7)
    valid = [rip.build(rip.RESPONSE, 2, [entry(f"10.{i}.0.0", 16, 1 + i % 16)
                                         for i in range(1, 6)]),
             rip.build(rip.REQUEST, 2, [entry("10.0.0.0", 24, 16), entry("10.1.0.0", 16)]),
             rip.build(rip.REQUEST, 1, [rip.RipEntry(0, 0, 16, afi=0)]),
             rip.build(rip.RESPONSE, 2, [entry("10.2.0.0")], rip.RipAuth(rip.AUTH_MD5), b"k")]
    for i in range(400):
        if i % 10 == 0:
            k.run(0.01)  # a few at a time: the link's queue and the socket buffer are small
        pkt = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 6)):
            pkt[rng.randrange(len(pkt))] = rng.randrange(256)
        if rng.random() < 0.2:
            pkt = pkt[:rng.randrange(len(pkt))]
        sock.sendto(bytes(pkt), ("10.0.0.1", rip.PORT))
    k.run(1)
    d = daemon(r)
    assert d.stats["inpackets"] == 400
    assert d.stats["badpackets"] + d.stats["badauth"] > 0
    assert len(rip_routes(r)) <= d.params.max_routes


def test_a_static_route_wins_and_is_redistributed():
    k = Kernel(clock="virtual", seed=1)
    routers, _ = ring(k, 3)
    routers[0].cmd("route add 10.0.1.0/24 10.0.2.1")  # the long way round, by hand
    start(routers)
    k.run(10)
    paths = [r for r in routers[0].rt.routes() if r.plen == 24 and r.dst == ipv4.aton("10.0.1.0")]
    assert len(paths) == 1 and paths[0].paths == (paths[0],)  # no multipath group formed
    assert ipv4.ntoa(paths[0].gateway) == "10.0.2.1" and paths[0].flags & 0x800
    assert "static" in [ln.split()[4] for ln in routers[0].cmd("routed -S").output.splitlines()
                        if ln.startswith("10.0.1.0/24")]
