"""Running `vimage topo ...` under `mpirun -n 2` from a test (Open MPI as root, shared
cores): the command's prefix, skipping without mpirun or mpi4py, and its environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vimage.emu import mpi as batch

ROOT = Path(__file__).resolve().parents[1]


def mpirun(*options: str) -> list[str]:
    """`mpirun --oversubscribe OPTIONS -n 2`; the test skips without mpirun or mpi4py."""
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found (Debian: openmpi-bin libopenmpi-dev)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install 'vimage[mpi]')")
    return ["mpirun", "--oversubscribe", *options, "-n", "2"]


def mpirun_env(**extra: str) -> dict[str, str]:
    """This environment for mpirun: root allowed, this tree's vimage first, and none of an
    enclosing mpirun's variables (a run under mpirun itself: not for the child)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", **extra)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    for name in batch.MPI_ENV:
        env.pop(name, None)
    return env
