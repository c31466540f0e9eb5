"""vimaged: a long-running kernel behind a unix control socket.

The main thread runs a selector over the listening socket, the doorbells of scoped
channels and a wake-up pipe; each connection gets its own thread, so a tool that
waits (ping -c 5) never holds up another client. Requests go through
`Daemon.handle`, which is synchronous and transport-free: an asyncio loop can
replace `serve_forever` and call it from an executor.

A scoped channel (made by the `exec` op) is a SOCK_SEQPACKET socketpair: its
"doorbell" end stays here, the other is inherited by the processes of the vnet.
A process connects by sending one end of a fresh socketpair through it; that
connection's scope is the doorbell's vnet, fixed here and never read from a request.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from vimage.ctl import names, ops, paths, procs, protocol, sockops, topoops
from vimage.ctl.cgroup import Cgroups
from vimage.ctl.protocol import (
    BAD_REQUEST,
    BUSY,
    EXISTS,
    FAILED,
    INTERNAL,
    MALFORMED,
    NO_HELLO,
    NOT_FOUND,
    PERMISSION,
    UNKNOWN_OP,
    CtlError,
)
from vimage.kernel import Kernel

if TYPE_CHECKING:
    from vimage.emu.experiment import Experiment
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

MAX_CONNECTIONS = 512
"""Connections served at once (host connections and channel connections together)."""
RESERVED_CONNECTIONS = 16
"""Of MAX_CONNECTIONS, the slots only host connections (the socket owner's or root's, not a
channel's) may take: processes inside vnets, however many, cannot lock the host out."""
MAX_REFUSING = 16  # connections of other uids being answered `permission` at once
REFUSE_LINGER = 2.0  # seconds a refused or broken connection may take to hang up
HELLO_TIMEOUT = 10.0  # seconds a fresh connection has to say hello (and be answered)
LOCK_WAIT = 10.0  # seconds a starting daemon waits for a stopping one to let go


def log() -> logging.Logger:
    return logging.getLogger("vimaged")


class Session:
    """One control connection: its socket and its scope (the vnet it may act in)."""

    __slots__ = ("conn", "hello", "peer", "scope", "scoped", "thread")

    def __init__(self, conn: socket.socket, scope: Vnet, scoped: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.scoped = scoped
        self.hello = False
        self.peer: tuple[int, int, int] | None = None  # pid, uid, gid (host connections)
        self.thread: threading.Thread | None = None


class Daemon:
    def __init__(self, where: paths.Paths, kernel: Kernel | None = None, *,
                 max_connections: int = MAX_CONNECTIONS,
                 reserved_connections: int = RESERVED_CONNECTIONS,
                 frame_timeout: float = protocol.FRAME_TIMEOUT) -> None:
        self.paths = where
        self.max_connections = max_connections
        self.reserved_connections = min(reserved_connections, max_connections)
        self.frame_timeout = frame_timeout
        self.kernel = kernel if kernel is not None else Kernel(clock="real")
        self.kernel.cpu_accounting = 1  # per-vnet CPU figures for vimage -l -v (vimage.cpu)
        self.ops: dict[str, ops.Op] = dict(ops.OPS)
        self.ops.update(sockops.OPS)  # the sockets of processes in vnets (vimage exec)
        self.sockets = sockops.SocketTable(self.kernel)
        self.ops.update(topoops.OPS)  # experiments (vimage topo up|down|list|show|link)
        self.experiments: dict[str, Experiment] = {}  # by full vnet name (ctl/topoops.py)
        self.partition: Any = None  # the partitioned experiment served (ctl/partops.py)
        self.meta: dict[Vnet, ops.VnetMeta] = {}
        self.renamed: dict[Ifnet, str] = {}  # interfaces renamed by ifmove: original names
        # the cgroups of vnets' processes (ctl/cgroup.py), made by open(); and the
        # `vimage exec` processes started: pid -> (vnet, pid of the client, in a cgroup)
        self.cgroups = Cgroups(None, "the daemon is not open")
        self.exec_pids: dict[int, tuple[Vnet, int, bool]] = {}
        self.exec_homes: dict[int, str] = {}  # clients in a vnet's cgroup: their own
        self.next_jid = 0
        self.uid = os.geteuid()
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # sessions, doorbells, the pending list
        self._sessions: set[Session] = set()
        self._refusing = 0
        self._doorbells: dict[int, tuple[socket.socket, Vnet]] = {}
        # doorbell -> (inode of the channel's other end, pid of the process that asked for it)
        self._channel_ends: dict[socket.socket, tuple[int, int]] = {}
        self._pending: list[tuple[str, Any]] = []  # work for the selector thread
        self._stopper: Session | None = None
        self._stopping = False
        self._signalled = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._listener: socket.socket | None = None
        self._socket_ino: tuple[int, int] | None = None
        self._lock_fd: int | None = None
        self.bad_rings = 0

    def register(self, name: str, op: ops.Op) -> None:
        """Add a request op (or replace one)."""
        self.ops[name] = op

    # -- life cycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Take the daemon lock, bind the socket (mode 0600), start the kernel."""
        where = self.paths
        paths.ensure_dir(where)
        self._lock_fd = _take_lock(where.lock)
        if os.path.lexists(where.socket):
            if not stat.S_ISSOCK(os.lstat(where.socket).st_mode):
                raise FileExistsError(f"{where.socket} exists and is not a socket")
            os.unlink(where.socket)  # a daemon that died; we hold the lock now
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(where.socket)
        finally:
            os.umask(old)
        os.chmod(where.socket, 0o600)
        st = os.stat(where.socket)
        self._socket_ino = (st.st_dev, st.st_ino)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        fd = os.open(where.pid, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        if os.environ.get("VIMAGED_CGROUPS", "1") == "0":  # rusage accounting only
            self.cgroups = Cgroups(None, "turned off by VIMAGED_CGROUPS=0")
        else:
            self.cgroups = Cgroups.open(f"vimaged-{os.getpid()}-{st.st_ino}")
        self.kernel.start()
        self._selector.register(listener, selectors.EVENT_READ, ("accept", None))
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        log().info("listening on %s", where.socket)

    def abandon(self) -> None:
        """A daemon that was never opened: release its wake-up pipe and selector."""
        self._selector.close()
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def serve_forever(self) -> None:
        """The main loop: accept connections, answer doorbells, until a stop."""
        while not self._stopping:
            for key, _ in self._selector.select():
                kind, data = key.data
                if kind == "accept":
                    self._accept()
                elif kind == "wake":
                    self._drain_wake()
                elif kind == "bell":
                    self._ring(key.fileobj, data)  # type: ignore[arg-type]
        self._shutdown()

    def request_stop(self, session: Session | None = None) -> None:
        with self._lock:
            if self._stopper is None:
                self._stopper = session
            self._pending.append(("stop", None))
        self._wake()

    def uptime(self) -> float:
        return self.kernel.now

    def connection_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def doorbell_count(self) -> int:
        with self._lock:
            return len(self._doorbells)

    def signal_stop(self) -> None:
        """From a signal handler: no locks here, only a flag and the wake-up pipe."""
        self._signalled = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"!")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        with self._lock:
            pending, self._pending = self._pending, []
        if self._signalled:
            self._stopping = True
        for what, arg in pending:
            if what == "stop":
                self._stopping = True
            elif what == "bell":
                sock, vnet = arg
                self._doorbells[sock.fileno()] = (sock, vnet)
                self._selector.register(sock, selectors.EVENT_READ, ("bell", vnet))
            elif what == "retire":
                ends = []
                for fd, (sock, vnet) in list(self._doorbells.items()):
                    if not vnet.alive:
                        ends.append(self._channel_ends.get(sock, (0, 0)))
                        self._close_doorbell(fd, sock)
                # the vnet's processes go with it, as with jail -r
                procs.kill_holders([e for e, _ in ends if e], spare=[p for _, p in ends])

    def _shutdown(self) -> None:
        log().info("stopping")
        if self._listener is not None:
            with contextlib.suppress(OSError):
                st = os.stat(self.paths.socket)
                if (st.st_dev, st.st_ino) == self._socket_ino:
                    os.unlink(self.paths.socket)
            self._selector.unregister(self._listener)
            self._listener.close()
        with self._lock:
            sessions = [s for s in self._sessions if s is not self._stopper]
            bells = list(self._doorbells.items())
        for session in sessions:
            with contextlib.suppress(OSError):
                session.conn.shutdown(socket.SHUT_RDWR)
        for fd, (sock, _vnet) in bells:
            self._close_doorbell(fd, sock)
        self.sockets.close()
        with self.kernel.sched.cond:
            for vnet in list(self.kernel.base.children or ()):
                self.destroy_vnet(vnet)
        self.kernel.stop()
        self.cgroups.close()
        deadline = time.monotonic() + 2.0
        for session in sessions:  # one blocked in a tool may linger: its thread is a daemon
            if session.thread is not None:
                session.thread.join(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            os.unlink(self.paths.pid)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._selector.close()
        with self._lock:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        self.stopped.set()
        stopper = self._stopper
        if stopper is not None and stopper.thread is not None:
            stopper.thread.join(5.0)  # let it send its reply
        log().info("stopped")

    # -- connections -----------------------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        conn.setblocking(True)
        try:  # SO_PEERCRED before a slot is taken: other uids never count against the limit
            peer = procs.peer_cred(conn)
        except OSError:
            conn.close()
            return
        if peer[1] not in (self.uid, 0):
            self._refuse(conn, peer)
            return
        self._start_session(conn, self.kernel.base, scoped=False, peer=peer)

    def _start_session(self, conn: socket.socket, scope: Vnet, scoped: bool,
                       peer: tuple[int, int, int] | None = None) -> None:
        session = Session(conn, scope, scoped)
        session.peer = peer
        # channels stop short of the reserve, which is the host's (the owner's, root's)
        limit = self.max_connections - (self.reserved_connections if scoped else 0)
        with self._lock:
            full = len(self._sessions) >= limit or self._stopping
            if not full:
                self._sessions.add(session)
        if full:
            with contextlib.suppress(OSError):
                conn.settimeout(1.0)
                protocol.send(conn, protocol.error_reply(None, BUSY, "too many connections"))
            conn.close()
            return
        session.thread = threading.Thread(target=self._serve, args=(session,),
                                          name="vimaged-conn", daemon=True)
        session.thread.start()

    def _serve(self, session: Session) -> None:
        """Requests in, replies out. Between requests a connection may idle as long as it
        likes once it has said hello (a process's channel connection does); a frame once
        begun must arrive whole within `frame_timeout`, and a reply be taken as fast."""
        conn = session.conn
        hello_by = time.monotonic() + HELLO_TIMEOUT  # however many frames come before it
        try:
            while True:
                if session.hello:
                    conn.settimeout(None)
                else:
                    left = hello_by - time.monotonic()
                    if left <= 0:
                        return
                    conn.settimeout(left)
                try:
                    frame = protocol.recv(conn, protocol.MAX_REQUEST, self.frame_timeout)
                except CtlError as exc:
                    self._reply(conn, exc.reply())
                    if exc.fatal:
                        _linger_close(conn)
                        return
                    continue
                if frame is None:
                    return
                obj, fds = frame
                reply, out_fds, fatal = self.handle(session, obj, fds)
                try:
                    self._reply(conn, reply, out_fds)
                finally:
                    protocol.close_fds(out_fds)
                if fatal:
                    _linger_close(conn)
                    return
        except protocol.FrameTimeout as exc:
            log().info("closed a connection (pid %s): %s",
                       session.peer[0] if session.peer else "?", exc)
        except OSError:
            return  # the client went away (or timed out before its hello): nothing to undo
        finally:
            with self._lock:
                self._sessions.discard(session)
            self.sockets.session_closed(session)  # the process is gone: so are its sockets
            conn.close()

    def _reply(self, conn: socket.socket, reply: dict[str, Any],
               fds: list[int] | tuple[int, ...] = ()) -> None:
        """Send a reply; a client that does not take it within frame_timeout is dropped."""
        conn.settimeout(self.frame_timeout)
        try:
            protocol.send(conn, reply, fds)
        except CtlError as exc:  # not text (a bug): say so rather than say nothing
            log().error("unsendable reply %r: %s", reply.get("id"), exc.message)
            protocol.send(conn, protocol.error_reply(reply.get("id"), INTERNAL, exc.message))

    def _refuse(self, conn: socket.socket, peer: tuple[int, int, int]) -> None:
        """SO_PEERCRED said another uid: answer `permission` (in a thread of its own, a
        bounded few at once) without taking a connection slot."""
        pid, uid, _gid = peer
        log().warning("refused pid %d uid %d", pid, uid)
        with self._lock:
            busy = self._refusing >= MAX_REFUSING
            if not busy:
                self._refusing += 1
        if busy:
            conn.close()
            return

        def run() -> None:
            try:
                with contextlib.suppress(OSError):
                    conn.settimeout(REFUSE_LINGER)
                    protocol.send(conn, protocol.error_reply(
                        None, PERMISSION,
                        f"uid {uid} may not use this daemon (it belongs to uid {self.uid})"))
                    _linger_close(conn, most=protocol.MAX_REQUEST)
            finally:
                conn.close()
                with self._lock:
                    self._refusing -= 1

        threading.Thread(target=run, name="vimaged-refuse", daemon=True).start()

    # -- requests --------------------------------------------------------------------------
    def handle(self, session: Session, obj: Any, fds: list[int]
               ) -> tuple[dict[str, Any], list[int], bool]:
        """Answer one request: (reply, descriptors to send with it, close afterwards).

        Never raises: every failure becomes an error reply. Closes `fds` when done."""
        rid = obj.get("id") if isinstance(obj, dict) else None
        if type(rid) is not int:
            rid = None
        try:
            req = self._check(session, obj, fds)
            op = self.ops[req.op]
            result = op.func(self, session, req)
            return {"id": rid, "ok": True, **result}, req.out_fds, req.close
        except CtlError as exc:
            return exc.reply(rid), [], exc.fatal
        except PermissionError as exc:
            return protocol.error_reply(rid, PERMISSION, _message(exc)), [], False
        except FileExistsError as exc:
            return protocol.error_reply(rid, EXISTS, _message(exc)), [], False
        except LookupError as exc:
            return protocol.error_reply(rid, NOT_FOUND, _message(exc)), [], False
        except ValueError as exc:
            return protocol.error_reply(rid, BAD_REQUEST, _message(exc)), [], False
        except OSError as exc:
            return protocol.error_reply(rid, FAILED, _message(exc)), [], False
        except Exception as exc:  # a bug: report it, keep serving
            log().exception("internal error in %r", obj)
            return protocol.error_reply(rid, INTERNAL, f"internal error: {exc!r}"), [], False
        finally:
            protocol.close_fds(fds)

    def _check(self, session: Session, obj: Any, fds: list[int]) -> ops.Request:
        if not isinstance(obj, dict):
            raise CtlError(MALFORMED, "a request is a JSON object")
        rid = obj.get("id")
        if type(rid) is not int:
            raise CtlError(MALFORMED, "a request needs an integer 'id'")
        name = obj.get("op")
        if not isinstance(name, str):
            raise CtlError(MALFORMED, "a request needs a string 'op'")
        op = self.ops.get(name)
        if op is None:
            raise CtlError(UNKNOWN_OP, f"unknown op {name[:64]!r}")
        if not session.hello and name != "hello":
            raise CtlError(NO_HELLO, "say hello first, with the protocol version")
        extra = sorted(set(obj) - {"id", "op"} - op.fields)
        if extra:
            raise CtlError(BAD_REQUEST, f"{name}: unknown field {extra[0][:64]!r}")
        if op.host_only and session.scoped:
            raise PermissionError(f"{name}: not allowed on a channel scoped to vnet "
                                  f"{session.scope.display_name}")
        ops.check_fds(fds, op)
        args = {k: v for k, v in obj.items() if k not in ("id", "op")}
        return ops.Request(rid, name, args, fds)

    # -- what ops use ------------------------------------------------------------------------
    def live_scope(self, session: Session) -> Vnet:
        if not session.scope.alive:
            raise LookupError(f"vnet {session.scope.display_name} of this channel "
                              "no longer exists")
        return session.scope

    def add_doorbell(self, sock: socket.socket, vnet: Vnet, end: int = 0, asker: int = 0
                     ) -> None:
        """Answer connections rung on `sock` in `vnet`. `end` is the inode of the channel's
        other end, which the vnet's processes hold, and `asker` the pid of the `vimage
        exec` that starts them: destroying the vnet kills the first, not the second."""
        sock.setblocking(False)
        with self._lock:
            self._channel_ends[sock] = (end, asker)
            self._pending.append(("bell", (sock, vnet)))
        self._wake()

    def destroy_vnet(self, vnet: Vnet) -> None:
        """Destroy `vnet` and its subtree (the kernel lock is held)."""
        for ifp, original in list(self.renamed.items()):
            if ifp.vnet.ifaces.get(ifp.name) is not ifp:
                del self.renamed[ifp]  # destroyed
            elif names.within(ifp.vnet, vnet) and original not in ifp.vnet.ifaces:
                self.rename(ifp, original)  # so it can go home under the name it had there
        self.kernel.destroy(vnet)
        self.sockets.vnets_destroyed()  # wake the processes blocked on their sockets
        for dead in [v for v in self.meta if not v.alive]:
            del self.meta[dead]
        self.cgroups.retire_dead()  # the subtree's cgroups: emptied and removed
        for pid in [p for p, (v, _, _) in self.exec_pids.items() if not v.alive]:
            del self.exec_pids[pid]
        for name, exp in list(self.experiments.items()):
            if exp.vnet is not None and not exp.vnet.alive:  # `vimage -d` of an experiment
                exp.down()
                del self.experiments[name]
        with self._lock:
            self._pending.append(("retire", None))
        self._wake()

    def rename(self, ifp: Ifnet, name: str) -> None:
        vnet = ifp.vnet
        if name in vnet.ifaces:
            raise FileExistsError(f"interface {name} already exists")
        original = self.renamed.pop(ifp, ifp.name)
        del vnet.ifaces[ifp.name]
        ifp.name = name
        vnet.ifaces[name] = ifp
        if name != original:
            self.renamed[ifp] = original

    # -- doorbells ---------------------------------------------------------------------------
    def _ring(self, sock: socket.socket, vnet: Vnet) -> None:
        try:
            data, anc, flags, _ = sock.recvmsg(16, socket.CMSG_SPACE(4 * protocol.MAX_FDS))
        except BlockingIOError:
            return
        except OSError:
            data, anc, flags = b"", [], 0
        fds = protocol.take_fds(anc)
        if not data and not fds:  # every process holding the other end has gone
            self._close_doorbell(sock.fileno(), sock)
            return
        if len(fds) != 1 or flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC) \
                or not _is_unix_stream(fds[0]):
            self.bad_rings += 1
            protocol.close_fds(fds)
            return
        conn = socket.socket(fileno=fds[0])
        conn.setblocking(True)
        self._start_session(conn, vnet, scoped=True)

    def _close_doorbell(self, fd: int, sock: socket.socket) -> None:
        self._doorbells.pop(fd, None)
        with self._lock:
            self._channel_ends.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc)


def _linger_close(conn: socket.socket, most: int = 64 << 20,
                  seconds: float = REFUSE_LINGER) -> None:
    """End a connection whose reply is sent but whose input may hold unread bytes (an
    oversized frame): closing on unread input would reset the connection and the client
    could lose the reply. So: end our side, drain a bounded amount, for a bounded time,
    until it hangs up."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
        while most > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            conn.settimeout(left)
            data = conn.recv(1 << 16)
            if not data:
                break
            most -= len(data)


def _is_unix_stream(fd: int) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        return probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM
    finally:
        probe.close()


def _take_lock(path: str) -> int:
    """flock the daemon lock file, waiting a little for a daemon that is stopping."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    for _ in range(int(LOCK_WAIT / 0.05)):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.05)
    os.close(fd)
    raise FileExistsError(f"another vimaged holds {path}")


# -- the command --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vimaged", description="The vimage daemon: a kernel of vnets behind a control "
                                    "socket (normally started by vimage itself).")
    parser.add_argument("--socket", help="control socket path (default: $VIMAGE_SOCKET, else "
                                         "$XDG_RUNTIME_DIR/vimage/vimaged.sock, else "
                                         "/run/vimage/vimaged.sock)")
    parser.add_argument("--detach", action="store_true",
                        help="fork into the background (a new session) once started")
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help=f"connections served at once (default {MAX_CONNECTIONS})")
    parser.add_argument("--reserved-connections", type=int, default=RESERVED_CONNECTIONS,
                        help="of those, the slots kept for host connections, which channels "
                             f"of processes in vnets cannot take (default {RESERVED_CONNECTIONS})")
    parser.add_argument("--frame-timeout", type=float, default=protocol.FRAME_TIMEOUT,
                        help="seconds a request frame, once begun, has to arrive whole "
                             f"(default {protocol.FRAME_TIMEOUT:g})")
    args = parser.parse_args(argv)
    if args.max_connections < 1 or args.reserved_connections < 0 or args.frame_timeout <= 0:
        parser.error("--max-connections must be at least 1, --reserved-connections at "
                     "least 0, --frame-timeout more than 0")
    where = paths.resolve(args.socket)
    if args.detach and os.fork() > 0:
        os._exit(0)  # the parent returns at once; the child carries on alone
    if args.detach:
        os.setsid()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s vimaged[{os.getpid()}]: %(message)s")
    ready = args.ready_fd
    # Session threads, the relay loop and the kernel thread hand work to each other all the
    # time; the default 5 ms GIL switch interval would add up to 5 ms to every hand-off.
    sys.setswitchinterval(0.0002)
    daemon = Daemon(where, max_connections=args.max_connections,
                    reserved_connections=args.reserved_connections,
                    frame_timeout=args.frame_timeout)
    try:
        daemon.open()
    except (OSError, ValueError) as exc:
        message = f"cannot start: {_message(exc)}"
        log().error("%s", message)
        _tell(ready, f"error: {message}\n")
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: daemon.signal_stop())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _tell(ready, "ok\n")
    daemon.serve_forever()
    return 0


def _tell(fd: int | None, text: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, text.encode())
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
