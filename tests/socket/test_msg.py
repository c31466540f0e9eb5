"""recvmsg/sendmsg with ancillary data, MSG_TRUNC, MSG_PEEK, MSG_WAITALL, IP_ONESBCAST.

UDP and raw sockets carry FreeBSD's control messages (ip_savecontrol: IP_RECVDSTADDR,
IP_RECVTTL, IP_RECVIF, IP_RECVTOS; IP_SENDSRCADDR on output) and Linux's (IP_PKTINFO,
IP_RECVTTL as IP_TTL, IP_RECVTOS as IP_TOS); TCP sockets have sendto, sendmsg, recvmsg
and recvmsg_into with the stdlib's semantics."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.socket import msg
from vimage.topo import connect
from vimage.wire import ipv4
from vimage.wire.rtmsg import AF_LINK, SOCKADDR_DL

A, B, ALIAS = "10.0.0.1", "10.0.0.2", "10.0.0.3"
ANC = socket.CMSG_SPACE(64) * 8


class Net:
    def __init__(self) -> None:
        self.k = Kernel(clock="virtual", seed=11)
        self.a = self.k.create("a")
        self.b = self.k.create("b")
        self.ifa, self.ifb = connect(self.a, f"{A}/24", self.b, f"{B}/24")
        self.a.cmd(f"ifconfig {self.ifa.name} inet {ALIAS}/32 alias")
        self.a.cmd(f"ping -c 1 {B}")  # ARP resolved both ways
        self.b.cmd(f"ping -c 1 {A}")

    def udp(self, vnet, port=0, addr=""):
        s = vnet.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        s.bind((addr, port))
        return s


@pytest.fixture
def net() -> Net:
    return Net()


def test_freebsd_control_messages(net):
    srv = net.udp(net.b, 53)
    for option in (msg.IP_RECVDSTADDR, msg.IP_RECVTTL, msg.IP_RECVIF, msg.IP_RECVTOS):
        srv.setsockopt(socket.IPPROTO_IP, option, 1)
        assert srv.getsockopt(socket.IPPROTO_IP, option) == 1
    cli = net.udp(net.a)
    cli.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 33)
    cli.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x10)
    cli.sendto(b"query", (B, 53))
    net.k.run(0.1)
    data, anc, flags, addr = srv.recvmsg(100, ANC)
    assert (data, flags, addr) == (b"query", 0, (A, cli.getsockname()[1]))
    assert [(lvl, kind) for lvl, kind, _ in anc] == [
        (socket.IPPROTO_IP, msg.IP_RECVDSTADDR), (socket.IPPROTO_IP, msg.IP_RECVTTL),
        (socket.IPPROTO_IP, msg.IP_RECVIF), (socket.IPPROTO_IP, msg.IP_RECVTOS)]
    assert anc[0][2] == ipv4.aton(B).to_bytes(4, "big")
    assert anc[1][2] == bytes((33,)) and anc[3][2] == bytes((0x10,))
    sdl_len, family, index, iftype, nlen, alen, _ = SOCKADDR_DL.unpack_from(anc[2][2])
    assert (sdl_len, family, index, iftype) == (54, AF_LINK, net.ifb.index, 6)
    assert len(anc[2][2]) == 54
    assert anc[2][2][8:8 + nlen] == net.ifb.name.encode()
    assert anc[2][2][8 + nlen:8 + nlen + alen] == net.ifb.mac


def test_linux_control_messages_and_a_broadcast_destination(net):
    srv = net.udp(net.b, 53)
    for option in (msg.IP_PKTINFO, msg.LINUX_IP_RECVTTL, socket.IP_RECVTOS):
        srv.setsockopt(socket.IPPROTO_IP, option, 1)
    srv.setsockopt(socket.IPPROTO_IP, msg.IP_RECVDSTADDR, 0)  # one not asked for: absent
    cli = net.udp(net.a)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    cli.sendto(b"all", ("10.0.0.255", 53))
    net.k.run(0.1)
    _, anc, _, _ = srv.recvmsg(100, ANC)
    assert [kind for _, kind, _ in anc] == [msg.IP_PKTINFO, socket.IP_TTL, socket.IP_TOS]
    index, spec, dst = msg.PKTINFO.unpack(anc[0][2])
    assert index == net.ifb.index
    assert socket.inet_ntoa(dst) == "10.0.0.255" and socket.inet_ntoa(spec) == B
    assert struct.unpack("@i", anc[1][2]) == (64,) and anc[2][2] == b"\0"


def test_control_buffer_too_small_is_msg_ctrunc(net):
    srv = net.udp(net.b, 53)
    srv.setsockopt(socket.IPPROTO_IP, msg.IP_RECVDSTADDR, 1)
    srv.setsockopt(socket.IPPROTO_IP, msg.IP_RECVTTL, 1)
    cli = net.udp(net.a)
    for _ in range(3):
        cli.sendto(b"x", (B, 53))
    net.k.run(0.1)
    _, anc, flags, _ = srv.recvmsg(10, socket.CMSG_SPACE(4))
    assert len(anc) == 1 and flags & socket.MSG_CTRUNC
    _, anc, flags, _ = srv.recvmsg(10)
    assert anc == [] and flags == socket.MSG_CTRUNC
    _, anc, flags, _ = srv.recvmsg(10, socket.CMSG_SPACE(4) + socket.CMSG_LEN(1))
    assert len(anc) == 2 and flags == 0


def test_msg_trunc_and_msg_peek(net):
    srv = net.udp(net.b, 53)
    cli = net.udp(net.a)
    for _ in range(4):
        cli.sendto(b"0123456789", (B, 53))
    net.k.run(0.1)
    data, _, flags, _ = srv.recvmsg(4, 0, socket.MSG_PEEK)
    assert data == b"0123" and flags == socket.MSG_TRUNC
    data, _, flags, _ = srv.recvmsg(4)  # the peeked datagram is still there
    assert data == b"0123" and flags == socket.MSG_TRUNC
    # recv with MSG_TRUNC: the real length (Linux); what did not fit is not data
    data = srv.recv(4, socket.MSG_TRUNC)
    assert len(data) == 10 and data[:4] == b"0123"
    buf = bytearray(4)
    assert srv.recv_into(buf, 0, socket.MSG_TRUNC) == 10 and buf == b"0123"
    bufs = [bytearray(3), bytearray(3)]
    n, _, flags, addr = srv.recvmsg_into(bufs)
    assert (n, flags, addr[0]) == (6, socket.MSG_TRUNC, A)
    assert bufs == [b"012", b"345"]


def test_sendmsg_chooses_the_source_address(net):
    srv = net.udp(net.b, 53)
    cli = net.udp(net.a)
    alias = socket.inet_aton(ALIAS)
    assert cli.sendmsg([b"fr", b"om"], [(socket.IPPROTO_IP, msg.IP_SENDSRCADDR, alias)], 0,
                       (B, 53)) == 4
    pktinfo = msg.PKTINFO.pack(0, socket.inet_aton(A), bytes(4))
    cli.sendmsg([b"linux"], [(socket.IPPROTO_IP, msg.IP_PKTINFO, pktinfo)], 0, (B, 53))
    cli.sendmsg([b"plain"], [], 0, (B, 53))
    net.k.run(0.1)
    port = cli.getsockname()[1]
    assert srv.recvfrom(10) == (b"from", (ALIAS, port))
    assert srv.recvfrom(10) == (b"linux", (A, port))
    assert srv.recvfrom(10) == (b"plain", (A, port))
    with pytest.raises(OSError) as exc:
        cli.sendmsg([b"x"], [(socket.IPPROTO_IP, msg.IP_SENDSRCADDR,
                              socket.inet_aton("192.0.2.9"))], 0, (B, 53))
    assert exc.value.errno == errno.EADDRNOTAVAIL


def test_ip_onesbcast_sends_a_subnet_broadcast_as_all_ones(net):
    """FreeBSD's IP_ONESBCAST: routed as 10.0.0.255, addressed to 255.255.255.255."""
    srv = net.udp(net.b, 53)
    cli = net.udp(net.a)
    cli.setsockopt(socket.IPPROTO_IP, msg.IP_ONESBCAST, 1)
    assert cli.getsockopt(socket.IPPROTO_IP, msg.IP_ONESBCAST) == 1
    with pytest.raises(OSError) as exc:
        cli.sendto(b"x", ("10.0.0.255", 53))
    assert exc.value.errno == errno.EACCES  # still needs SO_BROADCAST
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    srv.setsockopt(socket.IPPROTO_IP, msg.IP_RECVDSTADDR, 1)
    with open_capture(net.ifa) as cap:
        cli.sendto(b"ones", ("10.0.0.255", 53))
        net.k.run(0.1)
    frame = cap.packets[-1][1]
    assert frame[:6] == b"\xff" * 6
    hdr = ipv4.parse(frame[14:])
    assert (hdr.src, hdr.dst) == (ipv4.aton(A), 0xFFFFFFFF)
    data, anc, _, _ = srv.recvmsg(10, ANC)
    assert data == b"ones" and anc[0][2] == b"\xff" * 4


def test_raw_socket_control_messages(net):
    srv = net.b.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 253)
    srv.setsockopt(socket.IPPROTO_IP, msg.IP_RECVIF, 1)
    srv.setsockopt(socket.IPPROTO_IP, msg.IP_RECVTTL, 1)
    out = net.a.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    out.sendto(b"payload", (B, 0))
    net.k.run(0.1)
    data, anc, _, addr = srv.recvmsg(100, ANC)
    assert addr == (A, 0) and data[20:] == b"payload"
    assert [kind for _, kind, _ in anc] == [msg.IP_RECVTTL, msg.IP_RECVIF]
    assert anc[0][2] == bytes((64,))
    assert SOCKADDR_DL.unpack_from(anc[1][2])[2] == net.ifb.index


def tcp_pair(net):
    srv = net.b.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("", 80))
    srv.listen()
    cli = net.a.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((B, 80))
    conn, _ = srv.accept()
    return cli, conn


def test_tcp_sendto_sendmsg_recvmsg(net):
    lone = net.a.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError) as exc:
        lone.sendto(b"x", (B, 80))
    assert exc.value.errno == errno.ENOTCONN
    cli, conn = tcp_pair(net)
    assert cli.sendto(b"to ", ("192.0.2.1", 9)) == 3  # connected: the address is ignored
    assert cli.sendto(b"any ", 0, (B, 1)) == 4
    assert cli.sendmsg([b"buf", memoryview(b"fers")]) == 7
    with pytest.raises(OSError) as exc:
        cli.sendmsg([b"x"], [(socket.IPPROTO_IP, msg.IP_SENDSRCADDR, bytes(4))])
    assert exc.value.errno == errno.EINVAL
    net.k.run(0.1)
    assert conn.recvmsg(3, 0, socket.MSG_PEEK) == (b"to ", [], 0, None)
    assert conn.recvmsg(7) == (b"to any ", [], 0, None)
    bufs = [bytearray(2), bytearray(10)]
    assert conn.recvmsg_into(bufs) == (7, [], 0, None)
    assert bufs[0] == b"bu" and bufs[1][:5] == b"ffers"
    with pytest.raises(BlockingIOError):
        conn.recvmsg(10, 0, socket.MSG_DONTWAIT)
    with pytest.raises(BlockingIOError):
        conn.recv(10, socket.MSG_DONTWAIT)


def test_tcp_msg_waitall_waits_for_every_byte(net):
    cli, conn = tcp_pair(net)
    for i in range(1, 4):
        net.k.call_later(i, cli.send, b"%d" % i * 1000)
    start = net.k.now
    assert conn.recv(2500, socket.MSG_WAITALL) == b"1" * 1000 + b"2" * 1000 + b"3" * 500
    assert net.k.now - start >= 3  # waited for the third send
    assert conn.recv(500, socket.MSG_WAITALL | socket.MSG_PEEK) == b"3" * 500
    net.k.call_later(1, cli.send, b"end")
    net.k.call_later(2, cli.close)
    assert conn.recv(1000, socket.MSG_WAITALL) == b"3" * 500 + b"end"  # the stream ended
    assert conn.recv(10, socket.MSG_WAITALL) == b""


def test_ip_onesbcast_on_a_raw_socket(net):
    rx = net.b.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 253)
    tx = net.a.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    tx.setsockopt(socket.IPPROTO_IP, msg.IP_ONESBCAST, 1)
    tx.sendto(b"raw", ("10.0.0.255", 0))
    net.k.run(0.1)
    data = rx.recv(100)
    hdr = ipv4.parse(data)
    assert (hdr.src, hdr.dst, data[20:]) == (ipv4.aton(A), 0xFFFFFFFF, b"raw")
