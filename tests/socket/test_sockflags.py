"""SOCK_NONBLOCK and SOCK_CLOEXEC in the type argument, for every kind of vnet socket,
as CPython's socket() honours them: non-blocking from the start, `type` the base type."""

from __future__ import annotations

import errno
import socket

import pytest

from vimage.kernel import Kernel
from vimage.netinet.ip_divert import IPPROTO_DIVERT
from vimage.socket.rtsock import AF_ROUTE
from vimage.topo import connect

FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
KINDS = [
    (socket.AF_INET, socket.SOCK_DGRAM, 0),
    (socket.AF_INET, socket.SOCK_STREAM, 0),
    (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    (socket.AF_INET6, socket.SOCK_DGRAM, 0),
    (socket.AF_INET6, socket.SOCK_STREAM, 0),
    (socket.AF_INET6, socket.SOCK_RAW, 58),
    (AF_ROUTE, socket.SOCK_RAW, 0),
    (socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT),
]


@pytest.fixture
def vnet():
    k = Kernel(clock="virtual", seed=3)
    a = k.create("a")
    b = k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    return a


@pytest.fixture
def peer(vnet):
    return vnet.kernel.get("b")


@pytest.mark.parametrize(("family", "kind", "proto"), KINDS)
def test_type_flags_make_a_nonblocking_socket_of_the_base_type(vnet, family, kind, proto):
    for flags in (socket.SOCK_NONBLOCK, FLAGS):
        with vnet.socket(family, kind | flags, proto) as s:
            assert s.type == kind  # as the stdlib reports it: without the flags
            assert s.gettimeout() == 0.0 and not s.getblocking()
    with vnet.socket(family, kind | socket.SOCK_CLOEXEC, proto) as s:
        assert s.type == kind and s.gettimeout() is None and s.getblocking()


@pytest.mark.parametrize(("family", "kind", "proto"), [k for k in KINDS if k[1] != 1])
def test_a_nonblocking_read_fails_at_once_with_eagain(vnet, family, kind, proto):
    with vnet.socket(family, kind | socket.SOCK_NONBLOCK, proto) as s:
        if family == socket.AF_INET and kind == socket.SOCK_RAW and proto == IPPROTO_DIVERT:
            s.bind(("0.0.0.0", 8668))
        before = vnet.kernel.now
        with pytest.raises(BlockingIOError) as exc:
            s.recv(10)
        assert exc.value.errno == errno.EAGAIN
        assert vnet.kernel.now == before  # no wait, not even in virtual time


def test_nonblocking_tcp_connect_and_accept(vnet, peer):
    b = peer
    srv = b.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    srv.bind(("", 80))
    srv.listen()
    with pytest.raises(BlockingIOError):
        srv.accept()
    cli = vnet.socket(socket.AF_INET, socket.SOCK_STREAM | FLAGS)
    assert cli.connect_ex(("10.0.0.2", 80)) == errno.EINPROGRESS
    vnet.kernel.run(0.1)
    conn, _ = srv.accept()
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert cli.send(b"hi") == 2
    vnet.kernel.run(0.1)
    assert conn.recv(10) == b"hi"


def test_the_stdlib_socket_inside_activate_takes_the_flags(vnet):
    with vnet.activate():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    with s:
        assert isinstance(s, socket.socket) and s.type == socket.SOCK_DGRAM
        with pytest.raises(BlockingIOError):
            s.recvfrom(1)
