"""examples/overlay.sh: three sites over gif + IPsec through the vimage command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import names

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "overlay.sh"


def test_overlay_script_reaches_every_site_and_the_internet_sees_only_esp(place):
    done = subprocess.run(["bash", str(SCRIPT)], env=place.env(), capture_output=True,
                          text=True, timeout=300, cwd=place.dir)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    pings = [line for line in lines if "packets transmitted" in line]
    assert len(pings) == 6
    assert all("2 packets received, 0.0% packet loss" in line for line in pings), pings
    captured = [line for line in lines if " IP 198.18." in line]
    assert len(captured) == 4 and all("ESP(spi=0x0000" in line for line in captured), lines
    assert lines[-1] == "overlay OK"
    assert names(place.ok("-l")) == []
