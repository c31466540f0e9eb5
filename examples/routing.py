"""The seed's routing example in Python: routers exchanging routes with RIP.

    pc1 --- r1 ----- r2 --- pc2        four routers in a ring, joined by shaped
            |        |                 point-to-point links (vlink: 10 Mbit/s, 5 ms);
            r4 ----- r3                two end hosts on 100 Mbit/s, 1 ms links

Run: `python examples/routing.py` (virtual time: a few seconds of CPU for minutes of
network time). First run: `routed` starts on every router, RIP converges, pc1 pings
and traces pc2 (through r1, r2). Second run: the r1-r2 cable is cut (vlink loss 100%,
no interface goes down); after RIP's 180 s timeout r1 routes around through r4 and r3,
and the trace shows the longer path.
"""

from __future__ import annotations

import sys

from vimage.kernel import Kernel
from vimage.topo import connect
from vimage.vnet import Vnet

FAST = "bw 10Mbit/s delay 5ms"
ACCESS = "bw 100Mbit/s delay 1ms"


def run(vnet: Vnet, line: str, show: bool = True) -> str:
    res = vnet.cmd(line)
    if show:
        print(f"{vnet.name}# {line}")
        print(res.output, end="" if res.output.endswith("\n") or not res.output else "\n")
    if not res.ok:
        raise SystemExit(f"{vnet.name}: '{line}' failed with status {res.status}")
    return res.output


def link(a: Vnet, a_cidr: str, b: Vnet, b_cidr: str, shape: str) -> tuple[str, str]:
    """An epair between a and b, both ends shaped (vlink acts on what an end sends)."""
    ea, eb = connect(a, a_cidr, b, b_cidr)
    run(a, f"vlink {ea.name} {shape}", show=False)
    run(b, f"vlink {eb.name} {shape}", show=False)
    return ea.name, eb.name


def build(kernel: Kernel) -> tuple[dict[str, Vnet], tuple[str, str]]:
    """The ring and its hosts; returns the nodes and the ends of the r1-r2 cable."""
    nodes = {name: kernel.create(name) for name in ("pc1", "pc2", "r1", "r2", "r3", "r4")}
    r1, r2, r3, r4 = (nodes[f"r{i}"] for i in range(1, 5))
    link(nodes["pc1"], "10.1.0.20/24", r1, "10.1.0.1/24", ACCESS)
    link(nodes["pc2"], "10.2.0.20/24", r2, "10.2.0.1/24", ACCESS)
    cut = link(r1, "10.0.12.1/24", r2, "10.0.12.2/24", FAST)
    link(r2, "10.0.23.2/24", r3, "10.0.23.3/24", FAST)
    link(r3, "10.0.34.3/24", r4, "10.0.34.4/24", FAST)
    link(r4, "10.0.41.4/24", r1, "10.0.41.1/24", FAST)
    run(nodes["pc1"], "route add default 10.1.0.1", show=False)
    run(nodes["pc2"], "route add default 10.2.0.1", show=False)
    for r in (r1, r2, r3, r4):
        run(r, "sysctl net.inet.ip.forwarding=1", show=False)
        run(r, "routed -s")
    return nodes, cut


def main() -> int:
    kernel = Kernel(clock="virtual", seed=1)
    nodes, (a_end, b_end) = build(kernel)
    pc1, r1, r2 = nodes["pc1"], nodes["r1"], nodes["r2"]
    kernel.run(10)
    print("# first run: RIP has converged")
    run(r1, "netstat -rn -f inet")
    run(r1, "rtquery -n 10.0.12.2")
    run(pc1, "ping -c 3 10.2.0.20")
    run(pc1, "traceroute -n -q 1 10.2.0.20")
    print("# second run: the r1-r2 cable is cut")
    run(r1, f"vlink {a_end} loss 100%")
    run(r2, f"vlink {b_end} loss 100%")
    start = kernel.now
    kernel.run(220)
    print(f"# {kernel.now - start:.0f} s later (RIP's timeout is 180 s)")
    run(r1, "netstat -rn -f inet")
    run(pc1, "ping -c 3 10.2.0.20")
    hops = run(pc1, "traceroute -n -q 1 10.2.0.20")
    return 0 if "10.0.41.4" in hops else 1


if __name__ == "__main__":
    sys.exit(main())
