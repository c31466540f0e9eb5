"""vimage.apps.tasks: generators over non-blocking sockets, stepped by the kernel loop.

Everything in virtual time, in one thread: `Task.wait()` drives the loop, which steps
every task, so a server task and a client task talk to each other without threads.
"""

from __future__ import annotations

import errno
import gc

import pytest

from vimage.apps import tasks
from vimage.apps.tasks import Steps, Task, TaskCancelled
from vimage.kernel import Kernel
from vimage.sched import NS_PER_S
from vimage.topo import connect
from vimage.vnet import Vnet

A, B = "10.0.0.1", "10.0.0.2"


@pytest.fixture
def pair() -> tuple[Kernel, Vnet, Vnet]:
    kernel = Kernel(clock="virtual", seed=5)
    a, b = kernel.create("a"), kernel.create("b")
    ifa, _ = connect(a, f"{A}/24", b, f"{B}/24")
    ifa.impair(delay=0.01)
    return kernel, a, b


def echo_server(task: Task[bytes], port: int) -> Steps[bytes]:
    """Accept one connection, echo 5 bytes back, return them."""
    lsock = task.socket()
    lsock.bind(("", port))
    lsock.listen(1)
    try:
        conn, _ = yield from tasks.accept(lsock, None)
        task.adopt(conn)
        data = yield from tasks.recv_exact(conn, 5, None)
        yield from tasks.send_all(conn, data, None)
        conn.close()
        return data
    finally:
        lsock.close()


def echo_client(task: Task[bytes], port: int, data: bytes) -> Steps[bytes]:
    sock = task.socket()
    try:
        yield from tasks.connect(sock, (B, port), tasks.deadline_in(task.kernel, 5))
        yield from tasks.send_all(sock, data, None)
        return (yield from tasks.recv_exact(sock, len(data), None))
    finally:
        sock.close()


def test_two_tasks_talk_in_one_thread(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, b = pair
    server: Task[bytes] = Task(b, "echo server")
    server.start(echo_server(server, 7000))
    client: Task[bytes] = Task(a, "echo client")
    client.start(echo_client(client, 7000, b"hello"))
    assert client.wait(5) == b"hello"
    assert server.wait(5) == b"hello"
    # 10 ms one way (a -> b) for the ARP request, the SYN and the data; the rest is instant
    assert kernel.now == pytest.approx(0.03)
    assert 7000 not in b.tcp.listeners and kernel.sched.errors == 0


def test_a_task_sleeps_until_the_time_it_yields(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair

    def sleeper() -> Steps[int]:
        wake = kernel.now_ns() + 3 * NS_PER_S // 2
        while kernel.now_ns() < wake:
            yield wake
        return kernel.now_ns()

    task: Task[int] = Task(a, "sleeper")
    task.start(sleeper())
    assert not task.done
    assert task.wait(10) == 3 * NS_PER_S // 2


def test_failures_are_the_task_s_not_the_loop_s(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    task: Task[bytes] = Task(a, "refused")
    task.start(echo_client(task, 7001, b"x"))
    with pytest.raises(ConnectionRefusedError):
        task.wait(5)
    assert task.done and isinstance(task.error, ConnectionRefusedError)
    assert kernel.sched.errors == 0


def test_peer_closing_early_is_eof(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, b = pair
    lsock = b.socket()
    lsock.bind(("", 7002))
    lsock.listen(1)

    def reader(task: Task[bytes]) -> Steps[bytes]:
        sock = task.socket()
        yield from tasks.connect(sock, (B, 7002), None)
        return (yield from tasks.recv_exact(sock, 10, None))

    task: Task[bytes] = Task(a, "reader")
    task.start(reader(task))
    conn, _ = lsock.accept()
    conn.sendall(b"abc")
    conn.close()
    with pytest.raises(EOFError, match="after 3 of 10 bytes"):
        task.wait(5)


def test_wait_times_out_and_cancel_closes(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, _, b = pair
    server: Task[bytes] = Task(b, "idle server")
    server.start(echo_server(server, 7003))
    with pytest.raises(TimeoutError):
        server.wait(2)
    assert kernel.now == pytest.approx(2.0)
    assert 7003 in b.tcp.listeners
    server.cancel()
    assert server.done and isinstance(server.error, TaskCancelled)
    assert 7003 not in b.tcp.listeners  # the generator's finally ran


def test_a_deadline_bounds_a_connect(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair

    def connector(task: Task[None]) -> Steps[None]:
        sock = task.socket()
        yield from tasks.connect(sock, ("10.0.0.99", 80), tasks.deadline_in(kernel, 3))

    task: Task[None] = Task(a, "connector")
    task.start(connector(task))
    with pytest.raises(TimeoutError):
        task.wait(10)
    assert kernel.now == pytest.approx(3.0, abs=0.01)


def test_destroying_the_vnet_ends_the_wait(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, _, b = pair
    server: Task[bytes] = Task(b, "doomed server")
    server.start(echo_server(server, 7004))
    kernel.run(0.1)
    kernel.destroy(b)
    with pytest.raises(OSError) as info:
        server.wait(1)
    assert info.value.errno == errno.ENETDOWN


def test_a_forgotten_task_is_collected_and_closes_its_sockets(
        pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, _, b = pair
    server: Task[bytes] | None = Task(b, "forgotten")
    assert server is not None
    server.start(echo_server(server, 7005))
    kernel.run(0.1)
    assert 7005 in b.tcp.listeners
    server = None
    gc.collect()
    assert 7005 not in b.tcp.listeners


def test_a_task_starts_once(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    task: Task[bytes] = Task(a)
    task.start(echo_client(task, 7006, b"x"))
    with pytest.raises(RuntimeError, match="already started"):
        task.start(echo_client(task, 7006, b"x"))
    task.cancel()
