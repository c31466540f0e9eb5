"""TCP over IPv6: every TCP feature as over IPv4, dual-stack listeners, ICMPv6 errors."""

from __future__ import annotations

import contextlib
import errno
from socket import AF_INET, AF_INET6, IPPROTO_IPV6, IPV6_V6ONLY, SOCK_STREAM

import pytest
from scapy.layers.inet6 import TCP, IPv6  # type: ignore[import-untyped]

from vimage.kernel import Kernel
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6
from vimage.wire import tcp as wtcp

from .conftest import link_local, pair, routed


def _connected(p, port: int = 80, dst: str = "2001:db8:1::2"):
    srv = p.b.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", port))
    srv.listen()
    cli = p.a.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect((dst, port))
    conn, peer = srv.accept()
    conn.settimeout(5)
    return srv, cli, conn, peer


def _transfer(cli, conn, size: int) -> bytes:
    data = bytes(range(256)) * (size // 256)
    cli.setblocking(False)
    got = bytearray()
    sent = 0
    while len(got) < len(data):
        if sent < len(data):
            with contextlib.suppress(BlockingIOError):
                sent += cli.send(data[sent:sent + 65536])
        got += conn.recv(1 << 20)
    assert bytes(got) == data
    return bytes(got)


def test_checksum_matches_scapy() -> None:
    src, dst = wip6.aton("2001:db8::1"), wip6.aton("2001:db8::2")
    ours = wtcp.build(1234, 80, 1000, 0, wtcp.SYN, 65535, b"", src=src, dst=dst, mss=1440)
    theirs = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(
        sport=1234, dport=80, seq=1000, flags="S", window=65535, options=[("MSS", 1440)]))[40:]
    assert ours == theirs
    ts = wtcp.build_ts(1, 2, 3, 4, wtcp.ACK, 100, b"data!", src, dst, 77, 88)
    assert wtcp.parse(ts, src, dst).payload.tobytes() == b"data!"
    theirs = IPv6(bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", nh=6) / ts))
    assert theirs[TCP].chksum == TCP(bytes(IPv6(src="2001:db8::1", dst="2001:db8::2")
                                           / TCP(ts))[40:]).chksum


def test_handshake_names_and_mss_from_the_ipv6_mtu() -> None:
    p = pair()
    srv, cli, conn, peer = _connected(p)
    assert peer[0] == "2001:db8:1::1" and peer[2:] == (0, 0)
    assert cli.getpeername() == ("2001:db8:1::2", 80, 0, 0)
    assert conn.getsockname() == ("2001:db8:1::2", 80, 0, 0)
    assert cli.tcb.v6 and conn.tcb.v6
    assert cli.tcb.peer_mss == 1440  # 1500 - 40 - 20
    assert cli.tcb.ts_ok and cli.tcb.sack_ok and cli.tcb.ws_ok
    assert cli.tcb.mss == 1440 - 12
    assert _transfer(cli, conn, 200_000)
    assert p.a.tcp.stats.sndpack > 100


def test_sack_recovery_over_a_lossy_link() -> None:
    p = pair()
    srv, cli, conn, _ = _connected(p)
    p.ea.impair(loss="3%", delay="5ms")
    _transfer(cli, conn, 600_000)
    st = p.a.tcp.stats
    assert cli.tcb.sack_ok
    assert st.sndrexmitpack > 0 and st.sack_recovery > 0


def test_refused_connection_and_reset() -> None:
    p = pair()
    cli = p.a.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        cli.connect(("2001:db8:1::2", 81))
    assert p.b.tcp.stats.rcvafterclose == 1


def test_mss_bounded_by_the_peers_ipv6_mtu() -> None:
    net = routed()
    net.r2_if.mtu = net.h2_if.mtu = 1280
    srv = net.h2.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 80))
    srv.listen()
    cli = net.h1.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect(("2001:db8:2::2", 80))
    conn, _ = srv.accept()
    assert cli.tcb.peer_mss == 1280 - 60
    assert cli.tcb.mss == 1280 - 60 - 12  # less the timestamp option
    assert conn.tcb.peer_mss == 1440


def test_pmtu_from_packet_too_big() -> None:
    net = routed()
    net.r2_if.mtu = 1280  # the router's far link: packets above 1280 get packet too big
    srv = net.h2.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 80))
    srv.listen()
    cli = net.h1.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect(("2001:db8:2::2", 80))
    conn, _ = srv.accept()
    conn.settimeout(5)
    assert cli.tcb.mss == 1440 - 12  # both ends on 1500-byte links
    _transfer(cli, conn, 100_000)
    assert net.h1.icmp6.stats.pmtuchg >= 1
    assert net.h1.tcp.stats.pmtud_updates >= 1
    assert cli.tcb.mss == 1280 - 60 - 12
    assert net.r.ip6.stats.cantforward >= 1


def test_syncookies_over_ipv6() -> None:
    p = pair()
    p.b.tcp.syncache_cachelimit = 0  # no room in the syncache: every SYN gets a cookie
    srv = p.b.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::", 80))
    srv.listen()
    cli = p.a.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect(("2001:db8:1::2", 80))
    assert p.b.tcp.stats.cookiessent == 1 and p.b.tcp.syncache_count == 0
    assert cli.tcb.peer_mss == 1440  # the cookie's SYN-ACK offers the IPv6 MSS
    cli.send(b"hello")  # its ACK brings the cookie back
    conn, peer = srv.accept()
    conn.settimeout(5)
    assert conn.recv(10) == b"hello"
    assert p.b.tcp.stats.cookiesrcvd == 1
    assert conn.tcb.v6 and peer[0] == "2001:db8:1::1"


def test_dual_stack_listener_accepts_an_ipv4_client() -> None:
    p = pair()
    p.ea.add_addr("10.0.0.1/24")
    p.eb.add_addr("10.0.0.2/24")
    srv = p.b.socket(AF_INET6, SOCK_STREAM)
    srv.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0)
    srv.bind(("::", 80))
    srv.listen()
    c4 = p.a.socket(AF_INET, SOCK_STREAM)
    c4.settimeout(5)
    c4.connect(("10.0.0.2", 80))
    conn, peer = srv.accept()
    assert peer[0] == "::ffff:10.0.0.1" and peer[1] == c4.getsockname()[1]
    assert conn.getsockname() == ("::ffff:10.0.0.2", 80, 0, 0)
    assert not conn.tcb.v6  # an IPv4 connection underneath
    c4.sendall(b"v4 in")
    conn.settimeout(5)
    assert conn.recv(10) == b"v4 in"
    c6 = p.a.socket(AF_INET6, SOCK_STREAM)
    c6.settimeout(5)
    c6.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0)
    c6.connect(("::ffff:10.0.0.2", 80))  # a mapped destination: IPv4 on the wire
    conn2, peer2 = srv.accept()
    assert c6.getpeername() == ("::ffff:10.0.0.2", 80, 0, 0)
    assert peer2 == c6.getsockname()


def test_v6only_listener_leaves_ipv4_alone() -> None:
    p = pair()
    p.ea.add_addr("10.0.0.1/24")
    p.eb.add_addr("10.0.0.2/24")
    s6 = p.b.socket(AF_INET6, SOCK_STREAM)
    s6.bind(("::", 80))
    s6.listen()
    assert s6.getsockopt(IPPROTO_IPV6, IPV6_V6ONLY) == 1
    c4 = p.a.socket(AF_INET, SOCK_STREAM)
    c4.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        c4.connect(("10.0.0.2", 80))
    s4 = p.b.socket(AF_INET, SOCK_STREAM)
    s4.bind(("", 80))  # the same port for IPv4: no clash with a v6only socket
    s4.listen()
    dual = p.b.socket(AF_INET6, SOCK_STREAM)
    dual.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0)
    with pytest.raises(OSError) as err:
        dual.bind(("::", 80))
    assert err.value.errno == errno.EADDRINUSE


def test_link_local_connection_with_scope_ids() -> None:
    p = pair()
    ll_b = wip6.ntoa(link_local(p.eb))
    srv = p.b.socket(AF_INET6, SOCK_STREAM)
    srv.bind((ll_b, 90, 0, p.eb.index))
    srv.listen()
    cli = p.a.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect((f"{ll_b}%{p.ea.name}", 90))
    conn, peer = srv.accept()
    assert peer == (wip6.ntoa(link_local(p.ea)), cli.getsockname()[1], 0, p.eb.index)
    assert cli.getpeername() == (ll_b, 90, 0, p.ea.index)
    cli.sendall(b"ll")
    conn.settimeout(5)
    assert conn.recv(5) == b"ll"


def test_loopback_and_destroy_leaves_nothing() -> None:
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    srv = v.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::1", 0))
    srv.listen()
    cli = v.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect(srv.getsockname())
    conn, _ = srv.accept()
    assert conn.getsockname()[0] == "::1"
    k.destroy(v)
    assert cli.closed and conn.closed and not v.tcp.tcbs()
    assert "tcp6" not in vars(v) and "udp6" not in vars(v) and "raw6" not in vars(v)


def test_unreachable_port_over_icmpv6_error() -> None:
    """An ICMPv6 port unreachable quoting our SYN refuses the connection (ctlinput)."""
    p = pair()
    cli = p.a.socket(AF_INET6, SOCK_STREAM)
    cli.setblocking(False)
    with pytest.raises(BlockingIOError):
        cli.connect(("2001:db8:1::2", 4444))
    tcb = cli.tcb
    p.b.tcp.blackhole = 1  # b stays silent; we forge its error instead
    syn = wtcp.build(tcb.lport, 4444, tcb.iss, 0, wtcp.SYN, 65535, b"", src=tcb.laddr,
                     dst=tcb.faddr)
    quoted = wip6.build_header(tcb.laddr, tcb.faddr, 6, len(syn), 64, 0) + syn
    src = wip6.aton("2001:db8:1::2")
    err = w6.build(w6.DST_UNREACH, w6.UNREACH_NOPORT, 0, quoted, src, tcb.laddr)
    with p.kernel.sched.cond:
        p.a.icmp6.input(p.ea, wip6.build_header(src, tcb.laddr, 58, len(err), 64, 0) + err,
                        40, src, tcb.laddr)
    assert tcb.state == 0 and tcb.so_error == errno.ECONNREFUSED


def test_netstat_rows_tcp6_tcp46_udp6() -> None:
    p = pair()
    dual = p.b.socket(AF_INET6, SOCK_STREAM)
    dual.setsockopt(IPPROTO_IPV6, IPV6_V6ONLY, 0)
    dual.bind(("::", 80))
    dual.listen()
    only = p.b.socket(AF_INET6, SOCK_STREAM)
    only.bind(("::", 81))
    only.listen()
    cli = p.a.socket(AF_INET6, SOCK_STREAM)
    cli.settimeout(5)
    cli.connect(("2001:db8:1::2", 80))
    conn, _ = dual.accept()
    u = p.b.socket(AF_INET6, 2)
    u.bind(("::", 53))
    rows = [line.split() for line in p.b.cmd("netstat -an").output.splitlines()[2:]]
    assert ["tcp46", "0", "0", "*.80", "*.*", "LISTEN"] in rows
    assert ["tcp6", "0", "0", "*.81", "*.*", "LISTEN"] in rows
    port = cli.getsockname()[1]
    assert ["tcp6", "0", "0", "2001:db8:1::2.80", f"2001:db8:1::1.{port}",
            "ESTABLISHED"] in rows
    assert ["udp6", "0", "0", "*.53", "*.*"] in rows
    inet = p.b.cmd("netstat -an -f inet").output.splitlines()[2:]
    assert [line.split()[0] for line in inet] == ["tcp46"]
    conn.close()


def test_destroy_with_ipv6_connections_leaves_no_timer_and_releases_the_vnet() -> None:
    import gc
    import weakref

    p = pair()
    srv, cli, conn, _ = _connected(p)
    cli.send(b"in flight")
    u = p.a.socket(AF_INET6, 2)
    u.sendto(b"x", ("2001:db8:1::2", 9))
    r = p.a.socket(AF_INET6, 3, 58)
    assert p.kernel.sched.pending_timers(p.a) > 0
    ref = weakref.ref(p.a)
    a = p.a
    p.kernel.destroy(a)
    assert p.kernel.sched.pending_timers(a) == 0
    assert cli.closed and u.closed and r.closed
    assert not a.tcp.tcbs() and not a.udp.ports6 and not a.raw.sockets6
    del a, p, cli, u, r, srv, conn
    gc.collect()
    assert ref() is None, "something still holds the destroyed vnet"
