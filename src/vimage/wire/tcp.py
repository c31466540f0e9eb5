"""TCP segments (RFC 9293) over IPv4, with the MSS, window scale, SACK and timestamp options.

Options follow RFC 9293 (MSS), RFC 7323 (window scale, timestamps) and RFC 2018 (SACK).
``build`` lays them out 4-byte aligned the way Linux and FreeBSD do, so captures look
familiar; ``parse`` accepts any order and skips option kinds it does not know.
"""

from __future__ import annotations

import struct

# a global name for the NamedTuple's field type: mypyc (vimage.compiled) looks it up there
from builtins import memoryview
from typing import NamedTuple

from vimage.wire import checksum as _cksum
from vimage.wire._common import Buffer, WireError, as_view
from vimage.wire.ipv4 import PROTO_TCP, walk_options

HEADER = struct.Struct("!HHIIBBHHH")
HEADER_LEN = 20
MAX_SEGMENT = 65535

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERM = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

MAX_OPTIONS_LEN = 40
MAX_WSCALE = 14
"""RFC 7323 section 2.3: a larger shift count is treated as 14."""

_SEQ_MASK = 0xFFFFFFFF
_CHECKSUM_OFFSET = 16

_MSS = struct.Struct("!BBH")
_WSCALE = struct.Struct("!BBBB")
_U32_PAIR = struct.Struct("!II")
_TS_WITH_SACK_PERM = b"\x04\x02\x08\x0a"
_TS_ALONE = b"\x01\x01\x08\x0a"
_SACK_PERM_ALONE = b"\x01\x01\x04\x02"
_TS_FAST = struct.Struct("!III")
_TS_ALONE_WORD = 0x0101080A
_HEADER_TS = struct.Struct("!HHIIBBHHHIII")
"""A header with NOP NOP TIMESTAMP, the options of every segment on most connections."""
_from_bytes = int.from_bytes
_MAX_SACK_BLOCKS = 4
_SACK = tuple(struct.Struct("!BBBB" + "II" * n) for n in range(_MAX_SACK_BLOCKS + 1))
"""``_SACK[n]``: NOP NOP SACK with ``n`` blocks, indexed by block count."""
_SACK_EDGES = tuple(struct.Struct("!" + "I" * (2 * n)) for n in range(_MAX_SACK_BLOCKS + 1))
"""``_SACK_EDGES[n]``: the edges of an ``n``-block SACK option, for parsing."""


class TcpOptions(NamedTuple):
    """The options of a segment; ``ts`` is (TSval, TSecr), ``sack`` holds (left, right) edges."""

    mss: int | None = None
    wscale: int | None = None
    sack_perm: bool = False
    sack: tuple[tuple[int, int], ...] = ()
    ts: tuple[int, int] | None = None


NO_OPTIONS = TcpOptions()
_new = tuple.__new__


class TcpRepr(NamedTuple):
    """A parsed TCP segment; ``payload`` is a view into the buffer (no copy)."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    checksum: int
    urgent: int
    header_len: int
    options: TcpOptions
    payload: memoryview


def _badopt(message: str) -> WireError:
    return WireError("badopt", message)


def parse_options(buf: Buffer) -> TcpOptions:
    """Parse the option bytes of a header (any order; when an option repeats, the last wins)."""
    if len(buf) == 12:  # NOP NOP TIMESTAMP: the common case on an established connection
        word, tsval, tsecr = _TS_FAST.unpack_from(buf)
        if word == _TS_ALONE_WORD:
            return TcpOptions(None, None, False, (), (tsval, tsecr))
    data = bytes(buf)
    end = len(data)
    mss = wscale = ts = None
    sack_perm = False
    sack: tuple[tuple[int, int], ...] = ()
    for pos, kind, length in walk_options(data, 0, end):
        if not length:
            raise _badopt(f"option {kind} at offset {pos} of {end}: its length does not fit")
        if kind == OPT_MSS:
            if length != 4:
                raise _badopt(f"mss length {length}")
            mss = _MSS.unpack_from(data, pos)[2]
        elif kind == OPT_TIMESTAMP:
            if length != 10:
                raise _badopt(f"timestamp length {length}")
            ts = _U32_PAIR.unpack_from(data, pos + 2)
        elif kind == OPT_WSCALE:
            if length != 3:
                raise _badopt(f"wscale length {length}")
            wscale = min(data[pos + 2], MAX_WSCALE)
        elif kind == OPT_SACK_PERM:
            if length != 2:
                raise _badopt(f"sack-permitted length {length}")
            sack_perm = True
        elif kind == OPT_SACK:
            blocks, rest = divmod(length - 2, 8)
            if rest or not blocks:
                raise _badopt(f"sack length {length}")
            edges = _SACK_EDGES[blocks].unpack_from(data, pos + 2)
            sack = tuple(zip(edges[::2], edges[1::2], strict=True))
    return TcpOptions(mss, wscale, sack_perm, sack, ts)


def _verify(view: memoryview, size: int, src: int, dst: int) -> None:
    """WireError("badsum") unless the segment's checksum, with the pseudo-header, is right.

    The ones'-complement sum is the value of the bytes modulo 0xFFFF (2**16 == 1), so the
    pseudo-header adds src + dst + protocol + length; a valid segment sums to 0xFFFF,
    that is 0 modulo 0xFFFF. The pseudo-header's 16-bit length cannot describe a longer
    segment: never valid.
    """
    total = _from_bytes(view, "big")
    if size & 1:
        total <<= 8
    if size > MAX_SEGMENT or (total + src + dst + PROTO_TCP + size) % 0xFFFF:
        raise WireError("badsum", "tcp checksum")


def parse(buf: Buffer, src: int | None = None, dst: int | None = None) -> TcpRepr:
    """Parse a TCP segment (the whole buffer); verify the checksum if ``src`` and ``dst`` given."""
    view = as_view(buf)
    size = len(view)
    if size < HEADER_LEN:
        raise WireError("tooshort", f"tcp segment of {size} bytes")
    if size >= 32 and view[12] == 0x80:  # 12 bytes of options: NOP NOP TIMESTAMP, mostly
        sport, dport, seq, ack, _, flags, window, cksum, urgent, word, tsval, tsecr = \
            _HEADER_TS.unpack_from(view)
        if word == _TS_ALONE_WORD:
            if src is not None and dst is not None:
                _verify(view, size, src, dst)
            # tuple.__new__: a NamedTuple's own __new__ is a Python function, a call per
            # segment on TCP's hottest path
            return _new(TcpRepr, (sport, dport, seq, ack, flags, window, cksum, urgent, 32,
                                  _new(TcpOptions, (None, None, False, (), (tsval, tsecr))),
                                  view[32:]))
    sport, dport, seq, ack, offset, flags, window, cksum, urgent = HEADER.unpack_from(view)
    header_len = (offset >> 4) << 2
    if header_len < HEADER_LEN or header_len > size:
        raise WireError("badoff", f"tcp header length {header_len}, buffer {size}")
    if src is not None and dst is not None:
        _verify(view, size, src, dst)
    if header_len == HEADER_LEN:
        options = NO_OPTIONS
    else:
        options = parse_options(view[HEADER_LEN:header_len])
    return TcpRepr(
        sport, dport, seq, ack, flags, window, cksum, urgent, header_len, options, view[header_len:]
    )


def parse_at(pkt: Buffer, off: int, src: int | None = None,
             dst: int | None = None) -> TcpRepr:
    """``parse(memoryview(pkt)[off:], src, dst)`` for the segment at offset `off` of a
    packet (IP input's case). The usual header (NOP NOP TIMESTAMP) is read from the
    packet itself: one view, of the payload, instead of three and the format checks of
    `as_view`, on TCP's receive path."""
    size = len(pkt) - off
    if size >= 32 and pkt[off + 12] == 0x80:
        sport, dport, seq, ack, _, flags, window, cksum, urgent, word, tsval, tsecr = \
            _HEADER_TS.unpack_from(pkt, off)
        if word == _TS_ALONE_WORD:
            if src is not None and dst is not None:
                _verify(memoryview(pkt)[off:], size, src, dst)
            return _new(TcpRepr, (sport, dport, seq, ack, flags, window, cksum, urgent, 32,
                                  _new(TcpOptions, (None, None, False, (), (tsval, tsecr))),
                                  memoryview(pkt)[off + 32:]))
    return parse(memoryview(pkt)[off:], src, dst)


def _sack_room(base: int, count: int) -> int:
    """How many of ``count`` SACK blocks fit after ``base`` bytes of other options."""
    if not count:
        return 0
    return max(0, min(count, (MAX_OPTIONS_LEN - base - 4) >> 3))


def _base_len(mss: int | None, wscale: int | None, sack_perm: bool, ts: object) -> int:
    """The option bytes used by everything except SACK blocks."""
    size = 12 if ts is not None else 4 if sack_perm else 0
    if mss is not None:
        size += 4
    if wscale is not None:
        size += 4
    return size


def options_len(
    mss: int | None = None,
    wscale: int | None = None,
    sack_perm: bool = False,
    sack: tuple[tuple[int, int], ...] = (),
    ts: tuple[int, int] | None = None,
) -> int:
    """The option bytes ``build`` emits for these options (SACK blocks trimmed to fit)."""
    base = _base_len(mss, wscale, sack_perm, ts)
    blocks = _sack_room(base, len(sack))
    return base + 4 + 8 * blocks if blocks else base


def _build_options(
    mss: int | None,
    wscale: int | None,
    sack_perm: bool,
    sack: tuple[tuple[int, int], ...],
    ts: tuple[int, int] | None,
) -> bytes:
    """Option bytes in the Linux/FreeBSD layout, a multiple of 4 bytes long."""
    parts: list[bytes] = []
    if mss is not None:
        parts.append(_MSS.pack(OPT_MSS, 4, mss))
    if ts is not None:
        parts.append(_TS_WITH_SACK_PERM if sack_perm else _TS_ALONE)
        parts.append(_U32_PAIR.pack(ts[0] & _SEQ_MASK, ts[1] & _SEQ_MASK))
    elif sack_perm:
        parts.append(_SACK_PERM_ALONE)
    if wscale is not None:
        parts.append(_WSCALE.pack(OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack:
        blocks = _sack_room(_base_len(mss, wscale, sack_perm, ts), len(sack))
        if blocks:
            edges = [edge & _SEQ_MASK for block in sack[:blocks] for edge in block]
            parts.append(_SACK[blocks].pack(OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * blocks, *edges))
    return b"".join(parts)


def build(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: Buffer = b"",
    *,
    src: int,
    dst: int,
    mss: int | None = None,
    wscale: int | None = None,
    sack_perm: bool = False,
    sack: tuple[tuple[int, int], ...] = (),
    ts: tuple[int, int] | None = None,
    urgent: int = 0,
) -> bytes:
    """Emit a TCP segment: header, options and payload, checksummed over the pseudo-header.

    SACK blocks that would push the options past 40 bytes are dropped from the end.
    """
    if ts is not None and mss is None and wscale is None and not sack_perm and not sack:
        return build_ts(sport, dport, seq, ack, flags, window, payload, src, dst,
                        ts[0], ts[1], urgent)
    if mss is None and wscale is None and ts is None and not sack_perm and not sack:
        opts = b""
    else:
        opts = _build_options(mss, wscale, sack_perm, sack, ts)
    header = bytearray(
        HEADER.pack(
            sport,
            dport,
            seq & _SEQ_MASK,
            ack & _SEQ_MASK,
            (HEADER_LEN + len(opts)) << 2,
            flags,
            window,
            0,
            urgent,
        )
    )
    header += opts
    length = len(header) + len(payload)
    if length > MAX_SEGMENT:
        raise ValueError(f"tcp segment too long: {length}")
    partial = _cksum.ones_sum(header, _cksum.pseudo_sum_v4(src, dst, PROTO_TCP, length))
    struct.pack_into("!H", header, _CHECKSUM_OFFSET, _cksum.checksum(payload, partial))
    return b"".join((header, payload))


def build_ts(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
             payload: Buffer, src: int, dst: int, tsval: int, tsecr: int,
             urgent: int = 0) -> bytes:
    """``build`` for a segment whose only option is a timestamp (NOP NOP TS): the hot path.

    The checksum is computed from the field values (a 32-bit field is congruent to the
    sum of its halves modulo 0xFFFF) and the payload, and packed in one go.
    """
    length = 32 + len(payload)
    if length > MAX_SEGMENT:
        raise ValueError(f"tcp segment too long: {length}")
    seq &= _SEQ_MASK
    ack &= _SEQ_MASK
    tsval &= _SEQ_MASK
    tsecr &= _SEQ_MASK
    body = _from_bytes(payload, "big")
    if length & 1:
        body <<= 8
    total = (sport + dport + seq + ack + 0x8000 + flags + window + urgent + _TS_ALONE_WORD
             + tsval + tsecr + src + dst + PROTO_TCP + length + body)
    total %= 0xFFFF
    cksum = ~total & 0xFFFF if total else 0
    return _HEADER_TS.pack(sport, dport, seq, ack, 0x80, flags, window, cksum, urgent,
                           _TS_ALONE_WORD, tsval, tsecr) + payload


def build_ts_partial(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                     payload: Buffer, tsval: int, tsecr: int) -> bytes:
    """``build_ts`` with the checksum left to the interface (checksum offload: the field
    stays 0 until `vimage.net.offload` fills it, if anything needs it)."""
    if 32 + len(payload) > MAX_SEGMENT:
        raise ValueError(f"tcp segment too long: {32 + len(payload)}")
    return _HEADER_TS.pack(sport, dport, seq & _SEQ_MASK, ack & _SEQ_MASK, 0x80, flags, window,
                           0, 0, _TS_ALONE_WORD, tsval & _SEQ_MASK,
                           tsecr & _SEQ_MASK) + payload
