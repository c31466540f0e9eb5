"""Tunnel GSO: gif, gre and vxlan encapsulate a large TCP segment whole (Linux's
SKB_GSO_IPXIP4/6, SKB_GSO_GRE, SKB_GSO_UDP_TUNNEL), the outer packet crosses
in-process links and routers whole and is decapsulated whole; wherever it must be
resolved it is cut into the packets the tunnel would have sent one by one.

The proof is byte-identity: a transfer captured with tunnel GSO on (the outer
interface has VXLAN_HWTSO, the default) and off (`ifconfig IF -vxlanhwtso`: the tunnel
cuts in software before encapsulating, what the tree did before tunnel GSO) gives the
same frames at the same times, over each tunnel kind, IPv4 and IPv6 outside and inside;
scapy checks every checksum of the captured frames and of resolved packets.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket as pysocket

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Ether
from scapy.layers.vxlan import VXLAN
from tests.net.test_offload_relay import DATA, KB, TUNNELS, checked_layers, ok, transfer

from vimage.kernel import Kernel
from vimage.net import offload
from vimage.net.bpf import open_capture
from vimage.net.ifnet import Ifnet
from vimage.topo import connect
from vimage.vnet import Vnet

INNER = {4: ("10.0.0.1", "10.0.0.2"), 6: ("2001:db8:1::1", "2001:db8:1::2")}
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}


def _joined(gso: bool, seed: int = 1) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet]:
    """a and b with large TCP buffers, joined by an epair over IPv4 and IPv6 (DAD done);
    `gso` False: a's end has -vxlanhwtso."""
    k = Kernel(clock="virtual", seed=seed)
    a, b = k.create("a"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    ea, eb = connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    ok(a, "ifconfig epair0a inet6 2001:db8::1/64")
    ok(b, "ifconfig epair0b inet6 2001:db8::2/64")
    if not gso:
        ok(a, "ifconfig epair0a -vxlanhwtso")
    k.run(3)
    return k, a, b, ea, eb


def tunnel(kind: str, outer: int, gso: bool = True, seed: int = 1,
           ) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet]:
    """a and b joined by an epair (its ends returned), a `kind` tunnel between them over
    IPv`outer` carrying IPv4 and IPv6; `gso` False: a's end has -vxlanhwtso."""
    k, a, b, ea, eb = _joined(gso, seed)
    for vnet, n, m in ((a, 0, 1), (b, 1, 0)):
        here, there = OUTER[outer][n], OUTER[outer][m]
        me4, peer4 = INNER[4][n], INNER[4][m]
        me6, peer6 = INNER[6][n], INNER[6][m]
        if kind == "vxlan":
            ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal {here} vxlanremote {there}")
            ok(vnet, f"ifconfig vxlan0 inet {me4}/24 up")
            ok(vnet, f"ifconfig vxlan0 inet6 {me6}/64")
        else:
            mtu = " mtu 1456" if kind == "gre" and outer == 6 else ""
            ok(vnet, f"ifconfig {kind} create")
            ok(vnet, f"ifconfig {kind}0 tunnel {here} {there}{mtu}")
            ok(vnet, f"ifconfig {kind}0 inet {me4} {peer4}")
            ok(vnet, f"ifconfig {kind}0 inet6 {me6} {peer6} prefixlen 128")
    k.run(3)
    return k, a, b, ea, eb


def captured(kind: str, outer: int, inner: int, where: str, gso: bool) -> tuple[list, int]:
    """The frames (time, bytes) a capture at `where` saw of a 100 KB transfer, and how
    many large segments were cut on the way."""
    k, a, b, ea, eb = tunnel(kind, outer, gso)
    taps = {"ea": ea, "eb": eb, "far": b.ifaces[f"{kind}0"]}
    cap = open_capture(taps[where])
    data = DATA[:100 * KB]
    assert transfer(k, a, b, INNER[inner][1], data=data) == data
    frames = list(cap.packets)
    cap.close()
    assert b.tcp.stats.rcvbadsum == 0 and k.sched.errors == 0
    return frames, offload.state(k).segmented


def _digest(frames: list) -> str:
    h = hashlib.sha256()
    for t, f in frames:
        h.update(repr(t).encode())
        h.update(f)
    return h.hexdigest()


CASES = [(4, 4), (4, 6), (6, 4), (6, 6)]


@pytest.mark.parametrize("outer,inner", CASES, ids=[f"{o}in{i}" for i, o in CASES])
@pytest.mark.parametrize("kind", TUNNELS)
def test_large_segments_cross_the_link_whole(kind, outer, inner):
    k, a, b, ea, eb = tunnel(kind, outer)
    assert transfer(k, a, b, INNER[inner][1]) == DATA
    assert offload.state(k).segmented == 0  # nothing was cut anywhere
    assert ea.opackets * 4 < a.tcp.stats.sndpack  # far fewer outer packets than pieces
    assert b.ifaces[f"{kind}0"].ipackets * 4 < a.tcp.stats.sndpack
    assert b.tcp.stats.rcvbadsum == 0 and b.udp.stats.badsum == 0 and k.sched.errors == 0


@pytest.mark.parametrize("where", ["ea", "eb", "far"])
@pytest.mark.parametrize("outer,inner", CASES, ids=[f"{o}in{i}" for i, o in CASES])
@pytest.mark.parametrize("kind", TUNNELS)
def test_captures_are_byte_identical_with_and_without_tunnel_gso(kind, outer, inner, where):
    """The capture resolves the whole outer packet (on the link) or its decapsulated
    segment (on the far tunnel interface): the same frames as the tunnel cutting in
    software, IP IDs, lengths, checksums and timing included."""
    on, cut_on = captured(kind, outer, inner, where, True)
    off, cut_off = captured(kind, outer, inner, where, False)
    assert cut_on > 0 and cut_off > 0
    assert len(on) == len(off) and _digest(on) == _digest(off)
    ether = where != "far" or kind == "vxlan"
    tcp = 0
    for _, frame in on:
        names = checked_layers(frame if ether else frame[4:], ether)
        tcp += "TCP" in names
    assert tcp > 40


def _router(kind: str, mtu: int, gso: bool, capture: bool,
            ) -> tuple[Kernel, Vnet, Vnet, Vnet, list]:
    """a - r - b over IPv4, a `kind` tunnel from a to b across the router r; r's link
    to b has MTU `mtu` (0: 1500); frames captured on r's way out to b if `capture`."""
    k = Kernel(clock="virtual", seed=3)
    a, r, b = k.create("a"), k.create("r"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    ea, _ = connect(a, "192.0.2.1/24", r, "192.0.2.254/24")
    rb, eb = connect(r, "198.51.100.254/24", b, "198.51.100.2/24")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(a, "route add default 192.0.2.254")
    ok(b, "route add default 198.51.100.254")
    if mtu:
        ok(r, f"ifconfig {rb.name} mtu {mtu}")
        ok(b, f"ifconfig {eb.name} mtu {mtu}")
    if not gso:
        ok(a, f"ifconfig {ea.name} -vxlanhwtso")
    for vnet, here, there, me, peer in ((a, "192.0.2.1", "198.51.100.2", "10.0.0.1", "10.0.0.2"),
                                        (b, "198.51.100.2", "192.0.2.1", "10.0.0.2", "10.0.0.1")):
        if kind == "vxlan":
            ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal {here} vxlanremote {there}")
            ok(vnet, f"ifconfig vxlan0 inet {me}/24 up")
        else:
            ok(vnet, f"ifconfig {kind} create")
            ok(vnet, f"ifconfig {kind}0 tunnel {here} {there}")
            ok(vnet, f"ifconfig {kind}0 inet {me} {peer}")
    k.run(1)
    cap = open_capture(rb) if capture else None
    data = DATA[:100 * KB]
    assert transfer(k, a, b, "10.0.0.2", data=data) == data
    frames = list(cap.packets) if cap is not None else []
    assert b.tcp.stats.rcvbadsum == 0 and k.sched.errors == 0
    return k, a, r, b, frames


@pytest.mark.parametrize("kind", TUNNELS)
def test_a_router_forwards_the_whole_outer_packet(kind):
    k, a, r, b, _ = _router(kind, 0, True, False)
    assert offload.state(k).segmented == 0
    assert r.ip.stats.forward * 2 < a.tcp.stats.sndpack  # (the ACKs back included)


@pytest.mark.parametrize("mtu", [0, 1280], ids=["fits", "fragments"])
@pytest.mark.parametrize("kind", TUNNELS)
def test_a_router_cuts_where_the_pieces_do_not_fit(kind, mtu):
    """At MTU 1280 on r's way to b the outer pieces do not fit: r cuts the whole outer
    packet and fragments each piece, as it fragments the pieces the tunnel sends one
    by one; the capture on that link is the same either way."""
    *_, r, _, on = _router(kind, mtu, True, True)
    *_, off = _router(kind, mtu, False, True)
    assert len(on) == len(off) and _digest(on) == _digest(off)
    if mtu:
        assert r.ip.stats.fragmented > 0


def test_gre_with_a_sequence_number_cuts_before_encapsulating():
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    for vnet, here, there, me, peer in ((a, "192.0.2.1", "192.0.2.2", "10.0.0.1", "10.0.0.2"),
                                        (b, "192.0.2.2", "192.0.2.1", "10.0.0.2", "10.0.0.1")):
        ok(vnet, "ifconfig gre create")
        ok(vnet, f"ifconfig gre0 tunnel {here} {there} grekey 7 enable_seq mtu 1468")
        ok(vnet, f"ifconfig gre0 inet {me} {peer}")
    k.run(1)
    data = DATA[:100 * KB]
    assert transfer(k, a, b, "10.0.0.2", data=data) == data
    assert offload.state(k).segmented > 0  # each piece its own sequence number
    assert b.ifaces["gre0"].ierrors == 0


# -- resolving a whole outer packet, against the pieces encapsulated one by one ----------
def _encapsulations():
    ip4, ip6 = IP(src="192.0.2.1", dst="192.0.2.2", id=700, ttl=30), IPv6(
        src="2001:db8::1", dst="2001:db8::2", hlim=30)
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return {
        "gif4": (lambda: ip4.copy(), False),
        "gif6": (lambda: ip6.copy(), False),
        "gre4": (lambda: ip4.copy() / GRE(), False),
        "gre4key": (lambda: ip4.copy() / GRE(key_present=1, key=7), False),
        "gre6": (lambda: ip6.copy() / GRE(), False),
        "vxlan4": (lambda: ip4.copy() / UDP(sport=5, dport=4789, chksum=0) / VXLAN(vni=42)
                   / eth.copy(), True),
        "vxlan6": (lambda: ip6.copy() / UDP(sport=5, dport=4789) / VXLAN(vni=42) / eth.copy(),
                   True),
    }


ENCAPS = _encapsulations()


def _unfilled_tcp(v6: bool, size: int) -> bytes:
    ip = (IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") if v6
          else IP(src="10.0.0.1", dst="10.0.0.2", id=40))
    pkt = bytearray(bytes(ip / TCP(sport=1, dport=2, seq=100, flags="PA")
                          / (bytes(range(256)) * (size // 256 + 1))[:size]))
    off = 40 if v6 else 20
    pkt[off + 16:off + 18] = b"\x00\x00"  # the checksum left to offload
    return bytes(pkt)


def _wrap(name: str, inner: bytes, ident_step: int) -> bytes:
    """`inner` behind `name`'s outer headers, lengths computed by scapy; the outer
    IPv4 ID moved on by `ident_step`; a VXLAN UDP checksum over IPv6 left to fill."""
    make, vxlan = ENCAPS[name]
    head = make()
    if IP in head and not isinstance(head, IPv6):
        head[IP].id = 700 + ident_step
    body = (IPv6 if inner[0] >> 4 == 6 else IP)(inner)
    pkt = head / body
    if vxlan and isinstance(head, IPv6):
        pkt[UDP].chksum = 0
        raw = bytearray(bytes(pkt))
        raw[46:48] = b"\x00\x00"
        return bytes(raw)
    return bytes(pkt)


@pytest.mark.parametrize("inner6", [False, True], ids=["inner4", "inner6"])
@pytest.mark.parametrize("name", list(ENCAPS))
def test_resolving_a_whole_outer_packet_gives_the_pieces_encapsulated_one_by_one(name, inner6):
    gso, mtu = 1200, 1280
    big = _unfilled_tcp(inner6, 5000)
    vxlan = ENCAPS[name][1]
    whole = _wrap(name, big, 0)
    head = offload.gso_headers(whole)
    assert head == len(whole) - 5000
    assert offload.pieces_fit(whole, 40 if whole[0] >> 4 == 6 else 20, gso, head + gso)
    assert not offload.pieces_fit(whole, 40 if whole[0] >> 4 == 6 else 20, gso,
                                  head + gso - 1)
    got = offload.resolve_ip(whole, gso, 1500, vxlan)
    # the reference: the tunnel's software path, cut unfilled then encapsulated and filled
    pieces = offload.segment_frame(big, gso, mtu, False)
    want = [offload.resolve_ip(_wrap(name, p, i), 0, 1500, vxlan)[0]
            for i, p in enumerate(pieces)]
    assert len(got) == len(want) == 5
    assert got == want
    for piece in got:
        names = checked_layers(piece, ether=False)
        assert names[-1] == "TCP"
        parsed = (IPv6 if piece[0] >> 4 == 6 else IP)(piece)
        if isinstance(parsed, IP):  # scapy recomputes the outer header checksum
            again = IP(bytes(parsed))
            del again.chksum
            assert IP(bytes(again)).chksum == parsed.chksum


def test_resolving_leaves_a_packet_whose_segment_fits():
    whole = _wrap("gre4", _unfilled_tcp(False, 1000), 0)
    out = offload.resolve_ip(whole, 1200, 1500)
    assert len(out) == 1 and checked_layers(out[0], ether=False)[-1] == "TCP"


def test_gso_headers_refuses_what_it_cannot_walk():
    udp = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * 60))
    gre_seq = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / GRE(seqnum_present=1)
                    / IP(_unfilled_tcp(False, 100)))
    assert offload.gso_headers(udp) == -1
    assert offload.gso_headers(gre_seq) == -1
    assert offload.gso_headers(_unfilled_tcp(True, 100)) == 40 + 20


def test_an_application_on_the_vxlan_port_gets_one_datagram_per_piece():
    """A whole VXLAN datagram reaching a port no vxlan interface holds (an application
    bound to 4789) is cut into the datagrams the tunnel stands for, inner frames filled."""
    k = Kernel(clock="virtual", seed=4)
    a, b = k.create("a"), k.create("b")
    _, eb = connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    app = b.socket(2, 2)
    app.bind(("", 4789))
    app.setblocking(False)
    whole = _wrap("vxlan4", _unfilled_tcp(False, 5000), 0)
    offl = offload.state(k)
    with k.sched.cond:
        offl.partial, offl.gso = offload.PARTIAL | offload.LARGE | offload.VXLAN, 1200
        try:
            b.udp.input(eb, whole, 20, 0xC0000201, 0xC0000202)
        finally:
            offl.partial = offl.gso = 0
    got = []
    while True:
        try:
            got.append(app.recv(2000))
        except BlockingIOError:
            break
    assert len(got) == 5 and b.udp.stats.ipackets == 5
    assert all(checked_layers(d[8:]) == ["TCP"] for d in got)
    assert b"".join(bytes(Ether(d[8:])[TCP].payload) for d in got) == whole[-5000:]


@pytest.mark.parametrize("outer", [4, 6])
def test_a_whole_outer_packet_expiring_at_a_router_gets_an_answer_per_piece(outer):
    """A router whose forwarding finds the TTL (hop limit) run out answers each piece,
    as it answers the pieces a tunnel sends one by one."""
    k = Kernel(clock="virtual", seed=6)
    a, r = k.create("a"), k.create("r")
    _, ra = connect(a, "192.0.2.1/24", r, "192.0.2.254/24")
    ok(a, "ifconfig epair0a inet6 2001:db8::1/64")
    ok(r, "ifconfig epair0b inet6 2001:db8::fe/64")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(r, "sysctl net.inet6.ip6.forwarding=1")
    k.run(3)
    inner = IP(_unfilled_tcp(False, 5000))
    whole = bytes(IP(src="192.0.2.1", dst="198.51.100.2", ttl=1) / inner if outer == 4
                  else IPv6(src="2001:db8::1", dst="2001:db8:ff::2", hlim=1) / inner)
    offl = offload.state(k)
    with k.sched.cond:
        offl.partial, offl.gso = offload.PARTIAL | offload.LARGE, 1200
        try:
            (r.ip.input if outer == 4 else r.ip6.input)(ra, whole)
        finally:
            offl.partial = offl.gso = 0
    if outer == 4:
        assert r.icmp.stats.outhist[11] == 5  # ICMP time exceeded
    else:
        assert r.icmp6.stats.otime_exceed_transit == 5


def _gre_fragmenting(outer: int, gso: bool) -> tuple[list, int]:
    """A gre with a key (IPv4) or over IPv6 at its default MTU 1476: its outer pieces
    exceed the epair's 1500 and are fragmented at the source (RFC 2473 7.1 over IPv6)."""
    k, a, b, ea, eb = _joined(gso)
    for vnet, n, m in ((a, 0, 1), (b, 1, 0)):
        here, there = OUTER[outer][n], OUTER[outer][m]
        ok(vnet, "ifconfig gre create")
        ok(vnet, f"ifconfig gre0 tunnel {here} {there}" + (" grekey 7" if outer == 4 else ""))
        ok(vnet, f"ifconfig gre0 inet {INNER[4][n]} {INNER[4][m]}")
    k.run(1)
    cap = open_capture(eb)
    data = DATA[:100 * KB]
    assert transfer(k, a, b, "10.0.0.2", data=data) == data
    assert b.tcp.stats.rcvbadsum == 0 and k.sched.errors == 0
    return list(cap.packets), (a.ip6.stats.fragmented if outer == 6 else a.ip.stats.fragmented)


@pytest.mark.parametrize("outer", [4, 6])
def test_outer_pieces_fragmented_at_the_source_are_the_same(outer):
    on, frag_on = _gre_fragmenting(outer, True)
    off, frag_off = _gre_fragmenting(outer, False)
    assert frag_on == frag_off > 0
    assert len(on) == len(off) and _digest(on) == _digest(off)


def _impaired(kind: str, gso: bool) -> list:
    """A `kind` tunnel over an epair whose a end has a 2 ms delay (a link pipe, where a
    wire is modelled): what b's end receives, captured."""
    k, a, b, ea, eb = tunnel(kind, 4, gso)
    ea.impair(delay="2ms")
    cap = open_capture(eb)
    data = DATA[:100 * KB]
    assert transfer(k, a, b, INNER[4][1], data=data) == data
    assert offload.state(k).segmented > 0 and k.sched.errors == 0
    return list(cap.packets)


@pytest.mark.parametrize("kind", TUNNELS)
def test_an_impaired_link_gets_the_same_wire_frames(kind):
    on, off = _impaired(kind, True), _impaired(kind, False)
    assert len(on) == len(off) and _digest(on) == _digest(off)


@pytest.mark.parametrize("kind", ["gif", "vxlan"])
def test_a_bridge_carries_the_whole_outer_packet(kind):
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    ea, eb = k.epair(a)
    eb.move_to(b)
    ok(a, f"ifconfig {ea.name} up")
    ok(a, f"ifconfig bridge create addm {ea.name} 192.0.2.1/24 up")
    ok(b, f"ifconfig {eb.name} 192.0.2.2/24 up")
    for vnet, n, m in ((a, 1, 2), (b, 2, 1)):
        if kind == "vxlan":
            ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal 192.0.2.{n} "
                     f"vxlanremote 192.0.2.{m}")
            ok(vnet, f"ifconfig vxlan0 inet 10.0.0.{n}/24 up")
        else:
            ok(vnet, "ifconfig gif create")
            ok(vnet, f"ifconfig gif0 tunnel 192.0.2.{n} 192.0.2.{m}")
            ok(vnet, f"ifconfig gif0 inet 10.0.0.{n} 10.0.0.{m}")
    k.run(1)
    assert transfer(k, a, b, "10.0.0.2") == DATA
    assert offload.state(k).segmented == 0 and ea.opackets * 4 < a.tcp.stats.sndpack
    assert b.tcp.stats.rcvbadsum == 0 and k.sched.errors == 0


# -- a plain large TCP segment at a router whose way out has a smaller MTU ----------------
def _plain_router(tso: bool, pmtud: int) -> tuple[Vnet, int, list]:
    """a - r - b, r's end of the link to b at MTU 1280 (b's at 1500, so b offers an MSS
    of 1460), a's TCP with or without TSO and DF; returns r, the ICMP
    unreachables a received and the frames r sent to b during a 100 KB transfer."""
    k = Kernel(clock="virtual", seed=3)
    a, r, b = k.create("a"), k.create("r"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
        v.sysctl("net.inet.tcp.path_mtu_discovery", pmtud)
    ea, _ = connect(a, "192.0.2.1/24", r, "192.0.2.254/24")
    rb, _ = connect(r, "198.51.100.254/24", b, "198.51.100.2/24")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(a, "route add default 192.0.2.254")
    ok(b, "route add default 198.51.100.254")
    ok(r, f"ifconfig {rb.name} mtu 1280")
    if not tso:
        ok(a, f"ifconfig {ea.name} -tso")
    k.run(1)
    cap = open_capture(rb)  # (not on a's link: a capture there would cut at a)
    data = DATA[:100 * KB]
    assert transfer(k, a, b, "198.51.100.2", data=data) == data
    frames = list(cap.packets)
    cap.close()
    assert k.sched.errors == 0
    return r, a.icmp.stats.inhist[3], frames


@pytest.mark.parametrize("pmtud", [0, 1], ids=["fragments", "needfrag"])
def test_a_router_cuts_a_large_tcp_segment_whose_pieces_do_not_fit(pmtud):
    """Without DF each piece is fragmented on its own, as the wire segments would be (not
    the whole 64 KB datagram); with DF each piece is refused with its own ICMP error, as
    on a wire: the capture on r's way to b and the errors a gets are the same with and
    without TSO."""
    r, errors_on, on = _plain_router(True, pmtud)
    _, errors_off, off = _plain_router(False, pmtud)
    assert len(on) == len(off) and _digest(on) == _digest(off)
    assert errors_on == errors_off
    for _t, frame in on:
        checked_layers(frame)
    if pmtud:
        assert r.ip.stats.cantfrag == errors_on > 1
    else:
        assert r.ip.stats.fragmented > 0


def _expiring(tso: bool, v6: bool) -> tuple[int, int]:
    """a - r - b; once connected, a's TCP socket sends 64 KB with a TTL / hop limit of
    1: r answers time exceeded. Returns (errors a got, data segments a counted)."""
    k = Kernel(clock="virtual", seed=3)
    a, r, b = k.create("a"), k.create("r"), k.create("b")
    ea, _ = connect(a, "192.0.2.1/24", r, "192.0.2.254/24")
    rb, eb = connect(r, "198.51.100.254/24", b, "198.51.100.2/24")
    for vnet, ifp, addr in ((a, ea, "2001:db8:a::1"), (r, _, "2001:db8:a::fe"),
                            (r, rb, "2001:db8:b::fe"), (b, eb, "2001:db8:b::2")):
        ok(vnet, f"ifconfig {ifp.name} inet6 {addr}/64")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(r, "sysctl net.inet6.ip6.forwarding=1")
    ok(a, "route add default 192.0.2.254")
    ok(b, "route add default 198.51.100.254")
    ok(a, "route -6 add default 2001:db8:a::fe")
    ok(b, "route -6 add default 2001:db8:b::fe")
    if not tso:
        ok(a, f"ifconfig {ea.name} -tso")
    k.run(3)  # DAD
    family = pysocket.AF_INET6 if v6 else pysocket.AF_INET
    srv = b.socket(family, pysocket.SOCK_STREAM)
    srv.bind(("", 7))
    srv.listen(1)
    cli = a.socket(family, pysocket.SOCK_STREAM)
    cli.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        cli.connect(("2001:db8:b::2" if v6 else "198.51.100.2", 7))
    k.run(0.1)
    srv.accept()
    if v6:
        cli.setsockopt(pysocket.IPPROTO_IPV6, pysocket.IPV6_UNICAST_HOPS, 1)
    else:
        cli.setsockopt(pysocket.IPPROTO_IP, pysocket.IP_TTL, 1)
    sent = a.tcp.stats.sndpack
    cli.send(DATA[:64 * KB])
    k.run(0.01)
    errors = a.icmp6.stats.inhist[3] if v6 else a.icmp.stats.inhist[11]
    return errors, a.tcp.stats.sndpack - sent


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_large_tcp_segment_expiring_at_a_router_gets_an_answer_per_piece(v6):
    errors_on, sent_on = _expiring(True, v6)
    errors_off, sent_off = _expiring(False, v6)
    assert errors_on == errors_off > 1
    assert sent_on == sent_off
