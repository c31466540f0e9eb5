"""Link impairment on what an interface transmits (FreeBSD ng_pipe's model).

A frame first waits in a FIFO of at most `queue` frames for the transmitter,
which serialises it at `bandwidth` bit/s; it then propagates for `delay` and
arrives. Loss, bit errors and duplication are drawn from the kernel RNG, so a
virtual-time run is exact and reproducible.

Jitter adds to each frame's delay an extra delay drawn uniformly from [0, jitter]
(kernel RNG), but a frame never arrives before the one sent ahead of it: the link
stays FIFO, as a wire (and ng_pipe's single queue) is. netem instead reorders when its
jitter exceeds the spacing of packets; that reordering is deliberately not modelled.
A link without jitter draws nothing, so its runs are unchanged.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from vimage.sched import NS_PER_S, Timer

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

DEFAULT_QUEUE = 50


class LinkPipe:
    __slots__ = (
        "_busy_until",
        "_done",
        "_last_arrive",
        "_timers",
        "bandwidth",
        "ber",
        "delay_ns",
        "delivered",
        "dropped_ber",
        "dropped_loss",
        "dropped_queue",
        "dup",
        "duplicated",
        "ifp",
        "jitter_ns",
        "loss",
        "queue",
    )

    def __init__(self, ifp: Ifnet) -> None:
        self.ifp = ifp
        self.bandwidth = 0  # bit/s, 0 = unlimited
        self.delay_ns = 0
        self.jitter_ns = 0
        self.loss = 0.0
        self.ber = 0.0
        self.dup = 0.0
        self.queue = DEFAULT_QUEUE
        self._busy_until = 0
        self._last_arrive = 0  # the latest arrival scheduled: jitter never reorders
        self._done: deque[int] = deque()  # serialisation end times of frames in the FIFO
        self._timers: deque[Timer] = deque()
        self.delivered = self.dropped_queue = self.dropped_loss = 0
        self.dropped_ber = self.duplicated = 0

    @property
    def delay(self) -> float:
        return self.delay_ns / NS_PER_S

    @property
    def jitter(self) -> float:
        return self.jitter_ns / NS_PER_S

    @property
    def in_flight(self) -> int:
        return len(self._timers)

    def send(self, frame: bytes) -> None:
        kernel = self.ifp.vnet.kernel
        sched = kernel.sched
        # a keyed kernel (docs/mpi.md): the sending vnet's own stream, as the vnet's
        # draws must not depend on which other vnets share the kernel
        rng = self.ifp.vnet.rng if kernel.keyed else kernel.rng
        now = sched.now_ns()
        bits = len(frame) * 8
        done = self._done
        while done and done[0] <= now:
            done.popleft()
        if self.bandwidth and len(done) >= self.queue:
            self.dropped_queue += 1
            return
        if self.loss and rng.random() < self.loss:
            self.dropped_loss += 1
            return
        if self.ber and rng.random() < 1.0 - (1.0 - self.ber) ** bits:
            self.dropped_ber += 1
            return
        if self.bandwidth:
            start = max(now, self._busy_until)
            finish = start + (bits * NS_PER_S + self.bandwidth - 1) // self.bandwidth
            self._busy_until = finish
            done.append(finish)
        else:
            finish = now
        arrive = finish + self.delay_ns
        if self.jitter_ns:
            arrive += rng.randint(0, self.jitter_ns)
        # FIFO: never before the frame ahead (jitter, or a delay lowered mid-flight)
        arrive = self._last_arrive = max(arrive, self._last_arrive)
        copies = 2 if self.dup and rng.random() < self.dup else 1
        if copies == 2:
            self.duplicated += 1
        for _ in range(copies):
            self.schedule(arrive, frame)

    def schedule(self, arrive: int, frame: bytes) -> None:
        """Put `frame` on the wire to arrive at `arrive` (ns); a cut link of an experiment
        across MPI ranks sends it to the other rank instead (vimage.emu.mpi)."""
        sched = self.ifp.vnet.kernel.sched
        self._timers.append(sched.call_at(arrive, self._arrive, frame, owner=self.ifp.vnet))

    def _arrive(self, frame: bytes) -> None:
        self._timers.popleft()
        peer = self.ifp.peer
        if peer is not None:
            self.delivered += 1
            peer.input(frame)

    def flush(self) -> None:
        """Forget everything on the wire (interface moved, destroyed or pipe cleared)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._done.clear()
        self._busy_until = 0
        self._last_arrive = 0


SETTINGS: tuple[str, ...] = ("bandwidth", "delay", "jitter", "loss", "ber", "dup", "queue")


def configure(ifp: Ifnet, settings: dict[str, object]) -> LinkPipe:
    """Apply impairment settings to `ifp`'s pipe (created on first use)."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown link setting {sorted(unknown)[0]!r}")
    values: dict[str, object] = {}
    for key, raw in settings.items():
        text = raw if isinstance(raw, str) else None
        if key == "bandwidth":
            values[key] = parse_bandwidth(text) if text is not None else int(raw)  # type: ignore[call-overload]
        elif key in ("delay", "jitter"):
            values[f"{key}_ns"] = (parse_duration_ns(text) if text is not None
                                   else round(float(raw) * NS_PER_S))  # type: ignore[arg-type]
        elif key in ("loss", "ber", "dup"):
            values[key] = parse_probability(text if text is not None else str(raw))
        else:
            queue = int(text if text is not None else raw)  # type: ignore[call-overload]
            if queue < 1:
                raise ValueError(f"queue must be at least 1 frame, not {queue}")
            values[key] = queue
        if key in ("bandwidth",) and int(values[key]) < 0:  # type: ignore[call-overload]
            raise ValueError("bandwidth must be >= 0")
        if key in ("delay", "jitter") and int(values[f"{key}_ns"]) < 0:  # type: ignore
            raise ValueError(f"{key} must be >= 0")
    pipe = ifp.pipe
    if pipe is None:
        pipe = ifp.pipe = LinkPipe(ifp)
    for key, value in values.items():
        setattr(pipe, key, value)
    return pipe


def _scaled(number: str, scale: int, what: str, text: str) -> int:
    """`number` (its unit suffix stripped) times `scale`, rounded; ValueError naming `text`."""
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"bad {what} {text!r}") from None
    if value < 0:
        raise ValueError(f"bad {what} {text!r}")
    return round(value * scale)


def parse_bandwidth(text: str) -> int:
    """'1Mbit/s', '100kbps', '1.5M', '64000' -> bit/s."""
    t = text.strip().lower()
    for suffix in ("bit/s", "bps", "b/s", "bit"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            break
    scale = 1
    if t and t[-1] in "kmg":
        scale = {"k": 10**3, "m": 10**6, "g": 10**9}[t[-1]]
        t = t[:-1]
    return _scaled(t, scale, "bandwidth", text)


def parse_duration_ns(text: str) -> int:
    """'50ms', '1.5s', '200us', '10' (milliseconds, as ng_pipe/vlink) -> nanoseconds."""
    t = text.strip().lower()
    scale = 1_000_000
    for suffix, mult in (("ms", 1_000_000), ("us", 1_000), ("ns", 1), ("s", NS_PER_S)):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
            scale = mult
            break
    return _scaled(t, scale, "duration", text)


def parse_probability(text: str) -> float:
    """'1%', '0.01', '1e-6' -> probability in [0, 1]."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError(f"bad probability {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability {text!r} is not between 0 and 1")
    return value
