"""TCP against hostile input: no single packet, peer or client may stall a kernel.

ACK wars (RFC 5961 §5, FreeBSD's tcp_ack_war_check), the out-of-order queue's cap and
cost (net.inet.tcp.reass.maxqueuelen), the MSS floor (net.inet.tcp.minmss), the
syncache's lifetime and bounds, and per-vnet secrets (RFC 6528). All in virtual time.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from vimage.kernel import Kernel
from vimage.netinet import tcp as tcpmod
from vimage.socket.socket import AF_INET, IPPROTO_RAW, SOCK_DGRAM, SOCK_RAW
from vimage.topo import add_route, connect
from vimage.wire import ethernet, ipv4
from vimage.wire import tcp as wtcp

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.1.1"
MS = 1_000_000
S = 1_000_000_000
MASK = 0xFFFFFFFF


class Pair:
    """Two vnets on an undelayed epair with an established connection cli (a) -> conn (b)."""

    def __init__(self, seed: int = 1) -> None:
        self.k = Kernel(clock="virtual", seed=seed)
        self.a, self.b = self.k.create("a"), self.k.create("b")
        self.ea, self.eb = connect(self.a, f"{A}/24", self.b, f"{B}/24")
        srv = self.b.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("", 80))
        srv.listen(4)
        self.cli = self.a.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.cli.connect((B, 80))
        self.conn, _ = srv.accept()
        self.srv = srv
        self.cli.sendall(b"hello")
        self.k.run(1)
        assert self.conn.recv(10) == b"hello"

    def sent(self) -> int:
        return self.a.tcp.stats.sndtotal + self.b.tcp.stats.sndtotal

    def inject_to_b(self, seq: int, ack: int, flags: int = wtcp.ACK, data: bytes = b"") -> None:
        """A segment claiming to come from the client, straight into b's interface."""
        tb = self.conn.tcb
        seg = wtcp.build(tb.fport, tb.lport, seq & MASK, ack & MASK, flags, 65535, data,
                         src=tb.faddr, dst=tb.laddr)
        frame = ethernet.build(self.eb.mac, self.ea.mac, 0x0800,
                               ipv4.build(tb.faddr, tb.laddr, 6, seg))
        with self.k.sched.cond:
            self.eb.input(frame)


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Stop an endless exchange: after 2,000 segments every send is swallowed (so the
    test fails on its assertions instead of hanging the suite)."""
    state = {"sent": 0, "tripped": 0}
    original = tcpmod.TcpState.send_segment

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        state["sent"] += 1
        if state["sent"] > 2000:
            state["tripped"] = 1
            return
        original(self, *args, **kwargs)

    monkeypatch.setattr(tcpmod.TcpState, "send_segment", counted)
    return state


# -- 1. ACK wars ------------------------------------------------------------------------------


def test_spoofed_in_window_data_does_not_start_an_endless_ack_exchange(guard):
    p = Pair()
    tb = p.conn.tcb
    before = p.sent()
    # seq = RCV.NXT: b takes the bytes, and from then on b's ACKs acknowledge data the
    # client never sent (rcvacktoomuch at a), and a's ACKs are below b's RCV.NXT
    p.inject_to_b(tb.rcv_nxt, tb.snd_nxt, wtcp.ACK | wtcp.PSH, b"X" * 10)
    p.k.run(0.001)
    assert not guard["tripped"]
    p.k.run(0.1)
    acks = p.sent() - before
    # each side answers at most ack_war_cnt (5) unacceptable segments per second
    assert 2 <= acks <= 1 + 2 * 5
    assert p.a.tcp.stats.rcvacktoomuch >= 1
    assert p.a.tcp.stats.ack_war_drops + p.b.tcp.stats.ack_war_drops >= 1
    p.k.run(10)  # later windows: still bounded (the client's retransmissions go on)
    assert not guard["tripped"]
    assert p.sent() - before < 200


def test_ack_of_unsent_data_is_acked_once_per_allowance(guard):
    p = Pair()
    tb = p.conn.tcb
    before = p.b.tcp.stats.sndtotal
    for i in range(50):
        p.inject_to_b(tb.rcv_nxt, tb.snd_max + 1000 + i)
    p.k.run(0.01)
    assert p.b.tcp.stats.rcvacktoomuch == 50
    assert p.b.tcp.stats.sndtotal - before == 5
    assert p.b.tcp.stats.ack_war_drops == 45
    p.k.run(1.0)  # a new time window: a new allowance
    p.inject_to_b(tb.rcv_nxt, tb.snd_max + 5000)
    assert p.b.tcp.stats.sndtotal - before == 6
    assert tb.state_name == "ESTABLISHED"


def test_segments_outside_the_window_are_answered_at_a_limited_rate(guard):
    p = Pair()
    tb = p.conn.tcb
    before = p.b.tcp.stats.sndtotal
    for i in range(100):
        p.inject_to_b(tb.rcv_nxt + 200_000 + i * 10, tb.snd_nxt, data=b"y" * 10)
        p.inject_to_b(tb.rcv_nxt - 5000 - i, tb.snd_nxt, data=b"z")  # old duplicates
    p.k.run(0.01)
    assert p.b.tcp.stats.rcvpackafterwin == 100 and p.b.tcp.stats.rcvduppack >= 100
    assert p.b.tcp.stats.sndtotal - before == 5
    assert p.b.tcp.stats.ack_war_drops == 195
    # the connection still works
    p.cli.sendall(b"more")
    p.k.run(1)
    assert p.conn.recv(10) == b"more"


def test_the_ack_war_limit_can_be_lifted_by_sysctl(guard):
    p = Pair()
    p.b.sysctl("net.inet.tcp.ack_war_timewindow", 0)
    tb = p.conn.tcb
    before = p.b.tcp.stats.sndtotal
    for i in range(20):
        p.inject_to_b(tb.rcv_nxt, tb.snd_max + 1000 + i)
    assert p.b.tcp.stats.sndtotal - before == 20
    assert p.b.sysctl("net.inet.tcp.ack_war_cnt") == 5


def test_a_raw_socket_in_a_third_vnet_cannot_stall_a_bystander_pair(guard):
    p = Pair()
    c = p.k.create("c")
    connect(c, f"{C}/24", p.b, "10.0.1.2/24")
    add_route(c, "10.0.0.0/24", "10.0.1.2")
    p.k.run(0)
    tb = p.conn.tcb
    seg = wtcp.build(tb.fport, tb.lport, tb.rcv_nxt, tb.snd_nxt, wtcp.ACK | wtcp.PSH, 65535,
                     b"spoofed", src=tb.faddr, dst=tb.laddr)
    raw = c.socket(AF_INET, SOCK_RAW, IPPROTO_RAW)  # IP_HDRINCL
    raw.sendto(ipv4.build(tb.faddr, tb.laddr, 6, seg), (B, 0))
    p.k.run(0.1)  # past b's delayed ACK, which starts the exchange
    assert p.b.tcp.stats.rcvbyte == 5 + 7  # the spoofed bytes were taken
    assert not guard["tripped"]
    # the bystanders still talk: UDP between b and c, and the pair's own data
    u1, u2 = c.socket(AF_INET, SOCK_DGRAM), p.b.socket(AF_INET, SOCK_DGRAM)
    u2.bind(("", 7))
    u1.sendto(b"ping", (B, 7))
    p.k.run(0.01)
    assert u2.recvfrom(10)[0] == b"ping"
    assert not guard["tripped"]
