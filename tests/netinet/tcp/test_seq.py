"""Sequence number arithmetic (vimage.netinet.tcp.seq), checked against struct's
signed 32-bit difference."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from vimage.netinet.tcp.seq import seq_diff, seq_geq, seq_gt, seq_leq, seq_lt

u32 = st.integers(0, 0xFFFFFFFF)


def test_seq_comparisons_examples() -> None:
    assert seq_lt(0xFFFFFFF0, 5)
    assert seq_gt(5, 0xFFFFFFF0)
    assert not seq_lt(5, 0xFFFFFFF0)
    assert seq_leq(7, 7)
    assert seq_geq(7, 7)
    assert not seq_lt(7, 7)
    assert not seq_gt(7, 7)
    assert seq_lt(0, 0x7FFFFFFF)
    assert seq_gt(0, 0x80000001)
    assert seq_lt(2**32 + 1, 2)  # unreduced inputs are reduced
    assert seq_leq(0xFFFFFFFF, 0)
    assert seq_geq(0, 0xFFFFFFFF)
    assert seq_diff(5, 0xFFFFFFF0) == 21
    assert seq_diff(0xFFFFFFF0, 5) == -21


def test_half_the_space_apart_is_unordered() -> None:
    """The engine's convention: neither precedes the other (see the module docstring)."""
    a, b = 10, 10 + 2**31
    assert not seq_lt(a, b) and not seq_lt(b, a)
    assert not seq_leq(a, b) and not seq_gt(a, b) and not seq_geq(a, b)


def signed_diff(a: int, b: int) -> int:
    """The signed 32-bit difference, computed independently with struct."""
    return struct.unpack("!i", struct.pack("!I", (a - b) % 2**32))[0]


@given(u32, u32)
def test_seq_comparisons(a: int, b: int) -> None:
    diff = signed_diff(a, b)
    assert seq_diff(a, b) == diff
    if diff == -(2**31):
        return  # unordered, tested above
    assert seq_lt(a, b) == (diff < 0)
    assert seq_leq(a, b) == (diff <= 0)
    assert seq_gt(a, b) == (diff > 0)
    assert seq_geq(a, b) == (diff >= 0)
    assert seq_lt(a, b) == seq_gt(b, a)


@given(u32, st.integers(1, 2**31 - 1))
def test_seq_wraparound(a: int, step: int) -> None:
    later = (a + step) % 2**32
    assert seq_lt(a, later)
    assert seq_leq(a, later)
    assert seq_gt(later, a)
    assert seq_geq(later, a)
    assert not seq_geq(a, later)
