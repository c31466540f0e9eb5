"""vxlan(4): Ethernet over UDP 4789 between vnets; the forwarding table (learning,
timeout, size, flush); malformed datagrams; multicast groups; teardown."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import add_route, connect
from vimage.wire import vxlan as wvxlan
from vimage.wire.ipv4 import aton

_spec = importlib.util.spec_from_file_location("tunnel_util",
                                               Path(__file__).with_name("tunnel_util.py"))
tu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(tu)  # type: ignore[union-attr]
INNER, OUTER, ok, sites, tcp_transfer = tu.INNER, tu.OUTER, tu.ok, tu.sites, tu.tcp_transfer


def test_ifconfig_output():
    _, a, _ = sites("vxlan")
    lines = ok(a, "ifconfig vxlan0").splitlines()
    assert lines[0] == ("vxlan0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0"
                        " mtu 1450")
    assert lines[1] == "\toptions=600703<RXCSUM,TXCSUM,TSO4,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6>"
    assert lines[2].startswith("\tether ")
    assert lines[3:] == [
        "\tinet 10.0.0.1 netmask 0xffffff00 broadcast 10.0.0.255",
        lines[4],  # the link-local address, checked below
        "\tgroups: vxlan",
        "\tvxlan vni 42 local 192.0.2.1:4789 remote 192.0.2.2:4789",
        "\tmedia: Ethernet autoselect (autoselect <full-duplex>)",
        "\tstatus: active",
        "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>",
    ]
    assert lines[4].startswith("\tinet6 fe80::") and "%vxlan0 prefixlen 64" in lines[4]
    assert "192.0.2.1.4789" in ok(a, "netstat -an")  # the kernel socket
    ok(a, "ifconfig vxlan0 down")
    assert "status: no carrier" in ok(a, "ifconfig vxlan0")
    assert "4789" not in ok(a, "netstat -an")


def test_incomplete_configuration_does_not_run():
    kernel = Kernel(clock="virtual", seed=1)
    a = kernel.create("a")
    ok(a, "ifconfig vxlan create vxlanid 5 up")
    assert "RUNNING" not in ok(a, "ifconfig vxlan0").splitlines()[0]
    assert a.cmd("ifconfig vxlan1 create vxlanid 16777216").status == 1
    assert a.cmd("ifconfig vxlan0 vxlangroup 10.0.0.1").status == 1


def test_ping_and_tcp_across_vxlan_seen_by_scapy():
    kernel, a, b = sites("vxlan")
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    assert " 0.0% packet loss" in ok(a, f"ping -c 2 {INNER[1]}")
    cap.close()
    frames = [Ether(f) for _, f in cap.packets if UDP in Ether(f)]
    assert frames and all(f[UDP].dport == 4789 and f[VXLAN].vni == 42 for f in frames)
    inner = [f[VXLAN].payload for f in frames]
    assert inner[0].dst == "ff:ff:ff:ff:ff:ff"  # the ARP request went to the remote
    assert {f[IP].ttl for f in frames} == {64}
    assert len(tcp_transfer(a, b, INNER[1], 150_000)) == 150_000
    assert kernel.sched.errors == 0


def _three_sites(extra: str = "") -> tuple[Kernel, dict, dict]:
    """a, b, c behind router r; every VTEP's remote is a's (b and c) or b's (a)."""
    kernel = Kernel(clock="virtual", seed=3)
    r = kernel.create("r")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    vnets, vteps = {}, {}
    for i, name in enumerate("abc", 1):
        v = kernel.create(name)
        connect(r, f"172.16.{i}.1/24", v, f"172.16.{i}.2/24")
        add_route(v, "default", f"172.16.{i}.1")
        vnets[name], vteps[name] = v, f"172.16.{i}.2"
    for name, v in vnets.items():
        remote = vteps["b" if name == "a" else "a"]
        ok(v, f"ifconfig vxlan create vxlanid 9 vxlanlocal {vteps[name]} "
              f"vxlanremote {remote} {extra}")
        ok(v, f"ifconfig vxlan0 inet 10.5.0.{ord(name) - 96}/24 up")
    kernel.run(1)  # the gratuitous ARPs arrive
    return kernel, vnets, vteps


def test_learning_sends_replies_to_the_learnt_vtep_and_expires():
    kernel, v, vtep = _three_sites("vxlantimeout 10")
    b_in = v["b"].ifaces["vxlan0"].ipackets
    assert " 0.0% packet loss" in ok(v["c"], "ping -c 2 10.5.0.1")
    a_vx, c_vx = v["a"].ifaces["vxlan0"], v["c"].ifaces["vxlan0"]
    assert (c_vx.mac, aton(vtep["c"])) in a_vx.ftable_entries()
    # a answered c directly: b (a's configured remote) saw nothing of it
    assert v["b"].ifaces["vxlan0"].ipackets == b_in
    kernel.run(11)
    assert a_vx.ftable_entries() == []
    ok(v["a"], "arp -s 10.5.0.3 " + c_vx.mac.hex(":"))
    v["a"].cmd("ping -c 1 10.5.0.3")  # unicast to c's MAC, unknown again: to b
    assert v["b"].ifaces["vxlan0"].ipackets == b_in + 1


def test_maxaddr_flush_and_no_learning():
    kernel, v, vtep = _three_sites("vxlanmaxaddr 1")
    a_vx, b_vx = v["a"].ifaces["vxlan0"], v["b"].ifaces["vxlan0"]
    # b's gratuitous ARP (b came up before c) filled a's one-entry table
    assert a_vx.ftable_entries() == [(b_vx.mac, aton(vtep["b"]))]
    b_in = b_vx.ipackets
    assert "100.0% packet loss" in v["c"].cmd("ping -c 1 10.5.0.1").output
    # a could not learn c: its answers went to its remote, b
    assert v["a"].vxlan.stats.ftable_nospace >= 1 and b_vx.ipackets > b_in
    ok(v["a"], "ifconfig vxlan0 vxlanflush")
    assert a_vx.ftable_entries() == []
    ok(v["c"], "arp -d 10.5.0.1")  # down after the failed resolution
    assert " 0.0% packet loss" in ok(v["c"], "ping -c 1 10.5.0.1")
    ok(v["a"], "ifconfig vxlan0 vxlanflushall -vxlanlearn")
    ok(v["c"], "arp -d 10.5.0.1")
    assert "100.0% packet loss" in v["c"].cmd("ping -c 1 10.5.0.1").output
    assert a_vx.ftable_entries() == []


def _inject_udp(vnet, src: str, dst: str, payload: bytes) -> None:
    ifp = vnet.ifaces["epair0b"]
    pkt = bytes(IP(src=src, dst=dst) / UDP(sport=40000, dport=4789) / payload)
    ifp.txq.append((ifp, ifp.mac + b"\x02\x00\x00\x00\x00\x09\x08\x00" + pkt))


def test_malformed_and_unknown_vni_are_counted_and_dropped():
    kernel, _, b = sites("vxlan")
    before = b.ifaces["vxlan0"].ipackets  # a's gratuitous ARP
    frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:07") / (b"\x00" * 46))
    _inject_udp(b, OUTER[0], OUTER[1], b"\x00" * 8 + frame)  # no I flag
    _inject_udp(b, OUTER[0], OUTER[1], b"\x08\x00")  # too short
    _inject_udp(b, OUTER[0], OUTER[1], wvxlan.build(43, frame))  # another VNI
    kernel.run(0.1)
    st = b.vxlan.stats
    assert (st.badheader, st.novni) == (2, 1)
    assert b.ifaces["vxlan0"].ipackets == before and kernel.sched.errors == 0
    _inject_udp(b, OUTER[0], OUTER[1], wvxlan.build(42, frame))
    kernel.run(0.1)
    assert b.ifaces["vxlan0"].ipackets == before + 1


def test_multicast_group_on_a_shared_link():
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    for v, me, inner in ((a, "192.0.2.1", "10.0.0.1"), (b, "192.0.2.2", "10.0.0.2")):
        ok(v, f"ifconfig vxlan create vxlanid 77 vxlanlocal {me} vxlangroup 239.1.2.3 "
              "vxlandev epair0a" if v is a else
              f"ifconfig vxlan create vxlanid 77 vxlanlocal {me} vxlangroup 239.1.2.3 "
              "vxlandev epair0b")
        ok(v, f"ifconfig vxlan0 inet {inner}/24 up")
    assert "group 239.1.2.3:4789" in ok(a, "ifconfig vxlan0")
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    assert " 0.0% packet loss" in ok(a, "ping -c 2 10.0.0.2")
    cap.close()
    first = Ether(cap.packets[0][1])
    assert first.dst == "01:00:5e:01:02:03" and first[IP].dst == "239.1.2.3"
    ok(b, "ifconfig vxlan0 destroy")
    assert b.ip.pfil_in is None  # the group hook went with the last group interface


def test_destroying_the_vnet_leaves_no_socket_or_hook():
    kernel, a, b = sites("vxlan")
    ok(a, f"ping -c 1 {INNER[1]}")
    vx = a.ifaces["vxlan0"]
    kernel.destroy("a")
    assert a.vxlan.socks == {} and vx.sock is None and vx.ftable == {}
    assert a.udp.ports == {} and kernel.sched.pending_timers(a) == 0
    assert "100.0% packet loss" in b.cmd(f"ping -c 1 {INNER[0]}").output


def test_two_vnis_share_one_kernel_socket_and_other_ports_work():
    kernel, a, b = sites("vxlan")
    for v, (here, there), me in ((a, OUTER, "10.7.0.1"), (b, OUTER[::-1], "10.7.0.2")):
        ok(v, f"ifconfig vxlan create vxlanid 43 vxlanlocal {here} vxlanremote {there}")
        ok(v, f"ifconfig vxlan1 inet {me}/24 up")
        ok(v, f"ifconfig vxlan create vxlanid 44 vxlanlocal {here} vxlanremote {there} "
              "vxlanlocalport 8472 vxlanremoteport 8472")
        ok(v, f"ifconfig vxlan2 inet 10.8.0.{me[-1]}/24 up")
    assert "vxlan vni 44 local 192.0.2.1:8472 remote 192.0.2.2:8472" in ok(a, "ifconfig vxlan2")
    sockets = [line for line in ok(a, "netstat -an").splitlines() if line.startswith("udp4")]
    assert len(sockets) == 2 and len(a.vxlan.socks) == 2
    assert " 0.0% packet loss" in ok(a, "ping -c 1 10.7.0.2")
    assert " 0.0% packet loss" in ok(a, "ping -c 1 10.8.0.2")
    assert " 0.0% packet loss" in ok(a, f"ping -c 1 {INNER[1]}")
    # the same VNI twice on one socket: the second interface does not run
    ok(a, f"ifconfig vxlan create vxlanid 43 vxlanlocal {OUTER[0]} vxlanremote {OUTER[1]} up")
    assert "status: no carrier" in ok(a, "ifconfig vxlan3")
    ok(a, "ifconfig vxlan1 destroy")
    assert len(a.vxlan.socks) == 2 and kernel.sched.errors == 0


@pytest.fixture(scope="module")
def vxlan_world():
    return sites("vxlan")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([0x00, 0x08, 0xFF]))
def test_fuzzed_vxlan_never_raises_out_of_the_loop(vxlan_world, body, flags):
    kernel, _, b = vxlan_world
    _inject_udp(b, OUTER[0], OUTER[1], bytes((flags, 0, 0, 0, 0, 0, 42, 0)) + body)
    kernel.run(0.01)
    assert kernel.sched.errors == 0


def test_same_seed_same_bytes_through_vxlan():
    def trace() -> list[bytes]:
        kernel, a, b = sites("vxlan", seed=5)
        cap = open_capture(a.ifaces["epair0a"], keep=True)
        tcp_transfer(a, b, INNER[1], 20_000)
        cap.close()
        return [frame for _, frame in cap.packets]
    assert trace() == trace()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_vxlan(tmp_path):
    _, a, _ = sites("vxlan")
    path = str(tmp_path / "outer.pcap")
    with open_capture(a.ifaces["epair0a"], path, filter="udp port 4789"):
        ok(a, f"ping -c 2 {INNER[1]}")
    rows = tu.tshark(path, "frame.protocols", "vxlan.vni", "udp.dstport")
    inner = ["eth:ethertype:arp"] * 2 + ["eth:ethertype:ip:icmp:data"] * 4  # ARP, then pings
    assert rows == [[f"eth:ethertype:ip:udp:vxlan:{p}", "42", "4789"] for p in inner]


def test_moving_a_vxlan_interface_releases_its_socket():
    kernel, a, _ = sites("vxlan")
    c = kernel.create("c")
    ok(a, "ifconfig vxlan0 vnet c")
    vx = c.ifaces["vxlan0"]
    assert vx.sock is None and not a.vxlan.socks and 4789 not in a.udp.ports
    assert "status: no carrier" in ok(c, "ifconfig vxlan0")
