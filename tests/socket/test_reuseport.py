"""SO_REUSEPORT and SO_REUSEPORT_LB, in the style of FreeBSD's
tests/sys/netinet/so_reuseport_lb_test.c: several listeners (and UDP receivers) on one
address and port when all set the option; connections and datagrams go where FreeBSD's
in_pcb.c sends them (the last bound; by a hash of the 4-tuple in a load-balancing group)."""

from __future__ import annotations

import errno
import socket

import pytest

from vimage.kernel import Kernel
from vimage.socket.socket import SO_REUSEPORT_LB
from vimage.topo import connect

SRV = "10.0.0.2"


@pytest.fixture
def net():
    k = Kernel(clock="virtual", seed=5)
    a = k.create("a")
    b = k.create("b")
    connect(a, "10.0.0.1/24", b, f"{SRV}/24")
    k.run(0)
    return a, b


def listener(vnet, port, option, addr="", backlog=128):
    s = vnet.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    if option:
        s.setsockopt(socket.SOL_SOCKET, option, 1)
    s.bind((addr, port))
    s.listen(backlog)
    return s


def accepted(sock) -> int:
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def test_a_second_listener_needs_the_option_on_both(net):
    _, b = net
    first = listener(b, 80, None)
    second = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    second.bind(("", 80))
    with pytest.raises(OSError) as exc:
        second.listen()
    assert exc.value.errno == errno.EADDRINUSE
    first.close()
    for option in (socket.SO_REUSEPORT, SO_REUSEPORT_LB):
        listeners = [listener(b, 81 + option % 7, option) for _ in range(3)]
        assert all(s.getsockopt(socket.SOL_SOCKET, option) == 1 for s in listeners)
    mixed = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    mixed.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    mixed.bind(("", 81 + SO_REUSEPORT_LB % 7))
    with pytest.raises(OSError):  # SO_REUSEPORT does not join a SO_REUSEPORT_LB group
        mixed.listen()


def test_with_so_reuseport_the_last_listener_takes_the_connections(net):
    a, b = net
    socks = [listener(b, 80, socket.SO_REUSEPORT) for _ in range(3)]
    for _ in range(5):
        a.socket(socket.AF_INET, socket.SOCK_STREAM).connect((SRV, 80))
    assert [accepted(s) for s in socks] == [0, 0, 5]
    socks[2].close()
    a.socket(socket.AF_INET, socket.SOCK_STREAM).connect((SRV, 80))
    assert [accepted(s) for s in socks[:2]] == [0, 1]


def test_so_reuseport_lb_balances_connections_by_their_4_tuple(net):
    """so_reuseport_lb_test's basic_ipv4: every listener of the group gets some."""
    a, b = net
    socks = [listener(b, 80, SO_REUSEPORT_LB) for _ in range(4)]
    clients = []
    for _ in range(64):
        c = a.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.connect((SRV, 80))
        clients.append(c)
    counts = [accepted(s) for s in socks]
    assert sum(counts) == 64 and min(counts) > 0
    # the same 4-tuple reaches the same listener: close one, reconnect from the same port
    first = clients[0]
    port = first.getsockname()[1]
    first.close()
    a.kernel.run(300)  # past TIME_WAIT
    again = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("", port))
    again.connect((SRV, 80))
    got = [accepted(s) for s in socks]
    assert sum(got) == 1
    from vimage.netinet.in_pcb import lb_hash
    from vimage.wire import ipv4
    assert got.index(1) == lb_hash(ipv4.aton("10.0.0.1"), port, ipv4.aton(SRV), 80) % 4


def test_a_closed_member_leaves_the_group_to_the_others(net):
    a, b = net
    socks = [listener(b, 80, SO_REUSEPORT_LB) for _ in range(2)]
    socks[0].close()
    for _ in range(6):
        a.socket(socket.AF_INET, socket.SOCK_STREAM).connect((SRV, 80))
    assert accepted(socks[1]) == 6


def test_a_group_bound_to_the_address_goes_before_the_wildcard_one(net):
    a, b = net
    wild = [listener(b, 80, SO_REUSEPORT_LB) for _ in range(2)]
    exact = [listener(b, 80, SO_REUSEPORT_LB, SRV) for _ in range(2)]
    for _ in range(8):
        a.socket(socket.AF_INET, socket.SOCK_STREAM).connect((SRV, 80))
    assert sum(accepted(s) for s in wild) == 0
    assert sum(accepted(s) for s in exact) == 8


def receiver(vnet, port, option):
    s = vnet.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    if option:
        s.setsockopt(socket.SOL_SOCKET, option, 1)
    s.bind(("", port))
    return s


def drained(sock) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(100))
        except BlockingIOError:
            return out


def test_udp_receivers_share_a_port_only_when_all_set_the_option(net):
    _, b = net
    plain = receiver(b, 53, None)  # held: a forgotten socket gives its port back
    with pytest.raises(OSError) as exc:
        receiver(b, 53, socket.SO_REUSEPORT)
    assert exc.value.errno == errno.EADDRINUSE and plain.getsockname()[1] == 53
    keep = [receiver(b, 54, socket.SO_REUSEPORT) for _ in range(2)]
    with pytest.raises(OSError):
        receiver(b, 54, None)
    assert len(keep) == 2


def test_udp_unicast_to_the_last_bound_broadcast_to_every_receiver(net):
    a, b = net
    socks = [receiver(b, 53, socket.SO_REUSEPORT) for _ in range(3)]
    out = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    out.sendto(b"one", (SRV, 53))
    a.kernel.run(0.1)  # (ARP first)
    out.sendto(b"all", ("10.0.0.255", 53))
    out.sendto(b"ALL", ("255.255.255.255", 53))
    a.kernel.run(0.1)
    assert [drained(s) for s in socks] == [[b"all", b"ALL"], [b"all", b"ALL"],
                                          [b"one", b"all", b"ALL"]]


def test_udp_so_reuseport_lb_spreads_unicast_by_source(net):
    a, b = net
    socks = [receiver(b, 53, SO_REUSEPORT_LB) for _ in range(4)]
    a.cmd("ping -c 1 " + SRV)  # ARP resolved: none of the datagrams waits in its queue
    for _ in range(64):
        a.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"q", (SRV, 53))
    a.kernel.run(0.1)
    counts = [len(drained(s)) for s in socks]
    assert sum(counts) == 64 and min(counts) > 0
    # one source keeps to one receiver
    src = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        src.sendto(b"q", (SRV, 53))
    a.kernel.run(0.1)
    assert sorted(len(drained(s)) for s in socks) == [0, 0, 0, 5]


def test_over_ipv6_too(net):
    a, b = net
    for vnet, last in ((a, 1), (b, 2)):
        vnet.sysctl("net.inet6.ip6.dad_count", 0)
        iface = next(i for i in vnet.ifaces.values() if not i.is_loopback)
        vnet.cmd(f"ifconfig {iface.name} inet6 2001:db8::{last}/64 alias")
    a.kernel.run(1)
    socks = []
    for _ in range(2):
        s = b.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("::", 53))
        socks.append(s)
    out = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    out.sendto(b"six", ("2001:db8::2", 53))
    a.kernel.run(1)
    assert [drained(s) for s in socks] == [[], [b"six"]]
    tcp = [b.socket(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
           for _ in range(3)]
    for s in tcp:
        s.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT_LB, 1)
        s.bind(("::", 80))
        s.listen()
    for _ in range(24):
        a.socket(socket.AF_INET6, socket.SOCK_STREAM).connect(("2001:db8::2", 80))
    counts = [accepted(s) for s in tcp]
    assert sum(counts) == 24 and min(counts) > 0


def test_destroying_the_vnet_leaves_no_group_behind(net):
    a, b = net
    tcp = [listener(b, 80, SO_REUSEPORT_LB) for _ in range(2)]
    udp = [receiver(b, 53, socket.SO_REUSEPORT) for _ in range(2)]
    udp[0].setsockopt(socket.IPPROTO_IP, 65, 1)  # IP_RECVTTL: a socket with control wanted
    for _ in range(3):
        a.socket(socket.AF_INET, socket.SOCK_STREAM).connect((SRV, 80))
    a.kernel.destroy(b)
    assert all(s.closed for s in udp)
    assert b.tcp.listeners == {} and b.udp.ports == {}
    assert a.kernel.sched.pending_timers(b) == 0
    a.kernel.run(1)
    with pytest.raises(OSError):
        tcp[0].accept()
