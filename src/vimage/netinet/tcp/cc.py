"""TCP congestion control: NewReno (RFC 5681, 6582) and CUBIC (RFC 9438).

The TCP engine keeps the loss-recovery bookkeeping (duplicate ACK counting, the
recovery point, the SACK scoreboard, RFC 6582 window inflation or the RFC 6675 pipe)
and calls the hooks of a `CongestionControl` at the events below; the algorithm only
owns `cwnd` and `ssthresh`. Sizes are bytes, times integer nanoseconds.

Hooks and when the engine calls them:

- `on_ack`: an ACK acknowledged new data outside loss recovery;
- `on_enter_recovery`: fast retransmit (three duplicate ACKs or SACK loss detection);
- `on_exit_recovery`: the full ACK that ends recovery;
- `on_timeout`: the retransmission timer expired;
- `on_idle`: about to send new data with nothing outstanding (see its docstring);
- `set_mss`: the path MTU, hence the MSS, changed.

Application-limited flows (RFC 7661 spirit, RFC 9438 §5.8): an ACK for which the
bytes outstanding before it (`in_flight`) are below half the window,
``in_flight < cwnd // 2``, does not grow `cwnd`, in slow start or congestion
avoidance. The sender was not using the window, so the ACK says nothing about whether
a larger one would fit in the path; without the rule `cwnd` could grow without bound
while an interactive flow trickles.
"""

from __future__ import annotations

import math
from typing import ClassVar

from vimage.sched import NS_PER_S

INFINITE_SSTHRESH = 2**31 - 1
"""The initial, "arbitrarily high" slow-start threshold (RFC 5681 §3.1)."""


def initial_window(mss: int) -> int:
    """The initial congestion window in bytes, RFC 6928: about 10 segments, 14600 bytes."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl:
    """State shared by the algorithms: slow start, timeouts, idle restart, MSS changes.

    Slow start uses appropriate byte counting (RFC 3465) with L = 2*MSS: each ACK
    grows `cwnd` by the bytes it acknowledged, at most 2*MSS, so `cwnd` doubles every
    round trip whether or not the receiver delays its ACKs. Subclasses supply
    congestion avoidance and the window reduction on a loss.
    """

    __slots__ = ("_last_ack_ns", "_rto_backoff", "cwnd", "mss", "ssthresh")

    name: ClassVar[str] = "base"

    def __init__(self, mss: int) -> None:
        if mss <= 0:
            raise ValueError(f"MSS must be positive, not {mss}")
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = INFINITE_SSTHRESH
        # time of the last ACK seen (any hook driven by an ACK), for the idle test
        self._last_ack_ns: int | None = None
        # an RTO fired and no ACK came since: a further RTO is a back-off of the same
        # segment, which must not lower ssthresh again (RFC 5681 §3.1, on equation 4)
        self._rto_backoff = False

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh} "
                f"mss={self.mss}>")

    def on_ack(self, acked: int, rtt_ns: int | None, now_ns: int, in_flight: int) -> None:
        """New data acknowledged outside recovery: `acked` bytes, `in_flight` before it.

        `rtt_ns` is the RTT sample this ACK gave, if any (Karn's rule is the engine's).
        No growth when ``in_flight < cwnd // 2`` (application-limited, see the module
        docstring); otherwise slow start while ``cwnd < ssthresh``, else the
        algorithm's congestion avoidance.
        """
        self._last_ack_ns = now_ns
        self._rto_backoff = False
        if rtt_ns is not None and rtt_ns >= 0:
            self._rtt_sample(rtt_ns)
        if acked <= 0:
            return
        if in_flight < self.cwnd // 2:
            self._app_limited(now_ns)
            return
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * self.mss)
        else:
            self._congestion_avoidance(acked, now_ns)

    def on_enter_recovery(self, now_ns: int, in_flight: int) -> None:
        """A loss was detected by ACKs: set `ssthresh`, and `cwnd` to it.

        The `cwnd` set here is the window to use once recovery is over. The engine
        inflates it for the recovery period as it implements it: NewReno (RFC 6582)
        adds 3*MSS and one MSS per further duplicate ACK, an RFC 6675 sender compares
        its pipe against it; `on_exit_recovery` then deflates it.
        """
        self._last_ack_ns = now_ns
        self._rto_backoff = False
        self._reduce(in_flight)
        self.cwnd = self.ssthresh
        self._reset_epoch()

    def on_exit_recovery(self, now_ns: int) -> None:
        """The full ACK: deflate the window to ssthresh (RFC 6582 §3.2 step 3, option 1)."""
        self._last_ack_ns = now_ns
        self._rto_backoff = False
        self.cwnd = self.ssthresh
        self._reset_epoch()

    def on_timeout(self, now_ns: int, in_flight: int) -> None:
        """The retransmission timer expired: cwnd to the loss window, one MSS (RFC 5681).

        ssthresh is lowered only on the first timeout since the last ACK: RFC 5681
        applies equation 4 to a segment "not yet resent by the retransmission timer",
        and by then `cwnd` and the flight no longer describe the path. The engine may
        therefore call this on every expiry, backed-off ones included.
        """
        if not self._rto_backoff:
            self._reduce(in_flight)
        self._rto_backoff = True
        self.cwnd = self.mss
        self._after_timeout()

    def on_idle(self, now_ns: int, rto_ns: int) -> None:
        """Sending resumes with nothing outstanding: restart the window if idle too long.

        RFC 5681 §4.1: after an idle period longer than the RTO, `cwnd` becomes
        min(cwnd, initial window). The idle period is measured from the last ACK this
        controller saw (as FreeBSD does from the last segment received): with nothing
        outstanding that ACK acknowledged the last data sent. The engine may call this
        whenever it resumes from idle; an engine that measured the idle time itself
        and decided to restart passes ``rto_ns=0``.
        """
        if self._last_ack_ns is not None and now_ns - self._last_ack_ns <= rto_ns:
            self._short_idle(now_ns)
            return
        mss = self.mss  # initial_window(mss), inlined: an interactive flow idles often
        self.cwnd = min(self.cwnd, 10 * mss, max(2 * mss, 14600))
        self._reset_epoch()

    def set_mss(self, mss: int) -> None:
        """The MSS changed (negotiation, path MTU discovery): keep cwnd in segments.

        A window still at the initial one (no congestion event yet) becomes the initial
        window of the new MSS instead: RFC 6928 caps it in bytes, not segments.
        """
        if mss <= 0:
            raise ValueError(f"MSS must be positive, not {mss}")
        if mss == self.mss:
            return
        old = self.mss
        self.mss = mss
        if self.cwnd == initial_window(old) and self.ssthresh == INFINITE_SSTHRESH:
            self.cwnd = initial_window(mss)
        else:
            self.cwnd = max(self.cwnd * mss // old, mss)
        if self.ssthresh != INFINITE_SSTHRESH:
            self.ssthresh = min(max(self.ssthresh * mss // old, 2 * mss), INFINITE_SSTHRESH)
        self._reset_epoch()

    # -- what the algorithms supply ---------------------------------------------------

    def _congestion_avoidance(self, acked: int, now_ns: int) -> None:
        raise NotImplementedError

    def _reduce(self, in_flight: int) -> None:
        """Set ssthresh (and the algorithm's own state) for a congestion event."""
        raise NotImplementedError

    def _rtt_sample(self, rtt_ns: int) -> None:
        """Note an RTT sample (CUBIC keeps the minimum)."""

    def _app_limited(self, now_ns: int) -> None:
        """An ACK arrived while the flow was not using its window."""

    def _reset_epoch(self) -> None:
        """Forget the growth state of the current congestion avoidance stage."""

    def _after_timeout(self) -> None:
        self._reset_epoch()

    def _short_idle(self, now_ns: int) -> None:
        """An idle period too short for a restart ended."""


class NewReno(CongestionControl):
    """Reno congestion avoidance with NewReno recovery (RFC 5681, RFC 6582).

    Congestion avoidance counts bytes (RFC 5681 §3.1's recommended form, RFC 3465
    §2.1): the acknowledged bytes accumulate and each time they reach `cwnd`, `cwnd`
    grows by one MSS and `cwnd` bytes are taken off the count. That is exactly one MSS
    per window of data acknowledged, i.e. per RTT, whatever the ACK pattern, where
    equation 3 (MSS*MSS/cwnd per ACK) grows more slowly with delayed ACKs and rounds.
    """

    __slots__ = ("_bytes_acked",)

    name: ClassVar[str] = "newreno"

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._bytes_acked = 0

    def _congestion_avoidance(self, acked: int, now_ns: int) -> None:
        self._bytes_acked += acked
        if self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss
            # one increase per ACK: a huge cumulative ACK must not bank several
            self._bytes_acked = min(self._bytes_acked, self.cwnd - 1)

    def _reduce(self, in_flight: int) -> None:
        self.ssthresh = max(in_flight // 2, 2 * self.mss)  # RFC 5681 equation 4

    def _reset_epoch(self) -> None:
        self._bytes_acked = 0


class Cubic(CongestionControl):
    """CUBIC (RFC 9438) with fast convergence.

    The cubic function works in segments and seconds (floats); `cwnd` stays in
    integer bytes, with the fractional growth carried over between ACKs.

    Choices where the RFC leaves room:

    - RTT in ``W_cubic(t + RTT)`` is the minimum RTT sample seen (0 before any).
    - ssthresh on a loss is ``cwnd * beta_cubic`` (§4.6 allows cwnd instead of
      flight_size when growth is stopped for application-limited flows, which the
      base class does), at least 2 MSS. The same on a timeout (§4.8).
    - The epoch (congestion avoidance stage) starts at the first window-using ACK in
      congestion avoidance after a loss, timeout or restart, with
      ``K = cbrt((W_max - cwnd_epoch) / C)`` (§4.2). When there is no W_max yet (no
      loss so far, or after a timeout, §4.8 and §4.10) or `cwnd_epoch` exceeds it,
      W_max becomes `cwnd_epoch` and K is 0.
    - Time when the flow is application-limited does not count in t (§4.2, §5.8): an
      application-limited ACK, and a short idle period, move the epoch start forward
      by the time since the clock last advanced.
    """

    __slots__ = ("_clock_ns", "_cwnd_prior", "_epoch_start_ns", "_frac", "_k",
                 "_min_rtt_ns", "_w_est", "_w_max")

    name: ClassVar[str] = "cubic"
    C: ClassVar[float] = 0.4
    BETA: ClassVar[float] = 0.7
    ALPHA: ClassVar[float] = 3 * (1 - 0.7) / (1 + 0.7)  # alpha_cubic (§4.3)
    FAST_CONVERGENCE: ClassVar[bool] = True

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._min_rtt_ns: int | None = None
        self._w_max = 0.0  # segments; 0: none yet
        self._cwnd_prior = 0.0  # segments; cwnd when ssthresh was last set
        self._k = 0.0  # seconds
        self._w_est = 0.0  # segments
        self._epoch_start_ns: int | None = None
        self._clock_ns = 0  # up to when the epoch clock has been accounted for
        self._frac = 0.0  # growth below one byte, carried to the next ACK

    @property
    def w_max(self) -> float:
        """W_max in segments (0.0 before the first congestion event)."""
        return self._w_max

    @property
    def k(self) -> float:
        """K of the current epoch, in seconds."""
        return self._k

    @property
    def w_est(self) -> float:
        """The Reno-friendly window estimate W_est of the current epoch, in segments."""
        return self._w_est

    @property
    def epoch_start_ns(self) -> int | None:
        """When the current congestion avoidance stage started (None: not started)."""
        return self._epoch_start_ns

    @property
    def min_rtt_ns(self) -> int | None:
        return self._min_rtt_ns

    def w_cubic(self, t: float) -> float:
        """W_cubic(t) in segments, t in seconds since the epoch start (RFC 9438 eq. 1)."""
        return self.C * (t - self._k) ** 3 + self._w_max

    def _rtt_sample(self, rtt_ns: int) -> None:
        if self._min_rtt_ns is None or rtt_ns < self._min_rtt_ns:
            self._min_rtt_ns = rtt_ns

    def _start_epoch(self, now_ns: int) -> None:
        cwnd_epoch = self.cwnd / self.mss
        if self._w_max <= cwnd_epoch:
            self._w_max = cwnd_epoch
        if self._cwnd_prior <= 0.0:
            self._cwnd_prior = cwnd_epoch
        self._k = math.cbrt((self._w_max - cwnd_epoch) / self.C)
        self._w_est = cwnd_epoch
        self._epoch_start_ns = now_ns
        self._clock_ns = now_ns
        self._frac = 0.0

    def _congestion_avoidance(self, acked: int, now_ns: int) -> None:
        epoch = self._epoch_start_ns
        if epoch is None:
            self._start_epoch(now_ns)
            epoch = now_ns
        self._clock_ns = now_ns
        mss = self.mss
        cwnd = self.cwnd
        t = (now_ns - epoch) / NS_PER_S
        rtt = (self._min_rtt_ns or 0) / NS_PER_S
        cwnd_seg = cwnd / mss
        target = min(max(self.w_cubic(t + rtt), cwnd_seg), 1.5 * cwnd_seg)  # §4.2
        # Reno-friendly estimate, eq. 4 in bytes (ABC): alpha_cubic until W_est reaches
        # the window of the last reduction, then Reno's 1 (§4.3)
        alpha = 1.0 if self._w_est >= self._cwnd_prior else self.ALPHA
        self._w_est += alpha * acked / cwnd
        if self.w_cubic(t) < self._w_est:
            self.cwnd = max(cwnd, int(self._w_est * mss))  # Reno-friendly region
            return
        # concave (cwnd < W_max) or convex region (§4.4, §4.5): (target - cwnd) / cwnd
        # per segment acknowledged
        self._frac += (target - cwnd_seg) * mss * acked / cwnd
        grow = int(self._frac)
        self._frac -= grow
        self.cwnd = cwnd + grow

    def _pause_clock(self, now_ns: int) -> None:
        if self._epoch_start_ns is not None and now_ns > self._clock_ns:
            self._epoch_start_ns += now_ns - self._clock_ns
            self._clock_ns = now_ns

    def _app_limited(self, now_ns: int) -> None:
        self._pause_clock(now_ns)

    def _short_idle(self, now_ns: int) -> None:
        self._pause_clock(now_ns)

    def _reduce(self, in_flight: int) -> None:
        cwnd_seg = self.cwnd / self.mss
        if self.FAST_CONVERGENCE and cwnd_seg < self._w_max:
            self._w_max = cwnd_seg * (1 + self.BETA) / 2  # §4.7: release bandwidth
        else:
            self._w_max = cwnd_seg
        self._cwnd_prior = cwnd_seg
        self.ssthresh = max(int(self.cwnd * self.BETA), 2 * self.mss)  # §4.6

    def _reset_epoch(self) -> None:
        self._epoch_start_ns = None
        self._frac = 0.0

    def _after_timeout(self) -> None:
        # §4.8: the first congestion avoidance stage after a timeout takes W_max from
        # its own start (K = 0), which _start_epoch does when there is no W_max
        self._w_max = 0.0
        self._reset_epoch()


ALGORITHMS: tuple[tuple[str, type[CongestionControl]], ...] = (
    ("newreno", NewReno),
    ("cubic", Cubic),
)


def create(name: str, mss: int) -> CongestionControl:
    """A new congestion controller by algorithm name (see `ALGORITHMS`)."""
    for known, cls in ALGORITHMS:
        if known == name:
            return cls(mss)
    names = ", ".join(known for known, _ in ALGORITHMS)
    raise ValueError(f"unknown congestion control algorithm {name!r} (known: {names})")
