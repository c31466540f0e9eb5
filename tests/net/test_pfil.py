"""pfil hook points: order, linking, and what IPv4 in, forward and out hooks see and do."""

from __future__ import annotations

import pytest
from scapy.all import IP, UDP

from vimage.kernel import Kernel
from vimage.net import pfil
from vimage.topo import router_chain
from vimage.wire.checksum import checksum


class Owner:
    head: pfil.Head = None


def test_hooks_run_in_order_and_equal_orders_in_linking_order():
    owner, seen = Owner(), []

    def hook(tag):
        def fn(pkt, ifp):
            seen.append(tag)
            return pkt + tag.encode()
        return fn

    late, first, second, early = hook("late"), hook("1"), hook("2"), hook("early")
    pfil.link(owner, "head", late, order=10, name="late")
    pfil.link(owner, "head", first, name="one")
    pfil.link(owner, "head", second, name="two")
    pfil.link(owner, "head", early, order=-5)
    assert pfil.names(owner.head) == ["fn", "one", "two", "late"]
    assert pfil.run(owner.head, b">", None) == b">early12late"
    assert seen == ["early", "1", "2", "late"]


def test_link_twice_is_refused_and_unlink_empties_to_none():
    owner = Owner()

    def fn(pkt, ifp):
        return pkt

    pfil.link(owner, "head", fn)
    with pytest.raises(ValueError, match="already linked"):
        pfil.link(owner, "head", fn)
    assert pfil.unlink(owner, "head", fn) is True
    assert owner.head is None  # an empty point costs one test again
    assert pfil.unlink(owner, "head", fn) is False


def test_a_hook_that_takes_the_packet_stops_the_rest():
    owner, later = Owner(), []
    pfil.link(owner, "head", lambda pkt, ifp: None, name="deny")
    pfil.link(owner, "head", lambda pkt, ifp: later.append(pkt) or pkt, name="count")
    assert pfil.run(owner.head, b"x", None) is None
    assert later == []


def test_hooks_linked_while_a_packet_runs_do_not_see_it():
    owner, calls = Owner(), []

    def adder(pkt, ifp):
        pfil.link(owner, "head", lambda p, i: calls.append("new") or p, name="new")
        return pkt

    pfil.link(owner, "head", adder)
    assert pfil.run(owner.head, b"x", None) == b"x"
    assert calls == []  # the tuple that was running is unchanged
    assert pfil.names(owner.head) == ["adder", "new"]


def _udp(src_vnet, dst, port=9):
    s = src_vnet.socket(2, 2)
    s.sendto(b"payload", (dst, port))
    return s


def _server(vnet, port=9):
    s = vnet.socket(2, 2)
    s.bind(("", port))
    s.setblocking(False)
    return s


def test_in_fwd_and_out_hooks_see_what_freebsd_pfil_sees():
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1)
    seen: dict[str, list] = {"in": [], "fwd": [], "out": []}
    for head in seen:
        pfil.link(r.ip, f"pfil_{head}",
                  lambda pkt, ifp, head=head: seen[head].append((IP(pkt), ifp.name)) or pkt)
    srv = _server(b)
    _udp(a, "10.0.1.2")
    k.run(1)
    assert srv.recvfrom(100)[0] == b"payload"
    # in: the datagram as it arrived; fwd: the same; out: with the TTL already lowered
    (pkt_in, if_in), = [(p, i) for p, i in seen["in"] if p.haslayer(UDP)]
    (pkt_fwd, if_fwd), = seen["fwd"]
    (pkt_out, if_out), = [(p, i) for p, i in seen["out"] if p.haslayer(UDP)]
    assert if_in == if_fwd == "epair0b" and if_out == "epair1a"
    assert pkt_in.ttl == pkt_fwd.ttl == 64 and pkt_out.ttl == 63
    assert pkt_out.chksum == IP(bytes(pkt_out)).chksum  # a valid header leaves
    # a datagram to the router itself passes in and out, never fwd
    seen["fwd"].clear()
    local = _server(r, 7)
    _udp(a, "10.0.0.2", 7)
    k.run(1)
    assert local.recvfrom(100)[0] == b"payload" and seen["fwd"] == []


def test_a_forward_hook_drops_only_forwarded_traffic():
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1)
    dropped = []
    pfil.link(r.ip, "pfil_fwd", lambda pkt, ifp: dropped.append(pkt) and None, name="deny")
    srv = _server(b)
    _udp(a, "10.0.1.2")
    k.run(1)
    with pytest.raises(BlockingIOError):
        srv.recvfrom(100)
    assert len(dropped) == 1 and r.ip.stats.forward == 0
    assert a.cmd("ping -c 1 10.0.0.2").ok  # the router itself still answers


def test_an_out_hook_sees_local_traffic_and_can_take_it():
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1)
    ifp = a.iface("epair0a")
    k.run(1)
    before = ifp.opackets
    pfil.link(a.ip, "pfil_out", lambda pkt, ifp: None, name="deny-out")
    _udp(a, "10.0.1.2")
    k.run(1)
    assert ifp.opackets == before  # nothing reached the link


def test_an_in_hook_may_rewrite_the_destination():
    """A NAT-like hook: datagrams to 10.0.1.99 are rewritten to b's 10.0.1.2 on r."""
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1)
    target = bytes([10, 0, 1, 2])

    def rdr(pkt, ifp):
        if pkt[16:20] != bytes([10, 0, 1, 99]):
            return pkt
        head = bytearray(pkt[:20])
        head[16:20] = target
        head[10:12] = b"\0\0"
        head[10:12] = checksum(head).to_bytes(2, "big")
        # UDP checksum off: the pseudo-header changed and a NAT would fix it too
        return bytes(head) + pkt[20:26] + b"\0\0" + pkt[28:]

    pfil.link(r.ip, "pfil_in", rdr, name="rdr")
    srv = _server(b)
    _udp(a, "10.0.1.99")
    k.run(1)
    data, (src, _port) = srv.recvfrom(100)
    assert data == b"payload" and src == "10.0.0.1"


def test_link_hooks_see_ethernet_frames_both_ways_and_not_lo0():
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1)
    seen_in: list[tuple[bytes, str]] = []
    seen_out: list[tuple[bytes, str]] = []
    pfil.link(a, "pfil_link_in", lambda f, ifp: seen_in.append((f[12:14], ifp.name)) or f)
    pfil.link(a, "pfil_link_out", lambda f, ifp: seen_out.append((f[12:14], ifp.name)) or f)
    assert a.cmd("ping -c 1 10.0.1.2").ok
    assert a.cmd("ping -c 1 127.0.0.1").ok  # lo0 has no link header: no link hooks
    assert {ifname for _, ifname in seen_in + seen_out} == {"epair0a"}
    assert (b"\x08\x06", "epair0a") in seen_out and (b"\x08\x06", "epair0a") in seen_in
    assert (b"\x08\x00", "epair0a") in seen_out and (b"\x08\x00", "epair0a") in seen_in


def test_a_link_hook_that_drops_arp_cuts_the_host_off():
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1)
    k.run(30)  # gratuitous ARPs settled: they teach a nothing of r
    assert 0x0A000002 not in a.arp.table
    dropped = []

    def no_arp(frame, ifp):
        if frame[12:14] == b"\x08\x06":
            dropped.append(frame)
            return None
        return frame

    pfil.link(r, "pfil_link_in", no_arp, name="no-arp")
    res = a.cmd("ping -c 1 -t 2 10.0.0.2")
    assert not res.ok and dropped  # r never hears a's requests, so never answers
    pfil.unlink(r, "pfil_link_in", no_arp)
    assert r.pfil_link_in is None
    assert a.cmd("ping -c 1 -t 5 10.0.0.2").ok


def test_link_hooks_follow_interfaces_that_move_and_never_show_in_flags():
    k = Kernel(clock="virtual", seed=1)
    a, b, c = k.create("a"), k.create("b"), k.create("c")
    seen = []
    pfil.link(c, "pfil_link_out", lambda f, ifp: seen.append(ifp.name) or f, name="count")
    ea, eb = k.epair(a)
    eb.move_to(b)
    assert a.cmd("ifconfig epair0a 10.0.0.1/24 up").ok
    assert b.cmd("ifconfig epair0b 10.0.0.2/24 up").ok
    flags_before = a.cmd("ifconfig epair0a").output.split("flags=")[1].split("<")[0]
    assert a.cmd("ping -c 1 10.0.0.2").ok and seen == []  # a has no hooks
    ea.move_to(c)
    assert c.cmd("ifconfig epair0a 10.0.0.1/24 up").ok
    assert c.cmd("ping -c 1 10.0.0.2").ok and "epair0a" in seen  # c's hooks see it now
    assert c.cmd("ifconfig epair0a").output.split("flags=")[1].split("<")[0] == flags_before
    pfil.unlink(c, "pfil_link_out", c.pfil_link_out[0].fn)
    seen.clear()
    assert c.cmd("ping -c 1 10.0.0.2").ok and seen == []
