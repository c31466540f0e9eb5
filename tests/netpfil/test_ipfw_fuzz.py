"""Junk through a router running a rich ruleset: whatever the bytes (a valid IPv4 header
around them, so they reach ipfw), nothing raises out of the kernel loop (the suite-wide
fixture fails the test if it does), and the router keeps forwarding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vimage.kernel import Kernel
from vimage.topo import router_chain
from vimage.wire.checksum import checksum
from vimage.wire.ethernet import ETHERTYPE_IP_BYTES
from vimage.wire.ipv4 import HEADER, aton

from .conftest import B, Trio

RULES = ("add 10 count log ip from any to any", "add 20 check-state",
         "add 30 allow tcp from any to any setup keep-state",
         "add 40 allow udp from any to any keep-state", "add 45 count ip from any to any frag",
         "add 50 count tcp from any to any tcpoptions mss,!sack tcpflags syn,!ack",
         "add 55 reset tcp from any to any 81", "add 56 unreach port udp from any to any 99",
         "add 60 allow icmp from any to any icmptypes 0,3,8,11",
         "add 70 allow tcp from any to any established",
         "add 80 skipto 100 ip from table(t) to any", "add 90 deny log ip from any to any",
         "add 100 allow ip from any to any limit src-addr 3")


def _packet(proto: int, flags: int, frag: int, ttl: int, body: bytes) -> bytes:
    total = 20 + len(body)
    hdr = HEADER.pack(0x45, 0, total, 7, frag, ttl, proto, 0, aton("10.0.0.1"), aton(B))
    return hdr[:10] + checksum(hdr).to_bytes(2, "big") + hdr[12:] + body


@settings(max_examples=60, deadline=None)
@given(proto=st.sampled_from((1, 6, 17, 47, 0, 255)),
       frag=st.sampled_from((0, 0x2000, 0x0001, 0x2003, 0x4000)),
       ttl=st.integers(0, 255), body=st.binary(max_size=80))
def test_junk_through_the_firewall(proto, frag, ttl, body):
    k = Kernel(clock="virtual", seed=1)
    t = Trio(k, *router_chain(k, 1, name="z"))
    t.fw(t.r, "table t add 10.0.0.0/8", *RULES)
    t.r.cmd("sysctl net.inet.ip.fw.verbose=1")
    assert t.ping(t.a, B)  # resolves ARP everywhere
    rin = t.r.ifaces["epair0b"]
    frame = t.r.ifaces["epair0b"].mac + t.a.ifaces["epair0a"].mac + ETHERTYPE_IP_BYTES
    seen = t.r.ipfw.rules[0].pcnt
    k.sched.queue.append((rin, frame + _packet(proto, 0, frag, ttl, body)))
    k.run(1)
    assert k.sched.errors == 0
    assert t.r.ipfw.rules[0].pcnt > seen  # it reached ipfw
    assert t.ping(t.a, B, seq=2)
