"""ipfw with the real dummynet, NAT and divert behind its rules (no stand-ins): where a
packet goes on after `divert`, `tee`, `nat`, `pipe` and `queue`, as FreeBSD's
ip_fw_pfil.c, ip_divert.c and ip_fw_nat.c continue it, and dummynet's rates, shares
and delays measured end to end through `ipfw pipe`/`queue` rules.

Topology for NAT and divert: h (10.0.0.2) - r (lan 10.0.0.1 | wan 192.0.2.1) - s
(192.0.2.7); s routes 10.0.0.0/24 back through r unless a test removes the route."""

from __future__ import annotations

import socket

import pytest

from vimage.apps import iperf3
from vimage.kernel import Kernel
from vimage.net import pfil
from vimage.netinet.ip_divert import IPPROTO_DIVERT
from vimage.topo import add_route, connect
from vimage.vnet import Vnet
from vimage.wire import icmp as wicmp

PORT = 8668
INSIDE, ALIAS, SERVER = "10.0.0.2", "192.0.2.1", "192.0.2.7"


class World:
    def __init__(self) -> None:
        self.k = Kernel(clock="virtual", seed=1)
        self.h, self.r, self.s = (self.k.create(n) for n in ("h", "r", "s"))
        _, self.lan = connect(self.h, f"{INSIDE}/24", self.r, "10.0.0.1/24")
        self.wan, _ = connect(self.r, f"{ALIAS}/24", self.s, f"{SERVER}/24")
        add_route(self.h, "default", "10.0.0.1")
        add_route(self.s, "10.0.0.0/24", ALIAS)
        self.r.sysctl("net.inet.ip.forwarding", 1)

    def fw(self, *rules: str) -> None:
        for rule in rules:
            result = self.r.cmd(f"ipfw -q {rule}")
            assert result.ok, result.output

    def counts(self) -> dict[int, int]:
        return {r.num: r.pcnt for r in self.r.ipfw.rules}

    def udp(self, vnet: Vnet, port: int) -> socket.socket:
        sock = vnet.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("", port))
        sock.settimeout(1)
        return sock

    def divert(self) -> socket.socket:
        d = self.r.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
        d.bind(("", PORT))
        d.settimeout(1)
        return d


# -- divert and tee ----------------------------------------------------------------------------
def test_outgoing_reinjection_resumes_after_the_divert_rule_on_its_interface():
    """div_output tags the packet with rule sin_port + 1: the divert rule is not seen
    again (no loop), and the next rules see the interface the route sends it out of."""
    w = World()
    w.fw(f"add 100 divert {PORT} ip from any to any out via {w.wan.name}",
         f"add 200 count ip from any to any out xmit {w.wan.name}",
         "add 65000 allow ip from any to any")
    d = w.divert()
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"out", (SERVER, 7000))
    w.k.run(0.1)
    pkt, addr = d.recvfrom(65535)
    assert addr == ("0.0.0.0", 100)
    d.sendto(pkt, addr)
    assert srv.recvfrom(10) == (b"out", (INSIDE, 5000))
    assert w.counts()[100] == 1 and w.counts()[200] == 1


def test_incoming_reinjection_resumes_at_the_next_rule_not_past_ipfw():
    w = World()
    w.fw(f"add 100 divert {PORT} udp from any to any in recv {w.wan.name}",
         f"add 200 deny udp from any to any 5001 in recv {w.wan.name}",
         "add 65000 allow ip from any to any")
    d = w.divert()
    ok, denied, cli = w.udp(w.h, 5000), w.udp(w.h, 5001), w.udp(w.s, 7000)
    for port in (5000, 5001):
        cli.sendto(b"in", (INSIDE, port))
        w.k.run(0.1)
        pkt, addr = d.recvfrom(65535)
        assert addr == (ALIAS, 100)
        d.sendto(pkt, addr)
    assert ok.recvfrom(10) == (b"in", (SERVER, 7000))
    with pytest.raises(TimeoutError):
        denied.recvfrom(10)  # rule 200 saw the reinjected datagram
    assert w.counts()[100] == 2 and w.counts()[200] == 1


def test_tee_rule_copies_to_the_socket_and_lets_the_original_pass():
    w = World()
    w.fw(f"add 100 tee {PORT} udp from any to any out via {w.wan.name}",
         "add 65000 allow ip from any to any")
    d = w.divert()
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"tee", (SERVER, 7000))
    assert srv.recvfrom(10) == (b"tee", (INSIDE, 5000))
    pkt, addr = d.recvfrom(65535)
    assert pkt.endswith(b"tee") and addr == ("0.0.0.0", 100)
    assert w.r.divert.stats.tee == 1 and w.r.divert.stats.diverted == 0


def test_divert_to_a_port_without_a_socket_drops():
    w = World()
    w.fw(f"add 100 divert {PORT} udp from any to any", "add 65000 allow ip from any to any")
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"x", (SERVER, 7000))
    with pytest.raises(TimeoutError):
        srv.recvfrom(10)
    assert w.r.divert.stats.noport == 1


# -- nat -----------------------------------------------------------------------------------------
def _nat_world(one_pass: int) -> World:
    w = World()
    w.s.rt.delete(0x0A000000, 24)  # only translated traffic can be answered
    w.r.sysctl("net.inet.ip.fw.one_pass", one_pass)
    w.fw(f"nat 1 config ip {ALIAS}",
         f"add 100 nat 1 ip4 from any to any via {w.wan.name}",  # nat denies IPv6
         f"add 200 count ip from {ALIAS} to any out xmit {w.wan.name}",
         f"add 300 count ip from any to {INSIDE} out recv {w.wan.name} xmit {w.lan.name}",
         "add 65000 allow ip from any to any")
    return w


@pytest.mark.parametrize("one_pass", [1, 0])
def test_nat_one_pass_ends_the_search_or_continues_at_the_next_rule(one_pass: int):
    """ip_fw_pfil.c: IP_FW_NAT with one_pass accepts the translated packet; without it
    the search goes on after the nat rule, with the rewritten header."""
    w = _nat_world(one_pass)
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"q", (SERVER, 7000))
    data, peer = srv.recvfrom(10)
    assert peer[0] == ALIAS
    srv.sendto(b"a", peer)
    assert cli.recvfrom(10) == (b"a", (SERVER, 7000))
    counts = w.counts()
    assert counts[100] == 2  # out on wan, in on wan
    assert counts[200] == (0 if one_pass else 1)
    # the translated reply is forwarded: its out pass on the lan knows it came in on wan
    assert counts[300] == 1


# -- dummynet ------------------------------------------------------------------------------------
A, B = "10.0.0.1", "10.0.0.2"
SEG = 1448


def pair() -> tuple[Kernel, Vnet, Vnet]:
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, f"{A}/24", b, f"{B}/24")
    k.run(0.001)
    return k, a, b


def ipfw(vnet: Vnet, *lines: str) -> None:
    for line in lines:
        result = vnet.cmd(f"ipfw -q {line}")
        assert result.ok, result.output


@pytest.mark.parametrize("bw", [1_000_000, 100_000_000])
def test_iperf3_rate_through_an_ipfw_pipe(bw: int):
    """`ipfw pipe 1 config bw B` + `ipfw add pipe 1 ip from any to any out via IF`:
    iperf3's steady goodput is B x 1448/1500 within 2%."""
    k, a, b = pair()
    ipfw(b, f"pipe 1 config bw {bw}", "add 100 pipe 1 ip from any to any out via epair0b",
         "add 65000 allow ip from any to any")
    nbytes = 400 * SEG
    server = iperf3.serve(b, once=True)  # kept: a forgotten server is closed
    report = iperf3.client(a, B, nbytes=nbytes, reverse=True, interval=nbytes * 8 / bw / 20)
    assert server.tests == 1
    steady = [iv["sum"] for iv in report["intervals"] if iv["sum"]["bytes"]][2:-2]
    rate = sum(s["bytes"] for s in steady) * 8 / sum(s["seconds"] for s in steady)
    assert rate == pytest.approx(bw * SEG / 1500, rel=0.02)
    assert b.ipfw.rules[0].pcnt > 400  # every data segment matched the pipe rule


class Arrivals:
    def __init__(self, vnet: Vnet) -> None:
        self.log: list[tuple[int, int, int]] = []
        self.vnet = vnet
        pfil.link(vnet.ip, "pfil_in", self.hook, name="arrivals")

    def hook(self, pkt: bytes, ifp: object) -> bytes:
        hlen = (pkt[0] & 0x0F) << 2
        port = int.from_bytes(pkt[hlen + 2:hlen + 4], "big") if pkt[9] == 17 else 0
        self.log.append((self.vnet.kernel.now_ns(), len(pkt), port))
        return pkt

    def bytes_between(self, port: int, t0: int, t1: int) -> int:
        return sum(n for t, n, p in self.log if p == port and t0 <= t < t1)


def flood(k: Kernel, vnet: Vnet, dst: str, port: int, size: int, rate: float,
          count: int) -> None:
    """`count` UDP datagrams of `size` bytes to dst:port at `rate` bit/s (kernel timers)."""
    sock = vnet.socket(2, 2)
    gap = (size + 28) * 8 / rate
    left = [count]

    def tick() -> None:
        sock.sendto(b"u" * size, (dst, port))
        left[0] -= 1
        if left[0]:
            k.call_later(gap, tick)

    k.call_later(0, tick)


def test_wf2q_shares_through_queue_rules():
    """Two flows as fast as the pipe, sent into queues of weights 1 and 3 by `queue`
    rules: WF2Q+ (the default scheduler) gives them 1/4 and 3/4."""
    k, a, b = pair()
    ipfw(a, "pipe 1 config bw 1Mbit/s", "queue 1 config pipe 1 weight 1",
         "queue 2 config pipe 1 weight 3",
         "add 100 queue 1 udp from me to any 5001 out",
         "add 110 queue 2 udp from me to any 5002 out",
         "add 65000 allow ip from any to any")
    arrivals = Arrivals(b)
    flood(k, a, B, 5001, 1000, 1_000_000, 700)
    flood(k, a, B, 5002, 1000, 1_000_000, 700)
    k.run(5)
    one = arrivals.bytes_between(5001, 200_000_000, 5_000_000_000)
    two = arrivals.bytes_between(5002, 200_000_000, 5_000_000_000)
    assert one / (one + two) == pytest.approx(0.25, rel=0.02)
    assert two / (one + two) == pytest.approx(0.75, rel=0.02)


def test_ping_rtt_is_the_pipe_delay_both_ways():
    """`ipfw add pipe 1 ip from any to any via IF` takes the echo out and the reply in:
    25 ms each way, no bandwidth limit, so the RTT is exactly 50 ms."""
    k, a, b = pair()
    ipfw(a, "pipe 1 config delay 25", "add 100 pipe 1 ip from any to any via epair0a",
         "add 65000 allow ip from any to any")
    out = a.cmd(f"ping -c 2 {B}").output
    assert out.count("time=50.000 ms") == 2
    assert a.ipfw.rules[0].pcnt == 4  # two echoes out, two replies in


@pytest.mark.parametrize("one_pass", [1, 0])
def test_one_pass_0_continues_after_the_pipe_rule(one_pass: int):
    """With one_pass 1 (FreeBSD's default) what the pipe releases leaves without more
    rules; with 0 it resumes at the rule after the pipe rule: the deny then drops it."""
    k, a, b = pair()
    a.sysctl("net.inet.ip.fw.one_pass", one_pass)
    ipfw(a, "pipe 1 config delay 5", "add 100 pipe 1 udp from any to any out",
         "add 200 deny udp from any to any 9 out", "add 65000 allow ip from any to any")
    srv = b.socket(2, 2)
    srv.bind(("", 9))
    srv.settimeout(1)
    a.socket(2, 2).sendto(b"x", (B, 9))
    if one_pass:
        assert srv.recvfrom(10)[0] == b"x"
    else:
        with pytest.raises(TimeoutError):
            srv.recvfrom(10)
        assert b.udp.stats.ipackets == 0
    assert {r.num: r.pcnt for r in a.ipfw.rules}[200] == 1 - one_pass


def test_one_pass_is_read_when_the_pipe_rule_matches():
    """ipfw_chk marks the packet IPFW_ONEPASS at the pipe rule: changing the sysctl
    while it is held does not change where it continues."""
    k, a, b = pair()
    ipfw(a, "pipe 1 config delay 100", "add 100 pipe 1 udp from any to any out",
         "add 200 deny udp from any to any 9 out", "add 65000 allow ip from any to any")
    a.socket(2, 2).sendto(b"x", (B, 9))
    a.sysctl("net.inet.ip.fw.one_pass", 0)
    k.run(0.5)
    assert b.udp.stats.ipackets == 1


def test_destroying_a_vnet_with_rules_pipes_nat_and_divert_leaves_nothing():
    w = World()
    w.fw("pipe 1 config bw 64k delay 200", f"nat 1 config ip {ALIAS}",
         f"add 100 pipe 1 ip from any to any out via {w.wan.name}",
         f"add 200 nat 1 ip from any to any via {w.wan.name}",
         f"add 300 divert {PORT} ip from any to any in recv {w.lan.name}",
         "add 65000 allow ip from any to any")
    w.r.sysctl("net.inet.ip.fw.one_pass", 0)
    d = w.divert()
    cli = w.udp(w.h, 5000)
    for _ in range(5):
        cli.sendto(b"z" * 500, (SERVER, 7000))
    w.k.run(0.05)
    for _ in range(5):
        pkt, addr = d.recvfrom(65535)
        d.sendto(pkt, addr)
    w.k.run(0.01)
    assert w.k.sched.pending_timers(w.r) > 0 and w.r.dummynet.si_count > 0
    w.k.destroy("r")
    assert w.k.sched.pending_timers(w.r) == 0
    assert d.closed and not w.r.ipfw.rules and not w.r.dummynet.schedulers
    w.k.run(2)
    assert w.s.ip.stats.total == 0


def _icmp_flood(k: Kernel, vnet: Vnet, dst: str, size: int, rate: float,
                seconds: float) -> None:
    sock = vnet.socket(2, 3, 1)
    gap = (size + 28) * 8 / rate
    end = k.now_ns() + int(seconds * 1e9)
    seq = [0]

    def tick() -> None:
        seq[0] += 1
        sock.sendto(wicmp.build_echo(wicmp.ECHO, 9, seq[0] & 0xFFFF, b"f" * size), (dst, 0))
        if k.now_ns() < end:
            k.call_later(gap, tick)

    k.call_later(0, tick)


def test_a_held_packet_resumes_after_its_rule_when_the_ruleset_changed():
    """A rule added while dummynet holds the packet: it resumes after the pipe rule by
    number (ip_fw2.c looks the rule up when the chain changed), not at a stale slot
    that would now be the pipe rule again."""
    k, a, b = pair()
    a.sysctl("net.inet.ip.fw.one_pass", 0)
    ipfw(a, "pipe 1 config delay 100", "add 100 pipe 1 udp from any to any out",
         "add 200 deny udp from any to any 9 out", "add 65000 allow ip from any to any")
    a.socket(2, 2).sendto(b"x", (B, 9))
    ipfw(a, "add 50 count ip from any to any")
    k.run(1)
    counts = {r.num: r.pcnt for r in a.ipfw.rules}
    assert counts[100] == 1 and counts[200] == 1 and a.dummynet.io_pkt == 1
