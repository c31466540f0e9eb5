"""What an iperf3 test prints: iperf3's text layout, and its `-J` JSON object.

Units as iperf3's unit_snprintf: transfers in adaptive binary bytes (KBytes =
1024), bitrates in adaptive decimal bits (Mbits/sec = 10^6), at most four digits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vimage.apps.iperf3.params import VERSION_STRING
from vimage.sched import NS_PER_S

if TYPE_CHECKING:
    from vimage.apps.iperf3.session import IperfTest, Stream

BYTE_LABELS = ("Byte", "KByte", "MByte", "GByte", "TByte")
BIT_LABELS = ("bit", "Kbit", "Mbit", "Gbit", "Tbit")
FORMATS = "kmgtKMGT"
SEPARATOR = "- - - - - - - - - - - - - - - - - - - - - - - - -"
HEADER = "[ ID] Interval           Transfer     Bitrate"
HEADER_RETR = "[ ID] Interval           Transfer     Bitrate         Retr"


def unit_text(value: float, fmt: str = "A") -> str:
    """`value` bytes (or bytes/s) in format `fmt`: A/a adaptive bytes/bits, else k/m/g/t."""
    bits = fmt.islower()
    if bits:
        value *= 8
    base = 1000.0 if bits else 1024.0
    upper = fmt.upper()
    if upper in "KMGT":
        conv = "BKMGT".index(upper)
        value /= base ** conv
    else:
        conv = 0
        while value >= base and conv < 4:
            value /= base
            conv += 1
    label = (BIT_LABELS if bits else BYTE_LABELS)[conv]
    if value < 9.995:
        return f"{value:4.2f} {label}"
    if value < 99.95:
        return f"{value:4.1f} {label}"
    return f"{value:4.0f} {label}"


def bw_line(label: str, start: float, end: float, nbytes: float, seconds: float,
            fmt: str = "a", tail: str = "", retr: int | None = None) -> str:
    """One line of iperf3's report_bw_format (or report_bw_retrans_format with `retr`)."""
    rate = nbytes / seconds if seconds > 0 else 0.0
    head = f"[{label}] {start:6.2f}-{end:<6.2f} sec  {unit_text(nbytes, 'A')}s  " \
           f"{unit_text(rate, fmt)}s/sec  "
    if retr is None:
        return f"{head}                {tail}"
    return f"{head}{retr:3d}             {tail}"


def _stat(start: float, seconds: float, nbytes: int, sender: bool,
          retr: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"start": start, "end": start + seconds, "seconds": seconds,
                         "bytes": nbytes, "bits_per_second": nbytes * 8 / seconds if seconds > 0
                         else 0.0}
    if retr is not None:
        d["retransmits"] = retr
    d["sender"] = sender
    return d


class Reporter:
    """Collects a test's text lines and JSON intervals as the test goes."""

    def __init__(self, test: IperfTest, json_mode: bool, fmt: str = "a") -> None:
        self.test = test
        self.json_mode = json_mode
        self.fmt = fmt
        self.lines: list[str] = []
        self.intervals: list[dict[str, Any]] = []
        self.connecting_to: tuple[str, int] | None = None
        self.header_done = False

    def say(self, line: str) -> None:
        if not self.json_mode:
            self.lines.append(line)

    # -- events ---------------------------------------------------------------------------------
    def connecting(self, host: str, port: int) -> None:
        self.connecting_to = (host, port)
        self.say(f"Connecting to host {host}, port {port}")
        if self.test.settings.reverse:
            self.say(f"Reverse mode, remote host {host} is sending")

    def accepted(self) -> None:
        host, port = self.test.ctrl_remote[:2]
        self.say(f"Accepted connection from {host}, port {port}")

    def connected(self, st: Stream) -> None:
        self.say(f"[{st.id:3d}] local {st.local[0]} port {st.local[1]} connected to "
                 f"{st.remote[0]} port {st.remote[1]}")

    def error(self, message: str) -> None:
        self.say(f"iperf3: error - {message}")

    def interval(self, now: int, final: bool = False) -> None:
        """Close the interval that ends at `now` (kernel ns)."""
        test = self.test
        if not test.interval_ns or test.start_ns is None:
            return
        begin = test.interval_start_ns
        deltas = [st.bytes - st.mark for st in test.streams]
        for st in test.streams:
            st.mark = st.bytes
        test.interval_start_ns = now
        seconds = (now - begin) / NS_PER_S
        if final and not any(deltas):
            return  # a last stretch without data (a sender waiting for its last ACKs)
        start = (begin - test.start_ns) / NS_PER_S
        end = (now - test.start_ns) / NS_PER_S
        sender = test.sending
        streams = [{"socket": st.id, **_stat(start, seconds, d, sender), "omitted": False}
                   for st, d in zip(test.streams, deltas, strict=True)]
        for entry in streams:
            entry["sender"] = entry.pop("sender")  # keep iperf3's key order
        self.intervals.append({"streams": streams,
                               "sum": {**_stat(start, seconds, sum(deltas), sender),
                                       "omitted": False}})
        if not self.header_done:
            self.say(HEADER)
            self.header_done = True
        elif len(test.streams) > 1:
            self.say(SEPARATOR)
        for st, d in zip(test.streams, deltas, strict=True):
            self.say(bw_line(f"{st.id:3d}", start, end, d, seconds, self.fmt))
        if len(test.streams) > 1:
            self.say(bw_line("SUM", start, end, sum(deltas), seconds, self.fmt))

    # -- the end --------------------------------------------------------------------------------
    def _sides(self, st: Stream) -> tuple[int, float, int, float]:
        """(bytes sent, sender seconds, bytes received, receiver seconds) of a stream."""
        own = self.test.seconds()
        peer_bytes = st.peer_bytes or 0
        peer_seconds = st.peer_seconds if st.peer_seconds else own
        if st.sender:
            return st.bytes, own, peer_bytes, peer_seconds
        return peer_bytes, peer_seconds, st.bytes, own

    def _retr(self) -> bool:
        """Whether the sender reported retransmits (we never do; a Linux sender does)."""
        return not self.test.sending and self.test.peer_has_retransmits == 1

    def summary(self) -> None:
        """The final lines: both sides at a client, this side only at a server."""
        test = self.test
        if self.json_mode:
            return
        client = test.role == "c"
        show_sent = client or test.sending
        show_received = client or not test.sending
        retr = self._retr()
        self.say(SEPARATOR)
        self.say(HEADER_RETR if retr and show_sent else HEADER)
        total_sent = total_received = 0
        sender_time = receiver_time = 0.0
        for i, st in enumerate(test.streams):
            sent, s_time, received, r_time = self._sides(st)
            total_sent += sent
            total_received += received
            if i == 0:
                sender_time, receiver_time = s_time, r_time
            label = f"{st.id:3d}"
            if show_sent:
                self.say(bw_line(label, 0.0, s_time, sent, s_time, self.fmt, "sender",
                                 max(st.peer_retransmits, 0) if retr else None))
            if show_received:
                self.say(bw_line(label, 0.0, r_time, received, r_time, self.fmt, "receiver"))
        if len(test.streams) > 1:
            if show_sent:
                retrs = sum(max(st.peer_retransmits, 0) for st in test.streams)
                self.say(bw_line("SUM", 0.0, sender_time, total_sent, sender_time, self.fmt,
                                 "sender", retrs if retr else None))
            if show_received:
                self.say(bw_line("SUM", 0.0, receiver_time, total_received, receiver_time,
                                 self.fmt, "receiver"))
        if client:
            self.say("")
            self.say("iperf Done.")

    def json(self) -> dict[str, Any]:
        """The test as `iperf3 -J` prints it (the keys iperf3 3.12 uses, less CPU use)."""
        test = self.test
        s = test.settings
        start: dict[str, Any] = {
            "connected": [{"socket": st.id, "local_host": st.local[0], "local_port": st.local[1],
                           "remote_host": st.remote[0], "remote_port": st.remote[1]}
                          for st in test.streams],
            "version": VERSION_STRING,
            "system_info": f"vimage vnet {test.vnet.display_name}",
        }
        if test.role == "c" and self.connecting_to is not None:
            start["connecting_to"] = {"host": self.connecting_to[0],
                                      "port": self.connecting_to[1]}
        elif test.role == "s":
            start["accepted_connection"] = {"host": test.ctrl_remote[0],
                                            "port": test.ctrl_remote[1]}
        start.update({
            "cookie": test.cookie.partition(b"\0")[0].decode("ascii", "replace"),
            "tcp_mss_default": test.mss_default, "target_bitrate": s.rate,
            "sock_bufsize": s.window, "sndbuf_actual": test.sndbuf,
            "rcvbuf_actual": test.rcvbuf,
            "test_start": {"protocol": "TCP", "num_streams": s.parallel, "blksize": s.blksize,
                           "omit": 0, "duration": s.duration, "bytes": s.nbytes,
                           "blocks": s.blocks, "reverse": int(s.reverse), "tos": s.tos,
                           "target_bitrate": s.rate},
        })
        retr = self._retr()
        streams = []
        total_sent = total_received = retrs = 0
        sender_time = receiver_time = 0.0
        for i, st in enumerate(test.streams):
            sent, s_time, received, r_time = self._sides(st)
            total_sent += sent
            total_received += received
            retrs += max(st.peer_retransmits, 0)
            if i == 0:
                sender_time, receiver_time = s_time, r_time
            streams.append({
                "sender": {"socket": st.id, **_stat(0.0, s_time, sent, test.sending,
                                                    max(st.peer_retransmits, 0) if retr
                                                    else None)},
                "receiver": {"socket": st.id, **_stat(0.0, r_time, received, test.sending)},
            })
        end = {"streams": streams,
               "sum_sent": _stat(0.0, sender_time, total_sent, test.sending,
                                 retrs if retr else None),
               "sum_received": _stat(0.0, receiver_time, total_received, test.sending)}
        out: dict[str, Any] = {"start": start, "intervals": self.intervals, "end": end}
        if test.error is not None:
            out["error"] = test.error
        return out
