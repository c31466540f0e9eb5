"""The bulk TCP measurement the throughput benchmarks share (bench_tcp, bench_tunnel,
bench_ipsec): large socket buffers, a connected pair, a checked transfer timed in wall
and CPU seconds, and the best-of-N table with each path's ratio to the plain link."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from vimage.vnet import Vnet

CHUNK = 1 << 16


def big_buffers(vnets: Iterable[Vnet]) -> None:
    """1 MiB TCP send and receive buffers, so the window never limits the transfer."""
    for v in vnets:
        v.sysctl("net.inet.tcp.sendspace", 1 << 20)
        v.sysctl("net.inet.tcp.recvspace", 1 << 20)


def tcp_pair(a: Vnet, b: Vnet, dst: str, family: int = 2) -> tuple[Any, Any]:
    """A connection from a to b:5001 (`dst`): the client and the accepted socket."""
    srv = b.socket(family, 1)
    srv.bind(("", 5001))
    srv.listen(1)
    cli = a.socket(family, 1)
    cli.connect((dst, 5001))
    conn, _ = srv.accept()
    return cli, conn


def move(cli: Any, conn: Any, size: int) -> tuple[float, float]:
    """Send `size` bytes from cli to conn; returns (wall, CPU) seconds. Data is checked by
    length and by the first byte of every read (byte i of the stream is i % 256)."""
    payload = bytes(range(256)) * (CHUNK // 256 + 1)
    cli.setblocking(False)
    sent = received = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while received < size:
        if sent < size:
            with contextlib.suppress(BlockingIOError):
                start = sent % 256
                sent += cli.send(payload[start:start + min(CHUNK, size - sent)])
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed early")
        if chunk[0] != received % 256:
            raise RuntimeError("stream corrupted")
        received += len(chunk)
    return time.perf_counter() - wall0, time.process_time() - cpu0


def rates(size: int, wall: float, cpu: float) -> dict[str, object]:
    """Rounded wall and CPU seconds and Mbit/s per each."""
    return {"seconds": round(wall, 4), "cpu_seconds": round(cpu, 4),
            "mbit_per_s": round(size * 8 / wall / 1e6, 1),
            "mbit_per_cpu_s": round(size * 8 / cpu / 1e6, 1)}


def best_of(paths: Iterable[str], trials: int,
            transfer: Callable[[str], dict[str, object]]) -> list[dict[str, object]]:
    """The run with the least CPU time of `trials` per path, interleaved so drift in
    machine load hits all paths, each with its ratio to the "plain" path per CPU second."""
    paths = tuple(paths)
    runs: dict[str, dict[str, object]] = {}
    for _ in range(trials):
        for path in paths:
            run = transfer(path)
            best = runs.get(path)
            if best is None or run["cpu_seconds"] < best["cpu_seconds"]:  # type: ignore[operator]
                runs[path] = run
    plain = runs["plain"]["mbit_per_cpu_s"]
    for run in runs.values():
        run["ratio_to_plain"] = round(run["mbit_per_cpu_s"] / plain, 3)  # type: ignore[operator]
    return list(runs.values())
