"""Router advertisements, the router and prefix lists and SLAAC (RFC 4861 6.3.4, 6.3.7;
RFC 4862 5.5; RFC 4191), in virtual time, with RAs made by hand on the router's side."""

from __future__ import annotations

from socket import AF_INET6

from tests.netinet6.conftest import DAD_DONE, link_local

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.netinet6 import in6, nd6_rtr
from vimage.vnet import Vnet
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

P1 = wip6.aton("2001:db8:1::")
P2 = wip6.aton("2001:db8:2::")
INF = nd6_rtr.INFINITE


def setup(accept: bool = True, seed: int = 1) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet]:
    """r -- h on one link; h accepts RAs; both ends up, DAD done."""
    k = Kernel(clock="virtual", seed=seed)
    r, h = k.create("r"), k.create("h")
    er, eh = k.epair()
    er.move_to(r)
    eh.move_to(h)
    r.sysctl("net.inet6.ip6.forwarding", 1)
    in6.join(er, wip6.ALL_ROUTERS)  # so r hears solicitations
    if accept:
        assert h.cmd("ifconfig epair0b inet6 accept_rtadv").ok
    er.set_up(True)
    eh.set_up(True)
    k.run(DAD_DONE)
    return k, r, h, er, eh


def ra(r: Vnet, er: Ifnet, *, lifetime: int = 1800, flags: int = 0,
       prefixes: tuple[tuple[int, int, int, int, int], ...] = ((P1, 64, 0xC0, INF, INF),),
       mtu: int = 0, reachable: int = 0, retrans: int = 0, src: int | None = None) -> None:
    """Send an RA from r's link-local address to all nodes."""
    src = link_local(er) if src is None else src
    assert er.mac is not None
    opts = w6.opt_lladdr(w6.ND_OPT_SOURCE_LINKADDR, er.mac)
    if mtu:
        opts += w6.opt_mtu(mtu)
    for prefix, plen, pflags, valid, preferred in prefixes:
        opts += w6.opt_prefix(prefix, plen, pflags, valid, preferred)
    msg = w6.build_ra(64, flags, lifetime, reachable, retrans, opts, src, wip6.ALL_NODES)
    with r.kernel.sched.cond:
        r.icmp6.send_link(er, wip6.multicast_mac(wip6.ALL_NODES), src, wip6.ALL_NODES, msg)


def autoconf(ifp: Ifnet) -> list[in6.In6Addr]:
    return [ia for ia in in6.addrs(ifp) if ia.flags & in6.IN6_IFF_AUTOCONF]


def default_route(h: Vnet):  # type: ignore[no-untyped-def]
    return h.rt6.get(0, 0)


def test_router_solicitations_when_the_interface_comes_up():
    k, r, h, er, eh = setup()
    k.run(15)
    # RFC 4861 6.3.7: MAX_RTR_SOLICITATIONS (3), RTR_SOLICITATION_INTERVAL apart
    assert r.icmp6.stats.inhist[w6.ROUTER_SOLICIT] == 3
    k2, r2, _, _, _ = setup(accept=False)
    k2.run(15)
    assert r2.icmp6.stats.inhist[w6.ROUTER_SOLICIT] == 0


def test_an_advertisement_stops_the_solicitations():
    k, r, h, er, eh = setup()
    ra(r, er)
    k.run(15)
    assert r.icmp6.stats.inhist[w6.ROUTER_SOLICIT] <= 1


def test_ra_gives_default_router_prefix_and_address():
    k, r, h, er, eh = setup()
    ra(r, er)
    k.run(0.1)
    route = default_route(h)
    assert route is not None and route.gateway == link_local(er) and route.ifp is eh
    assert h.rt6.get(P1, 64) is not None
    (ia,) = autoconf(eh)
    assert ia.addr == P1 | wip6.eui64(eh.mac)
    assert ia.flags & in6.IN6_IFF_TENTATIVE  # DAD runs on it (RFC 4862 5.4)
    k.run(DAD_DONE)
    assert ia.ready
    res = h.cmd(f"ping6 -c 1 {wip6.ntoa(wip6.aton('2001:db8:1::1'))}")
    assert "1 packets received" not in res.output  # nobody has ::1 yet
    r.cmd("ifconfig epair0a inet6 2001:db8:1::1/64")
    k.run(DAD_DONE)
    assert "1 packets received" in h.cmd("ping6 -c 1 2001:db8:1::1").output
    out = h.cmd("ifconfig epair0b").output
    assert f"inet6 {wip6.ntoa(ia.addr)} prefixlen 64 autoconf" in out
    assert "ACCEPT_RTADV" in out


def test_ignored_without_accept_rtadv_or_when_forwarding():
    k, r, h, er, eh = setup(accept=False)
    ra(r, er)
    k.run(DAD_DONE)
    assert default_route(h) is None and not autoconf(eh)
    k, r, h, er, eh = setup()
    h.sysctl("net.inet6.ip6.forwarding", 1)
    ra(r, er)
    k.run(DAD_DONE)
    assert default_route(h) is None and not autoconf(eh)


def test_accept_rtadv_sysctl_is_the_default_for_new_interfaces():
    k = Kernel(clock="virtual", seed=1)
    h = k.create("h")
    h.sysctl("net.inet6.ip6.accept_rtadv", 1)
    a, _ = k.epair()
    a.move_to(h)
    assert in6.ifdata(a).nd_flags & in6.ND6_IFF_ACCEPT_RTADV
    assert h.cmd("ifconfig epair0a inet6 -accept_rtadv").ok
    assert not in6.ifdata(a).nd_flags & in6.ND6_IFF_ACCEPT_RTADV


def test_lifetimes_deprecate_then_remove_the_address():
    k, r, h, er, eh = setup()
    h.cmd("ifconfig epair0b inet6 2001:db8:2::5/64")
    ra(r, er, prefixes=((P1, 64, 0xC0, 30, 15),))
    k.run(DAD_DONE)
    (ia,) = autoconf(eh)
    k.run(9)
    assert not ia.flags & in6.IN6_IFF_DEPRECATED
    with k.sched.cond:
        assert h.ip6.select_source(wip6.aton("2001:db8:1::99"), eh) == ia.addr  # rule 8
    k.run(5)  # past the preferred lifetime
    assert ia.flags & in6.IN6_IFF_DEPRECATED
    with k.sched.cond:
        assert h.ip6.select_source(wip6.aton("2001:db8:1::99"), eh) != ia.addr  # rule 3
    assert "deprecated" in h.cmd("ifconfig epair0b").output
    k.run(15)  # past the valid lifetime
    assert not autoconf(eh)
    assert h.ip6.local.get(ia.addr) is None
    assert h.rt6.get(P1, 64) is None  # the on-link prefix expired too


def test_a_new_preferred_lifetime_undeprecates():
    k, r, h, er, eh = setup()
    ra(r, er, prefixes=((P1, 64, 0xC0, 100, 5),))
    k.run(6)
    (ia,) = autoconf(eh)
    assert ia.flags & in6.IN6_IFF_DEPRECATED
    ra(r, er, prefixes=((P1, 64, 0xC0, 100, 50),))
    k.run(0.1)
    assert not ia.flags & in6.IN6_IFF_DEPRECATED


def test_two_hour_rule():
    k, r, h, er, eh = setup()
    ra(r, er, prefixes=((P1, 64, 0xC0, 3 * 3600, 60),))
    k.run(DAD_DONE)
    (ia,) = autoconf(eh)
    start = k.sched.now_ns()
    ra(r, er, prefixes=((P1, 64, 0xC0, 30, 20),))  # a spoofed short lifetime
    k.run(0.1)
    left = (ia.vexpire_ns - start) // 10**9
    assert 7199 <= left <= 7200  # cut to two hours, not to 30 seconds (RFC 4862 5.5.3 e)
    ra(r, er, prefixes=((P1, 64, 0xC0, 4 * 3600, 60),))  # longer than two hours: taken
    k.run(0.1)
    assert (ia.vexpire_ns - start) // 10**9 >= 4 * 3600
    k.run(2 * 3600)
    assert ia in in6.addrs(eh)
    k.run(2 * 3600 + 1)
    assert ia not in in6.addrs(eh)


def test_prefix_rules_ignored_options():
    k, r, h, er, eh = setup()
    ra(r, er, prefixes=(
        (wip6.LINK_LOCAL_PREFIX, 64, 0xC0, INF, INF),  # link-local: ignored
        (P1, 64, 0xC0, 10, 20),  # preferred > valid: ignored
        (P2, 48, 0xC0, INF, INF),  # on-link, but not 64 bits for an interface id
    ))
    k.run(DAD_DONE)
    assert not autoconf(eh)
    assert h.rt6.get(P1, 64) is None
    assert h.rt6.get(P2, 48) is not None


def test_router_lifetime_expiry_and_zero():
    k, r, h, er, eh = setup()
    ra(r, er, lifetime=30)
    k.run(29)
    assert default_route(h) is not None
    k.run(2)
    assert default_route(h) is None
    ra(r, er, lifetime=30)
    k.run(1)
    assert default_route(h) is not None
    ra(r, er, lifetime=0)  # RFC 4861 6.3.4: zero removes it at once
    k.run(0.1)
    assert default_route(h) is None and not h.nd6.rtr.routers


def test_router_preference_chooses_the_default():
    k, r, h, er, eh = setup()
    low = wip6.aton("fe80::aa")
    high = wip6.aton("fe80::bb")
    ra(r, er, flags=nd6_rtr.PREF_LOW << 3, src=low)
    ra(r, er, flags=nd6_rtr.PREF_HIGH << 3, src=high)
    k.run(0.1)
    assert default_route(h).gateway == high
    assert "high" in h.cmd("ndp -r").output
    ra(r, er, lifetime=0, src=high)
    k.run(0.1)
    assert default_route(h).gateway == low


def test_a_static_default_route_is_left_alone():
    k, r, h, er, eh = setup()
    assert h.cmd("route add -inet6 default fe80::99%epair0b").ok
    ra(r, er)
    k.run(0.1)
    assert default_route(h).gateway == wip6.aton("fe80::99")
    assert h.nd6.rtr.routers


def test_mtu_reachable_and_retrans_options():
    k, r, h, er, eh = setup()
    ra(r, er, mtu=1400, reachable=20000, retrans=2000)
    ra(r, er, mtu=1000)  # below the IPv6 minimum: ignored
    k.run(0.1)
    info = h.nd6.rtr.info(eh)
    assert h.nd6.rtr.link_mtu(eh) == 1400
    assert info.basereachable == 20000 and info.retrans == 2000
    out = h.cmd("ndp -i epair0b").output
    assert "linkmtu=1400" in out and "basereachable=20s0ms" in out


def test_ra_learns_the_router_link_address():
    k, r, h, er, eh = setup()
    ra(r, er)
    k.run(0.1)
    entry = h.nd6.lookup(eh, link_local(er))
    assert entry is not None and entry.mac == er.mac and entry.isrouter


def test_malformed_ra_counted():
    k, r, h, er, eh = setup()
    src = link_local(er)
    bad_opt = w6.build_ra(64, 0, 1800, 0, 0, b"\x03\x00" + b"\x00" * 6, src, wip6.ALL_NODES)
    global_src = w6.build_ra(64, 0, 1800, 0, 0, b"", P1 | 1, wip6.ALL_NODES)
    with k.sched.cond:
        r.icmp6.send_link(er, wip6.multicast_mac(wip6.ALL_NODES), src, wip6.ALL_NODES,
                          bad_opt)
        r.icmp6.send_link(er, wip6.multicast_mac(wip6.ALL_NODES), src, wip6.ALL_NODES,
                          bad_opt, hlim=64)
    k.run(0.1)
    st = h.icmp6.stats
    assert st.nd_badopt == 1 and st.badra == 1
    assert default_route(h) is None
    assert global_src  # built only to show a global source would be refused (6.1.2)


def test_ndp_r_and_p():
    k, r, h, er, eh = setup()
    ra(r, er, lifetime=1800, prefixes=((P1, 64, 0xC0, 2592000, 604800),))
    k.run(DAD_DONE)
    routers = h.cmd("ndp -r").output
    assert f"{wip6.ntoa(link_local(er))}%epair0b if=epair0b, flags=, pref=medium" in routers
    assert "pref=medium" in routers and "expire=29m" in routers
    prefixes = h.cmd("ndp -p").output
    assert "2001:db8:1::/64 if=epair0b" in prefixes
    assert "flags=LAO" in prefixes
    assert "vltime=2592000, pltime=604800" in prefixes
    assert f"    {wip6.ntoa(link_local(er))}%epair0b (stale)" in prefixes


def test_destroy_leaves_no_router_state():
    k, r, h, er, eh = setup()
    ra(r, er, prefixes=((P1, 64, 0xC0, 100, 50),))
    assert r.cmd("rtadvd epair0a").ok
    k.run(DAD_DONE)
    assert k.sched.pending_timers(h) > 0
    k.destroy("h")
    assert k.sched.pending_timers(h) == 0
    k.destroy("r")
    assert k.sched.pending_timers(r) == 0
    assert AF_INET6


def test_advertised_retrans_and_reachable_times_drive_nud():
    k, r, h, er, eh = setup()
    ra(r, er, reachable=4000, retrans=3000)
    k.run(DAD_DONE)
    target = wip6.aton("2001:db8:1::99")
    with k.sched.cond:
        h.nd6.output(eh, b"\x60" + bytes(39), target)  # an INCOMPLETE entry: NS sent
    entry = h.nd6.lookup(eh, target)
    assert entry is not None
    assert entry.expire_ns - k.sched.now_ns() == 3000 * 10**6  # the link's retrans timer
    with k.sched.cond:
        reach = {h.nd6.reachable_ns(eh) for _ in range(50)}
    assert all(2000 * 10**6 <= t < 6000 * 10**6 for t in reach)  # 0.5 .. 1.5 of 4 s


def test_garbage_router_messages_are_counted_never_raise():
    """Random RA and redirect bodies (hop limit 255, link-local source, good checksum):
    counted or ignored, never an exception out of the kernel loop."""
    import random

    from tests.netinet6.conftest import inject

    k, r, h, er, eh = setup()
    rng = random.Random(11)
    src = link_local(er)
    me = link_local(eh)
    for i in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120)))
        if rng.random() < 0.5:  # well-formed option headers with random contents
            body = body[:8] + bytes((3, 4)) + bytes(rng.randrange(256) for _ in range(30))
        type_ = (w6.ROUTER_ADVERT, w6.REDIRECT, w6.ROUTER_SOLICIT)[i % 3]
        msg = w6.build(type_, 0, rng.getrandbits(32), body, src, me)
        inject(eh, wip6.build(src, me, 58, msg, hlim=255))
    k.run(1)
    assert k.sched.errors == 0
    assert len(h.nd6.rtr.routers) <= nd6_rtr.MAX_ROUTERS
    assert len(h.nd6.rtr.prefixes) <= nd6_rtr.MAX_PREFIXES
