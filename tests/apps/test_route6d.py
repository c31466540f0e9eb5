"""route6d: RIPng over IPv6 in virtual time — a ring converges, a cut link is routed
around, split horizon with poisoned reverse, bad packets counted, clean shutdown."""

from __future__ import annotations

from socket import AF_INET6

from vimage.apps.route6d import Route6d, Route6dService
from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire import ipv6, ripng

D = 0.010  # link delay each way


def ring(kernel: Kernel, n: int) -> tuple[list[Vnet], list[tuple[Ifnet, Ifnet]]]:
    """Routers r0..r{n-1}; link i (fd00:0:0:i::/64 and 10.0.i.0/24) joins ri (::1)
    and r{i+1 mod n} (::2)."""
    routers = [kernel.create(f"r{i}") for i in range(n)]
    links = []
    for r in routers:
        r.ip6.forwarding = 1
    for i in range(n):
        a, b = routers[i], routers[(i + 1) % n]
        ends = connect(a, f"10.0.{i}.1/24", b, f"10.0.{i}.2/24")
        ends[0].add_addr(f"fd00:0:0:{i:x}::1/64", family=AF_INET6)
        ends[1].add_addr(f"fd00:0:0:{i:x}::2/64", family=AF_INET6)
        for end in ends:
            end.impair(delay=D)
        links.append(ends)
    kernel.run(3)  # DAD
    return routers, links


def start(routers: list[Vnet], params: str = "") -> None:
    for r in routers:
        res = r.cmd(f"route6d -s {params}".strip())
        assert res.ok, res.output


def learnt(vnet: Vnet) -> dict[str, tuple[str, int]]:
    """The routes route6d installed: prefix -> (gateway%interface, metric)."""
    out = {}
    for route in vnet.rt6.routes():
        if route.flags & 0x2 and not route.flags & 0x800:
            out[f"{ipv6.ntoa(route.dst)}/{route.plen}"] = (
                f"{ipv6.ntoa(route.gateway)}%{route.ifp.name}", route.hopcount)
    return out


def daemon(vnet: Vnet) -> Route6d:
    d = vnet.kernel.service(Route6dService).get(vnet)
    assert d is not None
    return d


def lladdr(ifp: Ifnet) -> str:
    return ipv6.ntoa(ipv6.LINK_LOCAL_PREFIX | ipv6.eui64(ifp.mac))  # type: ignore[arg-type]


def test_ring_converges_over_ipv6_and_forwards() -> None:
    k = Kernel(clock="virtual", seed=1)
    routers, links = ring(k, 6)
    start(routers, "-P damping=0/0")
    k.run(2)
    table = learnt(routers[0])
    assert set(table) == {f"fd00:0:0:{i}::/64" for i in (1, 2, 3, 4)}
    # next hop: the neighbour's link-local address, scoped to the interface it is on
    to_r1 = links[0][0]
    assert table["fd00:0:0:1::/64"] == (f"{lladdr(links[0][1])}%{to_r1.name}", 2)
    assert table["fd00:0:0:3::/64"][1] == 3  # r4 (1), r5 (2), r0 (3)
    res = routers[0].cmd("ping6 -c 1 fd00:0:0:3::1")
    assert res.ok, res.output
    assert daemon(routers[0]).stats["badpackets"] == 0


def test_cut_link_is_routed_around() -> None:
    k = Kernel(clock="virtual", seed=1)
    routers, links = ring(k, 4)
    start(routers, "-P update=3,timeout=18,garbage=12,damping=0/0")
    k.run(5)
    # r0 reaches link 1 (r1-r2) through r1
    assert learnt(routers[0])["fd00:0:0:1::/64"][0].endswith(links[0][0].name)
    for end in links[0]:  # cut r0-r1
        end.impair(loss=1.0)
    k.run(40)
    table = learnt(routers[0])
    via_r3 = links[3][1].name  # r0's end of link 3 (r3-r0)
    assert table["fd00:0:0:1::/64"] == (f"{lladdr(links[3][0])}%{via_r3}", 3)
    assert "fd00::/64" not in table  # its own link is connected, never learnt
    res = routers[0].cmd("ping6 -c 1 fd00:0:0:1::2")
    assert res.ok, res.output


def test_split_horizon_poisons_reverse() -> None:
    k = Kernel(clock="virtual", seed=1)
    routers, links = ring(k, 3)
    start(routers, "-P damping=0/0")
    k.run(2)
    d = daemon(routers[0])
    on_r1 = {e.prefix: e.metric for e in d.entries_for(links[0][0].name, False)}
    learnt_via_r1 = {ipv6.aton(p.split("/")[0]) for p, (gw, _) in learnt(routers[0]).items()
                     if gw.endswith(links[0][0].name)}
    assert learnt_via_r1 and all(on_r1[p] == ripng.INFINITY for p in learnt_via_r1)
    assert ipv6.aton("fd00::") not in on_r1  # the link's own prefix is not sent on it


def test_bad_packets_are_counted_and_dropped() -> None:
    k = Kernel(clock="virtual", seed=1)
    routers, links = ring(k, 3)
    start(routers, "-P damping=0/0")
    k.run(2)
    d = daemon(routers[0])
    before = dict(d.stats)
    ll = ipv6.aton(lladdr(links[0][1])) | links[0][0].index << 96
    d.receive(b"\x02\x01\x00", ll, 521, k.now_ns())  # short
    d.receive(b"\x02\x02\x00\x00", ll, 521, k.now_ns())  # version 2
    d.receive(b"\x02\x01\x00\x00" + b"\0" * 19, ll, 521, k.now_ns())  # not whole entries
    good = ripng.build(ripng.RESPONSE, [ripng.RipngEntry(ipv6.aton("2001:db8::"), 32, 1)])
    d.receive(good, ll, 520, k.now_ns())  # not from 521
    d.receive(good, ipv6.aton("fd00::2"), 521, k.now_ns())  # not link-local
    bad = ripng.build(ripng.RESPONSE, [
        ripng.RipngEntry(ipv6.aton("ff02::"), 16, 1),  # multicast
        ripng.RipngEntry(ipv6.aton("fe80::"), 64, 1),  # link-local
        ripng.RipngEntry(ipv6.aton("2001:db8::1"), 32, 1),  # host bits
        ripng.RipngEntry(ipv6.aton("2001:db8::"), 129, 1),  # length
        ripng.RipngEntry(ipv6.aton("2001:db8::"), 32, 0),  # metric 0
        ripng.RipngEntry(ipv6.aton("2001:db8::"), 32, 17)])  # metric 17
    d.receive(bad, ll, 521, k.now_ns())
    diff = {name: d.stats[name] - before[name] for name in d.stats if d.stats[name] != before[name]}
    assert diff == {"inpackets": 6, "badpackets": 3, "badport": 1, "badsource": 1,
                    "badentries": 4, "badmetric": 2}
    assert "2001:db8::/32" not in learnt(routers[0])
    # a sound packet with a next-hop entry naming another link-local router: used
    nh = ipv6.aton("fe80::99")
    d.receive(ripng.build(ripng.RESPONSE, [ripng.RipngEntry(nh, 0, ripng.NEXTHOP_METRIC),
                                            ripng.RipngEntry(ipv6.aton("2001:db8::"), 32, 1)]),
              ll, 521, k.now_ns())
    assert learnt(routers[0])["2001:db8::/32"] == (f"fe80::99%{links[0][0].name}", 2)


def test_stop_and_destroy_leave_nothing() -> None:
    k = Kernel(clock="virtual", seed=1)
    routers, links = ring(k, 3)
    start(routers, "-P damping=0/0")
    k.run(2)
    assert learnt(routers[0])
    res = routers[0].cmd("route6d -S")
    assert res.ok and "fd00:0:0:1::/64" in res.output and "badsource" not in res.output
    assert routers[0].cmd("route6d -k").ok
    assert learnt(routers[0]) == {}
    assert not routers[0].cmd("route6d -k").ok
    d1 = daemon(routers[1])
    k.destroy(routers[1])
    assert d1.sock is None and d1._timer is None
    assert k.service(Route6dService).get(routers[1]) is None


def test_same_seed_same_updates() -> None:
    """The damping delays come from the vnet-seeded RNG: the same seed gives the same
    tables, counters and expiry times."""
    def run() -> list[str]:
        k = Kernel(clock="virtual", seed=7)
        routers, _ = ring(k, 4)
        start(routers)
        k.run(45)
        return [r.cmd("route6d -S").output for r in routers]

    first = run()
    assert "fd00:0:0:2::/64" in first[0]
    assert first == run()
