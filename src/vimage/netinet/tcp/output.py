"""TCP output (FreeBSD tcp_output.c): what the windows allow of SYN, data and FIN,
retransmissions chosen by NextSeg() in SACK recovery, pure ACKs and window updates,
and the building of one segment with its options and counters."""

from __future__ import annotations

import contextlib
import errno
from typing import TYPE_CHECKING, Any

from vimage.net.offload import (
    IFCAP_TSO4,
    IFCAP_TSO6,
    IFCAP_TXCSUM,
    IFCAP_TXCSUM_IPV6,
    LARGE,
    PARTIAL,
    TSO_MAX,
)
from vimage.net.route import RTF_GATEWAY, RTF_REJECT
from vimage.netinet.tcp.sack import next_seg, sack_blocks, sacked_below, set_pipe
from vimage.netinet.tcp.seq import HALF, MASK, seq_leq, seq_lt
from vimage.netinet.tcp.timer import persist_timeout, rexmt_timeout, set_main
from vimage.netinet.tcp.var import (
    ACK,
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN,
    FIN_WAIT_1,
    LAST_ACK,
    LISTEN,
    MS,
    PSH,
    RST,
    SOFT_ERRORS,
    SYN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
)
from vimage.wire import tcp as wtcp
from vimage.wire.ipv4 import PROTO_TCP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.tcp.var import Tcb, TcpState
    from vimage.sched import Timer

IP6_TCP_HDRS = 60  # an IPv6 and a TCP header: the MSS is the MTU less these (1440 at 1500)
_TSO4 = IFCAP_TSO4 | IFCAP_TXCSUM  # TSO needs the checksum offloaded too
_TSO6 = IFCAP_TSO6 | IFCAP_TXCSUM_IPV6
TSO_HEADROOM = 100  # an IP header (v6: 40) and a TCP header with the most options (60)


def send_segment(tcb: Tcb, seq: int, flags: int, data: bytes | bytearray, ack: int | None = None,
                 syn_options: bool = False, sack: tuple[tuple[int, int], ...] = (),
                 probe: bool = False) -> None:
    """Build and send one segment of `tcb`; counts it as FreeBSD's tcp_output does.

    Data below SND.MAX is a retransmission (sndrexmitpack/byte), a window probe
    is counted by its caller (sndprobe), the rest is new data (sndpack/byte).
    """
    tcp = tcb.tcp
    st = tcp.stats
    wnd = tcb.rcv_space - len(tcb.rcv_buf)
    if wnd < 0:
        wnd = 0
    shift = 0 if flags & SYN else tcb.rcv_wscale  # a SYN's window is never scaled
    window = wnd >> shift
    if window > 65535:
        window = 65535
    if ack is None:
        ack = tcb.rcv_nxt
    has_ack = flags & ACK
    ack_field = ack if has_ack else 0
    if syn_options or sack or not tcb.ts_ok:
        opening = bool(flags & SYN and not has_ack)  # our own SYN offers everything
        ts = (tcb.tsval(), tcb.ts_recent if has_ack else 0) if (
            tcb.ts_ok or (opening and tcp.rfc1323)) else None
        kwargs: dict[str, Any] = {}
        if syn_options:
            kwargs["mss"] = tcb_offer_mss(tcb)
            if (opening and tcp.rfc1323) or tcb.ws_ok:
                kwargs["wscale"] = tcb.rcv_wscale
            if (opening and tcp.sack_enable) or tcb.sack_ok:
                kwargs["sack_perm"] = True
        if sack:
            kwargs["sack"] = sack
            st.sack_send_blocks += 1
        segment = wtcp.build(tcb.lport, tcb.fport, seq, ack_field, flags, window, data,
                             src=tcb.laddr, dst=tcb.faddr, ts=ts, **kwargs)
        mark = 0
    elif tcb.offload:  # the common case: the timestamp option only, checksum offloaded
        tsval = (tcp.vnet.kernel.sched.now_ns() // MS + tcb.ts_offset) & MASK
        segment = wtcp.build_ts_partial(tcb.lport, tcb.fport, seq, ack_field, flags, window,
                                        data, tsval, tcb.ts_recent if has_ack else 0)
        mark = PARTIAL
    else:  # the same, checksummed here: the interface has -txcsum
        tsval = (tcp.vnet.kernel.sched.now_ns() // MS + tcb.ts_offset) & MASK
        segment = wtcp.build_ts(tcb.lport, tcb.fport, seq, ack_field, flags, window, data,
                                tcb.laddr, tcb.faddr, tsval, tcb.ts_recent if has_ack else 0)
        mark = 0
    # a large (TSO) segment counts as the MSS-sized segments the interface makes of it
    pieces = -(-len(data) // tcb.mss) if len(data) > tcb.mss else 1
    if pieces > 1:
        mark |= LARGE
    st.sndtotal += pieces
    if data:
        if probe:
            pass
        elif 0 < (tcb.snd_max - seq) & MASK < HALF:  # seq_lt(seq, snd_max), inlined:
            # below SND.MAX, a retransmission
            st.sndrexmitpack += pieces
            st.sndrexmitbyte += len(data)
        else:
            st.sndpack += pieces
            st.sndbyte += len(data)
    elif flags & (SYN | FIN | RST):
        st.sndctrl += 1
    else:
        st.sndacks += 1
    if has_ack:
        tcb.rcv_adv = (ack + (window << shift)) & MASK
        tcb.want_ack = False  # a delayed ACK timer still armed finds nothing to do
        tcb.unacked_segs = 0
        delack = tcb.t_delack
        if delack is not None and delack.lazy:
            _withdraw_delack(tcb, delack)
    offl = tcb.offl
    saved, saved_gso = offl.partial, offl.gso
    offl.partial, offl.gso = mark, tcb.mss
    segmented = offl.segmented
    try:
        if tcb.v6:
            tcp.vnet.ip6.output(PROTO_TCP, tcb.laddr, tcb.faddr, segment, hlim=tcb.ip_ttl,
                                ifp=tcb.zone, tclass=tcb.ip_tos,
                                dontfrag=bool(tcp.path_mtu_discovery), fib=tcb.fib)
        else:
            tcp.vnet.ip.output(PROTO_TCP, tcb.laddr, tcb.faddr, segment, ttl=tcb.ip_ttl,
                               tos=tcb.ip_tos, df=bool(tcp.path_mtu_discovery), fib=tcb.fib)
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            raise
        if exc.errno in SOFT_ERRORS:
            tcb.softerror = _soft_error(tcb, exc.errno)
    finally:
        offl.partial, offl.gso = saved, saved_gso
    if pieces > 1:
        tcb.tso = offl.segmented == segmented
        if not tcb.v6:  # the pieces take consecutive IP IDs: the next packet follows them
            ip = tcp.vnet.ip  # (Linux ip_select_ident_segs)
            ip.ident = (ip.ident + pieces - 1) & 0xFFFF


def _withdraw_delack(tcb: Tcb, timer: Timer) -> None:
    """An ACK goes in the instant the delayed-ACK timer was armed (an answer carries the
    ACK of its request): the timer, still outside the heap (lazy), would only fire to
    find nothing to do, so it is withdrawn, kept as `delack_ghost` in case a segment
    comes before it would have fired (input.schedule_ack re-arms it with its key then,
    so timers run in the same order as if it had stayed)."""
    if tcb.tcp.vnet.kernel.sched.withdraw(timer):
        tcb.t_delack = None
        tcb.delack_ghost = (timer.when, timer.seq)


def tso_size(tcb: Tcb) -> int:
    """The payload of the largest segment to hand the route's interface at once: a
    multiple of the MSS up to 64 KB with the headers when it has TSO on (FreeBSD's
    tcp_output with TSO: if_hw_tsomax), else 0. Notes in `tcb.offload` whether the
    interface takes segments without a checksum (txcsum)."""
    tcp = tcb.tcp
    try:
        if tcb.v6:
            caps = tcp.vnet.ip6.route_to(tcb.faddr, tcb.zone, tcb.fib)[0].capenable
            tcb.offload = PARTIAL if caps & IFCAP_TXCSUM_IPV6 else 0
            on = caps & _TSO6 == _TSO6
        else:
            route = None if tcb.fib else tcp.vnet.rt._cache.get(tcb.faddr)  # the common case
            if route is None or route.flags & RTF_REJECT:
                route = tcp.vnet.ip.route_to(tcb.faddr, tcb.fib)
            caps = route.ifp.capenable
            tcb.offload = PARTIAL if caps & IFCAP_TXCSUM else 0
            on = caps & _TSO4 == _TSO4
    except OSError:
        return 0
    if not on:
        return 0
    mss = tcb.mss
    size = (TSO_MAX - TSO_HEADROOM) // mss * mss
    return size if size > mss else 0


def _soft_error(tcb: Tcb, err: int) -> int:
    """ARP gave up on the next hop: EHOSTDOWN for a neighbour, EHOSTUNREACH for a
    gateway (FreeBSD's arpresolve); our ARP says EHOSTDOWN for both."""
    if err == errno.EHOSTDOWN and not tcb.v6:
        with contextlib.suppress(OSError):
            if tcb.tcp.vnet.ip.route_to(tcb.faddr, tcb.fib).flags & RTF_GATEWAY:
                return errno.EHOSTUNREACH
    return err


def ack_now(tcb: Tcb) -> None:
    if tcb.state in (CLOSED, LISTEN, SYN_SENT):
        return
    send_segment(tcb, tcb.snd_nxt, ACK, b"", sack=sack_blocks(tcb))


def output(tcb: Tcb, force_syn: bool = False, limited_transmit: bool = False) -> None:
    """Send what the windows allow: SYN, data, FIN, or a pending ACK (tcp_output)."""
    state = tcb.state
    if state in (CLOSED, LISTEN, TIME_WAIT):
        return
    if state in (SYN_SENT, SYN_RECEIVED):
        if tcb.snd_nxt == tcb.iss or force_syn:
            flags = SYN if state == SYN_SENT else SYN | ACK
            send_segment(tcb, tcb.iss, flags, b"", syn_options=True)
            # time the SYN (or SYN-ACK) for a first RTT sample without timestamps
            # (RFC 6298); a second transmission of the ISS cannot be timed (Karn)
            if force_syn or tcb.rtt_seq is not None:
                tcb.rtt_seq = None
            else:
                tcb.rtt_seq, tcb.rtt_start = tcb.iss, tcb.now()
                tcb.tcp.stats.segstimed += 1  # tcp_output.c: tcps_segstimed
            tcb.snd_nxt = (tcb.iss + 1) & MASK
            if seq_lt(tcb.snd_max, tcb.snd_nxt):
                tcb.snd_max = tcb.snd_nxt
            if tcb.t_main is None or tcb.t_main.callback is not rexmt_timeout:
                set_main(tcb, tcb.rto, rexmt_timeout)
        return
    snd_buf = tcb.snd_buf
    if tcb.recovery and tcb.sack_ok:
        if tcb.snd_una == tcb.snd_max and snd_buf:  # resuming after idle (RFC 5681 §4.1)
            tcb.cc.on_idle(tcb.now(), tcb.rto)
        sent = sack_output(tcb)
    elif snd_buf:  # (with nothing queued, send_new_data has nothing to send)
        if tcb.snd_una == tcb.snd_max:  # resuming after idle (RFC 5681 §4.1)
            tcb.cc.on_idle(tcb.tcp.vnet.kernel.sched.now_ns(), tcb.rto)
        # 0 <= seq_diff(SND.NXT, the buffer's start) < its length, inlined (a buffer is
        # far shorter than half the sequence space)
        if (tcb.snd_nxt - tcb.snd_buf_seq) & MASK < len(snd_buf) or not tcb.snd_wnd:
            sent = send_new_data(tcb, limited_transmit)
        else:
            sent = False  # nothing new to send
    else:
        sent = False
    # FIN
    if tcb.shut_wr and tcb.fin_seq is None and state in (ESTABLISHED, CLOSE_WAIT):
        fin = (tcb.snd_buf_seq + len(tcb.snd_buf)) & MASK
        if tcb.snd_nxt == fin:
            tcb.fin_seq = fin
            tcb.state = FIN_WAIT_1 if state == ESTABLISHED else LAST_ACK
    if tcb.fin_seq is not None and tcb.snd_nxt == tcb.fin_seq:
        send_segment(tcb, tcb.fin_seq, FIN | ACK, b"")
        tcb.snd_nxt = (tcb.fin_seq + 1) & MASK
        if seq_lt(tcb.snd_max, tcb.snd_nxt):
            tcb.snd_max = tcb.snd_nxt
        if tcb.t_main is None or tcb.t_main.callback is not rexmt_timeout:
            set_main(tcb, tcb.rto, rexmt_timeout)
        sent = True
    if sent:
        return
    # a window update worth telling (receiver SWS avoidance, RFC 9293 §3.8.6.2.2); the
    # arithmetic of rcv_wnd() and seq_diff inlined: this runs after every segment
    rcv_space = tcb.rcv_space
    wnd = rcv_space - len(tcb.rcv_buf)
    if wnd < 0:
        wnd = 0
    elif wnd > 65535 << tcb.rcv_wscale:
        wnd = 65535 << tcb.rcv_wscale  # what the header can carry
    adv_room = (tcb.rcv_nxt + wnd - tcb.rcv_adv) & MASK
    if adv_room >= HALF:
        adv_room -= 1 << 32
    if adv_room >= min(2 * tcb.mss, rcv_space // 2):
        tcb.tcp.stats.sndwinup += 1
        tcb.want_ack = True
        tcb.unacked_segs = 2
    if tcb.want_ack and (tcb.unacked_segs >= 2 or not tcb.tcp.delayed_ack):
        ack_now(tcb)


def send_new_data(tcb: Tcb, limited_transmit: bool) -> bool:
    """Send new data as the windows, silly window avoidance and Nagle allow.

    SACKed bytes have left the network: they do not count against the congestion
    window (RFC 6675's pipe outside recovery), which lets the first duplicate ACKs
    clock out new segments (limited transmit, RFC 3042). Resending from SND.UNA after
    a timeout skips what the receiver SACKed since (RFC 6675 §5.1).
    """
    sent = False
    mss = tcb.mss
    # a queue of at most one segment (a request, an answer) needs no TSO size, and the
    # route need not be looked up again while `tcb.offload` says PARTIAL: a mark left
    # set on a route that no longer offloads costs a fill on the way out, never a
    # missing checksum (vimage.net.offload), and gives the same bytes
    tso = tso_size(tcb) if not tcb.offload or len(tcb.snd_buf) > mss else 0
    while True:
        hole = 0
        sacked = 0
        if tcb.sacked:
            sacked, hole = sacked_below(tcb)
        offset = (tcb.snd_nxt - tcb.snd_buf_seq) & MASK
        rest = offset < HALF and not hole  # sending `pending` empties the queue
        if offset >= HALF:
            offset = 0
        pending = len(tcb.snd_buf) - offset
        if hole:
            pending = min(pending, hole)
        if pending <= 0:
            break
        window = min(tcb.snd_wnd, tcb.cc.cwnd)
        if limited_transmit:
            window = tcb.snd_wnd
            limited_transmit = False
        flight = ((tcb.snd_nxt - tcb.snd_una) & MASK) - sacked
        usable = window - flight
        if tcb.snd_wnd == 0:
            if tcb.in_flight() == 0 and (tcb.t_main is None
                                         or tcb.t_main.callback is not persist_timeout):
                set_main(tcb, max(tcb.rto, tcb.tcp.rexmit_min * MS), persist_timeout)
            break
        if usable <= 0:
            break
        if tso:  # one large segment of whole MSS-sized pieces; a short tail goes on its
            # own, by the rules below (Nagle, silly window), as it would without TSO
            length = min(tso, pending, usable)
            if length > mss:
                length -= length % mss
        else:
            length = min(mss, pending, usable)
        if length < mss and length < pending and length < tcb.snd_wnd // 2:
            # wait for a full segment's worth of window (silly window avoidance), unless
            # half the peer's window can go: a window below one MSS must not stall us
            break
        if length < mss and not tcb.nodelay and flight and not tcb.shut_wr:
            break  # Nagle (RFC 896): one small segment in flight at a time
        if not send_data(tcb, tcb.snd_nxt, length):
            if tcb.mss < mss:
                mss = tcb.mss
                tso = tso_size(tcb)
                continue  # the MSS shrank to the interface's MTU: try again
            break
        sent = True
        if rest and length == pending:
            break  # all sent (a request, an answer): the next turn would find nothing
    return sent


def sack_output(tcb: Tcb) -> bool:
    """RFC 6675 §5 step (C): send while cwnd - pipe allows a full segment."""
    st = tcb.tcp.stats
    pipe = set_pipe(tcb)
    sent = False
    while tcb.cc.cwnd - pipe >= tcb.mss:
        nxt = next_seg(tcb)
        if nxt is None:
            break
        seq, length, rule = nxt
        if not send_data(tcb, seq, length, rexmit=rule != 2):
            break
        if rule != 2:
            st.sack_rexmits += 1
            st.sack_rexmit_bytes += length
            if rule == 4:
                tcb.rescue_rxt = tcb.recover  # one rescue per recovery; HighRxt stays
            else:
                tcb.rexmt_high = (seq + length) & MASK
        pipe += length
        sent = True
    return sent


def send_data(tcb: Tcb, seq: int, length: int, rexmit: bool = False) -> bool:
    """Send `length` bytes of the buffer starting at sequence number `seq`."""
    offset = (seq - tcb.snd_buf_seq) & MASK
    if offset >= HALF or offset >= len(tcb.snd_buf):
        return False
    data = tcb.snd_buf[offset:offset + length]  # (a copy: the buffer may change later)
    if not data:
        return False
    end = (seq + len(data)) & MASK
    flags = ACK
    if end == (tcb.snd_buf_seq + len(tcb.snd_buf)) & MASK:
        flags |= PSH
    fin_now = tcb.fin_seq is not None and end == tcb.fin_seq and tcb.fin_seq == (
        tcb.snd_buf_seq + len(tcb.snd_buf)) & MASK and rexmit
    if fin_now:
        flags |= FIN
    try:
        send_segment(tcb, seq, flags, data)
    except OSError:  # EMSGSIZE: DF is set and the interface's MTU shrank below our MSS
        mss = tcb_offer_mss(tcb) - (12 if tcb.ts_ok else 0)
        if 64 <= mss < tcb.mss:
            tcb.mss = mss
            tcb.cc.set_mss(mss)
            tcb.tcp.stats.pmtud_updates += 1
        return False
    snd_max = tcb.snd_max
    if 0 < (snd_max - seq) & MASK < HALF:  # seq_lt(seq, SND.MAX), inlined: a retransmission
        if tcb.rtt_seq is not None and seq_leq(seq, tcb.rtt_seq):  # (counted by send_segment)
            tcb.rtt_seq = None  # Karn: never time a retransmitted segment
    elif tcb.rtt_seq is None and not tcb.ts_ok:
        tcb.rtt_seq, tcb.rtt_start = seq, tcb.now()
        tcb.tcp.stats.segstimed += 1
    if not rexmit:
        tcb.snd_nxt = end
    if 0 < (end - snd_max) & MASK < HALF:  # seq_lt(SND.MAX, end)
        tcb.snd_max = end
    if tcb.t_main is None or tcb.t_main.callback is not rexmt_timeout:
        set_main(tcb, tcb.rto, rexmt_timeout)
    return True


def offer_mss(tcp: TcpState, faddr: int) -> int:
    """The MSS we can receive from `faddr`: the outgoing interface's MTU minus 40."""
    try:
        route = tcp.vnet.ip.route_to(faddr)
    except OSError:
        return tcp.mssdflt
    mtu = route.mtu or route.ifp.mtu
    return max(mtu - 40, 64)


def offer_mss6(tcp: TcpState, faddr: int, zone: Ifnet | None, fib: int = 0) -> int:
    """The MSS we can receive from `faddr` over IPv6: the path MTU less 60 (FreeBSD
    tcp_maxmtu6)."""
    ip6 = tcp.vnet.ip6
    try:
        ifp, _, route = ip6.route_to(faddr, zone, fib)
    except OSError:
        return tcp.mssdflt
    mtu = (route.mtu if route is not None and route.mtu else 0) or ifp.mtu
    if ip6.pmtu:
        mtu = ip6.path_mtu(faddr, mtu)
    return max(mtu - IP6_TCP_HDRS, 64)


def tcb_offer_mss(tcb: Tcb) -> int:
    if tcb.v6:
        return offer_mss6(tcb.tcp, tcb.faddr, tcb.zone, tcb.fib)
    return offer_mss(tcb.tcp, tcb.faddr)


def respond_rst(tcp: TcpState, seg: wtcp.TcpRepr, src: int, dst: int,
                v6: bool = False, zone: Ifnet | None = None) -> None:
    """RFC 9293 §3.10.7.1: answer a segment for no connection with a reset (FreeBSD
    tcp_dropwithreset and tcp_respond); over IPv6 if `v6` (`zone`: a link-local peer's
    interface)."""
    if seg.flags & RST or tcp.blackhole:
        return
    seglen = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
    if seg.flags & ACK:
        seq, ack, flags = seg.ack, 0, RST
    else:
        seq, ack, flags = 0, (seg.seq + seglen) & MASK, RST | ACK
    segment = wtcp.build(seg.dport, seg.sport, seq, ack, flags, 0, b"", src=dst, dst=src)
    tcp.stats.resets_sent += 1
    tcp.stats.sndtotal += 1
    tcp.stats.sndctrl += 1
    with contextlib.suppress(OSError):
        if v6:
            tcp.vnet.ip6.output(PROTO_TCP, dst, src, segment, ifp=zone)
            return
        tcp.vnet.ip.output(PROTO_TCP, dst, src, segment, df=bool(tcp.path_mtu_discovery))
