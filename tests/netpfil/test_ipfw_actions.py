"""ipfw actions, rule by rule, on forwarded traffic (router r between hosts a and b) and
on a host's own input and output; counters exact."""

from __future__ import annotations

from vimage.wire.ipv4 import PROTO_ICMP

from .conftest import RA, B, Trio

ECHO_BYTES = 20 + 8 + 8  # an echo with 8 bytes of data, as Trio.ping sends it


def test_allow_and_deny_forwarded_icmp_with_exact_counters(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 allow icmp from any to any icmptypes 0",
         "add 200 count icmp from any to any",
         "add 300 allow icmp from any to any icmptypes 8")
    assert t.ping(t.a, B)
    assert t.ping(t.a, B, seq=2)
    r100, r200, r300 = t.r.ipfw.rules[:3]
    # each echo is seen at in and at out, each reply too: FreeBSD's ipfw sees both passes
    assert (r100.pcnt, r100.bcnt) == (4, 4 * ECHO_BYTES)
    assert (r200.pcnt, r300.pcnt) == (4, 4)
    assert r300.bcnt == 4 * ECHO_BYTES
    t.fw(t.r, "add 150 deny icmp from any to any icmptypes 8")
    assert not t.ping(t.a, B, seq=3)
    assert t.r.ipfw.rules[1].num == 150 and t.r.ipfw.rules[1].pcnt == 1
    assert t.b.icmp.stats.inhist[8] == 2  # the third echo never reached b


def test_default_rule_denies_and_default_to_accept(trio: Trio):
    t = trio
    # rule 1: the links' IPv6 chatter (ND, MLD) passes, these counts are IPv4's
    t.fw(t.r, "add 1 allow ip6 from any to any", "add 100 count ip from any to any")
    assert not t.ping(t.a, B)
    assert t.r.ipfw.rules[-1].pcnt == 1  # the echo, denied at in by 65535
    fresh = t.k.create("fresh")
    assert fresh.cmd("sysctl net.inet.ip.fw.default_to_accept=1").ok
    fresh.cmd("ipfw -q add 100 count ip from any to any")
    assert fresh.cmd("ipfw list 65535").output == "65535 allow ip from any to any\n"
    res = fresh.cmd("sysctl net.inet.ip.fw.default_to_accept=0")  # read at start only
    assert not res.ok and "read-only" in res.output


def test_reset_sends_rst_and_refuses_the_connection(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 reset tcp from any to any 80", "add 200 allow ip from any to any")
    assert t.tcp(t.a, t.b, B, 80) == "refused"
    assert t.r.tcp.stats.resets_sent == 1
    assert t.tcp(t.a, t.b, B, 81) == "ok"


def test_reject_and_unreach_send_icmp_errors(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 reject icmp from any to any icmptypes 8",
         "add 200 unreach port tcp from any to any 80",
         "add 300 unreach net udp from any to any", "add 400 allow ip from any to any")
    assert t.icmp_error(t.a, B) == (3, 1)  # reject = unreach host
    assert t.tcp(t.a, t.b, B, 80) == "refused"  # port unreachable refuses a connect
    assert not t.udp(t.a, t.b, B)
    assert t.a.icmp.stats.inhist[3] == 3
    assert t.r.icmp.stats.outhist[3] == 3


def test_no_icmp_error_about_an_icmp_error_or_for_reset_on_udp(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 reject icmp from any to any icmptypes 3",
         "add 200 reset udp from any to any", "add 300 allow ip from any to any")
    assert not t.udp(t.a, t.b, B)  # reset on UDP drops without an answer
    assert t.r.icmp.stats.outhist[3] == 0 and t.r.tcp.stats.resets_sent == 0


def test_count_skipto_call_return(trio: Trio):
    t = trio
    t.fw(t.r, "add 1 allow ip6 from any to any",
         "add 100 count icmp from any to any", "add 110 skipto 300 icmp from any to any",
         "add 200 deny ip from any to any", "add 300 call 1000 icmp from any to any",
         "add 310 allow ip from any to any",
         "add 1000 count icmp from any to any", "add 1010 return ip from any to any",
         "add 1020 deny ip from any to any")
    assert t.ping(t.a, B)
    rules = {r.num: r.pcnt for r in t.r.ipfw.rules}
    assert rules[100] == rules[110] == rules[300] == rules[1000] == rules[1010] == 4
    assert rules[200] == 0 and rules[1020] == 0 and rules[310] == 4


def test_skipto_backwards_goes_to_next_rule_and_return_without_call(trio: Trio):
    t = trio
    t.fw(t.r, "add 1 allow ip6 from any to any",
         "add 100 count ip from any to any", "add 200 skipto 100 ip from any to any",
         "add 300 return ip from any to any", "add 400 allow ip from any to any")
    assert t.ping(t.a, B)
    assert [r.pcnt for r in t.r.ipfw.rules[1:5]] == [4, 4, 4, 4]


def test_tag_untag_tagged(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count tag 5 icmp from any to any icmptypes 8",
         "add 200 deny ip from any to any tagged 5",
         "add 300 allow ip from any to any")
    assert not t.ping(t.a, B)
    t.fw(t.r, "add 150 count untag 5 ip from any to any")
    assert t.ping(t.a, B, seq=2)


def test_setfib_is_checked_against_net_fibs(trio: Trio):
    t = trio
    assert t.r.cmd("ipfw -q add 100 setfib 0 ip4 from any to any").ok
    res = t.r.cmd("ipfw add 110 setfib 1 ip from any to any")
    assert res.status == 65 and "fib" in res.output
    t.fw(t.r, "add 200 allow ip from any to any")
    assert t.ping(t.a, B)  # setfib goes on to the next rule
    assert t.r.ipfw.rules[0].pcnt == 4


def test_fwd_reroutes_forwarded_packets(trio: Trio):
    t = trio
    # a third host c behind r; r forwards what a sends to b's address on to c instead
    from vimage.topo import connect

    c = t.k.create("c")
    connect(t.r, "10.0.2.1/24", c, "10.0.2.2/24")
    c.cmd("route add default 10.0.2.1")
    c.cmd("ifconfig lo0 alias 10.0.1.2/32")  # c answers for b's address
    t.fw(t.r, "add 100 fwd 10.0.2.2 icmp from 10.0.0.1 to 10.0.1.2 in recv epair0b",
         "add 200 allow ip from any to any")
    assert t.ping(t.a, B)
    assert c.icmp.stats.inhist[8] == 1 and t.b.icmp.stats.inhist[8] == 0
    assert t.r.ipfw.rules[0].pcnt == 1


def test_fwd_on_output_of_a_host(trio: Trio):
    t = trio
    # a's route to 192.0.2.0/24 names a gateway that does not exist; fwd on a's output
    # sends the datagram to the router instead, which forwards it by its default route
    t.fw(t.a, "add 100 fwd 10.0.0.2 udp from any to 192.0.2.1 out",
         "add 200 allow ip from any to any")
    t.a.cmd("route add 192.0.2.0/24 10.0.0.99")  # the route says a hop that does not exist
    s = t.a.socket(2, 2)
    s.sendto(b"x", ("192.0.2.1", 9))
    t.k.run(2)
    assert t.a.ipfw.rules[0].pcnt == 1
    assert t.r.ip.stats.total == 1 and t.r.ip.stats.forward == 1
    assert t.b.ip.stats.total == 1


def test_prob_matches_a_share_deterministically(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 prob 0.5 count icmp from any to any icmptypes 8 in",
         "add 200 allow ip from any to any")
    for seq in range(200):
        assert t.ping(t.a, B, seq=seq)
    hits = t.r.ipfw.rules[0].pcnt
    assert 70 < hits < 130
    assert t.r.cmd("ipfw list 100").output.startswith("00100 prob 0.500000 count icmp")


def test_unreach6_and_ip6_never_match_ipv4(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 deny ip6 from any to any", "add 110 deny ipv6-icmp from any to any",
         "add 120 deny ip from me6 to any", "add 200 count ip from any to any",
         "add 300 allow ip from any to any")
    echoes = t.b.icmp.stats.inhist[8]
    assert t.ping(t.a, B)  # (the links' IPv6 chatter, ND and MLD, meets rules 100-120)
    assert t.b.icmp.stats.inhist[8] == echoes + 1
    t.fw(t.r, "add 50 unreach6 port icmp from any to any")  # on IPv4: dropped
    assert not t.ping(t.a, B, seq=2)


def test_host_in_and_out_rules(trio: Trio):
    t = trio
    # on host b itself: echoes in, replies out
    t.fw(t.b, "add 100 allow icmp from any to me in icmptypes 8",
         "add 200 deny icmp from me to any out icmptypes 0")
    assert not t.ping(t.a, B)
    assert t.b.ipfw.rules[0].pcnt == 1 and t.b.ipfw.rules[1].pcnt == 1
    t.b.cmd("ipfw -q delete 200")
    t.fw(t.b, "add 200 allow icmp from me to any out icmptypes 0")
    assert t.ping(t.a, B, seq=2)


def test_enable_sysctl_unlinks_the_hooks(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 deny icmp from any to any")
    assert t.r.ip.pfil_in is not None
    assert not t.ping(t.a, B)
    assert t.r.cmd("sysctl net.inet.ip.fw.enable=0").ok
    assert t.r.ip.pfil_in is None and t.r.ip.pfil_out is None
    assert t.ping(t.a, B, seq=2)
    assert t.r.cmd("ipfw enable firewall").ok
    assert not t.ping(t.a, B, seq=3)
    t.r.cmd("ipfw -q flush")
    assert t.r.ip.pfil_in is None  # only the default rule: nothing to do, nothing linked


def test_log_lines_as_ipfw_log_prints_them(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 deny log tcp from any to any 80", "add 200 allow log icmp from any to any",
         "add 300 allow ip from any to any")
    t.r.cmd("sysctl net.inet.ip.fw.verbose=1")
    assert t.tcp(t.a, t.b, B, 80, seconds=0.5) == "timeout"
    assert t.ping(t.a, B)
    log = t.r.cmd("ipfw log").output.splitlines()
    sport = t.r.ipfw.rules[0].pcnt and log[0].split()[4].split(":")[1]
    assert log[0] == f"ipfw: 100 Deny TCP 10.0.0.1:{sport} 10.0.1.2:80 in via epair0b"
    assert "ipfw: 200 Accept ICMP:8.0 10.0.0.1 10.0.1.2 in via epair0b" in log
    assert "ipfw: 200 Accept ICMP:8.0 10.0.0.1 10.0.1.2 out via epair1a" in log
    assert "ipfw: 200 Accept ICMP:0.0 10.0.1.2 10.0.0.1 in via epair1a" in log


def test_log_needs_verbose_and_logamount_limits_it(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 allow log logamount 2 icmp from any to any")
    assert t.ping(t.a, B)
    assert t.r.cmd("ipfw log").output == ""  # verbose=0: FreeBSD logs only to ipfw0
    t.r.cmd("sysctl net.inet.ip.fw.verbose=1")
    assert t.ping(t.a, B, seq=2)
    log = t.r.cmd("ipfw log").output.splitlines()
    assert len(log) == 3 and log[2] == "ipfw: limit 2 reached on entry 100"
    assert t.r.cmd("ipfw resetlog 100").output == "Entry 100 logging count reset\n"
    assert t.ping(t.a, B, seq=3)
    assert len(t.r.cmd("ipfw log").output.splitlines()) == 6


def test_log_of_fragments_names_them(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 allow log ip from any to any frag", "add 200 allow ip from any to any")
    t.r.cmd("sysctl net.inet.ip.fw.verbose=1")
    assert t.ping(t.a, B, size=3000)
    lines = [x for x in t.r.ipfw.log if "in via epair0b" in x]
    assert lines and all("(frag " in x and "@" in x for x in lines)
    assert lines[0].startswith(f"ipfw: 100 Accept ICMP {'10.0.0.1'} 10.0.1.2 in via epair0b")


def test_reject_on_own_router_address(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 unreach protocol icmp from any to me", "add 200 allow ip from any to any")
    assert t.icmp_error(t.a, RA) == (3, 2)
    assert t.a.icmp.stats.inhist[3] == 1


def test_matching_reads_icmp_proto_by_number(trio: Trio):
    t = trio
    t.fw(t.r, f"add 100 deny {PROTO_ICMP} from any to any", "add 200 allow ip from any to any")
    assert t.r.cmd("ipfw list 100").output == "00100 deny icmp from any to any\n"
    assert not t.ping(t.a, B)


def test_verbose_limit_is_the_default_logamount(trio: Trio):
    t = trio
    t.r.cmd("sysctl net.inet.ip.fw.verbose=1")
    t.r.cmd("sysctl net.inet.ip.fw.verbose_limit=1")
    t.fw(t.r, "add 100 allow log icmp from any to any")
    assert t.ping(t.a, B)
    assert list(t.r.ipfw.log) == ["ipfw: 100 Accept ICMP:8.0 10.0.0.1 10.0.1.2 in via epair0b",
                                  "ipfw: limit 1 reached on entry 100"]


def test_reading_the_sysctls_does_not_start_the_ruleset(trio: Trio):
    t = trio
    assert "net.inet.ip.fw.static_count: 1" in t.a.cmd("sysctl -a").output
    assert t.a.cmd("sysctl net.inet.ip.fw.default_to_accept=1").ok
    assert t.a.cmd("ipfw list").output == "65535 allow ip from any to any\n"


def test_tags_follow_a_forwarded_packet_from_in_to_out(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count tag 9 icmp from any to any in recv epair0b",
         "add 200 deny icmp from any to any out tagged 9", "add 300 allow ip from any to any")
    assert not t.ping(t.a, B)
    counts = {r.num: r.pcnt for r in t.r.ipfw.rules}
    assert counts[100] == 1 and counts[200] == 1
    assert t.ping(t.a, "10.0.1.1")  # to the router itself: no out pass, tag irrelevant
