"""ESP, the IP Encapsulating Security Payload (RFC 4303): header, padding and trailer.

    0                   1                   2                   3
    |               Security Parameters Index (SPI)                 |
    |                      Sequence Number                          |
    |                    IV (per algorithm) ...                     |
    |                    Payload Data (variable)                    |
    |               |     Padding (0-255 bytes)                     |
    |                               |  Pad Length   | Next Header   |
    |         Integrity Check Value-ICV (variable)                  |

Only the formats live here (the SPI and sequence number, the RFC 4303 section 2.4
padding 1, 2, 3, ... and its check); the transforms (AES-GCM, AES-CBC + HMAC) are the
IPsec layer's (vimage.netipsec.xform). No state, no I/O.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError, as_view

PROTO_ESP = 50
HEADER = struct.Struct("!II")
HEADER_LEN = 8
TRAILER_LEN = 2  # pad length, next header
_PAD = bytes(range(1, 256))  # RFC 4303 2.4: the default padding is 1, 2, 3, ...


class EspRepr(NamedTuple):
    """A parsed ESP header; `payload` (a view) is IV, ciphertext and ICV."""

    spi: int
    seq: int
    payload: memoryview


def parse(buf: Buffer) -> EspRepr:
    """The SPI and sequence number; WireError "tooshort" under 8 bytes, "badspi" for
    SPIs 1-255 (reserved by IANA, RFC 4303 2.1) and 0 (never sent on the wire)."""
    view = as_view(buf)
    if len(view) < HEADER_LEN:
        raise WireError("tooshort", f"{len(view)} bytes, ESP needs {HEADER_LEN}")
    spi, seq = HEADER.unpack_from(view)
    if spi < 256:
        raise WireError("badspi", f"reserved SPI {spi}")
    return EspRepr(spi, seq, view[HEADER_LEN:])


def header(spi: int, seq: int) -> bytes:
    return HEADER.pack(spi, seq & 0xFFFFFFFF)


def padding(payload_len: int, block: int) -> bytes:
    """The padding and the two trailer bytes' worth of room: after `payload_len` bytes,
    padding so that payload + padding + 2 is a multiple of `block` (at least 4, the
    32-bit alignment RFC 4303 2.4 asks for)."""
    block = max(block, 4)
    n = -(payload_len + TRAILER_LEN) % block
    return _PAD[:n]


def trailer(payload_len: int, block: int, next_header: int) -> bytes:
    """Padding, pad length and next header for a payload of `payload_len` bytes."""
    pad = padding(payload_len, block)
    return pad + bytes((len(pad), next_header))


def strip_trailer(plain: Buffer) -> tuple[memoryview, int]:
    """The payload and next header of a decrypted ESP payload; WireError "badilen" when
    the pad length runs past the start, "badpad" when the padding is not 1, 2, 3, ...
    (FreeBSD esp_input_cb drops both: esps_badilen, esps_badenc)."""
    view = as_view(plain)
    n = len(view)
    if n < TRAILER_LEN:
        raise WireError("badilen", f"{n} bytes, no ESP trailer")
    padlen, nxt = view[n - 2], view[n - 1]
    if padlen + TRAILER_LEN > n:
        raise WireError("badilen", f"pad length {padlen} in {n} bytes")
    end = n - TRAILER_LEN - padlen
    if padlen and view[end:n - TRAILER_LEN] != _PAD[:padlen]:
        raise WireError("badpad", "padding is not 1, 2, 3, ...")
    return view[:end], nxt
