"""examples/bridging.sh, the classic two-vnet demo, runs against a private daemon."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import names

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "bridging.sh"


def test_bridging_demo_pings_across_and_cleans_up(place):
    done = subprocess.run(["bash", str(SCRIPT)], env=place.env(), capture_output=True,
                          text=True, timeout=120, cwd=place.dir)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in lines
    assert "epair0a@left" in lines and "epair0b@right" in lines
    assert "\tinet 10.0.0.1 netmask 0xffffff00 broadcast 10.0.0.255" in lines
    assert any(line.startswith("? (10.0.0.1) at ") and " on epair0b " in line for line in lines)
    # the script started the daemon and left it empty: no vnets, no cable
    assert names(place.ok("-l")) == []
    assert place.ok("ifconfig", "-l") == "lo0\n"
