"""Tests for vimage.wire.vlan (IEEE 802.1Q tags), cross-checked against scapy's Dot1Q."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import IP, UDP, Dot1Q, Ether, raw

from vimage.wire import WireError, ethernet, vlan

MAC_A = bytes.fromhex("02abcd000001")
MAC_B = bytes.fromhex("02abcd000002")


def _untagged(payload: bytes = b"payload", etype: int = 0x0800) -> bytes:
    return ethernet.build(MAC_A, MAC_B, etype, payload)


def test_tag_dissected_by_scapy() -> None:
    frame = vlan.tag(_untagged(), 10, pcp=5)
    pkt = Ether(frame)
    assert pkt.type == 0x8100
    assert pkt[Dot1Q].vlan == 10 and pkt[Dot1Q].prio == 5 and pkt[Dot1Q].dei == 0
    assert pkt[Dot1Q].type == 0x0800
    assert len(frame) == len(_untagged()) + vlan.TAG_LEN
    assert frame == raw(Ether(dst="02:ab:cd:00:00:01", src="02:ab:cd:00:00:02")
                        / Dot1Q(prio=5, vlan=10, type=0x0800) / b"payload")


def test_scapy_tagged_parsed_and_untagged() -> None:
    inner = IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"x"
    pkt = Ether(dst="02:ab:cd:00:00:01", src="02:ab:cd:00:00:02") / Dot1Q(
        prio=7, dei=1, vlan=4094) / inner
    view = vlan.parse(raw(pkt))
    assert (view.vid, view.pcp, view.dei, view.ethertype) == (4094, 7, 1, 0x0800)
    assert view.untagged() == raw(Ether(dst="02:ab:cd:00:00:01", src="02:ab:cd:00:00:02")
                                  / inner)
    tci, frame = vlan.untag(raw(pkt))
    assert tci == (7 << 13) | (1 << 12) | 4094 and frame == view.untagged()
    assert "vid=4094" in repr(view)


@given(st.integers(0, 4095), st.integers(0, 7), st.integers(0, 1),
       st.integers(0x600, 0xFFFF), st.binary(max_size=40))
def test_round_trip_against_scapy(vid: int, pcp: int, dei: int, etype: int,
                                  payload: bytes) -> None:
    frame = vlan.tag(_untagged(payload, etype), vid, pcp, dei)
    dot1q = Ether(frame)[Dot1Q]
    assert (dot1q.vlan, dot1q.prio, dot1q.dei, dot1q.type) == (vid, pcp, dei, etype)
    view = vlan.parse(frame)
    assert (view.vid, view.pcp, view.dei, view.ethertype) == (vid, pcp, dei, etype)
    assert view.untagged() == _untagged(payload, etype)


def test_malformed() -> None:
    with pytest.raises(WireError) as exc:
        vlan.parse(vlan.tag(_untagged(b""), 1)[:17])
    assert exc.value.reason == "tooshort"
    with pytest.raises(WireError) as exc:
        vlan.parse(_untagged(b"12345678"))
    assert exc.value.reason == "badtype"
    assert vlan.untag(b"\x00" * 17) is None
    with pytest.raises(WireError):
        vlan.tag(b"short", 1)
    for bad in ((4096, 0, 0), (1, 8, 0), (1, 0, 2), (-1, 0, 0)):
        with pytest.raises(ValueError):
            vlan.tci(*bad)
