"""Python's `socket` module inside `vimage exec`: real descriptors relayed by vimaged.

A process started by `vimage exec NAME` imports this at start-up (the daemon puts a
`sitecustomize` that does it on PYTHONPATH), and every AF_INET socket it makes is a
`socket.socket` whose descriptor is one end of a unix socketpair; vimaged holds the
other end and relays it to a TCP or UDP socket of vnet NAME. Data calls (send, recv,
sendall, makefile, sendfile) go straight to that descriptor, so `select`,
`selectors`, `socketserver` and `asyncio` work unchanged; calls that name addresses or
change state (bind, listen, accept, connect, getsockname, setsockopt, ...) are
requests on the process's scoped control channel. Accepted connections arrive as
descriptors passed with SCM_RIGHTS.

On the wire between the process and the daemon:
- a stream socket's pair carries the TCP byte stream as it is; the daemon half-closes
  each side when the other does;
- a datagram socket's pair (SOCK_DGRAM) carries one message per datagram, headed by
  `DGRAM_HEADER` (kind, IPv4 address, port): kind 0 is data (to or from that
  address; 0.0.0.0:0 means the connected peer), kind 1 an error (errno in the port
  field) that the relay reports without waiting (dropped if the pair is full) and the
  process raises on its next receive, or its next send when nothing is queued before it;
  kind 2 is data with control messages between the header and the data
  (`pack_control`): from the vnet those the socket asked for (IP_RECVTTL,
  IPV6_RECVPKTINFO, ...), for recvmsg; to the vnet sendmsg's (IP_SENDSRCADDR, ...);
- a listening socket's pair carries one byte per connection waiting for accept();
- a routing socket (`socket(17, SOCK_RAW)`: FreeBSD's AF_ROUTE, docs/routing.md) is a
  datagram socket whose messages carry address 0.0.0.0:0;
- an AF_INET6 socket is relayed the same way; its datagrams are headed by
  `DGRAM6_HEADER` (kind, IPv6 address, port, scope id; :: port 0 is the connected
  peer), its addresses are `(host, port, flowinfo, scope_id)` tuples.
When the socket's vnet is destroyed the daemon closes its ends: a datagram socket's calls
then fail with ENETDOWN, a stream sees the end of its connection.
Names are resolved by the daemon in the vnet (its hosts table).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket as _socket
import struct
import termios
import threading
from typing import Any

from vimage.ctl.client import Client, connect_channel
from vimage.ctl.protocol import CtlError
from vimage.socket.msg import fit_control
from vimage.stdlib import ORIGINAL

AF_ROUTE = 17  # FreeBSD's value: `socket.socket(17, SOCK_RAW)` is the vnet's routing socket
DGRAM_HEADER = struct.Struct("!B4sH")
DGRAM6_HEADER = struct.Struct("!B16sHI")
DGRAM_DATA = 0
DGRAM_ERROR = 1
DGRAM_CONTROL = 2
CONTROL_ROOM = 1024  # what a receive reads past the data, for a kind 2 message's controls
_CMSG = struct.Struct("!iiH")  # level, type, length of one control message
_NCMSG = struct.Struct("!H")


def pack_control(items: list[tuple[int, int, bytes]]) -> bytes:
    """Control messages as a kind 2 datagram carries them (a count, then each)."""
    out = [_NCMSG.pack(len(items))]
    for level, kind, data in items:
        out.append(_CMSG.pack(level, kind, len(data)) + bytes(data))
    return b"".join(out)


def unpack_control(buf: bytes, off: int) -> tuple[list[tuple[int, int, bytes]], int]:
    """`pack_control`'s items from `buf` at `off`, and the offset past them."""
    (count,) = _NCMSG.unpack_from(buf, off)
    off += _NCMSG.size
    items = []
    for _ in range(count):
        level, kind, n = _CMSG.unpack_from(buf, off)
        off += _CMSG.size
        items.append((level, kind, bytes(buf[off:off + n])))
        off += n
    return items, off


def _oserror(reply: dict[str, Any]) -> OSError:
    if "gaierror" in reply:
        return _socket.gaierror(int(reply["gaierror"]), str(reply.get("message", "")))
    err = int(reply["errno"])
    return OSError(err, reply.get("message") or os.strerror(err))


def _addr6(address: Any) -> tuple[str, int, int]:
    """(host, port, scope id) of an AF_INET6 address (a 2- to 4-tuple, as CPython)."""
    if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
        raise TypeError("AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])")
    host, port = address[0], address[1]
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if isinstance(host, bytes):
        host = host.decode()
    return str(host), port, int(address[3]) if len(address) > 3 else 0


def _addr(address: Any) -> tuple[str, int]:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a tuple (host, port)")
    host, port = address
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if isinstance(host, bytes):
        host = host.decode()
    return str(host), port


class Channel:
    """The scoped control connection, shared by every thread of the process."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.lock = threading.Lock()

    def call(self, op: str, **fields: Any) -> tuple[dict[str, Any], list[int]]:
        """A socket request; OSError (or gaierror) when the daemon says it failed."""
        with self.lock:
            try:
                reply, fds = self.client.call(op, **fields)
            except CtlError as exc:
                raise OSError(errno.EIO, f"vimage: {exc.message}") from None
        if "errno" in reply or "gaierror" in reply:
            for fd in fds:
                os.close(fd)
            raise _oserror(reply)
        return reply, fds

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.call(op, **fields)[0]


def make_socket_class(channel: Channel, real: type) -> type:
    """The `socket.socket` of a process in a vnet (a subclass of the real one)."""

    class socket(real):  # type: ignore[misc,valid-type]
        __slots__ = ("_vfamily", "_vid", "_vproto", "_vtype")

        def __new__(cls, family: int = -1, type: int = -1, proto: int = -1,
                    fileno: int | None = None) -> Any:
            if family in (-1, _socket.AF_INET, _socket.AF_INET6, AF_ROUTE) and fileno is None:
                return real.__new__(cls)
            return real(family, type, proto, fileno)  # AF_UNIX and friends stay real

        def __init__(self, family: int = -1, type: int = -1, proto: int = -1,
                     fileno: int | None = None) -> None:
            if family == AF_ROUTE:  # a routing socket of the vnet (FreeBSD's AF_ROUTE)
                reply, fds = channel.call("socket", family=AF_ROUTE, type=int(type),
                                          proto=max(proto, 0))
                self._adopt(reply, fds[0])
                return
            kind = _socket.SOCK_STREAM if type == -1 else type
            fam = _socket.AF_INET if family == -1 else int(family)
            reply, fds = channel.call("socket", type=int(kind), proto=max(proto, 0), family=fam)
            self._adopt(reply, fds[0])
            if int(kind) & _socket.SOCK_NONBLOCK:  # as CPython's socket(): the daemon
                self.setblocking(False)  # only hears the base type

        def _adopt(self, reply: dict[str, Any], fd: int) -> None:
            self._vfamily = int(reply.get("family", _socket.AF_INET))
            self._vid = int(reply["sid"])
            self._vtype = _socket.SocketKind(int(reply["type"]))
            self._vproto = int(reply["proto"])
            pair = _socket.SOCK_STREAM if self._vtype == _socket.SOCK_STREAM else \
                _socket.SOCK_SEQPACKET
            os.set_inheritable(fd, False)  # as every socket Python makes (PEP 446)
            real.__init__(self, _socket.AF_UNIX, pair, 0, fd)

        @classmethod
        def _wrap(cls, reply: dict[str, Any], fd: int) -> Any:
            sock = real.__new__(cls)
            sock._adopt(reply, fd)
            return sock

        # what the socket is, as the program made it
        family = property(lambda self: self._vfamily)
        type = property(lambda self: self._vtype)
        proto = property(lambda self: self._vproto)

        def __repr__(self) -> str:
            return (f"<vimage socket fd={self.fileno()}, family={self.family!r}, "
                    f"type={self._vtype!r}, "
                    f"vnet={channel.client.vnet}>")

        # -- set-up: requests to the daemon ----------------------------------------------
        def _v6(self) -> bool:
            return self._vfamily == _socket.AF_INET6

        def _where(self, address: Any) -> dict[str, Any]:
            """The request fields naming `address`."""
            if self._v6():
                host, port, scope = _addr6(address)
                return {"host": host, "port": port, "scope": scope}
            host, port = _addr(address)
            return {"host": host, "port": port}

        def _named(self, reply: dict[str, Any]) -> Any:
            if self._v6():
                return str(reply["host"]), int(reply["port"]), 0, int(reply.get("scope", 0))
            return str(reply["host"]), int(reply["port"])

        def bind(self, address: Any) -> None:
            channel.request("sock.bind", sid=self._vid, **self._where(address))

        def listen(self, backlog: int = 128) -> None:
            channel.request("sock.listen", sid=self._vid, backlog=int(backlog))

        def connect(self, address: Any) -> None:
            where = self._where(address)
            timeout = self.gettimeout()
            if timeout == 0:
                channel.request("sock.connect", sid=self._vid, wait=0.0, **where)
                return
            channel.request("sock.connect", sid=self._vid,
                            wait=-1.0 if timeout is None else timeout, **where)

        def connect_ex(self, address: Any) -> int:
            try:
                self.connect(address)
            except OSError as exc:
                return exc.errno or errno.EINVAL
            return 0

        def accept(self) -> tuple[Any, tuple[str, int]]:
            timeout = self.gettimeout()
            if timeout != 0:
                ready, _, _ = select.select([self], [], [], timeout)
                if not ready:
                    raise TimeoutError("timed out")
            try:
                byte = real.recv(self, 1)  # one byte per waiting connection
            except ConnectionResetError:  # the daemon closed its end with bytes unread
                byte = b""
            if not byte:
                self._go_quiet()
                raise OSError(errno.ENETDOWN, "vimage: the daemon closed this listening socket")
            reply, fds = channel.call("sock.accept", sid=self._vid)
            conn = type(self)._wrap(reply, fds[0])
            if _socket.getdefaulttimeout() is None and timeout:
                conn.setblocking(True)  # as the stdlib's accept()
            return conn, self._named(reply)

        def _go_quiet(self) -> None:
            """The daemon's end is gone: put a never-readable descriptor in its place, so
            a server's select loop waits (as on a dead network) instead of spinning."""
            quiet = real(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                quiet.bind("")  # autobind to an abstract name nobody will connect to
                quiet.listen(1)
                os.dup2(quiet.fileno(), self.fileno())
            finally:
                quiet.close()

        def getsockname(self) -> Any:
            return self._named(channel.request("sock.name", sid=self._vid, peer=False))

        def getpeername(self) -> Any:
            return self._named(channel.request("sock.name", sid=self._vid, peer=True))

        def setsockopt(self, level: int, option: int, value: Any, optlen: Any = None) -> None:
            if isinstance(value, (bytes, bytearray)):
                value = {"bytes": bytes(value).hex()}
            elif value is None:
                raise OSError(errno.EINVAL, "Invalid argument")
            else:
                value = int(value)  # True, IntEnum: plain ints in JSON
            channel.request("sock.setopt", sid=self._vid, level=level, option=option,
                            value=value)

        def getsockopt(self, level: int, option: int, buflen: int = 0) -> Any:
            reply = channel.request("sock.getopt", sid=self._vid, level=level, option=option,
                                    buflen=buflen)
            value = reply["value"]
            return bytes.fromhex(value["bytes"]) if isinstance(value, dict) else int(value)

        def dup(self) -> Any:
            return type(self)._wrap({"sid": self._vid, "type": int(self._vtype),
                                     "proto": self._vproto, "family": self._vfamily},
                                    os.dup(self.fileno()))

        # -- datagrams: one headed message per datagram ----------------------------------
        def _dgram(self) -> bool:
            return self._vtype != _socket.SOCK_STREAM

        def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
            flags, address = (0, flags_or_addr) if addr is None else (flags_or_addr, addr)
            if not self._dgram():  # a stream: the address is checked, then ignored (TCP)
                self._where(address)
                return real.send(self, data, flags)
            self._send_dgram(self._dgram_head(address, DGRAM_DATA), data, flags)
            return len(data)

        def _dgram_head(self, address: Any, kind: int) -> bytes:
            """The header of a datagram to `address` (None: the connected peer)."""
            if self._v6():
                if address is None:
                    return DGRAM6_HEADER.pack(kind, bytes(16), 0, 0)
                host, port, scope = _addr6(address)
                packed6 = _ip6(host)
                if packed6 is None:
                    reply = channel.request("sock.resolve", host=host, family=_socket.AF_INET6)
                    packed6 = _ip6(reply["addr"]) or bytes(16)
                    scope = int(reply.get("scope", 0)) or scope
                return DGRAM6_HEADER.pack(kind, packed6, port, scope)
            if address is None:
                return DGRAM_HEADER.pack(kind, b"\0\0\0\0", 0)
            host, port = _addr(address)
            packed = channel.request("sock.resolve", host=host)["addr"] if not _is_ip(host) \
                else host
            return DGRAM_HEADER.pack(kind, _socket.inet_aton(packed), port)

        def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0,
                    address: Any = None) -> int:
            """sendmsg: a datagram's control messages (IP_SENDSRCADDR, IP_PKTINFO) go to the
            vnet socket in a kind 2 datagram; a stream takes none (EINVAL), as in a vnet."""
            data = b"".join(bytes(memoryview(b).cast("B")) for b in buffers)
            items = [(int(level), int(kind), bytes(value)) for level, kind, value in ancdata]
            if not self._dgram():
                if items:
                    raise OSError(errno.EINVAL, "Invalid argument")
                if address is not None:
                    self._where(address)
                return real.send(self, data, flags)
            head = self._dgram_head(address, DGRAM_CONTROL if items else DGRAM_DATA)
            self._send_dgram(head + (pack_control(items) if items else b""), data, flags)
            return len(data)

        def send(self, data: Any, flags: int = 0) -> int:
            if not self._dgram():
                return real.send(self, data, flags)
            head = DGRAM6_HEADER.pack(DGRAM_DATA, bytes(16), 0, 0) if self._v6() \
                else DGRAM_HEADER.pack(DGRAM_DATA, b"\0\0\0\0", 0)
            self._send_dgram(head, data, flags)
            return len(data)

        def sendall(self, data: Any, flags: int = 0) -> None:
            if not self._dgram():
                return real.sendall(self, data, flags)
            self.send(data, flags)
            return None

        def _send_dgram(self, head: bytes, data: Any, flags: int) -> None:
            self._take_error()
            try:
                real.send(self, head + bytes(data), flags)
            except (BrokenPipeError, ConnectionResetError):
                raise _gone() from None

        def _take_error(self) -> None:
            """Raise the error the relay reported for an earlier datagram, if it heads the
            queue: a send returns a socket's pending error (so_error) as a kernel's does.
            Never a wait: FIONREAD says whether anything is queued (cheaper than a
            failing MSG_DONTWAIT peek), then a peek at the head."""
            queued = bytearray(4)
            fcntl.ioctl(self.fileno(), termios.FIONREAD, queued)
            if queued == b"\0\0\0\0":
                return
            header = DGRAM6_HEADER if self._v6() else DGRAM_HEADER
            try:
                head = real.recv(self, header.size, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
            except BlockingIOError:  # another thread took it
                return
            except ConnectionResetError:  # the daemon closed its end with ours unread
                raise _gone() from None
            if len(head) == header.size and head[0] == DGRAM_ERROR:
                real.recv(self, header.size, _socket.MSG_DONTWAIT)  # taken: cleared
                err = header.unpack(head)[2]
                raise OSError(err, os.strerror(err))

        def _recv_dgram(self, bufsize: int, flags: int) -> tuple[bytes, Any]:
            data, _, _, address = self._recv_dgram_msg(bufsize, flags)
            return data, address

        def _recv_dgram_msg(self, bufsize: int,
                            flags: int) -> tuple[bytes, list[Any], int, Any]:
            """(data, control messages, MSG_TRUNC or 0, address) of the next datagram."""
            header = DGRAM6_HEADER if self._v6() else DGRAM_HEADER
            bufsize = max(bufsize, 0)
            try:
                message, _, pair_flags, _ = real.recvmsg(
                    self, bufsize + header.size + CONTROL_ROOM, 0,
                    flags & ~_socket.MSG_TRUNC)
            except ConnectionResetError:  # the daemon closed its end: the vnet is gone
                raise _gone() from None
            if not message:  # the daemon closed its end: the vnet (or the daemon) is gone
                raise _gone()
            fields = header.unpack_from(message)
            kind, raw, port = fields[:3]
            if kind == DGRAM_ERROR:
                raise OSError(port, os.strerror(port))
            control, off = unpack_control(message, header.size) if kind == DGRAM_CONTROL \
                else ([], header.size)
            payload = message[off:]
            trunc = _socket.MSG_TRUNC if len(payload) > bufsize or \
                pair_flags & _socket.MSG_TRUNC else 0
            if self._v6():
                address: Any = (_socket.inet_ntop(_socket.AF_INET6, raw), port, 0, fields[3])
            else:
                address = (_socket.inet_ntoa(raw), port)
            return payload[:bufsize], control, trunc, address

        def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> Any:
            """recvmsg: a datagram's control messages come from the vnet socket (the
            relay carries them); a stream's is the pair's own."""
            if not self._dgram():
                return real.recvmsg(self, bufsize, ancbufsize, flags)
            data, control, msg_flags, address = self._recv_dgram_msg(bufsize, flags)
            control, cut = fit_control(control, ancbufsize)
            return data, control, msg_flags | (_socket.MSG_CTRUNC if cut else 0), address

        def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
            if not self._dgram():
                return real.recv(self, bufsize, flags), None
            return self._recv_dgram(bufsize, flags)

        def recv(self, bufsize: int, flags: int = 0) -> bytes:
            if not self._dgram():
                return real.recv(self, bufsize, flags)
            return self._recv_dgram(bufsize, flags)[0]

        def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
            if not self._dgram():
                return real.recv_into(self, buffer, nbytes, flags), None
            view = memoryview(buffer).cast("B")
            data, address = self._recv_dgram(nbytes or len(view), flags)
            view[:len(data)] = data
            return len(data), address

        def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
            if not self._dgram():
                return real.recv_into(self, buffer, nbytes, flags)
            return self.recvfrom_into(buffer, nbytes, flags)[0]

    setattr(socket, ORIGINAL, real)
    return socket


def _gone() -> OSError:
    return OSError(errno.ENETDOWN, "vimage: the vnet of this socket (or the daemon) has gone")


def _ip6(host: str) -> bytes | None:
    """The 16 bytes of a numeric IPv6 address without a zone, else None."""
    if "%" in host:
        return None
    try:
        return _socket.inet_pton(_socket.AF_INET6, host)
    except OSError:
        return None


def _is_ip(host: str) -> bool:
    try:
        _socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def _resolver(channel: Channel, op: str, original: Any) -> Any:
    def resolve(*args: Any, **kwargs: Any) -> Any:
        reply = channel.request("netdb", call=op, args=list(args), kwargs=kwargs)
        return _from_json(op, reply["result"])

    resolve.__name__ = resolve.__qualname__ = op
    resolve.__doc__ = original.__doc__
    setattr(resolve, ORIGINAL, original)
    return resolve


def _from_json(op: str, result: Any) -> Any:
    if op == "getaddrinfo":
        return [(_socket.AddressFamily(f), _socket.SocketKind(t), p, c, tuple(a))
                for f, t, p, c, a in result]
    if op in ("gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        return tuple(result)
    return result


RESOLVERS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
             "getnameinfo")


def install(client: Client) -> None:
    """Make this process's `socket` module act in the client's vnet (once)."""
    if hasattr(_socket.socket, ORIGINAL):
        return
    channel = Channel(client)
    for name in RESOLVERS:
        setattr(_socket, name, _resolver(channel, name, getattr(_socket, name)))
    _socket.socket = make_socket_class(channel, _socket.socket)  # type: ignore[misc]


def install_from_env() -> None:
    """Enter the vnet named by $VIMAGE through the channel in $VIMAGE_CTL_FD."""
    fd = os.environ.get("VIMAGE_CTL_FD")
    if not fd:
        return
    install(connect_channel(fd, os.environ.get("VIMAGE", "?")))
