"""Offloads through VLAN, bridge and tunnel interfaces (gif, gre, vxlan).

These interfaces hand what they transmit synchronously to another interface (a VLAN's
parent, a bridge's members) or to IP output (a tunnel's outer packet), so an offloaded
frame goes on under the mark and is kept whole or filled further down; a tunnel's
outer packet carries its inner packet unfilled, and `offload.resolve_ip` fills inside
IP-in-IP, GRE and VXLAN. Every frame that leaves the process (a TAP-like interface),
is captured or is encrypted must carry correct checksums at every layer: scapy checks
each TCP and UDP header it finds, however deep.

The kernels here are made directly, not with the pytest trace fixture: the trace taps
every interface, and a tapped interface gets wire frames only (no offload).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import GRE, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import NoPayload

from vimage.compiled import is_compiled
from vimage.kernel import Kernel
from vimage.net import offload
from vimage.net.bpf import open_capture
from vimage.net.ifnet import EtherIfnet, Ifnet
from vimage.socket.socket import AF_INET6
from vimage.topo import connect
from vimage.vnet import Vnet

KB = 1 << 10
DATA = bytes(range(256)) * 800  # 200 KB
KINDS = ("vlan", "bridge", "gif", "gre", "vxlan")
TUNNELS = ("gif", "gre", "vxlan")


def ok(vnet: Vnet, line: str) -> str:
    res = vnet.cmd(line)
    assert res.status == 0, f"{line}: {res.output}"
    return res.output


def _layers(pkt: Any) -> list[Any]:
    out = []
    while pkt is not None and not isinstance(pkt, NoPayload):
        out.append(pkt)
        pkt = pkt.payload
    return out


def checked_layers(frame: bytes, ether: bool = True) -> list[str]:
    """Parse `frame` with scapy and check the checksum of every TCP and UDP header in
    it, at any depth (a zero UDP checksum over IPv4 means none, RFC 768); the names of
    the layers checked, outermost first."""
    parse = Ether if ether else (IPv6 if frame[0] >> 4 == 6 else IP)
    pkt = parse(frame)
    names = []
    for i, layer in enumerate(_layers(pkt)):
        if (isinstance(layer, IP) and (layer.flags.MF or layer.frag)) or isinstance(
                layer, IPv6ExtHdrFragment):
            break  # a fragment: its datagram's checksum is checked on reassembly
        if not isinstance(layer, (TCP, UDP)):
            continue
        given = layer.chksum
        if isinstance(layer, UDP) and given == 0 and isinstance(layer.underlayer, IP):
            names.append("UDP(none)")
            continue
        copy = pkt.copy()
        del _layers(copy)[i].chksum
        again = _layers(parse(bytes(copy)))[i]
        assert again.chksum == given, f"bad {type(layer).__name__} checksum at layer {i}"
        names.append(type(layer).__name__)
    return names


def transfer(k: Kernel, a: Vnet, b: Vnet, dst: str, data: bytes = DATA,
             port: int = 5001) -> bytes:
    """Send `data` from a to b:`port` over TCP (IPv6 if `dst` is); what b read."""
    family = AF_INET6 if ":" in dst else 2
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


def build(kind: str, seed: int = 1) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet, str]:
    """a and b joined by one epair (the ends returned) with `kind` on top: a VLAN on
    both ends, a's address on a bridge with the epair end as member, or a tunnel
    (outer 192.0.2.0/24); the destination address of b to use."""
    k = Kernel(clock="virtual", seed=seed)
    a, b = k.create("a"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    if kind in TUNNELS:
        ea, eb = connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
        for vnet, here, there, me, peer in ((a, "192.0.2.1", "192.0.2.2", "10.0.0.1", "10.0.0.2"),
                                            (b, "192.0.2.2", "192.0.2.1", "10.0.0.2", "10.0.0.1")):
            if kind == "vxlan":
                ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal {here} vxlanremote {there}")
                ok(vnet, f"ifconfig vxlan0 inet {me}/24 up")
            else:
                ok(vnet, f"ifconfig {kind} create")
                ok(vnet, f"ifconfig {kind}0 tunnel {here} {there}")
                ok(vnet, f"ifconfig {kind}0 inet {me} {peer}")
        k.run(1)
        return k, a, b, ea, eb, "10.0.0.2"
    ea, eb = k.epair(a)
    eb.move_to(b)
    if kind == "vlan":
        ok(a, f"ifconfig {ea.name} up")
        ok(b, f"ifconfig {eb.name} up")
        ok(a, f"ifconfig {ea.name}.10 create")
        ok(a, f"ifconfig {ea.name}.10 10.0.0.1/24 up")
        ok(b, f"ifconfig {eb.name}.10 create")
        ok(b, f"ifconfig {eb.name}.10 10.0.0.2/24 up")
    else:
        ok(a, f"ifconfig {ea.name} up")
        ok(a, f"ifconfig bridge create addm {ea.name} 10.0.0.1/24 up")
        ok(b, f"ifconfig {eb.name} 10.0.0.2/24 up")
    k.run(1)
    return k, a, b, ea, eb, "10.0.0.2"


class Marks:
    """Records the offload mark each frame arrives at `ifp` with."""

    def __init__(self, ifp: Ifnet) -> None:
        if is_compiled(offload):
            pytest.skip("spies by patching an interface's input, which compiled callers "
                        "call directly (vimage.compiled)")
        self.ifp, self.marks = ifp, []
        self.real = type(ifp).input
        self.own = "input" in vars(type(ifp))

    def __enter__(self) -> Marks:
        real, ifp, marks = self.real, self.ifp, self.marks

        def spy(this: Ifnet, frame: bytes) -> None:
            if this is ifp and len(frame) > 200:  # data, not ACKs
                marks.append(this.offl.partial)
            real(this, frame)

        type(self.ifp).input = spy  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self.ifp)
        if self.own:
            cls.input = self.real  # type: ignore[method-assign]
        else:  # inherited: setting it back would shadow later patches of the base class
            del cls.input


@pytest.mark.parametrize("kind", KINDS)
def test_transfer_stays_offloaded_through(kind, monkeypatch):
    k, a, b, ea, eb, dst = build(kind)
    fills = []
    real_fill = offload._fill
    monkeypatch.setattr(offload, "_fill", lambda *args: fills.append(1) or real_fill(*args))
    with Marks(eb) as seen:
        assert transfer(k, a, b, dst) == DATA
    assert seen.marks and all(seen.marks)  # every data frame crossed unfilled
    if kind == "vxlan":
        assert all(m & offload.VXLAN for m in seen.marks)
    assert fills == []  # nothing filled on the way
    # TSO through them: fewer frames than segments; a tunnel encapsulates a large
    # segment whole (tunnel GSO) and its outer packet crosses the epair whole
    assert offload.state(k).segmented == 0
    assert ea.opackets * 4 < a.tcp.stats.sndpack
    if kind in TUNNELS:
        assert a.ifaces[f"{kind}0"].opackets * 4 < a.tcp.stats.sndpack
    assert b.tcp.stats.rcvbadsum == 0 and b.udp.stats.badsum == 0
    assert k.sched.errors == 0


class External(EtherIfnet):
    """An interface to outside the process (as a TAP): it records what it sends."""

    __slots__ = ()
    sent: list[bytes] = []

    def transmit(self, frame: bytes) -> bool:
        External.sent.append(frame)
        return True


def external(kind: str) -> tuple[Kernel, Vnet, str]:
    """Vnet a whose `kind` traffic leaves through a TAP-like interface (offloads on,
    no in-process peer); the destination to send to."""
    k = Kernel(clock="virtual", seed=5)
    a = k.create("a")
    ext = External(a, "ext", 0, "ext0", 0, 1500, k.random_mac())
    ext.capabilities = ext.capenable = offload.EPAIR_CAPS
    External.sent = []
    peer_mac = "02:00:00:00:00:02"
    if kind == "vlan":
        ok(a, "ifconfig ext0 up")
        ok(a, "ifconfig ext0.10 create")
        ok(a, "ifconfig ext0.10 10.0.0.1/24 up")
    elif kind == "bridge":
        ok(a, "ifconfig ext0 up")
        ok(a, "ifconfig bridge create addm ext0 10.0.0.1/24 up")
    else:
        ok(a, "ifconfig ext0 192.0.2.1/24 up")
        ok(a, f"arp -s 192.0.2.2 {peer_mac}")
        if kind == "vxlan":
            ok(a, "ifconfig vxlan create vxlanid 42 vxlanlocal 192.0.2.1 vxlanremote 192.0.2.2")
            ok(a, "ifconfig vxlan0 inet 10.0.0.1/24 up")
        else:
            ok(a, f"ifconfig {kind} create")
            ok(a, f"ifconfig {kind}0 tunnel 192.0.2.1 192.0.2.2")
            ok(a, f"ifconfig {kind}0 inet 10.0.0.1 10.0.0.2")
    if kind in ("vlan", "bridge", "vxlan"):
        ok(a, f"arp -s 10.0.0.2 {peer_mac}")
    k.run(1)
    return k, a, "10.0.0.2"


@pytest.mark.parametrize("kind", KINDS)
def test_frames_leaving_the_process_carry_checksums(kind):
    k, a, dst = external(kind)
    udp = a.socket(2, 2)
    for size in (1, 300, 1200):
        udp.sendto((bytes(range(256)) * 5)[:size], (dst, 7000))
    tcp = a.socket(2, 1)
    tcp.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        tcp.connect((dst, 80))  # a SYN, sent unfilled under the mark
    k.run(0.1)
    inner = [checked_layers(f) for f in External.sent]
    deepest = [names[-1] for names in inner if names]
    assert deepest.count("UDP") >= 3 and "TCP" in deepest
    if kind == "vxlan":  # the outer datagram (zero over IPv4) and the inner one
        assert ["UDP(none)", "TCP"] in inner
    if kind == "vlan":
        ours = [Ether(f) for f in External.sent]
        ours = [p for p in ours if IP in p and p[IP].src == "10.0.0.1"]
        assert len(ours) >= 4 and all(Dot1Q in p for p in ours)
    tcp.close()


@pytest.mark.parametrize("kind", KINDS)
def test_captures_show_filled_frames(kind):
    k, a, b, ea, eb, dst = build(kind)
    outer = open_capture(ea)  # the epair: outer packets, tagged frames, bridged frames
    assert transfer(k, a, b, dst, data=DATA[:60 * KB]) == DATA[:60 * KB]
    frames = [f for _, f in outer.packets]
    outer.close()
    assert max(len(f) for f in frames) <= ea.mtu + 18
    tcp_seen = sum(1 for f in frames if "TCP" in checked_layers(f))
    assert tcp_seen > 30
    if kind == "gre":
        assert any(GRE in Ether(f) for f in frames)
    if kind == "vxlan":
        assert any(VXLAN in Ether(f) for f in frames)


@pytest.mark.parametrize("kind", TUNNELS)
def test_capture_on_the_tunnel_interface_shows_filled_inner_packets(kind):
    k, a, b, ea, eb, dst = build(kind)
    cap_a, cap_b = open_capture(a.ifaces[f"{kind}0"]), open_capture(b.ifaces[f"{kind}0"])
    assert transfer(k, a, b, dst, data=DATA[:30 * KB]) == DATA[:30 * KB]
    for cap in (cap_a, cap_b):
        frames = [f for _, f in cap.packets]
        cap.close()
        if kind == "vxlan":
            assert sum(1 for f in frames if "TCP" in checked_layers(f)) > 20
        else:  # LINKTYPE_NULL: a 4-byte address family, then the inner packet
            assert sum(1 for f in frames if "TCP" in checked_layers(f[4:], False)) > 20


def test_ipsec_below_a_tunnel_encrypts_filled_inner_packets():
    """ESP between the tunnel ends: its hook is where the inner packets are filled, so
    the receiver, which verifies after decryption, accepts them all."""
    from tests.netipsec.ipsec_util import config

    k, a, b, ea, eb, dst = build("gif")
    ok_stdin = {a: config("gcm", "transport", "192.0.2.1", "192.0.2.2"),
                b: config("gcm", "transport", "192.0.2.2", "192.0.2.1")}
    for vnet, text in ok_stdin.items():
        res = vnet.cmd("setkey -c", stdin=text.encode())
        assert res.status == 0, res.output
    cap = open_capture(ea)
    assert transfer(k, a, b, dst, data=DATA[:60 * KB]) == DATA[:60 * KB]
    frames = [f for _, f in cap.packets]
    cap.close()
    assert frames and all(Ether(f)[IP].proto == 50 for f in frames if f[12:14] == b"\x08\x00")
    assert b.tcp.stats.rcvbadsum == 0 and a.ipsec.stats.output > 0


@pytest.mark.parametrize("kind", ["vlan", "gif"])
def test_rxcsum_off_on_the_receiving_interface_gets_filled_frames(kind):
    k, a, b, ea, eb, dst = build(kind)
    inner = b.ifaces[f"{eb.name}.10"] if kind == "vlan" else b.ifaces["gif0"]
    ok(b, f"ifconfig {inner.name} -rxcsum")
    marks: list[int] = []
    real = type(inner).input

    def spy(this: Ifnet, frame: bytes) -> None:
        if this is inner:
            marks.append(this.offl.partial)
        real(this, frame)

    type(inner).input = spy  # type: ignore[method-assign]
    try:
        assert transfer(k, a, b, dst, data=DATA[:60 * KB]) == DATA[:60 * KB]
    finally:
        type(inner).input = real  # type: ignore[method-assign]
    assert marks and not any(marks)
    assert b.tcp.stats.rcvbadsum == 0


def test_txcsum_off_on_a_tunnel_fills_before_encapsulation():
    k, a, b, ea, eb, dst = build("gre")
    ok(a, "ifconfig gre0 -txcsum")
    with Marks(eb) as seen:
        assert transfer(k, a, b, dst, data=DATA[:60 * KB]) == DATA[:60 * KB]
    assert seen.marks and not any(seen.marks)


def _zeroed(pkt: Any, layer: type) -> bytes:
    """`pkt` with the checksum of its (innermost) `layer` set to zero."""
    raw = bytearray(bytes(pkt))
    layers = _layers(pkt.__class__(bytes(pkt)))
    inner = [x for x in layers if isinstance(x, layer)][-1]
    off = len(raw) - len(bytes(inner)) + (16 if layer is TCP else 6)
    raw[off:off + 2] = b"\x00\x00"
    return bytes(raw)


@pytest.mark.parametrize("outer,vxlan", [
    (lambda: IP(src="192.0.2.1", dst="192.0.2.2") / IP(src="10.0.0.1", dst="10.0.0.2"), False),
    (lambda: IPv6(src="2001:db8::1", dst="2001:db8::2") / IP(src="10.0.0.1", dst="10.0.0.2"),
     False),
    (lambda: IP(src="192.0.2.1", dst="192.0.2.2") / IPv6(src="2001:db8:1::1",
                                                          dst="2001:db8:1::2"), False),
    (lambda: IP(src="192.0.2.1", dst="192.0.2.2") / GRE(key_present=1, key=7, seqnum_present=1,
                                                         sequence_number=3)
     / IP(src="10.0.0.1", dst="10.0.0.2"), False),
    (lambda: IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=5, dport=4789, chksum=0)
     / VXLAN(vni=42) / Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
     / IP(src="10.0.0.1", dst="10.0.0.2"), True),
    (lambda: IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=4789)
     / VXLAN(vni=42) / Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
     / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2"), True),
])
@pytest.mark.parametrize("transport", [TCP, UDP])
def test_resolve_fills_inside_encapsulations(outer, vxlan, transport):
    head = outer()
    seg = TCP(sport=1, dport=2, seq=9, flags="PA") if transport is TCP else UDP(sport=1, dport=2)
    pkt = head / seg / (b"payload" * 30)
    raw = _zeroed(pkt, transport)
    out = offload.resolve_ip(raw, 0, 1500, vxlan)
    assert len(out) == 1 and len(out[0]) == len(raw)
    names = checked_layers(out[0], ether=False)
    assert names[-1] == transport.__name__
    if vxlan and isinstance(head, IP):
        assert names[0] == "UDP(none)"  # the outer zero checksum stays zero


def test_resolve_leaves_a_gre_packet_with_its_own_checksum():
    pkt = (IP(src="192.0.2.1", dst="192.0.2.2") / GRE(chksum_present=1)
           / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * 40))
    raw = _zeroed(pkt, UDP)
    assert offload.resolve_ip(raw, 0, 1500) == [raw]


def test_resolve_without_the_vxlan_bit_fills_the_outer_udp_only():
    pkt = (IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=5, dport=4789)
           / VXLAN(vni=42) / Ether() / IP(src="10.0.0.1", dst="10.0.0.2")
           / UDP(sport=1, dport=2) / (b"x" * 40))
    raw = _zeroed(pkt, UDP)  # the inner one
    out = offload.resolve_ip(raw, 0, 1500)[0]
    assert out[-60:] == raw[-60:]  # the application's bytes are its own: not touched


def test_an_application_reading_the_vxlan_port_gets_filled_inner_frames():
    """b has no vxlan, only a socket on port 4789: the datagram a's vxlan sends it
    crossed the link offloaded, but the application reads a filled inner frame."""
    k = Kernel(clock="virtual", seed=4)
    a, b = k.create("a"), k.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    ok(a, "ifconfig vxlan create vxlanid 42 vxlanlocal 192.0.2.1 vxlanremote 192.0.2.2")
    ok(a, "ifconfig vxlan0 inet 10.0.0.1/24 up")
    ok(a, "arp -s 10.0.0.2 02:00:00:00:00:02")
    k.run(1)  # (vxlan0's own IPv6 chatter goes by before the socket exists)
    app = b.socket(2, 2)
    app.bind(("", 4789))
    with Marks(b.ifaces["epair0b"]) as seen:
        a.socket(2, 2).sendto(bytes(500), ("10.0.0.2", 7000))
        k.run(0.1)
    assert seen.marks == [offload.PARTIAL | offload.VXLAN]  # it crossed unfilled
    got = app.recv(2000)
    assert len(got) == 8 + 14 + 20 + 8 + 500
    assert checked_layers(got[8:]) == ["UDP"]


def build6(kind: str) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet]:
    """a and b, a `kind` tunnel between 2001:db8::1 and ::2 (IPv6 outside) carrying
    10.0.0.0/24 and 2001:db8:1::/64 (inner addresses ::1 and ::2)."""
    k = Kernel(clock="virtual", seed=2)
    a, b = k.create("a"), k.create("b")
    for v in (a, b):
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)
    ea, eb = connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    ok(a, "ifconfig epair0a inet6 2001:db8::1/64")
    ok(b, "ifconfig epair0b inet6 2001:db8::2/64")
    k.run(3)  # DAD
    for vnet, here, there, n, m in ((a, "2001:db8::1", "2001:db8::2", 1, 2),
                                    (b, "2001:db8::2", "2001:db8::1", 2, 1)):
        if kind == "vxlan":
            ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal {here} vxlanremote {there}")
            ok(vnet, f"ifconfig vxlan0 inet 10.0.0.{n}/24 up")
            ok(vnet, f"ifconfig vxlan0 inet6 2001:db8:1::{n}/64")
        else:
            ok(vnet, f"ifconfig {kind} create")
            # (gre's 1476 + 44 bytes of IPv6 and GRE would be fragmented: filled first)
            mtu = " mtu 1456" if kind == "gre" else ""
            ok(vnet, f"ifconfig {kind}0 tunnel {here} {there}{mtu}")
            ok(vnet, f"ifconfig {kind}0 inet 10.0.0.{n} 10.0.0.{m}")
            ok(vnet, f"ifconfig {kind}0 inet6 2001:db8:1::{n} 2001:db8:1::{m} prefixlen 128")
    k.run(3)
    return k, a, b, ea, eb


@pytest.mark.parametrize("inner", ["10.0.0.2", "2001:db8:1::2"], ids=["inner4", "inner6"])
@pytest.mark.parametrize("kind", TUNNELS)
def test_tunnels_over_ipv6_stay_offloaded_and_captures_are_filled(kind, inner):
    k, a, b, ea, eb = build6(kind)
    with Marks(eb) as seen:
        assert transfer(k, a, b, inner, data=DATA[:100 * KB]) == DATA[:100 * KB]
    assert seen.marks and all(seen.marks)  # the outer IPv6 packets crossed unfilled
    cap = open_capture(ea)  # now captured: filled on the way out of a
    assert transfer(k, a, b, inner, data=DATA[:60 * KB], port=5002) == DATA[:60 * KB]
    frames = [f for _, f in cap.packets]
    cap.close()
    outer6 = [f for f in frames if f[12:14] == b"\x86\xdd" and "TCP" in checked_layers(f)]
    assert len(outer6) > 30
    assert b.tcp.stats.rcvbadsum == 0 and k.sched.errors == 0


@pytest.mark.parametrize("v6", [False, True])
def test_segment_frame_cuts_unfilled_pieces_that_resolve_right(v6):
    ip = (IPv6(src="2001:db8::1", dst="2001:db8::2") if v6
          else IP(src="10.0.0.1", dst="10.0.0.2", id=40))
    data = bytes(range(256)) * 20  # 5120 bytes
    pkt = bytes(ip / TCP(sport=1, dport=2, seq=100, flags="PA") / data)
    pieces = offload.segment_frame(pkt, 1200, 1280, False)
    assert len(pieces) == 5 and all(len(p) <= 1280 for p in pieces)
    parse = IPv6 if v6 else IP
    parsed = [parse(p) for p in pieces]
    assert [p[TCP].seq for p in parsed] == [100 + 1200 * i for i in range(5)]
    assert [str(p[TCP].flags) for p in parsed] == ["A"] * 4 + ["PA"]
    assert all(p[TCP].chksum == 0 for p in parsed)  # left for whoever resolves them
    assert b"".join(bytes(p[TCP].payload) for p in parsed) == data
    for piece in pieces:
        assert checked_layers(offload.resolve_ip(piece, 0, 1280)[0], ether=False) == ["TCP"]
    assert offload.segment_frame(pieces[0], 1200, 1280, False) == [pieces[0]]  # fits
