"""UDP datagrams per CPU second through one router with the socket API.

Host `a` sends with `sendto()` (unconnected) or `send()` (connected) to host `b`
through one router; `b` receives with `recv()` / `recvfrom()`. One thread drives
the kernel in virtual time: in `lockstep` each datagram is sent, then received (the
blocking receive runs the kernel loop); in `batch` a burst is sent, then received.
Every figure is CPU time (time.process_time), so the machine's load matters less.
The stdlib's own UDP sockets on localhost give the floor of the same calls on a
real kernel (`stdlib_localhost`). Writes JSON.
"""

from __future__ import annotations

import argparse
import socket
import time

from _report import report
from vimage.kernel import Kernel
from vimage.socket.socket import SOCK_DGRAM
from vimage.topo import link_prefix, router_chain


def _pair(connected: bool) -> tuple[object, object, tuple[str, int], Kernel]:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = router_chain(kernel, 1)
    dst = (f"{link_prefix(1)}.2", 9)
    rx = nodes[-1].socket(2, SOCK_DGRAM)
    rx.bind(("", 9))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 26)
    tx = nodes[0].socket(2, SOCK_DGRAM)
    if connected:
        tx.connect(dst)
    tx.sendto(b"warm", dst) if not connected else tx.send(b"warm")
    rx.recv(2048)  # ARP resolved everywhere
    return tx, rx, dst, kernel


def vimage_udp(count: int, size: int, mode: str, connected: bool) -> dict[str, object]:
    tx, rx, dst, kernel = _pair(connected)
    data = b"x" * size
    send = tx.send if connected else (lambda d: tx.sendto(d, dst))  # type: ignore[attr-defined]
    recvfrom = rx.recvfrom  # type: ignore[attr-defined]
    got = 0
    t0 = time.process_time()
    if mode == "lockstep":
        for _ in range(count):
            send(data)
            got += len(recvfrom(2048)[0])
    else:
        burst = 100
        for _ in range(count // burst):
            for _ in range(burst):
                send(data)
            kernel.run(0)
            for _ in range(burst):
                got += len(recvfrom(2048)[0])
    cpu = time.process_time() - t0
    done = got // size
    return {"mode": mode, "connected": connected, "datagrams": done, "cpu_seconds": cpu,
            "datagrams_per_cpu_s": done / cpu, "us_per_datagram": cpu / done * 1e6}


def stdlib_udp(count: int, size: int) -> dict[str, object]:
    """The same lockstep loop over the host's UDP on 127.0.0.1 (two real syscalls each)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        dst = rx.getsockname()
        data = b"x" * size
        t0 = time.process_time()
        for _ in range(count):
            tx.sendto(data, dst)
            rx.recvfrom(2048)
        cpu = time.process_time() - t0
    finally:
        rx.close()
        tx.close()
    return {"datagrams": count, "cpu_seconds": cpu, "datagrams_per_cpu_s": count / cpu,
            "us_per_datagram": cpu / count * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    runs = [vimage_udp(args.count, args.size, mode, connected)
            for mode in ("lockstep", "batch") for connected in (False, True)]
    result = {
        "benchmark": "udp",
        "topology": "host a - router - host b (epairs), virtual time, one thread",
        "size": args.size,
        "vimage": runs,
        "stdlib_localhost": stdlib_udp(args.count, args.size),
        "targets": {"datagrams_per_cpu_s": 80000},
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
