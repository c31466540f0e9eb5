"""RIPng formats (RFC 2080) cross-checked with scapy's RIPng and RIPngEntry."""

from __future__ import annotations

import pytest
from scapy.contrib.ripng import RIPng, RIPngEntry

from vimage.wire import WireError, ipv6, ripng


def test_response_matches_scapy() -> None:
    entries = [ripng.RipngEntry(ipv6.aton("2001:db8:1::"), 48, 3, 7),
               ripng.RipngEntry(ipv6.aton("fe80::1"), 0, ripng.NEXTHOP_METRIC),
               ripng.RipngEntry(ipv6.aton("fd00::"), 64, 16)]
    ours = ripng.build(ripng.RESPONSE, entries)
    theirs = (RIPng(cmd=2, ver=1)
              / RIPngEntry(prefix_or_nh="2001:db8:1::", routetag=7, prefixlen=48, metric=3)
              / RIPngEntry(prefix_or_nh="fe80::1", metric=255)
              / RIPngEntry(prefix_or_nh="fd00::", prefixlen=64, metric=16))
    assert ours == bytes(theirs)
    back = ripng.parse(bytes(theirs))
    assert back.command == ripng.RESPONSE and back.version == 1
    assert back.entries == tuple(entries)


def test_whole_table_request_matches_scapy() -> None:
    theirs = RIPng(cmd=1) / RIPngEntry(prefix_or_nh="::", prefixlen=0, metric=16)
    assert ripng.whole_table_request() == bytes(theirs)
    assert ripng.parse(bytes(theirs)).entries == (ripng.RipngEntry(0, 0, 16),)


def test_entries_per_packet_follow_the_mtu() -> None:
    assert ripng.max_entries(1500) == 72  # (1500 - 40 - 8 - 4) // 20
    assert ripng.max_entries(1280) == 61


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x02\x01\x00", "tooshort"),
    (b"\x02\x01\x00\x00" + b"\0" * 21, "badlen"),
    (b"\x02\x02\x00\x00", "badversion"),
    (b"\x05\x01\x00\x00", "badcommand"),
])
def test_malformed_packets_raise_wire_errors(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as exc:
        ripng.parse(data)
    assert exc.value.reason == reason
