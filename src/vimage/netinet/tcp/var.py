"""The TCP control block, the per-vnet TCP state and the constants (FreeBSD tcp_var.h,
tcp_fsm.h, tcp_timer.h): what every other module of the package works on.

`Tcb` is a connection (or a listener): sequence variables, buffers, options, timers.
It keeps only accessors; what TCP does with a connection are the functions of the
other modules, each taking the Tcb first. `TcpState` is one vnet's TCP: tunables
(SYSCTLS), counters (STAT_LINES), the connection table, listeners and the syncache.
"""

from __future__ import annotations

import errno
import hashlib
import weakref
from typing import TYPE_CHECKING, Any

from vimage.net.offload import state as offload_state
from vimage.netinet.tcp.cc import ALGORITHMS
from vimage.netinet.tcp.cc import create as cc_create
from vimage.netinet.tcp.seq import MASK
from vimage.sched import NS_PER_S, Timer
from vimage.stats import counters
from vimage.sysctl import Oid, oids
from vimage.wire import tcp as wtcp
from vimage.wire.tcp import MAX_WSCALE

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.socket.tcp_socket import TcpSocket
    from vimage.vnet import Vnet

FIN, SYN, RST, PSH, ACK, URG = wtcp.FIN, wtcp.SYN, wtcp.RST, wtcp.PSH, wtcp.ACK, wtcp.URG
MS = 1_000_000  # ns per ms
DEFAULT_MSS = 536
TCP_MINMSS = 216  # FreeBSD's floor for a peer's MSS option and a path MTU (tcp_var.h)
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

_CC_ALGORITHM = Oid("net.inet.tcp.cc.algorithm", "tcp", "cc_algorithm",
                    "Default congestion control algorithm",
                    choices=tuple(sorted(name for name, _ in ALGORITHMS)))

SYSCTLS: tuple[Oid, ...] = (_CC_ALGORITHM, *oids("net.inet.tcp", "tcp", (
    ("rexmit_min", "Minimum retransmission timeout (ms)", 1, 60_000),
    ("rexmit_slop",
     "Retransmission timer slop (ms), added to the RTO: above the peer's delayed ACK", 0, 60_000),
    ("rexmit_initial", "Initial retransmission timeout (ms)", 1, 60_000),
    ("delayed_ack", "Delay ACK to try and piggyback it", 0, 1),
    ("delacktime", "Time before a delayed ACK is sent (ms)", 1, 1000),
    ("msl", "Maximum segment lifetime (ms); TIME_WAIT is 2*MSL", 1, 600_000),
    ("keepidle", "Time before keepalive probes begin (ms)", 1, 2**31 - 1),
    ("keepintvl", "Time between keepalive probes (ms)", 1, 2**31 - 1),
    ("keepcnt", "Keepalive probes before the drop", 1, 100),
    ("keepinit", "Time to establish a connection (ms)", 1, 2**31 - 1),
    ("finwait2_timeout", "FIN_WAIT_2 timeout for closed sockets (ms)", 1, 2**31 - 1),
    ("syncookies", "Use TCP SYN cookies when the SYN queue overflows", 0, 1),
    ("syncache.rexmtlimit", "Limit on SYN/ACK retransmissions", 0, 64),
    ("syncache.bucketlimit", "Per-bucket hash limit for syncache", 1, 2**31 - 1),
    ("syncache.cachelimit", "Overall entry limit for syncache", 1, 2**31 - 1),
    ("syncache.rst_on_sock_fail", "Send reset on socket allocation failure (a full listen queue)",
     0, 1),
    ("sack.enable", "Enable SACK (RFC 2018)", 0, 1),
    ("rfc1323", "Enable window scaling and timestamps (RFC 7323)", 0, 1),
    ("mssdflt", "Default maximum segment size", 88, 65535),
    ("minmss", "Minimum TCP Maximum Segment Size", 64, 65535),
    ("sendspace", "Initial send socket buffer size", 1024, 2**26),
    ("recvspace", "Initial receive socket buffer size", 1024, 2**26),
    ("blackhole", "Do not send RST on segments to closed ports", 0, 1),
    ("ack_war_timewindow", "Time window (ms) of the ACK war limit (0: no limit)", 0, 2**31 - 1),
    ("ack_war_cnt", "ACKs answering unacceptable segments per time window (0: no limit)",
     0, 2**31 - 1),
    ("reass.maxqueuelen", "Maximum number of TCP segments per reassembly queue", 0, 2**31 - 1),
    ("path_mtu_discovery", "Enable Path MTU Discovery (DF on every segment, RFC 1191)", 0, 1),
), {"syncache.rst_on_sock_fail": "rst_on_sock_fail"}))

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
    # the rest of FreeBSD's tcpstat that netstat -s prints (netstat_stats.TCP)
    ("sndrexmitbad", "{} data packets unnecessarily retransmitted"),
    ("mturesent", "{} resends initiated by MTU discovery"),
    ("sndurg", "{} URG only packets"),
    ("rcvdupbyte", "{} bytes received in completely duplicate packets"),
    ("pawsdrop", "{} old duplicate packets"),
    ("rcvpartduppack", "{} packets with some dup. data"),
    ("rcvpartdupbyte", "{} bytes duped"),
    ("rcvbyteafterwin", "{} bytes of data after window"),
    ("rcvmemdrop", "{} discarded due to memory problems"),
    ("badrst", "{} ignored RSTs in the windows"),
    ("usedrtt", "{} times used RTT from hostcache"),
    ("usedrttvar", "{} times used RTT variance from hostcache"),
    ("usedssthresh", "{} times used slow-start threshold from hostcache"),
    ("cachedrtt", "{} connections updated cached RTT on close"),
    ("cachedrttvar", "{} connections updated cached RTT variance on close"),
    ("cachedssthresh", "{} connections updated cached ssthresh on close"),
    ("segstimed", "{} segments timed for rtt"),
    ("persistdrop", "{} connections dropped by persist timeout"),
    ("finwait2_drops", "{} Connections (fin_wait_2) dropped because of timeout"),
    ("predack", "{} correct ACK header predictions"),
    ("preddat", "{} correct data packet header predictions"),
    ("sc_cacheoverflow", "{} syncache cache overflow"),
    ("sc_reset", "{} syncache reset"),
    ("sc_aborted", "{} syncache aborted"),
    ("sc_badack", "{} syncache badack"),
    ("sc_unreach", "{} syncache unreach"),
    ("hc_added", "{} hostcache entries added"),
    ("hc_bucketoverflow", "{} hostcache bucket overflow"),
    ("sack_sboverflow", "{} SACK scoreboard overflow"),
    ("ecn_ce", "{} packets with ECN CE bit set"),
    ("ecn_ect0", "{} packets with ECN ECT(0) bit set"),
    ("ecn_ect1", "{} packets with ECN ECT(1) bit set"),
    ("ecn_shs", "{} successful ECN handshakes"),
    ("ecn_rcwnd", "{} times ECN reduced the congestion window"),
    ("sig_rcvgoodsig", "{} packets with matching signature received"),
    ("sig_rcvbadsig", "{} packets with bad signature received"),
    ("sig_err_buildsig", "{} times failed to make signature due to no SA"),
    ("sig_err_sigopt", "{} times unexpected signature received"),
    ("sig_err_nosigopt", "{} times no signature provided by segment"),
    ("pmtud_blackhole_activated", "{} Path MTU discovery black hole detection activations"),
    ("pmtud_blackhole_activated_min_mss",
     "{} Path MTU discovery black hole detection min MSS activations"),
    ("pmtud_blackhole_failed", "{} Path MTU discovery black hole detection failures"),
)

TcpStats = counters("TcpStats", tuple(name for name, _ in STAT_LINES))


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
        "delack_ghost",
        "dsack",
        "dupacks",
        "faddr",
        "fib",
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
        "offl",
        "offload",
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
        "tso",
        "unacked_segs",
        "user_closed",
        "v6",
        "v6only",
        "want_ack",
        "ws_ok",
        "zone",
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
        self.cc = cc_create(tcp.cc_algorithm, self.mss)
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
        # over IPv6 (addresses are then 128-bit ints; FreeBSD's INP_IPV6), IPV6_V6ONLY of
        # a listener, and the interface a link-local peer is on
        self.v6 = self.v6only = False
        self.zone: Ifnet | None = None
        self.softerror = 0  # FreeBSD t_softerror: reported instead of ETIMEDOUT
        self.nodelay = False
        self.ip_ttl: int | None = None  # IP_TTL and IP_TOS: they outlive the socket
        self.ip_tos = 0
        self.fib = 0  # SO_SETFIB: the FIB its segments are routed with
        self.keepalive = False
        self.keep_probes = 0
        self.rcv_time = tcp.vnet.kernel.sched.now_ns()  # when we last heard from the peer
        self.linger: int | None = None
        self.want_ack = False
        self.unacked_segs = 0
        # the last large (TSO) segment left whole, not cut into pieces on the first link
        # (vimage.net.offload): its ACK stands for the ACKs of the pieces (input.py)
        self.tso = False
        # PARTIAL when the route's interface takes segments without a checksum (txcsum),
        # as tcp_output last found it; 0 (checksummed here) until data is sent
        self.offload = 0
        self.offl = offload_state(tcp.vnet.kernel)  # the kernel's offload mark
        self.t_main: Timer | None = None  # rexmt, persist, 2MSL or FIN_WAIT_2 (one at a time)
        self.main_due = 0  # when t_main is due (a retransmission timer may fire early)
        self.t_delack: Timer | None = None
        self.delack_due = 0  # when the delayed ACK is due (its timer may fire early)
        # a lazy delayed-ACK timer withdrawn because an ACK went in the instant it was
        # armed: its key (when, seq), for a segment that arrives before it would have
        # fired (input.py); a tuple of numbers, which the collector stops tracking, where
        # the withdrawn Timer, kept for a second, was an object for it to promote
        self.delack_ghost: tuple[int, Any] | None = None
        self.t_keep: Timer | None = None
        self.ack_war_end = 0  # when the current ACK war window ends (ns)
        self.ack_war_count = 0  # ACKs sent to unacceptable segments in that window

    # -- accessors --------------------------------------------------------------------------------
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
        self.tcp.vnet.kernel.sched.wake_waiters()
        ref = self._sock
        sock = ref() if ref is not None else None
        if sock is not None and sock._poll is not None:
            sock._poll.touch(sock)


class TcpState:
    """Per-vnet TCP: tunables, counters, listeners, connections and the syncache.

    The protocol switch binds tcp_input and tcp_ctlinput_quoted to this state (see
    netinet/in_proto.py), so a segment pays no extra call on its way in.
    """

    __slots__ = (
        "ack_war_cnt", "ack_war_timewindow", "blackhole", "cc_algorithm", "conns",
        "delacktime", "delayed_ack", "finwait2_timeout", "keepcnt", "keepidle",
        "keepinit", "keepintvl", "listeners", "minmss", "msl", "mssdflt", "path_mtu_discovery",
        "rcvbuf_max", "reass_maxqueuelen", "recvspace", "rexmit_initial", "rexmit_min",
        "rexmit_slop", "rfc1323", "rst_on_sock_fail", "sack_enable", "sendspace",
        "stats", "syncache", "syncache_bucketlimit", "syncache_cachelimit", "syncache_count",
        "syncache_overflow", "syncache_rexmtlimit", "syncookies", "vnet"
    )

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        # made here, not on first read: a hot-path class (see stats.LazySlots)
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

    # -- the table --------------------------------------------------------------------------------
    @property
    def secret(self) -> bytes:
        """The vnet's TCP key (RFC 6528): ISNs, SYN cookies, syncache hashing,
        timestamp offsets."""
        return self.vnet.secret[:16]

    def keyed_hash(self, data: bytes, person: bytes = b"") -> int:
        """32 bits of a BLAKE2s hash of `data` under the TCP key: what ISNs, timestamp
        offsets, syncache buckets and SYN cookies are made of (`person` keeps the uses
        apart)."""
        return int.from_bytes(hashlib.blake2s(data, key=self.secret, digest_size=4,
                                              person=person).digest(), "big")

    def port_in_use(self, addr: int, port: int, v6: bool = False,
                    v6only: bool = False) -> bool:
        """Is `addr`:`port` (of an IPv6 socket if `v6`) taken? The two families share
        the port space: a dual-stack IPv6 wildcard overlaps every IPv4 address, a
        v6only one none (FreeBSD in6_pcbbind)."""
        if any(overlaps(addr, v6, v6only, t) for t in self.listeners.get(port, ())):
            return True
        return any(k[1] == port and t.state != TIME_WAIT and overlaps(addr, v6, v6only, t)
                   for k, t in self.conns.items())

    def ephemeral(self, laddr: int, faddr: int, fport: int) -> int:
        for port in self.vnet.ip.ephemeral_ports("tcp"):  # portrange.randomized or not
            if (laddr, port, faddr, fport) not in self.conns and port not in self.listeners:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")

    def listener_for(self, port: int, dst: int) -> Tcb | None:
        """The IPv6 listener on `port` for `dst` (IPv4 ones and those bound to another
        address skipped)."""
        for listener in self.listeners.get(port, ()):
            if listener.v6 and listener.laddr in (0, dst):
                return listener
        return None

    def attach(self, tcb: Tcb) -> None:
        self.conns[tcb.key] = tcb

    def tcbs(self) -> list[Tcb]:
        out = [t for socks in self.listeners.values() for t in socks]
        out.extend(self.conns.values())
        return out


def overlaps(addr: int, v6: bool, v6only: bool, other: Tcb) -> bool:
    """Would a socket bound to `addr` (IPv6 if `v6`) collide with `other`'s address?"""
    if v6 == other.v6:
        return addr == 0 or other.laddr in (0, addr)
    if v6:  # an IPv6 socket against an IPv4 one: only a dual-stack wildcard collides
        return not v6only and addr == 0
    return not other.v6only and other.laddr == 0
