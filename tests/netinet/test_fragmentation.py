"""Fragmentation on output and reassembly with timeout and limits."""

import errno
import os

import pytest
from scapy.all import IP, UDP, Ether, raw

from vimage.kernel import Kernel
from vimage.socket.socket import IP_DONTFRAG, IPPROTO_IP
from vimage.topo import router_chain


@pytest.fixture
def chain():
    k = Kernel(clock="virtual", seed=11)
    nodes = router_chain(k, 1)
    a, r, b = nodes
    # the link r -> b is small: r must fragment what it forwards
    r.ifaces["epair1a"].mtu = 576
    b.ifaces["epair1b"].mtu = 576
    return k, a, r, b


def test_fragments_across_small_mtu_link(chain):
    k, a, r, b = chain
    rx = b.socket(2, 2)
    rx.bind(("", 4000))
    rx.settimeout(5)
    payload = os.urandom(3000)
    tx = a.socket(2, 2)
    tx.sendto(payload, ("10.0.1.2", 4000))
    data, (src, _) = rx.recvfrom(65535)
    assert data == payload and src == "10.0.0.1"
    # a splits 3008 bytes of UDP for its 1500 link: 1480 + 1480 + 48; r splits each
    # 1480-byte piece again into 552 + 552 + 376 (576 - 20, multiples of 8)
    assert a.ip.stats.fragmented == 1 and a.ip.stats.ofragments == 3
    assert r.ip.stats.fragmented == 2 and r.ip.stats.ofragments == 6
    assert b.ip.stats.fragments == 7 and b.ip.stats.reassembled == 1
    assert len(b.ip.reass or ()) == 0


def test_sender_fragments_when_its_own_mtu_is_small():
    k = Kernel(clock="virtual", seed=1)
    a, b = router_chain(k, 0)
    a.ifaces["epair0a"].mtu = 1280
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    a.socket(2, 2).sendto(b"q" * 5000, ("10.0.0.2", 9))
    assert rx.recv(9000) == b"q" * 5000
    assert a.ip.stats.fragmented == 1 and a.ip.stats.ofragments == 4


def test_df_gives_emsgsize_locally_and_needfrag_from_router(chain):
    k, a, r, b = chain
    tx = a.socket(2, 2)
    tx.setsockopt(IPPROTO_IP, IP_DONTFRAG, 1)
    with pytest.raises(OSError) as exc:
        tx.sendto(b"x" * 2000, ("10.0.1.2", 9))  # larger than a's own 1500 MTU
    assert exc.value.errno == errno.EMSGSIZE
    icmp = a.socket(2, 3, 1)
    icmp.settimeout(2)
    tx.sendto(b"x" * 1000, ("10.0.1.2", 9))  # fits a's link, not r's 576 link
    pkt = icmp.recv(2000)
    hl = (pkt[0] & 15) * 4
    assert pkt[hl] == 3 and pkt[hl + 1] == 4  # unreachable, needs fragmentation
    assert int.from_bytes(pkt[hl + 6:hl + 8], "big") == 576
    assert r.ip.stats.cantfrag == 1


def _frags(dst_mac, src="10.0.0.9", dst="10.0.0.1", size=2000, ident=77):
    """Fragments of a UDP datagram built and split by scapy (independent of us)."""
    from scapy.all import fragment

    pkt = IP(src=src, dst=dst, id=ident) / UDP(sport=1, dport=5) / (b"z" * size)
    return [raw(Ether(dst=dst_mac, src="02:00:00:00:00:99") / f) for f in fragment(pkt, 600)]


def test_reassembly_of_scapy_fragments_in_any_order():
    k = Kernel(clock="virtual", seed=2)
    a, b = router_chain(k, 0)
    ifp = a.ifaces["epair0a"]
    rx = a.socket(2, 2)
    rx.bind(("", 5))
    frames = _frags(ifp.mac, dst="10.0.0.1")
    for frame in reversed(frames):
        ifp.input(frame)
    assert rx.recv(5000) == b"z" * 2000
    assert a.ip.stats.reassembled == 1


def test_reassembly_timeout_counts_and_answers(chain):
    k, a, r, b = chain
    ifp = b.ifaces["epair1b"]
    b.sysctl("net.inet.ip.fragttl", 10)
    frames = _frags(ifp.mac, src="10.0.1.1", dst="10.0.1.2")
    for frame in frames[:-1]:  # the last fragment never comes
        ifp.input(frame)
    assert len(b.ip.reass) == 1
    k.run(9.9)
    assert b.ip.stats.fragtimeout == 0
    k.run(0.2)
    assert b.ip.stats.fragtimeout == len(frames) - 1
    assert len(b.ip.reass) == 0
    assert k.sched.pending_timers(b) == 0 or all(
        e.timer is not None for e in b.arp.table.values())
    assert b.icmp.stats.outhist[11] == 1  # time exceeded (reassembly) sent


def test_reassembly_limits():
    k = Kernel(clock="virtual", seed=3)
    a, b = router_chain(k, 0)
    ifp = a.ifaces["epair0a"]
    a.sysctl("net.inet.ip.maxfragpackets", 2)
    for ident in range(5):
        ifp.input(_frags(ifp.mac, ident=ident)[0])
    assert len(a.ip.reass) == 2
    # ipq_reuse: each new queue past the limit evicts the oldest, counted as timed out
    assert a.ip.stats.fragtimeout == 3 and a.ip.stats.fragdropped == 0
    assert [key[3] for key in a.ip.reass.queues] == [3, 4]
    a.sysctl("net.inet.ip.maxfragsperpacket", 2)
    frames = _frags(ifp.mac, ident=99, size=3000)
    for frame in frames:
        ifp.input(frame)
    assert (0x0A000009, 0x0A000001, 17, 99) not in a.ip.reass.queues
    assert a.ip.stats.reassembled == 0


def test_later_fragments_carry_only_copied_options():
    """RFC 791: the first fragment keeps every option, the others those with the copied
    bit (here a loose source route, not the record route nor the NOP before it)."""
    from vimage.netinet.reass import fragment

    rr = b"\x07\x07\x04" + bytes(4)
    lsrr = b"\x83\x07\x04" + bytes(4)
    options = b"\x01" + rr + lsrr + b"\x00"  # 16 bytes
    pkt = raw(IP(src="10.0.0.1", dst="10.0.0.2", options=[], proto=17) / (bytes(8) + bytes(600)))
    pkt = bytearray(pkt)
    pkt[0] = 0x40 | (20 + len(options)) >> 2
    pkt[20:20] = options
    pkt[2:4] = len(pkt).to_bytes(2, "big")
    first, *later = fragment(bytes(pkt), 576)
    assert first[20:36] == options
    assert later
    for frag in later:
        assert frag[0] & 0x0F == 7  # 20 + 8: the source route padded to 4 bytes
        assert frag[20:28] == lsrr + b"\x00"
