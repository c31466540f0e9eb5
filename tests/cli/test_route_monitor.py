"""route monitor as FreeBSD prints it, and route(8)'s modifiers and fibs."""

from __future__ import annotations

import re

import pytest

from vimage.kernel import Kernel
from vimage.net.route import RTF_BLACKHOLE, RTF_GATEWAY, RTF_PROTO2, RTF_REJECT, RTF_STATIC
from vimage.topo import connect
from vimage.vnet import Vnet

NS = 1_000_000_000


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


@pytest.fixture
def pair() -> tuple[Kernel, Vnet, Vnet]:
    kernel = Kernel(clock="virtual", seed=2)
    a, b = kernel.create("a", fibs=2), kernel.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    kernel.run(1)
    return kernel, a, b


def test_monitor_prints_messages_as_freebsd(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    """The monitor blocks in its recv, driving virtual time; timers change the table."""
    kernel, a, _ = pair
    sched = kernel.sched
    sched.call_later(2 * NS, a.cmd, "route add 10.1.0.0/24 10.0.0.2")
    sched.call_later(3 * NS, a.cmd, "ifconfig epair0a 10.0.5.1/24 alias")
    sched.call_later(4 * NS, a.cmd, "route delete 10.1.0.0/24")
    out = ok(a, "route monitor -count 5")
    pid = re.search(r"pid: (\d+),", out)
    assert pid is not None
    p = pid.group(1)
    assert out == f"""
got message of size 200 on Thu Jan  1 00:00:03 1970
RTM_ADD: Add Route: len 200, pid: {p}, seq 1, errno 0, flags:<UP,GATEWAY,DONE,STATIC>
locks:  inits:
sockaddrs: <DST,GATEWAY,NETMASK>
 10.1.0.0 10.0.0.2 255.255.255.0

got message of size 124 on Thu Jan  1 00:00:04 1970
RTM_NEWADDR: address being added to iface: len 124, metric 0, flags:<UP>
sockaddrs: <NETMASK,IFP,IFA,BRD>
 255.255.255.0 epair0a:{_mac_tail(a)} 10.0.5.1 10.0.5.255

got message of size 200 on Thu Jan  1 00:00:04 1970
RTM_ADD: Add Route: len 200, pid: 0, seq 0, errno 0, flags:<UP,DONE>
locks:  inits:
sockaddrs: <DST,GATEWAY,NETMASK>
 10.0.5.0 link#2 255.255.255.0

got message of size 184 on Thu Jan  1 00:00:04 1970
RTM_ADD: Add Route: len 184, pid: 0, seq 0, errno 0, flags:<UP,HOST,DONE,STATIC>
locks:  inits:
sockaddrs: <DST,GATEWAY>
 10.0.5.1 link#1

got message of size 200 on Thu Jan  1 00:00:05 1970
RTM_DELETE: Delete Route: len 200, pid: {p}, seq 1, errno 0, flags:<UP,GATEWAY,DONE,STATIC>
locks:  inits:
sockaddrs: <DST,GATEWAY,NETMASK>
 10.1.0.0 10.0.0.2 255.255.255.0
"""


def _mac_tail(vnet: Vnet) -> str:
    mac = vnet.iface("epair0a").mac
    assert mac is not None
    return ".".join(f"{b:x}" for b in mac)


def test_monitor_interface_messages_and_fib_filter(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    sched = kernel.sched
    sched.call_later(NS, a.cmd, "route add 10.1.0.0/24 10.0.0.2")  # fib 0: not seen
    sched.call_later(2 * NS, a.cmd, "ifconfig epair0a down")
    sched.call_later(3 * NS, kernel.cmd, "ifconfig epair create")
    sched.call_later(4 * NS, kernel.cmd, "ifconfig epair1a vnet a")
    out = ok(a, "route monitor -fib 1 -count 2")
    lines = [line for line in out.splitlines() if line and not line.startswith("got")]
    assert lines[0].startswith("RTM_IFINFO: iface status change: len 168, if# 2, link: down,")
    assert lines[0].endswith("flags:<BROADCAST,SIMPLEX,MULTICAST>")
    assert lines[1] == "RTM_IFANNOUNCE: interface arrival/departure: len 24, if# 3, what: arrival"


def test_monitor_usage_and_destroyed_vnet(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    assert a.cmd("route monitor -bogus").status == 64
    kernel.sched.call_later(NS, kernel.destroy, "a")
    result = a.cmd("route monitor")
    assert result.status == 1 and "destroyed" in result.output


# -- modifiers -------------------------------------------------------------------------------
def test_ifp_ifa_prefsrc_and_gateway_modifiers(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    ok(a, "ifconfig epair0a 10.0.0.9/24 alias")
    assert ok(a, "route add 10.3.0.0/16 -gateway 10.0.0.2 -ifa 10.0.0.9") == \
        "add net 10.3.0.0: gateway 10.0.0.2\n"
    route = a.rt.get(0x0A030000, 16)
    assert route is not None and route.ifa is not None and route.ifa.addr == 0x0A000009
    assert a.ip.select_source(0x0A030001) == 0x0A000009  # -ifa chooses the source
    ok(a, "route add 10.4.0.0/16 10.0.0.2 -prefsrc 10.0.0.9")
    assert a.rt.get(0x0A040000, 16).ifa.addr == 0x0A000009
    ok(a, "route add 10.5.0.0/16 10.0.0.2 -ifp epair0a")
    assert a.rt.get(0x0A050000, 16).ifp.name == "epair0a"
    assert a.cmd("route add 10.6.0.0/16 10.0.0.2 -ifa 10.9.9.9").output == \
        "route: writing to routing socket: Can't assign requested address\n"
    assert "interface: epair0a" in ok(a, "route get 10.5.1.1")
    # a change of only the interface address keeps the gateway
    ok(a, "route change 10.5.0.0/16 -ifa 10.0.0.9")
    route = a.rt.get(0x0A050000, 16)
    assert route.gateway == 0x0A000002 and route.ifa.addr == 0x0A000009


def test_blackhole_and_reject_without_gateway(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    assert ok(a, "route add -net 192.0.2.0/24 -blackhole") == "add net 192.0.2.0\n"
    route = a.rt.get(0xC0000200, 24)
    assert route.ifp.name == "lo0" and route.flags & RTF_BLACKHOLE
    ok(a, "route add -host 192.0.2.77 -reject")
    assert a.rt.get(0xC000024D, 32).flags & RTF_REJECT
    row = [line for line in ok(a, "netstat -rn").splitlines() if line.startswith("192.0.2.0")]
    assert row[0].split() == ["192.0.2.0/24", "127.0.0.1", "UGSB", "lo0"]


def test_flags_proto_static_and_metrics(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, a, _ = pair
    ok(a, "route add 10.7.0.0/16 10.0.0.2 -proto2 -nostatic -weight 5 -mtu 1280")
    route = a.rt.get(0x0A070000, 16)
    assert route.flags & RTF_PROTO2 and not route.flags & RTF_STATIC
    out = ok(a, "route get 10.7.0.1")
    assert "flags: <UP,GATEWAY,DONE,PROTO2>" in out
    assert out.splitlines()[-1].split() == ["0", "0", "0", "0", "1280", "5", "0"]
    assert "UG2" in ok(a, "netstat -rn")
    assert a.cmd("route add 10.8.0.0/16 10.0.0.2 -mtu 20").status == 1
    assert a.cmd("route add 10.8.0.0/16 10.0.0.2 -expire soon").status == 1
    ok(a, f"route add 10.8.0.0/16 10.0.0.2 -expire {kernel.sched.now_ns() // NS + 5}")
    kernel.run(6)
    assert a.rt.get(0x0A080000, 16) is None
    ok(a, "route change 10.7.0.0/16 10.0.0.2 -hopcount 4")
    assert route.hopcount == 4 and route.gateway == 0x0A000002


def test_fibs_on_the_command_line(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    assert ok(a, "route add 10.9.0.0/16 -interface epair0a -fib 1") == \
        "add net 10.9.0.0: gateway epair0a\n"  # route.c names the fib only for a list
    assert a.route.tables[1].get(0x0A090000, 16) is not None
    assert a.rt.get(0x0A090000, 16) is None
    out = ok(a, "netstat -rn -F 1")
    assert out.startswith("Routing tables (fib: 1)\n") and "10.9.0.0/16" in out
    assert "10.9.0.0/16" not in ok(a, "netstat -rn")
    ok(a, "route -F 1 add default -interface epair0a")
    assert ok(a, "route -F 1 flush") == ""  # interface routes stay
    ok(a, "route -F 1 add 10.10.0.0/16 10.9.0.1")
    assert ok(a, "setfib 1 route flush") == f"{'10.10.0.0/16':<20} {'10.9.0.1':<20} done\n"
    assert a.route.tables[1].get(0x0A0A0000, 16) is None
    assert a.route.tables[1].get(0, 0) is not None
    assert ok(a, "route delete 10.9.0.0/16 -fib 1") == "delete net 10.9.0.0\n"
    assert ok(a, "route add 10.12.0.0/16 -interface epair0a -fib 0,1") == (
        "add net 10.12.0.0: gateway epair0a fib 0\n"
        "add net 10.12.0.0: gateway epair0a fib 1\n")
    assert all(t.get(0x0A0C0000, 16) is not None for t in a.route.tables)
    assert ok(a, "route delete 10.12.0.0/16 -fib 0-1").count("delete net") == 2
    assert a.cmd("route add 10.9.0.0/16 10.0.0.2 -fib 2").output == \
        "route: fib 2 is not valid (net.fibs=2)\n"
    assert a.cmd("netstat -rn -F 2").status == 64


def test_gateway_route_flags_on_change(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, a, _ = pair
    ok(a, "route add 10.11.0.0/16 10.0.0.2")
    ok(a, "route change 10.11.0.0/16 -interface epair0a")
    route = a.rt.get(0x0A0B0000, 16)
    assert not route.flags & RTF_GATEWAY and route.ifp.name == "epair0a"
