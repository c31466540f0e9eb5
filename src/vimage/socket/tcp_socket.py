"""TCP sockets with the stdlib `socket` module's names and semantics.

A thin layer: blocking, timeouts, errno exceptions and readiness are the socket's;
what is done to the connection is `vimage.netinet.tcp.usrreq`'s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select as _select
import socket as _std
import struct
from collections.abc import Callable
from functools import partial
from socket import (  # a vnet's socket takes the stdlib's constants
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    IPPROTO_TCP,
    MSG_DONTWAIT,
    MSG_PEEK,
    MSG_WAITALL,
    SHUT_RD,
    SHUT_RDWR,
    SHUT_WR,
    SO_BROADCAST,
    SO_ERROR,
    SO_KEEPALIVE,
    SO_LINGER,
    SO_RCVBUF,
    SO_SNDBUF,
    SO_TYPE,
    SOCK_STREAM,
    SOL_SOCKET,
    TCP_MAXSEG,
    TCP_NODELAY,
)
from typing import TYPE_CHECKING, Any

from vimage.compiled import mypyc_attr
from vimage.netinet.in_pcb import is_mapped, mapped, unmapped
from vimage.netinet.tcp import usrreq
from vimage.netinet.tcp.var import (
    CLOSE_WAIT,
    CLOSED,
    ESTABLISHED,
    FIN_WAIT_2,
    LISTEN,
    SYN_RECEIVED,
    SYN_SENT,
    TIME_WAIT,
    Tcb,
)
from vimage.socket.inet6 import (
    IPPROTO_IPV6,
    IPV6_TCLASS,
    IPV6_UNICAST_HOPS,
    IPV6_V6ONLY,
    LOOPBACK6,
    check_local6,
    parse_sockaddr6,
    sockaddr6,
    zone_ifp,
)
from vimage.socket.socket import (
    POLL_READ,
    POLL_WRITE,
    REUSE_FLAGS,
    SO_SETFIB,
    SocketBase,
    check_fib,
    initial_fib,
    option_int,
    parse_sockaddr,
)
from vimage.wire import ipv4
from vimage.wire.ipv6 import needs_zone

if TYPE_CHECKING:
    from vimage.vnet import Vnet

SO_ACCEPTCONN = getattr(_std, "SO_ACCEPTCONN", 30)
_LINGER = struct.Struct("ii")
_WAITALL = int(MSG_WAITALL)  # a plain int: `flags & MSG_WAITALL` builds an IntFlag each time
_PEEK = int(MSG_PEEK)
_DONTWAIT = int(MSG_DONTWAIT)
_FIN_ACKED = frozenset({FIN_WAIT_2, TIME_WAIT, CLOSED})  # nothing of ours is unacknowledged


def _oserror(err: int) -> OSError:
    if err == errno.ECONNREFUSED:
        return ConnectionRefusedError(err, os.strerror(err))
    if err == errno.ECONNRESET:
        return ConnectionResetError(err, os.strerror(err))
    if err == errno.EPIPE:
        return BrokenPipeError(err, os.strerror(err))
    if err == errno.ETIMEDOUT:
        return TimeoutError(err, os.strerror(err))
    if err == errno.ECONNABORTED:
        return ConnectionAbortedError(err, os.strerror(err))
    return OSError(err, os.strerror(err))


# What a blocked call waits for (kernel.wait's predicates). Functions of the module, not
# closures: mypyc cannot compile a closure in a method of a non-native class (TcpSocket).
def _ready_or_closed(sock: TcpSocket, ready: Callable[[], bool]) -> bool:
    return ready() or sock.closed


def _acceptable(tcb: Tcb) -> bool:
    return bool(tcb.accept_q)


def _synchronized(tcb: Tcb) -> bool:
    return tcb.state not in (SYN_SENT, SYN_RECEIVED)


def _writable(tcb: Tcb) -> bool:
    return tcb.state == CLOSED or tcb.shut_wr or len(tcb.snd_buf) < tcb.snd_space


def _readable(tcb: Tcb, size: int = 1) -> bool:
    """At least `size` bytes to read, or the end of the stream."""
    return len(tcb.rcv_buf) >= size or tcb.fin_rcvd or tcb.state == CLOSED


def _fin_acked(tcb: Tcb) -> bool:
    return tcb.state in _FIN_ACKED


# compiled (vimage.compiled): a Python class with compiled methods, as a native class cannot
# be weakly referenced (Kernel.fds, Tcb.sock) nor have an interpreted base (SocketBase)
@mypyc_attr(native_class=False)
class TcpSocket(SocketBase):
    """An AF_INET SOCK_STREAM socket of one vnet."""

    __slots__ = (
        "_pending",
        "_rd_shut",
        "family",
        "laddr",
        "lport",
        "proto",
        "reuseaddr",
        "reuseport",
        "reuseport_lb",
        "scope",
        "tcb",
        "tos",
        "ttl",
        "type",
        "v6only",
    )

    def __init__(self, vnet: Vnet, family: int = _std.AF_INET, type: int = SOCK_STREAM,
                 proto: int = 0, _tcb: Tcb | None = None) -> None:
        if not vnet.alive:
            raise OSError(errno.ENETDOWN, "vnet is destroyed")
        if proto not in (0, IPPROTO_TCP):
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
        if family not in (_std.AF_INET, _std.AF_INET6):
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        super().__init__(vnet, type)
        # AF_INET6: laddr is 128-bit (an IPv4 connection's mapped), scope the zone index
        self.v6only = bool(vnet.ip6.v6only) if family == _std.AF_INET6 else False
        self.scope = 0
        self.family, self.type, self.proto = family, SOCK_STREAM, IPPROTO_TCP
        self._rd_shut = False
        self.reuseaddr = self.reuseport = self.reuseport_lb = False
        self.ttl: int | None = None
        self.tos = 0
        self.laddr = self.lport = 0
        self._pending = Tcb(vnet.tcp, 0, 0, 0, 0) if _tcb is None else None  # options holder
        if self._pending is not None:
            self._pending.fib = initial_fib(vnet)
        self.tcb = _tcb
        if _tcb is not None:
            _tcb.sock = self
            self.laddr, self.lport = self._key(_tcb.laddr, _tcb.v6), _tcb.lport
            if _tcb.zone is not None:
                self.scope = _tcb.zone.index

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def _lock(self) -> Any:
        return self.vnet.kernel.sched.cond

    @property
    def _opts(self) -> Tcb:
        tcb = self.tcb if self.tcb is not None else self._pending
        assert tcb is not None
        return tcb

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.vnet.alive:  # a socket its vnet's destruction left behind
            raise OSError(errno.ENETDOWN, "vnet is destroyed")

    def _wait(self, ready: Callable[[], bool], flags: int = 0) -> None:
        """Block (or not) until ready(); in virtual time the kernel clock jumps."""
        if ready():
            return
        if self._timeout == 0 or flags & _DONTWAIT:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        if not self.vnet.kernel.wait(partial(_ready_or_closed, self, ready), self._timeout):
            raise TimeoutError("timed out")
        self._check_open()

    def _events(self) -> int:
        """Readiness as selectors' EVENT_READ (1) | EVENT_WRITE (2), as Linux's tcp_poll."""
        tcb = self.tcb
        if self.closed:
            return 3
        if tcb is None:
            return 2  # unconnected: writable (and hung up), as on Linux
        state = tcb.state
        if state == LISTEN:
            return 1 if tcb.accept_q else 0
        if state in (SYN_SENT, SYN_RECEIVED):
            return 0
        closed = state == CLOSED
        read = 1 if (tcb.rcv_buf or tcb.fin_rcvd or closed or self._rd_shut) else 0
        write = 2 if (closed or tcb.shut_wr or len(tcb.snd_buf) < tcb.snd_space) else 0
        return read | write

    def _pollmask(self) -> int:
        """poll(2)'s view, as Linux's tcp_poll: the peer's FIN (or our SHUT_RD) makes the
        socket readable with POLLRDHUP (recv then returns b""); both directions shut or
        the connection gone, POLLHUP; a pending error, POLLERR; an unconnected socket
        is writable and hung up; a listener is readable with a connection to accept."""
        if self.closed:
            return _select.POLLNVAL
        tcb = self.tcb
        if tcb is None:
            return POLL_WRITE | _select.POLLHUP
        state = tcb.state
        if state == LISTEN:
            return POLL_READ if tcb.accept_q else 0
        if state in (SYN_SENT, SYN_RECEIVED):
            return 0
        closed = state == CLOSED
        mask = _select.POLLERR if tcb.so_error else 0
        if tcb.fin_rcvd or closed or self._rd_shut:  # RCV_SHUTDOWN: theirs or ours
            mask |= POLL_READ | _select.POLLRDHUP
        elif tcb.rcv_buf:
            mask |= POLL_READ
        if closed or (tcb.shut_wr and (tcb.fin_rcvd or self._rd_shut)):
            mask |= _select.POLLHUP
        if closed or tcb.shut_wr or len(tcb.snd_buf) < tcb.snd_space:
            mask |= POLL_WRITE
        return mask

    # -- addresses of AF_INET6 sockets ---------------------------------------------------------
    def _key(self, addr: int, v6: bool) -> int:
        """A PCB address as this socket holds it: an IPv4 one mapped on an AF_INET6 socket."""
        if self.family == _std.AF_INET6 and not v6 and addr:
            return mapped(addr)
        return addr

    def _name(self, addr: int, port: int, v6: bool) -> Any:
        if self.family == _std.AF_INET:
            return ipv4.ntoa(addr), port
        return sockaddr6(self._key(addr, v6), port, self.scope)

    def _pcb_addr(self, addr: int) -> tuple[int, bool]:
        """(address for the PCB, over IPv6?) of an address this AF_INET6 socket names."""
        if is_mapped(addr):
            return unmapped(addr), False
        return addr, True

    # -- connection set-up ------------------------------------------------------------------------
    def bind(self, address: tuple[Any, ...]) -> None:
        with self._lock:
            self._check_open()
            if self.tcb is not None or self.lport:
                raise OSError(errno.EINVAL, "Invalid argument")
            reuse = self.reuseaddr or self.reuseport or self.reuseport_lb
            if self.family == _std.AF_INET6:
                addr, port, scope = parse_sockaddr6(self.vnet, address)
                check_local6(self.vnet, addr, scope, self.v6only)
                pcb_addr, v6 = self._pcb_addr(addr)
                port = usrreq.bind(self.vnet.tcp, pcb_addr, port, reuse, v6,
                                   self.v6only)
                self.scope = scope if needs_zone(addr) else 0
            else:
                addr, port = parse_sockaddr(address)
                port = usrreq.bind(self.vnet.tcp, addr, port, reuse)
            self.laddr, self.lport = addr, port

    def listen(self, backlog: int = 128) -> None:
        with self._lock:
            self._check_open()
            if self.tcb is not None and self.tcb.state != LISTEN:
                raise OSError(errno.EINVAL, "Invalid argument")
            tcb = self._opts
            laddr = self.laddr
            if self.family == _std.AF_INET6 and tcb.state != LISTEN:
                laddr, tcb.v6 = self._pcb_addr(laddr)
                tcb.v6only = self.v6only and tcb.v6
            if self.tcb is None:
                tcb.sock = self  # listen's clash check reads our SO_REUSEPORT(_LB)
            usrreq.listen(tcb, laddr, self.lport, backlog)
            if self.tcb is None:
                tcb.sock = self
                self.tcb, self._pending = tcb, None
                self.lport = tcb.lport

    def accept(self) -> tuple[TcpSocket, Any]:
        with self._lock:
            self._check_open()
            tcb = self.tcb
            if tcb is None or tcb.state != LISTEN:
                raise OSError(errno.EINVAL, "Invalid argument")
            self._wait(partial(_acceptable, tcb))
            child = usrreq.accept(tcb)
            sock = TcpSocket(self.vnet, self.family, _tcb=child)
            sock.ttl, sock.tos, sock.v6only = self.ttl, self.tos, self.v6only
            return sock, sock._name(child.faddr, child.fport, child.v6)

    def connect(self, address: tuple[Any, ...]) -> None:
        with self._lock:
            self._check_open()
            tcb = self.tcb
            if tcb is not None:
                if tcb.state in (SYN_SENT, SYN_RECEIVED):
                    if self._timeout == 0:
                        raise BlockingIOError(errno.EALREADY, "Operation already in progress")
                elif tcb.state == LISTEN:
                    raise OSError(errno.EINVAL, "Invalid argument")
                elif tcb.state != CLOSED or tcb.so_error == 0:
                    raise OSError(errno.EISCONN, "Transport endpoint is already connected")
            else:
                self._start_connect(address)
                tcb = self.tcb
                assert tcb is not None
                if self._timeout == 0:
                    raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
            self._wait(partial(_synchronized, tcb))
            if tcb.state == CLOSED:
                err, tcb.so_error = tcb.so_error or errno.ECONNREFUSED, 0
                raise _oserror(err)

    def connect_ex(self, address: tuple[Any, ...]) -> int:
        try:
            self.connect(address)
        except BlockingIOError as exc:
            return exc.errno or errno.EINPROGRESS
        except TimeoutError as exc:
            return exc.errno or errno.ETIMEDOUT
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return 0

    def _start_connect(self, address: tuple[Any, ...]) -> None:
        tcb = self._opts
        if self.family == _std.AF_INET6:
            addr, port, scope = parse_sockaddr6(self.vnet, address)
            addr = addr or LOOPBACK6
            pcb_addr, v6 = self._pcb_addr(addr)
            laddr, lv6 = self._pcb_addr(self.laddr)
            if not v6:
                if self.v6only or (self.laddr and lv6):
                    raise OSError(errno.ENETUNREACH, "Network is unreachable")
                usrreq.connect(tcb, laddr, self.lport, pcb_addr, port)
            else:
                if self.laddr and not lv6:
                    raise OSError(errno.ENETUNREACH, "Network is unreachable")
                zone = zone_ifp(self.vnet, addr, scope or self.scope)
                usrreq.connect6(tcb, laddr, self.lport, addr, port, zone)
                if zone is not None:
                    self.scope = zone.index
        else:
            addr, port = parse_sockaddr(address)
            usrreq.connect(tcb, self.laddr, self.lport, addr, port)
        tcb.sock = self
        self.tcb, self._pending = tcb, None
        self.laddr, self.lport = self._key(tcb.laddr, tcb.v6), tcb.lport
        self._lock.notify_all()

    # -- data -------------------------------------------------------------------------------------
    def send(self, data: Any, flags: int = 0) -> int:
        sched = self.vnet.kernel.sched
        with sched.lock:  # (the condition's lock: Condition.__enter__ is a Python call)
            tcb = self.tcb
            if self.closed or tcb is None or tcb.state != ESTABLISHED:  # else: both pass
                self._check_open()
                tcb = self._connected()
            view: Any = data  # (bytes are bytes: no view to make)
            if type(data) is not bytes:
                view = memoryview(data).cast("B")
            if not len(view):
                return 0
            if not (len(tcb.snd_buf) < tcb.snd_space or tcb.shut_wr or tcb.state == CLOSED):
                self._wait(partial(_writable, tcb), flags)
            if tcb.state == CLOSED:
                err, tcb.so_error = tcb.so_error or errno.EPIPE, 0
                raise _oserror(err)
            if tcb.shut_wr or tcb.state not in (ESTABLISHED, CLOSE_WAIT):
                raise _oserror(errno.EPIPE)
            sent = usrreq.send(tcb, view)
            sched.wake_waiters()
            return sent

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            sent = self.send(view, flags)
            view = view[sent:]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if flags & _WAITALL and bufsize:
            return self._recv_waitall(bufsize, flags)
        with self.vnet.kernel.sched.lock:  # the condition's lock (see send)
            tcb = self.tcb
            if self.closed or tcb is None or tcb.state != ESTABLISHED:  # else: both pass
                self._check_open()
                tcb = self._connected(reading=True)
            if self._rd_shut:
                return b""
            if not tcb.rcv_buf:
                self._wait(partial(_readable, tcb), flags)
            if not tcb.rcv_buf:
                if tcb.state == CLOSED and tcb.so_error:
                    err, tcb.so_error = tcb.so_error, 0
                    raise _oserror(err)
                return b""
            return usrreq.receive(tcb, bufsize, bool(flags & _PEEK))

    def _recv_waitall(self, bufsize: int, flags: int) -> bytes:
        """recv with MSG_WAITALL (FreeBSD soreceive_generic): wait for `bufsize` bytes,
        returning fewer only at the end of the stream, on an error or a timeout after
        some data arrived (the error then comes with the next call). With MSG_PEEK the
        bytes stay queued: it waits until that many are there."""
        with self._lock:
            self._check_open()
            tcb = self._connected(reading=True)
            if flags & MSG_PEEK:
                self._wait(partial(_readable, tcb, bufsize), flags)
                return usrreq.receive(tcb, bufsize, True)
        out = bytearray()
        rest = flags & ~MSG_WAITALL
        while len(out) < bufsize:
            try:
                chunk = self.recv(bufsize - len(out), rest)
            except (BlockingIOError, TimeoutError, ConnectionError):
                if out:
                    break
                raise
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes > len(view):
            raise ValueError("buffer too small for requested bytes")
        data = self.recv(nbytes or len(view), flags)
        view[:len(data)] = data
        return len(data)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int] | None]:
        return self.recv(bufsize, flags), None

    def recvmsg(self, bufsize: int, ancbufsize: int = 0,
                flags: int = 0) -> tuple[bytes, list[tuple[int, int, bytes]], int, None]:
        """The stdlib's recvmsg on a stream: no control messages, no address (None, as
        CPython gives for a connected stream), MSG_PEEK/MSG_WAITALL/MSG_DONTWAIT."""
        if bufsize < 0:
            raise ValueError("negative buffer size in recvmsg()")
        return self.recv(bufsize, flags), [], 0, None

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0,
                     flags: int = 0) -> tuple[int, list[tuple[int, int, bytes]], int, None]:
        views = [memoryview(b).cast("B") for b in buffers]
        data = self.recv(sum(len(v) for v in views), flags)
        at = 0
        for view in views:
            piece = data[at:at + len(view)]
            view[:len(piece)] = piece
            at += len(piece)
        return at, [], 0, None

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        """sendto on a stream: the address is checked and then ignored once connected
        (Linux tcp_sendmsg; the stdlib's sendto); unconnected, ENOTCONN as send (FreeBSD:
        a stream has no implied connect)."""
        flags = 0 if address is None else flags_or_address
        if address is None:
            address = flags_or_address
        if self.family == _std.AF_INET6:
            parse_sockaddr6(self.vnet, address)
        else:
            parse_sockaddr(address)
        return self.send(data, flags)

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,
                address: Any = None) -> int:
        """The stdlib's sendmsg on a stream: the buffers' bytes as one send (which may
        take fewer when not blocking); control messages are refused (EINVAL)."""
        data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
        if list(ancdata):
            raise OSError(errno.EINVAL, "Invalid argument")
        if address is not None:
            return self.sendto(data, flags, address)
        return self.send(data, flags)

    def _connected(self, reading: bool = False) -> Tcb:
        tcb = self.tcb
        if tcb is None or tcb.state in (LISTEN, SYN_SENT, SYN_RECEIVED):
            if tcb is not None and tcb.state in (SYN_SENT, SYN_RECEIVED):
                self._wait(partial(_synchronized, tcb))
                return self._connected(reading)
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        if tcb.state == CLOSED and tcb.so_error:
            err, tcb.so_error = tcb.so_error, 0
            raise _oserror(err)
        if tcb.state == CLOSED and not reading:
            raise _oserror(errno.EPIPE)
        return tcb

    def shutdown(self, how: int) -> None:
        with self._lock:
            self._check_open()
            tcb = self.tcb
            if tcb is None or tcb.state in (LISTEN, CLOSED, SYN_SENT):
                raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
            if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
                raise OSError(errno.EINVAL, "Invalid argument")
            if how in (SHUT_RD, SHUT_RDWR):
                self._rd_shut = True
            if how in (SHUT_WR, SHUT_RDWR):
                usrreq.shutdown(tcb)
            self._lock.notify_all()
            self._touch()

    def close(self) -> None:
        """Close; with SO_LINGER on a blocking socket, wait for the FIN to be acknowledged.

        As FreeBSD's soclose: a positive linger time makes close() of a blocking socket
        wait (on the kernel clock) until all data and the FIN are acknowledged or the
        time runs out; the connection then goes on in the background either way. A
        non-blocking socket, or one with a timeout (CPython makes those non-blocking
        underneath), does not wait. Zero linger aborts with a reset.
        """
        if self.closed or self._defer_close():
            return
        self._close(wait=True)

    def _close(self, wait: bool) -> None:
        with self._lock:
            self.closed = True
            tcb = self.tcb
            linger = 0
            if tcb is not None:
                usrreq.close(tcb)
                if wait and tcb.linger and self._timeout is None and tcb.state != CLOSED:
                    linger = tcb.linger  # shut down, not reset: wait for the FIN's ACK
            self._lock.notify_all()
            self._touch()
            if linger and tcb is not None:
                self.vnet.kernel.wait(partial(_fin_acked, tcb), linger)

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            with contextlib.suppress(Exception):  # at interpreter shutdown nothing helps
                self._close(wait=False)  # never block the garbage collector

    # -- names and options -----------------------------------------------------------------------
    def getsockname(self) -> Any:
        self._check_open()
        return self._name(self.laddr, self.lport, True)

    def getpeername(self) -> Any:
        self._check_open()
        tcb = self.tcb
        if tcb is None or tcb.state in (LISTEN, SYN_SENT) or (tcb.state == CLOSED
                                                             and not tcb.faddr):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._name(tcb.faddr, tcb.fport, tcb.v6)

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self._check_open()
        tcb = self._opts
        if level == SOL_SOCKET and option == SO_LINGER:
            onoff, secs = _LINGER.unpack(bytes(value)[:8]) if isinstance(
                value, (bytes, bytearray)) else (1, int(value))
            tcb.linger = secs if onoff else None
            return
        value = option_int(value)
        if level == SOL_SOCKET:
            if option in REUSE_FLAGS:
                setattr(self, REUSE_FLAGS[option], bool(value))
            elif option == SO_KEEPALIVE:
                usrreq.set_keepalive(tcb, bool(value))
            elif option == SO_RCVBUF:
                if value <= 0:
                    raise OSError(errno.EINVAL, "Invalid argument")
                tcb.rcv_space = min(value, self.vnet.tcp.rcvbuf_max)
            elif option == SO_SNDBUF:
                if value <= 0:
                    raise OSError(errno.EINVAL, "Invalid argument")
                tcb.snd_space = min(value, self.vnet.tcp.rcvbuf_max)
            elif option == SO_BROADCAST:
                pass
            elif option == SO_SETFIB:
                tcb.fib = check_fib(self.vnet, value)
            else:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        elif level == IPPROTO_TCP:
            if option == TCP_NODELAY:
                usrreq.set_nodelay(tcb, bool(value))
            elif option == TCP_MAXSEG:
                usrreq.set_maxseg(tcb, value)
            else:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        elif level == IPPROTO_IP and option in (IP_TTL, IP_TOS):
            if option == IP_TTL:
                self.ttl = tcb.ip_ttl = value or None
            else:
                self.tos = tcb.ip_tos = value & 0xFF
        elif level == IPPROTO_IPV6 and self.family == _std.AF_INET6:
            self._setsockopt6(tcb, option, value)
        else:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def _setsockopt6(self, tcb: Tcb, option: int, value: int) -> None:
        if option == IPV6_V6ONLY:
            if self.tcb is not None or self.lport:
                raise OSError(errno.EINVAL, "Invalid argument")  # only before bind
            self.v6only = bool(value)
        elif option == IPV6_UNICAST_HOPS:
            if value > 0x7FFFFFFF:
                value -= 1 << 32
            if not -1 <= value <= 255:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.ttl = tcb.ip_ttl = None if value == -1 else value
        elif option == IPV6_TCLASS:
            self.tos = tcb.ip_tos = value & 0xFF
        else:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int | bytes:
        self._check_open()
        tcb = self._opts
        if (level, option) == (SOL_SOCKET, SO_ERROR):
            err, tcb.so_error = tcb.so_error, 0
            return err
        if (level, option) == (SOL_SOCKET, SO_LINGER):
            raw = _LINGER.pack(int(tcb.linger is not None), tcb.linger or 0)
            return raw if buflen else int(tcb.linger is not None)
        if level == SOL_SOCKET and option in REUSE_FLAGS:
            return int(getattr(self, REUSE_FLAGS[option]))
        table = {
            (SOL_SOCKET, SO_KEEPALIVE): int(tcb.keepalive),
            (SOL_SOCKET, SO_RCVBUF): tcb.rcv_space,
            (SOL_SOCKET, SO_SNDBUF): tcb.snd_space,
            (SOL_SOCKET, SO_TYPE): SOCK_STREAM,
            (SOL_SOCKET, SO_SETFIB): tcb.fib,
            (SOL_SOCKET, SO_ACCEPTCONN): int(tcb.state == LISTEN),
            (SOL_SOCKET, SO_BROADCAST): 0,
            (IPPROTO_TCP, TCP_NODELAY): int(tcb.nodelay),
            (IPPROTO_TCP, TCP_MAXSEG): tcb.mss,
            (IPPROTO_IP, IP_TTL): self.ttl or self.vnet.ip.ttl,
            (IPPROTO_IP, IP_TOS): self.tos,
            (IPPROTO_IPV6, IPV6_V6ONLY): int(self.v6only),
            (IPPROTO_IPV6, IPV6_UNICAST_HOPS): self.ttl or self.vnet.ip6.hlim,
            (IPPROTO_IPV6, IPV6_TCLASS): self.tos,
        }
        try:
            return table[(level, option)]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available") from None

    def __repr__(self) -> str:
        state = self.tcb.state_name if self.tcb is not None else "unbound"
        name = self.getsockname() if not self.closed else None
        return f"<vimage.TcpSocket vnet={self.vnet.display_name} {state} {name}>"
