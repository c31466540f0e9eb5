"""The ipfw tool: ipfw(8)'s syntax, its list/show formats, errors and rule files."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.topo import connect


@pytest.fixture
def v():
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    b.peer = a
    return b


def ok(vnet, line):
    res = vnet.cmd(line)
    assert res.ok, res.output
    return res.output


@pytest.mark.parametrize(("rule", "listed"), [
    ("allow ip from any to any", "allow ip from any to any"),
    ("accept all from any to any", "allow ip from any to any"),
    ("pass tcp from 10.0.0.0/8 to me 22 setup keep-state",
     "allow tcp from 10.0.0.0/8 to me 22 setup keep-state :default"),
    ("permit udp from any 53 to any", "allow udp from any 53 to any"),
    ("drop icmp from any to any icmptypes 8,0", "deny icmp from any to any icmptypes 0,8"),
    ("deny log logamount 5 ip from any to any", "deny log logamount 5 ip from any to any"),
    ("reject tcp from any to any", "reject tcp from any to any"),
    ("unreach port udp from any to any", "unreach port udp from any to any"),
    ("unreach 13 udp from any to any", "unreach filter-prohib udp from any to any"),
    ("unreach6 admin-prohib ip6 from any to any", "unreach6 admin-prohib ip6 from any to any"),
    ("reset tcp from any to any 80", "reset tcp from any to any 80"),
    ("count ip from { 10.0.0.1 or 10.0.0.2 } to any", "count ip from 10.0.0.1,10.0.0.2 to any"),
    ("skipto 1000 ip from any to any", "skipto 1000 ip from any to any"),
    ("call 500 ip from any to any", "call 500 ip from any to any"),
    ("return ip from any to any", "return ip from any to any"),
    ("check-state", "check-state :default"),
    ("pipe 1 ip from any to any out xmit epair0b", "pipe 1 ip from any to any out xmit epair0b"),
    ("queue 2 tcp from any to any", "queue 2 tcp from any to any"),
    ("nat 1 ip from any to any via epair0b", "nat 1 ip from any to any via epair0b"),
    ("divert 8668 ip from any to any", "divert 8668 ip from any to any"),
    ("tee 8668 ip from any to any", "tee 8668 ip from any to any"),
    ("fwd 10.0.0.1,3128 tcp from any to any 80", "fwd 10.0.0.1,3128 tcp from any to any 80"),
    ("setfib 0 ip from any to any", "setfib 0 ip from any to any"),
    ("count tag 7 ip from any to any", "count tag 7 ip from any to any"),
    ("allow ip from any to any tagged 7", "allow ip from any to any tagged 7"),
    ("deny tcp from any to any tcpflags syn,!ack tcpoptions !ts",
     "deny tcp from any to any tcpflags syn,!ack tcpoptions !ts"),
    ("deny ip from any to any not frag iplen 100-200 ipttl 1 ipid 5",
     "deny ip from any to any not frag iplen 100-200 ipttl 1 ipid 5"),
    ("allow tcp from any to any { dst-port 80 or dst-port 443 }",
     "allow tcp from any to any { dst-port 80 or dst-port 443 }"),
    ("allow tcp from any to any dst-port http src-port 1024-65535",
     "allow tcp from any to any dst-port 80 src-port 1024-65535"),
    ("allow tcp from any to any limit src-addr 4", "allow tcp from any to any limit src-addr 4 "
     ":default"),
    ("prob 0.25 deny ip from any to any", "prob 0.250000 deny ip from any to any"),
    ("allow ip from table(good) to not me", "allow ip from table(good) to not me"),
    ("allow ip from table(good,3) to any", "allow ip from table(good,3) to any"),
    ("allow 47 from any to any", "allow gre from any to any"),
    ("allow { tcp or udp } from any to any", "allow { tcp or udp } from any to any"),
    ("allow ip from 10.1.0.0:255.255.0.0 to !10.2.0.0/16", "allow ip from 10.1.0.0/16 to "
     "not 10.2.0.0/16"),
])
def test_add_prints_the_rule_as_list_does(v, rule, listed):
    assert ok(v, f"ipfw add 100 {rule}") == f"00100 {listed}\n"
    assert ok(v, "ipfw list 100") == f"00100 {listed}\n"


@pytest.mark.parametrize(("rule", "message", "status"), [
    ("frobnicate ip from any to any", "ipfw: invalid action frobnicate", 65),
    ("allow ip to any", "ipfw: missing ``from''", 64),
    ("allow ip from any", "ipfw: missing ``to''", 64),
    ("allow bogus from any to any", "ipfw: invalid protocol ``bogus''", 65),
    ("allow ip from any to any wibble", "ipfw: unrecognised option [-1] wibble", 64),
    ("allow ip from 10.0.0.300 to any", "ipfw: hostname ``10.0.0.300'' unknown", 65),
    ("allow ip from 10.0.0.0/33 to any", "ipfw: bad width ``33''", 65),
    ("allow tcp from any to any 99999", "ipfw: invalid port ``99999''", 65),
    ("allow tcp from any to any tcpflags syn,bogus", "ipfw: invalid tcp flag ``bogus''", 65),
    ("allow icmp from any to any icmptypes x", "ipfw: invalid ICMP type x", 65),
    ("skipto ip from any to any", "ipfw: invalid skipto argument ip", 65),
    ("unreach nowhere ip from any to any", "ipfw: invalid ICMP unreachable code nowhere", 65),
    ("prob 2 allow ip from any to any", "ipfw: illegal match prob. 2", 65),
    ("allow ip from any to any limit bogus 3", "ipfw: illegal limit type bogus", 65),
    ("setfib 3 ip from any to any", "ipfw: invalid fib number 3: net.fibs is 1", 65),
])
def test_bad_rule_names_the_token_and_changes_nothing(v, rule, message, status):
    ok(v, "ipfw -q add 100 allow ip from any to any")
    before = ok(v, "ipfw list")
    res = v.cmd(f"ipfw add 200 {rule}")
    assert (res.status, res.output) == (status, message + "\n")
    assert ok(v, "ipfw list") == before


def test_rule_numbers_auto_increment_by_100(v):
    assert ok(v, "ipfw add allow ip from any to any").startswith("00100 ")
    ok(v, "ipfw add 250 deny ip from any to any")
    assert ok(v, "ipfw add count ip from any to any").startswith("00350 ")
    res = v.cmd("ipfw add 65535 allow ip from any to any")
    assert res.status == 65 and "invalid rule number 65535" in res.output


def test_show_widths_follow_the_largest_counter(v):
    ok(v, "ipfw -q add 100 allow ip from any to any")
    v.ipfw.rules[0].pcnt, v.ipfw.rules[0].bcnt = 3, 252
    v.ipfw.rules[1].pcnt, v.ipfw.rules[1].bcnt = 12345, 10000000
    assert ok(v, "ipfw show") == ("00100     3      252 allow ip from any to any\n"
                                  "65535 12345 10000000 deny ip from any to any\n")
    # the kernel hands out the rules asked for: widths are those of the range shown
    assert ok(v, "ipfw -a list 100") == "00100 3 252 allow ip from any to any\n"


def test_timestamps_and_sets(v):
    ok(v, "ipfw -q add 100 allow icmp from any to any")
    ok(v, "ipfw -q add 200 set 1 allow ip6 from any to any")  # the link's ND and MLD
    v.peer.cmd("ping -c 1 10.0.0.2")
    out = ok(v, "ipfw -t show").splitlines()
    assert out[0] == "00100 2 168 Thu Jan  1 00:00:01 1970 allow icmp from any to any"
    assert out[2] == "65535 0   0" + " " * 25 + "deny ip from any to any"
    assert ok(v, "ipfw -T list 100") == "00100          1 allow icmp from any to any\n"
    assert ok(v, "ipfw -S list") == ("00100 set 0 allow icmp from any to any\n"
                                     "00200 set 1 allow ip6 from any to any\n"
                                     "65535 set 31 deny ip from any to any\n")


def test_set_commands(v):
    ok(v, "ipfw -q add 100 set 3 deny icmp from any to any")
    ok(v, "ipfw -q add 200 allow ip from any to any")
    assert not v.peer.cmd("ping -c 1 -t 1 10.0.0.2").ok
    ok(v, "ipfw set disable 3")
    assert ok(v, "ipfw set show") == ("disable 3 enable 0 1 2 4 5 6 7 8 9 10 11 12 13 14 15 16"
                                      " 17 18 19 20 21 22 23 24 25 26 27 28 29 30\n")
    assert ok(v, "ipfw list") == ("00200 allow ip from any to any\n"
                                  "65535 deny ip from any to any\n")
    assert "# DISABLED 00100 set 3 deny" in ok(v, "ipfw -S list")
    assert v.peer.cmd("ping -c 1 -t 1 10.0.0.2").ok
    ok(v, "ipfw set swap 3 4")
    assert v.ipfw.rules[0].set == 4
    ok(v, "ipfw set move 4 to 5")
    ok(v, "ipfw set move rule 200 to 3")
    assert [r.set for r in v.ipfw.rules] == [5, 3, 31]
    assert not v.peer.cmd("ping -c 1 -t 1 10.0.0.2").ok  # set 5 is enabled
    res = v.cmd("ipfw set enable 3 disable 3")
    assert res.output == "ipfw: cannot enable and disable the same set\n"
    res = v.cmd("ipfw set move 1 2 3")
    assert res.output == "ipfw: syntax: set move [rule] X to Y\n"


def test_delete_zero_resetlog_flush_messages(v):
    ok(v, "ipfw -q add 100 allow ip from any to any")
    ok(v, "ipfw -q add 100 count ip from any to any")
    ok(v, "ipfw -q add 200 deny ip from any to any")
    v.ipfw.rules[0].pcnt = 5
    assert ok(v, "ipfw zero 100") == "Entry 100 cleared\n"
    assert v.ipfw.rules[0].pcnt == 0
    assert ok(v, "ipfw zero") == "Accounting cleared.\n"
    assert ok(v, "ipfw resetlog") == "Logging counts reset.\n"
    res = v.cmd("ipfw zero 300")
    assert res.status == 69
    assert ok(v, "ipfw delete 100") == ""
    assert [r.num for r in v.ipfw.rules] == [200, 65535]
    res = v.cmd("ipfw delete 100")
    assert (res.status, res.output) == (69, "ipfw: rule 100 not found\n")
    res = v.cmd("ipfw list 150")
    assert (res.status, res.output) == (69, "ipfw: rule 150 does not exist\n")
    assert ok(v, "ipfw flush") == "Flushed all rules.\n"
    assert ok(v, "ipfw -q flush") == ""
    assert ok(v, "ipfw list") == "65535 deny ip from any to any\n"
    ok(v, "ipfw -q add 100 set 2 count ip from any to any")
    ok(v, "ipfw delete set 2")
    assert len(v.ipfw.rules) == 1


def test_tables(v):
    ok(v, "ipfw table web create type addr")
    assert v.cmd("ipfw table web create").output == "ipfw: Table web already exists\n"
    assert ok(v, "ipfw table web add 10.0.0.0/24 80") == "added: 10.0.0.0/24 80\n"
    ok(v, "ipfw -q table web add 192.168.1.1")
    assert ok(v, "ipfw table web list") == ("--- table(web), set(0) ---\n10.0.0.0/24 80\n"
                                            "192.168.1.1/32 0\n")
    res = v.cmd("ipfw table web add 10.0.0.7/24")
    assert res.status == 65 and "already exists" in res.output
    assert ok(v, "ipfw table web delete 192.168.1.1") == "deleted: 192.168.1.1/32 0\n"
    res = v.cmd("ipfw table web add 10.0.0.300")
    assert res.output == "ipfw: invalid table key: 10.0.0.300\n"
    assert "items: 1" in ok(v, "ipfw table web info")
    ok(v, "ipfw -q add 100 allow ip from table(web) to any")
    res = v.cmd("ipfw table web destroy")
    assert "referenced" in res.output
    ok(v, "ipfw -q delete 100")
    ok(v, "ipfw table web flush")
    assert ok(v, "ipfw table all list") == "--- table(web), set(0) ---\n"
    ok(v, "ipfw table web destroy")
    assert v.cmd("ipfw table web list").output == "ipfw: Table web does not exist\n"
    assert v.cmd("ipfw table x create type iface").output == "ipfw: Unknown table type: iface\n"


def test_rule_file_loads_whole_or_not_at_all(v, tmp_path):
    ok(v, "ipfw -q add 100 allow ip from any to any")
    good = tmp_path / "good.rules"
    good.write_text("# a ruleset\nflush\nadd 10 allow icmp from any to any\n"
                    "-q add 20 deny tcp from any to any 80 # web\n"
                    "table t add 10.0.0.1\n")
    out = ok(v, f"ipfw -q {good}")
    assert out == ""
    assert ok(v, "ipfw list") == ("00010 allow icmp from any to any\n"
                                  "00020 deny tcp from any to any 80\n"
                                  "65535 deny ip from any to any\n")
    bad = tmp_path / "bad.rules"
    bad.write_text("flush\nadd 10 allow ip from any to any\nadd 20 allow ip from nowhere to any\n"
                   "table t add 10.0.0.2\n")
    res = v.cmd(f"ipfw {bad}")
    assert res.status == 65
    assert res.output == f"ipfw: hostname ``nowhere'' unknown at line 3 of {bad}\n"
    assert ok(v, "ipfw list").startswith("00010 allow icmp")  # unchanged
    assert ok(v, "ipfw table t list") == "--- table(t), set(0) ---\n10.0.0.1/32 0\n"
    res = v.cmd(f"ipfw {tmp_path / 'missing'}")
    assert res.status == 1 and "No such file" in res.output


def test_test_only_changes_nothing(v, tmp_path):
    assert ok(v, "ipfw -n add 100 allow ip from any to any") == ""
    assert ok(v, "ipfw list") == "65535 deny ip from any to any\n"
    assert v.cmd("ipfw -n add 100 allow ip from any to any foo").status == 64


def test_log_subcommand_and_enable_disable(v):
    assert ok(v, "ipfw log") == ""
    ok(v, "ipfw -q add 100 allow log icmp from any to any")
    ok(v, "ipfw enable verbose")
    v.peer.cmd("ping -c 1 10.0.0.2")
    assert ok(v, "ipfw log").splitlines() == [
        "ipfw: 100 Accept ICMP:8.0 10.0.0.1 10.0.0.2 in via epair0b",
        "ipfw: 100 Accept ICMP:0.0 10.0.0.2 10.0.0.1 out via epair0b"]
    ok(v, "ipfw log clear")
    assert ok(v, "ipfw log") == ""
    ok(v, "ipfw disable firewall")
    assert v.sysctl("net.inet.ip.fw.enable") == 0


def test_resolve_names(v):
    v.hosts.add("10.0.0.1", "peer")
    ok(v, "ipfw -q add 100 allow ip from 10.0.0.1 to any")
    assert ok(v, "ipfw -N list 100") == "00100 allow ip from peer to any\n"


def test_dummynet_and_nat_dispatch_say_when_missing(v):
    import importlib.util

    if importlib.util.find_spec("vimage.netpfil.dummynet") is None:
        res = v.cmd("ipfw pipe 1 config bw 1Mbit/s")
        assert res.status == 1 and "dummynet" in res.output
    if (importlib.util.find_spec("vimage.netpfil.nat") is None
            and importlib.util.find_spec("vimage.netpfil.ipfw_nat") is None):
        res = v.cmd("ipfw nat 1 config ip 10.0.0.1")
        assert res.status == 1 and "nat" in res.output


def test_usage(v):
    res = v.cmd("ipfw")
    assert res.status == 64 and res.output.startswith("usage: ipfw")
    assert "{pipe|queue|sched|nat} ..." in v.cmd("ipfw -h").output
    res = v.cmd("ipfw frob")
    assert res.output == "ipfw: bad command `frob'\n"
