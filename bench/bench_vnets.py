"""vnet create/destroy rate and memory per idle vnet (with its lo0).

Writes JSON (to stdout and, with --out, to a file). Run: python bench/bench_vnets.py
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc

from vimage.kernel import Kernel


def create_destroy_rate(n: int) -> dict[str, float]:
    kernel = Kernel(clock="virtual", seed=1)
    names = [f"v{i}" for i in range(n)]
    gc.collect()
    t0 = time.perf_counter()
    for name in names:
        kernel.create(name)
    t1 = time.perf_counter()
    for name in names:
        kernel.destroy(name)
    t2 = time.perf_counter()
    return {"vnets": n, "create_per_s": n / (t1 - t0), "destroy_per_s": n / (t2 - t1)}


def memory_per_vnet(n: int) -> dict[str, float]:
    kernel = Kernel(clock="virtual", seed=1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    vnets = [kernel.create(f"m{i}") for i in range(n)]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(vnets) == n
    return {"vnets": n, "bytes_per_vnet": (after - before) / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20000, help="vnets to create")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result = {
        "benchmark": "vnets",
        "python": sys.version.split()[0],
        "rate": create_destroy_rate(args.n),
        "memory": memory_per_vnet(min(args.n, 5000)),
        "targets": {"create_per_s": 20000, "bytes_per_vnet": 20 * 1024},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
