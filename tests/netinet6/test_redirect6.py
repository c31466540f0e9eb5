"""ICMPv6 redirects (RFC 4861 8; FreeBSD ip6_forward's icmp6_redirect_output and
icmp6_redirect_input): a router forwarding a packet back out the link it came on
tells the host the better first hop; the host installs a host route."""

from __future__ import annotations

from tests.netinet6.conftest import DAD_DONE, Heard, inject, link_local

from vimage.kernel import Kernel
from vimage.net.route import RTF_DYNAMIC, RTF_GATEWAY
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

FAR = wip6.aton("2001:db8:9::1")


def ok(vnet, line):  # type: ignore[no-untyped-def]
    res = vnet.cmd(line)
    assert res.ok, f"{line}: {res.output}"
    return res.output


def shared_link(seed: int = 1):  # type: ignore[no-untyped-def]
    """h, r and r2 on one hub (2001:db8:1::/64); r2 also has 2001:db8:9::/64 behind it
    (a lo address). h's default router is r; r routes 2001:db8:9::/64 through r2."""
    k = Kernel(clock="virtual", seed=seed)
    sw = k.create("sw")
    ok(sw, "ifconfig hub create")
    nodes = {}
    for i, name in enumerate(("h", "r", "r2")):
        vnet = k.create(name)
        a, b = k.epair(sw)
        b.move_to(vnet)
        ok(vnet, f"ifconfig {b.name} inet6 2001:db8:1::{i + 1}/64 up")
        ok(sw, f"ifconfig {a.name} up")
        ok(sw, f"ifconfig hub0 addm {a.name}")
        nodes[name] = (vnet, b)
    ok(sw, "ifconfig hub0 up")
    k.run(DAD_DONE)
    (h, h_if), (r, r_if), (r2, r2_if) = nodes["h"], nodes["r"], nodes["r2"]
    r.sysctl("net.inet6.ip6.forwarding", 1)
    r2.sysctl("net.inet6.ip6.forwarding", 1)
    ok(r2, "ifconfig lo0 inet6 2001:db8:9::1/64")
    ok(h, f"route add -inet6 default {wip6.ntoa(link_local(r_if))}%{h_if.name}")
    ok(r, f"route add -inet6 2001:db8:9::/64 {wip6.ntoa(link_local(r2_if))}%{r_if.name}")
    ok(r2, f"route add -inet6 default {wip6.ntoa(link_local(r_if))}%{r2_if.name}")
    return k, h, r, r2, h_if, r_if, r2_if


def test_router_sends_redirect_and_host_installs_a_host_route():
    k, h, r, r2, h_if, r_if, r2_if = shared_link()
    assert "1 packets received" in ok(h, "ping6 -c 1 2001:db8:9::1")  # forwarded anyway
    assert r.ip6.stats.redirectsent == 1
    route = h.rt6.get(FAR, 128)
    assert route is not None
    assert route.flags & RTF_GATEWAY and route.flags & RTF_DYNAMIC
    assert route.gateway == link_local(r2_if) and route.ifp is h_if
    forwarded = r.ip6.stats.forward
    assert "1 packets received" in ok(h, "ping6 -c 1 2001:db8:9::1")
    assert r.ip6.stats.forward == forwarded  # now straight to r2
    entry = h.nd6.lookup(h_if, link_local(r2_if))
    assert entry is not None and entry.mac == r2_if.mac
    assert "\t1 redirect sent\n" in ok(r, "netstat -s -p ip6")  # inet6.c: redirect%s
    # the dynamic route expires (icmp6_redirtimeout)
    k.run(601)
    assert h.rt6.get(FAR, 128) is None


def test_no_redirect_when_disabled():
    k, h, r, r2, h_if, r_if, r2_if = shared_link()
    r.sysctl("net.inet6.ip6.redirect", 0)
    assert "1 packets received" in ok(h, "ping6 -c 1 2001:db8:9::1")
    assert r.ip6.stats.redirectsent == 0
    assert h.rt6.get(FAR, 128) is None


def test_host_ignores_redirect_when_disabled_or_from_another_router():
    k, h, r, r2, h_if, r_if, r2_if = shared_link()
    h.sysctl("net.inet6.icmp6.rediraccept", 0)
    ok(h, "ping6 -c 1 2001:db8:9::1")
    assert r.ip6.stats.redirectsent == 1 and h.rt6.get(FAR, 128) is None
    # a redirect from a node that is not our first hop is refused (RFC 4861 8.1)
    h.sysctl("net.inet6.icmp6.rediraccept", 1)
    bad = h.icmp6.stats.badredirect
    src = link_local(r2_if)
    target = wip6.aton("fe80::66")
    me = link_local(h_if)
    msg = w6.build_redirect(target, wip6.aton("2001:db8:9::2"), b"", src, me)
    inject(h_if, wip6.build(src, me, 58, msg, hlim=255))
    k.run(0.1)
    assert h.icmp6.stats.badredirect == bad + 1
    assert h.rt6.get(wip6.aton("2001:db8:9::2"), 128) is None
    # hop limit below 255: invalid
    src = link_local(r_if)
    msg = w6.build_redirect(target, wip6.aton("2001:db8:9::3"), b"", src, me)
    inject(h_if, wip6.build(src, me, 58, msg, hlim=64))
    k.run(0.1)
    assert h.icmp6.stats.badredirect == bad + 2


def test_onlink_redirect_target_is_the_destination():
    k, h, r, r2, h_if, r_if, r2_if = shared_link()
    # h thinks 2001:db8:1::3 (r2) is behind r: a /128 through r
    h.cmd("ifconfig epair0b inet6 2001:db8:1::1/64 delete")
    ok(h, "ifconfig epair0b inet6 2001:db8:5::1/64")
    ok(r, "ifconfig epair1b inet6 2001:db8:5::ff/64 alias")
    k.run(DAD_DONE)
    heard = Heard(h)
    ok(h, "ping6 -c 1 2001:db8:1::3")
    assert r.ip6.stats.redirectsent >= 1  # (r2's reply goes back through r too)
    route = h.rt6.get(wip6.aton("2001:db8:1::3"), 128)
    assert route is not None and not route.flags & RTF_GATEWAY and route.ifp is h_if
    assert heard.of_type(w6.ECHO_REPLY)
