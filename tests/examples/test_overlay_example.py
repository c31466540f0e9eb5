"""examples/overlay.py: three sites over gif tunnels protected by ESP, in virtual time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vimage.kernel import Kernel

_spec = importlib.util.spec_from_file_location(
    "overlay", Path(__file__).resolve().parents[2] / "examples" / "overlay.py")
overlay = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(overlay)  # type: ignore[union-attr]


def test_overlay_hosts_reach_each_other_and_routers_see_only_esp():
    kernel = Kernel(clock="virtual", seed=1)
    nodes = overlay.build(kernel)
    results, protos = overlay.check(kernel, nodes)
    assert len(results) == 6
    assert all("2 packets received, 0.0% packet loss" in r for r in results), results
    assert protos == {50}
    for n in (1, 2, 3):  # each site sent and received its share of ESP
        st = nodes[f"s{n}"].ipsec.stats
        assert st.output == st.input == 8 and st.badauth == st.replay == 0
    # the Internet routers have no route to the private networks
    assert "0 packets received" in nodes["r1"].cmd("ping -c 1 10.2.0.2").output


def test_overlay_main_says_ok(capsys):
    assert overlay.main() == 0
    assert capsys.readouterr().out.splitlines()[-1] == "overlay OK"


def test_without_ipsec_the_internet_sees_the_private_addresses():
    kernel = Kernel(clock="virtual", seed=1)
    nodes = overlay.build(kernel)
    for n in (1, 2, 3):
        nodes[f"s{n}"].cmd("setkey -FP")
    results, protos = overlay.check(kernel, nodes)
    assert all("2 packets received" in r for r in results)
    assert protos == {4}  # plain gif: IP in IP, readable by anyone on the path
