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
import time
from pathlib import Path

from _report import report
from vimage.kernel import Kernel
from vimage.socket.socket import IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW, Socket
from vimage.topo import link_prefix, router_chain
from vimage.wire import icmp as wicmp

_HERE = Path(__file__).resolve().parent


def _first_frame(kernel: Kernel, nodes: list, size: int) -> tuple[bytes, Socket]:
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
    return captured[0], rx  # the caller keeps the receiving socket open


def forwarding(routers: int, packets: int, size: int) -> dict[str, float]:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = router_chain(kernel, routers)
    frame, _sink = _first_frame(kernel, nodes, size)
    first_in = nodes[1].ifaces["epair0b"]
    queue = kernel.sched.queue
    before = sum(n.ip.stats.forward for n in nodes)
    delivered_before = nodes[-1].udp.stats.delivered
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(packets):
        queue.append((first_in, frame))
    kernel.run(0)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0  # what a loaded machine does not distort
    forwarded = sum(n.ip.stats.forward for n in nodes) - before
    delivered = nodes[-1].udp.stats.delivered - delivered_before
    return {
        "routers": routers, "packets": packets, "frame_bytes": len(frame),
        "forwarded": forwarded, "delivered_at_b": delivered, "seconds": elapsed,
        "forwarded_per_s": forwarded / elapsed,
        "cpu_seconds": cpu, "forwarded_per_cpu_s": forwarded / cpu,
    }


def echo_rtts(sock, dst: str, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Round trips in µs of `count` ICMP echoes over a raw socket (vimage's or the host's)."""
    rtts = []
    for seq in range(count + 1):
        t0 = time.perf_counter()
        sock.sendto(wicmp.build_echo(wicmp.ECHO, 1, seq, b"\x00" * 56), (dst, 0))
        while True:
            reply = sock.recv(2000)
            if reply[20] == wicmp.ECHO_REPLY and int.from_bytes(reply[26:28], "big") == seq:
                break
        if seq:  # the first one resolves ARP along the way
            rtts.append((time.perf_counter() - t0) * 1e6)
    return rtts


def _summary(rtts: list[float], routers: int) -> dict[str, float]:
    return {"rtt_us_min": min(rtts), "rtt_us_median": statistics.median(rtts),
            "rtt_us_max": max(rtts),
            "rtt_us_per_hop": statistics.median(rtts) / (2 * (routers + 1))}


def ping_rtt(routers: int, count: int, with_linux: bool = True) -> dict[str, object]:
    kernel = Kernel(clock="real", seed=1)
    nodes = router_chain(kernel, routers)
    dst = f"{link_prefix(len(nodes) - 2)}.2"
    sock = nodes[0].socket(2, SOCK_RAW, IPPROTO_ICMP)
    sock.settimeout(5)
    result: dict[str, object] = {"routers": routers, "count": count,
                                 "vimage": _summary(echo_rtts(sock, dst, count), routers)}
    result["linux_netns"] = linux_rtt(routers, count, dst) if with_linux else {
        "skipped": "not asked for (--no-linux)"}
    linux = result["linux_netns"]
    if isinstance(linux, dict) and "rtt_us_median" in linux:
        vimage_median = result["vimage"]["rtt_us_median"]  # type: ignore[index]
        result["ratio_vimage_to_linux"] = vimage_median / linux["rtt_us_median"]
    return result


def linux_rtt(routers: int, count: int, dst: str) -> dict[str, object]:
    """The same pings, same client code, through Linux namespaces and veth."""
    import linux_chain

    reason = linux_chain.available()
    if reason:
        return {"skipped": reason}
    nodes = linux_chain.build(routers)
    try:
        code = (
            "import json, socket, sys\n"
            f"sys.path[:0] = {[str(p) for p in (_HERE, _HERE.parent / 'src')]!r}\n"
            "from bench_forward import echo_rtts\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
            "s.settimeout(5)\n"
            f"print(json.dumps(echo_rtts(s, {dst!r}, {count})))\n"
        )
        rtts = json.loads(linux_chain.run_in(nodes[0], code))
    finally:
        linux_chain.teardown(routers)
    return _summary(rtts, routers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--no-linux", action="store_true",
                        help="skip the Linux namespace comparison")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result = {
        "benchmark": "forward",
        "forwarding": forwarding(args.routers, args.packets, args.size),
        "ping": ping_rtt(args.routers, args.pings, not args.no_linux),
        "targets": {"forwarded_per_s": 400000},  # issue 16
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
