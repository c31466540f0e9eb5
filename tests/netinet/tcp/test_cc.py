"""Congestion control algorithms driven by synthetic ACK streams in virtual nanoseconds.

The expected values are the RFC formulas (RFC 6928, 5681, 3465, 6582, 9438) computed
here independently of the module.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vimage.netinet.tcp.cc import (
    ALGORITHMS,
    INFINITE_SSTHRESH,
    CongestionControl,
    Cubic,
    NewReno,
    create,
    initial_window,
)

MSS = 1000
MS = 1_000_000
S = 1_000_000_000
RTT = 100 * MS
C = 0.4
BETA = 0.7
ALPHA = 3 * (1 - BETA) / (1 + BETA)


def ack_window(cc: CongestionControl, now: int, rtt: int = RTT, per_ack: int = MSS,
               limited: bool = False) -> tuple[int, int]:
    """Acknowledge one full window, ACKs spread evenly over one RTT; (end time, ACKs).

    The sender keeps the window full (in_flight == cwnd) unless `limited`, when only a
    quarter of it is in flight.
    """
    window = cc.cwnd
    sizes = [per_ack] * (window // per_ack)
    if window % per_ack:
        sizes.append(window % per_ack)
    n = len(sizes)
    for i, size in enumerate(sizes):
        in_flight = cc.cwnd // 4 if limited else cc.cwnd
        cc.on_ack(size, rtt, now + (i + 1) * rtt // n, in_flight)
    return now + rtt, n


def cubic_after_loss(w_max: int, now: int = 0) -> Cubic:
    """A CUBIC sender that lost a segment at a window of `w_max` segments and recovered."""
    cc = Cubic(MSS)
    cc.cwnd = w_max * MSS
    cc.on_enter_recovery(now, w_max * MSS)
    cc.on_exit_recovery(now)
    return cc


def w_cubic(t: float, w_max: float, k: float) -> float:
    return C * (t - k) ** 3 + w_max


# -- common ---------------------------------------------------------------------------

@pytest.mark.parametrize(("mss", "expected"), [
    (536, 5360), (1000, 10000), (1460, 14600), (4000, 14600), (8960, 17920), (9000, 18000),
])
def test_initial_window_rfc6928(mss, expected):
    assert initial_window(mss) == expected
    for _, cls in ALGORITHMS:
        cc = cls(mss)
        assert cc.cwnd == expected
        assert cc.ssthresh == INFINITE_SSTHRESH == 2**31 - 1
        assert cc.mss == mss


@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_slow_start_doubles_per_rtt(algo):
    cc = create(algo, MSS)
    now, total = 0, 0
    for _ in range(4):
        before = cc.cwnd
        now, acks = ack_window(cc, now)
        total += acks
        assert cc.cwnd == 2 * before
    assert cc.cwnd == 16 * initial_window(MSS)
    assert total == 10 + 20 + 40 + 80


@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_slow_start_doubles_with_delayed_acks(algo):
    """Byte counting: one ACK per two segments still doubles the window (RFC 3465)."""
    cc = create(algo, MSS)
    now, total = 0, 0
    for _ in range(3):
        now, acks = ack_window(cc, now, per_ack=2 * MSS)
        total += acks
    assert cc.cwnd == 8 * initial_window(MSS)
    assert total == 5 + 10 + 20


@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_slow_start_byte_counting_limit(algo):
    cc = create(algo, MSS)
    start = cc.cwnd
    cc.on_ack(5 * MSS, RTT, 1, cc.cwnd)  # a stretch ACK counts as at most L = 2*MSS
    assert cc.cwnd == start + 2 * MSS
    cc.on_ack(300, RTT, 2, cc.cwnd)  # a small one counts its bytes
    assert cc.cwnd == start + 2 * MSS + 300
    cc.on_ack(0, RTT, 3, cc.cwnd)
    assert cc.cwnd == start + 2 * MSS + 300


@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_no_growth_when_application_limited(algo):
    cc = create(algo, MSS)
    start = cc.cwnd
    cc.on_ack(MSS, RTT, 1, start // 2 - 1)  # window not used: no growth
    assert cc.cwnd == start
    cc.on_ack(MSS, RTT, 2, start // 2)  # half the window in flight is enough
    assert cc.cwnd == start + MSS
    cc.ssthresh = cc.cwnd = 40 * MSS  # congestion avoidance
    now = 0
    for _ in range(30):
        now, _ = ack_window(cc, now, limited=True)
    assert cc.cwnd == 40 * MSS
    ack_window(cc, now + 5 * S)
    assert cc.cwnd > 40 * MSS


@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_restart_after_idle(algo):
    cc = create(algo, MSS)
    now = 0
    for _ in range(3):
        now, _ = ack_window(cc, now)
    assert cc.cwnd == 80 * MSS
    rto = 300 * MS
    cc.on_idle(now + rto, rto)  # idle for exactly the RTO: not longer
    assert cc.cwnd == 80 * MSS
    cc.on_idle(now + rto + 1, rto)  # RFC 5681 4.1
    assert cc.cwnd == initial_window(MSS)
    cc.on_timeout(now + 2 * S, 20 * MSS)
    cc.on_idle(now + 10 * S, rto)  # restart never grows the window
    assert cc.cwnd == MSS


def test_idle_restart_forced_by_engine():
    cc = NewReno(MSS)
    cc.on_ack(MSS, RTT, 10, cc.cwnd)
    cc.on_ack(MSS, RTT, 20, cc.cwnd)
    cc.on_idle(20, 0)  # no time since the last ACK: no restart even with rto_ns=0
    assert cc.cwnd == 12 * MSS
    cc.on_idle(21, 0)  # the engine decided: restart
    assert cc.cwnd == initial_window(MSS)


@pytest.mark.parametrize("algo", ["newreno", "cubic"])
def test_set_mss_keeps_window_in_segments(algo):
    cc = create(algo, 1460)
    cc.on_enter_recovery(0, 40 * 1460)
    cc.on_exit_recovery(1)
    segs, thresh = cc.cwnd / 1460, cc.ssthresh / 1460
    cc.set_mss(1000)
    assert cc.mss == 1000
    assert cc.cwnd == pytest.approx(segs * 1000, abs=1)
    assert cc.ssthresh == pytest.approx(thresh * 1000, abs=1)
    for new_mss in (536, 1000, 8960):  # the MSS negotiated before any data: RFC 6928 again
        fresh = create(algo, 1460)
        fresh.set_mss(new_mss)
        assert fresh.cwnd == initial_window(new_mss)
        assert fresh.ssthresh == INFINITE_SSTHRESH
    with pytest.raises(ValueError):
        fresh.set_mss(0)


def test_registry_and_create():
    assert [name for name, _ in ALGORITHMS] == ["newreno", "cubic"]
    for name, cls in ALGORITHMS:
        cc = create(name, 1460)
        assert type(cc) is cls
        assert cc.name == cls.name == name
    with pytest.raises(ValueError) as err:
        create("vegas", 1460)
    assert "vegas" in str(err.value)
    assert "newreno" in str(err.value) and "cubic" in str(err.value)
    with pytest.raises(ValueError):
        create("cubic", 0)


@pytest.mark.parametrize("cls", [NewReno, Cubic])
def test_no_instance_dict(cls):
    assert not hasattr(cls(MSS), "__dict__")


@settings(max_examples=60, deadline=None)
@given(algo=st.sampled_from(["newreno", "cubic"]),
       events=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4 * MSS),
                                 st.integers(0, 200 * MS), st.integers(0, 3)),
                       max_size=300))
def test_invariants_under_random_events(algo, events):
    """ACKs never shrink cwnd; cwnd stays >= 1 MSS and ssthresh >= 2 MSS once set."""
    cc = create(algo, MSS)
    now = 0
    for kind, size, gap, flight in events:
        now += gap
        in_flight = cc.cwnd * flight // 2
        before = cc.cwnd
        if kind <= 2:
            cc.on_ack(size, gap or None, now, in_flight)
            assert cc.cwnd >= before
            assert cc.cwnd - before <= max(2 * MSS, cc.cwnd // 3)
        elif kind == 3:
            cc.on_enter_recovery(now, in_flight)
            cc.on_exit_recovery(now)
        elif kind == 4:
            cc.on_timeout(now, in_flight)
            assert cc.cwnd == MSS
        else:
            cc.on_idle(now, 300 * MS)
            assert cc.cwnd <= before
        assert cc.cwnd >= MSS
        assert cc.ssthresh >= 2 * MSS


# -- NewReno --------------------------------------------------------------------------

@pytest.mark.parametrize("per_ack", [MSS, 2 * MSS, 1460])
def test_newreno_congestion_avoidance_one_mss_per_rtt(per_ack):
    cc = NewReno(MSS)
    cc.ssthresh = cc.cwnd = 20 * MSS
    now = 0
    for i in range(1, 11):
        now, _ = ack_window(cc, now, per_ack=per_ack)
        assert cc.cwnd == (20 + i) * MSS


def test_newreno_recovery():
    cc = NewReno(MSS)
    cc.cwnd = 30 * MSS
    cc.on_enter_recovery(0, 20 * MSS)  # RFC 5681 eq. 4 uses the flight size
    assert cc.ssthresh == 10 * MSS
    assert cc.cwnd == 10 * MSS
    cc.cwnd += 3 * MSS + 5 * MSS  # the engine's inflation during recovery
    cc.on_exit_recovery(RTT)  # RFC 6582 deflation
    assert cc.cwnd == 10 * MSS
    now, _ = ack_window(cc, RTT)  # now in congestion avoidance: + 1 MSS per RTT
    assert cc.cwnd == 11 * MSS
    cc.on_enter_recovery(now, 3 * MSS)
    assert cc.ssthresh == 2 * MSS  # floor of 2 MSS
    assert cc.cwnd == 2 * MSS


def test_newreno_timeout():
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.on_timeout(0, 40 * MSS)
    assert cc.ssthresh == 20 * MSS
    assert cc.cwnd == MSS
    cc.on_timeout(RTT, MSS)  # backed-off RTO of the same segment: ssthresh kept
    assert cc.ssthresh == 20 * MSS
    assert cc.cwnd == MSS
    cc.on_ack(MSS, None, 2 * RTT, MSS)
    assert cc.cwnd == 2 * MSS  # slow start again
    cc.on_timeout(3 * RTT, 2 * MSS)  # a new loss after progress: eq. 4 again
    assert cc.ssthresh == 2 * MSS
    assert cc.cwnd == MSS


# -- CUBIC ----------------------------------------------------------------------------

@pytest.mark.parametrize("w_max", [20, 100, 1000])
def test_cubic_reduction_and_k(w_max):
    cc = cubic_after_loss(w_max)
    assert cc.w_max == w_max
    assert cc.ssthresh == int(w_max * MSS * BETA)
    assert cc.cwnd == cc.ssthresh
    assert cc.epoch_start_ns is None  # the epoch starts with the first ACK
    cc.on_ack(MSS, RTT, 5 * MS, cc.cwnd)
    assert cc.epoch_start_ns == 5 * MS
    assert cc.k == pytest.approx(((w_max - cc.ssthresh / MSS) / C) ** (1 / 3), rel=1e-9)
    assert cc.k == pytest.approx((w_max * (1 - BETA) / C) ** (1 / 3), rel=1e-6)


def test_cubic_k_value():
    cc = cubic_after_loss(1000)
    cc.on_ack(MSS, RTT, 1, cc.cwnd)
    assert cc.k == pytest.approx(9.0856, abs=1e-4)  # cbrt(1000 * 0.3 / 0.4) = cbrt(750)


def test_cubic_reduction_floor():
    cc = Cubic(MSS)
    cc.cwnd = 2 * MSS
    cc.on_enter_recovery(0, 2 * MSS)
    assert cc.ssthresh == 2 * MSS
    assert cc.cwnd == 2 * MSS


def test_cubic_exit_recovery_deflates_and_starts_epoch():
    cc = cubic_after_loss(100)
    cc.on_ack(MSS, RTT, 1 * MS, cc.cwnd)
    assert cc.epoch_start_ns == 1 * MS
    cc.on_enter_recovery(2 * MS, cc.cwnd)
    cc.cwnd += 10 * MSS  # engine inflation
    cc.on_exit_recovery(RTT)
    assert cc.cwnd == cc.ssthresh
    assert cc.epoch_start_ns is None
    cc.on_ack(MSS, RTT, 2 * RTT, cc.cwnd)
    assert cc.epoch_start_ns == 2 * RTT


def _run_cubic(cc: Cubic, rounds: int, rtt: int = RTT) -> list[tuple[float, float]]:
    """(seconds since epoch start, cwnd in segments) at the end of every round."""
    now, out = 0, []
    for _ in range(rounds):
        now, _ = ack_window(cc, now, rtt=rtt)
        assert cc.epoch_start_ns is not None
        out.append(((now - cc.epoch_start_ns) / S, cc.cwnd / MSS))
    return out


def test_cubic_follows_w_cubic():
    w_max = 500
    cc = cubic_after_loss(w_max)
    k = math.cbrt(w_max * (1 - BETA) / C)
    trace = _run_cubic(cc, 150)
    assert trace[-1][0] > 2 * k
    for t, cwnd in trace:
        assert cwnd == pytest.approx(w_cubic(t, w_max, k), rel=0.005), t
        # the target is one RTT ahead, the window never gets there within the RTT
        assert cwnd <= w_cubic(t + RTT / S, w_max, k)


def test_cubic_concave_then_convex():
    w_max = 500
    cc = cubic_after_loss(w_max)
    k = math.cbrt(w_max * (1 - BETA) / C)
    trace = _run_cubic(cc, 150)
    growth = [(t, b - a) for (_, a), (t, b) in itertools.pairwise(trace)]
    concave = [g for t, g in growth if t < k - 0.5]
    convex = [g for t, g in growth if t > k + 0.5]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(concave))
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(convex))
    assert concave[0] > 4 and convex[-1] > 4  # fast far from W_max ...
    near = [g for t, g in growth if abs(t - k) < 0.5]
    assert max(near) < 0.05  # ... a plateau at W_max
    below = [w for t, w in trace if t < k - 0.2]
    above = [w for t, w in trace if t > k + 0.2]
    assert max(below) < w_max < min(above)
    at_k = min(trace, key=lambda p: abs(p[0] - k))[1]
    assert at_k == pytest.approx(w_max, abs=0.5)


def test_cubic_reno_friendly_region_at_short_rtt():
    """Small BDP and 1 ms RTT: the cubic function barely moves, W_est sets the window."""
    rtt = 1 * MS
    w_max = 20
    cc = cubic_after_loss(w_max)
    k = math.cbrt(w_max * (1 - BETA) / C)
    reno = NewReno(MSS)
    reno.ssthresh = reno.cwnd = cc.cwnd
    trace = _run_cubic(cc, 100, rtt=rtt)
    now = 0
    for _ in range(100):
        now, _ = ack_window(reno, now, rtt=rtt)
    # the RFC 9438 eq. 4 model per RTT: alpha_cubic until W_est reaches cwnd_prior, then 1
    model = w_max * BETA
    for _ in range(100):
        model += ALPHA if model < w_max else 1.0
    t, cwnd = trace[-1]
    assert cwnd > 5 * w_cubic(t, w_max, k)
    assert cwnd == pytest.approx(model, abs=1.5)
    assert cc.w_est == pytest.approx(model, abs=1.5)
    # Reno's own AIMD(1, 0.5) from the same window, slower only while alpha_cubic < 1
    assert reno.cwnd / MSS - 8 <= cwnd <= reno.cwnd / MSS


def test_cubic_region_dominates_at_long_rtt():
    """The same window at 100 ms: cubic growth is far above Reno's one MSS per RTT."""
    cc = cubic_after_loss(500)
    trace = _run_cubic(cc, 10)
    assert trace[-1][1] - trace[0][1] > 30
    assert cc.w_est < trace[-1][1] - 30


def test_cubic_fast_convergence():
    cc = cubic_after_loss(100)
    now = 0
    while cc.cwnd < 80 * MSS:
        now, _ = ack_window(cc, now)
    at_loss = cc.cwnd / MSS
    assert at_loss < 100
    cc.on_enter_recovery(now, cc.cwnd)
    assert cc.w_max == pytest.approx(at_loss * (1 + BETA) / 2)  # below the old W_max
    assert cc.ssthresh == int(at_loss * MSS * BETA)
    cc.on_exit_recovery(now)
    cc.on_ack(MSS, RTT, now + MS, cc.cwnd)
    assert cc.k == pytest.approx(math.cbrt((cc.w_max - cc.ssthresh / MSS) / C), rel=1e-9)
    assert cc.k < math.cbrt(at_loss * (1 - BETA) / C)  # plateaus sooner
    # a loss above the previous W_max remembers the window itself
    above = cubic_after_loss(50)
    above.cwnd = 60 * MSS
    above.on_enter_recovery(0, 60 * MSS)
    assert above.w_max == 60


def test_cubic_growth_clamped_to_one_and_a_half():
    """W_cubic(t + RTT) far above the window: at most 1.5x per window acknowledged."""
    cc = cubic_after_loss(1000)
    start = cc.cwnd
    rtt = 20 * S  # W_cubic(20 s) is about 1518 segments, over 1.5 * 700
    k = math.cbrt(1000 * (1 - BETA) / C)
    assert w_cubic(rtt / S, 1000, k) > 1.5 * start / MSS
    for i in range(start // MSS):
        cc.on_ack(MSS, rtt, (i + 1) * MS, cc.cwnd)
        if i == 10:
            assert cc.cwnd - start <= 10 * MSS // 2 + 1
    assert 1.49 * start <= cc.cwnd <= 1.5 * start


def test_cubic_timeout():
    cc = Cubic(MSS)
    cc.cwnd = 40 * MSS
    cc.on_timeout(0, 10 * MSS)
    assert cc.ssthresh == 28 * MSS  # beta_cubic of the window (RFC 9438 4.8)
    assert cc.cwnd == MSS
    assert cc.epoch_start_ns is None
    cc.on_timeout(RTT, MSS)  # backed off: ssthresh kept
    assert cc.ssthresh == 28 * MSS
    now = 2 * RTT
    while cc.cwnd < cc.ssthresh:  # slow start, one ACK per millisecond
        now += MS
        cc.on_ack(MSS, RTT, now, cc.cwnd)
        assert cc.epoch_start_ns is None
    epoch_cwnd = cc.cwnd
    cc.on_ack(MSS, RTT, now + MS, cc.cwnd)
    # first congestion avoidance after a timeout: K = 0, W_max = cwnd at its start
    assert cc.epoch_start_ns == now + MS
    assert cc.k == 0
    assert cc.w_max == epoch_cwnd / MSS


def test_cubic_application_limited_pauses_the_epoch_clock():
    ref = cubic_after_loss(500)
    paused = cubic_after_loss(500)
    now = 0
    for _ in range(10):
        now, _ = ack_window(ref, now)
    now = 0
    for _ in range(10):
        now, _ = ack_window(paused, now)
    epoch = paused.epoch_start_ns
    assert epoch is not None
    held = paused.cwnd
    for _ in range(50):  # five seconds sending a quarter of the window
        now, _ = ack_window(paused, now, limited=True)
    assert paused.cwnd == held
    assert paused.epoch_start_ns == pytest.approx(epoch + 5 * S, abs=RTT)
    for _ in range(10):
        now, _ = ack_window(paused, now)
    ref_now = 10 * RTT
    for _ in range(10):
        ref_now, _ = ack_window(ref, ref_now)
    # the paused sender continues its curve as if the pause had not happened
    assert paused.cwnd == pytest.approx(ref.cwnd, rel=0.01)


def test_cubic_idle():
    cc = cubic_after_loss(500)
    now = 0
    for _ in range(5):
        now, _ = ack_window(cc, now)
    epoch = cc.epoch_start_ns
    assert epoch is not None
    rto = 1 * S
    cc.on_idle(now + 400 * MS, rto)  # short idle: no restart, not counted in t
    assert cc.epoch_start_ns == epoch + 400 * MS
    assert cc.cwnd > initial_window(MSS)
    last = now + 400 * MS
    cc.on_ack(MSS, RTT, last, cc.cwnd)
    cc.on_idle(last + 2 * rto, rto)  # long idle: restart
    assert cc.cwnd == initial_window(MSS)
    assert cc.epoch_start_ns is None
    assert cc.w_max == 500  # the memory of the last congestion event stays


def test_cubic_min_rtt():
    cc = Cubic(MSS)
    assert cc.min_rtt_ns is None
    for now, rtt in enumerate([80 * MS, 50 * MS, None, 70 * MS], start=1):
        cc.on_ack(MSS, rtt, now, cc.cwnd)
    assert cc.min_rtt_ns == 50 * MS
