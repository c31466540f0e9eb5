"""Packet capture (vimage.net.bpf): sessions, filters, pcap files, exact virtual timestamps."""

from __future__ import annotations

import gc
import io
import logging
import struct
import weakref
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, IPOption_RR, Loopback, raw, rdpcap

from vimage import topo
from vimage.kernel import Kernel
from vimage.net import bpf
from vimage.net.bpf import open_capture
from vimage.net.bpf_filter import compile_filter
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW
from vimage.wire import icmp as wicmp
from vimage.wire import pcap

logging.getLogger("scapy").setLevel(logging.ERROR)

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
BCAST = "ff:ff:ff:ff:ff:ff"


# -- crafted frames ------------------------------------------------------------------------
def _eth(src: str = MAC_A, dst: str = MAC_B) -> Ether:
    return Ether(src=src, dst=dst)


def _frames() -> dict[str, bytes]:
    a, b, c = "10.0.0.1", "10.0.0.2", "10.0.1.5"
    udp = UDP(sport=5000, dport=53) / b"hello"
    # a non-first fragment whose data, read as if it were a UDP header, says 53 -> 53
    frag_data = struct.pack("!HHHH", 53, 53, 16, 0) + bytes(8)
    # IP options (RR, 28-byte header): the bytes right after a 20-byte header are not ports
    opts = [IPOption_RR(routers=["10.9.9.9"])]
    return {
        "udp": raw(_eth() / IP(src=a, dst=b) / udp),
        "tcp": raw(_eth(MAC_B, MAC_A) / IP(src=c, dst=b) / TCP(sport=40000, dport=80,
                                                               flags="S")),
        "icmp": raw(_eth(MAC_B, MAC_A) / IP(src=b, dst=a) / ICMP(id=1, seq=1)),
        "arp_req": raw(_eth(MAC_A, BCAST) / ARP(op=1, hwsrc=MAC_A, psrc=a, pdst=b)),
        "arp_rep": raw(_eth(MAC_B, MAC_A) / ARP(op=2, hwsrc=MAC_B, psrc=b, hwdst=MAC_A,
                                                pdst=a)),
        "frag0": raw(_eth() / IP(src=a, dst=b, flags="MF", id=7, proto=17)
                     / raw(UDP(sport=5000, dport=53, len=3008) / bytes(16))),
        "frag1": raw(_eth() / IP(src=a, dst=b, frag=185, id=7, proto=17) / frag_data),
        "opts": raw(_eth() / IP(src=a, dst=b, options=opts) / UDP(sport=6000, dport=7000)),
        "bcast_udp": raw(_eth(MAC_A, BCAST) / IP(src=a, dst="10.0.0.255")
                         / UDP(sport=520, dport=520)),
        "mcast": raw(_eth(MAC_A, "01:00:5e:00:00:01") / IP(src=a, dst="224.0.0.1")
                     / UDP(sport=1, dport=2)),
    }


FRAMES = _frames()
ALL = frozenset(FRAMES)
IPV4 = ALL - {"arp_req", "arp_rep"}

# expression -> the frames it must match (and it must match none of the others)
CASES: tuple[tuple[str, frozenset[str]], ...] = (
    ("", ALL),
    ("ip", IPV4),
    ("arp", frozenset({"arp_req", "arp_rep"})),
    ("icmp", frozenset({"icmp"})),
    ("udp", frozenset({"udp", "frag0", "frag1", "opts", "bcast_udp", "mcast"})),
    ("tcp", frozenset({"tcp"})),
    ("host 10.0.0.2", ALL - {"bcast_udp", "mcast"}),
    ("ip host 10.0.0.2", IPV4 - {"bcast_udp", "mcast"}),
    ("arp host 10.0.0.2", frozenset({"arp_req", "arp_rep"})),
    ("src host 10.0.0.2", frozenset({"icmp", "arp_rep"})),
    ("dst host 10.0.0.2", ALL - {"icmp", "arp_rep", "bcast_udp", "mcast"}),
    ("src host 10.0.1.5", frozenset({"tcp"})),
    ("net 10.0.1.0/24", frozenset({"tcp"})),
    ("src net 10.0.0.0/24", ALL - {"tcp"}),
    ("dst net 10.0.0.0/30", ALL - {"bcast_udp", "mcast"}),
    ("net 10.0", ALL),
    ("dst net 10.0", ALL - {"mcast"}),
    ("net 10.0.0.0 mask 255.255.255.0", ALL),
    ("port 53", frozenset({"udp", "frag0"})),
    ("src port 5000", frozenset({"udp", "frag0"})),
    ("dst port 53", frozenset({"udp", "frag0"})),
    ("src port 53", frozenset()),
    ("udp port 53", frozenset({"udp", "frag0"})),
    ("tcp port 53", frozenset()),
    ("tcp dst port 80", frozenset({"tcp"})),
    ("port 80 or port 7000", frozenset({"tcp", "opts"})),
    ("port 6000 and port 7000", frozenset({"opts"})),
    ("src and dst port 520", frozenset({"bcast_udp"})),
    ("src or dst port 7000", frozenset({"opts"})),
    ("portrange 50-60", frozenset({"udp", "frag0"})),
    ("port domain", frozenset({"udp", "frag0"})),
    ("ether host 02:00:00:00:00:0b", ALL - {"bcast_udp", "mcast", "arp_req"}),
    ("ether src 02:00:00:00:00:0b", frozenset({"tcp", "icmp", "arp_rep"})),
    ("ether dst ff:ff:ff:ff:ff:ff", frozenset({"arp_req", "bcast_udp"})),
    ("broadcast", frozenset({"arp_req", "bcast_udp"})),
    ("ether broadcast", frozenset({"arp_req", "bcast_udp"})),
    ("multicast", frozenset({"arp_req", "bcast_udp", "mcast"})),
    ("ip multicast", frozenset({"mcast"})),
    ("ip proto 17", frozenset({"udp", "frag0", "frag1", "opts", "bcast_udp", "mcast"})),
    ("ether proto arp", frozenset({"arp_req", "arp_rep"})),
    ("not arp", IPV4),
    ("! ip", frozenset({"arp_req", "arp_rep"})),
    ("udp and not port 53", frozenset({"frag1", "opts", "bcast_udp", "mcast"})),
    ("icmp or arp", frozenset({"icmp", "arp_req", "arp_rep"})),
    ("icmp || tcp", frozenset({"icmp", "tcp"})),
    ("udp && src host 10.0.0.1 && dst port 53", frozenset({"udp", "frag0"})),
    ("host 10.0.1.5 or 10.0.0.255", frozenset({"tcp", "bcast_udp"})),  # qualifiers carried
    # and/or have equal precedence, left to right: (tcp or icmp) and src host 10.0.0.2
    ("tcp or icmp and src host 10.0.0.2", frozenset({"icmp"})),
    ("tcp or (icmp and src host 10.0.0.2)", frozenset({"tcp", "icmp"})),
    ("not (udp or arp)", frozenset({"tcp", "icmp"})),
    ("10.0.1.5", frozenset({"tcp"})),
    ("greater 50", frozenset({"tcp", "frag0", "opts", "frag1"})),
    ("less 47", frozenset({"udp", "arp_req", "arp_rep", "icmp", "bcast_udp", "mcast"})),
)


@pytest.mark.parametrize(("expr", "matches"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_filter_primitives_on_crafted_frames(expr: str, matches: frozenset[str]) -> None:
    match = compile_filter(expr, pcap.LINKTYPE_ETHERNET, netmask=0xFFFFFF00)
    got = {name for name, frame in FRAMES.items() if match(frame)}
    assert got == matches


def test_frame_lengths_used_by_the_size_cases() -> None:
    sizes = {name: len(f) for name, f in FRAMES.items()}
    assert (sizes["udp"], sizes["tcp"], sizes["frag0"], sizes["frag1"]) == (47, 54, 58, 50)
    assert sizes["opts"] == 14 + 28 + 8 and sizes["arp_req"] == 42


def test_ports_ignore_non_first_fragments_and_honour_ip_options() -> None:
    # the naive reading (port at byte 34) would match these, the right one must not
    assert FRAMES["frag1"][34:38] == b"\x00\x35\x00\x35"
    for expr in ("port 53", "dst port 53", "udp src port 53"):
        assert not compile_filter(expr)(FRAMES["frag1"])
    # with options the header is 28 bytes: bytes 34..38 are the RR option (7, 7, 4, 10)
    assert FRAMES["opts"][14] == 0x47 and FRAMES["opts"][34:38] == b"\x07\x07\x04\x0a"
    assert compile_filter("src port 6000 and dst port 7000")(FRAMES["opts"])
    assert not compile_filter("src port 1799 or dst port 1034")(FRAMES["opts"])


def test_ip_broadcast_needs_a_netmask() -> None:
    with pytest.raises(ValueError, match="netmask"):
        compile_filter("ip broadcast")
    match = compile_filter("ip broadcast", netmask=0xFFFFFF00)
    assert match(FRAMES["bcast_udp"]) and not match(FRAMES["udp"])


@pytest.mark.parametrize(("expr", "word"), [
    ("foo", "foo"),
    ("udp and bogus", "bogus"),
    ("host 10.0.0.300", "10.0.0.300"),
    ("port 70000", "70000"),
    ("port http-alt", "http-alt"),
    ("net 10.0.0.1/24", "10.0.0.1/24"),
    ("net 10.0.0.0/33", "10.0.0.0/33"),
    ("ether host 10.0.0.1", "10.0.0.1"),
    ("tcp host 10.0.0.1", "tcp"),
    ("ip port 80", "ip"),
    ("udp and", "and"),
    ("(udp", "end"),
    ("udp )", ")"),
    ("port", "port"),
    ("not", "not"),
    ("ip[6:2] & 0x1fff = 0", "ip[6:2]"),
    ("or udp", "or"),
])
def test_bad_filters_name_the_offending_word(expr: str, word: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_filter(expr)
    assert f"'{word}'" in str(info.value)


def test_ether_primitives_are_refused_on_loopback() -> None:
    with pytest.raises(ValueError, match="Ethernet"):
        compile_filter("ether host 02:00:00:00:00:01", pcap.LINKTYPE_NULL)
    with pytest.raises(ValueError, match="Ethernet"):
        compile_filter("broadcast", pcap.LINKTYPE_NULL)


def test_filters_on_loopback_and_raw_frames() -> None:
    pkt = raw(IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=5000, dport=9))
    null = struct.pack("<I", 2) + pkt
    null_be = struct.pack(">I", 2) + pkt
    for linktype, frame in ((pcap.LINKTYPE_NULL, null), (pcap.LINKTYPE_NULL, null_be),
                            (pcap.LINKTYPE_RAW, pkt)):
        assert compile_filter("udp and dst port 9 and host 127.0.0.1", linktype)(frame)
        assert not compile_filter("icmp or port 53 or arp", linktype)(frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([e for e, _ in CASES if "broadcast" not in e]))
def test_filters_never_raise_on_garbage(frame: bytes, expr: str) -> None:
    for linktype in (pcap.LINKTYPE_ETHERNET, pcap.LINKTYPE_NULL, pcap.LINKTYPE_RAW):
        try:
            match = compile_filter(expr, linktype)
        except ValueError:
            continue  # ether primitives on a non-Ethernet link
        assert match(frame) in (True, False)


# -- sessions on live interfaces --------------------------------------------------------------
class Lab:
    """vnets a (10.0.0.1) and b (10.0.0.2) on one epair delayed 10 ms each way."""

    def __init__(self, seed: int = 5, delay: str | None = "10ms") -> None:
        self.kernel = k = Kernel(clock="virtual", seed=seed)
        self.a, self.b = k.create("a"), k.create("b")
        self.ia, self.ib = topo.connect(self.a, "10.0.0.1/24", self.b, "10.0.0.2/24")
        if delay:
            self.ia.impair(delay=delay)
            self.ib.impair(delay=delay)
        k.run(1)  # gratuitous ARPs land before any capture starts

    def traffic(self) -> None:
        """ARP, a UDP datagram, an ICMP echo and its reply, a port unreachable."""
        rx = self.b.socket(AF_INET, SOCK_DGRAM)
        rx.bind(("", 7000))
        tx = self.a.socket(AF_INET, SOCK_DGRAM)
        tx.bind(("", 5000))
        tx.sendto(b"hello", ("10.0.0.2", 7000))
        tx.sendto(b"nobody", ("10.0.0.2", 7001))
        ping = self.a.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
        ping.sendto(wicmp.build_echo(wicmp.ECHO, 0x1234, 1, b"x" * 56), ("10.0.0.2", 0))
        self.kernel.run(1)
        assert rx.recv(100) == b"hello"
        for s in (rx, tx, ping):
            s.close()


def test_no_capture_means_no_capture_objects() -> None:
    lab = Lab()
    lab.traffic()
    assert all(ifp.bpf is None for ifp in lab.kernel.interfaces())
    session = open_capture(lab.ia)
    dispatcher = weakref.ref(lab.ia.bpf)
    assert isinstance(dispatcher(), bpf.BpfIf) and lab.ib.bpf is None
    lab.traffic()
    assert session.captured > 0
    session.close()
    assert lab.ia.bpf is None
    watched = weakref.ref(session)
    del session
    gc.collect()
    assert dispatcher() is None and watched() is None
    assert all(ifp.bpf is None for ifp in lab.kernel.interfaces())


def test_sessions_attach_and_detach() -> None:
    lab = Lab()
    with open_capture(lab.ia) as s1:
        s2 = open_capture(lab.ia, filter="icmp")
        assert lab.ia.bpf.sessions == (s1, s2)
        assert bpf.sessions_of(lab.ia) == (s1, s2) and bpf.sessions_of(lab.ib) == ()
        s2.close()
        s2.close()  # idempotent
        assert lab.ia.bpf.sessions == (s1,) and s2.closed and not s1.closed
    assert s1.closed and lab.ia.bpf is None
    lab.traffic()
    assert s1.captured == 0 and s1.packets == []


def test_two_sessions_with_different_filters() -> None:
    lab = Lab()
    every = open_capture(lab.ib)
    icmp = open_capture(lab.ib, filter="icmp")
    udp = open_capture(lab.ib, filter="udp")
    lab.traffic()
    for s in (every, icmp, udp):
        s.close()
    protos = [IP(f[14:]).proto if f[12:14] == b"\x08\x00" else None for _, f in every.packets]
    assert protos.count(1) == 3 and protos.count(17) == 2 and protos.count(None) == 2
    assert [f for _, f in icmp.packets] == [f for _, f in every.packets
                                            if f[12:14] == b"\x08\x00" and f[23] == 1]
    assert len(udp.packets) == 2 and all(f[23] == 17 for _, f in udp.packets)
    # every session saw every frame; the filters decided what was kept
    assert every.received == icmp.received == udp.received == len(every.packets) == 7
    assert (every.captured, icmp.captured, udp.captured) == (7, 3, 2)


def test_directions_and_exact_times() -> None:
    lab = Lab()
    out = open_capture(lab.ia, direction="out")
    inn = open_capture(lab.ia, direction="in")
    start = lab.kernel.now_ns()
    lab.traffic()
    out.close()
    inn.close()
    # what a sends: ARP request, 2 UDP, echo request; it receives the other 3
    assert len(out.packets) == 4 and len(inn.packets) == 3
    assert all(f[6:12] == lab.ia.mac for _, f in out.packets)
    assert all(f[6:12] == lab.ib.mac for _, f in inn.packets)
    # the ARP reply is back after 20 ms, the held packets leave then, answers 20 ms later
    assert [t - start for t, _ in out.packets] == [0, 2 * 10**7, 2 * 10**7, 2 * 10**7]
    assert [t - start for t, _ in inn.packets] == [2 * 10**7, 4 * 10**7, 4 * 10**7]


def test_pcap_file_read_back_by_scapy_exactly(tmp_path) -> None:
    lab = Lab()
    path = str(tmp_path / "cap.pcap")
    session = open_capture(lab.ib, path, keep=True)
    lab.traffic()
    session.close()
    with open(path, "rb") as fh:
        assert fh.read(4) == bytes.fromhex("4d3cb2a1")  # nanosecond magic, little-endian
    pkts = rdpcap(path)
    assert len(pkts) == len(session.packets) == 7
    for pkt, (t, frame) in zip(pkts, session.packets, strict=True):
        assert raw(pkt) == frame
        assert Decimal(pkt.time) == Decimal(t) / 10**9
        assert pkt.wirelen == len(frame)
    assert pkts[0][ARP].op == 1 and pkts[1][ARP].op == 2
    assert pkts[2][UDP].dport == 7000 and bytes(pkts[2][UDP].payload) == b"hello"
    assert {p[ICMP].type for p in pkts if ICMP in p} == {0, 3, 8}
    # our own reader agrees
    back = pcap.read_pcap(path)
    assert back.linktype == pcap.LINKTYPE_ETHERNET and back.nano and back.snaplen == 262144
    assert [(r.time_ns, r.data) for r in back.records] == session.packets


def test_microsecond_pcap_and_snaplen(tmp_path) -> None:
    lab = Lab(delay="1.2345678ms")
    path = str(tmp_path / "micro.pcap")
    session = open_capture(lab.ib, path, snaplen=40, precision="micro", keep=True)
    lab.traffic()
    session.close()
    with open(path, "rb") as fh:
        assert fh.read(4) == bytes.fromhex("d4c3b2a1")
    pkts = rdpcap(path)
    assert len(pkts) == 7
    for pkt, (t, frame) in zip(pkts, session.packets, strict=True):
        assert raw(pkt) == frame and len(frame) <= 40
        assert Decimal(pkt.time) == Decimal(t // 1000) / 10**6
    assert any(t % 1000 for t, _ in session.packets)  # the file really lost precision
    assert max(p.wirelen for p in pkts) == 14 + 84  # the echo, cut to 40 bytes
    assert pcap.read_pcap(path).records[0].wirelen == 42


def test_virtual_capture_is_byte_for_byte_reproducible() -> None:
    images = []
    for _ in range(2):
        lab = Lab(seed=9)
        buf = io.BytesIO()
        session = open_capture(lab.ia, buf)
        lab.traffic()
        session.close()
        images.append(buf.getvalue())
    assert images[0] == images[1] and len(images[0]) > 24 + 7 * 16


def test_capture_ends_when_the_interface_is_destroyed(tmp_path) -> None:
    lab = Lab()
    path = str(tmp_path / "gone.pcap")
    session = open_capture(lab.ib, path, keep=True)
    other = open_capture(lab.ib, filter="icmp")
    lab.traffic()
    seen = len(session.packets)
    lab.ia.destroy()  # takes its peer ib along
    assert session.closed and other.closed and lab.ib.bpf is None
    assert session.error == other.error == "The interface disappeared"
    assert len(rdpcap(path)) == seen == 7  # the file was flushed and closed
    session.close()  # closing again is harmless
    with pytest.raises(OSError, match="not configured"):
        open_capture(lab.ib)


def test_count_closes_the_session() -> None:
    lab = Lab()
    session = open_capture(lab.ib, filter="icmp", count=2)
    lab.traffic()
    assert session.closed and session.error is None and lab.ib.bpf is None
    assert len(session.packets) == 2 and session.captured == 2


def test_buffer_limit_counts_drops() -> None:
    lab = Lab()
    session = open_capture(lab.ib, buffer=3)
    lab.traffic()
    session.close()
    assert len(session.packets) == 3 and session.dropped == 4 and session.received == 7
    assert session.stats() == (3, 7, 4)


def test_capture_on_loopback(tmp_path) -> None:
    lab = Lab()
    lo = lab.a.iface("lo0")
    path = str(tmp_path / "lo.pcap")
    session = open_capture(lo, path, keep=True)
    udp_only = open_capture(lo, filter="udp and dst port 9")
    tx = lab.a.socket(AF_INET, SOCK_DGRAM)
    tx.sendto(b"to myself", ("127.0.0.1", 9))  # nobody listens: port unreachable comes back
    lab.kernel.run(1)
    session.close()
    udp_only.close()
    assert len(session.packets) == 2  # each packet once, although lo sends and receives it
    assert all(f[:4] == b"\x02\x00\x00\x00" for _, f in session.packets)
    assert [f for _, f in udp_only.packets] == [session.packets[0][1]]
    pkts = rdpcap(path)
    assert all(Loopback in p for p in pkts)
    assert pkts[0][UDP].dport == 9 and pkts[1][ICMP].type == 3
    assert pcap.read_pcap(path).linktype == pcap.LINKTYPE_NULL


def test_capture_on_interfaces_of_several_vnets() -> None:
    kernel = Kernel(clock="virtual", seed=3)
    h1, r1, h2 = topo.router_chain(kernel, 1)
    kernel.run(1)
    left, right = r1.iface("epair0b"), r1.iface("epair1a")
    sessions = [open_capture(ifp, filter="udp") for ifp in (h1.iface("epair0a"), left, right,
                                                             h2.iface("epair1b"))]
    assert topo.udp_delivered(h1, h2, "10.0.1.2", 7000)
    ttls = []
    for s in sessions:
        s.close()
        assert len(s.packets) == 1
        ttls.append(IP(s.packets[0][1][14:]).ttl)
    assert ttls == [64, 64, 63, 63]  # the router decremented it between its two interfaces


def test_open_capture_validates_arguments(tmp_path) -> None:
    lab = Lab()
    with pytest.raises(ValueError, match="direction"):
        open_capture(lab.ia, direction="sideways")
    with pytest.raises(ValueError, match="snaplen"):
        open_capture(lab.ia, snaplen=-1)
    with pytest.raises(ValueError, match="'bogus'"):
        open_capture(lab.ia, filter="bogus")
    with pytest.raises(OSError):
        open_capture(lab.ia, str(tmp_path / "missing" / "x.pcap"))
    assert lab.ia.bpf is None  # nothing was left attached by the failures


def test_reader_handles_big_endian_and_reports_damage(tmp_path) -> None:
    frame = FRAMES["udp"]
    big = struct.pack(">IHHiIII", pcap.MAGIC_MICRO, 2, 4, 0, 0, 65535, 1)
    big += struct.pack(">IIII", 12, 345678, len(frame), len(frame)) + frame
    path = tmp_path / "big.pcap"
    path.write_bytes(big)
    got = pcap.read_pcap(str(path))
    assert got.records == [pcap.Record(12_345_678_000, frame, len(frame))] and not got.nano
    path.write_bytes(big[:-3])
    with pytest.raises(ValueError, match="truncated dump file"):
        pcap.read_pcap(str(path))
    path.write_bytes(b"not a pcap file at all, sorry")
    with pytest.raises(ValueError, match="bad dump file format"):
        pcap.read_pcap(str(path))


def test_writer_round_trip_through_a_file_object() -> None:
    buf = io.BytesIO()
    with pcap.PcapWriter(buf, pcap.LINKTYPE_ETHERNET) as w:
        w.write(1_000_000_001, FRAMES["tcp"], len(FRAMES["tcp"]))
        w.write(2_500_000_000, FRAMES["arp_req"][:20], len(FRAMES["arp_req"]))
    buf.seek(0)
    linktype, snaplen, nano, records = pcap.iter_pcap(buf)
    assert (linktype, snaplen, nano) == (1, 262144, True)
    assert list(records) == [pcap.Record(1_000_000_001, FRAMES["tcp"], len(FRAMES["tcp"])),
                             pcap.Record(2_500_000_000, FRAMES["arp_req"][:20], 42)]


def test_esp_ah_and_gre_by_name() -> None:
    """libpcap's `esp` and `ah` keywords (IPv4 and IPv6) and `ip proto gre`."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import AH, ESP
    from scapy.layers.l2 import GRE, Ether

    esp4 = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / ESP(spi=1, seq=1))
    esp6 = bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / ESP(spi=1, seq=1))
    ah4 = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / AH(spi=1, seq=1))
    gre4 = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / GRE())
    for expr, matching in (("esp", {esp4, esp6}), ("ah", {ah4}), ("ip proto gre", {gre4}),
                           ("ip proto esp", {esp4}), ("ip6 proto esp", {esp6})):
        match = compile_filter(expr)
        assert {f for f in (esp4, esp6, ah4, gre4) if match(f)} == matching, expr
