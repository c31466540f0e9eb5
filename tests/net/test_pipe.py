"""Link impairment (ng_pipe model) is exact in virtual time."""

import pytest

from vimage.kernel import Kernel
from vimage.topo import connect


def _pair(seed=1):
    k = Kernel(clock="virtual", seed=seed)
    a = k.create("a")
    b = k.create("b")
    ea, eb = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    k.run(1)  # gratuitous ARP settles
    return k, a, b, ea, eb


def _arrivals(k, ifp):
    """Record (time_ns, len) of every frame the interface receives."""
    times = []
    orig = ifp.input

    class Spy:
        def input(self, frame):
            times.append((k.now_ns(), len(frame)))
            orig(frame)

    spy = Spy()
    # deliveries go to peer.input; point the sender's peer at the spy
    ifp.peer.peer = spy
    return times


def test_bandwidth_and_delay_exact():
    k, a, b, ea, eb = _pair()
    ea.impair(bandwidth="1Mbit/s", delay="50ms")
    times = _arrivals(k, eb)
    start = k.now_ns()
    for _ in range(5):
        ea.output(b"\x00" * 1500)  # 1500-byte frames: 12 ms each at 1 Mbit/s
    k.run(1)
    got = [t - start for t, _ in times]
    assert got == [12_000_000 * (i + 1) + 50_000_000 for i in range(5)]


def test_queue_limit_drops_and_counts():
    k, a, b, ea, eb = _pair()
    pipe = ea.impair(bandwidth=1_000_000, queue=3)
    times = _arrivals(k, eb)
    for _ in range(10):
        ea.output(b"\x00" * 1500)
    k.run(1)
    assert len(times) == 3
    assert pipe.dropped_queue == 7 and pipe.delivered == 3


def test_loss_duplication_ber_are_drawn_from_the_seed():
    def run(seed):
        k, a, b, ea, eb = _pair(seed)
        pipe = ea.impair(loss="20%", dup="10%")
        times = _arrivals(k, eb)
        for _ in range(2000):
            ea.output(b"\x00" * 100)
        k.run(1)
        return pipe.dropped_loss, pipe.duplicated, len(times)

    lost, dup, got = run(3)
    assert 320 < lost < 480  # 20% of 2000, generous bounds
    assert 120 < dup < 200  # 10% of the survivors
    assert got == 2000 - lost + dup
    assert run(3) == (lost, dup, got)  # same seed, same draws
    assert run(4) != (lost, dup, got)


def test_ber_drops_long_frames_more():
    k, a, b, ea, eb = _pair()
    pipe = ea.impair(ber=1e-4)
    for _ in range(500):
        ea.output(b"\x00" * 1500)  # 12000 bits: P(error) = 1 - (1-1e-4)^12000 ~ 0.70
    k.run(1)
    long_drop = pipe.dropped_ber
    pipe.dropped_ber = 0
    for _ in range(500):
        ea.output(b"\x00" * 60)  # 480 bits: ~ 0.047
    k.run(1)
    assert 300 < long_drop < 400
    assert pipe.dropped_ber < 50


def test_direction_and_runtime_change():
    k, a, b, ea, eb = _pair()
    ra = a.socket(2, 2)
    ra.bind(("", 1))
    rb = b.socket(2, 2)
    rb.bind(("", 1))
    ra.sendto(b"resolve", ("10.0.0.2", 1))  # ARP first, so timing is data only
    rb.recv(10)
    ea.impair(delay="10ms")
    t0 = k.now
    ra.sendto(b"to-b", ("10.0.0.2", 1))
    rb.recv(10)
    assert k.now - t0 == pytest.approx(0.010, abs=1e-9)
    t0 = k.now
    rb.sendto(b"to-a", ("10.0.0.1", 1))  # b's direction is not impaired
    ra.recv(10)
    assert k.now == t0
    ea.impair(delay="30ms")
    t0 = k.now
    ra.sendto(b"again", ("10.0.0.2", 1))
    rb.recv(10)
    assert k.now - t0 == pytest.approx(0.030, abs=1e-9)
    ea.clear_impairment()
    t0 = k.now
    ra.sendto(b"clear", ("10.0.0.2", 1))
    rb.recv(10)
    assert k.now == t0


@pytest.mark.parametrize("bad", [{"loss": "150%"}, {"delay": "-1ms"}, {"bandwidth": "fast"},
                                 {"queue": 0}, {"colour": "red"},
                                 {"jitter": "-2ms"}, {"jitter": "lots"}])
def test_bad_settings_rejected(bad):
    k, a, b, ea, eb = _pair()
    with pytest.raises(ValueError):
        ea.impair(**bad)


def _jittered_arrivals(seed: int, spacing_ns: int, n: int = 200) -> list[int]:
    k, a, b, ea, eb = _pair(seed)
    ea.impair(delay="10ms", jitter="5ms")
    times = _arrivals(k, eb)
    start = k.now_ns()
    for i in range(n):
        k.call_later(i * spacing_ns / 1e9, ea.output, i.to_bytes(2, "big") + b"\x00" * 60)
    k.run(5)
    return [t - start for t, _ in times]


def test_jitter_is_uniform_extra_delay_in_the_bound():
    got = _jittered_arrivals(1, 20_000_000)  # frames 20 ms apart: jitter cannot reorder
    extra = [t - i * 20_000_000 - 10_000_000 for i, t in enumerate(got)]
    assert len(got) == 200
    assert all(0 <= e <= 5_000_000 for e in extra)
    assert len(set(extra)) > 150  # drawn, not constant
    assert 1_500_000 < sum(extra) / len(extra) < 3_500_000  # uniform in [0, 5 ms]: mean 2.5


def test_jitter_never_reorders_and_is_reproducible():
    got = _jittered_arrivals(2, 1_000_000)  # 1 ms apart, 5 ms jitter: would reorder
    assert got == sorted(got) and len(got) == 200
    assert got == _jittered_arrivals(2, 1_000_000)  # same seed, same times
    assert got != _jittered_arrivals(3, 1_000_000)


def test_jitter_zero_draws_nothing():
    """A link without jitter keeps the RNG stream (and so every other draw) unchanged."""
    k, a, b, ea, eb = _pair()
    ea.impair(delay="10ms")
    state = k.rng.getstate()
    ea.output(b"\x00" * 60)
    k.run(1)
    assert k.rng.getstate() == state
