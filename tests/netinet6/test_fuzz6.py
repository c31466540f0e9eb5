"""Malformed IPv6 input: headers, extension header chains, ICMPv6 and ND messages with
garbage options, fragments. Whatever the bytes, nothing raises out of the kernel loop,
no other vnet is touched, and the neighbour cache and reassembly stay bounded."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vimage.netinet6 import in6
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

from .conftest import A1, A2, inject, pair

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

NXT = st.sampled_from([0, 6, 17, 43, 44, 58, 59, 60, 253])
ICMP_TYPES = st.sampled_from([1, 2, 3, 4, 128, 129, 133, 134, 135, 136, 137, 143, 200])
ADDRS = st.sampled_from([A1, A2, 0, 1, wip6.ALL_NODES, wip6.solicited_node(A2),
                         wip6.aton("fe80::1"), wip6.aton("::ffff:1.2.3.4"), 2**128 - 1])


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    src, dst = draw(ADDRS), draw(st.sampled_from([A2, wip6.ALL_NODES,
                                                   wip6.solicited_node(A2), A1]))
    kind = draw(st.sampled_from(["raw", "icmp6", "chain"]))
    if kind == "raw":
        body = draw(st.binary(max_size=120))
        nxt = draw(NXT)
    elif kind == "icmp6":
        type_ = draw(ICMP_TYPES)
        body = w6.build(type_, draw(st.integers(0, 3)), draw(st.integers(0, 2**32 - 1)),
                        draw(st.binary(max_size=100)), src, dst)
        nxt = 58
    else:
        body = draw(st.binary(max_size=60))
        nxt = draw(NXT)
        for _ in range(draw(st.integers(1, 4))):
            hdr = draw(st.sampled_from([0, 43, 44, 60]))
            if hdr == 44:
                ext = wip6.build_fragment(nxt, draw(st.integers(0, 8191)) * 8, draw(st.booleans()),
                                          draw(st.integers(0, 3)))
            elif hdr == 43:
                ext = wip6.build_routing(nxt, draw(st.integers(0, 4)), draw(st.integers(0, 2)))
            else:
                ext = wip6.build_options_header(nxt, draw(st.binary(max_size=14)))
            body, nxt = ext + body, hdr
    pkt = bytearray(wip6.build(src, dst, nxt, body, hlim=draw(st.sampled_from([0, 1, 64, 255]))))
    if draw(st.booleans()):  # damage a byte of the header or what follows
        at = draw(st.integers(0, len(pkt) - 1))
        pkt[at] = draw(st.integers(0, 255))
    return bytes(pkt[:draw(st.integers(0, len(pkt)))]) if draw(st.booleans()) else bytes(pkt)


@FUZZ
@given(st.lists(packets(), min_size=1, max_size=8))
def test_malformed_ipv6_never_breaks_the_loop(frames):
    p = pair()
    other = p.kernel.create("other")
    before = other.ip6.stats.total
    for frame in frames:
        inject(p.eb, frame)
    p.kernel.run(70)  # past every reassembly and ND timer
    assert p.kernel.sched.errors == 0, p.kernel.sched.last_error
    assert other.ip6.stats.total == before
    assert p.b.ip6.reass is None or not p.b.ip6.reass.queues
    assert len(in6.ifdata(p.eb).nd) <= p.b.nd6.nd6_maxentries
    # and b still answers
    assert p.a.cmd("ping6 -c 1 2001:db8:1::2").ok


@FUZZ
@given(st.binary(max_size=80), st.sampled_from([135, 136, 133, 134, 137]))
def test_nd_messages_with_garbage_options(options, type_):
    p = pair()
    dst = wip6.solicited_node(A2) if type_ == 135 else wip6.ALL_NODES
    body = A2.to_bytes(16, "big") + options
    if type_ == 137:
        body += A1.to_bytes(16, "big")
    msg = w6.build(type_, 0, 0, body, A1, dst)
    inject(p.eb, wip6.build(A1, dst, 58, msg, hlim=255))
    p.kernel.run(1)
    assert p.kernel.sched.errors == 0, p.kernel.sched.last_error
