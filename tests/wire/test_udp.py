"""Tests for vimage.wire.udp, cross-checked against scapy."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import IP, UDP, raw

from vimage.wire import WireError, checksum, ipv4, udp

SRC = ipv4.aton("192.0.2.1")
DST = ipv4.aton("198.51.100.7")
addrs = st.integers(0, 0xFFFFFFFF)
ports = st.integers(0, 0xFFFF)


def scapy_resum(ip_packet: bytes) -> int:
    """Have scapy recompute the UDP checksum of an IP/UDP packet."""
    pkt = IP(ip_packet)
    del pkt[UDP].chksum
    return IP(raw(pkt))[UDP].chksum


@given(ports, ports, st.binary(max_size=101), addrs, addrs)
def test_build_dissected_by_scapy(
    sport: int, dport: int, payload: bytes, src: int, dst: int
) -> None:
    data = udp.build(sport, dport, payload, src, dst)
    packet = ipv4.build(src, dst, ipv4.PROTO_UDP, data)
    pkt = IP(packet)
    assert pkt[UDP].sport == sport
    assert pkt[UDP].dport == dport
    assert pkt[UDP].len == 8 + len(payload)
    assert pkt[UDP].chksum == scapy_resum(packet)
    assert pkt[UDP].chksum != 0
    assert data[8:] == payload
    # scapy needs the IP layer for the pseudo-header; compare via a full packet.
    full = raw(IP(src=ipv4.ntoa(src), dst=ipv4.ntoa(dst)) / UDP(sport=sport, dport=dport) / payload)
    assert full[20:] == data


@given(ports, ports, st.binary(max_size=101), addrs, addrs)
def test_scapy_built_parsed(sport: int, dport: int, payload: bytes, src: int, dst: int) -> None:
    packet = raw(
        IP(src=ipv4.ntoa(src), dst=ipv4.ntoa(dst)) / UDP(sport=sport, dport=dport) / payload
    )
    rep = udp.parse(packet[20:], src, dst)
    assert rep.sport == sport
    assert rep.dport == dport
    assert rep.length == 8 + len(payload)
    assert rep.checksum == IP(packet)[UDP].chksum
    assert bytes(rep.payload) == payload
    assert isinstance(rep.payload, memoryview)


def test_odd_length_payload() -> None:
    data = udp.build(1000, 2000, b"odd", SRC, DST)
    packet = ipv4.build(SRC, DST, 17, data)
    assert IP(packet)[UDP].chksum == scapy_resum(packet)
    assert bytes(udp.parse(data, SRC, DST).payload) == b"odd"


def test_zero_checksum_not_verified() -> None:
    packet = raw(IP(src="192.0.2.1", dst="198.51.100.7") / UDP(sport=1, dport=2, chksum=0) / b"hi")
    rep = udp.parse(packet[20:], SRC, DST)
    assert rep.checksum == 0
    assert bytes(rep.payload) == b"hi"


def test_build_without_checksum() -> None:
    data = udp.build(53, 5353, b"query", SRC, DST, with_checksum=False)
    assert data[6:8] == b"\x00\x00"
    pkt = IP(ipv4.build(SRC, DST, 17, data))
    assert pkt[UDP].chksum == 0
    assert pkt[UDP].len == 13
    assert udp.parse(data, SRC, DST).checksum == 0


def zero_sum_payload(sport: int, dport: int, src: int, dst: int) -> bytes:
    """A two-byte payload making the computed UDP checksum exactly 0."""
    length = 10
    partial = checksum.ones_sum(
        udp.HEADER.pack(sport, dport, length, 0),
        checksum.pseudo_sum_v4(src, dst, 17, length),
    )
    word = 0xFFFF - partial
    return word.to_bytes(2, "big")


def test_computed_zero_sent_as_ffff() -> None:
    payload = zero_sum_payload(1234, 5678, SRC, DST)
    data = udp.build(1234, 5678, payload, SRC, DST)
    assert data[6:8] == b"\xff\xff"
    # Without the 0 -> 0xFFFF rule the complemented sum would be 0.
    assert checksum.checksum(data[:6] + b"\x00\x00" + data[8:],
                             checksum.pseudo_sum_v4(SRC, DST, 17, 10)) == 0
    packet = ipv4.build(SRC, DST, 17, data)
    assert IP(packet)[UDP].chksum == 0xFFFF
    assert scapy_resum(packet) == 0xFFFF
    scapy_packet = raw(
        IP(src=ipv4.ntoa(SRC), dst=ipv4.ntoa(DST)) / UDP(sport=1234, dport=5678) / payload
    )
    assert scapy_packet[20:] == data
    rep = udp.parse(data, SRC, DST)
    assert rep.checksum == 0xFFFF
    assert bytes(rep.payload) == payload


@given(addrs, addrs, ports, ports)
def test_computed_zero_random(src: int, dst: int, sport: int, dport: int) -> None:
    payload = zero_sum_payload(sport, dport, src, dst)
    data = udp.build(sport, dport, payload, src, dst)
    assert data[6:8] == b"\xff\xff"
    assert udp.parse(data, src, dst).checksum == 0xFFFF


@pytest.mark.parametrize("length", range(udp.HEADER_LEN))
def test_truncated(length: int) -> None:
    data = udp.build(1, 2, b"", SRC, DST)[:length]
    with pytest.raises(WireError) as exc:
        udp.parse(data)
    assert exc.value.reason == "tooshort"


@pytest.mark.parametrize("length", range(udp.HEADER_LEN, 20))
def test_truncated_payload(length: int) -> None:
    data = udp.build(1, 2, b"abcdefghijkl", SRC, DST)[:length]
    with pytest.raises(WireError) as exc:
        udp.parse(data, SRC, DST)
    assert exc.value.reason == "badlen"


@pytest.mark.parametrize("field", [0, 1, 7, 21, 0xFFFF])
def test_badlen(field: int) -> None:
    data = raw(UDP(sport=1, dport=2, len=field, chksum=0) / b"abcdefghijkl")
    with pytest.raises(WireError) as exc:
        udp.parse(data)
    assert exc.value.reason == "badlen"


def test_trailing_bytes_excluded() -> None:
    data = udp.build(7, 9, b"abc", SRC, DST) + b"\x00" * 10
    rep = udp.parse(data, SRC, DST)
    assert rep.length == 11
    assert bytes(rep.payload) == b"abc"


def test_shorter_length_field() -> None:
    # A length field below the buffer size: only `length` bytes count (and are summed).
    packet = raw(
        IP(src="192.0.2.1", dst="198.51.100.7") / UDP(sport=1, dport=2, len=10, chksum=0) / b"abcd"
    )
    rep = udp.parse(packet[20:], SRC, DST)
    assert rep.length == 10
    assert bytes(rep.payload) == b"ab"
    ours = udp.build(1, 2, b"ab", SRC, DST)
    assert udp.parse(ours + b"cd", SRC, DST).checksum == int.from_bytes(ours[6:8], "big")


@given(st.binary(max_size=40), st.data())
def test_badsum_detected(payload: bytes, draw: st.DataObject) -> None:
    data = bytearray(udp.build(4000, 5000, payload, SRC, DST))
    pos = draw.draw(st.sampled_from([p for p in range(len(data)) if p not in (4, 5)]))
    data[pos] ^= 1 << draw.draw(st.integers(0, 7))
    if data[6:8] == b"\x00\x00":
        return  # flipped the checksum to "none"; not a detectable error
    with pytest.raises(WireError) as exc:
        udp.parse(data, SRC, DST)
    assert exc.value.reason == "badsum"
    assert udp.parse(data).length == len(data)


def test_badsum_wrong_address() -> None:
    data = udp.build(1, 2, b"hello", SRC, DST)
    assert udp.parse(data, SRC, DST).sport == 1
    with pytest.raises(WireError) as exc:
        udp.parse(data, SRC, DST + 1)
    assert exc.value.reason == "badsum"
    assert udp.parse(data).dport == 2  # no addresses: not verified
    assert udp.parse(data, SRC).dport == 2  # only one address: not verified


def test_zero_address_still_verified() -> None:
    data = udp.build(68, 67, b"dhcp", 0, 0xFFFFFFFF)
    assert udp.parse(data, 0, 0xFFFFFFFF).sport == 68
    with pytest.raises(WireError) as exc:
        udp.parse(data, 0, 0xFFFFFFFE)
    assert exc.value.reason == "badsum"


def test_build_too_long() -> None:
    assert len(udp.build(1, 2, bytes(65527), SRC, DST)) == 65535
    with pytest.raises(ValueError):
        udp.build(1, 2, bytes(65528), SRC, DST)


def test_header_struct() -> None:
    assert udp.HEADER.size == udp.HEADER_LEN
