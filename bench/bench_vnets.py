"""vnet create/destroy rate and memory per idle vnet (with its lo0).

Writes JSON (to stdout and, with --out, to a file). Run: python bench/bench_vnets.py
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from _report import report
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


def linux_netns_rate(n: int) -> dict[str, object]:
    """`ip netns add/del` of n namespaces through one `ip -batch` process each way."""
    import subprocess

    import linux_chain

    reason = linux_chain.available() if n > 0 else "not asked for (--linux-n 0)"
    if reason:
        return {"skipped": reason}
    names = [f"{linux_chain.PREFIX}-n{i}" for i in range(n)]
    add = "".join(f"netns add {name}\n" for name in names)
    delete = "".join(f"netns del {name}\n" for name in names)
    t0 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input=add, text=True, check=True)
    t1 = time.perf_counter()
    subprocess.run(["ip", "-batch", "-"], input=delete, text=True, check=True)
    t2 = time.perf_counter()
    return {"namespaces": n, "create_per_s": n / (t1 - t0), "destroy_per_s": n / (t2 - t1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20000, help="vnets to create")
    parser.add_argument("--linux-n", type=int, default=200,
                        help="Linux namespaces to create for comparison (needs root)")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    rate = create_destroy_rate(args.n)
    linux = linux_netns_rate(args.linux_n)
    result = {
        "benchmark": "vnets",
        "rate": rate,
        "linux_netns": linux,
        "memory": memory_per_vnet(min(args.n, 5000)),
        "targets": {"create_per_s": 20000, "bytes_per_vnet": 20 * 1024},
    }
    if "create_per_s" in linux:
        result["ratio_create_vimage_to_linux"] = rate["create_per_s"] / float(
            linux["create_per_s"])  # type: ignore[arg-type]
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
