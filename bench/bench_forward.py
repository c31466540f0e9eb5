"""Forwarded packets per second through a chain of router vnets, and ping RTT.

The frames are the real ones: host `a` sends a UDP datagram to host `b` once to
learn the exact frame it emits and to resolve ARP everywhere; then that frame is
queued N times at the first router, and the kernel loop forwards every copy
through the whole chain (`routers` hops each). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from vimage.kernel import Kernel
from vimage.socket.socket import IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW
from vimage.topo import link_prefix, router_chain
from vimage.wire import icmp as wicmp


def _first_frame(kernel: Kernel, nodes: list, size: int) -> bytes:
    a, b = nodes[0], nodes[-1]
    dst = f"{link_prefix(len(nodes) - 2)}.2"
    rx = b.socket(2, SOCK_DGRAM)
    rx.bind(("", 9))
    tx = a.socket(2, SOCK_DGRAM)
    tx.sendto(b"x", (dst, 9))
    kernel.run(1)
    rx.recv(100)
    # capture exactly what a emits for the next datagram
    out = a.ifaces["epair0a"]
    captured: list[bytes] = []

    class Capture:
        def input(self, frame: bytes) -> None:
            captured.append(frame)

    peer = out.peer
    out.peer = Capture()
    tx.sendto(b"y" * size, (dst, 9))
    kernel.run(0)
    out.peer = peer
    rx.setsockopt(1, 8, 1 << 26)  # SO_RCVBUF: room for every datagram of the run
    return captured[0]


def forwarding(routers: int, packets: int, size: int) -> dict[str, float]:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = router_chain(kernel, routers)
    frame = _first_frame(kernel, nodes, size)
    first_in = nodes[1].ifaces["epair0b"]
    queue = kernel.sched.queue
    before = sum(n.ip.stats.forward for n in nodes)
    delivered_before = nodes[-1].udp.stats.delivered
    t0 = time.perf_counter()
    for _ in range(packets):
        queue.append((first_in, frame))
    kernel.run(0)
    elapsed = time.perf_counter() - t0
    forwarded = sum(n.ip.stats.forward for n in nodes) - before
    delivered = nodes[-1].udp.stats.delivered - delivered_before
    return {
        "routers": routers, "packets": packets, "frame_bytes": len(frame),
        "forwarded": forwarded, "delivered_at_b": delivered, "seconds": elapsed,
        "forwarded_per_s": forwarded / elapsed,
    }


def ping_rtt(routers: int, count: int) -> dict[str, float]:
    kernel = Kernel(clock="real", seed=1)
    nodes = router_chain(kernel, routers)
    a = nodes[0]
    dst = f"{link_prefix(len(nodes) - 2)}.2"
    sock = a.socket(2, SOCK_RAW, IPPROTO_ICMP)
    sock.settimeout(5)
    rtts = []
    for seq in range(count + 1):
        t0 = time.perf_counter()
        sock.sendto(wicmp.build_echo(wicmp.ECHO, 1, seq, b"\x00" * 56), (dst, 0))
        reply = sock.recv(2000)
        rtt = time.perf_counter() - t0
        assert reply[20] == wicmp.ECHO_REPLY
        if seq:  # the first one resolves ARP along the way
            rtts.append(rtt * 1e6)
    return {"routers": routers, "count": count, "rtt_us_min": min(rtts),
            "rtt_us_median": statistics.median(rtts), "rtt_us_max": max(rtts),
            "rtt_us_per_hop": statistics.median(rtts) / (2 * (routers + 1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result = {
        "benchmark": "forward",
        "python": sys.version.split()[0],
        "forwarding": forwarding(args.routers, args.packets, args.size),
        "ping": ping_rtt(args.routers, args.pings),
        "targets": {"forwarded_per_s": 200000},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
