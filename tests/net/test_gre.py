"""gre(4): GRE between vnets with keys and sequence numbers, checked on the wire with
scapy; malformed and unmatched GRE counted and dropped; nesting and loops."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.l2 import GRE, Ether

from vimage.net.bpf import open_capture
from vimage.wire import gre as wgre

_spec = importlib.util.spec_from_file_location("tunnel_util",
                                               Path(__file__).with_name("tunnel_util.py"))
tu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(tu)  # type: ignore[union-attr]
INNER, OUTER, ok, sites, tcp_transfer = tu.INNER, tu.OUTER, tu.ok, tu.sites, tu.tcp_transfer


def _gre_frames(session):
    return [Ether(frame) for _, frame in session.packets
            if frame[12:14] == b"\x08\x00" and frame[23] == 47]


def test_ifconfig_output_with_key_and_options():
    _, a, _ = sites("gre", "grekey 42 enable_seq enable_csum")
    assert ok(a, "ifconfig gre0").splitlines() == [
        "gre0: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> metric 0 mtu 1476",
        "\toptions=600703<RXCSUM,TXCSUM,TSO4,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6>",  # offloads
        "\ttunnel inet 192.0.2.1 --> 192.0.2.2",
        "\tinet 10.0.0.1 --> 10.0.0.2 netmask 0xffffffff",
        "\tgroups: gre",
        "\tgrekey: 0x2a (42)",
        "\toptions=3<ENABLE_CSUM,ENABLE_SEQ>",
    ]
    ok(a, "ifconfig gre0 grekey 0 -enable_seq -enable_csum")
    out = ok(a, "ifconfig gre0")
    assert "grekey" not in out and "ENABLE_" not in out


def test_ping_and_tcp_across_gre_with_key_and_sequence_seen_by_scapy():
    kernel, a, b = sites("gre", "grekey 7 enable_seq")
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    assert " 0.0% packet loss" in ok(a, f"ping -c 3 {INNER[1]}")
    cap.close()
    frames = _gre_frames(cap)
    assert len(frames) == 6
    sent = [f for f in frames if f[IP].src == OUTER[0]]
    assert [f[GRE].sequence_number for f in sent] == [1, 2, 3]
    for f in frames:
        assert f[IP].proto == 47 and f[GRE].key == 7 and f[GRE].proto == 0x0800
        inner = f[GRE].payload
        assert {inner.src, inner.dst} == set(INNER) and inner.proto == 1
    assert len(tcp_transfer(a, b, INNER[1], 150_000)) == 150_000
    assert b.ifaces["gre0"].ierrors == 0 and kernel.sched.errors == 0


def test_checksummed_gre_verified_by_scapy():
    _, a, _ = sites("gre", "enable_csum")
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    ok(a, f"ping -c 1 {INNER[1]}")
    cap.close()
    frame = _gre_frames(cap)[0]
    assert frame[GRE].chksum_present == 1
    chk = frame[GRE].chksum
    del frame[GRE].chksum
    assert Ether(bytes(frame))[GRE].chksum == chk


def test_key_mismatch_is_counted_and_dropped():
    _, a, b = sites("gre", "grekey 1")
    ok(b, "ifconfig gre0 grekey 2")
    assert "100.0% packet loss" in a.cmd(f"ping -c 2 {INNER[1]}").output
    assert b.ifaces["gre0"].ierrors == 2 and b.ifaces["gre0"].ipackets == 0


def test_two_gre_tunnels_share_outer_addresses_told_apart_by_key():
    _, a, b = sites("gre", "grekey 1")
    for vnet, (here, there), (me, peer) in ((a, OUTER, ("10.9.0.1", "10.9.0.2")),
                                            (b, OUTER[::-1], ("10.9.0.2", "10.9.0.1"))):
        ok(vnet, "ifconfig gre1 create")
        ok(vnet, f"ifconfig gre1 grekey 2 tunnel {here} {there}")
        ok(vnet, f"ifconfig gre1 inet {me} {peer}")
    assert " 0.0% packet loss" in ok(a, "ping -c 2 10.9.0.2")
    assert " 0.0% packet loss" in ok(a, f"ping -c 2 {INNER[1]}")
    assert b.ifaces["gre1"].ipackets == 2 and b.ifaces["gre0"].ipackets == 2
    # the same key twice is refused
    ok(a, "ifconfig gre2 create")
    result = a.cmd(f"ifconfig gre2 grekey 2 tunnel {OUTER[0]} {OUTER[1]}")
    assert result.status == 1


def _inject(vnet, src: str, dst: str, payload: bytes) -> None:
    """An IPv4 packet of protocol 47 arriving on vnet's Internet interface."""
    ifp = vnet.ifaces["epair0b"]
    pkt = bytes(IP(src=src, dst=dst, proto=47) / payload)
    assert ifp.mac is not None
    ifp.txq.append((ifp, ifp.mac + b"\x02\x00\x00\x00\x00\x09\x08\x00" + pkt))


def test_malformed_gre_is_counted_and_dropped():
    kernel, _, b = sites("gre")
    inner = bytes(IP(src=INNER[0], dst=INNER[1]) / (b"x" * 8))
    bad = [
        b"\x00\x01\x08\x00" + inner,  # version 1 (PPTP)
        b"\x40\x00\x08\x00" + inner,  # RFC 1701 routing bit
        b"\x20\x00\x08\x00\x00",  # key announced, truncated
        b"\x80\x00\x08\x00\x12\x34\x00\x00" + inner,  # wrong checksum
        b"\x00\x00",  # shorter than a GRE header
    ]
    for payload in bad:
        _inject(b, OUTER[0], OUTER[1], payload)
    _inject(b, OUTER[0], OUTER[1], wgre.build(0x0806, b"\x00" * 28))  # ARP: no proto
    _inject(b, OUTER[0], OUTER[1], wgre.build(0x0800, b"\x45"))  # no room for IPv4
    kernel.run(0.1)
    gre = b.ifaces["gre0"]
    assert gre.ierrors == len(bad) + 1 and gre.iqdrops == 1 and gre.ipackets == 0
    assert kernel.sched.errors == 0


def test_gre_from_an_unknown_peer_goes_to_raw_ip():
    kernel, _, b = sites("gre")
    _inject(b, "192.0.2.99", OUTER[1], wgre.build(0x0800, b"\x45" + b"\x00" * 19))
    kernel.run(0.1)
    assert b.gre.stats.nomatch == 1 and b.ip.stats.noproto == 1


def test_gif_inside_gre_nests_only_when_allowed():
    kernel, a, b = sites("gre")
    for vnet, (here, there), (me, peer) in ((a, INNER, ("10.9.0.1", "10.9.0.2")),
                                            (b, INNER[::-1], ("10.9.0.2", "10.9.0.1"))):
        ok(vnet, "ifconfig gre1 create")
        ok(vnet, f"ifconfig gre1 tunnel {here} {there}")
        ok(vnet, f"ifconfig gre1 inet {me} {peer}")
    assert "100.0% packet loss" in a.cmd("ping -c 1 10.9.0.2").output
    assert a.gre.stats.nesting == 1
    for vnet in (a, b):
        ok(vnet, "sysctl net.link.gre.max_nesting=2")
    assert " 0.0% packet loss" in ok(a, "ping -c 1 10.9.0.2")


def test_default_route_through_the_tunnel_is_a_loop_not_a_crash():
    kernel, a, _ = sites("gre")
    ok(a, "ifconfig gre0 -tunnel")
    ok(a, "ifconfig gre0 tunnel 192.0.2.1 198.51.100.1")
    ok(a, "route add default 10.0.0.2")
    assert "100.0% packet loss" in a.cmd("ping -c 3 10.0.0.2").output
    assert a.gre.stats.loops == 3 and kernel.sched.errors == 0


@pytest.fixture(scope="module")
def gre_world():
    return sites("gre", "grekey 3")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([0x0000, 0x2000, 0x3000, 0xB000, 0x8000]))
def test_fuzzed_gre_never_raises_out_of_the_loop(gre_world, body, flags):
    kernel, _, b = gre_world
    _inject(b, OUTER[0], OUTER[1], flags.to_bytes(2, "big") + b"\x08\x00" + body)
    kernel.run(0.01)
    assert kernel.sched.errors == 0


def test_same_seed_same_bytes_through_gre():
    def trace() -> list[bytes]:
        kernel, a, b = sites("gre", "grekey 9 enable_seq enable_csum", seed=5)
        cap = open_capture(a.ifaces["epair0a"], keep=True)
        tcp_transfer(a, b, INNER[1], 20_000)
        cap.close()
        return [frame for _, frame in cap.packets]
    assert trace() == trace()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_gre_with_key_sequence_and_checksum(tmp_path):
    _, a, _ = sites("gre", "grekey 42 enable_seq enable_csum")
    outer, inner = str(tmp_path / "outer.pcap"), str(tmp_path / "gre0.pcap")
    with open_capture(a.ifaces["epair0a"], outer, filter="proto 47"), \
            open_capture(a.ifaces["gre0"], inner):
        ok(a, f"ping -c 2 {INNER[1]}")
    rows = tu.tshark(outer, "frame.protocols", "gre.key", "gre.sequence_number",
                     "gre.checksum.status")
    assert len(rows) == 4
    for protocols, key, _, csum in rows:
        assert protocols == "eth:ethertype:ip:gre:ip:icmp:data" and key == "0x0000002a"
        assert csum == "1"  # Wireshark PROTO_CHECKSUM_E_GOOD
    assert sorted(int(r[2]) for r in rows) == [1, 1, 2, 2]
    assert [r[0] for r in tu.tshark(inner, "frame.protocols")] == ["null:ip:icmp:data"] * 4


def test_moving_a_gre_interface_drops_its_tunnel_keeps_its_key():
    kernel, a, _ = sites("gre", "grekey 5")
    c = kernel.create("c")
    ok(a, "ifconfig gre0 vnet c")
    gre = c.ifaces["gre0"]
    assert gre.dst == 0 and not a.gre.softcs and gre.key == 5
