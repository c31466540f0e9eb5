"""Tunnels against the Linux kernel through TAP: a GRE tunnel (with a key) to a Linux
`ip tunnel ... mode gre` device and a VXLAN tunnel to a Linux `vxlan` device, pinged
both ways, with TCP across the GRE one. The outer link is the `pair` fixture's
10.9.0.1 (vnet) - 10.9.0.2 (Linux)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Pair

PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")
US, LINUX = "10.9.0.1", "10.9.0.2"


def _pings_both_ways(pair: Pair, ours: str, theirs: str) -> None:
    res = pair.vnet.cmd(f"ping -c 3 -i 0.2 {theirs}")
    assert res.status == 0 and " 0.0% packet loss" in res.output, res.output
    out = pair.lab.run(pair.link.ns, pair.lab.need("ping"), "-c", "3", *PING_FAST, ours)
    assert out.returncode == 0 and "3 received" in out.stdout, out.stdout + out.stderr


def test_gre_with_key_to_linux(pair: Pair) -> None:
    lab, ns = pair.lab, pair.link.ns
    try:
        lab.ip(ns, "tunnel", "add", "tgre", "mode", "gre", "local", LINUX, "remote", US,
               "key", "42")
    except AssertionError as exc:
        if "No such device" in str(exc) or "Unknown device type" in str(exc):
            pytest.skip("this Linux kernel has no GRE (module ip_gre is not available)")
        raise
    lab.ip(ns, "addr", "add", "10.10.0.2", "peer", "10.10.0.1", "dev", "tgre")
    lab.ip(ns, "link", "set", "tgre", "up")
    pair.ok(f"ifconfig gre create tunnel {US} {LINUX} grekey 42")
    pair.ok("ifconfig gre0 inet 10.10.0.1 10.10.0.2")
    _pings_both_ways(pair, "10.10.0.1", "10.10.0.2")
    pair.tcp_from_linux("10.10.0.1")  # TCP across it: 200 kB from a Linux client
    gre = pair.vnet.ifaces["gre0"]
    assert gre.ierrors == 0 and gre.ipackets > 100


def test_vxlan_to_linux(pair: Pair) -> None:
    lab, ns = pair.lab, pair.link.ns
    lab.ip(ns, "link", "add", "tvx", "type", "vxlan", "id", "42", "local", LINUX,
           "remote", US, "dstport", "4789")
    lab.ip(ns, "addr", "add", "10.11.0.2/24", "dev", "tvx")
    lab.ip(ns, "link", "set", "tvx", "up")
    pair.ok(f"ifconfig vxlan create vxlanid 42 vxlanlocal {US} vxlanremote {LINUX}")
    pair.ok("ifconfig vxlan0 inet 10.11.0.1/24 up")
    _pings_both_ways(pair, "10.11.0.1", "10.11.0.2")
    vx = pair.vnet.ifaces["vxlan0"]
    assert vx.ierrors == 0 and vx.ipackets >= 6
    # we learnt the Linux device's MAC behind its VTEP
    assert any(vtep == int.from_bytes(socket.inet_aton(LINUX), "big")
               for _, vtep in vx.ftable_entries())
    # and Linux learnt ours behind our VTEP
    fdb = lab.run(ns, "bridge", "fdb", "show", "dev", "tvx").stdout.lower()
    assert vx.mac is not None and f"{vx.mac.hex(':')} dst {US}" in fdb, fdb
