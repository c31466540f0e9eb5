"""asyncio hosts in vnets, in virtual time, against the same program on localhost sockets.

N hosts (vnets), each on its own epair to one router vnet (a star: host i is 10.X.Y.1/24,
the router 10.X.Y.2/24), each run one asyncio program: once per period it sends a request
to a peer chosen round-robin and the peer answers. UDP: one datagram socket per host, the
request and answer are datagrams. TCP: every host serves, and keeps one connection open to
its next neighbour over which it makes one request/answer exchange per period.

The identical coroutines then run on the standard asyncio loop in real time, each host a
set of sockets bound to its own 127.0.X.Y address, for a few real seconds. The JSON puts
side by side: virtual seconds per wall second (real time is 1.0 by definition), messages
delivered per wall second and CPU per message. Every run checks that every request and
every answer arrived. Memory per host is tracemalloc's traced bytes (Python allocations:
vnets, interfaces, sockets, tasks, buffers) over a separate short run, divided by N; for
localhost it counts only the Python side (the OS's socket memory is not in it).

Run: python bench/bench_aio.py [--quick] [--out bench/results/aio.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import vimage
from _report import report
from vimage import Kernel, topo

PORT = 9000


@dataclass
class Tally:
    """What one run delivered; `done` fires when every answer is in."""

    expected: int
    requests: int = 0
    answers: int = 0
    errors: int = 0  # errors reported to a datagram protocol (none is expected)
    late_s: float = 0.0  # worst lateness of a send against its schedule
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self) -> None:
        self.answers += 1
        if self.answers == self.expected:
            self.done.set()


# -- the program every host runs (the same on both loops) ------------------------------------
class UdpHost(asyncio.DatagramProtocol):
    """Answers requests ("?...") with "!..." and counts the answers it gets back."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"?":
            self.tally.requests += 1
            assert self.transport is not None
            self.transport.sendto(b"!" + data[1:], addr)
        elif data[:1] == b"!":
            self.tally.answered()

    def error_received(self, exc: Exception) -> None:
        self.tally.errors += 1


async def _ticks(me: int, hosts: int, t0: float, period: float, count: int,
                 tally: Tally) -> Any:
    """Yields (k, peer) once per period, host `me` offset by me/hosts of a period."""
    loop = asyncio.get_running_loop()
    for k in range(count):
        when = t0 + (k + me / hosts) * period
        delay = when - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            tally.late_s = max(tally.late_s, -delay)
        yield k, (me + 1 + k % (hosts - 1)) % hosts


async def udp_open(addr: str, tally: Tally) -> tuple[asyncio.DatagramTransport, UdpHost]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(  # type: ignore[return-value]
        lambda: UdpHost(tally), local_addr=(addr, PORT))


async def udp_sender(me: int, addrs: list[str], transport: asyncio.DatagramTransport,
                     t0: float, period: float, count: int, tally: Tally) -> None:
    async for k, peer in _ticks(me, len(addrs), t0, period, count, tally):
        transport.sendto(b"?%d %d" % (me, k), (addrs[peer], PORT))


async def tcp_serve(addr: str, tally: Tally) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            tally.requests += 1
            writer.write(b"!" + line[1:])
        writer.close()

    return await asyncio.start_server(handle, addr, PORT)


async def tcp_connect(addr: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(addr, PORT)


async def tcp_client(me: int, hosts: int, stream: tuple[asyncio.StreamReader,
                                                        asyncio.StreamWriter],
                     t0: float, period: float, count: int, tally: Tally) -> None:
    reader, writer = stream
    async for k, _peer in _ticks(me, hosts, t0, period, count, tally):
        writer.write(b"?%d %d\n" % (me, k))
        if (await reader.readline())[:1] == b"!":
            tally.answered()
    writer.close()


# -- one run, on either loop ------------------------------------------------------------------
Start = Callable[[int, Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


async def exchange(proto: str, addrs: list[str], start: Start, period: float, count: int,
                   tally: Tally, probe: Callable[[], None] | None = None) -> dict[str, float]:
    """Open every host's sockets, then let each send `count` requests, one per period.

    `start(i, coro)` runs coro as host i (in its vnet, or as a plain task). Returns the
    exchange phase's loop time, wall time and CPU time; `probe` runs when every answer
    is in, before anything is closed (the memory run measures there)."""
    loop = asyncio.get_running_loop()
    n = len(addrs)
    opened: list[Any] = []
    if proto == "udp":
        opened = await asyncio.gather(*(start(i, udp_open(a, tally)) for i, a in enumerate(addrs)))
    else:
        opened = await asyncio.gather(*(start(i, tcp_serve(a, tally))
                                        for i, a in enumerate(addrs)))
        streams = await asyncio.gather(*(start(i, tcp_connect(addrs[(i + 1) % n]))
                                         for i in range(n)))
    t0 = loop.time()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if proto == "udp":
        senders = [start(i, udp_sender(i, addrs, tr, t0, period, count, tally))
                   for i, (tr, _p) in enumerate(opened)]
    else:
        senders = [start(i, tcp_client(i, n, streams[i], t0, period, count, tally))
                   for i in range(n)]
    await asyncio.gather(*senders)
    # the last answers: lost ones show as messages_delivered < messages_expected
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.done.wait(), timeout=2 * period + 5)
    rest = t0 + count * period - loop.time()
    if rest > 0:  # the run spans exactly `count` periods (the last answers come earlier)
        await asyncio.sleep(rest)
    out = {"loop_s": loop.time() - t0, "wall_s": time.perf_counter() - wall0,
           "cpu_s": time.process_time() - cpu0}
    if probe is not None:
        probe()
    for item in opened:
        if proto == "udp":
            item[0].close()
        else:
            item.close()
            await item.wait_closed()
    return out


def star(kernel: Kernel, hosts: int) -> tuple[list[Any], list[str]]:
    """`hosts` vnets, each on its own /24 to one forwarding router vnet."""
    router = kernel.create("r")
    router.ip.forwarding = 1
    vnets, addrs = [], []
    for i in range(hosts):
        p = topo.link_prefix(i + 1)
        host = kernel.create(f"h{i}")
        topo.connect(host, f"{p}.1/24", router, f"{p}.2/24")
        topo.add_route(host, "default", f"{p}.2")
        vnets.append(host)
        addrs.append(f"{p}.1")
    return vnets, addrs


def localhost_addrs(hosts: int) -> list[str]:
    return [f"127.0.{(i + 1) >> 8}.{(i + 1) & 0xFF}" for i in range(hosts)]


def _result(proto: str, hosts: int, clock: str, t: dict[str, float], tally: Tally,
            count: int) -> dict[str, Any]:
    delivered = tally.requests + tally.answers
    return {
        "proto": proto, "hosts": hosts, "clock": clock,
        "requests_per_host": count,
        "messages_expected": 2 * hosts * count,
        "messages_delivered": delivered,
        "loop_seconds": t["loop_s"], "wall_seconds": t["wall_s"],
        "loop_s_per_wall_s": t["loop_s"] / t["wall_s"],
        "loop_s_per_cpu_s": t["loop_s"] / t["cpu_s"],
        "messages_per_wall_s": delivered / t["wall_s"],
        "cpu_us_per_message": 1e6 * t["cpu_s"] / max(1, delivered),
        "errors": tally.errors,
        "worst_send_lateness_ms": 1e3 * tally.late_s,
    }


def run_vimage(proto: str, hosts: int, count: int, period: float = 1.0,
               profile: bool = False, probe: Callable[[], None] | None = None,
               ) -> dict[str, Any]:
    kernel = Kernel(clock="virtual", seed=1)
    w0 = time.perf_counter()
    vnets, addrs = star(kernel, hosts)
    build_s = time.perf_counter() - w0
    tally = Tally(expected=hosts * count)

    async def main() -> dict[str, float]:
        return await exchange(proto, addrs, lambda i, c: vimage.spawn(vnets[i], c),
                              period, count, tally, probe)

    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    t = vimage.run(main(), kernel=kernel)
    if prof:
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
        print(f"--- profile: {proto} {hosts} hosts, virtual time ---\n{text.getvalue()}",
              file=sys.stderr)
    result = _result(proto, hosts, "virtual", t, tally, count)
    result["build_wall_seconds"] = build_s
    result["kernel_errors"] = kernel.sched.errors
    result["kernel_events"] = kernel.sched.events
    return result


def run_localhost(proto: str, hosts: int, count: int, period: float = 1.0,
                  probe: Callable[[], None] | None = None) -> dict[str, Any]:
    addrs = localhost_addrs(hosts)
    tally = Tally(expected=hosts * count)

    async def main() -> dict[str, float]:
        return await exchange(proto, addrs, lambda _i, c: asyncio.ensure_future(c),
                              period, count, tally, probe)

    return _result(proto, hosts, "real (localhost)", asyncio.run(main()), tally, count)


def memory(proto: str, hosts: int, where: str, count: int = 2,
           real_period: float = 0.2) -> dict[str, Any]:
    """Traced Python bytes per host with every socket open and every message answered."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    seen: list[int] = []

    def probe() -> None:
        gc.collect()
        seen.append(tracemalloc.get_traced_memory()[0])

    try:
        if where == "vimage":
            r = run_vimage(proto, hosts, count, probe=probe)
        else:
            r = run_localhost(proto, hosts, count, period=real_period, probe=probe)
    finally:
        tracemalloc.stop()
    return {"proto": proto, "hosts": hosts, "where": where,
            "bytes_per_host": (seen[0] - base) / hosts, "method": "tracemalloc",
            "complete": r["messages_delivered"] == r["messages_expected"]}


def _raise_fd_limit(hosts: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * hosts + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--virtual-seconds", type=int, default=120,
                        help="virtual seconds of exchange (one request per host per second)")
    parser.add_argument("--real-seconds", type=float, default=5,
                        help="real seconds of the same exchange on localhost")
    parser.add_argument("--real-period", type=float, default=1.0,
                        help="seconds between a host's requests on localhost (1 as in vnets)")
    parser.add_argument("--localhost-max", type=int, default=1000,
                        help="largest host count also run on localhost")
    parser.add_argument("--proto", nargs="+", choices=["udp", "tcp"], default=["udp", "tcp"])
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the largest virtual-time run of each protocol (stderr)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, for the smoke test (5 and 20 hosts, 3 periods)")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.virtual_seconds = [5, 20], 3
        args.real_seconds, args.real_period = 0.5, 0.1
    if min(args.hosts) < 2:
        parser.error("--hosts: at least 2 hosts (each talks to the others)")
    _raise_fd_limit(max(args.hosts))
    runs: list[dict[str, Any]] = []
    comparison: list[dict[str, Any]] = []
    mem: list[dict[str, Any]] = []
    for proto in args.proto:
        for hosts in args.hosts:
            v = run_vimage(proto, hosts, args.virtual_seconds,
                           profile=args.profile and hosts == max(args.hosts))
            runs.append(v)
            row: dict[str, Any] = {
                "proto": proto, "hosts": hosts,
                "virtual_s_per_wall_s": {"vimage": v["loop_s_per_wall_s"], "localhost": 1.0},
                "virtual_s_per_cpu_s": {"vimage": v["loop_s_per_cpu_s"]},
                "messages_per_wall_s": {"vimage": v["messages_per_wall_s"]},
                "cpu_us_per_message": {"vimage": v["cpu_us_per_message"]},
            }
            if hosts <= args.localhost_max:
                r = run_localhost(proto, hosts, max(1, round(args.real_seconds
                                                             / args.real_period)),
                                  period=args.real_period)
                runs.append(r)
                row["messages_per_wall_s"]["localhost"] = r["messages_per_wall_s"]
                row["cpu_us_per_message"]["localhost"] = r["cpu_us_per_message"]
                row["messages_per_wall_s_vimage_to_localhost"] = (
                    v["messages_per_wall_s"] / r["messages_per_wall_s"])
            comparison.append(row)
            if not args.no_memory:
                mem.append(memory(proto, hosts, "vimage"))
                if hosts <= args.localhost_max:
                    mem.append(memory(proto, hosts, "localhost",
                                      real_period=min(0.2, args.real_period)))
    result = {
        "benchmark": "aio",
        "setup": {
            "topology": "star: each host vnet on its own epair to one router vnet",
            "traffic": "each host: one request per period to a peer (UDP: round-robin over "
                       "all others; TCP: over one persistent stream to its neighbour), "
                       "answered by the peer",
            "period_s": 1.0, "virtual_seconds": args.virtual_seconds,
            "real_seconds": args.real_seconds, "real_period_s": args.real_period,
            "memory_method": "tracemalloc traced bytes after every answer, divided by hosts",
            "notes": "localhost messages/s is set by the schedule (2 x hosts / period); compare "
                     "CPU per message. Wall figures depend on machine load; CPU ones less so.",
        },
        "comparison": comparison,
        "runs": runs,
        "memory": mem,
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
