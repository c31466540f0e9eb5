"""Per-vnet CPU accounting: what a vnet's packets, timers, tasks and processes cost.

Every vnet has a `VnetCpu` record (`vnet.cpu`). The kernel loop (vimage.sched) charges it
the CPU time (the loop thread's, time.thread_time_ns) of the frames it received and the
timers it owns, reading the clock once per run of consecutive work of one vnet, not per
unit; the asyncio loop (vimage.aio.loop) charges it the steps of its tasks; vimaged
(vimage.ctl.cgroup) adds what its `vimage exec` processes used, read from their cgroup
v2 `cpu.stat` or, without one, reported from their rusage as they exit.

The load average follows the kernel's (FreeBSD kern_synch.c loadav(), Linux
calc_load): three exponentially decayed averages with 1, 5 and 15 minute time
constants. What is averaged is the vnet's CPU share: CPU seconds used per second of
kernel time (virtual or real) over the interval, so 1.00 is one CPU kept busy, as a
load of 1.00 is one runnable thread. A fold over an interval dt with share x is
    load = load * exp(-dt / T) + x * (1 - exp(-dt / T)),
exact for a share constant over dt. The loop folds the vnets it charged at most every
`SAMPLE_NS` (FreeBSD samples every 5 s), and a reader folds on demand; an idle vnet is
never touched (its share over the gap is zero, which the next fold applies exactly).
"""

from __future__ import annotations

import math

from vimage.protosw import Protocol
from vimage.sysctl import Oid

NS_PER_S = 1_000_000_000
LOAD_PERIODS = (60, 300, 900)
"""Time constants of the three load averages, in seconds (1, 5 and 15 minutes)."""
SAMPLE_NS = 5 * NS_PER_S
"""How often the loop folds the load averages of the vnets it charged (FreeBSD: 5 s)."""
DEFAULT_WEIGHT = 100
"""cgroup v2 cpu.weight's default and range; the kernel loop serves queued frames of
competing vnets in proportion to it (vimage.sched, deficit round robin)."""
MIN_WEIGHT, MAX_WEIGHT = 1, 10000


class VnetCpu:
    """A vnet's CPU figures (nanoseconds) and its load averages."""

    __slots__ = ("_at", "_cpu", "born", "cgroup_ns", "load1", "load5", "load15", "loop_ns",
                 "proc_ns", "steps", "task_ns", "units", "wall", "weight")

    def __init__(self, now_ns: int) -> None:
        self.loop_ns = 0  # packets and timers in the kernel loop
        self.units = 0  # frames received and timers fired there
        self.wall = 0  # wall ns in the loop's current run, not yet charged (vimage.sched)
        self.task_ns = 0  # asyncio task steps
        self.steps = 0
        self.proc_ns = 0  # exited `vimage exec` processes, from their rusage (no cgroup)
        self.cgroup_ns = 0  # the vnet's cgroup: usage_usec of cpu.stat, as last read
        self.weight = DEFAULT_WEIGHT
        self.load1 = self.load5 = self.load15 = 0.0
        self.born = now_ns
        self._at = now_ns  # when the averages were last folded
        self._cpu = 0  # total_ns() then

    def total_ns(self) -> int:
        return self.loop_ns + self.task_ns + self.proc_ns + self.cgroup_ns

    def fold(self, now_ns: int) -> None:
        """Bring the load averages up to `now_ns` (see the module docstring)."""
        dt = now_ns - self._at
        if dt <= 0:
            return
        total = self.total_ns()
        share = (total - self._cpu) / dt
        self.load1 = _decay(self.load1, share, dt, LOAD_PERIODS[0])
        self.load5 = _decay(self.load5, share, dt, LOAD_PERIODS[1])
        self.load15 = _decay(self.load15, share, dt, LOAD_PERIODS[2])
        self._at, self._cpu = now_ns, total

    def loadavg(self, now_ns: int) -> tuple[float, float, float]:
        self.fold(now_ns)
        return self.load1, self.load5, self.load15

    def figures(self, now_ns: int) -> dict[str, float | int]:
        """What `vimage -l -v` and its JSON form show (seconds, counts, averages)."""
        load = self.loadavg(now_ns)
        total = self.total_ns()
        life = now_ns - self.born
        return {"cpu": round(total / NS_PER_S, 6),
                "cpu_percent": round(100 * total / life, 2) if life > 0 else 0.0,
                "cpu_loop": round(self.loop_ns / NS_PER_S, 6), "units": self.units,
                "cpu_tasks": round(self.task_ns / NS_PER_S, 6), "steps": self.steps,
                "cpu_procs": round((self.proc_ns + self.cgroup_ns) / NS_PER_S, 6),
                "loadavg": [round(x, 6) for x in load], "weight": self.weight}


def _decay(load: float, share: float, dt: int, period: int) -> float:
    decay = math.exp(-dt / (period * NS_PER_S))
    return load * decay + share * (1.0 - decay)


def check_weight(value: int) -> int:
    if not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise ValueError(f"cpu.weight: {value} is out of range [{MIN_WEIGHT}..{MAX_WEIGHT}]")
    return value


PROTOCOL = Protocol(
    name="cpu", order=60,
    sysctls=(Oid("kern.vnet_cpu_accounting", "kernel", "cpu_accounting",
                 "Account kernel-loop and task CPU time to vnets", 0, 1),),
)
"""The sysctl of the accounting: a kernel-wide switch (as FreeBSD's kern.* are global),
off by default in a Kernel (it costs up to a few percent of a forwarding or asyncio
benchmark: docs/internals.md) and turned on by vimaged, where `vimage -l -v` shows it."""
