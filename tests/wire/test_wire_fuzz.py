"""Fuzzing: arbitrary input to every parser either parses or raises WireError."""

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vimage.wire import WireError, arp, ethernet, icmp, ipv4, udp

pytestmark = pytest.mark.fuzz
# at least 300 examples; more when the profile asks for more (--hypothesis-profile long)
EXAMPLES = max(300, settings.default.max_examples)

SRC = ipv4.aton("10.0.0.1")
DST = ipv4.aton("10.0.0.2")


def touch(obj: Any) -> None:
    """Read every public attribute/property so lazy accessors are exercised too."""
    for name in dir(obj):
        if not name.startswith("_"):
            value = getattr(obj, name)
            if isinstance(value, memoryview):
                bytes(value)


def run(parser: Callable[[memoryview], Any], data: bytes) -> bool:
    """Return True if parsed, False if rejected with WireError; anything else propagates."""
    try:
        result = parser(memoryview(data))
    except WireError as exc:
        assert isinstance(exc, ValueError)
        assert exc.reason in {
            "tooshort", "badvers", "badhlen", "badlen", "badsum", "badtype", "badop"
        }
        return False
    touch(result)
    return True


PARSERS: tuple[Callable[[memoryview], Any], ...] = (
    ethernet.parse,
    ethernet.EthernetFrame,
    arp.parse,
    ipv4.parse,
    lambda b: ipv4.parse(b, verify_checksum=False),
    ipv4.parse_quoted,
    icmp.parse,
    lambda b: icmp.parse(b, verify_checksum=False),
    udp.parse,
    lambda b: udp.parse(b, SRC, DST),
)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=120))
def test_random_bytes(data: bytes) -> None:
    for parser in PARSERS:
        run(parser, data)


RR_OPTION = b"\x07\x07\x04" + bytes(4)
SEEDS = (
    ethernet.build(ethernet.BROADCAST, b"\x02" * 6, ethernet.ETHERTYPE_IP, b"x" * 30),
    arp.build(arp.OP_REQUEST, b"\x02" * 6, SRC, b"\x00" * 6, DST),
    ipv4.build(SRC, DST, 17, udp.build(1, 2, b"data", SRC, DST), options=RR_OPTION),
    ipv4.build(SRC, DST, 1, icmp.build_echo(icmp.ECHO, 1, 2, b"ping")),
    icmp.build_error(icmp.UNREACH, 3, ipv4.build(SRC, DST, 17, bytes(8))),
    udp.build(53, 53, b"odd", SRC, DST),
)


@settings(max_examples=EXAMPLES)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_mutated_valid_packets(seed: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    data = data[:cut]
    for parser in PARSERS:
        run(parser, bytes(data))


def test_seeds_parse() -> None:
    assert run(ethernet.parse, SEEDS[0])
    assert run(arp.parse, SEEDS[1])
    assert run(ipv4.parse, SEEDS[2])
    assert run(ipv4.parse, SEEDS[3])
    assert run(icmp.parse, SEEDS[4])
    assert run(lambda b: udp.parse(b, SRC, DST), SEEDS[5])
    assert not run(ipv4.parse, SEEDS[2][:10])


@given(st.text(max_size=40))
def test_text_parsers(text: str) -> None:
    for parser, reason in ((ipv4.aton, "badaddr"), (ethernet.mac_aton, "badaddr")):
        try:
            value = parser(text)
        except WireError as exc:
            assert exc.reason == reason
        else:
            assert isinstance(value, int | bytes)


@given(st.integers(0, 0xFFFFFFFF))
def test_mask_to_prefix_total(mask: int) -> None:
    try:
        plen = ipv4.mask_to_prefix(mask)
    except WireError as exc:
        assert exc.reason == "badmask"
    else:
        assert ipv4.prefix_to_mask(plen) == mask
