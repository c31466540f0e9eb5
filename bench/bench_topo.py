"""Experiment scale: a grid of k x k routers, each with a host, up and down in one kernel.

Each router links to its right and lower neighbours and to its own host; addresses are
IMUNES's automatic ones and hosts get automatic default routes (docs/emulator.md). The
run reports CPU and wall time of `Experiment.up()` and `down()`, memory per node
(tracemalloc, on a smaller grid), and, with root and iproute2, the time Linux network
namespaces take for the first `--linux-nodes` nodes of the same topology (namespaces,
veth pairs, addresses, `ip -batch`), side by side; that part is skipped with its reason
otherwise.

The RIP part (`--rip-nodes`, default 1000): a 7 x 7 grid of backbone routers, each with
a fan of stub routers, every router running routed (`model: rip`), brought up with
`Experiment.up()` in virtual time and then waited for with `wait_converged()` (every
router has a route to every subnet); it reports the wall and CPU seconds and the virtual
seconds to convergence. A plain grid or ring of 1,000 routers cannot converge in that
sense: RIP's infinity is 16 (RFC 2453 3.4.2), so a route reaches 15 hops, and the
backbone side 7 keeps every subnet within 1 + 12 + 1 hops of every router. 1,000 asked
for are 1,029 routers (rounded up) and 1,064 subnets; the experiment sizes routed's table
(-P max_routes) to the topology, as the default limit is 1,024 learnt routes.

Writes JSON (to stdout and, with --out, to a file). Run: python bench/bench_topo.py
"""

from __future__ import annotations

import argparse
import gc
import math
import subprocess
import time
import tracemalloc

from _report import report
from vimage.emu import address
from vimage.emu.experiment import Experiment
from vimage.emu.model import Topology
from vimage.kernel import Kernel

LINUX_PREFIX = "vimgtopo"


def grid(k: int) -> Topology:
    """k*k routers r_I_J in a grid, each with host h_I_J: 2k^2 nodes, k^2 + 2k(k-1) links."""
    topo = Topology(name="grid", auto_address=True)
    for i in range(k):
        for j in range(k):
            topo.add_node(f"r{i}_{j}", "router")
            host = topo.add_node(f"h{i}_{j}", "host")
            host.auto_default_routes = True
    for i in range(k):
        for j in range(k):
            topo.connect(f"h{i}_{j}", f"r{i}_{j}")
            if j + 1 < k:
                topo.connect(f"r{i}_{j}", f"r{i}_{j + 1}")
            if i + 1 < k:
                topo.connect(f"r{i}_{j}", f"r{i + 1}_{j}")
    return topo.check()


RIP_SIDE = 7  # backbone grid side: diameter 12, stub to stub 14 hops (RIP reaches 15)


def rip_grid(n: int) -> Topology:
    """At least n RIP routers (1,029 for 1,000): a RIP_SIDE x RIP_SIDE grid b_I_J, each
    with a fan of stub routers s_I_J_K."""
    side_ = min(RIP_SIDE, max(1, math.isqrt(n)))
    stubs = max(0, -(-n // side_**2) - 1)
    topo = Topology(name="ripgrid", auto_address=True)
    for i in range(side_):
        for j in range(side_):
            topo.add_node(f"b{i}_{j}", "router", routing=("rip",))
            for s in range(stubs):
                topo.add_node(f"s{i}_{j}_{s}", "router", routing=("rip",))
                topo.connect(f"b{i}_{j}", f"s{i}_{j}_{s}")
    for i in range(side_):
        for j in range(side_):
            if j + 1 < side_:
                topo.connect(f"b{i}_{j}", f"b{i}_{j + 1}")
            if i + 1 < side_:
                topo.connect(f"b{i}_{j}", f"b{i + 1}_{j}")
    return topo.check()


def rip_converge(n: int, timeout: float) -> dict[str, object]:
    """Bring the RIP grid up, then wait (virtual time) until every router reaches every
    subnet; wall, CPU and virtual seconds of each part."""
    topo = rip_grid(n)
    kernel = Kernel(clock="virtual", seed=1)
    exp = Experiment(topo, kernel)
    up_cpu, up_wall = _timed(exp.up)
    start = kernel.sched.now_ns()
    done: list[bool] = []
    cpu, wall = _timed(lambda: done.append(exp.wait_converged(timeout)))
    virtual = (kernel.sched.now_ns() - start) / 1e9
    routes = min(len(v.rt) for v in exp.nodes.values()) if done[0] else None
    down_cpu, down_wall = _timed(exp.down)
    return {"routers": len(topo.nodes), "subnets": len(topo.links), "converged": done[0],
            "up_cpu_s": round(up_cpu, 3), "up_wall_s": round(up_wall, 3),
            "converge_cpu_s": round(cpu, 3), "converge_wall_s": round(wall, 3),
            "converge_virtual_s": round(virtual, 3), "fewest_routes": routes,
            "down_wall_s": round(down_wall, 3), "down_cpu_s": round(down_cpu, 3),
            "vnets_left": len(kernel.vnets())}


def side(nodes: int) -> int:
    """The grid side whose 2k^2 nodes come closest to `nodes`."""
    return max(1, round(math.sqrt(nodes / 2)))


def _timed(func) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    func()
    return time.process_time() - c0, time.perf_counter() - w0


def up_down(k: int, timers: int) -> dict[str, object]:
    topo = grid(k)
    kernel = Kernel(clock="virtual", seed=1)
    exp = Experiment(topo, kernel)
    up_cpu, up_wall = _timed(exp.up)
    for vnet in exp.nodes.values():  # what routing daemons and IPv6 ND arm in every node
        for t in range(timers):
            kernel.sched.call_later((t + 1) * 10**9, _tick, owner=vnet)
    vnets = len(kernel.vnets())
    ping = exp.node("h0_0").cmd(f"ping -c 1 {_first_addr(exp, 'r0_0')}")  # its gateway
    down_cpu, down_wall = _timed(exp.down)
    return {"side": k, "timers_per_node": timers, "nodes": len(topo.nodes),
            "links": len(topo.links), "vnets": vnets,
            "up_cpu_s": round(up_cpu, 3), "up_wall_s": round(up_wall, 3),
            "down_cpu_s": round(down_cpu, 3), "down_wall_s": round(down_wall, 3),
            "host_to_router_ping_ok": ping.ok, "vnets_left": len(kernel.vnets()),
            "timers_left": kernel.sched.pending_timers()}


def _tick() -> None:
    return None


def _first_addr(exp: Experiment, node: str) -> str:
    """Node's first IPv4 address as the experiment assigned it (automatic addressing)."""
    topo = address.auto_assign(exp.topology, True, False)
    return next(a for i in topo.nodes[node].interfaces.values() for a in i.ipv4).partition("/")[0]


def memory_per_node(k: int) -> dict[str, object]:
    topo = grid(k)
    kernel = Kernel(clock="virtual", seed=1)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    exp = Experiment(topo, kernel).up()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    exp.down()
    return {"nodes": len(topo.nodes), "links": len(topo.links),
            "bytes_per_node": round((after - before) / len(topo.nodes))}


# -- the same topology in Linux network namespaces --------------------------------------------
def linux_available() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.strip()}"
    return None


def linux_batches(topo: Topology, limit: int
                  ) -> tuple[list[str], str, dict[str, str], str]:
    """For the first `limit` nodes: (namespace names, `ip -batch` text making the namespaces
    and veth pairs, per namespace the `ip -n NS -batch` text configuring it, the text
    deleting them). Batch lines take no -n, hence one batch per namespace."""
    topo = address.auto_assign(topo, True, False)
    chosen = list(topo.nodes)[:limit]
    ns = {name: f"{LINUX_PREFIX}-{name}" for name in chosen}
    build = [f"netns add {ns[n]}" for n in chosen]
    inside: dict[str, list[str]] = {ns[n]: ["link set lo up"] for n in chosen}
    for index, link in enumerate(topo.links):
        (na, ia), (nb, ib) = link.a, link.b
        if na not in ns or nb not in ns:
            continue
        left, right = f"vt{index}a", f"vt{index}b"
        build.append(f"link add {left} netns {ns[na]} type veth peer name {right} netns {ns[nb]}")
        for node, ifname, dev in ((na, ia, left), (nb, ib, right)):
            for cidr in topo.nodes[node].interfaces[ifname].ipv4:
                inside[ns[node]].append(f"addr add {cidr} dev {dev}")
            inside[ns[node]].append(f"link set {dev} up")
    delete = [f"netns del {ns[n]}" for n in chosen]
    return (list(ns.values()), "\n".join(build) + "\n",
            {name: "\n".join(lines) + "\n" for name, lines in inside.items()},
            "\n".join(delete) + "\n")


def linux_run(topo: Topology, limit: int) -> dict[str, object]:
    reason = linux_available() if limit > 0 else "not asked for (--linux-nodes 0)"
    if reason:
        return {"skipped": reason}
    names, build, inside, delete = linux_batches(topo, limit)
    subprocess.run(["ip", "-force", "-batch", "-"], input=delete, text=True,
                   capture_output=True)  # leftovers of an interrupted run
    t0 = time.perf_counter()
    try:
        subprocess.run(["ip", "-batch", "-"], input=build, text=True, check=True,
                       capture_output=True)
        for name, text in inside.items():
            subprocess.run(["ip", "-n", name, "-batch", "-"], input=text, text=True,
                           check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        return {"skipped": f"ip failed: {exc.stderr.strip()}"}
    finally:
        t1 = time.perf_counter()
        subprocess.run(["ip", "-force", "-batch", "-"], input=delete, text=True,
                       capture_output=True)
        t2 = time.perf_counter()
    return {"nodes": len(names), "links": build.count("\nlink add ") + build.startswith(
        "link add "), "up_wall_s": round(t1 - t0, 3), "down_wall_s": round(t2 - t1, 3),
        "note": "netns del returns before the kernel has cleaned the namespaces up"}


def vimage_first(topo: Topology, limit: int) -> dict[str, object]:
    """vimage on the same first `limit` nodes (the links among them), for the comparison."""
    part = Topology(name="part", auto_address=True)
    full = address.auto_assign(topo, True, False)
    chosen = list(full.nodes)[:limit]
    for name in chosen:
        part.nodes[name] = full.nodes[name]
    part.links = [link for link in full.links if link.a[0] in part.nodes
                  and link.b[0] in part.nodes]
    part.nodes = {n: _only_linked(part, node) for n, node in part.nodes.items()}
    kernel = Kernel(clock="virtual", seed=1)
    exp = Experiment(part.check(), kernel)
    _cpu, up_wall = _timed(exp.up)
    _cpu, down_wall = _timed(exp.down)
    return {"nodes": len(part.nodes), "links": len(part.links),
            "up_wall_s": round(up_wall, 3), "down_wall_s": round(down_wall, 3)}


def _only_linked(topo: Topology, node):  # type: ignore[no-untyped-def]
    import copy

    linked = {i for link in topo.links for n, i in (link.a, link.b) if n == node.name}
    node = copy.deepcopy(node)
    node.interfaces = {n: i for n, i in node.interfaces.items() if n in linked}
    node.auto_default_routes = False
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--nodes", type=int, default=10000,
                        help="nodes in the grid (routers and hosts; default 10000)")
    parser.add_argument("--memory-nodes", type=int, default=2000,
                        help="nodes of the grid measured with tracemalloc (default 2000)")
    parser.add_argument("--linux-nodes", type=int, default=500,
                        help="first nodes built as Linux namespaces (needs root; 0: skip)")
    parser.add_argument("--timers-per-node", type=int, default=2,
                        help="timers armed in each node before down (default 2: the periodic "
                             "timers a routing daemon or IPv6 keeps)")
    parser.add_argument("--rip-nodes", type=int, default=1000,
                        help="RIP routers converging in virtual time (default 1000; 0: skip)")
    parser.add_argument("--rip-timeout", type=float, default=600.0,
                        help="virtual seconds the RIP part waits for convergence (default 600)")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    k = side(args.nodes)
    result: dict[str, object] = {
        "benchmark": "topo",
        "grid": up_down(k, args.timers_per_node),
        "memory": memory_per_node(side(args.memory_nodes)),
        "targets": {"nodes": 10000, "up_s": 10, "down_s": 5},
    }
    if args.rip_nodes > 0:
        result["rip"] = rip_converge(args.rip_nodes, args.rip_timeout)
    linux = linux_run(grid(k), args.linux_nodes)
    comparison: dict[str, object] = {"linux_netns": linux}
    if "skipped" not in linux:
        comparison["vimage"] = vimage_first(grid(k), args.linux_nodes)
    result["first_nodes"] = comparison
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
