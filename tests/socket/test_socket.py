"""Sockets: stdlib names, semantics and errnos."""

import errno
import socket
import threading

import pytest

from vimage.kernel import Kernel
from vimage.topo import connect


@pytest.fixture
def net():
    k = Kernel(clock="virtual", seed=21)
    a = k.create("a")
    b = k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    return k, a, b


def _errno(fn, *args):
    with pytest.raises(OSError) as exc:
        fn(*args)
    return exc.value.errno


def test_udp_roundtrip_and_names(net):
    k, a, b = net
    with b.socket(socket.AF_INET, socket.SOCK_DGRAM) as srv:
        srv.bind(("10.0.0.2", 5353))
        assert srv.getsockname() == ("10.0.0.2", 5353)
        cli = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli.connect(("10.0.0.2", 5353))
        assert cli.getpeername() == ("10.0.0.2", 5353)
        host, port = cli.getsockname()
        assert host == "10.0.0.1" and 10000 <= port <= 65535
        cli.send(b"question")
        data, addr = srv.recvfrom(100)
        assert data == b"question" and addr == ("10.0.0.1", port)
        srv.sendto(b"answer", addr)
        buf = bytearray(3)
        assert cli.recv_into(buf) == 3 and bytes(buf) == b"ans"  # truncated datagram
    assert srv.closed


def test_errnos(net):
    k, a, b = net
    s1 = a.socket(2, 2)
    s1.bind(("", 7000))
    assert _errno(a.socket(2, 2).bind, ("", 7000)) == errno.EADDRINUSE
    assert _errno(a.socket(2, 2).bind, ("10.9.9.9", 0)) == errno.EADDRNOTAVAIL
    assert _errno(a.socket(2, 2).sendto, b"x", ("192.0.2.1", 9)) == errno.ENETUNREACH
    s = a.socket(2, 2)
    assert _errno(s.sendto, b"x" * 10000, ("10.0.0.2", 9)) == errno.EMSGSIZE
    assert _errno(s.sendto, b"x", ("10.0.0.255", 9)) == errno.EACCES
    assert _errno(s.sendto, b"x", ("255.255.255.255", 9)) == errno.EACCES
    assert _errno(s.getpeername) == errno.ENOTCONN
    with pytest.raises(socket.gaierror):
        s.sendto(b"x", ("no.such.host", 9))
    with pytest.raises(OverflowError):
        s.bind(("", 70000))


def test_reject_route_gives_ehostunreach(net):
    from vimage.net.route import RTF_REJECT, RTF_STATIC, Route
    from vimage.wire import ipv4

    k, a, b = net
    a.rt.add(Route(ipv4.aton("192.0.2.0"), 24, a.ifaces["lo0"], RTF_REJECT | RTF_STATIC,
                   gateway=ipv4.aton("127.0.0.1")))
    assert _errno(a.socket(2, 2).sendto, b"x", ("192.0.2.1", 9)) == errno.EHOSTUNREACH


def test_reuseaddr_allows_duplicate_bind(net):
    k, a, b = net
    s1, s2 = a.socket(2, 2), a.socket(2, 2)
    for s in (s1, s2):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", 8000))
    assert s1.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1


def test_connected_udp_gets_econnrefused(net):
    k, a, b = net
    s = a.socket(2, 2)
    s.connect(("10.0.0.2", 4444))
    s.send(b"anyone?")
    s.settimeout(1)
    assert _errno(s.recv, 100) == errno.ECONNREFUSED
    assert b.udp.stats.noport == 1
    # the error is reported once
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.recv(100)


def test_unconnected_udp_ignores_port_unreachable(net):
    k, a, b = net
    s = a.socket(2, 2)
    s.sendto(b"x", ("10.0.0.2", 4444))
    k.run(1)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def test_broadcast_with_so_broadcast(net):
    k, a, b = net
    rx = b.socket(2, 2)
    rx.bind(("", 6000))
    tx = a.socket(2, 2)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    tx.sendto(b"all", ("10.0.0.255", 6000))
    tx.sendto(b"everyone", ("<broadcast>", 6000))
    assert rx.recvfrom(10)[0] == b"all"
    assert rx.recvfrom(10)[0] == b"everyone"


def test_timeouts_and_nonblocking(net):
    k, a, b = net
    s = a.socket(2, 2)
    s.bind(("", 1234))
    s.settimeout(2.5)
    t0 = k.now
    with pytest.raises(TimeoutError):
        s.recv(10)
    assert k.now - t0 == pytest.approx(2.5)
    s.setblocking(False)
    assert not s.getblocking()
    with pytest.raises(BlockingIOError):
        s.recvfrom(10)
    assert s.gettimeout() == 0.0


def test_rcvbuf_limits_queue(net):
    k, a, b = net
    rx = b.socket(2, 2)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1000)
    rx.bind(("", 9))
    tx = a.socket(2, 2)
    for _ in range(5):
        tx.sendto(b"x" * 400, ("10.0.0.2", 9))
    k.run(1)
    assert b.udp.stats.fullsock == 3
    assert rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 1000


def test_ephemeral_range_from_sysctl(net):
    k, a, b = net
    a.sysctl("net.inet.ip.portrange.first", 40000)
    a.sysctl("net.inet.ip.portrange.last", 40009)
    socks = [a.socket(2, 2) for _ in range(10)]  # kept alive: each holds its port
    for s in socks:
        s.sendto(b"x", ("10.0.0.2", 9))
    assert {s.getsockname()[1] for s in socks} == set(range(40000, 40010))
    assert _errno(a.socket(2, 2).bind, ("", 0)) == errno.EADDRNOTAVAIL


def test_closed_socket_is_ebadf(net):
    k, a, b = net
    s = a.socket(2, 2)
    s.close()
    assert _errno(s.sendto, b"x", ("10.0.0.2", 9)) == errno.EBADF
    assert not a.udp.ports


def test_unsupported_family_and_type(net):
    k, a, b = net
    assert _errno(a.socket, socket.AF_UNIX, socket.SOCK_DGRAM) == errno.EAFNOSUPPORT


def test_blocking_recv_in_real_time_from_another_thread():
    k = Kernel(clock="real", seed=1)
    a = k.create("a")
    b = k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    rx.settimeout(5)
    k.start()
    try:
        got = []
        t = threading.Thread(target=lambda: got.append(rx.recvfrom(100)))
        t.start()
        a.socket(2, 2).sendto(b"threaded", ("10.0.0.2", 9))
        t.join(5)
        assert got and got[0][0] == b"threaded"
    finally:
        k.stop()


def test_blocking_recv_in_real_time_inline():
    k = Kernel(clock="real", seed=1)
    a = k.create("a")
    b = k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    rx.settimeout(2)
    a.socket(2, 2).sendto(b"inline", ("10.0.0.2", 9))
    assert rx.recv(100) == b"inline"


def test_broadcast_is_heard_by_the_sender_too(net):
    k, a, b = net
    here = a.socket(2, 2)
    here.bind(("", 6001))
    there = b.socket(2, 2)
    there.bind(("", 6001))
    tx = a.socket(2, 2)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    tx.sendto(b"hello all", ("10.0.0.255", 6001))
    assert there.recvfrom(20)[0] == b"hello all"
    data, (src, _) = here.recvfrom(20)  # looped back as on a simplex interface
    assert data == b"hello all" and src == "10.0.0.1"
    assert a.ip.stats.badaddr == 0


def test_hdrincl_raw_socket_sends_our_header_and_rejects_bad_options(net):
    from scapy.all import IP, UDP, raw

    from vimage.socket.socket import IP_HDRINCL

    k, a, b = net
    rx = b.socket(2, 2)
    rx.bind(("", 7777))
    s = a.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IP, IP_HDRINCL, 1)
    pkt = raw(IP(src="10.0.0.1", dst="10.0.0.2", ttl=9, id=0) / UDP(sport=5, dport=7777) / b"hi")
    s.sendto(pkt, ("10.0.0.2", 0))
    assert rx.recvfrom(10) == (b"hi", ("10.0.0.1", 5))
    bad = bytearray(raw(IP(src="10.0.0.1", dst="10.0.0.2", ihl=6) / UDP(dport=7777)))
    bad[20:24] = b"\x44\x00\x00\x00"  # a timestamp option claiming length 0
    assert _errno(s.sendto, bytes(bad), ("10.0.0.2", 0)) == errno.EINVAL


def test_a_forgotten_socket_gives_its_port_back(net):
    k, a, b = net
    s = a.socket(2, 2)
    s.bind(("", 9999))
    raw = a.socket(2, 3, 1)
    assert a.udp.bound(9999) == [s] and list(a.raw.sockets) == [raw]
    del s, raw  # no close(): collected, as a stdlib socket's descriptor would be
    assert a.udp.bound(9999) == [] and 9999 not in a.udp.ports
    assert list(a.raw.sockets) == []
    again = a.socket(2, 2)
    again.bind(("", 9999))  # no EADDRINUSE
    b.socket(2, 2).sendto(b"x", ("10.0.0.1", 9999))
    assert again.recv(10) == b"x"


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
@pytest.mark.parametrize("option", [socket.SO_REUSEADDR, socket.SO_REUSEPORT])
def test_reuse_flags_set_and_read_back(kind, option):
    """Both socket kinds keep SO_REUSEADDR and SO_REUSEPORT as their own flags."""
    s = Kernel(clock="virtual", seed=1).create("v").socket(socket.AF_INET, kind)
    assert s.getsockopt(socket.SOL_SOCKET, option) == 0
    s.setsockopt(socket.SOL_SOCKET, option, 1)
    assert s.getsockopt(socket.SOL_SOCKET, option) == 1
    other = socket.SO_REUSEPORT if option == socket.SO_REUSEADDR else socket.SO_REUSEADDR
    assert s.getsockopt(socket.SOL_SOCKET, other) == 0
    s.setsockopt(socket.SOL_SOCKET, option, b"\x00\x00\x00\x00")
    assert s.getsockopt(socket.SOL_SOCKET, option) == 0
