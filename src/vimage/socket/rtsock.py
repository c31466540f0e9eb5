"""Routing sockets: `vnet.socket(AF_ROUTE, SOCK_RAW, 0)` (FreeBSD route(4)).

`send` writes one request message (vimage.wire.rtmsg) and raises its error as
write(2) does; the reply, and every message the stack broadcasts, is read with
`recv`. Readiness works with selectors and the vimage asyncio loop like any vimage
socket. Socket options (FreeBSD values):

    SOL_SOCKET SO_USELOOPBACK  0x0040  the sender receives its own messages (default on)
    SOL_SOCKET SO_SETFIB       0x1014  the fib requests act on and messages come from
    AF_ROUTE   ROUTE_MSGFILTER 1       a mask of 1 << RTM_x: only those types are read
"""

from __future__ import annotations

import errno
from collections import deque
from socket import MSG_DONTWAIT, MSG_PEEK, SO_RCVBUF, SO_SNDBUF, SO_TYPE, SOCK_RAW, SOL_SOCKET
from typing import TYPE_CHECKING, Any

from vimage.context import current_fib
from vimage.net import rtsock
from vimage.socket.socket import SocketBase, option_int

if TYPE_CHECKING:
    from vimage.vnet import Vnet

AF_ROUTE = rtsock.AF_ROUTE
SO_USELOOPBACK = 0x0040
SO_SETFIB = 0x1014
ROUTE_MSGFILTER = 1
RECVSPACE = 8192 * 8  # FreeBSD's route_recvspace (8 KB) is small; a monitor wants more


def route_filter(*types: int) -> int:
    """FreeBSD's ROUTE_FILTER(): the ROUTE_MSGFILTER mask letting `types` through."""
    mask = 0
    for t in types:
        mask |= 1 << t
    return mask


class RouteSocket(SocketBase):
    """A routing socket living in one vnet."""

    __slots__ = ("_rcvbytes", "_rcvq", "family", "fib", "msgfilter", "proto", "rcvbuf", "type",
                 "useloopback")

    def __init__(self, vnet: Vnet, family: int = AF_ROUTE, type: int = SOCK_RAW,
                 proto: int = 0) -> None:
        if not vnet.alive:
            raise OSError(errno.ENETDOWN, "vnet is destroyed")
        if type & 0xF != SOCK_RAW:
            raise OSError(errno.ESOCKTNOSUPPORT, "Socket type not supported")
        super().__init__(vnet, type)
        self.family = family
        self.type = SOCK_RAW
        self.proto = proto  # an address family: only its messages (0: all)
        fib = current_fib.get()
        self.fib = fib if fib < vnet.route.fibs else 0
        self.useloopback = True
        self.msgfilter = 0
        self.rcvbuf = RECVSPACE
        self._rcvq: deque[bytes] = deque()
        self._rcvbytes = 0
        vnet.rtsock.sockets.append(self)

    # -- kernel side ------------------------------------------------------------------------
    def deliver(self, msg: bytes) -> bool:
        """Queue a message; False (counted by the kernel) when the buffer is full."""
        if self.closed or self._rcvbytes + len(msg) > self.rcvbuf:
            return False
        self._rcvq.append(msg)
        self._rcvbytes += len(msg)
        if self._poll is not None:
            self._poll.touch(self)
        return True

    def _events(self) -> int:
        return (1 if self._rcvq or self.closed else 0) | 2

    @property
    def _lock(self) -> Any:
        return self.vnet.kernel.sched.cond

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self.vnet.alive:  # a socket its vnet's destruction left behind
            raise OSError(errno.ENETDOWN, "vnet is destroyed")

    # -- stdlib API -------------------------------------------------------------------------
    def send(self, data: bytes, flags: int = 0) -> int:
        with self._lock:
            self._check_open()
            msg = bytes(data)
            try:
                rtsock.write(self.vnet, msg, self)
            finally:
                self._lock.notify_all()
            return len(msg)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.send(data, flags)

    write = send

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        with self._lock:
            self._check_open()
            if not self._rcvq:
                if self._timeout == 0 or flags & MSG_DONTWAIT:
                    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                ready = self.vnet.kernel.wait(lambda: bool(self._rcvq or self.closed),
                                              self._timeout)
                if self.closed:
                    raise OSError(errno.EBADF, "Bad file descriptor")
                if not ready:
                    raise TimeoutError("timed out")
            if flags & MSG_PEEK:
                return self._rcvq[0][:bufsize]
            msg = self._rcvq.popleft()
            self._rcvbytes -= len(msg)
            return msg[:bufsize]

    read = recv

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view), flags)
        view[:len(data)] = data
        return len(data)

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        self._check_open()
        number = option_int(value)
        if level == SOL_SOCKET and option == SO_USELOOPBACK:
            self.useloopback = bool(number)
        elif level == SOL_SOCKET and option == SO_SETFIB:
            self.vnet.route.table(number)  # EINVAL for a fib that does not exist
            self.fib = number
        elif level == SOL_SOCKET and option in (SO_RCVBUF, SO_SNDBUF):
            if number <= 0:
                raise OSError(errno.EINVAL, "Invalid argument")
            if option == SO_RCVBUF:
                self.rcvbuf = number
        elif level == AF_ROUTE and option == ROUTE_MSGFILTER:
            self.msgfilter = number & 0xFFFFFFFF
        else:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int:
        self._check_open()
        table = {
            (SOL_SOCKET, SO_USELOOPBACK): int(self.useloopback),
            (SOL_SOCKET, SO_SETFIB): self.fib,
            (SOL_SOCKET, SO_RCVBUF): self.rcvbuf,
            (SOL_SOCKET, SO_TYPE): self.type,
            (AF_ROUTE, ROUTE_MSGFILTER): self.msgfilter,
        }
        try:
            return table[(level, option)]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available") from None

    def close(self) -> None:
        if self.closed or self._defer_close():
            return
        with self._lock:
            self.closed = True
            sockets = self.vnet.rtsock.sockets
            if self in sockets:
                sockets.remove(self)
            self._rcvq.clear()
            self._rcvbytes = 0
            self._lock.notify_all()
            self._touch()

    def __repr__(self) -> str:
        state = " [closed]" if self.closed else ""
        return f"<vimage.RouteSocket{state} vnet={self.vnet.display_name} fib={self.fib}>"
