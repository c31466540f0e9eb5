"""The optional compiled build (docs/internals.md, "Compiled builds").

Everything about the package is in pyproject.toml; this file only adds the extension
modules when asked: `VIMAGE_COMPILE=1 pip install --no-build-isolation .` with mypy
installed compiles the modules listed in src/vimage/compiled.py with mypyc. Without
VIMAGE_COMPILE=1 the package is pure Python.
"""

from __future__ import annotations

import os
import runpy
import sys

from setuptools import setup

ext_modules = []
if os.environ.get("VIMAGE_COMPILE") == "1":
    if "editable_wheel" in sys.argv or "develop" in sys.argv:
        # the extensions would land beside the sources and shadow every later edit
        sys.exit("VIMAGE_COMPILE=1 needs a non-editable install (pip install ., not -e)")
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit("VIMAGE_COMPILE=1 needs mypy (pip install mypy) and --no-build-isolation")
    modules = runpy.run_path(os.path.join("src", "vimage", "compiled.py"))["MODULES"]
    # follow-imports=silent: the rest of the package is read for its types, but only the
    # compiled modules have to pass mypy
    ext_modules = mypycify(["--follow-imports=silent", *(f"src/{m}" for m in modules)],
                           opt_level="3")

setup(ext_modules=ext_modules)
