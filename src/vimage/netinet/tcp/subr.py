"""TCP's common routines (FreeBSD tcp_subr.c): a connection's start (ISS, timestamp
offset, negotiated options and MSS) and end (drop, close), the handshake's
completion, ICMP errors (tcp_ctlinput), and the per-vnet attach and detach."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.netinet.icmp import quoted_ports
from vimage.netinet.tcp.output import IP6_TCP_HDRS, output, send_segment, tcb_offer_mss
from vimage.netinet.tcp.seq import MASK, seq_leq, seq_lt
from vimage.netinet.tcp.timer import arm_keepalive, cancel_all, cancel_main
from vimage.netinet.tcp.var import (
    ACK,
    CLOSED,
    DEFAULT_MSS,
    ESTABLISHED,
    LISTEN,
    RST,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    TcpState,
    wscale_for,
)
from vimage.wire import icmp as wicmp
from vimage.wire import icmp6 as wicmp6
from vimage.wire.ipv6 import MIN_MTU

if TYPE_CHECKING:
    from vimage.netinet.tcp.var import Tcb
    from vimage.vnet import Vnet
    from vimage.wire import tcp as wtcp


# -- a connection's start ------------------------------------------------------------------------
def new_iss(tcb: Tcb) -> int:
    """RFC 6528: a keyed hash of the 4-tuple plus a 4 µs clock; the key is this
    vnet's secret, so another vnet learns nothing of our sequence space."""
    return (tcb.tcp.keyed_hash(repr(tcb.key).encode()) + tcb.now() // 4000) & MASK


def ts_offset(tcp: TcpState, key: tuple[int, int, int, int]) -> int:
    """The timestamp clock's offset for one connection: a keyed hash of its 4-tuple
    (RFC 7323 §7.1, FreeBSD tcp_new_ts_offset), so timestamps reveal neither our
    uptime nor another connection's clock."""
    return tcp.keyed_hash(repr(key).encode(), b"tsoffset")


def set_iss(tcb: Tcb, iss: int) -> None:
    """Our initial sequence number: the send sequence variables start from it. The
    timestamp offset is fixed at the same time (see ts_offset)."""
    tcb.iss = iss
    tcb.ts_offset = ts_offset(tcb.tcp, tcb.key)
    tcb.snd_una = tcb.snd_nxt = tcb.snd_max = iss
    tcb.snd_buf_seq = (iss + 1) & MASK
    tcb.recover = tcb.rexmt_high = iss


def take_syn_options(tcb: Tcb, seg: wtcp.TcpRepr) -> None:
    """The options of the peer's SYN decide what the connection uses (FreeBSD
    tcp_dooptions and syncache_add): MSS, window scaling, timestamps, SACK."""
    tcp = tcb.tcp
    opts = seg.options
    tcb.peer_mss = opts.mss if opts.mss else DEFAULT_MSS
    tcb.ws_ok = bool(tcp.rfc1323 and opts.wscale is not None)
    if tcb.ws_ok:
        tcb.snd_wscale = opts.wscale
        tcb.rcv_wscale = wscale_for(tcb.rcv_space)
    else:
        tcb.snd_wscale = tcb.rcv_wscale = 0
    if tcp.rfc1323 and opts.ts is not None:
        tcb.ts_ok = True
        tcb.ts_recent = opts.ts[0]
    tcb.sack_ok = bool(tcp.sack_enable and opts.sack_perm)
    set_mss(tcb)


def set_mss(tcb: Tcb) -> None:
    """The MSS from the peer's offer, floored at net.inet.tcp.minmss so a tiny offer
    cannot make us send a flood of tiny segments (FreeBSD tcp_mss_update), and our
    own interface's MTU."""
    mss = min(max(tcb.peer_mss, tcb.tcp.minmss), tcb_offer_mss(tcb))
    if tcb.ts_ok:
        mss -= 12
    tcb.mss = max(mss, 64)
    tcb.cc.set_mss(tcb.mss)


def established(tcb: Tcb) -> None:
    """The handshake is complete: wake the connector, queue for accept()."""
    st = tcb.tcp.stats
    st.connects += 1
    cancel_main(tcb)
    tcb.rexmt_shift = 0
    if tcb.sc_bucket >= 0:
        from vimage.netinet.tcp.syncache import syncache_remove  # above us: see timer.py

        st.sc_completed += 1
        syncache_remove(tcb)
    listener = tcb.listener
    if listener is not None and tcb.sock is None:
        listener.syn_q -= 1
        if listener.state == LISTEN and listener.accept_q is not None:
            listener.accept_q.append(tcb)
            st.accepts += 1
            listener.notify()
        else:
            drop(tcb, errno.ECONNABORTED, send_rst=True)
            return
    tcb.rcv_time = tcb.now()
    if tcb.t_keep is not None:  # keepinit
        tcb.t_keep.cancel()
        tcb.t_keep = None
    if tcb.keepalive:
        arm_keepalive(tcb)
    tcb.notify()


# -- a connection's end --------------------------------------------------------------------------
def detach(tcb: Tcb) -> None:
    """Forget a connection for good (CLOSED; FreeBSD tcp_close)."""
    tcp = tcb.tcp
    cancel_all(tcb)
    if tcb.state == LISTEN:
        socks = tcp.listeners.get(tcb.lport)
        if socks and tcb in socks:
            socks.remove(tcb)
            if not socks:
                del tcp.listeners[tcb.lport]
        for child in tcb.accept_q or ():
            drop(child, errno.ECONNABORTED, send_rst=True)
    elif tcp.conns.get(tcb.key) is tcb:
        del tcp.conns[tcb.key]
    if tcb.listener is not None and tcb.state == SYN_RECEIVED:
        tcb.listener.syn_q -= 1
    if tcb.sc_bucket >= 0:
        from vimage.netinet.tcp.syncache import syncache_remove  # above us: see timer.py

        syncache_remove(tcb)
    tcb.state = CLOSED
    tcb.notify()


def drop(tcb: Tcb, err: int, send_rst: bool = False) -> None:
    """Abort a connection with `err` for its socket (RST sent if asked).

    A timeout reports the last soft error instead, as FreeBSD's tcp_drop: a connect
    to a host whose ARP entry is down fails with EHOSTDOWN, not ETIMEDOUT.
    """
    st = tcb.tcp.stats
    if err == errno.ETIMEDOUT and tcb.softerror:
        err = tcb.softerror
    if send_rst and tcb.state not in (CLOSED, LISTEN, SYN_SENT, TIME_WAIT):
        send_segment(tcb, tcb.snd_nxt, RST | ACK, b"", ack=tcb.rcv_nxt)
        st.resets_sent += 1
    if tcb.state in (SYN_SENT, SYN_RECEIVED):
        st.conndrops += 1
    else:
        st.drops += 1
    tcb.so_error = err
    detach(tcb)


# -- ICMP errors ---------------------------------------------------------------------------------
def tcp_ctlinput(tcp: TcpState, type_: int, code: int, src: int, dst: int, sport: int,
                 dport: int, seq: int, mtu: int) -> None:
    """An ICMP error about one of our segments (FreeBSD tcp_ctlinput)."""
    tcb = tcp.conns.get((src, sport, dst, dport))
    if tcb is None or not (seq_leq(tcb.snd_una, seq) and seq_lt(seq, tcb.snd_max)):
        return  # RFC 5927: the quoted sequence number must be in flight
    if type_ == wicmp.UNREACH and code == wicmp.UNREACH_NEEDFRAG and mtu:
        # FreeBSD tcp_ctlinput: the MTU is never taken below minmss + 40 bytes of headers
        mtu = max(mtu, tcp.minmss + 40)
        new_mss = mtu - 40 - (12 if tcb.ts_ok else 0)
        if 64 <= new_mss < tcb.mss:
            tcb.mss = new_mss
            tcb.cc.set_mss(new_mss)
            tcp.stats.pmtud_updates += 1
            tcb.snd_nxt = tcb.snd_una  # resend what was too big
            output(tcb)
        return
    if type_ == wicmp.UNREACH:
        refused = code in (wicmp.UNREACH_PROTOCOL, wicmp.UNREACH_PORT)
        if refused and tcb.state == SYN_SENT:  # FreeBSD's icmp_may_rst
            drop(tcb, errno.ECONNREFUSED)
            return
        notify_error(tcb, errno.ECONNREFUSED if refused else errno.EHOSTUNREACH)
    elif type_ == wicmp.TIMXCEED:
        notify_error(tcb, errno.EHOSTUNREACH)


def notify_error(tcb: Tcb, err: int) -> None:
    """An ICMP error for a connection (FreeBSD tcp_notify): unreachability is ignored
    while established; a connection being set up that has retransmitted more than 3
    times gives up on a second error; otherwise it is a soft error."""
    if tcb.state == ESTABLISHED and err in (errno.EHOSTUNREACH, errno.ENETUNREACH,
                                            errno.EHOSTDOWN):
        return
    if tcb.state in (SYN_SENT, SYN_RECEIVED) and tcb.rexmt_shift > 3 and tcb.softerror:
        drop(tcb, err)
    else:
        tcb.softerror = err


def tcp_ctlinput_quoted(tcp: TcpState, type_: int, code: int, quoted: bytes,
                        rest: int) -> None:
    """The protocol switch's ctlinput for TCP: an ICMP error quoting one of our segments
    (its IP header and at least 8 bytes, checked by ICMP): the connection, the quoted
    sequence number, and for "fragmentation needed" the next-hop MTU in `rest`."""
    qhlen = (quoted[0] & 0x0F) << 2
    seq = int.from_bytes(quoted[qhlen + 4:qhlen + 8], "big")
    tcp_ctlinput(tcp, type_, code, *quoted_ports(quoted), seq, rest & 0xFFFF)


def tcp6_ctlinput(tcp: TcpState, type_: int, code: int, quoted: bytes, rest: int) -> None:
    """tcp6_ctlinput: an ICMPv6 error quoting one of our segments (`quoted` starts at its
    IPv6 header): packet too big lowers the MSS to the path MTU less 60 (RFC 8201, as
    FreeBSD's tcp_mtudisc), unreachable errors as IPv4's (icmp6_errmap)."""
    if len(quoted) < 48:
        return
    src = int.from_bytes(quoted[8:24], "big")
    dst = int.from_bytes(quoted[24:40], "big")
    sport = (quoted[40] << 8) | quoted[41]
    dport = (quoted[42] << 8) | quoted[43]
    seq = int.from_bytes(quoted[44:48], "big")
    tcb = tcp.conns.get((src, sport, dst, dport))
    if tcb is None or not tcb.v6 or not (seq_leq(tcb.snd_una, seq)
                                         and seq_lt(seq, tcb.snd_max)):
        return
    if type_ == wicmp6.PACKET_TOO_BIG:
        mtu = max(rest, MIN_MTU, tcp.minmss + IP6_TCP_HDRS)
        new_mss = mtu - IP6_TCP_HDRS - (12 if tcb.ts_ok else 0)
        if 64 <= new_mss < tcb.mss:
            tcb.mss = new_mss
            tcb.cc.set_mss(new_mss)
            tcp.stats.pmtud_updates += 1
            tcb.snd_nxt = tcb.snd_una  # resend what was too big
            output(tcb)
        return
    if type_ == wicmp6.DST_UNREACH or (type_ == wicmp6.PARAM_PROB
                                       and code == wicmp6.PARAMPROB_NEXTHEADER):
        refused = type_ == wicmp6.PARAM_PROB or code in (wicmp6.UNREACH_NOPORT,
                                                         wicmp6.UNREACH_ADMIN)
        if refused and tcb.state == SYN_SENT:
            drop(tcb, errno.ECONNREFUSED)
            return
        notify_error(tcb, errno.ECONNREFUSED if refused else errno.EHOSTUNREACH)
    elif type_ == wicmp6.TIME_EXCEEDED:
        notify_error(tcb, errno.EHOSTUNREACH)


# -- per vnet ------------------------------------------------------------------------------------
def vnet_attach(vnet: Vnet) -> None:
    vnet.tcp = TcpState(vnet)


def tcp6_attach(vnet: Vnet) -> None:
    """TCP over IPv6 shares IPv4's state: one connection table (128-bit addresses for
    IPv6 connections, `Tcb.v6`), one port space and one set of counters, as FreeBSD's
    tcbinfo and tcpstat."""
    vnet.tcp6 = vnet.tcp


def tcp6_detach(vnet: Vnet) -> None:
    vnet.__dict__.pop("tcp6", None)


def vnet_detach(vnet: Vnet) -> None:
    """The vnet goes: every connection is gone at once, sockets closed, no segment sent."""
    tcp = vnet.tcp
    for tcb in tcp.tcbs():
        if tcb.sock is not None:
            tcb.sock.closed = True
        cancel_all(tcb)
        tcb.state = CLOSED
    tcp.conns.clear()
    tcp.listeners.clear()
    tcp.syncache.clear()
    tcp.syncache_overflow.clear()
    tcp.syncache_count = 0
