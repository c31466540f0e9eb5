"""TCP (RFC 9293) for one vnet: the connection table, input, output and timers.

The engine follows the order of RFC 9293 §3.10.7 ("SEGMENT ARRIVES") and FreeBSD's
tcp_input.c: find the connection, handle LISTEN and SYN-SENT, then check the
sequence number, RST (RFC 5961 challenge ACKs), SYN, ACK, data and FIN.

Options: MSS, window scaling and timestamps (RFC 7323), SACK (RFC 2018) and D-SACK
(RFC 2883) with SACK-based loss recovery (RFC 6675: pipe, IsLost, NextSeg and the
rescue retransmission). Timers: retransmission (RFC 6298),
persist, delayed ACK, keepalive, FIN_WAIT_2 and TIME_WAIT. Congestion control is
pluggable (`tcp_cc`, NewReno or CUBIC per `net.inet.tcp.cc.algorithm`).

Sequence numbers are plain ints modulo 2**32; `_lt(a, b)` and friends compare
them in sequence space.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import weakref
from typing import TYPE_CHECKING, Any

from vimage.net.route import RTF_GATEWAY
from vimage.netinet import icmp as icmp_mod
from vimage.netinet.in_ import INADDR_BROADCAST
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
TCP_MINMSS = 216  # FreeBSD's floor for a peer's MSS option and a path MTU (tcp_var.h)
MAX_WSCALE = 14
MAX_RTO_NS = 64 * NS_PER_S
MAX_REXMT = 12  # retransmissions before the connection is dropped (FreeBSD TCP_MAXRXTSHIFT)
MAX_SYN_REXMT = 6
SYNCACHE_HASHSIZE = 512  # FreeBSD's default net.inet.tcp.syncache.hashsize
SYNCOOKIE_LIFETIME_NS = 15 * NS_PER_S  # an overflowed bucket answers with cookies this long
DUPTHRESH = 3  # RFC 5681 / RFC 6675 DupThresh
# errors of ip output that are "soft" (FreeBSD t_softerror): the connection goes on,
# and reports the error instead of ETIMEDOUT if it times out
SOFT_ERRORS = frozenset({errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN,
                         errno.ENETUNREACH})

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
    Oid("net.inet.tcp.syncache.rexmtlimit", "tcp", "syncache_rexmtlimit",
        "Limit on SYN/ACK retransmissions", 0, 64),
    Oid("net.inet.tcp.syncache.bucketlimit", "tcp", "syncache_bucketlimit",
        "Per-bucket hash limit for syncache", 1, 2**31 - 1),
    Oid("net.inet.tcp.syncache.cachelimit", "tcp", "syncache_cachelimit",
        "Overall entry limit for syncache", 1, 2**31 - 1),
    Oid("net.inet.tcp.syncache.rst_on_sock_fail", "tcp", "rst_on_sock_fail",
        "Send reset on socket allocation failure (a full listen queue)", 0, 1),
    Oid("net.inet.tcp.sack.enable", "tcp", "sack_enable", "Enable SACK (RFC 2018)", 0, 1),
    Oid("net.inet.tcp.rfc1323", "tcp", "rfc1323",
        "Enable window scaling and timestamps (RFC 7323)", 0, 1),
    Oid("net.inet.tcp.mssdflt", "tcp", "mssdflt", "Default maximum segment size", 88, 65535),
    Oid("net.inet.tcp.minmss", "tcp", "minmss", "Minimum TCP Maximum Segment Size", 64, 65535),
    Oid("net.inet.tcp.sendspace", "tcp", "sendspace", "Initial send socket buffer size",
        1024, 2**26),
    Oid("net.inet.tcp.recvspace", "tcp", "recvspace", "Initial receive socket buffer size",
        1024, 2**26),
    Oid("net.inet.tcp.blackhole", "tcp", "blackhole",
        "Do not send RST on segments to closed ports", 0, 1),
    Oid("net.inet.tcp.ack_war_timewindow", "tcp", "ack_war_timewindow",
        "Time window (ms) of the ACK war limit (0: no limit)", 0, 2**31 - 1),
    Oid("net.inet.tcp.ack_war_cnt", "tcp", "ack_war_cnt",
        "ACKs answering unacceptable segments per time window (0: no limit)", 0, 2**31 - 1),
    Oid("net.inet.tcp.reass.maxqueuelen", "tcp", "reass_maxqueuelen",
        "Maximum number of TCP segments per reassembly queue", 0, 2**31 - 1),
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
    ("rcvreassfull", "\t{} discarded due to full reassembly queue"),
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
    ("sack_rexmit_bytes", "{} byte rexmits in SACK recovery episodes"),
    ("sack_rcv_blocks", "{} SACK options (SACK blocks) received"),
    ("sack_send_blocks", "{} SACK options (SACK blocks) sent"),
    ("fastrexmit", "{} fast retransmits"),
    ("challenge_acks", "{} challenge ACKs sent"),
    ("ack_war_drops", "{} ACKs to unacceptable segments not sent (ACK war limit)"),
    ("sc_added", "{} syncache entries added"),
    ("sc_retransmitted", "\t{} retransmitted"),
    ("sc_dupsyn", "\t{} dupsyn"),
    ("sc_dropped", "\t{} dropped"),
    ("sc_completed", "\t{} completed"),
    ("sc_bucketoverflow", "\t{} bucket overflow"),
    ("sc_stale", "\t{} stale"),
    ("sc_zonefail", "\t{} zone failures"),
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
        "ack_war_count",
        "ack_war_end",
        "backlog",
        "cc",
        "delack_due",
        "dsack",
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
        "main_due",
        "mss",
        "nodelay",
        "ooo",
        "ooo_bytes",
        "ooo_data",
        "peer_mss",
        "rcv_adv",
        "rcv_buf",
        "rcv_nxt",
        "rcv_space",
        "rcv_time",
        "rcv_wscale",
        "recover",
        "recovery",
        "rescue_rxt",
        "rexmt_high",
        "rexmt_shift",
        "rto",
        "rtt_seq",
        "rtt_start",
        "rttvar",
        "sack_last",
        "sack_ok",
        "sacked",
        "sc_bucket",
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
        "softerror",
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
        self.sc_bucket = -1  # the syncache bucket of an embryonic connection, or -1
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
        # the out-of-order queue: contiguous blocks that neither overlap nor touch, sorted
        # in sequence space from RCV.NXT (FreeBSD's coalesced tseg_qent entries)
        self.ooo: list[int] = []  # their starts
        self.ooo_data: list[bytearray] = []
        self.ooo_bytes = 0
        self.sacked: list[tuple[int, int]] = []  # peer's SACK scoreboard, merged blocks
        self.sack_last = 0  # sequence number of the out-of-order segment queued last
        self.dsack: tuple[int, int] | None = None  # a duplicate to report (RFC 2883)
        self.mss = self.peer_mss = tcp.mssdflt
        self.ts_ok = self.sack_ok = self.ws_ok = False
        self.ts_recent = 0
        self.ts_offset = 0  # set with the ISS, once the 4-tuple is known
        self.srtt = self.rttvar = 0
        self.rto = tcp.rexmit_initial * MS
        self.rexmt_shift = 0
        self.rtt_seq: int | None = None
        self.rtt_start = 0
        self.cc = create_cc(tcp.cc_algorithm, self.mss)
        self.dupacks = 0
        self.recovery = False
        # RFC 6675: RecoveryPoint (recover), HighRxt (the end of the highest
        # retransmission, rexmt_high) and RescueRxt (rescue_rxt)
        self.recover = self.rexmt_high = 0
        self.rescue_rxt: int | None = None
        self.fin_seq: int | None = None  # sequence number of our FIN once it is queued
        self.fin_rcvd = False
        self.fin_ooo: int | None = None  # sequence number of a FIN that came out of order
        self.shut_wr = self.user_closed = False
        self.so_error = 0
        self.softerror = 0  # FreeBSD t_softerror: reported instead of ETIMEDOUT
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
        self.main_due = 0  # when t_main is due (a retransmission timer may fire early)
        self.t_delack: Timer | None = None
        self.delack_due = 0  # when the delayed ACK is due (its timer may fire early)
        self.t_keep: Timer | None = None
        self.ack_war_end = 0  # when the current ACK war window ends (ns)
        self.ack_war_count = 0  # ACKs sent to unacceptable segments in that window

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

    def set_iss(self, iss: int) -> None:
        """Our initial sequence number: the send sequence variables start from it. The
        timestamp offset is fixed at the same time (see TcpState.ts_offset)."""
        self.iss = iss
        self.ts_offset = self.tcp.ts_offset(self.key)
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_buf_seq = (iss + 1) & MASK
        self.recover = self.rexmt_high = iss

    def notify(self) -> None:
        """Wake whoever waits on this connection's socket: threads, and a selector."""
        self.tcp.vnet.kernel.sched.cond.notify_all()
        sock = self.sock
        if sock is not None and sock._poll is not None:
            sock._poll.touch(sock)

    # -- timers -----------------------------------------------------------------------------------
    def set_main(self, delay_ns: int, callback: Any) -> None:
        """Arm the main timer. Restarting the retransmission timer later than it is armed
        (every ACK does) only moves `main_due`: the timer fires early, sees it, and waits
        for the rest; the timer heap sees one timer per RTO instead of one per ACK."""
        sched = self.tcp.vnet.kernel.sched
        due = sched.now_ns() + delay_ns
        self.main_due = due
        timer = self.t_main
        if timer is not None:
            if callback is _rexmt_timeout and timer.callback is callback and timer.when <= due:
                return
            timer.cancel()
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

    __slots__ = (
        "ack_war_cnt", "ack_war_timewindow", "blackhole", "cc_algorithm", "conns", "delacktime",
        "delayed_ack", "finwait2_timeout", "keepcnt", "keepidle", "keepinit", "keepintvl",
        "listeners", "minmss", "msl", "mssdflt", "path_mtu_discovery", "rcvbuf_max",
        "reass_maxqueuelen", "recvspace", "rexmit_initial", "rexmit_min", "rexmit_slop", "rfc1323",
        "rst_on_sock_fail", "sack_enable", "secret", "sendspace", "stats", "syncache",
        "syncache_bucketlimit", "syncache_cachelimit", "syncache_count", "syncache_overflow",
        "syncache_rexmtlimit", "syncookies", "vnet"
    )

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
        # the syncache (FreeBSD tcp_syncache.c): embryonic connections by hash bucket, the
        # oldest first, and when each bucket last overflowed
        self.syncache: dict[int, list[Tcb]] = {}
        self.syncache_count = 0
        self.syncache_overflow: dict[int, int] = {}
        self.syncache_rexmtlimit = 3
        self.syncache_bucketlimit = 30
        self.syncache_cachelimit = SYNCACHE_HASHSIZE * 30
        self.rst_on_sock_fail = 1
        self.sack_enable = 1
        self.rfc1323 = 1
        self.mssdflt = DEFAULT_MSS
        self.minmss = TCP_MINMSS
        self.sendspace = 65536
        self.recvspace = 65536
        self.rcvbuf_max = 2**24
        self.blackhole = 0
        self.ack_war_timewindow = 1000  # FreeBSD's defaults: 5 ACKs per second
        self.ack_war_cnt = 5
        self.path_mtu_discovery = 1
        self.reass_maxqueuelen = 100  # FreeBSD's default (tcp_reass.c)
        self.secret = vnet.secret[:16]  # per vnet (RFC 6528)

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
        start = self.vnet.rng.randrange(span)  # the vnet's own stream: see Vnet.rng
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
        if tcb.sc_bucket >= 0:
            self.syncache_remove(tcb)
        tcb.state = CLOSED
        tcb.notify()

    def drop(self, tcb: Tcb, err: int, send_rst: bool = False) -> None:
        """Abort a connection with `err` for its socket (RST sent if asked).

        A timeout reports the last soft error instead, as FreeBSD's tcp_drop: a connect
        to a host whose ARP entry is down fails with EHOSTDOWN, not ETIMEDOUT.
        """
        if err == errno.ETIMEDOUT and tcb.softerror:
            err = tcb.softerror
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
        self.syncache.clear()
        self.syncache_overflow.clear()
        self.syncache_count = 0

    # -- output of one segment --------------------------------------------------------------------
    def send_segment(self, tcb: Tcb, seq: int, flags: int, data: bytes,
                     ack: int | None = None, syn_options: bool = False,
                     sack: tuple[tuple[int, int], ...] = (), probe: bool = False) -> None:
        """Build and send one segment of `tcb`; counts it as FreeBSD's tcp_output does.

        Data below SND.MAX is a retransmission (sndrexmitpack/byte), a window probe
        is counted by its caller (sndprobe), the rest is new data (sndpack/byte).
        """
        st = self.stats
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
        else:  # the common case: the timestamp option only
            tsval = (self.vnet.kernel.sched.now_ns() // MS + tcb.ts_offset) & MASK
            segment = wtcp.build_ts(tcb.lport, tcb.fport, seq, ack_field, flags, window, data,
                                    tcb.laddr, tcb.faddr, tsval,
                                    tcb.ts_recent if has_ack else 0)
        st.sndtotal += 1
        if data:
            if probe:
                pass
            elif 0 < (tcb.snd_max - seq) & MASK < HALF:  # below SND.MAX: a retransmission
                st.sndrexmitpack += 1
                st.sndrexmitbyte += len(data)
            else:
                st.sndpack += 1
                st.sndbyte += len(data)
        elif flags & (SYN | FIN | RST):
            st.sndctrl += 1
        else:
            st.sndacks += 1
        if has_ack:
            tcb.rcv_adv = (ack + (window << shift)) & MASK
            tcb.want_ack = False  # a delayed ACK timer still armed finds nothing to do
            tcb.unacked_segs = 0
        try:
            self.vnet.ip.output(PROTO_TCP, tcb.laddr, tcb.faddr, segment, ttl=tcb.ip_ttl,
                                tos=tcb.ip_tos, df=bool(self.path_mtu_discovery))
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise
            if exc.errno in SOFT_ERRORS:
                tcb.softerror = self._soft_error(tcb, exc.errno)

    def _soft_error(self, tcb: Tcb, err: int) -> int:
        """ARP gave up on the next hop: EHOSTDOWN for a neighbour, EHOSTUNREACH for a
        gateway (FreeBSD's arpresolve); our ARP says EHOSTDOWN for both."""
        if err == errno.EHOSTDOWN:
            with contextlib.suppress(OSError):
                if self.vnet.ip.route_to(tcb.faddr).flags & RTF_GATEWAY:
                    return errno.EHOSTUNREACH
        return err

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
        if dst >> 28 == 0xE or dst == INADDR_BROADCAST or dst in self.vnet.ip.bcast:
            return  # TCP is unicast only (multicast, broadcast)
        tcb = self.conns.get((dst, seg.dport, src, seg.sport))
        if tcb is None:
            tcb = self.conns.get((0, seg.dport, src, seg.sport))
        elif tcb.state == ESTABLISHED and self.fast_input(tcb, seg):
            return
        if tcb is not None and tcb.state == TIME_WAIT:
            if not self.time_wait_input(tcb, seg):
                return
            tcb = None  # recycled: the new SYN goes to a listener
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

    def fast_input(self, tcb: Tcb, seg: wtcp.TcpRepr) -> bool:
        """Header prediction (FreeBSD tcp_input's fast path): the next in-sequence segment
        of an established connection that is a plain ACK of new data or plain in-order
        data, with nothing unusual (no SACK, no recovery, the same window). False if the
        segment needs the full processing of established_input."""
        if seg.flags & 0x37 != ACK or seg.seq != tcb.rcv_nxt:  # FIN SYN RST URG, no ACK
            return False
        ts = seg.options.ts
        if tcb.ts_ok and (ts is None or 0 < (tcb.ts_recent - ts[0]) & MASK < HALF):
            return False  # no timestamp, or an old one (PAWS): the slow path
        if seg.options.sack or tcb.recovery or tcb.sacked or tcb.snd_nxt != tcb.snd_max:
            return False
        window = seg.window << tcb.snd_wscale
        if not window or not tcb.snd_wnd:
            return False  # zero windows and the persist timer: the slow path
        data = seg.payload
        ack = seg.ack
        if data:
            if ack != tcb.snd_una or tcb.ooo or tcb.fin_ooo is not None or tcb.user_closed \
                    or len(data) > tcb.rcv_space - len(tcb.rcv_buf):
                return False
        elif ack == tcb.snd_una or not 0 < (tcb.snd_max - ack) & MASK <= (
                tcb.snd_max - tcb.snd_una) & MASK:  # not an ACK of new, sent data
            return False
        seq = seg.seq
        tcb.rcv_time = self.vnet.kernel.sched.now_ns()
        if ts is not None:
            tcb.ts_recent = ts[0]
        tcb.snd_wl1, tcb.snd_wl2 = seq, ack
        tcb.snd_wnd = window  # (an ACK of new data or data: no pure window update)
        if data:
            st = self.stats
            tcb.rcv_buf += data
            tcb.rcv_nxt = (seq + len(data)) & MASK
            st.rcvpack += 1
            st.rcvbyte += len(data)
            self.schedule_ack(tcb)
            tcb.notify()
        else:
            self._ack_advance(tcb, ack, seg)
            tcb.dupacks = 0
        self.output(tcb)
        return True

    def time_wait_input(self, tcb: Tcb, seg: wtcp.TcpRepr) -> bool:
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
            if tcb.ts_ok and ts is not None and self.rfc1323:
                newer = _lt(tcb.ts_recent, ts[0]) or (
                    ts[0] == tcb.ts_recent and _lt(tcb.rcv_nxt, seg.seq))
            else:
                newer = _lt(tcb.rcv_nxt, seg.seq)
            if newer:
                self.detach(tcb)
                return True
        if not flags & ACK:
            return False
        payload = len(seg.payload)
        if flags & FIN and (seg.seq + payload + 1) & MASK == tcb.rcv_nxt:
            tcb.set_main(2 * self.msl * MS, _close_timeout)  # the peer's FIN again
        if flags != ACK or payload or seg.seq != tcb.rcv_nxt or seg.ack != tcb.snd_nxt:
            self.ack_now(tcb)
        return False

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
        bucket = self.syncache_bucket((dst, seg.dport, src, seg.sport))
        if not self.syncache_admit(bucket):
            if self.syncookies:
                self.send_cookie(listener, seg, src, dst)
            else:
                st.sc_dropped += 1
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
        tcb.set_iss(self.new_iss(tcb))
        tcb.snd_wnd = seg.window  # unscaled in a SYN
        tcb.snd_wl1, tcb.snd_wl2 = seg.seq, tcb.iss
        self.attach(tcb)
        tcb.sc_bucket = bucket
        self.syncache.setdefault(bucket, []).append(tcb)
        self.syncache_count += 1
        st.sc_added += 1
        self.output(tcb)  # SYN-ACK, and the retransmission timer

    # -- the syncache -----------------------------------------------------------------------------
    def syncache_bucket(self, key: tuple[int, int, int, int]) -> int:
        """A keyed hash: a flood cannot aim at the bucket of a connection it wants evicted."""
        h = hashlib.blake2s(repr(key).encode(), key=self.secret, digest_size=4,
                            person=b"syncache")
        return int.from_bytes(h.digest(), "big") % SYNCACHE_HASHSIZE

    def syncache_admit(self, bucket: int) -> bool:
        """Room for one more embryonic connection in `bucket`? (FreeBSD syncache_add and
        syncache_insert.) A full bucket loses its oldest entry (bucket overflow); a full
        cache loses the oldest of this bucket (zone failure), and if the bucket has none
        the SYN gets no entry. After an overflow, and with syncookies on, the bucket's
        SYNs are answered with cookies only for SYNCOOKIE_LIFETIME: a flood keeps no
        state and cannot evict entries for ever."""
        now = self.vnet.kernel.sched.now_ns()
        last = self.syncache_overflow.get(bucket)
        if last is not None:
            if now - last < SYNCOOKIE_LIFETIME_NS:
                if self.syncookies:
                    return False
            else:
                del self.syncache_overflow[bucket]
        entries = self.syncache.get(bucket, ())
        if len(entries) >= self.syncache_bucketlimit:
            self.stats.sc_bucketoverflow += 1
        elif self.syncache_count >= self.syncache_cachelimit:
            self.stats.sc_zonefail += 1
            if not entries:
                return False
        else:
            return True
        self.syncache_overflow[bucket] = now
        self.detach(entries[0])
        return True

    def syncache_remove(self, tcb: Tcb) -> None:
        entries = self.syncache.get(tcb.sc_bucket)
        if entries is not None and tcb in entries:
            entries.remove(tcb)
            self.syncache_count -= 1
            if not entries:
                del self.syncache[tcb.sc_bucket]
        tcb.sc_bucket = -1

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
        """The MSS from the peer's offer, floored at net.inet.tcp.minmss so a tiny offer
        cannot make us send a flood of tiny segments (FreeBSD tcp_mss_update), and our
        own interface's MTU."""
        mss = min(max(tcb.peer_mss, self.minmss), _offer_mss(self, tcb.faddr))
        if tcb.ts_ok:
            mss -= 12
        tcb.mss = max(mss, 64)
        tcb.cc.set_mss(tcb.mss)

    def new_iss(self, tcb: Tcb) -> int:
        """RFC 6528: a keyed hash of the 4-tuple plus a 4 µs clock; the key is this
        vnet's secret, so another vnet learns nothing of our sequence space."""
        h = hashlib.blake2s(tcb.key.__repr__().encode(), key=self.secret, digest_size=4)
        return (int.from_bytes(h.digest(), "big") + tcb.now() // 4000) & MASK

    def ts_offset(self, key: tuple[int, int, int, int]) -> int:
        """The timestamp clock's offset for one connection: a keyed hash of its 4-tuple
        (RFC 7323 §7.1, FreeBSD tcp_new_ts_offset), so timestamps reveal neither our
        uptime nor another connection's clock."""
        h = hashlib.blake2s(repr(key).encode(), key=self.secret, digest_size=4,
                            person=b"tsoffset")
        return int.from_bytes(h.digest(), "big")

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
        """A valid cookie ACK: the handshake is complete, make the connection.

        With the listen queue still full the socket cannot be made (FreeBSD's sonewconn
        fails in syncache_socket): a listen queue overflow, answered with a reset when
        net.inet.tcp.syncache.rst_on_sock_fail is set (the default), else dropped so
        that a retransmission from the peer may find room.
        """
        self.stats.cookiesrcvd += 1
        if len(listener.accept_q or ()) >= listener.backlog:
            self.stats.listendrop += 1
            if self.rst_on_sock_fail:
                self.respond_rst(seg, src, dst)
            return
        iss = (seg.ack - 1) & MASK
        tcb = Tcb(self, dst, seg.dport, src, seg.sport)
        tcb.listener = listener
        tcb.nodelay, tcb.keepalive = listener.nodelay, listener.keepalive
        tcb.rcv_space, tcb.snd_space = listener.rcv_space, listener.snd_space
        tcb.ip_ttl, tcb.ip_tos = listener.ip_ttl, listener.ip_tos
        tcb.set_iss(iss)
        tcb.irs = (seg.seq - 1) & MASK
        tcb.rcv_nxt = seg.seq
        tcb.snd_una = tcb.snd_nxt = tcb.snd_max = seg.ack
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
        if tcb.sc_bucket >= 0:
            st.sc_completed += 1
            self.syncache_remove(tcb)
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
                if tcb.sc_bucket >= 0:
                    st.sc_dupsyn += 1
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
            self.drop_after_ack(tcb)
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
                if data and tcb.sack_ok:  # report the duplicate (D-SACK, RFC 2883)
                    end = (seq + len(data)) & MASK
                    tcb.dsack = (seq, end if _lt(end, rcv_nxt) else rcv_nxt)
            elif seglen:
                st.rcvpackafterwin += 1
                if wnd == 0 and seq == rcv_nxt:
                    st.rcvwinprobe += 1
                    self.ack_now(tcb)  # a window probe is always answered (tcp_input.c)
                    return
            self.drop_after_ack(tcb)
            return
        # 2. RST (RFC 5961 §3)
        if flags & RST:
            if seq == rcv_nxt:
                st.resets_rcvd += 1
                if tcb.state == SYN_RECEIVED and tcb.listener is not None and tcb.sock is None:
                    self.detach(tcb)  # back to LISTEN: just forget the embryo
                    return
                err = errno.ECONNREFUSED if tcb.state == SYN_RECEIVED else errno.ECONNRESET
                if tcb.state in (CLOSING, LAST_ACK):
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

    def ack_war_check(self, tcb: Tcb) -> bool:
        """May an ACK answer an unacceptable segment? (FreeBSD's tcp_ack_war_check)

        Every such ACK, challenge ACKs (RFC 5961 §3-5) included, counts against one
        allowance of `ack_war_cnt` ACKs per `ack_war_timewindow` ms and connection; a
        window starts with the first ACK after the previous one ended. Without it two
        ends that disagree on the sequence space (one spoofed segment is enough) ACK
        each other's ACKs for ever.
        """
        if not self.ack_war_timewindow or not self.ack_war_cnt:
            return True
        now = tcb.now()
        if now >= tcb.ack_war_end:
            tcb.ack_war_end = now + self.ack_war_timewindow * MS
            tcb.ack_war_count = 0
        if tcb.ack_war_count < self.ack_war_cnt:
            tcb.ack_war_count += 1
            return True
        self.stats.ack_war_drops += 1
        return False

    def drop_after_ack(self, tcb: Tcb) -> None:
        """Drop the segment, answering with an ACK if the ACK war limit allows
        (RFC 9293 §3.10.7.4 "send an acknowledgment ... drop", FreeBSD's dropafterack)."""
        if self.ack_war_check(tcb):
            self.ack_now(tcb)

    def challenge_ack(self, tcb: Tcb) -> None:
        if self.ack_war_check(tcb):
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
        if _lt(tcb.snd_max, ack):  # RFC 9293 §3.10.7.4, RFC 5961 §5.2: ACK once, drop
            st.rcvacktoomuch += 1
            self.drop_after_ack(tcb)
            return False
        if _lt(ack, (tcb.snd_una - tcb.snd_wnd - 1) & MASK if tcb.snd_wnd else tcb.snd_una) \
                and _lt(ack, tcb.snd_una) and (tcb.snd_una - ack) & MASK > 65535 * 4:
            self.challenge_ack(tcb)  # RFC 5961 §5: too old
            return False
        window = seg.window if seg.flags & SYN else seg.window << tcb.snd_wscale
        sack = seg.options.sack if tcb.sack_ok else ()
        new_sacked = 0
        if sack:
            st.sack_rcv_blocks += 1
            new_sacked = self.update_scoreboard(tcb, sack)
        if tcb.ts_ok and seg.options.ts is not None and _leq(seq, tcb.rcv_adv) and \
                _leq(seq, tcb.rcv_nxt):
            tcb.ts_recent = seg.options.ts[0]
        classic = (ack == tcb.snd_una and not seg.payload and window == tcb.snd_wnd and window
                   and tcb.in_flight() and not seg.flags & FIN)  # RFC 5681's duplicate ACK
        if _lt(tcb.snd_una, ack):
            self._ack_advance(tcb, ack, seg)
            tcb.dupacks = 0
        elif classic:
            st.rcvdupack += 1
        # RFC 6675 §2: with SACK a duplicate ACK is one that SACKs new data (even if it
        # moves SND.UNA); an ACK without SACK option counts by RFC 5681's rule, for a
        # peer that never sends blocks. Duplicated segments (D-SACK only) never count.
        if new_sacked if sack else classic:
            tcb.dupacks += 1
            self.dupack(tcb)
        # window update (RFC 9293: SND.WL1/WL2 rule)
        if _lt(tcb.snd_wl1, seq) or (tcb.snd_wl1 == seq and _leq(tcb.snd_wl2, ack)):
            if not seg.payload and ack == tcb.snd_wl2 and window > tcb.snd_wnd:
                st.rcvwinupd += 1  # a pure window update (as FreeBSD counts them)
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
        if tcb.rtt_seq is not None and _lt(tcb.rtt_seq, ack):
            if rtt is None:
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
            elif not tcb.sack_ok:
                # partial ACK (RFC 6582 §3.2 step 5): deflate the window by what was
                # acknowledged, add back one segment, resend the first unacknowledged one
                cc = tcb.cc
                cc.cwnd = max(cc.cwnd - acked, tcb.mss) + (tcb.mss if acked >= tcb.mss else 0)
                self.send_data(tcb, ack, tcb.mss, rexmit=True)
            # with SACK, output() sends what NextSeg() picks (RFC 6675 step C); an empty
            # scoreboard is no evidence of loss
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
        rto = tcb.srtt + max(MS, 4 * tcb.rttvar) + self.rexmit_slop * MS
        tcb.rto = min(max(rto, self.rexmit_min * MS), MAX_RTO_NS)

    def update_scoreboard(self, tcb: Tcb, blocks: tuple[tuple[int, int], ...]) -> int:
        """Merge the peer's SACK blocks into the scoreboard; the bytes newly SACKed."""
        before = tcb.sacked_bytes()
        board = list(tcb.sacked)
        una = tcb.snd_una
        for left, right in blocks:
            if not _lt(una, right) or _lt(tcb.snd_max, right) or not _lt(left, right):
                continue  # stale (a D-SACK below SND.UNA) or bogus block
            if _lt(left, una):
                left = una
            board.append((left, right))
        board.sort(key=lambda b: (b[0] - una) & MASK)
        merged: list[tuple[int, int]] = []
        for left, right in board:
            if merged and _leq(left, merged[-1][1]):
                if _lt(merged[-1][1], right):
                    merged[-1] = (merged[-1][0], right)
            else:
                merged.append((left, right))
        tcb.sacked = merged
        return tcb.sacked_bytes() - before

    def dupack(self, tcb: Tcb) -> None:
        """A duplicate ACK: limited transmit, or fast retransmit and loss recovery
        (RFC 5681 §3.2 and RFC 6582 without SACK, RFC 6675 §5 with it)."""
        st = self.stats
        if tcb.recovery:
            if not tcb.sack_ok:
                tcb.cc.cwnd += tcb.mss  # NewReno window inflation
            return  # output() sends what the window allows
        lost = tcb.sack_ok and bool(tcb.sacked) and self.is_lost(tcb, tcb.snd_una)
        if tcb.dupacks < DUPTHRESH and not lost:
            if not tcb.sack_ok:
                self.output(tcb, limited_transmit=True)  # RFC 3042
            return  # with SACK output() counts SACKed bytes out of the flight
        if not _leq(tcb.recover, tcb.snd_una):
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
        if self.send_data(tcb, una, length, rexmit=True) and tcb.sack_ok:
            st.sack_rexmits += 1
            st.sack_rexmit_bytes += length
        # HighRxt and RescueRxt: the end of this retransmission (RFC 6675 step 4.3)
        tcb.rexmt_high = tcb.rescue_rxt = (una + length) & MASK
        self.output(tcb)

    # -- data in ----------------------------------------------------------------------------------
    def receive_data(self, tcb: Tcb, seq: int, data: bytes, seg: wtcp.TcpRepr) -> None:
        st = self.stats
        rcv_nxt = tcb.rcv_nxt
        offset = _diff(rcv_nxt, seq)
        if offset > 0:  # the front was already received: report it (D-SACK, RFC 2883)
            if tcb.sack_ok:
                tcb.dsack = (seq, rcv_nxt)
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
            elif tcb.dsack is not None:
                self.ack_now(tcb)  # a partial duplicate: at once, with its D-SACK block
            else:
                self.schedule_ack(tcb)
            tcb.notify()
        else:
            st.rcvoopack += 1
            st.rcvoobyte += len(data)
            self._queue_ooo(tcb, seq, data)
            self.ack_now(tcb)  # a gap: duplicate ACK with SACK blocks

    def _queue_ooo(self, tcb: Tcb, seq: int, data: bytes) -> None:
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
            if self._ooo_full(tcb, len(data), True):
                return
            starts.insert(first, seq)
            blocks.insert(first, bytearray(data))
            tcb.ooo_bytes += len(data)
        else:
            if self._ooo_merge(tcb, first, last, lo, hi):
                return  # nothing new
            if self._ooo_full(tcb, len(data), False):
                return
            self._ooo_join(tcb, first, last, seq, lo, data)
        tcb.sack_last = seq

    def _ooo_full(self, tcb: Tcb, length: int, new_block: bool) -> bool:
        """No room for `length` more bytes, or for one more block if `new_block`: count
        the drop (FreeBSD tcps_rcvreassfull)."""
        limit = min(tcb.rcv_space // tcb.mss + 1, self.reass_maxqueuelen)
        if (new_block and len(tcb.ooo) >= limit) or tcb.ooo_bytes + length > tcb.rcv_space:
            self.stats.rcvreassfull += 1
            return True
        return False

    def _ooo_merge(self, tcb: Tcb, first: int, last: int, lo: int, hi: int) -> bool:
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

    def _ooo_join(self, tcb: Tcb, first: int, last: int, seq: int, lo: int,
                  data: bytes) -> None:
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

    def _drain_ooo(self, tcb: Tcb) -> None:
        """RCV.NXT moved: blocks it reached go to the receive buffer."""
        starts, blocks = tcb.ooo, tcb.ooo_data
        n = 0
        while n < len(starts) and _leq(starts[n], tcb.rcv_nxt):
            block = blocks[n]
            offset = (tcb.rcv_nxt - starts[n]) & MASK
            if offset < len(block):
                tcb.rcv_buf += block[offset:]
                tcb.rcv_nxt = (tcb.rcv_nxt + len(block) - offset) & MASK
            tcb.ooo_bytes -= len(block)
            n += 1
        if n:
            del starts[:n], blocks[:n]

    def _ooo_find(self, tcb: Tcb, left: int, right: int) -> int | None:
        """The index of the block holding [left, right), if one does."""
        rcv = tcb.rcv_nxt
        lo, hi = (left - rcv) & MASK, (right - rcv) & MASK
        i = bisect.bisect_right(tcb.ooo, lo, key=lambda s: (s - rcv) & MASK) - 1
        if i >= 0 and hi <= ((tcb.ooo[i] - rcv) & MASK) + len(tcb.ooo_data[i]) and lo <= hi:
            return i
        return None

    def sack_blocks(self, tcb: Tcb) -> tuple[tuple[int, int], ...]:
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
            i = self._ooo_find(tcb, *dsack)
            if i is not None:
                order.append(i)
        i = self._ooo_find(tcb, tcb.sack_last, (tcb.sack_last + 1) & MASK)
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

    def schedule_ack(self, tcb: Tcb) -> None:
        tcb.want_ack = True
        tcb.unacked_segs += 1
        if not self.delayed_ack or tcb.unacked_segs >= 2:
            return  # output() sends the ACK now (every second segment, RFC 1122)
        # the timer is left armed when an ACK goes (one timer per delay, not per ACK): an
        # earlier one still armed fires, sees `delack_due` and waits for the rest
        sched = self.vnet.kernel.sched
        tcb.delack_due = sched.now_ns() + self.delacktime * MS
        if tcb.t_delack is None:
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
                # time the SYN (or SYN-ACK) for a first RTT sample without timestamps
                # (RFC 6298); a second transmission of the ISS cannot be timed (Karn)
                if force_syn or tcb.rtt_seq is not None:
                    tcb.rtt_seq = None
                else:
                    tcb.rtt_seq, tcb.rtt_start = tcb.iss, tcb.now()
                tcb.snd_nxt = (tcb.iss + 1) & MASK
                if _lt(tcb.snd_max, tcb.snd_nxt):
                    tcb.snd_max = tcb.snd_nxt
                if tcb.t_main is None or tcb.t_main.callback is not _rexmt_timeout:
                    tcb.set_main(tcb.rto, _rexmt_timeout)
            return
        if tcb.snd_una == tcb.snd_max and tcb.snd_buf:  # resuming after idle (RFC 5681 §4.1)
            tcb.cc.on_idle(tcb.now(), tcb.rto)
        if tcb.recovery and tcb.sack_ok:
            sent = self.sack_output(tcb)
        elif (0 <= _diff(tcb.snd_nxt, tcb.snd_buf_seq) < len(tcb.snd_buf)) or not tcb.snd_wnd:
            sent = self.send_new_data(tcb, limited_transmit)
        else:
            sent = False  # nothing new to send
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
        mss = tcb.mss
        # a window update worth telling (receiver SWS avoidance, RFC 9293 §3.8.6.2.2)
        wnd = min(tcb.rcv_wnd(), 65535 << tcb.rcv_wscale)  # what the header can carry
        adv_room = _diff((tcb.rcv_nxt + wnd) & MASK, tcb.rcv_adv)
        if adv_room >= min(2 * mss, tcb.rcv_space // 2):
            self.stats.sndwinup += 1
            tcb.want_ack = True
            tcb.unacked_segs = 2
        if tcb.want_ack and (tcb.unacked_segs >= 2 or not self.delayed_ack):
            self.ack_now(tcb)

    def send_new_data(self, tcb: Tcb, limited_transmit: bool) -> bool:
        """Send new data as the windows, silly window avoidance and Nagle allow.

        SACKed bytes have left the network: they do not count against the congestion
        window (RFC 6675's pipe outside recovery), which lets the first duplicate ACKs
        clock out new segments (limited transmit, RFC 3042). Resending from SND.UNA after
        a timeout skips what the receiver SACKed since (RFC 6675 §5.1).
        """
        sent = False
        mss = tcb.mss
        while True:
            hole = 0
            sacked = 0
            if tcb.sacked:
                sacked, hole = self._sacked_below(tcb)
            offset = (tcb.snd_nxt - tcb.snd_buf_seq) & MASK
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
        return sent

    def _sacked_below(self, tcb: Tcb) -> tuple[int, int]:
        """The SACKed bytes below SND.NXT, and the room up to the next SACKed block when
        SND.NXT is below SND.MAX (resending after a timeout: SND.NXT leaves SACKed
        blocks at once)."""
        nxt = tcb.snd_nxt
        resending = _lt(nxt, tcb.snd_max)
        below = 0
        for left, right in tcb.sacked:
            if resending and _leq(left, nxt) and _lt(nxt, right):
                nxt = tcb.snd_nxt = right  # the receiver has this block: skip it
            if _leq(right, nxt):
                below += (right - left) & MASK
            elif resending:
                return below, (left - nxt) & MASK
            else:
                break
        return below, 0

    # -- SACK loss recovery (RFC 6675) ------------------------------------------------------------
    def is_lost(self, tcb: Tcb, seq: int) -> bool:
        """IsLost(): DupThresh SACKed blocks, or more than (DupThresh - 1) * SMSS SACKed
        bytes, above `seq`."""
        above = blocks = 0
        for left, right in tcb.sacked:
            if _leq(seq, left):
                above += (right - left) & MASK
                blocks += 1
        return blocks >= DUPTHRESH or above > (DUPTHRESH - 1) * tcb.mss

    def set_pipe(self, tcb: Tcb) -> int:
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
            if _lt(start, left):
                if not (blocks >= DUPTHRESH or above > limit):
                    pipe += (left - start) & MASK
                if _lt(start, rxt):
                    pipe += ((left if _lt(left, rxt) else rxt) - start) & MASK
            above -= (right - left) & MASK
            blocks -= 1
            start = right
        return pipe

    def next_seg(self, tcb: Tcb) -> tuple[int, int, int] | None:
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
        rxt = tcb.rexmt_high if _lt(una, tcb.rexmt_high) else una
        sacked = tcb.sacked
        rule3 = None
        if sacked:
            limit = (DUPTHRESH - 1) * mss
            above = tcb.sacked_bytes()
            blocks = len(sacked)
            start = una
            for left, right in sacked:
                first = rxt if _lt(start, rxt) else start
                if _lt(first, left):
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
            if _diff((una + tcb.snd_wnd) & MASK, tcb.snd_max) >= length:
                return tcb.snd_max, length, 2
        if rule3 is not None:
            return rule3
        # rule 4: the rescue retransmission
        if not sacked and pending <= 0 and (tcb.rescue_rxt is None
                                            or _lt(tcb.rescue_rxt, una)):
            top = tcb.snd_max
            if tcb.fin_seq is not None and _lt(tcb.fin_seq, top):
                top = tcb.fin_seq  # the FIN rides on the last data segment
            if _lt(una, top):
                length = min(mss, (top - una) & MASK)
                return (top - length) & MASK, length, 4
        return None

    def sack_output(self, tcb: Tcb) -> bool:
        """RFC 6675 §5 step (C): send while cwnd - pipe allows a full segment."""
        st = self.stats
        pipe = self.set_pipe(tcb)
        sent = False
        while tcb.cc.cwnd - pipe >= tcb.mss:
            nxt = self.next_seg(tcb)
            if nxt is None:
                break
            seq, length, rule = nxt
            if not self.send_data(tcb, seq, length, rexmit=rule != 2):
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
        if _lt(seq, tcb.snd_max):  # a retransmission (counted by send_segment)
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
            # FreeBSD tcp_ctlinput: the MTU is never taken below minmss + 40 bytes of headers
            mtu = max(mtu, self.minmss + 40)
            new_mss = mtu - 40 - (12 if tcb.ts_ok else 0)
            if 64 <= new_mss < tcb.mss:
                tcb.mss = new_mss
                tcb.cc.set_mss(new_mss)
                self.stats.pmtud_updates += 1
                tcb.snd_nxt = tcb.snd_una  # resend what was too big
                self.output(tcb)
            return
        if type_ == wicmp.UNREACH:
            refused = code in (wicmp.UNREACH_PROTOCOL, wicmp.UNREACH_PORT)
            if refused and tcb.state == SYN_SENT:  # FreeBSD's icmp_may_rst
                self.drop(tcb, errno.ECONNREFUSED)
                return
            self.notify_error(tcb, errno.ECONNREFUSED if refused else errno.EHOSTUNREACH)
        elif type_ == wicmp.TIMXCEED:
            self.notify_error(tcb, errno.EHOSTUNREACH)

    def notify_error(self, tcb: Tcb, err: int) -> None:
        """An ICMP error for a connection (FreeBSD tcp_notify): unreachability is ignored
        while established; a connection being set up that has retransmitted more than 3
        times gives up on a second error; otherwise it is a soft error."""
        if tcb.state == ESTABLISHED and err in (errno.EHOSTUNREACH, errno.ENETUNREACH,
                                                errno.EHOSTDOWN):
            return
        if tcb.state in (SYN_SENT, SYN_RECEIVED) and tcb.rexmt_shift > 3 and tcb.softerror:
            self.drop(tcb, err)
        else:
            tcb.softerror = err


# -- timers (module functions: a Timer holds the function and the tcb) ----------------------------
def _rexmt_timeout(tcb: Tcb) -> None:
    tcp = tcb.tcp
    st = tcp.stats
    tcb.t_main = None
    if tcb.state == CLOSED:
        return
    early = tcb.main_due - tcb.now()
    if early > 0:  # restarted since it was armed (see Tcb.set_main): wait for the rest
        tcb.t_main = tcp.vnet.kernel.sched.call_later(early, _rexmt_timeout, tcb,
                                                      owner=tcp.vnet)
        return
    st.rexmttimeo += 1
    tcb.rexmt_shift += 1
    if tcb.sc_bucket >= 0:  # a syncache entry (FreeBSD syncache_timer): 1, 2, 4, 8 s
        if tcb.rexmt_shift > tcp.syncache_rexmtlimit:
            st.sc_stale += 1
            tcp.detach(tcb)  # silently: the peer may never have sent the SYN
            return
        st.sc_retransmitted += 1
    limit = MAX_SYN_REXMT if tcb.state in (SYN_SENT, SYN_RECEIVED) else MAX_REXMT
    if tcb.rexmt_shift > limit:
        st.timeoutdrop += 1
        tcp.drop(tcb, errno.ETIMEDOUT, send_rst=True)
        return
    tcb.rto = min(tcb.rto * 2, MAX_RTO_NS)
    if tcb.state in (SYN_SENT, SYN_RECEIVED):
        tcp.output(tcb, force_syn=True)
        tcb.set_main(tcb.rto, _rexmt_timeout)
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
        tcp.send_segment(tcb, tcb.snd_nxt, ACK, bytes(tcb.snd_buf[offset:offset + 1]),
                         probe=True)
        end = (tcb.snd_nxt + 1) & MASK
        if _lt(tcb.snd_max, end):
            tcb.snd_max = end  # the peer may keep the byte: its ACK must be acceptable
    tcb.rexmt_shift = min(tcb.rexmt_shift + 1, MAX_REXMT)
    delay = min(max(tcb.rto, tcp.rexmit_min * MS) << min(tcb.rexmt_shift, 6), MAX_RTO_NS)
    tcb.set_main(delay, _persist_timeout)


def _delack_timeout(tcb: Tcb) -> None:
    tcb.t_delack = None
    if not tcb.want_ack or tcb.state == CLOSED:
        return
    tcp = tcb.tcp
    early = tcb.delack_due - tcb.now()
    if early > 0:
        tcb.t_delack = tcp.vnet.kernel.sched.call_later(early, _delack_timeout, tcb,
                                                        owner=tcp.vnet)
        return
    tcp.stats.delack += 1
    tcp.ack_now(tcb)


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
        tcp.drop(tcb, errno.ETIMEDOUT)
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
