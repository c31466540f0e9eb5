"""RIP convergence of a ring of routers (default 100) in virtual time. Writes JSON.

Router i and router i+1 (mod n) share link i (a /24, 1 ms each way); every router runs
`routed -s` with RIP's timers (30/180/120 s) and its 1-5 s triggered-update damping.
The kernel runs in slices of 1 s of virtual time until no route has changed for 35 s
(past a regular update); `converged_at_s` is the virtual time of the last change and
`wall_s_to_converge` the wall time spent to get there. Each router then holds the 28
links 2..15 metric away (14 each way round: infinity is 16), checked.
"""

from __future__ import annotations

import argparse
import time

from _report import report
from vimage.apps.routed import RoutedService
from vimage.kernel import Kernel
from vimage.topo import connect


def ring(n: int, seed: int) -> tuple[Kernel, list]:
    kernel = Kernel(clock="virtual", seed=seed)
    routers = [kernel.create(f"r{i}") for i in range(n)]
    for i in range(n):
        a, b = routers[i], routers[(i + 1) % n]
        ends = connect(a, f"10.{i // 256}.{i % 256}.1/24", b, f"10.{i // 256}.{i % 256}.2/24")
        for end in ends:
            end.impair(delay=0.001)
    for r in routers:
        r.ip.forwarding = 1
    return kernel, routers


def expected_routes(n: int) -> int:
    """Links a router learns: those 1..14 routers away on either side, if the ring is
    big enough that no link is counted twice."""
    return min(2 * 14, n - 2)


def converge(n: int, seed: int, quiet: float = 35.0, limit: float = 600.0) -> dict[str, object]:
    kernel, routers = ring(n, seed)
    service = kernel.service(RoutedService)
    start = time.perf_counter()
    for r in routers:
        res = r.cmd("routed -s")
        assert res.ok, res.output
    daemons = [service.get(r) for r in routers]
    last, last_at, last_wall = -1, 0.0, 0.0
    while kernel.now - last_at < quiet and kernel.now < limit:
        kernel.run(1.0)
        changes = sum(d.stats["changes"] for d in daemons if d is not None)
        if changes != last:
            last, last_at, last_wall = changes, kernel.now, time.perf_counter() - start
    wall = time.perf_counter() - start
    sizes = {sum(1 for route in r.rt.routes() if route.flags & 0x2) for r in routers}
    packets = sum(d.stats["outpackets"] for d in daemons if d is not None)
    return {
        "routers": n,
        "converged_at_s": round(last_at, 3),
        "wall_s_to_converge": round(last_wall, 3),
        "wall_s_total": round(wall, 3),
        "virtual_s_run": round(kernel.now, 3),
        "route_changes": last,
        "rip_packets_sent": packets,
        "routes_per_router": sorted(sizes),
        "routes_expected": expected_routes(n),
        "ok": sizes == {expected_routes(n)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"benchmark": "rip", **converge(args.routers, args.seed)}
    report(result, args.out)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
