"""ipfw match options, one by one, against real traffic through router r (a -> r -> b)."""

from __future__ import annotations

import contextlib

import pytest

from .conftest import A, B, Trio


def _echo_counts(t: Trio, *rules: str, ping_size: int = 8) -> tuple[bool, list[int]]:
    """Install `rules` (numbered 100, 110, ...) then allow-all; ping b; the counters."""
    t.fw(t.r, *(f"add {100 + 10 * i} {rule}" for i, rule in enumerate(rules)),
         "add 1000 allow ip from any to any")
    ok = t.ping(t.a, B, size=ping_size)
    return ok, [r.pcnt for r in t.r.ipfw.rules[:len(rules)]]


@pytest.mark.parametrize(("option", "hits"), [
    ("in", 2), ("out", 2),
    ("via epair0b", 2),  # echo in on epair0b, reply out on epair0b
    ("recv epair0b", 2),  # the echo at in and, forwarded, at out (its rcvif is kept)
    ("xmit epair1a", 1),  # the echo leaving toward b
    ("recv epair1a xmit epair0b", 1),  # the reply, forwarded
    ("via epair*", 4), ("xmit any", 2), ("via 10.0.0.2", 2),
    ("icmptypes 8", 2), ("icmptypes 0,8", 4), ("icmptypes 3", 0),
    ("iplen 36", 4), ("iplen 0-35", 0), ("ipttl 64", 2), ("ipttl 63", 2), ("ipttl 1-62", 0),
    ("not icmptypes 8", 2), ("{ icmptypes 8 or icmptypes 0 }", 4),
    ("{ icmptypes 3 or ipttl 63 }", 2), ("proto icmp", 4), ("ip4", 4), ("ip6", 0),
])
def test_option_on_forwarded_echo(trio: Trio, option: str, hits: int):
    ok, counts = _echo_counts(trio, f"count icmp from any to any {option}")
    assert ok and counts == [hits]


@pytest.mark.parametrize(("addrs", "hits"), [
    ("from 10.0.0.1 to 10.0.1.2", 2), ("from 10.0.0.0/24 to any", 2),
    ("from 10.0.0.0:255.255.255.0 to any", 2), ("from any to 10.0.0.0/16", 4),
    ("from not 10.0.0.1 to any", 2), ("from { 10.0.0.1 or 10.9.9.9 } to any", 2),
    ("from {10.9.9.9,10.0.1.0/24} to any", 2), ("from 10.0.0.1,10.0.1.2 to any", 4),
    ("from me to any", 0), ("from any to me", 0), ("from any to 10.0.0.2", 0),
    ("src-ip 10.0.1.2 from any to any", 2), ("dst-ip 10.0.1.2 from any to any", 2),
])
def test_addresses(trio: Trio, addrs: str, hits: int):
    if addrs.startswith(("src-ip", "dst-ip")):
        opt, value, rest = addrs.split(" ", 2)
        rule = f"count icmp {rest} {opt} {value}"
    else:
        rule = f"count icmp {addrs}"
    ok, counts = _echo_counts(trio, rule)
    assert ok and counts == [hits]


def test_me_matches_the_router_addresses(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count icmp from any to me", "add 110 count icmp from me to any",
         "add 1000 allow ip from any to any")
    assert t.ping(t.a, "10.0.1.1")  # r's other address
    assert [r.pcnt for r in t.r.ipfw.rules[:2]] == [1, 1]


def test_ports_and_port_ranges(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count udp from any to any 7000",
         "add 110 count udp from any 5000-5001 to any",
         "add 120 count udp from any to any dst-port 6999-7001,9",
"add 130 count udp from any to any src-port 5001",
         "add 140 count udp from any to any not dst-port 7000",
"add 150 count tcp from any to any 7000",
         "add 1000 allow ip from any to any")
    assert t.udp(t.a, t.b, B, port=7000, sport=5001)
    assert [r.pcnt for r in t.r.ipfw.rules[:6]] == [2, 2, 2, 2, 0, 0]
    assert t.udp(t.a, t.b, B, port=7001, sport=6000)
    assert [r.pcnt for r in t.r.ipfw.rules[:6]] == [2, 2, 4, 2, 2, 0]


def test_service_names_in_ports(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 deny tcp from any to any http,https", "add 1000 allow ip from any to any")
    assert t.r.cmd("ipfw list 100").output == "00100 deny tcp from any to any 80,443\n"
    assert t.tcp(t.a, t.b, B, 80, seconds=1) == "timeout"
    assert t.tcp(t.a, t.b, B, 8080) == "ok"


def test_setup_established_tcpflags(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count tcp from any to any setup",
         "add 110 count tcp from any to any established",
         "add 120 count tcp from any to any tcpflags syn,ack",
"add 130 count tcp from any to any tcpflags syn,!ack",
         "add 140 count tcp from any to any tcpflags fin", "add 1000 allow ip from any to any")
    assert t.tcp(t.a, t.b, B, 80) == "ok"  # then closed by the helper: FINs
    t.k.run(1)
    setup, est, synack, syn, fin = [r.pcnt for r in t.r.ipfw.rules[:5]]
    assert setup == 2 and syn == 2  # the SYN, at in and at out
    assert synack == 2
    assert est >= 4 and fin >= 2


def test_tcpoptions(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count tcp from any to any tcpoptions mss",
         "add 110 count tcp from any to any tcpoptions !mss",
         "add 120 count tcp from any to any tcpoptions mss,sack setup",
"add 1000 allow ip from any to any")
    assert t.tcp(t.a, t.b, B, 80) == "ok"
    t.k.run(1)  # the closing segments
    mss, no_mss, mss_sack_syn = [r.pcnt for r in t.r.ipfw.rules[:3]]
    assert mss == 4  # SYN and SYN-ACK carry an MSS, each seen twice
    assert no_mss >= 4  # everything else
    assert mss_sack_syn == 2


def test_frag_and_ipid(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 count ip from any to any frag", "add 1000 allow ip from any to any")
    assert t.ping(t.a, B, size=3000)  # 3 fragments each way over a 1500-byte MTU
    assert t.r.ipfw.rules[0].pcnt == 8  # the non-first fragments: 2 each way, in and out


def test_tables_lookup_and_values(trio: Trio):
    t = trio
    t.fw(t.r, "table blocked create type addr", "table blocked add 10.0.0.0/8 7",
         "table blocked add 10.0.0.1/32 9",
         "add 100 count icmp from table(blocked,9) to any",
         "add 110 count icmp from table(blocked,7) to any",
         "add 120 count icmp from any to table(blocked)", "add 1000 allow ip from any to any")
    assert t.ping(t.a, B)
    assert [r.pcnt for r in t.r.ipfw.rules[:3]] == [2, 2, 4]  # LPM: a is 9, b is 7
    t.fw(t.r, "table blocked delete 10.0.0.1/32")
    assert t.ping(t.a, B, seq=2)
    assert [r.pcnt for r in t.r.ipfw.rules[:3]] == [2, 6, 8]


def test_tablearg_in_skipto(trio: Trio):
    t = trio
    t.fw(t.r, "table jump add 10.0.0.1 500", "table jump add 10.0.1.2 500",
         "add 100 skipto tablearg icmp from table(jump) to any",
         "add 200 deny ip from any to any", "add 500 allow ip from any to any")
    assert t.ping(t.a, B)
    res = t.r.cmd("ipfw add 300 skipto tablearg ip from any to any")
    assert res.status == 65


def test_table_lookup_is_constant_per_prefix_length():
    from vimage.netpfil.ipfw.table import Table

    tbl = Table("t")
    for i in range(10000):
        tbl.add((10 << 24) | i, 32, i)
    tbl.add(10 << 24, 8, 1)
    assert tbl.lens == (32, 8)  # two probes at most, whatever the number of entries
    assert tbl.lookup((10 << 24) | 1234) == 1234 and tbl.lookup((10 << 24) | 99999) == 1
    assert tbl.lookup(11 << 24) is None


def test_limit_src_addr_refuses_past_the_limit(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 allow tcp from any to any setup limit src-addr 2",
         "add 110 allow tcp from any to any established", "add 120 allow icmp from any to any")
    srv = t.b.socket(2, 1)
    srv.bind(("", 80))
    srv.listen(8)
    clients = []
    for _ in range(3):
        c = t.a.socket(2, 1)
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect((B, 80))
        clients.append(c)
        t.k.run(0.5)
    states = [c.tcb.state_name for c in clients]
    assert states[:2] == ["ESTABLISHED", "ESTABLISHED"] and states[2] == "SYN_SENT"
    assert t.r.ipfw.dyn_refused >= 1
    assert t.r.cmd("ipfw -d list").output.count(" LIMIT tcp 10.0.0.1") == 2
    _ = A
