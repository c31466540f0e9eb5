"""TCP timers (FreeBSD tcp_timer.c): retransmission (RFC 6298), persist, delayed ACK,
keepalive, FIN_WAIT_2 and TIME_WAIT (2MSL).

A connection has three timers: `t_main` holds the one of retransmit, persist, 2MSL
or FIN_WAIT_2 that applies (they never run together), `t_delack` and `t_keep`. A
Timer holds the function and the tcb; the functions take the tcb, as everywhere.

Modules import only the ones below them (seq, cc < var < reass < sack < timer <
output < subr < syncache < input < usrreq). The timeouts call output and drop the
connection, above: they import those inside, after the early returns, so the cost
(about a microsecond) is paid on an actual timeout, never on a timer that finds
nothing to do.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from vimage.netinet.tcp.seq import MASK, seq_lt
from vimage.netinet.tcp.var import (
    ACK,
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN,
    FIN_WAIT_1,
    FIN_WAIT_2,
    MAX_REXMT,
    MAX_RTO_NS,
    MAX_SYN_REXMT,
    MS,
    SYN_RECEIVED,
    SYN_SENT,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from vimage.netinet.tcp.var import Tcb


def set_main(tcb: Tcb, delay_ns: int, callback: Any) -> None:
    """Arm the main timer. Restarting the retransmission timer later than it is armed
    (every ACK does) only moves `main_due`: the timer fires early, sees it, and waits
    for the rest; the timer heap sees one timer per RTO instead of one per ACK."""
    sched = tcb.tcp.vnet.kernel.sched
    due = sched.now_ns() + delay_ns
    tcb.main_due = due
    timer = tcb.t_main
    if timer is not None:
        if callback is rexmt_timeout and timer.callback is callback and timer.when <= due:
            return
        timer.cancel()
    # lazily pushed (Scheduler.call_later_lazy): the retransmission timer of a request is
    # mostly cancelled by its answer within the same instant
    tcb.t_main = sched.call_later_lazy(delay_ns, callback, tcb, owner=tcb.tcp.vnet)


def cancel_main(tcb: Tcb) -> None:
    if tcb.t_main is not None:
        tcb.t_main.cancel()
        tcb.t_main = None


def cancel_all(tcb: Tcb) -> None:
    for name in ("t_main", "t_delack", "t_keep"):
        timer = getattr(tcb, name)
        if timer is not None:
            timer.cancel()
            setattr(tcb, name, None)
    tcb.delack_ghost = None


def rexmt_timeout(tcb: Tcb) -> None:
    tcp = tcb.tcp
    st = tcp.stats
    tcb.t_main = None
    if tcb.state == CLOSED:
        return
    early = tcb.main_due - tcb.now()
    if early > 0:  # restarted since it was armed (see set_main): wait for the rest
        tcb.t_main = tcp.vnet.kernel.sched.call_later(early, rexmt_timeout, tcb,
                                                      owner=tcp.vnet)
        return
    from vimage.netinet.tcp.output import output, send_data, send_segment
    from vimage.netinet.tcp.subr import detach, drop

    st.rexmttimeo += 1
    tcb.rexmt_shift += 1
    if tcb.sc_bucket >= 0:  # a syncache entry (FreeBSD syncache_timer): 1, 2, 4, 8 s
        if tcb.rexmt_shift > tcp.syncache_rexmtlimit:
            st.sc_stale += 1
            detach(tcb)  # silently: the peer may never have sent the SYN
            return
        st.sc_retransmitted += 1
    limit = MAX_SYN_REXMT if tcb.state in (SYN_SENT, SYN_RECEIVED) else MAX_REXMT
    if tcb.rexmt_shift > limit:
        st.timeoutdrop += 1
        drop(tcb, errno.ETIMEDOUT, send_rst=True)
        return
    tcb.rto = min(tcb.rto * 2, MAX_RTO_NS)
    if tcb.rexmt_shift > MAX_REXMT // 4:
        _losing(tcb)
    if tcb.state in (SYN_SENT, SYN_RECEIVED):
        output(tcb, force_syn=True)
        set_main(tcb, tcb.rto, rexmt_timeout)
        return
    # RFC 6298 5.4-5.6 and RFC 5681: collapse the window, go back to SND.UNA
    tcb.cc.on_timeout(tcb.now(), tcb.in_flight())
    tcb.recovery = False
    tcb.recover = tcb.snd_max  # no fast retransmit for what was sent before (RFC 6582)
    tcb.rescue_rxt = None
    tcb.dupacks = 0
    tcb.sacked = []  # the receiver may have reneged (RFC 2018 §8)
    tcb.rtt_seq = None
    tcb.snd_nxt = tcb.snd_una
    set_main(tcb, tcb.rto, rexmt_timeout)
    if tcb.fin_seq is not None and tcb.snd_una == tcb.fin_seq:
        send_segment(tcb, tcb.fin_seq, FIN | ACK, b"")
        tcb.snd_nxt = (tcb.fin_seq + 1) & MASK
        return
    if tcb.snd_buf:
        send_data(tcb, tcb.snd_una, tcb.mss)
    output(tcb)


def _losing(tcb: Tcb) -> None:
    """FreeBSD in_losing(): many retransmissions, so routing sockets hear RTM_LOSING for
    the route in use (a routing daemon may find a better one)."""
    from vimage.net import rtsock

    vnet = tcb.tcp.vnet
    if tcb.v6 or not rtsock.listening(vnet):
        return
    route = vnet.route.tables[tcb.fib].lookup(tcb.faddr)
    if route is not None:
        rtsock.losing(vnet, route)


def persist_timeout(tcb: Tcb) -> None:
    """Zero window: probe with one byte beyond it (RFC 9293 §3.8.6.1)."""
    tcp = tcb.tcp
    tcb.t_main = None
    if tcb.state == CLOSED or tcb.snd_wnd:
        return
    from vimage.netinet.tcp.output import send_segment

    tcp.stats.persisttimeo += 1
    tcp.stats.sndprobe += 1
    offset = (tcb.snd_nxt - tcb.snd_buf_seq) & MASK
    if offset < len(tcb.snd_buf):
        send_segment(tcb, tcb.snd_nxt, ACK,
                                bytes(tcb.snd_buf[offset:offset + 1]), probe=True)
        end = (tcb.snd_nxt + 1) & MASK
        if seq_lt(tcb.snd_max, end):
            tcb.snd_max = end  # the peer may keep the byte: its ACK must be acceptable
    tcb.rexmt_shift = min(tcb.rexmt_shift + 1, MAX_REXMT)
    delay = min(max(tcb.rto, tcp.rexmit_min * MS) << min(tcb.rexmt_shift, 6), MAX_RTO_NS)
    set_main(tcb, delay, persist_timeout)


def delack_timeout(tcb: Tcb, ack_now: Callable[[Tcb], None] | None = None) -> None:
    """The delayed ACK is due. `ack_now` is output.ack_now, passed by the input code that
    armed the timer (it is above this module): importing it here on every delayed ACK
    cost about a microsecond."""
    tcb.t_delack = None
    if not tcb.want_ack or tcb.state == CLOSED:
        return
    tcp = tcb.tcp
    sched = tcp.vnet.kernel.sched
    early = tcb.delack_due - sched.now_ns()
    if early > 0:
        tcb.t_delack = sched.call_later(early, delack_timeout, tcb, ack_now, owner=tcp.vnet)
        return
    tcp.stats.delack += 1
    if ack_now is not None:
        ack_now(tcb)
        return
    from vimage.netinet.tcp.output import ack_now as send

    send(tcb)


def arm_2msl(tcb: Tcb) -> None:
    """TIME_WAIT lasts twice the maximum segment lifetime."""
    set_main(tcb, 2 * tcb.tcp.msl * MS, close_timeout)


def arm_finwait2(tcb: Tcb) -> None:
    """A closed socket's connection waits in FIN_WAIT_2 this long for the peer's FIN."""
    set_main(tcb, tcb.tcp.finwait2_timeout * MS, close_timeout)


def close_timeout(tcb: Tcb) -> None:
    """TIME_WAIT over, or a closed socket's FIN_WAIT_2 has waited long enough."""
    from vimage.netinet.tcp.subr import detach

    tcb.t_main = None
    if tcb.state == FIN_WAIT_2:
        tcb.tcp.stats.closed += 1
    detach(tcb)


def arm_keepalive(tcb: Tcb, delay_ms: int | None = None) -> None:
    """Start the keepalive timer: keepidle, or `delay_ms` (keepinit while connecting)."""
    if tcb.t_keep is not None:
        tcb.t_keep.cancel()
    tcb.keep_probes = 0
    tcp = tcb.tcp
    delay = tcp.keepidle if delay_ms is None else delay_ms
    tcb.t_keep = tcp.vnet.kernel.sched.call_later(delay * MS, keep_timeout, tcb,
                                                  owner=tcp.vnet)


def keep_timeout(tcb: Tcb) -> None:
    from vimage.netinet.tcp.output import send_segment
    from vimage.netinet.tcp.subr import drop

    tcp = tcb.tcp
    tcb.t_keep = None
    if tcb.state in (SYN_SENT, SYN_RECEIVED):  # keepinit: the connection took too long
        tcp.stats.keeptimeo += 1
        drop(tcb, errno.ETIMEDOUT)
        return
    if tcb.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2, CLOSING) \
            or not tcb.keepalive:
        return
    idle = tcb.now() - tcb.rcv_time
    if idle < tcp.keepidle * MS:  # the peer spoke (or answered a probe) since: wait again
        tcb.keep_probes = 0
        tcb.t_keep = tcp.vnet.kernel.sched.call_later(tcp.keepidle * MS - idle, keep_timeout,
                                                      tcb, owner=tcp.vnet)
        return
    tcp.stats.keeptimeo += 1
    if tcb.keep_probes >= tcp.keepcnt:
        tcp.stats.keepdrops += 1
        drop(tcb, errno.ETIMEDOUT, send_rst=True)
        return
    tcb.keep_probes += 1
    tcp.stats.keepprobe += 1
    # a probe: an old sequence number that forces the peer to ACK (RFC 1122 4.2.3.6)
    send_segment(tcb, (tcb.snd_una - 1) & MASK, ACK, b"")
    tcb.t_keep = tcp.vnet.kernel.sched.call_later(tcp.keepintvl * MS, keep_timeout, tcb,
                                                  owner=tcp.vnet)
