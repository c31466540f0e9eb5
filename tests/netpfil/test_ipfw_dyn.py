"""Dynamic rules: keep-state / record-state / check-state / limit, their lifetimes in
virtual time (net.inet.ip.fw.dyn_*_lifetime), dyn_max and its refusals."""

from __future__ import annotations

import contextlib

from .conftest import A, B, Trio

STATEFUL = ("add 100 check-state", "add 200 allow tcp from 10.0.0.0/24 to any setup keep-state",
            "add 210 allow udp from 10.0.0.0/24 to any keep-state",
            "add 220 allow icmp from 10.0.0.0/24 to any keep-state",
            "add 300 deny ip from any to any")


def test_keep_state_lets_replies_back_and_nothing_else(trio: Trio):
    t = trio
    t.fw(t.r, *STATEFUL)
    assert not t.ping(t.b, A)  # b cannot start anything
    assert t.ping(t.a, B)
    assert t.tcp(t.a, t.b, B, 80) == "ok"
    assert t.tcp(t.b, t.a, A, 81, seconds=1) == "timeout"
    assert t.udp(t.a, t.b, B, port=53)
    # the replies matched states: the parent rules counted them
    rules = {r.num: r for r in t.r.ipfw.rules}
    assert rules[220].pcnt == 4  # echo in, out; reply in, out
    assert rules[300].pcnt >= 2


def test_udp_state_expires_after_dyn_udp_lifetime(trio: Trio):
    t = trio
    t.fw(t.r, *STATEFUL)
    assert t.r.cmd("sysctl net.inet.ip.fw.dyn_udp_lifetime=4").ok
    srv = t.b.socket(2, 2)
    srv.bind(("", 53))
    cli = t.a.socket(2, 2)
    cli.bind(("", 4000))
    cli.settimeout(1)
    cli.sendto(b"q", (B, 53))
    t.k.run(0.1)
    data, peer = srv.recvfrom(10)
    assert t.r.ipfw.dyn_count == 1
    t.k.run(3)  # 3.1 s after: still alive
    srv.sendto(b"r1", peer)
    assert cli.recv(10) == b"r1"
    t.k.run(4.5)  # every packet renews it; this long after the last one, it is gone
    assert t.r.ipfw.dyn_count == 0
    srv.sendto(b"r2", peer)
    try:
        got = cli.recv(10)
    except TimeoutError:
        got = None
    assert got is None
    assert t.r.cmd("sysctl -n net.inet.ip.fw.dyn_count").output == "0\n"


def test_tcp_state_lifetimes_follow_the_flags():
    from vimage.kernel import Kernel
    from vimage.topo import router_chain

    k = Kernel(clock="virtual", seed=1)
    t = Trio(k, *router_chain(k, 1, name="d", delay="10ms"))
    t.fw(t.r, *STATEFUL)
    srv = t.b.socket(2, 1)
    srv.bind(("", 80))
    srv.listen(1)
    cli = t.a.socket(2, 1)
    cli.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        cli.connect((B, 80))
    t.k.run(0.015)  # the SYN has passed r (10 ms), the SYN-ACK not yet back (30 ms)
    dyn = t.r.ipfw.dyn
    st = next(iter(dyn.states.values()))
    now = t.k.now_ns()
    assert 19 < (st.expire - now) / 1e9 <= 20  # dyn_syn_lifetime
    t.k.run(0.5)
    now = t.k.now_ns()
    assert 299 < (st.expire - now) / 1e9 <= 300  # established: dyn_ack_lifetime
    conn, _ = srv.accept()
    conn.close()
    cli.close()
    t.k.run(0.5)
    now = t.k.now_ns()
    assert (st.expire - now) / 1e9 <= 2  # FINs both ways: dyn_fin_lifetime
    t.k.run(3)
    assert t.r.ipfw.dyn_count == 0


def test_state_made_without_a_syn_lives_dyn_rst_lifetime(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 allow tcp from any to any keep-state", "add 200 allow ip from any to any")
    assert t.tcp(t.a, t.b, B, 80) == "ok"
    st = next(iter(t.r.ipfw.dyn.states.values()))
    assert st.tcp & 0x0202 == 0x0202


def test_icmp_state_lives_dyn_short_lifetime_and_show_lists_it(trio: Trio):
    t = trio
    t.fw(t.r, *STATEFUL)
    assert t.ping(t.a, B)
    out = t.r.cmd("ipfw -d show").output
    lines = out.splitlines()
    assert "## Dynamic rules (1 96):" in lines
    dyn = lines[lines.index("## Dynamic rules (1 96):") + 1]
    # echo and reply, each seen at in and at out
    assert dyn == "00220 4 144 (5s) STATE icmp 10.0.0.1 0 <-> 10.0.1.2 0 :default"
    t.k.run(6)
    assert "Dynamic" not in t.r.cmd("ipfw -d show").output
    assert "(0s)" not in t.r.cmd("ipfw -e show").output  # -e shows expired, none left


def test_record_state_does_not_check_but_keep_state_does(trio: Trio):
    t = trio
    t.fw(t.r, "add 1 allow ip6 from any to any",  # the links' IPv6 chatter: not counted
         "add 100 allow icmp from any to any icmptypes 8 record-state",
         "add 200 count icmp from any to any", "add 300 check-state",
         "add 400 deny ip from any to any")
    assert t.ping(t.a, B)
    # the reply passed rule 100 (no implicit check-state), was counted by 200 and let
    # through by the state at 300, which runs its parent's action (allow)
    counts = {r.num: r.pcnt for r in t.r.ipfw.rules}
    assert counts[200] == 2 and counts[400] == 0
    t.fw(t.r, "flush", "add 100 allow icmp from any to any icmptypes 8 keep-state",
         "add 200 count icmp from any to any", "add 400 deny ip from any to any")
    assert t.ping(t.a, B, seq=2)
    counts = {r.num: r.pcnt for r in t.r.ipfw.rules}
    assert counts[100] == 4 and counts[200] == 0  # the state was checked at rule 100


def test_dyn_max_refuses_and_counts(trio: Trio):
    t = trio
    t.fw(t.r, *STATEFUL)
    t.r.cmd("sysctl net.inet.ip.fw.dyn_max=1")
    assert t.udp(t.a, t.b, B, port=53, sport=1001)
    assert not t.udp(t.a, t.b, B, port=53, sport=1002)
    assert t.r.ipfw.dyn_refused == 1
    assert t.r.cmd("sysctl -n net.inet.ip.fw.dyn_refused").output == "1\n"
    assert "Too many dynamic rules" in t.r.ipfw.log[-1]
    res = t.r.cmd("sysctl net.inet.ip.fw.dyn_count=5")
    assert not res.ok and "read-only" in res.output


def test_deleting_a_rule_drops_its_states(trio: Trio):
    t = trio
    t.fw(t.r, *STATEFUL)
    assert t.ping(t.a, B)
    assert t.r.ipfw.dyn_count == 1
    t.r.cmd("ipfw -q delete 220")
    assert t.r.ipfw.dyn_count == 0
    assert t.r.cmd("ipfw -q add 220 allow icmp from 10.0.0.0/24 to any keep-state").ok
    assert t.ping(t.a, B)
    t.r.cmd("ipfw show")  # listing does not disturb the states
    assert t.r.ipfw.dyn_count == 1


def test_sweep_timer_stops_when_no_state_is_left(trio: Trio):
    t = trio
    t.fw(t.r, *STATEFUL)
    assert t.ping(t.a, B)
    assert t.k.sched.pending_timers(t.r) >= 1
    t.k.run(10)
    assert t.r.ipfw.dyn.timer is None
