"""vxlan(4) over IPv6 (RFC 7348, RFC 8200 8.1): ifconfig syntax and output, ping and TCP
between vnets with the outer IPv6/UDP/VXLAN checked by scapy (a real UDP checksum),
learning of IPv6 VTEPs, malformed input, and what destroying leaves."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from socket import AF_INET6

from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire import vxlan as wvxlan
from vimage.wire.ipv6 import aton as aton6

_spec = importlib.util.spec_from_file_location("tunnel_util",
                                               Path(__file__).with_name("tunnel_util.py"))
tu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(tu)  # type: ignore[union-attr]

OUTER6 = ("2001:db8::1", "2001:db8::2")
INNER = ("10.0.0.1", "10.0.0.2")


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line}: {result.output}"
    return result.output


def _vnets(kernel: Kernel, n: int) -> list[Vnet]:
    """n vnets on one hub-less line: a router r with a /64 of 2001:db8:N:: to each."""
    r = kernel.create("r")
    ok(r, "sysctl net.inet6.ip6.forwarding=1")
    vnets = []
    for i in range(1, n + 1):
        v = kernel.create("abc"[i - 1])
        connect(r, f"172.16.{i}.1/24", v, f"172.16.{i}.2/24")
        ok(r, f"ifconfig epair{i - 1}a inet6 2001:db8:{i}::1/64")
        ok(v, f"ifconfig epair{i - 1}b inet6 2001:db8:{i}::2/64")
        ok(v, f"route -6 add default 2001:db8:{i}::1")
        vnets.append(v)
    return vnets


def sites(extra: str = "", seed: int = 1) -> tuple[Kernel, Vnet, Vnet]:
    """Vnets a and b on an epair (2001:db8::1/::2), vxlan 42 over IPv6, inner 10.0.0.x."""
    kernel = Kernel(clock="virtual", seed=seed)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    ok(a, f"ifconfig epair0a inet6 {OUTER6[0]}/64")
    ok(b, f"ifconfig epair0b inet6 {OUTER6[1]}/64")
    kernel.run(3)  # DAD
    for vnet, (here, there), me in ((a, OUTER6, INNER[0]), (b, OUTER6[::-1], INNER[1])):
        ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal {here} vxlanremote {there} "
                 f"{extra}")
        ok(vnet, f"ifconfig vxlan0 inet {me}/24 up")
    kernel.run(1)  # the gratuitous ARPs arrive
    return kernel, a, b


def test_ifconfig_output_and_kernel_socket_in_the_ipv6_table():
    _, a, _ = sites()
    lines = ok(a, "ifconfig vxlan0").splitlines()
    assert lines[0].endswith(" mtu 1430")  # 70 bytes of outer IPv6 + UDP + VXLAN + Ethernet
    assert "\tvxlan vni 42 local [2001:db8::1]:4789 remote [2001:db8::2]:4789" in lines
    assert "\tstatus: active" in lines
    assert 4789 in a.udp.ports6 and 4789 not in a.udp.ports
    assert a.ifaces["vxlan0"].family == AF_INET6
    udp6 = [line for line in ok(a, "netstat -an").splitlines() if "4789" in line]
    assert len(udp6) == 1 and udp6[0].startswith("udp6") and "2001:db8::1.4789" in udp6[0]
    ok(a, "ifconfig vxlan0 down")
    assert "status: no carrier" in ok(a, "ifconfig vxlan0") and not a.udp.ports6


def test_mixed_families_and_bad_groups_are_refused():
    kernel = Kernel(clock="virtual", seed=1)
    a = kernel.create("a")
    assert a.cmd("ifconfig vxlan create vxlanid 1 vxlanlocal 2001:db8::1 "
                 "vxlanremote 192.0.2.2").status == 1
    assert a.ifaces["vxlan0"].local == 0  # created (as FreeBSD's), left unconfigured
    ok(a, "ifconfig vxlan0 vxlanid 1 vxlanlocal 2001:db8::1")
    assert a.ifaces["vxlan0"].mtu == 1430
    assert a.cmd("ifconfig vxlan0 vxlanremote 192.0.2.2").status == 1
    assert a.cmd("ifconfig vxlan0 vxlangroup 2001:db8::9").status == 1
    assert a.cmd("ifconfig vxlan0 vxlanremote 2001:db8::zz").status == 1
    # both replaced at once: back to IPv4 and its MTU
    ok(a, "ifconfig vxlan0 vxlanlocal 192.0.2.1 vxlanremote 192.0.2.2")
    assert a.ifaces["vxlan0"].mtu == 1450
    assert "local 192.0.2.1:4789 remote 192.0.2.2:4789" in ok(a, "ifconfig vxlan0")


def test_ping_and_tcp_across_vxlan6_seen_by_scapy():
    kernel, a, b = sites()
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    assert " 0.0% packet loss" in ok(a, f"ping -c 2 {INNER[1]}")
    cap.close()
    frames = [Ether(f) for _, f in cap.packets]
    frames = [f for f in frames if UDP in f and f[UDP].dport == 4789]
    assert len(frames) >= 4 and all(IPv6 in f and f[VXLAN].vni == 42 for f in frames)
    for f in frames:
        assert f[UDP].chksum != 0  # mandatory over IPv6: scapy recomputes the same
        again = IPv6(bytes(f[IPv6]))
        del again[UDP].chksum
        assert IPv6(bytes(again))[UDP].chksum == f[UDP].chksum
        assert f[IPv6].hlim == 64 and f[VXLAN].flags == 0x08
    assert {f[IPv6].src for f in frames} == set(OUTER6)
    assert len(tu.tcp_transfer(a, b, INNER[1], 150_000)) == 150_000
    assert kernel.sched.errors == 0


def _three_sites(extra: str = "") -> tuple[Kernel, dict[str, Vnet], dict[str, str]]:
    """a, b, c behind IPv6 router r; b's and c's remote is a, a's is b."""
    kernel = Kernel(clock="virtual", seed=3)
    vnets = dict(zip("abc", _vnets(kernel, 3), strict=True))
    vteps = {name: f"2001:db8:{i}::2" for i, name in enumerate("abc", 1)}
    kernel.run(3)  # DAD
    for name, v in vnets.items():
        remote = vteps["b" if name == "a" else "a"]
        ok(v, f"ifconfig vxlan create vxlanid 9 vxlanlocal {vteps[name]} "
              f"vxlanremote {remote} {extra}")
        ok(v, f"ifconfig vxlan0 inet 10.5.0.{ord(name) - 96}/24 up")
    kernel.run(1)
    return kernel, vnets, vteps


def test_learning_of_ipv6_vteps_and_expiry():
    kernel, v, vtep = _three_sites("vxlantimeout 10")
    b_in = v["b"].ifaces["vxlan0"].ipackets
    assert " 0.0% packet loss" in ok(v["c"], "ping -c 2 10.5.0.1")
    a_vx, c_vx = v["a"].ifaces["vxlan0"], v["c"].ifaces["vxlan0"]
    assert (c_vx.mac, aton6(vtep["c"])) in a_vx.ftable_entries()
    assert v["b"].ifaces["vxlan0"].ipackets == b_in  # a answered c directly
    kernel.run(11)
    assert a_vx.ftable_entries() == []
    assert kernel.sched.errors == 0


def _inject_udp6(vnet: Vnet, payload: bytes, chksum: int | None = None) -> None:
    ifp = vnet.ifaces["epair0b"]
    udp = UDP(sport=40000, dport=4789)
    if chksum is not None:
        udp.chksum = chksum
    pkt = bytes(IPv6(src=OUTER6[0], dst=OUTER6[1]) / udp / payload)
    ifp.txq.append((ifp, ifp.mac + b"\x02\x00\x00\x00\x00\x09\x86\xdd" + pkt))


def test_malformed_zero_checksum_and_unknown_vni_are_counted_and_dropped():
    kernel, _, b = sites()
    vx = b.ifaces["vxlan0"]
    before = vx.ipackets
    frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:07") / (b"\x00" * 46))
    nosum = b.udp.stats.nosum
    _inject_udp6(b, wvxlan.build(42, frame), chksum=0)  # no checksum: refused over IPv6
    _inject_udp6(b, b"\x00" * 8 + frame)  # no I flag
    _inject_udp6(b, wvxlan.build(43, frame))  # another VNI
    kernel.run(0.1)
    st = b.vxlan.stats
    assert (st.badheader, st.novni, b.udp.stats.nosum) == (1, 1, nosum + 1)
    assert vx.ipackets == before and kernel.sched.errors == 0
    _inject_udp6(b, wvxlan.build(42, frame))
    kernel.run(0.1)
    assert vx.ipackets == before + 1
    assert (bytes.fromhex("020000000007"), aton6(OUTER6[0])) in vx.ftable_entries()


def test_destroying_the_vnet_leaves_no_socket():
    kernel, a, b = sites()
    ok(a, f"ping -c 1 {INNER[1]}")
    vx = a.ifaces["vxlan0"]
    kernel.destroy("a")
    assert a.vxlan.socks == {} and vx.sock is None and vx.ftable == {}
    assert a.udp.ports6 == {} and kernel.sched.pending_timers(a) == 0
    assert "100.0% packet loss" in b.cmd(f"ping -c 1 {INNER[0]}").output
    ok(b, "ifconfig vxlan0 destroy")
    assert b.vxlan.socks == {} and b.udp.ports6 == {}


def test_same_seed_same_bytes_through_vxlan6():
    def trace() -> list[bytes]:
        _, a, b = sites(seed=5)
        cap = open_capture(a.ifaces["epair0a"], keep=True)
        tu.tcp_transfer(a, b, INNER[1], 20_000)
        cap.close()
        return [frame for _, frame in cap.packets]
    assert trace() == trace()


def test_ipv6_multicast_group_on_a_shared_link():
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    for v, me, dev, inner in ((a, OUTER6[0], "epair0a", INNER[0]),
                              (b, OUTER6[1], "epair0b", INNER[1])):
        ok(v, f"ifconfig {dev} inet6 {me}/64")
        ok(v, f"ifconfig vxlan create vxlanid 77 vxlanlocal {me} vxlanremote ff0e::42 "
              f"vxlandev {dev}")  # a multicast remote is the group (FreeBSD)
        ok(v, f"ifconfig vxlan0 inet {inner}/24 up")
    kernel.run(3)  # DAD
    assert "vxlan vni 77 local [2001:db8::1]:4789 group [ff0e::42]:4789" in ok(
        a, "ifconfig vxlan0")
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    assert " 0.0% packet loss" in ok(a, f"ping -c 2 {INNER[1]}")
    cap.close()
    frames = [Ether(f) for _, f in cap.packets]
    first = next(f for f in frames if UDP in f and f[UDP].dport == 4789)
    assert first.dst == "33:33:00:00:00:42" and first[IPv6].dst == "ff0e::42"
    assert first[UDP].chksum != 0 and first[VXLAN].vni == 77
    # b learnt a behind its unicast address: the answers went there, not to the group
    replies = [f for f in frames if UDP in f and f[IPv6].src == OUTER6[1]]
    assert replies and all(f[IPv6].dst == OUTER6[0] for f in replies)
    assert b.ip6.pfil_in is not None
    ok(b, "ifconfig vxlan0 destroy")
    assert b.ip6.pfil_in is None and not b.vxlan.groups  # the hook went with the group
    kernel.destroy("a")  # with its group joined
    assert not a.vxlan.groups and a.vxlan.hook6 is None and a.udp.ports6 == {}
    assert kernel.sched.pending_timers(a) == 0 and kernel.sched.errors == 0
