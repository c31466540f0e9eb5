"""The IPv6 forwarding fast path (Ip6State.input, FreeBSD's ip6_tryforward) and its
next-hop cache (Route.nh holding the NdEntry with its prebuilt header).

The fast path forwards a plain packet without calling `Ip6State.forward`; these tests
count the calls to `forward` and check that every case RFC 8200 and RFC 4861 give a
router something to do (hop limit, packet too big, redirect, hop-by-hop options, scope,
hooks, a neighbour that is not REACHABLE) still goes the full way and gets its answer.
"""

from __future__ import annotations

import pytest
from tests.netinet6.conftest import A1, B2, Heard, inject, link_local, routed, send
from tests.netinet6.test_redirect6 import FAR, shared_link

from vimage.compiled import is_compiled
from vimage.net import pfil
from vimage.netinet6 import ip6, nd6
from vimage.netinet6.ip6 import Ip6State
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

GW = B2  # h2's global address: the gateway of the router's route to FAR


class Tap:
    """Stands in for an epair's peer: keeps the frames, then passes them on."""

    def __init__(self, ifp):  # type: ignore[no-untyped-def]
        self.peer, self.frames = ifp.peer, []
        ifp.peer = self

    def input(self, frame: bytes) -> None:
        self.frames.append(frame)
        self.peer.input(frame)


@pytest.fixture
def slow_calls(monkeypatch):  # type: ignore[no-untyped-def]
    """The packets that went through Ip6State.forward (the slow path)."""
    if is_compiled(ip6):
        pytest.skip("counts by patching Ip6State.forward, which compiled input calls "
                    "directly (vimage.compiled)")
    calls: list[bytes] = []
    original = Ip6State.forward

    def counting(self, ifp_in, pkt, src, dst):  # type: ignore[no-untyped-def]
        calls.append(pkt)
        original(self, ifp_in, pkt, src, dst)

    monkeypatch.setattr(Ip6State, "forward", counting)
    return calls


def _gateway_route():  # type: ignore[no-untyped-def]
    """routed(), plus 2001:db8:9::/64 on h2's lo0, which r reaches through h2's global
    address (a gateway route, whose next hop the router caches)."""
    t = routed()
    assert t.h2.cmd("ifconfig lo0 inet6 2001:db8:9::1/64").ok
    assert t.r.cmd("route add -inet6 2001:db8:9::/64 2001:db8:2::2").ok
    return t


def _to(dst: int, frames: list[bytes]) -> list[bytes]:
    """The IPv6 frames to `dst` among `frames`."""
    return [f for f in frames if f[12:14] == b"\x86\xdd" and f[38:54] == dst.to_bytes(16, "big")]


def _send(t, dst: int = FAR, hlim: int = 64, nxt: int = wip6.NXT_NONE,  # type: ignore[no-untyped-def]
          payload: bytes = b"x" * 16, count: int = 1) -> None:
    for _ in range(count):
        send(t.h1, A1, dst, nxt, payload, hlim=hlim)
    t.kernel.run(0.5)


def test_plain_packets_take_the_fast_path_through_the_cached_next_hop(slow_calls):
    t = _gateway_route()
    _send(t)  # the first one resolves the gateway (slow path, ND)
    assert t.r.ip6.stats.forward == 1 and len(slow_calls) == 1
    route = t.r.rt6.lookup(FAR)
    tap = Tap(t.r2_if)
    delivered = t.h2.ip6.stats.delivered
    _send(t, hlim=9, count=5)
    assert len(slow_calls) == 1  # none of the five went through forward
    assert t.r.ip6.stats.forward == 6
    assert t.h2.ip6.stats.delivered == delivered + 5
    entry = route.nh
    assert isinstance(entry, nd6.NdEntry) and entry.addr == GW and entry.ifp is t.r2_if
    assert entry.hdr == t.h2_if.mac + t.r2_if.mac + b"\x86\xdd"
    frame = _to(FAR, tap.frames)[-1]
    assert len(_to(FAR, tap.frames)) == 5
    assert frame[:14] == entry.hdr and frame[14 + 7] == 8  # hop limit 9 - 1
    assert route.use == 6
    # a direct (interface) route: the destination's own entry, looked up per packet
    _send(t, dst=B2, count=2)
    _send(t, dst=B2, count=3)
    assert len(slow_calls) == 2  # only the first packet to B2 (before the route cache)


def test_hop_limit_one_gets_time_exceeded(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    heard = Heard(t.h1)
    before = len(slow_calls)
    _send(t, hlim=1)
    assert len(slow_calls) == before + 1
    assert [m.code for m in heard.of_type(w6.TIME_EXCEEDED)] == [w6.TIME_EXCEED_TRANSIT]
    assert t.r.ip6.stats.forward == 2


def test_too_big_gets_packet_too_big(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    assert t.r.cmd(f"ifconfig {t.r2_if.name} mtu 1280").ok
    heard = Heard(t.h1)
    before = len(slow_calls)
    _send(t, payload=b"x" * 1300)
    assert len(slow_calls) == before + 1
    assert [m.rest for m in heard.of_type(w6.PACKET_TOO_BIG)] == [1280]
    assert t.r.ip6.stats.cantfrag == 1 and t.r.ip6.stats.forward == 2
    _send(t, payload=b"x" * 1200)  # within the MTU: fast again
    assert len(slow_calls) == before + 1 and t.r.ip6.stats.forward == 3


def test_back_out_the_same_link_goes_slow_and_redirects(slow_calls):
    k, h, r, r2, h_if, r_if, r2_if = shared_link()
    h.sysctl("net.inet6.icmp6.rediraccept", 0)  # so h keeps sending through r
    for _ in range(3):
        assert "1 packets received" in h.cmd("ping6 -c 1 2001:db8:9::1").output
    assert r.ip6.stats.redirectsent == 3  # one per packet: none took the fast path
    assert len(slow_calls) == 3 and r.ip6.stats.forward == 3


def test_hop_by_hop_options_go_slow(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    before = len(slow_calls)
    delivered = t.h2.ip6.stats.delivered
    hbh = bytes((wip6.NXT_NONE, 0, 1, 4, 0, 0, 0, 0))  # PadN
    _send(t, nxt=wip6.NXT_HOPOPTS, payload=hbh)
    assert len(slow_calls) == before + 1
    assert t.h2.ip6.stats.delivered == delivered + 1


def test_link_local_source_is_not_forwarded(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    heard_before = t.r.ip6.stats.badscope
    src = link_local(t.h1_if)
    pkt = wip6.build_header(src, FAR, wip6.NXT_NONE, 8, 64) + b"y" * 8
    inject(t.r1_if, pkt, t.h1_if.mac)
    t.kernel.run(0.1)
    assert t.r.ip6.stats.badscope == heard_before + 1 and t.r.ip6.stats.forward == 2
    assert t.r.icmp6.stats.outhist[w6.DST_UNREACH] == 1  # beyond scope


def test_hooks_see_every_forwarded_packet(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    seen: list[str] = []

    def fwd_hook(pkt, _ifp):  # type: ignore[no-untyped-def]
        seen.append("fwd")
        return pkt

    def out_hook(pkt, _ifp):  # type: ignore[no-untyped-def]
        seen.append("out")
        return pkt

    pfil.link(t.r.ip6, "pfil_fwd", fwd_hook)
    _send(t, count=3)
    assert seen == ["fwd"] * 3
    pfil.unlink(t.r.ip6, "pfil_fwd", fwd_hook)
    pfil.link(t.r.ip6, "pfil_out", out_hook)
    _send(t, count=2)
    assert seen[3:] == ["out"] * 2
    pfil.unlink(t.r.ip6, "pfil_out", out_hook)
    before = len(slow_calls)
    _send(t, count=2)
    assert len(slow_calls) == before and t.r.ip6.stats.forward == 9


def test_stale_neighbour_goes_slow_and_is_probed(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    entry = t.r.rt6.lookup(FAR).nh
    t.kernel.run(60)  # past the reachable time: STALE
    assert entry.state == nd6.STALE
    before = len(slow_calls)
    _send(t)
    assert len(slow_calls) == before + 1  # nd6_resolve's step: STALE -> DELAY -> PROBE
    t.kernel.run(10)  # the probe is answered: REACHABLE again, fast again
    assert entry.state == nd6.REACHABLE
    _send(t, count=2)
    assert len(slow_calls) == before + 1


def test_deleted_neighbour_and_new_mac_are_seen_at_once(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    route = t.r.rt6.lookup(FAR)
    old = route.nh
    assert t.r.cmd(f"ndp -d {wip6.ntoa(GW)}").ok
    assert old.hdr is None  # out of the cache: the route's next hop is stale
    tap = Tap(t.r2_if)
    _send(t, count=2)  # held while ND resolves it again, then sent
    assert len(_to(FAR, tap.frames)) == 2
    _send(t)
    assert route.nh is not old and route.nh.hdr is not None
    new_mac = "02:00:00:00:aa:01"
    assert t.r.cmd(f"ifconfig {t.r2_if.name} ether {new_mac}").ok
    _send(t)
    assert _to(FAR, tap.frames)[-1][6:12] == bytes.fromhex(new_mac.replace(":", ""))
    assert route.nh.hdr[6:12] == t.r2_if.mac


def test_route_change_takes_the_new_gateway(slow_calls):
    t = _gateway_route()
    _send(t, count=2)
    route = t.r.rt6.lookup(FAR)
    assert route.nh is not None and route.nh.addr == GW
    # through h1 instead (back out the link it came on: a redirect, the slow path):
    # what matters is that the next packet goes there, not to the cached neighbour
    assert t.r.cmd("route change -inet6 2001:db8:9::/64 2001:db8:1::1").ok
    assert route.nh is None
    tap = Tap(t.r1_if)
    _send(t)
    assert len(_to(FAR, tap.frames)) == 1


def test_fragments_and_destination_options_are_passed_on_fast(slow_calls):
    """A router neither reassembles nor reads them (RFC 8200 4, 4.5): the fast path
    forwards each fragment and a packet with destination options as it is."""
    t = _gateway_route()
    _send(t, count=2)
    before = len(slow_calls)
    reassembled = t.h2.ip6.stats.reassembled
    forwarded = t.r.ip6.stats.forward
    _send(t, payload=b"f" * 3000)  # cut by h1 into 3 fragments (link MTU 1500)
    assert t.h1.ip6.stats.ofragments == 3
    assert t.r.ip6.stats.forward == forwarded + 3
    assert t.h2.ip6.stats.reassembled == reassembled + 1
    delivered = t.h2.ip6.stats.delivered
    dstopts = bytes((wip6.NXT_NONE, 0, 1, 4, 0, 0, 0, 0))  # PadN
    _send(t, nxt=wip6.NXT_DSTOPTS, payload=dstopts)
    assert t.h2.ip6.stats.delivered == delivered + 1
    assert len(slow_calls) == before


def test_a_vlan_taking_a_new_parent_rebuilds_its_neighbours_headers():
    """A VLAN has its parent's MAC: a new parent is a new link-level address, and both
    ARP's and ND's prebuilt headers (the fast paths send them) take it at once
    (Kernel.ifnet_lladdr, FreeBSD's iflladdr_event)."""
    from vimage.kernel import Kernel
    from vimage.wire import ipv4

    k = Kernel(clock="virtual", seed=6)
    a, b = k.create("a"), k.create("b")
    a1, b1 = k.epair(a)
    b1.move_to(b)
    a2, _c2 = k.epair(a)
    for vnet, end, n in ((a, a1, 1), (b, b1, 2)):
        assert vnet.cmd(f"ifconfig {end.name} up").ok
        assert vnet.cmd(f"ifconfig vlan0 create vlan 10 vlandev {end.name}").ok
        assert vnet.cmd(f"ifconfig vlan0 inet 10.10.0.{n}/24 up").ok
        assert vnet.cmd(f"ifconfig vlan0 inet6 2001:db8:10::{n}/64").ok
    assert a.cmd(f"ifconfig {a2.name} up").ok
    k.run(3)
    assert a.cmd("ping -c 1 10.10.0.2").ok and a.cmd("ping6 -c 1 2001:db8:10::2").ok
    vlan = a.ifaces["vlan0"]
    arp_entry = a.arp.table[ipv4.aton("10.10.0.2")]
    nd_entry = a.nd6.lookup(vlan, wip6.aton("2001:db8:10::2"))
    assert arp_entry.hdr[6:12] == nd_entry.hdr[6:12] == a1.mac
    assert a.cmd(f"ifconfig vlan0 vlan 10 vlandev {a2.name}").ok
    assert vlan.mac == a2.mac != a1.mac
    assert arp_entry.hdr[6:12] == nd_entry.hdr[6:12] == a2.mac
