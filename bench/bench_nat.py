"""Forwarded packets per second through a router vnet, without and with in-kernel NAT.

Host `a` - router `r` - host `b` (vimage.topo.router_chain with one router). The frame
`a` emits for a UDP datagram is captured once, then queued N times at the router,
which forwards every copy to `b`: first with no packet filter, then with `nat 1` on its
interface toward `b` (vimage.testing.nat_via: the ipfw rules `ipfw add 100 nat 1 ip
from any to any via IF` and `65000 allow ip from any to any`), for one flow and for many
flows (distinct source ports, one NAT link each). Also the cost of one `translate()`
call on an established flow. Writes JSON.
"""

from __future__ import annotations

import argparse
import time

from _report import report
from vimage.kernel import Kernel
from vimage.netpfil.nat import command
from vimage.socket.socket import SOCK_DGRAM
from vimage.testing import nat_via
from vimage.topo import link_prefix, router_chain


def _frames(kernel: Kernel, nodes: list, flows: int, size: int) -> tuple[list[bytes], object]:
    """The frames `a` sends for one datagram from each of `flows` source ports, and the
    socket on `b` that receives them (kept open: else `b` answers port unreachable)."""
    a, b = nodes[0], nodes[-1]
    dst = f"{link_prefix(1)}.2"
    rx = b.socket(2, SOCK_DGRAM)
    rx.bind(("", 9))
    warm = a.socket(2, SOCK_DGRAM)
    warm.sendto(b"x", (dst, 9))
    kernel.run(1)  # ARP resolved on both links
    out = a.ifaces["epair0a"]
    captured: list[bytes] = []

    class Capture:
        def input(self, frame: bytes) -> None:
            captured.append(frame)

    peer = out.peer
    out.peer = Capture()
    for i in range(flows):
        tx = a.socket(2, SOCK_DGRAM)
        tx.bind(("", 20000 + i))
        tx.sendto(b"y" * size, (dst, 9))
        tx.close()
    kernel.run(0)
    out.peer = peer
    rx.setsockopt(1, 8, 1 << 26)  # SO_RCVBUF: room for every datagram of the run
    return captured, rx


def forwarding(nat: bool, flows: int, packets: int, size: int) -> dict[str, float]:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = router_chain(kernel, 1)
    r = nodes[1]
    frames, _sink = _frames(kernel, nodes, flows, size)
    if nat:
        command(r, ["nat", "1", "config", "ip", f"{link_prefix(1)}.1"])
        nat_via(r, 1, "epair1a")
    first_in = r.ifaces["epair0b"]
    queue = kernel.sched.queue
    before = r.ip.stats.forward
    delivered_before = nodes[-1].udp.stats.delivered
    t0 = time.perf_counter()
    for i in range(packets):
        queue.append((first_in, frames[i % flows]))
    kernel.run(0)
    elapsed = time.perf_counter() - t0
    forwarded = r.ip.stats.forward - before
    result = {"nat": nat, "flows": flows, "packets": packets, "forwarded": forwarded,
              "delivered_at_b": nodes[-1].udp.stats.delivered - delivered_before,
              "seconds": elapsed, "forwarded_per_s": forwarded / elapsed}
    if nat:
        inst = r.ipfw_nat.instances[1]
        result["nat_links"] = len(inst.out)
        result["translated"] = inst.stats.translated_out
    return result


def translate_cost(calls: int) -> dict[str, float]:
    from vimage.wire import ipv4, udp

    kernel = Kernel(clock="virtual", seed=1)
    v = kernel.create("r")
    command(v, ["nat", "1", "config", "ip", "192.0.2.1"])
    src, dst = ipv4.aton("10.0.0.2"), ipv4.aton("192.0.2.7")
    pkt = ipv4.build(src, dst, 17, udp.build(5000, 53, b"q" * 64, src, dst))
    translate = v.ipfw_nat.translate
    translate(1, pkt, None, True)
    t0 = time.perf_counter()
    for _ in range(calls):
        translate(1, pkt, None, True)
    elapsed = time.perf_counter() - t0
    return {"calls": calls, "us_per_call": elapsed / calls * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result = {
        "benchmark": "nat",
        "no_filter": forwarding(False, 1, args.packets, args.size),
        "nat_one_flow": forwarding(True, 1, args.packets, args.size),
        "nat_many_flows": forwarding(True, args.flows, args.packets, args.size),
        "translate": translate_cost(args.packets),
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
