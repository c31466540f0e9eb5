"""Where the daemon's control socket lives, and the files beside it.

The socket is `--socket PATH`, else `$VIMAGE_SOCKET`, else
`$XDG_RUNTIME_DIR/vimage/vimaged.sock`, else `/run/vimage/vimaged.sock` for root and
`/tmp/vimage-UID/vimaged.sock` for anyone else. Beside it: `.lock` (held by the
running daemon), `.start` (serialises clients that start one), `.pid` and `.log`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from typing import NamedTuple

SOCKET_NAME = "vimaged.sock"
MAX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class Paths(NamedTuple):
    socket: str
    lock: str
    start: str
    pid: str
    log: str
    default_dir: bool  # the directory is ours to create and to check for privacy

    @property
    def directory(self) -> str:
        return os.path.dirname(self.socket)


def resolve(option: str | None = None, env: Mapping[str, str] | None = None) -> Paths:
    env = os.environ if env is None else env
    given = option or env.get("VIMAGE_SOCKET")
    if given:
        path, default = os.path.abspath(given), False
    else:
        path, default = os.path.join(default_dir(env), SOCKET_NAME), True
    return Paths(path, path + ".lock", path + ".start", path + ".pid", path + ".log", default)


def default_dir(env: Mapping[str, str]) -> str:
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return os.path.join(xdg, "vimage")
    if os.geteuid() == 0:
        return "/run/vimage"
    return f"/tmp/vimage-{os.geteuid()}"


def check_length(paths: Paths) -> None:
    if len(os.fsencode(paths.socket)) > MAX_PATH:
        raise ValueError(f"socket path {paths.socket} is too long "
                         f"(a unix socket path holds at most {MAX_PATH} bytes)")


def ensure_dir(paths: Paths) -> None:
    """Create the default directory (mode 0700), which must be private and ours; a socket
    path given explicitly (--socket, $VIMAGE_SOCKET) must be in a directory that exists:
    a typo must not leave directories and a daemon behind."""
    check_length(paths)
    directory = paths.directory
    if not paths.default_dir:
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), paths.socket)
        return
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create {directory}: {exc.strerror}") from None
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"run directory {directory} is not a private directory "
                              f"of uid {os.geteuid()} (mode 0700)")
