"""The pytest plugin's `topology` fixture: a topology file brought up for a test."""

from __future__ import annotations


def test_topology_fixture_brings_a_file_up(topology, vimage_kernel):
    exp = topology("data/static-v2.imn")  # relative to this file's directory
    assert exp.node("pc1").kernel is vimage_kernel
    assert exp.node("pc1").cmd("ping -c 1 10.0.3.20").ok
    other = topology("data/static-v2.imn", name="again")  # side by side
    assert other.node("pc2").name == "again.pc2"


def test_topology_fixture_takes_rootdir_paths(topology):
    exp = topology("examples/routing.yaml")
    assert exp.is_up
