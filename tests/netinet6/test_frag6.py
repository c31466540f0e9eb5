"""IPv6 fragmentation at the source and reassembly (RFC 8200 4.5, RFC 5722, frag6.c)."""

from __future__ import annotations

from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment

from vimage.netinet6.frag6 import fragment
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

from .conftest import A1, A2, Collector, Heard, echo, inject, pair


def frags(ident: int, pieces: list[tuple[int, bool, bytes]], nxt: int = 58) -> list[bytes]:
    """Fragments of one datagram A1 -> A2: (offset, more, data) each."""
    return [wip6.build(A1, A2, wip6.NXT_FRAGMENT, wip6.build_fragment(nxt, off, more, ident)
                       + data) for off, more, data in pieces]


def test_fragmented_ping6_is_reassembled():
    p = pair()
    res = p.a.cmd("ping6 -c 2 -s 4000 2001:db8:1::2")
    assert res.status == 0, res.output
    assert "4008 bytes from 2001:db8:1::2, icmp_seq=1 hlim=64" in res.output
    a, b = p.a.ip6.stats, p.b.ip6.stats
    assert (a.fragmented, a.ofragments) == (2, 6)
    assert (b.fragments, b.reassembled) == (6, 2)
    assert (b.fragmented, a.reassembled) == (2, 2)  # the replies were cut and joined too


def test_source_fragments_match_scapy():
    pkt = wip6.build(A1, A2, 58, echo(1, 1, A1, A2, bytes(range(256)) * 12))
    pieces = fragment(pkt, 1280, 0xABCDEF01)
    assert [len(f) for f in pieces] == [1280, 1280, 664]
    offsets = []
    for piece in pieces:
        parsed = IPv6(piece)
        frag = parsed[IPv6ExtHdrFragment]
        assert (parsed.nh, frag.nh, frag.id) == (44, 58, 0xABCDEF01)
        assert parsed.plen == len(piece) - 40
        offsets.append((frag.offset * 8, frag.m))
    assert offsets == [(0, 1), (1232, 1), (2464, 0)]  # 1232 = 1280 - 40 - 8
    joined = b"".join(bytes(IPv6(f)[IPv6ExtHdrFragment].payload) for f in pieces)
    assert joined == pkt[40:]


def test_overlap_drops_the_whole_queue():
    p = pair()
    msg = echo(1, 1, A1, A2, b"x" * 40)
    st = p.b.ip6.stats
    first, second = frags(5, [(0, True, msg[:24]), (16, False, msg[16:])])
    inject(p.eb, first)
    inject(p.eb, second)  # bytes 16..24 overlap: RFC 5722
    p.kernel.run(0.01)
    assert (st.fragdropped, st.reassembled) == (2, 0)
    assert p.b.ip6.reass is None or not p.b.ip6.reass.queues
    assert p.b.icmp6.stats.reflect == 0
    # the same datagram without overlap is taken
    for piece in frags(6, [(0, True, msg[:24]), (24, False, msg[24:])]):
        inject(p.eb, piece)
    p.kernel.run(0.01)
    assert (st.reassembled, p.b.icmp6.stats.reflect) == (1, 1)


def test_reassembly_timeout_is_counted_and_reported():
    p = pair()
    heard = Heard(p.a)
    msg = echo(1, 1, A1, A2, b"y" * 40)
    for piece in frags(9, [(0, True, msg[:16]), (32, True, msg[32:40])]):
        inject(p.eb, piece)
    p.kernel.run(59)
    assert p.b.ip6.stats.fragtimeout == 0
    p.kernel.run(1.01)  # IPV6_FRAGTTL: 60 s
    assert p.b.ip6.stats.fragtimeout == 2 and not p.b.ip6.reass.queues
    (exceeded,) = heard.of_type(w6.TIME_EXCEEDED)
    assert exceeded.code == w6.TIME_EXCEED_REASSEMBLY
    # without the first fragment no error is sent (RFC 8200 4.5)
    inject(p.eb, frags(10, [(16, True, msg[16:24])])[0])
    p.kernel.run(61)
    assert p.b.ip6.stats.fragtimeout == 3 and len(heard.of_type(w6.TIME_EXCEEDED)) == 1
    assert not p.b.ip6.reass.queues and p.b.ip6.reass.nfrags == 0


def test_fragment_checks_and_limits():
    p = pair()
    heard = Heard(p.a)
    st = p.b.ip6.stats
    # (an echo request's type first: an error is not sent about an ICMPv6 error)
    inject(p.eb, frags(1, [(0, True, b"\x80" * 12)])[0])  # not a multiple of 8, more follow
    p.kernel.run(0.01)
    (prob,) = heard.of_type(w6.PARAM_PROB)
    assert (prob.code, prob.rest) == (w6.PARAMPROB_HEADER, 4)
    inject(p.eb, frags(2, [(65528, False, b"\x80" * 16)])[0])  # past 65535
    p.kernel.run(0.01)
    assert heard.of_type(w6.PARAM_PROB)[1].rest == 42
    atomic = frags(3, [(0, False, echo(1, 7, A1, A2))])[0]
    inject(p.eb, atomic)  # an atomic fragment is processed at once (RFC 6946)
    p.kernel.run(0.01)
    assert st.atomicfrags == 1 and [m.seq for m in heard.of_type(w6.ECHO_REPLY)] == [7]
    p.b.sysctl("net.inet6.ip6.maxfragpackets", 3)
    p.b.sysctl("net.inet6.ip6.maxfragsperpacket", 2)
    for ident in range(100, 110):
        inject(p.eb, frags(ident, [(0, True, b"q" * 8)])[0])
    assert len(p.b.ip6.reass.queues) == 3 and st.fragoverflow == 7
    for off in (8, 16):
        inject(p.eb, frags(100, [(off, True, b"q" * 8)])[0])
    assert 100 not in {key[2] for key in p.b.ip6.reass.queues} and st.fragoverflow == 8
    assert p.kernel.sched.errors == 0


def test_too_big_for_the_link_with_dontfrag():
    p = pair()
    wire = Collector()
    p.ea.peer = wire
    res = p.a.cmd("ping6 -D -c 1 -s 2000 2001:db8:1::2")
    assert "Message too long" in res.output and p.a.ip6.stats.cantfrag == 1
    assert wire.frames == []
