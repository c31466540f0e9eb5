"""TCP at the packet level: send this segment, expect that one (smoltcp style).

A vnet `h` (10.0.0.1) sits on one end of an epair whose far end is replaced by a
`Wire`: every frame the vnet transmits lands in `Wire.frames`, and the test plays
the remote TCP (10.0.0.2) by injecting scapy-built frames with `ifp.input()`.
Everything runs in virtual time, so timer expiries are asserted to the nanosecond.
"""

from __future__ import annotations

import errno
import itertools
import logging
import socket
import struct
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vimage.kernel import Kernel
from vimage.netinet import tcp as tcpmod
from vimage.netinet.tcp.sack import set_pipe
from vimage.wire import ipv4

logging.getLogger("scapy").setLevel(logging.ERROR)
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

HOST = "10.0.0.1"
PEER = "10.0.0.2"
PEER_MAC = bytes.fromhex("020000000002")
PORT = 80  # our listening port
PPORT = 40000  # the remote TCP's port
MS = 1_000_000
S = 1_000_000_000
MASK = 0xFFFFFFFF


class Seg:
    """One TCP segment the vnet sent, with its options as a dict."""

    def __init__(self, time_ns: int, pkt: Any) -> None:
        self.time = time_ns
        self.ip = pkt[IP]
        t = pkt[TCP]
        self.tcp = t
        self.flags = str(t.flags)
        self.seq, self.ack, self.window = t.seq, t.ack, t.window
        self.sport, self.dport = t.sport, t.dport
        self.payload = bytes(t.payload)
        self.opts: dict[str, Any] = {name: value for name, value in t.options if name != "NOP"}
        self.df = bool(int(self.ip.flags) & 0x2)

    def __repr__(self) -> str:
        return (f"<{self.flags} seq={self.seq} ack={self.ack} win={self.window} "
                f"len={len(self.payload)} opts={self.opts} t={self.time}>")


class Wire:
    """The far end of the cable: collects what the vnet transmits, injects what it receives."""

    def __init__(self, seed: int = 1, **sysctls: int | str) -> None:
        self.kernel = Kernel(clock="virtual", seed=seed)
        self.vnet = self.kernel.create("h")
        ifp, _ = self.kernel.epair()
        ifp.move_to(self.vnet)
        ifp.add_addr(f"{HOST}/24")
        self.vnet.sysctl("net.inet6.ip6.dad_count", 0)  # no IPv6 DAD timer among TCP's
        ifp.set_up(True)
        ifp.peer = self  # what the vnet sends comes to input() below
        self.ifp = ifp
        self.vnet.arp.set_static(ifp, ipv4.aton(PEER), PEER_MAC)
        for name, value in sysctls.items():
            self.vnet.sysctl(f"net.inet.tcp.{name}", value)
        self.frames: list[tuple[int, bytes]] = []
        self.kernel.run(0)
        self.frames.clear()  # gratuitous ARP

    # -- the wire ---------------------------------------------------------------
    def input(self, frame: bytes) -> None:
        self.frames.append((self.kernel.now_ns(), frame))

    def segments(self) -> list[Seg]:
        """The TCP segments sent since the last call (and forget them)."""
        self.kernel.run(0)  # deliver what is still queued
        out = []
        for t, frame in self.frames:
            pkt = Ether(frame)
            if TCP in pkt:
                out.append(Seg(t, pkt))
        self.frames.clear()
        return out

    def one(self) -> Seg:
        segs = self.segments()
        assert len(segs) == 1, segs
        return segs[0]

    def nothing(self) -> None:
        segs = self.segments()
        assert segs == [], segs

    def inject_ip(self, ip_pkt: Any) -> None:
        with self.kernel.sched.cond:  # as the kernel loop would deliver it
            self.ifp.input(bytes(Ether(dst=self.ifp.mac, src=PEER_MAC) / ip_pkt))
        self.kernel.run(0)

    def send(self, flags: str, seq: int, ack: int = 0, window: int = 65535, data: bytes = b"",
             options: list[tuple[str, Any]] | None = None, sport: int = PPORT,
             dport: int = PORT) -> None:
        seg = TCP(sport=sport, dport=dport, seq=seq & MASK, ack=ack & MASK, flags=flags,
                  window=window, options=options or [])
        pkt = IP(src=PEER, dst=HOST) / seg
        if data:
            pkt = pkt / Raw(data)
        self.inject_ip(pkt)

    def run(self, seconds: float = 0.0) -> None:
        self.kernel.run(seconds)

    def now(self) -> int:
        return self.kernel.now_ns()

    @property
    def tcp(self) -> tcpmod.TcpState:
        return self.vnet.tcp

    def socket(self) -> Any:
        return self.vnet.socket(socket.AF_INET, socket.SOCK_STREAM)


FULL_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None),
             ("WScale", 7)]


class Conn:
    """An established connection: our socket `sock` and the remote side's sequence space."""

    def __init__(self, wire: Wire, sock: Any, snd: int, rcv: int, ts: bool) -> None:
        self.wire = wire
        self.sock = sock
        self.snd = snd  # the remote's next sequence number (our RCV.NXT)
        self.rcv = rcv  # our next sequence number as the remote has seen it (our SND.NXT)
        self.ts = ts
        self.tsval = 2000

    @property
    def tcb(self) -> tcpmod.Tcb:
        return self.sock.tcb

    def opts(self, extra: list[tuple[str, Any]] | None = None, tsval: int | None = None,
             tsecr: int = 0) -> list[tuple[str, Any]]:
        out = list(extra or [])
        if self.ts:
            self.tsval += 1
            out.append(("Timestamp", (self.tsval if tsval is None else tsval, tsecr)))
        return out

    def send(self, flags: str = "A", data: bytes = b"", seq: int | None = None,
             ack: int | None = None, window: int = 65535, tsval: int | None = None,
             advance: bool = True, options: list[tuple[str, Any]] | None = None,
             tsecr: int = 0) -> None:
        """A segment from the remote; by default in sequence, acknowledging all we sent."""
        use_seq = self.snd if seq is None else seq
        self.wire.send(flags, use_seq, self.rcv if ack is None else ack, window, data,
                       self.opts(options, tsval, tsecr))
        if advance and seq is None:
            self.snd = (self.snd + len(data) + ("F" in flags)) & MASK


def passive_open(wire: Wire, ts: bool = False, rcvbuf: int | None = None,
                 window: int = 65535, backlog: int = 5,
                 keepalive: bool = False) -> Conn:
    """Listen on PORT, complete a handshake from the remote, accept(); the wire is clean."""
    lsock = wire.socket()
    if rcvbuf is not None:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if keepalive:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    lsock.bind(("", PORT))
    lsock.listen(backlog)
    opts: list[tuple[str, Any]] = [("MSS", 1460), ("SAckOK", b"")]
    if ts:
        opts.append(("Timestamp", (1000, 0)))
    wire.send("S", 5000, 0, window, options=opts)
    synack = wire.one()
    assert synack.flags == "SA"
    wire.run(0.1)  # a 100 ms round trip: with timestamps the RTO becomes
    # SRTT + 4 * RTTVAR + slop = 100 + 4 * 50 + 200 = 500 ms
    ack_opts = [("Timestamp", (1001, synack.opts["Timestamp"][0]))] if ts else []
    wire.send("A", 5001, synack.seq + 1, window, options=ack_opts)
    wire.nothing()
    sock, addr = lsock.accept()
    assert addr == (PEER, PPORT)
    conn = Conn(wire, sock, 5001, (synack.seq + 1) & MASK, ts)
    conn.tsval = 1001
    conn.lsock = lsock  # type: ignore[attr-defined]
    return conn


# -- opening ---------------------------------------------------------------------------------


def test_passive_open_syn_ack_carries_our_options_and_ack_completes():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(5)
    w.send("S", 1000, 0, 8192, options=FULL_OPTS)
    synack = w.one()
    assert synack.flags == "SA"
    assert (synack.sport, synack.dport) == (PORT, PPORT)
    assert synack.ack == 1001
    assert synack.window == 65535  # never scaled in a SYN (RFC 7323 §2.2)
    assert synack.opts["MSS"] == 1460  # the interface MTU minus 40
    assert synack.opts["WScale"] == 1  # 64 KiB buffer: one shift
    assert "SAckOK" in synack.opts
    tsval, tsecr = synack.opts["Timestamp"]
    assert tsecr == 1000
    assert synack.df  # path MTU discovery (RFC 1191): DF on every segment
    tcb = w.tcp.conns[(ipv4.aton(HOST), PORT, ipv4.aton(PEER), PPORT)]
    assert tcb.state_name == "SYN_RCVD"
    # not yet accept()able
    lsock.setblocking(False)
    with pytest.raises(BlockingIOError):
        lsock.accept()
    w.run(0.01)
    w.send("A", 1001, synack.seq + 1, 100, options=[("Timestamp", (1010, tsval))])
    w.nothing()  # the handshake's ACK needs no answer
    sock, addr = lsock.accept()
    assert addr == (PEER, PPORT)
    assert sock.getpeername() == (PEER, PPORT)
    assert sock.getsockname() == (HOST, PORT)
    assert sock.tcb.state_name == "ESTABLISHED"
    assert sock.tcb.snd_wnd == 100 << 7  # the ACK's window is scaled by the peer's shift
    assert sock.tcb.mss == 1460 - 12  # timestamps take 12 bytes of every segment
    assert w.tcp.stats.accepts == 1 and w.tcp.stats.connects == 1


def test_passive_open_without_options_offers_mss_only():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(5)
    w.send("S", 77, 0, 4000)
    synack = w.one()
    assert synack.flags == "SA" and synack.ack == 78
    assert synack.opts == {"MSS": 1460}  # no WS, TS or SACK-permitted unless offered
    w.send("A", 78, synack.seq + 1, 4000)
    sock, _ = lsock.accept()
    tcb = sock.tcb
    assert not (tcb.ws_ok or tcb.ts_ok or tcb.sack_ok)
    assert tcb.mss == 536  # no MSS option: the RFC 9293 default
    assert tcb.snd_wnd == 4000


def test_passive_open_options_off_by_sysctl():
    w = Wire(rfc1323=0, **{"sack.enable": 0})
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(5)
    w.send("S", 1, 0, 4000, options=FULL_OPTS)
    synack = w.one()
    assert synack.opts == {"MSS": 1460}


def test_retransmitted_syn_in_syn_received_gets_the_syn_ack_again():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(5)
    w.send("S", 1000, options=FULL_OPTS)
    first = w.one()
    w.run(0.5)
    w.send("S", 1000, options=FULL_OPTS)  # our SYN-ACK was lost
    again = w.one()
    assert again.flags == "SA"
    assert (again.seq, again.ack) == (first.seq, 1001)
    assert again.opts.keys() == first.opts.keys()


def test_syn_ack_is_retransmitted_with_backoff_then_given_up():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(5)
    w.send("S", 1000)
    first = w.one()
    w.run(14.9)
    segs = w.segments()
    assert all(x.flags == "SA" and x.seq == first.seq for x in segs)
    # a syncache entry (FreeBSD syncache_timer): 1 s initial RTO, doubled each time,
    # net.inet.tcp.syncache.rexmtlimit (3) retransmissions, gone 15 s after the SYN
    assert [x.time - first.time for x in segs] == [1 * S, 3 * S, 7 * S]
    assert len(w.tcp.conns) == 1
    w.run(0.2)
    w.nothing()  # dropped silently: no reset
    assert w.tcp.conns == {}  # the embryo is gone, the listener stays
    assert w.tcp.listeners[PORT][0].syn_q == 0
    assert w.tcp.stats.sc_stale == 1 and w.tcp.stats.sc_retransmitted == 3
    assert w.tcp.stats.sc_added == 1


def test_active_open_sends_syn_with_options_and_acks_the_syn_ack():
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError) as exc:
        s.connect((PEER, 9000))
    assert exc.value.errno == errno.EINPROGRESS
    w.run(0)
    syn = w.one()
    assert syn.flags == "S" and syn.dport == 9000 and syn.ack == 0
    assert syn.window == 65535
    assert syn.opts["MSS"] == 1460
    assert syn.opts["WScale"] == 1
    assert "SAckOK" in syn.opts
    tsval, tsecr = syn.opts["Timestamp"]
    assert tsecr == 0
    assert s.tcb.state_name == "SYN_SENT"
    w.run(0.05)
    w.send("SA", 7000, syn.seq + 1, 30000, sport=9000, dport=syn.sport,
           options=[("MSS", 1000), ("SAckOK", b""), ("Timestamp", (555, tsval)), ("NOP", None),
                    ("WScale", 3)])
    ack = w.one()
    assert ack.flags == "A"
    assert (ack.seq, ack.ack) == (syn.seq + 1, 7001)
    assert ack.window == 65536 >> 1  # scaled by our shift from now on
    assert ack.opts["Timestamp"][1] == 555
    tcb = s.tcb
    assert tcb.state_name == "ESTABLISHED"
    assert tcb.snd_wnd == 30000  # the SYN-ACK's window is not scaled
    assert tcb.mss == 1000 - 12
    assert tcb.snd_wscale == 3 and tcb.rcv_wscale == 1
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert s.getpeername() == (PEER, 9000)
    # the handshake's RTT (50 ms) was measured from the timestamp echo
    assert tcb.srtt == 50 * MS


def test_syn_ack_carrying_data_and_fin_has_an_unscaled_window():
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.send("SAF", 7000, syn.seq + 1, 1000, data=b"early", sport=9000, dport=syn.sport,
           options=[("MSS", 1460), ("NOP", None), ("WScale", 7)])
    ack = w.one()
    assert ack.flags == "A" and ack.ack == 7000 + 1 + 5 + 1
    assert s.tcb.state_name == "CLOSE_WAIT"
    assert s.tcb.snd_wnd == 1000  # RFC 7323 §2.2: a SYN's window is never scaled
    s.setblocking(True)
    assert s.recv(100) == b"early"
    assert s.recv(100) == b""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.send(b"z" * 3000)
    segs = w.segments()
    assert sum(len(x.payload) for x in segs) == 1000


def test_syn_ack_with_a_bad_ack_gets_a_reset_and_the_connect_goes_on():
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.send("SA", 7000, syn.seq + 5, sport=9000, dport=syn.sport)
    rst = w.one()
    assert rst.flags == "R" and rst.seq == syn.seq + 5
    assert s.tcb.state_name == "SYN_SENT"
    # a RST whose ACK is acceptable refuses the connection
    w.send("RA", 0, syn.seq + 1, sport=9000, dport=syn.sport)
    w.nothing()
    s.setblocking(True)
    with pytest.raises(ConnectionRefusedError):
        s.connect((PEER, 9000))


def test_syn_to_a_closed_port_gets_rst_ack():
    w = Wire()
    w.send("S", 1000)
    rst = w.one()
    assert rst.flags == "RA"
    assert (rst.seq, rst.ack) == (0, 1001)
    assert (rst.sport, rst.dport) == (PORT, PPORT)
    w.send("", 2000, data=b"hello")  # no ACK bit: ack = seq + length
    rst = w.one()
    assert rst.flags == "RA" and rst.ack == 2005
    w.send("F", 3000, data=b"ab")  # FIN counts one
    assert w.one().ack == 3003
    assert w.tcp.stats.resets_sent == 3


def test_ack_to_a_closed_port_gets_rst_with_seq_from_the_ack():
    w = Wire()
    w.send("A", 1000, 123456)
    rst = w.one()
    assert rst.flags == "R"
    assert rst.seq == 123456 and rst.ack == 0
    w.send("R", 1000)  # never answer a reset
    w.send("RA", 1000, 5)
    w.nothing()


def test_blackhole_sends_no_resets():
    w = Wire(blackhole=1)
    w.send("S", 1000)
    w.send("A", 1000, 55)
    w.nothing()


def test_simultaneous_open():
    w = Wire()
    s = w.socket()
    s.bind(("", 5555))
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 6666))
    w.run(0)
    syn = w.one()
    assert syn.flags == "S" and syn.sport == 5555
    # the remote connects to us at the same moment: its SYN crosses ours
    w.send("S", 9000, sport=6666, dport=5555, options=[("MSS", 1200)])
    synack = w.one()
    assert synack.flags == "SA"
    assert (synack.seq, synack.ack) == (syn.seq, 9001)
    assert s.tcb.state_name == "SYN_RCVD"
    # its SYN-ACK (answering our SYN) arrives: RFC 9293 figure 7, ESTABLISHED
    w.send("SA", 9000, syn.seq + 1, sport=6666, dport=5555, options=[("MSS", 1200)])
    assert s.tcb.state_name == "ESTABLISHED"
    for seg in w.segments():  # at most an ACK of the duplicate SYN
        assert seg.flags == "A" and (seg.seq, seg.ack) == (syn.seq + 1, 9001)
    s.setblocking(True)
    s.send(b"x" * 2000)
    segs = w.segments()
    assert [len(x.payload) for x in segs] == [1200]  # MSS 1200, Nagle holds the rest
    assert segs[0].seq == syn.seq + 1
    assert s.tcb.snd_wnd == 65535  # no window scaling: neither SYN offered it both ways


# -- closing ---------------------------------------------------------------------------------


def test_half_close_we_send_fin_and_still_receive():
    w = Wire()
    c = passive_open(w)
    c.sock.shutdown(socket.SHUT_WR)
    fin = w.one()
    assert fin.flags == "FA"
    assert (fin.seq, fin.ack) == (c.rcv, c.snd)
    assert c.tcb.state_name == "FIN_WAIT_1"
    with pytest.raises(BrokenPipeError):
        c.sock.send(b"late")
    c.rcv += 1
    c.send("A")  # the remote acknowledges our FIN
    w.nothing()
    assert c.tcb.state_name == "FIN_WAIT_2"
    c.send("PA", b"still talking")
    assert c.sock.recv(100) == b"still talking"
    w.run(1)
    ack = w.one()  # a delayed ACK
    assert ack.flags == "A" and ack.ack == c.snd
    c.send("FA")
    ack = w.one()  # a FIN is acknowledged at once
    assert ack.flags == "A" and ack.ack == c.snd and ack.seq == c.rcv
    assert c.tcb.state_name == "TIME_WAIT"
    assert c.sock.recv(100) == b""


def test_close_wait_and_last_ack():
    w = Wire()
    c = passive_open(w)
    c.send("FA", b"bye")
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd
    assert c.tcb.state_name == "CLOSE_WAIT"
    assert c.sock.recv(10) == b"bye"
    assert c.sock.recv(10) == b""  # EOF, and again
    assert c.sock.recv(10) == b""
    c.sock.send(b"reply")  # the other direction is still open
    data = w.one()
    assert data.payload == b"reply" and data.flags == "PA"
    c.rcv += 5
    c.send("A")
    tcb = c.tcb
    c.sock.close()
    fin = w.one()
    assert fin.flags == "FA" and fin.seq == c.rcv
    assert tcb.state_name == "LAST_ACK"
    c.rcv += 1
    c.send("A")
    w.nothing()
    assert tcb.state_name == "CLOSED"
    assert w.tcp.conns == {}
    assert w.kernel.sched.pending_timers(w.vnet) == 0


def test_simultaneous_close_goes_through_closing():
    w = Wire(msl=1000)
    c = passive_open(w)
    tcb = c.tcb
    c.sock.close()
    fin = w.one()
    assert fin.flags == "FA"
    assert tcb.state_name == "FIN_WAIT_1"
    c.send("FA", ack=fin.seq)  # the remote's FIN crosses ours: it does not ack our FIN
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd and ack.seq == fin.seq + 1
    assert tcb.state_name == "CLOSING"
    c.rcv = fin.seq + 1
    c.send("A")
    assert tcb.state_name == "TIME_WAIT"
    w.nothing()


def test_time_wait_lasts_two_msl():
    w = Wire(msl=1500)
    c = passive_open(w)
    tcb = c.tcb
    c.sock.close()
    fin = w.one()
    c.rcv = fin.seq + 1
    c.send("FA")
    w.one()
    assert tcb.state_name == "TIME_WAIT"
    t0 = w.now()
    key = tcb.key
    w.run(2.999)
    assert w.tcp.conns.get(key) is tcb
    # a retransmitted FIN is acknowledged again ...
    c.send("FA", seq=(c.snd - 1) & MASK)
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd
    assert w.tcp.conns.get(key) is tcb
    # ... and restarts the 2 MSL wait (RFC 9293 §3.10.7.4)
    t1 = w.now()
    w.kernel.run_until(lambda: key not in w.tcp.conns, timeout=10)
    assert w.now() - t1 == 3 * S
    assert w.now() - t0 > 3 * S
    assert tcb.state_name == "CLOSED"
    assert w.kernel.sched.pending_timers(w.vnet) == 0


def test_time_wait_of_two_msl_without_disturbance():
    w = Wire(msl=2000)
    c = passive_open(w)
    c.sock.shutdown(socket.SHUT_WR)
    fin = w.one()
    c.rcv = fin.seq + 1
    c.send("A")
    c.send("FA")
    w.one()
    t0 = w.now()
    key = c.tcb.key
    assert c.tcb.state_name == "TIME_WAIT"
    w.kernel.run_until(lambda: key not in w.tcp.conns, timeout=10)
    assert w.now() - t0 == 4 * S  # 2 * net.inet.tcp.msl
    w.nothing()  # TIME_WAIT ends silently


def test_data_after_close_is_answered_with_a_reset():
    w = Wire()
    c = passive_open(w)
    tcb = c.tcb
    c.sock.close()
    fin = w.one()
    c.rcv = fin.seq + 1
    c.send("A")
    assert tcb.state_name == "FIN_WAIT_2"
    c.send("PA", b"is anybody there?")
    rst = w.one()
    assert "R" in rst.flags and rst.seq == c.rcv
    assert tcb.state_name == "CLOSED" and w.tcp.conns == {}


def test_data_after_shutdown_is_still_received():
    w = Wire()
    c = passive_open(w)
    c.sock.shutdown(socket.SHUT_WR)
    fin = w.one()
    c.rcv = fin.seq + 1
    c.send("PA", b"still welcome")
    assert c.sock.recv(100) == b"still welcome"
    assert c.tcb.state_name == "FIN_WAIT_2"


def test_finwait2_of_a_closed_socket_times_out():
    w = Wire(finwait2_timeout=5000)
    c = passive_open(w)
    tcb = c.tcb
    c.sock.close()
    fin = w.one()
    c.rcv = fin.seq + 1
    c.send("A")
    assert tcb.state_name == "FIN_WAIT_2"
    t0 = w.now()
    w.kernel.run_until(lambda: tcb.state == tcpmod.CLOSED, timeout=60)
    assert w.now() - t0 == 5 * S
    assert w.tcp.conns == {}


# -- resets and RFC 5961 ---------------------------------------------------------------------


def test_rst_at_rcv_nxt_resets_the_connection():
    w = Wire()
    c = passive_open(w)
    c.send("R")
    w.nothing()
    assert c.tcb.state_name == "CLOSED"
    assert w.tcp.stats.resets_rcvd == 1
    with pytest.raises(ConnectionResetError) as exc:
        c.sock.recv(10)
    assert exc.value.errno == errno.ECONNRESET


def test_rst_in_window_but_not_exact_gets_a_challenge_ack():
    w = Wire()
    c = passive_open(w)
    c.send("R", seq=c.snd + 100)
    ack = w.one()
    assert ack.flags == "A" and (ack.seq, ack.ack) == (c.rcv, c.snd)
    assert c.tcb.state_name == "ESTABLISHED"
    assert w.tcp.stats.challenge_acks == 1
    # the genuine peer answers the challenge with an exact RST
    c.send("R", seq=ack.ack)
    assert c.tcb.state_name == "CLOSED"


def test_rst_outside_the_window_is_ignored():
    w = Wire()
    c = passive_open(w)
    c.send("R", seq=c.snd + 70000)
    c.send("R", seq=c.snd - 10)
    w.nothing()
    assert c.tcb.state_name == "ESTABLISHED"
    assert w.tcp.stats.challenge_acks == 0


def test_syn_in_established_gets_a_challenge_ack():
    w = Wire()
    c = passive_open(w)
    c.send("S", seq=c.snd + 5)
    ack = w.one()
    assert ack.flags == "A" and (ack.seq, ack.ack) == (c.rcv, c.snd)
    assert c.tcb.state_name == "ESTABLISHED"
    c.send("S", seq=c.snd - 1000)  # even an old one: RFC 5961 §4.2
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd
    assert c.tcb.state_name == "ESTABLISHED"


def test_challenge_acks_are_rate_limited():
    w = Wire(ack_war_cnt=3)
    c = passive_open(w)
    for i in range(10):
        c.send("R", seq=c.snd + 10 + i)
    assert len(w.segments()) == 3
    assert w.tcp.stats.challenge_acks == 3
    w.run(1.0)  # a new second: a new allowance
    c.send("S", seq=c.snd + 3)
    assert len(w.segments()) == 1
    assert c.tcb.state_name == "ESTABLISHED"


def test_ack_of_unsent_data_is_answered_and_dropped():
    w = Wire()
    c = passive_open(w)
    c.send("PA", b"bogus", ack=c.rcv + 1000)
    ack = w.one()
    assert ack.flags == "A" and (ack.seq, ack.ack) == (c.rcv, c.snd - 5)  # data not taken
    assert w.tcp.stats.rcvacktoomuch == 1
    assert c.tcb.state_name == "ESTABLISHED"


def test_ack_far_below_snd_una_gets_a_challenge_ack():
    w = Wire()
    c = passive_open(w)
    c.send("A", ack=c.rcv - 1_000_000)  # RFC 5961 §5: older than any window we sent
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd
    assert w.tcp.stats.challenge_acks == 1


# -- receiving -------------------------------------------------------------------------------


def test_data_outside_the_window_is_dropped_with_an_ack():
    w = Wire()
    c = passive_open(w)
    c.send("PA", b"x" * 100, seq=c.snd + 70000)
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd
    c.send("PA", b"y" * 100, seq=c.snd - 200)  # an old duplicate
    ack = w.one()
    assert ack.ack == c.snd
    c.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        c.sock.recv(10)
    assert w.tcp.stats.rcvpackafterwin == 1 and w.tcp.stats.rcvduppack == 1
    # and their bytes, as netstat -s prints them (tcps_rcvbyteafterwin, tcps_rcvdupbyte)
    assert w.tcp.stats.rcvbyteafterwin == 100 and w.tcp.stats.rcvdupbyte == 100


def test_out_of_order_segment_is_acked_at_once_with_a_sack_block():
    w = Wire()
    c = passive_open(w)
    base = c.snd
    c.send("A", b"D" * 500, seq=base + 1500)
    ack = w.one()
    assert ack.flags == "A" and ack.ack == base
    assert ack.opts["SAck"] == (base + 1500, base + 2000)
    c.send("A", b"B" * 500, seq=base + 500)
    ack = w.one()
    assert ack.ack == base
    # RFC 2018 §4: the first block holds the segment that arrived last
    assert ack.opts["SAck"] == (base + 500, base + 1000, base + 1500, base + 2000)
    c.send("A", b"C" * 500, seq=base + 1000)  # joins the two blocks
    ack = w.one()
    assert ack.opts["SAck"] == (base + 500, base + 2000)
    # the hole is filled: one ACK for everything, at once, without SACK
    c.send("A", b"A" * 500, seq=base)
    ack = w.one()
    assert ack.ack == base + 2000
    assert "SAck" not in ack.opts
    assert c.sock.recv(5000) == b"A" * 500 + b"B" * 500 + b"C" * 500 + b"D" * 500
    assert w.tcp.stats.rcvoopack == 3


def test_out_of_order_data_beyond_the_window_is_trimmed():
    w = Wire()
    c = passive_open(w, rcvbuf=4000)
    base = c.snd
    c.send("A", b"x" * 1400, seq=base + 3000)
    ack = w.one()
    assert ack.opts["SAck"] == (base + 3000, base + 4000)  # the window ends at +4000
    c.send("A", b"y" * 1000, seq=base + 2000)
    ack = w.one()
    assert ack.opts["SAck"] == (base + 2000, base + 4000)
    c.send("A", b"z" * 1000, seq=base + 1000)
    c.send("A", b"w" * 1000, seq=base)
    ack = w.segments()[-1]
    assert ack.ack == base + 4000 and ack.window == 0
    assert c.sock.recv(10000) == b"w" * 1000 + b"z" * 1000 + b"y" * 1000 + b"x" * 1000


def test_no_sack_blocks_when_sack_was_not_negotiated():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 10, options=[("MSS", 1460)])
    synack = w.one()
    w.send("A", 11, synack.seq + 1)
    sock, _ = lsock.accept()
    w.send("A", 511, synack.seq + 1, data=b"x" * 100)
    ack = w.one()
    assert ack.ack == 11 and "SAck" not in ack.opts
    assert sock.tcb.state_name == "ESTABLISHED"


def test_fin_ahead_of_a_hole_is_held_until_the_hole_fills():
    w = Wire()
    c = passive_open(w)
    base = c.snd
    c.send("FA", seq=base + 100)  # the FIN overtook the last data segment
    ack = w.one()
    assert ack.ack == base
    assert c.tcb.state_name == "ESTABLISHED"
    c.send("PA", b"d" * 100, seq=base)
    ack = w.one()
    assert ack.ack == base + 101  # the data and the FIN, acknowledged at once
    assert c.tcb.state_name == "CLOSE_WAIT"
    assert c.sock.recv(200) == b"d" * 100
    assert c.sock.recv(200) == b""


def test_window_update_after_the_reader_drains_a_full_buffer():
    w = Wire()
    c = passive_open(w, rcvbuf=4096)
    for _ in range(4):
        c.send("A", b"q" * 1024)
    acks = w.segments()
    assert acks[-1].ack == c.snd and acks[-1].window == 0
    assert c.sock.recv(4096) == b"q" * 4096
    upd = w.one()
    assert upd.flags == "A" and upd.ack == c.snd and upd.window == 4096
    assert w.tcp.stats.sndwinup >= 1


def test_window_update_after_the_reader_drains_in_small_reads():
    w = Wire()
    c = passive_open(w, rcvbuf=8192)
    for _ in range(8):
        c.send("A", b"q" * 1024)
    assert w.segments()[-1].window == 0
    got = 0
    while got < 8192:
        got += len(c.sock.recv(512))
    segs = w.segments()
    assert segs, "the window reopened but the peer was never told"
    assert segs[-1].window >= 8192 - 2 * 1460
    # receiver silly window avoidance: no update for less than two segments' worth
    assert all(s.window >= 2 * 1460 for s in segs)


def test_zero_window_persist_probes_back_off_and_resume():
    w = Wire()
    c = passive_open(w)  # RTO 300 ms
    c.sock.send(b"a" * 1000)
    seg = w.one()
    assert len(seg.payload) == 1000
    c.rcv += 1000
    c.send("A", window=0)  # all acked, but the window is closed
    c.sock.send(b"b" * 3000)
    w.nothing()
    rto = max(c.tcb.rto, 30 * MS)
    t0 = w.now()
    w.run(rto * 100 / S)
    probes = w.segments()
    assert len(probes) >= 4
    assert all(len(p.payload) == 1 and p.seq == c.rcv and p.payload == b"b" for p in probes)
    times = [p.time - t0 for p in probes]
    gaps = [b - a for a, b in zip([0, *times], times, strict=False)]
    assert gaps[0] == rto
    assert all(b == 2 * a for a, b in itertools.pairwise(gaps))  # backoff doubles
    assert w.tcp.stats.persisttimeo == len(probes)
    # the window opens: the rest flows at once (the last small piece after an ACK: Nagle)
    c.send("A", window=65535)
    segs = w.segments()
    assert [len(s.payload) for s in segs] == [1460, 1460]
    assert segs[0].seq == c.rcv
    c.rcv += 2920
    c.send("A")
    last = w.one()
    assert last.seq == c.rcv and last.payload == b"b" * 80


def test_persist_backoff_does_not_shorten_the_retransmission_limit():
    w = Wire()
    c = passive_open(w, ts=True)
    c.send("A", window=0)
    c.sock.send(b"b" * 100)
    w.run(60)
    probes = w.segments()
    assert len(probes) >= 6
    c.send("A", window=65535)  # the window opens; from now on the remote is silent
    w.run(2000)
    segs = w.segments()
    assert segs[0].payload == b"b" * 100
    rexmits = [x for x in segs[1:] if x.payload]
    assert len(rexmits) == 12  # TCP_MAXRXTSHIFT, as if there had been no persist episode
    assert "R" in segs[-1].flags


def test_answers_to_window_probes_are_not_duplicate_acks():
    w = Wire()
    c = passive_open(w, ts=True)
    c.send("A", window=0)
    c.sock.send(b"p" * 5000)
    for _ in range(6):  # the remote answers each probe: still no room
        w.kernel.run_until(lambda: bool(w.frames), timeout=100)
        probe = w.one()
        assert len(probe.payload) == 1 and probe.seq == c.rcv
        c.send("A", window=0)
    assert w.tcp.stats.rcvdupack == 0 and w.tcp.stats.fastrexmit == 0
    assert w.tcp.stats.sndrexmitpack == 0
    assert not c.tcb.recovery


def test_persist_probe_byte_accepted_by_the_peer():
    w = Wire()
    c = passive_open(w)
    c.send("A", window=0)
    c.sock.send(b"p" * 2000)
    w.kernel.run_until(lambda: bool(w.frames), timeout=10)
    probe = w.one()
    assert probe.payload == b"p" and probe.seq == c.rcv
    # the window had opened and the update was lost: the remote keeps the probe's byte
    c.rcv += 1
    c.send("A", window=65535)
    segs = w.segments()
    assert segs, "the ACK of the probe byte was rejected"
    assert segs[0].seq == c.rcv
    assert [len(s.payload) for s in segs] == [1460]  # the rest when that is acked (Nagle)
    assert w.tcp.stats.rcvacktoomuch == 0
    assert c.tcb.snd_una == c.rcv


def test_paws_drops_a_segment_with_an_old_timestamp():
    w = Wire()
    c = passive_open(w, ts=True)
    c.send("PA", b"new", tsval=5000)
    assert c.sock.recv(10) == b"new"
    w.segments()
    c.send("PA", b"old", tsval=4000, advance=False)
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd
    assert ack.opts["Timestamp"][1] == 5000  # still echoing the newest
    c.sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        c.sock.recv(10)
    assert w.tcp.stats.rcvduppack == 1
    assert w.tcp.stats.pawsdrop == 1 and w.tcp.stats.rcvdupbyte == 3  # tcps_pawsdrop
    c.send("PA", b"newer", tsval=5001)
    assert c.sock.recv(10) == b"newer"


def test_delayed_ack_one_segment_waits_two_segments_ack_at_once():
    w = Wire(delacktime=40)
    c = passive_open(w)
    t0 = w.now()
    c.send("PA", b"x" * 100)
    w.nothing()
    w.run(0.1)
    ack = w.one()
    assert ack.time - t0 == 40 * MS
    assert ack.ack == c.snd
    assert w.tcp.stats.delack == 1
    c.send("A", b"y" * 100)
    w.nothing()
    c.send("A", b"z" * 100)
    ack = w.one()  # every second segment: at once (RFC 1122, RFC 5681 §4.2)
    assert ack.time == w.now() and ack.ack == c.snd
    w.run(0.1)
    w.nothing()


def test_delayed_ack_off_acks_every_segment():
    w = Wire(delayed_ack=0)
    c = passive_open(w)
    c.send("PA", b"x" * 100)
    ack = w.one()
    assert ack.ack == c.snd


def test_delayed_ack_is_piggybacked_on_data():
    w = Wire()
    c = passive_open(w)
    c.send("PA", b"ping")
    assert c.sock.recv(10) == b"ping"
    c.sock.send(b"pong")
    seg = w.one()
    assert seg.payload == b"pong" and seg.ack == c.snd
    c.rcv += 4
    c.send("A")
    w.run(1)
    w.nothing()


# -- keepalive -------------------------------------------------------------------------------


def keepalive_wire() -> Wire:
    return Wire(keepidle=1000, keepintvl=500, keepcnt=3)


def test_keepalive_probes_then_drop_with_etimedout():
    w = keepalive_wire()
    c = passive_open(w, keepalive=True)
    t0 = w.now()
    w.run(10)
    segs = w.segments()
    probes, rst = segs[:-1], segs[-1]
    assert [p.time - t0 for p in probes] == [1000 * MS, 1500 * MS, 2000 * MS]
    for p in probes:
        assert p.flags == "A" and p.seq == (c.rcv - 1) & MASK and p.payload == b""
    assert rst.time - t0 == 2500 * MS and "R" in rst.flags
    assert w.tcp.stats.keepdrops == 1 and w.tcp.stats.keepprobe == 3
    with pytest.raises(TimeoutError) as exc:
        c.sock.recv(10)
    assert exc.value.errno == errno.ETIMEDOUT


def test_keepalive_answered_keeps_the_connection():
    w = keepalive_wire()
    c = passive_open(w, keepalive=True)
    t0 = w.now()
    for _ in range(20):
        w.kernel.run_until(lambda: bool(w.frames), timeout=5)
        probe = w.one()
        assert probe.flags == "A"
        c.send("A")  # the remote answers every probe
    assert c.tcb.state_name == "ESTABLISHED"
    assert w.tcp.stats.keepdrops == 0
    # an answered probe restarts the idle period: probes come keepidle apart
    assert w.now() - t0 == 20 * 1000 * MS


def test_keepalive_idle_time_restarts_with_traffic():
    w = keepalive_wire()
    c = passive_open(w)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    w.run(0.8)
    c.send("PA", b"hi")
    t1 = w.now()
    w.run(0.9)
    w.segments()  # the delayed ACK
    w.kernel.run_until(lambda: bool(w.frames), timeout=5)
    probe = w.one()
    assert probe.time - t1 == 1000 * MS


def test_keepalive_off_sends_nothing():
    w = keepalive_wire()
    c = passive_open(w)
    w.run(100)
    w.nothing()
    assert c.tcb.state_name == "ESTABLISHED"


# -- SYN cookies -----------------------------------------------------------------------------


def test_syn_cookies_when_the_listen_queue_is_full():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 100, sport=1111)  # an embryo fills the queue
    first = w.one()
    w.send("S", 200, sport=2222, options=[("MSS", 1460)])
    cookie = w.one()
    assert cookie.flags == "SA" and cookie.ack == 201 and cookie.dport == 2222
    assert w.tcp.stats.cookiessent == 1
    assert len(w.tcp.conns) == 1  # no state kept for the second
    w.send("A", 201, cookie.seq + 1, sport=2222)
    assert w.tcp.stats.cookiesrcvd == 1
    lsock.setblocking(False)
    sock, addr = lsock.accept()
    assert addr == (PEER, 2222)
    assert sock.tcb.state_name == "ESTABLISHED"
    assert sock.tcb.mss == 1460
    sock.send(b"from a cookie")
    seg = w.one()
    assert seg.payload == b"from a cookie" and seg.seq == cookie.seq + 1 and seg.ack == 201
    # a forged ACK does not create a connection: it gets a reset
    w.send("A", 301, 123456, sport=3333)
    rst = w.one()
    assert rst.flags == "R" and rst.seq == 123456
    assert w.tcp.stats.cookiesrcvd == 1
    assert first.dport == 1111


def test_a_syn_cookie_offers_our_own_mss():
    w = Wire()
    w.ifp.mtu = 1000
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 100, sport=1111, options=[("MSS", 1460)])
    assert w.one().opts["MSS"] == 960
    w.send("S", 200, sport=2222, options=[("MSS", 1460)])
    cookie = w.one()
    assert w.tcp.stats.cookiessent == 1
    assert cookie.opts["MSS"] == 960  # what we can receive, not an echo of the peer's
    w.send("A", 201, cookie.seq + 1, sport=2222)
    lsock.setblocking(False)
    sock, _ = lsock.accept()
    assert sock.tcb.mss == 960


def cookie_while_an_embryo_completes(w: Wire) -> tuple[Any, Seg]:
    """listen(1): an embryo, a SYN answered with a cookie, then the embryo completes and
    fills the listen queue before the cookie's ACK comes back."""
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 100, sport=1111)
    embryo = w.one()
    w.send("S", 200, sport=2222)
    cookie = w.one()
    assert w.tcp.stats.cookiessent == 1
    w.send("A", 101, embryo.seq + 1, sport=1111)
    w.nothing()
    assert len(w.tcp.listeners[PORT][0].accept_q) == 1
    return lsock, cookie


def test_cookie_ack_with_the_listen_queue_full_is_reset():
    """FreeBSD: syncache_socket() cannot make the socket (sonewconn fails on the full
    queue): a listen queue overflow, and a reset (net.inet.tcp.syncache.rst_on_sock_fail)."""
    w = Wire()
    lsock, cookie = cookie_while_an_embryo_completes(w)
    w.send("A", 201, cookie.seq + 1, sport=2222)
    rst = w.one()
    assert rst.flags == "R" and rst.seq == cookie.seq + 1 and rst.dport == 2222
    assert w.tcp.stats.cookiesrcvd == 1 and w.tcp.stats.listendrop == 1
    assert [t.fport for t in w.tcp.conns.values()] == [1111]


def test_cookie_ack_with_the_listen_queue_full_is_dropped_without_rst_on_sock_fail():
    w = Wire(**{"syncache.rst_on_sock_fail": 0})
    lsock, cookie = cookie_while_an_embryo_completes(w)
    w.send("A", 201, cookie.seq + 1, sport=2222)
    w.nothing()  # dropped: the peer's next segment may find room
    assert w.tcp.stats.listendrop == 1
    lsock.setblocking(False)
    first, _ = lsock.accept()
    w.send("PA", 201, cookie.seq + 1, sport=2222, data=b"again")
    ack = w.one()
    assert ack.flags == "A" and ack.ack == 206 and ack.dport == 2222
    sock, addr = lsock.accept()
    assert addr == (PEER, 2222) and sock.recv(10) == b"again"
    assert w.tcp.stats.cookiesrcvd == 2


def test_without_syn_cookies_an_overflowing_syn_is_dropped():
    w = Wire(syncookies=0)
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 100, sport=1111)
    w.one()
    w.send("S", 200, sport=2222)
    w.nothing()
    assert w.tcp.stats.listendrop == 1
    assert w.tcp.stats.cookiessent == 0


# -- retransmission --------------------------------------------------------------------------


def send_window(c: Conn, segments: int) -> list[Seg]:
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sock.send(b"w" * (1460 * segments))
    segs = c.wire.segments()
    assert [len(x.payload) for x in segs] == [1460] * segments
    return segs


def test_fast_retransmit_with_sack():
    w = Wire()
    c = passive_open(w)
    segs = send_window(c, 8)  # the initial window: 10 * 1460 bytes fit
    una = segs[0].seq
    # the first segment is lost; the next three arrive: three SACKed duplicate ACKs
    for i in range(1, 4):
        c.send("A", ack=una, options=[("SAck", (segs[1].seq, segs[i].seq + 1460))])
    rexmit = w.segments()
    assert rexmit[0].seq == una and len(rexmit[0].payload) == 1460
    assert w.tcp.stats.fastrexmit == 1 and w.tcp.stats.sack_recovery == 1
    assert c.tcb.recovery
    # the retransmission arrives: everything up to the highest SACKed byte is acked
    c.send("A", ack=segs[3].seq + 1460)
    assert c.tcb.recovery  # partial: 4 more segments are still out
    # nothing is SACKed above: RFC 6675 rule 4 sends one rescue retransmission of the
    # highest outstanding segment (the tail of the window may be lost)
    rescue = w.one()
    assert rescue.seq == segs[-1].seq and len(rescue.payload) == 1460
    c.send("A", ack=segs[5].seq + 1460)
    w.nothing()  # one rescue per recovery
    c.send("A", ack=segs[-1].seq + 1460)
    assert not c.tcb.recovery
    assert w.tcp.stats.sndrexmitpack == 2 and w.tcp.stats.sack_rexmits == 2


def test_sack_recovery_fills_every_hole_without_waiting_for_partial_acks():
    w = Wire()
    c = passive_open(w)
    segs = send_window(c, 8)
    una, m = segs[0].seq, 1460
    # segments 0 and 2 are lost: the remote SACKs 1, then 3, 4, 5
    c.send("A", ack=una, options=[("SAck", (una + m, una + 2 * m))])
    for i in (3, 4, 5):
        c.send("A", ack=una, options=[("SAck", (una + 3 * m, una + (i + 1) * m,
                                                una + m, una + 2 * m))])
    rexmits = [x.seq for x in w.segments() if x.payload and x.seq < segs[-1].seq + m]
    assert rexmits[:2] == [una, una + 2 * m]  # both holes, within the same round trip
    assert w.tcp.stats.sack_rexmits == 2


def test_newreno_partial_ack_retransmits_the_next_hole():
    w = Wire(**{"sack.enable": 0})
    c = passive_open(w)
    segs = send_window(c, 8)
    una = segs[0].seq
    for _ in range(3):
        c.send("A", ack=una)
    first = [x for x in w.segments() if x.seq == una]
    assert len(first) == 1  # fast retransmit after the third duplicate ACK
    c.send("A", ack=segs[4].seq)  # segments 0-3 now, 4 was lost as well
    again = [x for x in w.segments() if x.seq == segs[4].seq]
    assert len(again) == 1  # RFC 6582: the partial ACK retransmits the next one at once
    assert w.tcp.stats.sndrexmitpack == 2


def test_spurious_duplicate_acks_with_sack_retransmit_one_segment():
    """Duplicate ACKs without SACK blocks: an empty scoreboard is no evidence of loss, so
    after the fast retransmit the partial ACKs must not resend the whole window; only the
    one rescue retransmission of RFC 6675 goes (the highest segment)."""
    w = Wire()
    c = passive_open(w)
    segs = send_window(c, 8)
    una = segs[0].seq
    for _ in range(3):
        c.send("A", ack=una)
    assert [x.seq for x in w.segments() if x.payload] == [una]
    for seg in segs:
        c.send("A", ack=seg.seq + 1460)
    assert [x.seq for x in w.segments() if x.payload and x.seq <= segs[-1].seq] == [
        segs[-1].seq]
    assert w.tcp.stats.sndrexmitpack == 2


def test_lost_segment_is_retransmitted_after_the_rto_with_backoff_then_etimedout():
    w = Wire()
    c = passive_open(w, ts=True)  # SRTT 100 ms, RTTVAR 50 ms, slop 200 ms: RTO 500 ms
    assert c.tcb.rto == 500 * MS
    c.sock.send(b"lost" * 100)
    first = w.one()
    t0 = first.time
    w.run(1000)
    segs = w.segments()
    rexmits, rst = segs[:-1], segs[-1]
    assert all(s.payload == first.payload and s.seq == first.seq for s in rexmits)
    times = [s.time - t0 for s in rexmits]
    expected, t, rto = [], 0, 500 * MS
    for _ in range(12):
        rto = min(2 * rto, 64 * S) if expected else rto
        t += rto
        expected.append(t)
    assert times == expected  # 500 ms, then doubling, capped at 64 s (RFC 6298 5.5)
    assert "R" in rst.flags
    assert w.tcp.stats.rexmttimeo == 13 and w.tcp.stats.timeoutdrop == 1
    assert w.tcp.stats.sndrexmitpack == 12
    with pytest.raises(TimeoutError) as exc:
        c.sock.send(b"more")
    assert exc.value.errno == errno.ETIMEDOUT


def test_retransmission_acked_restores_normal_operation():
    w = Wire()
    c = passive_open(w, ts=True)
    c.sock.send(b"a" * 100)
    w.one()
    w.run(0.5)
    again = w.one()
    assert again.payload == b"a" * 100
    c.rcv += 100
    c.send("A")
    assert c.tcb.snd_una == c.tcb.snd_max and c.tcb.rexmt_shift == 0
    w.run(5)
    w.nothing()
    assert w.kernel.sched.pending_timers(w.vnet) == 0


def test_a_lone_segment_waits_for_a_delayed_ack_without_retransmission():
    w = Wire()
    c = passive_open(w, ts=True)
    for _ in range(40):  # a 1 ms path: SRTT and RTTVAR become small
        c.sock.send(b"q")
        seg = w.one()
        w.run(0.001)
        c.rcv += 1
        c.send("A", tsecr=seg.opts["Timestamp"][0])
    assert c.tcb.srtt <= 2 * MS
    assert c.tcb.srtt + 4 * c.tcb.rttvar < 40 * MS  # RFC 6298 alone would undercut 40 ms
    c.sock.send(b"lonely")
    w.one()
    w.run(0.04)  # the remote's delayed ACK timer (40 ms) runs out
    w.nothing()  # ... before our RTO: no spurious retransmission
    c.rcv += 6
    c.send("A")
    assert w.tcp.stats.sndrexmitpack == 0
    assert c.tcb.rto >= 200 * MS  # net.inet.tcp.rexmit_slop


def test_connect_to_a_silent_host_times_out():
    w = Wire(keepinit=20000)
    s = w.socket()
    t0 = w.now()
    with pytest.raises(TimeoutError) as exc:
        s.connect((PEER, 9000))
    assert exc.value.errno == errno.ETIMEDOUT
    assert w.now() - t0 == 20 * S  # net.inet.tcp.keepinit
    syns = w.segments()
    assert all(x.flags == "S" for x in syns)
    assert [x.time - t0 for x in syns] == [0, 1 * S, 3 * S, 7 * S, 15 * S]
    assert len({x.seq for x in syns}) == 1
    assert w.kernel.sched.pending_timers(w.vnet) == 0


def test_connect_to_a_silent_host_gives_up_after_the_syn_retries():
    w = Wire()
    s = w.socket()
    t0 = w.now()
    with pytest.raises(TimeoutError):
        s.connect((PEER, 9000))
    syns = w.segments()
    assert [x.time - t0 for x in syns] == [0, 1 * S, 3 * S, 7 * S, 15 * S, 31 * S, 63 * S]
    assert w.now() - t0 == 75 * S  # keepinit's default, 75 s, comes before the 7th retry


def test_connect_timeout_by_settimeout_keeps_trying_in_background():
    w = Wire()
    s = w.socket()
    s.settimeout(2.5)
    with pytest.raises(TimeoutError):
        s.connect((PEER, 9000))
    assert w.now() == int(2.5 * S)
    assert len(w.segments()) == 2  # at 0 and 1 s
    assert s.tcb.state_name == "SYN_SENT"
    w.run(1)
    assert len(w.segments()) == 1  # at 3 s


# -- ICMP ------------------------------------------------------------------------------------


def icmp_about(seg: Seg, type_: int, code: int, mtu: int = 0) -> Any:
    quoted = bytes(seg.ip)[:28]
    icmp = ICMP(type=type_, code=code, nexthopmtu=mtu) if mtu else ICMP(type=type_, code=code)
    return IP(src=PEER, dst=HOST) / icmp / Raw(quoted)


def test_icmp_port_unreachable_refuses_a_connect():
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.inject_ip(icmp_about(syn, 3, 3))
    assert s.tcb.state_name == "CLOSED"
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    assert w.kernel.sched.pending_timers(w.vnet) == 0


def test_icmp_host_unreachable_is_a_soft_error_during_connect():
    w = Wire(keepinit=10000)
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.inject_ip(icmp_about(syn, 3, 1))
    assert s.tcb.state_name == "SYN_SENT"  # it may still get through
    s.setblocking(True)
    with pytest.raises(OSError) as exc:
        s.connect((PEER, 9000))
    assert exc.value.errno == errno.EHOSTUNREACH  # reported when the connect gives up


def test_icmp_port_unreachable_is_ignored_while_established():
    w = Wire()
    c = passive_open(w)
    c.sock.send(b"data")
    seg = w.one()
    w.inject_ip(icmp_about(seg, 3, 3))
    assert c.tcb.state_name == "ESTABLISHED"
    c.rcv += 4
    c.send("A", b"ok")
    assert c.sock.recv(10) == b"ok"


def test_icmp_needfrag_lowers_the_mss_and_resends():
    w = Wire()
    c = passive_open(w)
    c.sock.send(b"m" * 3000)
    segs = w.segments()
    assert [len(s.payload) for s in segs] == [1460, 1460]  # Nagle holds the last 80
    assert all(s.df for s in segs)
    w.inject_ip(icmp_about(segs[0], 3, 4, mtu=1000))
    assert c.tcb.mss == 960
    assert w.tcp.stats.pmtud_updates == 1
    again = w.segments()
    assert again and again[0].seq == segs[0].seq and len(again[0].payload) == 960
    assert all(len(s.payload) <= 960 for s in again)
    # an ICMP quoting a sequence number that is not in flight is ignored (RFC 5927)
    fake = icmp_about(segs[0], 3, 4, mtu=600)
    fake[Raw].load = fake[Raw].load[:24] + struct.pack("!I", (c.rcv + 100000) & MASK)
    w.inject_ip(fake)
    assert c.tcb.mss == 960


def test_no_df_without_path_mtu_discovery():
    w = Wire(path_mtu_discovery=0)
    c = passive_open(w)
    c.sock.send(b"m" * 100)
    assert not w.one().df


# -- TIME_WAIT: RFC 1337 and recycling by a new SYN (RFC 6191, FreeBSD tcp_twcheck) ---------


def into_time_wait(w: Wire, ts: bool = False) -> Conn:
    """Our side closes first: the connection ends in TIME_WAIT; the listener stays."""
    c = passive_open(w, ts=ts)
    c.sock.close()
    fin = w.one()
    c.rcv = fin.seq + 1
    c.send("FA")
    w.one()
    assert c.tcb.state_name == "TIME_WAIT"
    return c


def test_time_wait_ignores_resets():
    """RFC 1337 (TIME-WAIT assassination): a reset, even at RCV.NXT, changes nothing."""
    w = Wire(msl=1000)
    c = into_time_wait(w)
    tcb, key = c.tcb, c.tcb.key
    t0 = w.now()
    c.send("R")
    c.send("RA", seq=c.snd + 10)
    w.nothing()
    assert w.tcp.conns.get(key) is tcb and tcb.state_name == "TIME_WAIT"
    assert w.tcp.stats.resets_rcvd == 0
    w.kernel.run_until(lambda: key not in w.tcp.conns, timeout=10)
    assert w.now() - t0 == 2 * S  # 2 MSL as if nothing had come


def test_new_syn_beyond_rcv_nxt_recycles_time_wait():
    w = Wire(msl=30000)
    c = into_time_wait(w)
    old = c.tcb
    w.send("S", c.snd + 100000, options=[("MSS", 1460)])  # the same 4-tuple, a new ISN
    synack = w.one()
    assert synack.flags == "SA" and synack.ack == c.snd + 100001
    assert old.state_name == "CLOSED"
    new = w.tcp.conns[old.key]
    assert new is not old and new.state_name == "SYN_RCVD"
    w.send("A", c.snd + 100001, synack.seq + 1)
    sock, addr = c.lsock.accept()
    assert addr == (PEER, PPORT) and sock.tcb is new and new.state_name == "ESTABLISHED"


def test_old_syn_in_time_wait_is_dropped():
    """A SYN at or below RCV.NXT may be an old duplicate: FreeBSD drops it (no ACK flag)."""
    w = Wire(msl=1000)
    c = into_time_wait(w)
    tcb = c.tcb
    w.send("S", c.snd - 1)
    w.send("S", c.snd)
    w.nothing()
    assert w.tcp.conns[tcb.key] is tcb and tcb.state_name == "TIME_WAIT"


def test_syn_with_a_newer_timestamp_recycles_time_wait():
    """RFC 6191: with timestamps, a newer TSval is proof enough, whatever the ISN."""
    w = Wire(msl=30000)
    c = into_time_wait(w, ts=True)
    old = c.tcb
    recent = old.ts_recent
    # an older timestamp does not recycle, even with a sequence number beyond RCV.NXT
    w.send("S", c.snd + 5000, options=[("MSS", 1460), ("Timestamp", (recent - 1, 0))])
    w.nothing()
    assert w.tcp.conns[old.key] is old
    # a newer one does, even with a sequence number below RCV.NXT
    w.send("S", c.snd - 5000, options=[("MSS", 1460), ("Timestamp", (recent + 1, 0))])
    synack = w.one()
    assert synack.flags == "SA" and synack.ack == c.snd - 4999
    assert w.tcp.conns[old.key] is not old and old.state_name == "CLOSED"


def test_time_wait_acks_what_is_not_a_plain_duplicate_ack():
    w = Wire(msl=1000)
    c = into_time_wait(w)
    c.send("A")  # the peer's duplicate ACK: nothing to say
    w.nothing()
    c.send("PA", b"late", advance=False)
    ack = w.one()
    assert ack.flags == "A" and ack.ack == c.snd and ack.seq == c.rcv
    c.send("A", ack=c.rcv + 7)  # an ACK of something we never sent
    assert w.one().ack == c.snd


# -- SO_LINGER (FreeBSD soclose) ---------------------------------------------------------------


def linger(sock: Any, seconds: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, seconds))


def frame_from_peer(w: Wire, flags: str, seq: int, ack: int) -> bytes:
    pkt = IP(src=PEER, dst=HOST) / TCP(sport=PPORT, dport=PORT, seq=seq & MASK, ack=ack & MASK,
                                       flags=flags, window=65535)
    return bytes(Ether(dst=w.ifp.mac, src=PEER_MAC) / pkt)


def test_linger_close_blocks_until_the_fin_is_acked():
    w = Wire()
    c = passive_open(w)
    tcb = c.tcb
    linger(c.sock, 10)
    c.sock.send(b"last words")
    data = w.one()
    # the peer acknowledges the data and our FIN 300 ms from now
    ack = frame_from_peer(w, "A", c.snd, data.seq + len(data.payload) + 1)
    w.kernel.call_later(0.3, w.ifp.input, ack)
    t0 = w.now()
    c.sock.close()
    assert w.now() - t0 == 300 * MS  # returned when the FIN was acknowledged
    assert tcb.state_name == "FIN_WAIT_2"
    assert [s.flags for s in w.segments()] == ["FA"]


def test_linger_close_returns_after_the_linger_time_and_the_connection_goes_on():
    w = Wire()
    c = passive_open(w)
    tcb = c.tcb
    linger(c.sock, 2)
    c.sock.send(b"x" * 100)
    t0 = w.now()
    c.sock.close()  # nobody acknowledges anything
    assert w.now() - t0 == 2 * S
    assert tcb.state_name == "FIN_WAIT_1" and tcb.sock is None
    w.segments()
    w.run(5)
    assert any(s.payload == b"x" * 100 for s in w.segments())  # still retransmitting


def test_linger_close_of_a_non_blocking_socket_returns_at_once():
    w = Wire()
    c = passive_open(w)
    linger(c.sock, 10)
    c.sock.send(b"x" * 100)
    c.sock.setblocking(False)
    t0 = w.now()
    c.sock.close()
    assert w.now() == t0
    assert c.tcb.state_name == "FIN_WAIT_1"


def test_linger_close_of_a_socket_with_a_timeout_returns_at_once():
    """As CPython on FreeBSD: a socket with a timeout is non-blocking underneath."""
    w = Wire()
    c = passive_open(w)
    linger(c.sock, 10)
    c.sock.settimeout(5.0)
    c.sock.send(b"x" * 100)
    t0 = w.now()
    c.sock.close()
    assert w.now() == t0


# -- soft errors (FreeBSD t_softerror) ---------------------------------------------------------


def test_connect_to_a_dead_neighbour_fails_with_ehostdown():
    """No ARP reply: ip output says EHOSTDOWN for the SYN retransmissions while the ARP entry
    is down, and the connect that times out (keepinit) reports that instead of ETIMEDOUT."""
    w = Wire()
    s = w.socket()
    t0 = w.now()
    with pytest.raises(OSError) as exc:
        s.connect(("10.0.0.3", 9000))
    assert exc.value.errno == errno.EHOSTDOWN
    assert w.now() - t0 == 75 * S  # net.inet.tcp.keepinit
    assert w.tcp.stats.keeptimeo == 1


def test_connect_through_a_dead_gateway_fails_with_ehostunreach():
    w = Wire(keepinit=30000)
    w.vnet.cmd("route add default 10.0.0.254")
    s = w.socket()
    with pytest.raises(OSError) as exc:
        s.connect(("192.0.2.1", 9000))
    assert exc.value.errno == errno.EHOSTUNREACH  # as FreeBSD's arpresolve for a gateway


def test_established_connection_to_a_vanished_neighbour_reports_ehostdown():
    w = Wire()
    c = passive_open(w)
    w.vnet.arp.delete(ipv4.aton(PEER))  # the peer is gone: ARP will not resolve it again
    c.sock.send(b"anyone?")
    w.kernel.run_until(lambda: c.tcb.state == tcpmod.CLOSED, timeout=3600)
    assert w.tcp.stats.timeoutdrop == 1
    with pytest.raises(OSError) as exc:
        c.sock.recv(10)
    assert exc.value.errno == errno.EHOSTDOWN


def test_soft_error_is_not_so_error_while_connecting():
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.inject_ip(icmp_about(syn, 3, 1))
    assert s.tcb.softerror == errno.EHOSTUNREACH
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # still connecting
    assert s.tcb.state_name == "SYN_SENT"


def test_second_icmp_error_after_four_syn_retransmissions_aborts_the_connect():
    """FreeBSD tcp_notify: a connection not yet established that has retransmitted more
    than 3 times and already has a soft error gives up at the next ICMP error."""
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.run(15)  # SYNs at 1, 3, 7, 15 s: four retransmissions
    assert s.tcb.rexmt_shift == 4
    w.inject_ip(icmp_about(syn, 3, 1))
    assert s.tcb.state_name == "SYN_SENT"  # the first only records the error
    w.inject_ip(icmp_about(syn, 3, 0))
    assert s.tcb.state_name == "CLOSED"
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.EHOSTUNREACH


def test_an_rtt_sample_clears_the_soft_error():
    w = Wire()
    c = passive_open(w)
    c.sock.send(b"ping")
    seg = w.one()
    w.inject_ip(icmp_about(seg, 3, 3))  # port unreachable: a soft error while established
    assert c.tcb.softerror == errno.ECONNREFUSED and c.tcb.state_name == "ESTABLISHED"
    c.rcv += 4
    c.send("A")  # the timed segment is acknowledged: the path works
    assert c.tcb.softerror == 0


# -- counters ------------------------------------------------------------------------------------


def test_data_counters_separate_new_data_from_retransmissions():
    """FreeBSD: sndpack/sndbyte count new data only, sndrexmitpack/byte the resent data,
    sndprobe the window probes."""
    w = Wire()
    c = passive_open(w)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sock.send(b"a" * 1000)
    c.sock.send(b"b" * 300)
    assert len(w.segments()) == 2
    st = w.tcp.stats
    assert (st.sndpack, st.sndbyte, st.sndrexmitpack, st.sndrexmitbyte) == (2, 1300, 0, 0)
    w.run(1.0)  # the RTO (500 ms) resends from SND.UNA, one segment, then backs off
    again = w.one()
    assert again.payload == b"a" * 1000 + b"b" * 300
    assert (st.sndpack, st.sndbyte, st.sndrexmitpack, st.sndrexmitbyte) == (2, 1300, 1, 1300)
    c.rcv += 1300
    c.send("A", window=0)  # all acknowledged, and the window closes
    c.sock.send(b"c" * 10)
    w.run(1.0)
    probe = w.one()
    assert len(probe.payload) == 1 and st.sndprobe == 1
    assert (st.sndpack, st.sndbyte, st.sndrexmitpack) == (2, 1300, 1)
    out = w.vnet.cmd("netstat -s -p tcp").output
    # inet.c's p2 lines: packets and their bytes on one line
    assert "\t\t2 data packets (1300 bytes)\n" in out
    assert "\t\t1 data packet (1300 bytes) retransmitted\n" in out
    assert "\t1 window probe packet\n" in out
    assert st.rcvwinupd == 0  # ACKs of new data are no window update packets
    c.send("A")  # the window opens again (the probe byte was dropped): a pure update
    assert st.rcvwinupd == 1
    assert w.one().payload == b"c" * 10  # from the probe byte on: counted as resent
    assert (st.sndpack, st.sndrexmitpack, st.sndrexmitbyte) == (2, 2, 1310)


# -- RTT from the handshake (RFC 6298) -----------------------------------------------------------


def test_passive_open_without_timestamps_times_the_syn_ack():
    w = Wire()
    c = passive_open(w)  # no timestamps; the ACK of our SYN-ACK came 100 ms later
    assert not c.tcb.ts_ok
    assert c.tcb.srtt == 100 * MS and c.tcb.rttvar == 50 * MS
    assert c.tcb.rto == 500 * MS  # 100 + 4 * 50 + 200 (slop)
    assert w.tcp.stats.rttupdated == 1


def test_a_retransmitted_syn_ack_is_not_timed():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 1000)
    synack = w.one()
    w.run(1.0)
    assert w.one().flags == "SA"  # the SYN-ACK again (RTO 1 s): Karn's rule
    w.run(0.05)
    w.send("A", 1001, synack.seq + 1)
    sock, _ = lsock.accept()
    assert sock.tcb.srtt == 0 and w.tcp.stats.rttupdated == 0


def test_active_open_without_timestamps_times_the_syn():
    w = Wire()
    s = w.socket()
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.connect((PEER, 9000))
    w.run(0)
    syn = w.one()
    w.run(0.08)
    w.send("SA", 7000, syn.seq + 1, sport=9000, dport=syn.sport, options=[("MSS", 1460)])
    assert s.tcb.state_name == "ESTABLISHED" and not s.tcb.ts_ok
    assert s.tcb.srtt == 80 * MS and s.tcb.rto == (80 + 160 + 200) * MS


# -- D-SACK (RFC 2883) -------------------------------------------------------------------------


def test_a_duplicate_segment_is_reported_in_the_first_sack_block():
    w = Wire()
    c = passive_open(w)
    base = c.snd
    c.send("PA", b"a" * 500)
    c.send("PA", b"b" * 500)
    w.one()  # the ACK of two segments
    c.send("PA", b"a" * 500, seq=base)  # the first again: a spurious retransmission
    ack = w.one()
    assert ack.ack == base + 1000
    assert ack.opts["SAck"] == (base, base + 500)  # below the ACK: a D-SACK block
    assert w.tcp.stats.rcvduppack == 1
    c.send("PA", b"c" * 100)
    w.run(1)
    assert "SAck" not in w.one().opts  # reported once


def test_a_partial_duplicate_reports_the_duplicated_part():
    w = Wire()
    c = passive_open(w)
    base = c.snd
    c.send("PA", b"a" * 500)
    w.run(1)
    w.one()
    c.snd = base + 300
    c.send("PA", b"a" * 200 + b"n" * 300)  # 200 old bytes, 300 new ones
    ack = w.one()  # at once, not delayed
    assert ack.ack == base + 800
    assert ack.opts["SAck"] == (base + 300, base + 500)
    assert c.sock.recv(1000) == b"a" * 500 + b"n" * 300


def test_a_duplicate_of_out_of_order_data_comes_first_then_its_block():
    w = Wire()
    c = passive_open(w)
    base = c.snd
    c.send("A", b"x" * 500, seq=base + 1000)
    c.send("A", b"y" * 500, seq=base + 2000)
    w.segments()
    c.send("A", b"x" * 500, seq=base + 1000)  # the first out-of-order segment again
    ack = w.one()
    assert ack.ack == base
    assert ack.opts["SAck"] == (base + 1000, base + 1500, base + 1000, base + 1500,
                                base + 2000, base + 2500)
    assert len(c.tcb.ooo) == 2  # not queued twice


def test_no_d_sack_without_sack():
    w = Wire()
    lsock = w.socket()
    lsock.bind(("", PORT))
    lsock.listen(1)
    w.send("S", 10, options=[("MSS", 1460)])
    synack = w.one()
    w.send("A", 11, synack.seq + 1)
    sock, _ = lsock.accept()
    w.send("PA", 11, synack.seq + 1, data=b"z" * 100)
    w.run(1)
    w.one()
    w.send("PA", 11, synack.seq + 1, data=b"z" * 100)
    ack = w.one()
    assert ack.ack == 111 and "SAck" not in ack.opts


def test_d_sack_acks_are_not_duplicate_acks():
    """RFC 6675 §2: a duplicate ACK must SACK new data; three ACKs that only report
    duplicates (the network duplicated our segments) start no recovery."""
    w = Wire()
    c = passive_open(w)
    segs = send_window(c, 4)
    una = segs[0].seq
    c.send("A", ack=una + 1460)
    for _ in range(3):
        c.send("A", ack=una + 1460, options=[("SAck", (una, una + 1460))])
    assert w.tcp.stats.fastrexmit == 0 and not c.tcb.recovery
    assert [s for s in w.segments() if s.payload] == []


# -- SACK loss recovery (RFC 6675) ---------------------------------------------------------------


def sack_opt(*blocks: tuple[int, int]) -> list[tuple[str, Any]]:
    return [("SAck", tuple(edge for block in blocks for edge in block))]


def test_is_lost_by_three_sacked_blocks_starts_recovery_at_once():
    """IsLost(): three discontiguous SACKed blocks above a hole declare it lost even when
    they hold fewer than two segments of data, on the first ACK that shows them."""
    w = Wire(**{"cc.algorithm": "newreno"})
    c = passive_open(w)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seqs = []
    for _ in range(6):
        c.sock.send(b"s" * 100)
        seqs.append(w.one().seq)
    # 0, 2 and 4 lost; 1, 3 and 5 arrive: one ACK with three blocks
    c.send("A", ack=seqs[0], options=sack_opt((seqs[5], seqs[5] + 100),
                                              (seqs[3], seqs[3] + 100),
                                              (seqs[1], seqs[1] + 100)))
    assert c.tcb.recovery and w.tcp.stats.fastrexmit == 1
    rexmits = [(s.seq, len(s.payload)) for s in w.segments()]
    # 0 is lost (rule 1); 2 and 4 are below SACKed data and nothing else can go (rule 3)
    assert rexmits == [(seqs[0], 100), (seqs[2], 100), (seqs[4], 100)]
    assert w.tcp.stats.sack_rexmits == 3 and w.tcp.stats.sack_rexmit_bytes == 300


def test_pipe_limits_what_recovery_sends():
    """NewReno halves the window to 6 segments; the pipe counts un-SACKed segments that are
    not lost plus retransmissions, and a segment goes only when cwnd - pipe >= 1 MSS."""
    w = Wire(**{"cc.algorithm": "newreno"})
    c = passive_open(w)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    m = 1460
    c.sock.send(b"p" * (20 * m))  # 10 segments go (the initial window), 10 wait
    segs = w.segments()
    assert len(segs) == 10
    una = segs[0].seq

    def seg(i: int) -> int:
        return una + i * m

    # segment 0 is lost; 1 and 2 are SACKed: limited transmit sends 10 and 11
    c.send("A", ack=una, options=sack_opt((seg(1), seg(2))))
    c.send("A", ack=una, options=sack_opt((seg(1), seg(3))))
    assert [s.seq for s in w.segments()] == [seg(10), seg(11)]
    # 1-3 SACKed: segment 0 is lost; cwnd = ssthresh = 12 segments in flight / 2 = 6
    c.send("A", ack=una, options=sack_opt((seg(1), seg(4))))
    assert [s.seq for s in w.segments()] == [seg(0)]
    assert c.tcb.cc.cwnd == 6 * m
    assert set_pipe(c.tcb) == 9 * m  # segments 4-11 and the retransmission of 0
    for i in (4, 5, 6):  # the pipe drains to 8, 7, 6 segments: nothing may go
        c.send("A", ack=una, options=sack_opt((seg(1), seg(i + 1))))
        assert w.segments() == []
    c.send("A", ack=una, options=sack_opt((seg(1), seg(8))))
    assert [s.seq for s in w.segments()] == [seg(12)]  # pipe 5: one new segment (rule 2)
    assert set_pipe(c.tcb) == 6 * m


def test_rescue_retransmission_repairs_a_lost_tail():
    """The last two segments and the first are lost and nothing new is to be sent: after
    the partial ACK, rule 4 resends the highest segment, whose SACK then shows the other
    hole (rule 3): no retransmission timeout is needed."""
    w = Wire()
    c = passive_open(w)
    segs = send_window(c, 8)
    una, m = segs[0].seq, 1460
    for i in (3, 4, 5, 6):  # 1-5 arrive (6 and 7 are lost): recovery after three
        c.send("A", ack=una, options=sack_opt((una + m, una + i * m)))
    assert [s.seq for s in w.segments()] == [una]
    assert c.tcb.recovery
    t0 = w.now()
    c.send("A", ack=una + 6 * m)  # the retransmission of 0 arrived
    rescue = w.one()
    assert rescue.seq == una + 7 * m and rescue.time == t0  # the highest segment, at once
    c.send("A", ack=una + 6 * m, options=sack_opt((una + 7 * m, una + 8 * m)))
    assert [s.seq for s in w.segments()] == [una + 6 * m]  # the hole the rescue revealed
    c.send("A", ack=una + 8 * m)
    assert not c.tcb.recovery
    assert w.tcp.stats.rexmttimeo == 0 and w.tcp.stats.sack_rexmits == 3


def test_no_new_recovery_before_the_last_one_is_over():
    """After a timeout, duplicate ACKs for data sent before it start no fast retransmit
    (RFC 6582 §3.2 step 2, RFC 6675 §5: RecoveryPoint)."""
    w = Wire()
    c = passive_open(w)  # the handshake timed: RTO 500 ms
    segs = send_window(c, 8)
    una, m = segs[0].seq, 1460
    w.run(0.5)  # the RTO: back to SND.UNA
    assert w.tcp.stats.rexmttimeo == 1
    w.segments()
    for i in (2, 3, 4):
        c.send("A", ack=una, options=sack_opt((una + m, una + i * m)))
    assert w.tcp.stats.fastrexmit == 0 and not c.tcb.recovery


def test_resending_after_a_timeout_skips_what_the_receiver_sacked():
    """RFC 6675 §5.1: the scoreboard is dropped at the timeout, but the SACK blocks of the
    ACKs that follow are used to fill in only the missing data."""
    w = Wire()
    c = passive_open(w)
    segs = send_window(c, 6)
    una, m = segs[0].seq, 1460
    w.run(0.5)  # 0 and 1 were lost, the ACKs for 2-5 too: the RTO resends 0
    assert [s.seq for s in w.segments()] == [una]
    assert c.tcb.sacked == []
    c.send("A", ack=una + m, options=sack_opt((una + 2 * m, una + 6 * m)))
    assert [s.seq for s in w.segments()] == [una + m]  # 1 only, not 2 again
    c.send("A", ack=una + 6 * m)
    assert c.tcb.snd_una == c.tcb.snd_max
    assert w.tcp.stats.sndrexmitpack == 2
