"""What ping(8) and ping6(8) share: option words, the echo data and its timing,
the statistics and the send/receive loop (FreeBSD's ping.c main loop, which
ping6.c repeats)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vimage.cli import UsageError
from vimage.sched import NS_PER_S

if TYPE_CHECKING:
    from vimage.cli import Context

TIMELEN = 8  # bytes of send timestamp at the start of the data
MAXWAIT_MS = 10000
FLOOD_INTERVAL_NS = 10_000_000  # ping -f: at least a hundred requests a second
MAXALARM = 3600


def int_arg(text: str, what: str, lo: int, hi: int) -> int:
    """An integer option value in [lo, hi]; `invalid WHAT: `TEXT'` otherwise."""
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"invalid {what}: `{text}'") from None
    if not lo <= value <= hi:
        raise UsageError(f"invalid {what}: `{text}'")
    return value


def interval_arg(text: str) -> int:
    """-i wait: seconds (at least a millisecond) as nanoseconds."""
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"invalid timing interval: `{text}'") from None
    if not 0.001 <= seconds <= 2**31 / 1000:
        raise UsageError(f"invalid timing interval: `{text}'")
    return round(seconds * NS_PER_S)


def timeout_for(remaining_ns: int) -> float:
    """Seconds for settimeout() that convert back to exactly `remaining_ns` (>= 1 ns)."""
    return (max(remaining_ns, 1) + 0.5) / NS_PER_S


@dataclass
class PingOptions:
    """The options ping and ping6 share, as they parse them."""

    npackets: int = 0
    interval_ns: int = NS_PER_S
    alarm: int = 0
    source: str | None = None
    waittime_ms: int | None = None
    dontfrag: bool = False
    quiet: bool = False

    def take(self, opt: str, val: str) -> bool:
        """Apply `opt` if it is one of the shared options (-c -D -i -q -S -t -W)."""
        if opt == "-c":
            self.npackets = int_arg(val, "count of packets to transmit", 1, 2**63 - 1)
        elif opt == "-D":
            self.dontfrag = True
        elif opt == "-i":
            self.interval_ns = interval_arg(val)
        elif opt == "-q":
            self.quiet = True
        elif opt == "-S":
            self.source = val
        elif opt == "-t":
            self.alarm = int_arg(val, "timeout", 1, MAXALARM)
        elif opt == "-W":
            self.waittime_ms = int_arg(val, "timing interval", 0, 2**31 - 1)
        else:
            return False
        return True

    def host(self, args: list[str]) -> str:
        """The one operand; one of -c or -t is required (there is no ^C in vnet.cmd)."""
        if len(args) != 1:
            raise UsageError()
        if not self.npackets and not self.alarm:
            raise UsageError("-c count or -t timeout is required (there is no ^C in vnet.cmd)")
        return args[0]


class PingBase:
    """Counters and round-trip sums of one run; subclasses send and `poll` for replies."""

    PROG = "ping"  # in `--- host PROG statistics ---`
    STDDEV = "stddev"  # ping6.c spells it std-dev
    CHECK_EXCESS = True  # ping.c's "somebody's printing up packets!"

    def __init__(self, ctx: Context, ident: int, datalen: int, quiet: bool) -> None:
        self.ctx = ctx
        self.kernel = ctx.vnet.kernel
        self.ident = ident
        self.datalen = datalen
        self.timing = datalen >= TIMELEN
        self.quiet = quiet
        self.filler = bytes(i & 0xFF for i in range(TIMELEN, datalen))
        self.ntransmitted = self.nreceived = self.nrepeats = self.nrcvtimeout = 0
        self.received: set[int] = set()
        self.tmin = math.inf
        self.tmax = self.tsum = self.tsumsq = 0.0

    def send(self) -> None:
        raise NotImplementedError

    def poll(self, timeout_ns: int) -> bool | None:
        """Wait up to `timeout_ns` for packets and account for those that came; True if
        a packet came (flood mode sends the next request at once)."""
        raise NotImplementedError

    def running(self) -> bool:
        return True

    def next_echo(self) -> tuple[int, bytes]:
        """The sequence number and data of the next request: the send time first when it fits."""
        seq = self.ntransmitted & 0xFFFF
        self.received.discard(seq)
        if self.timing:
            data = self.kernel.now_ns().to_bytes(TIMELEN, "big") + self.filler
        else:
            data = bytes(i & 0xFF for i in range(self.datalen))
        return seq, data

    def time_reply(self, payload: bytes) -> tuple[bool, float]:
        """Count a reply and add its round trip (ms) to the sums, if it carries the send time."""
        self.nreceived += 1
        timed = self.timing and len(payload) >= TIMELEN
        if not timed:
            return False, 0.0
        sent = int.from_bytes(payload[:TIMELEN], "big")
        triptime = (self.kernel.now_ns() - sent) / 1e6
        self.tsum += triptime
        self.tsumsq += triptime * triptime
        self.tmin = min(self.tmin, triptime)
        self.tmax = max(self.tmax, triptime)
        return True, triptime

    def is_dup(self, seq: int) -> bool:
        """A second reply to `seq` counts as a repeat, not as received."""
        if seq in self.received:
            self.nrepeats += 1
            self.nreceived -= 1
            return True
        self.received.add(seq)
        return False

    def summary(self, hostname: str) -> None:
        p = self.ctx.print
        p()
        p(f"--- {hostname} {self.PROG} statistics ---")
        line = f"{self.ntransmitted} packets transmitted, {self.nreceived} packets received, "
        if self.nrepeats:
            line += f"+{self.nrepeats} duplicates, "
        if self.ntransmitted:
            if self.CHECK_EXCESS and self.nreceived > self.ntransmitted:
                line += "-- somebody's printing up packets!"
            else:
                loss = (self.ntransmitted - self.nreceived) * 100.0 / self.ntransmitted
                line += f"{loss:.1f}% packet loss"
        if self.nrcvtimeout:
            line += f", {self.nrcvtimeout} packets out of wait time"
        p(line)
        if self.nreceived and self.timing and self.tmin != math.inf:
            n = self.nreceived + self.nrepeats
            avg = self.tsum / n
            dev = math.sqrt(max(0.0, self.tsumsq / n - avg * avg))
            p(f"round-trip min/avg/max/{self.STDDEV} = {self.tmin:.3f}/{avg:.3f}/"
              f"{self.tmax:.3f}/{dev:.3f} ms")


def run(pinger: PingBase, npackets: int, interval_ns: int, alarm: int, once: bool,
        maxwait_ms: int, flood: bool = False) -> None:
    """FreeBSD ping's main loop: send every interval, read replies in between; with
    `flood`, also send as soon as a packet came in (`n == 0 || options & F_FLOOD`).

    After the last request it waits twice the longest round trip (at least a
    second) if anything came back, else `maxwait_ms`.
    """
    kernel = pinger.kernel
    alarm_at = kernel.now_ns() + alarm * NS_PER_S if alarm else None
    pinger.send()
    last = kernel.now_ns()
    intvl = interval_ns
    almost_done = False
    while pinger.running():
        now = kernel.now_ns()
        if alarm_at is not None and now >= alarm_at:
            return
        wake = last + intvl if alarm_at is None else min(last + intvl, alarm_at)
        if now < wake:
            got = pinger.poll(wake - now)
            if (npackets and pinger.nreceived >= npackets) or (once and pinger.nreceived):
                return
            if not (flood and got):
                continue
        if not npackets or pinger.ntransmitted < npackets:
            pinger.send()
        else:
            if almost_done:
                return
            almost_done = True
            intvl = (max(1, int(2 * pinger.tmax / 1000)) * NS_PER_S if pinger.nreceived
                     else maxwait_ms * 1_000_000)
        last = kernel.now_ns()
