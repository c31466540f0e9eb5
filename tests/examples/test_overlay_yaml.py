"""examples/overlay.yaml: the overlay VPN as a topology file (gif tunnels and IPsec as
start-up commands), brought up with Experiment in virtual time."""

from __future__ import annotations

from pathlib import Path

from vimage import Kernel
from vimage.emu import Experiment, load
from vimage.net.bpf import open_capture

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "overlay.yaml"


def test_overlay_yaml_pings_between_sites_and_the_internet_sees_only_esp():
    kernel = Kernel(clock="virtual", seed=1)
    with Experiment(load(EXAMPLE), kernel) as exp:
        backbone = exp.link("r1", "r2").ends[0]  # r1's end of the Internet backbone
        cap = open_capture(backbone, keep=True)
        for n, m in ((1, 2), (2, 3), (3, 1)):
            res = exp.node(f"h{n}").cmd(f"ping -c 2 10.{m}.0.2")
            assert res.status == 0 and " 2 packets received" in res.output, res.output
        cap.close()
        protos = [frame[23] for _, frame in cap.packets if frame[12:14] == b"\x08\x00"]
        assert protos and set(protos) == {50}  # 2-3 and 3-1 cross the backbone, as ESP
        esp = exp.node("s1").cmd("netstat -s -p esp").output
        # s1 carries 1 -> 2 (two echoes out, two replies in) and 3 -> 1 (two in, two out)
        assert "\t4 packets out\n" in esp and "\t4 packets in\n" in esp
        assert "198.18.1.2[any] 198.18.3.2[any] ipencap" in exp.node("s1").cmd(
            "setkey -DP").output


def test_overlay_yaml_is_the_seed_topology():
    topo = load(EXAMPLE)
    assert sorted(topo.nodes) == ["h1", "h2", "h3", "r1", "r2", "s1", "s2", "s3"]
    assert len(topo.links) == 7
    assert not any(n.commands for name, n in topo.nodes.items() if name[0] != "s")
    assert all(n.commands[-1].startswith("setkey -e ") for name, n in topo.nodes.items()
               if name[0] == "s")


def test_setkey_e_takes_its_commands_from_the_argument_whole_or_not_at_all():
    vnet = Kernel(clock="virtual", seed=1).create("a")
    sa = "add 192.0.2.1 192.0.2.2 esp 0x100 -m transport -E aes-gcm-16 0x" + "11" * 20 + ";"
    bad = vnet.cmd(f'setkey -e "{sa} spdadd 192.0.2.1 192.0.2.2 any -P out bogus;"')
    assert bad.status != 0 and "nothing applied" in bad.output
    assert vnet.cmd("setkey -D").output.strip() == "No SAD entries."
    assert vnet.cmd(f'setkey -e "{sa}"').ok
    assert "spi=256(0x00000100)" in vnet.cmd("setkey -D").output
