"""FreeBSD's tests/sys/netinet/ip_reass_test.c, ported: fragments built with scapy are
injected on a vnet's interface and the ip counters checked as the ATF cases check them
(plus the exact counts ip_reass() gives, sys/netinet/ip_reass.c)."""

from __future__ import annotations

import pytest
from scapy.all import IP, Ether, raw

from vimage.kernel import Kernel
from vimage.topo import router_chain

ADDR = "10.0.0.1"
SRC = "10.0.0.9"


@pytest.fixture
def host():
    k = Kernel(clock="virtual", seed=17)
    a, _b = router_chain(k, 0)
    return k, a, a.ifaces["epair0a"]


def _frag(ifp, *, ident: int, off: int, mf: bool, payload: bytes, proto: int = 0) -> bytes:
    """One fragment as alloc_lopacket makes it: `off` in 8-byte units, ttl 1."""
    pkt = IP(src=SRC, dst=ADDR, id=ident, frag=off, flags="MF" if mf else 0, ttl=1,
             proto=proto) / payload
    return raw(Ether(dst=ifp.mac, src="02:00:00:00:00:99") / pkt)


def _delta(vnet, before: dict[str, int], *names: str) -> dict[str, int]:
    return {n: getattr(vnet.ip.stats, n) - before[n] for n in names}


def _snap(vnet) -> dict[str, int]:
    st = vnet.ip.stats
    return {n: getattr(st, n) for n in ("fragdropped", "toosmall", "toolong", "fragments",
                                        "fragtimeout", "reassembled")}


def test_multiple_last_fragments(host):
    """ip_reass__multiple_last_fragments: after a last fragment, another last fragment
    ending elsewhere, an MF fragment past it, an overlapping one and a longer one at the
    same offset are each dropped (fragdropped), and the queue stays."""
    _k, a, ifp = host
    ipid = 0x1234
    ifp.input(_frag(ifp, ident=ipid, off=0x10, mf=False, payload=b"\x01" * 16))
    cases = (
        dict(off=0x20, mf=False, payload=b"\x02" * 16),  # packet2: a second end
        dict(off=0x20, mf=True, payload=b"\x02" * 16),  # packet2 with MF, past the end
        dict(off=0x8, mf=False, payload=b"\x03" * 16),  # packet3: before, another end
        dict(off=0x10, mf=False, payload=b"\x04" * 32),  # packet4: same offset, longer
    )
    for case in cases:
        before = _snap(a)
        ifp.input(_frag(ifp, ident=ipid, **case))
        assert _delta(a, before, "fragdropped", "fragments") == {"fragdropped": 1,
                                                                "fragments": 1}
    assert len(a.ip.reass) == 1  # only the bad fragments went, not the queue
    q = next(iter(a.ip.reass.queues.values()))
    assert [(f[0], len(f[1])) for f in q.frags] == [(128, 16)]


def test_zero_length_fragment(host):
    """ip_reass__zero_length_fragment: an empty fragment, with MF or without (a
    zero-length last fragment), is counted toosmall and fragdropped."""
    _k, a, ifp = host
    for ident, mf in ((0x4321, True), (~0x4321 & 0xFFFF, False)):
        before = _snap(a)
        ifp.input(_frag(ifp, ident=ident, off=0x10, mf=mf, payload=b""))
        assert _delta(a, before, "toosmall", "fragdropped", "fragments") == {
            "toosmall": 1, "fragdropped": 1, "fragments": 0}
    assert a.ip.reass is None or len(a.ip.reass) == 0


def test_large_fragment(host):
    """ip_reass__large_fragment: 16 + (0x1fff << 3) > IP_MAXPACKET, with MF or without:
    toolong and fragdropped."""
    _k, a, ifp = host
    for mf in (True, False):
        before = _snap(a)
        ifp.input(_frag(ifp, ident=0x777, off=0x1FFF, mf=mf, payload=b"\x05" * 16))
        assert _delta(a, before, "toolong", "fragdropped") == {"toolong": 1, "fragdropped": 1}
    assert a.ip.reass is None or len(a.ip.reass) == 0


def test_inner_fragment_not_multiple_of_eight_is_toosmall(host):
    _k, a, ifp = host
    ifp.input(_frag(ifp, ident=9, off=0, mf=True, payload=b"x" * 12))
    assert a.ip.stats.toosmall == 1 and a.ip.stats.fragdropped == 1


def test_overlaps_resolved_as_ip_reass(host):
    """A later fragment keeps what precedes it (it loses the overlap) and wins over what
    follows it (trimmed); a held fragment it covers entirely is dropped and counted."""
    _k, a, ifp = host
    rx = a.socket(2, 3, 253)  # a raw socket for the experimental protocol 253
    rx.settimeout(1)
    ident = 0x55

    def put(off: int, mf: bool, data: bytes) -> None:
        ifp.input(_frag(ifp, ident=ident, off=off, mf=mf, payload=data, proto=253))

    put(0, True, b"A" * 16)  # [0, 16)
    put(3, True, b"C" * 8)  # [24, 32): covered by the next one entirely
    put(2, True, b"B" * 24)  # [16, 40): drops C
    assert a.ip.stats.fragdropped == 1
    put(1, True, b"D" * 16)  # [8, 24): keeps A's [8, 16), wins over B's [16, 24)
    put(5, False, b"E" * 8)  # [40, 48): the end
    pkt = rx.recv(2000)
    assert pkt[20:] == b"A" * 16 + b"D" * 8 + b"B" * 16 + b"E" * 8
    assert a.ip.stats.reassembled == 1 and a.ip.stats.fragdropped == 1


def test_duplicate_fragment_dropped_alone(host):
    _k, a, ifp = host
    rx = a.socket(2, 3, 253)
    rx.settimeout(1)
    first = _frag(ifp, ident=3, off=0, mf=True, payload=b"a" * 8, proto=253)
    ifp.input(first)
    ifp.input(first)
    assert a.ip.stats.fragdropped == 1 and len(a.ip.reass) == 1
    ifp.input(_frag(ifp, ident=3, off=1, mf=False, payload=b"b" * 8, proto=253))
    assert rx.recv(100)[20:] == b"a" * 8 + b"b" * 8


def test_too_many_fragments_drop_the_queue(host):
    """maxfragsperpacket: n + 1 fragments may arrive (the last can complete it); past
    that an incomplete queue is dropped, each fragment held counted in fragdropped."""
    _k, a, ifp = host
    a.sysctl("net.inet.ip.maxfragsperpacket", 2)
    for off in (0, 2, 4):  # holes in between: never complete
        ifp.input(_frag(ifp, ident=8, off=off, mf=True, payload=b"z" * 8))
    assert a.ip.stats.fragdropped == 3 and len(a.ip.reass) == 0


def test_maxfragpackets_zero_refuses_fragments(host):
    _k, a, ifp = host
    a.sysctl("net.inet.ip.maxfragpackets", 0)
    ifp.input(_frag(ifp, ident=8, off=0, mf=True, payload=b"z" * 8))
    assert a.ip.stats.fragments == 1 and a.ip.stats.fragdropped == 1
    assert a.ip.reass is None or len(a.ip.reass) == 0


def _ecn_frag(ifp, *, ident: int, off: int, mf: bool, payload: bytes, tos: int) -> bytes:
    pkt = IP(src=SRC, dst=ADDR, id=ident, frag=off, flags="MF" if mf else 0, tos=tos,
             proto=253) / payload
    return raw(Ether(dst=ifp.mac, src="02:00:00:00:00:99") / pkt)


def test_ecn_ce_mixed_with_not_ect_is_dropped(host):
    """RFC 3168 5.3 as ip_reass: a CE fragment in a not-ECT datagram (or the reverse) is
    dropped; CE on an ECT datagram's fragment marks the whole datagram."""
    _k, a, ifp = host
    ifp.input(_ecn_frag(ifp, ident=1, off=0, mf=True, payload=b"a" * 8, tos=0))
    ifp.input(_ecn_frag(ifp, ident=1, off=1, mf=False, payload=b"b" * 8, tos=3))
    assert a.ip.stats.fragdropped == 1 and a.ip.stats.reassembled == 0
    rx = a.socket(2, 3, 253)
    rx.settimeout(1)
    ifp.input(_ecn_frag(ifp, ident=2, off=0, mf=True, payload=b"a" * 8, tos=2))  # ECT(0)
    ifp.input(_ecn_frag(ifp, ident=2, off=1, mf=False, payload=b"b" * 8, tos=3))  # CE
    got = rx.recv(100)
    assert got[1] & 3 == 3 and got[20:] == b"a" * 8 + b"b" * 8
