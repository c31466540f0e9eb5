"""The topology model and our YAML format: validation errors, units, round trips."""

from __future__ import annotations

import json

import pytest

from vimage.emu import yamlfmt
from vimage.emu.model import (
    Link,
    Route,
    Topology,
    TopologyError,
    parse_bandwidth,
    parse_ber,
    parse_duration_us,
    parse_percent,
)

GOOD = """\
version: 1
name: lab
nodes:
  pc1:
    type: pc
    interfaces:
      eth0: {ipv4: [10.0.0.20/24]}
    routes: ["default 10.0.0.1"]
  r1:
    type: router
    model: static
links:
  - {a: pc1:eth0, b: r1, delay: 5ms}
"""


def refused(text: str, filename: str = "lab.yaml") -> TopologyError:
    with pytest.raises(TopologyError) as info:
        yamlfmt.loads(text, filename)
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_a_good_file_loads():
    topo = yamlfmt.loads(GOOD, "lab.yaml")
    assert list(topo.nodes) == ["pc1", "r1"]
    assert topo.nodes["pc1"].routes == [Route("0.0.0.0/0", "10.0.0.1")]
    link = topo.links[0]
    assert (link.a, link.b, link.delay) == (("pc1", "eth0"), ("r1", "eth0"), 5000)
    assert "eth0" in topo.nodes["r1"].interfaces  # a link end without a name makes one


def test_unknown_node_type_names_file_line_and_field():
    text = GOOD.replace("    model: static\n", "    model: static\n  ap: {type: wlan}\n")
    assert str(refused(text)) == "lab.yaml:12: nodes.ap.type: unknown node type 'wlan'"


def test_link_to_a_missing_node():
    text = GOOD + "  - {a: r1, b: r9}\n"
    assert str(refused(text)) == "lab.yaml:14: links.1.b: link to a missing node 'r9'"


def test_bad_address():
    text = GOOD.replace("10.0.0.20/24", "10.0.0.300/24")
    assert str(refused(text)) == ("lab.yaml:7: nodes.pc1.interfaces.eth0.ipv4.0: "
                                  "bad address '10.0.0.300/24'")


def test_an_address_without_length_or_of_the_wrong_family():
    assert "bad address '10.0.0.20'" in str(refused(GOOD.replace("10.0.0.20/24", "10.0.0.20")))
    text = GOOD.replace("{ipv4: [10.0.0.20/24]}", "{ipv6: [10.0.0.20/24]}")
    assert "ipv6.0: bad address '10.0.0.20/24' (an IPv6 address/length)" in str(refused(text))


def test_duplicate_node_name():
    text = GOOD.replace("  r1:\n", "  pc1:\n    type: host\n  r1:\n")
    assert str(refused(text)) == "lab.yaml:9: nodes.pc1: duplicate node name 'pc1'"


def test_duplicate_interface_name():
    text = GOOD.replace("      eth0: {ipv4: [10.0.0.20/24]}\n",
                        "      eth0: {ipv4: [10.0.0.20/24]}\n      eth0: {}\n")
    assert str(refused(text)) == ("lab.yaml:8: nodes.pc1.interfaces.eth0: "
                                  "duplicate interface name 'eth0'")


def test_bad_link_parameter_and_route_and_version():
    assert str(refused(GOOD.replace("delay: 5ms", "delay: fast"))) == (
        "lab.yaml:13: links.0.delay: bad duration 'fast'")
    assert str(refused(GOOD.replace("default 10.0.0.1", "default"))) == (
        "lab.yaml:8: nodes.pc1.routes.0: route 'default' has no gateway "
        "(write 'PREFIX GATEWAY')")
    assert str(refused(GOOD.replace("version: 1", "version: 7"))) == (
        "lab.yaml:1: version: unsupported version 7 (this reader knows version 1)")


def test_unknown_field_and_yaml_syntax_error():
    assert str(refused(GOOD.replace("    model: static", "    modle: static"))) == (
        "lab.yaml:11: nodes.r1.modle: unknown field 'modle'")
    assert str(refused("version: 1\nnodes: {a: [\n")).startswith("lab.yaml:3: ")


def test_every_problem_is_kept():
    text = GOOD.replace("type: pc", "type: pcx") + "  - {a: r1, b: nowhere}\n"
    problems = [str(p) for p in refused(text).problems]
    assert problems == ["nodes.pc1.type: unknown node type 'pcx'",
                        "links.1.b: link to a missing node 'nowhere'"]


def test_yaml_round_trip_keeps_everything():
    topo = Topology(name="rt", auto_address=True, hosts=True)
    topo.add_node("h", "host", services=["ssh"], commands=["sysctl net.inet.ip.ttl=32"],
                  position=(10.5, 20), auto_default_routes=True)
    topo.add_node("r", "router")
    topo.add_node("s", "lanswitch", position=(1, 2))
    topo.connect("h", "s", bandwidth=10_000_000, delay=1500, jitter=20, loss=1.5,
                 ber=1_000_000, duplicate=2.0, queue=20)
    link = topo.connect("r", "s", direct=True)
    topo.nodes["r"].interfaces[link.a[1]].ipv4.append("10.0.0.1/24")
    topo.nodes["r"].interfaces[link.a[1]].mac = "42:00:aa:00:00:01"
    topo.nodes["r"].interfaces[link.a[1]].mtu = 1400
    topo.nodes["r"].routes.append(Route("10.9.0.0/16", "10.0.0.9"))
    topo.check()
    text = yamlfmt.dumps(topo)
    assert yamlfmt.loads(text) == topo
    assert "delay: 1500us" in text and "bandwidth: 10Mbit/s" in text
    # the model is plain data: JSON and back gives the same topology
    assert Topology.from_dict(json.loads(json.dumps(topo.to_dict()))) == topo


def test_units():
    assert parse_bandwidth("10Mbit/s") == 10_000_000
    assert parse_bandwidth("1.5k") == 1500
    assert parse_bandwidth(64000) == 64000
    assert parse_duration_us("5ms") == 5000
    assert parse_duration_us(250) == 250  # a bare number: microseconds, as IMUNES
    assert parse_duration_us("1.5s") == 1_500_000
    assert parse_percent("1%") == 1.0
    assert parse_ber("1/1000000") == parse_ber(1000000) == 1_000_000
    for bad in (lambda: parse_bandwidth("-1"), lambda: parse_percent("101%"),
                lambda: parse_ber("0.5"), lambda: parse_duration_us(True)):
        with pytest.raises(ValueError):
            bad()


def test_connect_names_interfaces_and_refuses_missing_nodes():
    topo = Topology()
    topo.add_node("a")
    topo.add_node("sw", "hub")
    first = topo.connect("a", "sw")
    second = topo.connect("a", "sw")
    assert (first.a, first.b, second.a, second.b) == (
        ("a", "eth0"), ("sw", "e0"), ("a", "eth1"), ("sw", "e1"))
    assert topo.link_between("sw", "a") is first
    with pytest.raises(ValueError, match="missing node 'b'"):
        topo.connect("a", "b")
    with pytest.raises(ValueError, match="duplicate node name"):
        topo.add_node("a")


def test_model_checks_links_and_types():
    topo = Topology()
    topo.add_node("a")
    topo.add_node("b", "switch")
    topo.links.append(Link(("a", "eth0"), ("a", "eth1")))
    problems = [str(p) for p in topo.problems()]
    assert problems == ["nodes.b.type: unknown node type 'switch'",
                        "links.0.a: node 'a' has no interface 'eth0'",
                        "links.0.b: node 'a' has no interface 'eth1'",
                        "links.0: link from node 'a' to itself"]
