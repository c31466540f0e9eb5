"""Tests for vimage.wire.ipv4, cross-checked against scapy."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import ICMP, IP, UDP, Ether, raw
from scapy.layers.inet import IPOption_NOP, IPOption_RR

from vimage.wire import WireError, checksum, ethernet, ipv4

SRC = ipv4.aton("192.0.2.1")
DST = ipv4.aton("198.51.100.7")

addrs = st.integers(0, 0xFFFFFFFF)


def scapy_resum(data: bytes) -> int:
    """Have scapy recompute the header checksum of ``data``.

    Only the header is given to scapy: it re-encodes some payloads (IGMP, protocol 2,
    gains a Router Alert option), which would change the header it sums.
    """
    pkt = IP(data[: (data[0] & 0x0F) * 4])
    del pkt.chksum
    return IP(raw(pkt)).chksum


@given(
    src=addrs,
    dst=addrs,
    proto=st.integers(0, 255),
    payload=st.binary(max_size=100),
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    ident=st.integers(0, 0xFFFF),
    flags_frag=st.integers(0, 0xFFFF),
)
def test_build_dissected_by_scapy(
    src: int,
    dst: int,
    proto: int,
    payload: bytes,
    ttl: int,
    tos: int,
    ident: int,
    flags_frag: int,
) -> None:
    data = ipv4.build(
        src, dst, proto, payload, ttl=ttl, tos=tos, ident=ident, flags_frag=flags_frag
    )
    pkt = IP(data)
    assert pkt.version == 4
    assert pkt.ihl == 5
    assert pkt.tos == tos
    assert pkt.len == 20 + len(payload)
    assert pkt.id == ident
    assert int(pkt.flags) == flags_frag >> 13
    assert pkt.frag == flags_frag & ipv4.OFFMASK
    assert pkt.ttl == ttl
    assert pkt.proto == proto
    assert pkt.src == ipv4.ntoa(src)
    assert pkt.dst == ipv4.ntoa(dst)
    assert pkt.chksum == scapy_resum(data)
    assert data[20:] == payload


def test_build_identical_to_scapy() -> None:
    payload = b"0123456789abc"
    ours = ipv4.build(SRC, DST, ipv4.PROTO_UDP, payload, ttl=17, tos=0x10, ident=0x1234)
    theirs = raw(
        IP(src="192.0.2.1", dst="198.51.100.7", proto=17, ttl=17, tos=0x10, id=0x1234)
        / payload
    )
    assert ours == theirs


@pytest.mark.parametrize("routers", [[], ["10.0.0.1"], ["10.0.0.1", "10.0.0.2", "10.0.0.3"]])
def test_build_record_route_option(routers: list[str]) -> None:
    opt = raw(IPOption_RR(routers=routers))
    ours = ipv4.build(SRC, DST, ipv4.PROTO_ICMP, b"xyz", ident=1, options=opt)
    options = [IPOption_RR(routers=routers)]
    theirs = raw(IP(src="192.0.2.1", dst="198.51.100.7", proto=1, id=1, options=options) / b"xyz")
    assert ours == theirs
    assert (len(ours) - 3) % 4 == 0
    pkt = IP(ours)
    assert pkt.ihl * 4 == 20 + len(opt) + (-len(opt) % 4)
    assert pkt.options[0].routers == routers
    assert pkt.chksum == scapy_resum(ours)
    hdr = ipv4.parse(ours)
    assert hdr.header_len == pkt.ihl * 4
    assert bytes(hdr.options) == opt + bytes(-len(opt) % 4)
    assert bytes(hdr.payload) == b"xyz"


def test_build_options_padding_and_limits() -> None:
    hdr = ipv4.build_header(SRC, DST, 6, 0, options=b"\x01")
    assert len(hdr) == 24
    assert hdr[20:] == b"\x01\x00\x00\x00"
    assert checksum.verify(hdr)
    assert len(ipv4.build_header(SRC, DST, 6, 0, options=b"\x01" * 40)) == 60
    with pytest.raises(ValueError):
        ipv4.build_header(SRC, DST, 6, 0, options=b"\x01" * 41)
    with pytest.raises(ValueError):
        ipv4.build(SRC, DST, 6, b"", options=b"\x01" * 44)


def test_build_too_long() -> None:
    assert len(ipv4.build(SRC, DST, 17, bytes(ipv4.MAX_PACKET - 20))) == ipv4.MAX_PACKET
    with pytest.raises(ValueError):
        ipv4.build(SRC, DST, 17, bytes(ipv4.MAX_PACKET - 19))
    with pytest.raises(ValueError):
        ipv4.build_header(SRC, DST, 17, ipv4.MAX_PACKET - 23, options=b"\x01")


@given(
    payload_len=st.integers(0, 2000),
    ident=st.integers(0, 0xFFFF),
    flags_frag=st.integers(0, 0xFFFF),
    options=st.binary(max_size=40),
)
def test_build_header_matches_build(
    payload_len: int, ident: int, flags_frag: int, options: bytes
) -> None:
    payload = bytes(payload_len)
    kw = {"ident": ident, "flags_frag": flags_frag, "options": options}
    header = ipv4.build_header(SRC, DST, 17, payload_len, **kw)
    full = ipv4.build(SRC, DST, 17, payload, **kw)
    assert full == header + payload
    hdr = ipv4.parse(full)
    assert hdr.header_len == len(header)
    assert hdr.total_length == len(full)
    assert hdr.flags_frag == flags_frag


@given(
    src=addrs,
    dst=addrs,
    ttl=st.integers(0, 255),
    tos=st.integers(0, 255),
    ident=st.integers(0, 0xFFFF),
    flags=st.integers(0, 7),
    frag=st.integers(0, 0x1FFF),
    proto=st.integers(0, 255),
    payload=st.binary(max_size=64),
)
def test_scapy_built_parsed(
    src: int,
    dst: int,
    ttl: int,
    tos: int,
    ident: int,
    flags: int,
    frag: int,
    proto: int,
    payload: bytes,
) -> None:
    pkt = IP(
        src=ipv4.ntoa(src),
        dst=ipv4.ntoa(dst),
        ttl=ttl,
        tos=tos,
        id=ident,
        flags=flags,
        frag=frag,
        proto=proto,
    ) / payload
    data = raw(pkt)
    hdr = ipv4.parse(data)
    assert hdr.header_len == 20
    assert hdr.tos == tos
    assert hdr.total_length == len(data)
    assert hdr.ident == ident
    assert hdr.flags_frag == (flags << 13) | frag
    assert hdr.df == bool(flags & 2)
    assert hdr.mf == bool(flags & 1)
    assert hdr.frag_offset == frag * 8
    assert hdr.ttl == ttl
    assert hdr.proto == proto
    assert hdr.checksum == IP(data).chksum
    assert hdr.src == src
    assert hdr.dst == dst
    assert bytes(hdr.payload) == payload
    assert bytes(hdr.buf) == data
    assert len(hdr.options) == 0


@pytest.mark.parametrize(
    ("flags", "frag", "df", "mf", "offset"),
    [
        ("DF", 0, True, False, 0),
        ("MF", 0, False, True, 0),
        ("MF", 185, False, True, 1480),
        (0, 370, False, False, 2960),
        ("MF+DF", 0x1FFF, True, True, 0x1FFF * 8),
    ],
)
def test_fragment_fields(flags: str | int, frag: int, df: bool, mf: bool, offset: int) -> None:
    hdr = ipv4.parse(raw(IP(src="1.2.3.4", dst="5.6.7.8", flags=flags, frag=frag) / b"abcdefgh"))
    assert hdr.df is df
    assert hdr.mf is mf
    assert hdr.frag_offset == offset
    assert hdr.is_fragment == (mf or offset != 0)


def test_scapy_options_parsed() -> None:
    pkt = IP(
        src="1.2.3.4",
        dst="5.6.7.8",
        options=[IPOption_NOP(), IPOption_RR(routers=["9.9.9.9", "8.8.8.8"])],
    ) / b"data"
    data = raw(pkt)
    hdr = ipv4.parse(data)
    assert hdr.header_len == IP(data).ihl * 4 == 32
    assert hdr.options[0] == 1  # NOP
    assert hdr.options[1] == 7  # RR
    assert bytes(hdr.options[4:12]) == bytes([9] * 4 + [8] * 4)
    assert bytes(hdr.payload) == b"data"


def test_trailing_ethernet_padding_excluded() -> None:
    frame = raw(Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / ICMP()).ljust(60, b"\x00")
    eth = ethernet.parse(frame)
    assert len(eth.payload) == 46
    hdr = ipv4.parse(eth.payload)
    assert hdr.total_length == 28
    assert len(hdr.buf) == 28
    assert len(hdr.payload) == 8
    assert bytes(hdr.payload) == raw(ICMP())


def test_zero_copy() -> None:
    buf = bytearray(ipv4.build(SRC, DST, 17, b"abcd"))
    hdr = ipv4.parse(buf)
    assert hdr.payload.obj is buf
    buf[20] = ord("z")
    assert bytes(hdr.payload) == b"zbcd"


PKT_WITH_OPTS = ipv4.build(SRC, DST, 17, b"0123456789", options=b"\x01\x01\x01\x00")


@pytest.mark.parametrize("length", range(len(PKT_WITH_OPTS)))
def test_truncated_every_length(length: int) -> None:
    data = PKT_WITH_OPTS[:length]
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    if length < 20:
        assert exc.value.reason == "tooshort"
    elif length < 24:
        assert exc.value.reason == "badhlen"
    else:
        assert exc.value.reason == "tooshort"


def test_parse_full_packet_with_options() -> None:
    hdr = ipv4.parse(PKT_WITH_OPTS)
    assert hdr.header_len == 24
    assert bytes(hdr.options) == b"\x01\x01\x01\x00"
    assert bytes(hdr.payload) == b"0123456789"


def test_badvers() -> None:
    data = bytearray(raw(IP(src="1.2.3.4", dst="5.6.7.8")))
    data[0] = 0x65
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "badvers"
    with pytest.raises(WireError) as exc:
        ipv4.parse(data, verify_checksum=False)
    assert exc.value.reason == "badvers"


@pytest.mark.parametrize("ihl", [0, 1, 4, 6, 15])
def test_badhlen(ihl: int) -> None:
    data = raw(IP(ihl=ihl, src="1.2.3.4", dst="5.6.7.8"))
    assert len(data) == 20
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "badhlen"


@pytest.mark.parametrize("pos", range(1, 20))
def test_badsum_every_header_byte(pos: int) -> None:
    # Byte 0 (version/ihl) is checked before the checksum; every other byte is covered,
    # including the total length, whose checksum check comes before the length checks.
    data = bytearray(raw(IP(src="1.2.3.4", dst="5.6.7.8", ttl=9) / b"abcd"))
    data[pos] ^= 0x01
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "badsum"
    if pos not in (2, 3):
        hdr = ipv4.parse(data, verify_checksum=False)
        assert hdr.total_length == 24


def test_badsum_ignored_when_not_verifying() -> None:
    data = raw(IP(src="1.2.3.4", dst="5.6.7.8", chksum=0x1234) / b"abcd")
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "badsum"
    hdr = ipv4.parse(data, verify_checksum=False)
    assert hdr.checksum == 0x1234
    assert bytes(hdr.payload) == b"abcd"


def test_payload_bytes_not_covered_by_header_checksum() -> None:
    data = bytearray(ipv4.build(SRC, DST, 17, b"abcd"))
    data[-1] ^= 0xFF
    assert bytes(ipv4.parse(data).payload) == b"abc" + bytes([ord("d") ^ 0xFF])


@pytest.mark.parametrize("total", [0, 1, 19])
def test_badlen(total: int) -> None:
    data = raw(IP(src="1.2.3.4", dst="5.6.7.8", len=total) / b"abcd")
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "badlen"


def test_tooshort_total_length_beyond_buffer() -> None:
    data = raw(IP(src="1.2.3.4", dst="5.6.7.8", len=100) / b"abcd")
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "tooshort"


def test_check_order() -> None:
    # Bad checksum and bad length: the checksum is reported first.
    data = bytearray(raw(IP(src="1.2.3.4", dst="5.6.7.8", len=10)))
    data[8] ^= 1
    with pytest.raises(WireError) as exc:
        ipv4.parse(data)
    assert exc.value.reason == "badsum"
    with pytest.raises(WireError) as exc:
        ipv4.parse(data, verify_checksum=False)
    assert exc.value.reason == "badlen"


def test_parse_quoted_allows_truncation() -> None:
    full = raw(IP(src="1.2.3.4", dst="5.6.7.8") / UDP(sport=1, dport=2) / (b"x" * 100))
    with pytest.raises(WireError) as exc:
        ipv4.parse(full[:28])
    assert exc.value.reason == "tooshort"
    hdr = ipv4.parse_quoted(full[:28])
    assert hdr.total_length == 128
    assert bytes(hdr.payload) == full[20:28]
    assert hdr.proto == ipv4.PROTO_UDP
    assert ipv4.parse_quoted(full[:28], verify_checksum=True).dst == ipv4.aton("5.6.7.8")
    with pytest.raises(WireError) as exc:
        ipv4.parse_quoted(full[:19])
    assert exc.value.reason == "tooshort"


def test_header_struct() -> None:
    assert ipv4.HEADER.size == ipv4.MIN_HEADER_LEN
    assert struct.calcsize("!BBHHHBBHII") == 20


# --- addresses ---------------------------------------------------------------


@given(addrs)
def test_ntoa_aton_roundtrip(addr: int) -> None:
    text = ipv4.ntoa(addr)
    assert ipv4.aton(text) == addr
    assert IP(dst=text).dst == text


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.0.0.0", 0), ("255.255.255.255", 0xFFFFFFFF), ("10.1.2.3", 0x0A010203)],
)
def test_aton_good(text: str, value: int) -> None:
    assert ipv4.aton(text) == value
    assert ipv4.ntoa(value) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.-1",
        "1.2.3.+1",
        "1..2.3",
        "01.2.3.4",
        "1.2.3.4 ",
        " 1.2.3.4",
        "0x1.2.3.4",
        "1.2.3.4.",
        "1234.1.1.1",
        "\u0661.2.3.4",
        "1.2.3.a",
        "16909060",
    ],
)
def test_aton_bad(text: str) -> None:
    with pytest.raises(WireError) as exc:
        ipv4.aton(text)
    assert exc.value.reason == "badaddr"


def test_ntoa_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        ipv4.ntoa(1 << 32)
    with pytest.raises(ValueError):
        ipv4.ntoa(-1)


@pytest.mark.parametrize("plen", range(33))
def test_prefix_mask_roundtrip(plen: int) -> None:
    mask = ipv4.prefix_to_mask(plen)
    assert mask == (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    assert bin(mask).count("1") == plen
    assert ipv4.mask_to_prefix(mask) == plen


def test_prefix_examples() -> None:
    assert ipv4.prefix_to_mask(24) == ipv4.aton("255.255.255.0")
    assert ipv4.prefix_to_mask(0) == 0
    assert ipv4.prefix_to_mask(32) == 0xFFFFFFFF
    assert ipv4.mask_to_prefix(ipv4.aton("255.255.128.0")) == 17
    with pytest.raises(WireError) as exc:
        ipv4.prefix_to_mask(33)
    assert exc.value.reason == "badmask"


@pytest.mark.parametrize(
    "mask", ["255.0.255.0", "0.255.255.255", "255.255.255.2", "128.0.0.1", "0.0.0.1"]
)
def test_mask_to_prefix_noncontiguous(mask: str) -> None:
    with pytest.raises(WireError) as exc:
        ipv4.mask_to_prefix(ipv4.aton(mask))
    assert exc.value.reason == "badmask"


@pytest.mark.parametrize(("options", "walked"), [
    (b"", []),
    (b"\x01\x01\x07\x07\x04" + bytes(4) + b"\x00\x07\x03\x04",  # NOP NOP RR EOL (then junk)
     [(22, 7, 7)]),
    (b"\x83\x03\x04\x01\x44\x04\x05\x00", [(20, 0x83, 3), (24, 0x44, 4)]),
    (b"\x01\x07", [(21, 7, 0)]),  # no room for the length byte
    (b"\x07\x01\x07\x03", [(20, 7, 0)]),  # a length below 2
    (b"\x07\x03\x04\x44\x09\x00\x00\x00", [(20, 7, 3), (23, 0x44, 0)]),  # past the end
])
def test_walk_options(options: bytes, walked: list[tuple[int, int, int]]) -> None:
    header = bytes(20) + options
    assert list(ipv4.walk_options(header, 20, len(header))) == walked
