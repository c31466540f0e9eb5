"""route: add/delete/change/get/flush, and that the routes really steer traffic."""

from __future__ import annotations

import errno

import pytest

from vimage.kernel import Kernel
from vimage.net.route import RTF_BLACKHOLE, RTF_GATEWAY, RTF_REJECT, RTF_STATIC
from vimage.topo import udp_delivered
from vimage.vnet import Vnet

from .conftest import error_lines

NET2 = 0x0A000200  # 10.0.2.0


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str, expected: str | None = None) -> str:
    result = vnet.cmd(line)
    assert result.status != 0, f"{line!r} unexpectedly succeeded: {result.output}"
    lines = error_lines(result.output, "route")
    assert len(lines) == 1 and lines[0].startswith(("route: ", "usage: route")), result.output
    if expected is not None:
        assert lines[0] == expected
    return lines[0]


def send(kernel: Kernel, src: Vnet, dst: Vnet, addr: str, port: int = 7000) -> bool:
    return udp_delivered(src, dst, addr, port)


@pytest.fixture
def net() -> tuple[Kernel, Vnet, Vnet, Vnet]:
    """h1 (10.0.1.1) -- (10.0.1.2) r (10.0.2.1) -- h2 (10.0.2.2); r forwards."""
    kernel = Kernel(clock="virtual", seed=3)
    h1, r, h2 = kernel.create("h1"), kernel.create("r"), kernel.create("h2")
    for line in ("ifconfig epair create", "ifconfig epair create",
                 "ifconfig epair0a vnet h1", "ifconfig epair0b vnet r",
                 "ifconfig epair1a vnet r", "ifconfig epair1b vnet h2"):
        ok(kernel, line)
    ok(h1, "ifconfig epair0a 10.0.1.1/24")
    ok(r, "ifconfig epair0b 10.0.1.2/24")
    ok(r, "ifconfig epair1a 10.0.2.1/24")
    ok(h2, "ifconfig epair1b 10.0.2.2/24")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(h2, "route add default 10.0.2.1")
    kernel.run(1)
    return kernel, h1, r, h2


def test_add_net_route_makes_remote_subnet_reachable(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    with pytest.raises(OSError) as exc:
        send(kernel, h1, h2, "10.0.2.2")
    assert exc.value.errno == errno.ENETUNREACH
    assert ok(h1, "route add -net 10.0.2.0/24 10.0.1.2") == "add net 10.0.2.0: gateway 10.0.1.2\n"
    route = h1.rt.get(NET2, 24)
    assert route is not None and route.flags & RTF_STATIC and route.flags & RTF_GATEWAY
    assert route.ifp.name == "epair0a" and route.gateway == 0x0A000102
    assert send(kernel, h1, h2, "10.0.2.2")
    assert send(kernel, h2, h1, "10.0.1.1")


def test_add_default(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    assert ok(h1, "route add default 10.0.1.2") == "add net default: gateway 10.0.1.2\n"
    assert h1.rt.get(0, 0) is not None
    assert send(kernel, h1, h2, "10.0.2.2")


def test_host_routes(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    assert ok(h1, "route add -host 10.0.2.2 10.0.1.2") == "add host 10.0.2.2: gateway 10.0.1.2\n"
    assert h1.rt.get(0x0A000202, 32) is not None
    assert send(kernel, h1, h2, "10.0.2.2")
    with pytest.raises(OSError):  # only that host
        send(kernel, h1, h2, "10.0.2.3")
    # without -net and without a prefix length, a destination is a host (as on FreeBSD)
    assert ok(h1, "route add 10.0.2.7 10.0.1.2") == "add host 10.0.2.7: gateway 10.0.1.2\n"
    assert h1.rt.get(0x0A000207, 32) is not None


@pytest.mark.parametrize(("line", "dst", "plen"), [
    ("route add -net 10.0.2.0 10.0.1.2", NET2, 24),  # mask from the trailing zero bytes
    ("route add -net 10.7 10.0.1.2", 0x0A070000, 16),
    ("route add -net 10.0.0.0 10.0.1.2 -netmask 255.255.252.0", 0x0A000000, 22),
    ("route add -net 10.0.0.0 10.0.1.2 0xffff0000", 0x0A000000, 16),
    ("route add 10.0.2.0/23 10.0.1.2", 0x0A000200, 23),
])
def test_destination_forms(net: tuple[Kernel, Vnet, Vnet, Vnet], line: str, dst: int,
                           plen: int) -> None:
    _, h1, _, _ = net
    assert ok(h1, line).startswith("add net ")
    assert h1.rt.get(dst, plen) is not None


def test_add_existing_route_fails(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    _, h1, _, _ = net
    ok(h1, "route add -net 10.0.2.0/24 10.0.1.2")
    fails(h1, "route add -net 10.0.2.0/24 10.0.1.2",  # the same path: always
          "route: writing to routing socket: File exists")
    ok(h1, "sysctl net.route.multipath=0")  # another gateway only makes a group with it
    fails(h1, "route add -net 10.0.2.0/24 10.0.1.3",
          "route: writing to routing socket: File exists")
    assert h1.rt.get(NET2, 24).gateway == 0x0A000102
    assert h1.rt.get(NET2, 24).group is None


def test_gateway_must_be_directly_reachable(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    _, h1, _, _ = net
    fails(h1, "route add -net 10.9.0.0/16 10.5.5.5",
          "route: writing to routing socket: Network is unreachable")
    ok(h1, "route add -net 10.0.2.0/24 10.0.1.2")
    # a gateway reached only through another gateway is not directly reachable
    fails(h1, "route add -net 10.9.0.0/16 10.0.2.2",
          "route: writing to routing socket: Network is unreachable")
    assert h1.rt.get(0x0A090000, 16) is None


def test_delete(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    ok(h1, "route add -net 10.0.2.0/24 10.0.1.2")
    assert send(kernel, h1, h2, "10.0.2.2")
    assert ok(h1, "route delete 10.0.2.0/24") == "delete net 10.0.2.0\n"
    assert h1.rt.get(NET2, 24) is None
    with pytest.raises(OSError):
        send(kernel, h1, h2, "10.0.2.2")
    fails(h1, "route delete 10.0.2.0/24", "route: route has not been found")
    ok(h1, "route add default 10.0.1.2")
    assert ok(h1, "route delete default") == "delete net default\n"
    assert h1.rt.get(0, 0) is None


def test_change_gateway(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    ok(h1, "route add -net 10.0.2.0/24 10.0.1.2")
    assert ok(h1, "route change 10.0.2.0/24 10.0.1.99") == \
        "change net 10.0.2.0: gateway 10.0.1.99\n"
    assert "    gateway: 10.0.1.99\n" in ok(h1, "route get 10.0.2.2")
    assert not send(kernel, h1, h2, "10.0.2.2")  # nobody answers ARP for 10.0.1.99
    assert 0x0A000163 in h1.arp.table  # h1 did try to resolve the new gateway
    ok(h1, "route change 10.0.2.0/24 10.0.1.2")
    assert send(kernel, h1, h2, "10.0.2.2")
    fails(h1, "route change 10.0.3.0/24 10.0.1.2", "route: route has not been found")
    fails(h1, "route change 10.0.2.0/24 10.8.8.8",
          "route: writing to routing socket: Network is unreachable")


def test_get_output(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    _, h1, _, _ = net
    ok(h1, "route add -net 10.0.2.0/24 10.0.1.2")
    expected = (
        "   route to: 10.0.2.5\n"
        "destination: 10.0.2.0\n"
        "       mask: 255.255.255.0\n"
        "    gateway: 10.0.1.2\n"
        "        fib: 0\n"
        "  interface: epair0a\n"
        "      flags: <UP,GATEWAY,DONE,STATIC>\n"
        " recvpipe  sendpipe  ssthresh  rtt,msec    mtu        weight    expire\n"
        "       0         0         0         0      1500         1         0\n")
    assert ok(h1, "route get 10.0.2.5") == expected
    assert ok(h1, "route -n get 10.0.2.5") == expected
    assert ok(h1, "route show 10.0.2.5") == expected


def test_get_connected_local_and_default(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    _, h1, _, h2 = net
    out = ok(h1, "route get 10.0.1.2")
    assert "destination: 10.0.1.0\n" in out and "gateway" not in out
    assert "  interface: epair0a\n" in out and "flags: <UP,DONE>" in out
    out = ok(h1, "route get 10.0.1.1")
    assert "  interface: lo0\n" in out and "mask" not in out and "HOST" in out
    out = ok(h2, "route get 192.0.2.1")
    assert "destination: default\n       mask: default\n    gateway: 10.0.2.1\n" in out
    assert "  interface: epair1b\n" in out


def test_get_unroutable(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    _, h1, _, _ = net
    fails(h1, "route get 192.0.2.1", "route: route has not been found")
    assert h1.cmd("route get 192.0.2.1").status == 1


def test_blackhole_drops_silently(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    out = ok(h1, "route add -net 10.0.2.0/24 127.0.0.1 -blackhole")
    assert out == "add net 10.0.2.0: gateway 127.0.0.1\n"
    route = h1.rt.get(NET2, 24)
    assert route.flags & RTF_BLACKHOLE and route.ifp.name == "lo0"
    sent = h1.iface("epair0a").opackets
    assert not send(kernel, h1, h2, "10.0.2.2")  # no error, nothing arrives
    assert h1.iface("epair0a").opackets == sent
    assert "BLACKHOLE" in ok(h1, "route get 10.0.2.2")


def test_reject_gives_ehostunreach(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    kernel, h1, _r, h2 = net
    ok(h1, "route add -net 10.0.2.0/24 127.0.0.1 -reject")
    assert h1.rt.get(NET2, 24).flags & RTF_REJECT
    with pytest.raises(OSError) as exc:
        send(kernel, h1, h2, "10.0.2.2")
    assert exc.value.errno == errno.EHOSTUNREACH


def test_interface_route_resolves_destination_on_the_link() -> None:
    kernel = Kernel(clock="virtual", seed=5)
    h1, h2 = kernel.create("h1"), kernel.create("h2")
    ok(kernel, "ifconfig epair create")
    ok(kernel, "ifconfig epair0a vnet h1")
    ok(kernel, "ifconfig epair0b vnet h2")
    ok(h1, "ifconfig epair0a 10.0.0.1/24")
    ok(h2, "ifconfig epair0b 10.0.0.2/24")
    ok(h2, "ifconfig epair0b 192.168.5.5/32 alias")
    ok(h2, "route add default 10.0.0.1")
    kernel.run(1)
    assert ok(h1, "route add -host 192.168.5.5 -interface epair0a") == \
        "add host 192.168.5.5: gateway epair0a\n"
    route = h1.rt.get(0xC0A80505, 32)
    assert route.ifp.name == "epair0a" and not route.flags & RTF_GATEWAY
    assert send(kernel, h1, h2, "192.168.5.5")
    assert h1.arp.table[0xC0A80505].mac == h2.iface("epair0b").mac  # ARPed directly
    # the gateway may also be one of the interface's addresses
    assert ok(h1, "route add -net 192.168.6.0/24 -interface 10.0.0.1").endswith(
        "gateway 10.0.0.1\n")
    assert h1.rt.get(0xC0A80600, 24).ifp.name == "epair0a"
    fails(h1, "route add -net 192.168.7.0/24 -interface 10.0.0.77")
    fails(h1, "route add -net 192.168.7.0/24 -interface epair5a")


def test_flush_removes_gateway_routes_only(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:
    _, h1, _, _ = net
    ok(h1, "route add default 10.0.1.2")
    ok(h1, "route add -host 10.0.2.2 10.0.1.2")
    ok(h1, "route add -net 10.0.3.0/24 -interface epair0a")
    before = len(h1.rt)
    out = ok(h1, "route flush")
    assert out.splitlines() == [
        f"{'default':<20} {'10.0.1.2':<20} done",
        f"{'10.0.2.2':<20} {'10.0.1.2':<20} done",
    ]
    assert len(h1.rt) == before - 2
    assert h1.rt.get(0, 0) is None and h1.rt.get(0x0A000300, 24) is not None
    assert h1.rt.get(0x0A000100, 24) is not None  # the connected route stays
    assert ok(h1, "route -q add default 10.0.1.2") == ""


@pytest.mark.parametrize(("line", "word"), [
    ("route", "command"),
    ("route frob 10.0.0.0", "frob"),
    ("route add 10.0.2.0/24", "gateway"),
    ("route add", "destination"),
    ("route add 10.0.2.300/24 10.0.1.2", "10.0.2.300"),
    ("route add 10.0.2.0/40 10.0.1.2", "40"),
    ("route add 10.0.2.0/24 10.0.1.2 -bogus", "-bogus"),
    ("route add 10.0.2.0/24 banana", "banana"),
    ("route add 10.0.2.0/24 10.0.1.2 -netmask", "-netmask"),
    ("route add 10.0.2.0/24 10.0.1.2 255.0.255.0", "255.0.255.0"),
    ("route get 10.0.2.1 10.0.2.2", "10.0.2.2"),
    ("route -Z get 10.0.2.1", "illegal option -- Z"),
    ("route flush now", "now"),
])
def test_usage_errors(net: tuple[Kernel, Vnet, Vnet, Vnet], line: str, word: str) -> None:
    _, h1, _, _ = net
    count = len(h1.rt)
    assert word in fails(h1, line)
    assert len(h1.rt) == count
