"""Tests for vimage.wire.ethernet, cross-checked against scapy."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import ARP, Ether, raw

from vimage.wire import WireError, ethernet

MAC_A = bytes.fromhex("02abcd000001")
MAC_B = bytes.fromhex("02abcd000002")


def test_build_dissected_by_scapy() -> None:
    frame = ethernet.build(MAC_A, MAC_B, ethernet.ETHERTYPE_IP, b"hello")
    pkt = Ether(frame)
    assert pkt.dst == "02:ab:cd:00:00:01"
    assert pkt.src == "02:ab:cd:00:00:02"
    assert pkt.type == 0x0800
    assert len(frame) == ethernet.HEADER_LEN + 5
    assert frame[14:] == b"hello"
    assert frame == raw(Ether(dst=pkt.dst, src=pkt.src, type=0x0800) / b"hello")


def test_build_accepts_memoryview_payload() -> None:
    payload = memoryview(b"xxabcxx")[2:5]
    frame = ethernet.build(ethernet.BROADCAST, MAC_A, ethernet.ETHERTYPE_ARP, payload)
    assert frame[14:] == b"abc"
    assert Ether(frame).dst == "ff:ff:ff:ff:ff:ff"


@given(
    st.binary(min_size=6, max_size=6),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 0xFFFF),
    st.binary(max_size=64),
)
def test_scapy_built_parsed(dst: bytes, src: bytes, etype: int, payload: bytes) -> None:
    pkt = Ether(dst=ethernet.mac_ntoa(dst), src=ethernet.mac_ntoa(src), type=etype) / payload
    frame = ethernet.parse(raw(pkt))
    assert frame.dst == dst
    assert frame.src == src
    assert frame.ethertype == etype
    assert bytes(frame.payload) == payload
    assert isinstance(frame.payload, memoryview)


def test_scapy_padded_arp_frame() -> None:
    data = raw(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01") / ARP())
    data = data.ljust(ethernet.MIN_FRAME, b"\x00")
    frame = ethernet.EthernetFrame(data)
    assert frame.ethertype == ethernet.ETHERTYPE_ARP
    assert len(frame.payload) == ethernet.MIN_FRAME - ethernet.HEADER_LEN
    assert frame.dst == ethernet.BROADCAST


@pytest.mark.parametrize("length", range(ethernet.HEADER_LEN))
def test_truncated(length: int) -> None:
    data = ethernet.build(MAC_A, MAC_B, 0x0800, b"")[:length]
    with pytest.raises(WireError) as exc:
        ethernet.parse(data)
    assert exc.value.reason == "tooshort"
    with pytest.raises(WireError):
        ethernet.EthernetFrame(data)


def test_header_only() -> None:
    frame = ethernet.parse(ethernet.build(MAC_A, MAC_B, 0x86DD, b""))
    assert frame.ethertype == ethernet.ETHERTYPE_IPV6
    assert len(frame.payload) == 0


def test_zero_copy() -> None:
    buf = bytearray(ethernet.build(MAC_A, MAC_B, 0x0800, b"abcd"))
    frame = ethernet.parse(buf)
    buf[14] = ord("z")
    assert bytes(frame.payload) == b"zbcd"
    assert frame.payload.obj is buf


def test_build_rejects_bad_mac_length() -> None:
    with pytest.raises(ValueError):
        ethernet.build(b"\x00" * 5, MAC_B, 0x0800, b"")
    with pytest.raises(ValueError):
        ethernet.build(MAC_A, b"\x00" * 7, 0x0800, b"")


def test_header_struct() -> None:
    assert ethernet.HEADER.size == ethernet.HEADER_LEN
    assert ethernet.BROADCAST == b"\xff" * 6


def test_mac_ntoa_aton() -> None:
    assert ethernet.mac_ntoa(MAC_A) == "02:ab:cd:00:00:01"
    assert ethernet.mac_aton("02:ab:cd:00:00:01") == MAC_A
    assert ethernet.mac_aton("02:AB:CD:00:00:01") == MAC_A
    assert ethernet.mac_aton("2:0:0:0:0:1") == bytes.fromhex("020000000001")
    assert ethernet.mac_aton("ff:ff:ff:ff:ff:ff") == ethernet.BROADCAST


@given(st.binary(min_size=6, max_size=6))
def test_mac_roundtrip(mac: bytes) -> None:
    text = ethernet.mac_ntoa(mac)
    assert ethernet.mac_aton(text) == mac
    assert text == text.lower()
    assert Ether(dst=text).dst == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "02:ab:cd:00:00",
        "02:ab:cd:00:00:01:02",
        "02:ab:cd:00:00:001",
        "02:ab:cd:00::01",
        "02-ab-cd-00-00-01",
        "02:ab:cd:00:00:0g",
        "02:ab:cd:00:00:+1",
        "02:ab:cd:00:00: 1",
        "0x2:ab:cd:00:00:01",
        "02abcd000001",
        "02:ab:cd:00:00:01 ",
        "02:ab:cd:00:00:\u0661",
    ],
)
def test_mac_aton_bad(text: str) -> None:
    with pytest.raises(WireError) as exc:
        ethernet.mac_aton(text)
    assert exc.value.reason == "badaddr"


def test_is_multicast() -> None:
    assert ethernet.is_multicast(ethernet.BROADCAST)
    assert ethernet.is_multicast(bytes.fromhex("01005e000001"))
    assert ethernet.is_multicast(bytes.fromhex("333300000001"))
    assert not ethernet.is_multicast(MAC_A)
    assert not ethernet.is_multicast(bytes.fromhex("000000000000"))
