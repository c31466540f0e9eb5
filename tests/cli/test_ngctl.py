"""ngctl and the small netgraph: an IMUNES-style script building a 3-port hub and a
shaped link (ng_pipe) between vnets, a bridge, the node lifecycle, errors, destroy."""

from __future__ import annotations

import re

import pytest

from vimage.cli import run_command
from vimage.kernel import Kernel
from vimage.vnet import Vnet

HUB_SCRIPT = """\
# a LAN as IMUNES builds one: a persistent hub, an eiface per port
mkpeer . hub tmp tmp
name .:tmp lan
msg lan: setpersistent
mkpeer lan: eiface link0 ether
mkpeer lan: eiface link1 ether
mkpeer lan: eiface link2 ether
"""


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line}: {result.output}"
    return result.output


def world() -> tuple[Kernel, Vnet, list[Vnet]]:
    kernel = Kernel(clock="virtual", seed=1)
    return kernel, kernel.create("host"), [kernel.create(f"r{i}") for i in (1, 2, 3, 4)]


def _hub(host: Vnet, nodes: list[Vnet]) -> None:
    result = run_command(host, "ngctl -f -", stdin=HUB_SCRIPT.encode())
    assert result.status == 0, result.output
    for i, node in enumerate(nodes[:3]):
        ok(host, f"ifconfig ngeth{i} vnet {node.name}")
        ok(node, f"ifconfig ngeth{i} inet 10.0.0.{i + 1}/24 up")


def _new_eiface(host: Vnet) -> str:
    """`mkpeer . eiface tmp ether`; the new interface's name (getifname tells it)."""
    out = ok(host, "ngctl mkpeer . eiface tmp ether")
    assert out == ""
    return max((i for i in host.ifaces.values() if i.kind == "ngeth"),
               key=lambda i: i.index).name


def _shaped_link(host: Vnet, a: Vnet, b: Vnet, cfg: str) -> tuple[str, str]:
    """Two eifaces joined through a pipe named link34, as IMUNES links two nodes: the
    first on the pipe's upper hook, moved to `a` (10.1.0.1), the second to `b`."""
    upper, lower = _new_eiface(host), _new_eiface(host)  # their hooks go as ngctl exits
    assert f'"{upper}"' in ok(host, f"ngctl msg {upper}: getifname")
    ok(host, f"ngctl mkpeer {upper}: pipe ether upper")
    ok(host, f"ngctl name {upper}:ether link34")
    ok(host, f"ngctl connect link34: {lower}: lower ether")
    ok(host, f'ngctl msg link34: setcfg "{cfg}"')
    ok(host, f"ifconfig {upper} vnet {a.name}")
    ok(host, f"ifconfig {lower} vnet {b.name}")
    ok(a, f"ifconfig {upper} inet 10.1.0.1/24 up")
    ok(b, f"ifconfig {lower} inet 10.1.0.2/24 up")
    return upper, lower


def test_imunes_style_hub_joins_three_vnets():
    kernel, host, nodes = world()
    _hub(host, nodes)
    kernel.run(1)
    for src, dst in ((0, 1), (1, 2), (2, 0)):
        assert " 0.0% packet loss" in ok(nodes[src], f"ping -c 2 10.0.0.{dst + 1}")
    hub = host.ifaces["hub0"]
    assert hub.kind == "hub" and len(hub.members) == 3
    listing = ok(host, "ngctl list")
    assert "There are 5 total nodes:" in listing  # hub, 3 eifaces, this ngctl's socket
    assert re.search(r"Name: lan +Type: hub +ID: 00000002 +Num hooks: 3", listing)
    show = ok(host, "ngctl show lan:").splitlines()
    assert [line.split()[0] for line in show[3:]] == ["link0", "link1", "link2"]
    assert all(line.split()[2] == "eiface" and line.split()[-1] == "ether"
               for line in show[3:])
    assert kernel.sched.errors == 0


def test_shaped_link_through_ng_pipe_has_its_delay_and_bandwidth():
    kernel, host, nodes = world()
    a, b = nodes[0], nodes[1]
    _shaped_link(host, a, b, "{ bandwidth=1000000 delay=20000 upstream={ BER=0 duplicate=0 }"
                             " downstream={ BER=0 duplicate=0 } }")
    kernel.run(1)
    ok(a, "ping -c 1 10.1.0.2")  # ARP
    out = ok(a, "ping -c 3 10.1.0.2")
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    # 2 x 20 ms delay + 2 x 98 bytes at 1 Mbit/s (0.784 ms each way)
    assert rtts and all(abs(t - 41.568) < 0.01 for t in rtts), rtts
    reply = ok(host, "ngctl msg link34: getcfg")
    assert "bandwidth=1000000 delay=20000" in reply
    assert kernel.sched.errors == 0


def test_pipe_directions_and_ber_map_onto_the_two_ends():
    kernel, host, nodes = world()
    a, b = nodes[0], nodes[1]
    upper, lower = _shaped_link(host, a, b, "{ delay=1000 downstream={ BER=1000 duplicate=50 }"
                                            " upstream={ queuelen=7 } header_offset=14 }")
    up_end, low_end = a.ifaces[upper], b.ifaces[lower]
    assert up_end.pipe.ber == pytest.approx(0.001) and up_end.pipe.dup == 0.5
    assert low_end.pipe.ber == 0 and low_end.pipe.queue == 7
    assert up_end.pipe.delay_ns == low_end.pipe.delay_ns == 1_000_000
    ok(host, "ngctl shutdown link34:")  # the pipe goes: no carrier on either end
    assert up_end.peer is None and low_end.peer is None and up_end.pipe is None
    assert "There are 3 total nodes" in ok(host, "ngctl list")


def test_bridge_learns_and_a_hub_without_hooks_shuts_down():
    kernel, host, nodes = world()
    ok(host, "ngctl mkpeer . bridge tmp link0")
    assert "There are 1 total nodes" in ok(host, "ngctl list")
    assert "bridge0" not in host.ifaces  # it lost its last hook when ngctl exited
    script = ("mkpeer . bridge tmp link0\nname .:tmp br\n"
              "mkpeer br: eiface link1 ether\nmkpeer br: eiface link2 ether\n")
    assert run_command(host, "ngctl -f -", stdin=script.encode()).status == 0
    bridge = next(i for i in host.ifaces.values() if i.kind == "bridge")
    names = [i.name for i in host.ifaces.values() if i.kind == "ngeth"]
    for name, node, addr in zip(names, nodes, ("10.2.0.1", "10.2.0.2"), strict=False):
        ok(host, f"ifconfig {name} vnet {node.name}")
        ok(node, f"ifconfig {name} inet {addr}/24 up")
    kernel.run(1)
    assert " 0.0% packet loss" in ok(nodes[0], "ping -c 2 10.2.0.2")
    assert len(bridge.addresses()) == 2  # it learnt both MACs
    ok(host, "ngctl rmhook br: link1")
    ok(host, "ngctl rmhook br: link2")
    assert bridge.name not in host.ifaces  # not persistent: gone with its last hook
    assert kernel.sched.errors == 0


@pytest.mark.parametrize(("line", "message"), [
    ("ngctl mkpeer . nosuch a b", "no node type"),
    ("ngctl mkpeer . eiface tmp wrong", "only ether"),
    ("ngctl mkpeer . bridge tmp port7", "bad hook name"),
    ("ngctl show nosuch:", "No such file"),
    ("ngctl frob", "unknown command"),
    ("ngctl msg .: setcfg x", "unknown message"),
    ("ngctl name . bad:name", "bad node name"),
])
def test_errors_are_reported(line, message):
    _, host, _ = world()
    result = host.cmd(line)
    assert result.status != 0 and message in result.output, result.output


def test_setcfg_syntax_errors_change_nothing():
    kernel, host, nodes = world()
    upper, _ = _shaped_link(host, nodes[0], nodes[1], "{ delay=5000 }")
    result = host.cmd('ngctl msg link34: setcfg "{ delay=7"')
    assert result.status == 1
    assert nodes[0].ifaces[upper].pipe.delay_ns == 5_000_000


def test_graphs_are_per_vnet_and_destroying_the_vnet_leaves_nothing():
    kernel, host, nodes = world()
    _hub(host, nodes)
    ok(nodes[3], "ngctl mkpeer . hub tmp tmp")
    assert "There are 1 total nodes" in ok(nodes[3], "ngctl list")  # only its socket
    kernel.run(1)
    assert " 0.0% packet loss" in ok(nodes[0], "ping -c 1 10.0.0.2")
    kernel.destroy("host")
    assert not any(i.kind in ("ngeth", "ngport") for n in nodes for i in n.ifaces.values())
    assert kernel.sched.pending_timers(host) == 0
    assert kernel.sched.errors == 0


def test_ifconfig_destroy_of_an_ngeth_leaves_its_far_end_without_carrier():
    kernel, host, nodes = world()
    upper, lower = _shaped_link(host, nodes[0], nodes[1], "{ delay=1000 }")
    ok(nodes[0], f"ifconfig {upper} destroy")
    far = nodes[1].ifaces[lower]
    assert far.peer is None and "RUNNING" not in ok(nodes[1], f"ifconfig {lower}")
    ok(host, "ngctl shutdown link34:")
    assert lower in nodes[1].ifaces and kernel.sched.errors == 0
