"""IMUNES .imn import: the three syntaxes, IMUNES's semantics (G1-G9), refusals, export."""

from __future__ import annotations

from pathlib import Path

import pytest

from vimage.emu import imn, load, yamlfmt
from vimage.emu.model import Interface, Route, TopologyError

DATA = Path(__file__).parent / "data"


def imported(name: str, **kwargs: object):
    return imn.load(DATA / name, **kwargs)  # type: ignore[arg-type]


def test_json_version_2():
    topo = imported("static-v2.imn")
    assert list(topo.nodes) == ["pc1", "router1", "router2", "pc2"]
    pc1, router1 = topo.nodes["pc1"], topo.nodes["router1"]
    assert pc1.type == "pc" and pc1.position == (100.0, 200.0)
    assert pc1.interfaces["eth0"] == Interface("eth0", ["10.0.0.20/24"], [],
                                               "42:00:aa:00:00:00")
    assert topo.nodes["pc2"].services == ["ssh", "tcpdump"]
    assert topo.nodes["pc2"].position == (700.5, 200.0)
    assert router1.routes == [Route("10.0.3.0/24", "10.0.1.2")]
    assert [(link.a, link.b) for link in topo.links] == [
        (("pc1", "eth0"), ("router1", "eth0")), (("router1", "eth2"), ("router2", "eth0")),
        (("router1", "eth10"), ("router2", "eth1")), (("router2", "eth2"), ("pc2", "eth0"))]


def test_link_units_are_imunes_units():
    """G7: bandwidth bit/s, delay µs, jitter µs (the largest of the lists)."""
    links = imported("static-v2.imn").links
    assert links[0].delay == 10_000 and links[0].bandwidth == 0
    assert links[2].jitter == 300
    assert links[3].bandwidth == 1_000_000


def test_lo0_defaults_are_implied_and_extra_addresses_kept():
    """G1: every L3 node has lo0 127.0.0.1/8 and ::1/128; only other addresses are held."""
    topo = imported("static-v2.imn")
    assert "lo0" not in topo.nodes["pc1"].interfaces
    assert topo.nodes["router1"].interfaces["lo0"].ipv4 == ["10.255.0.1/32"]
    # old legacy files wrote 127.0.0.1/24: still the implied default
    assert "lo0" not in imported("rip-line-legacy.imn").nodes["pc1"].interfaces


def test_auto_default_routes_enabled_disabled():
    """G2: "enabled" is kept; absent means disabled; legacy files are always disabled."""
    v2, legacy = imported("static-v2.imn"), imported("static-legacy.imn")
    assert v2.nodes["pc1"].auto_default_routes is True
    assert v2.nodes["pc2"].auto_default_routes is False  # key absent
    assert legacy.nodes["pc1"].auto_default_routes is False  # the file says enabled


def test_static_router_runs_no_routing_protocol():
    """G4: model static runs nothing, whatever router_config / `router rip` says; frr and
    quagga routers run what is enabled."""
    assert imported("static-v2.imn").nodes["router1"].routing == ()
    assert imported("static-legacy.imn").nodes["router1"].routing == ()
    assert imported("rip-line.imn").nodes["router1"].routing == ("rip", "ripng")
    assert imported("rip-line-legacy.imn").nodes["router1"].routing == ("rip", "ripng")


def test_legacy_and_json_give_the_same_model():
    """The same topology in both syntaxes; the legacy link ends are found in ifc order
    (Tcl dictionary order: eth2 before eth10), not in interface-peer order."""
    v2, legacy = imported("static-v2.imn"), imported("static-legacy.imn")
    legacy.name = v2.name
    legacy.nodes["pc1"].auto_default_routes = True  # the one G2 difference
    assert legacy == v2
    real_v2, real_legacy = imported("rip-line.imn"), imported("rip-line-legacy.imn")
    real_legacy.name = real_v2.name
    assert real_legacy == real_v2


def test_json_version_1_cross_canvas_link_is_merged():
    topo = imported("crosscanvas-v1.imn")
    assert list(topo.nodes) == ["pc1", "router1"]  # the pseudo nodes are gone
    assert len(topo.links) == 1
    link = topo.links[0]
    assert (link.a, link.b, link.delay) == (("pc1", "eth0"), ("router1", "eth0"), 3000)
    assert topo.nodes["router1"].position == (400.0, 100.0)
    assert topo.hosts is True  # hostsAutoAssign


def test_lanswitch_file_from_imunes_examples():
    topo = imported("switched.imn")
    assert topo.nodes["switch1"].type == "lanswitch"
    assert sorted(topo.nodes["switch1"].interfaces) == ["e0", "e1"]
    assert {link.b[0] for link in topo.links} | {link.a[0] for link in topo.links} == {
        "switch1", "pc1", "pc2"}


UNSUPPORTED = """\
node n0 {
    type pc
    network-config {
\thostname pc1
\t!
\tinterface eth0
\t ip address 10.0.0.20/24
\t!
    }
    interface-peer {eth0 n1}
}
node n1 {
    type wlan
    network-config {
\thostname air
\t!
    }
    interface-peer {e0 n0}
}
node n2 {
    type packgen
    network-config {
\thostname gen
\t!
    }
}
link l0 {
    nodes {n0 n1}
}
"""


def test_unsupported_node_types_are_refused_with_their_list():
    with pytest.raises(TopologyError) as info:
        imn.loads(UNSUPPORTED, "x.imn")
    assert str(info.value) == (
        "x.imn: unsupported node types packgen, wlan: air (wlan), gen (packgen) "
        "(import with skip_unsupported / --skip-unsupported to leave them out)")


def test_unsupported_node_types_are_skipped_when_asked():
    warnings: list[str] = []
    topo = imn.loads(UNSUPPORTED, "x.imn", skip_unsupported=True, warnings=warnings)
    assert list(topo.nodes) == ["pc1"] and topo.links == []
    assert warnings == ["node air: type wlan left out, with its links",
                        "node gen: type packgen left out, with its links"]


def test_malformed_files_are_one_line_errors():
    for text, expected in (
        ("{\"nodes\": {}, \"options\": {\"version\": \"9\"}}",
         "x.imn: unsupported IMUNES configuration version '9' (1 or 2)"),
        ("{\"nodes\": ", "x.imn: line 1: bad JSON: Expecting value"),
        ("node n0 {type pc", "x.imn: unbalanced braces in a Tcl list"),
        ("widget w0 {}", "x.imn: unknown object class 'widget' (node, link, canvas, option, "
                         "annotation, image)"),
        ("link l0 {nodes {n0 n1}}", "x.imn: link l0: node n0 has no interface-peer n1"),
    ):
        with pytest.raises(TopologyError) as info:
            imn.loads(text, "x.imn")
        assert str(info.value) == expected


def test_tcl_words():
    assert imn.tcl_words('a {b {c d}} "e f" g\\ h {}') == ["a", "b {c d}", "e f", "g h", ""]


def test_export_imn_to_yaml_gives_an_equal_model(tmp_path):
    for name in ("static-v2.imn", "static-legacy.imn", "crosscanvas-v1.imn", "rip-line.imn",
                 "switched.imn"):
        topo = imported(name)
        out = tmp_path / "out.yaml"
        yamlfmt.dump(topo, out)
        assert load(out) == topo, name
