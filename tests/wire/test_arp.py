"""Tests for vimage.wire.arp, cross-checked against scapy."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import ARP, Ether, raw

from vimage.wire import WireError, arp, ethernet, ipv4

MAC_A = bytes.fromhex("02abcd000001")
MAC_B = bytes.fromhex("02abcd000002")
IP_A = ipv4.aton("192.0.2.1")
IP_B = ipv4.aton("192.0.2.2")

macs = st.binary(min_size=6, max_size=6)
addrs = st.integers(0, 0xFFFFFFFF)


@given(st.sampled_from([arp.OP_REQUEST, arp.OP_REPLY]), macs, addrs, macs, addrs)
def test_build_dissected_by_scapy(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> None:
    data = arp.build(op, sha, spa, tha, tpa)
    assert len(data) == arp.LENGTH
    pkt = ARP(data)
    assert pkt.hwtype == 1
    assert pkt.ptype == 0x0800
    assert pkt.hwlen == 6
    assert pkt.plen == 4
    assert pkt.op == op
    assert pkt.hwsrc == ethernet.mac_ntoa(sha)
    assert pkt.psrc == ipv4.ntoa(spa)
    assert pkt.hwdst == ethernet.mac_ntoa(tha)
    assert pkt.pdst == ipv4.ntoa(tpa)
    assert raw(pkt) == data


@given(st.sampled_from([1, 2]), macs, addrs, macs, addrs)
def test_scapy_built_parsed(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> None:
    pkt = ARP(
        op=op,
        hwsrc=ethernet.mac_ntoa(sha),
        psrc=ipv4.ntoa(spa),
        hwdst=ethernet.mac_ntoa(tha),
        pdst=ipv4.ntoa(tpa),
    )
    rep = arp.parse(raw(pkt))
    assert rep == arp.ArpRepr(op, sha, spa, tha, tpa)
    assert rep.op == op
    assert rep.sha == sha
    assert rep.spa == spa
    assert rep.tha == tha
    assert rep.tpa == tpa


def test_request_in_padded_frame() -> None:
    frame = raw(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=ethernet.mac_ntoa(MAC_A))
        / ARP(op=1, hwsrc=ethernet.mac_ntoa(MAC_A), psrc="192.0.2.1", pdst="192.0.2.2")
    ).ljust(60, b"\x00")
    eth = ethernet.parse(frame)
    assert len(eth.payload) == 46
    rep = arp.parse(eth.payload)
    assert rep.op == arp.OP_REQUEST
    assert rep.sha == MAC_A
    assert rep.spa == IP_A
    assert rep.tpa == IP_B
    assert rep.tha == b"\x00" * 6


@pytest.mark.parametrize("length", range(arp.LENGTH))
def test_truncated(length: int) -> None:
    data = arp.build(arp.OP_REPLY, MAC_A, IP_A, MAC_B, IP_B)[:length]
    with pytest.raises(WireError) as exc:
        arp.parse(data)
    assert exc.value.reason == "tooshort"


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [(0, "!H", 6), (2, "!H", 0x86DD), (4, "!B", 16), (5, "!B", 16), (0, "!H", 0)],
)
def test_badtype(offset: int, fmt: str, value: int) -> None:
    data = bytearray(arp.build(arp.OP_REQUEST, MAC_A, IP_A, MAC_B, IP_B))
    struct.pack_into(fmt, data, offset, value)
    with pytest.raises(WireError) as exc:
        arp.parse(data)
    assert exc.value.reason == "badtype"


@pytest.mark.parametrize("op", [0, 3, 4, 8, 9, 0xFFFF])
def test_badop(op: int) -> None:
    data = raw(ARP(op=op, psrc="192.0.2.1", pdst="192.0.2.2"))
    with pytest.raises(WireError) as exc:
        arp.parse(data)
    assert exc.value.reason == "badop"


def test_build_rejects_bad_hw_length() -> None:
    with pytest.raises(ValueError):
        arp.build(1, MAC_A[:5], IP_A, MAC_B, IP_B)
