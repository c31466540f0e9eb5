"""IPv6 in experiments: IMUNES addressing in fc00:N::/64, static and automatic IPv6 routes,
lo0's IPv6 addresses, forwarding in routers, ping6 across routers in virtual time."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vimage.emu import Experiment, imn, yamlfmt
from vimage.kernel import Kernel
from vimage.wire import ipv6

DATA = Path(__file__).parent / "data"

LINE6 = """\
version: 1
name: line6
options: {auto_address: true, auto_address6: true}
nodes:
  pc1: {type: pc, auto_default_routes: true}
  r1:
    type: router
    routes: ["fc00:2::/64 fc00:1::2", "fc00:ff::1/128 fc00:1::2", "10.0.2.0/24 10.0.1.2"]
  r2:
    type: router
    interfaces: {lo0: {ipv6: ["fc00:ff::1/128"]}}
    routes: ["fc00::/64 fc00:1::1", "10.0.0.0/24 10.0.1.1"]
  pc2: {type: host, auto_default_routes: true}
links:
  - {a: pc1, b: r1, delay: 1ms}
  - {a: r1, b: r2, delay: 2ms}
  - {a: r2, b: pc2}
"""


def rtts(output: str) -> list[str]:
    return re.findall(r"time=([0-9.]+) ms", output)


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(clock="virtual", seed=1)


@pytest.fixture
def line6(kernel):
    with Experiment(yamlfmt.loads(LINE6, "line6.yaml"), kernel) as exp:
        yield exp


def addrs6(vnet, ifname: str) -> list[str]:
    out = vnet.cmd(f"ifconfig {ifname}").output
    return re.findall(r"inet6 ([0-9a-f:]+) prefixlen \d+( tentative)?", out)


def test_imunes_addresses_in_fc00_n(line6):
    """G8: router ::1, host ::10, pc ::20 in fc00:N::/64, the digits as in IPv4."""
    assert ("fc00::20", "") in addrs6(line6.node("pc1"), "eth0")
    assert ("fc00::1", "") in addrs6(line6.node("r1"), "eth0")
    assert ("fc00:1::1", "") in addrs6(line6.node("r1"), "eth1")
    assert ("fc00:1::2", "") in addrs6(line6.node("r2"), "eth0")
    assert ("fc00:2::10", "") in addrs6(line6.node("pc2"), "eth0")


def test_up_returns_after_dad_with_no_address_tentative(line6, kernel):
    for vnet in line6.nodes.values():
        for ifname in vnet.ifaces:
            assert all(not tentative for _, tentative in addrs6(vnet, ifname)), ifname
    assert line6.warnings == []
    assert 0 < kernel.now <= 2.0  # one DAD probe, 1 s (nd6 retrans), for every node at once


def test_ping6_across_two_routers_with_the_exact_rtt(line6):
    res = line6.node("pc1").cmd("ping6 -c 2 fc00:2::10")
    assert res.status == 0, res.output
    assert "hlim=62" in res.output  # two routers forwarded it (G5: IPv6 forwarding on)
    assert rtts(res.output)[1] == "6.000"  # 1 ms + 2 ms each way


def test_lo0_addresses_static_routes_and_automatic_defaults(line6):
    r2 = line6.node("r2")
    assert ("::1", "") in addrs6(r2, "lo0")  # G1: ::1/128 on every L3 node's lo0
    assert ("fc00:ff::1", "") in addrs6(r2, "lo0")
    assert line6.node("pc2").cmd("ping6 -c 1 fc00:ff::1").ok
    routes = line6.node("pc1").cmd("netstat -rn -f inet6").output
    assert re.search(r"^default\s+fc00::1\s+UGS\s+eth0", routes, re.M), routes  # G2
    assert re.search(r"^fc00:2::/64\s+fc00:1::2\s+UGS", line6.node("r1").cmd(
        "netstat -rn -f inet6").output, re.M)  # G3
    assert line6.node("pc1").ip6.forwarding == 0 and line6.node("r1").ip6.forwarding == 1


def test_ipv4_still_works_beside_ipv6(line6):
    assert line6.node("pc1").cmd("ping -c 1 10.0.2.10").ok


@pytest.mark.parametrize("name", ["rip-line.imn", "rip-line-legacy.imn"])
def test_imunes_files_come_up_with_ipv6(kernel, name):
    """The IMUNES files' IPv6 addresses and croutes6 / `ipv6 route` defaults, no skip_ipv6
    (router1 as model static: RIPng is another daemon's)."""
    topo = imn.load(DATA / name)
    topo.nodes["router1"].routing = ()
    with Experiment(topo, kernel) as exp:
        res = exp.node("pc1").cmd("ping6 -c 1 fc00:1::20")
        assert res.ok, res.output
        assert "from fc00:1::20" in res.output and "hlim=63" in res.output
        assert exp.node("pc2").cmd("ping6 -c 1 fc00::20").ok


def test_imunes_lanswitch_file_with_ipv6(kernel):
    with Experiment(imn.load(DATA / "switched.imn"), kernel) as exp:
        res = exp.node("pc1").cmd("ping6 -c 1 fc00::22")
        assert res.ok, res.output


def test_a_duplicate_ipv6_address_is_a_warning(kernel):
    """DAD finds two nodes given one address; up() completes and says so."""
    topo = yamlfmt.loads("""\
version: 1
name: dup
nodes:
  a: {type: pc, interfaces: {eth0: {ipv6: ["fc00:9::1/64"]}}}
  b: {type: pc, interfaces: {eth0: {ipv6: ["fc00:9::1/64"]}}}
links: [[a, b]]
""", "dup.yaml")
    with Experiment(topo, kernel) as exp:
        assert exp.warnings == [
            "node a: duplicate address <In6Addr fc00:9::1/64 on eth0>",
            "node b: duplicate address <In6Addr fc00:9::1/64 on eth0>"]


def test_down_leaves_nothing_with_ipv6_and_jitter(kernel):
    """ND and DAD timers, neighbour caches, jittered frames in flight: all gone."""
    topo = yamlfmt.loads(LINE6.replace("{a: r2, b: pc2}", "{a: r2, b: pc2, jitter: 3ms}"),
                         "line6.yaml")
    exp = Experiment(topo, kernel).up()
    vnets = list(exp.nodes.values())
    assert exp.node("pc1").cmd("ping6 -c 1 fc00:2::10").ok
    pc2 = exp.node("pc2")
    pc2.cmd("ifconfig eth0 inet6 fc00:2::99/64")  # DAD running at down
    exp.node("r2").ip6.output(58, None, ipv6.aton("fc00:2::10"), b"\x80\0\0\0\0\0\0\0")
    assert kernel.sched.pending_timers(pc2) > 0
    exp.down()
    assert kernel.vnets() == [] and [i.name for i in kernel.interfaces()] == ["lo0"]
    assert all(kernel.sched.pending_timers(v) == 0 for v in vnets)
