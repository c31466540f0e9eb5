"""The benchmarks still run (tiny sizes) and report what they promise; no timing asserted."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(script, *args):
    out = subprocess.run([sys.executable, str(BENCH / script), *args], check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def test_bench_vnets_reports_rates_and_memory():
    result = _run("bench_vnets.py", "-n", "200", "--linux-n", "0")
    assert result["rate"]["vnets"] == 200 and result["rate"]["create_per_s"] > 0
    assert 0 < result["memory"]["bytes_per_vnet"] < 1_000_000
    assert "skipped" in result["linux_netns"]


def test_bench_forward_delivers_every_packet():
    result = _run("bench_forward.py", "--routers", "3", "--packets", "200", "--pings", "3",
                  "--no-linux")
    fwd = result["forwarding"]
    assert fwd["forwarded"] == 3 * 200 and fwd["delivered_at_b"] == 200
    assert result["ping"]["vimage"]["rtt_us_median"] > 0
