"""Per-vnet CPU accounting (vimage.cpu): the kernel loop charges a vnet for its frames
and timers, the asyncio loop for its tasks' steps; load averages; cpu.weight's share
of the loop (deficit round robin, counted in work units, not seconds)."""

from __future__ import annotations

import asyncio
import math

import vimage
from vimage import Kernel
from vimage.cpu import NS_PER_S, VnetCpu


def _burn(n: int = 20000) -> int:
    return sum(range(n))


def _kernel() -> Kernel:
    kernel = Kernel(clock="virtual", seed=1)
    kernel.base.sysctl("kern.vnet_cpu_accounting", 1)  # off by default (its cost)
    return kernel


def test_a_busy_vnet_is_charged_and_an_idle_one_is_not():
    kernel = _kernel()
    busy, idle = kernel.create("busy"), kernel.create("idle")
    busy.cmd("ifconfig lo0 inet 127.0.0.1/8 up")
    out = busy.cmd("ping -c 20 -i 0.1 127.0.0.1").output
    assert "20 packets received" in out
    assert busy.cpu.units >= 40 and busy.cpu.loop_ns > 0  # 20 requests, 20 replies
    assert idle.cpu.units == 0 and idle.cpu.loop_ns == 0 and idle.cpu.total_ns() == 0
    figures = busy.cpu.figures(kernel.now_ns())
    assert figures["cpu"] > 0 and figures["units"] == busy.cpu.units
    assert idle.cpu.figures(kernel.now_ns())["loadavg"] == [0.0, 0.0, 0.0]
    assert busy.cpu.loadavg(kernel.now_ns())[0] > 0


def test_a_timer_is_charged_to_its_owner_and_one_of_no_vnet_to_the_base():
    kernel = _kernel()
    a, b = kernel.create("a"), kernel.create("b")
    for _ in range(3):
        kernel.call_later(0.5, _burn, owner=a)
    kernel.call_later(0.5, _burn)  # no owner: the base vnet (the host's own work)
    kernel.run(1)
    assert a.cpu.units == 3 and a.cpu.loop_ns > 0
    assert b.cpu.units == 0 and b.cpu.loop_ns == 0
    assert kernel.base.cpu.units == 1


def test_odd_receivers_and_owners_do_not_break_the_loop():
    kernel = _kernel()
    got = []

    class Bare:  # no .vnet (a benchmark's capture, a test's stub): the base vnet pays
        def input(self, frame: bytes) -> None:
            got.append(frame)

    kernel.sched.queue.append((Bare(), b"x"))
    kernel.sched.call_later(1, got.append, b"y", owner="not a vnet")
    kernel.run(2)
    assert got == [b"x", b"y"] and kernel.sched.errors == 0
    assert kernel.base.cpu.units == 1


def test_the_sysctl_turns_the_accounting_off_and_on():
    kernel = Kernel(clock="virtual", seed=1)
    assert kernel.base.sysctl("kern.vnet_cpu_accounting") == 0  # its cost: opt in
    a = kernel.create("a")
    a.sysctl("kern.vnet_cpu_accounting", 1)
    assert kernel.base.sysctl("kern.vnet_cpu_accounting") == 1
    a.sysctl("kern.vnet_cpu_accounting", 0)  # a kernel-wide switch, as FreeBSD's kern.*
    assert kernel.base.sysctl("kern.vnet_cpu_accounting") == 0
    kernel.call_later(0.1, _burn, owner=a)
    kernel.run(1)
    assert a.cpu.units == 0 and a.cpu.loop_ns == 0
    kernel.base.sysctl("kern.vnet_cpu_accounting", 1)
    kernel.call_later(0.1, _burn, owner=a)
    kernel.run(1)
    assert a.cpu.units == 1 and a.cpu.loop_ns > 0


def test_load_averages_decay_as_the_kernels_do():
    """One CPU kept busy for a minute: 1 - 1/e for the 1-minute average; then a minute
    idle divides it by e (FreeBSD loadav(), Linux calc_load, with exact exponentials)."""
    cpu = VnetCpu(0)
    cpu.loop_ns = 60 * NS_PER_S
    load1, load5, load15 = cpu.loadavg(60 * NS_PER_S)
    assert math.isclose(load1, 1 - math.exp(-1))
    assert math.isclose(load5, 1 - math.exp(-60 / 300))
    assert math.isclose(load15, 1 - math.exp(-60 / 900))
    # folding in two halves gives what one fold does: a share constant over the gap
    half = VnetCpu(0)
    half.loop_ns = 30 * NS_PER_S
    half.fold(30 * NS_PER_S)
    half.loop_ns = 60 * NS_PER_S
    assert math.isclose(half.loadavg(60 * NS_PER_S)[0], load1)
    idle1 = cpu.loadavg(120 * NS_PER_S)[0]
    assert math.isclose(idle1, load1 / math.e)


def test_the_loop_folds_the_averages_of_busy_vnets_only():
    kernel = _kernel()
    busy, idle = kernel.create("busy"), kernel.create("idle")
    for i in range(40):
        kernel.call_later(i * 0.5, _burn, owner=busy)
    idle_at = idle.cpu._at
    kernel.run(30)
    assert busy.cpu._at > 0  # sampled every 5 s of kernel time while busy
    assert idle.cpu._at == idle_at  # never touched
    assert busy.cpu.load1 > 0 and idle.cpu.loadavg(kernel.now_ns()) == (0.0, 0.0, 0.0)


def test_asyncio_task_steps_are_charged_to_the_tasks_vnet():
    kernel = _kernel()
    busy, idle = kernel.create("busy"), kernel.create("idle")

    async def worker(burn: bool) -> None:
        for _ in range(50):
            if burn:
                _burn(50000)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(vimage.spawn(busy, worker(True)), vimage.spawn(idle, worker(False)))

    vimage.run(main(), kernel=kernel)
    assert busy.cpu.steps >= 50 and idle.cpu.steps >= 50
    assert busy.cpu.task_ns > 5 * idle.cpu.task_ns  # 50 sums of 50,000 numbers vs none


def _served(weights: dict[str, int], frames: int = 300, first: int = 200) -> dict[str, int]:
    """Queue `frames` frames for a, then as many for b, and count whose the loop serves
    among the first `first` (the order it delivers them in)."""
    kernel = _kernel()
    vnets = {name: kernel.create(name) for name in ("a", "b")}
    for name, weight in weights.items():
        kernel.set_cpu_weight(vnets[name], weight)
    order: list[str] = []

    class Receiver:
        def __init__(self, vnet: vimage.Vnet) -> None:
            self.vnet = vnet

        def input(self, frame: bytes) -> None:
            order.append(self.vnet.name)

    for name in ("a", "b"):
        receiver = Receiver(vnets[name])
        kernel.sched.queue.extend((receiver, b"f") for _ in range(frames))
    kernel.run(0)
    assert len(order) == 2 * frames and kernel.sched.errors == 0
    assert vnets["a"].cpu.units == vnets["b"].cpu.units == frames
    return {name: order[:first].count(name) for name in ("a", "b")}


def test_weights_share_the_loop_between_vnets_with_queued_work():
    assert _served({}) == {"a": 200, "b": 0}  # default weights: arrival order, as ever
    assert _served({"a": 300}) == {"a": 150, "b": 50}
    assert _served({"b": 300}) == {"a": 50, "b": 150}
    assert _served({"a": 200, "b": 200}) == {"a": 100, "b": 100}
    assert _served({"a": 50}) == {"a": 67, "b": 133}  # a frame every other turn


def test_default_weights_keep_the_plain_loop_and_destroy_forgets_a_weight():
    kernel = _kernel()
    a, b = kernel.create("a"), kernel.create("b")
    assert not kernel.sched.weighted
    kernel.set_cpu_weight(a, 500)
    kernel.set_cpu_weight(b, 10)
    assert kernel.sched.weighted
    kernel.set_cpu_weight(b, 100)
    assert kernel.sched.weighted
    kernel.call_later(0.1, _burn, owner=a)  # the first sample folds at once
    kernel.call_later(0.2, _burn, owner=a)  # the next one waits for the next sample
    kernel.run(1)
    assert a.cpu in kernel.sched.cpu_dirty  # charged, its load not folded yet
    kernel.destroy(a)
    assert not kernel.sched.weighted and not kernel._weighted
    assert a.cpu not in kernel.sched.cpu_dirty  # nothing of it is left in the kernel
    for bad in (0, 10001):
        try:
            kernel.set_cpu_weight(b, bad)
        except ValueError as exc:
            assert "cpu.weight" in str(exc)
        else:
            raise AssertionError(f"weight {bad} was taken")


def test_a_vnet_destroyed_mid_round_gets_no_more_frames():
    kernel = _kernel()
    a, b = kernel.create("a"), kernel.create("b")
    kernel.set_cpu_weight(a, 300)
    got: list[str] = []

    class Receiver:
        def __init__(self, vnet: vimage.Vnet) -> None:
            self.vnet = vnet

        def input(self, frame: bytes) -> None:
            got.append(self.vnet.name)
            if frame == b"kill":
                kernel.destroy(b)

    ra, rb = Receiver(a), Receiver(b)
    kernel.sched.queue.extend([(ra, b"kill"), (rb, b"f"), (rb, b"f"), (ra, b"f")])
    kernel.run(0)
    assert got == ["a", "a"] and kernel.sched.errors == 0
