"""iperf3 client and server between vnets, in virtual time.

Why this works in one thread: a blocking call on a vnet socket drives the kernel loop
only until *its* socket is ready, so a server blocked in accept() in the same thread
would starve the client (and in virtual time there is no other thread). Both ends of
vimage.apps.iperf3 are instead generators over non-blocking sockets, stepped by the
kernel loop itself (vimage.apps.tasks): a socket's readiness hook or a timer schedules
the next step. `serve()` therefore returns at once and the server runs whenever the
loop runs; `client()` (or `Task.wait()`, or any blocking socket call of a hand-written
peer below) drives the loop, and with it both ends. Links are shaped (10 Mbit/s, 5 ms
each way), so the kernel clock moves and rates are exact and repeatable.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from typing import Any

import pytest

from vimage.apps import iperf3
from vimage.apps.iperf3.params import (
    ACCESS_DENIED,
    CREATE_STREAMS,
    DISPLAY_RESULTS,
    EXCHANGE_RESULTS,
    IEUNIMP,
    IPERF_DONE,
    PARAM_EXCHANGE,
    SERVER_ERROR,
    TEST_END,
    TEST_RUNNING,
    TEST_START,
    make_cookie,
)
from vimage.cli import usage_of
from vimage.kernel import Kernel
from vimage.socket.tcp_socket import TcpSocket
from vimage.topo import connect
from vimage.vnet import Vnet

A, B = "10.0.0.1", "10.0.0.2"
MB = 1 << 20
RATE = 10_000_000  # bit/s of the shaped link, each way


class Net:
    def __init__(self, seed: int = 1, shaped: bool = True) -> None:
        self.kernel = Kernel(clock="virtual", seed=seed)
        self.server: iperf3.Server | None = None
        self.a, self.b = self.kernel.create("a"), self.kernel.create("b")
        ifa, ifb = connect(self.a, f"{A}/24", self.b, f"{B}/24")
        if shaped:
            for ifp in (ifa, ifb):
                ifp.impair(bandwidth=RATE, delay=0.005)

    def tcp_bytes(self) -> tuple[int, int]:
        """Data bytes TCP carried a -> b and b -> a (from the vnets' counters)."""
        return self.a.tcp.stats.sndbyte, self.b.tcp.stats.sndbyte


@pytest.fixture
def net() -> Net:
    return Net()


def sums(report: dict[str, Any]) -> tuple[int, int]:
    end = report["end"]
    return end["sum_sent"]["bytes"], end["sum_received"]["bytes"]


# -- transfers -----------------------------------------------------------------------------
def test_bytes_reach_the_server_and_both_sides_agree(net: Net) -> None:
    server = iperf3.serve(net.b, once=True)
    ours = iperf3.client(net.a, B, nbytes=MB)
    server.wait(5)  # -1: one test, then the server stops (after the client's IPERF_DONE)
    assert server.done and 5201 not in net.b.tcp.listeners
    [theirs] = server.results
    assert sums(ours) == (MB, MB)  # the client's own count, and what the server told it
    assert sums(theirs) == (MB, MB)  # the server's own count, and what the client told it
    assert ours["start"]["cookie"] == theirs["start"]["cookie"]
    assert len(ours["start"]["cookie"]) == 36
    assert ours["end"]["sum_sent"]["sender"] is True
    assert theirs["end"]["sum_received"]["sender"] is False
    a_to_b, b_to_a = net.tcp_bytes()
    assert MB <= a_to_b < MB + 4096 and b_to_a < 4096  # control messages only way back
    # the receiver's time covers the data's transit: at 10 Mbit/s a megabyte takes 0.84 s
    seconds = theirs["end"]["sum_received"]["seconds"]
    assert 0.84 < seconds < 1.2
    assert ours["end"]["sum_sent"]["seconds"] == pytest.approx(seconds, abs=0.02)


def test_reverse_sends_from_the_server(net: Net) -> None:
    server = iperf3.serve(net.b, once=True)
    ours = iperf3.client(net.a, B, nbytes=MB, reverse=True)
    [theirs] = server.results
    assert sums(ours) == (MB, MB) and sums(theirs) == (MB, MB)
    a_to_b, b_to_a = net.tcp_bytes()
    assert MB <= b_to_a < MB + 4096 and a_to_b < 4096  # now the data went b -> a
    assert ours["start"]["test_start"]["reverse"] == 1
    assert theirs["start"]["test_start"]["reverse"] == 1
    assert ours["end"]["sum_sent"]["sender"] is False  # the client's streams received
    assert theirs["end"]["sum_sent"]["sender"] is True


def test_timed_test_runs_at_the_link_rate(net: Net) -> None:
    server = iperf3.serve(net.b, once=True)
    start = net.kernel.now
    ours = iperf3.client(net.a, B, seconds=2)
    [theirs] = server.results
    sent, received = sums(ours)
    assert sent == received == sums(theirs)[1]  # the client ended once all was acknowledged
    bps = ours["end"]["sum_received"]["bits_per_second"]
    assert 0.85 * RATE < bps < RATE  # TCP/IP headers take their share
    assert 2.0 <= ours["end"]["sum_sent"]["seconds"] < 2.2
    assert 2.0 < net.kernel.now - start < 2.5
    intervals = ours["intervals"]
    assert [round(i["sum"]["start"]) for i in intervals[:2]] == [0, 1]
    assert sum(i["sum"]["bytes"] for i in intervals) == sent
    assert 0.8 * RATE < intervals[1]["sum"]["bits_per_second"] < RATE


def test_reverse_timed_test_sender_sent_at_least_what_arrived(net: Net) -> None:
    server = iperf3.serve(net.b, once=True)
    ours = iperf3.client(net.a, B, seconds=1, reverse=True)
    [theirs] = server.results
    sent, received = sums(ours)
    assert sums(theirs) == (sent, received)
    # the client counts for 1 s; what is in flight then is sent but not counted
    assert 0 < sent - received < 200_000
    assert received == pytest.approx(RATE / 8, rel=0.25)


def test_parallel_streams_carry_their_own_counts(net: Net) -> None:
    server = iperf3.serve(net.b, once=True)
    ours = iperf3.client(net.a, B, nbytes=MB, parallel=3, blksize=64 * 1024)
    [theirs] = server.results
    assert [c["socket"] for c in ours["start"]["connected"]] == [1, 3, 4]  # iperf3's ids
    assert [c["socket"] for c in theirs["start"]["connected"]] == [1, 3, 4]
    mine = [s["sender"]["bytes"] for s in ours["end"]["streams"]]
    got = [s["receiver"]["bytes"] for s in theirs["end"]["streams"]]
    assert sum(mine) == MB and mine == got and all(mine)
    assert [s["receiver"]["bytes"] for s in ours["end"]["streams"]] == got


def test_rate_limit_paces_the_sender(net: Net) -> None:
    net.server = iperf3.serve(net.b, once=True)  # kept: a server nobody holds is garbage
    ours = iperf3.client(net.a, B, seconds=2, rate=2_000_000, blksize=10_000)
    bps = ours["end"]["sum_sent"]["bits_per_second"]
    assert bps == pytest.approx(2_000_000, rel=0.05)  # the last ACK wait counts too
    assert all(i["sum"]["bytes"] == 250_000 for i in ours["intervals"][:2])  # 2 Mbit each


def test_block_count_ends_the_test(net: Net) -> None:
    net.server = iperf3.serve(net.b, once=True)  # kept: a server nobody holds is garbage
    ours = iperf3.client(net.a, B, blocks=5, blksize=1000, nodelay=True)
    assert sums(ours) == (5000, 5000)


def test_same_seed_same_report() -> None:
    reports = []
    for _ in range(2):
        net = Net(seed=7)
        net.server = iperf3.serve(net.b, once=True)  # kept: a server nobody holds is garbage
        reports.append(iperf3.client(net.a, B, seconds=1, parallel=2))
    assert reports[0] == reports[1]


def test_server_runs_test_after_test(net: Net) -> None:
    server = iperf3.serve(net.b)
    for n in (1000, 2000, 3000):
        iperf3.client(net.a, B, nbytes=n)
    assert [sums(r) for r in server.results] == [(1000, 1000), (2000, 2000), (3000, 3000)]
    net.kernel.run(0.1)  # the client's IPERF_DONE; then the server listens again
    assert not server.done
    assert [line for line in server.lines if line.startswith("Server listening")] == [
        "Server listening on 5201 (test #1)", "Server listening on 5201 (test #2)",
        "Server listening on 5201 (test #3)", "Server listening on 5201 (test #4)"]
    server.close()
    assert server.done and 5201 not in net.b.tcp.listeners


def test_busy_server_denies_a_second_client(net: Net) -> None:
    server = iperf3.serve(net.b)
    first = iperf3.start_client(net.a, B, settings=iperf3.Settings(duration=1))
    net.kernel.run(0.5)
    second = iperf3.start_client(net.a, B, settings=iperf3.Settings(duration=1))
    denied = second.wait(10)
    assert denied.error == "the server is busy running a test. try again later"
    assert denied.lines[-1] == "iperf3: error - the server is busy running a test. try again later"
    done = first.wait(10)
    assert done.error is None and sums(done.json())[0] > 0
    assert [r.get("error") for r in server.results] == [None]  # the refusal is no test


# -- the wire protocol, by hand ---------------------------------------------------------------
class RawClient:
    """The client side of the protocol written out with blocking vnet sockets: in virtual
    time each blocking call drives the loop, and with it the server task."""

    def __init__(self, vnet: Vnet, cookie: bytes, port: int = iperf3.DEFAULT_PORT) -> None:
        self.vnet, self.cookie, self.port = vnet, cookie, port
        self.ctrl = self.connect(cookie)

    def connect(self, cookie: bytes) -> TcpSocket:
        sock: TcpSocket = self.vnet.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect((B, self.port))
        sock.sendall(cookie)
        return sock

    def state(self) -> int:
        return struct.unpack("b", self.ctrl.recv(1))[0]

    def send_state(self, state: int) -> None:
        self.ctrl.sendall(struct.pack("b", state))

    def send_json(self, obj: object) -> None:
        text = json.dumps(obj).encode()
        self.ctrl.sendall(struct.pack(">I", len(text)) + text)

    def read_json(self) -> Any:
        (size,) = struct.unpack(">I", recv_exact(self.ctrl, 4))
        return json.loads(recv_exact(self.ctrl, size))


def recv_exact(sock: TcpSocket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        assert chunk, f"EOF after {len(buf)} of {size} bytes"
        buf += chunk
    return buf


PARAMS = {"tcp": True, "omit": 0, "time": 0, "num": 1000, "blockcount": 0, "parallel": 1,
          "len": 1000, "pacing_timer": 1000, "client_version": "3.12"}


def test_wire_protocol_and_a_wrong_cookie_refused(net: Net) -> None:
    server = iperf3.serve(net.b, once=True)
    cookie = make_cookie(net.kernel.rng)
    assert len(cookie) == 37 and cookie[-1:] == b"\0"
    raw = RawClient(net.a, cookie)
    assert raw.state() == PARAM_EXCHANGE == 9
    raw.send_json(PARAMS)
    assert raw.state() == CREATE_STREAMS == 10
    intruder = raw.connect(b"x" * 36 + b"\0")  # a stream with someone else's cookie
    assert intruder.recv(1) == struct.pack("b", ACCESS_DENIED) == b"\xff"
    assert intruder.recv(1) == b""  # and it is closed
    stream = raw.connect(cookie)
    assert raw.state() == TEST_START == 1
    assert raw.state() == TEST_RUNNING == 2
    stream.sendall(b"z" * 1000)
    net.kernel.run(1)  # let it arrive before we say we are done
    raw.send_state(TEST_END)
    assert raw.state() == EXCHANGE_RESULTS == 13
    raw.send_json({"cpu_util_total": 0, "cpu_util_user": 0, "cpu_util_system": 0,
                   "sender_has_retransmits": 0,
                   "streams": [{"id": 1, "bytes": 1000, "retransmits": 0, "jitter": 0,
                                "errors": 0, "packets": 0, "start_time": 0, "end_time": 1}]})
    results = raw.read_json()
    assert results["sender_has_retransmits"] == -1  # the server received
    [entry] = results["streams"]
    assert entry["id"] == 1 and entry["bytes"] == 1000
    assert {"retransmits", "jitter", "errors", "packets", "start_time", "end_time",
            "cpu_util_total"} <= set(entry) | set(results)
    assert raw.state() == DISPLAY_RESULTS == 14
    raw.send_state(IPERF_DONE)
    raw.ctrl.close()
    stream.close()
    server.wait(5)
    [theirs] = server.results
    assert "error" not in theirs and sums(theirs) == (1000, 1000)


@pytest.mark.parametrize(("params", "code", "message"), [
    ({**PARAMS, "tcp": None, "udp": True}, IEUNIMP, "UDP tests are not supported (TCP only)"),
    ({**PARAMS, "bidirectional": True}, IEUNIMP,
     "bidirectional tests (--bidir) are not supported"),
    ({**PARAMS, "omit": 2}, IEUNIMP, "omitting the first seconds (--omit) is not supported"),
    ({**PARAMS, "parallel": 129}, 6, "number of parallel streams too large (maximum = 128)"),
    ({**PARAMS, "len": 2 * MB}, 7, "block size too large (maximum = 1048576 bytes)"),
    ({**PARAMS, "time": "ten"}, 114, "parameter 'time' is not a number"),
    ([1, 2, 3], 114, "parameters are not a JSON object"),
])
def test_server_refuses_parameters_it_cannot_run(net: Net, params: object, code: int,
                                                 message: str) -> None:
    server = iperf3.serve(net.b, once=True)
    raw = RawClient(net.a, make_cookie(net.kernel.rng))
    assert raw.state() == PARAM_EXCHANGE
    raw.send_json(params)
    assert raw.state() == SERVER_ERROR == -2
    assert struct.unpack(">ii", recv_exact(raw.ctrl, 8)) == (code, 0)
    assert raw.ctrl.recv(1) == b""
    server.wait(5)
    assert server.results[0]["error"] == message
    assert server.lines[-1] == f"iperf3: error - {message}"


def test_server_survives_garbage_on_the_control_connection(net: Net) -> None:
    server = iperf3.serve(net.b)
    raw = RawClient(net.a, make_cookie(net.kernel.rng))
    assert raw.state() == PARAM_EXCHANGE
    raw.ctrl.sendall(struct.pack(">I", 50 << 20))  # announces 50 MB of JSON
    assert raw.ctrl.recv(1) == b""  # refused and closed, not buffered
    raw = RawClient(net.a, make_cookie(net.kernel.rng))
    assert raw.state() == PARAM_EXCHANGE
    raw.ctrl.sendall(struct.pack(">I", 5) + b"{nope")
    assert raw.ctrl.recv(1) == b""
    assert iperf3.client(net.a, B, nbytes=1000)["end"]["sum_received"]["bytes"] == 1000
    errors = [r.get("error") for r in server.results]
    assert errors[0].startswith("unable to receive parameters from client")
    assert errors[1] == "unable to receive parameters from client"
    assert errors[2] is None
    assert net.kernel.sched.errors == 0


class RawServer:
    """The server side written out with blocking vnet sockets, against our client task."""

    def __init__(self, vnet: Vnet, port: int = iperf3.DEFAULT_PORT) -> None:
        self.lsock: TcpSocket = vnet.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("", port))
        self.lsock.listen(8)
        self.lsock.settimeout(5)

    def accept_test(self) -> tuple[TcpSocket, dict[str, Any]]:
        ctrl, _ = self.lsock.accept()
        ctrl.settimeout(5)
        assert len(recv_exact(ctrl, 37)) == 37
        ctrl.sendall(struct.pack("b", PARAM_EXCHANGE))
        (size,) = struct.unpack(">I", recv_exact(ctrl, 4))
        return ctrl, json.loads(recv_exact(ctrl, size))


@pytest.mark.parametrize(("reply", "error"), [
    (struct.pack(">bii", SERVER_ERROR, IEUNIMP, 0),
     "an option you are trying to set is not implemented yet"),
    (struct.pack(">bii", SERVER_ERROR, 102, 98),
     "unable to start listener for connections: Address already in use"),
    (struct.pack("b", ACCESS_DENIED), "the server is busy running a test. try again later"),
    (struct.pack("b", 77), "received an unknown control message"),
    (b"", "control socket has closed unexpectedly"),
])
def test_client_reports_what_the_server_says(net: Net, reply: bytes, error: str) -> None:
    raw = RawServer(net.b)
    task = iperf3.start_client(net.a, B, settings=iperf3.Settings(nbytes=5000, reverse=True,
                                                                  nodelay=True))
    ctrl, params = raw.accept_test()
    assert params == {"tcp": True, "omit": 0, "time": 0, "num": 5000, "blockcount": 0,
                      "nodelay": True, "parallel": 1, "reverse": True, "len": 131072,
                      "pacing_timer": 1000, "client_version": "3.12"}
    ctrl.sendall(reply)
    ctrl.close()
    test = task.wait(5)
    assert test.error == error
    assert test.json()["error"] == error


# -- the tool ----------------------------------------------------------------------------------
SUMMARY = re.compile(r"\[  1\]   0\.00-(\d+\.\d\d) +sec +(\S+ \S+) +(\S+ \S+/sec)"
                     r" +(sender|receiver)")


def test_tool_client_prints_iperf3_report(net: Net) -> None:
    net.server = iperf3.serve(net.b)  # kept: a server nobody holds is garbage
    res = net.a.cmd("iperf3 -c 10.0.0.2 -n 1M")
    assert res.status == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "Connecting to host 10.0.0.2, port 5201"
    assert re.fullmatch(r"\[  1\] local 10\.0\.0\.1 port \d+ connected to 10\.0\.0\.2 port 5201",
                        lines[1])
    assert lines[2] == "[ ID] Interval           Transfer     Bitrate"
    assert lines[-2:] == ["", "iperf Done."]
    sender, receiver = [SUMMARY.fullmatch(line.rstrip()) for line in lines[-4:-2]]
    assert sender is not None and receiver is not None
    assert sender.group(2) == receiver.group(2) == "1.00 MBytes"
    assert (sender.group(4), receiver.group(4)) == ("sender", "receiver")
    assert sender.group(3).endswith("Mbits/sec") and 8 < float(sender.group(3).split()[0]) < 10
    assert lines[-5] == "[ ID] Interval           Transfer     Bitrate"
    assert lines[-6] == "- - - - - - - - - - - - - - - - - - - - - - - - -"


def test_tool_client_json_and_reverse(net: Net) -> None:
    net.server = iperf3.serve(net.b)  # kept: a server nobody holds is garbage
    res = net.a.cmd("iperf3 -c 10.0.0.2 -n 100K -R -J -P 2")
    assert res.status == 0, res.output
    report = json.loads(res.output)
    assert sums(report) == (100 * 1024, 100 * 1024)
    assert report["start"]["test_start"]["num_streams"] == 2
    assert report["start"]["connecting_to"] == {"host": "10.0.0.2", "port": 5201}
    assert net.tcp_bytes()[1] > 100 * 1024 > net.tcp_bytes()[0]


def test_tool_client_without_server(net: Net) -> None:
    res = net.a.cmd("iperf3 -c 10.0.0.2 -p 5999 -t 1")
    assert res.status == 1
    assert res.output.splitlines()[-1] == \
        "iperf3: error - unable to connect to server: Connection refused"


@pytest.mark.parametrize(("argv", "message"), [
    ("", "parameter error - must either be a client (-c) or server (-s)"),
    ("-c 10.0.0.2 -s", "parameter error - cannot be both server and client"),
    ("-c 10.0.0.2 -u", "parameter error - UDP tests are not supported (TCP only)"),
    ("-c 10.0.0.2 --bidir", "parameter error - bidirectional tests (--bidir) are not supported"),
    ("-c 10.0.0.2 -t 2 -n 1M",
     "parameter error - only one test end condition (-t, -n, -k) may be specified"),
    ("-c 10.0.0.2 -p 0", "parameter error - port number must be between 1 and 65535 inclusive"),
    ("-c 10.0.0.2 -P 200",
     "parameter error - number of parallel streams too large (maximum = 128)"),
    ("-c 10.0.0.2 -l 2M", "parameter error - block size too large (maximum = 1048576 bytes)"),
    ("-c 10.0.0.2 -t x", "parameter error - invalid value for -t: 'x'"),
    ("-c 10.0.0.2 -n 1Q", "parameter error - invalid value for -n: '1Q'"),
    ("-c 10.0.0.2 -f x", "parameter error - bad format specifier (valid formats are in the "
                         "set [kmgtKMGT])"),
    ("-c 10.0.0.2 -i 0.01", "parameter error - invalid report interval"),
    ("-s -R", "parameter error - some option you are trying to set is client only"),
    ("-c 10.0.0.2 -1", "parameter error - some option you are trying to set is server only"),
    ("-c 10.0.0.2 -x", "illegal option -- x"),
    ("-c 10.0.0.2 extra", "parameter error - unexpected argument 'extra'"),
])
def test_tool_bad_options(net: Net, argv: str, message: str) -> None:
    res = net.a.cmd(f"iperf3 {argv}")
    assert res.status == 64
    first, _, rest = res.output.partition("\n")
    assert first.startswith(f"iperf3: {message}")
    assert rest in ("", usage_of("iperf3"))  # a bad option or operand: the usage follows


def test_tool_unknown_host(net: Net) -> None:
    res = net.a.cmd("iperf3 -c nosuchhost -t 1")
    assert res.status == 1
    assert res.output.splitlines()[-1] == \
        "iperf3: error - unable to connect to server: Name or service not known"


def test_tool_server_alone_in_virtual_time_says_why(net: Net) -> None:
    res = net.b.cmd("iperf3 -s -1")
    assert res.status == 1
    assert res.output.splitlines()[-1].startswith("iperf3: error - no client can connect")
    assert 5201 not in net.b.tcp.listeners


def test_tool_server_port_in_use(net: Net) -> None:
    server = iperf3.serve(net.b, 5201)
    res = net.b.cmd("iperf3 -s -1 -p 5201")
    assert res.status == 1
    assert res.output == \
        "iperf3: error - unable to start listener for connections: Address already in use\n"
    server.close()


def test_tool_server_from_a_thread_with_the_real_clock() -> None:
    kernel = Kernel(clock="real", seed=3)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, f"{A}/24", b, f"{B}/24")
    kernel.start()
    try:
        out: list[Any] = []
        thread = threading.Thread(target=lambda: out.append(b.cmd("iperf3 -s -1 -p 5202")))
        thread.start()
        assert kernel.wait(lambda: 5202 in b.tcp.listeners, 10)
        client = a.cmd("iperf3 -c 10.0.0.2 -p 5202 -n 200K")
        thread.join(10)
        assert not thread.is_alive()
    finally:
        kernel.stop()
    assert client.status == 0, client.output
    [server] = out
    assert server.status == 0, server.output
    lines = server.output.splitlines()
    assert lines[:3] == ["-----------------------------------------------------------",
                         "Server listening on 5202 (test #1)",
                         "-----------------------------------------------------------"]
    assert lines[3].startswith("Accepted connection from 10.0.0.1, port ")
    match = SUMMARY.fullmatch(lines[-1].rstrip())
    assert match is not None and match.group(2) == "200 KBytes" and match.group(4) == "receiver"


def test_timed_test_over_an_instant_link_says_why_it_cannot_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Without bandwidth or delay on the path, virtual time stands still while data
    # flows: a test that ends on the clock would run for ever. The client notices.
    from vimage.apps.iperf3 import client_end

    monkeypatch.setattr(client_end, "FROZEN_BYTES", 1 << 20)
    net = Net(shaped=False)
    server = iperf3.serve(net.b)
    res = net.a.cmd("iperf3 -c 10.0.0.2 -t 1")
    assert res.status == 1
    assert res.output.splitlines()[-1].startswith("iperf3: error - the kernel clock stands "
                                                  "still")
    assert net.kernel.now == 0
    # byte-limited tests are fine there, and the server is ready for them
    assert sums(iperf3.client(net.a, B, nbytes=4 * MB)) == (4 * MB, 4 * MB)
    assert server.results[0]["error"] == "control socket has closed unexpectedly"
