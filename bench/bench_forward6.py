"""IPv6 forwarding beside IPv4 in the same run: packets per second through a chain of
router vnets carrying both families.

Host `a` sends one packet of each family to host `b` (resolving ARP and ND on every
hop), the exact frame it emits next is captured, then queued N times at the first
router: the kernel loop forwards every copy through the chain. IPv4 carries UDP to a
bound socket; IPv6 carries a packet with no next header (59), which `b` consumes.
Writes JSON: per family, forwarded packets per wall second and per CPU second (the
steadier figure on a shared machine), and the IPv6 / IPv4 cost ratio per CPU second.
"""

from __future__ import annotations

import argparse
import json
import time
from socket import AF_INET6

from vimage.kernel import Kernel
from vimage.vnet import Vnet
from vimage.wire import ipv6 as wip6


def chain(kernel: Kernel, routers: int) -> list[Vnet]:
    """a, r1..rN, b: link i is 10.0.i.0/24 and 2001:db8:i::/64; routes toward b only."""
    nodes = [kernel.create(f"n{i}") for i in range(routers + 2)]
    for i in range(routers + 1):
        left, right = kernel.epair()
        left.move_to(nodes[i])
        right.move_to(nodes[i + 1])
        left.add_addr(f"10.0.{i}.1/24")
        right.add_addr(f"10.0.{i}.2/24")
        left.add_addr(f"2001:db8:{i}::1/64", family=AF_INET6)
        right.add_addr(f"2001:db8:{i}::2/64", family=AF_INET6)
        left.set_up(True)
        right.set_up(True)
    kernel.run(2)  # DAD
    for i, node in enumerate(nodes[:-1]):
        assert node.cmd(f"route add default 10.0.{i}.2").ok
        assert node.cmd(f"route -6 add default 2001:db8:{i}::2").ok
        if i:
            node.sysctl("net.inet.ip.forwarding", 1)
            node.sysctl("net.inet6.ip6.forwarding", 1)
    return nodes


def capture(kernel: Kernel, a: Vnet, send) -> bytes:  # type: ignore[no-untyped-def]
    out = a.ifaces["epair0a"]
    send()
    kernel.run(1)  # resolution on every hop
    got: list[bytes] = []

    class Tap:
        def input(self, frame: bytes) -> None:
            got.append(frame)

    peer, out.peer = out.peer, Tap()
    send()
    kernel.run(0)
    out.peer = peer
    return got[0]


def run(routers: int, packets: int, size: int) -> dict[str, object]:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = chain(kernel, routers)
    a, b = nodes[0], nodes[-1]
    last = routers
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    rx.setsockopt(1, 8, 1 << 26)
    tx = a.socket(2, 2)
    v4 = capture(kernel, a, lambda: tx.sendto(b"y" * size, (f"10.0.{last}.2", 9)))
    dst6 = wip6.aton(f"2001:db8:{last}::2")

    def send6() -> None:
        with kernel.sched.cond:
            a.ip6.output(wip6.NXT_NONE, None, dst6, b"y" * (size + 8))

    v6 = capture(kernel, a, send6)
    first_in = nodes[1].ifaces["epair0b"]
    out: dict[str, object] = {"routers": routers, "packets": packets,
                              "frame_bytes": {"ipv4": len(v4), "ipv6": len(v6)}}
    rates = {}
    for name, frame, stat in (("ipv4", v4, "ip"), ("ipv6", v6, "ip6")):
        before = sum(getattr(n, stat).stats.forward for n in nodes)
        queue = kernel.sched.queue
        t0 = time.perf_counter()
        c0 = time.process_time()
        queue.extend((first_in, frame) for _ in range(packets))
        kernel.run(0)
        cpu = time.process_time() - c0
        elapsed = time.perf_counter() - t0
        forwarded = sum(getattr(n, stat).stats.forward for n in nodes) - before
        assert forwarded == packets * routers, (name, forwarded)
        rates[name] = packets * routers / cpu if cpu else 0.0
        out[name] = {"forwarded": forwarded, "hops_per_s": round(packets * routers / elapsed),
                     "hops_per_cpu_s": round(rates[name])}
    out["ipv6_cost_over_ipv4"] = round(rates["ipv4"] / rates["ipv6"] - 1, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=8)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.routers, args.packets, args.size), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
