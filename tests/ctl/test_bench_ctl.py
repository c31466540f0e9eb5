"""bench/bench_ctl.py still runs (tiny sizes) and reports what it promises; no timing asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_ctl.py"


def test_bench_ctl_reports_round_trips_and_the_ratio():
    done = subprocess.run([sys.executable, str(BENCH), "-n", "20", "--clients", "2",
                           "--runs", "1"], capture_output=True, text=True, timeout=180,
                          check=True)
    result = json.loads(done.stdout)
    assert result["benchmark"] == "ctl"
    assert result["in_process"]["tool_us"] > 0
    for key in ("tool_us", "nop_us", "channel_tool_us", "concurrent_calls_per_s"):
        assert result["daemon"][key] > 0
    assert result["commands"]["shim_launcher_ms"] > 0 and result["commands"]["python_m_ms"] > 0
    assert result["ratio_daemon_to_in_process"] > 0
