"""Tests for vimage.wire.icmp, cross-checked against scapy."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import ICMP, IP, UDP, raw
from scapy.layers.inet import IPerror, UDPerror

from vimage.wire import WireError, icmp, ipv4, udp


def scapy_resum(data: bytes) -> int:
    """Have scapy recompute the ICMP checksum of ``data``."""
    pkt = ICMP(data)
    del pkt.chksum
    return ICMP(raw(pkt)).chksum


@given(
    st.sampled_from([icmp.ECHO, icmp.ECHO_REPLY]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=101),
)
def test_echo_dissected_by_scapy(icmp_type: int, ident: int, seq: int, payload: bytes) -> None:
    data = icmp.build_echo(icmp_type, ident, seq, payload)
    pkt = ICMP(data)
    assert pkt.type == icmp_type
    assert pkt.code == 0
    assert pkt.id == ident
    assert pkt.seq == seq
    assert pkt.chksum == scapy_resum(data)
    assert data[8:] == payload
    assert data == raw(ICMP(type=icmp_type, id=ident, seq=seq) / payload)


@given(
    st.sampled_from([icmp.ECHO, icmp.ECHO_REPLY]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=101),
)
def test_scapy_echo_parsed(icmp_type: int, ident: int, seq: int, payload: bytes) -> None:
    data = raw(ICMP(type=icmp_type, id=ident, seq=seq) / payload)
    rep = icmp.parse(data)
    assert rep.type == icmp_type
    assert rep.code == 0
    assert rep.checksum == ICMP(data).chksum
    assert rep.ident == ident
    assert rep.seq == seq
    assert rep.rest == (ident << 16) | seq
    assert bytes(rep.payload) == payload
    assert isinstance(rep.payload, memoryview)
    assert not rep.is_error


def test_odd_length_echo() -> None:
    data = icmp.build_echo(icmp.ECHO, 0x1234, 1, b"abc")
    assert len(data) == 11
    assert ICMP(data).chksum == scapy_resum(data)
    assert bytes(icmp.parse(data).payload) == b"abc"


def offending_packet() -> bytes:
    return raw(
        IP(src="192.0.2.1", dst="198.51.100.7", id=77, ttl=1)
        / UDP(sport=5353, dport=33434)
        / (b"p" * 40)
    )


def test_error_quoting_ip_header_dissected_by_scapy() -> None:
    quoted = offending_packet()[:28]
    data = icmp.build_error(icmp.UNREACH, icmp.UNREACH_PORT, quoted)
    pkt = ICMP(data)
    assert pkt.type == 3
    assert pkt.code == 3
    assert pkt.chksum == scapy_resum(data)
    inner = pkt[IPerror]
    assert inner.src == "192.0.2.1"
    assert inner.dst == "198.51.100.7"
    assert inner.id == 77
    assert inner.proto == 17
    assert pkt[UDPerror].sport == 5353
    assert pkt[UDPerror].dport == 33434
    assert data[8:] == quoted
    assert data[4:8] == b"\x00\x00\x00\x00"


def test_needfrag_mtu_both_directions() -> None:
    quoted = offending_packet()[:28]
    ours = icmp.build_error(icmp.UNREACH, icmp.UNREACH_NEEDFRAG, quoted, rest=1400)
    pkt = ICMP(ours)
    assert pkt.nexthopmtu == 1400
    assert pkt.chksum == scapy_resum(ours)
    theirs = raw(ICMP(type=3, code=4, nexthopmtu=1280) / quoted)
    rep = icmp.parse(theirs)
    assert rep.type == icmp.UNREACH
    assert rep.code == icmp.UNREACH_NEEDFRAG
    assert rep.mtu == 1280
    assert rep.is_error


@pytest.mark.parametrize(
    ("icmp_type", "code"),
    [
        (icmp.UNREACH, icmp.UNREACH_HOST),
        (icmp.UNREACH, icmp.UNREACH_FILTER_PROHIB),
        (icmp.TIMXCEED, icmp.TIMXCEED_INTRANS),
        (icmp.TIMXCEED, icmp.TIMXCEED_REASS),
        (icmp.SOURCE_QUENCH, 0),
    ],
)
def test_scapy_error_parsed_with_quoted_ip(icmp_type: int, code: int) -> None:
    quoted = offending_packet()[:28]
    data = raw(ICMP(type=icmp_type, code=code) / quoted)
    rep = icmp.parse(data)
    assert rep.type == icmp_type
    assert rep.code == code
    assert rep.rest == 0
    assert rep.is_error
    assert bytes(rep.payload) == quoted
    inner = ipv4.parse_quoted(rep.payload, verify_checksum=True)
    assert inner.src == ipv4.aton("192.0.2.1")
    assert inner.ident == 77
    assert inner.proto == ipv4.PROTO_UDP
    assert inner.total_length == len(offending_packet())
    head = udp.HEADER.unpack_from(inner.payload)
    assert head[:2] == (5353, 33434)
    assert data == icmp.build_error(icmp_type, code, quoted)


def test_paramprob_pointer() -> None:
    quoted = offending_packet()[:28]
    data = icmp.build_error(icmp.PARAMPROB, 0, quoted, rest=9 << 24)
    assert ICMP(data).ptr == 9
    assert icmp.parse(raw(ICMP(type=12, ptr=5) / quoted)).rest >> 24 == 5


def test_redirect_gateway() -> None:
    quoted = offending_packet()[:28]
    gw = ipv4.aton("10.0.0.254")
    data = icmp.build_error(icmp.REDIRECT, 1, quoted, rest=gw)
    assert ICMP(data).gw == "10.0.0.254"
    assert icmp.parse(raw(ICMP(type=5, code=1, gw="10.9.8.7") / quoted)).rest == ipv4.aton(
        "10.9.8.7"
    )


def test_timestamp_parsed() -> None:
    data = raw(ICMP(type=13, id=3, seq=4, ts_ori=1, ts_rx=2, ts_tx=3))
    rep = icmp.parse(data)
    assert rep.type == icmp.TSTAMP
    assert (rep.ident, rep.seq) == (3, 4)
    assert bytes(rep.payload) == bytes.fromhex("000000010000000200000003")
    reply = icmp.build(icmp.TSTAMP_REPLY, 0, rep.rest, rep.payload)
    assert ICMP(reply).ts_tx == 3
    assert ICMP(reply).chksum == scapy_resum(reply)


def test_build_error_rejects_non_error_type() -> None:
    with pytest.raises(ValueError):
        icmp.build_error(icmp.ECHO, 0, b"")


def test_error_types() -> None:
    assert frozenset({3, 4, 5, 11, 12}) == icmp.ERROR_TYPES
    assert icmp.HEADER.size == icmp.HEADER_LEN


@pytest.mark.parametrize("length", range(icmp.HEADER_LEN))
def test_truncated(length: int) -> None:
    data = icmp.build_echo(icmp.ECHO, 1, 2, b"")[:length]
    with pytest.raises(WireError) as exc:
        icmp.parse(data)
    assert exc.value.reason == "tooshort"


@given(st.binary(max_size=50), st.data())
def test_badsum_detected(payload: bytes, draw: st.DataObject) -> None:
    data = bytearray(icmp.build_echo(icmp.ECHO, 7, 8, payload))
    pos = draw.draw(st.integers(0, len(data) - 1))
    bit = draw.draw(st.integers(0, 7))
    data[pos] ^= 1 << bit
    with pytest.raises(WireError) as exc:
        icmp.parse(data)
    assert exc.value.reason == "badsum"
    assert icmp.parse(data, verify_checksum=False).type == data[0]


def test_scapy_bad_checksum() -> None:
    data = raw(ICMP(id=1, seq=1, chksum=0xBEEF) / b"x")
    with pytest.raises(WireError) as exc:
        icmp.parse(data)
    assert exc.value.reason == "badsum"
    assert icmp.parse(data, verify_checksum=False).checksum == 0xBEEF


def test_inside_ip_with_padding() -> None:
    data = raw(IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(id=9, seq=10) / b"ping").ljust(46, b"\0")
    hdr = ipv4.parse(data)
    rep = icmp.parse(hdr.payload)
    assert (rep.ident, rep.seq) == (9, 10)
    assert bytes(rep.payload) == b"ping"
