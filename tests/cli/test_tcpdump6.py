"""tcpdump's IPv6 decoding (print-ip6.c, print-icmp6.c) and IPv6 filters, live in
virtual time and from pcap files written by scapy."""

from __future__ import annotations

import logging

from scapy.all import (
    TCP,
    UDP,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrFragment,
    wrpcap,
)
from tests.netinet6.conftest import A1, A2, DAD_DONE, echo, link

from vimage.cli.traceroute6 import udp6
from vimage.kernel import Kernel
from vimage.wire import ipv6 as wip6

logging.getLogger("scapy").setLevel(logging.ERROR)


def lab():  # type: ignore[no-untyped-def]
    k = Kernel(clock="virtual", seed=2)
    a, b = k.create("a"), k.create("b")
    ea, eb = link(a, "2001:db8:1::1/64", b, "2001:db8:1::2/64")
    k.run(DAD_DONE)
    return k, a, b, ea, eb


def packets(out: str) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in out.splitlines() if ln[:1].isdigit()
            and not ln.endswith(("captured", "filter", "kernel"))]


def traffic(a) -> None:  # type: ignore[no-untyped-def]
    a.ip6.output(58, A1, A2, echo(7, 1, A1, A2))
    a.ip6.output(17, A1, A2, udp6(5000, 7000, b"hello", A1, A2))


def test_live_nd_echo_and_udp_lines():
    k, a, b, ea, eb = lab()
    k.call_later(0.5, traffic, a)
    out = a.cmd("tcpdump -i epair0a -c 5 not multicast or icmp6").output
    lines = packets(out)
    ll_b = wip6.ntoa(next(ia.addr for ia in __import__("vimage.netinet6.in6",
                                                        fromlist=["addrs"]).addrs(eb)
                          if wip6.is_link_local(ia.addr)))
    assert ("IP6 2001:db8:1::1 > ff02::1:ff00:2: ICMP6, neighbor solicitation, "
            "who has 2001:db8:1::2, length 32") in lines
    assert ("IP6 2001:db8:1::2 > 2001:db8:1::1: ICMP6, neighbor advertisement, "
            "tgt is 2001:db8:1::2, length 32") in lines
    assert "IP6 2001:db8:1::1 > 2001:db8:1::2: ICMP6, echo request, id 7, seq 1, length 12" \
        in lines
    assert "IP6 2001:db8:1::2 > 2001:db8:1::1: ICMP6, echo reply, id 7, seq 1, length 12" \
        in lines
    assert "IP6 2001:db8:1::1.5000 > 2001:db8:1::2.7000: UDP, length 5" in lines
    assert ll_b


def test_filters_ip6_icmp6_host_net_src_dst():
    k, a, b, ea, eb = lab()
    # NS, NA, echo request and reply, the datagram and b's ICMPv6 error about it (no
    # listener: a port unreachable, or without UDP over IPv6 a parameter problem)
    for expr, n in (("icmp6 and host 2001:db8:1::2", 4), ("udp", 1),
                    ("src host 2001:db8:1::1 and ip6", 3), ("dst net 2001:db8:1::/64", 5),
                    ("ip", 0), ("net 2001:db9::/32", 0), ("ip6 proto 17", 1)):
        k.call_later(0.5, traffic, a)
        res = a.cmd(f"tcpdump -i epair0a --duration 1 {expr}")
        assert res.ok, res.output
        assert len(packets(res.output)) == n, (expr, res.output)
        with k.sched.cond:
            a.nd6.clear()
            b.nd6.clear()


def test_verbose_header():
    k, a, b, ea, eb = lab()
    k.call_later(0.5, lambda: a.ip6.output(58, A1, A2, echo(7, 1, A1, A2), hlim=9))
    lines = packets(a.cmd("tcpdump -v -i epair0a -c 1 icmp6 and host 2001:db8:1::2").output)
    assert lines[0].startswith("IP6 (hlim 255, next-header ICMPv6 (58) payload length: 32) ")


def test_decoding_from_a_file(tmp_path):
    s, d = "2001:db8::1", "2001:db8::2"
    frames = [
        Ether() / IPv6(src="fe80::1", dst="ff02::1", hlim=255) / ICMPv6ND_RA(),
        Ether() / IPv6(src="fe80::1", dst="fe80::2", hlim=255)
        / ICMPv6ND_Redirect(tgt="fe80::9", dst="2001:db8:9::1"),
        Ether() / IPv6(src=s, dst=d) / ICMPv6TimeExceeded() / IPv6(src=d, dst="2001:db8::9"),
        Ether() / IPv6(src=s, dst=d) / ICMPv6PacketTooBig(mtu=1400) / IPv6(src=d, dst=s),
        Ether() / IPv6(src=s, dst=d) / ICMPv6DestUnreach(code=4) / IPv6(src=d, dst=s)
        / UDP(sport=1, dport=33435),
        Ether() / IPv6(src=s, dst=d) / TCP(sport=1234, dport=80, flags="S", seq=1),
        Ether() / IPv6(src=s, dst=d) / IPv6ExtHdrFragment(offset=0, m=1, id=5)
        / ICMPv6EchoRequest(data=b"x" * 64),
        Ether() / IPv6(src=s, dst=d) / IPv6ExtHdrFragment(offset=9, m=0, id=5) / (b"y" * 16),
    ]
    path = tmp_path / "v6.pcap"
    wrpcap(str(path), frames)
    k = Kernel(clock="virtual", seed=1)
    lines = packets(k.base.cmd(f"tcpdump -r {path}").output)
    assert lines == [
        "IP6 fe80::1 > ff02::1: ICMP6, router advertisement, length 16",
        "IP6 fe80::1 > fe80::2: ICMP6, redirect, 2001:db8:9::1 to fe80::9, length 40",
        "IP6 2001:db8::1 > 2001:db8::2: ICMP6, time exceeded in-transit for 2001:db8::9, "
        "length 48",
        "IP6 2001:db8::1 > 2001:db8::2: ICMP6, packet too big, mtu 1400, length 48",
        "IP6 2001:db8::1 > 2001:db8::2: ICMP6, 2001:db8::1 udp port 33435 unreachable, "
        "length 56",
        "IP6 2001:db8::1.1234 > 2001:db8::2.80: Flags [S], seq 1, win 8192, length 0",
        "IP6 2001:db8::1 > 2001:db8::2: frag (0|72) ICMP6, echo request, id 0, seq 0, "
        "length 72",
        "IP6 2001:db8::1 > 2001:db8::2: frag (72|16)",
    ]
    assert len(packets(k.base.cmd(f"tcpdump -r {path} icmp6").output)) == 5
    assert len(packets(k.base.cmd(f"tcpdump -r {path} tcp port 80").output)) == 1
    assert len(packets(k.base.cmd(f"tcpdump -r {path} ip6 multicast").output)) == 1
