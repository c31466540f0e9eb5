"""The partitioner (vimage.emu.partition): few cut links, balance, weights, pins, groups."""

from __future__ import annotations

import pytest

from vimage.emu import yamlfmt
from vimage.emu.model import Topology
from vimage.emu.partition import PartitionError, cut_links, groups, partition, summary


def grid(k: int, delay: int = 1000) -> Topology:
    """k x k routers (delayed links between them), each with a host (no delay)."""
    topo = Topology(name="grid")
    for i in range(k):
        for j in range(k):
            topo.add_node(f"r{i}_{j}", "router")
            topo.add_node(f"h{i}_{j}", "host")
            topo.connect(f"h{i}_{j}", f"r{i}_{j}")
    for i in range(k):
        for j in range(k):
            if j + 1 < k:
                topo.connect(f"r{i}_{j}", f"r{i}_{j + 1}", delay=delay)
            if i + 1 < k:
                topo.connect(f"r{i}_{j}", f"r{i + 1}_{j}", delay=delay)
    return topo


@pytest.mark.parametrize(("parts", "cut"), [(2, 10), (4, 20)])
def test_a_grid_is_cut_straight_and_balanced(parts, cut):
    topo = grid(10)
    assignment = partition(topo, parts)
    info = summary(topo, assignment, parts)
    assert info["sizes"] == [200 // parts] * parts
    assert info["cut"] == cut  # the minimum: straight lines across the grid
    assert info["lookahead_us"] == 1000


def test_hosts_stay_with_their_router():
    topo = grid(6)
    assignment = partition(topo, 3)
    assert all(assignment[f"h{i}_{j}"] == assignment[f"r{i}_{j}"]
               for i in range(6) for j in range(6))
    assert all(topo.links[i].delay for i in cut_links(topo, assignment))
    assert groups(topo)["h2_3"] == "r2_3"


def test_deterministic():
    topo = grid(8)
    assert partition(topo, 3) == partition(grid(8), 3)
    sizes = summary(topo, partition(topo, 3), 3)["sizes"]
    assert sorted(sizes) == [42, 42, 44]  # 64 groups of 2 nodes: 22, 21, 21


def test_weights_steer_the_cut():
    topo = Topology(name="line")
    for name in "abcd":
        topo.add_node(name, "router")
    topo.connect("a", "b", delay=1000)
    topo.connect("b", "c", delay=1000, weight=50)
    topo.connect("c", "d", delay=1000)
    assert cut_links(topo, partition(topo, 2)) == [0, 2]  # {a, d} | {b, c}: weight 2, not 50
    topo.links[1].weight = 1
    topo.links[0].weight = 50
    topo.links[2].weight = 50
    assignment = partition(topo, 2)
    assert cut_links(topo, assignment) == [1]
    assert summary(topo, assignment, 2)["cut_weight"] == 1


def test_weight_and_pin_in_yaml(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nnodes:\n  a: {type: router, partition: 1}\n"
                    "  b: {type: router}\n  c: {type: router}\n"
                    "links:\n  - {a: a, b: b, delay: 1ms, weight: 5}\n"
                    "  - {a: b, b: c, delay: 1ms}\n")
    topo = yamlfmt.load(path)
    assert topo.nodes["a"].partition == 1 and topo.links[0].weight == 5
    assert yamlfmt.loads(yamlfmt.dumps(topo), "x.yaml") == topo
    assignment = partition(topo, 2)
    assert assignment["a"] == 1 and assignment["b"] == 1 and assignment["c"] == 0
    path.write_text("version: 1\nnodes:\n  a: {type: router, partition: -1}\n"
                    "links:\n  - {a: a, b: a, weight: x}\n")
    with pytest.raises(ValueError, match=r"nodes\.a\.partition: bad partition -1"):
        yamlfmt.load(path)


def test_pins_win_over_the_cut():
    topo = grid(4)
    topo.nodes["r0_0"].partition = 1
    topo.nodes["r3_3"].partition = 0
    assignment = partition(topo, 2)
    assert assignment["r0_0"] == assignment["h0_0"] == 1
    assert assignment["r3_3"] == 0
    assert summary(topo, assignment, 2)["sizes"] == [16, 16]


def test_what_cannot_be_split():
    topo = grid(2)
    topo.nodes["h0_0"].partition = 5
    with pytest.raises(PartitionError, match=r"^node h0_0 is pinned to partition 5, but "
                       r"there are 2 \(0\.\.1\)$"):
        partition(topo, 2)
    topo.nodes["h0_0"].partition = 0
    topo.nodes["r0_0"].partition = 1
    with pytest.raises(PartitionError, match=r"^node h0_0 is pinned to partition 0 but linked "
                       r"without delay to a node pinned to 1$"):
        partition(topo, 2)
    with pytest.raises(PartitionError, match="5 partitions, but the topology has 4 group"):
        partition(grid(2), 5)
    assert set(partition(grid(2), 1).values()) == {0}
