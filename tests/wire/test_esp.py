"""wire.esp: the ESP header, RFC 4303 padding and the trailer check."""

from __future__ import annotations

import pytest

from vimage.wire import WireError, esp


def test_header_round_trip_and_reserved_spis():
    hdr = esp.header(0x1000, 7)
    rep = esp.parse(hdr + b"rest")
    assert (rep.spi, rep.seq, bytes(rep.payload)) == (0x1000, 7, b"rest")
    with pytest.raises(WireError) as exc:
        esp.parse(esp.header(255, 1))
    assert exc.value.reason == "badspi"
    with pytest.raises(WireError) as exc:
        esp.parse(b"\x00\x00\x10")
    assert exc.value.reason == "tooshort"


@pytest.mark.parametrize("block", [4, 16])
def test_trailer_aligns_and_strips(block):
    for n in range(40):
        payload = bytes(range(n))
        plain = payload + esp.trailer(n, block, 6)
        assert len(plain) % block == 0
        body, nxt = esp.strip_trailer(plain)
        assert bytes(body) == payload and nxt == 6


def test_bad_padding_and_bad_length():
    plain = bytearray(b"data" + esp.trailer(4, 16, 4))
    plain[5] ^= 0xFF
    with pytest.raises(WireError) as exc:
        esp.strip_trailer(bytes(plain))
    assert exc.value.reason == "badpad"
    with pytest.raises(WireError) as exc:
        esp.strip_trailer(b"\x00\x09\x04")
    assert exc.value.reason == "badilen"
