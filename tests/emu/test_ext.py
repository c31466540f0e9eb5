"""ext nodes without Linux: every reason they cannot be realised is one clear line, given
before anything is made (tests/interop/test_emu_ext.py realises them, as root)."""

from __future__ import annotations

import pytest

from vimage.emu import Experiment, ext, yamlfmt
from vimage.emu.experiment import ExperimentError
from vimage.kernel import Kernel

TOPO = """\
version: 1
name: x
nodes:
  out: {type: ext}
  pc1: {type: pc}
links: [[out, pc1]]
"""


def refusal(kernel: Kernel, text: str = TOPO) -> list[str]:
    with pytest.raises(ExperimentError) as info:
        Experiment(yamlfmt.loads(text, "x.yaml"), kernel).up()
    assert kernel.vnets() == []
    return info.value.problems


def test_virtual_time_is_refused():
    assert refusal(Kernel(clock="virtual", seed=1)) == [
        "node out: ext nodes need the real clock (a TAP into Linux, which does not wait for "
        "virtual time)"]


def test_without_root_or_tun(monkeypatch):
    monkeypatch.setattr(ext.os, "geteuid", lambda: 1000)
    assert refusal(Kernel(clock="real")) == [
        "node out: ext nodes need root (a TAP into a Linux network namespace)"]
    monkeypatch.setattr(ext.os, "geteuid", lambda: 0)
    real_exists = ext.os.path.exists
    monkeypatch.setattr(ext.os.path, "exists", lambda p: p != ext.TUN_PATH and real_exists(p))
    assert refusal(Kernel(clock="real")) == [
        "node out: ext nodes need /dev/net/tun (the TUN/TAP driver)"]


def test_a_link_between_two_ext_nodes_is_refused():
    text = TOPO.replace("pc1: {type: pc}", "pc1: {type: ext}")
    problems = refusal(Kernel(clock="virtual", seed=1), text)
    assert problems[-1] == "link out-pc1: a link between two ext nodes has no vnet end"


def test_netns_names_follow_the_experiment_and_node():
    assert ext.netns_name("lab", "out") == "vimage-lab.out"
