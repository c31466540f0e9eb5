"""Who may talk to the daemon: the socket's owner (and root) only, checked with SO_PEERCRED;
a process inside a vnet run as another user reaches only its own channel."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import names

NOBODY_CLIENT = textwrap.dedent("""
    import io, os, sys, contextlib
    from vimage.cli import vimage as cli
    sock = sys.argv[1]
    os.setgroups([])
    os.setgid({gid})
    os.setuid({uid})
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(["--socket", sock, "-l"])
    print(status, err.getvalue(), end="")
""")


def nobody() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another uid")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this system")


def as_nobody(socket_path: str) -> tuple[int, str]:
    """Run a vimage client whose process has dropped to nobody (setuid after the imports)."""
    pw = nobody()
    code = NOBODY_CLIENT.format(uid=pw.pw_uid, gid=pw.pw_gid)
    done = subprocess.run([sys.executable, "-c", code, socket_path], capture_output=True,
                          text=True, timeout=60, cwd="/",
                          env={**os.environ, "VIMAGE_AUTOSTART": "0"})
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition(" ")
    return int(status), message


def test_another_uid_cannot_reach_the_private_socket(vimaged):
    status, message = as_nobody(vimaged.socket)
    assert status == 1
    assert message == (f"vimage: cannot reach the daemon at {vimaged.socket}: "
                       "Permission denied\n")


def test_another_uid_that_reaches_the_socket_is_refused_by_peer_credentials(vimaged):
    # open the way on purpose: the file modes no longer protect the daemon, SO_PEERCRED does
    os.chmod(vimaged.dir, 0o755)
    os.chmod(vimaged.socket, 0o666)
    status, message = as_nobody(vimaged.socket)
    assert status == 77
    uid = nobody().pw_uid
    assert message == f"vimage: uid {uid} may not use this daemon (it belongs to uid 0)\n"
    assert names(vimaged.ok("-l")) == []  # the owner still can
    with open(vimaged.paths.log) as fh:
        assert "refused pid" in fh.read()


def _python_for(user: pwd.struct_passwd) -> str | None:
    """An interpreter of our version that `user` may run (the shims need one)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")):
        if not candidate:
            continue
        try:
            probe = subprocess.run(
                [candidate, "-S", "-c", "import sys; print(sys.version_info[:2])"],
                user=user.pw_uid, group=user.pw_gid, capture_output=True, text=True,
                check=False, cwd="/")
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


def test_exec_as_another_user_confines_it_to_its_channel(vimaged):
    pw = nobody()
    python = _python_for(pw)
    if python is None:
        pytest.skip("no Python interpreter that user nobody may run (for the shims)")
    vimaged.ok("-c", "jail")
    vimaged.ok("-c", "other")
    script = (f'id -u; ifconfig -l; vimage -c kid && vimage -l | cut -d" " -f1; '
              f'VIMAGE_CTL_FD= vimage --socket {vimaged.socket} -l; echo rc=$?')
    done = vimaged.run("exec", "-u", "nobody", "jail", "--", "sh", "-c", script,
                       VIMAGE_PYTHON=python)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{pw.pw_uid}\nlo0\nName\nkid\nrc=1\n"
    assert done.stderr == (f"vimage: cannot reach the daemon at {vimaged.socket}: "
                           "Permission denied\n")
    assert names(vimaged.ok("-lr")) == ["jail", "jail.kid", "other"]


def test_exec_as_a_user_needs_root_and_a_real_user(vimaged):
    vimaged.ok("-c", "j2")
    done = vimaged.run("exec", "-u", "no-such-user-here", "j2", "true")
    assert done.returncode == 1 and done.stderr == "vimage: unknown user no-such-user-here\n"
