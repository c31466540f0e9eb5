"""Bulk TCP transfers between vnets over impaired links, verified byte for byte.

Both ends use non-blocking sockets driven by one loop (`pump`) in virtual time: it
writes and reads what it can, then lets the kernel run until some socket can make
progress again. The counters show which recovery mechanisms were used.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from vimage import topo
from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.netinet.tcp import CLOSED
from vimage.netinet.tcp.seq import seq_gt
from vimage.topo import connect
from vimage.wire import tcp as wtcp

A, B = "10.0.0.1", "10.0.0.2"
KB = 1024
MB = 1024 * 1024
S = 1_000_000_000
MS = 1_000_000


@dataclass
class Flow:
    src: Any
    dst: Any
    data: bytes
    sent: int = 0
    got: bytearray = field(default_factory=bytearray)
    shut: bool = False
    eof: bool = False

    def can_progress(self) -> bool:
        tx, rx = self.src.tcb, self.dst.tcb
        if not self.shut and len(tx.snd_buf) < tx.snd_space:
            return True
        return bool(rx.rcv_buf) or (rx.fin_rcvd and not self.eof) or rx.state == CLOSED


def pump(kernel: Kernel, flows: list[Flow], timeout: float = 600.0) -> float:
    """Move every flow's data to its destination, then EOF; the virtual seconds it took."""
    start = kernel.now_ns()
    deadline = start + int(timeout * S)
    for f in flows:
        f.src.setblocking(False)
        f.dst.setblocking(False)
    while not all(f.eof for f in flows):
        moved = False
        for f in flows:
            if not f.shut:
                if f.sent < len(f.data):
                    try:
                        n = f.src.send(f.data[f.sent:f.sent + 256 * KB])
                        f.sent += n
                        moved = moved or n > 0
                    except BlockingIOError:
                        pass
                if f.sent == len(f.data):
                    f.src.shutdown(socket.SHUT_WR)
                    f.shut = moved = True
            if not f.eof:
                try:
                    chunk = f.dst.recv(1 << 20)
                except BlockingIOError:
                    continue
                if chunk:
                    f.got += chunk
                else:
                    f.eof = True
                moved = True
        if not moved:
            left = deadline - kernel.now_ns()
            assert left > 0, "transfer stalled"
            kernel.run_until(lambda: any(f.can_progress() for f in flows), timeout=left / S)
    for f in flows:
        assert len(f.got) == len(f.data)
        assert bytes(f.got) == f.data  # byte for byte
    return (kernel.now_ns() - start) / S


class Link:
    """Two vnets on one epair, both ends impaired alike, sysctls set on both sides."""

    def __init__(self, seed: int = 1, sysctls: dict[str, Any] | None = None,
                 **impair: Any) -> None:
        self.k = Kernel(clock="virtual", seed=seed)
        self.a = self.k.create("a")
        self.b = self.k.create("b")
        for v in (self.a, self.b):
            for name, value in (sysctls or {}).items():
                v.sysctl(f"net.inet.tcp.{name}", value)
        self.ifa, self.ifb = connect(self.a, f"{A}/24", self.b, f"{B}/24")
        if impair:
            self.ifa.impair(**impair)
            self.ifb.impair(**impair)
        self.k.run(0)
        self.rng = random.Random(seed)

    def payload(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def sockets(self, port: int = 5001, bufsize: int | None = None) -> tuple[Any, Any]:
        srv = self.b.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bufsize:
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        srv.bind(("", port))
        srv.listen(1)
        cli = self.a.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bufsize:
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, bufsize)
            cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, bufsize)
        cli.settimeout(120)
        cli.connect((B, port))
        conn, _ = srv.accept()
        srv.close()
        return cli, conn

    def stats(self, name: str) -> int:
        return getattr(self.a.tcp.stats, name) + getattr(self.b.tcp.stats, name)

    def no_faults(self) -> None:
        assert self.k.sched.errors == 0, self.k.sched.last_error


def one_way(link: Link, size: int) -> float:
    cli, conn = link.sockets()
    return pump(link.k, [Flow(cli, conn, link.payload(size)), Flow(conn, cli, b"")])


def both_ways(link: Link, size: int) -> float:
    cli, conn = link.sockets()
    return pump(link.k, [Flow(cli, conn, link.payload(size)),
                         Flow(conn, cli, link.payload(size))])


LINK = {"bandwidth": "20Mbit/s", "delay": "5ms", "queue": 100}


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_clean_link_both_directions(cc):
    link = Link(sysctls={"cc.algorithm": cc}, **LINK)
    secs = both_ways(link, 2 * MB)
    assert link.stats("sndrexmitpack") == 0
    assert link.stats("rexmttimeo") == 0
    # 2 MiB each way over 20 Mbit/s take at least 0.84 s; a sane TCP needs little more
    assert 0.8 < secs < 3.0
    link.no_faults()


def test_unimpaired_link_is_fast_and_clean():
    link = Link()
    one_way(link, 4 * MB)
    assert link.stats("sndrexmitpack") == 0 and link.stats("rcvoopack") == 0
    assert link.stats("rcvduppack") == 0
    link.no_faults()


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
@pytest.mark.parametrize("loss", ["1%", "5%"])
def test_loss_with_sack(cc, loss):
    link = Link(seed=3, sysctls={"cc.algorithm": cc}, loss=loss, **LINK)
    one_way(link, 1 * MB)
    assert link.stats("sndrexmitpack") > 0
    assert link.stats("sack_recovery") > 0 and link.stats("sack_rexmits") > 0
    assert link.stats("fastrexmit") > 0
    assert link.stats("sack_rcv_blocks") > 0 and link.stats("sack_send_blocks") > 0
    link.no_faults()


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
@pytest.mark.parametrize("loss", ["1%", "5%"])
def test_loss_without_sack(cc, loss):
    link = Link(seed=4, sysctls={"cc.algorithm": cc, "sack.enable": 0}, loss=loss, **LINK)
    one_way(link, 1 * MB)
    assert link.stats("sndrexmitpack") > 0
    assert link.stats("fastrexmit") > 0  # NewReno fast retransmit (RFC 6582)
    assert link.stats("sack_recovery") == 0 and link.stats("sack_send_blocks") == 0
    link.no_faults()


def test_heavy_loss_both_directions_needs_timeouts():
    link = Link(seed=5, loss="10%", **LINK)
    both_ways(link, 256 * KB)
    assert link.stats("rexmttimeo") > 0
    assert link.stats("sndrexmitpack") > 0
    link.no_faults()


@pytest.mark.parametrize("rfc1323", [0, 1])
def test_loss_with_and_without_rfc1323(rfc1323):
    link = Link(seed=6, sysctls={"rfc1323": rfc1323}, loss="2%", **LINK)
    cli, conn = link.sockets()
    assert cli.tcb.ts_ok == bool(rfc1323) and cli.tcb.ws_ok == bool(rfc1323)
    pump(link.k, [Flow(cli, conn, link.payload(1 * MB)), Flow(conn, cli, b"")])
    assert link.stats("sndrexmitpack") > 0
    assert link.stats("rttupdated") > 0
    link.no_faults()


def test_window_scaling_fills_a_long_fat_pipe():
    """100 ms each way at 20 Mbit/s: 500 KB in flight; without scaling 64 KiB at most."""
    results = {}
    for rfc1323 in (0, 1):
        link = Link(sysctls={"rfc1323": rfc1323, "recvspace": 1 << 20, "sendspace": 1 << 20},
                    bandwidth="20Mbit/s", delay="100ms", queue=1000)
        cli, conn = link.sockets()
        results[rfc1323] = pump(link.k, [Flow(cli, conn, link.payload(2 * MB)),
                                         Flow(conn, cli, b"")])
        assert conn.tcb.rcv_wscale == (5 if rfc1323 else 0)
        link.no_faults()
    # 64 KiB per 200 ms round trip is 2.6 Mbit/s: more than 6 s for 2 MiB
    assert results[0] > 6.0
    assert results[1] < 3.0


def test_no_ack_storm_when_the_buffer_exceeds_the_unscaled_window():
    """Without window scaling a 1 MiB buffer still advertises 65535 at most: that cap is
    no window update to announce again and again."""
    link = Link(sysctls={"rfc1323": 0, "recvspace": 1 << 20}, bandwidth="20Mbit/s",
                delay="100ms", queue=1000)
    cli, conn = link.sockets()
    cap = open_capture(link.ifb)
    pump(link.k, [Flow(cli, conn, link.payload(256 * KB)), Flow(conn, cli, b"")], timeout=5)
    from_b = sum(1 for _, frame in cap.packets if frame[14 + 12:14 + 16] == bytes([10, 0, 0, 2]))
    data_segments = -(-256 * KB // 1460)
    assert from_b <= data_segments  # at most one ACK per data segment, usually one per two
    assert link.stats("fastrexmit") == 0 and link.stats("sndrexmitpack") == 0
    link.no_faults()


def test_long_delay_with_loss():
    link = Link(seed=8, bandwidth="10Mbit/s", delay="100ms", loss="1%", queue=500)
    both_ways(link, 512 * KB)
    assert link.stats("sndrexmitpack") > 0
    link.no_faults()


def test_duplication():
    link = Link(seed=9, dup="10%", **LINK)
    both_ways(link, 1 * MB)
    assert link.ifa.pipe.duplicated > 0 and link.ifb.pipe.duplicated > 0
    assert link.stats("rcvduppack") > 0  # duplicate data is recognised and dropped
    # the receiver reports each duplicate in a D-SACK block (RFC 2883) and an ACK that
    # SACKs nothing new is no duplicate ACK (RFC 6675): no spurious recovery at all
    assert link.stats("fastrexmit") == 0 and link.stats("sndrexmitpack") == 0
    assert link.stats("rexmttimeo") == 0
    link.no_faults()


def test_duplication_and_loss():
    link = Link(seed=10, dup="5%", loss="3%", **LINK)
    both_ways(link, 512 * KB)
    assert link.stats("rcvduppack") > 0 and link.stats("sndrexmitpack") > 0
    link.no_faults()


class Reorder:
    """Stands between an epair end and its peer: every `every`-th frame is held back and
    delivered after the next one (or after `hold` seconds if nothing follows)."""

    def __init__(self, kernel: Kernel, target: Any, every: int = 7, hold: float = 0.002) -> None:
        self.kernel = kernel
        self.target = target
        self.every = every
        self.hold = hold
        self.count = 0
        self.held: bytes | None = None
        self.swapped = 0

    def input(self, frame: bytes) -> None:
        self.count += 1
        if self.held is not None:
            self.target.input(frame)
            self._release()
            self.swapped += 1
            return
        if self.count % self.every == 0:
            self.held = frame
            self.kernel.call_later(self.hold, self._release)
            return
        self.target.input(frame)

    def _release(self) -> None:
        if self.held is not None:
            frame, self.held = self.held, None
            self.target.input(frame)


@pytest.mark.parametrize("sack", [0, 1])
def test_reordering(sack):
    link = Link(seed=11, sysctls={"sack.enable": sack})
    reorder = Reorder(link.k, link.ifb, every=5)
    link.ifa.peer = reorder  # frames from a to b can overtake each other
    one_way(link, 1 * MB)
    assert reorder.swapped > 100
    assert link.b.tcp.stats.rcvoopack > 0  # the receiver saw the reordering
    # one segment displaced by one is not a loss: fewer than 3 duplicate ACKs each time
    assert link.stats("fastrexmit") == 0 and link.stats("rexmttimeo") == 0
    link.no_faults()


def test_reordering_and_loss():
    link = Link(seed=12, loss="2%", **LINK)
    reorder = Reorder(link.k, link.ifb, every=3)
    link.ifa.peer = reorder
    one_way(link, 512 * KB)
    assert link.stats("sndrexmitpack") > 0
    link.no_faults()


class Dropper:
    """Stands between an epair end and its peer: drops the first transmissions of the data
    segments whose indexes (counting new data segments from 0) are in `drop`, and records
    every data segment that passes or is dropped."""

    def __init__(self, target: Any, drop: set[int]) -> None:
        self.target = target
        self.drop = drop
        self.new = 0
        self.high = None  # the end of the highest data seen, once some was
        self.dropped: list[int] = []
        self.resent: list[int] = []
        self.passed = 0  # data segments delivered

    def input(self, frame: bytes) -> None:
        if frame[12:14] == b"\x08\x00" and frame[23] == 6:
            hlen = (frame[14] & 0x0F) * 4
            seg = wtcp.parse(frame[14 + hlen:])
            if seg.payload:
                end = (seg.seq + len(seg.payload)) & 0xFFFFFFFF
                if self.high is None or seq_gt(end, self.high):
                    self.high = end
                    index, self.new = self.new, self.new + 1
                    if index in self.drop:
                        self.dropped.append(seg.seq)
                        return
                else:
                    self.resent.append(seg.seq)
                self.passed += 1
        self.target.input(frame)


@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_sack_recovery_resends_exactly_the_lost_segments(cc):
    """Single, adjacent and scattered losses within windows (RFC 6675): every lost segment
    is retransmitted once, nothing else is, and no timeout is needed."""
    link = Link(seed=20, sysctls={"cc.algorithm": cc}, **LINK)
    dropper = Dropper(link.ifb, {40, 41, 43, 150, 151, 152, 153, 300, 305, 310, 500})
    link.ifa.peer = dropper
    one_way(link, 1 * MB)
    assert len(dropper.dropped) == 11
    assert sorted(dropper.resent) == sorted(dropper.dropped)
    a = link.a.tcp.stats
    assert a.sndrexmitpack == 11 and a.sack_rexmits == 11 and a.rexmttimeo == 0
    assert a.sack_recovery == a.fastrexmit == 4  # one episode per window with losses
    assert link.b.tcp.stats.rcvduppack == 0  # the receiver never got a byte twice
    link.no_faults()


@pytest.mark.parametrize("loss", ["1%", "3%"])
def test_sack_recovery_over_random_loss_resends_little_beyond_the_losses(loss):
    # a seed whose loss pattern drops more than 5 segments of the 1 MB (the draws moved
    # when each vnet got its own random stream)
    link = Link(seed=22, loss=loss, **LINK)
    dropper = Dropper(link.ifb, set())
    link.ifa.peer = dropper
    one_way(link, 1 * MB)
    a, b = link.a.tcp.stats, link.b.tcp.stats
    lost = a.sndpack + a.sndrexmitpack - dropper.passed  # first sendings and resendings
    assert lost > 5 and a.sack_recovery > 0
    assert lost <= a.sndrexmitpack <= lost + 2
    assert b.rcvduppack <= 2  # hardly a spurious retransmission
    link.no_faults()


def test_small_buffers_many_round_trips():
    link = Link(seed=13, loss="1%", **LINK)
    cli, conn = link.sockets(bufsize=4 * KB)
    pump(link.k, [Flow(cli, conn, link.payload(256 * KB)), Flow(conn, cli, link.payload(64 * KB))])
    link.no_faults()


def test_receive_buffer_smaller_than_one_segment():
    link = Link(seed=14)
    srv = link.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1000)
    srv.bind(("", 5002))
    srv.listen(1)
    cli = link.a.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((B, 5002))
    conn, _ = srv.accept()
    secs = pump(link.k, [Flow(cli, conn, link.payload(64 * KB)), Flow(conn, cli, b"")],
                timeout=60)
    assert secs < 10  # no stall waiting for a window that never reaches a full segment
    link.no_faults()


def test_interleaved_small_messages_request_response():
    link = Link(seed=15, delay="10ms")
    cli, conn = link.sockets()
    for i in range(50):
        msg = f"request {i}".encode()
        cli.sendall(msg)
        assert conn.recv(100) == msg
        conn.sendall(msg.upper())
        assert cli.recv(100) == msg.upper()
    # 50 round trips of 20 ms; delayed ACKs ride on the responses
    assert link.stats("sndrexmitpack") == 0
    assert link.b.tcp.stats.delack < 10
    link.no_faults()


# -- path MTU --------------------------------------------------------------------------------


def mtu_chain(seed: int, pmtud: int) -> tuple[Kernel, Any, Any, Any]:
    """a - r1 - r2 - b with a 1000-byte MTU between the routers."""
    k = Kernel(clock="virtual", seed=seed)
    nodes = topo.router_chain(k, 2)
    a, r1, r2, b = nodes
    for v in (a, b):
        v.sysctl("net.inet.tcp.path_mtu_discovery", pmtud)
    links = topo.chain_links(nodes)
    left, right = links[1]
    left.mtu = right.mtu = 1000
    k.run(0)
    return k, a, b, r1


def chain_transfer(k: Kernel, a: Any, b: Any, size: int) -> tuple[Any, Any]:
    srv = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("", 6000))
    srv.listen(1)
    cli = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((f"{topo.link_prefix(2)}.2", 6000))
    conn, _ = srv.accept()
    rng = random.Random(size)
    pump(k, [Flow(cli, conn, rng.randbytes(size)), Flow(conn, cli, rng.randbytes(size // 4))])
    return cli, conn


def test_path_mtu_discovery_lowers_the_mss():
    k, a, b, r1 = mtu_chain(16, pmtud=1)
    cli, conn = chain_transfer(k, a, b, 512 * KB)
    assert cli.tcb.mss == 1000 - 40 - 12  # timestamps on
    assert conn.tcb.mss == 1000 - 40 - 12
    assert a.tcp.stats.pmtud_updates >= 1 and b.tcp.stats.pmtud_updates >= 1
    assert r1.ip.stats.cantfrag > 0
    assert r1.ip.stats.fragmented == 0  # DF: nobody fragments
    assert k.sched.errors == 0


def test_without_path_mtu_discovery_fragmentation_carries_the_stream():
    k, a, b, r1 = mtu_chain(17, pmtud=0)
    cli, conn = chain_transfer(k, a, b, 256 * KB)
    assert cli.tcb.mss == 1460 - 12
    assert a.tcp.stats.pmtud_updates == 0
    assert r1.ip.stats.fragmented > 0 and b.ip.stats.reassembled > 0
    assert k.sched.errors == 0


def test_local_mtu_lowered_on_an_idle_connection():
    link = Link(seed=19)
    cli, conn = link.sockets()
    cli.sendall(b"warm up" * 1000)
    got = b""
    while len(got) < 7000:
        got += conn.recv(1 << 20)
    link.k.run(1)
    link.ifa.mtu = 900  # nothing in flight, a whole window free: the first segment fails
    pump(link.k, [Flow(cli, conn, link.payload(64 * KB)), Flow(conn, cli, b"")], timeout=10)
    assert cli.tcb.mss == 900 - 40 - 12
    assert link.a.tcp.stats.pmtud_updates == 1
    link.no_faults()


def test_local_mtu_lowered_during_a_transfer():
    link = Link(seed=18, **LINK)
    cli, conn = link.sockets()
    data = link.payload(512 * KB)
    cli.setblocking(False)
    sent = cli.send(data[:64 * KB])
    link.ifa.mtu = 900  # with DF set the next full segment no longer fits
    link.ifb.mtu = 900
    cap = open_capture(link.ifa)
    pump(link.k, [Flow(cli, conn, data, sent=sent), Flow(conn, cli, b"")])
    assert cli.tcb.mss == 900 - 40 - 12
    assert max(len(frame) for _, frame in cap.packets) <= 900 + 14
    link.no_faults()


def test_header_prediction_takes_requests_and_the_acks_of_answers():
    """Request/answer exchanges: each request is in-order data with nothing outstanding
    on its receiver, each delayed ACK of an answer a plain ACK of new data; both go by
    header prediction (netstat's "correct ... header predictions"), the answers, which
    carry data and acknowledge the request, by the full path (FreeBSD's rule)."""
    link = Link(**LINK)
    cli, conn = link.sockets()
    a0, b0 = link.a.tcp.stats, link.b.tcp.stats
    base = (b0.preddat, b0.predack, a0.preddat, a0.predack)
    for i in range(10):
        cli.sendall(b"?%d\n" % i)
        assert conn.recv(100) == b"?%d\n" % i
        conn.sendall(b"!%d\n" % i)
        assert cli.recv(100) == b"!%d\n" % i
        link.k.run(1)  # the delayed ACK of the answer goes, then idle
    server_data, server_acks, client_data, client_acks = (
        b0.preddat - base[0], b0.predack - base[1], a0.preddat - base[2], a0.predack - base[3])
    assert server_data == 10  # every request
    assert server_acks == 10  # every delayed ACK of an answer
    assert client_data == 0 and client_acks == 0  # answers ACK new data: the full path
    assert link.stats("rexmttimeo") == 0 and link.stats("sndrexmitpack") == 0
    link.no_faults()


def test_an_exchange_arms_only_the_timer_it_needs():
    """A request's retransmission timer, cancelled by its answer, and the server's
    delayed-ACK timer, whose ACK the answer carries, are both lazy and gone within the
    instant: the heap gains only the client's delayed ACK of the answer and the
    server's retransmission timer of it. A request before the withdrawn delayed-ACK
    timer would have fired brings it back with its own key (and the same ACK time)."""
    link = Link()
    cli, conn = link.sockets()
    sched = link.k.sched
    link.k.run(1)
    for i in range(3):
        before = len(sched._heap)
        cli.sendall(b"?%d\n" % i)
        assert conn.recv(100) == b"?%d\n" % i
        conn.sendall(b"!%d\n" % i)
        assert cli.recv(100) == b"!%d\n" % i
        assert conn.tcb.t_delack is None and conn.tcb.delack_ghost is not None
        assert cli.tcb.t_main is None and cli.tcb.t_delack is not None
        sched.next_event()  # the clock may move: lazy timers still armed enter the heap
        assert len(sched._heap) == before + 2
        link.k.run(1)
    cli.sendall(b"?x\n")
    assert conn.recv(100) == b"?x\n"
    conn.sendall(b"!x\n")
    ghost = conn.tcb.delack_ghost
    assert ghost is not None and ghost[0] == link.k.now_ns() + 40 * MS
    link.k.run(0.001)  # a request 1 ms later: the withdrawn timer comes back as it was
    cli.sendall(b"?y\n")
    link.k.run(0)
    timer = conn.tcb.t_delack
    assert timer is not None and (timer.when, timer.seq) == ghost
    assert conn.tcb.delack_ghost is None
    acked = cli.tcb.snd_max
    link.k.run(0.0395)  # it fires at 40 ms, finds the ACK due 1 ms later and waits
    assert cli.tcb.snd_una != acked
    link.k.run(0.001)
    assert cli.tcb.snd_una == acked
    link.no_faults()


def _frames_of_exchanges(monkeypatch: pytest.MonkeyPatch, predict: bool,
                         lazy: bool = True) -> list[bytes]:
    """Every frame of request/answer exchanges (some closer together than the delayed
    ACK) and a lossy transfer both ways, with header prediction on or off, and TCP's
    lazy timers lazy or pushed at once."""
    from vimage.net.ifnet import Epair
    from vimage.netinet.tcp import input as tcp_input_mod
    from vimage.sched import Scheduler

    frames: list[bytes] = []
    original = Epair.input

    def recording(self: Any, frame: bytes) -> None:
        frames.append(b"%d %s " % (self.vnet.kernel.now_ns(), self.name.encode()) + frame)
        original(self, frame)

    monkeypatch.setattr(Epair, "input", recording)
    if not predict:
        monkeypatch.setattr(tcp_input_mod, "fast_input", lambda tcb, seg: False)
    if not lazy:
        monkeypatch.setattr(Scheduler, "call_later_lazy", Scheduler.call_later)
        monkeypatch.setattr(Scheduler, "withdraw", lambda self, timer: False)
    link = Link(seed=3, bandwidth="20Mbit/s", delay="3ms", loss="2%", queue=100)
    cli, conn = link.sockets()
    for i in range(20):
        cli.sendall(b"?%d\n" % i)
        assert conn.recv(100) == b"?%d\n" % i
        conn.sendall(b"!%d\n" % i)
        assert cli.recv(100) == b"!%d\n" % i
        link.k.run(0.5 if i % 4 else 0.02)  # every 4th: the next request within 40 ms
    pump(link.k, [Flow(cli, conn, link.payload(300 * KB)), Flow(conn, cli, link.payload(200 * KB))])
    link.k.run(120)
    link.no_faults()
    monkeypatch.undo()
    return frames


def test_lazy_timers_change_nothing_on_the_wire(monkeypatch):
    """TCP's lazy timers (a retransmission timer cancelled within its instant, a
    delayed-ACK timer withdrawn when an answer carries the ACK, and brought back when a
    request comes before it would have fired) put the same frames on the wire at the
    same instants as timers pushed at once and left to fire."""
    lazy = _frames_of_exchanges(monkeypatch, True)
    eager = _frames_of_exchanges(monkeypatch, True, lazy=False)
    assert len(lazy) > 400
    assert lazy == eager


def test_header_prediction_changes_nothing_on_the_wire(monkeypatch):
    """The fast path (header prediction, and data that acknowledges new data) is only a
    shortcut: the same run with every segment sent through established_input puts the
    same frames on the wire at the same instants."""
    fast = _frames_of_exchanges(monkeypatch, True)
    slow = _frames_of_exchanges(monkeypatch, False)
    assert len(fast) > 400
    assert fast == slow
