"""The rank-to-rank request layer of a partitioned experiment (vimage.emu.mpi_control).

Two PartitionedControl objects in this process, connected over TCP on 127.0.0.1 as two
ranks would be, each with a stand-in for its daemon's `handle`: requests go to the rank
holding the node, errors and deaths come back naming it, stop ends cleanly. The whole
`topo serve` under mpirun is tested in tests/emu/test_mpi_serve.py.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from vimage.ctl.protocol import CtlError
from vimage.emu import load
from vimage.emu import partition as parting
from vimage.emu.mpi_control import PartitionedControl, merge_link

LAB = Path(__file__).parent / "data" / "mpi-lab.yaml"


def handler(rank: int, gate: threading.Event | None = None):
    def handle(body: dict[str, Any]) -> dict[str, Any]:
        if gate is not None:
            gate.wait(5)
        if body.get("op") == "tool" and body["argv"][0] == "fail":
            return {"id": body["id"], "ok": False,
                    "error": {"code": "not-found", "message": "no such thing"}}
        return {"id": body["id"], "ok": True, "status": 0,
                "output": f"rank {rank} ran {' '.join(body.get('argv', []))} in "
                          f"{body.get('vnet')}\n"}
    return handle


def mesh(gates: tuple[threading.Event | None, ...] = (None, None)) -> list[PartitionedControl]:
    topo = load(LAB)
    assignment = parting.partition(topo, 2)
    controls = [PartitionedControl(r, 2, topo, assignment, handler(r, gates[r]), "lab")
                for r in range(2)]
    addresses = [c.listen() for c in controls]
    errors: list[BaseException] = []

    def connect(control: PartitionedControl) -> None:
        try:
            control.connect(addresses, timeout=10)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=connect, args=(c,)) for c in controls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors, errors
    return controls


def test_requests_go_to_the_rank_holding_the_node():
    controls = mesh()
    try:
        zero = controls[0]
        far = zero.nodes_of(1)[0]
        near = zero.nodes_of(0)[0]
        assert zero.owner(far) == 1 and zero.owner(near) == 0
        assert zero.node_cmd(far, "ping -c 1 10.0.2.20") == \
            f"rank 1 ran ping -c 1 10.0.2.20 in lab.{far}\n"
        assert zero.node_tool(near, ["ifconfig"]) == (0, f"rank 0 ran ifconfig in lab.{near}\n")
        with pytest.raises(CtlError) as info:
            zero.node_tool(far, ["fail"])
        assert (info.value.code, info.value.message) == ("not-found", "no such thing")
        with pytest.raises(LookupError, match="experiment lab has no node 'pc9'"):
            zero.owner("pc9")
        assert [r["output"] for r in zero.call_all({"op": "tool", "argv": ["x"]})] == \
            ["rank 0 ran x in None\n", "rank 1 ran x in None\n"]
        for control in controls:
            control.stop("test")
        assert [c.finish(5) for c in controls] == [[], []]
    finally:
        for control in controls:
            control.close()


def test_a_dead_rank_is_named_and_its_requests_fail_at_once():
    gate = threading.Event()  # rank 1 never answers until released
    controls = mesh((None, gate))
    zero, one = controls
    seen: list[int] = []
    zero.on_dead = seen.append
    try:
        far = zero.nodes_of(1)[0]
        pending = zero.send(1, {"op": "tool", "vnet": "lab." + far, "argv": ["ping"]})
        with pytest.raises(CtlError, match=r"rank 1 of 2 \(nodes .*\) did not answer within "
                                           r"0.2 s"):
            zero.wait(zero.send(1, {"op": "nop"}), 0.2)
        for peer in one.peers.values():  # as kill -9 would: no stop, the connection ends
            peer.sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(CtlError) as info:
            zero.wait(pending, 5)
        nodes = ", ".join(zero.nodes_of(1))
        assert info.value.message == \
            f"rank 1 of 2 (nodes {nodes}) died (its control connection closed)"
        assert seen == [1] and zero.finish(1) == [1]
        with pytest.raises(CtlError, match="died"):
            zero.node_cmd(far, "ifconfig")
    finally:
        gate.set()
        for control in controls:
            control.close()


def test_a_stopping_rank_is_not_a_dead_one():
    controls = mesh()
    zero, one = controls
    stops: list[tuple[int, str]] = []
    zero.on_stop = lambda rank, why: stops.append((rank, why))
    zero.on_dead = lambda rank: stops.append((rank, "dead"))
    try:
        one.stop("topo down lab")
        one.close()
        assert zero.finish(5) == []
        assert stops == [(1, "topo down lab")]
        with pytest.raises(CtlError, match=r"has stopped \(topo down lab\)"):
            zero.node_cmd(zero.nodes_of(1)[0], "ifconfig")
    finally:
        for control in controls:
            control.close()


def test_link_rows_merge_the_counters_of_both_ranks():
    a = {"link": {"a": "r1:eth1", "b": "r2:eth0", "held": ["a"],
                  "counters": [{"ifname": "eth1", "opackets": 3}]}}
    b = {"link": {"a": "r1:eth1", "b": "r2:eth0", "held": ["b"],
                  "counters": [{"ifname": "eth0", "opackets": 4}]}}
    row = merge_link([b, a])
    assert row["counters"] == [{"ifname": "eth1", "opackets": 3},
                               {"ifname": "eth0", "opackets": 4}]
    assert "held" not in row


def test_bench_mpi_control_smoke():
    """bench/bench_mpi_control.py at a tiny size still reports what it promises."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    done = subprocess.run([sys.executable, str(root / "bench" / "bench_mpi_control.py"), "-n",
                           "20", "--clients", "2", "--runs", "1"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(done.stdout)
    assert result["benchmark"] == "mpi_control"
    for key in ("remote_us", "remote_cpu_us", "local_us", "concurrent_calls_per_s"):
        assert result[key] > 0


# -- the API over two real ranks (threads of this process) ----------------------------------------
SERVE = Path(__file__).parent / "data" / "mpi-serve.yaml"


class ThreadComm:
    """Two ranks as threads: MPI's alltoall through a barrier (as in test_mpi.py)."""

    def __init__(self, hub: dict[str, Any], rank: int, size: int) -> None:
        self.hub, self.rank, self.size = hub, rank, size

    def alltoall(self, payloads: list[Any]) -> list[Any]:
        self.hub["slots"][self.rank] = payloads
        self.hub["barrier"].wait()
        out = [row[self.rank] for row in self.hub["slots"]]
        self.hub["barrier"].wait()
        return out


def _in_threads(func, *args) -> list[Any]:
    results: list[Any] = [None, None]

    def one(rank: int) -> None:
        try:
            results[rank] = func(rank, *args)
        except BaseException as exc:
            results[rank] = exc

    threads = [threading.Thread(target=one, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@pytest.fixture
def two_ranks(tmp_path, monkeypatch):
    from vimage.ctl import paths
    from vimage.emu.mpi import Engine
    from vimage.emu.mpi_serve import RankServer, rank_paths

    monkeypatch.setenv("VIMAGED_CGROUPS", "0")
    hub: dict[str, Any] = {"slots": [None, None], "barrier": threading.Barrier(2)}
    front = paths.resolve(str(tmp_path / "v.sock"))

    def start(rank: int) -> RankServer:
        engine = Engine(load(SERVE), ThreadComm(hub, rank, 2), 1, None, True, realtime=True,
                        name="api")
        engine.plan()
        server = RankServer(engine, rank_paths(front, rank), lambda line: None)
        assert server.start()
        return server

    before = set(threading.enumerate())
    servers = _in_threads(start)
    yield servers
    dead = _in_threads(lambda rank: servers[rank].teardown("test over"))
    assert dead == [[], []]
    for server in servers:  # no vnet, timer, queued frame, thread or file is left
        kernel = server.engine.kernel
        assert kernel is not None and kernel.vnets() == []
        assert kernel.sched.pending_timers() == 0 and not kernel.sched.queue
    left = [t.name for t in set(threading.enumerate()) - before
            if t.is_alive() and t.name != "vimage-rank-req"]  # a reply being sent may linger
    assert left == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.sock.lock"]


def test_the_api_reaches_the_nodes_of_both_ranks(two_ranks):
    zero, one = (server.control for server in two_ranks)
    assert zero.owner("pc1") == 1 and zero.owner("pc2") == 0
    assert zero.node_info("pc1")["vnet"] == "api.pc1"
    assert "1 packets received" in zero.node_cmd("pc1", "ping -c 1 10.0.2.20")
    whole = zero.show()
    assert [n["name"] for n in whole["nodes"]] == ["pc1", "r1", "r2", "pc2"]
    cut = whole["links"][1]
    assert (cut["a"], cut["b"]) == ("r1:eth1", "r2:eth0")
    assert [c["ifname"] for c in cut["counters"]] == ["eth1", "eth0"]
    assert cut["counters"][0]["opackets"] > 0 and cut["counters"][1]["ipackets"] > 0

    # a cut link: both ranks' model and pipe change; a bad value changes nothing anywhere
    row = one.link_set("r1", "r2", {"delay": "30ms"})
    assert row["shown"] == {"delay": "30ms"}
    for server in two_ranks:
        assert server.engine.topology.links[1].delay == 30000
    with pytest.raises(CtlError, match="link r1-r2: bad duration 'x'") as info:
        zero.link_set("r1", "r2", {"delay": "x"})
    assert info.value.code == "bad-request"
    assert all(s.engine.topology.links[1].delay == 30000 for s in two_ranks)
    rtt = zero.node_cmd("pc2", "ping -c 1 10.0.0.20")
    assert float(rtt.split("round-trip min/avg/max/stddev = ")[1].split("/")[0]) >= 60.0

    # live frames at r1's end (rank 1), asked from rank 0, while pc1 pings pc2
    handle = zero.capture_start("r1", "r2", count=2)
    assert (handle["rank"], handle["ifname"]) == (1, "eth1")
    pinger = threading.Thread(target=zero.node_cmd, args=("pc1", "ping -c 2 10.0.2.20"))
    pinger.start()
    frames: list[tuple[int, bytes]] = []
    while True:
        got, still = zero.capture_poll(handle, 2.0)
        frames += got
        if not still:
            break
    pinger.join(30)
    assert len(frames) == 2
    assert all(f[12:14] == b"\x08\x00" and f[23] == 1 for _, f in frames)  # IPv4, ICMP
    assert zero.capture_stop(handle)["captured"] == 2
    assert len(list(one.capture("r2", "r1", duration=0.2))) == 0  # nothing while idle

    stats = zero.stats()
    assert [s["rank"] for s in stats] == [0, 1]
    assert all(s["frames_out"] > 0 and s["frames_in"] > 0 for s in stats), stats


def test_only_the_ranks_can_join_the_mesh():
    """A connection to a rank's listener must carry the token the ranks exchanged."""
    topo = load(LAB)
    assignment = parting.partition(topo, 2)
    zero = PartitionedControl(0, 2, topo, assignment, handler(0), "lab")
    host, port, token = zero.listen()
    failure: list[BaseException] = []

    def accept() -> None:
        try:
            zero.connect([(host, port, token), ("127.0.0.1", 1, "")], timeout=2)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=accept)
    thread.start()
    from vimage.ctl import protocol

    intruder = socket.create_connection((host, port))
    protocol.send(intruder, {"kind": "hello", "rank": 1, "token": "guess"})
    assert intruder.recv(1) == b""  # closed without a word
    intruder.close()
    thread.join(10)
    assert len(failure) == 1 and "did not connect within 2 s" in str(failure[0])
    assert zero.peers == {}
    zero.close()
