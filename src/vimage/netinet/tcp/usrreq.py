"""The user requests (FreeBSD tcp_usrreq.c): what a socket asks of its connection.

The socket layer (`vimage.socket.tcp_socket.TcpSocket`) keeps the stdlib API:
blocking and timeouts, errno exceptions, the readiness a selector sees. It calls
these to act on the connection; they never block and take the connection first.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.netinet.in_pcb import shares_port
from vimage.netinet.tcp.output import output
from vimage.netinet.tcp.subr import detach, drop, new_iss, set_iss
from vimage.netinet.tcp.timer import arm_keepalive
from vimage.netinet.tcp.var import (
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    LISTEN,
    SYN_SENT,
    Tcb,
    wscale_for,
)

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.tcp.var import TcpState

LOOPBACK = 0x7F000001
MAX_BACKLOG = 4096


def bind(tcp: TcpState, addr: int, port: int, reuse: bool, v6: bool = False,
         v6only: bool = False) -> int:
    """The local port for `addr`:`port` (an ephemeral one for 0), or EADDRINUSE. An
    IPv6 address (`v6`) was checked by the socket layer (its zone)."""
    if addr and not v6 and addr not in tcp.vnet.ip.local:
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
    if port == 0:
        return tcp.ephemeral(addr, 0, 0)
    if tcp.port_in_use(addr, port, v6, v6only) and not reuse:
        raise OSError(errno.EADDRINUSE, "Address already in use")
    return port


def listen(tcb: Tcb, laddr: int, lport: int, backlog: int) -> None:
    """Make `tcb` (the socket's options until now) a listener on `laddr`:`lport`, or
    just set the backlog of one that listens already."""
    tcp = tcb.tcp
    if tcb.state != LISTEN:
        if not lport:
            lport = tcp.ephemeral(laddr, 0, 0)
        if any(_listen_clash(tcb, laddr, t) and not shares_port(tcb.sock, t.sock)
               for t in tcp.listeners.get(lport, ())):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        tcb.laddr, tcb.lport = laddr, lport
        tcb.state = LISTEN
        tcb.accept_q = []
        tcp.listeners.setdefault(lport, []).append(tcb)
    tcb.backlog = max(1, min(int(backlog), MAX_BACKLOG))


def _listen_clash(tcb: Tcb, laddr: int, other: Tcb) -> bool:
    """Two listeners on one port: the same address of one family, or both wildcards
    with the IPv6 one dual-stack."""
    if tcb.v6 == other.v6:
        return other.laddr == laddr
    v6one = tcb if tcb.v6 else other
    return laddr == 0 and other.laddr == 0 and not v6one.v6only


def accept(listener: Tcb) -> Tcb:
    """The oldest established connection of the listen queue (the caller waited)."""
    assert listener.accept_q
    return listener.accept_q.pop(0)


def connect(tcb: Tcb, laddr: int, lport: int, addr: int, port: int) -> None:
    """Start connecting `tcb` (bound to `laddr`:`lport`, or 0 to choose) to
    `addr`:`port`: the SYN goes, and the connection-establishment timer runs."""
    tcp = tcb.tcp
    vnet = tcp.vnet
    if addr == 0:
        addr = LOOPBACK
    if port == 0:
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
    if addr == 0xFFFFFFFF or addr in vnet.ip.bcast or addr >> 28 == 0xE:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")
    src = laddr or vnet.ip.select_source(addr, tcb.fib)
    lport = lport or tcp.ephemeral(src, addr, port)
    if (src, lport, addr, port) in tcp.conns:
        raise OSError(errno.EADDRINUSE, "Address already in use")
    tcb.laddr, tcb.lport, tcb.faddr, tcb.fport = src, lport, addr, port
    set_iss(tcb, new_iss(tcb))
    tcb.rcv_wscale = wscale_for(tcb.rcv_space) if tcp.rfc1323 else 0
    tcb.state = SYN_SENT
    tcb.mss = tcb.peer_mss = min(tcp.mssdflt, 65535)
    tcp.attach(tcb)
    tcp.stats.connattempt += 1
    arm_keepalive(tcb, tcp.keepinit)  # the connection-establishment timer
    output(tcb)


def connect6(tcb: Tcb, laddr: int, lport: int, addr: int, port: int,
             zone: Ifnet | None) -> None:
    """`connect` over IPv6 (FreeBSD tcp6_usr_connect); `zone`: a link-local
    destination's interface."""
    tcp = tcb.tcp
    vnet = tcp.vnet
    if addr == 0:
        addr = 1  # ::1
    if port == 0:
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
    if addr >> 120 == 0xFF:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")
    src = laddr or vnet.ip6.select_source(addr, zone, tcb.fib)
    lport = lport or tcp.ephemeral(src, addr, port)
    if (src, lport, addr, port) in tcp.conns:
        raise OSError(errno.EADDRINUSE, "Address already in use")
    tcb.laddr, tcb.lport, tcb.faddr, tcb.fport = src, lport, addr, port
    tcb.v6, tcb.zone = True, zone
    set_iss(tcb, new_iss(tcb))
    tcb.rcv_wscale = wscale_for(tcb.rcv_space) if tcp.rfc1323 else 0
    tcb.state = SYN_SENT
    tcb.mss = tcb.peer_mss = min(tcp.mssdflt, 65535)
    tcp.attach(tcb)
    tcp.stats.connattempt += 1
    arm_keepalive(tcb, tcp.keepinit)
    output(tcb)


def send(tcb: Tcb, data: bytes | memoryview) -> int:
    """Queue what fits of `data` in the send buffer and send what the windows allow;
    the bytes taken."""
    chunk = data[:tcb.snd_space - len(tcb.snd_buf)]
    tcb.snd_buf += chunk
    output(tcb)
    return len(chunk)


def receive(tcb: Tcb, bufsize: int, peek: bool) -> bytes:
    """Up to `bufsize` bytes of the receive buffer (left there if `peek`)."""
    buf = tcb.rcv_buf
    if bufsize >= len(buf):  # all of it (an interactive read): one copy
        data = bytes(buf)
        if not peek:
            buf.clear()
    else:
        data = bytes(buf[:bufsize])
        if not peek:
            del buf[:bufsize]
    if not peek:
        output(tcb)  # a window update if the window opened enough
    return data


def shutdown(tcb: Tcb) -> None:
    """No more data from us: the FIN goes after what is queued."""
    if not tcb.shut_wr:
        tcb.shut_wr = True
        output(tcb)


def close(tcb: Tcb) -> None:
    """The socket is closed (FreeBSD tcp_usr_close and tcp_disconnect): a listener or a
    connection not yet established is forgotten; with SO_LINGER 0 or unread data
    (RFC 2525 2.17) the connection is reset; otherwise it is shut down and finishes
    on its own."""
    tcb.sock = None
    tcb.user_closed = True
    if tcb.state in (LISTEN, SYN_SENT):
        detach(tcb)
    elif tcb.state != CLOSED:
        if tcb.linger == 0 or tcb.rcv_buf:
            abort(tcb)
        else:
            shutdown(tcb)


def abort(tcb: Tcb) -> None:
    """Reset the connection (FreeBSD tcp_usr_abort)."""
    drop(tcb, errno.ECONNRESET, send_rst=True)


# -- options -------------------------------------------------------------------------------------
def set_keepalive(tcb: Tcb, on: bool) -> None:
    tcb.keepalive = on
    if on and tcb.state in (ESTABLISHED, CLOSE_WAIT):
        arm_keepalive(tcb)


def set_nodelay(tcb: Tcb, on: bool) -> None:
    """TCP_NODELAY; turning Nagle off sends what it held back."""
    tcb.nodelay = on
    if tcb.state in (ESTABLISHED, CLOSE_WAIT):
        output(tcb)


def set_maxseg(tcb: Tcb, value: int) -> None:
    """TCP_MAXSEG: the MSS can only go down."""
    if not 64 <= value <= 65535:
        raise OSError(errno.EINVAL, "Invalid argument")
    tcb.mss = min(tcb.mss, value)
