"""bench/bench_topo.py still runs (a tiny grid) and reports what it promises; no timing
asserted. The Linux part is built as `ip -batch` text, checked here without running it."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_bench_topo_reports_up_down_and_memory():
    out = subprocess.run([sys.executable, str(BENCH / "bench_topo.py"), "-n", "50",
                          "--memory-nodes", "18", "--linux-nodes", "0",
                           "--rip-nodes", "8"], check=True,
                         capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout)
    grid = result["grid"]
    assert (grid["side"], grid["nodes"], grid["links"]) == (5, 50, 25 + 2 * 5 * 4)
    assert grid["vnets"] == 51 and grid["vnets_left"] == 0 and grid["timers_left"] == 0
    assert grid["host_to_router_ping_ok"] is True
    assert 0 < result["memory"]["bytes_per_node"] < 1_000_000
    rip = result["rip"]  # a 2 x 2 backbone, one stub each: 8 RIP routers, 4 + 4 subnets
    assert (rip["routers"], rip["subnets"], rip["converged"]) == (8, 8, True)
    assert 0 < rip["converge_virtual_s"] < 60 and rip["vnets_left"] == 0
    assert rip["fewest_routes"] >= 8
    assert result["first_nodes"]["linux_netns"] == {"skipped": "not asked for (--linux-nodes 0)"}


def test_linux_batch_builds_the_first_nodes_of_the_same_grid():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_topo
    finally:
        sys.path.remove(str(BENCH))
    names, build, inside, delete = bench_topo.linux_batches(bench_topo.grid(3), 4)
    assert names == ["vimgtopo-r0_0", "vimgtopo-h0_0", "vimgtopo-r0_1", "vimgtopo-h0_1"]
    lines = build.splitlines()
    assert lines[0] == "netns add vimgtopo-r0_0"
    veths = [line for line in lines if line.startswith("link add")]
    assert len(veths) == 3  # h0_0-r0_0, r0_0-r0_1, h0_1-r0_1: links among the first four
    assert inside["vimgtopo-h0_0"].splitlines() == [
        "link set lo up", "addr add 10.0.0.10/24 dev vt0a", "link set vt0a up"]
    assert "addr add 10.0.0.1/24 dev vt0b" in inside["vimgtopo-r0_0"].splitlines()
    assert delete.splitlines() == [f"netns del {n}" for n in names]
