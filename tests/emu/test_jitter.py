"""Jitter on experiment links: the topology's jitter realised by the link pipe, in
virtual time (uniform extra delay from the kernel RNG, never reordering)."""

from __future__ import annotations

import re

from vimage.emu import Experiment, imn, yamlfmt
from vimage.kernel import Kernel

TWO = """\
version: 1
name: jit
nodes:
  a: {type: pc, interfaces: {eth0: {ipv4: [10.0.0.1/24]}}}
  b: {type: pc, interfaces: {eth0: {ipv4: [10.0.0.2/24]}}}
links:
  - {a: a, b: b, delay: 10ms, jitter: 2ms}
"""


def rtts(output: str) -> list[float]:
    return [float(t) for t in re.findall(r"time=([0-9.]+) ms", output)]


def ping_rtts(seed: int, jitter: str | None = None) -> list[float]:
    with Experiment(yamlfmt.loads(TWO, "jit.yaml"), Kernel(clock="virtual", seed=seed)) as exp:
        if jitter is not None:
            exp.link("a", "b").set(jitter=jitter)
        res = exp.node("a").cmd("ping -c 30 -i 0.1 10.0.0.2")
        assert res.ok, res.output
        return rtts(res.output)[1:]  # the first waits for ARP


def test_topology_jitter_is_realised_on_both_ends():
    with Experiment(yamlfmt.loads(TWO, "jit.yaml"), Kernel(clock="virtual", seed=1)) as exp:
        assert exp.warnings == []
        assert [e.pipe.jitter_ns for e in exp.link("a", "b").ends] == [2_000_000, 2_000_000]


def test_rtts_vary_within_twice_the_jitter_and_repeat_with_the_seed():
    got = ping_rtts(1)
    assert len(got) == 29
    assert all(20.0 <= t <= 24.0 for t in got), got  # 10 ms + [0, 2] ms each way
    assert len(set(got)) > 20
    assert got == ping_rtts(1)
    assert got != ping_rtts(2)


def test_a_live_change_of_jitter():
    assert set(ping_rtts(1, jitter="0")) == {20.0}
    assert all(20.0 <= t <= 30.0 for t in ping_rtts(1, jitter="5ms"))


def test_imunes_jitter_lists_become_their_largest_value():
    text = imn_two_pcs("100 300 250")
    topo = imn.loads(text, "j.imn")
    with Experiment(topo, Kernel(clock="virtual", seed=1)) as exp:
        assert {e.pipe.jitter_ns for e in exp.links[0].ends} == {300_000}


def imn_two_pcs(jitter: str) -> str:
    node = ('"n{i}": {{"type": "pc", "name": "p{i}", "ifaces": {{"ifc1": {{"name": "eth0", '
            '"type": "phys", "ipv4_addrs": ["10.0.0.{i}/24"], "link": "l0"}}}}}}')
    return ('{"nodes": {' + node.format(i=1) + ", " + node.format(i=2) + '}, '
            '"links": {"l0": {"peers": "n1 n2", "peers_ifaces": "ifc1 ifc1", '
            f'"jitter_upstream": "{jitter}"}}}}, "options": {{"version": "2"}}}}')
