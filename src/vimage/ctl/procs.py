"""The processes of a vnet: every process holding one of its channels.

A process started by `vimage exec NAME` inherits the channel's descriptor
($VIMAGE_CTL_FD), and so do its children: holding it is what puts a process in the
vnet, as a jail's processes are those attached to it. Destroying the vnet kills them,
as jail_remove(2) kills a jail's processes (FreeBSD sys/kern/kern_jail.c,
prison_remove). Found by the socket inode of the channel's process end in each
process's /proc/PID/fd (Linux); a process that closed its channel has left the vnet
and only its sockets fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
from collections.abc import Iterable

_UCRED = struct.Struct("3i")


def peer_cred(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket (SO_PEERCRED);
    OSError if the socket has no peer."""
    pid, uid, gid = _UCRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


def peer_pid(conn: socket.socket) -> int:
    """The pid of the process at the other end of a unix socket; 0 if unknown."""
    try:
        return peer_cred(conn)[0]
    except OSError:
        return 0


def holders(inodes: Iterable[int], proc: str = "/proc") -> list[int]:
    """Pids of the processes (this one excepted) with a descriptor on one of the sockets."""
    links = {f"socket:[{ino}]" for ino in inodes}
    if not links:
        return []
    mine = str(os.getpid())
    found = []
    try:
        entries = [e.name for e in os.scandir(proc) if e.name.isdigit() and e.name != mine]
    except OSError:
        return []
    for pid in entries:
        if _holds(f"{proc}/{pid}/fd", links):
            found.append(int(pid))
    return found


def _holds(fd_dir: str, links: set[str]) -> bool:
    try:
        with os.scandir(fd_dir) as fds:
            for fd in fds:
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in links:
                        return True
    except OSError:  # gone, or not ours to look at
        pass
    return False


def kill_holders(inodes: Iterable[int], spare: Iterable[int] = ()) -> list[int]:
    """SIGKILL the processes holding one of the sockets, except those in `spare` (the
    `vimage exec` processes that asked for the channels: each holds its channel for a
    moment, between starting its program and closing it); the pids signalled."""
    killed = []
    spared = set(spare)
    for pid in holders(inodes):
        if pid in spared:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def parent_pid(pid: int, proc: str = "/proc") -> int:
    """The parent of process `pid` (field 4 of /proc/PID/stat, after the command name in
    parentheses, which may itself hold spaces and parentheses); 0 if unknown."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
