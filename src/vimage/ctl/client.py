"""The client library: talk to vimaged, starting it if it is not running.

`open_client()` picks the channel the way the vimage command does: an explicit
socket path, else the scoped channel inherited in $VIMAGE_CTL_FD (inside `vimage
exec`), else $VIMAGE_SOCKET or the default socket. Every failure is a CtlError with
a one-line message.
"""

from __future__ import annotations

import array
import base64
import contextlib
import fcntl
import os
import select
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from vimage.ctl import paths, protocol
from vimage.ctl.protocol import UNAVAILABLE, VERSION, CtlError

START_TIMEOUT = 30.0  # seconds a starting daemon has to say it is ready


class Client:
    """One connection to the daemon (host socket or scoped channel), after the hello."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where  # for messages: the socket path or "the channel of vnet X"
        self._next_id = 0
        self.info = self.request("hello", version=VERSION, client="vimage")

    @property
    def vnet(self) -> str:
        """The vnet this connection acts in ("vnet0" for the host)."""
        return str(self.info.get("vnet", "vnet0"))

    @property
    def scoped(self) -> bool:
        return bool(self.info.get("scoped"))

    def call(self, op: str, fds: Sequence[int] = (),
             on_progress: Callable[[dict[str, Any]], None] | None = None,
             **fields: Any) -> tuple[dict[str, Any], list[int]]:
        """Send a request, return (reply fields, received descriptors); CtlError if refused.
        Progress frames before the reply (`topo_up`) go to `on_progress`, if given."""
        self._next_id += 1
        rid = self._next_id
        try:
            # the daemon may have refused us already: then its reply can still be read
            with contextlib.suppress(OSError):
                protocol.send(self.sock, {"id": rid, "op": op, **fields}, list(fds))
            while True:
                frame = protocol.recv(self.sock, protocol.MAX_REPLY)
                if frame is None:
                    raise CtlError(UNAVAILABLE, f"lost the daemon ({self.where}): it closed "
                                                "the connection")
                reply, got = frame
                if isinstance(reply, dict) and "ok" in reply:
                    break
                protocol.close_fds(got)  # a progress frame (ctl/topoops.py)
                if on_progress is not None and isinstance(reply, dict) \
                        and isinstance(reply.get("progress"), dict):
                    on_progress(reply["progress"])
        except CtlError as exc:
            if exc.code == protocol.MALFORMED:
                raise CtlError(UNAVAILABLE, f"garbled reply from the daemon: {exc.message}") \
                    from None
            raise
        except OSError as exc:
            raise CtlError(UNAVAILABLE, f"lost the daemon ({self.where}): "
                                        f"{exc.strerror or exc}") from None
        if not reply["ok"]:
            protocol.close_fds(got)
            error = reply.get("error") or {}
            detail = error.get("detail")
            raise CtlError(str(error.get("code", "failed")), str(error.get("message", "failed")),
                           detail=detail if isinstance(detail, dict) else None)
        if reply.get("id") not in (rid, None):
            protocol.close_fds(got)
            raise CtlError(UNAVAILABLE, "the daemon answered another request")
        reply = {k: v for k, v in reply.items() if k not in ("id", "ok")}
        return reply, got

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """`call` for requests that send and receive no descriptors."""
        reply, fds = self.call(op, **fields)
        protocol.close_fds(fds)
        return reply

    def tool(self, argv: list[str], vnet: str = "",
             stdin: IO[bytes] | bytes | None = None) -> tuple[int, str]:
        """Run a tool in `vnet` (relative to this connection's vnet); (status, output).

        File operands (tcpdump -r/-w) are opened here, where the user is, and passed
        to the daemon as descriptors, with the names typed for its messages; a file
        operand `-` to read (tcpdump -r -) is standard input (`stdin`, else ours), read
        here whole, up to protocol.MAX_STDIN bytes, and sent with the request. Other
        arguments travel as text: one that is not UTF-8 is a CtlError."""
        from vimage.ctl.policy import file_operands

        try:
            argv, where = file_operands(argv)
        except ValueError as exc:
            return 64, f"{protocol.shown(str(exc))}\n"  # as the tool would: a usage error
        fds: list[int] = []
        extra: dict[str, Any] = {}
        try:
            for index, mode in where:
                path = argv[index]
                if path == "-" and "r" in mode:
                    data = _read_stdin(_our_stdin() if stdin is None else stdin)
                    if data is None:
                        return 1, (f"{argv[0]}: -: standard input is over the "
                                   f"{protocol.MAX_STDIN >> 10} KiB vimage forwards; "
                                   "use -r FILE\n")
                    extra["stdin"] = base64.b64encode(data).decode()
                    continue
                flags = os.O_RDONLY if "r" in mode else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                try:
                    fds.append(os.open(path, flags | os.O_CLOEXEC, 0o666))
                except OSError as exc:
                    return 1, f"{argv[0]}: {protocol.shown(path)}: {exc.strerror}\n"
                extra.setdefault("files", []).append(protocol.shown(path))
                argv[index] = f"@fd:{len(fds) - 1}"
            bad = protocol.not_text(argv)
            if bad is not None:
                raise CtlError(protocol.BAD_REQUEST,
                               f"{protocol.shown(argv[0])}: argument '{protocol.shown(bad)}' "
                               "is not valid UTF-8 (vimage passes tool arguments as text)")
            reply = self._tool_call(vnet, argv, fds, **extra)
        finally:
            protocol.close_fds(fds)
        return int(reply["status"]), str(reply["output"])

    def _tool_call(self, vnet: str, argv: list[str], fds: list[int],
                   **extra: Any) -> dict[str, Any]:
        reply, got = self.call("tool", fds=fds, vnet=vnet, argv=argv, **extra)
        protocol.close_fds(got)
        return reply

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _our_stdin() -> IO[bytes] | bytes:
    return b"" if sys.stdin is None else sys.stdin.buffer


def _read_stdin(source: IO[bytes] | bytes) -> bytes | None:
    """Standard input for the daemon, whole: None if it is over protocol.MAX_STDIN."""
    if isinstance(source, bytes):
        data = source
    else:
        chunks: list[bytes] = []
        size = 0
        while size <= protocol.MAX_STDIN:
            chunk = source.read(protocol.MAX_STDIN + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    return data if len(data) <= protocol.MAX_STDIN else None


# -- connecting -----------------------------------------------------------------------------
def open_client(socket_option: str | None = None, env: Mapping[str, str] | None = None,
                autostart: bool | None = None) -> Client:
    """The connection the vimage command uses (see the module docstring)."""
    env = os.environ if env is None else env
    if socket_option is None and env.get("VIMAGE_CTL_FD"):
        return connect_channel(env["VIMAGE_CTL_FD"], env.get("VIMAGE", "?"))
    if autostart is None:
        autostart = env.get("VIMAGE_AUTOSTART", "1") != "0"
    return connect(paths.resolve(socket_option, env), autostart=autostart)


def connect(where: paths.Paths, autostart: bool = True) -> Client:
    """Connect to the daemon at `where`, starting one first if `autostart`."""
    try:
        paths.check_length(where)
    except ValueError as exc:
        raise CtlError(UNAVAILABLE, str(exc)) from None
    try:
        return Client(_dial(where.socket), where.socket)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise CtlError(UNAVAILABLE, f"no daemon is listening on {where.socket} "
                                        "(start one with `vimage daemon start`)") from None
    except OSError as exc:
        raise CtlError(UNAVAILABLE, f"cannot reach the daemon at {where.socket}: "
                                    f"{exc.strerror or exc}") from None
    return _start_and_connect(where)


def _dial(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _start_and_connect(where: paths.Paths) -> Client:
    """Start a daemon unless another client just did: the `.start` lock serialises them."""
    try:
        paths.ensure_dir(where)
        lock = os.open(where.start, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:  # an explicit path in a directory that is not there
        raise CtlError(UNAVAILABLE, f"{protocol.shown(where.socket)}: No such file or directory"
                                    " (vimage creates only its default run directory)") from None
    except OSError as exc:
        raise CtlError(UNAVAILABLE, f"cannot start the daemon: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return Client(_dial(where.socket), where.socket)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        start_daemon(where)
        try:
            return Client(_dial(where.socket), where.socket)
        except OSError as exc:
            raise CtlError(UNAVAILABLE, f"the daemon started but {where.socket} does not "
                                        f"answer: {exc.strerror or exc}") from None
    finally:
        os.close(lock)


def start_daemon(where: paths.Paths, options: Sequence[str] = ()) -> None:
    """Start vimaged detached (its own session, output to the .log file) and wait until it
    listens, with daemon `options` (--max-connections N, ...). The caller holds the
    `.start` lock (or knows no other client can start one)."""
    import vimage

    parent = os.path.dirname(os.path.abspath(vimage.__path__[0]))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        log = os.open(where.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vimage.ctl.daemon", "--socket", where.socket,
                 "--detach", "--ready-fd", str(write_end), *options],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_end,),
                start_new_session=True, cwd="/", env=env)
        finally:
            os.close(log)
        os.close(write_end)
        write_end = -1
        proc.wait()  # the first process forks the daemon and exits at once
        answer = _read_until_eof(read_end, START_TIMEOUT)
    except OSError as exc:
        raise CtlError(UNAVAILABLE, f"cannot start the daemon: {exc.strerror or exc}") from None
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
    if not answer.startswith("ok"):
        reason = answer.strip().removeprefix("error: ") or f"it exited; see {where.log}"
        raise CtlError(UNAVAILABLE, f"could not start the daemon: {reason}")


def _read_until_eof(fd: int, timeout: float) -> str:
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return f"error: it did not get ready within {timeout:.0f} s"
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(data)


def connect_channel(fd_text: str, vnet: str = "?") -> Client:
    """Connect through the doorbell inherited from `vimage exec` (a SEQPACKET socket)."""
    try:
        fd = int(fd_text)
        bell = socket.socket(fileno=os.dup(fd))
    except (ValueError, OSError):
        raise CtlError(UNAVAILABLE, f"VIMAGE_CTL_FD={fd_text} is not an open descriptor "
                                    "(not started by vimage exec?)") from None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if bell.family != socket.AF_UNIX or bell.type != socket.SOCK_SEQPACKET:
            raise CtlError(UNAVAILABLE, f"VIMAGE_CTL_FD={fd_text} is not a vimage control "
                                        "channel")
        bell.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [theirs.fileno()]))])
    except OSError:
        ours.close()
        raise CtlError(UNAVAILABLE, f"the control channel of vnet {vnet} is closed (the vnet "
                                    "or the daemon has gone)") from None
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        bell.close()
    return Client(ours, f"the channel of vnet {vnet}")


def daemon_pid(where: paths.Paths) -> int | None:
    """The pid in the daemon's pid file, if that process is alive."""
    with contextlib.suppress(OSError, ValueError):
        with open(where.pid) as fh:
            pid = int(fh.read().strip())
        os.kill(pid, 0)
        return pid
    return None
