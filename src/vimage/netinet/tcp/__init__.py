"""TCP (RFC 9293) for one vnet, in the parts FreeBSD's netinet/tcp_*.c and gVisor's
tcp package use.

Options: MSS, window scaling and timestamps (RFC 7323), SACK (RFC 2018) and D-SACK
(RFC 2883) with SACK-based loss recovery (RFC 6675). Congestion control is
pluggable (NewReno or CUBIC per `net.inet.tcp.cc.algorithm`).

The modules, each importing only those before it (the timeouts import output and
subr inside, see timer.py):

- `seq`      sequence number arithmetic (tcp_seq.h)
- `cc`       congestion control: NewReno, CUBIC (cc/)
- `var`      the control block `Tcb`, `TcpState` (one vnet's TCP: tunables, SYSCTLS,
             STAT_LINES, the connection table), the constants (tcp_var.h, tcp_fsm.h)
- `reass`    the receiver's out-of-order queue (tcp_reass.c)
- `sack`     the SACK scoreboard, RFC 6675's IsLost/SetPipe/NextSeg, the SACK blocks
             of our ACKs (tcp_sack.c)
- `timer`    retransmit, persist, delayed ACK, keepalive, FIN_WAIT_2, 2MSL (tcp_timer.c)
- `output`   tcp_output: data, SYN, FIN, ACKs, one segment, resets (tcp_output.c)
- `subr`     a connection's start and end, ICMP errors, vnet attach (tcp_subr.c)
- `syncache` the syncache and SYN cookies (tcp_syncache.c)
- `input`    tcp_input, and the steps of RFC 9293 §3.10.7.4 (tcp_input.c)
- `usrreq`   the user requests a socket makes (tcp_usrreq.c)

One convention: what TCP does is a module-level function taking the connection
first, ``established_input(tcb, seg)``, ``output(tcb)``, ``drop(tcb, err)``; what
concerns a vnet's TCP as a whole (a segment that has no connection yet, the
syncache's hash) takes the `TcpState` first. `Tcb` and `TcpState` keep only state
and small accessors. Sequence numbers are plain ints modulo 2**32, compared with
`seq_lt` and friends.
"""

from __future__ import annotations

from vimage.netinet.tcp.input import tcp_input
from vimage.netinet.tcp.subr import (
    detach,
    drop,
    tcp_ctlinput,
    tcp_ctlinput_quoted,
    vnet_attach,
    vnet_detach,
)
from vimage.netinet.tcp.var import (
    CLOSE_WAIT,
    CLOSED,
    CLOSING,
    ESTABLISHED,
    FIN_WAIT_1,
    FIN_WAIT_2,
    LAST_ACK,
    LISTEN,
    STAT_LINES,
    STATE_NAMES,
    SYN_RECEIVED,
    SYN_SENT,
    SYSCTLS,
    TIME_WAIT,
    Tcb,
    TcpState,
    TcpStats,
)

__all__ = [
    "CLOSED",
    "CLOSE_WAIT",
    "CLOSING",
    "ESTABLISHED",
    "FIN_WAIT_1",
    "FIN_WAIT_2",
    "LAST_ACK",
    "LISTEN",
    "STATE_NAMES",
    "STAT_LINES",
    "SYN_RECEIVED",
    "SYN_SENT",
    "SYSCTLS",
    "TIME_WAIT",
    "Tcb",
    "TcpState",
    "TcpStats",
    "detach",
    "drop",
    "tcp_ctlinput",
    "tcp_ctlinput_quoted",
    "tcp_input",
    "vnet_attach",
    "vnet_detach",
]
