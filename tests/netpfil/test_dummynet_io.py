"""dummynet's packet path in virtual time: rates, delay, loss, queue limits, RED and
the schedulers' shares, all exact or statistically checked with a fixed seed.

Packets get into dummynet through the test-only hook of conftest.shape (ipfw's `pipe`
action will do it once ipfw core is merged)."""

from __future__ import annotations

import pytest

from vimage.apps import iperf3
from vimage.kernel import Kernel
from vimage.net import pfil
from vimage.topo import connect
from vimage.vnet import Vnet

from .shaping import dport, shape

A, B = "10.0.0.1", "10.0.0.2"
SEG = 1448  # TCP payload of a full segment: 1500 - 20 (IP) - 20 (TCP) - 12 (timestamps)
UDP_HDR = 28  # IP + UDP headers


def pair(seed: int = 1) -> tuple[Kernel, Vnet, Vnet]:
    k = Kernel(clock="virtual", seed=seed)
    a, b = k.create("a"), k.create("b")
    connect(a, f"{A}/24", b, f"{B}/24")
    k.run(0.001)
    return k, a, b


class Arrivals:
    """Every IPv4 packet `vnet` receives: (time in ns, IP length, destination port)."""

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.log: list[tuple[int, int, int]] = []
        pfil.link(vnet.ip, "pfil_in", self.hook, name="arrivals")

    def hook(self, pkt: bytes, ifp: object) -> bytes:
        self.log.append((self.vnet.kernel.now_ns(), len(pkt), dport(pkt)))
        return pkt

    def rate(self, port: int | None = None) -> float:
        """bit/s between the first and the last arrival (the first one's bits excluded)."""
        log = [e for e in self.log if port is None or e[2] == port]
        return sum(e[1] for e in log[1:]) * 8 * 1e9 / (log[-1][0] - log[0][0])

    def bytes_between(self, port: int, t0: int, t1: int) -> int:
        return sum(n for t, n, p in self.log if p == port and t0 <= t < t1)


def flood(k: Kernel, vnet: Vnet, port: int, size: int, rate: float, count: int) -> None:
    """Send `count` UDP datagrams of `size` payload bytes to B:port at `rate` bit/s,
    paced by kernel timers."""
    sock = vnet.socket(2, 2)
    gap = (size + UDP_HDR) * 8 / rate
    left = [count]

    def tick() -> None:
        sock.sendto(b"u" * size, (B, port))
        left[0] -= 1
        if left[0]:
            k.call_later(gap, tick)

    k.call_later(0, tick)


# -- rates -------------------------------------------------------------------------------
@pytest.mark.parametrize("bw", [64_000, 1_000_000, 100_000_000, 1_000_000_000])
def test_tcp_rate_measured_by_iperf3(bw: int) -> None:
    """`pipe 1 config bw B`: iperf3's steady goodput is B times the payload share of a
    full segment (1448 of 1500 bytes), within 2% (in fact 0.2%). iperf3 -R, so that its
    intervals count bytes received; the first and last two intervals (start, end of the
    transfer) are left out."""
    k, a, b = pair()
    b.cmd(f"dnctl pipe 1 config bw {bw}")
    shape(b)
    nbytes = 400 * SEG
    server = iperf3.serve(b, once=True)  # kept: a forgotten server is closed when collected
    report = iperf3.client(a, B, nbytes=nbytes, reverse=True, interval=nbytes * 8 / bw / 20)
    steady = [iv["sum"] for iv in report["intervals"] if iv["sum"]["bytes"]][2:-2]
    rate = sum(s["bytes"] for s in steady) * 8 / sum(s["seconds"] for s in steady)
    assert rate == pytest.approx(bw * SEG / 1500, rel=0.02)
    ni = b.dummynet.schedulers[65537].instances[(0, 0, 0, 0, 0)].ni
    # every segment crossed the pipe (the 64 KB window keeps its 50 slots from filling)
    assert ni.tot_pkts > 400 and ni.drops == 0
    server.close()


@pytest.mark.parametrize("bw", [64_000, 1_000_000, 100_000_000, 1_000_000_000])
def test_udp_rate_is_the_pipe_bandwidth(bw: int) -> None:
    """A UDP sender faster than the pipe: datagrams arrive at exactly B (IP bytes);
    what the 50-slot queue could not hold is dropped and counted."""
    k, a, b = pair()
    a.cmd(f"dnctl pipe 1 config bw {bw}")
    shape(a)
    arrivals = Arrivals(b)
    flood(k, a, 9, 1000, bw * 1.25, 300)
    k.run(300 * 1028 * 8 / bw * 1.1 + 1)
    assert arrivals.rate() == pytest.approx(bw, rel=0.002)
    dn = a.dummynet
    got = len(arrivals.log)
    assert dn.io_pkt == 300 and dn.io_pkt_drop == 300 - got > 0
    flow = a.cmd("dnctl pipe show").output.splitlines()[3].split()
    assert flow[-5:] == ["300", str(300 * 1028), "0", "0", str(300 - got)]


def test_one_timer_per_busy_pipe() -> None:
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s delay 50")
    shape(a)
    sock = a.socket(2, 2)
    sock.sendto(b"t", (B, 9))
    k.run(1)
    others = k.sched.pending_timers(a)  # ARP's, for the entry of B
    for _ in range(40):
        sock.sendto(b"t" * 500, (B, 9))
    assert k.sched.pending_timers(a) == others + 1
    k.run(0.1)
    assert k.sched.pending_timers(a) == others + 1
    k.run(1)
    assert k.sched.pending_timers(a) == others  # idle: nothing armed


# -- delay and serialisation --------------------------------------------------------------
def test_ping_rtt_is_twice_the_delay_plus_serialisation() -> None:
    """84-byte echo datagrams over a 1 Mbit/s, 10 ms pipe each way: 2 x (10 ms + 672 us)."""
    k, a, b = pair()
    for vnet in (a, b):
        vnet.cmd("dnctl pipe 1 config bw 1Mbit/s delay 10")
        shape(vnet)
    out = a.cmd("ping -c 3 10.0.0.2").output
    assert out.count("time=21.344 ms") == 3
    assert "round-trip min/avg/max/stddev = 21.344/21.344/21.344/0.000 ms" in out


def test_delay_only_and_unlimited_pipes() -> None:
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config delay 25")
    shape(a)
    arrivals = Arrivals(b)
    sock = a.socket(2, 2)
    t0 = k.now_ns()
    for _ in range(3):
        sock.sendto(b"d" * 100, (B, 9))
    k.run(1)
    assert [t - t0 for t, _, _ in arrivals.log] == [25_000_000] * 3  # no serialisation
    a.cmd("dnctl pipe 1 config delay 0")
    before = a.dummynet.io_pkt_fast
    timers = k.sched.pending_timers(a)
    sock.sendto(b"d" * 100, (B, 9))
    assert a.dummynet.io_pkt_fast == before + 1  # straight through, no timer
    assert k.sched.pending_timers(a) == timers


def test_back_to_back_packets_leave_one_serialisation_apart() -> None:
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s delay 5")
    shape(a)
    arrivals = Arrivals(b)
    sock = a.socket(2, 2)
    t0 = k.now_ns()
    for _ in range(4):
        sock.sendto(b"s" * 972, (B, 9))  # 1000 IP bytes: 8 ms at 1 Mbit/s
    k.run(1)
    assert [t - t0 for t, _, _ in arrivals.log] == [13_000_000, 21_000_000, 29_000_000,
                                                    37_000_000]


# -- loss, queue limits, RED -----------------------------------------------------------------
def _plr_run(seed: int) -> tuple[int, int, str]:
    k, a, b = pair(seed)
    a.cmd("dnctl pipe 1 config plr 0.1")
    shape(a)
    arrivals = Arrivals(b)
    flood(k, a, 9, 20, 1_000_000, 2000)
    k.run(1)
    return len(arrivals.log), a.dummynet.io_pkt_drop, a.cmd("dnctl pipe show").output


def test_plr_loss_rate_with_a_fixed_seed() -> None:
    got, drops, shown = _plr_run(1)
    assert got + drops == 2000
    assert abs(drops - 200) < 4 * (2000 * 0.1 * 0.9) ** 0.5  # binomial, 4 sigma
    assert "plr 0.100000" in shown and shown.splitlines()[3].split()[-1] == str(drops)
    assert _plr_run(1)[:2] == (got, drops)  # same seed, same losses


def test_queue_overflow_in_slots_is_counted() -> None:
    """60 datagrams at once: one on the link, 50 queued (the default), 9 dropped."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s")
    shape(a)
    sock = a.socket(2, 2)
    for _ in range(60):
        sock.sendto(b"q" * 1000, (B, 9))
    flow = a.cmd("dnctl pipe show").output.splitlines()[3].split()
    assert flow[-5:] == ["60", str(60 * 1028), "50", str(50 * 1028), "9"]
    k.run(2)
    assert a.cmd("dnctl pipe show").output.splitlines()[3].split()[-3:] == ["0", "0", "9"]
    assert b.udp.stats.ipackets == 51


def test_queue_overflow_in_bytes() -> None:
    """`queue 10KB`: a packet is refused once 10240 bytes are queued before it."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s queue 10KB")
    shape(a)
    sock = a.socket(2, 2)
    for _ in range(60):
        sock.sendto(b"q" * 1000, (B, 9))
    flow = a.cmd("dnctl pipe show").output.splitlines()[3].split()
    assert flow[-3:] == ["10", str(10 * 1028), "49"]


def test_red_drops_early_and_gentle_red_less() -> None:
    def run(kind: str) -> tuple[int, int]:
        k, a, b = pair()
        a.cmd(f"dnctl pipe 1 config bw 1Mbit/s queue 100 {kind} 0.5/2/8/0.1")
        shape(a)
        sock = a.socket(2, 2)
        longest = 0
        for _ in range(60):
            sock.sendto(b"r" * 500, (B, 9))
            longest = max(longest, a.dummynet.schedulers[65537].instances[
                (0, 0, 0, 0, 0)].ni.length)
        return a.dummynet.io_pkt_drop, longest

    red_drops, red_longest = run("red")
    gred_drops, gred_longest = run("gred")
    # RED keeps the average near max_th (8) though 100 slots were free; gentle RED
    # drops with a probability rising to 1 at twice max_th, so it lets the queue grow more
    assert red_drops == 60 - red_longest - 1 and red_longest == 9
    assert red_drops > gred_drops == 60 - gred_longest - 1 and 9 < gred_longest < 16


# -- schedulers -------------------------------------------------------------------------------
def _two_queues(sched_type: str, w1: int, w2: int) -> tuple[float, float]:
    """Two UDP flows, each as fast as the 1 Mbit/s pipe, into queues 1 and 2 of weights
    w1 and w2: the shares of the pipe they get while both are backlogged."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s")
    if sched_type:
        a.cmd(f"dnctl sched 1 config type {sched_type}")
    a.cmd(f"dnctl queue 1 config pipe 1 weight {w1}")
    a.cmd(f"dnctl queue 2 config pipe 1 weight {w2}")
    shape(a, lambda pkt: (1 if dport(pkt) == 5001 else 2, True))
    arrivals = Arrivals(b)
    flood(k, a, 5001, 1000, 1_000_000, 700)
    flood(k, a, 5002, 1000, 1_000_000, 700)
    k.run(5)
    # both queues backlogged throughout; long enough for QFQ, which serves in bursts
    # of its slot size (1500 bytes / weight) where WF2Q+ interleaves packet by packet
    t0, t1 = 200_000_000, 5_000_000_000
    one = arrivals.bytes_between(5001, t0, t1)
    two = arrivals.bytes_between(5002, t0, t1)
    return one / (one + two), two / (one + two)


@pytest.mark.parametrize("sched_type", ["", "wf2q+", "rr", "qfq"])
def test_weighted_queues_share_the_pipe(sched_type: str) -> None:
    """WF2Q+ (the default), DRR and QFQ give weights 1 and 3 a quarter and three
    quarters."""
    one, two = _two_queues(sched_type, 1, 3)
    assert one == pytest.approx(0.25, rel=0.02)
    assert two == pytest.approx(0.75, rel=0.02)


@pytest.mark.parametrize(("sched_type", "order"), [
    ("fifo", [1, 1, 1, 2, 2, 2]),  # arrival order
    # the first packet had the link alone; then equal weights take turns (WF2Q+: a tie
    # of finish times goes to the queue that became busy first; DRR: 1514-byte quantum)
    ("wf2q+", [1, 1, 2, 1, 2, 2]),
    ("rr", [1, 1, 2, 1, 2, 2]),
    ("qfq", [1, 1, 1, 2, 2, 2]),  # one 1500-byte slot holds queue 1's next two packets
])
def test_order_of_service(sched_type: str, order: list[int]) -> None:
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s")
    a.cmd(f"dnctl sched 1 config type {sched_type}")
    a.cmd("dnctl queue 1 config pipe 1")
    a.cmd("dnctl queue 2 config pipe 1")
    shape(a, lambda pkt: (dport(pkt) - 5000, True))
    arrivals = Arrivals(b)
    sock = a.socket(2, 2)
    for port in (5001, 5001, 5001, 5002, 5002, 5002):
        sock.sendto(b"o" * 972, (B, port))
    k.run(1)
    assert [p - 5000 for _, _, p in arrivals.log] == order


@pytest.mark.parametrize("sched_type", ["", "qfq"])
def test_shares_follow_other_weights(sched_type: str) -> None:
    one, _ = _two_queues(sched_type, 2, 3)
    assert one == pytest.approx(0.4, rel=0.02)


def test_masked_pipe_gives_each_flow_the_full_bandwidth() -> None:
    """`mask dst-port 0xffff`: a dynamic pipe per port, each at the pipe's rate."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s mask dst-port 0xffff")
    shape(a)
    arrivals = Arrivals(b)
    flood(k, a, 7001, 1000, 1_500_000, 200)
    flood(k, a, 7002, 1000, 1_500_000, 200)
    k.run(3)
    assert arrivals.rate(7001) == pytest.approx(1_000_000, rel=0.002)
    assert arrivals.rate(7002) == pytest.approx(1_000_000, rel=0.002)
    lines = a.cmd("dnctl pipe show").output.splitlines()
    assert lines[2] == " sched 65537 type FIFO flags 0x1 64 buckets 2 active"
    # the flows as the mask sees them: only the destination port is kept
    assert sorted(line.split()[3] for line in lines[5:]) == ["0.0.0.0/7001", "0.0.0.0/7002"]


def test_masked_queue_gives_each_flow_its_own_weighted_queue() -> None:
    """`queue 1 config pipe 1 mask dst-port 0xffff`: per-flow queues of equal weight
    share the pipe equally, and `queue show` lists them."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s")
    a.cmd("dnctl queue 1 config pipe 1 mask dst-port 0xffff")
    shape(a, lambda pkt: (1, True))
    arrivals = Arrivals(b)
    flood(k, a, 7001, 1000, 1_000_000, 300)
    flood(k, a, 7002, 1000, 1_000_000, 300)
    k.run(3)
    one = arrivals.bytes_between(7001, 200_000_000, 2_000_000_000)
    two = arrivals.bytes_between(7002, 200_000_000, 2_000_000_000)
    assert one / (one + two) == pytest.approx(0.5, rel=0.02)
    out = a.cmd("dnctl queue show").output.splitlines()
    assert out[0] == "q00001  50 sl. 2 flows (64 buckets) sched 1 weight 1 lmax 0 pri 0 droptail"
    assert len(out) == 5 and a.dummynet.queue_count == 2


def test_packets_to_a_missing_pipe_are_dropped_and_counted() -> None:
    k, a, b = pair()
    shape(a)
    sock = a.socket(2, 2)
    sock.sendto(b"x", (B, 9))
    k.run(1)
    assert a.dummynet.io_pkt_drop == 1 and b.ip.stats.total == 0


def test_burst_lets_an_idle_pipe_send_its_bank_at_once() -> None:
    """`burst 3000`: after idling, 3000 bytes pass without serialisation, the rest at bw."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s delay 5 burst 3000")
    shape(a)
    arrivals = Arrivals(b)
    sock = a.socket(2, 2)
    t0 = k.now_ns()
    for _ in range(5):
        sock.sendto(b"s" * 972, (B, 9))  # 1000 IP bytes
    k.run(1)
    assert [t - t0 for t, _, _ in arrivals.log] == [5_000_000, 5_000_000, 5_000_000,
                                                    13_000_000, 21_000_000]
    assert "burst 3000" in a.cmd("dnctl pipe show").output


@pytest.mark.parametrize("sched_type", ["wf2q+", "rr", "qfq"])
def test_deleting_a_backlogged_queue_leaves_the_link_to_the_other(sched_type: str) -> None:
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s")
    a.cmd(f"dnctl sched 1 config type {sched_type}")
    a.cmd("dnctl queue 1 config pipe 1 weight 1")
    a.cmd("dnctl queue 2 config pipe 1 weight 3")
    shape(a, lambda pkt: (dport(pkt) - 5000, True))
    arrivals = Arrivals(b)
    flood(k, a, 5001, 1000, 1_000_000, 400)
    flood(k, a, 5002, 1000, 1_000_000, 400)
    k.run(1)
    assert a.cmd("dnctl queue 2 delete").ok
    k.run(0.2)  # what queue 2 had on the link or in the delay line is out by now
    t0 = k.now_ns()
    k.run(1)
    assert arrivals.bytes_between(5002, t0, k.now_ns()) == 0
    one = arrivals.bytes_between(5001, t0, k.now_ns())
    assert one * 8 == pytest.approx(1_000_000, rel=0.01)  # queue 1 has the whole pipe


def test_a_fifo_scheduler_queue_is_sized_by_its_own_flowset() -> None:
    """`sched 1 config type fifo queue 5`: queues fed to it share one 5-slot FIFO."""
    k, a, b = pair()
    a.cmd("dnctl pipe 1 config bw 1Mbit/s")
    a.cmd("dnctl sched 1 config type fifo queue 5")
    a.cmd("dnctl queue 1 config pipe 1 queue 50")
    shape(a, lambda pkt: (1, True))
    sock = a.socket(2, 2)
    for _ in range(10):
        sock.sendto(b"f" * 500, (B, 9))
    assert a.dummynet.io_pkt_drop == 10 - 1 - 5  # one on the link, five queued
