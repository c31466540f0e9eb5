"""Tunnels over and carrying IPv6 against the Linux kernel through TAP: gif carrying
IPv6 over IPv4 to a Linux `sit` device (protocol 41), gif over IPv6 to `ip6tnl`
(ip6ip6 and ipip6: next headers 41 and 4) and gre over IPv6 to `ip6gre`, pinged both
ways. The outer link is the `pair` fixture's 10.9.0.1 (vnet) - 10.9.0.2 (Linux), with
2001:db8:9::1 - 2001:db8:9::2 added for an IPv6 outer. Each test skips, naming the
module, when this Linux kernel lacks the tunnel type."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Pair

PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")
US4, LINUX4 = "10.9.0.1", "10.9.0.2"
US6, LINUX6 = "2001:db8:9::1", "2001:db8:9::2"
IN4 = ("10.12.0.1", "10.12.0.2")
IN6 = ("2001:db8:12::1", "2001:db8:12::2")


def _ok(pair: Pair, line: str) -> str:
    res = pair.vnet.cmd(line)
    assert res.status == 0, f"{line}: {res.output}"
    return res.output


def _linux_tunnel(pair: Pair, module: str, *args: str) -> None:
    try:
        pair.lab.ip(pair.link.ns, *args)
    except AssertionError as exc:
        if "No such device" in str(exc) or "Unknown device type" in str(exc):
            pytest.skip(f"this Linux kernel has no {module} (module {module} is not available)")
        raise
    pair.lab.ip(pair.link.ns, "link", "set", "t6", "up")


def _outer6(pair: Pair) -> None:
    """IPv6 on the TAP link, without DAD on either side."""
    _ok(pair, "sysctl net.inet6.ip6.dad_count=0")
    _ok(pair, f"ifconfig {pair.link.tap.name} inet6 {US6}/64")
    pair.lab.ip(pair.link.ns, "addr", "add", f"{LINUX6}/64", "dev", pair.link.dev, "nodad")


def _linux_addrs(pair: Pair, v4: bool, v6: bool) -> None:
    ns = pair.link.ns
    if v4:
        pair.lab.ip(ns, "addr", "add", IN4[1], "peer", IN4[0], "dev", "t6")
    if v6:
        pair.lab.ip(ns, "addr", "add", IN6[1], "peer", IN6[0], "dev", "t6", "nodad")


def _ping(pair: Pair, ours: str, theirs: str) -> None:
    tool = "ping6" if ":" in theirs else "ping"
    res = pair.vnet.cmd(f"{tool} -c 3 -i 0.2 {theirs}")
    assert res.status == 0 and " 0.0% packet loss" in res.output, res.output
    out = pair.lab.run(pair.link.ns, pair.lab.need("ping"), "-c", "3", *PING_FAST, ours)
    assert out.returncode == 0 and "3 received" in out.stdout, out.stdout + out.stderr


def test_gif_ipv6_in_ipv4_to_linux_sit(pair: Pair) -> None:
    _linux_tunnel(pair, "sit", "tunnel", "add", "t6", "mode", "sit", "local", LINUX4,
                  "remote", US4)
    _linux_addrs(pair, v4=False, v6=True)
    _ok(pair, f"ifconfig gif create tunnel {US4} {LINUX4}")
    _ok(pair, f"ifconfig gif0 inet6 {IN6[0]} {IN6[1]} prefixlen 128")
    _ping(pair, IN6[0], IN6[1])
    assert pair.vnet.ifaces["gif0"].ierrors == 0


@pytest.mark.parametrize("mode", ["ip6ip6", "ipip6"])
def test_gif_over_ipv6_to_linux_ip6tnl(pair: Pair, mode: str) -> None:
    _outer6(pair)
    _linux_tunnel(pair, "ip6_tunnel", "-6", "tunnel", "add", "t6", "mode", mode,
                  "local", LINUX6, "remote", US6)
    _ok(pair, f"ifconfig gif create tunnel {US6} {LINUX6}")
    if mode == "ip6ip6":
        _linux_addrs(pair, v4=False, v6=True)
        _ok(pair, f"ifconfig gif0 inet6 {IN6[0]} {IN6[1]} prefixlen 128")
        _ping(pair, IN6[0], IN6[1])
    else:
        _linux_addrs(pair, v4=True, v6=False)
        _ok(pair, f"ifconfig gif0 inet {IN4[0]} {IN4[1]}")
        _ping(pair, IN4[0], IN4[1])
    assert pair.vnet.ifaces["gif0"].ierrors == 0


def test_gre_over_ipv6_to_linux_ip6gre(pair: Pair) -> None:
    _outer6(pair)
    _linux_tunnel(pair, "ip6_gre", "link", "add", "t6", "type", "ip6gre", "local", LINUX6,
                  "remote", US6)
    _linux_addrs(pair, v4=True, v6=True)
    _ok(pair, f"ifconfig gre create tunnel {US6} {LINUX6}")
    _ok(pair, f"ifconfig gre0 inet {IN4[0]} {IN4[1]}")
    _ok(pair, f"ifconfig gre0 inet6 {IN6[0]} {IN6[1]} prefixlen 128")
    _ping(pair, IN4[0], IN4[1])
    _ping(pair, IN6[0], IN6[1])
    assert pair.vnet.ifaces["gre0"].ierrors == 0
