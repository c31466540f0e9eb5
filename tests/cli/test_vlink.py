"""vlink: link impairment settings, their display, and their exact effect in virtual time."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, SOCK_DGRAM
from vimage.vnet import Vnet

from .conftest import error_lines


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status != 0, f"{line!r} unexpectedly succeeded: {result.output}"
    lines = error_lines(result.output, "vlink")
    assert len(lines) == 1 and lines[0].startswith(("vlink: ", "usage: vlink")), result.output
    return lines[0]


class Link:
    """h1 (epair0a, 10.0.0.1) -- h2 (epair0b, 10.0.0.2) with ARP already resolved."""

    def __init__(self, seed: int = 1) -> None:
        self.kernel = kernel = Kernel(clock="virtual", seed=seed)
        self.h1, self.h2 = kernel.create("h1"), kernel.create("h2")
        for line in ("ifconfig epair create", "ifconfig epair0a vnet h1",
                     "ifconfig epair0b vnet h2"):
            ok(kernel, line)
        ok(self.h1, "ifconfig epair0a 10.0.0.1/24")
        ok(self.h2, "ifconfig epair0b 10.0.0.2/24")
        self.rx = self.h2.socket(AF_INET, SOCK_DGRAM)
        self.rx.bind(("", 9000))
        self.rx.settimeout(0)
        self.tx = self.h1.socket(AF_INET, SOCK_DGRAM)
        self.send(b"warm-up")  # resolve ARP so that timings below are the link's alone
        self.kernel.run(1)
        self.drain()

    def send(self, data: bytes) -> None:
        self.tx.sendto(data, ("10.0.0.2", 9000))

    def drain(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.rx.recv(65535))
            except BlockingIOError:
                return got

    def arrival_delay(self, data: bytes = b"x") -> float | None:
        """Seconds between sending one datagram and its arrival (None if it never comes)."""
        kernel = self.kernel
        start = kernel.now
        self.send(data)
        if not kernel.run_until(lambda: bool(self.rx._rcvq), timeout=5):
            return None
        delay = kernel.now - start
        self.drain()
        return delay


@pytest.fixture
def link() -> Link:
    return Link()


def test_no_impairment(link: Link) -> None:
    assert ok(link.h1, "vlink epair0a") == "epair0a: no impairment\n"
    assert link.arrival_delay() == 0.0


def test_show_settings(link: Link) -> None:
    ok(link.h1, "vlink epair0a bw 1Mbit/s delay 50ms loss 1% ber 1e-6 dup 0.5% queue 50")
    assert ok(link.h1, "vlink epair0a") == (
        "epair0a: bandwidth 1000000 bit/s delay 50.000 ms loss 1% ber 1e-06 duplicate 0.5% "
        "queue 50\n"
        "\tdelivered 0 duplicated 0 in flight 0\n"
        "\tdropped: queue 0 loss 0 ber 0\n")
    pipe = link.h1.iface("epair0a").pipe
    assert (pipe.bandwidth, pipe.delay_ns, pipe.loss, pipe.ber, pipe.dup, pipe.queue) == (
        1_000_000, 50_000_000, 0.01, 1e-6, 0.005, 50)


def test_delay_is_exact(link: Link) -> None:
    ok(link.h1, "vlink epair0a delay 50ms")
    assert link.arrival_delay() == pytest.approx(0.05, abs=1e-9)
    # the other direction is not impaired
    ok(link.h2, "vlink epair0b")
    assert link.h2.iface("epair0b").pipe is None


def test_in_flight_and_delivered_counters(link: Link) -> None:
    ok(link.h1, "vlink epair0a delay 10ms")
    link.send(b"a")
    link.send(b"b")
    assert "\tdelivered 0 duplicated 0 in flight 2\n" in ok(link.h1, "vlink epair0a")
    link.kernel.run(0.01)
    assert "\tdelivered 2 duplicated 0 in flight 0\n" in ok(link.h1, "vlink epair0a")
    assert link.drain() == [b"a", b"b"]


def test_bandwidth_serialises(link: Link) -> None:
    ok(link.h1, "vlink epair0a bandwidth 1Mbit/s")
    payload = b"x" * 1000  # 1000 + 8 UDP + 20 IP + 14 Ethernet = 1042 bytes = 8336 bits
    assert link.arrival_delay(payload) == pytest.approx(0.008336, abs=1e-9)
    ok(link.h1, "vlink epair0a delay 2ms")  # settings add up; bandwidth is kept
    assert link.arrival_delay(payload) == pytest.approx(0.010336, abs=1e-9)


def test_queue_limit_drops(link: Link) -> None:
    ok(link.h1, "vlink epair0a bw 100kbit/s queue 2")
    for _ in range(5):
        link.send(b"y" * 500)
    link.kernel.run(1)
    assert len(link.drain()) == 2
    out = ok(link.h1, "vlink epair0a")
    assert "\tdropped: queue 3 loss 0 ber 0\n" in out and "delivered 2 " in out


def test_total_loss(link: Link) -> None:
    ok(link.h1, "vlink epair0a loss 100%")
    assert link.arrival_delay() is None
    assert "\tdropped: queue 0 loss 1 ber 0\n" in ok(link.h1, "vlink epair0a")


def test_total_bit_errors(link: Link) -> None:
    ok(link.h1, "vlink epair0a ber 1")
    assert link.arrival_delay() is None
    assert "\tdropped: queue 0 loss 0 ber 1\n" in ok(link.h1, "vlink epair0a")


def test_partial_loss_is_reproducible() -> None:
    def run() -> int:
        link = Link(seed=42)
        ok(link.h1, "vlink epair0a loss 30%")
        for _ in range(200):
            link.send(b"z")
        link.kernel.run(1)
        return len(link.drain())

    first = run()
    assert 100 < first < 180 and run() == first


def test_duplication(link: Link) -> None:
    ok(link.h1, "vlink epair0a dup 100%")
    link.send(b"twice")
    link.kernel.run(1)
    assert link.drain() == [b"twice", b"twice"]
    assert "\tdelivered 2 duplicated 1 in flight 0\n" in ok(link.h1, "vlink epair0a")


def test_clear(link: Link) -> None:
    ok(link.h1, "vlink epair0a delay 30ms")
    ok(link.h1, "vlink epair0a clear")
    assert ok(link.h1, "vlink epair0a") == "epair0a: no impairment\n"
    assert link.arrival_delay() == 0.0


def test_list_all(link: Link) -> None:
    ok(link.kernel, "ifconfig epair create")
    ok(link.kernel, "vlink epair1a delay 1ms")
    out = ok(link.kernel, "vlink")
    assert out.startswith("epair1a: bandwidth unlimited delay 1.000 ms loss 0% ber 0 ")
    assert "epair1b: no impairment\n" in out


@pytest.mark.parametrize(("line", "word"), [
    ("vlink lo0 delay 1ms", "lo0"),
    ("vlink epair9a delay 1ms", "epair9a"),
    ("vlink epair0a delay soon", "soon"),
    ("vlink epair0a loss 150%", "150%"),
    ("vlink epair0a ber -1", "-1"),
    ("vlink epair0a bw fast", "fast"),
    ("vlink epair0a queue 0", "queue"),
    ("vlink epair0a queue many", "many"),
    ("vlink epair0a jitter soon", "soon"),
    ("vlink epair0a delay", "delay"),
    ("vlink epair0a delay 1ms delay 2ms", "delay"),
    ("vlink epair0a clear delay 1ms", "clear"),
    ("vlink -x", "illegal option -- x"),
])
def test_errors(link: Link, line: str, word: str) -> None:
    assert word in fails(link.h1, line)
    assert link.h1.iface("epair0a").pipe is None


def test_jitter_setting_shown_and_bounded(link: Link) -> None:
    ok(link.h1, "vlink epair0a delay 10ms jitter 4ms")
    assert ok(link.h1, "vlink epair0a").startswith(
        "epair0a: bandwidth unlimited delay 10.000 ms jitter 4.000 ms loss 0% ")
    assert link.h1.iface("epair0a").pipe.jitter_ns == 4_000_000
    delays = [link.arrival_delay() for _ in range(20)]
    assert all(0.010 <= d <= 0.014 for d in delays), delays
    assert len(set(delays)) > 1
