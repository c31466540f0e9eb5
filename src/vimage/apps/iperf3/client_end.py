"""The client end of a test: connect, send the parameters, open the streams, move data."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from vimage import netdb
from vimage.apps import tasks
from vimage.apps.iperf3.control import (
    configure,
    earliest,
    failure,
    learn_ctrl,
    poll_state,
    read_json,
    send_state,
    wait_state,
    write_json,
)
from vimage.apps.iperf3.params import (
    ACCESS_DENIED,
    CREATE_STREAMS,
    DISPLAY_RESULTS,
    EXCHANGE_RESULTS,
    IE_TEXT,
    IEACCESSDENIED,
    IPERF_DONE,
    PARAM_EXCHANGE,
    RCV_IDLE,
    SERVER_ERROR,
    SERVER_TERMINATE,
    TEST_END,
    TEST_RUNNING,
    TEST_START,
    IperfError,
    server_error_text,
)
from vimage.sched import NS_PER_S
from vimage.socket.socket import SOCK_STREAM
from vimage.socket.tcp_socket import IPPROTO_TCP, TCP_NODELAY

FROZEN_BYTES = 16 << 20
FROZEN_TEXT = ("the kernel clock stands still: over links without bandwidth or delay, "
               "virtual time does not advance and a timed test (-t) would never end; "
               "shape a link (vlink) or use -n")

if TYPE_CHECKING:
    from vimage.apps.iperf3.session import IperfTest
    from vimage.apps.tasks import Steps, Task


def client_steps(task: Task[IperfTest], test: IperfTest, host: str, port: int,
                 timeout: float, family: int = 0) -> Steps[IperfTest]:
    """Run one test against the server at host:port; failures end up in `test.error`."""
    try:
        yield from _client(task, test, host, port, timeout, family)
    except Exception as exc:  # every failure is reported as iperf3 reports it
        test.error = str(failure(test, exc))
        test.report.error(test.error)
    finally:
        test.close()
    return test


def _client(task: Task[IperfTest], test: IperfTest, host: str, port: int,
            timeout: float, family: int = 0) -> Steps[None]:
    s = test.settings
    kernel = test.kernel
    test.report.connecting(host, port)
    test.doing = "unable to connect to server"
    # -4/-6 choose the family; otherwise the resolver's first answer (glibc's order)
    found = netdb.getaddrinfo(test.vnet, host, port, family, SOCK_STREAM)[0]
    fam, address = int(found[0]), found[4]
    ctrl = test.ctrl = task.socket(fam)
    yield from tasks.connect(ctrl, address, tasks.deadline_in(kernel, timeout))
    ctrl.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    learn_ctrl(test)
    test.doing = "unable to send cookie to server"
    yield from tasks.send_all(ctrl, test.cookie, tasks.deadline_in(kernel, timeout))
    while True:
        # after TEST_END a receiving client reads on (uncounted) so the server is not stuck
        drain = test.pump if test.state == TEST_END else None
        state = yield from wait_state(test, timeout, drain)
        test.state = state
        if state == PARAM_EXCHANGE:
            yield from write_json(test, s.params(), "unable to send parameters to server")
        elif state == CREATE_STREAMS:
            for _ in range(s.parallel):
                test.doing = "unable to connect stream"
                sock = task.socket(fam)
                configure(sock, s)
                yield from tasks.connect(sock, address, tasks.deadline_in(kernel, timeout))
                yield from tasks.send_all(sock, test.cookie, tasks.deadline_in(kernel, timeout))
                test.add_stream(sock)
        elif state == TEST_START:
            test.begin()
        elif state == TEST_RUNNING:
            yield from _client_run(test, timeout)
            yield from send_state(test, TEST_END)
        elif state == EXCHANGE_RESULTS:
            yield from write_json(test, test.results(), "unable to send results")
            test.take_peer_results((yield from read_json(test, "unable to receive results")))
        elif state == DISPLAY_RESULTS:
            for st in test.streams:
                st.close()
            test.report.summary()
            yield from send_state(test, IPERF_DONE)
            return
        elif state == SERVER_TERMINATE:
            raise IperfError("the server has terminated")
        elif state == ACCESS_DENIED:
            raise IperfError(IE_TEXT[IEACCESSDENIED])
        elif state == SERVER_ERROR:
            test.doing = "unable to read from the control socket"
            deadline = tasks.deadline_in(kernel, timeout)
            code, err = struct.unpack(">ii", (yield from tasks.recv_exact(ctrl, 8, deadline)))
            raise IperfError(server_error_text(code, err))
        elif state not in (IPERF_DONE,):
            raise IperfError("received an unknown control message")


def _client_run(test: IperfTest, timeout: float) -> Steps[None]:
    """TEST_RUNNING at the client: move data until the time, byte or block limit."""
    s = test.settings
    assert test.start_ns is not None
    end = test.start_ns + s.duration * NS_PER_S if s.duration else None
    idle_ns = int(max(timeout, RCV_IDLE) * NS_PER_S)
    watch_clock = end is not None and test.kernel.clock == "virtual"
    instant, moved_then = test.now(), 0
    while True:
        test.tick()  # intervals end before the data of their last instant moves
        now = test.now()
        if end is not None and now >= end:
            break
        wake = test.pump()
        if test.limit_reached():
            break
        if watch_clock:
            moved = test.bytes_sent + test.bytes_received
            if now != instant:
                instant, moved_then = now, moved
            elif moved - moved_then > FROZEN_BYTES:
                raise IperfError(FROZEN_TEXT)
        _check_ctrl(test)
        if now - test.last_data_ns >= idle_ns:
            raise IperfError("idle timeout for receiving data")
        yield earliest(end, test.next_interval_ns if test.interval_ns else None, wake,
                       test.last_data_ns + idle_ns)
    if test.sending:  # the test ends when the receiver has everything
        deadline = test.now() + int(timeout * NS_PER_S)
        while test.unacked() and test.now() < deadline:
            _check_ctrl(test)
            test.tick()
            yield earliest(deadline, test.next_interval_ns if test.interval_ns else None)
    test.stop()


def _check_ctrl(test: IperfTest) -> None:
    """While data flows the server says nothing, except to abort."""
    state = poll_state(test)
    if state is None:
        return
    if state == SERVER_ERROR:
        raise IperfError("the server reported an error during the test")
    if state == SERVER_TERMINATE:
        raise IperfError("the server has terminated")
    if state == ACCESS_DENIED:
        raise IperfError(IE_TEXT[IEACCESSDENIED])
    raise IperfError("received an unknown control message")
