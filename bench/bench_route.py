"""Route lookups per second as the table grows (10, 1,000, 100,000 routes), and what a
routing-socket request costs. Writes JSON.

A table holds `n` random prefixes (lengths /8 to /32, as a real table mixes them) plus a
default route. `lookup_uncached_per_s` looks up destinations that each miss the
per-destination cache (it is cleared first: the longest-prefix match itself);
`lookup_cached_per_s` repeats a working set of 1,000 destinations (the forwarding fast
path); `multipath_select_per_s` picks a path of an 8-way group by flow hash.
`rtsock_add_per_s` adds routes through a routing socket (message, parse, reply).
"""

from __future__ import annotations

import argparse
import random
import time

from _report import report
from vimage.kernel import Kernel
from vimage.net.route import MASKS, RTF_GATEWAY, Route, RouteTable, flow_hash, select
from vimage.socket.rtsock import AF_ROUTE
from vimage.wire import rtmsg as m


def _table(n: int, rng: random.Random, ifp: object) -> RouteTable:
    table = RouteTable()
    table.add(Route(0, 0, ifp, RTF_GATEWAY, 1))  # type: ignore[arg-type]
    while len(table) < n + 1:
        plen = rng.choice((8, 12, 16, 16, 20, 22, 24, 24, 24, 24, 28, 32))
        dst = rng.getrandbits(32) & MASKS[plen]
        if table.get(dst, plen) is None:
            table.add(Route(dst, plen, ifp, RTF_GATEWAY, 2))  # type: ignore[arg-type]
    return table


def _rate(count: int, func: object, *args: object) -> float:
    start = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return count / (time.perf_counter() - start)


def _uncached(table: RouteTable, dsts: list[int]) -> None:
    lookup = table.lookup
    changed = table.changed
    for i in range(0, len(dsts), 4000):  # stay below the cache limit, cleared each round
        changed()
        for dst in dsts[i:i + 4000]:
            lookup(dst)


def _cached(table: RouteTable, dsts: list[int], rounds: int) -> None:
    lookup = table.lookup
    for _ in range(rounds):  # the caller warmed the cache with one round
        for dst in dsts:
            lookup(dst)


def _warm_rate(table: RouteTable, working: list[int], rounds: int) -> float:
    table.changed()
    _cached(table, working, 1)
    return _rate(rounds * len(working), _cached, table, working, rounds)


def lookups(n: int, count: int, seed: int, ifp: object) -> dict[str, object]:
    rng = random.Random(seed)
    build_start = time.perf_counter()
    table = _table(n, rng, ifp)
    build_s = time.perf_counter() - build_start
    dsts = [rng.getrandbits(32) for _ in range(count)]
    working = dsts[:1000]
    rounds = max(1, count // 1000)
    return {
        "routes": len(table),
        "prefix_lengths": len(table._lens),
        "build_routes_per_s": round(len(table) / build_s),
        "lookup_uncached_per_s": round(_rate(count, _uncached, table, dsts)),
        "lookup_cached_per_s": round(_warm_rate(table, working, rounds)),
    }


def multipath(count: int, ifp: object) -> float:
    table = RouteTable()
    for gw in range(1, 9):
        table.add(Route(0x0A000000, 8, ifp, RTF_GATEWAY, gw), multipath=True)  # type: ignore
    head = table.lookup(0x0A000001)
    assert head is not None

    def run() -> None:
        for i in range(count):
            select(head, flow_hash(12345, 0x01020304, 0x0A000000 + i, i & 0xFFFF, 17))

    return _rate(count, run)


def rtsock_adds(count: int) -> float:
    kernel = Kernel(clock="virtual", seed=1)
    vnet = kernel.create("bench")
    vnet.iface("lo0").add_addr("10.255.0.1/16")
    sock = vnet.socket(AF_ROUTE, 3, 0)
    sock.setsockopt(1, 0x0040, 0)  # SO_USELOOPBACK off: nothing queues up
    msgs = [m.RtMsg(m.RTM_ADD, 0x803, {
        m.RTA_DST: m.sockaddr_in(0x0B000000 + (i << 8)),
        m.RTA_GATEWAY: m.sockaddr_in(0x0AFF0001),
        m.RTA_NETMASK: m.sockaddr_in(0xFFFFFF00)}, seq=i).pack() for i in range(count)]

    def run() -> None:
        for msg in msgs:
            sock.send(msg)

    return _rate(count, run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,1000,100000")
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--rtsock", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    kernel = Kernel(clock="virtual", seed=args.seed)
    ifp = kernel.create("tables").iface("lo0")
    result: dict[str, object] = {
        "benchmark": "route",
        "tables": [lookups(int(n), args.lookups, args.seed, ifp)
                   for n in args.sizes.split(",")],
        "multipath_select_per_s": round(multipath(args.lookups, ifp)),
        "rtsock_add_per_s": round(rtsock_adds(args.rtsock)),
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
