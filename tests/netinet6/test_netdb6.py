"""The resolver with IPv6: hosts table names, getaddrinfo families and glibc's order."""

from __future__ import annotations

import socket

import pytest

from vimage import netdb
from vimage.kernel import Kernel

from .conftest import pair


def test_hosts_table_ipv6_names() -> None:
    p = pair()
    p.a.cmd("hosts add 2001:db8:1::2 b6 both")
    p.a.cmd("hosts add 10.0.0.2 both")
    assert p.a.cmd("hosts lookup both").output.split() == ["10.0.0.2", "2001:db8:1::2"]
    assert "2001:db8:1::2\tb6 both" in p.a.cmd("hosts").output
    infos = netdb.getaddrinfo(p.a, "b6", 80, type=socket.SOCK_STREAM)
    assert infos == [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8:1::2", 80, 0, 0))]
    with pytest.raises(socket.gaierror):
        netdb.getaddrinfo(p.a, "b6", 80, socket.AF_INET)
    assert netdb.getnameinfo(p.a, ("2001:db8:1::2", 80, 0, 0)) == ("b6", "http")


def test_unspec_order_follows_rfc6724_as_glibc() -> None:
    p = pair()
    p.a.cmd("hosts add 2001:db8:1::2 both")
    p.a.cmd("hosts add 10.0.0.2 both")
    fams = [i[0] for i in netdb.getaddrinfo(p.a, "both", 80, type=socket.SOCK_STREAM)]
    assert fams == [socket.AF_INET6, socket.AF_INET]  # a global IPv6 source: IPv6 first
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")  # no IPv6 route to 2001:db8:1::2: IPv4 first (rule 1)
    v.cmd("hosts add 2001:db8:1::2 both")
    v.cmd("hosts add 10.0.0.2 both")
    fams = [i[0] for i in netdb.getaddrinfo(v, "both", 80, type=socket.SOCK_STREAM)]
    assert fams == [socket.AF_INET, socket.AF_INET6]
    passive = netdb.getaddrinfo(v, None, 80, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    assert [i[4] for i in passive] == [("0.0.0.0", 80), ("::", 80, 0, 0)]  # as glibc
    active = netdb.getaddrinfo(v, None, 80, type=socket.SOCK_STREAM)
    assert [i[4] for i in active] == [("::1", 80, 0, 0), ("127.0.0.1", 80)]


def test_numeric_with_zone() -> None:
    p = pair()
    infos = netdb.getaddrinfo(p.a, f"fe80::1%{p.ea.name}", 22, socket.AF_INET6,
                              socket.SOCK_STREAM)
    assert infos[0][4] == ("fe80::1", 22, 0, p.ea.index)
    assert netdb.getaddrinfo(p.a, "::1", 0, type=socket.SOCK_DGRAM)[0][4] == ("::1", 0, 0, 0)
    with pytest.raises(socket.gaierror):
        netdb.getaddrinfo(p.a, "10.0.0.1", 0, socket.AF_INET6)


def test_activate_patches_af_inet6() -> None:
    p = pair()
    srv = p.b.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.bind(("::", 8080))
    srv.listen()
    with p.a.activate():
        conn = socket.create_connection(("2001:db8:1::2", 8080), timeout=5)
        assert conn.family == socket.AF_INET6
        assert conn.getpeername() == ("2001:db8:1::2", 8080, 0, 0)
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        assert s.vnet is p.a
        s.close()
    peer, _ = srv.accept()
    conn.sendall(b"over the stdlib")
    peer.settimeout(5)
    assert peer.recv(100) == b"over the stdlib"
