"""Timed start-up jobs: `at SECONDS COMMAND` lines among a node's start-up commands.

A start-up command runs while the experiment comes up and must not block: a blocking
tool (ping, iperf3 -c) would run the kernel loop inside `up()`, and, in an experiment
split across MPI ranks (vimage.emu.mpi), one rank's loop alone, out of step with the
others. A line `at SECONDS COMMAND` instead starts COMMAND that many seconds (of the
kernel's clock, virtual or real) after the node's start-up commands ran, as a task of
the kernel loop (vimage.apps.tasks), so any number of them run side
by side, in virtual time too, and the same way whichever nodes share a kernel:

- `at T ping [-c COUNT] [-i WAIT] [-s SIZE] HOST`: ICMP echo requests (default 3,
  1 s apart, 56 data bytes); the result is ping's summary line.
- `at T tcp-sink [PORT]`: accept TCP connections on PORT (default 5001) and count what
  arrives (a discard server); `at T tcp-send HOST [PORT] BYTES`: connect and send
  BYTES (K, M suffixes) of a fixed pattern, then close; the result says how long it took.
- `at T iperf3 -s` / `at T iperf3 -c HOST [-t SECONDS | -n BYTES]`: vimage.apps.iperf3
  in the loop (its payload comes from the kernel RNG: one client per run keeps a run
  partitioned across ranks identical, docs/mpi.md).
- `at T TOOL ...`: any other tool, run once at T from the loop (it must not block:
  sysctl, ifconfig, route, vlink...).

Each job's outcome is one line in `Jobs.results` (node, time, command, result).
"""

from __future__ import annotations

import getopt
import shlex
from collections.abc import Generator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.apps import tasks
from vimage.sched import NS_PER_S
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SOCK_RAW
from vimage.wire import WireError
from vimage.wire import icmp as wicmp

if TYPE_CHECKING:
    from vimage.vnet import Vnet

DEFAULT_PORT = 5001
PATTERN = bytes(range(256)) * 64  # what tcp-send sends, 16 KiB at a time
PING_WAIT_NS = NS_PER_S  # a reply later than this after the last request is lost


class JobError(ValueError):
    """A bad `at` line (one line)."""


@dataclass
class JobResult:
    node: str
    at: float
    command: str
    result: str = "not finished"

    def line(self) -> str:
        return f"{self.node} @{self.at:g}s {self.command}: {self.result}"


@dataclass
class Jobs:
    """The jobs of one experiment (or of one rank's part of it)."""

    results: list[JobResult] = field(default_factory=list)
    keep: list[Any] = field(default_factory=list)  # tasks and servers, kept alive

    def schedule(self, node: str, vnet: Vnet, line: str) -> None:
        """Check an `at SECONDS COMMAND` line and arm its timer; JobError if it is bad."""
        words = _split(line)
        if len(words) < 3 or words[0] != "at":
            raise JobError(f"'{line}': expected 'at SECONDS COMMAND'")
        try:
            at = float(words[1].removesuffix("s"))
        except ValueError:
            raise JobError(f"'{line}': bad time {words[1]!r}") from None
        if not 0 <= at < 1e9:
            raise JobError(f"'{line}': bad time {words[1]!r}")
        argv = words[2:]
        starter = _STARTERS.get(argv[0], _start_tool)
        starter(vnet, argv, JobResult(node, at, " ".join(argv)), dry=True, jobs=self)
        result = JobResult(node, at, " ".join(argv))
        self.results.append(result)
        sched = vnet.kernel.sched  # T seconds after now: when the node's commands run
        sched.call_at(sched.now_ns() + int(at * NS_PER_S), self._run, starter, vnet, argv,
                      result, owner=vnet)

    def _run(self, starter: Any, vnet: Vnet, argv: list[str], result: JobResult) -> None:
        try:
            starter(vnet, argv, result, dry=False, jobs=self)
        except Exception as exc:  # a job's failure is its result, never the loop's
            result.result = f"failed: {exc}"

    def lines(self) -> list[str]:
        return [r.line() for r in self.results]


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise JobError(f"'{line}': {exc}") from None


def is_job(line: str) -> bool:
    return line.lstrip().startswith("at ")


# -- starters: check (dry) or start one job ------------------------------------------------------
def _opts(argv: list[str], short: str) -> tuple[dict[str, str], list[str]]:
    try:
        opts, args = getopt.getopt(argv[1:], short)
    except getopt.GetoptError as exc:
        raise JobError(f"{argv[0]}: {exc}") from None
    return dict(opts), args


def _start_ping(vnet: Vnet, argv: list[str], result: JobResult, dry: bool, jobs: Jobs) -> None:
    opts, args = _opts(argv, "c:i:s:")
    if len(args) != 1:
        raise JobError("ping: one HOST")
    try:
        count = int(opts.get("-c", "3"))
        interval = int(float(opts.get("-i", "1")) * NS_PER_S)
        size = int(opts.get("-s", "56"))
    except ValueError as exc:
        raise JobError(f"ping: {exc}") from None
    if count < 1 or interval <= 0 or not 8 <= size <= 65000:
        raise JobError("ping: -c >= 1, -i > 0, -s in 8..65000")
    if dry:
        return
    task: tasks.Task[None] = tasks.Task(vnet, result.command)
    sock = vnet.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
    task.adopt(sock)  # type: ignore[arg-type]
    ident = vnet.rng.getrandbits(16)
    jobs.keep.append(task)
    task.start(_ping_steps(task, sock, args[0], count, interval, size, ident, result))


def _ping_steps(task: tasks.Task[None], sock: Any, host: str, count: int, interval: int,
                size: int, ident: int, result: JobResult) -> Generator[int | None, None, None]:
    kernel = task.kernel
    sent = received = 0
    rtts: list[int] = []
    next_send = kernel.now_ns()
    try:
        while True:
            now = kernel.now_ns()
            if sent < count and now >= next_send:
                payload = now.to_bytes(8, "big") + bytes(size - 8)
                sock.sendto(wicmp.build_echo(wicmp.ECHO, ident, sent, payload), (host, 0))
                sent += 1
                next_send = now + interval
            while True:
                try:
                    packet, _ = sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                reply = _echo_reply(packet, ident)
                if reply is not None:
                    received += 1
                    rtts.append(now - int.from_bytes(reply[:8], "big"))
            result.result = _ping_summary(sent, received, rtts)
            if sent == count and (received >= count or now >= next_send - interval
                                  + PING_WAIT_NS):
                return
            yield next_send if sent < count else next_send - interval + PING_WAIT_NS
    finally:
        sock.close()


def _echo_reply(packet: bytes, ident: int) -> bytes | None:
    """The payload of an echo reply to us in a raw socket's IPv4 packet, else None."""
    if len(packet) < 20:
        return None
    try:
        rep = wicmp.parse(packet[(packet[0] & 15) * 4:])
    except (ValueError, WireError):
        return None
    if rep.type != wicmp.ECHO_REPLY or rep.ident != ident or len(rep.payload) < 8:
        return None
    return bytes(rep.payload)


def _ping_summary(sent: int, received: int, rtts: list[int]) -> str:
    loss = 100.0 * (sent - received) / sent if sent else 0.0
    text = f"{sent} packets transmitted, {received} packets received, {loss:.1f}% packet loss"
    if rtts:
        text += (f", round-trip min/avg/max = {min(rtts) / 1e6:.3f}/"
                 f"{sum(rtts) / len(rtts) / 1e6:.3f}/{max(rtts) / 1e6:.3f} ms")
    return text


def _start_sink(vnet: Vnet, argv: list[str], result: JobResult, dry: bool, jobs: Jobs) -> None:
    if len(argv) > 2:
        raise JobError("tcp-sink: [PORT]")
    port = _port(argv[1] if len(argv) == 2 else str(DEFAULT_PORT))
    if dry:
        return
    task: tasks.Task[None] = tasks.Task(vnet, result.command)
    lsock = task.socket()
    lsock.bind(("0.0.0.0", port))
    lsock.listen(16)
    jobs.keep.append(task)
    result.result = "0 bytes in 0 connections"
    task.start(_sink_steps(task, lsock, vnet, result, jobs))


def _sink_steps(task: tasks.Task[None], lsock: Any, vnet: Vnet, result: JobResult,
                jobs: Jobs) -> Generator[int | None, None, None]:
    total = [0, 0]  # bytes, connections
    try:
        while True:
            conn, _ = yield from tasks.accept(lsock, None)
            total[1] += 1
            reader: tasks.Task[None] = tasks.Task(vnet, "tcp-sink connection")
            reader.adopt(conn)
            jobs.keep.append(reader)
            reader.start(_drain(conn, total, result))
    finally:
        lsock.close()


def _drain(conn: Any, total: list[int], result: JobResult) -> Generator[int | None, None, None]:
    try:
        while True:
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                yield None
                continue
            if not data:
                return
            total[0] += len(data)
            result.result = f"{total[0]} bytes in {total[1]} connections"
    finally:
        conn.close()


def _start_send(vnet: Vnet, argv: list[str], result: JobResult, dry: bool, jobs: Jobs) -> None:
    if len(argv) not in (3, 4):
        raise JobError("tcp-send: HOST [PORT] BYTES")
    host = argv[1]
    port = _port(argv[2]) if len(argv) == 4 else DEFAULT_PORT
    try:
        nbytes = parse_size(argv[-1])
    except ValueError as exc:
        raise JobError(f"tcp-send: {exc}") from None
    if dry:
        return
    task: tasks.Task[None] = tasks.Task(vnet, result.command)
    sock = task.socket()
    jobs.keep.append(task)
    task.start(_send_steps(task, sock, host, port, nbytes, result))


def _send_steps(task: tasks.Task[None], sock: Any, host: str, port: int, nbytes: int,
                result: JobResult) -> Generator[int | None, None, None]:
    kernel = task.kernel
    start = kernel.now_ns()
    try:
        yield from tasks.connect(sock, (host, port), None)
        left = nbytes
        while left:
            chunk = PATTERN[:min(left, len(PATTERN))]
            yield from tasks.send_all(sock, chunk, None)
            left -= len(chunk)
            result.result = f"{nbytes - left} bytes sent"
        seconds = (kernel.now_ns() - start) / NS_PER_S
        result.result = f"{nbytes} bytes sent in {seconds:.6f} s"
    except OSError as exc:
        result.result = f"failed: {exc}"
    finally:
        sock.close()


def _start_iperf3(vnet: Vnet, argv: list[str], result: JobResult, dry: bool,
                  jobs: Jobs) -> None:
    from vimage.apps import iperf3

    opts, args = _opts(argv, "sc:t:n:p:")
    port = _port(opts.get("-p", str(iperf3.DEFAULT_PORT)))
    if "-s" in opts:
        if dry:
            return
        jobs.keep.append(iperf3.serve(vnet, port))
        result.result = "serving"
        return
    if "-c" not in opts or args:
        raise JobError("iperf3: -s, or -c HOST [-t SECONDS | -n BYTES]")
    try:
        seconds = int(opts.get("-t", "0" if "-n" in opts else "10"))
        nbytes = parse_size(opts.get("-n", "0"))
    except ValueError as exc:
        raise JobError(f"iperf3: {exc}") from None
    if dry:
        return
    settings = iperf3.Settings(duration=seconds, nbytes=nbytes)
    task = iperf3.start_client(vnet, opts["-c"], port, settings=settings)
    jobs.keep.append(task)

    def done() -> None:
        if not task.done:
            vnet.kernel.sched.call_later(NS_PER_S // 10, done, owner=vnet)
            return
        test = task.result
        if task.error is not None or test is None or test.error:
            result.result = f"failed: {task.error or (test.error if test else '')}"
        else:
            result.result = f"{test.bytes_sent} bytes sent, {test.bytes_received} received"

    vnet.kernel.sched.call_later(NS_PER_S // 10, done, owner=vnet)


def _start_tool(vnet: Vnet, argv: list[str], result: JobResult, dry: bool, jobs: Jobs) -> None:
    from vimage.cli import TOOLS

    if argv[0] not in TOOLS:
        raise JobError(f"{argv[0]}: not a job (ping, tcp-sink, tcp-send, iperf3) "
                       "nor a vimage tool")
    if dry:
        return
    out = vnet.cmd(argv)
    text = " ".join(out.output.split())
    result.result = f"status {out.status}" + (f": {text}" if text else "")


def parse_size(text: str) -> int:
    """'64K', '1M', '1000' -> bytes (K = 1024, as iperf3 counts)."""
    t = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if scale > 1 else t) * scale)
    except ValueError:
        raise ValueError(f"bad size {text!r}") from None
    if value < 0:
        raise ValueError(f"bad size {text!r}")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise JobError(f"bad port {text!r}") from None
    if not 0 < port < 65536:
        raise JobError(f"bad port {text!r}")
    return port


_STARTERS = MappingProxyType({"ping": _start_ping, "tcp-sink": _start_sink,
                              "tcp-send": _start_send, "iperf3": _start_iperf3})
