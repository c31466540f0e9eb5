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
