"""The socket requests of processes in a vnet (`vimage exec`), and the relay behind them.

A process's AF_INET socket is a vimage socket here and one end of a unix socketpair
there (vimage.ctl.remote describes the framing). A `VimageEventLoop` in its own thread
moves bytes between each pair's daemon end and its vimage socket, accepts connections
for listening sockets, and runs every request's socket work, so one thread touches
the sockets and requests need no locks. Sockets belong to the control connection that
made them: when the process goes, they are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
import threading
from collections.abc import Coroutine, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage import netdb
from vimage.aio.loop import VimageEventLoop
from vimage.ctl.ops import Op, OpFunc, Request
from vimage.ctl.protocol import BAD_REQUEST, CtlError
from vimage.ctl.remote import (
    CONTROL_ROOM,
    DGRAM6_HEADER,
    DGRAM_CONTROL,
    DGRAM_DATA,
    DGRAM_ERROR,
    DGRAM_HEADER,
    pack_control,
    unpack_control,
)
from vimage.wire import ipv4, ipv6

if TYPE_CHECKING:
    from vimage.ctl.daemon import Daemon, Session
    from vimage.kernel import Kernel
    from vimage.vnet import Vnet

CHUNK = 65536
AF_ROUTE = 17  # FreeBSD's, which a process asks for (vimage.socket.rtsock)
CONNECT_POLL = 0.2  # seconds a SO_ERROR request waits for a connection still under way
MAX_SOCKETS = 4096  # per control connection
CONTROL_SPACE = 1024  # room for a relayed datagram's control messages


class Relayed:
    """One socket of a process: the vimage socket and the daemon's end of its pair."""

    __slots__ = ("accepting", "backlog", "connecting", "kind", "ours", "pending", "sid",
                 "tasks", "vnet", "vsock")

    def __init__(self, sid: int, vnet: Vnet, vsock: Any, ours: socket.socket, kind: int) -> None:
        self.sid = sid
        self.vnet = vnet
        self.vsock = vsock
        self.ours = ours
        self.kind = kind
        self.tasks: list[asyncio.Task[Any]] = []
        self.pending: list[tuple[Any, tuple[Any, ...]]] = []  # accepted, not yet taken
        self.accepting: asyncio.Event | None = None
        self.backlog = 0
        self.connecting: asyncio.Task[Any] | None = None

    def close(self) -> None:
        self.cancel()
        self.release()

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.connecting is not None:
            self.connecting.cancel()

    def release(self) -> None:
        for conn, _ in self.pending:
            conn.close()
        self.pending.clear()
        self.vsock.close()
        self.ours.close()


class RelayLoop:
    """A vimage event loop in a thread of the daemon."""

    def __init__(self, kernel: Kernel) -> None:
        self.loop = VimageEventLoop(kernel)
        self.thread = threading.Thread(target=self._run, name="vimaged-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class SocketTable:
    """Every relayed socket of the daemon, by control connection."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.by_session: dict[Any, dict[int, Relayed]] = {}
        self.next_sid = 0
        self._relay: RelayLoop | None = None
        self._lock = threading.Lock()

    @property
    def relay(self) -> RelayLoop:
        with self._lock:
            if self._relay is None:
                self._relay = RelayLoop(self.kernel)
            return self._relay

    def get(self, session: Session, sid: Any) -> Relayed:
        rel = self.by_session.get(session, {}).get(sid) if isinstance(sid, int) else None
        if rel is None:
            raise _Errno(errno.EBADF)
        return rel

    def session_closed(self, session: Session) -> None:
        table = self.by_session.pop(session, None)
        if table:
            self.relay.run(_close_all(list(table.values())))

    def vnets_destroyed(self) -> None:
        """Close the sockets whose vnet is gone, so the processes blocked on them wake up
        with an error instead of waiting forever (as a jail's sockets go with it). Safe
        with the kernel lock held: it only schedules the work on the relay loop."""
        with self._lock:
            relay = self._relay
        if relay is not None:
            relay.loop.call_soon_threadsafe(self._close_dead)

    def _close_dead(self) -> None:
        dead = []
        for table in list(self.by_session.values()):
            for sid, rel in list(table.items()):
                if not rel.vnet.alive:
                    table.pop(sid, None)
                    rel.cancel()
                    dead.append(rel)
        # the descriptors close after the cancelled tasks have let go of them (their
        # clean-up callbacks are already queued): the daemon's ends close, the process wakes
        asyncio.get_running_loop().call_soon(_release_all, dead)

    def close(self) -> None:
        with self._lock:
            relay, self._relay = self._relay, None
        if relay is not None:
            tables = list(self.by_session.values())
            self.by_session.clear()
            relay.run(_close_all([r for t in tables for r in t.values()]))
            relay.stop()


def _release_all(rels: list[Relayed]) -> None:
    for rel in rels:
        rel.release()


async def _close_all(rels: list[Relayed]) -> None:
    for rel in rels:
        rel.close()


class _Errno(Exception):
    """A socket call failed: the reply carries errno (the process raises OSError)."""

    def __init__(self, err: int, message: str | None = None) -> None:
        super().__init__(err)
        self.err = err
        self.message = message or os.strerror(err)


def _reply_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, socket.gaierror):
        return {"gaierror": exc.errno, "message": exc.strerror or str(exc)}
    if isinstance(exc, _Errno):
        return {"errno": exc.err, "message": exc.message}
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return {"errno": errno.ETIMEDOUT, "message": "timed out"}
    if isinstance(exc, OSError) and exc.errno:
        return {"errno": exc.errno, "message": exc.strerror or os.strerror(exc.errno)}
    raise exc


# -- the relay ------------------------------------------------------------------------------
async def _pump_out(rel: Relayed) -> None:
    """Process -> vnet for a stream: the pair's bytes, then a FIN when it half-closes."""
    loop = asyncio.get_running_loop()
    try:
        while data := await loop.sock_recv(rel.ours, CHUNK):
            await loop.sock_sendall(rel.vsock, data)
        rel.vsock.shutdown(socket.SHUT_WR)
    except OSError:
        rel.ours.close()


async def _pump_in(rel: Relayed) -> None:
    """Vnet -> process for a stream; the peer's FIN half-closes the pair."""
    loop = asyncio.get_running_loop()
    try:
        while data := await loop.sock_recv(rel.vsock, CHUNK):
            await loop.sock_sendall(rel.ours, data)
        rel.ours.shutdown(socket.SHUT_WR)
    except OSError:
        rel.ours.close()  # reset, or the process closed its end: it sees the end


async def _dgram_out(rel: Relayed) -> None:
    loop = asyncio.get_running_loop()
    while message := await loop.sock_recv(rel.ours, CHUNK + DGRAM6_HEADER.size + CONTROL_ROOM):
        v6 = rel.vsock.family == socket.AF_INET6
        header = DGRAM6_HEADER if v6 else DGRAM_HEADER
        if len(message) < header.size:
            continue
        fields = header.unpack_from(message)
        raw, port = fields[1], fields[2]
        data = message[header.size:]
        try:
            if fields[0] == DGRAM_CONTROL:  # sendmsg with control messages
                try:
                    control, off = unpack_control(message, header.size)
                except struct.error:  # a malformed message: the process hears EINVAL
                    raise OSError(errno.EINVAL, "Invalid argument") from None
                rel.vsock.sendmsg([message[off:]], control, 0, _dgram_address(v6, fields))
            elif not any(raw) and port == 0:
                rel.vsock.send(data)
            elif v6:
                rel.vsock.sendto(data, (socket.inet_ntop(socket.AF_INET6, raw), port, 0,
                                        fields[3]))
            else:
                rel.vsock.sendto(data, (socket.inet_ntoa(raw), port))
        except OSError as exc:
            if not rel.vnet.alive:  # closed by the destroy: the pair closes next
                _dgram_error(rel, errno.ENETDOWN)
                return
            _dgram_error(rel, exc.errno or errno.EIO)


def _dgram_address(v6: bool, fields: tuple[Any, ...]) -> Any:
    """The address a datagram's header names, None for the connected peer."""
    raw, port = fields[1], fields[2]
    if not any(raw) and port == 0:
        return None
    if v6:
        return socket.inet_ntop(socket.AF_INET6, raw), port, 0, fields[3]
    return socket.inet_ntoa(raw), port


def _dgram_error(rel: Relayed, err: int) -> None:
    """Report a send's error to the process, asynchronously as a kernel reports a datagram
    socket's so_error (FreeBSD udp_send / Linux sk_err): the process takes it on its next
    send or receive. It never waits for the process to read: when the pair is full the
    report is dropped, as a full socket drops a datagram, so a program that only sends
    cannot stall the relay (and, with it, itself)."""
    head = DGRAM6_HEADER.pack(DGRAM_ERROR, bytes(16), err, 0) \
        if rel.vsock.family == socket.AF_INET6 else DGRAM_HEADER.pack(DGRAM_ERROR, bytes(4), err)
    with contextlib.suppress(OSError):  # full (BlockingIOError), or the process has gone
        rel.ours.send(head)


async def _dgram_in(rel: Relayed) -> None:
    loop = asyncio.get_running_loop()
    vsock = rel.vsock
    while True:
        try:  # recvmsg: the control messages the socket asked for, if any, come along
            data, control, _, address = await _recvmsg(loop, vsock)
        except OSError as exc:
            if exc.errno in (errno.EBADF, None):
                return
            _dgram_error(rel, exc.errno)
            continue
        kind = DGRAM_CONTROL if control else DGRAM_DATA
        if len(address) == 4:
            head = DGRAM6_HEADER.pack(kind, socket.inet_pton(socket.AF_INET6, address[0]),
                                      address[1], address[3])
        else:
            head = DGRAM_HEADER.pack(kind, socket.inet_aton(address[0]), address[1])
        if control:
            head += pack_control(control)
        with contextlib.suppress(OSError):  # a full pair drops, as a full socket does (or: gone)
            rel.ours.send(head + data)


async def _recvmsg(loop: asyncio.AbstractEventLoop, vsock: Any) -> Any:
    """recvmsg on the (non-blocking) vimage socket once it is readable (asyncio has no
    sock_recvmsg): the datagram with its control messages."""
    while True:
        try:
            return vsock.recvmsg(CHUNK, CONTROL_SPACE)
        except BlockingIOError:
            pass
        ready = loop.create_future()
        loop.add_reader(vsock, _wake_once, ready)
        try:
            await ready
        finally:
            loop.remove_reader(vsock)


def _wake_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _accept_loop(rel: Relayed) -> None:
    """Accept for a listener up to its backlog; one byte per connection tells the process."""
    loop = asyncio.get_running_loop()
    assert rel.accepting is not None
    while True:
        while len(rel.pending) >= rel.backlog:
            rel.accepting.clear()
            await rel.accepting.wait()
        conn, address = await loop.sock_accept(rel.vsock)
        conn.setblocking(False)
        rel.pending.append((conn, address))
        await loop.sock_sendall(rel.ours, b"!")


def _start(rel: Relayed, *pumps: Any) -> None:
    loop = asyncio.get_running_loop()
    for pump in pumps:
        rel.tasks.append(loop.create_task(pump(rel)))


# -- ops --------------------------------------------------------------------------------------
def _vnet(d: Daemon, s: Session) -> Vnet:
    return d.live_scope(s)


def _run(d: Daemon, coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        return d.sockets.relay.run(coro)
    except (OSError, _Errno) as exc:
        return _reply_error(exc)


def _direct(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a request that touches only the vimage socket here, in the session's thread
    (the socket's own lock makes that safe), sparing two thread hand-offs."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    except (OSError, _Errno) as exc:
        return _reply_error(exc)
    finally:
        coro.close()
    raise RuntimeError("a direct socket request awaited something")


def _errno_replies(func: OpFunc) -> OpFunc:
    """An op whose socket errors (no such socket, ...) are errno replies, not failures."""
    def op(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
        try:
            return func(d, s, req)
        except _Errno as exc:
            return _reply_error(exc)

    op.__name__ = func.__name__
    return op


def _new(d: Daemon, s: Session, vnet: Vnet, vsock: Any, kind: int) -> tuple[Relayed, int]:
    table = d.sockets.by_session.setdefault(s, {})
    if len(table) >= MAX_SOCKETS:
        vsock.close()
        raise _Errno(errno.EMFILE)
    pair = socket.SOCK_STREAM if kind == socket.SOCK_STREAM else socket.SOCK_SEQPACKET
    ours, theirs = socket.socketpair(socket.AF_UNIX, pair)
    ours.setblocking(False)
    d.sockets.next_sid += 1
    rel = Relayed(d.sockets.next_sid, vnet, vsock, ours, kind)
    table[rel.sid] = rel
    return rel, theirs.detach()


def _describe(rel: Relayed) -> dict[str, Any]:
    return {"sid": rel.sid, "type": rel.kind, "proto": rel.vsock.proto,
            "family": rel.vsock.family}


async def _route_in(rel: Relayed) -> None:
    """Vnet -> process for a routing socket: each message as a datagram (address 0)."""
    loop = asyncio.get_running_loop()
    head = DGRAM_HEADER.pack(DGRAM_DATA, b"\0\0\0\0", 0)
    while True:
        try:
            data = await loop.sock_recv(rel.vsock, CHUNK)
        except OSError:
            return  # closed: the vnet is gone, or the process closed its socket
        with contextlib.suppress(OSError):  # a full pair drops, as a full socket does
            rel.ours.send(head + data)


def _route_socket(d: Daemon, s: Session, req: Request, vnet: Vnet) -> dict[str, Any]:
    """A routing socket (FreeBSD's AF_ROUTE, 17) for a process: messages both ways over
    a datagram pair; a request's error comes back as a datagram socket's does (on the
    next call), and in the reply's rtm_errno."""
    proto = req.int("proto", 0)

    async def make() -> dict[str, Any]:
        if req.int("type", socket.SOCK_RAW) & 0xF != socket.SOCK_RAW:
            raise _Errno(errno.ESOCKTNOSUPPORT, "routing sockets are SOCK_RAW")
        vsock = vnet.socket(AF_ROUTE, socket.SOCK_RAW, proto)
        vsock.setblocking(False)
        rel, fd = _new(d, s, vnet, vsock, socket.SOCK_RAW)
        req.out_fds.append(fd)
        _start(rel, _dgram_out, _route_in)
        return _describe(rel)

    return _run(d, make())


def op_socket(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    kind = req.int("type", socket.SOCK_STREAM) & 0xF
    proto = req.int("proto", 0)
    vnet = _vnet(d, s)
    family = req.int("family", socket.AF_INET)
    if family == AF_ROUTE:
        return _route_socket(d, s, req, vnet)

    async def make() -> dict[str, Any]:
        if kind not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            raise _Errno(errno.ESOCKTNOSUPPORT, "only stream and datagram sockets are relayed")
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise _Errno(errno.EAFNOSUPPORT)
        vsock = vnet.socket(family, kind, proto)
        vsock.setblocking(False)
        rel, fd = _new(d, s, vnet, vsock, kind)
        req.out_fds.append(fd)
        if kind == socket.SOCK_DGRAM:
            _start(rel, _dgram_out, _dgram_in)
        return _describe(rel)

    return _run(d, make())


def _resolve(vnet: Vnet, host: str) -> str:
    if host in ("", "0.0.0.0"):
        return host
    return ipv4.ntoa(netdb.resolve_host(vnet, host)[0])


def _resolve6(vnet: Vnet, host: str, scope: int) -> tuple[str, int]:
    """(numeric IPv6 host, scope id) for `host`, in the vnet (a zone in the text wins)."""
    if host in ("", "::"):
        return host, scope
    addr, zone = netdb.resolve_host6(vnet, host)[0]
    return ipv6.ntoa(addr), zone or scope


def _address(rel: Relayed, req: Request) -> tuple[Any, ...]:
    """The socket address a request names, for the relayed socket's family."""
    host, port = req.str("host"), req.int("port", 0)
    if rel.vsock.family == socket.AF_INET6:
        text, scope = _resolve6(rel.vnet, host, req.int("scope", 0))
        return text, port, 0, scope
    return _resolve(rel.vnet, host), port


def _reply_name(address: tuple[Any, ...]) -> dict[str, Any]:
    name = {"host": address[0], "port": address[1]}
    if len(address) == 4:
        name["scope"] = address[3]
    return name


def op_bind(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))

    async def bind() -> dict[str, Any]:
        rel.vsock.bind(_address(rel, req))
        return {}

    return _direct(bind())


def op_listen(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))
    backlog = max(1, min(req.int("backlog", 128), 4096))

    async def listen() -> dict[str, Any]:
        if rel.kind != socket.SOCK_STREAM:
            raise _Errno(errno.EOPNOTSUPP)
        rel.vsock.listen(backlog)
        rel.backlog = backlog
        if rel.accepting is None:
            rel.accepting = asyncio.Event()
            _start(rel, _accept_loop)
        rel.accepting.set()
        return {}

    return _run(d, listen())


def op_accept(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))

    async def accept() -> dict[str, Any]:
        if not rel.pending:
            raise _Errno(errno.EAGAIN)
        conn, address = rel.pending.pop(0)
        if rel.accepting is not None:
            rel.accepting.set()
        child, fd = _new(d, s, rel.vnet, conn, socket.SOCK_STREAM)
        req.out_fds.append(fd)
        _start(child, _pump_out, _pump_in)
        return {**_describe(child), **_reply_name(address)}

    return _run(d, accept())


def op_connect(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))
    wait = req.args.get("wait", -1.0)
    if not isinstance(wait, (int, float)):
        raise CtlError(BAD_REQUEST, "sock.connect: 'wait' must be a number")

    async def connect() -> dict[str, Any]:
        address = _address(rel, req)
        if rel.kind == socket.SOCK_DGRAM:
            rel.vsock.connect(address)
            return {}
        if rel.connecting is not None:
            raise _Errno(errno.EALREADY)
        loop = asyncio.get_running_loop()

        async def establish() -> None:
            await loop.sock_connect(rel.vsock, address)
            _start(rel, _pump_out, _pump_in)

        rel.connecting = task = loop.create_task(establish())
        if wait == 0:
            raise _Errno(errno.EINPROGRESS)
        try:
            await (asyncio.shield(task) if wait < 0 else asyncio.wait_for(asyncio.shield(task),
                                                                          wait))
        except TimeoutError:
            raise _Errno(errno.ETIMEDOUT, "timed out") from None
        except OSError:
            rel.connecting = None
            raise
        return {}

    return _run(d, connect())


def op_name(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))
    peer = req.bool("peer")

    async def name() -> dict[str, Any]:
        return _reply_name(rel.vsock.getpeername() if peer else rel.vsock.getsockname())

    return _direct(name())


def _option_value(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("bytes"), str):
        return bytes.fromhex(value["bytes"])
    if isinstance(value, bool) or not isinstance(value, int):
        raise CtlError(BAD_REQUEST, "sock.setopt: 'value' is an int or {'bytes': hex}")
    return value


def op_setopt(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))
    level, option = req.int("level", -1), req.int("option", -1)
    value = _option_value(req.args.get("value"))

    async def setopt() -> dict[str, Any]:
        rel.vsock.setsockopt(level, option, value)
        return {}

    return _direct(setopt())


def op_getopt(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    rel = d.sockets.get(s, req.args.get("sid"))
    level, option, buflen = req.int("level", -1), req.int("option", -1), req.int("buflen", 0)

    async def getopt() -> dict[str, Any]:
        if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR) and rel.connecting:
            task = rel.connecting
            if not task.done():
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(asyncio.shield(task), CONNECT_POLL)
            if not task.done():
                return {"value": errno.EINPROGRESS}
            exc = task.exception()
            if exc is not None:
                rel.connecting = None
                return {"value": getattr(exc, "errno", None) or errno.ECONNREFUSED}
        value = rel.vsock.getsockopt(level, option, buflen)
        return {"value": {"bytes": value.hex()} if isinstance(value, bytes) else int(value)}

    if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR) and rel.connecting:
        return _run(d, getopt())  # it may wait for the connection, on the loop
    return _direct(getopt())


def op_resolve(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    vnet = _vnet(d, s)
    try:
        if req.int("family", socket.AF_INET) == socket.AF_INET6:
            text, scope = _resolve6(vnet, req.str("host"), 0)
            return {"addr": text, "scope": scope}
        return {"addr": _resolve(vnet, req.str("host"))}
    except OSError as exc:
        return _reply_error(exc)


_NETDB_CALLS = frozenset(("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
                          "getnameinfo"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, int):
        return int(value)
    return value


def op_netdb(d: Daemon, s: Session, req: Request) -> dict[str, Any]:
    call = req.str("call")
    args, kwargs = req.args.get("args", []), req.args.get("kwargs", {})
    if call not in _NETDB_CALLS or not isinstance(args, list) or not isinstance(kwargs, dict):
        raise CtlError(BAD_REQUEST, f"netdb: unknown call {call[:64]!r} or malformed arguments")
    if call == "getnameinfo" and args and isinstance(args[0], list):
        args = [tuple(args[0]), *args[1:]]
    vnet = _vnet(d, s)
    try:
        with d.kernel.sched.cond:
            result = getattr(netdb, call)(vnet, *args, **kwargs)
    except TypeError as exc:
        raise CtlError(BAD_REQUEST, f"netdb: {exc}") from None
    except OSError as exc:
        return _reply_error(exc)
    return {"result": _jsonable(result)}


OPS: Mapping[str, Op] = MappingProxyType({
    "socket": Op(_errno_replies(op_socket), frozenset(("type", "proto", "family"))),
    "sock.bind": Op(_errno_replies(op_bind), frozenset(("sid", "host", "port", "scope"))),
    "sock.listen": Op(_errno_replies(op_listen), frozenset(("sid", "backlog"))),
    "sock.accept": Op(_errno_replies(op_accept), frozenset(("sid",))),
    "sock.connect": Op(_errno_replies(op_connect),
                       frozenset(("sid", "host", "port", "wait", "scope"))),
    "sock.name": Op(_errno_replies(op_name), frozenset(("sid", "peer"))),
    "sock.setopt": Op(_errno_replies(op_setopt), frozenset(("sid", "level", "option", "value"))),
    "sock.getopt": Op(_errno_replies(op_getopt), frozenset(("sid", "level", "option", "buflen"))),
    "sock.resolve": Op(_errno_replies(op_resolve), frozenset(("host", "family"))),
    "netdb": Op(_errno_replies(op_netdb), frozenset(("call", "args", "kwargs"))),
})
