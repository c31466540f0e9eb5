"""GRE (RFC 2784, RFC 2890) cross-checked with scapy, both ways, and refused input."""

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import GRE

from vimage.wire import WireError, gre

INNER = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP())


@pytest.mark.parametrize(("key", "seq", "csum"), [
    (None, None, False), (42, None, False), (None, 7, False), (0xDEADBEEF, 2**32 - 1, True),
    (None, None, True),
])
def test_ours_parsed_by_scapy(key, seq, csum):
    pkt = gre.build(gre.PROTO_IPV4, INNER, key, seq, csum)
    theirs = GRE(pkt)
    assert theirs.proto == 0x0800 and theirs.version == 0
    assert theirs.key_present == (key is not None) and theirs.seqnum_present == (seq is not None)
    assert theirs.chksum_present == csum
    if key is not None:
        assert theirs.key == key
    if seq is not None:
        assert theirs.sequence_number == seq
    if csum:  # scapy recomputes the checksum: the same bytes
        del theirs.chksum
        assert bytes(theirs) == pkt
    assert bytes(theirs.payload) == INNER


@pytest.mark.parametrize(("key", "seq", "csum"), [
    (None, None, False), (5, None, False), (None, 9, False), (5, 9, True),
])
def test_scapy_parsed_by_ours(key, seq, csum):
    fields = {"proto": 0x0800}
    if key is not None:
        fields.update(key_present=1, key=key)
    if seq is not None:
        fields.update(seqnum_present=1, sequence_number=seq)
    if csum:
        fields.update(chksum_present=1)
    pkt = bytes(GRE(**fields) / IP(INNER))
    ours = gre.parse(pkt)
    assert (ours.proto, ours.key, ours.seq, ours.csum) == (0x0800, key, seq, csum)
    assert ours.header_len == 4 + 4 * ((key is not None) + (seq is not None) + csum)
    assert bytes(ours.payload) == INNER


@pytest.mark.parametrize(("pkt", "reason"), [
    (b"\x00\x00\x08", "tooshort"),
    (b"\x00\x01\x08\x00" + INNER, "badversion"),
    (b"\x40\x00\x08\x00" + INNER, "badflags"),  # RFC 1701 routing
    (b"\x20\x00\x08\x00\x00\x00", "tooshort"),  # a key announced, not there
])
def test_refused(pkt, reason):
    with pytest.raises(WireError) as err:
        gre.parse(pkt)
    assert err.value.reason == reason


def test_bad_checksum_refused():
    pkt = bytearray(gre.build(gre.PROTO_IPV4, INNER, csum=True))
    pkt[-1] ^= 0xFF
    with pytest.raises(WireError) as err:
        gre.parse(bytes(pkt))
    assert err.value.reason == "badsum"
