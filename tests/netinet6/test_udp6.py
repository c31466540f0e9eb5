"""UDP over IPv6 (FreeBSD udp6_usrreq.c) and AF_INET6 datagram sockets."""

from __future__ import annotations

import errno
from socket import AF_INET, AF_INET6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, IPV6_V6ONLY, SOCK_DGRAM

import pytest
from scapy.layers.inet6 import UDP, IPv6  # type: ignore[import-untyped]

from vimage.wire import ipv6 as wip6
from vimage.wire import udp as wudp

from .conftest import Collector, link_local, pair


def test_checksum_matches_scapy() -> None:
    src, dst = wip6.aton("2001:db8::1"), wip6.aton("2001:db8::2")
    for payload in (b"", b"x", b"hello world", bytes(range(256)) * 3):
        ours = wudp.build(1234, 53, payload, src, dst)
        theirs = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2")
                       / UDP(sport=1234, dport=53) / payload)[40:]
        assert ours == theirs
        assert wudp.parse(ours, src, dst).payload.tobytes() == payload


def test_datagram_both_ways_with_stdlib_addresses() -> None:
    p = pair()
    srv = p.b.socket(AF_INET6, SOCK_DGRAM)
    srv.bind(("::", 5000))
    srv.settimeout(1)
    cli = p.a.socket(AF_INET6, SOCK_DGRAM)
    cli.settimeout(1)
    cli.sendto(b"ping", ("2001:db8:1::2", 5000))
    data, peer = srv.recvfrom(100)
    assert data == b"ping"
    assert peer[0] == "2001:db8:1::1" and peer[2:] == (0, 0)
    assert srv.getsockname() == ("::", 5000, 0, 0)
    srv.sendto(b"pong", peer)
    assert cli.recvfrom(100) == (b"pong", ("2001:db8:1::2", 5000, 0, 0))
    assert p.a.udp.stats.opackets == 1 and p.b.udp.stats.delivered == 1


def test_loopback_and_connect() -> None:
    p = pair()
    rx = p.a.socket(AF_INET6, SOCK_DGRAM)
    rx.bind(("::1", 0))
    tx = p.a.socket(AF_INET6, SOCK_DGRAM)
    tx.connect(rx.getsockname())
    assert tx.getpeername() == rx.getsockname()
    assert tx.getsockname()[0] == "::1"
    tx.send(b"x")
    rx.settimeout(1)
    assert rx.recvfrom(10) == (b"x", tx.getsockname())


def test_port_unreachable_is_econnrefused() -> None:
    p = pair()
    s = p.a.socket(AF_INET6, SOCK_DGRAM)
    s.settimeout(1)
    s.connect(("2001:db8:1::2", 9))
    s.send(b"anyone?")
    p.kernel.run(0.1)
    with pytest.raises(ConnectionRefusedError):
        s.recv(10)
    assert p.b.udp.stats.noport == 1
    assert p.b.icmp6.stats.outhist[1] == 1  # destination unreachable, code 4


def test_zero_checksum_is_dropped() -> None:
    p = pair()
    s = p.b.socket(AF_INET6, SOCK_DGRAM)
    s.bind(("::", 7))
    a1, a2 = wip6.aton("2001:db8:1::1"), wip6.aton("2001:db8:1::2")
    dgram = bytearray(wudp.build(1, 7, b"z", a1, a2))
    dgram[6:8] = b"\0\0"  # RFC 8200 8.1: mandatory over IPv6
    p.b.udp.input6(p.eb, wip6.build_header(a1, a2, 17, len(dgram), 64, 0) + bytes(dgram), 40,
                   a1, a2)
    assert p.b.udp.stats.nosum == 1 and p.b.udp.stats.delivered == 0


def test_v6only_default_and_dual_stack() -> None:
    p = pair()
    p.ea.add_addr("10.0.0.1/24")
    p.eb.add_addr("10.0.0.2/24")
    assert p.b.sysctl("net.inet6.ip6.v6only") == 1
    only = p.b.socket(AF_INET6, SOCK_DGRAM)
    assert only.getsockopt(IPPROTO_IPV6, IPV6_V6ONLY) == 1
    only.bind(("::", 53))
    v4 = p.b.socket(AF_INET, SOCK_DGRAM)
    v4.bind(("0.0.0.0", 53))  # v6only: the IPv4 port is free
    v4.close()
    only.close()
    dual = p.b.socket(AF_INET6, SOCK_DGRAM)
    dual.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0)
    dual.bind(("::", 53))
    clash = p.b.socket(AF_INET, SOCK_DGRAM)
    with pytest.raises(OSError) as err:
        clash.bind(("0.0.0.0", 53))
    assert err.value.errno == errno.EADDRINUSE
    dual.settimeout(1)
    c4 = p.a.socket(AF_INET, SOCK_DGRAM)
    c4.settimeout(1)
    c4.sendto(b"q", ("10.0.0.2", 53))
    data, src = dual.recvfrom(10)
    assert data == b"q" and src[0] == "::ffff:10.0.0.1"
    dual.sendto(b"r", src)  # a mapped destination goes out over IPv4
    assert c4.recvfrom(10) == (b"r", ("10.0.0.2", 53))


def test_mapped_destination_refused_on_v6only() -> None:
    p = pair()
    s = p.a.socket(AF_INET6, SOCK_DGRAM)
    with pytest.raises(OSError) as err:
        s.sendto(b"x", ("::ffff:10.0.0.2", 53))
    assert err.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as err:
        s.bind(("::ffff:127.0.0.1", 0))
    assert err.value.errno == errno.EINVAL


def test_scope_ids() -> None:
    p = pair()
    ll_b = wip6.ntoa(link_local(p.eb))
    rx = p.b.socket(AF_INET6, SOCK_DGRAM)
    rx.bind((f"{ll_b}%{p.eb.name}", 7000))
    assert rx.getsockname() == (ll_b, 7000, 0, p.eb.index)
    rx.settimeout(1)
    tx = p.a.socket(AF_INET6, SOCK_DGRAM)
    with pytest.raises(OSError) as err:  # a link-local address needs its zone
        tx.sendto(b"x", (ll_b, 7000))
    assert err.value.errno == errno.EINVAL
    tx.sendto(b"by name", (f"{ll_b}%{p.ea.name}", 7000))
    tx.sendto(b"by index", (ll_b, 7000, 0, p.ea.index))
    ll_a = wip6.ntoa(link_local(p.ea))
    assert rx.recvfrom(20) == (b"by name", (ll_a, tx.getsockname()[1], 0, p.eb.index))
    assert rx.recvfrom(20)[0] == b"by index"
    with pytest.raises(OSError) as err:
        p.b.socket(AF_INET6, SOCK_DGRAM).bind((ll_b, 0))
    assert err.value.errno == errno.EINVAL


def test_hop_limits() -> None:
    p = pair()
    s = p.a.socket(AF_INET6, SOCK_DGRAM)
    s.sendto(b"x", ("2001:db8:1::2", 9))  # resolves the neighbour
    p.kernel.run(0.1)
    wire = Collector()
    p.ea.peer = wire
    assert s.getsockopt(IPPROTO_IPV6, IPV6_UNICAST_HOPS) == 64
    s.setsockopt(IPPROTO_IPV6, IPV6_UNICAST_HOPS, 7)
    s.sendto(b"x", ("2001:db8:1::2", 9))
    p.kernel.run(0.1)
    udp = [pkt for pkt in wire.ipv6() if pkt[6] == 17]
    assert udp and udp[0][7] == 7
    with pytest.raises(OSError):
        s.setsockopt(IPPROTO_IPV6, IPV6_UNICAST_HOPS, 256)


def test_destroy_leaves_nothing() -> None:
    p = pair()
    s = p.b.socket(AF_INET6, SOCK_DGRAM)
    s.bind(("::", 5))
    p.kernel.destroy(p.b)
    assert s.closed
    assert "udp6" not in vars(p.b)


def test_recvpktinfo_gives_the_destination_and_interface() -> None:
    import socket as std
    import struct

    p = pair()
    rx = p.b.socket(AF_INET6, SOCK_DGRAM)
    rx.bind(("::", 5353))
    rx.setsockopt(IPPROTO_IPV6, std.IPV6_RECVPKTINFO, 1)
    rx.settimeout(1)
    tx = p.a.socket(AF_INET6, SOCK_DGRAM)
    tx.sendto(b"where to?", ("2001:db8:1::2", 5353))
    data, anc, flags, addr = rx.recvmsg(100, std.CMSG_SPACE(20))
    assert data == b"where to?" and flags == 0 and addr[0] == "2001:db8:1::1"
    [(level, kind, info)] = anc
    assert (level, kind) == (std.IPPROTO_IPV6, std.IPV6_PKTINFO)
    assert info == struct.pack("@16sI", std.inet_pton(AF_INET6, "2001:db8:1::2"), p.eb.index)


def test_a_crash_resets_ipv6_datagram_and_raw_sockets() -> None:
    from vimage.fault import faults

    p = pair()
    u = p.b.socket(AF_INET6, SOCK_DGRAM)
    u.bind(("::", 5353))
    raw = p.b.socket(AF_INET6, 3, 58)
    crash = faults(p.kernel).crash(p.b)
    assert crash.sockets == 2
    assert p.b.udp.sockets6() == [] and not p.b.raw.sockets6
    with pytest.raises(ConnectionResetError):
        u.recv(10)
    del raw
