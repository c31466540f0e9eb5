"""Tests for vimage.wire.tcp, cross-checked against scapy in both directions."""

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, raw

from vimage.wire import WireError, checksum, ipv4, tcp

SRC = ipv4.aton("192.0.2.1")
DST = ipv4.aton("198.51.100.7")
addrs = st.integers(0, 0xFFFFFFFF)
ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
blocks = st.lists(st.tuples(u32, u32), max_size=5).map(tuple)
option_kwargs = st.fixed_dictionaries(
    {
        "mss": st.none() | u16,
        "wscale": st.none() | st.integers(0, 14),
        "sack_perm": st.booleans(),
        "sack": blocks,
        "ts": st.none() | st.tuples(u32, u32),
    }
)
REASONS = frozenset({"tooshort", "badoff", "badsum", "badopt"})


def scapy_resum(ip_packet: bytes) -> int:
    """Have scapy recompute the TCP checksum of an IP/TCP packet."""
    pkt = IP(ip_packet)
    del pkt[TCP].chksum
    return IP(raw(pkt))[TCP].chksum


def scapy_options(opts: dict[str, Any], kept: int) -> list[tuple[str, Any]]:
    """The option list scapy should dissect for the Linux layout, with ``kept`` SACK blocks."""
    out: list[tuple[str, Any]] = []
    if opts["mss"] is not None:
        out.append(("MSS", opts["mss"]))
    if opts["ts"] is not None:
        out += [("SAckOK", b"")] if opts["sack_perm"] else [("NOP", None), ("NOP", None)]
        out.append(("Timestamp", opts["ts"]))
    elif opts["sack_perm"]:
        out += [("NOP", None), ("NOP", None), ("SAckOK", b"")]
    if opts["wscale"] is not None:
        out += [("NOP", None), ("WScale", opts["wscale"])]
    if kept:
        edges = tuple(edge for block in opts["sack"][:kept] for edge in block)
        out += [("NOP", None), ("NOP", None), ("SAck", edges)]
    return out


def scapy_packet(src: int, dst: int, payload: bytes = b"", **fields: Any) -> bytes:
    """A complete IP/TCP packet built by scapy."""
    return raw(IP(src=ipv4.ntoa(src), dst=ipv4.ntoa(dst)) / TCP(**fields) / payload)


def raw_segment(options: bytes, payload: bytes = b"", src: int = SRC, dst: int = DST) -> bytes:
    """A segment with arbitrary (possibly malformed) option bytes, zero-padded, checksummed."""
    options += bytes(-len(options) % 4)
    header_len = tcp.HEADER_LEN + len(options)
    header = bytearray(tcp.HEADER.pack(1, 2, 3, 4, header_len << 2, tcp.ACK, 5, 0, 0) + options)
    pseudo = checksum.pseudo_sum_v4(src, dst, tcp.PROTO_TCP, header_len + len(payload))
    struct.pack_into("!H", header, 16, checksum.checksum(bytes(header) + payload, pseudo))
    return bytes(header) + payload


@given(
    ports, ports, u32, u32, st.integers(0, 255), u16, u16,
    st.binary(max_size=101), addrs, addrs, option_kwargs,
)
def test_build_dissected_by_scapy(
    sport: int, dport: int, seq: int, ack: int, flags: int, window: int, urgent: int,
    payload: bytes, src: int, dst: int, opts: dict[str, Any],
) -> None:
    data = tcp.build(
        sport, dport, seq, ack, flags, window, payload, src=src, dst=dst, urgent=urgent, **opts
    )
    olen = tcp.options_len(**opts)
    assert len(data) == 20 + olen + len(payload)
    packet = ipv4.build(src, dst, ipv4.PROTO_TCP, data)
    pkt = IP(packet)[TCP]
    assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack) == (sport, dport, seq, ack)
    assert int(pkt.flags) == flags
    assert pkt.window == window
    assert pkt.urgptr == urgent
    assert pkt.dataofs * 4 == 20 + olen
    assert pkt.reserved == 0
    assert pkt.chksum == scapy_resum(packet)
    kept = len(tcp.parse(data).options.sack)
    assert pkt.options == scapy_options(opts, kept)
    assert raw(pkt.payload) == payload
    # scapy, given the same option list, lays out exactly the same bytes.
    full = scapy_packet(
        src, dst, payload, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
        window=window, urgptr=urgent, options=scapy_options(opts, kept),
    )
    assert full[20:] == data


# Option kinds scapy writes as raw bytes and vimage does not know.
unknown_kinds = st.sampled_from([6, 7, 9, 19, 27, 28, 30, 34, 69, 253, 254])
scapy_option = st.one_of(
    st.tuples(st.just("MSS"), u16),
    st.tuples(st.just("WScale"), st.integers(0, 255)),
    st.just(("SAckOK", b"")),
    st.tuples(st.just("SAck"), st.lists(st.tuples(u32, u32), min_size=1, max_size=4).map(
        lambda pairs: tuple(edge for pair in pairs for edge in pair))),
    st.tuples(st.just("Timestamp"), st.tuples(u32, u32)),
    st.just(("NOP", None)),
    st.tuples(unknown_kinds, st.binary(max_size=8)),
)


def scapy_option_len(option: tuple[Any, Any]) -> int:
    name, value = option
    sizes = {"MSS": 4, "WScale": 3, "SAckOK": 2, "Timestamp": 10, "NOP": 1}
    if name == "SAck":
        return 2 + 4 * len(value)
    return sizes[name] if isinstance(name, str) else 2 + len(value)


def expected_options(options: list[tuple[Any, Any]]) -> tcp.TcpOptions:
    """What a parser must make of a scapy option list: the last of each kind wins."""
    found: dict[str, Any] = {}
    for name, value in options:
        if name == "MSS":
            found["mss"] = value
        elif name == "WScale":
            found["wscale"] = min(value, 14)
        elif name == "SAckOK":
            found["sack_perm"] = True
        elif name == "SAck":
            found["sack"] = tuple(zip(value[::2], value[1::2], strict=True))
        elif name == "Timestamp":
            found["ts"] = value
    return tcp.TcpOptions(**found)


@given(
    ports, ports, u32, u32, st.integers(0, 0x1FF), u16, u16, st.binary(max_size=101),
    addrs, addrs,
    st.lists(scapy_option, max_size=8).filter(
        lambda opts: sum(map(scapy_option_len, opts)) <= 40),
)
def test_scapy_built_parsed(
    sport: int, dport: int, seq: int, ack: int, flags: int, window: int, urgent: int,
    payload: bytes, src: int, dst: int, options: list[tuple[Any, Any]],
) -> None:
    packet = scapy_packet(
        src, dst, payload, sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
        window=window, urgptr=urgent, options=options,
    )
    pkt = IP(packet)[TCP]
    rep = tcp.parse(packet[20:], src, dst)
    assert (rep.sport, rep.dport, rep.seq, rep.ack) == (sport, dport, seq, ack)
    assert rep.flags == flags & 0xFF  # the 9th (AE/NS) bit lives in the offset byte
    assert rep.window == window
    assert rep.urgent == urgent
    assert rep.checksum == pkt.chksum
    assert rep.header_len == pkt.dataofs * 4
    assert rep.options == expected_options(options)
    assert bytes(rep.payload) == payload
    assert isinstance(rep.payload, memoryview)
    assert tcp.parse_options(packet[40:20 + rep.header_len]) == rep.options


def test_all_flag_combinations() -> None:
    for flags in range(256):
        ours = tcp.build(1, 2, 3, 4, flags, 5, b"x", src=SRC, dst=DST)
        assert int(IP(ipv4.build(SRC, DST, 6, ours))[TCP].flags) == flags
        theirs = scapy_packet(SRC, DST, b"x", sport=1, dport=2, seq=3, ack=4, flags=flags,
                              window=5)
        assert theirs[20:] == ours
        assert tcp.parse(theirs[20:], SRC, DST).flags == flags


def test_flag_constants_match_scapy() -> None:
    names = {"F": tcp.FIN, "S": tcp.SYN, "R": tcp.RST, "P": tcp.PSH, "A": tcp.ACK,
             "U": tcp.URG, "E": tcp.ECE, "C": tcp.CWR}
    for letter, value in names.items():
        assert int(TCP(flags=letter).flags) == value


@pytest.mark.parametrize("length", [1, 3, 5, 7, 99, 1461])
def test_odd_payload_and_urgent(length: int) -> None:
    payload = bytes(range(256)) * 6
    payload = payload[:length]
    data = tcp.build(80, 4242, 1000, 2000, tcp.ACK | tcp.URG | tcp.PSH, 512, payload,
                     src=SRC, dst=DST, urgent=length, ts=(7, 9))
    packet = ipv4.build(SRC, DST, 6, data)
    pkt = IP(packet)[TCP]
    assert pkt.urgptr == length
    assert pkt.chksum == scapy_resum(packet)
    rep = tcp.parse(data, SRC, DST)
    assert rep.urgent == length
    assert bytes(rep.payload) == payload
    theirs = scapy_packet(SRC, DST, payload, sport=80, dport=4242, seq=1000, ack=2000,
                          flags="PAU", window=512, urgptr=length,
                          options=[("NOP", None), ("NOP", None), ("Timestamp", (7, 9))])
    assert theirs[20:] == data


def test_no_options_fast_path() -> None:
    data = tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"payload", src=SRC, dst=DST)
    rep = tcp.parse(data, SRC, DST)
    assert rep.header_len == 20
    assert rep.options is tcp.NO_OPTIONS
    assert tcp.TcpOptions(None, None, False, (), None) == tcp.NO_OPTIONS
    assert tcp.options_len() == 0


def test_established_fast_path_matches_general_parser() -> None:
    nop_nop_ts = b"\x01\x01\x08\x0a" + struct.pack("!II", 0xDEADBEEF, 17)
    ts_nop_nop = b"\x08\x0a" + struct.pack("!II", 0xDEADBEEF, 17) + b"\x01\x01"
    assert tcp.parse_options(nop_nop_ts) == tcp.TcpOptions(ts=(0xDEADBEEF, 17))
    assert tcp.parse_options(ts_nop_nop) == tcp.parse_options(nop_nop_ts)
    assert tcp.parse(raw_segment(nop_nop_ts), SRC, DST).options.ts == (0xDEADBEEF, 17)


def test_zero_copy_payload() -> None:
    buf = bytearray(tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"hello", src=SRC, dst=DST, mss=1460))
    rep = tcp.parse(buf)
    assert isinstance(rep.payload, memoryview)
    assert rep.payload.obj is buf
    buf[-1] = ord("!")
    assert bytes(rep.payload) == b"hell!"


def test_buffer_types_accepted() -> None:
    data = tcp.build(1, 2, 3, 4, tcp.ACK, 5, memoryview(b"abc"), src=SRC, dst=DST)
    assert data == tcp.build(1, 2, 3, 4, tcp.ACK, 5, bytearray(b"abc"), src=SRC, dst=DST)
    assert tcp.parse(memoryview(data), SRC, DST) == tcp.parse(bytearray(data), SRC, DST)
    assert bytes(tcp.parse(data).payload) == b"abc"


@pytest.mark.parametrize("length", range(tcp.HEADER_LEN))
def test_truncated(length: int) -> None:
    data = tcp.build(1, 2, 3, 4, tcp.SYN, 5, src=SRC, dst=DST, mss=1460, ts=(1, 2))[:length]
    with pytest.raises(WireError) as exc:
        tcp.parse(data, SRC, DST)
    assert exc.value.reason == "tooshort"


@pytest.mark.parametrize("length", range(tcp.HEADER_LEN, 40))
def test_truncated_options(length: int) -> None:
    data = tcp.build(1, 2, 3, 4, tcp.SYN, 5, src=SRC, dst=DST, mss=1460, wscale=7,
                     sack_perm=True, ts=(1, 2))
    assert len(data) == 40
    with pytest.raises(WireError) as exc:
        tcp.parse(data[:length], SRC, DST)
    assert exc.value.reason == "badoff"
    with pytest.raises(WireError) as exc:
        tcp.parse(data[:length])
    assert exc.value.reason == "badoff"


@pytest.mark.parametrize("dataofs", range(5))
def test_offset_below_minimum(dataofs: int) -> None:
    data = raw(TCP(dataofs=dataofs) / (b"x" * 50))
    with pytest.raises(WireError) as exc:
        tcp.parse(data)
    assert exc.value.reason == "badoff"


def test_offset_past_buffer() -> None:
    data = raw(TCP(dataofs=15) / (b"\x00" * 39))  # 59 bytes, the header claims 60
    with pytest.raises(WireError) as exc:
        tcp.parse(data)
    assert exc.value.reason == "badoff"
    rep = tcp.parse(data + b"\x00")  # 40 bytes of EOL padding: valid, no options
    assert rep.header_len == 60
    assert rep.options == tcp.NO_OPTIONS
    assert len(rep.payload) == 0


@given(st.binary(max_size=60), option_kwargs, st.data())
def test_badsum_detected(payload: bytes, opts: dict[str, Any], draw: st.DataObject) -> None:
    data = bytearray(tcp.build(4000, 5000, 1, 2, tcp.ACK, 3, payload, src=SRC, dst=DST, **opts))
    assert tcp.parse(data, SRC, DST).checksum == int.from_bytes(data[16:18], "big")
    # Leave the data offset alone so the header still fits; everything else is summed.
    pos = draw.draw(st.sampled_from([p for p in range(len(data)) if p != 12]))
    data[pos] ^= 1 << draw.draw(st.integers(0, 7))
    with pytest.raises(WireError) as exc:
        tcp.parse(data, SRC, DST)
    # Even a flip that breaks an option is reported as a bad sum: the sum is checked first.
    assert exc.value.reason == "badsum"


def test_badsum_wrong_address() -> None:
    data = tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"hello", src=SRC, dst=DST)
    assert tcp.parse(data, SRC, DST).sport == 1
    for src, dst in ((SRC, DST + 1), (SRC + 1, DST), (0, DST)):
        with pytest.raises(WireError) as exc:
            tcp.parse(data, src, dst)
        assert exc.value.reason == "badsum"
    assert tcp.parse(data).dport == 2  # no addresses: not verified
    assert tcp.parse(data, SRC).dport == 2  # only one address: not verified


def test_checksum_matches_scapy_on_scapy_packet() -> None:
    packet = bytearray(scapy_packet(SRC, DST, b"abc", sport=1, dport=2, flags="S",
                                    options=[("MSS", 536)]))
    assert tcp.parse(packet[20:], SRC, DST).options.mss == 536
    packet[-1] ^= 0x40
    with pytest.raises(WireError) as exc:
        tcp.parse(packet[20:], SRC, DST)
    assert exc.value.reason == "badsum"


def test_oversized_segment() -> None:
    assert len(tcp.build(1, 2, 3, 4, tcp.ACK, 5, bytes(65515), src=SRC, dst=DST)) == 65535
    with pytest.raises(ValueError):
        tcp.build(1, 2, 3, 4, tcp.ACK, 5, bytes(65516), src=SRC, dst=DST)
    with pytest.raises(ValueError):
        tcp.build(1, 2, 3, 4, tcp.ACK, 5, bytes(65512), src=SRC, dst=DST, mss=1)
    big = tcp.build(1, 2, 3, 4, tcp.ACK, 5, bytes(65515), src=SRC, dst=DST) + b"\x00"
    assert len(tcp.parse(big).payload) == 65516  # no addresses: nothing to verify
    with pytest.raises(WireError) as exc:
        tcp.parse(big, SRC, DST)
    assert exc.value.reason == "badsum"


MALFORMED = {
    "length 0": b"\x02\x00\x05\xb4",
    "length 1": b"\x02\x01\x05\xb4",
    "unknown length 0": b"\x1e\x00\x01\x01",
    "unknown length 1": b"\x1e\x01\x01\x01",
    "unknown overrun": b"\x1e\x08\x01\x01",
    "timestamp overrun": b"\x01\x01\x08\x0a\x00\x00\x00\x00",
    "no length byte": b"\x01\x01\x01\x1e",
    "mss without length byte": b"\x01\x01\x01\x02",
    "mss length 3": b"\x02\x03\x05\x01",
    "mss length 6": b"\x02\x06\x05\xb4\x00\x00",
    "wscale length 2": b"\x03\x02\x01\x01",
    "wscale length 4": b"\x03\x04\x07\x00",
    "sack-permitted length 3": b"\x04\x03\x00\x01",
    "timestamp length 8": b"\x08\x08" + bytes(6),
    "timestamp length 12": b"\x08\x0c" + bytes(10),
    "sack length 2": b"\x05\x02\x01\x01",
    "sack length 14": b"\x05\x0e" + bytes(12),
    "sack length 11": b"\x05\x0b" + bytes(9),
    "bad option after good ones": b"\x02\x04\x05\xb4\x01\x01\x04\x03",
}


@pytest.mark.parametrize("options", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_options(options: bytes) -> None:
    segment = raw_segment(options, b"data")
    for args in ((), (SRC, DST)):
        with pytest.raises(WireError) as exc:
            tcp.parse(segment, *args)
        assert exc.value.reason == "badopt"
    with pytest.raises(WireError) as exc:
        tcp.parse_options(options)
    assert exc.value.reason == "badopt"


def test_scapy_malformed_options() -> None:
    # scapy writes a raw (kind, value) option with length 2 + len(value).
    for options in ([(2, b"\x05")], [(5, b"\x00" * 9)], [(3, b"")], [(8, b"\x00" * 7)]):
        segment = scapy_packet(SRC, DST, b"", options=options)[20:]
        with pytest.raises(WireError) as exc:
            tcp.parse(segment, SRC, DST)
        assert exc.value.reason == "badopt"


def test_unknown_options_skipped() -> None:
    options = [(30, b"\xab\xcd"), ("MSS", 1400), (34, b"cookie!!"), (253, b""),
               ("WScale", 3), (28, b"\x80\x10")]
    packet = scapy_packet(SRC, DST, b"z", sport=9, dport=10, flags="S", options=options)
    rep = tcp.parse(packet[20:], SRC, DST)
    assert rep.options == tcp.TcpOptions(mss=1400, wscale=3)
    assert bytes(rep.payload) == b"z"
    assert tcp.parse_options(b"\xfe\x02\x02\x04\x02\x18") == tcp.TcpOptions(mss=536)


def test_eol_ends_options() -> None:
    # After EOL comes what would be a malformed option (MSS, length 1): it must be ignored.
    options = b"\x02\x04\x05\xb4\x00\x02\x01\xff"
    assert tcp.parse_options(options) == tcp.TcpOptions(mss=1460)
    rep = tcp.parse(raw_segment(options, b"after"), SRC, DST)
    assert rep.options == tcp.TcpOptions(mss=1460)
    assert rep.header_len == 28
    assert bytes(rep.payload) == b"after"
    assert tcp.parse_options(b"\x00\x02\x04\x05\xb4") == tcp.NO_OPTIONS
    # Without the EOL the same bytes are rejected.
    with pytest.raises(WireError):
        tcp.parse_options(b"\x02\x04\x05\xb4\x01\x02\x01\xff")


def test_duplicate_option_last_wins() -> None:
    options = b"\x02\x04\x05\xb4\x02\x04\x02\x18"
    assert tcp.parse_options(options).mss == 536


@pytest.mark.parametrize(("shift", "expected"), [(0, 0), (14, 14), (15, 14), (255, 14)])
def test_wscale_clamped(shift: int, expected: int) -> None:
    packet = scapy_packet(SRC, DST, sport=1, dport=2, flags="S", options=[("WScale", shift)])
    assert tcp.parse(packet[20:], SRC, DST).options.wscale == expected


def test_seq_ack_taken_modulo() -> None:
    data = tcp.build(1, 2, 2**32 + 5, 2**33 - 1, tcp.ACK, 5, src=SRC, dst=DST)
    pkt = IP(ipv4.build(SRC, DST, 6, data))[TCP]
    assert (pkt.seq, pkt.ack) == (5, 0xFFFFFFFF)
    rep = tcp.parse(data, SRC, DST)
    assert (rep.seq, rep.ack) == (5, 0xFFFFFFFF)
    assert tcp.parse(tcp.build(1, 2, -1, -2, 0, 0, src=SRC, dst=DST)).seq == 0xFFFFFFFF
    wrapped = tcp.build(1, 2, 0, 0, tcp.ACK, 5, src=SRC, dst=DST,
                        sack=((2**32 + 1, 2**32 + 9),), ts=(2**32 + 3, -1))
    assert tcp.parse(wrapped).options == tcp.TcpOptions(sack=((1, 9),), ts=(3, 0xFFFFFFFF))


FOUR_BLOCKS = ((1, 2), (3, 4), (5, 6), (7, 8))
LIMIT_CASES = [
    ({"ts": (1, 2)}, 3, 40),
    ({}, 4, 36),
    ({"mss": 1460, "wscale": 7, "sack_perm": True, "ts": (1, 2)}, 2, 40),
    ({"mss": 1460, "ts": (1, 2)}, 2, 36),
    ({"mss": 1460, "wscale": 7, "sack_perm": True}, 3, 40),
    ({"wscale": 7, "ts": (1, 2)}, 2, 36),
]


@pytest.mark.parametrize(("kwargs", "kept", "olen"), LIMIT_CASES)
def test_sack_blocks_dropped_to_fit(kwargs: dict[str, Any], kept: int, olen: int) -> None:
    data = tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"p", src=SRC, dst=DST, sack=FOUR_BLOCKS, **kwargs)
    assert tcp.options_len(sack=FOUR_BLOCKS, **kwargs) == olen
    assert len(data) == 20 + olen + 1
    rep = tcp.parse(data, SRC, DST)
    assert rep.options.sack == FOUR_BLOCKS[:kept]
    pkt = IP(ipv4.build(SRC, DST, 6, data))[TCP]
    assert pkt.dataofs * 4 == 20 + olen
    assert dict(pkt.options)["SAck"] == tuple(e for b in FOUR_BLOCKS[:kept] for e in b)


def test_syn_layout_bytes() -> None:
    data = tcp.build(1, 2, 3, 0, tcp.SYN, 65535, src=SRC, dst=DST, mss=1460, wscale=7,
                     sack_perm=True, ts=(0x01020304, 0))
    assert data[20:] == bytes.fromhex("020405b4" "0402080a0102030400000000" "01030307")
    ts_only = tcp.build(1, 2, 3, 4, tcp.ACK, 5, src=SRC, dst=DST, ts=(1, 2))
    assert ts_only[20:] == bytes.fromhex("0101080a0000000100000002")
    perm_only = tcp.build(1, 2, 3, 4, tcp.SYN, 5, src=SRC, dst=DST, sack_perm=True)
    assert perm_only[20:] == bytes.fromhex("01010402")
    one_block = tcp.build(1, 2, 3, 4, tcp.ACK, 5, src=SRC, dst=DST, sack=((9, 10),))
    assert one_block[20:] == bytes.fromhex("0101050a000000090000000a")


@given(option_kwargs)
def test_options_len_matches_build(opts: dict[str, Any]) -> None:
    olen = tcp.options_len(**opts)
    data = tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"", src=SRC, dst=DST, **opts)
    assert olen == len(data) - 20
    assert olen % 4 == 0
    assert olen <= tcp.MAX_OPTIONS_LEN
    rep = tcp.parse(data, SRC, DST)
    assert rep.header_len == 20 + olen
    kept = len(rep.options.sack)
    assert rep.options == tcp.TcpOptions(
        opts["mss"], opts["wscale"], opts["sack_perm"], opts["sack"][:kept], opts["ts"]
    )
    if kept < len(opts["sack"]):  # blocks were dropped only because one more would not fit
        assert olen + (8 if kept else 12) > tcp.MAX_OPTIONS_LEN


def run(parser: Any, data: bytes) -> bool:
    """True if parsed, False if rejected with a known WireError; anything else propagates."""
    try:
        result = parser(data)
    except WireError as exc:
        assert exc.reason in REASONS
        return False
    assert isinstance(result, tcp.TcpRepr | tcp.TcpOptions)
    return True


PARSERS = (
    tcp.parse,
    lambda b: tcp.parse(b, SRC, DST),
    tcp.parse_options,
    lambda b: tcp.parse_options(memoryview(b)),
)


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_fuzz_random_bytes(data: bytes) -> None:
    for parser in PARSERS:
        run(parser, data)


SEEDS = (
    tcp.build(1, 2, 3, 4, tcp.SYN, 5, b"", src=SRC, dst=DST, mss=1460, wscale=7,
              sack_perm=True, ts=(1, 2)),
    tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"data", src=SRC, dst=DST, sack=FOUR_BLOCKS, ts=(1, 2)),
    tcp.build(1, 2, 3, 4, tcp.ACK, 5, b"plain", src=SRC, dst=DST),
)


@settings(max_examples=300)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6),
    st.integers(0, 80),
)
def test_fuzz_mutated_segments(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    data = bytes(data[:cut])
    for parser in PARSERS:
        run(parser, data)
        run(parser, data[20:])


def test_seeds_parse() -> None:
    for seed in SEEDS:
        assert run(lambda b: tcp.parse(b, SRC, DST), seed)
    assert not run(tcp.parse, SEEDS[0][:30])


def test_constants() -> None:
    assert tcp.HEADER.size == tcp.HEADER_LEN == 20
    assert tcp.PROTO_TCP == ipv4.PROTO_TCP
    assert (tcp.OPT_EOL, tcp.OPT_NOP, tcp.OPT_MSS, tcp.OPT_WSCALE) == (0, 1, 2, 3)
    assert (tcp.OPT_SACK_PERM, tcp.OPT_SACK, tcp.OPT_TIMESTAMP) == (4, 5, 8)
    assert tcp.MAX_OPTIONS_LEN == 40
