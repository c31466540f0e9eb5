"""Cost of a request forwarded between the ranks of `vimage topo serve` (docs/mpi.md).

Two PartitionedControl objects in this process, joined over TCP on 127.0.0.1 as two
ranks are, each answering with a stand-in for its daemon (a `nop`): the round trip of
one request to the other rank (wall and CPU, both ends being this process), the same
request answered locally (no network: the layer's floor), and requests from several
threads at once. What a forwarded `topo show NODE` or tool adds to the daemon's own
work (bench_ctl.py measures that work).

Writes JSON (to stdout and, with --out, to a file). Run: python bench/bench_mpi_control.py
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from _report import report
from vimage.emu import load
from vimage.emu import partition as parting
from vimage.emu.mpi_control import PartitionedControl

LAB = Path(__file__).resolve().parents[1] / "tests" / "emu" / "data" / "mpi-lab.yaml"


def nop(body: dict[str, Any]) -> dict[str, Any]:
    return {"id": body.get("id"), "ok": True}


def mesh() -> list[PartitionedControl]:
    topo = load(LAB)
    assignment = parting.partition(topo, 2)
    controls = [PartitionedControl(r, 2, topo, assignment, nop, "lab") for r in range(2)]
    addresses = [c.listen() for c in controls]
    threads = [threading.Thread(target=c.connect, args=(addresses, 10.0)) for c in controls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return controls


def per_call(control: PartitionedControl, rank: int, n: int) -> tuple[float, float]:
    """(wall us, CPU us) per request to `rank`."""
    for _ in range(min(50, n)):
        control.call(rank, {"op": "nop"})
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        control.call(rank, {"op": "nop"})
    return ((time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6)


def concurrent(control: PartitionedControl, clients: int, n: int) -> float:
    """Requests per second to the other rank from `clients` threads at once."""
    def run() -> None:
        for _ in range(n):
            control.call(1, {"op": "nop"})

    threads = [threading.Thread(target=run) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=8, help="threads at once")
    parser.add_argument("--runs", type=int, default=3, help="best of this many")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    controls = mesh()
    zero = controls[0]
    try:
        remote = min((per_call(zero, 1, args.n) for _ in range(args.runs)), key=lambda r: r[0])
        local = min((per_call(zero, 0, args.n) for _ in range(args.runs)), key=lambda r: r[0])
        rate = max(concurrent(zero, args.clients, max(1, args.n // args.clients))
                   for _ in range(args.runs))
    finally:
        for control in controls:
            control.stop("bench")
        for control in controls:
            control.close()
    report({"benchmark": "mpi_control", "requests": args.n, "runs": args.runs,
            "remote_us": round(remote[0], 1), "remote_cpu_us": round(remote[1], 1),
            "local_us": round(local[0], 2), "local_cpu_us": round(local[1], 2),
            "clients": args.clients, "concurrent_calls_per_s": round(rate)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
