"""bench/bench_forward6.py still runs (tiny sizes) and forwards every packet of both families."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"


def test_bench_forward6_forwards_every_packet_of_both_families():
    out = subprocess.run([sys.executable, str(BENCH / "bench_forward6.py"), "--routers", "2",
                          "--packets", "50"], check=True, capture_output=True, text=True,
                         timeout=120)
    result = json.loads(out.stdout)
    assert result["ipv4"]["forwarded"] == result["ipv6"]["forwarded"] == 100
    assert result["frame_bytes"]["ipv6"] == result["frame_bytes"]["ipv4"] + 20
