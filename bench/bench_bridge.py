"""Frames per second through a learning bridge (learnt unicast) vs a plain epair hop.

Two topologies in one kernel run, virtual clock, same frame:
  plain:   a --epair-- b                       (frames queued at b's end of the cable)
  bridged: a --epair-- [bridge0 in sw] --epair-- b
                                               (frames queued at sw's end of a's cable:
                                                they enter bridge0, which has learnt b's
                                                address, and leave by exactly one port)
Both end at b's UDP socket, so the difference is the bridge's cost per frame. The frame
is the real one `a` emits for a UDP datagram (ARP resolved and addresses learnt first).
Every frame is queued at one virtual instant, so the bridge's per-tick bound is set
above the count (it bounds loops, not traffic). Each topology runs `--repeat` times,
interleaved, and the run with the least CPU time is kept (the machine may be shared);
rates are per CPU second and per wall second.

Then bulk TCP (`--tcp-mb`, best of `--repeat`) over the plain epair, from an address on
a bridge interface (bridge0 in a, the epair its member: the bridge's own output) and
over a VLAN on both ends of the epair: what checksum offload and TSO through a bridge
or a VLAN save. Writes JSON.
"""

from __future__ import annotations

import argparse
import time

from _bulk import best_of, big_buffers, move, rates, tcp_pair
from _report import report
from vimage.kernel import Kernel
from vimage.net.if_bridge import Bridge
from vimage.socket.socket import SOCK_DGRAM
from vimage.vnet import Vnet


def _cmd(vnet: Vnet, line: str) -> None:
    res = vnet.cmd(line)
    if res.status != 0:
        raise RuntimeError(f"{line}: {res.output}")


def _frame_from_a(kernel: Kernel, a: Vnet, b: Vnet, size: int) -> tuple[bytes, object]:
    """The exact frame `a` sends for a UDP datagram to b (after ARP), and b's socket."""
    rx = b.socket(2, SOCK_DGRAM)
    rx.bind(("", 9))
    rx.setsockopt(1, 8, 1 << 26)  # SO_RCVBUF: room for every datagram of the run
    tx = a.socket(2, SOCK_DGRAM)
    tx.sendto(b"x", ("10.0.0.2", 9))
    kernel.run(1)
    rx.recv(100)
    out = a.ifaces["epair0b"] if "epair0b" in a.ifaces else next(
        i for i in a.ifaces.values() if i.kind == "epair")
    captured: list[bytes] = []

    class Capture:
        def input(self, frame: bytes) -> None:
            captured.append(frame)

    peer = out.peer
    out.peer = Capture()  # type: ignore[assignment]
    tx.sendto(b"y" * size, ("10.0.0.2", 9))
    kernel.run(0)
    out.peer = peer
    tx.close()
    return captured[0], rx


def _blast(kernel: Kernel, receiver: object, frame: bytes, frames: int, b: Vnet) -> dict:
    queue = kernel.sched.queue
    before = b.udp.stats.delivered
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(frames):
        queue.append((receiver, frame))
    kernel.run(0)
    cpu = time.process_time() - c0
    elapsed = time.perf_counter() - t0
    delivered = b.udp.stats.delivered - before
    return {"frames": frames, "delivered_at_b": delivered, "seconds": elapsed,
            "cpu_seconds": cpu, "frames_per_s": delivered / elapsed,
            "frames_per_cpu_s": delivered / cpu if cpu else 0.0,
            "cpu_us_per_frame": cpu / max(1, delivered) * 1e6}


def plain(frames: int, size: int) -> dict:
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    _ea, eb = kernel.epair(a)
    eb.move_to(b)
    _cmd(a, "ifconfig epair0a 10.0.0.1/24 up")
    _cmd(b, "ifconfig epair0b 10.0.0.2/24 up")
    frame, _rx = _frame_from_a(kernel, a, b, size)
    result = _blast(kernel, eb, frame, frames, b)
    result["frame_bytes"] = len(frame)
    return result


def bridged(frames: int, size: int) -> dict:
    kernel = Kernel(clock="virtual", seed=1)
    a, sw, b = kernel.create("a"), kernel.create("sw"), kernel.create("b")
    ends = []
    for host, addr in ((a, "10.0.0.1/24"), (b, "10.0.0.2/24")):
        s_end, h_end = kernel.epair(sw)
        h_end.move_to(host)
        _cmd(host, f"ifconfig {h_end.name} {addr} up")
        _cmd(sw, f"ifconfig {s_end.name} up")
        ends.append(s_end)
    _cmd(sw, f"ifconfig bridge create addm {ends[0].name} addm {ends[1].name} up")
    br = sw.ifaces["bridge0"]
    assert isinstance(br, Bridge)
    br.max_per_tick = frames + 1000
    frame, _rx = _frame_from_a(kernel, a, b, size)
    fwd_before = br.ipackets
    third_before = ends[0].opackets  # nothing goes back out of a's port
    result = _blast(kernel, ends[0], frame, frames, b)
    result["bridge_forwarded"] = br.ipackets - fwd_before
    result["sent_back_to_source_port"] = ends[0].opackets - third_before
    result["cache_entries"] = len(br.rt)
    result["frame_bytes"] = len(frame)
    return result


TCP_PATHS = ("plain", "bridge", "vlan")


def tcp_transfer(path: str, size: int) -> dict[str, object]:
    """Bulk TCP a -> b over `path`, virtual clock."""
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    ea, eb = kernel.epair(a)
    eb.move_to(b)
    big_buffers((a, b))
    if path == "plain":
        _cmd(a, f"ifconfig {ea.name} 10.0.0.1/24 up")
        _cmd(b, f"ifconfig {eb.name} 10.0.0.2/24 up")
    elif path == "bridge":
        _cmd(a, f"ifconfig {ea.name} up")
        _cmd(a, f"ifconfig bridge create addm {ea.name} 10.0.0.1/24 up")
        _cmd(b, f"ifconfig {eb.name} 10.0.0.2/24 up")
    else:
        for v, end, addr in ((a, ea, "10.0.0.1/24"), (b, eb, "10.0.0.2/24")):
            _cmd(v, f"ifconfig {end.name} up")
            _cmd(v, f"ifconfig {end.name}.10 create")
            _cmd(v, f"ifconfig {end.name}.10 {addr} up")
    kernel.run(1)
    cli, conn = tcp_pair(a, b, "10.0.0.2")
    wall, cpu = move(cli, conn, size)
    return {"path": path, "bytes": size, **rates(size, wall, cpu),
            "frames_on_the_epair": ea.opackets, "errors": kernel.sched.errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=50000)
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each, interleaved; the fastest (least CPU) is kept")
    parser.add_argument("--tcp-mb", type=float, default=10.0,
                        help="megabytes per bulk TCP transfer (0: none)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    runs_p, runs_b = [], []
    for _ in range(max(1, args.repeat)):  # interleaved, so both see the same machine load
        runs_p.append(plain(args.frames, args.size))
        runs_b.append(bridged(args.frames, args.size))
    p = min(runs_p, key=lambda r: r["cpu_seconds"])
    br = min(runs_b, key=lambda r: r["cpu_seconds"])
    result = {
        "benchmark": "bridge", "clock": "virtual",
        "plain_epair_hop": p, "bridge_learnt_unicast": br,
        "repeat": args.repeat,
        "bridge_vs_plain_ratio": br["frames_per_cpu_s"] / p["frames_per_cpu_s"],
        "bridge_added_cpu_us_per_frame": br["cpu_us_per_frame"] - p["cpu_us_per_frame"],
    }
    if args.tcp_mb > 0:
        size = int(args.tcp_mb * 1e6)
        result["tcp"] = best_of(TCP_PATHS, max(1, args.repeat),
                                lambda path: tcp_transfer(path, size))
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
