"""vxlan over IPv6 against the Linux kernel through TAP: our `vxlan0` (vxlanlocal
2001:db8::1) and a Linux `ip link add vx6 type vxlan id 42 local 2001:db8::2 remote
2001:db8::1 dstport 4789`, pinged both ways; each side learns the other's MAC behind its
IPv6 VTEP. Linux checks the outer UDP checksum (it refuses a zero one unless told
udp6zerocsumrx), so a passing ping also proves ours. The outer link is the `pair`
fixture's TAP with 2001:db8::1 (vnet) - 2001:db8::2 (Linux) added; skips naming the
module when this Linux kernel has no vxlan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vimage.wire.ipv6 import aton as aton6

if TYPE_CHECKING:
    from conftest import Pair

PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")
US6, LINUX6 = "2001:db8::1", "2001:db8::2"
IN = ("10.13.0.1", "10.13.0.2")


def _ok(pair: Pair, line: str) -> str:
    res = pair.vnet.cmd(line)
    assert res.status == 0, f"{line}: {res.output}"
    return res.output


def test_vxlan_over_ipv6_to_linux(pair: Pair) -> None:
    lab, ns = pair.lab, pair.link.ns
    _ok(pair, "sysctl net.inet6.ip6.dad_count=0")
    _ok(pair, f"ifconfig {pair.link.tap.name} inet6 {US6}/64")
    lab.ip(ns, "addr", "add", f"{LINUX6}/64", "dev", pair.link.dev, "nodad")
    try:
        lab.ip(ns, "link", "add", "vx6", "type", "vxlan", "id", "42", "local", LINUX6,
               "remote", US6, "dstport", "4789")
    except AssertionError as exc:
        if "No such device" in str(exc) or "Unknown device type" in str(exc):
            pytest.skip("this Linux kernel has no vxlan (module vxlan is not available)")
        raise
    lab.ip(ns, "addr", "add", f"{IN[1]}/24", "dev", "vx6")
    lab.ip(ns, "link", "set", "vx6", "up")
    _ok(pair, f"ifconfig vxlan create vxlanid 42 vxlanlocal {US6} vxlanremote {LINUX6}")
    _ok(pair, f"ifconfig vxlan0 inet {IN[0]}/24 up")
    res = pair.vnet.cmd(f"ping -c 3 -i 0.2 {IN[1]}")
    assert res.status == 0 and " 0.0% packet loss" in res.output, res.output
    out = lab.run(ns, lab.need("ping"), "-c", "3", *PING_FAST, IN[0])
    assert out.returncode == 0 and "3 received" in out.stdout, out.stdout + out.stderr
    vx = pair.vnet.ifaces["vxlan0"]
    assert vx.ierrors == 0 and vx.ipackets >= 6
    assert any(vtep == aton6(LINUX6) for _, vtep in vx.ftable_entries())
    fdb = lab.run(ns, "bridge", "fdb", "show", "dev", "vx6").stdout.lower()
    assert vx.mac is not None and f"{vx.mac.hex(':')} dst {US6}" in fdb, fdb
