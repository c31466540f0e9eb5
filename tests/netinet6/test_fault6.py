"""Fault-injection partitions apply to IPv6 traffic too (Ip6State.pfil_in)."""

from __future__ import annotations

from tests.netinet6.conftest import routed

from vimage.fault import Faults


def test_partition_blocks_ipv6_between_groups_and_heals():
    net = routed()
    faults = Faults.of(net.kernel)
    assert "1 packets received" in net.h1.cmd("ping6 -c 1 2001:db8:2::2").output
    part = faults.partition([net.h1], [net.h2])
    assert net.h1.ip6.pfil_in is not None and net.r.ip6.pfil_in is None
    res = net.h1.cmd("ping6 -c 1 2001:db8:2::2")
    assert "0 packets received" in res.output
    assert net.h2.ip6.stats.faultdrop == 1 and part.drops == 1
    # the router is outside the partition: both still reach it
    assert "1 packets received" in net.h1.cmd("ping6 -c 1 2001:db8:1::ff").output
    assert "1 packets received" in net.h2.cmd("ping6 -c 1 2001:db8:2::ff").output
    faults.heal(part)
    assert net.h1.ip6.pfil_in is None and net.h2.ip6.pfil_in is None
    assert "1 packets received" in net.h1.cmd("ping6 -c 1 2001:db8:2::2").output


def test_fault_tool_partition_covers_ipv6():
    net = routed()
    res = net.kernel.base.cmd("fault partition h1 h2")
    assert res.ok, res.output
    assert "0 packets received" in net.h2.cmd("ping6 -c 1 2001:db8:1::1").output
    assert net.h1.ip6.stats.faultdrop == 1
