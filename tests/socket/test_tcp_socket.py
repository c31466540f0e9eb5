"""TCP sockets between two vnets: the stdlib `socket` module's semantics, in virtual time.

Blocking calls drive the kernel loop themselves, so a test can connect, accept, send
and receive from one thread as long as each blocking call can complete on its own.
"""

from __future__ import annotations

import errno
import gc
import socket
import struct

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import connect
from vimage.wire import tcp as wtcp

A, B = "10.0.0.1", "10.0.0.2"
MS = 1_000_000
S = 1_000_000_000


class Net:
    def __init__(self, seed: int = 7) -> None:
        self.k = Kernel(clock="virtual", seed=seed)
        self.a = self.k.create("a")
        self.b = self.k.create("b")
        self.ifa, self.ifb = connect(self.a, f"{A}/24", self.b, f"{B}/24")
        self.k.run(0)

    def server(self, port: int = 8080, backlog: int = 16, **opts: int):
        srv = self.b.socket(socket.AF_INET, socket.SOCK_STREAM)
        for name, value in opts.items():
            srv.setsockopt(socket.SOL_SOCKET, getattr(socket, name), value)
        srv.bind(("", port))
        srv.listen(backlog)
        return srv

    def client(self):
        return self.a.socket(socket.AF_INET, socket.SOCK_STREAM)

    def pair(self, port: int = 8080):
        srv = self.server(port)
        cli = self.client()
        cli.connect((B, port))
        conn, _ = srv.accept()
        return srv, cli, conn


@pytest.fixture
def net() -> Net:
    return Net()


def tcp_segments(cap, sport: int | None = None) -> list[tuple[int, wtcp.TcpRepr]]:
    """(time, parsed TCP segment) of the captured frames, optionally from one port."""
    out = []
    for t, frame in cap.packets:
        if frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        hlen = (frame[14] & 0x0F) * 4
        seg = wtcp.parse(frame[14 + hlen:])
        if sport is None or seg.sport == sport:
            out.append((t, seg))
    return out


def test_blocking_connect_accept_and_echo(net):
    srv = net.server()
    cli = net.client()
    cli.connect((B, 8080))
    conn, addr = srv.accept()
    assert addr == cli.getsockname()
    assert cli.getpeername() == (B, 8080)
    assert conn.getsockname() == (B, 8080)
    assert conn.getpeername() == (A, addr[1])
    host, port = cli.getsockname()
    assert host == A and 10000 <= port <= 65535
    assert srv.getsockname() == ("0.0.0.0", 8080)
    cli.sendall(b"hello over tcp")
    assert conn.recv(100) == b"hello over tcp"
    conn.sendall(b"and back")
    assert cli.recv(100) == b"and back"
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
    with pytest.raises(OSError) as exc:
        srv.getpeername()
    assert exc.value.errno == errno.ENOTCONN


def test_connect_timeout(net):
    net.b.sysctl("net.inet.tcp.blackhole", 1)  # the closed port stays silent
    cli = net.client()
    cli.settimeout(2.0)
    t0 = net.k.now_ns()
    with pytest.raises(TimeoutError):
        cli.connect((B, 9))
    assert net.k.now_ns() - t0 == 2 * S
    assert cli.gettimeout() == 2.0


def test_nonblocking_connect_einprogress_then_so_error_zero(net):
    srv = net.server()
    cli = net.client()
    cli.setblocking(False)
    assert not cli.getblocking()
    with pytest.raises(BlockingIOError) as exc:
        cli.connect((B, 8080))
    assert exc.value.errno == errno.EINPROGRESS
    with pytest.raises(BlockingIOError) as exc:
        cli.connect((B, 8080))
    assert exc.value.errno == errno.EALREADY
    assert cli.connect_ex((B, 8080)) == errno.EALREADY
    net.k.run(0.01)
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    with pytest.raises(OSError) as exc:
        cli.connect((B, 8080))
    assert exc.value.errno == errno.EISCONN
    assert cli.getpeername() == (B, 8080)
    srv.setblocking(False)
    conn, _ = srv.accept()
    cli.send(b"x")
    assert conn.recv(1) == b"x"


def test_nonblocking_connect_refused_reports_in_so_error(net):
    cli = net.client()
    cli.setblocking(False)
    assert cli.connect_ex((B, 9)) == errno.EINPROGRESS
    net.k.run(0.01)
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # read once


def test_connect_ex_to_a_closed_port(net):
    cli = net.client()
    assert cli.connect_ex((B, 9)) == errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError):
        net.client().connect((B, 9))


def test_recv_returns_empty_at_eof(net):
    _, cli, conn = net.pair()
    cli.sendall(b"last words")
    cli.shutdown(socket.SHUT_WR)
    assert conn.recv(100) == b"last words"
    assert conn.recv(100) == b""
    assert conn.recv(100) == b""
    conn.sendall(b"reply after EOF")  # half-closed: the other direction still works
    assert cli.recv(100) == b"reply after EOF"
    conn.close()
    assert cli.recv(100) == b""


def test_send_after_shutdown_wr_is_epipe(net):
    _, cli, _conn = net.pair()
    cli.shutdown(socket.SHUT_WR)
    with pytest.raises(BrokenPipeError) as exc:
        cli.send(b"x")
    assert exc.value.errno == errno.EPIPE


def test_linger_zero_close_sends_rst_and_peer_gets_econnreset(net):
    _, cli, conn = net.pair()
    cap = open_capture(net.ifa)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == struct.pack("ii", 1, 0)
    cli.close()
    net.k.run(0.01)
    flags = [seg.flags for _, seg in tcp_segments(cap)]
    assert flags == [wtcp.RST | wtcp.ACK]  # no FIN: an abort
    with pytest.raises(ConnectionResetError) as exc:
        conn.recv(10)
    assert exc.value.errno == errno.ECONNRESET
    # afterwards the socket is dead: EOF for reads, EPIPE for writes
    assert conn.recv(10) == b""
    with pytest.raises(BrokenPipeError):
        conn.send(b"x")


def test_send_after_peer_reset(net):
    _, cli, conn = net.pair()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    net.k.run(0.01)
    with pytest.raises(OSError) as exc:
        cli.send(b"anyone?")
    assert exc.value.errno in (errno.ECONNRESET, errno.EPIPE)


def test_send_to_a_peer_that_closed_gets_reset(net):
    _, cli, conn = net.pair()
    conn.close()  # FIN; our later data finds no socket there: RST
    net.k.run(0.01)
    assert cli.recv(10) == b""
    cli.send(b"too late")
    net.k.run(0.01)
    with pytest.raises(OSError) as exc:
        cli.send(b"again")
    assert exc.value.errno in (errno.ECONNRESET, errno.EPIPE)


def test_close_with_unread_data_sends_rst(net):
    _, cli, conn = net.pair()
    cli.sendall(b"never read")
    net.k.run(0.1)
    cap = open_capture(net.ifb)
    conn.close()
    net.k.run(0.01)
    segs = [seg for _, seg in tcp_segments(cap, sport=8080)]
    assert [s.flags & (wtcp.RST | wtcp.FIN) for s in segs] == [wtcp.RST]
    with pytest.raises(ConnectionResetError):
        cli.recv(10)


def test_eaddrinuse(net):
    srv = net.server(8080)
    other = net.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError) as exc:
        other.bind(("", 8080))
    assert exc.value.errno == errno.EADDRINUSE
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    other.bind(("", 8080))
    with pytest.raises(OSError) as exc:
        other.listen(5)  # two listeners on one address and port: never
    assert exc.value.errno == errno.EADDRINUSE
    srv.close()
    third = net.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    third.bind(("", 8080))  # free again once the listener is closed
    third.listen(1)


def test_tcp_nodelay_disables_nagle(net):
    net.ifa.impair(delay=0.05)
    net.ifb.impair(delay=0.05)
    results = {}
    for nodelay in (False, True):
        srv, cli, conn = net.pair(port=9000 + nodelay)
        cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        assert cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == int(nodelay)
        cap = open_capture(net.ifa)
        port = cli.getsockname()[1]
        t0 = net.k.now_ns()
        cli.send(b"a" * 100)
        cli.send(b"b" * 100)
        assert conn.recv(100) == b"a" * 100
        assert conn.recv(100) == b"b" * 100
        results[nodelay] = [(t - t0, len(seg.payload)) for t, seg in tcp_segments(cap, port)
                            if seg.payload]
        cap.close()
    # Nagle: the second small segment waits for the ACK of the first (a delayed ACK,
    # 40 ms, plus a 100 ms round trip); without it both leave at once
    assert results[True] == [(0, 100), (0, 100)]
    assert results[False] == [(0, 100), (140 * MS, 100)]


def test_sendall_with_a_small_send_buffer_blocks_and_completes(net):
    srv = net.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 3 * 1024 * 1024)
    srv.bind(("", 8081))
    srv.listen(1)
    cli = net.client()
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 8192
    net.ifa.impair(bandwidth="100Mbit/s", delay="1ms")
    cli.connect((B, 8081))
    conn, _ = srv.accept()
    data = bytes(range(256)) * (2 * 1024 * 1024 // 256)
    t0 = net.k.now_ns()
    cli.sendall(data)
    elapsed = net.k.now_ns() - t0
    assert elapsed > 100 * MS  # it blocked: 2 MiB do not fit an 8 KiB buffer at once
    assert len(cli.tcb.snd_buf) <= 8192
    got = bytearray()
    while len(got) < len(data):
        chunk = conn.recv(1 << 20)
        assert chunk
        got += chunk
    assert bytes(got) == data
    assert net.k.sched.errors == 0


def test_recv_into_and_msg_peek(net):
    _, cli, conn = net.pair()
    cli.sendall(b"0123456789")
    net.k.run(0.01)
    assert conn.recv(4, socket.MSG_PEEK) == b"0123"
    assert conn.recv(4, socket.MSG_PEEK) == b"0123"  # still there
    buf = bytearray(6)
    assert conn.recv_into(buf) == 6 and bytes(buf) == b"012345"
    buf = bytearray(10)
    assert conn.recv_into(buf, 2) == 2 and bytes(buf[:2]) == b"67"
    assert conn.recv(100) == b"89"
    conn.setblocking(False)
    with pytest.raises(BlockingIOError) as exc:
        conn.recv(1)
    assert exc.value.errno == errno.EAGAIN
    conn.setblocking(True)
    with pytest.raises(BlockingIOError):
        conn.recv(1, socket.MSG_DONTWAIT)


def test_recv_timeout(net):
    _, _cli, conn = net.pair()
    conn.settimeout(0.5)
    t0 = net.k.now_ns()
    with pytest.raises(TimeoutError):
        conn.recv(10)
    assert net.k.now_ns() - t0 == 500 * MS


def test_listen_backlog_without_syncookies(net):
    net.b.sysctl("net.inet.tcp.syncookies", 0)
    srv = net.server(backlog=2)
    clients = [net.client() for _ in range(4)]
    for c in clients:
        c.setblocking(False)
        assert c.connect_ex((B, 8080)) == errno.EINPROGRESS
    net.k.run(0.5)
    states = [c.tcb.state_name for c in clients]
    assert states.count("ESTABLISHED") == 2 and states.count("SYN_SENT") == 2
    assert net.b.tcp.stats.listendrop == 2
    net.k.run(5)  # retransmitted SYNs find the queue still full
    assert [c.tcb.state_name for c in clients].count("ESTABLISHED") == 2
    srv.setblocking(False)
    first, _ = srv.accept()  # room for one more
    net.k.run(10)
    assert [c.tcb.state_name for c in clients].count("ESTABLISHED") == 3
    second, _ = srv.accept()
    third, _ = srv.accept()
    net.k.run(20)
    assert all(c.tcb.state_name == "ESTABLISHED" for c in clients)
    fourth, _ = srv.accept()
    ports = {c.getsockname()[1] for c in clients}
    assert {s.getpeername()[1] for s in (first, second, third, fourth)} == ports


def test_listen_backlog_with_syncookies(net):
    # a cookie ACK that finds the listen queue full is dropped, not reset: the client's
    # retransmission finds room later (FreeBSD with syncache.rst_on_sock_fail=0)
    net.b.sysctl("net.inet.tcp.syncache.rst_on_sock_fail", 0)
    srv = net.server(backlog=1)
    clients = [net.client() for _ in range(3)]
    for c in clients:
        c.setblocking(False)
        c.connect_ex((B, 8080))
    net.k.run(0.5)
    assert net.b.tcp.stats.cookiessent >= 1
    srv.setblocking(False)
    for c in clients:  # each one speaks first: a retransmission carries the cookie ACK
        c.send(c.getsockname()[1].to_bytes(2, "big"))
    got = set()
    for _ in range(60):
        net.k.run(1)
        try:
            conn, _ = srv.accept()
        except BlockingIOError:
            continue
        conn.setblocking(True)
        got.add(int.from_bytes(conn.recv(2), "big"))
        if len(got) == 3:
            break
    assert got == {c.getsockname()[1] for c in clients}


def test_many_concurrent_connections(net):
    srv = net.server(backlog=64)
    clients = []
    for _ in range(50):
        c = net.client()
        c.setblocking(False)
        assert c.connect_ex((B, 8080)) == errno.EINPROGRESS
        clients.append(c)
    net.k.run(0.1)
    ports = [c.getsockname()[1] for c in clients]
    assert len(set(ports)) == 50
    conns = [srv.accept()[0] for _ in range(50)]
    assert {c.getpeername()[1] for c in conns} == set(ports)
    for c in clients:
        c.setblocking(True)
        c.sendall(c.getsockname()[1].to_bytes(2, "big"))
    for conn in conns:
        assert int.from_bytes(conn.recv(2), "big") == conn.getpeername()[1]
    assert len(net.a.tcp.conns) == 50 and len(net.b.tcp.conns) == 50
    for c in clients:
        c.close()
    for conn in conns:
        assert conn.recv(1) == b""
        conn.close()
    net.k.run(0.1)
    states = {t.state_name for t in net.a.tcp.conns.values()}
    assert states == {"TIME_WAIT"}
    assert net.b.tcp.conns == {}


def test_destroying_a_vnet_with_open_connections(net):
    net.ifb.impair(delay="10ms")
    net.ifa.impair(delay="10ms")
    _, cli, conn = net.pair()
    cli2 = net.client()
    cli2.connect((B, 8080))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.sendall(b"pending" * 1000)  # unacknowledged data and a retransmission timer in b
    assert net.k.sched.pending_timers(net.b) >= 2  # retransmission and keepalive at least
    net.k.destroy(net.b)
    assert net.k.sched.pending_timers(net.b) == 0
    assert conn.closed
    # the survivor notices: its data goes nowhere and it gives up
    cli.settimeout(None)
    cli.sendall(b"hello?")
    with pytest.raises(OSError) as exc:
        while cli.recv(65536):
            pass
    assert exc.value.errno in (errno.ETIMEDOUT, errno.ECONNRESET)
    assert net.k.sched.errors == 0


def test_a_forgotten_connected_socket_is_closed_by_the_gc(net):
    srv = net.server()
    cli = net.client()
    cli.connect((B, 8080))
    conn, _ = srv.accept()
    port = cli.getsockname()[1]
    cap = open_capture(net.ifa)
    del cli
    gc.collect()
    net.k.run(0.01)
    flags = [seg.flags for _, seg in tcp_segments(cap, port)]
    assert flags and flags[0] & wtcp.FIN
    assert conn.recv(10) == b""


def test_a_forgotten_listener_frees_its_port(net):
    srv = net.server(8090)
    del srv
    gc.collect()
    assert 8090 not in net.b.tcp.listeners
    assert net.client().connect_ex((B, 8090)) == errno.ECONNREFUSED


def test_so_keepalive_and_buffer_options(net):
    _, cli, _conn = net.pair()
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    with pytest.raises(OSError) as exc:
        cli.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 0)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        cli.getsockopt(socket.IPPROTO_TCP, 9999)
    assert exc.value.errno == errno.ENOPROTOOPT


def test_keepalive_detects_a_vanished_peer(net):
    for v in (net.a, net.b):
        v.sysctl("net.inet.tcp.keepidle", 2000)
        v.sysctl("net.inet.tcp.keepintvl", 1000)
        v.sysctl("net.inet.tcp.keepcnt", 3)
    _, cli, conn = net.pair()
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    net.k.run(30)  # a live peer answers every probe
    assert cli.tcb.state_name == "ESTABLISHED"
    assert net.a.tcp.stats.keepprobe >= 10
    net.ifb.set_up(False)  # now it is gone
    t0 = net.k.now_ns()
    with pytest.raises(TimeoutError) as exc:
        cli.recv(10)
    assert exc.value.errno == errno.ETIMEDOUT
    assert net.k.now_ns() - t0 <= (2000 + 3 * 1000) * MS


def test_ip_ttl_and_tos_apply_to_every_segment(net):
    srv = net.server()
    srv.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 9)
    srv.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x20)
    cli = net.client()
    cli.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 5)
    cli.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
    cap_a, cap_b = open_capture(net.ifa), open_capture(net.ifb)
    cli.connect((B, 8080))
    conn, _ = srv.accept()
    assert conn.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 9
    cli.sendall(b"data")
    conn.sendall(b"back")
    assert cli.recv(4) == b"back" and conn.recv(4) == b"data"
    cli.close()  # the FIN goes after the socket is gone: still TTL 5
    conn.close()
    net.k.run(0.1)
    sent_a = [f for _, f in cap_a.packets if f[23] == 6 and f[14 + 12:14 + 16] == bytes(
        [10, 0, 0, 1])]
    sent_b = [f for _, f in cap_b.packets if f[23] == 6 and f[14 + 12:14 + 16] == bytes(
        [10, 0, 0, 2])]
    assert len(sent_a) >= 4 and len(sent_b) >= 4  # SYN / SYN-ACK, data, FIN, ACKs
    assert {(f[22], f[15]) for f in sent_a} == {(5, 0x10)}
    assert {(f[22], f[15]) for f in sent_b} == {(9, 0x20)}


def test_operations_on_closed_and_unconnected_sockets(net):
    s = net.client()
    with pytest.raises(OSError) as exc:
        s.send(b"x")
    assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as exc:
        s.recv(1)
    assert exc.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as exc:
        s.shutdown(socket.SHUT_WR)
    assert exc.value.errno == errno.ENOTCONN
    s.close()
    with pytest.raises(OSError) as exc:
        s.connect((B, 8080))
    assert exc.value.errno == errno.EBADF
    with net.client() as t:
        pass
    assert t.closed
