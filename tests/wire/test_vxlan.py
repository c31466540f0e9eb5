"""VXLAN (RFC 7348) cross-checked with scapy, both ways, and refused input."""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from vimage.wire import WireError, vxlan
from vimage.wire import udp as wudp
from vimage.wire.ipv4 import aton

FRAME = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / b"hello")


@pytest.mark.parametrize("vni", [0, 42, 0xFFFFFF])
def test_ours_parsed_by_scapy(vni):
    pkt = vxlan.build(vni, FRAME)
    theirs = VXLAN(pkt)
    assert theirs.vni == vni and theirs.flags & 0x08
    assert bytes(theirs.payload) == FRAME


def test_ours_in_udp_4789_parsed_by_scapy():
    payload = wudp.build(50000, vxlan.PORT, vxlan.build(7, FRAME), aton("192.0.2.1"),
                         aton("192.0.2.2"))
    theirs = IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=17) / payload))
    assert theirs[VXLAN].vni == 7 and bytes(theirs[VXLAN].payload) == FRAME
    # scapy verifies our UDP checksum: it recomputes the same one
    chk = theirs[UDP].chksum
    del theirs[UDP].chksum
    assert IP(bytes(theirs))[UDP].chksum == chk


@pytest.mark.parametrize("vni", [1, 4789, 0xABCDEF])
def test_scapy_parsed_by_ours(vni):
    ours = vxlan.parse(bytes(VXLAN(vni=vni) / Ether(FRAME)))
    assert ours.vni == vni and bytes(ours.payload) == FRAME


def test_reserved_bits_are_ignored():
    pkt = bytearray(vxlan.build(9, FRAME))
    pkt[1] = pkt[7] = 0xFF
    assert vxlan.parse(bytes(pkt)).vni == 9


@pytest.mark.parametrize(("pkt", "reason"), [
    (b"\x08\x00\x00\x00\x00\x00\x2a\x00", "tooshort"),
    (b"\x00\x00\x00\x00\x00\x00\x2a\x00" + FRAME, "badflags"),
])
def test_refused(pkt, reason):
    with pytest.raises(WireError) as err:
        vxlan.parse(pkt)
    assert err.value.reason == reason


def test_vni_out_of_range():
    with pytest.raises(ValueError):
        vxlan.header(1 << 24)
