"""examples/routing.sh, RIP routers through the vimage command, against a private daemon."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .conftest import names

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "routing.sh"


def test_routing_demo_converges_heals_and_cleans_up(place):
    done = subprocess.run(["bash", str(SCRIPT)], env=place.env(), capture_output=True,
                          text=True, timeout=120, cwd=place.dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    first, second = done.stdout.split("# the r1-r2 cable is cut")
    assert "2 packets transmitted, 2 packets received, 0.0% packet loss" in first
    assert re.findall(r"^ *\d+  (\S+)", first, re.MULTILINE) == [
        "10.1.0.1", "10.0.12.2", "10.2.0.20"]  # r1, r2, pc2
    assert "2 packets transmitted, 2 packets received, 0.0% packet loss" in second
    assert re.findall(r"^ *\d+  (\S+)", second, re.MULTILINE) == [
        "10.1.0.1", "10.0.13.3", "10.0.23.2", "10.2.0.20"]  # r1, r3, r2, pc2
    assert names(place.ok("-l")) == []
    assert place.ok("ifconfig", "-l") == "lo0\n"
