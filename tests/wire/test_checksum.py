"""Tests for vimage.wire.checksum against a naive RFC 1071 reference and scapy."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from vimage.wire import checksum as ck


def ref_ones_sum(data: bytes, initial: int = 0) -> int:
    """Word-by-word ones'-complement sum with end-around carry (RFC 1071 section 4.1)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = initial
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rfc1071_example() -> None:
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ck.ones_sum(data) == 0xDDF2
    assert ck.checksum(data) == 0x220D


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"\x00", 0),
        (b"\x00\x00\x00\x00", 0),
        (b"\xff\xff", 0xFFFF),
        (b"\xff\xff\xff\xff", 0xFFFF),
        (b"\x80\x00\x80\x00", 0x0001),
        (b"\x01", 0x0100),
        (b"\x12\x34\x56", 0x1234 + 0x5600),
        (b"\xff\xfe\x00\x01", 0xFFFF),
    ],
)
def test_ones_sum_edge_cases(data: bytes, expected: int) -> None:
    assert ck.ones_sum(data) == expected
    assert ck.ones_sum(memoryview(data)) == expected


def test_initial_only() -> None:
    assert ck.ones_sum(b"", 0xFFFF) == 0xFFFF
    assert ck.ones_sum(b"\x00\x00", 0x1234) == 0x1234
    assert ck.ones_sum(b"\xff\xff", 0x0001) == 0x0001


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_ones_sum_matches_reference(data: bytes, initial: int) -> None:
    assert ck.ones_sum(data, initial) == ref_ones_sum(data, initial)


@given(st.binary(max_size=300))
def test_checksum_matches_scapy(data: bytes) -> None:
    assert ck.checksum(data) == scapy_checksum(data)


@given(st.binary(min_size=1, max_size=300).map(lambda b: b if len(b) % 2 == 0 else b + b"\x00"))
def test_checksum_then_verify(data: bytes) -> None:
    filled = data + struct.pack("!H", ck.checksum(data))
    assert ck.verify(filled)
    assert ck.verify(memoryview(filled)[0:])


@given(st.binary(min_size=2, max_size=100), st.data())
def test_verify_detects_single_word_change(data: bytes, draw: st.DataObject) -> None:
    data = data + b"\x00" * (len(data) % 2)
    filled = bytearray(data + struct.pack("!H", ck.checksum(data)))
    pos = draw.draw(st.integers(0, len(filled) // 2 - 1)) * 2
    old = int.from_bytes(filled[pos : pos + 2], "big")
    new = draw.draw(st.integers(0, 0xFFFF))
    filled[pos : pos + 2] = new.to_bytes(2, "big")
    # Only 0x0000 <-> 0xFFFF swaps are invisible to a ones'-complement sum.
    invisible = (old == new or {old, new} == {0, 0xFFFF}) and any(filled)
    assert ck.verify(filled) == invisible


def test_odd_length_checksum_and_verify() -> None:
    data = b"\x01\x02\x03"
    c = ck.checksum(data)
    assert c == ~(0x0102 + 0x0300) & 0xFFFF
    # The checksum goes before the odd byte when verifying (even-aligned field).
    assert ck.verify(data[:2] + struct.pack("!H", c) + data[2:])
    assert not ck.verify(data[:2] + struct.pack("!H", c ^ 1) + data[2:])


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
)
def test_pseudo_sum_v4(src: int, dst: int, proto: int, length: int) -> None:
    raw = struct.pack("!IIBBH", src, dst, 0, proto, length)
    assert ck.pseudo_sum_v4(src, dst, proto, length) == ref_ones_sum(raw)


def pack(words: list[int]) -> bytes:
    return struct.pack(f"!{len(words)}H", *words)


def test_large_buffer() -> None:
    data = bytes(range(256)) * 256 + b"\x7f"
    assert ck.ones_sum(data) == ref_ones_sum(data)
    assert ck.ones_sum(memoryview(data)[1:]) == ref_ones_sum(data[1:])


@given(
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40),
    st.data(),
)
def test_update16_equals_full_recomputation(words: list[int], draw: st.DataObject) -> None:
    # words[0] is the checksum field position; the rest is data.
    words = [0, *words]
    words[0] = ck.checksum(pack(words))
    idx = draw.draw(st.integers(1, len(words) - 1))
    new = draw.draw(st.integers(0, 0xFFFF))
    old = words[idx]
    incremental = ck.update16(words[0], old, new)
    words[idx] = new
    words[0] = 0
    full = ck.checksum(pack(words))
    words[0] = incremental
    if any(words[1:]):
        assert ck.verify(pack(words))
        assert incremental == full
    else:
        # All data zero: "+0" and "-0" are both valid checksums.
        assert {incremental, full} <= {0, 0xFFFF}


def test_update16_ttl_decrement_on_ip_header() -> None:
    from scapy.all import IP, raw

    pkt = bytearray(raw(IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=7)))
    old_word = int.from_bytes(pkt[8:10], "big")
    old_sum = int.from_bytes(pkt[10:12], "big")
    pkt[8] -= 1
    new_word = int.from_bytes(pkt[8:10], "big")
    pkt[10:12] = ck.update16(old_sum, old_word, new_word).to_bytes(2, "big")
    assert bytes(pkt) == raw(IP(src="10.0.0.1", dst="10.0.0.2", ttl=63, id=7))
