"""The IPv4 fast paths (forwarding and local output) and their next-hop cache.

A gateway route caches the ARP entry of its next hop (Route.nh), whose prebuilt link
header the fast paths prepend. These tests change what the cache depends on (the
route, the ARP entry, the interfaces' state, MAC and MTU) between packets of one flow
and check that the next packet goes where, and as, the change says.
"""

from __future__ import annotations

import errno

import pytest

from vimage.kernel import Kernel
from vimage.topo import add_route, connect, router_chain
from vimage.wire import ipv4

IP_DONTFRAG = 67


def _rx(vnet, port=9):
    sock = vnet.socket(2, 2)
    sock.bind(("", port))
    sock.setblocking(False)
    return sock


def _drain(sock) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(70000))
        except BlockingIOError:
            return out


class Tap:
    """Stands in for an epair's peer: keeps the frames, then passes them on."""

    def __init__(self, ifp):
        self.ifp, self.peer, self.frames = ifp, ifp.peer, []
        ifp.peer = self

    def input(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.peer.input(frame)


def _two_gateways():
    """a - r, and r - g1, r - g2: both gateways have 10.9.0.9; r routes 10.9.0.0/24
    via g1 first."""
    k = Kernel(clock="virtual", seed=3)
    a, r, g1, g2 = (k.create(n) for n in ("a", "r", "g1", "g2"))
    r.ip.forwarding = 1
    connect(a, "10.1.0.1/24", r, "10.1.0.2/24")
    connect(r, "10.2.0.1/24", g1, "10.2.0.2/24")
    connect(r, "10.3.0.1/24", g2, "10.3.0.2/24")
    for g, net in ((g1, "10.2.0.1"), (g2, "10.3.0.1")):
        stub, _ = connect(g, "10.9.0.9/24", k.create(f"stub{g.name}"), "10.9.0.1/24")
        add_route(g, "default", net)
    add_route(a, "default", "10.1.0.2")
    add_route(r, "10.9.0.0/24", "10.2.0.2")
    return k, a, r, g1, g2


def test_route_change_takes_the_new_next_hop():
    k, a, r, g1, g2 = _two_gateways()
    rx1, rx2 = _rx(g1), _rx(g2)
    tx = a.socket(2, 2)
    for _ in range(3):
        tx.sendto(b"one", ("10.9.0.9", 9))
    k.run(1)
    assert len(_drain(rx1)) == 3
    route = r.rt.lookup(ipv4.aton("10.9.0.9"))
    assert route.nh is not None and route.nh.addr == ipv4.aton("10.2.0.2")  # cached
    assert r.cmd("route change 10.9.0.0/24 10.3.0.2").ok
    for _ in range(3):
        tx.sendto(b"two", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx1) == [] and _drain(rx2) == [b"two"] * 3
    assert r.rt.lookup(ipv4.aton("10.9.0.9")).nh.addr == ipv4.aton("10.3.0.2")


def test_route_deleted_then_added_again():
    k, a, r, g1, g2 = _two_gateways()
    rx1, rx2 = _rx(g1), _rx(g2)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx1) == [b"x"]
    assert r.cmd("route delete 10.9.0.0/24").ok
    noroute = r.ip.stats.noroute
    tx.sendto(b"lost", ("10.9.0.9", 9))
    k.run(1)
    assert r.ip.stats.noroute == noroute + 1 and _drain(rx1) == []
    assert r.cmd("route add 10.9.0.0/24 10.3.0.2").ok
    tx.sendto(b"y", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx2) == [b"y"] and _drain(rx1) == []


def test_arp_entry_replaced_with_a_new_mac():
    """g1 changes its MAC (and announces it): r's cached header must carry the new one,
    else g1's interface drops the frames as unicast to another station."""
    k, a, r, g1, _g2 = _two_gateways()
    rx1 = _rx(g1)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx1) == [b"x"]
    g1_if = next(i for i in g1.ifaces.values() if i.addrs and i.addrs[0].addr
                 == ipv4.aton("10.2.0.2"))
    assert g1.cmd(f"ifconfig {g1_if.name} ether 02:00:00:00:99:01").ok
    k.run(1)  # the gratuitous ARP reaches r
    assert r.arp.table[ipv4.aton("10.2.0.2")].mac == bytes.fromhex("020000009901")
    for _ in range(3):
        tx.sendto(b"y", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx1) == [b"y"] * 3


def test_static_arp_entry_replaces_the_cached_one():
    k, a, r, g1, _g2 = _two_gateways()
    rx1 = _rx(g1)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx1) == [b"x"]
    out = r.ifaces[next(n for n, i in r.ifaces.items() if i.addrs
                        and i.addrs[0].addr == ipv4.aton("10.2.0.1"))]
    tap = Tap(out)
    assert r.cmd("arp -s 10.2.0.2 02:00:00:00:77:07").ok  # a wrong MAC, on purpose
    tx.sendto(b"y", ("10.9.0.9", 9))
    k.run(1)
    assert tap.frames and tap.frames[-1][:6] == bytes.fromhex("020000007707")
    assert _drain(rx1) == []  # g1 does not take a frame for another station


def test_arp_expiry_resolves_again():
    k, a, r, g1, _g2 = _two_gateways()
    rx1 = _rx(g1)
    tx = a.socket(2, 2)
    for _ in range(2):  # the first resolves the gateway, the second fills the cache
        tx.sendto(b"x", ("10.9.0.9", 9))
        k.run(1)
    assert _drain(rx1) == [b"x"] * 2
    route = r.rt.lookup(ipv4.aton("10.9.0.9"))
    cached = route.nh
    assert cached is not None and cached.hdr is not None
    k.run(r.arp.max_age + 1)  # every entry on the way expires
    assert ipv4.aton("10.2.0.2") not in r.arp.table
    assert cached.hdr is None  # what the route still holds says it is stale
    asked = r.arp.stats.txrequests
    tx.sendto(b"y", ("10.9.0.9", 9))
    k.run(1)
    assert r.arp.stats.txrequests > asked  # resolved again, not sent on the old header
    assert _drain(rx1) == [b"y"]
    tx.sendto(b"z", ("10.9.0.9", 9))
    k.run(1)
    assert _drain(rx1) == [b"z"]
    assert route.nh is not cached and route.nh.hdr is not None  # the new entry, cached


def test_interface_down_and_up():
    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1)
    rx = _rx(b)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"x"]
    out = r.ifaces["epair1a"]
    out.set_up(False)
    dropped = r.ip.stats.odropped
    tx.sendto(b"lost", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [] and r.ip.stats.odropped == dropped + 1
    out.set_up(True)
    k.run(1)
    tx.sendto(b"y", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"y"]


def test_sender_interface_down_refuses_locally():
    """The local output fast path checks the interface too: ENETDOWN, as before."""
    k = Kernel(clock="virtual", seed=3)
    a, _r, b = router_chain(k, 1)
    rx = _rx(b)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"x"]
    a.ifaces["epair0a"].set_up(False)
    with pytest.raises(OSError) as exc:
        tx.sendto(b"y", ("10.0.1.2", 9))
    assert exc.value.errno == errno.ENETDOWN


def test_mtu_change_fragments_or_needfrag():
    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1)
    rx = _rx(b)
    tx = a.socket(2, 2)
    tx.sendto(b"x" * 1000, ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"x" * 1000] and r.ip.stats.fragmented == 0
    assert r.cmd("ifconfig epair1a mtu 576").ok
    tx.sendto(b"y" * 1000, ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"y" * 1000]  # fragmented by r, reassembled by b
    assert r.ip.stats.fragmented == 1 and r.ip.stats.ofragments == 2
    tx.setsockopt(0, IP_DONTFRAG, 1)
    cantfrag, unreach = r.ip.stats.cantfrag, a.icmp.stats.inhist[3]
    tx.sendto(b"z" * 1000, ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [] and r.ip.stats.cantfrag == cantfrag + 1
    assert a.icmp.stats.inhist[3] == unreach + 1  # r's needfrag came back
    assert r.cmd("ifconfig epair1a mtu 1500").ok
    tx.sendto(b"w" * 1000, ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"w" * 1000] and r.ip.stats.fragmented == 1


def test_route_mtu_applies_to_local_output():
    """A route's own MTU (route change -mtu) is read on every packet by the fast path."""
    k = Kernel(clock="virtual", seed=3)
    a, _r, b = router_chain(k, 1)
    rx = _rx(b)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"x"]
    assert a.cmd("route change default 10.0.0.2 -mtu 600").ok
    tx.sendto(b"y" * 1000, ("10.0.1.2", 9))
    k.run(1)
    assert a.ip.stats.fragmented == 1 and _drain(rx) == [b"y" * 1000]


def test_own_mac_change_rebuilds_the_headers():
    """r's outgoing interface gets a new MAC: frames it forwards carry it as source."""
    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1)
    rx = _rx(b)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"x"]
    out = r.ifaces["epair1a"]
    tap = Tap(out)
    assert r.cmd("ifconfig epair1a ether 02:00:00:00:55:01").ok
    k.run(1)
    tap.frames.clear()
    tx.sendto(b"y", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"y"]
    assert [f[6:12] for f in tap.frames] == [bytes.fromhex("020000005501")]


def test_fast_path_frames_are_the_full_paths():
    """The same datagram through the fast path and through the full one (a pfil hook
    present forces it) gives the same bytes on the wire."""
    from vimage.net import pfil

    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1)
    rx = _rx(b)
    tx = a.socket(2, 2)
    tx.sendto(b"warm", ("10.0.1.2", 9))
    k.run(1)
    _drain(rx)
    tap = Tap(r.ifaces["epair1a"])
    atap = Tap(a.ifaces["epair0a"])
    tx.sendto(b"same", ("10.0.1.2", 9))
    k.run(1)
    fast = r.ip.stats.fastforward
    assert fast >= 1 and f"({fast} packet{'s' if fast > 1 else ''} fast forwarded)" in \
        r.cmd("netstat -s -p ip").output
    hook = lambda pkt, ifp: pkt  # noqa: E731 - passes everything
    pfil.link(r.ip, "pfil_out", hook, order=10, name="pass")
    pfil.link(a.ip, "pfil_out", hook, order=10, name="pass")
    a.ip.ident -= 1  # the same IP ID for the second copy
    tx.sendto(b"same", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"same", b"same"]
    assert len(tap.frames) == 2 and tap.frames[0] == tap.frames[1]
    assert len(atap.frames) == 2 and atap.frames[0] == atap.frames[1]
    assert r.ip.stats.fastforward == fast  # the hooked copy took the full path


@pytest.mark.parametrize("tos,ttl,df", [(0, 64, False), (0xB8, 1, True), (0xFF, 255, False)])
def test_output_header_checksum_from_the_fields(tos, ttl, df):
    """IpState.output sums the fields instead of the bytes: the header verifies, and an
    ident making the sum a multiple of 0xFFFF gives the field 0 (as checksum() does)."""
    from vimage.wire.checksum import checksum, verify

    k = Kernel(clock="virtual", seed=3)
    a, _r, b = router_chain(k, 1)
    src, dst = ipv4.aton("10.0.0.1"), ipv4.aton("10.0.1.2")
    tap = Tap(a.ifaces["epair0a"])
    with k.sched.cond:
        a.ip.output(17, src, dst, b"\x00" * 8, ttl=ttl, tos=tos, df=df)  # resolves ARP
    k.run(1)
    base = (0x4500 | tos) + 28 + (0x4000 if df else 0) + (ttl << 8 | 17) + src + dst
    for ident in (1, 0xFFFF, 0xFFFF - base % 0xFFFF):  # the last: a sum of 0 mod 0xFFFF
        a.ip.ident = (ident - 1) & 0xFFFF
        tap.frames.clear()
        with k.sched.cond:
            a.ip.output(17, src, dst, b"\x00" * 8, ttl=ttl, tos=tos, df=df)
        k.run(0)
        header = tap.frames[0][14:34]
        assert int.from_bytes(header[4:6], "big") == ident
        assert verify(header)
        zeroed = header[:10] + b"\x00\x00" + header[12:]
        assert int.from_bytes(header[10:12], "big") == checksum(zeroed)
        if (base + ident) % 0xFFFF == 0:
            assert header[10:12] == b"\x00\x00"


def test_sendto_and_recvfrom_with_changing_peers():
    """The socket's last-destination and last-sender memos never give a stale answer."""
    import socket as std

    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1)
    rx = _rx(b)
    other = _rx(b, 10)
    tx = a.socket(2, 2)
    tx2 = r.socket(2, 2)
    for i in range(3):
        tx.sendto(b"a%d" % i, ("10.0.1.2", 9))
        tx.sendto(b"b%d" % i, ("10.0.1.2", 10))
        tx2.sendto(b"r%d" % i, ("10.0.1.2", 9))
    k.run(1)
    got = dict(rx.recvfrom(100) for _ in range(6))  # data -> sender
    a_peer, r_peer = ("10.0.0.1", tx.getsockname()[1]), ("10.0.1.1", tx2.getsockname()[1])
    assert got == {b"a0": a_peer, b"a1": a_peer, b"a2": a_peer,
                   b"r0": r_peer, b"r1": r_peer, b"r2": r_peer}
    assert _drain(other) == [b"b0", b"b1", b"b2"]
    with pytest.raises(std.gaierror):
        tx.sendto(b"x", ("10.0.1.256", 9))
    with pytest.raises(OSError) as exc:
        tx.sendto(b"x", ("10.0.1.2", 0))
    assert exc.value.errno == errno.EADDRNOTAVAIL
    tx.sendto(b"again", ("10.0.1.2", 9))
    k.run(1)
    assert _drain(rx) == [b"again"]
    tx.close()
    with pytest.raises(OSError) as exc:
        tx.sendto(b"x", ("10.0.1.2", 9))
    assert exc.value.errno == errno.EBADF


def test_answer_to_the_last_sender_uses_its_address():
    """sendto() with the very address recvfrom() returned skips parsing it, and still
    reaches that sender (and only it)."""
    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1)
    server = _rx(b)
    clients = [a.socket(2, 2), r.socket(2, 2)]
    for c in clients:
        c.setblocking(False)
    for i, c in enumerate(clients):
        c.sendto(b"q%d" % i, ("10.0.1.2", 9))
    k.run(1)
    for _ in clients:
        data, peer = server.recvfrom(100)
        server.sendto(b"answer " + data, peer)
    k.run(1)
    assert [_drain(c) for c in clients] == [[b"answer q0"], [b"answer q1"]]
