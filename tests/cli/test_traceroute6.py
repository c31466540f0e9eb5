"""traceroute6 through a chain of IPv6 routers (virtual time)."""

from __future__ import annotations

import re

from tests.netinet6.conftest import DAD_DONE, link, link_local

from vimage.cli.traceroute6 import udp6
from vimage.kernel import Kernel
from vimage.wire import ipv6 as wip6
from vimage.wire import udp as wudp


def chain():  # type: ignore[no-untyped-def]
    """h1 -- r1 -- r2 -- h2 (2001:db8:1::/64, :12::/64, :2::/64)."""
    k = Kernel(clock="virtual", seed=3)
    h1, r1, r2, h2 = (k.create(n) for n in ("h1", "r1", "r2", "h2"))
    a, b = link(h1, "2001:db8:1::1/64", r1, "2001:db8:1::ff/64")
    c, d = link(r1, "2001:db8:12::1/64", r2, "2001:db8:12::2/64")
    e, f = link(r2, "2001:db8:2::ff/64", h2, "2001:db8:2::2/64")
    for r in (r1, r2):
        r.sysctl("net.inet6.ip6.forwarding", 1)
    k.run(DAD_DONE)
    assert h1.cmd(f"route add -inet6 default {wip6.ntoa(link_local(b))}%{a.name}").ok
    assert h2.cmd(f"route add -inet6 default {wip6.ntoa(link_local(e))}%{f.name}").ok
    assert r1.cmd("route add -inet6 2001:db8:2::/64 2001:db8:12::2").ok
    assert r2.cmd("route add -inet6 2001:db8:1::/64 2001:db8:12::1").ok
    return k, h1, r1, r2, h2


def test_traceroute6_through_two_routers():
    k, h1, r1, r2, h2 = chain()
    res = h1.cmd("traceroute6 -n 2001:db8:2::2")
    assert res.ok, res.output
    lines = res.output.splitlines()
    assert lines[0] == ("traceroute6 to 2001:db8:2::2 (2001:db8:2::2) from 2001:db8:1::1, "
                        "64 hops max, 20 byte packets")
    assert re.fullmatch(r" 1  2001:db8:1::ff  [\d.]+ ms  [\d.]+ ms  [\d.]+ ms", lines[1])
    assert lines[2].startswith(" 2  2001:db8:12::2  ")
    assert lines[3].startswith(" 3  2001:db8:2::2  ")
    assert len(lines) == 4


def test_traceroute6_names_and_timeouts():
    k, h1, r1, r2, h2 = chain()
    r2.sysctl("net.inet6.icmp6.errppslimit", 0)
    assert r2.cmd("sysctl net.inet6.ip6.forwarding=0").ok  # r2 stops forwarding: silence
    res = h1.cmd("traceroute6 -m 3 -q 1 -w 1 2001:db8:2::2")
    lines = res.output.splitlines()
    assert lines[1].startswith(" 1  2001:db8:1::ff (2001:db8:1::ff)  ")
    assert lines[2] == " 2  *" and lines[3] == " 3  *"


def test_traceroute6_usage_and_errors():
    k, h1, r1, r2, h2 = chain()
    assert h1.cmd("traceroute6").status == 64
    assert h1.cmd("traceroute6 -f 9 -m 3 2001:db8:2::2").status == 64
    assert h1.cmd("traceroute6 fe80::1").status == 1
    assert h2.cmd("traceroute6 -n -q 1 2001:db8:77::1").ok  # unreachable: !N or *


def test_udp6_checksum_verifies():
    src, dst = wip6.aton("2001:db8::1"), wip6.aton("2001:db8::2")
    dgram = udp6(40000, 33435, b"abc", src, dst)
    full = wip6.pseudo_sum(src, dst, len(dgram), wip6.NXT_UDP)
    from vimage.wire.checksum import ones_sum
    assert ones_sum(dgram, full) == 0xFFFF
    assert wudp is not None
