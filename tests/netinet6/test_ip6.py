"""IPv6 input, output, forwarding and ICMPv6 in virtual time (RFC 8200, 4443)."""

from __future__ import annotations

from vimage.net import pfil
from vimage.net.route import RTF_STATIC
from vimage.netinet6 import in6
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

from .conftest import A1, A2, B2, DAD_DONE, R1, Collector, Heard, echo, inject, pair, routed, send


def test_addresses_routes_and_groups_when_interfaces_come_up():
    p = pair()
    lo = p.a.iface("lo0")
    assert [(ia.addr, ia.plen) for ia in in6.addrs(lo)] == [
        (1, 128), (wip6.LINK_LOCAL_PREFIX | 1, 64)]
    eui = wip6.LINK_LOCAL_PREFIX | wip6.eui64(p.ea.mac)
    assert [(ia.addr, ia.plen, ia.flags) for ia in in6.addrs(p.ea)] == [
        (A1, 64, 0), (eui, 64, 0)]
    rt6 = p.a.rt6
    assert rt6.get(A1, 128).ifp is lo and rt6.get(A1, 64).ifp is p.ea
    zoned = in6.zkey(eui, p.ea.index)
    assert rt6.get(zoned, 128).ifp is lo and rt6.get(zoned & ~(2**64 - 1), 64).ifp is p.ea
    groups = in6.ifdata(p.ea).groups
    assert set(groups) == {wip6.ALL_NODES, wip6.solicited_node(A1), wip6.solicited_node(eui)}


def test_addresses_are_tentative_until_dad_ends():
    p = pair()
    p.ea.add_addr("2001:db8:1::7/64", family=10)
    ia = p.a.ip6.local[wip6.aton("2001:db8:1::7")]
    assert ia.flags & in6.IN6_IFF_TENTATIVE
    request = wip6.build(A2, ia.addr, 58, echo(1, 1, A2, ia.addr))
    inject(p.ea, request)
    p.kernel.run(0.01)
    assert p.a.icmp6.stats.reflect == 0  # a tentative address is not ours yet
    p.kernel.run(DAD_DONE)
    assert ia.flags == 0
    inject(p.ea, request)
    p.kernel.run(0.01)
    assert p.a.icmp6.stats.reflect == 1


def test_duplicate_address_is_detected():
    p = pair()
    p.eb.add_addr("2001:db8:1::1/64", family=10)  # a's address, on b
    p.kernel.run(DAD_DONE)
    ia = p.b.ip6.local[A1]
    assert ia.flags & in6.IN6_IFF_DUPLICATED and not ia.flags & in6.IN6_IFF_TENTATIVE
    assert "inet6 2001:db8:1::1 prefixlen 64 duplicated" in p.b.cmd("ifconfig epair0b").output
    # the owner keeps it
    assert p.a.ip6.local[A1].flags == 0


def test_echo_through_loopback_and_to_own_addresses():
    p = pair()
    heard = Heard(p.a)
    before = p.ea.opackets
    for dst in (1, A1):
        send(p.a, dst, dst, 58, echo(7, dst & 0xFF, dst, dst))
    p.kernel.run(0.01)
    assert [m.seq for m in heard.of_type(w6.ECHO_REPLY)] == [1, 1]
    assert p.ea.opackets == before  # nothing went out on the link for them
    assert p.a.ip6.stats.delivered == 4  # two requests, two replies, through lo0


def test_ping6_across_a_router_and_hop_limit_exceeded():
    t = routed()
    res = t.h1.cmd("ping6 -c 3 2001:db8:2::2")
    assert res.status == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "PING6(104=40+8+56 bytes) 2001:db8:1::1 --> 2001:db8:2::2"
    assert lines[1].startswith("64 bytes from 2001:db8:2::2, icmp_seq=0 hlim=63 time=")
    assert lines[-2] == "3 packets transmitted, 3 packets received, 0.0% packet loss"
    assert lines[-1].startswith("round-trip min/avg/max/std-dev = ")
    assert t.r.ip6.stats.forward == 6
    res = t.h1.cmd("ping -6 -c 1 -m 1 2001:db8:2::2")
    assert res.status == 2
    assert "bytes from 2001:db8:1::ff: Time to live exceeded" in res.output
    assert t.r.icmp6.stats.outhist[w6.TIME_EXCEEDED] == 1


def test_forwarding_off_link_local_and_no_route():
    t = routed()
    t.r.sysctl("net.inet6.ip6.forwarding", 0)
    heard = Heard(t.h1)
    send(t.h1, A1, B2, 58, echo(1, 1, A1, B2))
    t.kernel.run(0.1)
    assert t.r.ip6.stats.cantforward == 1 and heard.msgs == []
    t.r.sysctl("net.inet6.ip6.forwarding", 1)
    unknown = wip6.aton("2001:db8:99::1")
    send(t.h1, A1, unknown, 58, echo(1, 2, A1, unknown))
    t.kernel.run(0.1)
    unreach = heard.of_type(w6.DST_UNREACH)
    assert [(m.code) for m in unreach] == [w6.UNREACH_NOROUTE]
    assert t.r.ip6.stats.noroute == 1


def test_unknown_next_header_gets_parameter_problem():
    p = pair()
    heard = Heard(p.a)
    send(p.a, A1, A2, 253, b"\0" * 8)
    p.kernel.run(0.01)
    (msg,) = heard.of_type(w6.PARAM_PROB)
    assert (msg.code, msg.rest) == (w6.PARAMPROB_NEXTHEADER, 6)
    # behind a destination options header, the pointer names that header's next header
    send(p.a, A1, A2, wip6.NXT_DSTOPTS, wip6.build_options_header(253, b"") + b"\0" * 8)
    p.kernel.run(0.01)
    assert heard.of_type(w6.PARAM_PROB)[1].rest == 40
    assert p.b.icmp6.stats.outhist[w6.PARAM_PROB] == 2


def _hbh(kind: int) -> bytes:
    return wip6.build_options_header(58, wip6.option(kind, b"\0\0")) + echo(9, kind, A1, A2)


def test_hop_by_hop_options_skip_discard_or_complain():
    p = pair()
    heard = Heard(p.a)
    send(p.a, A1, A2, 0, _hbh(0x1E))  # 00: skipped, the echo is answered
    p.kernel.run(0.01)
    assert [m.seq for m in heard.of_type(w6.ECHO_REPLY)] == [0x1E]
    send(p.a, A1, A2, 0, _hbh(0x5E))  # 01: discarded silently
    p.kernel.run(0.01)
    assert len(heard.msgs) == 1 and p.b.ip6.stats.badoptions == 1
    for kind in (0x9E, 0xDE):  # 10 and 11 (unicast): parameter problem at the option
        send(p.a, A1, A2, 0, _hbh(kind))
    p.kernel.run(0.01)
    probs = heard.of_type(w6.PARAM_PROB)
    assert [(m.code, m.rest) for m in probs] == [(w6.PARAMPROB_OPTION, 42)] * 2
    # a hop-by-hop header anywhere but first is an unrecognised next header
    send(p.a, A1, A2, wip6.NXT_DSTOPTS, wip6.build_options_header(0, b"") + _hbh(0x1E))
    p.kernel.run(0.01)
    assert (heard.of_type(w6.PARAM_PROB)[2].code, heard.of_type(w6.PARAM_PROB)[2].rest) == (
        w6.PARAMPROB_NEXTHEADER, 40)


def test_routing_header_type_0_is_refused():
    p = pair()
    heard = Heard(p.a)
    rh0 = wip6.build_routing(58, 0, 1, b"\0" * 4 + A1.to_bytes(16, "big"))
    send(p.a, A1, A2, wip6.NXT_ROUTING, rh0 + echo(1, 1, A1, A2))
    p.kernel.run(0.01)
    (msg,) = heard.of_type(w6.PARAM_PROB)
    assert (msg.code, msg.rest) == (w6.PARAMPROB_HEADER, 42)  # RFC 5095: the type field
    done = wip6.build_routing(58, 0, 0, b"\0" * 4 + A1.to_bytes(16, "big"))
    send(p.a, A1, A2, wip6.NXT_ROUTING, done + echo(1, 2, A1, A2))
    p.kernel.run(0.01)
    assert [m.seq for m in heard.of_type(w6.ECHO_REPLY)] == [2]  # segments left 0: ignored


def test_bad_headers_are_counted_and_dropped():
    p = pair()
    st = p.b.ip6.stats
    good = wip6.build(A1, A2, 58, echo(1, 1, A1, A2))
    inject(p.eb, good[:30])
    inject(p.eb, b"\x40" + good[1:])
    inject(p.eb, good[:-1])
    inject(p.eb, good[:8] + wip6.aton("ff02::1").to_bytes(16, "big") + good[24:])
    inject(p.eb, good[:8] + (1).to_bytes(16, "big") + good[24:])
    p.kernel.run(0.01)
    assert (st.toosmall, st.badvers, st.tooshort, st.badscope) == (1, 1, 1, 2)
    assert st.delivered == 0 and p.kernel.sched.errors == 0


def test_icmp6_error_rate_limit():
    p = pair()
    p.b.sysctl("net.inet6.icmp6.errppslimit", 2)
    for _ in range(5):
        send(p.a, A1, A2, 253, b"")
    p.kernel.run(0.01)
    st = p.b.icmp6.stats
    assert (st.error, st.toofreq, st.outhist[w6.PARAM_PROB]) == (5, 3, 2)
    p.kernel.run(1)
    send(p.a, A1, A2, 253, b"")
    p.kernel.run(0.01)
    assert st.outhist[w6.PARAM_PROB] == 3


def test_no_error_about_an_error_or_to_a_multicast_destination():
    p = pair()
    st = p.b.icmp6.stats
    err = w6.build(w6.DST_UNREACH, 0, 0, wip6.build(A2, A1, 17, b"\0" * 8), A1, A2)
    bad_opt = wip6.build_options_header(58, wip6.option(0x9E, b""))  # 10: would complain
    inject(p.eb, wip6.build(A1, A2, wip6.NXT_DSTOPTS, bad_opt + err))
    p.kernel.run(0.01)
    assert (st.error, st.canterror, st.outhist[w6.PARAM_PROB]) == (1, 1, 0)
    inject(p.eb, wip6.build(A1, wip6.ALL_NODES, 253, b""))  # unknown header, to a group
    p.kernel.run(0.01)
    assert (st.error, st.outhist[w6.PARAM_PROB]) == (2, 0)
    inject(p.eb, wip6.build(A1, A2, 253, b""))
    p.kernel.run(0.01)
    assert (st.error, st.outhist[w6.PARAM_PROB]) == (3, 1)


def test_packet_too_big_lowers_the_path_mtu():
    t = routed()
    t.r2_if.mtu = t.h2_if.mtu = 1400
    res = t.h1.cmd("ping6 -c 2 -s 1400 2001:db8:2::2")
    assert "Packet too big mtu = 1400" in res.output
    assert t.h1.icmp6.stats.pmtuchg == 1 and t.h1.ip6.pmtu[B2][0] == 1400
    assert t.r.ip6.stats.cantfrag == 1
    assert "2 packets transmitted, 1 packets received" in res.output
    assert t.h1.ip6.stats.fragmented == 1  # the second request, cut at the source
    # it expires after 10 minutes (RFC 8201 5.3)
    t.kernel.run(601)
    res = t.h1.cmd("ping6 -c 1 -s 1300 2001:db8:2::2")
    assert res.status == 0 and B2 not in t.h1.ip6.pmtu


def test_pfil_hooks_see_ipv6_packets():
    t = routed()
    seen: list[str] = []

    def hook(name):
        def fn(pkt, _ifp):
            seen.append(name)
            return pkt
        return fn

    for point in ("pfil_in", "pfil_fwd", "pfil_out"):
        setattr(t.r.ip6, point, (pfil.Hook(0, point, hook(point)),))
    assert t.h1.cmd("ping6 -c 1 2001:db8:2::2").ok
    assert seen.count("pfil_fwd") == 2 and seen.count("pfil_in") >= 2
    assert seen.count("pfil_out") >= 2
    t.r.ip6.pfil_fwd = (pfil.Hook(0, "drop", lambda pkt, ifp: None),)
    assert not t.h1.cmd("ping6 -c 1 2001:db8:2::2").ok


def test_source_address_selection():
    p = pair()
    p.ea.add_addr("2001:db8:1::100/64", family=10)
    p.ea.add_addr("2001:db8:77::1/64", family=10)
    p.kernel.run(DAD_DONE)
    ip6 = p.a.ip6
    assert ip6.select_source(A2) == wip6.aton("2001:db8:1::1")  # rule 8: longest match
    assert ip6.select_source(wip6.aton("2001:db8:77::9")) == wip6.aton("2001:db8:77::1")
    assert ip6.select_source(wip6.aton("2001:db8:1::100")) == wip6.aton("2001:db8:1::100")
    ll = wip6.aton("fe80::99")
    eui = wip6.LINK_LOCAL_PREFIX | wip6.eui64(p.ea.mac)
    assert ip6.select_source(ll, p.ea) == eui  # rule 2: link scope for a link-local peer
    assert ip6.select_source(wip6.aton("ff02::1"), p.ea) == eui
    in6.in6_add_addr(p.ea, wip6.aton("2001:db8:1::5"), 64).flags |= in6.IN6_IFF_DEPRECATED
    p.kernel.run(DAD_DONE)
    ip6.local[wip6.aton("2001:db8:1::5")].flags = in6.IN6_IFF_DEPRECATED
    assert ip6.select_source(wip6.aton("2001:db8:1::4")) != wip6.aton("2001:db8:1::5")  # 3


def test_multicast_membership_and_mldv2_join_report():
    p = pair()
    wire = Collector()
    p.ea.peer = wire
    p.ea.add_addr("2001:db8:1::42/64", family=10)
    p.kernel.run(0.01)
    from scapy.layers.inet6 import IPv6

    reports = [IPv6(pkt) for pkt in wire.ipv6() if pkt[40:41] == b"\x3a"
               and pkt[48] == w6.MLDV2_REPORT]
    assert len(reports) == 1
    report = reports[0]
    assert (report.dst, report.hlim, report.nh) == ("ff02::16", 1, 0)
    record = report.payload.payload.records[0]
    assert (record.rtype, record.dst) == (4, "ff02::1:ff00:42")
    # a group we did not join is not delivered
    p.ea.peer = p.eb
    notmember = p.a.ip6.stats.notmember
    send(p.b, A2, wip6.aton("ff02::1234"), 58, echo(1, 1, A2, wip6.aton("ff02::1234")),
         ifp=p.eb)
    send(p.b, A2, wip6.ALL_NODES, 58, echo(1, 2, A2, wip6.ALL_NODES), ifp=p.eb)
    p.kernel.run(0.01)
    assert p.a.ip6.stats.notmember == notmember + 1 and p.a.icmp6.stats.reflect == 1


def test_route_add_inet6_through_a_link_local_gateway():
    t = routed()
    route = t.h1.rt6.lookup(B2)
    assert route.plen == 0 and route.ifp is t.h1_if and route.flags & RTF_STATIC
    assert wip6.is_link_local(route.gateway)
    assert t.h1.ip6.select_source(B2) == A1 and R1 != A1


def test_forwarding_out_an_interface_without_ipv6_data():
    t = routed()
    lone, far = t.kernel.epair()
    lone.move_to(t.r)
    assert t.r.cmd("ifconfig epair2a inet6 -auto_linklocal up").ok
    lone.afdata = None  # no IPv6 data on it at all
    assert t.r.cmd("route -6 add 2001:db8:42::/64 -interface epair2a").ok
    dst = wip6.aton("2001:db8:42::1")
    send(t.h1, A1, dst, 58, echo(1, 1, A1, dst))
    t.kernel.run(0.01)
    assert t.r.ip6.stats.forward == 1 and t.kernel.sched.errors == 0
