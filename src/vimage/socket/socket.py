"""Sockets bound to a vnet, with the stdlib `socket` module's names and semantics."""

from __future__ import annotations

import errno
import io
import os
import select as _select
import socket as _std
import struct
from collections import deque
from functools import partial
from socket import (  # a vnet's socket takes the stdlib's constants
    AF_INET,
    AF_INET6,
    IP_HDRINCL,
    IP_TOS,
    IP_TTL,
    IPPROTO_IP,
    IPPROTO_RAW,
    IPPROTO_UDP,
    MSG_DONTWAIT,
    MSG_PEEK,
    SO_BROADCAST,
    SO_ERROR,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_SNDBUF,
    SO_TYPE,
    SOCK_DGRAM,
    SOCK_RAW,
    SOCK_STREAM,
    SOL_SOCKET,
)
from socket import IPPROTO_ICMP as IPPROTO_ICMP  # re-exported for the tools
from socket import MSG_TRUNC as MSG_TRUNC
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.context import current_fib
from vimage.netinet.in_ import INADDR_BROADCAST
from vimage.netinet.in_pcb import is_mapped
from vimage.socket import msg as _msg
from vimage.socket.inet6 import (
    IPPROTO_ICMPV6,
    IPPROTO_IPV6,
    IPV6_CHECKSUM,
    IPV6_DONTFRAG,
    IPV6_MULTICAST_HOPS,
    IPV6_PKTINFO,
    IPV6_RECVPKTINFO,
    IPV6_TCLASS,
    IPV6_UNICAST_HOPS,
    IPV6_V6ONLY,
    LOOPBACK6,
    check_local6,
    parse_sockaddr6,
    sockaddr6,
    source6,
    zone_ifp,
)
from vimage.wire import WireError, ipv4
from vimage.wire import udp as wudp
from vimage.wire.ipv6 import needs_zone

if TYPE_CHECKING:
    from vimage.vnet import Vnet

SO_REUSEPORT = getattr(_std, "SO_REUSEPORT", 15)
SO_REUSEPORT_LB = _msg.SO_REUSEPORT_LB  # FreeBSD's load-balancing variant (in_pcb.c lbgroups)
# the type argument's flags (Linux values, as the stdlib has them; FreeBSD's differ but a
# program names them through the stdlib): honoured by every kind of vnet socket
SOCK_NONBLOCK = getattr(_std, "SOCK_NONBLOCK", 0x800)
SOCK_CLOEXEC = getattr(_std, "SOCK_CLOEXEC", 0x80000)
# the SOL_SOCKET options every vnet socket keeps as a flag of its own: option -> attribute
REUSE_FLAGS = MappingProxyType({SO_REUSEADDR: "reuseaddr", SO_REUSEPORT: "reuseport",
                                SO_REUSEPORT_LB: "reuseport_lb"})
_FLAGS = MappingProxyType({**REUSE_FLAGS, SO_BROADCAST: "broadcast"})
# FreeBSD's IP_DONTFRAG (67); Linux has no such option, so vimage defines it.
IP_DONTFRAG = 67
SO_SETFIB = 0x1014  # FreeBSD's: the FIB the socket's packets are routed with
_PKTINFO = struct.Struct("@16sI")  # struct in6_pktinfo
# the stdlib's flags are IntFlag members: `flags & MSG_PEEK` with a plain int flags runs
# enum's Python __rand__; plain ints test in one operation
_MSG_PEEK = int(MSG_PEEK)
_MSG_DONTWAIT = int(MSG_DONTWAIT)


_TRUNC = int(MSG_TRUNC)  # a plain int: `flags & MSG_TRUNC` would build an IntFlag each time

# poll(2)'s readable and writable masks, as Linux sets them (with the *NORM bits)
POLL_READ = _select.POLLIN | _select.POLLRDNORM
POLL_WRITE = _select.POLLOUT | _select.POLLWRNORM


def initial_timeout(type_: int) -> float | None:
    """A new socket's timeout: 0.0 (non-blocking) for SOCK_NONBLOCK in the type argument,
    as CPython's socket() does; SOCK_CLOEXEC needs nothing (a vnet socket is no
    descriptor of the process, so nothing can inherit it)."""
    return 0.0 if type_ & SOCK_NONBLOCK else None


def initial_fib(vnet: Vnet) -> int:
    """A new socket's fib: the running code's (setfib), as FreeBSD's socreate takes
    the process's p_fibnum; 0 if this vnet has no such fib."""
    fib = current_fib.get()
    return fib if fib < vnet.route.fibs else 0


def check_fib(vnet: Vnet, value: int) -> int:
    """SO_SETFIB's value, EINVAL for a fib the vnet does not have (FreeBSD sosetopt)."""
    if not 0 <= value < vnet.route.fibs:
        raise OSError(errno.EINVAL, "Invalid argument")
    return value


def parse_host(host: Any) -> int:
    """'10.0.0.1', '' (any), '<broadcast>', 'localhost' -> address as an int."""
    if not isinstance(host, str):
        raise TypeError(f"str expected for the host, not {type(host).__name__}")
    if host == "":
        return 0
    if host == "<broadcast>":
        return INADDR_BROADCAST
    if host == "localhost":
        return 0x7F000001
    try:
        return ipv4.aton(host)
    except WireError:
        raise _std.gaierror(_std.EAI_NONAME, "Name or service not known") from None


def parse_sockaddr(address: Any) -> tuple[int, int]:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a tuple (host, port)")
    host, port = address
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError("bind(): port must be 0-65535.")
    return parse_host(host), port


def option_int(value: Any) -> int:
    """A setsockopt value as an int: an int, or a native-endian C int in bytes."""
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value[:4], "little") if value else 0
    return int(value)


class SocketBase:
    """What every vnet socket shares: the stdlib's timeout and blocking-mode methods, over
    `_timeout`; a descriptor number and readiness for selectors (vimage.aio.KernelSelector);
    the stdlib's makefile.

    None blocks, 0.0 never blocks, a positive number is a timeout in seconds (of the
    kernel's clock, so virtual in virtual time). `_poll` is the selector watching the
    socket, or None; the stack calls `_touch()` when the socket's readiness may have
    changed, so selectors check only those. A subclass defines `_events` and `close`.
    """

    __slots__ = ("__weakref__", "_fd", "_io_refs", "_poll", "_timeout", "closed", "vnet")

    def __init__(self, vnet: Vnet, type_: int) -> None:
        self.vnet = vnet
        self.closed = False
        self._fd = -1  # a descriptor number, given on the first fileno()
        self._poll: Any = None
        self._io_refs = 0  # makefile's files open (negative: close() waits for them)
        self._timeout: float | None = initial_timeout(type_)

    # -- timeouts -------------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        return self._timeout

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    # -- readiness --------------------------------------------------------------------------
    def fileno(self) -> int:
        if self.closed:
            return -1
        if self._fd < 0:
            self._fd = self.vnet.kernel.alloc_fd(self)
        return self._fd

    def _touch(self) -> None:
        if self._poll is not None:
            self._poll.touch(self)

    def _events(self) -> int:
        """Readiness as selectors' EVENT_READ (1) | EVENT_WRITE (2)."""
        raise NotImplementedError

    def _pollmask(self) -> int:
        """Readiness as poll(2) reports it (select.POLL* bits; vimage.aio.KernelPoll):
        from the selectors' events, POLLNVAL once closed. Stream sockets say more."""
        if self.closed:
            return _select.POLLNVAL
        events = self._events()
        return (POLL_READ if events & 1 else 0) | (POLL_WRITE if events & 2 else 0) | (
            _select.POLLERR if getattr(self, "_so_error", 0) else 0)

    # -- file objects (the stdlib's socket.makefile) ---------------------------------------
    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the socket, as `socket.socket.makefile` (http.client uses it).

        As in the stdlib, closing the socket while such files are open only marks it:
        it closes when the last file does."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing, reading, binary = "w" in mode, "r" in mode or "w" not in mode, "b" in mode
        raw_mode: Any = ("r" if reading else "") + ("w" if writing else "")
        raw = _std.SocketIO(self, raw_mode)  # type: ignore[arg-type]  # duck-typed socket
        self._io_refs += 1 if self._io_refs >= 0 else -1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        elif self._io_refs < 0:  # close() was called: the last file closes the socket
            self._io_refs += 1
            if self._io_refs == 0:
                self.close()

    def _defer_close(self) -> bool:
        """close() with files still open: remember it (a negative count), close with the last."""
        if self._io_refs > 0:
            self._io_refs = -self._io_refs
        return self._io_refs < 0


def _readable(sock: Socket) -> bool:
    """What a blocked receive waits for."""
    return bool(sock._rcvq or sock._so_error or sock.closed)


class Socket(SocketBase):
    """An AF_INET datagram or raw socket living in one vnet."""

    __slots__ = (
        "_dest",
        "_peer",
        "_rcvbytes",
        "_rcvq",
        "_so_error",
        "broadcast",
        "cksum_off",
        "dontfrag",
        "faddr",
        "family",
        "fib",
        "fport",
        "hdrincl",
        "hlim6",
        "laddr",
        "lport",
        "mhops6",
        "onesbcast",
        "proto",
        "rcvbuf",
        "recvopts",
        "recvpktinfo",
        "reuseaddr",
        "reuseport",
        "reuseport_lb",
        "scope",
        "sndbuf",
        "tos",
        "ttl",
        "type",
        "v6only",
    )

    def __init__(self, vnet: Vnet, family: int = AF_INET, type: int = SOCK_DGRAM,
                 proto: int = 0) -> None:
        if not vnet.alive:
            raise OSError(errno.ENETDOWN, "vnet is destroyed")
        if family not in (AF_INET, AF_INET6):
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        base_type = type & 0xF
        if base_type == SOCK_DGRAM:
            if proto not in (0, IPPROTO_UDP):
                raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
            proto = IPPROTO_UDP
        elif base_type == SOCK_RAW:
            if not 0 <= proto <= 255:
                raise OSError(errno.EINVAL, "Invalid argument")
        elif base_type == SOCK_STREAM:
            raise OSError(errno.EPROTONOSUPPORT, "TCP is not available in this vnet yet")
        else:
            raise OSError(errno.ESOCKTNOSUPPORT, "Socket type not supported")
        super().__init__(vnet, type)
        self.family = family
        self.type = base_type
        self.proto = proto
        self.laddr = self.lport = self.faddr = self.fport = 0
        # (data, source, port), with (destination, interface index) for IPV6_RECVPKTINFO
        self._rcvq: deque[tuple[Any, ...]] = deque()
        self._rcvbytes = 0
        self._so_error = 0
        # the last sendto() address and what it parsed to, (address, addr, port), and the
        # last sender recvfrom() formatted, (addr, port, sockaddr): repeated peers are
        # parsed / formatted once
        self._dest: tuple[Any, int, int] | None = None
        self._peer: tuple[int, int, Any] | None = None
        self.reuseaddr = self.reuseport = self.reuseport_lb = self.broadcast = False
        self.recvopts = 0  # IPv4 control messages asked for (vimage.socket.msg RECV_* bits)
        self.onesbcast = False
        self.ttl: int | None = None
        self.tos = 0
        self.hdrincl = base_type == SOCK_RAW and proto == IPPROTO_RAW
        self.dontfrag = False
        self.fib = initial_fib(vnet)
        # AF_INET6: IPV6_V6ONLY from net.inet6.ip6.v6only, the zone of a scoped address
        # bound or connected to, the hop limits (None: the default), the kernel's
        # checksum offset for raw sockets (RFC 3542 3.1: always 2 for ICMPv6)
        self.v6only = bool(vnet.ip6.v6only) if family == AF_INET6 else False
        self.scope = 0
        self.hlim6: int | None = None
        self.mhops6: int | None = None
        self.recvpktinfo = False
        self.cksum_off = 2 if family == AF_INET6 and proto == IPPROTO_ICMPV6 else -1
        if base_type == SOCK_RAW:
            self.rcvbuf, self.sndbuf = vnet.raw.recvspace, vnet.raw.maxdgram
            if family == AF_INET6:
                vnet.raw.add6(self)
            else:
                vnet.raw.sockets.add(self)
        else:
            self.rcvbuf, self.sndbuf = vnet.udp.recvspace, vnet.udp.maxdgram

    # -- kernel side ----------------------------------------------------------------
    def enqueue(self, data: bytes, src: int, sport: int,
                info: tuple[int, ...] | None = None) -> bool:
        """Queue a received datagram; False if the receive buffer is full. `info` is
        (destination, interface index), kept for IPV6_RECVPKTINFO, or for IPv4
        (destination, interface index, TTL, TOS), kept for the IP_RECV* options."""
        if self.closed or self._rcvbytes + len(data) > self.rcvbuf:
            return False
        self._rcvq.append((data, src, sport, info) if info is not None and (
            self.recvpktinfo or self.recvopts) else (data, src, sport))
        self._rcvbytes += len(data)
        if self._poll is not None:
            self._poll.touch(self)
        return True

    def set_error(self, err: int) -> None:
        self._so_error = err
        self._touch()

    def _events(self) -> int:
        """Readiness as selectors' EVENT_READ (1) | EVENT_WRITE (2)."""
        return (1 if self._rcvq or self._so_error or self.closed else 0) | 2

    @property
    def _lock(self) -> Any:
        return self.vnet.kernel.sched.cond

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.vnet.alive:  # a socket its vnet's destruction left behind
            raise OSError(errno.ENETDOWN, "vnet is destroyed")

    def _take_error(self) -> None:
        err = self._so_error
        if err:
            self._so_error = 0
            raise OSError(err, os.strerror(err))

    @property
    def _is_udp(self) -> bool:
        return self.type == SOCK_DGRAM

    # -- stdlib API -----------------------------------------------------------------
    def bind(self, address: tuple[Any, ...]) -> None:
        with self._lock:
            self._check_open()
            if self.family == AF_INET6:
                self._bind6(address)
                return
            addr, port = parse_sockaddr(address)
            vnet = self.vnet
            if addr and addr not in vnet.ip.local and addr != INADDR_BROADCAST \
                    and addr not in vnet.ip.bcast:
                raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
            if self._is_udp:
                if self.lport:
                    raise OSError(errno.EINVAL, "Invalid argument")
                vnet.udp.bind(self, addr, port)
            else:
                self.laddr = addr

    def _bind6(self, address: tuple[Any, ...]) -> None:
        vnet = self.vnet
        addr, port, scope = parse_sockaddr6(vnet, address)
        check_local6(vnet, addr, scope, self.v6only)
        if self._is_udp:
            if self.lport:
                raise OSError(errno.EINVAL, "Invalid argument")
            vnet.udp.bind(self, addr, port)
        else:
            self.laddr = addr
        self.scope = scope if needs_zone(addr) else 0

    def _connect6(self, address: tuple[Any, ...]) -> None:
        vnet = self.vnet
        addr, port, scope = parse_sockaddr6(vnet, address)
        if addr == 0:
            addr = LOOPBACK6  # as connecting to INADDR_ANY: this host
        if is_mapped(addr) and self.v6only:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        zone = zone_ifp(vnet, addr, scope or self.scope)
        if self._is_udp:
            if port == 0:
                raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
            if not self.laddr:
                src = source6(vnet, addr, zone, self.fib)
                if not self.lport:
                    vnet.udp.bind(self, 0, 0)
                self.laddr = src
        self.faddr, self.fport = addr, port
        if zone is not None:
            self.scope = zone.index
        self._so_error = 0

    def connect(self, address: tuple[Any, ...]) -> None:
        with self._lock:
            self._check_open()
            if self.family == AF_INET6:
                self._connect6(address)
                return
            addr, port = parse_sockaddr(address)
            vnet = self.vnet
            if addr == 0:
                addr = 0x7F000001  # BSD: connecting to INADDR_ANY means this host
            if self._is_udp:
                if addr in (INADDR_BROADCAST,) and not self.broadcast:
                    raise OSError(errno.EACCES, "Permission denied")
                if port == 0:
                    raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
                if not self.laddr:
                    src = vnet.ip.select_source(addr, self.fib)
                    if not self.lport:
                        vnet.udp.bind(self, 0, 0)
                    self.laddr = src
                self.faddr, self.fport = addr, port
            else:
                self.faddr = addr
            self._so_error = 0

    def connect_ex(self, address: tuple[str, int]) -> int:
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or errno.EINVAL
        return 0

    def send(self, data: Any, flags: int = 0) -> int:
        with self.vnet.kernel.sched.lock:
            self._check_open()
            if not self.faddr:
                raise OSError(errno.EDESTADDRREQ, "Destination address required")
            if self.family == AF_INET6:
                return self._send6(bytes(data), self.faddr, self.fport, self.scope)
            return self._send(bytes(data), self.faddr, self.fport)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.send(data, flags)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        if address is None:
            address = flags_or_address
        with self.vnet.kernel.sched.lock:  # the condition's lock, entered without its wrapper
            self._check_open()
            if self.faddr:
                raise OSError(errno.EISCONN, "Transport endpoint is already connected")
            if self.family == AF_INET6:
                addr, port, scope = parse_sockaddr6(self.vnet, address)
                if self._is_udp and port == 0:
                    raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
                return self._send6(bytes(data), addr or LOOPBACK6, port, scope or self.scope)
            dest = self._dest
            if dest is None or dest[0] != address:  # a new destination: parse it once
                peer = self._peer
                if peer is not None and peer[2] is address and peer[1]:
                    # an answer to the last sender, with the address recvfrom gave
                    dest = (address, peer[0] or 0x7F000001, peer[1])
                else:
                    addr, port = parse_sockaddr(address)
                    if self.type == SOCK_DGRAM and port == 0:
                        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
                    dest = (address, addr or 0x7F000001, port)
                self._dest = dest
            return self._send(bytes(data), dest[1], dest[2])

    def _send(self, data: bytes, dst: int, port: int) -> int:
        vnet = self.vnet
        if self.onesbcast and dst in vnet.ip.bcast:
            return self._send_special(data, dst, port, 0)
        if self.type == SOCK_DGRAM:
            if self._so_error:
                self._take_error()
            if not self.lport:
                vnet.udp.bind(self, 0, 0)
            vnet.udp.output(self, data, dst, port)
        else:
            vnet.raw.output(self, data, dst)
        sched = vnet.kernel.sched
        if not sched.virtual:  # only a real clock's loop sleeps on the condition
            sched.cond.notify_all()
        return len(data)

    def _send_special(self, data: bytes, dst: int, port: int, src: int) -> int:
        """Send an IPv4 datagram from a chosen source `src` (sendmsg's IP_SENDSRCADDR or
        IP_PKTINFO) or, with IP_ONESBCAST, to a subnet's broadcast address as
        255.255.255.255 out of that subnet's interface (FreeBSD udp_output and
        rip_output with IP_SENDONES: the route is the subnet's, the header's
        destination all ones, the UDP checksum over it)."""
        vnet = self.vnet
        ip = vnet.ip
        wire_dst = dst
        if self.onesbcast and dst in ip.bcast:
            if not self.broadcast:
                raise OSError(errno.EACCES, "Permission denied")
            wire_dst = INADDR_BROADCAST
            src = src or self.laddr or ip.bcast[dst].addr
        if self.type == SOCK_RAW and self.hdrincl:
            vnet.raw.output(self, data, dst)  # the caller's header names the addresses
            return len(data)
        src = src or self.laddr or ip.select_source(dst, self.fib)
        if self._is_udp:
            if len(data) + 8 > self.sndbuf:
                raise OSError(errno.EMSGSIZE, "Message too long")
            self._take_error()
            if not self.lport:
                vnet.udp.bind(self, 0, 0)
            payload = wudp.build(self.lport, port, data, src, wire_dst,
                                 with_checksum=bool(vnet.udp.checksum))
            proto = IPPROTO_UDP
        else:
            if len(data) > self.sndbuf:
                raise OSError(errno.EMSGSIZE, "Message too long")
            payload, proto = data, self.proto
        if len(payload) + 20 > 0xFFFF:
            raise OSError(errno.EMSGSIZE, "Message too long")
        pkt = ipv4.build(src, wire_dst, proto, payload, ttl=self.ttl or ip.ttl, tos=self.tos,
                         ident=ip.next_ident(), flags_frag=ipv4.FLAG_DF if self.dontfrag else 0)
        ip.output_packet(pkt, dst, broadcast_ok=self.broadcast, raw=not self._is_udp,
                         fib=self.fib)
        if self._is_udp:
            vnet.udp.stats.opackets += 1
        self._lock.notify_all()
        return len(data)

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,
                address: Any = None) -> int:
        """The stdlib's sendmsg. IPv4 control messages: IP_SENDSRCADDR (FreeBSD) or
        IP_PKTINFO (Linux) choose the source address, which must be this host's."""
        data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
        items = list(ancdata)
        if not items:
            return self.send(data, flags) if address is None else self.sendto(data, flags,
                                                                              address)
        if self.family == AF_INET6:
            raise OSError(errno.EINVAL, "Invalid argument")  # no IPv6 output options yet
        with self._lock:
            self._check_open()
            src = _msg.send_source(self.vnet, items)
            if address is None:
                if not self.faddr:
                    raise OSError(errno.EDESTADDRREQ, "Destination address required")
                dst, port = self.faddr, self.fport
            else:
                if self.faddr:
                    raise OSError(errno.EISCONN, "Transport endpoint is already connected")
                dst, port = parse_sockaddr(address)
                dst = dst or 0x7F000001
                if self._is_udp and port == 0:
                    raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
            return self._send_special(data, dst, port, src)

    def _send6(self, data: bytes, dst: int, port: int, scope: int) -> int:
        vnet = self.vnet
        if is_mapped(dst) and self.v6only:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        zone = zone_ifp(vnet, dst, scope)
        hlim = (self.mhops6 if self.mhops6 is not None else 1) if dst >> 120 == 0xFF \
            else self.hlim6
        if self._is_udp:
            self._take_error()
            if not self.lport:
                vnet.udp.bind(self, 0, 0)
            vnet.udp.output6(self, data, dst, port, zone, hlim)
        else:
            vnet.raw.output6(self, data, dst, zone, hlim)
        self._lock.notify_all()
        return len(data)

    def _sockaddr(self, addr: int, port: int) -> Any:
        """A received or bound address as the stdlib gives it for this family."""
        if self.family == AF_INET6:
            return sockaddr6(addr, port, self.scope)
        return ipv4.ntoa(addr), port

    def _wait_readable(self, flags: int) -> None:
        if self._rcvq or self._so_error:
            return
        if self._timeout == 0 or flags & _MSG_DONTWAIT:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        kernel = self.vnet.kernel
        ready = kernel.wait(partial(_readable, self), self._timeout)
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not ready:
            raise TimeoutError("timed out")

    def _recv(self, bufsize: int, flags: int) -> tuple[bytes, int, int]:
        entry = self._recv_entry(bufsize, flags)
        data = entry[0]
        return data if len(data) <= bufsize else data[:bufsize], entry[1], entry[2]

    def _recv_entry(self, bufsize: int, flags: int) -> tuple[Any, ...]:
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        with self._lock:
            self._check_open()
            self._wait_readable(flags)
            if not self._rcvq:
                self._take_error()
            if flags & _MSG_PEEK:
                return self._rcvq[0]
            entry = self._rcvq.popleft()
            self._rcvbytes -= len(entry[0])
            return entry

    def recvmsg(self, bufsize: int, ancbufsize: int = 0,
                flags: int = 0) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        """The stdlib's recvmsg: with IPV6_RECVPKTINFO on, an IPV6_PKTINFO item (struct
        in6_pktinfo: the destination address and the arrival interface, RFC 3542 6.1)."""
        entry = self._recv_entry(bufsize, flags)
        data, ancdata, msg_flags = self._msg_parts(entry, bufsize, ancbufsize)
        if flags & _TRUNC and len(data) > bufsize:
            return (data[:bufsize].ljust(len(data), b"\0"), ancdata, msg_flags,
                    self._sockaddr(entry[1], entry[2]))
        return data[:bufsize], ancdata, msg_flags, self._sockaddr(entry[1], entry[2])

    def _msg_parts(self, entry: tuple[Any, ...], bufsize: int,
                   ancbufsize: int) -> tuple[bytes, list[tuple[int, int, bytes]], int]:
        """(data, control messages, msg_flags) of a dequeued datagram for recvmsg:
        MSG_TRUNC if it did not fit, MSG_CTRUNC if its control messages did not."""
        data = entry[0]
        msg_flags = _TRUNC if len(data) > bufsize else 0
        if len(entry) <= 3:
            return data, [], msg_flags
        if self.family == AF_INET6:
            dst, index = entry[3]
            items = [(IPPROTO_IPV6, IPV6_PKTINFO, _PKTINFO.pack(dst.to_bytes(16, "big"), index))]
        else:
            items = _msg.recv_control(self.vnet, self.recvopts, entry[3])
        ancdata, cut = _msg.fit_control(items, ancbufsize)
        return data, ancdata, msg_flags | (int(_std.MSG_CTRUNC) if cut else 0)

    def recvmsg_into(self, buffers: Any, ancbufsize: int = 0,
                     flags: int = 0) -> tuple[int, list[tuple[int, int, bytes]], int, Any]:
        """The stdlib's recvmsg_into: the datagram scattered over `buffers`."""
        views = [memoryview(b).cast("B") for b in buffers]
        room = sum(len(v) for v in views)
        entry = self._recv_entry(room, flags)
        data, ancdata, msg_flags = self._msg_parts(entry, room, ancbufsize)
        at = 0
        for view in views:
            piece = data[at:at + len(view)]
            view[:len(piece)] = piece
            at += len(piece)
        nbytes = len(data) if flags & _TRUNC else at
        return nbytes, ancdata, msg_flags, self._sockaddr(entry[1], entry[2])

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not flags and bufsize >= 0:  # the common case: a datagram is waiting
            with self.vnet.kernel.sched.lock:
                queue = self._rcvq
                if queue and not self.closed:
                    data = queue.popleft()[0]
                    self._rcvbytes -= len(data)
                    return data if len(data) <= bufsize else data[:bufsize]
        if flags & _TRUNC:
            return self._recv_trunc(bufsize, flags)[0]
        return self._recv(bufsize, flags)[0]

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int]]:
        if flags & _TRUNC:
            return self._recv_trunc(bufsize, flags)
        data, src, sport = self._recv(bufsize, flags)
        if self.family != AF_INET:  # an IPv6 sockaddr also carries the socket's scope
            return data, self._sockaddr(src, sport)
        peer = self._peer
        if peer is None or peer[0] != src or peer[1] != sport:  # a new sender: format once
            peer = self._peer = (src, sport, (ipv4.ntoa(src), sport))
        return data, peer[2]

    def _recv_trunc(self, bufsize: int, flags: int) -> tuple[bytes, Any]:
        """recv with MSG_TRUNC (Linux udp_recvmsg, raw_recvmsg): the datagram's real
        length; CPython then sizes its result to that length, whose bytes past `bufsize`
        the kernel did not write: vimage makes them zeros."""
        entry = self._recv_entry(bufsize, flags)
        data = entry[0]
        return data[:bufsize].ljust(len(data), b"\0"), self._sockaddr(entry[1], entry[2])

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        return self.recvfrom_into(buffer, nbytes, flags)[0]

    def recvfrom_into(self, buffer: Any, nbytes: int = 0,
                      flags: int = 0) -> tuple[int, tuple[str, int]]:
        view = memoryview(buffer).cast("B")
        if nbytes < 0:
            raise ValueError("negative buffersize in recvfrom_into")
        if nbytes == 0 or nbytes > len(view):
            if nbytes > len(view):
                raise ValueError("nbytes is greater than the length of the buffer")
            nbytes = len(view)
        if flags & _TRUNC:  # the real length, the part that fits copied
            entry = self._recv_entry(nbytes, flags)
            view[:min(nbytes, len(entry[0]))] = entry[0][:nbytes]
            return len(entry[0]), self._sockaddr(entry[1], entry[2])
        data, src, sport = self._recv(nbytes, flags)
        view[:len(data)] = data
        return len(data), self._sockaddr(src, sport)

    def getsockname(self) -> Any:
        self._check_open()
        return self._sockaddr(self.laddr, self.lport)

    def getpeername(self) -> Any:
        self._check_open()
        if not self.faddr:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._sockaddr(self.faddr, self.fport)

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self._check_open()
        value = option_int(value)
        if level == SOL_SOCKET:
            if option in _FLAGS:
                setattr(self, _FLAGS[option], bool(value))
            elif option == SO_RCVBUF:
                self._set_buf("rcvbuf", value)
            elif option == SO_SNDBUF:
                self._set_buf("sndbuf", value)
            elif option == SO_SETFIB:
                self.fib = check_fib(self.vnet, value)
            else:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        elif level == IPPROTO_IP:
            if option == IP_TTL:
                if not 0 <= value <= 255:
                    raise OSError(errno.EINVAL, "Invalid argument")
                self.ttl = value or None
            elif option == IP_TOS:
                self.tos = value & 0xFF
            elif option == IP_HDRINCL and self.type == SOCK_RAW:
                self.hdrincl = bool(value)
            elif option == IP_DONTFRAG:
                self.dontfrag = bool(value)
            elif option in _msg.RECV_BITS and self.family == AF_INET:
                bit = _msg.RECV_BITS[option]
                self.recvopts = (self.recvopts | bit) if value else (self.recvopts & ~bit)
            elif option == _msg.IP_ONESBCAST and self.family == AF_INET:
                self.onesbcast = bool(value)
            else:
                raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        elif level == IPPROTO_IPV6 and self.family == AF_INET6:
            self._setsockopt6(option, value)
        else:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def _setsockopt6(self, option: int, value: int) -> None:
        """The IPPROTO_IPV6 options (FreeBSD ip6_ctloutput, RFC 3542)."""
        if option == IPV6_V6ONLY:
            if self.lport or (self.type == SOCK_RAW and self.laddr):
                raise OSError(errno.EINVAL, "Invalid argument")  # only before bind
            self.v6only = bool(value)
        elif option in (IPV6_UNICAST_HOPS, IPV6_MULTICAST_HOPS):
            if value > 0x7FFFFFFF:
                value -= 1 << 32  # -1 as an unsigned C int
            if not -1 <= value <= 255:
                raise OSError(errno.EINVAL, "Invalid argument")
            hops = None if value == -1 else value
            if option == IPV6_UNICAST_HOPS:
                self.hlim6 = hops
            else:
                self.mhops6 = hops
        elif option == IPV6_RECVPKTINFO:
            self.recvpktinfo = bool(value)
        elif option == IPV6_TCLASS:
            self.tos = value & 0xFF
        elif option == IPV6_DONTFRAG:
            self.dontfrag = bool(value)
        elif option == IPV6_CHECKSUM and self.type == SOCK_RAW:
            if value > 0x7FFFFFFF:
                value -= 1 << 32
            if self.proto == IPPROTO_ICMPV6 or (value >= 0 and value & 1):
                raise OSError(errno.EINVAL, "Invalid argument")  # RFC 3542 3.1
            self.cksum_off = max(value, -1)
        else:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def _set_buf(self, which: str, value: int) -> None:
        if value <= 0 or value > 2**26:
            raise OSError(errno.EINVAL if value <= 0 else errno.ENOBUFS, "Invalid argument")
        setattr(self, which, value)

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int:
        self._check_open()
        if level == SOL_SOCKET and option in _FLAGS:
            return int(getattr(self, _FLAGS[option]))
        table = {
            (SOL_SOCKET, SO_RCVBUF): self.rcvbuf,
            (SOL_SOCKET, SO_SNDBUF): self.sndbuf,
            (SOL_SOCKET, SO_TYPE): self.type,
            (SOL_SOCKET, SO_SETFIB): self.fib,
            (IPPROTO_IP, IP_TTL): self.ttl or self.vnet.ip.ttl,
            (IPPROTO_IP, IP_TOS): self.tos,
            (IPPROTO_IP, IP_HDRINCL): int(self.hdrincl),
            (IPPROTO_IP, IP_DONTFRAG): int(self.dontfrag),
            (IPPROTO_IP, _msg.IP_ONESBCAST): int(self.onesbcast),
        }
        if level == IPPROTO_IP and option in _msg.RECV_BITS and self.family == AF_INET:
            return int(bool(self.recvopts & _msg.RECV_BITS[option]))
        if (level, option) == (SOL_SOCKET, SO_ERROR):
            err, self._so_error = self._so_error, 0
            return err
        if level == IPPROTO_IPV6 and self.family == AF_INET6:
            table = {
                (IPPROTO_IPV6, IPV6_V6ONLY): int(self.v6only),
                (IPPROTO_IPV6, IPV6_UNICAST_HOPS): self.hlim6 if self.hlim6 is not None
                else self.vnet.ip6.hlim,
                (IPPROTO_IPV6, IPV6_MULTICAST_HOPS): self.mhops6 if self.mhops6 is not None
                else 1,
                (IPPROTO_IPV6, IPV6_RECVPKTINFO): int(self.recvpktinfo),
                (IPPROTO_IPV6, IPV6_TCLASS): self.tos,
                (IPPROTO_IPV6, IPV6_DONTFRAG): int(self.dontfrag),
            }
            if self.type == SOCK_RAW:
                table[(IPPROTO_IPV6, IPV6_CHECKSUM)] = self.cksum_off
        try:
            return table[(level, option)]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available") from None

    def close(self) -> None:
        if self.closed or self._defer_close():
            return
        with self._lock:
            self.closed = True
            vnet = self.vnet
            if self.type == SOCK_RAW:
                vnet.raw.discard(self)
            elif self.lport:
                vnet.udp.unbind(self)
            self._rcvq.clear()
            self._rcvbytes = 0
            self._lock.notify_all()
            self._touch()

    def __repr__(self) -> str:
        state = " [closed]" if self.closed else ""
        return (f"<vimage.Socket{state} vnet={self.vnet.display_name} family={self.family} "
                f"type={self.type} "
                f"proto={self.proto} laddr={self.getsockname() if not self.closed else None}>")
