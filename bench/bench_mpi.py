"""A topology split across MPI ranks in virtual time: 1 rank against 2 (docs/mpi.md).

The topology is bench_topo's grid (k x k routers, each with a host; about `--nodes`
nodes), with a delay on every router-router link (`--delay`, the lookahead when such
links are cut) and traffic everywhere: each host pings its router, and each router its
right-hand neighbour, once a second for the whole run, the pingers' start times spread
over the first second (`--spread` distinct instants). Links between a host and its
router have no delay, so the partitioner keeps each pair together.

For each rank count (`--ranks`, default 1 and 2, alternated `--repeat` times) it runs
`vimage topo run FILE --duration D` (mpirun -n N for N > 1) and reads rank 0's summary:
events (all ranks), wall seconds of the run loop, per rank the seconds spent running
the kernel (work) and in the exchange (sync: the MPI alltoall, waiting for the slower
rank included), and rounds. It derives events per second, the speedup of N ranks over 1
and the synchronisation overhead (sync / wall), and fits the model of docs/mpi.md:
wall(N) = work(1) / N * imbalance + rounds * c(N), rounds <= duration / lookahead,
c(N) = c1 * (N - 1) (an alltoall's pairwise messages), giving predictions for more
ranks and other lookaheads.

Run: python bench/bench_mpi.py [--nodes 10000] [--duration 60] [--out bench/bench_mpi.json]
mpirun as root needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (set here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import report
from bench_topo import grid, side
from vimage.emu import address, yamlfmt
from vimage.emu.model import Topology
from vimage.emu.partition import partition, summary

ROOT = Path(__file__).resolve().parents[1]


def topology(nodes: int, delay_us: int, spread: int) -> Topology:
    """The grid, addressed, with ping jobs on every node."""
    k = side(nodes)
    topo = grid(k)
    for link in topo.links:
        if link.a[0].startswith("r") and link.b[0].startswith("r"):
            link.delay = delay_us
    topo = address.auto_assign(topo, True, False)
    topo.auto_address = False
    addr = {(n, i): iface.ipv4[0].split("/")[0] for n, node in topo.nodes.items()
            for i, iface in node.interfaces.items() if iface.ipv4}
    for index, link in enumerate(topo.links):
        a, (b, bi) = link.a[0], link.b
        start = (index % spread) / spread
        if a.startswith("h"):  # host -> its router
            line = f"at {start:g} ping -c {{count}} -i 1 {addr[(b, bi)]}"
            topo.nodes[a].commands.append(line)
        elif a.split("_")[0] == b.split("_")[0]:  # r_i_j -> r_i_j+1, its right neighbour
            topo.nodes[a].commands.append(f"at {start:g} ping -c {{count}} -i 1 {addr[(b, bi)]}")
    return topo


def run_once(path: Path, ranks: int, duration: float, workdir: Path) -> dict[str, object]:
    out = workdir / f"summary-{ranks}.json"
    cmd = [sys.executable, "-m", "vimage.cli.vimage", "topo", "run", str(path),
           "--duration", str(duration), "--skip-ipv6", "--summary-json", str(out)]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-n", str(ranks), *cmd]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    total = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}: {done.stderr.strip()[-2000:]}")
    data = json.loads(out.read_text())
    per = data["per_rank"]
    wall = max(r["wall"] for r in per)
    events = sum(r["events"] for r in per)
    return {
        "ranks": ranks, "process_wall_s": round(total, 3),
        "build_s": round(max(r["build"] for r in per), 3),
        "run_wall_s": round(wall, 3), "events": events,
        "events_per_s": round(events / wall) if wall else None,
        "rounds": per[0]["rounds"],
        "work_s": [round(r["work"], 3) for r in per],
        "sync_s": [round(r["sync"], 3) for r in per],
        "cpu_s": [round(r["cpu"], 3) for r in per],
        "cpu_work_s": [round(r["cpu_work"], 3) for r in per],
        "sync_share": round(max(r["sync"] for r in per) / wall, 3) if wall else None,
        "frames_between_ranks": sum(r["frames_out"] for r in per),
        "jobs_ok": sum(" 0.0% packet loss" in j for j in data["jobs"]),
        "jobs": len(data["jobs"]),
    }


LATENCY = """
import sys, time
from mpi4py import MPI
c = MPI.COMM_WORLD
n = int(sys.argv[1])
c.alltoall([(None, [])] * c.size)
c.Barrier()
t = time.perf_counter()
for _ in range(n):
    c.alltoall([(None, [])] * c.size)
if c.rank == 0:
    print((time.perf_counter() - t) / n)
"""


def alltoall_latency(ranks: int, rounds: int = 2000) -> float | None:
    """Seconds per empty alltoall of `ranks` ranks (what a round costs without waiting)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run(["mpirun", "--oversubscribe", "-n", str(ranks), sys.executable,
                           "-c", LATENCY, str(rounds)], env=env, capture_output=True,
                          text=True, timeout=600)
    return float(done.stdout.split()[0]) if done.returncode == 0 else None


def model(one: dict[str, object], many: dict[str, object], duration: float,
          lookahead_s: float, a2a: dict[int, float | None]) -> dict[str, object]:
    """The sync cost model of docs/mpi.md, fitted on the measured runs:

    wall(N, L) = work(1) / N * imbalance + rounds(L) * (a2a(N) + wait)
    rounds(L) = min(rounds measured, duration / L)   (windows follow the events; a
                larger lookahead merges windows only once it exceeds their spacing)
    a2a(N)    = a2a(2) * log2(N)   (Open MPI's alltoall of small messages: Bruck's
                algorithm, log2 N steps); wait = what a round cost beyond the alltoall
                in the measured run (load imbalance, and here other processes on the cores)
    """
    n = int(many["ranks"])  # type: ignore[call-overload]
    rounds = int(many["rounds"])  # type: ignore[call-overload]
    work1 = float(one["run_wall_s"])  # type: ignore[arg-type]
    work_n = max(many["work_s"])  # type: ignore[type-var]
    sync_n = min(many["sync_s"])  # type: ignore[type-var]  # the least-waiting rank
    per_round = sync_n / rounds if rounds else 0.0
    a2a2 = a2a.get(2) or per_round
    wait = max(0.0, per_round - a2a2)
    imbalance = work_n * n / work1 if work1 else 1.0
    predict = {}
    for ranks in (2, 4, 8, 16):
        for look_ms in (0.1, 1.0, 10.0, 100.0):
            r = min(rounds, duration / (look_ms / 1000))
            c = a2a2 * max(1.0, math.log2(ranks)) + wait
            predict[f"N={ranks},L={look_ms:g}ms"] = round(
                work1 / ranks * imbalance + r * c, 2)
    return {"sync_per_round_s": per_round, "alltoall_s": {str(k): v for k, v in a2a.items()},
            "wait_per_round_s": wait,
            "cpu_sync_per_round_s": (min(c - w for c, w in zip(many["cpu_s"],  # type: ignore
                                                                many["cpu_work_s"],  # type: ignore
                                                                strict=True)) / rounds
                                     if rounds else 0.0), "imbalance": round(imbalance, 3),
            "rounds_measured": rounds,
            "rounds_cap_duration_over_lookahead": round(duration / lookahead_s),
            "predicted_wall_s": predict}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=2000, help="about this many (default 2000)")
    ap.add_argument("--duration", type=float, default=60.0, help="virtual seconds (60)")
    ap.add_argument("--delay", type=int, default=1000, help="router link delay, us (1000)")
    ap.add_argument("--spread", type=int, default=20, help="ping start instants (20)")
    ap.add_argument("--ranks", default="1,2", help="rank counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=1, help="alternated runs per rank count")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    if any(r > 1 for r in ranks) and shutil.which("mpirun") is None:
        sys.exit("bench_mpi: mpirun not found (Debian: openmpi-bin libopenmpi-dev)")
    topo = topology(args.nodes, args.delay, args.spread)
    count = int(args.duration)
    for node in topo.nodes.values():
        node.commands = [c.replace("{count}", str(count)) for c in node.commands]
    parts = {r: summary(topo, partition(topo, r), r) for r in ranks}
    with tempfile.TemporaryDirectory(prefix="bench-mpi-") as tmp:
        path = Path(tmp) / "grid.yaml"
        yamlfmt.dump(topo, path)
        runs: dict[int, list[dict[str, object]]] = {r: [] for r in ranks}
        for _ in range(args.repeat):
            for r in ranks:
                runs[r].append(run_once(path, r, args.duration, Path(tmp)))
    best = {r: min(rs, key=lambda x: x["run_wall_s"]) for r, rs in runs.items()}  # type: ignore
    result: dict[str, object] = {
        "nodes": len(topo.nodes), "links": len(topo.links), "duration_s": args.duration,
        "lookahead_ms": args.delay / 1000, "partitions": {str(r): parts[r] for r in ranks},
        "runs": {str(r): rs for r, rs in runs.items()}, "best": {str(r): best[r] for r in ranks},
    }
    if 1 in best:
        one = best[1]
        result["speedup"] = {str(r): round(float(one["run_wall_s"])  # type: ignore[arg-type]
                                           / float(best[r]["run_wall_s"]), 3)  # type: ignore
                             for r in ranks if r > 1}
        # what the busiest rank's kernel work costs against one rank's, in CPU time: the
        # speedup on cores of its own, the rounds aside
        result["cpu_work_speedup"] = {
            str(r): round(float(one["cpu_work_s"][0])  # type: ignore[index]
                          / max(best[r]["cpu_work_s"]), 3)  # type: ignore[type-var]
            for r in ranks if r > 1}
        many = [best[r] for r in ranks if r > 1]
        if many:
            a2a = {r: alltoall_latency(r) for r in (2, 4)}
            result["model"] = model(one, many[0], args.duration, args.delay / 1e6, a2a)
    report(result, args.out)


if __name__ == "__main__":
    main()
