"""sysctl: reading, writing, listing, and that the values change what the stack does."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.topo import udp_delivered
from vimage.vnet import Vnet

from .conftest import error_lines


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str, expected: str | None = None) -> str:
    result = vnet.cmd(line)
    assert result.status != 0, f"{line!r} unexpectedly succeeded: {result.output}"
    lines = error_lines(result.output, "sysctl")
    assert len(lines) == 1 and lines[0].startswith(("sysctl: ", "usage: sysctl")), result.output
    if expected is not None:
        assert lines[0] == expected
    return lines[0]


send = udp_delivered


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(clock="virtual", seed=2)


@pytest.fixture
def routed(kernel: Kernel) -> tuple[Vnet, Vnet, Vnet]:
    """h1 -- r -- h2 with routes in place; forwarding on r is left at its default (0)."""
    h1, r, h2 = kernel.create("h1"), kernel.create("r"), kernel.create("h2")
    for line in ("ifconfig epair create", "ifconfig epair create",
                 "ifconfig epair0a vnet h1", "ifconfig epair0b vnet r",
                 "ifconfig epair1a vnet r", "ifconfig epair1b vnet h2"):
        ok(kernel, line)
    ok(h1, "ifconfig epair0a 10.0.1.1/24")
    ok(r, "ifconfig epair0b 10.0.1.2/24")
    ok(r, "ifconfig epair1a 10.0.2.1/24")
    ok(h2, "ifconfig epair1b 10.0.2.2/24")
    ok(h1, "route add default 10.0.1.2")
    ok(h2, "route add default 10.0.2.1")
    kernel.run(1)
    return h1, r, h2


def test_read_and_write(kernel: Kernel) -> None:
    assert ok(kernel, "sysctl net.inet.ip.forwarding") == "net.inet.ip.forwarding: 0\n"
    assert ok(kernel, "sysctl net.inet.ip.forwarding=1") == "net.inet.ip.forwarding: 0 -> 1\n"
    assert kernel.base.ip.forwarding == 1
    assert ok(kernel, "sysctl -n net.inet.ip.forwarding") == "1\n"
    assert ok(kernel, "sysctl -n net.inet.ip.ttl=32") == "64 -> 32\n"
    assert ok(kernel, "sysctl -e net.inet.ip.ttl") == "net.inet.ip.ttl=32\n"


def test_several_names(kernel: Kernel) -> None:
    out = ok(kernel, "sysctl net.inet.ip.ttl net.inet.ip.forwarding=1 net.inet.udp.checksum")
    assert out == ("net.inet.ip.ttl: 64\n"
                   "net.inet.ip.forwarding: 0 -> 1\n"
                   "net.inet.udp.checksum: 1\n")


def test_descriptions_and_names(kernel: Kernel) -> None:
    assert ok(kernel, "sysctl -d net.inet.ip.forwarding") == \
        "net.inet.ip.forwarding: Enable IP forwarding between interfaces\n"
    assert ok(kernel, "sysctl -N net.inet.ip.forwarding") == "net.inet.ip.forwarding\n"
    names = ok(kernel, "sysctl -N -a").split()
    assert "net.inet.ip.forwarding" in names and "net.link.ether.inet.max_age" in names
    assert names == sorted(names)


def test_prefix_lists_the_subtree(kernel: Kernel) -> None:
    lines = ok(kernel, "sysctl net.inet.ip").splitlines()
    assert "net.inet.ip.forwarding: 0" in lines and "net.inet.ip.ttl: 64" in lines
    assert all(line.startswith("net.inet.ip.") for line in lines)
    assert ok(kernel, "sysctl net.inet.ip.") == ok(kernel, "sysctl net.inet.ip")
    everything = ok(kernel, "sysctl -a").splitlines()
    assert set(lines) < set(everything)
    assert "net.link.ether.inet.max_age: 1200" in everything


def test_values_are_per_vnet(kernel: Kernel) -> None:
    other = kernel.create("other")
    ok(other, "sysctl net.inet.ip.ttl=7")
    assert ok(kernel, "sysctl -n net.inet.ip.ttl") == "64\n"
    assert ok(other, "sysctl -n net.inet.ip.ttl") == "7\n"


def test_forwarding_switches_routing(kernel: Kernel, routed: tuple[Vnet, Vnet, Vnet]) -> None:
    h1, r, h2 = routed
    assert not send(h1, h2, "10.0.2.2")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    assert send(h1, h2, "10.0.2.2")
    assert send(h2, h1, "10.0.1.1")
    ok(r, "sysctl net.inet.ip.forwarding=0")
    assert not send(h1, h2, "10.0.2.2")


def test_ttl_limits_the_reach(kernel: Kernel, routed: tuple[Vnet, Vnet, Vnet]) -> None:
    h1, r, h2 = routed
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(h1, "sysctl net.inet.ip.ttl=1")
    assert not send(h1, h2, "10.0.2.2")  # the router may not forward a TTL 1 packet
    assert send(h1, r, "10.0.1.2")  # one hop is fine
    ok(h1, "sysctl net.inet.ip.ttl=2")
    assert send(h1, h2, "10.0.2.2")


def test_unknown_oid(kernel: Kernel) -> None:
    fails(kernel, "sysctl net.foo", "sysctl: unknown oid 'net.foo'")
    assert kernel.cmd("sysctl net.foo").status == 1
    fails(kernel, "sysctl net.foo=1", "sysctl: unknown oid 'net.foo'")
    assert ok(kernel, "sysctl -i net.foo") == ""


def test_bad_values_change_nothing(kernel: Kernel) -> None:
    assert "abc" in fails(kernel, "sysctl net.inet.ip.ttl=abc")
    assert "300" in fails(kernel, "sysctl net.inet.ip.ttl=300")
    assert "2" in fails(kernel, "sysctl net.inet.ip.forwarding=2")
    assert "net.inet" in fails(kernel, "sysctl net.inet=1")
    assert kernel.base.ip.ttl == 64 and kernel.base.ip.forwarding == 0


def test_mixed_good_and_bad(kernel: Kernel) -> None:
    result = kernel.cmd("sysctl net.nope net.inet.ip.ttl=9")
    assert result.status == 1
    assert result.output == "sysctl: unknown oid 'net.nope'\nnet.inet.ip.ttl: 64 -> 9\n"
    assert kernel.base.ip.ttl == 9


def test_usage_errors(kernel: Kernel) -> None:
    assert kernel.cmd("sysctl").status == 64
    assert fails(kernel, "sysctl -Z") == "sysctl: illegal option -- Z"
    assert "net.inet" in fails(kernel, "sysctl -a net.inet")
