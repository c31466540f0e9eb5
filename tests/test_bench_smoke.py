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
    result = _run("bench_vnets.py", "-n", "200", "--linux-n", "0", "--sizes", "50,100")
    assert result["rate"]["vnets"] == 200 and result["rate"]["create_per_s"] > 0
    assert 0 < result["memory"]["bytes_per_vnet"] < 1_000_000
    assert "skipped" in result["linux_netns"]
    rows = result["scaling"]["sizes"]
    assert [row["vnets"] for row in rows] == [50, 100]
    for row in rows:  # plain create() and create_many side by side, the policy's record
        assert row["create"]["create_per_cpu_s"] > 0 and row["create_many"]["create_per_cpu_s"] > 0
        assert row["create"]["gc_policy"]["frozen_after_destroy"] == 0
    assert result["scaling"]["flatness_create_create"] > 0


def test_bench_vnets_quick_and_bad_sizes():
    quick = _run("bench_vnets.py", "--quick")
    assert [row["vnets"] for row in quick["scaling"]["sizes"]] == [200, 2000]
    bad = subprocess.run([sys.executable, str(BENCH / "bench_vnets.py"), "--sizes", "1,x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--sizes" in bad.stderr


def test_bench_forward_delivers_every_packet():
    result = _run("bench_forward.py", "--routers", "3", "--packets", "200", "--pings", "3",
                  "--no-linux")
    fwd = result["forwarding"]
    assert fwd["forwarded"] == 3 * 200 and fwd["delivered_at_b"] == 200
    assert result["ping"]["vimage"]["rtt_us_median"] > 0


def test_bench_udp_receives_every_datagram():
    result = _run("bench_udp.py", "--count", "300")
    runs = result["vimage"]
    assert {(r["mode"], r["connected"]) for r in runs} == {
        (m, c) for m in ("lockstep", "batch") for c in (False, True)}
    assert all(r["datagrams"] == 300 and r["datagrams_per_cpu_s"] > 0 for r in runs)
    assert result["stdlib_localhost"]["datagrams"] == 300


def test_bench_aio_delivers_every_message_in_both_clocks():
    result = _run("bench_aio.py", "--quick")
    runs = result["runs"]
    # every (proto, hosts) ran in virtual time and on localhost
    clocks = ("virtual", "real (localhost)")
    assert {(r["proto"], r["hosts"], r["clock"]) for r in runs} == {
        (p, n, c) for p in ("udp", "tcp") for n in (5, 20) for c in clocks}
    for r in runs:
        assert r["messages_expected"] == 2 * r["hosts"] * r["requests_per_host"]
        assert r["messages_delivered"] == r["messages_expected"], r
        assert r["errors"] == 0
        assert r["messages_per_wall_s"] > 0 and r["cpu_us_per_message"] > 0
    for r in runs:
        if r["clock"] == "virtual":
            assert r["kernel_errors"] == 0
            assert abs(r["loop_seconds"] - 3.0) < 1e-6  # the virtual span asked for
            assert r["worst_send_lateness_ms"] == 0  # virtual time is never late
    assert {(c["proto"], c["hosts"]) for c in result["comparison"]} == {
        (p, n) for p in ("udp", "tcp") for n in (5, 20)}
    for c in result["comparison"]:
        assert c["virtual_s_per_wall_s"]["localhost"] == 1.0
        assert set(c["messages_per_wall_s"]) == {"vimage", "localhost"}
    assert len(result["memory"]) == 8
    assert all(m["complete"] and 0 < m["bytes_per_host"] < 1_000_000
               for m in result["memory"])


def test_bench_pytcp_moves_the_same_bytes_on_both_stacks():
    import importlib.util
    import os
    import shutil

    import pytest

    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or shutil.which("ip") is None:
        pytest.skip("bench_pytcp needs root, /dev/net/tun and ip (iproute2)")
    if importlib.util.find_spec("pytcp") is None:
        pytest.skip("pytcp not installed (pip install -e '.[bench]')")
    result = _run("bench_pytcp.py", "--quick")
    rx = result["rx"]
    for stack in ("vimage", "pytcp"):
        assert "skipped" not in rx[stack], rx[stack]
        assert [r["bytes"] for r in rx[stack]["runs"]] == [result["bytes"]]
        assert rx[stack]["mbit_s_best"] > 0 and rx[stack]["runs"][0]["cpu_s"] > 0
    assert rx["ratio_vimage_over_pytcp"]["mbit_s_best"] > 0


def test_bench_nat_forwards_and_translates_every_packet():
    result = _run("bench_nat.py", "--packets", "300", "--flows", "30")
    for run in ("no_filter", "nat_one_flow", "nat_many_flows"):
        assert result[run]["forwarded"] == 300 and result[run]["delivered_at_b"] == 300
    assert result["nat_many_flows"]["nat_links"] == 30
    assert result["nat_many_flows"]["translated"] == 300
    assert result["translate"]["us_per_call"] > 0


def test_bench_bridge_forwards_every_frame_by_one_port():
    result = _run("bench_bridge.py", "--frames", "300", "--repeat", "1", "--tcp-mb", "1")
    br, plain = result["bridge_learnt_unicast"], result["plain_epair_hop"]
    assert plain["delivered_at_b"] == 300 and br["delivered_at_b"] == 300
    assert br["bridge_forwarded"] == 300 and br["sent_back_to_source_port"] == 0
    assert result["bridge_vs_plain_ratio"] > 0
    tcp = {run["path"]: run for run in result["tcp"]}
    assert set(tcp) == {"plain", "bridge", "vlan"}
    assert all(run["errors"] == 0 and run["bytes"] == 1_000_000 for run in tcp.values())
    # offloaded through the bridge and the VLAN: large segments, as on the plain epair
    assert tcp["bridge"]["frames_on_the_epair"] < 200 and tcp["vlan"]["frames_on_the_epair"] < 200


def test_bench_ipfw_forwards_every_packet_in_every_ruleset():
    result = _run("bench_ipfw.py", "--packets", "200", "--sizes", "0,10", "--table", "50")
    runs = {r["ruleset"]: r for r in result["runs"]}
    assert set(runs) == {"none", "rules=0", "rules=10", "table"}
    for r in runs.values():
        assert r["forwarded"] == r["packets"] == r["delivered_at_b"], r
        assert r["forwarded_per_s"] > 0
    assert runs["rules=10"]["rules_evaluated_per_pass"] == 11
    assert runs["table"]["table_entries"] == 50


def test_bench_rip_converges_a_ring():
    result = _run("bench_rip.py", "--routers", "20")
    assert result["ok"] and result["routes_per_router"] == [18]  # n - 2: all the links
    assert 0 < result["converged_at_s"] < 35


def test_bench_ipsec_moves_every_byte_through_esp():
    result = _run("bench_ipsec.py", "--mb", "0.2", "--trials", "1")
    runs = {r["path"]: r for r in result["runs"]}
    assert set(runs) == {"plain", "gif", "gre", "esp-gcm", "esp-cbc", "gif+esp-gcm"}
    for path, run in runs.items():
        assert run["errors"] == 0 and run["esp_errors"] == 0
        assert (run["esp_packets_out"] > 0) == ("esp" in path)
        assert run["ratio_to_plain"] > 0


def test_bench_cpu_charges_no_more_than_the_process_used():
    result = _run("bench_cpu.py", "--routers", "3", "--packets", "100", "--tcp-bytes",
                  "300000", "--rounds", "100", "--repeat", "1")
    for name in ("forwarding", "tcp_bulk", "aio_echo"):
        part = result[name]
        assert part["cpu_s_off"] > 0 and part["cpu_s_on"] > 0
        # what the vnets are charged is CPU time of the run, never more
        assert 0 < part["coverage"] <= 1.01, (name, part)
