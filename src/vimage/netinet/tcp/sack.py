"""SACK (RFC 2018, D-SACK RFC 2883) and SACK-based loss recovery (RFC 6675), as
FreeBSD's tcp_sack.c: the sender's scoreboard of what the peer SACKed, RFC 6675's
IsLost(), SetPipe() and NextSeg() (with the rescue retransmission), and the
receiver's choice of the SACK blocks an ACK carries. What is sent is output's
business (tcp_output asks NextSeg() what to send in recovery, as FreeBSD's asks
tcp_sack_output()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.netinet.tcp.reass import find_block
from vimage.netinet.tcp.seq import MASK, seq_diff, seq_leq, seq_lt
from vimage.netinet.tcp.var import DUPTHRESH

if TYPE_CHECKING:
    from vimage.netinet.tcp.var import Tcb


def update_scoreboard(tcb: Tcb, blocks: tuple[tuple[int, int], ...]) -> int:
    """Merge the peer's SACK blocks into the scoreboard; the bytes newly SACKed."""
    before = tcb.sacked_bytes()
    board = list(tcb.sacked)
    una = tcb.snd_una
    for left, right in blocks:
        if not seq_lt(una, right) or seq_lt(tcb.snd_max, right) or not seq_lt(left, right):
            continue  # stale (a D-SACK below SND.UNA) or bogus block
        if seq_lt(left, una):
            left = una
        board.append((left, right))
    board.sort(key=lambda b: (b[0] - una) & MASK)
    merged: list[tuple[int, int]] = []
    for left, right in board:
        if merged and seq_leq(left, merged[-1][1]):
            if seq_lt(merged[-1][1], right):
                merged[-1] = (merged[-1][0], right)
        else:
            merged.append((left, right))
    tcb.sacked = merged
    return tcb.sacked_bytes() - before


def sacked_below(tcb: Tcb) -> tuple[int, int]:
    """The SACKed bytes below SND.NXT, and the room up to the next SACKed block when
    SND.NXT is below SND.MAX (resending after a timeout: SND.NXT leaves SACKed
    blocks at once)."""
    nxt = tcb.snd_nxt
    resending = seq_lt(nxt, tcb.snd_max)
    below = 0
    for left, right in tcb.sacked:
        if resending and seq_leq(left, nxt) and seq_lt(nxt, right):
            nxt = tcb.snd_nxt = right  # the receiver has this block: skip it
        if seq_leq(right, nxt):
            below += (right - left) & MASK
        elif resending:
            return below, (left - nxt) & MASK
        else:
            break
    return below, 0


def is_lost(tcb: Tcb, seq: int) -> bool:
    """IsLost(): DupThresh SACKed blocks, or more than (DupThresh - 1) * SMSS SACKed
    bytes, above `seq`."""
    above = blocks = 0
    for left, right in tcb.sacked:
        if seq_leq(seq, left):
            above += (right - left) & MASK
            blocks += 1
    return blocks >= DUPTHRESH or above > (DUPTHRESH - 1) * tcb.mss


def set_pipe(tcb: Tcb) -> int:
    """SetPipe(): the bytes in flight. Every hole that is not lost counts once, and its
    part below HighRxt (retransmitted) once more; SACKed bytes do not count.

    A hole has the same SACKed bytes above all of its octets, so IsLost() is decided
    once per hole, walking the scoreboard from the top of the SACKed bytes down.
    """
    una = tcb.snd_una
    rxt = tcb.rexmt_high
    limit = 2 * tcb.mss
    above = tcb.sacked_bytes()
    blocks = len(tcb.sacked)
    pipe = 0
    start = una
    for left, right in (*tcb.sacked, (tcb.snd_max, tcb.snd_max)):
        if seq_lt(start, left):
            if not (blocks >= DUPTHRESH or above > limit):
                pipe += (left - start) & MASK
            if seq_lt(start, rxt):
                pipe += ((left if seq_lt(left, rxt) else rxt) - start) & MASK
        above -= (right - left) & MASK
        blocks -= 1
        start = right
    return pipe


def next_seg(tcb: Tcb) -> tuple[int, int, int] | None:
    """NextSeg(): (seq, length, rule) of the segment to send next in recovery.

    Rule 1: the first lost hole above HighRxt; 2: new data the receiver's window
    allows; 3: the first hole above HighRxt below the highest SACKed byte even if
    not lost; 4: once per recovery, a rescue retransmission of the highest
    unSACKed segment (RFC 6675 §4). As FreeBSD we rescue only after a partial ACK
    left no SACKed data above it and all data has been sent (application limited): a
    lost tail has nothing after it to reveal it, while otherwise the highest segment
    is most likely still on its way and the rescue would be spurious.
    """
    mss = tcb.mss
    una = tcb.snd_una
    rxt = tcb.rexmt_high if seq_lt(una, tcb.rexmt_high) else una
    sacked = tcb.sacked
    rule3 = None
    if sacked:
        limit = (DUPTHRESH - 1) * mss
        above = tcb.sacked_bytes()
        blocks = len(sacked)
        start = una
        for left, right in sacked:
            first = rxt if seq_lt(start, rxt) else start
            if seq_lt(first, left):
                length = min(mss, (left - first) & MASK)
                if blocks >= DUPTHRESH or above > limit:
                    return first, length, 1
                rule3 = (first, length, 3)
                break  # holes further up have fewer SACKed bytes above: not lost either
            above -= (right - left) & MASK
            blocks -= 1
            start = right
    # rule 2: new data
    pending = len(tcb.snd_buf) - ((tcb.snd_max - tcb.snd_buf_seq) & MASK)
    if tcb.snd_nxt == tcb.snd_max and pending > 0:
        length = min(mss, pending)
        if seq_diff((una + tcb.snd_wnd) & MASK, tcb.snd_max) >= length:
            return tcb.snd_max, length, 2
    if rule3 is not None:
        return rule3
    # rule 4: the rescue retransmission
    if not sacked and pending <= 0 and (tcb.rescue_rxt is None
                                        or seq_lt(tcb.rescue_rxt, una)):
        top = tcb.snd_max
        if tcb.fin_seq is not None and seq_lt(tcb.fin_seq, top):
            top = tcb.fin_seq  # the FIN rides on the last data segment
        if seq_lt(una, top):
            length = min(mss, (top - una) & MASK)
            return (top - length) & MASK, length, 4
    return None


def sack_blocks(tcb: Tcb) -> tuple[tuple[int, int], ...]:
    """The SACK blocks of the next ACK (RFC 2018 §4, RFC 2883).

    A duplicate to report comes first (D-SACK), then the block that holds it if it
    was out-of-order data, then the block of the segment that arrived last, then the
    others from the highest down; build() keeps what fits beside the other options
    (3 with timestamps). At most 4 blocks: the cost does not grow with the queue.
    """
    if not tcb.sack_ok:
        return ()
    dsack = tcb.dsack
    tcb.dsack = None
    starts = tcb.ooo
    if not starts:
        return (dsack,) if dsack is not None else ()
    order: list[int] = []
    if dsack is not None:
        i = find_block(tcb, *dsack)
        if i is not None:
            order.append(i)
    i = find_block(tcb, tcb.sack_last, (tcb.sack_last + 1) & MASK)
    if i is not None and i not in order:
        order.append(i)
    i = len(starts) - 1
    while len(order) < 4 and i >= 0:
        if i not in order:
            order.append(i)
        i -= 1
    blocks = [(starts[i], (starts[i] + len(tcb.ooo_data[i])) & MASK) for i in order]
    if dsack is not None:
        blocks.insert(0, dsack)
    return tuple(blocks[:4])
