"""TCP (RFC 9293) for one vnet: the connection table, input, output and timers.

The engine follows the order of RFC 9293 §3.10.7 ("SEGMENT ARRIVES") and FreeBSD's
tcp_input.c: find the connection, handle LISTEN and SYN-SENT, then check the
sequence number, RST (RFC 5961 challenge ACKs), SYN, ACK, data and FIN.

Options: MSS, window scaling and timestamps (RFC 7323), SACK (RFC 2018) with
SACK-based recovery in the spirit of RFC 6675. Timers: retransmission (RFC 6298),
persist, delayed ACK, keepalive, FIN_WAIT_2 and TIME_WAIT. Congestion control is
pluggable (`tcp_cc`, NewReno or CUBIC per `net.inet.tcp.cc.algorithm`).

Sequence numbers are plain ints modulo 2**32; `_lt(a, b)` and friends compare
them in sequence space.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import weakref
from typing import TYPE_CHECKING, Any

from vimage.netinet import icmp as icmp_mod
from vimage.netinet.in_ import INADDR_BROADCAST, is_multicast
from vimage.netinet.tcp_cc import create as create_cc
from vimage.sched import NS_PER_S, Timer
from vimage.stats import counters
from vimage.sysctl import Oid
from vimage.wire import WireError
from vimage.wire import tcp as wtcp

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.socket.tcp_socket import TcpSocket
    from vimage.vnet import Vnet

PROTO_TCP = 6
FIN, SYN, RST, PSH, ACK, URG = wtcp.FIN, wtcp.SYN, wtcp.RST, wtcp.PSH, wtcp.ACK, wtcp.URG
MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31
MS = 1_000_000  # ns per ms
DEFAULT_MSS = 536
MAX_WSCALE = 14
MAX_RTO_NS = 64 * NS_PER_S
MAX_REXMT = 12  # retransmissions before the connection is dropped (FreeBSD TCP_MAXRXTSHIFT)
MAX_SYN_REXMT = 6

# states, FreeBSD's names and order
CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, \
    LAST_ACK, FIN_WAIT_2, TIME_WAIT = range(11)
STATE_NAMES: tuple[str, ...] = (
    "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1",
    "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT",
)

SYSCTLS: tuple[Oid, ...] = (
    Oid("net.inet.tcp.cc.algorithm", "tcp", "cc_algorithm",
        "Default congestion control algorithm", choices=("cubic", "newreno")),
    Oid("net.inet.tcp.rexmit_min", "tcp", "rexmit_min", "Minimum retransmission timeout (ms)",
        1, 60_000),
    Oid("net.inet.tcp.rexmit_slop", "tcp", "rexmit_slop",
        "Retransmission timer slop (ms), added to the RTO: above the peer's delayed ACK",
        0, 60_000),
    Oid("net.inet.tcp.rexmit_initial", "tcp", "rexmit_initial",
        "Initial retransmission timeout (ms)", 1, 60_000),
    Oid("net.inet.tcp.delayed_ack", "tcp", "delayed_ack", "Delay ACK to try and piggyback it",
        0, 1),
    Oid("net.inet.tcp.delacktime", "tcp", "delacktime", "Time before a delayed ACK is sent (ms)",
        1, 1000),
    Oid("net.inet.tcp.msl", "tcp", "msl", "Maximum segment lifetime (ms); TIME_WAIT is 2*MSL",
        1, 600_000),
    Oid("net.inet.tcp.keepidle", "tcp", "keepidle",
        "Time before keepalive probes begin (ms)", 1, 2**31 - 1),
    Oid("net.inet.tcp.keepintvl", "tcp", "keepintvl", "Time between keepalive probes (ms)",
        1, 2**31 - 1),
    Oid("net.inet.tcp.keepcnt", "tcp", "keepcnt", "Keepalive probes before the drop", 1, 100),
    Oid("net.inet.tcp.keepinit", "tcp", "keepinit", "Time to establish a connection (ms)",
        1, 2**31 - 1),
    Oid("net.inet.tcp.finwait2_timeout", "tcp", "finwait2_timeout",
        "FIN_WAIT_2 timeout for closed sockets (ms)", 1, 2**31 - 1),
    Oid("net.inet.tcp.syncookies", "tcp", "syncookies",
        "Use TCP SYN cookies when the SYN queue overflows", 0, 1),
    Oid("net.inet.tcp.sack.enable", "tcp", "sack_enable", "Enable SACK (RFC 2018)", 0, 1),
    Oid("net.inet.tcp.rfc1323", "tcp", "rfc1323",
        "Enable window scaling and timestamps (RFC 7323)", 0, 1),
    Oid("net.inet.tcp.mssdflt", "tcp", "mssdflt", "Default maximum segment size", 88, 65535),
    Oid("net.inet.tcp.sendspace", "tcp", "sendspace", "Initial send socket buffer size",
        1024, 2**26),
    Oid("net.inet.tcp.recvspace", "tcp", "recvspace", "Initial receive socket buffer size",
        1024, 2**26),
    Oid("net.inet.tcp.blackhole", "tcp", "blackhole",
        "Do not send RST on segments to closed ports", 0, 1),
    Oid("net.inet.tcp.ack_war_maxcnt", "tcp", "challenge_limit",
        "Challenge ACKs sent per connection per second", 0, 10_000),
    Oid("net.inet.tcp.path_mtu_discovery", "tcp", "path_mtu_discovery",
        "Enable Path MTU Discovery (DF on every segment, RFC 1191)", 0, 1),
)

STAT_LINES: tuple[tuple[str, str], ...] = (
    ("sndtotal", "{} packets sent"),
    ("sndpack", "\t{} data packets"),
    ("sndbyte", "\t{} data bytes"),
    ("sndrexmitpack", "\t{} data packets retransmitted"),
    ("sndrexmitbyte", "\t{} data bytes retransmitted"),
    ("sndacks", "\t{} ack-only packets"),
    ("sndprobe", "\t{} window probe packets"),
    ("sndwinup", "\t{} window update packets"),
    ("sndctrl", "\t{} control packets"),
    ("rcvtotal", "{} packets received"),
    ("rcvackpack", "\t{} acks"),
    ("rcvackbyte", "\t\t{} bytes acked"),
    ("rcvdupack", "\t{} duplicate acks"),
    ("rcvacktoomuch", "\t{} acks for unsent data"),
    ("rcvpack", "\t{} packets received in-sequence"),
    ("rcvbyte", "\t\t{} bytes received in-sequence"),
    ("rcvduppack", "\t{} completely duplicate packets"),
    ("rcvoopack", "\t{} out-of-order packets"),
    ("rcvoobyte", "\t\t{} out-of-order bytes"),
    ("rcvpackafterwin", "\t{} packets of data after window"),
    ("rcvwinprobe", "\t{} window probes"),
    ("rcvwinupd", "\t{} window update packets"),
    ("rcvafterclose", "\t{} packets received after close"),
    ("rcvbadsum", "\t{} discarded for bad checksums"),
    ("rcvbadoff", "\t{} discarded for bad header offset fields"),
    ("rcvshort", "\t{} discarded because packet too short"),
    ("connattempt", "{} connection requests"),
    ("accepts", "{} connection accepts"),
    ("badsyn", "{} bad connection attempts"),
    ("listendrop", "{} listen queue overflows"),
    ("connects", "{} connections established (including accepts)"),
    ("closed", "{} connections closed"),
    ("drops", "\t{} connections dropped"),
    ("conndrops", "\t{} embryonic connections dropped"),
    ("rttupdated", "{} segments updated rtt"),
    ("delack", "\t{} delayed acks sent"),
    ("timeoutdrop", "{} connections dropped by rexmit timeout"),
    ("rexmttimeo", "{} retransmit timeouts"),
    ("persisttimeo", "{} persist timeouts"),
    ("keeptimeo", "{} keepalive timeouts"),
    ("keepprobe", "\t{} keepalive probes sent"),
    ("keepdrops", "\t{} connections dropped by keepalive"),
    ("sack_recovery", "{} SACK recovery episodes"),
    ("sack_rexmits", "{} segment rexmits in SACK recovery episodes"),
    ("sack_rcv_blocks", "{} SACK options (SACK blocks) received"),
    ("sack_send_blocks", "{} SACK options (SACK blocks) sent"),
    ("fastrexmit", "{} fast retransmits"),
    ("challenge_acks", "{} challenge ACKs sent"),
    ("cookiessent", "{} cookies sent"),
    ("cookiesrcvd", "{} cookies received"),
    ("resets_sent", "{} resets sent"),
    ("resets_rcvd", "{} resets received"),
    ("pmtud_updates", "{} path MTU updates"),
)

TcpStats = counters("TcpStats", tuple(name for name, _ in STAT_LINES))


def _lt(a: int, b: int) -> bool:
    return 0 < (b - a) & MASK < HALF


def _leq(a: int, b: int) -> bool:
    return (b - a) & MASK < HALF


def _diff(a: int, b: int) -> int:
    """a - b in sequence space (signed)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def wscale_for(space: int) -> int:
    shift = 0
    while shift < MAX_WSCALE and (65535 << shift) < space:
        shift += 1
    return shift


class Tcb:
    """A TCP control block: one connection (or listener) and its timers."""

    __slots__ = (
        "_sock",
        "accept_q",
        "backlog",
        "cc",
        "challenge_count",
        "challenge_second",
        "dupacks",
        "faddr",
        "fin_ooo",
        "fin_rcvd",
        "fin_seq",
        "fport",
        "ip_tos",
        "ip_ttl",
        "irs",
        "iss",
        "keep_probes",
        "keepalive",
        "laddr",
        "linger",
        "listener",
        "lport",
        "mss",
        "nodelay",
        "ooo",
        "peer_mss",
        "rcv_adv",
        "rcv_buf",
        "rcv_nxt",
        "rcv_space",
        "rcv_time",
        "rcv_wscale",
        "recover",
        "recovery",
        "rexmt_high",
        "rexmt_shift",
        "rto",
        "rtt_seq",
        "rtt_start",
        "rttvar",
        "sack_last",
        "sack_ok",
        "sacked",
        "shut_wr",
        "snd_buf",
        "snd_buf_seq",
        "snd_max",
        "snd_nxt",
        "snd_space",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "so_error",
        "srtt",
        "state",
        "syn_q",
        "t_delack",
        "t_keep",
        "t_main",
        "tcp",
        "ts_offset",
        "ts_ok",
        "ts_recent",
        "unacked_segs",
        "user_closed",
        "want_ack",
        "ws_ok",
    )

    def __init__(self, tcp: TcpState, laddr: int, lport: int, faddr: int, fport: int) -> None:
        self.tcp = tcp
        self.laddr, self.lport, self.faddr, self.fport = laddr, lport, faddr, fport
        self.state = CLOSED
        self._sock: weakref.ref[TcpSocket] | None = None
        self.listener: Tcb | None = None
        self.accept_q: list[Tcb] | None = None
        self.syn_q = 0
        self.backlog = 0
        self.iss = self.irs = 0
        self.snd_una = self.snd_nxt = self.snd_max = 0
        self.snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.snd_wscale = self.rcv_wscale = 0
        self.snd_buf = bytearray()
        self.snd_buf_seq = 0
        self.snd_space = tcp.sendspace
        self.rcv_space = tcp.recvspace
        self.rcv_buf = bytearray()
        self.rcv_nxt = self.rcv_adv = 0
        self.ooo: list[tuple[int, bytes]] = []  # out-of-order segments, sorted by seq
        self.sacked: list[tuple[int, int]] = []  # peer's SACK scoreboard, merged blocks
        self.sack_last = 0  # sequence number of the out-of-order segment queued last
        self.mss = self.peer_mss = tcp.mssdflt
        self.ts_ok = self.sack_ok = self.ws_ok = False
        self.ts_recent = 0
        self.ts_offset = tcp.vnet.kernel.rng.getrandbits(32)
        self.srtt = self.rttvar = 0
        self.rto = tcp.rexmit_initial * MS
        self.rexmt_shift = 0
        self.rtt_seq: int | None = None
        self.rtt_start = 0
        self.cc = create_cc(tcp.cc_algorithm, self.mss)
        self.dupacks = 0
        self.recovery = False
        self.recover = self.rexmt_high = 0
        self.fin_seq: int | None = None  # sequence number of our FIN once it is queued
        self.fin_rcvd = False
        self.fin_ooo: int | None = None  # sequence number of a FIN that came out of order
        self.shut_wr = self.user_closed = False
        self.so_error = 0
        self.nodelay = False
        self.ip_ttl: int | None = None  # IP_TTL and IP_TOS: they outlive the socket
        self.ip_tos = 0
        self.keepalive = False
        self.keep_probes = 0
        self.rcv_time = tcp.vnet.kernel.sched.now_ns()  # when we last heard from the peer
        self.linger: int | None = None
        self.want_ack = False
        self.unacked_segs = 0
        self.t_main: Timer | None = None  # rexmt, persist, 2MSL or FIN_WAIT_2 (one at a time)
        self.t_delack: Timer | None = None
        self.t_keep: Timer | None = None
        self.challenge_second = -1
        self.challenge_count = 0

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def sock(self) -> TcpSocket | None:
        """The socket, held weakly: a forgotten socket is closed by the garbage collector."""
        return self._sock() if self._sock is not None else None

    @sock.setter
    def sock(self, sock: TcpSocket | None) -> None:
        self._sock = weakref.ref(sock) if sock is not None else None

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.laddr, self.lport, self.faddr, self.fport)

    def rcv_wnd(self) -> int:
        return max(0, self.rcv_space - len(self.rcv_buf))

    def now(self) -> int:
        return self.tcp.vnet.kernel.sched.now_ns()

    def tsval(self) -> int:
        return (self.now() // MS + self.ts_offset) & MASK

    def in_flight(self) -> int:
        return (self.snd_max - self.snd_una) & MASK

    def sacked_bytes(self) -> int:
        return sum((r - left) & MASK for left, r in self.sacked)

    def notify(self) -> None:
        """Wake whoever waits on this connection's socket: threads, and a selector."""
        self.tcp.vnet.kernel.sched.cond.notify_all()
        sock = self.sock
        if sock is not None and sock._poll is not None:
            sock._poll.touch(sock)

    # -- timers -----------------------------------------------------------------------------------
    def set_main(self, delay_ns: int, callback: Any) -> None:
        if self.t_main is not None:
            self.t_main.cancel()
        sched = self.tcp.vnet.kernel.sched
        self.t_main = sched.call_later(delay_ns, callback, self, owner=self.tcp.vnet)

    def cancel_main(self) -> None:
        if self.t_main is not None:
            self.t_main.cancel()
            self.t_main = None

    def cancel_all(self) -> None:
        for name in ("t_main", "t_delack", "t_keep"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)


class TcpState:
    """Per-vnet TCP: tunables, counters, listeners and connections."""

    __slots__ = ("blackhole", "cc_algorithm", "challenge_limit", "conns", "delacktime",
                 "delayed_ack", "finwait2_timeout", "keepcnt", "keepidle", "keepinit",
                 "keepintvl", "listeners", "msl", "mssdflt", "path_mtu_discovery",
                 "rcvbuf_max", "recvspace", "rexmit_initial", "rexmit_min", "rexmit_slop",
                 "rfc1323", "sack_enable", "secret", "sendspace", "stats", "syncookies", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.stats = TcpStats()
        self.conns: dict[tuple[int, int, int, int], Tcb] = {}
        self.listeners: dict[int, list[Tcb]] = {}
        self.cc_algorithm = "cubic"
        self.rexmit_min = 30
        self.rexmit_slop = 200
        self.rexmit_initial = 1000
        self.delayed_ack = 1
        self.delacktime = 40
        self.msl = 30_000
        self.keepidle = 7_200_000
        self.keepintvl = 75_000
        self.keepcnt = 8
        self.keepinit = 75_000
        self.finwait2_timeout = 60_000
        self.syncookies = 1
        self.sack_enable = 1
        self.rfc1323 = 1
        self.mssdflt = DEFAULT_MSS
        self.sendspace = 65536
        self.recvspace = 65536
        self.rcvbuf_max = 2**24
        self.blackhole = 0
        self.challenge_limit = 5
        self.path_mtu_discovery = 1
        self.secret = vnet.kernel.rng.getrandbits(128).to_bytes(16, "big")

    # -- the table --------------------------------------------------------------------------------
    def port_in_use(self, addr: int, port: int) -> bool:
        if any(t.laddr in (0, addr) or addr == 0 for t in self.listeners.get(port, ())):
            return True
        return any(k[1] == port and (k[0] == addr or addr == 0 or k[0] == 0)
                   and t.state != TIME_WAIT for k, t in self.conns.items())

    def ephemeral(self, laddr: int, faddr: int, fport: int) -> int:
        ip = self.vnet.ip
        first, last = sorted((ip.port_first, ip.port_last))
        span = last - first + 1
        start = self.vnet.kernel.rng.randrange(span)
        for i in range(span):
            port = first + (start + i) % span
            if (laddr, port, faddr, fport) not in self.conns and port not in self.listeners:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")

    def attach(self, tcb: Tcb) -> None:
        self.conns[tcb.key] = tcb

    def detach(self, tcb: Tcb) -> None:
        """Forget a connection for good (CLOSED)."""
        tcb.cancel_all()
        if tcb.state == LISTEN:
            socks = self.listeners.get(tcb.lport)
            if socks and tcb in socks:
                socks.remove(tcb)
                if not socks:
                    del self.listeners[tcb.lport]
            for child in tcb.accept_q or ():
                self.drop(child, errno.ECONNABORTED, send_rst=True)
        elif self.conns.get(tcb.key) is tcb:
            del self.conns[tcb.key]
        if tcb.listener is not None and tcb.state == SYN_RECEIVED:
            tcb.listener.syn_q -= 1
        tcb.state = CLOSED
        tcb.notify()

    def drop(self, tcb: Tcb, err: int, send_rst: bool = False) -> None:
        """Abort a connection with `err` for its socket (RST sent if asked)."""
        if send_rst and tcb.state not in (CLOSED, LISTEN, SYN_SENT, TIME_WAIT):
            self.send_segment(tcb, tcb.snd_nxt, RST | ACK, b"", ack=tcb.rcv_nxt)
            self.stats.resets_sent += 1
        if tcb.state in (SYN_SENT, SYN_RECEIVED):
            self.stats.conndrops += 1
        else:
            self.stats.drops += 1
        tcb.so_error = err
        self.detach(tcb)

    def tcbs(self) -> list[Tcb]:
        out = [t for socks in self.listeners.values() for t in socks]
        out.extend(self.conns.values())
        return out

    def clear(self) -> None:
        for tcb in self.tcbs():
            if tcb.sock is not None:
                tcb.sock.closed = True
            tcb.cancel_all()
            tcb.state = CLOSED
        self.conns.clear()
        self.listeners.clear()

    # -- output of one segment --------------------------------------------------------------------
    def send_segment(self, tcb: Tcb, seq: int, flags: int, data: bytes,
                     ack: int | None = None, syn_options: bool = False,
                     sack: tuple[tuple[int, int], ...] = ()) -> None:
        st = self.stats
        wnd = tcb.rcv_wnd()
        # the window in a SYN is never scaled (RFC 7323 §2.2)
        window = min(wnd if flags & SYN else wnd >> tcb.rcv_wscale, 65535)
        if ack is None:
            ack = tcb.rcv_nxt
        ack_field = ack if flags & ACK else 0
        opening = bool(flags & SYN and not flags & ACK)  # our own SYN offers everything
        ts = (tcb.tsval(), tcb.ts_recent if flags & ACK else 0) if (
            tcb.ts_ok or (opening and self.rfc1323)) else None
        kwargs: dict[str, Any] = {}
        if syn_options:
            kwargs["mss"] = _offer_mss(self, tcb.faddr)
            if (opening and self.rfc1323) or tcb.ws_ok:
                kwargs["wscale"] = tcb.rcv_wscale
            if (opening and self.sack_enable) or tcb.sack_ok:
                kwargs["sack_perm"] = True
        if sack:
            kwargs["sack"] = sack
            st.sack_send_blocks += 1
        segment = wtcp.build(tcb.lport, tcb.fport, seq, ack_field, flags, window, data,
                             src=tcb.laddr, dst=tcb.faddr, ts=ts, **kwargs)
        st.sndtotal += 1
        if data:
            st.sndpack += 1
            st.sndbyte += len(data)
        elif flags & (SYN | FIN | RST):
            st.sndctrl += 1
        else:
            st.sndacks += 1
        if flags & ACK:
            tcb.rcv_adv = (ack + (window << (0 if flags & SYN else tcb.rcv_wscale))) & MASK
            tcb.want_ack = False
            tcb.unacked_segs = 0
            if tcb.t_delack is not None:
                tcb.t_delack.cancel()
                tcb.t_delack = None
        try:
            self.vnet.ip.output(PROTO_TCP, tcb.laddr, tcb.faddr, segment, ttl=tcb.ip_ttl,
                                tos=tcb.ip_tos, df=bool(self.path_mtu_discovery))
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise
            # soft errors (no route, host down) are reported through the timers

    # -- input ------------------------------------------------------------------------------------
    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        st = self.stats
        st.rcvtotal += 1
        try:
            seg = wtcp.parse(memoryview(pkt)[hlen:], src, dst)
        except WireError as exc:
            if exc.reason == "badsum":
                st.rcvbadsum += 1
            elif exc.reason == "tooshort":
                st.rcvshort += 1
            else:
                st.rcvbadoff += 1
            return
        if dst == INADDR_BROADCAST or dst in self.vnet.ip.bcast or is_multicast(dst):
            return  # TCP is unicast only
        tcb = self.conns.get((dst, seg.dport, src, seg.sport))
        if tcb is None:
            tcb = self.conns.get((0, seg.dport, src, seg.sport))
        if tcb is None:
            for listener in self.listeners.get(seg.dport, ()):
                if listener.laddr in (0, dst):
                    tcb = listener
                    break
        if tcb is None:
            st.rcvafterclose += 1
            self.respond_rst(seg, src, dst)
            return
        if tcb.state == LISTEN:
            self.listen_input(tcb, seg, src, dst)
        elif tcb.state == SYN_SENT:
            self.syn_sent_input(tcb, seg)
        else:
            self.established_input(tcb, seg)

    def respond_rst(self, seg: wtcp.TcpRepr, src: int, dst: int) -> None:
        """RFC 9293 §3.10.7.1: answer a segment for no connection with a reset."""
        if seg.flags & RST or self.blackhole:
            return
        seglen = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seglen) & MASK, RST | ACK
        segment = wtcp.build(seg.dport, seg.sport, seq, ack, flags, 0, b"", src=dst, dst=src)
        self.stats.resets_sent += 1
        self.stats.sndtotal += 1
        self.stats.sndctrl += 1
        with contextlib.suppress(OSError):
            self.vnet.ip.output(PROTO_TCP, dst, src, segment, df=bool(self.path_mtu_discovery))

    # -- LISTEN -----------------------------------------------------------------------------------
    def listen_input(self, listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int) -> None:
        st = self.stats
        flags = seg.flags
        if flags & RST:
            return
        if flags & ACK:
            if self.syncookies and not flags & SYN and self.cookie_ok(seg, src, dst):
                self.cookie_accept(listener, seg, src, dst)
                return
            self.respond_rst(seg, src, dst)
            return
        if not flags & SYN or flags & FIN:
            st.badsyn += 1
            return
        queued = listener.syn_q + len(listener.accept_q or ())
        if queued >= listener.backlog:
            if self.syncookies and len(listener.accept_q or ()) < listener.backlog:
                self.send_cookie(listener, seg, src, dst)
            else:
                st.listendrop += 1
            return
        tcb = Tcb(self, dst, seg.dport, src, seg.sport)
        tcb.listener = listener
        tcb.nodelay, tcb.keepalive = listener.nodelay, listener.keepalive
        tcb.rcv_space, tcb.snd_space = listener.rcv_space, listener.snd_space
        tcb.ip_ttl, tcb.ip_tos = listener.ip_ttl, listener.ip_tos
        tcb.state = SYN_RECEIVED
        listener.syn_q += 1
        tcb.irs = seg.seq
        tcb.rcv_nxt = (seg.seq + 1) & MASK
        self._take_syn_options(tcb, seg)
        tcb.iss = self.new_iss(tcb)
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = tcb.iss
        tcb.snd_buf_seq = (tcb.iss + 1) & MASK
        tcb.snd_wnd = seg.window  # unscaled in a SYN
        tcb.snd_wl1, tcb.snd_wl2 = seg.seq, tcb.iss
        self.attach(tcb)
        self.output(tcb)  # SYN-ACK, and the retransmission timer

    def _take_syn_options(self, tcb: Tcb, seg: wtcp.TcpRepr) -> None:
        opts = seg.options
        tcb.peer_mss = opts.mss if opts.mss else DEFAULT_MSS
        tcb.ws_ok = bool(self.rfc1323 and opts.wscale is not None)
        if tcb.ws_ok:
            tcb.snd_wscale = opts.wscale
            tcb.rcv_wscale = wscale_for(tcb.rcv_space)
        else:
            tcb.snd_wscale = tcb.rcv_wscale = 0
        if self.rfc1323 and opts.ts is not None:
            tcb.ts_ok = True
            tcb.ts_recent = opts.ts[0]
        tcb.sack_ok = bool(self.sack_enable and opts.sack_perm)
        self._set_mss(tcb)

    def _set_mss(self, tcb: Tcb) -> None:
        mss = min(tcb.peer_mss, _offer_mss(self, tcb.faddr))
        if tcb.ts_ok:
            mss -= 12
        tcb.mss = max(mss, 64)
        tcb.cc.set_mss(tcb.mss)

    def new_iss(self, tcb: Tcb) -> int:
        """RFC 6528: a keyed hash of the 4-tuple plus a 4 µs clock."""
        h = hashlib.blake2s(tcb.key.__repr__().encode(), key=self.secret, digest_size=4)
        return (int.from_bytes(h.digest(), "big") + tcb.now() // 4000) & MASK

    # -- SYN cookies ------------------------------------------------------------------------------
    _MSS_TABLE = (536, 1220, 1440, 1460, 8940, 8960)

    def _cookie(self, src: int, dst: int, sport: int, dport: int, irs: int, t: int) -> int:
        data = f"{src}:{dst}:{sport}:{dport}:{irs}:{t}".encode()
        return int.from_bytes(hashlib.blake2s(data, key=self.secret, digest_size=4).digest(),
                              "big")

    def send_cookie(self, listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int) -> None:
        """Answer a SYN without keeping state: the ISN carries what we need back."""
        peer_mss = seg.options.mss or DEFAULT_MSS
        idx = max(i for i, m in enumerate(self._MSS_TABLE) if m <= peer_mss or i == 0)
        t = (self.vnet.kernel.sched.now_ns() // (64 * NS_PER_S)) & 0x1F
        iss = ((self._cookie(src, dst, seg.sport, seg.dport, seg.seq, t) & ~0xFF)
               | (t << 3) | idx) & MASK
        segment = wtcp.build(seg.dport, seg.sport, iss, (seg.seq + 1) & MASK, SYN | ACK,
                             min(listener.rcv_space, 65535), b"", src=dst, dst=src,
                             mss=_offer_mss(self, src))  # ours; the cookie keeps the peer's
        self.stats.cookiessent += 1
        self.stats.sndtotal += 1
        with contextlib.suppress(OSError):
            self.vnet.ip.output(PROTO_TCP, dst, src, segment, df=bool(self.path_mtu_discovery))

    def cookie_ok(self, seg: wtcp.TcpRepr, src: int, dst: int) -> bool:
        iss = (seg.ack - 1) & MASK
        t, idx = (iss >> 3) & 0x1F, iss & 0x7
        now_t = (self.vnet.kernel.sched.now_ns() // (64 * NS_PER_S)) & 0x1F
        if idx >= len(self._MSS_TABLE) or (now_t - t) & 0x1F > 1:
            return False
        irs = (seg.seq - 1) & MASK
        expect = self._cookie(src, dst, seg.sport, seg.dport, irs, t) & ~0xFF
        return (iss & ~0xFF) == expect

    def cookie_accept(self, listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int) -> None:
        if len(listener.accept_q or ()) >= listener.backlog:
            self.stats.listendrop += 1
            return
        self.stats.cookiesrcvd += 1
        iss = (seg.ack - 1) & MASK
        tcb = Tcb(self, dst, seg.dport, src, seg.sport)
        tcb.listener = listener
        tcb.nodelay, tcb.keepalive = listener.nodelay, listener.keepalive
        tcb.rcv_space, tcb.snd_space = listener.rcv_space, listener.snd_space
        tcb.ip_ttl, tcb.ip_tos = listener.ip_ttl, listener.ip_tos
        tcb.iss = iss
        tcb.irs = (seg.seq - 1) & MASK
        tcb.rcv_nxt = seg.seq
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = seg.ack
        tcb.snd_buf_seq = seg.ack
        tcb.peer_mss = self._MSS_TABLE[iss & 0x7]
        self._set_mss(tcb)
        tcb.snd_wnd = seg.window
        tcb.snd_wl1, tcb.snd_wl2 = seg.seq, seg.ack
        tcb.state = ESTABLISHED
        self.attach(tcb)
        listener.syn_q += 1  # established() takes it off again
        self.established(tcb)
        if seg.payload or seg.flags & FIN:
            self.established_input(tcb, seg)

    # -- SYN-SENT ---------------------------------------------------------------------------------
    def syn_sent_input(self, tcb: Tcb, seg: wtcp.TcpRepr) -> None:
        flags = seg.flags
        if flags & ACK and (_leq(seg.ack, tcb.iss) or _lt(tcb.snd_max, seg.ack)):
            if not flags & RST:
                self.respond_rst(seg, tcb.faddr, tcb.laddr)
            return
        if flags & RST:
            if flags & ACK:
                self.stats.resets_rcvd += 1
                self.drop(tcb, errno.ECONNREFUSED)
            return
        if not flags & SYN:
            return
        tcb.irs = seg.seq
        tcb.rcv_nxt = (seg.seq + 1) & MASK
        self._take_syn_options(tcb, seg)
        tcb.snd_wnd = seg.window
        tcb.snd_wl1, tcb.snd_wl2 = seg.seq, seg.ack
        if flags & ACK:
            self._ack_advance(tcb, seg.ack, seg)
            tcb.state = ESTABLISHED
            self.established(tcb)
            if seg.payload or flags & FIN:
                self.established_input(tcb, seg, after_syn=True)
                return
            self.ack_now(tcb)  # the third segment of the handshake goes at once
            self.output(tcb)
        else:  # simultaneous open
            tcb.state = SYN_RECEIVED
            tcb.snd_nxt = tcb.iss
            self.output(tcb)

    def established(self, tcb: Tcb) -> None:
        """The handshake is complete: wake the connector, queue for accept()."""
        st = self.stats
        st.connects += 1
        tcb.cancel_main()
        tcb.rexmt_shift = 0
        listener = tcb.listener
        if listener is not None and tcb.sock is None:
            listener.syn_q -= 1
            if listener.state == LISTEN and listener.accept_q is not None:
                listener.accept_q.append(tcb)
                st.accepts += 1
                listener.notify()
            else:
                self.drop(tcb, errno.ECONNABORTED, send_rst=True)
                return
        tcb.rcv_time = tcb.now()
        if tcb.t_keep is not None:  # keepinit
            tcb.t_keep.cancel()
            tcb.t_keep = None
        if tcb.keepalive:
            arm_keepalive(tcb)
        tcb.notify()

    # -- synchronized states ----------------------------------------------------------------------
    def established_input(self, tcb: Tcb, seg: wtcp.TcpRepr, after_syn: bool = False) -> None:
        st = self.stats
        flags = seg.flags
        data = seg.payload
        seq = seg.seq
        tcb.rcv_time = tcb.now()
        if after_syn:
            seq = (seq + 1) & MASK
            flags &= ~SYN
        elif flags & SYN and tcb.state == SYN_RECEIVED and seq == tcb.irs and not flags & RST:
            if not flags & ACK:  # the peer's SYN again: our SYN-ACK was lost
                self.output(tcb, force_syn=True)
                return
            # simultaneous open: the peer's SYN-ACK; its SYN is known, its ACK is news
            seq = (seq + 1) & MASK
            flags &= ~SYN
        # timestamps: PAWS (RFC 7323 §5)
        ts = seg.options.ts
        if (tcb.ts_ok and ts is not None and not flags & RST
                and _lt(ts[0], tcb.ts_recent) and tcb.state != SYN_RECEIVED):
            st.rcvduppack += 1
            self.ack_now(tcb)
            return
        # 1. sequence number acceptability (RFC 9293 table)
        seglen = len(data) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = tcb.rcv_wnd()
        rcv_nxt = tcb.rcv_nxt
        if seglen == 0:
            ok = (seq == rcv_nxt) if wnd == 0 else _leq(rcv_nxt, seq) and _lt(seq,
                                                                                rcv_nxt + wnd)
        elif wnd == 0:
            ok = False
        else:
            end = (seq + seglen - 1) & MASK
            ok = (_leq(rcv_nxt, seq) and _lt(seq, rcv_nxt + wnd)) or (
                _leq(rcv_nxt, end) and _lt(end, rcv_nxt + wnd))
        if not ok:
            if flags & RST:
                return
            if seglen and _lt(seq, rcv_nxt):
                st.rcvduppack += 1
            elif seglen:
                st.rcvpackafterwin += 1
                if wnd == 0 and seq == rcv_nxt:
                    st.rcvwinprobe += 1
            self.ack_now(tcb)
            if tcb.state == TIME_WAIT and flags & FIN:  # RFC 9293 §3.10.7.4
                tcb.set_main(2 * self.msl * MS, _close_timeout)
            return
        # 2. RST (RFC 5961 §3)
        if flags & RST:
            if seq == rcv_nxt:
                st.resets_rcvd += 1
                if tcb.state == SYN_RECEIVED and tcb.listener is not None and tcb.sock is None:
                    self.detach(tcb)  # back to LISTEN: just forget the embryo
                    return
                err = errno.ECONNREFUSED if tcb.state == SYN_RECEIVED else errno.ECONNRESET
                if tcb.state in (CLOSING, LAST_ACK, TIME_WAIT):
                    self.detach(tcb)
                else:
                    self.drop(tcb, err)
            else:
                self.challenge_ack(tcb)
            return
        # 3. SYN in a synchronized state: challenge ACK (RFC 5961 §4)
        if flags & SYN:
            self.challenge_ack(tcb)
            return
        # 4. ACK
        if not flags & ACK:
            return
        if tcb.state == SYN_RECEIVED:
            if _lt(tcb.snd_una, seg.ack) and _leq(seg.ack, tcb.snd_max):
                tcb.state = ESTABLISHED
                tcb.snd_wnd = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
                tcb.snd_wl1, tcb.snd_wl2 = seq, seg.ack
                self._ack_advance(tcb, seg.ack, seg)
                self.established(tcb)
                if tcb.state == CLOSED:
                    return
            else:
                self.respond_rst(seg, tcb.faddr, tcb.laddr)
                return
        elif not self.process_ack(tcb, seg, seq):
            return
        if tcb.state == CLOSED:
            return
        # 5. data
        if data and tcb.user_closed and tcb.state in (FIN_WAIT_1, FIN_WAIT_2, CLOSING):
            # nobody can read it any more: tell the peer it was lost (RFC 1122 4.2.2.13)
            st.rcvafterclose += 1
            self.drop(tcb, errno.ECONNRESET, send_rst=True)
            return
        if data and tcb.state in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2):
            self.receive_data(tcb, seq, bytes(data), seg)
        elif data:
            st.rcvafterclose += 1
        # 6. FIN; one that came ahead of a hole is held until the hole fills (RFC 9293
        # §3.10.7.4: segments beyond RCV.NXT are held for later processing)
        if flags & FIN:
            fin_seq = (seq + len(data)) & MASK
            if fin_seq == tcb.rcv_nxt and not tcb.fin_rcvd:
                self.receive_fin(tcb)
            elif tcb.fin_rcvd:
                self.ack_now(tcb)  # retransmitted FIN: ACK again
            elif _lt(tcb.rcv_nxt, fin_seq) and _diff(fin_seq, tcb.rcv_nxt) <= tcb.rcv_wnd():
                tcb.fin_ooo = fin_seq
                if not data:
                    self.ack_now(tcb)  # out of order: a duplicate ACK at once (RFC 5681 §4.2)
        elif tcb.fin_ooo == tcb.rcv_nxt and not tcb.fin_rcvd:
            self.receive_fin(tcb)
        if tcb.state != CLOSED:
            self.output(tcb)

    def challenge_ack(self, tcb: Tcb) -> None:
        second = tcb.now() // NS_PER_S
        if second != tcb.challenge_second:
            tcb.challenge_second, tcb.challenge_count = second, 0
        tcb.challenge_count += 1
        if self.challenge_limit and tcb.challenge_count > self.challenge_limit:
            return
        self.stats.challenge_acks += 1
        self.ack_now(tcb)

    def ack_now(self, tcb: Tcb) -> None:
        if tcb.state in (CLOSED, LISTEN, SYN_SENT):
            return
        self.send_segment(tcb, tcb.snd_nxt, ACK, b"", sack=self.sack_blocks(tcb))

    # -- ACK processing ---------------------------------------------------------------------------
    def process_ack(self, tcb: Tcb, seg: wtcp.TcpRepr, seq: int) -> bool:
        st = self.stats
        ack = seg.ack
        if _lt(tcb.snd_max, ack):
            st.rcvacktoomuch += 1
            self.ack_now(tcb)
            return False
        if _lt(ack, (tcb.snd_una - tcb.snd_wnd - 1) & MASK if tcb.snd_wnd else tcb.snd_una) \
                and _lt(ack, tcb.snd_una) and (tcb.snd_una - ack) & MASK > 65535 * 4:
            self.challenge_ack(tcb)  # RFC 5961 §5: too old
            return False
        window = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
        if seg.options.sack and tcb.sack_ok:
            st.sack_rcv_blocks += 1
            self.update_scoreboard(tcb, seg.options.sack)
        if tcb.ts_ok and seg.options.ts is not None and _leq(seq, tcb.rcv_adv) and \
                _leq(seq, tcb.rcv_nxt):
            tcb.ts_recent = seg.options.ts[0]
        if _lt(tcb.snd_una, ack):
            self._ack_advance(tcb, ack, seg)
            tcb.dupacks = 0
        elif ack == tcb.snd_una and not seg.payload and window == tcb.snd_wnd and window \
                and tcb.in_flight() and not seg.flags & FIN:
            st.rcvdupack += 1
            tcb.dupacks += 1
            self.dupack(tcb)
        # window update (RFC 9293: SND.WL1/WL2 rule)
        if _lt(tcb.snd_wl1, seq) or (tcb.snd_wl1 == seq and _leq(tcb.snd_wl2, ack)):
            if window != tcb.snd_wnd:
                st.rcvwinupd += 1
            was_zero = tcb.snd_wnd == 0
            tcb.snd_wnd = window
            tcb.snd_wl1, tcb.snd_wl2 = seq, ack
            if was_zero and window and tcb.t_main is not None and \
                    tcb.t_main.callback is _persist_timeout:
                tcb.cancel_main()
                tcb.rexmt_shift = 0  # the probes' backoff is not the retransmissions' one
        # state transitions driven by our FIN being acknowledged
        fin_acked = tcb.fin_seq is not None and _lt(tcb.fin_seq, tcb.snd_una)
        if tcb.state == FIN_WAIT_1 and fin_acked:
            tcb.state = FIN_WAIT_2
            if tcb.user_closed:
                tcb.set_main(self.finwait2_timeout * MS, _close_timeout)
        elif tcb.state == CLOSING and fin_acked:
            self.enter_time_wait(tcb)
            return False
        elif tcb.state == LAST_ACK and fin_acked:
            self.stats.closed += 1
            self.detach(tcb)
            return False
        elif tcb.state == TIME_WAIT:
            self.ack_now(tcb)
            tcb.set_main(2 * self.msl * MS, _close_timeout)
        return True

    def _ack_advance(self, tcb: Tcb, ack: int, seg: wtcp.TcpRepr) -> None:
        """SND.UNA moves to `ack`: free the buffer, time the RTT, grow the window."""
        st = self.stats
        acked = (ack - tcb.snd_una) & MASK
        in_flight = tcb.in_flight()
        st.rcvackpack += 1
        st.rcvackbyte += acked
        # RTT: timestamps if we have them, else the one timed segment (Karn)
        rtt = None
        now = tcb.now()
        if tcb.ts_ok and seg.options.ts is not None and seg.options.ts[1]:
            rtt = ((tcb.tsval() - seg.options.ts[1]) & MASK) * MS
            rtt = max(rtt, MS // 10)
        elif tcb.rtt_seq is not None and _lt(tcb.rtt_seq, ack):
            rtt = now - tcb.rtt_start
            tcb.rtt_seq = None
        if rtt is not None and tcb.rexmt_shift == 0:
            self.update_rtt(tcb, rtt)
        tcb.rexmt_shift = 0
        # free what was acknowledged (SYN and FIN take a sequence number, not a byte)
        data_acked = (ack - tcb.snd_buf_seq) & MASK
        if data_acked < HALF:
            data_acked = min(data_acked, len(tcb.snd_buf))
            if data_acked:
                del tcb.snd_buf[:data_acked]
                tcb.snd_buf_seq = (tcb.snd_buf_seq + data_acked) & MASK
        tcb.snd_una = ack
        if _lt(tcb.snd_nxt, ack):
            tcb.snd_nxt = ack
        tcb.sacked = [(left, r) for left, r in tcb.sacked if _lt(ack, r)]
        if tcb.sacked and _lt(tcb.sacked[0][0], ack):
            tcb.sacked[0] = (ack, tcb.sacked[0][1])
        # congestion control
        if tcb.recovery:
            if _leq(tcb.recover, ack):
                tcb.recovery = False
                tcb.cc.on_exit_recovery(now)
            elif not tcb.sack_ok or tcb.sacked:
                # partial ACK (RFC 6582): retransmit the next hole at once; with SACK only
                # a hole the scoreboard shows (RFC 6675): an empty one is no evidence of loss
                self.retransmit_hole(tcb)
        elif tcb.state not in (SYN_SENT, SYN_RECEIVED):
            tcb.cc.on_ack(acked, rtt, now, in_flight)
        # the retransmission timer (RFC 6298 5.2/5.3)
        if tcb.snd_una == tcb.snd_max:
            if tcb.t_main is not None and tcb.t_main.callback is _rexmt_timeout:
                tcb.cancel_main()
        else:
            tcb.set_main(tcb.rto, _rexmt_timeout)
        tcb.notify()

    def update_rtt(self, tcb: Tcb, rtt: int) -> None:
        self.stats.rttupdated += 1
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
        rto = tcb.srtt + max(MS, 4 * tcb.rttvar) + self.rexmit_slop * MS
        tcb.rto = min(max(rto, self.rexmit_min * MS), MAX_RTO_NS)

    def update_scoreboard(self, tcb: Tcb, blocks: tuple[tuple[int, int], ...]) -> None:
        board = list(tcb.sacked)
        for left, right in blocks:
            if not _lt(tcb.snd_una, right) or _lt(tcb.snd_max, right) or not _lt(left, right):
                continue  # stale or bogus block
            board.append((left, right))
        board.sort(key=lambda b: _diff(b[0], tcb.snd_una))
        merged: list[tuple[int, int]] = []
        for left, right in board:
            if merged and _leq(left, merged[-1][1]):
                if _lt(merged[-1][1], right):
                    merged[-1] = (merged[-1][0], right)
            else:
                merged.append((left, right))
        tcb.sacked = merged

    def dupack(self, tcb: Tcb) -> None:
        """Fast retransmit / recovery entry (RFC 5681 §3.2, RFC 6675 §5)."""
        st = self.stats
        sacked_segments = tcb.sacked_bytes() // max(tcb.mss, 1)
        if tcb.recovery:
            if not tcb.sack_ok:
                tcb.cc.cwnd += tcb.mss  # NewReno window inflation
            elif tcb.sacked:  # a segment left the network: fill the next hole (RFC 6675)
                self.retransmit_hole(tcb)
            self.output(tcb)
            return
        if tcb.dupacks >= 3 or (tcb.sack_ok and sacked_segments >= 3):
            tcb.recovery = True
            tcb.recover = tcb.snd_max
            tcb.rexmt_high = tcb.snd_una
            tcb.cc.on_enter_recovery(tcb.now(), tcb.in_flight())
            st.fastrexmit += 1
            if tcb.sack_ok:
                st.sack_recovery += 1
            else:
                tcb.cc.cwnd += 3 * tcb.mss
            tcb.rtt_seq = None
            self.retransmit_hole(tcb)
            self.output(tcb)
        elif tcb.dupacks <= 2:
            self.output(tcb, limited_transmit=True)  # RFC 3042

    def next_hole(self, tcb: Tcb) -> tuple[int, int] | None:
        """The first un-SACKed range at or above `rexmt_high` below the highest SACK."""
        start = tcb.rexmt_high if _lt(tcb.snd_una, tcb.rexmt_high) else tcb.snd_una
        for left, right in tcb.sacked:
            if _lt(start, left):
                return start, left
            if _lt(start, right):
                start = right
        if not tcb.sacked and tcb.recovery and start == tcb.snd_una:
            return start, tcb.snd_max  # no SACK: the first unacked segment
        return None

    def retransmit_hole(self, tcb: Tcb) -> None:
        hole = self.next_hole(tcb)
        if hole is None:
            return
        start, end = hole
        length = min(tcb.mss, (end - start) & MASK)
        if self.send_data(tcb, start, length, rexmit=True):
            tcb.rexmt_high = (start + length) & MASK
            if tcb.sack_ok:
                self.stats.sack_rexmits += 1

    # -- data in ----------------------------------------------------------------------------------
    def receive_data(self, tcb: Tcb, seq: int, data: bytes, seg: wtcp.TcpRepr) -> None:
        st = self.stats
        rcv_nxt = tcb.rcv_nxt
        offset = _diff(rcv_nxt, seq)
        if offset > 0:  # the front was already received
            data = data[offset:]
            seq = rcv_nxt
        room = tcb.rcv_wnd() - max(0, _diff(seq, rcv_nxt))  # from seq to the window's end
        if len(data) > room:
            data = data[:max(0, room)]
        if not data:
            self.ack_now(tcb)
            return
        if seq == rcv_nxt:
            tcb.rcv_buf += data
            tcb.rcv_nxt = (rcv_nxt + len(data)) & MASK
            st.rcvpack += 1
            st.rcvbyte += len(data)
            if tcb.ooo:
                self._drain_ooo(tcb)
                self.ack_now(tcb)  # filling a hole: tell the sender at once
            else:
                self.schedule_ack(tcb)
            tcb.notify()
        else:
            st.rcvoopack += 1
            st.rcvoobyte += len(data)
            self._queue_ooo(tcb, seq, data)
            self.ack_now(tcb)  # a gap: duplicate ACK with SACK blocks

    def _queue_ooo(self, tcb: Tcb, seq: int, data: bytes) -> None:
        limit = tcb.rcv_space
        if sum(len(d) for _, d in tcb.ooo) + len(data) > limit:
            return
        tcb.ooo.append((seq, data))
        tcb.ooo.sort(key=lambda item: _diff(item[0], tcb.rcv_nxt))
        tcb.sack_last = seq

    def _drain_ooo(self, tcb: Tcb) -> None:
        keep = []
        for seq, data in tcb.ooo:
            offset = _diff(tcb.rcv_nxt, seq)
            if offset >= len(data):
                continue  # entirely old now
            if offset >= 0:
                tcb.rcv_buf += data[offset:]
                tcb.rcv_nxt = (tcb.rcv_nxt + len(data) - offset) & MASK
            else:
                keep.append((seq, data))
        tcb.ooo = keep

    def sack_blocks(self, tcb: Tcb) -> tuple[tuple[int, int], ...]:
        """Up to 3 SACK blocks describing the out-of-order queue (RFC 2018 §4)."""
        if not tcb.sack_ok or not tcb.ooo:
            return ()
        blocks: list[tuple[int, int]] = []
        for seq, data in tcb.ooo:
            end = (seq + len(data)) & MASK
            if blocks and _leq(seq, blocks[-1][1]):
                if _lt(blocks[-1][1], end):
                    blocks[-1] = (blocks[-1][0], end)
            else:
                blocks.append((seq, end))
        blocks.reverse()
        # RFC 2018 §4: the first block is the one holding the segment that arrived last
        for i, (left, right) in enumerate(blocks):
            if _leq(left, tcb.sack_last) and _lt(tcb.sack_last, right):
                blocks.insert(0, blocks.pop(i))
                break
        return tuple(blocks[:3])

    def schedule_ack(self, tcb: Tcb) -> None:
        tcb.want_ack = True
        tcb.unacked_segs += 1
        if not self.delayed_ack or tcb.unacked_segs >= 2:
            return  # output() sends the ACK now (every second segment, RFC 1122)
        if tcb.t_delack is None:
            sched = self.vnet.kernel.sched
            tcb.t_delack = sched.call_later(self.delacktime * MS, _delack_timeout, tcb,
                                            owner=self.vnet)

    def receive_fin(self, tcb: Tcb) -> None:
        tcb.fin_rcvd = True
        tcb.rcv_nxt = (tcb.rcv_nxt + 1) & MASK
        tcb.want_ack = True
        tcb.unacked_segs = 2
        state = tcb.state
        if state in (SYN_RECEIVED, ESTABLISHED):
            tcb.state = CLOSE_WAIT
        elif state == FIN_WAIT_1:
            fin_acked = tcb.fin_seq is not None and _lt(tcb.fin_seq, tcb.snd_una)
            if fin_acked:
                self.ack_now(tcb)
                self.enter_time_wait(tcb)
            else:
                tcb.state = CLOSING
        elif state == FIN_WAIT_2:
            self.ack_now(tcb)
            self.enter_time_wait(tcb)
        tcb.notify()

    def enter_time_wait(self, tcb: Tcb) -> None:
        tcb.state = TIME_WAIT
        tcb.cancel_all()
        tcb.set_main(2 * self.msl * MS, _close_timeout)
        self.stats.closed += 1
        tcb.notify()

    # -- output -----------------------------------------------------------------------------------
    def output(self, tcb: Tcb, force_syn: bool = False, limited_transmit: bool = False) -> None:
        """Send what the windows allow: SYN, data, FIN, or a pending ACK (tcp_output)."""
        state = tcb.state
        if state in (CLOSED, LISTEN, TIME_WAIT):
            return
        if state in (SYN_SENT, SYN_RECEIVED):
            if tcb.snd_nxt == tcb.iss or force_syn:
                flags = SYN if state == SYN_SENT else SYN | ACK
                self.send_segment(tcb, tcb.iss, flags, b"", syn_options=True)
                tcb.snd_nxt = (tcb.iss + 1) & MASK
                if _lt(tcb.snd_max, tcb.snd_nxt):
                    tcb.snd_max = tcb.snd_nxt
                if tcb.t_main is None or tcb.t_main.callback is not _rexmt_timeout:
                    tcb.set_main(tcb.rto, _rexmt_timeout)
            return
        sent = False
        mss = tcb.mss
        if tcb.snd_una == tcb.snd_max and tcb.snd_buf:  # resuming after idle (RFC 5681 §4.1)
            tcb.cc.on_idle(tcb.now(), tcb.rto)
        # new data
        while True:
            offset = (tcb.snd_nxt - tcb.snd_buf_seq) & MASK
            if offset >= HALF:
                offset = 0
            pending = len(tcb.snd_buf) - offset
            if pending <= 0:
                break
            window = min(tcb.snd_wnd, tcb.cc.cwnd)
            if limited_transmit:
                window = tcb.snd_wnd
                limited_transmit = False
            flight = (tcb.snd_nxt - tcb.snd_una) & MASK
            if tcb.recovery and tcb.sack_ok:
                flight = max(0, flight - tcb.sacked_bytes())
            usable = window - flight
            if tcb.snd_wnd == 0:
                if tcb.in_flight() == 0 and (tcb.t_main is None
                                             or tcb.t_main.callback is not _persist_timeout):
                    tcb.set_main(max(tcb.rto, self.rexmit_min * MS), _persist_timeout)
                break
            if usable <= 0:
                break
            length = min(mss, pending, usable)
            if length < mss and length < pending and length < tcb.snd_wnd // 2:
                # wait for a full segment's worth of window (silly window avoidance), unless
                # half the peer's window can go: a window below one MSS must not stall us
                break
            if length < mss and not tcb.nodelay and flight and not tcb.shut_wr:
                break  # Nagle (RFC 896): one small segment in flight at a time
            if not self.send_data(tcb, tcb.snd_nxt, length):
                if tcb.mss < mss:
                    mss = tcb.mss
                    continue  # the MSS shrank to the interface's MTU: try again
                break
            sent = True
        # FIN
        if tcb.shut_wr and tcb.fin_seq is None and state in (ESTABLISHED, CLOSE_WAIT):
            fin = (tcb.snd_buf_seq + len(tcb.snd_buf)) & MASK
            if tcb.snd_nxt == fin:
                tcb.fin_seq = fin
                tcb.state = FIN_WAIT_1 if state == ESTABLISHED else LAST_ACK
        if tcb.fin_seq is not None and tcb.snd_nxt == tcb.fin_seq:
            self.send_segment(tcb, tcb.fin_seq, FIN | ACK, b"")
            tcb.snd_nxt = (tcb.fin_seq + 1) & MASK
            if _lt(tcb.snd_max, tcb.snd_nxt):
                tcb.snd_max = tcb.snd_nxt
            if tcb.t_main is None or tcb.t_main.callback is not _rexmt_timeout:
                tcb.set_main(tcb.rto, _rexmt_timeout)
            sent = True
        if sent:
            return
        # a window update worth telling (receiver SWS avoidance, RFC 9293 §3.8.6.2.2)
        wnd = min(tcb.rcv_wnd(), 65535 << tcb.rcv_wscale)  # what the header can carry
        adv_room = _diff((tcb.rcv_nxt + wnd) & MASK, tcb.rcv_adv)
        if adv_room >= min(2 * mss, tcb.rcv_space // 2):
            self.stats.sndwinup += 1
            tcb.want_ack = True
            tcb.unacked_segs = 2
        if tcb.want_ack and (tcb.unacked_segs >= 2 or not self.delayed_ack):
            self.ack_now(tcb)

    def send_data(self, tcb: Tcb, seq: int, length: int, rexmit: bool = False) -> bool:
        """Send `length` bytes of the buffer starting at sequence number `seq`."""
        offset = (seq - tcb.snd_buf_seq) & MASK
        if offset >= HALF or offset >= len(tcb.snd_buf):
            return False
        data = bytes(tcb.snd_buf[offset:offset + length])
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
            self.send_segment(tcb, seq, flags, data)
        except OSError:  # EMSGSIZE: DF is set and the interface's MTU shrank below our MSS
            mss = _offer_mss(self, tcb.faddr) - (12 if tcb.ts_ok else 0)
            if 64 <= mss < tcb.mss:
                tcb.mss = mss
                tcb.cc.set_mss(mss)
                self.stats.pmtud_updates += 1
            return False
        st = self.stats
        retransmission = _lt(seq, tcb.snd_max)
        if retransmission:
            st.sndrexmitpack += 1
            st.sndrexmitbyte += len(data)
            if tcb.rtt_seq is not None and _leq(seq, tcb.rtt_seq):
                tcb.rtt_seq = None  # Karn: never time a retransmitted segment
        elif tcb.rtt_seq is None and not tcb.ts_ok:
            tcb.rtt_seq, tcb.rtt_start = seq, tcb.now()
        if not rexmit:
            tcb.snd_nxt = end
        if _lt(tcb.snd_max, end):
            tcb.snd_max = end
        if tcb.t_main is None or tcb.t_main.callback is not _rexmt_timeout:
            tcb.set_main(tcb.rto, _rexmt_timeout)
        return True

    # -- ICMP errors ------------------------------------------------------------------------------
    def ctlinput(self, type_: int, code: int, src: int, dst: int, sport: int, dport: int,
                 seq: int, mtu: int) -> None:
        from vimage.wire import icmp as wicmp

        tcb = self.conns.get((src, sport, dst, dport))
        if tcb is None or not (_leq(tcb.snd_una, seq) and _lt(seq, tcb.snd_max)):
            return  # RFC 5927: the quoted sequence number must be in flight
        if type_ == wicmp.UNREACH and code == wicmp.UNREACH_NEEDFRAG and mtu:
            new_mss = mtu - 40 - (12 if tcb.ts_ok else 0)
            if 64 <= new_mss < tcb.mss:
                tcb.mss = new_mss
                tcb.cc.set_mss(new_mss)
                self.stats.pmtud_updates += 1
                tcb.snd_nxt = tcb.snd_una  # resend what was too big
                self.output(tcb)
            return
        if type_ == wicmp.UNREACH and tcb.state == SYN_SENT:
            err = errno.ECONNREFUSED if code in (2, 3) else errno.EHOSTUNREACH
            if tcb.rexmt_shift >= 3 or code in (2, 3):
                self.drop(tcb, err)
            else:
                tcb.so_error = err  # soft error: reported if the connect times out


# -- timers (module functions: a Timer holds the function and the tcb) ----------------------------
def _rexmt_timeout(tcb: Tcb) -> None:
    tcp = tcb.tcp
    st = tcp.stats
    tcb.t_main = None
    if tcb.state == CLOSED:
        return
    st.rexmttimeo += 1
    tcb.rexmt_shift += 1
    limit = MAX_SYN_REXMT if tcb.state in (SYN_SENT, SYN_RECEIVED) else MAX_REXMT
    if tcb.rexmt_shift > limit:
        st.timeoutdrop += 1
        tcp.drop(tcb, tcb.so_error or errno.ETIMEDOUT, send_rst=True)
        return
    tcb.rto = min(tcb.rto * 2, MAX_RTO_NS)
    if tcb.state in (SYN_SENT, SYN_RECEIVED):
        tcp.output(tcb, force_syn=True)
        tcb.set_main(tcb.rto, _rexmt_timeout)
        return
    # RFC 6298 5.4-5.6 and RFC 5681: collapse the window, go back to SND.UNA
    tcb.cc.on_timeout(tcb.now(), tcb.in_flight())
    tcb.recovery = False
    tcb.dupacks = 0
    tcb.sacked = []
    tcb.rtt_seq = None
    tcb.snd_nxt = tcb.snd_una
    tcb.set_main(tcb.rto, _rexmt_timeout)
    if tcb.fin_seq is not None and tcb.snd_una == tcb.fin_seq:
        tcp.send_segment(tcb, tcb.fin_seq, FIN | ACK, b"")
        tcb.snd_nxt = (tcb.fin_seq + 1) & MASK
        return
    if tcb.snd_buf:
        tcp.send_data(tcb, tcb.snd_una, tcb.mss)
    tcp.output(tcb)


def _persist_timeout(tcb: Tcb) -> None:
    """Zero window: probe with one byte beyond it (RFC 9293 §3.8.6.1)."""
    tcp = tcb.tcp
    tcb.t_main = None
    if tcb.state == CLOSED or tcb.snd_wnd:
        return
    tcp.stats.persisttimeo += 1
    tcp.stats.sndprobe += 1
    offset = (tcb.snd_nxt - tcb.snd_buf_seq) & MASK
    if offset < len(tcb.snd_buf):
        tcp.send_segment(tcb, tcb.snd_nxt, ACK, bytes(tcb.snd_buf[offset:offset + 1]))
        end = (tcb.snd_nxt + 1) & MASK
        if _lt(tcb.snd_max, end):
            tcb.snd_max = end  # the peer may keep the byte: its ACK must be acceptable
    tcb.rexmt_shift = min(tcb.rexmt_shift + 1, MAX_REXMT)
    delay = min(max(tcb.rto, tcp.rexmit_min * MS) << min(tcb.rexmt_shift, 6), MAX_RTO_NS)
    tcb.set_main(delay, _persist_timeout)


def _delack_timeout(tcb: Tcb) -> None:
    tcb.t_delack = None
    if tcb.want_ack and tcb.state != CLOSED:
        tcb.tcp.stats.delack += 1
        tcb.tcp.ack_now(tcb)


def _close_timeout(tcb: Tcb) -> None:
    """TIME_WAIT over, or a closed socket's FIN_WAIT_2 has waited long enough."""
    tcb.t_main = None
    if tcb.state == FIN_WAIT_2:
        tcb.tcp.stats.closed += 1
    tcb.tcp.detach(tcb)


def arm_keepalive(tcb: Tcb, delay_ms: int | None = None) -> None:
    """Start the keepalive timer: keepidle, or `delay_ms` (keepinit while connecting)."""
    if tcb.t_keep is not None:
        tcb.t_keep.cancel()
    tcb.keep_probes = 0
    tcp = tcb.tcp
    delay = tcp.keepidle if delay_ms is None else delay_ms
    tcb.t_keep = tcp.vnet.kernel.sched.call_later(delay * MS, _keep_timeout, tcb,
                                                  owner=tcp.vnet)


def _keep_timeout(tcb: Tcb) -> None:
    tcp = tcb.tcp
    tcb.t_keep = None
    if tcb.state in (SYN_SENT, SYN_RECEIVED):  # keepinit: the connection took too long
        tcp.stats.keeptimeo += 1
        tcp.drop(tcb, tcb.so_error or errno.ETIMEDOUT)
        return
    if tcb.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, FIN_WAIT_2, CLOSING) \
            or not tcb.keepalive:
        return
    idle = tcb.now() - tcb.rcv_time
    if idle < tcp.keepidle * MS:  # the peer spoke (or answered a probe) since: wait again
        tcb.keep_probes = 0
        tcb.t_keep = tcp.vnet.kernel.sched.call_later(tcp.keepidle * MS - idle, _keep_timeout,
                                                      tcb, owner=tcp.vnet)
        return
    tcp.stats.keeptimeo += 1
    if tcb.keep_probes >= tcp.keepcnt:
        tcp.stats.keepdrops += 1
        tcp.drop(tcb, errno.ETIMEDOUT, send_rst=True)
        return
    tcb.keep_probes += 1
    tcp.stats.keepprobe += 1
    # a probe: an old sequence number that forces the peer to ACK (RFC 1122 4.2.3.6)
    tcp.send_segment(tcb, (tcb.snd_una - 1) & MASK, ACK, b"")
    tcb.t_keep = tcp.vnet.kernel.sched.call_later(tcp.keepintvl * MS, _keep_timeout, tcb,
                                                  owner=tcp.vnet)


def _offer_mss(tcp: TcpState, faddr: int) -> int:
    """The MSS we can receive from `faddr`: the outgoing interface's MTU minus 40."""
    try:
        route = tcp.vnet.ip.route_to(faddr)
    except OSError:
        return tcp.mssdflt
    mtu = route.mtu or route.ifp.mtu
    return max(mtu - 40, 64)


def icmp_quote(vnet: Vnet, type_: int, code: int, quoted: bytes, rest: int) -> None:
    """An ICMP error quoted a TCP segment of ours: hand it to the connection."""
    qhlen = (quoted[0] & 0x0F) << 2
    if len(quoted) < qhlen + 8:
        return
    src = int.from_bytes(quoted[12:16], "big")
    dst = int.from_bytes(quoted[16:20], "big")
    sport = int.from_bytes(quoted[qhlen:qhlen + 2], "big")
    dport = int.from_bytes(quoted[qhlen + 2:qhlen + 4], "big")
    seq = int.from_bytes(quoted[qhlen + 4:qhlen + 8], "big")
    vnet.tcp.ctlinput(type_, code, src, dst, sport, dport, seq, rest & 0xFFFF)


def vnet_attach(vnet: Vnet) -> None:
    vnet.tcp = TcpState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.tcp.clear()


__all__ = ["STATE_NAMES", "Tcb", "TcpState", "icmp_mod"]
