"""vnet create/destroy rate and memory per idle vnet (with its lo0).

The rate is measured three ways (--collector): with Python's garbage collector as it
runs by default (the figure that matters), with it off, and through
`Kernel.create_many` (which pauses it, as the topology builders do); each reports the
rate of every successive 10,000 vnets (`-n 100000` shows whether it stays flat).
`scaling` puts plain `kernel.create()` in a loop (the collector on, as users, vimaged and
the emulator's nodes make vnets) and `create_many` side by side at 1,000, 10,000 and
100,000 vnets (--sizes; --quick: 200 and 2,000), with the kernel's collector policy's
freezes and thaws (vimage.gcpolicy) and `flatness`, the rate at the largest size over the
rate at the smallest, and `create_and_collect`: creation and the next full collection
(what the collector has left to walk of them). Also: bytes (tracemalloc) and objects
the collector tracks per idle vnet (frozen ones included).

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
        policy = _policy(kernel)
        # what the collector has left to walk: the next full collection, which any run
        # pays (and, unfrozen, again at every quarter of growth). create_many's paused
        # walk falls here, outside the creation figures, unless it was frozen already
        collect_cpu_s = 0.0
        if collector != "off":
            t_gc = time.process_time()
            gc.collect()
            collect_cpu_s = time.process_time() - t_gc
        w1b, t1b = time.perf_counter(), time.process_time()
        for name in names:
            kernel.destroy(name)
        w2, t2 = time.perf_counter(), time.process_time()
    finally:
        if was_on:
            gc.enable()
    result = {"vnets": n, "collector": collector,
              "create_per_s": n / (w1 - w0), "destroy_per_s": n / (w2 - w1b),
              "create_per_cpu_s": n / max(t1 - t0, 1e-9),
              "destroy_per_cpu_s": n / max(t2 - t1b, 1e-9),
              "next_full_collection_cpu_s": round(collect_cpu_s, 4),
              "create_and_collect_per_cpu_s": n / max(t1 - t0 + collect_cpu_s, 1e-9),
              "slice": step, "create_per_cpu_s_by_slice": slices}
    if policy is not None:  # what the kernel's collector policy did (vimage.gcpolicy)
        after = _policy(kernel) or {}
        result["gc_policy"] = {"freezes": policy["freezes"], "thaws": after.get("thaws"),
                               "frozen_after_destroy": gc.get_freeze_count()}
    return result


def _policy(kernel: Kernel) -> dict[str, int] | None:
    """The kernel's collector policy's counts, or None for a vimage without one."""
    policy = getattr(kernel, "collector", None)
    if policy is None:
        return None
    return {"freezes": policy.freezes, "thaws": policy.thaws}


def scaling(sizes: list[int]) -> dict[str, Any]:
    """Plain create() in a loop against create_many, at each size (a fresh kernel each)."""
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"vnets": n}
        for mode, label in (("on", "create"), ("bulk", "create_many")):
            run = create_destroy_rate(n, mode)
            if "skipped" in run:
                row[label] = run
                continue
            row[label] = {key: round(run[key]) for key in (
                "create_per_cpu_s", "create_and_collect_per_cpu_s", "destroy_per_cpu_s",
                "create_per_s", "destroy_per_s")}
            if "gc_policy" in run:
                row[label]["gc_policy"] = run["gc_policy"]
        rows.append(row)
    out: dict[str, Any] = {"sizes": rows}
    for label in ("create", "create_many"):
        first, last = rows[0].get(label, {}), rows[-1].get(label, {})
        for what in ("create", "create_and_collect", "destroy"):
            key = f"{what}_per_cpu_s"
            if key in first and key in last:
                out[f"flatness_{label}_{what}"] = round(last[key] / first[key], 3)
    return out


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
    _release(kernel)
    return {"vnets": n, "bytes_per_vnet": (after - before) / n}


def tracked_per_vnet(n: int) -> dict[str, float]:
    """Objects the cyclic garbage collector tracks, per idle vnet (gc.get_objects(), and
    the frozen ones: the kernel's collector policy may have frozen some)."""
    kernel = Kernel(clock="virtual", seed=1)
    gc.collect()
    before = len(gc.get_objects()) + gc.get_freeze_count()
    vnets = [kernel.create(f"t{i}") for i in range(n)]
    gc.collect()
    after = len(gc.get_objects()) + gc.get_freeze_count()
    assert len(vnets) == n
    _release(kernel)
    return {"vnets": n, "tracked_objects_per_vnet": (after - before) / n}


def _release(kernel: Kernel) -> None:
    """Destroy every vnet of `kernel`: its collector policy thaws what it froze, so the
    next measurement starts with nothing frozen."""
    for vnet in kernel.vnets():
        if vnet.alive:
            kernel.destroy(vnet)


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
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="vnet counts for the create() / create_many scaling table "
                        "(comma-separated; empty: none)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: -n 2000, --sizes 200,2000, --linux-n 0")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.sizes, args.linux_n = min(args.n, 2000), "200,2000", 0
    try:
        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes: not a comma-separated list of counts: {args.sizes!r}")
    if any(size <= 0 for size in sizes) or args.n <= 0:
        parser.error("vnet counts must be positive")
    modes = ("on", "off", "bulk") if args.collector == "all" else (args.collector,)
    rates = {mode: create_destroy_rate(args.n, mode) for mode in modes}
    rate = rates[modes[0]]
    linux = linux_netns_rate(args.linux_n)
    result = {
        "benchmark": "vnets",
        "rate": rate,
        "rates_by_collector": rates,
        "scaling": scaling(sizes) if sizes else {"skipped": "no --sizes"},
        "linux_netns": linux,
        "memory": memory_per_vnet(min(args.n, 5000)),
        "tracked": tracked_per_vnet(min(args.n, 2000)),
        "targets": {"create_per_cpu_s": 40000, "bytes_per_vnet": 5 * 1024,
                    "flatness_create_create": 0.8},
    }
    if "create_per_s" in linux:
        result["ratio_create_vimage_to_linux"] = rate["create_per_s"] / float(
            linux["create_per_s"])  # type: ignore[arg-type]
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
