"""iperf3's protocol, TCP tests only: a client and a server that interoperate with iperf3 3.x.

The protocol (as iperf3 3.12 speaks it): the client opens a control connection and
sends a 37-byte cookie (36 characters of [a-z2-7] and a NUL). From then on the
server drives the test with one signed byte per state change: PARAM_EXCHANGE (the
client answers with its parameters, a JSON object preceded by its length as a
4-byte big-endian integer), CREATE_STREAMS (the client opens `parallel` data
connections to the same port, each starting with the cookie; a wrong cookie gets
ACCESS_DENIED and is closed), TEST_START, TEST_RUNNING (data flows one way: client
to server, or server to client with `reverse`). The client ends the test with
TEST_END; the server answers EXCHANGE_RESULTS, reads the client's results (JSON, as
above) and sends its own, then DISPLAY_RESULTS; the client says IPERF_DONE and
closes. A busy server answers a second control connection with ACCESS_DENIED; a
server that cannot run a test sends SERVER_ERROR followed by two 4-byte integers
(iperf3's error code and an errno).

Both ends are generators stepped by the kernel loop (`vimage.apps.tasks`), so a
client and a server in vnets of one kernel run together in virtual time, and either
end can face a real iperf3 across a TAP link in real time. All time is kernel time.

Where this differs from iperf3, on purpose:
- a sending client ends the test (TEST_END) only when its data has been
  acknowledged, so the receiver has all of it; its time runs until then;
- a receiving server that gets TEST_END before everything arrived keeps reading
  until it has every byte the client's results say were sent (for at most
  DRAIN_IDLE seconds without progress), so sender and receiver agree exactly; a
  Linux iperf3 server stops counting at TEST_END;
- a sender with `-n` sends exactly that many bytes (the last block is cut short);
- retransmits are not reported (`sender_has_retransmits` is 0), nor CPU use.
UDP, SCTP, --bidir and --omit are refused with a clear error (SERVER_ERROR with
IEUNIMP, "an option you are trying to set is not implemented yet", to a client).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from vimage.apps.iperf3.client_end import client_steps
from vimage.apps.iperf3.params import (
    CTRL_TIMEOUT,
    DEFAULT_BLKSIZE,
    DEFAULT_DURATION,
    DEFAULT_PORT,
    GRACE,
    IperfError,
    ParamError,
    Settings,
    make_cookie,
)
from vimage.apps.iperf3.server_end import deny, server_steps
from vimage.apps.iperf3.session import IperfTest
from vimage.apps.tasks import Task
from vimage.socket.inet6 import IPPROTO_IPV6, IPV6_V6ONLY
from vimage.socket.socket import AF_INET, AF_INET6, SO_REUSEADDR, SOL_SOCKET

if TYPE_CHECKING:
    from vimage.vnet import Vnet


class Server:
    """An iperf3 server listening in a vnet, run by the kernel loop.

    Keep the object: a forgotten server is closed. `results` holds each finished
    test as `iperf3 -J` reports it, `lines` the text iperf3 would print.
    """

    def __init__(self, vnet: Vnet, port: int = DEFAULT_PORT, *, once: bool = False,
                 bind: str = "", interval: float = 1.0, json_mode: bool = False,
                 fmt: str = "a", timeout: float = CTRL_TIMEOUT, family: int = 0) -> None:
        self.vnet = vnet
        self.fmt = fmt
        self.once = once
        self.interval = interval
        self.json_mode = json_mode
        self.timeout = timeout
        self.results: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.current: IperfTest | None = None
        self.tests = 0
        with vnet.kernel.sched.cond:
            self.task: Task[None] = Task(vnet, f"iperf3 -s -p {port}")
            # -6, or -B with an IPv6 address: an IPv6 only listener (iperf3's netannounce
            # sets IPV6_V6ONLY for AF_INET6); otherwise IPv4 as before
            v6 = family == AF_INET6 or ":" in bind
            lsock = self.task.socket(AF_INET6 if v6 else AF_INET)
            try:
                lsock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
                if v6:
                    lsock.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 1)
                    lsock.bind(bind6(vnet, bind, port))
                else:
                    lsock.bind((bind, port))
                lsock.listen(128)
            except OSError:
                lsock.close()
                raise
            self.lsock = lsock
            self.port = lsock.getsockname()[1]
            self.task.start(server_steps(self.task, self))

    def report_listening(self) -> None:
        self.tests += 1
        if not self.json_mode:
            self.lines += ["-----------------------------------------------------------",
                           f"Server listening on {self.port} (test #{self.tests})",
                           "-----------------------------------------------------------"]

    def finished(self, test: IperfTest) -> None:
        self.results.append(test.json())
        if self.json_mode:
            self.lines += json.dumps(test.json(), indent="\t").splitlines()
        else:
            self.lines += test.lines

    def deny_others(self) -> None:
        """While a test runs, every new connection gets ACCESS_DENIED."""
        while True:
            try:
                sock, _ = self.lsock.accept()
            except (BlockingIOError, OSError):
                return
            deny(sock)

    @property
    def done(self) -> bool:
        return self.task.done

    def wait(self, timeout: float | None = None) -> None:
        """Block (driving the kernel loop) until the server stops: after one test with
        `once`, else only if it fails."""
        self.task.wait(timeout)

    def close(self) -> None:
        with self.vnet.kernel.sched.cond:
            self.task.cancel()
            self.lsock.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bind6(vnet: Vnet, bind: str, port: int) -> tuple[Any, ...]:
    """`-B` as an AF_INET6 socket address (a `%zone` names the interface)."""
    from vimage.socket.inet6 import parse_sockaddr6

    if not bind:
        return ("::", port)
    _addr, port, scope = parse_sockaddr6(vnet, (bind, port))
    return (bind.partition("%")[0], port, 0, scope)


def serve(vnet: Vnet, port: int = DEFAULT_PORT, *, once: bool = False, **options: Any) -> Server:
    """Start an iperf3 server in `vnet` (it runs whenever the kernel loop runs)."""
    return Server(vnet, port, once=once, **options)


def start_client(vnet: Vnet, host: str, port: int = DEFAULT_PORT, *,
                 settings: Settings | None = None, interval: float = 1.0,
                 json_mode: bool = False, fmt: str = "a",
                 timeout: float = CTRL_TIMEOUT, family: int = 0) -> Task[IperfTest]:
    """Start one test against host:port; the task's result is the IperfTest (see `.error`)."""
    settings = settings or Settings()
    settings.check()
    with vnet.kernel.sched.cond:
        task: Task[IperfTest] = Task(vnet, f"iperf3 -c {host}")
        test = IperfTest("c", vnet, settings, make_cookie(vnet.rng), interval,
                         json_mode, fmt)
        return task.start(client_steps(task, test, host, port, timeout, family))


def client(vnet: Vnet, host: str, port: int = DEFAULT_PORT, *, seconds: int | None = None,
           nbytes: int = 0, blocks: int = 0, reverse: bool = False, parallel: int = 1,
           blksize: int = DEFAULT_BLKSIZE, nodelay: bool = False, window: int = 0,
           rate: int = 0, interval: float = 1.0, timeout: float = CTRL_TIMEOUT) -> dict[str, Any]:
    """Run one test from `vnet` against host:port and return it as `iperf3 -J` would print
    it (blocking; in virtual time the kernel clock jumps). IperfError if it fails."""
    if seconds is None:
        seconds = 0 if (nbytes or blocks) else DEFAULT_DURATION
    settings = Settings(duration=seconds, nbytes=nbytes, blocks=blocks, blksize=blksize,
                        parallel=parallel, reverse=reverse, nodelay=nodelay, window=window,
                        rate=rate)
    task = start_client(vnet, host, port, settings=settings, interval=interval, timeout=timeout)
    limit = seconds + GRACE + 2 * timeout if seconds else None
    test = task.wait(limit)
    if test.error is not None:
        raise IperfError(test.error)
    return test.json()


__all__ = ["CTRL_TIMEOUT", "DEFAULT_BLKSIZE", "DEFAULT_DURATION", "DEFAULT_PORT", "GRACE",
           "IperfError", "IperfTest", "ParamError", "Server", "Settings", "client", "deny",
           "serve", "start_client"]
