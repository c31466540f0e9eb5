"""route add's modifiers as FreeBSD's sbin/route/route.c has them: -blackhole and -reject
without a gateway (the loopback's address stands in), -gateway, -prefsrc / -ifa (the
source address), -ifp (the interface)."""

from __future__ import annotations

import errno

import pytest

from vimage.kernel import Kernel
from vimage.net.route import RTF_BLACKHOLE, RTF_REJECT
from vimage.topo import udp_delivered
from vimage.vnet import Vnet

from .test_route import net  # noqa: F401  (the h1 - r - h2 fixture)


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def netstat_line(vnet: Vnet, dest: str) -> list[str]:
    for line in ok(vnet, "netstat -rn -f inet").splitlines():
        if line.split()[:1] == [dest]:
            return line.split()
    return []


def test_blackhole_without_gateway(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:  # noqa: F811
    _k, h1, _r, h2 = net
    assert ok(h1, "route add -net 10.0.2.0/24 -blackhole") == "add net 10.0.2.0\n"
    assert netstat_line(h1, "10.0.2.0/24") == ["10.0.2.0/24", "127.0.0.1", "UGSB", "lo0"]
    route = h1.rt.get(0x0A000200, 24)
    assert route is not None and route.flags & RTF_BLACKHOLE and route.ifp.name == "lo0"
    sent = h1.iface("epair0a").opackets
    assert not udp_delivered(h1, h2, "10.0.2.2")  # no error, nothing leaves
    assert h1.iface("epair0a").opackets == sent


def test_reject_host_without_gateway(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:  # noqa: F811
    _k, h1, _r, h2 = net
    assert ok(h1, "route add -host 10.0.2.2 -reject") == "add host 10.0.2.2\n"
    assert netstat_line(h1, "10.0.2.2")[2] == "UGHRS"
    assert h1.rt.get(0x0A000202, 32).flags & RTF_REJECT
    with pytest.raises(OSError) as exc:
        udp_delivered(h1, h2, "10.0.2.2")
    assert exc.value.errno == errno.EHOSTUNREACH
    assert "<UP,GATEWAY,HOST,REJECT,DONE,STATIC>" in ok(h1, "route -n get 10.0.2.2")


def test_gateway_modifier(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:  # noqa: F811
    _k, h1, _r, h2 = net
    out = ok(h1, "route add -net 10.0.2.0/24 -gateway 10.0.1.2")
    assert out == "add net 10.0.2.0: gateway 10.0.1.2\n"
    assert udp_delivered(h1, h2, "10.0.2.2")


@pytest.mark.parametrize("word", ["-prefsrc", "-ifa"])
def test_prefsrc_and_ifa_choose_the_source(net: tuple[Kernel, Vnet, Vnet, Vnet],  # noqa: F811
                                           word: str) -> None:
    k, h1, r, h2 = net
    ok(h1, "ifconfig epair0a inet 10.0.1.5/24 alias")
    ok(h1, f"route add -net 10.0.2.0/24 10.0.1.2 {word} 10.0.1.5")
    rx = h2.socket(2, 2)
    rx.bind(("", 7000))
    rx.settimeout(1)
    h1.socket(2, 2).sendto(b"x", ("10.0.2.2", 7000))
    _data, (src, _port) = rx.recvfrom(10)
    assert src == "10.0.1.5"


def test_ifp_names_the_interface(net: tuple[Kernel, Vnet, Vnet, Vnet]) -> None:  # noqa: F811
    _k, h1, _r, h2 = net
    ok(h1, "route add -net 10.0.2.0/24 10.0.1.2 -ifp epair0a")
    assert "  interface: epair0a" in ok(h1, "route -n get 10.0.2.2").splitlines()
    assert udp_delivered(h1, h2, "10.0.2.2")
    res = h1.cmd("route add -net 10.0.3.0/24 10.0.1.2 -ifp nosuch0")
    assert res.status != 0
