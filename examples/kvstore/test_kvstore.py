"""Tests of the replicated store, in virtual time, with the vimage pytest toolkit.

Each replica runs in its own vnet (h1..h3 around a router), started as a service so
that a crashed host gets its replica back on restart; a client talks to the replica of
the host it runs on. Faults come from vimage.fault. Run them against the broken
variant with KVSTORE_VARIANT=broken (or --kvstore-variant=broken): they must fail.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from kvstore import Client, Replica

import vimage
from vimage.fault import Faults

T = TypeVar("T")
PORT = 7000
REPLICAS = ("h1", "h2", "h3")
NO_ANSWER = "no answer"  # timeout or connection error: the client got nothing


class Cluster:
    """Three replicas on h1..h3 of a star, each a service of its vnet, each with a
    dict as its disk (kept across crashes); `replicas` holds the running incarnations."""

    def __init__(self, net: Any, variant: str, **options: Any) -> None:
        self.net = net
        self.variant = variant
        self.options = options
        self.disks: dict[str, dict[str, Any]] = {name: {} for name in REPLICAS}
        self.replicas: dict[str, Replica] = {}
        self.starts = dict.fromkeys(REPLICAS, 0)
        timeout = options.get("timeout", 1.0)
        self.clients = {name: Client(name, PORT, timeout=4 * timeout) for name in REPLICAS}

    def _boot(self, name: str) -> Awaitable[None]:
        """The service's factory: a new replica process on the host's disk."""
        peers = {p: (p, PORT) for p in REPLICAS if p != name}
        replica = Replica(name, peers, port=PORT, store=self.disks[name],
                          variant=self.variant, **self.options)
        self.replicas[name] = replica
        self.starts[name] += 1
        return replica.serve()

    async def start(self) -> Cluster:
        for name in REPLICAS:
            vimage.service(self.net[name], lambda name=name: self._boot(name))
        for name in REPLICAS:
            await self.replicas[name].ready.wait()
        return self

    async def on(self, host: str, coro: Awaitable[T]) -> T:
        """Run `coro` in `host`'s vnet."""
        return await vimage.spawn(self.net[host], coro)

    async def ask(self, host: str, *request: str) -> str:
        """One request from a client on `host` to its replica: the reply, or NO_ANSWER."""
        async def call() -> str:
            try:
                return await self.clients[host].request(" ".join(request))
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                return NO_ANSWER
        return await self.on(host, call())

    def tables(self) -> dict[str, dict[str, str]]:
        """Every replica's own table, key -> value (what its disk holds)."""
        return {name: {k: v for k, (_, v) in sorted(disk.items())}
                for name, disk in self.disks.items()}


async def settle(cluster: Cluster) -> None:
    """Long enough for anti-entropy to pass every pair of replicas twice."""
    await asyncio.sleep(2 * len(REPLICAS) * cluster.replicas["h1"].sync_interval)


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_normal_operation(star, variant):
    net = star(3, delay="10ms")
    kv = await Cluster(net, variant).start()
    assert await kv.ask("h1", "GET", "colour") == "NOTFOUND"
    t0 = now()
    assert await kv.ask("h1", "SET", "colour", "light blue") == "OK"
    took = now() - t0
    for host in REPLICAS:
        assert await kv.ask(host, "GET", "colour") == "VALUE light blue", host
    # a version read from a quorum, then a write to one: two round trips of 40 ms at least
    assert took >= 0.080
    assert await kv.ask("h2", "SET", "colour", "red") == "OK"
    assert await kv.ask("h3", "GET", "colour") == "VALUE red"
    assert await kv.ask("h3", "SET", "size", "") == "OK"  # an empty value is a value
    assert await kv.ask("h1", "GET", "size") == "VALUE "
    assert await kv.ask("h1", "FROB", "x") == "ERR bad request"
    await settle(kv)
    assert kv.tables() == {host: {"colour": "red", "size": ""} for host in REPLICAS}


async def test_minority_refuses_and_majority_serves_during_a_partition(star, variant):
    net = star(3, delay="5ms")
    kv = await Cluster(net, variant).start()
    faults = Faults.of(net.kernel)
    assert await kv.ask("h3", "SET", "k", "v1") == "OK"
    partition = faults.partition(["h1", "h2"], ["h3"])
    assert await kv.ask("h1", "SET", "k", "v2") == "OK"  # the majority side takes writes
    # the minority refuses rather than answer v1, which is no longer the value
    assert await kv.ask("h3", "GET", "k") == "ERR unavailable"
    assert await kv.ask("h3", "SET", "k", "v3") == "ERR unavailable"
    assert await kv.ask("h2", "GET", "k") == "VALUE v2"  # and serves reads
    assert partition.drops > 0
    faults.heal(partition)
    await settle(kv)
    assert kv.tables() == {host: {"k": "v2"} for host in REPLICAS}
    assert await kv.ask("h3", "GET", "k") == "VALUE v2"


async def workload(kv: Cluster, host: str, until: float, rng: random.Random,
                   acked: dict[str, int], violations: list[str], keys: int = 3) -> int:
    """A client on `host` until `until`: writes its own keys (`host-j`, values counting
    up) and reads everyone's. Only this client writes its keys, so a read that starts
    after a write was acknowledged must return that write or a later one."""
    count = 0
    while now() < until:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        if rng.random() < 0.5:
            key = f"{host}-{rng.randrange(keys)}"
            count += 1
            if await kv.ask(host, "SET", key, str(count)) == "OK":
                acked[key] = max(acked.get(key, 0), count)
        else:
            key = f"{rng.choice(REPLICAS)}-{rng.randrange(keys)}"
            floor = acked.get(key, 0)
            reply = await kv.ask(host, "GET", key)
            if reply in ("ERR unavailable", NO_ANSWER):
                continue
            seen = 0 if reply == "NOTFOUND" else int(reply.removeprefix("VALUE "))
            if seen < floor:
                violations.append(f"{now():.3f}s {host} GET {key}: {reply!r}, but "
                                  f"{floor} was acknowledged")
    return count


async def test_no_acknowledged_write_is_lost(star, variant, vimage_kernel):
    """Clients on every replica for two and a half virtual minutes, through two
    partitions: one replica cut off, then another."""
    net = star(3, delay="20ms")
    kv = await Cluster(net, variant).start()
    faults = Faults.of(net.kernel)
    t0 = now()
    first = faults.partition(["h1", "h2"], ["h3"], at=t0 + 30)
    faults.heal(first, at=t0 + 60)
    second = faults.partition(["h1"], ["h2", "h3"], at=t0 + 90)
    faults.heal(second, at=t0 + 120)
    rng = random.Random(vimage_kernel.seed)
    acked: dict[str, int] = {}
    violations: list[str] = []
    runs = [kv.on(host, workload(kv, host, t0 + 150, random.Random(rng.random()), acked,
                                 violations)) for host in REPLICAS]
    writes = await asyncio.gather(*runs)
    assert now() - t0 >= 150
    assert sum(writes) > 100
    assert not violations, "stale reads:\n" + "\n".join(violations[:10])
    await settle(kv)
    tables = kv.tables()
    for host, table in tables.items():
        for key, count in acked.items():
            assert int(table.get(key, 0)) >= count, f"{host} lost {key}={count}"
    assert tables["h1"] == tables["h2"] == tables["h3"]
    assert [e.action for e in faults.events] == ["partition", "heal"] * 2


@pytest.mark.parametrize("loss", ["1%", "5%"])
async def test_keeps_serving_on_lossy_slow_links(star, variant, loss):
    """100 ms each way on every link, so 400 ms round trips between replicas."""
    net = star(3, delay="100ms", loss=loss)
    kv = await Cluster(net, variant, timeout=3.0).start()
    written: dict[str, str] = {}
    failures = 0

    async def writer(host: str) -> None:
        nonlocal failures
        for i in range(10):
            key, value = f"{host}-{i}", f"{host}:{i}"
            for _attempt in range(5):
                if await kv.ask(host, "SET", key, value) == "OK":
                    written[key] = value
                    break
                failures += 1
            other = REPLICAS[(REPLICAS.index(host) + 1) % len(REPLICAS)]
            if key in written:
                reply = await kv.ask(other, "GET", key)
                assert reply in (f"VALUE {value}", "ERR unavailable", NO_ANSWER), (other, reply)

    t0 = now()
    await asyncio.gather(*(kv.on(host, writer(host)) for host in REPLICAS))
    assert len(written) == 30, f"{30 - len(written)} writes never acknowledged"
    assert failures <= 10
    await settle(kv)
    assert now() - t0 >= 30
    assert kv.tables() == {host: written for host in REPLICAS}
    dropped = sum(end.pipe.dropped_loss for pair in net.links for end in pair
                  if end.pipe is not None)
    assert dropped > 0  # the loss was real


async def test_a_crashed_replica_comes_back_and_catches_up(star, variant):
    net = star(3, delay="10ms")
    kv = await Cluster(net, variant).start()
    faults = Faults.of(net.kernel)
    for i in range(5):
        assert await kv.ask("h1", "SET", f"k{i}", "before") == "OK"
    crash = faults.crash("h3")
    for i in range(3, 8):  # the majority goes on without h3
        assert await kv.ask("h2", "SET", f"k{i}", "during") == "OK"
        assert await kv.ask("h1", "GET", f"k{i}") == "VALUE during"
    assert kv.starts["h3"] == 1
    faults.restart("h3", at=now() + 30)
    await asyncio.sleep(30.001)
    assert crash.state == "restarted"
    await kv.replicas["h3"].ready.wait()
    assert kv.starts["h3"] == 2  # the service started a new replica on the same disk
    # what it acknowledged before the crash survived; what it missed is still missing
    assert kv.tables()["h3"] == {f"k{i}": "before" for i in range(5)}
    await settle(kv)
    expected = {f"k{i}": ("before" if i < 3 else "during") for i in range(8)}
    assert kv.tables() == {host: expected for host in REPLICAS}
    assert await kv.ask("h3", "GET", "k7") == "VALUE during"
