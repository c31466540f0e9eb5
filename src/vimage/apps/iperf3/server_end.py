"""The server end: accept tests one after another, refuse others while one runs."""

from __future__ import annotations

import contextlib
import struct
from typing import TYPE_CHECKING

from vimage.apps import tasks
from vimage.apps.iperf3.control import (
    configure,
    earliest,
    failure,
    learn_ctrl,
    poll_state,
    read_json,
    send_state,
    write_json,
)
from vimage.apps.iperf3.params import (
    ACCESS_DENIED,
    CLIENT_TERMINATE,
    COOKIE_SIZE,
    CREATE_STREAMS,
    DISPLAY_RESULTS,
    DRAIN_IDLE,
    EXCHANGE_RESULTS,
    GRACE,
    IPERF_DONE,
    PARAM_EXCHANGE,
    RCV_IDLE,
    SERVER_ERROR,
    TEST_END,
    TEST_RUNNING,
    TEST_START,
    IperfError,
    ParamError,
    Settings,
)
from vimage.apps.iperf3.session import IperfTest
from vimage.sched import NS_PER_S
from vimage.socket.tcp_socket import IPPROTO_TCP, TCP_NODELAY

if TYPE_CHECKING:
    from vimage.apps.iperf3 import Server
    from vimage.apps.tasks import Steps, Task
    from vimage.socket.tcp_socket import TcpSocket


def server_steps(task: Task[None], server: Server) -> Steps[None]:
    """Accept tests one after another (one only if `server.once`)."""
    lsock = server.lsock
    try:
        while True:
            server.report_listening()
            ctrl, _peer = yield from tasks.accept(lsock, None)
            task.adopt(ctrl)
            test = IperfTest("s", task.vnet, Settings(), b"", server.interval,
                             server.json_mode, server.fmt)
            test.ctrl = ctrl
            server.current = test
            try:
                yield from _serve(task, server, test)
                yield from _await_done(server, test)
            except Exception as exc:  # a failed test is reported; the server goes on
                test.error = str(failure(test, exc))
                test.report.error(test.error)
                server.finished(test)
            finally:
                test.close()
                server.current = None
            if server.once:
                return
    finally:
        lsock.close()


def _serve(task: Task[None], server: Server, test: IperfTest) -> Steps[None]:
    kernel = test.kernel
    ctrl = test.ctrl
    assert ctrl is not None
    ctrl.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    learn_ctrl(test)
    test.doing = "unable to receive cookie at server"
    test.cookie = yield from tasks.recv_exact(ctrl, COOKIE_SIZE,
                                              tasks.deadline_in(kernel, server.timeout))
    test.report.accepted()
    yield from send_state(test, PARAM_EXCHANGE)
    params = yield from read_json(test, "unable to receive parameters from client")
    try:
        test.settings = Settings.from_params(params)
    except ParamError as exc:
        yield from send_state(test, SERVER_ERROR)
        yield from tasks.send_all(ctrl, struct.pack(">ii", exc.code, 0),
                                  tasks.deadline_in(kernel, server.timeout))
        raise
    yield from send_state(test, CREATE_STREAMS)
    yield from _accept_streams(task, server, test)
    yield from send_state(test, TEST_START)
    test.begin()
    yield from send_state(test, TEST_RUNNING)
    yield from _server_run(server, test)
    yield from send_state(test, EXCHANGE_RESULTS)
    test.take_peer_results((yield from read_json(test, "unable to receive results")))
    if not test.sending:
        yield from _drain(server, test)
    test.stop(test.end_ns)
    test.report.summary()
    yield from write_json(test, test.results(), "unable to send results")
    server.finished(test)  # complete now: recorded before the client can know it is over
    yield from send_state(test, DISPLAY_RESULTS)
    for st in test.streams:
        st.close()


def _await_done(server: Server, test: IperfTest) -> Steps[None]:
    """The client answers DISPLAY_RESULTS with IPERF_DONE and closes; either will do."""
    deadline = test.now() + int(server.timeout * NS_PER_S)
    while test.now() < deadline:
        server.deny_others()
        try:
            state = poll_state(test)
        except IperfError:
            return
        if state is not None:
            return
        yield deadline


def _accept_streams(task: Task[None], server: Server, test: IperfTest) -> Steps[None]:
    """CREATE_STREAMS: accept `parallel` connections that bring the test's cookie."""
    s = test.settings
    deadline = test.now() + int(server.timeout * NS_PER_S)
    pending: list[tuple[TcpSocket, bytearray]] = []
    try:
        while len(test.streams) < s.parallel:
            test.doing = "unable to accept stream connection"
            while True:
                try:
                    sock, _ = server.lsock.accept()
                except BlockingIOError:
                    break
                pending.append((task.adopt(sock), bytearray()))
            for entry in list(pending):
                sock, buf = entry
                try:
                    chunk = sock.recv(COOKIE_SIZE - len(buf))
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    pending.remove(entry)
                    sock.close()
                    continue
                buf += chunk
                if len(buf) < COOKIE_SIZE:
                    continue
                pending.remove(entry)
                if not same_cookie(bytes(buf), test.cookie):
                    deny(sock)
                    continue
                configure(sock, s)
                test.add_stream(sock)
                if len(test.streams) == s.parallel:
                    break
            if len(test.streams) == s.parallel:
                break
            _server_check_ctrl(test)
            if test.now() >= deadline:
                raise IperfError("timed out waiting for the test's streams")
            yield deadline
    finally:
        for sock, _ in pending:
            sock.close()


def same_cookie(a: bytes, b: bytes) -> bool:
    """Cookies compare as C strings (iperf3 uses strcmp): up to the first NUL."""
    return a.partition(b"\0")[0] == b.partition(b"\0")[0]


def deny(sock: TcpSocket) -> None:
    """Refuse a connection: read what it sent, answer ACCESS_DENIED and close it."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.send(struct.pack("b", ACCESS_DENIED))
    sock.close()


def _server_check_ctrl(test: IperfTest) -> None:
    state = poll_state(test)
    if state is None:
        return
    if state in (IPERF_DONE, CLIENT_TERMINATE):
        raise IperfError("the client has terminated")
    raise IperfError("received an unknown control message")


def _server_run(server: Server, test: IperfTest) -> Steps[None]:
    """TEST_RUNNING at the server: move data until the client says TEST_END."""
    s = test.settings
    assert test.start_ns is not None
    limit = (test.start_ns + int((s.duration + GRACE) * NS_PER_S)) if s.duration else None
    idle_ns = int(RCV_IDLE * NS_PER_S)
    while True:
        server.deny_others()
        test.tick()
        wake = test.pump()
        state = poll_state(test)
        if state == TEST_END:
            if test.sending:
                test.stop()
                # as iperf3 does: a Linux client drains its streams with blocking reads of
                # whole blocks after TEST_END, and would wait for ever without our FIN
                for st in test.streams:
                    st.close()
            else:
                test.pump()  # what has arrived before TEST_END counts, and _drain goes on
                test.end_ns = test.now()
            return
        if state is not None:
            if state in (IPERF_DONE, CLIENT_TERMINATE):
                raise IperfError("the client has terminated")
            raise IperfError("received an unknown control message")
        now = test.now()
        if limit is not None and now >= limit:
            raise IperfError("the test ran past its duration; giving up")
        if not test.sending and now - test.last_data_ns >= idle_ns:
            raise IperfError("idle timeout for receiving data")
        yield earliest(limit, wake, test.next_interval_ns if test.interval_ns else None,
                       None if test.sending else test.last_data_ns + idle_ns)


def _drain(server: Server, test: IperfTest) -> Steps[None]:
    """Read on until every stream has what the client says it sent (or nothing comes)."""
    idle_ns = int(DRAIN_IDLE * NS_PER_S)
    last = test.now()
    while True:
        before = test.bytes_received
        test.pump()
        server.deny_others()
        now = test.now()
        if test.bytes_received != before:
            last = now
            test.end_ns = now
        short = [st for st in test.streams
                 if st.peer_bytes is not None and st.bytes < st.peer_bytes and not st.eof]
        if not short or now - last >= idle_ns:
            return
        yield last + idle_ns


