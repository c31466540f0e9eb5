"""ESP between vnets: transport and tunnel mode, both algorithms, scapy cross-checks,
replay and bad ICV, policy levels and actions, destroy, determinism."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import add_route, connect
from vimage.wire import esp as wesp

logging.getLogger("scapy").setLevel(logging.ERROR)

_spec = importlib.util.spec_from_file_location("ipsec_util",
                                               Path(__file__).with_name("ipsec_util.py"))
iu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(iu)  # type: ignore[union-attr]
A, B, ok, pair, scapy_sa = iu.A, iu.B, iu.ok, iu.pair, iu.scapy_sa
_tu_spec = importlib.util.spec_from_file_location(
    "tunnel_util", Path(__file__).parent.parent / "net" / "tunnel_util.py")
tu = importlib.util.module_from_spec(_tu_spec)  # type: ignore[arg-type]
_tu_spec.loader.exec_module(tu)  # type: ignore[union-attr]
tcp_transfer = tu.tcp_transfer

CASES = [(alg, mode) for alg in ("gcm", "cbc") for mode in ("transport", "tunnel")]


def ip_frames(packets: list[tuple[int, bytes]]) -> list[bytes]:
    """The IPv4 packets of captured Ethernet frames."""
    return [frame[14:] for _, frame in packets if frame[12:14] == b"\x08\x00"]


@pytest.mark.parametrize(("alg", "mode"), CASES)
def test_ping_and_tcp_through_esp_only_esp_on_the_wire(alg, mode):
    kernel, a, b, ia, _ = pair(alg, mode)
    cap = open_capture(ia, keep=True)
    out = ok(a, "ping -c 3 192.0.2.2")
    assert "3 packets transmitted, 3 packets received" in out
    data = tcp_transfer(a, b, B, 200_000)
    assert data == (bytes(range(256)) * 800)[:200_000]
    kernel.run(5)  # the closing segments arrive
    cap.close()
    pkts = ip_frames(cap.packets)
    assert len(pkts) > 20
    assert {p[9] for p in pkts} == {wesp.PROTO_ESP}
    assert a.ipsec.stats.output == b.ipsec.stats.input > 20
    assert b.ipsec.stats.output == a.ipsec.stats.input > 10
    assert a.ipsec.stats.badauth == b.ipsec.stats.replay == 0


@pytest.mark.parametrize(("alg", "mode"), CASES)
def test_scapy_decrypts_our_esp(alg, mode):
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.ipsec import ESP

    kernel, a, b, ia, _ = pair(alg, mode)
    cap = open_capture(ia, keep=True)
    ok(a, "ping -c 2 192.0.2.2")
    cap.close()
    pkts = ip_frames(cap.packets)
    requests = [p for p in pkts if p[12:16] == bytes([192, 0, 2, 1])]
    replies = [p for p in pkts if p[12:16] == bytes([192, 0, 2, 2])]
    assert len(requests) == len(replies) == 2
    sa_ab = scapy_sa(alg, iu.SPI_AB, mode, A, B)
    sa_ba = scapy_sa(alg, iu.SPI_BA, mode, B, A)
    for seq, raw_pkt in enumerate(requests, 1):
        outer = IP(raw_pkt)
        assert outer.proto == 50 and outer[ESP].spi == iu.SPI_AB and outer[ESP].seq == seq
        inner = sa_ab.decrypt(outer)
        assert inner[IP].src == A and inner[IP].dst == B
        assert inner[ICMP].type == 8
    for raw_pkt in replies:
        inner = sa_ba.decrypt(IP(raw_pkt))
        assert inner[ICMP].type == 0 and inner[IP].dst == A


@pytest.mark.parametrize(("alg", "mode"), CASES)
def test_we_decrypt_scapy_esp(alg, mode):
    from scapy.layers.inet import ICMP, IP

    kernel, a, b, ia, ib = pair(alg, mode)
    sa_ab = scapy_sa(alg, iu.SPI_AB, mode, A, B)
    sa_ba = scapy_sa(alg, iu.SPI_BA, mode, B, A)
    request = IP(src=A, dst=B, id=7) / ICMP(type=8, id=0x4242, seq=1) / (b"scapy" * 10)
    sealed = bytes(sa_ab.encrypt(IP(bytes(request))))
    cap = open_capture(ia, keep=True)
    ia.output(ib.mac + ia.mac + b"\x08\x00" + sealed)
    kernel.run(1)
    cap.close()
    assert b.ipsec.stats.input == 1
    replies = [p for p in ip_frames(cap.packets) if p[12:16] == bytes([192, 0, 2, 2])]
    assert len(replies) == 1 and replies[0][9] == 50
    answer = sa_ba.decrypt(IP(replies[0]))
    assert answer[ICMP].type == 0 and answer[ICMP].id == 0x4242
    assert bytes(answer[ICMP].payload) == b"scapy" * 10


def _one_esp_frame(alg: str, mode: str = "transport"):
    kernel, a, b, ia, ib = pair(alg, mode)
    cap = open_capture(ia, keep=True)
    ok(a, "ping -c 1 192.0.2.2")
    cap.close()
    frame = next(f for _, f in cap.packets if f[12:14] == b"\x08\x00" and f[26:30] ==
                 bytes([192, 0, 2, 1]))
    return kernel, a, b, ia, frame


@pytest.mark.parametrize("alg", ["gcm", "cbc"])
def test_replayed_packet_is_counted_and_dropped(alg):
    kernel, a, b, ia, frame = _one_esp_frame(alg)
    before = b.icmp.stats.inhist.copy() if hasattr(b.icmp.stats, "inhist") else None
    assert b.ipsec.stats.input == 1
    ia.output(frame)
    kernel.run(1)
    assert b.ipsec.stats.replay == 1
    assert b.ipsec.stats.input == 1
    if before is not None:
        assert b.icmp.stats.inhist == before


@pytest.mark.parametrize("alg", ["gcm", "cbc"])
def test_bad_icv_is_counted_and_dropped(alg):
    kernel, a, b, ia, frame = _one_esp_frame(alg)
    bad = bytearray(frame)
    bad[-20] ^= 0x01  # in the ciphertext: the ICV no longer verifies
    bad[14 + 20 + 4:14 + 20 + 8] = (5).to_bytes(4, "big")  # a fresh sequence number
    ia.output(bytes(bad))
    kernel.run(1)
    assert b.ipsec.stats.badauth == 1
    assert b.ipsec.stats.input == 1 and b.ipsec.stats.replay == 0
    # the window did not move: sequence number 5, genuine, still gets in
    assert b.ipsec.sad[0].replay.last == 1


def test_replay_window_accepts_out_of_order_within_64():
    from vimage.netipsec.key import Replay

    w = Replay(64)
    for seq in (1, 3, 70, 10, 7):
        assert w.check(seq)
        w.update(seq)
    assert not w.check(3) and not w.check(70) and not w.check(6)  # 6 = 70 - 64: too old
    assert w.check(8) and w.check(71) and not w.check(0)


def test_unknown_spi_and_short_header_are_counted():
    kernel, a, b, ia, ib = pair("gcm")
    from vimage.wire.checksum import checksum
    from vimage.wire.ipv4 import HEADER, aton

    def ip(payload: bytes) -> bytes:
        h = HEADER.pack(0x45, 0, 20 + len(payload), 1, 0, 64, 50, 0, aton(A), aton(B))
        return h[:10] + checksum(h).to_bytes(2, "big") + h[12:] + payload

    for payload in (b"\x00\x00\x99\x99" + bytes(40), b"\x00\x00"):
        ia.output(ib.mac + ia.mac + b"\x08\x00" + ip(payload))
    kernel.run(1)
    assert b.ipsec.stats.notdb == 1
    assert b.ipsec.stats.hdrops == 1


def test_require_inbound_drops_plaintext_and_use_sends_plaintext_without_sa():
    kernel, a, b, _, _ = pair(None)
    ok(b, "setkey -c", f"spdadd {A} {B} icmp -P in ipsec esp/transport//require;")
    assert "0 packets received" in a.cmd("ping -c 1 192.0.2.2").output
    assert b.ipsec.pstats.in_polvio == 1
    ok(b, "setkey -c", "spdflush;")
    ok(a, "setkey -c", f"spdadd {A} {B} any -P out ipsec esp/transport//use;")
    assert "1 packets received" in a.cmd("ping -c 1 192.0.2.2").output  # no SA: plaintext
    ok(a, "setkey -c", f"spdadd {A} {B} any -P out ipsec esp/transport//require;"
       .replace("spdadd", "spdflush; spdadd"))
    assert "0 packets received" in a.cmd("ping -c 1 192.0.2.2").output  # no SA: dropped
    assert a.ipsec.pstats.out_nosa == 1


def test_discard_and_none_policies_and_port_selectors():
    kernel, a, b, _, _ = pair(None)
    ok(a, "setkey -c", f"spdadd {A} {B} icmp -P out discard;")
    assert "0 packets received" in a.cmd("ping -c 1 192.0.2.2").output
    assert a.ipsec.pstats.out_polvio == 1
    ok(a, "setkey -c", f"spdadd {A} {B}[5001] tcp -P out discard;\n"
                       f"spdadd {A} {B} tcp -P out none;")
    srv = b.socket(2, 1)
    srv.bind(("", 5002))
    srv.listen(1)
    cli = a.socket(2, 1)
    cli.connect((B, 5002))  # port 5002: the `none` policy, plaintext
    srv.accept()[0].close()
    cli.close()
    with pytest.raises(OSError):
        s = a.socket(2, 1)
        s.settimeout(5)
        s.connect((B, 5001))  # port 5001: discarded (the SYN never leaves)


def test_gateways_tunnel_lan_to_lan_ping_and_tcp():
    """hostA 10.1.0.2 - gwA ==(ESP tunnel 192.0.2.1-192.0.2.2)== gwB - hostB 10.2.0.2."""
    kernel = Kernel(clock="virtual", seed=3)
    ha, ga, gb, hb = (kernel.create(n) for n in ("ha", "ga", "gb", "hb"))
    connect(ha, "10.1.0.2/24", ga, "10.1.0.1/24")
    outer_a, _ = connect(ga, f"{A}/24", gb, f"{B}/24")
    connect(gb, "10.2.0.1/24", hb, "10.2.0.2/24")
    for gw in (ga, gb):
        ok(gw, "sysctl net.inet.ip.forwarding=1")
    add_route(ha, "default", "10.1.0.1")
    add_route(hb, "default", "10.2.0.1")
    add_route(ga, "10.2.0.0/24", B)
    add_route(gb, "10.1.0.0/24", A)
    keys = (f"add {A} {B} esp 0x2000 -m tunnel {iu.alg_args('gcm')};\n"
            f"add {B} {A} esp 0x2001 -m tunnel {iu.alg_args('gcm')};\n")
    ok(ga, "setkey -c", keys + f"spdadd 10.1.0.0/24 10.2.0.0/24 any -P out ipsec "
       f"esp/tunnel/{A}-{B}/require;\nspdadd 10.2.0.0/24 10.1.0.0/24 any -P in ipsec "
       f"esp/tunnel/{B}-{A}/require;")
    ok(gb, "setkey -c", keys + f"spdadd 10.2.0.0/24 10.1.0.0/24 any -P out ipsec "
       f"esp/tunnel/{B}-{A}/require;\nspdadd 10.1.0.0/24 10.2.0.0/24 any -P in ipsec "
       f"esp/tunnel/{A}-{B}/require;")
    kernel.run(1)
    cap = open_capture(outer_a, keep=True)
    assert "2 packets received" in ok(ha, "ping -c 2 10.2.0.2")
    assert tcp_transfer(ha, hb, "10.2.0.2", 100_000) == (bytes(range(256)) * 400)[:100_000]
    cap.close()
    assert {p[9] for p in ip_frames(cap.packets)} == {50}
    # the gateways themselves talk in plaintext: no policy covers 192.0.2.0/24
    assert "1 packets received" in ok(ga, f"ping -c 1 {B}")


def test_destroy_leaves_no_state_and_hooks_go_with_the_last_policy():
    import gc
    import weakref

    kernel, a, b, _, _ = pair("gcm")
    ok(a, "ping -c 1 192.0.2.2")
    assert a.ip.pfil_out is not None and a.ip.pfil_in is not None
    ok(a, "setkey -FP")
    assert a.ip.pfil_out is None and a.ip.pfil_in is None
    ipsec = b.ipsec
    ref = weakref.ref(b)
    kernel.destroy(b)
    assert ipsec.sad == [] and ipsec.spd == [] and not ipsec.by_spi and not ipsec.by_pair
    del b, ipsec
    gc.collect()
    assert ref() is None, "something still holds the destroyed vnet"
    kernel.run(5)  # nothing of b's is left to run


def test_same_seed_same_esp_bytes():
    def run() -> list[bytes]:
        kernel, a, b, ia, _ = pair("cbc", "tunnel", seed=9)
        cap = open_capture(ia, keep=True)
        ok(a, "ping -c 2 192.0.2.2")
        cap.close()
        return [f for _, f in cap.packets]
    assert run() == run()


def test_tcpdump_shows_spi_and_sequence(tmp_path):
    kernel, a, b, ia, _ = pair("gcm")
    path = tmp_path / "esp.pcap"
    with open_capture(ia, str(path)):
        ok(a, "ping -c 2 192.0.2.2")
    lines = ok(a, f"tcpdump -n -r {path}").splitlines()
    esp = [line for line in lines if "ESP" in line]
    assert "IP 192.0.2.1 > 192.0.2.2: ESP(spi=0x00001000,seq=0x1), length 100" in esp[0]
    assert "ESP(spi=0x00001001,seq=0x2)" in esp[3]


def test_malformed_esp_is_counted_never_raises():
    """Garbage after a known SPI, truncations of a genuine packet, and a tunnel-mode SA
    carrying what is not an IPv4 packet: each counted on one espstat counter, dropped."""
    import random

    from scapy.layers.inet import IP

    kernel, a, b, ia, frame = _one_esp_frame("gcm")
    rng = random.Random(4)
    head = frame[:14 + 20]
    cases = 0
    for n in range(60):
        body = (iu.SPI_AB).to_bytes(4, "big") + (100 + n).to_bytes(4, "big") + rng.randbytes(
            rng.randrange(0, 80))
        ia.output(_with_payload(head, body))
        cases += 1
    genuine = frame[14 + 20:]
    for cut in (1, 7, 9, 20, len(genuine) - 1):
        ia.output(_with_payload(head, genuine[:cut]))
        cases += 1
    kernel.run(1)
    st = b.ipsec.stats
    assert st.badauth + st.hdrops + st.replay == cases
    assert st.input == 1 and kernel.sched.errors == 0
    # a tunnel-mode SA whose payload is not IPv4 (authentic: sealed with the key)
    kernel, a, b, ia, ib = pair("gcm", "tunnel")
    sa = scapy_sa("gcm", iu.SPI_AB, "transport", A, B)  # seals next header 4 as given
    sealed = bytes(sa.encrypt(IP(src=A, dst=B, proto=4) / b"\x60not an IPv4 packet at all"))
    ia.output(ib.mac + ia.mac + b"\x08\x00" + sealed)
    kernel.run(1)
    assert b.ipsec.stats.tunnel == 1 and b.ipsec.stats.input == 1


def _with_payload(frame_head: bytes, payload: bytes) -> bytes:
    """An Ethernet + IPv4 header from a captured ESP frame, with a new payload."""
    from vimage.wire.checksum import checksum

    h = bytearray(frame_head[14:34])
    h[2:4] = (20 + len(payload)).to_bytes(2, "big")
    h[10:12] = b"\0\0"
    h[10:12] = checksum(h).to_bytes(2, "big")
    return frame_head[:14] + bytes(h) + payload


def test_unique_level_picks_the_sa_by_reqid_and_use_accepts_plaintext_inbound():
    kernel, a, b, ia, _ = pair(None)
    gcm = iu.alg_args("gcm")
    conf = (f"add {A} {B} esp 0x3001 -m transport -u 1 {gcm};\n"
            f"add {A} {B} esp 0x3002 -m transport -u 2 {gcm};\n")
    ok(a, "setkey -c", conf + f"spdadd {A} {B} icmp -P out ipsec esp/transport//unique:2;")
    ok(b, "setkey -c", conf + f"spdadd {A} {B} icmp -P in ipsec esp/transport//use;")
    cap = open_capture(ia, keep=True)
    # the echo goes out in ESP with SA reqid 2; b has no policy for its reply: plaintext,
    # and a's inbound side has no policy either
    assert "1 packets received" in ok(a, "ping -c 1 192.0.2.2")
    cap.close()
    esp = [p for p in ip_frames(cap.packets) if p[9] == 50]
    assert [int.from_bytes(p[20:24], "big") for p in esp] == [0x3002]
    ok(a, "setkey -c", "spdflush;")
    assert "1 packets received" in ok(a, "ping -c 1 192.0.2.2")  # use: plaintext accepted
    assert b.ipsec.pstats.in_polvio == 0
