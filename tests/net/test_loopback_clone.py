"""Cloned loopbacks (FreeBSD lo(4) cloner): `ifconfig lo create`, moved into a vnet and
back as FreeBSD's tests/sys/common/vnet.subr does with vnet_mkloopback + vnet_mkjail."""

from __future__ import annotations

import socket

import pytest

from vimage.kernel import Kernel
from vimage.vnet import Vnet


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status != 0, f"{line!r} unexpectedly succeeded: {result.output}"
    return result.output


@pytest.fixture
def k() -> Kernel:
    return Kernel(clock="virtual", seed=7)


def test_lo_create_numbers_units(k: Kernel) -> None:
    assert ok(k, "ifconfig lo create") == "lo1\n"
    assert ok(k, "ifconfig lo create") == "lo2\n"
    assert ok(k, "ifconfig lo7 create") == "lo7\n"
    assert fails(k, "ifconfig lo7 create") == "ifconfig: SIOCIFCREATE2 (lo7): File exists\n"
    out = ok(k, "ifconfig lo1")
    assert out.startswith("lo1: flags=8008<LOOPBACK,MULTICAST> metric 0 mtu 16384")


def test_vnet_mkloopback_into_a_vnet_and_back(k: Kernel) -> None:
    """vnet_mkloopback: create, up; vnet_mkjail: move it into the jail, which uses it;
    `ifconfig lo1 -vnet NAME` takes it back, addresses gone as if_vmove drops them."""
    j = k.create("j")
    lo = ok(k, "ifconfig lo create").strip()
    ok(k, f"ifconfig {lo} up")
    ok(k, f"ifconfig {lo} vnet j")
    assert lo not in k.base.ifaces and lo in j.ifaces
    ok(j, f"ifconfig {lo} inet 192.0.2.1/32 up")
    ok(j, f"ifconfig {lo} inet6 2001:db8::1/128")
    # a service bound to the loopback address answers inside the vnet
    rx = j.socket(2, 2)
    rx.bind(("192.0.2.1", 7))
    rx.settimeout(1)
    j.socket(2, 2).sendto(b"hi", ("192.0.2.1", 7))
    data, (src, _port) = rx.recvfrom(10)
    assert data == b"hi" and src == "192.0.2.1"
    assert j.ifaces[lo].ipackets == 1
    assert "inet 192.0.2.1 netmask 0xffffffff" in ok(j, f"ifconfig {lo}")
    ok(k, f"ifconfig {lo} -vnet j")
    assert lo in k.base.ifaces and lo not in j.ifaces
    assert "192.0.2.1" not in ok(k, f"ifconfig {lo}")
    # its unit stayed taken while it was away: the next one is lo2
    ok(k, f"ifconfig {lo} vnet j")
    assert ok(k, "ifconfig lo create") == "lo2\n"


def test_loopback_goes_home_when_its_vnet_dies(k: Kernel) -> None:
    j = k.create("j")
    ok(k, "ifconfig lo create")
    ok(k, "ifconfig lo1 vnet j")
    ok(j, "ifconfig lo1 inet 198.51.100.1/32 up")
    k.destroy("j")
    assert "lo1" in k.base.ifaces
    assert k.sched.pending_timers(j) == 0
    ok(k, "ifconfig lo1 destroy")
    assert ok(k, "ifconfig lo create") == "lo1\n"  # its unit is free again


def test_loopback_born_in_a_vnet_dies_with_it(k: Kernel) -> None:
    j = k.create("j")
    ok(j, "ifconfig lo create")
    ok(j, "ifconfig lo1 inet 203.0.113.1/32 up")
    k.destroy("j")
    assert "lo1" not in k.base.ifaces
    assert k.sched.pending_timers(j) == 0


def test_lo0_stays(k: Kernel) -> None:
    k.create("j")
    out = fails(k, "ifconfig lo0 vnet j")
    assert "lo0" in out
    assert "lo0" in k.base.ifaces


def test_output_raw_flowid_mpath_success(k: Kernel) -> None:
    """FreeBSD's tests/sys/netinet/output.sh output_raw_flowid_mpath_success: two jails
    joined by two epairs, each with a cloned loopback moved in (vnet_mkloopback); pings
    to 32 addresses on b's loopback over a two-path route are spread over both links."""
    a, b = k.create("a"), k.create("b")
    epairs = [ok(k, "ifconfig epair create").strip()[:-1] for _ in range(2)]
    lo_src = ok(k, "ifconfig lo create").strip()
    lo_dst = ok(k, "ifconfig lo create").strip()
    for e in epairs:
        ok(k, f"ifconfig {e}a vnet a")
        ok(k, f"ifconfig {e}b vnet b")
    ok(k, f"ifconfig {lo_src} vnet a")
    ok(k, f"ifconfig {lo_dst} vnet b")
    ok(a, "sysctl net.route.multipath=1")
    for vnet, side, addrs in ((a, "a", (".1", ".5")), (b, "b", (".2", ".6"))):
        for e, last in zip(epairs, addrs, strict=True):
            ok(vnet, f"ifconfig {e}{side} up")
            ok(vnet, f"ifconfig {e}{side} inet 203.0.113{last}/30")
    ok(a, f"ifconfig {lo_src} up")
    ok(b, f"ifconfig {lo_dst} up")
    ips = (4, 29, 48, 53, 55, 61, 71, 80, 84, 87, 90, 91, 119, 131, 137, 153, 154, 158, 162,
           169, 169, 171, 176, 187, 197, 228, 233, 235, 236, 237, 245, 251)
    ok(a, f"ifconfig {lo_src} inet 192.0.2.1/32")
    ok(b, f"ifconfig {lo_dst} inet 198.51.100.1/32")
    for i in sorted(set(ips)):
        ok(b, f"ifconfig {lo_dst} alias 198.51.100.{i}/32")
    ok(a, "route add -4 -net 198.51.100.0/24 203.0.113.2")
    ok(a, "route add -4 -net 198.51.100.0/24 203.0.113.6")
    ok(b, "route add -4 -net 192.0.2.0/24 203.0.113.1")
    valid = "1 packets transmitted, 1 packets received"
    assert valid in ok(a, "ping -nc1 198.51.100.1")
    for i in ips:
        assert valid in ok(a, f"ping -nc1 198.51.100.{i}")
    pkt_0, pkt_1 = (a.ifaces[f"{e}a"].opackets for e in epairs)
    assert pkt_0 > 10 and pkt_1 > 10, (pkt_0, pkt_1)


def test_loopback_dies_with_the_vnet_that_made_it(k: Kernel) -> None:
    maker, user = k.create("maker"), k.create("user")
    ok(maker, "ifconfig lo create")
    ok(maker, "ifconfig lo1 vnet user")
    ok(user, "ifconfig lo1 inet 192.0.2.9/32 up")
    k.destroy("maker")
    assert "lo1" not in user.ifaces
    assert 0xC0000209 not in user.ip.local


def test_loopback_addresses_have_no_broadcast(k: Kernel) -> None:
    """lo(4) is not IFF_BROADCAST, so in_broadcast() never matches on it: 127.255.255.255
    is not one of the vnet's broadcast addresses, and a packet to it is not delivered."""
    vnet = k.create("a")
    ok(vnet, "ifconfig lo0 inet 127.0.0.2/8 alias")
    ok(vnet, "route add -net 127.0.0.0/8 -interface lo0")
    assert vnet.ip.bcast == {}
    sock = vnet.socket(2, 2)
    sock.bind(("", 7000))
    sock.setblocking(False)
    sender = vnet.socket(2, 2)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sender.sendto(b"x", ("127.255.255.255", 7000))
    k.run(0.1)
    with pytest.raises(BlockingIOError):
        sock.recv(10)
    sender.sendto(b"y", ("127.0.0.2", 7000))
    k.run(0.1)
    assert sock.recv(10) == b"y"
