"""Split a topology into N partitions (one per MPI rank): few cut links, balanced nodes.

The partitioner is networkx's Kernighan-Lin bisection applied recursively (docs/mpi.md
says why: networkx is a pure-Python dependency that installs anywhere, its K-L is exact
about the balance it keeps, and METIS bindings need a C build). Each bisection starts
from a breadth-first split of the part (contiguous regions of a grid or a tree), which
K-L then improves by swapping node pairs, so the sizes of the two sides stay what the
start gave: ceil and floor of the part's share of the node count.

Groups: nodes joined by links without delay are never split (a cut link carries frames
between ranks, and conservative synchronisation needs a delay on it, the lookahead):
the graph partitioned is the topology with each such group contracted to one vertex,
so balance counts groups (equal in a grid of routers with a host each; a switch with
many hosts is one heavy group: docs/mpi.md). Weights (what a cut costs): a link's
`weight` (expected traffic, 1 by default), added up over the links between two groups.
Pins: a node with `partition: K` puts its group in partition K; after the bisections,
partitions are renumbered to agree best with the pins, and a pinned group still
elsewhere is swapped with the unpinned group of its partition that costs least to move.

Deterministic: no random start (K-L's `seed` is unused when a start is given), nodes
in topology order, ties broken by that order.
"""

from __future__ import annotations

from collections import deque
from itertools import permutations
from typing import TYPE_CHECKING

from vimage.emu.model import Topology

if TYPE_CHECKING:
    import networkx as nx

KL_ITERATIONS = 10
MAX_PERMUTED = 7  # partitions renumbered by trying every order up to this many; else greedy


class PartitionError(ValueError):
    """A topology that cannot be split as asked (one line)."""


def graph(topo: Topology) -> nx.Graph:
    """The topology as a weighted graph (parallel links add up)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(topo.nodes)
    for link in topo.links:
        a, b = link.nodes
        if g.has_edge(a, b):
            g[a][b]["weight"] += link.weight
        else:
            g.add_edge(a, b, weight=link.weight)
    return g


def groups(topo: Topology) -> dict[str, str]:
    """node -> its group's first node: nodes joined by links without delay (or direct
    links) stay together, since a cut link needs a delay (the lookahead)."""
    import networkx as nx

    joined = nx.Graph()
    joined.add_nodes_from(topo.nodes)
    joined.add_edges_from(link.nodes for link in topo.links if link.delay == 0 or link.direct)
    order = {name: i for i, name in enumerate(topo.nodes)}
    out: dict[str, str] = {}
    for members in nx.connected_components(joined):
        head = min(members, key=order.__getitem__)
        for name in members:
            out[name] = head
    return out


def partition(topo: Topology, parts: int) -> dict[str, int]:
    """node name -> partition number in range(parts)."""
    if parts < 1:
        raise PartitionError(f"{parts} partitions: at least 1")
    for name, node in topo.nodes.items():
        if node.partition is not None and node.partition >= parts:
            raise PartitionError(f"node {name} is pinned to partition {node.partition}, "
                                 f"but there are {parts} (0..{parts - 1})")
    if parts == 1:  # no graph work (nor networkx) for a run in one process
        return dict.fromkeys(topo.nodes, 0)
    import networkx as nx

    head = groups(topo)
    pins: dict[str, int] = {}
    for name, node in topo.nodes.items():
        if node.partition is None:
            continue
        other = pins.setdefault(head[name], node.partition)
        if other != node.partition:
            raise PartitionError(f"node {name} is pinned to partition {node.partition} but "
                                 f"linked without delay to a node pinned to {other}")
    contracted = nx.Graph()
    heads = [n for n in topo.nodes if head[n] == n]
    contracted.add_nodes_from(heads)
    for a, b, data in graph(topo).edges(data=True):
        ha, hb = head[a], head[b]
        if ha == hb:
            continue
        if contracted.has_edge(ha, hb):
            contracted[ha][hb]["weight"] += data["weight"]
        else:
            contracted.add_edge(ha, hb, weight=data["weight"])
    if parts > len(heads) and heads:
        raise PartitionError(f"{parts} partitions, but the topology has {len(heads)} "
                             "group(s) of nodes joined by links without delay: a rank needs "
                             "one at least (give more links a delay)")
    order = {name: i for i, name in enumerate(heads)}
    result: dict[str, int] = {}
    _split(contracted, heads, 0, parts, order, result)
    _apply_pins(pins, contracted, result, parts, order)
    return {name: result[head[name]] for name in topo.nodes}


def _split(g: nx.Graph, nodes: list[str], first: int, parts: int, order: dict[str, int],
           result: dict[str, int]) -> None:
    if parts == 1:
        for name in nodes:
            result[name] = first
        return
    left_parts = parts // 2
    size = (len(nodes) * left_parts + parts - 1) // parts
    left, right = _bisect(g.subgraph(nodes), nodes, size, order)
    _split(g, left, first, left_parts, order, result)
    _split(g, right, first + left_parts, parts - left_parts, order, result)


def _bisect(sub: nx.Graph, nodes: list[str], size: int,
            order: dict[str, int]) -> tuple[list[str], list[str]]:
    """Two sides of `size` and len(nodes) - size nodes, in topology order."""
    from networkx.algorithms.community import kernighan_lin_bisection

    start = _bfs_order(sub, nodes, order)
    a, b = set(start[:size]), set(start[size:])
    if a and b:
        a, b = kernighan_lin_bisection(sub, partition=(a, b), max_iter=KL_ITERATIONS,
                                       weight="weight")
        if len(a) != size:  # K-L keeps the sizes, not always the order of the sides
            a, b = b, a
    key = order.__getitem__
    return sorted(a, key=key), sorted(b, key=key)


def _bfs_order(sub: nx.Graph, nodes: list[str], order: dict[str, int]) -> list[str]:
    """Breadth-first from the first node (by topology order), component after component."""
    seen: set[str] = set()
    out: list[str] = []
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        queue = deque([root])
        while queue:
            name = queue.popleft()
            out.append(name)
            for peer in sorted(sub[name], key=order.__getitem__):
                if peer not in seen:
                    seen.add(peer)
                    queue.append(peer)
    return out


def _apply_pins(pins: dict[str, int], g: nx.Graph, result: dict[str, int], parts: int,
                order: dict[str, int]) -> None:
    if not pins:
        return
    # renumber: the mapping old -> new agreeing with the most pins
    agree = [[0] * parts for _ in range(parts)]
    for name, pin in pins.items():
        agree[result[name]][pin] += 1
    if parts <= MAX_PERMUTED:
        best = max(permutations(range(parts)),
                   key=lambda perm: sum(agree[i][perm[i]] for i in range(parts)))
    else:
        best = _greedy_mapping(agree, parts)
    for name in result:
        result[name] = best[result[name]]
    # swap the pinned nodes still elsewhere with the cheapest unpinned node there
    for name in sorted(pins, key=order.__getitem__):
        want, have = pins[name], result[name]
        if want == have:
            continue
        candidates = [n for n in result if result[n] == want and n not in pins]
        result[name] = want
        if candidates:
            other = min(candidates, key=lambda n: (_cost_in(g, n, result), order[n]))
            result[other] = have


def _greedy_mapping(agree: list[list[int]], parts: int) -> tuple[int, ...]:
    mapping = [-1] * parts
    taken: set[int] = set()
    cells = sorted(((agree[i][j], -i, -j) for i in range(parts) for j in range(parts)),
                   reverse=True)
    for _count, i, j in cells:
        if mapping[-i] == -1 and -j not in taken:
            mapping[-i] = -j
            taken.add(-j)
    return tuple(mapping)


def _cost_in(g: nx.Graph, name: str, result: dict[str, int]) -> float:
    """What `name` gains staying where it is: its links inside minus its links out."""
    home = result[name]
    return sum(d["weight"] if result[p] == home else -d["weight"]
               for p, d in g[name].items())


def cut_links(topo: Topology, assignment: dict[str, int]) -> list[int]:
    """Indexes (in topo.links) of the links whose ends are in different partitions."""
    return [i for i, link in enumerate(topo.links)
            if assignment[link.a[0]] != assignment[link.b[0]]]


def summary(topo: Topology, assignment: dict[str, int], parts: int) -> dict[str, object]:
    """Sizes, cut links and the lookahead (smallest cut delay, µs) of an assignment."""
    cut = cut_links(topo, assignment)
    sizes = [0] * parts
    for p in assignment.values():
        sizes[p] += 1
    delays = [topo.links[i].delay for i in cut]
    return {"parts": parts, "sizes": sizes, "cut": len(cut),
            "cut_weight": sum(topo.links[i].weight for i in cut),
            "lookahead_us": min(delays) if delays else None}
