"""One iperf3 test at one end: its streams, the data they move, its results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vimage.apps.iperf3.params import IperfError, Settings
from vimage.apps.iperf3.report import Reporter
from vimage.sched import NS_PER_S

if TYPE_CHECKING:
    from vimage.socket.tcp_socket import TcpSocket
    from vimage.vnet import Vnet


class Stream:
    """One data connection: what this end moved on it, and what the peer says it moved."""

    __slots__ = ("bytes", "eof", "id", "local", "mark", "peer_bytes", "peer_retransmits",
                 "peer_seconds", "pending", "remote", "sender", "sock")

    def __init__(self, sid: int, sock: TcpSocket, sender: bool) -> None:
        self.id = sid
        self.sock: TcpSocket | None = sock
        self.sender = sender
        self.bytes = 0
        self.mark = 0  # self.bytes at the start of the current interval
        self.pending = memoryview(b"")  # the rest of the block being sent
        self.eof = False
        self.local = sock.getsockname()
        self.remote = sock.getpeername()
        self.peer_bytes: int | None = None
        self.peer_seconds: float | None = None
        self.peer_retransmits = -1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def stream_id(index: int) -> int:
    """iperf3 numbers a test's streams 1, 3, 4, 5, ... (iperf_add_stream); both ends must."""
    return 1 if index == 0 else index + 2


class IperfTest:
    """The state of one test at one end ('c' client or 's' server)."""

    def __init__(self, role: str, vnet: Vnet, settings: Settings, cookie: bytes,
                 interval: float = 1.0, json_mode: bool = False, fmt: str = "a") -> None:
        self.role = role
        self.vnet = vnet
        self.kernel = vnet.kernel
        self.settings = settings
        self.cookie = cookie
        self.streams: list[Stream] = []
        self.ctrl: TcpSocket | None = None
        self.ctrl_local: tuple[str, int] = ("0.0.0.0", 0)
        self.ctrl_remote: tuple[str, int] = ("0.0.0.0", 0)
        self.mss_default = 0
        self.sndbuf = self.rcvbuf = 0
        self.state = 0
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.counting = False  # bytes are counted while the test runs (and while draining)
        self.bytes_sent = self.bytes_received = 0
        self.blocks_sent = self.blocks_received = 0
        self.bytes_taken = self.blocks_taken = 0  # blocks handed to streams, sent or not
        self.last_data_ns = self.kernel.now_ns()
        self.interval_ns = int(interval * NS_PER_S)
        self.next_interval_ns = 0
        self.interval_start_ns = 0
        self.peer_has_retransmits = 0
        self.error: str | None = None
        self.payload = b""
        self.doing = "unable to connect to server"  # iperf3's words for a failure right now
        self.report = Reporter(self, json_mode, fmt)

    @property
    def sending(self) -> bool:
        """This end sends data: a client unless reversed, a server if reversed."""
        return self.settings.reverse == (self.role == "s")

    def now(self) -> int:
        return self.kernel.now_ns()

    def add_stream(self, sock: TcpSocket) -> Stream:
        st = Stream(stream_id(len(self.streams)), sock, self.sending)
        self.streams.append(st)
        self.report.connected(st)
        return st

    def begin(self) -> None:
        """TEST_START: the clock of the test starts."""
        now = self.now()
        self.start_ns = self.interval_start_ns = self.last_data_ns = now
        self.next_interval_ns = now + self.interval_ns if self.interval_ns else 0
        self.counting = True
        if self.sending:
            self.payload = self.vnet.draws.randbytes(self.settings.blksize)

    def stop(self, now: int | None = None) -> None:
        """The end of counting: close the last interval."""
        if not self.counting:
            return
        self.counting = False
        self.end_ns = self.now() if now is None else now
        self.report.interval(self.end_ns, final=True)

    def seconds(self) -> float:
        if self.start_ns is None:
            return 0.0
        end = self.end_ns if self.end_ns is not None else self.now()
        return (end - self.start_ns) / NS_PER_S

    def tick(self) -> None:
        """Report the intervals that have ended."""
        if self.interval_ns and self.counting:
            now = self.now()
            if now >= self.next_interval_ns:
                self.report.interval(now)
                while self.next_interval_ns <= now:
                    self.next_interval_ns += self.interval_ns

    # -- moving data ----------------------------------------------------------------------------
    def limit_reached(self) -> bool:
        s = self.settings
        if s.nbytes and max(self.bytes_sent, self.bytes_received) >= s.nbytes:
            return True
        return bool(s.blocks and max(self.blocks_sent, self.blocks_received) >= s.blocks)

    def pump(self) -> int | None:
        """Send or receive on every stream until it would block; returns the time at
        which a rate-limited sender may go on, if any."""
        wake: int | None = None
        for st in self.streams:
            if st.sock is None or st.eof:
                continue
            if st.sender:
                when = self._send(st)
                if when is not None:
                    wake = when if wake is None else min(wake, when)
            else:
                self._recv(st)
        return wake

    def _send(self, st: Stream) -> int | None:
        s = self.settings
        sock = st.sock
        assert sock is not None
        self.doing = "unable to write to stream socket"
        while self.counting:
            if not st.pending:
                # the next block, if the byte or block budget has room for it (the blocks
                # other streams are still sending count against it)
                size = s.blksize
                if s.nbytes:
                    size = min(size, s.nbytes - self.bytes_taken)
                if size <= 0 or (s.blocks and self.blocks_taken >= s.blocks):
                    return None
                self.bytes_taken += size
                self.blocks_taken += 1
                st.pending = memoryview(self.payload)[:size]
            if s.rate:
                assert self.start_ns is not None
                due = self.start_ns + st.bytes * 8 * NS_PER_S // s.rate
                if due > self.now():
                    return due
            try:
                n = sock.send(st.pending)
            except BlockingIOError:
                return None
            st.pending = st.pending[n:]
            st.bytes += n
            self.bytes_sent += n
            if not st.pending:
                self.blocks_sent += 1
            self.last_data_ns = self.now()
        return None

    def _recv(self, st: Stream) -> None:
        sock = st.sock
        assert sock is not None
        self.doing = "unable to read from stream socket"
        size = self.settings.blksize
        while True:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                return
            except OSError:
                if self.counting:
                    raise
                st.eof = True  # the peer closed its end after the test: nothing more to count
                return
            if not data:
                st.eof = True
                return
            if self.counting:
                st.bytes += len(data)
                self.bytes_received += len(data)
                self.blocks_received += 1
                self.last_data_ns = self.now()

    def unacked(self) -> int:
        """Bytes written to the streams and not yet acknowledged (Linux's SIOCOUTQ)."""
        total = 0
        for st in self.streams:
            tcb = st.sock.tcb if st.sock is not None else None
            if tcb is not None:
                total += len(tcb.snd_buf)
        return total

    # -- results --------------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        """The JSON object this end sends at EXCHANGE_RESULTS (send_results)."""
        seconds = self.seconds()
        return {
            "cpu_util_total": 0, "cpu_util_user": 0, "cpu_util_system": 0,
            "sender_has_retransmits": 0 if self.sending else -1,
            "streams": [{"id": st.id, "bytes": st.bytes, "retransmits": -1, "jitter": 0,
                         "errors": 0, "packets": 0, "start_time": 0, "end_time": seconds}
                        for st in self.streams],
        }

    def take_peer_results(self, r: object) -> None:
        """Record the peer's results (get_results); IperfError if they do not fit."""
        if not isinstance(r, dict) or not isinstance(r.get("streams"), list):
            raise IperfError("unable to receive results")
        shr = r.get("sender_has_retransmits")
        if isinstance(shr, int) and not self.sending:
            self.peer_has_retransmits = 1 if shr == 1 else 0
        by_id = {st.id: st for st in self.streams}
        for entry in r["streams"]:
            if not isinstance(entry, dict):
                raise IperfError("unable to receive results")
            st = by_id.get(entry.get("id"))  # type: ignore[arg-type]
            if st is None:
                raise IperfError("stream has an invalid id")
            nbytes, start, end = entry.get("bytes"), entry.get("start_time"), entry.get("end_time")
            if isinstance(nbytes, bool) or not isinstance(nbytes, (int, float)):
                raise IperfError("unable to receive results")
            st.peer_bytes = int(nbytes)
            if isinstance(start, (int, float)) and isinstance(end, (int, float)):
                st.peer_seconds = float(end) - float(start)
            retr = entry.get("retransmits")
            if isinstance(retr, int) and not isinstance(retr, bool):
                st.peer_retransmits = retr

    def close(self) -> None:
        for st in self.streams:
            st.close()
        if self.ctrl is not None:
            self.ctrl.close()
            self.ctrl = None

    def json(self) -> dict[str, Any]:
        """The test as `iperf3 -J` prints it."""
        return self.report.json()

    @property
    def lines(self) -> list[str]:
        """The test as iperf3 prints it (text)."""
        return self.report.lines


