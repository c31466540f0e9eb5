"""Neighbour discovery (RFC 4861 7.3 state machine, 7.2 resolution) in virtual time."""

from __future__ import annotations

import gc
import weakref

from vimage.kernel import Kernel
from vimage.netinet6 import in6
from vimage.netinet6.nd6 import DELAY, INCOMPLETE, PROBE, REACHABLE, STALE
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

from .conftest import A1, A2, DAD_DONE, Collector, Heard, echo, inject, link, pair, send


def test_resolution_and_the_state_machine():
    p = pair()
    nd6 = p.a.nd6
    send(p.a, A1, A2, 58, echo(1, 1, A1, A2))
    entry = nd6.lookup(p.ea, A2)
    assert entry.state == INCOMPLETE and len(entry.hold) == 1
    p.kernel.run(0.01)
    assert entry.state == REACHABLE and entry.mac == p.eb.mac and entry.hold is None
    assert p.b.icmp6.stats.reflect == 1  # the held packet went out on resolution
    # b learnt a from the NS's source link-layer address: STALE (RFC 4861 7.2.3), then
    # sending the reply moved it to DELAY
    assert nd6 is not p.b.nd6 and p.b.nd6.lookup(p.eb, A1).state == DELAY
    p.kernel.run(46)  # the reachable time (30 s times 0.5 .. 1.5) is over
    assert entry.state == STALE
    send(p.a, A1, A2, 58, echo(1, 2, A1, A2))
    assert entry.state == DELAY
    probes = p.b.icmp6.stats.inhist[w6.NEIGHBOR_SOLICIT]
    p.kernel.run(5.001)  # nd6_delay without confirmation: a unicast probe, answered at once
    assert entry.state == REACHABLE  # by a solicited NA
    assert p.b.icmp6.stats.inhist[w6.NEIGHBOR_SOLICIT] == probes + 1
    # the neighbour goes away: STALE, DELAY, PROBE x3, then gone
    p.eb.set_up(False)
    p.kernel.run(46)
    send(p.a, A1, A2, 58, echo(1, 3, A1, A2))
    p.kernel.run(5.001)
    assert entry.state == PROBE
    p.kernel.run(3.1)
    assert nd6.lookup(p.ea, A2) is None
    assert p.kernel.sched.pending_timers(p.a) == 0


def test_unresolved_neighbour_drops_what_waited_with_address_unreachable():
    p = pair()
    p.a.sysctl("net.inet6.icmp6.nd6_maxqueuelen", 2)
    gone = wip6.aton("2001:db8:1::77")
    heard = Heard(p.a)
    for seq in range(3):
        send(p.a, A1, gone, 58, echo(1, seq, A1, gone))
    entry = p.a.nd6.lookup(p.ea, gone)
    assert len(entry.hold) == 2 and p.a.ip6.stats.odropped == 1
    p.kernel.run(2.9)
    assert entry.asked == 3 and entry.state == INCOMPLETE
    p.kernel.run(0.2)
    assert p.a.nd6.lookup(p.ea, gone) is None
    unreach = heard.of_type(w6.DST_UNREACH)
    assert [m.code for m in unreach] == [w6.UNREACH_ADDR] * 2


def test_na_rules_override_and_unsolicited():
    p = pair()
    send(p.a, A1, A2, 58, echo(1, 1, A1, A2))
    p.kernel.run(0.01)
    entry = p.a.nd6.lookup(p.ea, A2)
    new_mac = bytes.fromhex("020000000777")
    opts = w6.opt_lladdr(w6.ND_OPT_TARGET_LINKADDR, new_mac)

    def na(flags: int) -> bytes:
        return wip6.build(A2, wip6.ALL_NODES, 58,
                          w6.build_na(flags, A2, opts, A2, wip6.ALL_NODES), hlim=255)

    inject(p.ea, na(0))  # no override, a different address: REACHABLE becomes STALE only
    assert (entry.mac, entry.state) == (p.eb.mac, STALE)
    inject(p.ea, na(w6.NA_OVERRIDE | w6.NA_ROUTER))  # override: the new address, still STALE
    assert (entry.mac, entry.state, entry.isrouter) == (new_mac, STALE, True)
    hlim_64 = bytearray(na(w6.NA_OVERRIDE))
    hlim_64[7] = 64
    inject(p.ea, bytes(hlim_64))  # RFC 4861 7.1.2: a hop limit other than 255 is refused
    assert p.a.icmp6.stats.badna == 1
    solicited_to_group = na(w6.NA_SOLICITED | w6.NA_OVERRIDE)
    inject(p.ea, solicited_to_group)
    assert p.a.icmp6.stats.badna == 2


def test_bad_ns_and_options_are_counted():
    p = pair()
    st = p.b.icmp6.stats

    def ns(src: int, options: bytes, target: int = A2) -> bytes:
        dst = wip6.solicited_node(A2)
        return wip6.build(src, dst, 58, w6.build_ns(target, options, src, dst), hlim=255)

    inject(p.eb, ns(A1, b"\x01\x00" + b"\0" * 6))  # zero-length option
    inject(p.eb, ns(0, w6.opt_lladdr(w6.ND_OPT_SOURCE_LINKADDR, p.ea.mac)))  # DAD with SLLA
    inject(p.eb, ns(A1, b"", wip6.aton("ff02::1")))  # multicast target
    p.kernel.run(0.01)
    assert (st.nd_badopt, st.badns) == (1, 2)
    assert p.b.nd6.lookup(p.eb, A1) is None
    assert p.kernel.sched.errors == 0


def test_neighbour_cache_is_bounded():
    p = pair()
    p.b.sysctl("net.inet6.icmp6.nd6_maxentries", 8)
    for i in range(50):
        src = wip6.aton(f"2001:db8:1::1:{i:x}")
        dst = wip6.solicited_node(A2)
        opts = w6.opt_lladdr(w6.ND_OPT_SOURCE_LINKADDR, bytes.fromhex(f"0200000001{i:02x}"))
        inject(p.eb, wip6.build(src, dst, 58, w6.build_ns(A2, opts, src, dst), hlim=255))
    p.kernel.run(0.01)
    assert len(in6.ifdata(p.eb).nd) == 8
    assert p.b.icmp6.stats.ndtablefull == 42


def test_ndp_tool():
    p = pair()
    send(p.a, A1, A2, 58, echo(1, 1, A1, A2))
    p.kernel.run(0.01)
    out = p.a.cmd("ndp -an").output.splitlines()
    assert out[0] == ("Neighbor                             Linklayer Address  Netif Expire    "
                      "S Flags")
    row = next(line for line in out if line.startswith("2001:db8:1::2 "))
    assert row.split()[1:3] == [p.eb.mac.hex(":"), "epair0a"]
    assert row.split()[4] == "R" and row.split()[3].endswith("s")
    own = next(line for line in out if line.startswith("2001:db8:1::1 "))
    assert own.split()[3:5] == ["permanent", "R"]
    ll = wip6.ntoa(wip6.LINK_LOCAL_PREFIX | wip6.eui64(p.ea.mac))
    assert any(line.startswith(f"{ll}%epair0a ") for line in out)
    res = p.a.cmd("ndp -s 2001:db8:1::9 02:00:00:00:00:09")
    assert res.ok, res.output
    assert "2001:db8:1::9" in p.a.cmd("ndp -a").output
    assert p.a.cmd("ndp 2001:db8:1::9").output.splitlines()[1].split()[3] == "permanent"
    assert p.a.cmd("ndp -d 2001:db8:1::2").output == "2001:db8:1::2 (2001:db8:1::2) deleted\n"
    assert p.a.cmd("ndp -c").ok
    assert p.a.nd6.lookup(p.ea, wip6.aton("2001:db8:1::9")) is not None  # static stays
    bad = p.a.cmd("ndp -d 2001:db8:1::2")
    assert bad.status == 1 and "cannot locate" in bad.output
    assert p.a.cmd("ndp -a -c").status == 64


def test_destroy_leaves_no_ipv6_state_behind():
    k = Kernel(clock="virtual", seed=5)
    a, b = k.create("a"), k.create("b")
    ea, eb = link(a, "2001:db8:1::1/64", b, "2001:db8:1::2/64")
    k.run(DAD_DONE)
    # a DAD timer running, a held packet, a reassembly queue, a listener
    ea.add_addr("2001:db8:1::5/64", family=10)
    send(a, A1, wip6.aton("2001:db8:1::77"), 58, echo(1, 1, A1, A2))
    frag = wip6.build_fragment(58, 0, True, 7) + b"\0" * 16
    inject(ea, wip6.build(A2, A1, wip6.NXT_FRAGMENT, frag))
    Heard(a)
    assert k.sched.pending_timers(a) >= 3
    assert a.ip6.reass is not None and a.ip6.reass.queues
    assert a.ip6.local[wip6.aton("2001:db8:1::5")].dad_timer is not None
    ref = weakref.ref(a)
    k.destroy("a")
    assert k.sched.pending_timers(a) == 0
    assert in6.addrs_data(ea) is None and ea.vnet is k.base
    assert a.ip6.local == {} and len(a.rt6) == 0 and a.icmp6.listeners == ()
    assert all(r.ifp.vnet is b for r in b.rt6.routes())
    k.run(DAD_DONE)
    del a
    gc.collect()
    assert ref() is None or ref().alive is False


def test_interface_moved_away_takes_its_ipv6_state():
    p = pair()
    send(p.a, A1, A2, 58, echo(1, 1, A1, A2))
    p.kernel.run(0.01)
    p.ea.move_to(p.kernel.base)
    assert A1 not in p.a.ip6.local and p.a.rt6.lookup(A2) is None
    assert p.kernel.sched.pending_timers(p.a) == 0
    wire = Collector()
    p.ea.peer = wire
    p.ea.set_up(True)  # in its new vnet: a fresh link-local address and DAD
    p.kernel.run(DAD_DONE)
    assert [ia.addr for ia in in6.addrs(p.ea)] == [
        wip6.LINK_LOCAL_PREFIX | wip6.eui64(p.ea.mac)]
    assert any(f[54] == w6.NEIGHBOR_SOLICIT for f in wire.frames if f[12:14] == b"\x86\xdd")


def test_no_solicitation_from_the_unspecified_address_while_every_source_is_tentative():
    """Resolving before DAD ended must not send an NS from :: (a DAD probe): the
    neighbour, whose address is tentative too, would take its address for a duplicate."""
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    ea, eb = k.epair()
    ea.move_to(a)
    eb.move_to(b)
    assert a.cmd(f"ifconfig {ea.name} inet6 2001:db8::1/64 up").ok
    assert b.cmd(f"ifconfig {eb.name} inet6 2001:db8::2/64 up").ok
    a.cmd("ping6 -c 1 -t 1 2001:db8::2")  # at once: every address of a is tentative
    k.run(3)
    assert "duplicated" not in b.cmd(f"ifconfig {eb.name}").output
    assert "duplicated" not in a.cmd(f"ifconfig {ea.name}").output
    assert a.cmd("ping6 -c 1 2001:db8::2").ok  # after DAD, resolution works
