"""The network emulator: topologies (a pure graph), our YAML format, IMUNES import, experiments.

    from vimage.emu import Experiment, load
    topo = load("examples/routing.yaml")        # .yaml/.yml, or an IMUNES .imn file
    with Experiment(topo, Kernel(clock="virtual", seed=1)) as exp:
        exp.node("pc1").cmd("ping -c 1 10.0.2.20")

See docs/emulator.md.
"""

from __future__ import annotations

from pathlib import Path

from vimage.emu.model import Interface, Link, Node, Problem, Route, Topology, TopologyError


def load(path: str | Path, skip_unsupported: bool = False) -> Topology:
    """A topology file: IMUNES `.imn` (imported) or our YAML, by its suffix."""
    if str(path).endswith(".imn"):
        from vimage.emu import imn

        return imn.load(path, skip_unsupported=skip_unsupported)
    from vimage.emu import yamlfmt

    return yamlfmt.load(path)


def __getattr__(name: str) -> object:
    if name == "Experiment":  # the realisation pulls in the stack; the model does not
        from vimage.emu.experiment import Experiment

        return Experiment
    raise AttributeError(name)


__all__ = ["Experiment", "Interface", "Link", "Node", "Problem", "Route", "Topology",
           "TopologyError", "load"]
