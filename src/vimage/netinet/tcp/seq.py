"""Sequence number arithmetic (FreeBSD tcp_seq.h, RFC 9293 §3.4): the only copy.

Sequence numbers are plain ints modulo 2**32. `seq_lt(a, b)`: a comes before b,
that is b is ahead of a by less than half the space. Two numbers exactly half the
space apart are unordered here (neither is before the other), where FreeBSD's
``(int)(a - b) < 0`` orders both ways; the engine has always used this convention.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def seq_lt(a: int, b: int) -> bool:
    """SEQ_LT: `a` precedes `b`."""
    return 0 < (b - a) & MASK < HALF


def seq_leq(a: int, b: int) -> bool:
    """SEQ_LEQ: `a` precedes or equals `b`."""
    return (b - a) & MASK < HALF


def seq_gt(a: int, b: int) -> bool:
    """SEQ_GT: `a` follows `b`."""
    return 0 < (a - b) & MASK < HALF


def seq_geq(a: int, b: int) -> bool:
    """SEQ_GEQ: `a` follows or equals `b`."""
    return (a - b) & MASK < HALF


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, signed."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d
