"""Helpers of the GUI tests: the partitioned GUI under mpirun (test_partitioned.py and
test_browser.py), skipped without Open MPI or mpi4py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.mpi_run import mpirun, mpirun_env

ROOT = Path(__file__).resolve().parents[2]
SPLIT = Path(__file__).resolve().parent / "data" / "split.yaml"  # pc1, r1 on rank 1






class PartitionedGui:
    """`mpirun -n 2 vimage gui FILE` in the background; its URL and an API client."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [*mpirun(), sys.executable, "-m", "vimage.cli.vimage", "gui", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpirun_env(),
            start_new_session=True)
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline() for _ in range(2)]
        if lines[0] != "vimage gui: 2 ranks, the experiment partitioned on Start\n":
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"mpirun vimage gui said {lines}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url = lines[1].split()[-1]
        self.base = self.url.split("?")[0].rstrip("/")
        self.token = self.url.split("token=")[1]

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data, method=method,
                                         headers={"X-Vimage-Token": self.token,
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = self.api(method, path, body)
        assert status == 200, data
        return json.loads(data)  # type: ignore[no-any-return]

    def stop(self) -> tuple[str, str]:
        """SIGTERM to mpirun, as ^C would: every rank takes its part down and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"the ranks did not end: {err}") from None
        return out, err


