"""vnet create/destroy rate and memory per idle vnet (with its lo0).

The rate is measured three ways (--collector): with Python's garbage collector as it
runs by default (the figure that matters), with it off, and through
`Kernel.create_many` (which pauses it, as the topology builders do); each reports the
rate of every successive 10,000 vnets (`-n 100000` shows whether it stays flat). Also:
bytes (tracemalloc) and objects the collector tracks per idle vnet.

Writes JSON (to stdout and, with --out, to a file). Run: python bench/bench_vnets.py
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

from _report import report
from vimage.kernel import Kernel


def create_destroy_rate(n: int, collector: str = "on", slice_size: int = 10000) -> dict[str, Any]:
    """Create n vnets, then destroy them, timed in CPU seconds (time.process_time) and
    wall seconds. `collector`: "on" (Python's default: each kernel.create() alone),
    "off" (gc.disable() around the loop) or "bulk" (kernel.create_many(), which pauses
    the collector itself). `create_per_cpu_s_by_slice`: the creation rate of each
    successive `slice_size` vnets, to show whether it stays flat as vnets accumulate."""
    kernel = Kernel(clock="virtual", seed=1)
    if collector == "bulk" and not hasattr(kernel, "create_many"):
        return {"skipped": "this vimage has no Kernel.create_many"}
    names = [f"v{i}" for i in range(n)]
    step = max(1, min(slice_size, n))
    gc.collect()
    was_on = gc.isenabled()
    if collector == "off":
        gc.disable()
    try:
        w0, t0 = time.perf_counter(), time.process_time()
        slices: list[float] = []
        last = t0
        for start in range(0, n, step):
            chunk = names[start:start + step]
            if collector == "bulk":
                kernel.create_many(chunk)
            else:
                for name in chunk:
                    kernel.create(name)
            now = time.process_time()
            slices.append(round(len(chunk) / max(now - last, 1e-9)))
            last = now
        w1, t1 = time.perf_counter(), time.process_time()
        for name in names:
            kernel.destroy(name)
        w2, t2 = time.perf_counter(), time.process_time()
    finally:
        if was_on:
            gc.enable()
    return {"vnets": n, "collector": collector,
            "create_per_s": n / (w1 - w0), "destroy_per_s": n / (w2 - w1),
            "create_per_cpu_s": n / max(t1 - t0, 1e-9),
            "destroy_per_cpu_s": n / max(t2 - t1, 1e-9),
            "slice": step, "create_per_cpu_s_by_slice": slices}


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


def tracked_per_vnet(n: int) -> dict[str, float]:
    """Objects the cyclic garbage collector tracks, per idle vnet (gc.get_objects())."""
    kernel = Kernel(clock="virtual", seed=1)
    gc.collect()
    before = len(gc.get_objects())
    vnets = [kernel.create(f"t{i}") for i in range(n)]
    gc.collect()
    after = len(gc.get_objects())
    assert len(vnets) == n
    return {"vnets": n, "tracked_objects_per_vnet": (after - before) / n}


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
    parser.add_argument("--collector", choices=("on", "off", "bulk", "all"), default="all",
                        help="how the garbage collector runs during creation (default: "
                        "each of the three, the default collector first)")
    args = parser.parse_args(argv)
    modes = ("on", "off", "bulk") if args.collector == "all" else (args.collector,)
    rates = {mode: create_destroy_rate(args.n, mode) for mode in modes}
    rate = rates[modes[0]]
    linux = linux_netns_rate(args.linux_n)
    result = {
        "benchmark": "vnets",
        "rate": rate,
        "rates_by_collector": rates,
        "linux_netns": linux,
        "memory": memory_per_vnet(min(args.n, 5000)),
        "tracked": tracked_per_vnet(min(args.n, 2000)),
        "targets": {"create_per_cpu_s": 40000, "bytes_per_vnet": 5 * 1024},
    }
    if "create_per_s" in linux:
        result["ratio_create_vimage_to_linux"] = rate["create_per_s"] / float(
            linux["create_per_s"])  # type: ignore[arg-type]
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
