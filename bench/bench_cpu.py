"""The cost of per-vnet CPU accounting (kern.vnet_cpu_accounting) and how much it sees.

Three workloads, each run with the accounting off and on, alternately, in one process
(process CPU time, medians): UDP frames forwarded along a chain of router vnets (a
clock read per frame: every frame changes vnet), a TCP bulk transfer between two
vnets, and UDP request/response between two asyncio tasks in two vnets (a run of the
loop per packet, two steps per round trip). With accounting on, `coverage` is the CPU
charged to all vnets over the process CPU time of the run: how much of the work the
figures see. Writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable

import vimage
from _report import report
from vimage.kernel import Kernel
from vimage.net.ifnet import move
from vimage.socket.socket import SOCK_DGRAM
from vimage.topo import link_prefix, router_chain


def _kernel(on: bool) -> Kernel:
    kernel = Kernel(clock="virtual", seed=1)
    kernel.cpu_accounting = int(on)
    return kernel


def _charged(kernel: Kernel) -> int:
    return sum(v.cpu.total_ns() for v in (kernel.base, *kernel.vnets()))


def forwarding(on: bool, routers: int, packets: int) -> tuple[float, int]:
    kernel = _kernel(on)
    nodes = router_chain(kernel, routers)
    dst = f"{link_prefix(len(nodes) - 2)}.2"
    rx = nodes[-1].socket(2, SOCK_DGRAM)
    rx.bind(("", 9))
    rx.setsockopt(1, 8, 1 << 26)
    tx = nodes[0].socket(2, SOCK_DGRAM)
    tx.sendto(b"x", (dst, 9))
    kernel.run(1)
    before = _charged(kernel)
    t0 = time.process_time()
    for _ in range(packets):
        tx.sendto(b"y" * 64, (dst, 9))
    kernel.run(0)
    return time.process_time() - t0, _charged(kernel) - before


def tcp_bulk(on: bool, size: int) -> tuple[float, int]:
    kernel = _kernel(on)
    a, b = kernel.create("a"), kernel.create("b")
    ea, eb = kernel.epair(a)
    move(eb, b)
    a.cmd(f"ifconfig {ea.name} inet 10.0.0.1/24 up")
    b.cmd(f"ifconfig {eb.name} inet 10.0.0.2/24 up")
    srv = b.socket()
    srv.bind(("10.0.0.2", 5001))
    srv.listen(1)
    cli = a.socket()
    cli.setblocking(False)
    cli.connect_ex(("10.0.0.2", 5001))
    kernel.run(0.1)
    conn, _ = srv.accept()
    conn.setblocking(False)
    chunk = b"z" * 65536
    before = _charged(kernel)
    t0 = time.process_time()
    sent = got = 0
    while got < size:
        if sent < size:
            with contextlib.suppress(BlockingIOError):
                sent += cli.send(chunk[: size - sent])
        kernel.run(0.001)
        try:
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                got += len(data)
        except BlockingIOError:
            pass
    return time.process_time() - t0, _charged(kernel) - before


def aio_echo(on: bool, rounds: int) -> tuple[float, int]:
    kernel = _kernel(on)
    a, b = kernel.create("a"), kernel.create("b")
    ea, eb = kernel.epair(a)
    move(eb, b)
    a.cmd(f"ifconfig {ea.name} inet 10.0.0.1/24 up")
    b.cmd(f"ifconfig {eb.name} inet 10.0.0.2/24 up")

    async def server() -> None:
        loop = asyncio.get_running_loop()
        s = b.socket(2, SOCK_DGRAM)
        s.bind(("10.0.0.2", 7))
        s.setblocking(False)
        for _ in range(rounds):
            data, addr = await loop.sock_recvfrom(s, 100)
            await loop.sock_sendto(s, data, addr)

    async def client() -> None:
        loop = asyncio.get_running_loop()
        s = a.socket(2, SOCK_DGRAM)
        s.setblocking(False)
        for _ in range(rounds):
            await loop.sock_sendto(s, b"x" * 32, ("10.0.0.2", 7))
            await loop.sock_recvfrom(s, 100)

    async def main() -> None:
        task = vimage.spawn(b, server())
        await asyncio.sleep(0.01)
        await vimage.spawn(a, client())
        await task

    t0 = time.process_time()
    vimage.run(main(), kernel=kernel)
    return time.process_time() - t0, _charged(kernel)


def compare(run: Callable[[bool], tuple[float, int]], repeat: int) -> dict[str, float]:
    times: dict[bool, list[float]] = {False: [], True: []}
    coverage = []
    for _ in range(repeat):
        for on in (False, True):
            seconds, charged = run(on)
            times[on].append(seconds)
            if on:
                coverage.append(charged / 1e9 / seconds)
    off, on_ = statistics.median(times[False]), statistics.median(times[True])
    return {"cpu_s_off": off, "cpu_s_on": on_, "ratio_on_to_off": on_ / off,
            "coverage": statistics.median(coverage)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routers", type=int, default=10)
    parser.add_argument("--packets", type=int, default=5000)
    parser.add_argument("--tcp-bytes", type=int, default=20 << 20)
    parser.add_argument("--rounds", type=int, default=5000, help="asyncio round trips")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    result = {
        "benchmark": "cpu_accounting",
        "forwarding": {"routers": args.routers, "packets": args.packets, **compare(
            lambda on: forwarding(on, args.routers, args.packets), args.repeat)},
        "tcp_bulk": {"bytes": args.tcp_bytes, **compare(
            lambda on: tcp_bulk(on, args.tcp_bytes), args.repeat)},
        "aio_echo": {"round_trips": args.rounds, **compare(
            lambda on: aio_echo(on, args.rounds), args.repeat)},
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
