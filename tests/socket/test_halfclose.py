"""A peer's half-close as the stdlib observes it: selectors and the asyncio loop see the
socket readable and recv returns b"" (the other direction still works); poll(2)'s masks
(vimage.aio.KernelPoll) carry POLLRDHUP, then POLLHUP, as Linux's tcp_poll."""

from __future__ import annotations

import asyncio
import select
import selectors
import socket

import vimage
from vimage.aio import KernelPoll, KernelSelector
from vimage.kernel import Kernel
from vimage.topo import connect

B = "10.0.0.2"


def pair():
    k = Kernel(clock="virtual", seed=9)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, f"{B}/24")
    srv = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("", 80))
    srv.listen()
    cli = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((B, 80))
    conn, _ = srv.accept()
    return k, cli, conn


def test_a_selector_reports_the_half_close_as_readable():
    k, cli, conn = pair()
    sel = KernelSelector(k)
    sel.register(conn, selectors.EVENT_READ)
    assert sel.select(0) == []
    cli.shutdown(socket.SHUT_WR)
    events = sel.select(1)
    assert [(key.fileobj, ev) for key, ev in events] == [(conn, selectors.EVENT_READ)]
    assert conn.recv(10) == b""
    assert sel.select(0)  # level-triggered: stays readable, as epoll
    conn.sendall(b"still open the other way")
    k.run(0.1)
    assert cli.recv(100) == b"still open the other way"
    sel.close()


def test_kernel_poll_has_pollrdhup_then_pollhup():
    k, cli, conn = pair()
    p = KernelPoll(k)
    p.register(conn, select.POLLIN | select.POLLRDHUP)
    assert p.poll(0) == []
    start = k.now
    assert p.poll(500) == [] and k.now - start == 0.5  # the timeout, in virtual time
    k.call_later(1, cli.shutdown, socket.SHUT_WR)
    [(fd, revents)] = p.poll()
    assert fd == conn.fileno()
    assert revents == select.POLLIN | select.POLLRDHUP  # (POLLRDNORM: not asked for)
    p.modify(conn, select.POLLIN | select.POLLOUT)
    assert p.poll(0)[0][1] & select.POLLOUT and not p.poll(0)[0][1] & select.POLLHUP
    conn.shutdown(socket.SHUT_WR)  # both directions shut: hung up
    assert p.poll(0)[0][1] & select.POLLHUP
    p.unregister(conn)
    lone = k.get("a").socket(socket.AF_INET, socket.SOCK_STREAM)
    p.register(lone, select.POLLIN)  # unconnected: POLLHUP whether asked for or not
    assert p.poll(0) == [(lone.fileno(), select.POLLHUP)]


def test_asyncio_reader_sees_eof_and_can_still_write():
    k, cli, conn = pair()
    cli.close()
    conn.close()
    a, b = k.get("a"), k.get("b")

    async def main() -> tuple[bytes, bool]:
        async def handle(reader, writer):
            data = await reader.read()  # to the peer's half-close
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        server = await vimage.spawn(b, asyncio.start_server(handle, "0.0.0.0", 7))
        with a.activate():
            reader, writer = await asyncio.open_connection(B, 7)
        writer.write(b"half")
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        server.close()
        return answer, reader.at_eof()

    answer, eof = vimage.run(main(), kernel=k)
    assert answer == b"HALF" and eof
