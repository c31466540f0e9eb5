"""Checksum offload and TSO/LRO on virtual links (vimage.net.offload).

The kernels here are made directly, not with the pytest trace fixture: the trace taps
every interface, and a tapped interface gets wire frames only (no offload).
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether

from vimage.kernel import Kernel
from vimage.net import offload, pfil
from vimage.net.bpf import open_capture
from vimage.net.ifnet import EtherIfnet, Ifnet
from vimage.net.offload import resolve_frame
from vimage.socket.socket import AF_INET6
from vimage.topo import add_route, connect
from vimage.vnet import Vnet

KB = 1 << 10
DATA = bytes(range(256)) * 2048  # 512 KB


def pair(v6: bool = False, seed: int = 1) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet, str]:
    k = Kernel(clock="virtual", seed=seed)
    a, b = k.create("a"), k.create("b")
    ea, eb = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    dst = "10.0.0.2"
    if v6:
        for v in (a, b):
            v.sysctl("net.inet6.ip6.dad_count", 0)
        ea.add_addr("2001:db8::1/64", family=AF_INET6)
        eb.add_addr("2001:db8::2/64", family=AF_INET6)
        dst = "2001:db8::2"
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    k.run(1)
    return k, a, b, ea, eb, dst


def transfer(k: Kernel, a: Vnet, b: Vnet, dst: str, data: bytes = DATA,
             v6: bool = False, port: int = 5001) -> bytes:
    """Send `data` from a to b:`port` over TCP; what b read."""
    family = AF_INET6 if v6 else 2
    srv = b.socket(family, 1)
    srv.bind(("", port))
    srv.listen(1)
    cli = a.socket(family, 1)
    cli.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        cli.connect((dst, port))
    k.run(0.1)
    conn, _ = srv.accept()
    conn.setblocking(False)
    sent, got = 0, bytearray()
    for _ in range(10_000):
        if sent < len(data):
            with contextlib.suppress(BlockingIOError):
                sent += cli.send(data[sent:sent + 64 * KB])
            if sent == len(data):
                cli.shutdown(1)
        k.run(0.01)
        while True:
            try:
                chunk = conn.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                return bytes(got)
            got += chunk
    raise AssertionError("transfer did not finish")


def wire_checked(frame: bytes) -> Any:
    """Parse an Ethernet frame with scapy; assert its TCP/UDP checksum is right."""
    pkt = Ether(frame)
    if (IP in pkt and (pkt[IP].flags.MF or pkt[IP].frag)) or IPv6ExtHdrFragment in pkt:
        return pkt  # a fragment: its datagram's checksum is checked on delivery
    for layer in (TCP, UDP):
        if layer in pkt:
            seg = pkt[layer]
            given = seg.chksum
            del seg.chksum
            again = Ether(bytes(pkt))
            assert again[layer].chksum == given, f"bad {layer.__name__} checksum"
    return pkt


@pytest.mark.parametrize("v6", [False, True])
def test_tso_hands_large_segments_across_an_epair(v6):
    k, a, b, ea, eb, dst = pair(v6)
    assert transfer(k, a, b, dst, v6=v6) == DATA
    st = a.tcp.stats
    # a few large frames crossed, each counted as its MSS-sized pieces by TCP
    assert ea.opackets * 4 < st.sndpack
    assert b.tcp.stats.rcvpack >= len(DATA) // 1448
    assert b.tcp.stats.rcvbadsum == 0
    assert offload.state(k).segmented == 0


@pytest.mark.parametrize("v6", [False, True])
def test_same_bytes_with_offloads_off_and_wire_sized_frames(v6):
    k, a, b, ea, eb, dst = pair(v6)
    for end, vnet in ((ea, a), (eb, b)):
        assert vnet.cmd(f"ifconfig {end.name} -txcsum -txcsum6 -rxcsum -rxcsum6 -tso -lro"
                        ).status == 0
        assert end.capenable & offload.CSUM_CAPS == 0
    assert transfer(k, a, b, dst, v6=v6) == DATA
    assert ea.opackets >= a.tcp.stats.sndpack  # one frame per segment: nothing large
    assert b.tcp.stats.rcvbadsum == 0


def test_small_segments_keep_correct_checksums_when_txcsum_goes_off_midway():
    """TCP remembers that its route offloads the checksum (`tcb.offload`) and does not
    look it up again for a segment of at most an MSS: one sent under the mark after
    `-txcsum` is filled on its way out, so every frame still carries a correct checksum:
    the receiver, verifying again (`-rxcsum`), takes them all."""
    k, a, b, ea, eb, dst = pair()
    srv = b.socket(2, 1)
    srv.bind(("", 5001))
    srv.listen(1)
    cli = a.socket(2, 1)
    cli.connect((dst, 5001))
    conn, _ = srv.accept()
    cli.sendall(b"?before\n")
    assert conn.recv(100) == b"?before\n"
    assert cli.tcb.offload == offload.PARTIAL
    assert a.cmd("ifconfig epair0a -txcsum").status == 0
    assert b.cmd("ifconfig epair0b -rxcsum").status == 0
    for i in range(5):
        cli.sendall(b"?%d\n" % i)
        assert conn.recv(100) == b"?%d\n" % i
        conn.sendall(b"!%d\n" % i)
        assert cli.recv(100) == b"!%d\n" % i
        k.run(1)
    assert cli.tcb.offload == offload.PARTIAL  # (not looked up again)
    assert b.tcp.stats.rcvbadsum == 0 and a.tcp.stats.rcvbadsum == 0
    assert b.tcp.stats.rcvtotal >= 10  # every request and ACK verified, and good


def test_tso_off_keeps_checksum_offload():
    k, a, b, ea, eb, dst = pair()
    assert a.cmd("ifconfig epair0a -tso").status == 0
    assert "TSO4" not in a.cmd("ifconfig epair0a").output
    assert "TXCSUM" in a.cmd("ifconfig epair0a").output
    assert transfer(k, a, b, dst) == DATA
    assert ea.opackets >= a.tcp.stats.sndpack
    assert offload.state(k).segmented == 0


def test_ifconfig_shows_options_and_capabilities():
    k, a, b, ea, eb, dst = pair()
    out = a.cmd("ifconfig -m epair0a").output
    assert ("\toptions=4060070b<RXCSUM,TXCSUM,VLAN_MTU,TSO4,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6,"
            "VXLAN_HWTSO>") in out
    assert "\tcapabilities=4060070b<" in out
    assert a.cmd("ifconfig epair0a -txcsum").status == 0  # TSO4 needs TXCSUM: it goes too
    out = a.cmd("ifconfig -m epair0a").output
    assert ("\toptions=40600609<RXCSUM,VLAN_MTU,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6,VXLAN_HWTSO>"
            in out)
    assert "\tcapabilities=4060070b<" in out
    assert a.cmd("ifconfig epair0a tso4").status == 0
    assert ea.capenable == offload.EPAIR_CAPS


@pytest.mark.parametrize("v6", [False, True])
def test_capture_shows_wire_frames_with_valid_checksums(v6):
    k, a, b, ea, eb, dst = pair(v6)
    cap = open_capture(ea)
    assert transfer(k, a, b, dst, data=DATA[:200 * KB], v6=v6) == DATA[:200 * KB]
    frames = [frame for _, frame in cap.packets]
    cap.close()
    assert len(frames) > 100
    assert max(len(f) for f in frames) <= ea.mtu + 14
    layer = IPv6 if v6 else IP
    seen = 0
    ids = []
    for frame in frames:
        pkt = wire_checked(frame)
        if TCP in pkt and layer in pkt:
            seen += 1
            if not v6 and pkt[IP].src == "10.0.0.1":
                ids.append(pkt[IP].id)
    assert seen > 100
    assert len(set(ids)) == len(ids)  # pieces take consecutive IDs, none reused


@pytest.mark.parametrize("v6", [False, True])
def test_udp_datagrams_captured_with_checksums(v6):
    k, a, b, ea, eb, dst = pair(v6)
    family = AF_INET6 if v6 else 2
    r = b.socket(family, 2)
    r.bind(("", 7000))
    s = a.socket(family, 2)
    cap = open_capture(eb)  # on the receiving end: the sender fills for it too
    for size in (1, 100, 1000, 4000):  # 4000: fragmented, filled before fragmenting
        s.sendto(bytes(size), (dst, 7000))
    k.run(0.1)
    got = [r.recv(8000) for _ in range(4)]
    assert [len(g) for g in got] == [1, 100, 1000, 4000]
    udp = [wire_checked(f) for _, f in cap.packets]
    assert sum(1 for p in udp if UDP in p) >= 4
    assert b.udp.stats.badsum == 0


def test_udp_offloaded_without_capture_is_delivered_unverified():
    k, a, b, ea, eb, dst = pair()
    r = b.socket(2, 2)
    r.bind(("", 7000))
    s = a.socket(2, 2)
    s.sendto(b"hello", (dst, 7000))
    k.run(0.1)
    assert r.recv(100) == b"hello"
    assert b.udp.stats.nosum == 0  # an offloaded zero field is no "no checksum"


def test_a_frame_offloaded_then_corrupted_would_not_be_accepted_from_outside():
    """-rxcsum on the receiver: the sender fills the checksum, the receiver verifies."""
    k, a, b, ea, eb, dst = pair()
    assert b.cmd("ifconfig epair0b -rxcsum").status == 0
    seen: list[tuple[bytes, int]] = []
    real = EtherIfnet.input

    def spy(self: Ifnet, frame: bytes) -> None:
        if self is eb:
            seen.append((frame, self.offl.partial))
        real(self, frame)

    EtherIfnet.input = spy  # type: ignore[method-assign]
    try:
        assert transfer(k, a, b, dst, data=DATA[:100 * KB]) == DATA[:100 * KB]
    finally:
        EtherIfnet.input = real  # type: ignore[method-assign]
    assert seen and all(mark == 0 for _, mark in seen)
    assert max(len(f) for f, _ in seen) <= 1514
    for frame, _ in seen:
        wire_checked(frame)


@pytest.mark.parametrize("v6", [False, True])
def test_frames_leaving_the_process_carry_checksums(v6):
    """What a TAP (or any interface without an in-process peer) transmits is filled in
    and cut to the MTU, even under the offload mark."""
    sent: list[bytes] = []

    class External(EtherIfnet):
        """An interface to outside the process (as a TAP): it records what it sends."""

        __slots__ = ()

        def transmit(self, frame: bytes) -> bool:
            sent.append(frame)
            return True

    k = Kernel(clock="virtual", seed=3)
    a = k.create("a")
    ext = External(a, "ext", 0, "ext0", 0, 1500, k.random_mac())
    ext.capabilities = ext.capenable = offload.EPAIR_CAPS
    frames = []
    mss = 1440 if v6 else 1448
    for payload_size in (0, 500, mss * 5 + 7):
        big = bytes(range(256)) * 40
        data = big[:payload_size]
        if v6:
            ip = IPv6(src="2001:db8::1", dst="2001:db8::2")
        else:
            ip = IP(src="10.0.0.1", dst="10.0.0.2", flags="DF")
        pkt = Ether(dst="02:00:00:00:00:02", src=ext.mac) / ip / TCP(
            sport=1, dport=2, seq=1000, flags="PA") / data
        raw = bytearray(bytes(pkt))
        off = 14 + (40 if v6 else 20) + 16
        raw[off:off + 2] = b"\x00\x00"  # as an offloading sender leaves it
        frames.append(bytes(raw))
        pkt = Ether(dst="02:00:00:00:00:02", src=ext.mac) / ip / UDP(sport=1, dport=2) / data
        raw = bytearray(bytes(pkt))
        off = 14 + (40 if v6 else 20) + 6
        raw[off:off + 2] = b"\x00\x00"
        if len(raw) <= 1514:
            frames.append(bytes(raw))
    offl = offload.state(k)
    with k.sched.cond:
        ext.set_up(True)
        offl.partial, offl.gso = offload.PARTIAL | offload.LARGE, mss
        try:
            for frame in frames:
                assert ext.output(frame)
        finally:
            offl.partial, offl.gso = 0, 0
    assert len(sent) >= len(frames) + 4  # the large one in 6 pieces
    seqs = []
    for frame in sent:
        assert len(frame) <= 1514
        pkt = wire_checked(frame)
        if TCP in pkt and len(pkt[TCP].payload):
            seqs.append((pkt[TCP].seq, len(pkt[TCP].payload), str(pkt[TCP].flags)))
    pieces = [s for s in seqs if s[1] in (mss, 7)]
    assert pieces == [(1000 + mss * i, mss if i < 5 else 7, "PA" if i == 5 else "A")
                      for i in range(6)]


def test_segmentation_puts_flags_on_the_right_pieces():
    data = bytes(5000)
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=7) / TCP(seq=5, flags="FPAC") / data
    pieces = resolve_frame(bytes(pkt), 1000, 1500, False)
    assert len(pieces) == 5
    parsed = [IP(p) for p in pieces]
    assert [p[TCP].seq for p in parsed] == [5 + 1000 * i for i in range(5)]
    assert [str(p[TCP].flags) for p in parsed] == ["AC", "A", "A", "A", "FPA"]
    assert [p.id for p in parsed] == [7, 8, 9, 10, 11]
    for p in parsed:
        cs = p.chksum
        tcs = p[TCP].chksum
        del p.chksum, p[TCP].chksum
        again = IP(bytes(p))
        assert (again.chksum, again[TCP].chksum) == (cs, tcs)


def test_impaired_link_gets_segmented_frames():
    k, a, b, ea, eb, dst = pair()
    ea.impair(delay="1ms")
    assert transfer(k, a, b, dst) == DATA
    assert offload.state(k).segmented > 0  # large segments cut where the wire is modelled
    assert eb.ipackets >= a.tcp.stats.sndpack  # the receiver got wire-sized frames
    assert b.tcp.stats.rcvbadsum == 0


def test_router_forwards_large_segments_and_cuts_them_for_a_non_tso_link():
    k = Kernel(clock="virtual", seed=5)
    h1, r, h2 = k.create("h1"), k.create("r"), k.create("h2")
    connect(h1, "10.0.1.1/24", r, "10.0.1.2/24")
    _, out = connect(r, "10.0.2.2/24", h2, "10.0.2.1/24")
    r.sysctl("net.inet.ip.forwarding", 1)
    add_route(h1, "default", "10.0.1.2")
    add_route(h2, "default", "10.0.2.2")
    for v in (h1, h2):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    k.run(1)
    assert transfer(k, h1, h2, "10.0.2.1") == DATA
    assert offload.state(k).segmented == 0  # passed whole through the router
    r_out = r.ifaces["epair1a"]
    assert r.cmd("ifconfig epair1a -tso").status == 0
    assert transfer(k, h1, h2, "10.0.2.1", data=DATA[:256 * KB], port=5002) == DATA[:256 * KB]
    assert offload.state(k).segmented > 0  # cut on the router's way out
    assert r_out.opackets >= 256 * KB // 1448
    assert h2.tcp.stats.rcvbadsum == 0


def test_hooks_see_wire_packets():
    """A pfil hook in the receiving vnet never sees a missing checksum or a large packet."""
    k, a, b, ea, eb, dst = pair()
    seen: list[bytes] = []

    def hook(pkt: bytes, ifp: Ifnet | None) -> bytes:
        seen.append(bytes(pkt))
        return pkt

    pfil.link(b.ip, "pfil_in", hook, name="spy")
    assert transfer(k, a, b, dst, data=DATA[:128 * KB]) == DATA[:128 * KB]
    pfil.unlink(b.ip, "pfil_in", hook)
    assert b not in offload.state(k).hooked
    assert seen and max(len(p) for p in seen) <= 1500
    for p in seen:
        pkt = IP(p)
        if TCP in pkt:
            given = pkt[TCP].chksum
            del pkt[TCP].chksum
            assert IP(bytes(pkt))[TCP].chksum == given


def test_destroying_vnets_mid_transfer_leaves_nothing():
    k, a, b, ea, eb, dst = pair()
    srv = b.socket(2, 1)
    srv.bind(("", 5001))
    srv.listen(1)
    cli = a.socket(2, 1)
    cli.connect((dst, 5001))
    conn, _ = srv.accept()
    cli.setblocking(False)
    cli.send(DATA)
    k.run(0.0001)  # large segments queued and in flight
    receivers = set(a.ifaces.values()) | set(b.ifaces.values())
    ref_a, ref_b = weakref.ref(a), weakref.ref(b)
    offl = offload.state(k)
    del srv, cli, conn
    k.destroy("a")
    k.destroy("b")
    assert k.sched.queued_for(receivers) == 0
    assert k.sched.pending_timers(a) == 0 and k.sched.pending_timers(b) == 0
    assert offl.partial == 0 and not offl.hooked
    del a, b, ea, eb, receivers
    k.run(1)
    gc.collect()
    assert ref_a() is None and ref_b() is None
    assert k.sched.errors == 0


def test_bridge_between_epairs_keeps_frames_offloaded():
    k = Kernel(clock="virtual", seed=9)
    sw = k.create("sw")
    assert sw.cmd("ifconfig bridge create").status == 0
    hosts = []
    for i in range(2):
        host = k.create(f"h{i + 1}")
        a, b = k.epair(sw)
        b.move_to(host)
        assert host.cmd(f"ifconfig {b.name} 10.0.0.{i + 1}/24 up").status == 0
        assert sw.cmd(f"ifconfig {a.name} up").status == 0
        assert sw.cmd(f"ifconfig bridge0 addm {a.name}").status == 0
        host.sysctl("net.inet.tcp.sendspace", 1 << 20)
        host.sysctl("net.inet.tcp.recvspace", 1 << 20)
        hosts.append(host)
    assert sw.cmd("ifconfig bridge0 up").status == 0
    k.run(1)
    assert transfer(k, hosts[0], hosts[1], "10.0.0.2") == DATA
    assert offload.state(k).segmented == 0  # whole across both links and the bridge
    out = sw.ifaces["epair1a"]
    assert out.opackets * 4 < hosts[0].tcp.stats.sndpack
    assert hosts[1].tcp.stats.rcvbadsum == 0


@pytest.mark.parametrize("v6", [False, True])
def test_loopback_transfer_with_large_segments(v6):
    k = Kernel(clock="virtual", seed=2)
    a = k.create("a")
    a.sysctl("net.inet.tcp.sendspace", 1 << 20)
    a.sysctl("net.inet.tcp.recvspace", 1 << 20)
    assert transfer(k, a, a, "::1" if v6 else "127.0.0.1", v6=v6) == DATA
    lo0 = a.ifaces["lo0"]
    # frames above lo0's MTU crossed whole: fewer frames than the segments TCP counts
    assert lo0.opackets + 20 < a.tcp.stats.sndtotal
    assert offload.state(k).segmented == 0
