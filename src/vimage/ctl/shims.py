"""The PATH shims of `vimage exec`: `ifconfig`, `route`, ... and `vimage` itself.

Each shim is a tiny Python script that runs the tool in $VIMAGE over the channel in
$VIMAGE_CTL_FD. It starts Python with -S and imports the vimage client without
running vimage/__init__.py (which loads the whole stack): a shim then costs about
as much as a bare interpreter start.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from vimage.cli import TOOLS

SHIM = """#!{python} -S
# vimage shim: `{name}` inside the vnet of $VIMAGE (see vimage.ctl.shims)
import sys, types
sys.path.insert(0, {parent!r})
if "vimage" not in sys.modules:
    pkg = types.ModuleType("vimage")
    pkg.__path__ = [{package!r}]
    sys.modules["vimage"] = pkg
from vimage.cli.vimage import shim_main
sys.exit(shim_main({name!r}, sys.argv[1:]))
"""


SITECUSTOMIZE = """# vimage: this process's sockets live in vnet $VIMAGE (vimage.ctl.remote)
import os, sys, types
if os.environ.get("VIMAGE_CTL_FD"):
    if {parent!r} not in sys.path:
        sys.path.append({parent!r})
    _fake = "vimage" not in sys.modules
    if _fake:  # the client alone, without loading the whole stack
        _pkg = types.ModuleType("vimage")
        _pkg.__path__ = [{package!r}]
        sys.modules["vimage"] = _pkg
    try:
        from vimage.ctl.remote import install_from_env
        install_from_env()
    except Exception as exc:
        sys.stderr.write("vimage: cannot put this process in vnet %s: %s\\n"
                         % (os.environ.get("VIMAGE", "?"), exc))
        raise SystemExit(70)
    finally:
        if _fake:
            del sys.modules["vimage"]  # a later `import vimage` gets the real package
"""


def names() -> tuple[str, ...]:
    return (*TOOLS, "vimage")


PREFIX = "vimage-bin-"


def make_dir(python: str | None = None) -> str:
    """A fresh directory of shims (mode 0755, readable by a `-u USER` process).

    Its name carries our pid: a vimage killed before it could remove its directory
    leaves it to the next one (`sweep`)."""
    import vimage

    sweep()
    package = os.path.abspath(vimage.__path__[0])
    python = python or os.environ.get("VIMAGE_PYTHON") or sys.executable
    directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    try:
        os.chmod(directory, 0o755)
        for name in names():
            path = os.path.join(directory, name)
            with open(path, "w") as fh:
                fh.write(SHIM.format(python=python, name=name, package=package,
                                     parent=os.path.dirname(package)))
            os.chmod(path, 0o755)
        with open(os.path.join(directory, "sitecustomize.py"), "w") as fh:
            fh.write(SITECUSTOMIZE.format(package=package, parent=os.path.dirname(package)))
    except BaseException:
        remove_dir(directory)
        raise
    return directory


def remove_dir(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def sweep(parent: str | None = None) -> int:
    """Remove our shim directories whose vimage process is gone; how many went."""
    parent = parent or tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        pid, dash, _ = entry.name.removeprefix(PREFIX).partition("-")
        if not entry.name.startswith(PREFIX) or not dash or not pid.isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) \
                    or entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            os.kill(int(pid), 0)
            continue  # its vimage still runs
        except ProcessLookupError:
            pass
        except OSError:
            continue
        remove_dir(entry.path)
        removed += 1
    return removed
