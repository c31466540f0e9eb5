"""gif(4): IPv4 in IPv4 between vnets, ifconfig syntax and output, nesting and loops."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import add_route, connect
from vimage.wire import ipv4

# the helpers shared by the tunnel tests (tests are not a package: load it by path)
_spec = importlib.util.spec_from_file_location("tunnel_util",
                                               Path(__file__).with_name("tunnel_util.py"))
tu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(tu)  # type: ignore[union-attr]
INNER, OUTER, ok, sites, tcp_transfer = tu.INNER, tu.OUTER, tu.ok, tu.sites, tu.tcp_transfer


def test_ifconfig_shows_tunnel_and_point_to_point_address():
    _, a, _ = sites("gif")
    assert ok(a, "ifconfig gif0").splitlines() == [
        "gif0: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> metric 0 mtu 1280",
        "\toptions=600703<RXCSUM,TXCSUM,TSO4,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6>",  # offloads
        "\ttunnel inet 192.0.2.1 --> 192.0.2.2",
        "\tinet 10.0.0.1 --> 10.0.0.2 netmask 0xffffffff",
        "\tgroups: gif",
    ]
    routes = ok(a, "netstat -rn")
    assert any(line.split()[0] == "10.0.0.2" and line.split()[-1] == "gif0"
               for line in routes.splitlines()[1:] if line.strip())


def test_create_with_unit_and_without_and_destroy():
    _, a, _ = sites("gif")
    assert ok(a, "ifconfig gif create").strip() == "gif1"
    assert ok(a, "ifconfig gif7 create").strip() == "gif7"
    assert a.cmd("ifconfig gif7 create").status == 1
    fresh = ok(a, "ifconfig gif1")
    assert fresh.splitlines()[0] == "gif1: flags=8010<POINTOPOINT,MULTICAST> metric 0 mtu 1280"
    assert "tunnel" not in fresh
    ok(a, "ifconfig gif7 destroy")
    assert "gif7" not in a.ifaces


def test_ping_and_tcp_across_gif():
    kernel, a, b = sites("gif")
    assert " 0.0% packet loss" in ok(a, f"ping -c 3 {INNER[1]}")
    outer = open_capture(a.ifaces["epair0a"], keep=True)
    assert len(tcp_transfer(a, b, INNER[1], 200_000)) == 200_000
    outer.close()
    # on the Internet link: IPv4 protocol 4 between the outer addresses, inner inside
    frame = outer.packets[5][1]
    hdr = ipv4.parse(frame[14:])
    assert hdr.proto == 4 and {ipv4.ntoa(hdr.src), ipv4.ntoa(hdr.dst)} == set(OUTER)
    inner = ipv4.parse(frame[14 + hdr.header_len:])
    assert {ipv4.ntoa(inner.src), ipv4.ntoa(inner.dst)} == set(INNER) and inner.proto == 6
    assert hdr.ttl == 30  # net.inet.ip.gifttl
    gif = b.ifaces["gif0"]
    assert gif.ipackets > 100 and gif.ierrors == 0
    assert kernel.sched.errors == 0


def test_minus_tunnel_stops_traffic_and_unmatched_packets_get_protocol_unreachable():
    _, a, b = sites("gif")
    ok(b, "ifconfig gif0 -tunnel")
    assert "tunnel" not in ok(b, "ifconfig gif0")
    out = a.cmd(f"ping -c 1 {INNER[1]}").output
    assert "100.0% packet loss" in out
    assert b.gif.stats.nomatch == 1
    assert b.ip.stats.noproto == 1  # raw IP had no taker: protocol unreachable sent
    assert a.icmp.stats.inhist[3] == 1


def test_nesting_gif_over_gif_is_refused_by_default_and_allowed_by_sysctl():
    kernel, a, b = sites("gif")
    # a second tunnel whose outer addresses are the first tunnel's inner ones
    for vnet, (here, there), (me, peer) in ((a, INNER, ("10.9.0.1", "10.9.0.2")),
                                            (b, INNER[::-1], ("10.9.0.2", "10.9.0.1"))):
        ok(vnet, "ifconfig gif1 create")
        ok(vnet, f"ifconfig gif1 tunnel {here} {there}")
        ok(vnet, f"ifconfig gif1 inet {me} {peer}")
    assert "100.0% packet loss" in a.cmd("ping -c 2 10.9.0.2").output
    assert a.gif.stats.nesting == 2 and a.ifaces["gif0"].oerrors == 2
    for vnet in (a, b):
        ok(vnet, "sysctl net.link.gif.max_nesting=2")
    assert " 0.0% packet loss" in ok(a, "ping -c 2 10.9.0.2")
    assert kernel.sched.errors == 0


def test_outer_route_through_the_tunnel_itself_is_detected_not_looped():
    kernel, a, _ = sites("gif")
    ok(a, "ifconfig gif0 -tunnel")
    ok(a, "ifconfig gif0 tunnel 192.0.2.1 10.0.0.2")  # outer destination behind itself
    ok(a, "sysctl net.link.gif.max_nesting=8")
    assert "100.0% packet loss" in a.cmd("ping -c 2 10.0.0.2").output
    assert a.gif.stats.loops == 2
    assert a.ifaces["gif0"].oerrors == 2
    assert kernel.sched.errors == 0


def test_two_tunnels_with_the_same_addresses_are_refused():
    _, a, _ = sites("gif")
    ok(a, "ifconfig gif1 create")
    result = a.cmd("ifconfig gif1 tunnel 192.0.2.1 192.0.2.2")
    assert result.status == 1 and "SIOCSIFPHYADDR" in result.output


def test_destroying_the_vnet_leaves_nothing_behind():
    kernel, a, b = sites("gif")
    ok(a, f"ping -c 1 {INNER[1]}")
    gif = a.ifaces["gif0"]
    kernel.destroy("a")
    assert kernel.sched.pending_timers(a) == 0
    assert not a.gif.softcs and gif.flags == 0 and gif.dst == 0
    assert "100.0% packet loss" in b.cmd(f"ping -c 1 {INNER[0]}").output


def test_moving_a_gif_drops_its_tunnel_and_addresses():
    kernel, a, _ = sites("gif")
    c = kernel.create("c")
    ok(a, "ifconfig gif0 vnet c")
    gif = c.ifaces["gif0"]
    assert gif.dst == 0 and gif.peers == {} and not a.gif.softcs
    assert "tunnel" not in ok(c, "ifconfig gif0")


def test_point_to_point_address_replace_alias_delete():
    _, a, _ = sites("gif")
    ok(a, "ifconfig gif0 inet 10.1.0.1 10.1.0.2 netmask 255.255.255.0")
    lines = ok(a, "ifconfig gif0").splitlines()
    assert "\tinet 10.1.0.1 --> 10.1.0.2 netmask 0xffffffff" in lines
    assert not any("10.0.0.1" in line for line in lines)  # replaced
    ok(a, "ifconfig gif0 inet 10.2.0.1 10.2.0.2 alias")
    assert "\tinet 10.1.0.1 --> 10.1.0.2 netmask 0xffffffff" in ok(a, "ifconfig gif0")
    ok(a, "ifconfig gif0 inet 10.1.0.1 delete")
    out = ok(a, "ifconfig gif0")
    assert "10.1.0.1" not in out and "\tinet 10.2.0.1 --> 10.2.0.2 netmask 0xffffffff" in out
    assert "10.1.0.2" not in ok(a, "netstat -rn")  # the peer route went with it


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_ip_in_ip(tmp_path):
    _, a, _ = sites("gif")
    path = str(tmp_path / "outer.pcap")
    with open_capture(a.ifaces["epair0a"], path, filter="proto 4"):
        ok(a, f"ping -c 2 {INNER[1]}")
    rows = tu.tshark(path, "frame.protocols", "ip.proto", "ip.ttl")
    assert len(rows) == 4
    assert all(r[0] == "eth:ethertype:ip:ip:icmp:data" and r[1].startswith("4,1")
               for r in rows), rows


def test_overlay_across_a_router_decrements_only_the_outer_ttl():
    kernel = Kernel(clock="virtual", seed=2)
    a, r, b = kernel.create("a"), kernel.create("r"), kernel.create("b")
    connect(a, "198.51.100.1/24", r, "198.51.100.254/24")
    connect(r, "203.0.113.254/24", b, "203.0.113.1/24")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    add_route(a, "default", "198.51.100.254")
    add_route(b, "default", "203.0.113.254")
    for v, here, there, me, peer in ((a, "198.51.100.1", "203.0.113.1", "10.0.0.1", "10.0.0.2"),
                                     (b, "203.0.113.1", "198.51.100.1", "10.0.0.2", "10.0.0.1")):
        ok(v, f"ifconfig gif0 create tunnel {here} {there}")
        ok(v, f"ifconfig gif0 inet {me} {peer}")
    out = ok(a, "ping -c 2 10.0.0.2")
    assert "64 bytes from 10.0.0.2: icmp_seq=0 ttl=64" in out  # the router is not a hop
    assert r.ip.stats.forward == 4  # it forwarded the outer packets
    assert len(tcp_transfer(a, b, "10.0.0.2", 50_000)) == 50_000
