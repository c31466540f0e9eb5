"""The receiver's out-of-order queue (FreeBSD tcp_reass.c): data that came ahead of a
hole, held as sorted, coalesced blocks until RCV.NXT reaches them."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from vimage.netinet.tcp.seq import MASK, seq_leq

if TYPE_CHECKING:
    from vimage.netinet.tcp.var import Tcb


def queue(tcb: Tcb, seq: int, data: bytes) -> None:
    """Hold data that came ahead of a hole (FreeBSD tcp_reass).

    Blocks are found by bisection on their offsets from RCV.NXT, and a segment that
    overlaps or touches blocks is merged with them (the data already held wins), so
    a segment costs O(log n) plus the bytes it moves, never a pass over the queue.
    As FreeBSD's tcp_reass (12 and later), a segment that joins no block may start
    a new one only while there are fewer than min(recvspace / MSS + 1,
    `net.inet.tcp.reass.maxqueuelen`) blocks, and all the data held stays within the
    receive buffer; other segments are dropped (rcvreassfull). The segment at
    RCV.NXT never waits here.
    """
    starts, blocks = tcb.ooo, tcb.ooo_data
    rcv = tcb.rcv_nxt

    def key(s: int) -> int:
        return (s - rcv) & MASK

    lo = key(seq)
    hi = lo + len(data)
    first = bisect.bisect_left(starts, lo, key=key)  # blocks from `first` start >= lo
    if first and key(starts[first - 1]) + len(blocks[first - 1]) >= lo:
        first -= 1  # the block before overlaps or touches the segment
    last = bisect.bisect_right(starts, hi, key=key)  # blocks before `last` start <= hi
    if first == last:  # a new block of its own
        if _full(tcb, len(data), True):
            return
        starts.insert(first, seq)
        blocks.insert(first, bytearray(data))
        tcb.ooo_bytes += len(data)
    else:
        if _merge(tcb, first, last, lo, hi):
            return  # nothing new
        if _full(tcb, len(data), False):
            return
        _join(tcb, first, last, seq, lo, data)
    tcb.sack_last = seq


def _full(tcb: Tcb, length: int, new_block: bool) -> bool:
    """No room for `length` more bytes, or for one more block if `new_block`: count
    the drop (FreeBSD tcps_rcvreassfull)."""
    limit = min(tcb.rcv_space // tcb.mss + 1, tcb.tcp.reass_maxqueuelen)
    if (new_block and len(tcb.ooo) >= limit) or tcb.ooo_bytes + length > tcb.rcv_space:
        tcb.tcp.stats.rcvreassfull += 1
        return True
    return False


def _merge(tcb: Tcb, first: int, last: int, lo: int, hi: int) -> bool:
    """Note the duplicate part of a segment that meets blocks `first`..`last - 1`
    (D-SACK, RFC 2883); True if one block already holds all of it."""
    rcv = tcb.rcv_nxt
    for i in range(first, last):
        qlo = (tcb.ooo[i] - rcv) & MASK
        qhi = qlo + len(tcb.ooo_data[i])
        if lo < qhi and qlo < hi:  # overlaps (not only touches) data already held
            if tcb.sack_ok and tcb.dsack is None:
                tcb.dsack = ((rcv + max(lo, qlo)) & MASK, (rcv + min(hi, qhi)) & MASK)
            if qlo <= lo and hi <= qhi:
                tcb.sack_last = tcb.ooo[i]
                return True
    return False


def _join(tcb: Tcb, first: int, last: int, seq: int, lo: int, data: bytes) -> None:
    """Merge a segment with blocks `first`..`last - 1` into one block: the first
    block grows in place when the segment does not start before it."""
    starts, blocks = tcb.ooo, tcb.ooo_data
    rcv = tcb.rcv_nxt
    held = sum(len(blocks[i]) for i in range(first, last))  # before blocks[first] grows
    head = (starts[first] - rcv) & MASK
    if lo < head:  # the segment starts the block
        buf = bytearray(data[:head - lo])
        start, pos = seq, lo
    else:
        buf = blocks[first]
        start, pos = starts[first], head
    for i in range(first, last):
        qlo = (starts[i] - rcv) & MASK
        end = pos + len(buf)
        if qlo > end:  # a gap between blocks: the segment fills it
            buf += data[end - lo:qlo - lo]
        block = blocks[i]
        if block is not buf:
            buf += block
    tail = pos + len(buf)
    if lo + len(data) > tail:
        buf += data[tail - lo:]
    tcb.ooo_bytes += len(buf) - held
    starts[first:last] = [start]
    blocks[first:last] = [buf]


def drain(tcb: Tcb) -> None:
    """RCV.NXT moved: blocks it reached go to the receive buffer."""
    starts, blocks = tcb.ooo, tcb.ooo_data
    n = 0
    while n < len(starts) and seq_leq(starts[n], tcb.rcv_nxt):
        block = blocks[n]
        offset = (tcb.rcv_nxt - starts[n]) & MASK
        if offset < len(block):
            tcb.rcv_buf += block[offset:]
            tcb.rcv_nxt = (tcb.rcv_nxt + len(block) - offset) & MASK
        tcb.ooo_bytes -= len(block)
        n += 1
    if n:
        del starts[:n], blocks[:n]


def find_block(tcb: Tcb, left: int, right: int) -> int | None:
    """The index of the block holding [left, right), if one does."""
    rcv = tcb.rcv_nxt
    lo, hi = (left - rcv) & MASK, (right - rcv) & MASK
    i = bisect.bisect_right(tcb.ooo, lo, key=lambda s: (s - rcv) & MASK) - 1
    if i >= 0 and hi <= ((tcb.ooo[i] - rcv) & MASK) + len(tcb.ooo_data[i]) and lo <= hi:
        return i
    return None
