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


def names() -> tuple[str, ...]:
    return (*TOOLS, "vimage")


def make_dir(python: str | None = None) -> str:
    """A fresh directory of shims (mode 0755, readable by a `-u USER` process)."""
    import vimage

    package = os.path.abspath(vimage.__path__[0])
    python = python or os.environ.get("VIMAGE_PYTHON") or sys.executable
    directory = tempfile.mkdtemp(prefix="vimage-bin-")
    try:
        os.chmod(directory, 0o755)
        for name in names():
            path = os.path.join(directory, name)
            with open(path, "w") as fh:
                fh.write(SHIM.format(python=python, name=name, package=package,
                                     parent=os.path.dirname(package)))
            os.chmod(path, 0o755)
    except BaseException:
        remove_dir(directory)
        raise
    return directory


def remove_dir(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)
