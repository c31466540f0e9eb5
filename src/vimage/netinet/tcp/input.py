"""TCP input (FreeBSD tcp_input.c), in the order of RFC 9293 §3.10.7 ("SEGMENT
ARRIVES"): find the connection (header prediction first), then LISTEN, SYN-SENT and
TIME_WAIT, and for the synchronized states `established_input`, one function per
step of §3.10.7.4: check the sequence number (with PAWS), the RST bit (RFC 5961
challenge ACKs), the SYN bit, the ACK field, the URG bit, process the segment text,
check the FIN bit. Each step takes the connection first and says whether the
segment goes on to the next one.
"""

from __future__ import annotations

import errno
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.netinet.in_ import INADDR_BROADCAST
from vimage.netinet.in_pcb import pick_listener
from vimage.netinet.tcp import reass
from vimage.netinet.tcp.output import ack_now, output, respond_rst, send_data
from vimage.netinet.tcp.sack import is_lost, update_scoreboard
from vimage.netinet.tcp.seq import HALF, MASK, seq_diff, seq_leq, seq_lt
from vimage.netinet.tcp.subr import detach, drop, established, take_syn_options
from vimage.netinet.tcp.syncache import cookie_accept, cookie_ok, syncache_add
from vimage.netinet.tcp.timer import (
    arm_2msl,
    arm_finwait2,
    cancel_all,
    cancel_main,
    delack_timeout,
    persist_timeout,
    rexmt_timeout,
    set_main,
)
from vimage.netinet.tcp.var import (
    ACK,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    DUPTHRESH,
    ESTABLISHED,
    FIN,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    MAX_RTO_NS,
    MS,
    RST,
    SYN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
)
from vimage.stats import count_drop
from vimage.wire import WireError
from vimage.wire import tcp as wtcp
from vimage.wire.ipv6 import needs_zone

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.tcp.var import Tcb, TcpState

# a segment the parser refuses: its WireError reason -> the counter ("" for any other)
_PARSE_DROPS = MappingProxyType({"badsum": "rcvbadsum", "tooshort": "rcvshort", "": "rcvbadoff"})


def tcp_input(tcp: TcpState, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
    """A segment for this vnet (bound to its TcpState as `input`): parse it, find its
    connection and hand it to the processing of the connection's state."""
    st = tcp.stats
    st.rcvtotal += 1
    try:
        if ifp.offl.partial:  # from an in-process link: nothing to verify (vimage.net.offload)
            seg = wtcp.parse_at(pkt, hlen)
        else:
            seg = wtcp.parse_at(pkt, hlen, src, dst)
    except WireError as exc:
        count_drop(st, exc.reason, _PARSE_DROPS)
        return
    if dst >> 28 == 0xE or dst == INADDR_BROADCAST or dst in tcp.vnet.ip.bcast:
        return  # TCP is unicast only (multicast, broadcast)
    tcb = tcp.conns.get((dst, seg.dport, src, seg.sport))
    if tcb is None:
        tcb = tcp.conns.get((0, seg.dport, src, seg.sport))
    elif tcb.state == ESTABLISHED and fast_input(tcb, seg):
        return
    if tcb is not None and tcb.state == TIME_WAIT:
        if not time_wait_input(tcb, seg):
            return
        tcb = None  # recycled: the new SYN goes to a listener
    if tcb is None:  # dual-stack IPv6 listeners too; SO_REUSEPORT(_LB) ones (in_pcb.py)
        tcb = pick_listener(tcp.listeners.get(seg.dport, ()), src, seg.sport, dst, seg.dport,
                            False)
    if tcb is None:
        st.rcvafterclose += 1
        respond_rst(tcp, seg, src, dst)
        return
    if tcb.state == LISTEN:
        listen_input(tcb, seg, src, dst)
    elif tcb.state == SYN_SENT:
        syn_sent_input(tcb, seg)
    else:
        established_input(tcb, seg)


def tcp6_input(tcp: TcpState, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
    """tcp6_input: a segment over IPv6 (the switch's input for next header 6, `off` at
    the TCP header); then as tcp_input, with IPv6 connections and listeners only."""
    st = tcp.stats
    st.rcvtotal += 1
    try:
        if ifp.offl.partial:  # from an in-process link: nothing to verify (vimage.net.offload)
            seg = wtcp.parse_at(pkt, off)
        else:
            seg = wtcp.parse_at(pkt, off, src, dst)
    except WireError as exc:
        count_drop(st, exc.reason, _PARSE_DROPS)
        return
    if dst >> 120 == 0xFF:
        return  # TCP is unicast only
    tcb = tcp.conns.get((dst, seg.dport, src, seg.sport))
    if tcb is not None and not tcb.v6:
        tcb = None
    elif tcb is not None and tcb.state == ESTABLISHED and fast_input(tcb, seg):
        return
    if tcb is not None and tcb.state == TIME_WAIT:
        if not time_wait_input(tcb, seg):
            return
        tcb = None
    zone = ifp if needs_zone(src) else None
    if tcb is None:
        tcb = pick_listener(tcp.listeners.get(seg.dport, ()), src, seg.sport, dst, seg.dport,
                            True)
    if tcb is None:
        st.rcvafterclose += 1
        respond_rst(tcp, seg, src, dst, True, zone)
        return
    if tcb.state == LISTEN:
        listen_input(tcb, seg, src, dst, True, zone)
    elif tcb.state == SYN_SENT:
        syn_sent_input(tcb, seg)
    else:
        established_input(tcb, seg)


def fast_input(tcb: Tcb, seg: wtcp.TcpRepr) -> bool:
    """Header prediction (FreeBSD tcp_input's fast path): the next in-sequence segment
    of an established connection that is a plain ACK of new data or plain in-order
    data, with nothing unusual (no SACK, no recovery, the same window). False if the
    segment needs the full processing of established_input.

    One more case is taken here that FreeBSD's prediction leaves to the full path: the
    next in-order data that also acknowledges new data (an answer to a request). It
    goes through the same steps as in established_input, in its order (the ACK's, the
    window's, then the text's), without the checks that cannot fail for it; it is not
    counted as a prediction."""
    if seg.flags & 0x37 != ACK or seg.seq != tcb.rcv_nxt:  # FIN SYN RST URG, no ACK
        return False
    ts = seg.options.ts
    # (the sequence comparisons are seq_lt's, inlined: this runs for every segment)
    if tcb.ts_ok and (ts is None or 0 < (tcb.ts_recent - ts[0]) & MASK < HALF):
        return False  # no timestamp, or an old one (PAWS): the slow path
    if seg.options.sack or tcb.recovery or tcb.sacked or tcb.snd_nxt != tcb.snd_max:
        return False
    window = seg.window << tcb.snd_wscale
    if not window or not tcb.snd_wnd:
        return False  # zero windows and the persist timer: the slow path
    data = seg.payload
    ack = seg.ack
    snd_una = tcb.snd_una
    # an ACK of new, sent data: SND.UNA < ack <= SND.MAX
    new_ack = 0 < (ack - snd_una) & MASK <= (tcb.snd_max - snd_una) & MASK
    if data:
        if (ack != snd_una and not new_ack) or tcb.ooo or tcb.fin_ooo is not None \
                or tcb.user_closed or len(data) > tcb.rcv_space - len(tcb.rcv_buf):
            return False
    elif not new_ack or tcb.fin_ooo is not None:  # a FIN held back: established_input's
        return False
    seq = seg.seq
    tcb.rcv_time = tcb.tcp.vnet.kernel.sched.now_ns()
    if ts is not None:
        tcb.ts_recent = ts[0]
    st = tcb.tcp.stats
    if data:
        if new_ack:  # process_ack's part, before the window and the text
            ack_advance(tcb, ack, seg, False)  # (the socket hears of both below, once)
            tcb.dupacks = 0
        else:
            st.preddat += 1
        tcb.snd_wl1, tcb.snd_wl2 = seq, ack
        tcb.snd_wnd = window  # (an ACK of new data or data: no pure window update)
        tcb.rcv_buf += data
        tcb.rcv_nxt = (seq + len(data)) & MASK
        st.rcvbyte += len(data)
        if len(data) > tcb.mss:  # a large segment (LRO): counted as its MSS-sized pieces
            pieces = -(-len(data) // tcb.mss)
            st.rcvpack += pieces
            schedule_ack(tcb, pieces)
        else:
            st.rcvpack += 1
            schedule_ack(tcb)
        tcb.notify()
    else:
        tcb.snd_wl1, tcb.snd_wl2 = seq, ack
        tcb.snd_wnd = window
        st.predack += 1
        ack_advance(tcb, ack, seg)
        tcb.dupacks = 0
    output(tcb)
    return True


def time_wait_input(tcb: Tcb, seg: wtcp.TcpRepr) -> bool:
    """A segment for a connection in TIME_WAIT (FreeBSD tcp_twcheck).

    True when it is a new SYN that recycles the connection (RFC 6191: a newer
    timestamp, or without timestamps a sequence number beyond RCV.NXT): the old
    connection is gone and the caller hands the SYN to a listener.
    """
    flags = seg.flags
    if flags & RST:
        return False  # RFC 1337: no assassination of TIME_WAIT
    if flags & SYN and not flags & ACK:
        ts = seg.options.ts
        if tcb.ts_ok and ts is not None and tcb.tcp.rfc1323:
            newer = seq_lt(tcb.ts_recent, ts[0]) or (
                ts[0] == tcb.ts_recent and seq_lt(tcb.rcv_nxt, seg.seq))
        else:
            newer = seq_lt(tcb.rcv_nxt, seg.seq)
        if newer:
            detach(tcb)
            return True
    if not flags & ACK:
        return False
    payload = len(seg.payload)
    if flags & FIN and (seg.seq + payload + 1) & MASK == tcb.rcv_nxt:
        arm_2msl(tcb)  # the peer's FIN again
    if flags != ACK or payload or seg.seq != tcb.rcv_nxt or seg.ack != tcb.snd_nxt:
        ack_now(tcb)
    return False


def listen_input(listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int, v6: bool = False,
                 zone: Ifnet | None = None) -> None:
    """RFC 9293 §3.10.7.2: a SYN goes to the syncache; an ACK may bring back a cookie."""
    tcp = listener.tcp
    flags = seg.flags
    if flags & RST:
        return
    if flags & ACK:
        if tcp.syncookies and not flags & SYN and cookie_ok(tcp, seg, src, dst):
            tcb = cookie_accept(listener, seg, src, dst, v6, zone)
            if tcb is not None and (seg.payload or seg.flags & FIN):
                established_input(tcb, seg)
            return
        respond_rst(tcp, seg, src, dst, v6, zone)
        return
    if not flags & SYN or flags & FIN:
        tcp.stats.badsyn += 1
        return
    syncache_add(listener, seg, src, dst, v6, zone)


def syn_sent_input(tcb: Tcb, seg: wtcp.TcpRepr) -> None:
    """RFC 9293 §3.10.7.3: the answer to our SYN (or the peer's own, simultaneous)."""
    flags = seg.flags
    if flags & ACK and (seq_leq(seg.ack, tcb.iss) or seq_lt(tcb.snd_max, seg.ack)):
        if not flags & RST:
            respond_rst(tcb.tcp, seg, tcb.faddr, tcb.laddr, tcb.v6, tcb.zone)
        return
    if flags & RST:
        if flags & ACK:
            tcb.tcp.stats.resets_rcvd += 1
            drop(tcb, errno.ECONNREFUSED)
        return
    if not flags & SYN:
        return
    tcb.irs = seg.seq
    tcb.rcv_nxt = (seg.seq + 1) & MASK
    take_syn_options(tcb, seg)
    tcb.snd_wnd = seg.window
    tcb.snd_wl1, tcb.snd_wl2 = seg.seq, seg.ack
    if flags & ACK:
        ack_advance(tcb, seg.ack, seg)
        tcb.state = ESTABLISHED
        established(tcb)
        if seg.payload or flags & FIN:
            established_input(tcb, seg, after_syn=True)
            return
        ack_now(tcb)  # the third segment of the handshake goes at once
        output(tcb)
    else:  # simultaneous open
        tcb.state = SYN_RECEIVED
        tcb.snd_nxt = tcb.iss
        output(tcb)


# -- the synchronized states (RFC 9293 §3.10.7.4) ------------------------------------------------
def established_input(tcb: Tcb, seg: wtcp.TcpRepr, after_syn: bool = False) -> None:
    """A segment for SYN_RECEIVED or a synchronized state, step by step (the sixth, the
    URG bit, is ignored: urgent data is read inline, RFC 6093)."""
    flags = seg.flags
    seq = seg.seq
    tcb.rcv_time = tcb.now()
    if after_syn:  # the rest of the SYN-ACK that completed our connect
        seq = (seq + 1) & MASK
        flags &= ~SYN
    elif flags & SYN and tcb.state == SYN_RECEIVED and seq == tcb.irs and not flags & RST:
        if not flags & ACK:  # the peer's SYN again: our SYN-ACK was lost
            if tcb.sc_bucket >= 0:
                tcb.tcp.stats.sc_dupsyn += 1
            output(tcb, force_syn=True)
            return
        # simultaneous open: the peer's SYN-ACK; its SYN is known, its ACK is news
        seq = (seq + 1) & MASK
        flags &= ~SYN
    if not check_seq(tcb, seg, seq, flags):
        return
    if flags & RST:
        check_rst(tcb, seq)
        return
    if flags & SYN:
        check_syn(tcb)
        return
    if not flags & ACK or not check_ack(tcb, seg, seq):
        return
    if seg.payload and not process_text(tcb, seg, seq):
        return
    if flags & FIN or tcb.fin_ooo is not None:
        check_fin(tcb, seg, seq, flags)
    if tcb.state != CLOSED:
        output(tcb)


def check_seq(tcb: Tcb, seg: wtcp.TcpRepr, seq: int, flags: int) -> bool:
    """First, check the sequence number: PAWS (RFC 7323 §5), then RFC 9293's table of
    acceptable segments. An unacceptable one is answered with an ACK (ACK war
    limit permitting) unless it is a reset, and dropped."""
    st = tcb.tcp.stats
    ts = seg.options.ts
    if (tcb.ts_ok and ts is not None and not flags & RST
            and seq_lt(ts[0], tcb.ts_recent) and tcb.state != SYN_RECEIVED):
        st.rcvduppack += 1  # tcp_input.c: tcps_rcvduppack, tcps_rcvdupbyte, tcps_pawsdrop
        st.rcvdupbyte += len(seg.payload)
        st.pawsdrop += 1
        drop_after_ack(tcb)
        return False
    data = seg.payload
    seglen = len(data) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    wnd = tcb.rcv_wnd()
    rcv_nxt = tcb.rcv_nxt
    if seglen == 0:
        ok = (seq == rcv_nxt) if wnd == 0 else seq_leq(rcv_nxt, seq) and seq_lt(
            seq, rcv_nxt + wnd)
    elif wnd == 0:
        ok = False
    else:
        end = (seq + seglen - 1) & MASK
        ok = (seq_leq(rcv_nxt, seq) and seq_lt(seq, rcv_nxt + wnd)) or (
            seq_leq(rcv_nxt, end) and seq_lt(end, rcv_nxt + wnd))
    if ok:
        return True
    if flags & RST:
        return False
    if seglen and seq_lt(seq, rcv_nxt):
        st.rcvduppack += 1
        st.rcvdupbyte += len(data)
        if data and tcb.sack_ok:  # report the duplicate (D-SACK, RFC 2883)
            end = (seq + len(data)) & MASK
            tcb.dsack = (seq, end if seq_lt(end, rcv_nxt) else rcv_nxt)
    elif seglen:
        st.rcvpackafterwin += 1
        st.rcvbyteafterwin += len(data)
        if wnd == 0 and seq == rcv_nxt:
            st.rcvwinprobe += 1
            ack_now(tcb)  # a window probe is always answered (tcp_input.c)
            return False
    drop_after_ack(tcb)
    return False


def check_rst(tcb: Tcb, seq: int) -> None:
    """Second, the RST bit (RFC 5961 §3): exactly at RCV.NXT it resets the connection,
    elsewhere in the window it gets a challenge ACK."""
    if seq != tcb.rcv_nxt:
        challenge_ack(tcb)
        return
    tcb.tcp.stats.resets_rcvd += 1
    if tcb.state == SYN_RECEIVED and tcb.listener is not None and tcb.sock is None:
        detach(tcb)  # back to LISTEN: just forget the embryo
        return
    err = errno.ECONNREFUSED if tcb.state == SYN_RECEIVED else errno.ECONNRESET
    if tcb.state in (CLOSING, LAST_ACK):
        detach(tcb)
    else:
        drop(tcb, err)


def check_syn(tcb: Tcb) -> None:
    """Fourth, the SYN bit in a synchronized state: a challenge ACK (RFC 5961 §4). (The
    third step, security, has nothing to check.)"""
    challenge_ack(tcb)


def check_ack(tcb: Tcb, seg: wtcp.TcpRepr, seq: int) -> bool:
    """Fifth, the ACK field: it completes the handshake in SYN_RECEIVED, and in the
    synchronized states acknowledges data, updates the window and moves the closing
    states on. False when the segment goes no further."""
    if tcb.state != SYN_RECEIVED:
        return process_ack(tcb, seg, seq) and tcb.state != CLOSED
    if not (seq_lt(tcb.snd_una, seg.ack) and seq_leq(seg.ack, tcb.snd_max)):
        respond_rst(tcb.tcp, seg, tcb.faddr, tcb.laddr, tcb.v6, tcb.zone)
        return False
    tcb.state = ESTABLISHED
    tcb.snd_wnd = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
    tcb.snd_wl1, tcb.snd_wl2 = seq, seg.ack
    ack_advance(tcb, seg.ack, seg)
    established(tcb)
    return tcb.state != CLOSED


def process_text(tcb: Tcb, seg: wtcp.TcpRepr, seq: int) -> bool:
    """Seventh, process the segment text (a segment with data): in-order data to the
    receive buffer, the rest to the out-of-order queue; data nobody can read any more
    resets the connection. False when the connection is gone."""
    state = tcb.state
    if tcb.user_closed and state in (FIN_WAIT_1, FIN_WAIT_2, CLOSING):
        # nobody can read it any more: tell the peer it was lost (RFC 1122 4.2.2.13)
        tcb.tcp.stats.rcvafterclose += 1
        drop(tcb, errno.ECONNRESET, send_rst=True)
        return False
    if state in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2):
        receive_data(tcb, seq, bytes(seg.payload))
    else:
        tcb.tcp.stats.rcvafterclose += 1
    return True


def check_fin(tcb: Tcb, seg: wtcp.TcpRepr, seq: int, flags: int) -> None:
    """Eighth, the FIN bit (of this segment, or one held back). A FIN that came ahead
    of a hole is held until the hole fills (RFC 9293 §3.10.7.4: segments beyond
    RCV.NXT are held for later processing)."""
    if flags & FIN:
        fin_seq = (seq + len(seg.payload)) & MASK
        if fin_seq == tcb.rcv_nxt and not tcb.fin_rcvd:
            receive_fin(tcb)
        elif tcb.fin_rcvd:
            ack_now(tcb)  # retransmitted FIN: ACK again
        elif seq_lt(tcb.rcv_nxt, fin_seq) and seq_diff(fin_seq, tcb.rcv_nxt) <= tcb.rcv_wnd():
            tcb.fin_ooo = fin_seq
            if not seg.payload:
                ack_now(tcb)  # out of order: a duplicate ACK at once (RFC 5681 §4.2)
    elif tcb.fin_ooo == tcb.rcv_nxt and not tcb.fin_rcvd:
        receive_fin(tcb)


# -- ACK processing ------------------------------------------------------------------------------
def process_ack(tcb: Tcb, seg: wtcp.TcpRepr, seq: int) -> bool:
    """The ACK of a synchronized state: acceptability (RFC 5961 §5), SACK blocks,
    duplicate ACKs, new data acknowledged, the send window, our FIN acknowledged."""
    st = tcb.tcp.stats
    ack = seg.ack
    if seq_lt(tcb.snd_max, ack):  # RFC 9293 §3.10.7.4, RFC 5961 §5.2: ACK once, drop
        st.rcvacktoomuch += 1
        drop_after_ack(tcb)
        return False
    if seq_lt(ack, (tcb.snd_una - tcb.snd_wnd - 1) & MASK if tcb.snd_wnd else tcb.snd_una) \
            and seq_lt(ack, tcb.snd_una) and (tcb.snd_una - ack) & MASK > 65535 * 4:
        challenge_ack(tcb)  # RFC 5961 §5: too old
        return False
    window = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
    sack = seg.options.sack if tcb.sack_ok else ()
    new_sacked = 0
    if sack:
        st.sack_rcv_blocks += 1
        new_sacked = update_scoreboard(tcb, sack)
    if tcb.ts_ok and seg.options.ts is not None and seq_leq(seq, tcb.rcv_adv) and \
            seq_leq(seq, tcb.rcv_nxt):
        tcb.ts_recent = seg.options.ts[0]
    classic = (ack == tcb.snd_una and not seg.payload and window == tcb.snd_wnd and window
               and tcb.in_flight() and not seg.flags & FIN)  # RFC 5681's duplicate ACK
    if seq_lt(tcb.snd_una, ack):
        ack_advance(tcb, ack, seg)
        tcb.dupacks = 0
    elif classic:
        st.rcvdupack += 1
    # RFC 6675 §2: with SACK a duplicate ACK is one that SACKs new data (even if it
    # moves SND.UNA); an ACK without SACK option counts by RFC 5681's rule, for a
    # peer that never sends blocks. Duplicated segments (D-SACK only) never count.
    if new_sacked if sack else classic:
        tcb.dupacks += 1
        dupack(tcb)
    update_window(tcb, seg, seq, ack, window)
    return fin_acked(tcb)


def update_window(tcb: Tcb, seg: wtcp.TcpRepr, seq: int, ack: int, window: int) -> None:
    """The send window, from the newest segment only (RFC 9293's SND.WL1/WL2 rule)."""
    if seq_lt(tcb.snd_wl1, seq) or (tcb.snd_wl1 == seq and seq_leq(tcb.snd_wl2, ack)):
        if not seg.payload and ack == tcb.snd_wl2 and window > tcb.snd_wnd:
            tcb.tcp.stats.rcvwinupd += 1  # a pure window update (as FreeBSD counts them)
        was_zero = tcb.snd_wnd == 0
        tcb.snd_wnd = window
        tcb.snd_wl1, tcb.snd_wl2 = seq, ack
        if was_zero and window and tcb.t_main is not None and \
                tcb.t_main.callback is persist_timeout:
            cancel_main(tcb)
            tcb.rexmt_shift = 0  # the probes' backoff is not the retransmissions' one


def fin_acked(tcb: Tcb) -> bool:
    """The state transitions driven by our FIN being acknowledged; False when the
    connection is over (TIME_WAIT or gone)."""
    acked = tcb.fin_seq is not None and seq_lt(tcb.fin_seq, tcb.snd_una)
    if not acked:
        return True
    if tcb.state == FIN_WAIT_1:
        tcb.state = FIN_WAIT_2
        if tcb.user_closed:
            arm_finwait2(tcb)
    elif tcb.state == CLOSING:
        enter_time_wait(tcb)
        return False
    elif tcb.state == LAST_ACK:
        tcb.tcp.stats.closed += 1
        detach(tcb)
        return False
    return True


def ack_war_check(tcb: Tcb) -> bool:
    """May an ACK answer an unacceptable segment? (FreeBSD's tcp_ack_war_check)

    Every such ACK, challenge ACKs (RFC 5961 §3-5) included, counts against one
    allowance of `ack_war_cnt` ACKs per `ack_war_timewindow` ms and connection; a
    window starts with the first ACK after the previous one ended. Without it two
    ends that disagree on the sequence space (one spoofed segment is enough) ACK
    each other's ACKs for ever.
    """
    tcp = tcb.tcp
    if not tcp.ack_war_timewindow or not tcp.ack_war_cnt:
        return True
    now = tcb.now()
    if now >= tcb.ack_war_end:
        tcb.ack_war_end = now + tcp.ack_war_timewindow * MS
        tcb.ack_war_count = 0
    if tcb.ack_war_count < tcp.ack_war_cnt:
        tcb.ack_war_count += 1
        return True
    tcp.stats.ack_war_drops += 1
    return False


def drop_after_ack(tcb: Tcb) -> None:
    """Drop the segment, answering with an ACK if the ACK war limit allows
    (RFC 9293 §3.10.7.4 "send an acknowledgment ... drop", FreeBSD's dropafterack)."""
    if ack_war_check(tcb):
        ack_now(tcb)


def challenge_ack(tcb: Tcb) -> None:
    if ack_war_check(tcb):
        tcb.tcp.stats.challenge_acks += 1
        ack_now(tcb)


def ack_advance(tcb: Tcb, ack: int, seg: wtcp.TcpRepr, notify: bool = True) -> None:
    """SND.UNA moves to `ack`: free the buffer, time the RTT, grow the window; then tell
    the socket, unless the caller does (`notify` False: data came with the ACK)."""
    st = tcb.tcp.stats
    snd_una = tcb.snd_una
    acked = (ack - snd_una) & MASK
    in_flight = (tcb.snd_max - snd_una) & MASK
    st.rcvackpack += 1
    st.rcvackbyte += acked
    # RTT: timestamps if we have them, else the one timed segment (Karn)
    rtt = None
    now = tcb.tcp.vnet.kernel.sched.now_ns()
    ts = seg.options.ts
    if tcb.ts_ok and ts is not None and ts[1]:
        rtt = (((now // MS + tcb.ts_offset) - ts[1]) & MASK) * MS  # tsval() - TSecr
        if rtt < MS // 10:
            rtt = MS // 10
    if tcb.rtt_seq is not None and seq_lt(tcb.rtt_seq, ack):
        if rtt is None:
            rtt = now - tcb.rtt_start
        tcb.rtt_seq = None
    if rtt is not None and tcb.rexmt_shift == 0:
        update_rtt(tcb, rtt)
    tcb.rexmt_shift = 0
    # free what was acknowledged (SYN and FIN take a sequence number, not a byte)
    data_acked = (ack - tcb.snd_buf_seq) & MASK
    if data_acked < HALF:
        data_acked = min(data_acked, len(tcb.snd_buf))
        if data_acked:
            del tcb.snd_buf[:data_acked]
            tcb.snd_buf_seq = (tcb.snd_buf_seq + data_acked) & MASK
    tcb.snd_una = ack
    if 0 < (ack - tcb.snd_nxt) & MASK < HALF:  # seq_lt(SND.NXT, ack), inlined
        tcb.snd_nxt = ack
    if tcb.sacked:
        tcb.sacked = [(left, r) for left, r in tcb.sacked if seq_lt(ack, r)]
        if tcb.sacked and seq_lt(tcb.sacked[0][0], ack):
            tcb.sacked[0] = (ack, tcb.sacked[0][1])
    # congestion control
    if tcb.recovery:
        if seq_leq(tcb.recover, ack):
            tcb.recovery = False
            tcb.cc.on_exit_recovery(now)
        elif not tcb.sack_ok:
            # partial ACK (RFC 6582 §3.2 step 5): deflate the window by what was
            # acknowledged, add back one segment, resend the first unacknowledged one
            cc = tcb.cc
            cc.cwnd = max(cc.cwnd - acked, tcb.mss) + (tcb.mss if acked >= tcb.mss else 0)
            send_data(tcb, ack, tcb.mss, rexmit=True)
        # with SACK, output() sends what NextSeg() picks (RFC 6675 step C); an empty
        # scoreboard is no evidence of loss
    elif tcb.state not in (SYN_SENT, SYN_RECEIVED):
        if acked > 2 * tcb.mss and tcb.tso:
            _on_ack_pieces(tcb, acked, rtt, now, in_flight)
        else:
            tcb.cc.on_ack(acked, rtt, now, in_flight)
    # the retransmission timer (RFC 6298 5.2/5.3)
    if tcb.snd_una == tcb.snd_max:
        timer = tcb.t_main
        if timer is not None and timer.callback is rexmt_timeout:
            timer.cancel()  # (cancel_main, inlined)
            tcb.t_main = None
    else:
        set_main(tcb, tcb.rto, rexmt_timeout)
    if notify:
        tcb.notify()


def _on_ack_pieces(tcb: Tcb, acked: int, rtt: int | None, now: int, in_flight: int) -> None:
    """An ACK of large (TSO) segments that left whole (`tcb.tso`, so the receiver took
    them whole, LRO), given to congestion control as the ACKs of their MSS-sized pieces
    would have come (one per two pieces, RFC 1122), so the window grows as it does
    without TSO (slow start's byte counting is capped at 2*SMSS per ACK, RFC 3465)."""
    step = 2 * tcb.mss
    cc = tcb.cc
    while acked > 0:
        part = step if acked > step else acked
        cc.on_ack(part, rtt, now, in_flight)
        rtt = None
        acked -= part
        in_flight -= part


def update_rtt(tcb: Tcb, rtt: int) -> None:
    tcp = tcb.tcp
    tcp.stats.rttupdated += 1
    tcb.softerror = 0  # the path works (FreeBSD tcp_xmit_timer)
    if tcb.srtt == 0:
        tcb.srtt = rtt
        tcb.rttvar = rtt // 2
    else:
        delta = rtt - tcb.srtt
        tcb.rttvar += (abs(delta) - tcb.rttvar) // 4
        tcb.srtt += delta // 8
    # FreeBSD's slop keeps the RTO above the peer's delayed ACK timer: on a short
    # path SRTT + 4 * RTTVAR alone is less than 40 ms and every lone segment would
    # be retransmitted before its (delayed) ACK could come back
    rto = tcb.srtt + max(MS, 4 * tcb.rttvar) + tcp.rexmit_slop * MS
    tcb.rto = min(max(rto, tcp.rexmit_min * MS), MAX_RTO_NS)


def dupack(tcb: Tcb) -> None:
    """A duplicate ACK: limited transmit, or fast retransmit and loss recovery
    (RFC 5681 §3.2 and RFC 6582 without SACK, RFC 6675 §5 with it)."""
    st = tcb.tcp.stats
    if tcb.recovery:
        if not tcb.sack_ok:
            tcb.cc.cwnd += tcb.mss  # NewReno window inflation
        return  # output() sends what the window allows
    lost = tcb.sack_ok and bool(tcb.sacked) and is_lost(tcb, tcb.snd_una)
    if tcb.dupacks < DUPTHRESH and not lost:
        if not tcb.sack_ok:
            output(tcb, limited_transmit=True)  # RFC 3042
        return  # with SACK output() counts SACKed bytes out of the flight
    if not seq_leq(tcb.recover, tcb.snd_una):
        return  # the previous recovery (or timeout) is not over: no new one yet
    una = tcb.snd_una
    tcb.recovery = True
    tcb.recover = tcb.snd_max  # RecoveryPoint = HighData
    tcb.cc.on_enter_recovery(tcb.now(), tcb.in_flight())
    st.fastrexmit += 1
    tcb.rtt_seq = None
    length = min(tcb.mss, (tcb.snd_max - una) & MASK)
    if tcb.sack_ok:
        st.sack_recovery += 1
        if tcb.sacked:
            length = min(length, (tcb.sacked[0][0] - una) & MASK)
    else:
        tcb.cc.cwnd += DUPTHRESH * tcb.mss
    if send_data(tcb, una, length, rexmit=True) and tcb.sack_ok:
        st.sack_rexmits += 1
        st.sack_rexmit_bytes += length
    # HighRxt and RescueRxt: the end of this retransmission (RFC 6675 step 4.3)
    tcb.rexmt_high = tcb.rescue_rxt = (una + length) & MASK
    output(tcb)


def receive_data(tcb: Tcb, seq: int, data: bytes) -> None:
    st = tcb.tcp.stats
    rcv_nxt = tcb.rcv_nxt
    offset = seq_diff(rcv_nxt, seq)
    if offset > 0:  # the front was already received: report it (D-SACK, RFC 2883)
        if tcb.sack_ok:
            tcb.dsack = (seq, rcv_nxt)
        data = data[offset:]
        seq = rcv_nxt
    room = tcb.rcv_wnd() - max(0, seq_diff(seq, rcv_nxt))  # from seq to the window's end
    if len(data) > room:
        data = data[:max(0, room)]
    if not data:
        ack_now(tcb)
        return
    if seq == rcv_nxt:
        tcb.rcv_buf += data
        tcb.rcv_nxt = (rcv_nxt + len(data)) & MASK
        pieces = -(-len(data) // tcb.mss) if len(data) > tcb.mss else 1  # LRO: its pieces
        st.rcvpack += pieces
        st.rcvbyte += len(data)
        if tcb.ooo:
            reass.drain(tcb)
            ack_now(tcb)  # filling a hole: tell the sender at once
        elif tcb.dsack is not None:
            ack_now(tcb)  # a partial duplicate: at once, with its D-SACK block
        else:
            schedule_ack(tcb, pieces)
        tcb.notify()
    else:
        st.rcvoopack += 1
        st.rcvoobyte += len(data)
        reass.queue(tcb, seq, data)
        ack_now(tcb)  # a gap: duplicate ACK with SACK blocks


def schedule_ack(tcb: Tcb, segments: int = 1) -> None:
    """Note `segments` received segments (a large LRO segment counts as its pieces, so
    it is acknowledged at once, as the second of two segments is)."""
    tcb.want_ack = True
    tcb.unacked_segs += segments
    tcp = tcb.tcp
    if not tcp.delayed_ack or tcb.unacked_segs >= 2:
        return  # output() sends the ACK now (every second segment, RFC 1122)
    # the timer is left armed when an ACK goes (one timer per delay, not per ACK): an
    # earlier one still armed fires, sees `delack_due` and waits for the rest
    sched = tcp.vnet.kernel.sched
    tcb.delack_due = sched.now_ns() + tcp.delacktime * MS
    if tcb.t_delack is None:
        ghost = tcb.delack_ghost
        if ghost is not None:  # withdrawn (output._withdraw_delack): back if still due
            tcb.delack_ghost = None
            when, seq = ghost
            if not sched.passed(when, seq):
                tcb.t_delack = sched.call_at(when, delack_timeout, tcb, ack_now,
                                             owner=tcp.vnet, seq=seq)
                return
        # lazy (Scheduler.call_later_lazy): an answer sent in this instant carries the ACK
        tcb.t_delack = sched.call_later_lazy(tcp.delacktime * MS, delack_timeout, tcb,
                                             ack_now, owner=tcp.vnet)


def receive_fin(tcb: Tcb) -> None:
    tcb.fin_rcvd = True
    tcb.rcv_nxt = (tcb.rcv_nxt + 1) & MASK
    tcb.want_ack = True
    tcb.unacked_segs = 2
    state = tcb.state
    if state in (SYN_RECEIVED, ESTABLISHED):
        tcb.state = CLOSE_WAIT
    elif state == FIN_WAIT_1:
        fin_acked = tcb.fin_seq is not None and seq_lt(tcb.fin_seq, tcb.snd_una)
        if fin_acked:
            ack_now(tcb)
            enter_time_wait(tcb)
        else:
            tcb.state = CLOSING
    elif state == FIN_WAIT_2:
        ack_now(tcb)
        enter_time_wait(tcb)
    tcb.notify()


def enter_time_wait(tcb: Tcb) -> None:
    tcb.state = TIME_WAIT
    cancel_all(tcb)
    arm_2msl(tcb)
    tcb.tcp.stats.closed += 1
    tcb.notify()
