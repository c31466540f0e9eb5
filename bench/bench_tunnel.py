"""TCP throughput through gif, GRE and VXLAN tunnels against the plain link, in one run.

Two vnets joined by an epair (192.0.2.0/24); a bulk TCP transfer from a to b over the
plain link, then across each tunnel between the same vnets (inner 10.0.0.0/24),
in virtual time (no link limits: the figure is the stack's CPU cost per byte).
Reports wall and CPU seconds, Mbit/s per wall second and per CPU second (the machine
may be shared: CPU time is the steadier figure), and each path's ratio to the plain
link per CPU second. Writes JSON.
"""

from __future__ import annotations

import argparse

from _bulk import best_of, big_buffers, move, rates, tcp_pair
from _report import report
from vimage.kernel import Kernel
from vimage.topo import connect
from vimage.vnet import Vnet

PATHS = ("plain", "gif", "gre", "gre+key+seq", "vxlan")


def _setup(path: str) -> tuple[Kernel, Vnet, Vnet, str]:
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    big_buffers((a, b))
    if path == "plain":
        return kernel, a, b, "192.0.2.2"
    kind, _, opts = path.partition("+")
    # a key and a sequence number add 8 bytes to GRE's 4: as on FreeBSD, the MTU stays
    # 1476 unless lowered, and the outer packets would be fragmented
    extra = "grekey 7 enable_seq mtu 1468" if opts else ""
    for v, (here, there), me, peer in ((a, ("192.0.2.1", "192.0.2.2"), "10.0.0.1", "10.0.0.2"),
                                       (b, ("192.0.2.2", "192.0.2.1"), "10.0.0.2", "10.0.0.1")):
        if kind == "vxlan":
            cmds = [f"ifconfig vxlan create vxlanid 1 vxlanlocal {here} vxlanremote {there}",
                    f"ifconfig vxlan0 inet {me}/24 up"]
        else:
            cmds = [f"ifconfig {kind} create", f"ifconfig {kind}0 tunnel {here} {there} {extra}",
                    f"ifconfig {kind}0 inet {me} {peer}"]
        for line in cmds:
            result = v.cmd(line)
            if result.status:
                raise RuntimeError(f"{line}: {result.output}")
    kernel.run(1)
    return kernel, a, b, "10.0.0.2"


def transfer(path: str, size: int) -> dict[str, object]:
    kernel, a, b, dst = _setup(path)
    cli, conn = tcp_pair(a, b, dst)
    wall, cpu = move(cli, conn, size)
    return {"path": path, "bytes": size, **rates(size, wall, cpu),
            "segments_sent": a.tcp.stats.sndpack, "errors": kernel.sched.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=20.0, help="megabytes per transfer")
    parser.add_argument("--trials", type=int, default=3, help="best of N per path")
    parser.add_argument("-o", "--out", help="also write the JSON here")
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    runs = best_of(PATHS, args.trials, lambda path: transfer(path, size))
    report({"benchmark": "tunnel TCP throughput (virtual clock, best of "
                         f"{args.trials})", "runs": runs}, args.out)


if __name__ == "__main__":
    main()
