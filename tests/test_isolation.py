"""Two vnet pairs with identical configuration in one kernel never see each other."""

from __future__ import annotations

import errno

import pytest

from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, SO_REUSEADDR, SOCK_DGRAM, SOL_SOCKET
from vimage.topo import add_route
from vimage.wire import ipv4


@pytest.fixture
def world(stack):
    k = Kernel(clock="virtual", seed=7)
    p1 = stack.pair(k, "one")
    p2 = stack.pair(k, "two")
    for p in (p1, p2):  # identical extra configuration: a route and bound sockets
        add_route(p.a, "10.9.0.0/16", stack.B)
    return k, p1, p2


def _all_counters(stack, pair):
    return {v.name: stack.counters(v) for v in (pair.a, pair.b)}


def test_identical_configuration(world):
    _k, p1, p2 = world
    for x, y in ((p1.a, p2.a), (p1.b, p2.b)):
        assert sorted(x.ip.local) == sorted(y.ip.local)
        assert [(r.dst, r.plen, r.gateway, r.flags) for r in x.rt.routes()] == \
            [(r.dst, r.plen, r.gateway, r.flags) for r in y.rt.routes()]
    # MACs come from the kernel RNG: distinct even though everything else is equal
    assert len({p1.ifa.mac, p1.ifb.mac, p2.ifa.mac, p2.ifb.mac}) == 4


def test_udp_stays_in_its_pair(world, stack):
    k, p1, p2 = world
    socks = {}
    for name, p in (("one", p1), ("two", p2)):
        s = p.b.socket(AF_INET, SOCK_DGRAM)
        s.bind((stack.B, 5000))  # same address and port in both vnets: no EADDRINUSE
        s.setblocking(False)
        socks[name] = s
    before = _all_counters(stack, p2)
    tx = p1.a.socket(AF_INET, SOCK_DGRAM)
    for i in range(5):
        tx.sendto(b"hello %d" % i, (stack.B, 5000))
    k.run(1)
    got = []
    while True:
        try:
            got.append(socks["one"].recvfrom(100))
        except BlockingIOError:
            break
    assert [d for d, _ in got] == [b"hello %d" % i for i in range(5)]
    assert {src for _, src in got} == {(stack.A, tx.getsockname()[1])}
    with pytest.raises(BlockingIOError):
        socks["two"].recv(100)
    assert _all_counters(stack, p2) == before
    assert p1.b.udp.stats.delivered == 5 and p2.b.udp.stats.delivered == 0
    assert p1.ifb.ipackets > 0 and p2.ifb.ipackets == before[p2.b.name][
        f"{p2.ifb.name}.ipackets"]
    # ARP learned in pair 1 only
    assert ipv4.aton(stack.B) in p1.a.arp.table
    assert ipv4.aton(stack.B) not in p2.a.arp.table


def test_ping_stays_in_its_pair(world, stack):
    _k, p1, p2 = world
    before = _all_counters(stack, p2)
    reply = stack.ping(p1.a, stack.B)
    assert reply is not None
    assert p1.b.icmp.stats.inhist[8] == 1 and p1.b.icmp.stats.outhist[0] == 1
    assert p1.a.icmp.stats.inhist[0] == 1
    assert _all_counters(stack, p2) == before
    # and the other way round
    before1 = _all_counters(stack, p1)
    assert stack.ping(p2.b, stack.A) is not None
    assert _all_counters(stack, p1) == before1
    assert p2.a.icmp.stats.inhist[8] == 1


def test_port_binding_is_per_vnet(world, stack):
    _k, p1, p2 = world
    servers = [p.b.socket(AF_INET, SOCK_DGRAM) for p in (p1, p2)]
    for s in servers:
        s.bind(("", 53))
    # a second bind in the same vnet conflicts, in the other vnet it did not
    dup = p1.b.socket(AF_INET, SOCK_DGRAM)
    with pytest.raises(OSError) as exc:
        dup.bind(("", 53))
    assert exc.value.errno == errno.EADDRINUSE
    assert [s.lport for s in p1.b.udp.sockets()] == [53]
    assert [s.lport for s in p2.b.udp.sockets()] == [53]
    # reuse options are per socket and per vnet too
    r = p2.a.socket(AF_INET, SOCK_DGRAM)
    r.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    r.bind(("", 53))
    assert p1.a.udp.sockets() == []


def test_sysctl_is_per_vnet(world, stack):
    k, p1, p2 = world
    assert p1.b.sysctl("net.inet.ip.forwarding", 1) == 1
    assert p1.b.sysctl("net.inet.ip.ttl", 7) == 7
    assert p2.b.sysctl("net.inet.ip.forwarding") == 0
    assert p2.b.sysctl("net.inet.ip.ttl") == 64
    assert k.base.sysctl("net.inet.ip.ttl") == 64
    # ttl: the echo reply carries the replier's default TTL
    r1 = stack.ping(p1.a, stack.B)
    r2 = stack.ping(p2.a, stack.B)
    assert r1 is not None and r2 is not None
    assert r1[8] == 7 and r2[8] == 64
    # forwarding: a datagram for 10.9.9.9 is routed by both a's to b; only pair 1's b
    # tries to forward it (and finds no route), pair 2's b refuses at once
    for p in (p1, p2):
        p.a.socket(AF_INET, SOCK_DGRAM).sendto(b"fwd?", ("10.9.9.9", 9))
    k.run(1)
    assert p1.b.ip.stats.noroute == 1 and p1.b.ip.stats.cantforward == 1
    assert p2.b.ip.stats.noroute == 0 and p2.b.ip.stats.cantforward == 1
    assert p1.a.icmp.stats.inhist[3] == 1  # host unreachable from the would-be router
    assert p2.a.icmp.stats.inhist[3] == 0


def test_destroying_one_vnet_leaves_the_other_working(world, stack):
    k, p1, p2 = world
    assert stack.udp_exchange(p1.a, p1.b, stack.B, 7000, b"before")
    assert stack.udp_exchange(p2.a, p2.b, stack.B, 7000, b"before")
    s2 = p2.b.socket(AF_INET, SOCK_DGRAM)
    s2.bind((stack.B, 7001))
    before = _all_counters(stack, p2)
    timers2 = k.sched.pending_timers(p2.a) + k.sched.pending_timers(p2.b)
    k.destroy(p1.b)
    assert not p1.b.alive and p1.b.name not in k
    assert k.sched.pending_timers(p1.b) == 0
    assert _all_counters(stack, p2) == before
    assert k.sched.pending_timers(p2.a) + k.sched.pending_timers(p2.b) == timers2
    assert not s2.closed and s2.getsockname() == (stack.B, 7001)
    # pair 2 still works in every way
    assert stack.udp_exchange(p2.a, p2.b, stack.B, 7000, b"after")
    assert stack.ping(p2.a, stack.B) is not None
    assert stack.ping(p2.b, stack.A) is not None
    # pair 1's survivor lost its peer: the link end went home to the base vnet
    assert p1.ifb.vnet is k.base and not p1.ifb.up
    assert stack.ping(p1.a, stack.B) is None
    k.destroy(p1.a)
    assert stack.udp_exchange(p2.b, p2.a, stack.A, 7002, b"still")
    assert [v.name for v in k.vnets()] == ["twoa", "twob"]
