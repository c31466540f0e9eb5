"""Cloned loopbacks (FreeBSD lo(4) cloner): `ifconfig lo create`, moved into a vnet and
back as FreeBSD's tests/sys/common/vnet.subr does with vnet_mkloopback + vnet_mkjail."""

from __future__ import annotations

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
