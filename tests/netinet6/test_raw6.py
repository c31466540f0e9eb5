"""Raw IPv6 sockets (FreeBSD raw_ip6.c, RFC 3542): the kernel's ICMPv6 checksum."""

from __future__ import annotations

import errno
from socket import AF_INET6, IPPROTO_IPV6, SOCK_RAW

import pytest

from vimage.socket.inet6 import IPV6_CHECKSUM
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

from .conftest import pair


def test_raw_icmpv6_echo_with_kernel_checksum() -> None:
    p = pair()
    s = p.a.socket(AF_INET6, SOCK_RAW, 58)
    s.settimeout(1)
    assert s.getsockopt(IPPROTO_IPV6, IPV6_CHECKSUM) == 2
    request = bytes([w6.ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 1]) + b"ping"  # no checksum
    s.sendto(request, ("2001:db8:1::2", 0))
    while True:
        data, addr = s.recvfrom(1000)
        if data[0] == w6.ECHO_REPLY:
            break
    assert p.b.icmp6.stats.inhist[w6.ECHO_REQUEST] == 1  # its checksum was right
    assert addr == ("2001:db8:1::2", 0, 0, 0)
    assert data[4:] == request[4:]  # no IPv6 header on a raw IPv6 socket
    a, b = wip6.aton("2001:db8:1::1"), wip6.aton("2001:db8:1::2")
    assert w6.parse(data, b, a).type == w6.ECHO_REPLY  # valid checksum
    with pytest.raises(OSError) as err:
        s.setsockopt(IPPROTO_IPV6, IPV6_CHECKSUM, -1)  # fixed for ICMPv6
    assert err.value.errno == errno.EINVAL


def test_raw_socket_for_an_unclaimed_next_header() -> None:
    p = pair()
    rx = p.b.socket(AF_INET6, SOCK_RAW, 253)  # RFC 3692 experimentation
    rx.settimeout(1)
    tx = p.a.socket(AF_INET6, SOCK_RAW, 253)
    tx.sendto(b"experiment", ("2001:db8:1::2", 0))
    data, addr = rx.recvfrom(100)
    assert data == b"experiment" and addr[0] == "2001:db8:1::1"
    rx.close()
    tx.sendto(b"nobody", ("2001:db8:1::2", 0))
    p.kernel.run(0.1)
    assert p.b.icmp6.stats.outhist[w6.PARAM_PROB] == 1  # unrecognised next header


def test_close_and_destroy() -> None:
    p = pair()
    s = p.a.socket(AF_INET6, SOCK_RAW, 58)
    assert s in p.a.raw.sockets6.live()
    s.close()
    assert not p.a.raw.sockets6
    s2 = p.a.socket(AF_INET6, SOCK_RAW, 58)
    p.kernel.destroy(p.a)
    assert s2.closed
