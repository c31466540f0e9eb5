"""Forwarding across the Linux/vimage boundary: vimage routers between Linux namespaces,
and a Linux router between vnets. ICMP errors each side sends must be understood by the
other: time exceeded (traceroute), fragmentation needed (path MTU discovery).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from vimage.topo import add_route, connect

if TYPE_CHECKING:
    from conftest import Lab, Link
    from vimage.vnet import Vnet

PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")
TRACE_FAST = ("-n", "-q", "1", "-w", "2", "-m", "8")


@dataclass
class Routed:
    """Linux ns1 - TAP - routers... - TAP - Linux ns2."""

    lab: Lab
    routers: list[Vnet]
    left: Link  # ns1's link to the first router
    right: Link  # the last router's link to ns2
    hops: list[str]  # the address each router answers traceroute from (its left side)


def build_routed(lab: Lab, routers: int, right_mtu: int = 1500) -> Routed:
    """ns1 (10.1.0.2) - r1 - r2 ... - rN - ns2 (10.2.0.2); routers joined by epairs
    on 10.100.i.0/24, the links to Linux by TAP; every node can reach every link."""
    nodes = [lab.vnet(f"r{i}", forwarding=True) for i in range(1, routers + 1)]
    ns1, ns2 = lab.netns(), lab.netns()
    left = lab.tap(nodes[0], ns1, "10.1.0.1/24", "10.1.0.2/24")
    right = lab.tap(nodes[-1], ns2, "10.2.0.1/24", "10.2.0.2/24", mtu=right_mtu)
    hops = ["10.1.0.1"]
    for i in range(1, routers):
        connect(nodes[i - 1], f"10.100.{i}.1/24", nodes[i], f"10.100.{i}.2/24")
        hops.append(f"10.100.{i}.2")
    for i, node in enumerate(nodes):
        if i < routers - 1:
            add_route(node, "10.2.0.0/24", f"10.100.{i + 1}.2")
        if i > 0:
            add_route(node, "10.1.0.0/24", f"10.100.{i}.1")
            for j in range(1, i):
                add_route(node, f"10.100.{j}.0/24", f"10.100.{i}.1")
        for j in range(i + 2, routers):
            add_route(node, f"10.100.{j}.0/24", f"10.100.{i + 1}.2")
    lab.ip(ns1, "route", "add", "default", "via", "10.1.0.1")
    lab.ip(ns2, "route", "add", "default", "via", "10.2.0.1")
    lab.start()
    return Routed(lab, nodes, left, right, hops)


def trace_hops(output: str) -> list[str]:
    """The address of each hop of a `traceroute -n -q 1` (Linux or ours) output."""
    hops = []
    for line in output.splitlines():
        match = re.match(r"\s*(\d+)\s+(\S+)", line)
        if match:
            assert int(match.group(1)) == len(hops) + 1, output
            hops.append(match.group(2))
    return hops


def test_vimage_router_forwards_linux_ping(lab: Lab) -> None:
    ping = lab.need("ping")
    net = build_routed(lab, 1)
    res = lab.run(net.left.ns, ping, "-c", "3", *PING_FAST, "10.2.0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 received, 0% packet loss" in res.stdout, res.stdout
    # Linux sends with TTL 64; the reply crossed one vimage router
    ttls = re.findall(r"bytes from 10\.2\.0\.2: icmp_seq=\d+ ttl=(\d+)", res.stdout)
    assert ttls == ["63"] * 3, res.stdout
    stats = net.routers[0].cmd("netstat -s -p ip").output
    assert re.search(r"^\s*([6-9]|\d\d+) packets forwarded \(\d+ packets? fast forwarded\)$",
                     stats, re.MULTILINE), stats  # inet.c's ips_forward (ips_fastforward)


def test_linux_traceroute_through_vimage_router(lab: Lab) -> None:
    traceroute = lab.need("traceroute")
    net = build_routed(lab, 1)
    res = lab.run(net.left.ns, traceroute, *TRACE_FAST, "10.2.0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert trace_hops(res.stdout) == ["10.1.0.1", "10.2.0.2"], res.stdout
    icmp = net.routers[0].cmd("netstat -s -p icmp").output
    assert re.search(r"time exceeded: [1-9]", icmp), icmp


@pytest.mark.parametrize("routers", [2, 3])
def test_linux_traceroute_through_vimage_chain(lab: Lab, routers: int) -> None:
    traceroute = lab.need("traceroute")
    net = build_routed(lab, routers)
    res = lab.run(net.left.ns, traceroute, *TRACE_FAST, "10.2.0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert trace_hops(res.stdout) == [*net.hops, "10.2.0.2"], res.stdout
    # and back: ns2 traces to ns1 through the routers' right-hand addresses
    res = lab.run(net.right.ns, traceroute, *TRACE_FAST, "10.1.0.2")
    back = ["10.2.0.1", *(f"10.100.{i}.1" for i in range(routers - 1, 0, -1)), "10.1.0.2"]
    assert trace_hops(res.stdout) == back, res.stdout


def test_linux_learns_path_mtu_from_vimage_router(lab: Lab) -> None:
    """A DF packet too big for the router's next link gets 'fragmentation needed'
    quoting the next-hop MTU; Linux reports it and caches the path MTU."""
    ping = lab.need("ping")
    net = build_routed(lab, 1, right_mtu=1280)
    res = lab.run(net.left.ns, ping, "-c", "2", "-M", "do", "-s", "1400", *PING_FAST,
                  "10.2.0.2")
    text = res.stdout + res.stderr
    assert res.returncode != 0, text
    assert "From 10.1.0.1 icmp_seq=1 Frag needed and DF set (mtu = 1280)" in text, text
    route = lab.ip(net.left.ns, "route", "get", "10.2.0.2")
    assert re.search(r"\bmtu 1280\b", route), route
    # a DF packet that fits goes through
    res = lab.run(net.left.ns, ping, "-c", "1", "-M", "do", "-s", "1252", *PING_FAST,
                  "10.2.0.2")
    assert res.returncode == 0, res.stdout + res.stderr


def test_vimage_router_fragments_forwarded_packets(lab: Lab) -> None:
    """Linux's 1500-byte fragments (DF clear) must be cut again for the 1280-byte link."""
    ping = lab.need("ping")
    net = build_routed(lab, 1, right_mtu=1280)
    res = lab.run(net.left.ns, ping, "-c", "2", "-M", "dont", "-s", "3000", *PING_FAST,
                  "10.2.0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 received, 0% packet loss" in res.stdout, res.stdout
    assert "3008 bytes from 10.2.0.2" in res.stdout, res.stdout
    stats = net.routers[0].cmd("netstat -s -p ip").output
    assert re.search(r"^\s*[1-9]\d* output datagrams fragmented$", stats, re.MULTILINE), stats


def test_vimage_router_records_route(lab: Lab) -> None:
    ping = lab.need("ping")
    net = build_routed(lab, 1)
    res = lab.run(net.left.ns, ping, "-c", "1", "-R", *PING_FAST, "10.2.0.2")
    assert res.returncode == 0, res.stdout + res.stderr
    rr = res.stdout.partition("RR:")[2].partition("\n\n")[0].split()
    assert "10.2.0.1" in rr and "10.1.0.1" in rr, res.stdout


@dataclass
class LinuxRouted:
    """vnet a (10.3.0.1) - TAP - Linux router namespace - TAP - vnet b (10.4.0.1)."""

    a: Vnet
    b: Vnet
    ns: str


def build_linux_router(lab: Lab) -> LinuxRouted:
    a, b = lab.vnet("a"), lab.vnet("b")
    ns = lab.netns()
    lab.tap(a, ns, "10.3.0.1/24", "10.3.0.2/24")
    lab.tap(b, ns, "10.4.0.1/24", "10.4.0.2/24")
    lab.set_forwarding(ns)
    assert a.cmd("route add default 10.3.0.2").status == 0
    assert b.cmd("route add default 10.4.0.2").status == 0
    lab.start()
    return LinuxRouted(a, b, ns)


def test_linux_router_forwards_our_ping(lab: Lab) -> None:
    net = build_linux_router(lab)
    res = net.a.cmd("ping -c 3 -i 0.2 10.4.0.1")
    assert res.status == 0, res.output
    assert "3 packets received" in res.output, res.output
    assert res.output.count("bytes from 10.4.0.1: icmp_seq=") == 3, res.output
    assert re.findall(r"ttl=(\d+)", res.output) == ["63"] * 3, res.output
    res = net.a.cmd("ping -c 2 -i 0.2 -s 4000 10.4.0.1")
    assert res.status == 0, res.output
    assert "2 packets received" in res.output, res.output


def test_our_traceroute_through_linux_router(lab: Lab) -> None:
    """Linux's time exceeded and port unreachable are understood by our traceroute."""
    net = build_linux_router(lab)
    res = net.a.cmd("traceroute -n -q 1 -w 2 -m 5 10.4.0.1")
    assert res.status == 0, res.output
    assert trace_hops(res.output) == ["10.3.0.2", "10.4.0.1"], res.output


def test_our_path_mtu_through_linux_router(lab: Lab) -> None:
    """Linux's 'fragmentation needed' reaches our ping with -D as an ICMP error."""
    net = build_linux_router(lab)
    dev_b = next(t for t in lab.taps if t.vnet is net.b).linux_name
    lab.ip(net.ns, "link", "set", dev_b, "mtu", "1280")
    res = net.a.cmd("ping -c 1 -t 1 -D -s 1400 10.4.0.1")
    assert res.status == 2, res.output
    assert re.search(r"from 10\.3\.0\.2: Frag needed and DF set \(MTU 1280\)", res.output,
                     re.IGNORECASE), res.output
