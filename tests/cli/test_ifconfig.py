"""ifconfig: display, addresses, flags, MTU, MAC, cloning, destroying and moving interfaces."""

from __future__ import annotations

import pytest

from vimage.cli import usage_of
from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, SOCK_DGRAM
from vimage.topo import udp_delivered as _udp_delivered
from vimage.vnet import Vnet

from .conftest import error_lines


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str, *words: str) -> str:
    """Run a command that must fail with one line `ifconfig: ...` naming `words`."""
    result = vnet.cmd(line)
    assert result.status != 0, f"{line!r} unexpectedly succeeded: {result.output}"
    lines = error_lines(result.output, "ifconfig")
    assert len(lines) == 1 and lines[0].startswith(("ifconfig: ", "usage: ifconfig")), result.output
    for word in words:
        assert word in lines[0], (word, result.output)
    return lines[0]


def udp_delivered(kernel: Kernel, src: Vnet, dst: Vnet, addr: str, port: int = 7000) -> bool:
    return _udp_delivered(src, dst, addr, port)


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(clock="virtual", seed=7)


@pytest.fixture
def pair(kernel: Kernel) -> tuple[Kernel, Vnet, Vnet]:
    """Vnets h1 and h2 joined by epair0 (epair0a in h1, epair0b in h2), both configured."""
    h1, h2 = kernel.create("h1"), kernel.create("h2")
    assert ok(kernel, "ifconfig epair create") == "epair0a\n"
    ok(kernel, "ifconfig epair0a vnet h1")
    ok(kernel, "ifconfig epair0b vnet h2")
    ok(h1, "ifconfig epair0a inet 10.0.0.1/24 up")
    ok(h2, "ifconfig epair0b 10.0.0.2 netmask 255.255.255.0 up")
    kernel.run(1)  # let the gratuitous ARPs land
    return kernel, h1, h2


# -- display -------------------------------------------------------------------------
def test_fresh_vnet_shows_lo0_like_freebsd(kernel: Kernel) -> None:
    expected = ("lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> metric 0 mtu 16384\n"
                "\toptions=40680703<RXCSUM,TXCSUM,TSO4,TSO6,LRO,LINKSTATE,RXCSUM_IPV6,"
                "TXCSUM_IPV6,VXLAN_HWTSO>\n"
                "\tinet 127.0.0.1 netmask 0xff000000\n"
                "\tinet6 ::1 prefixlen 128\n"
                "\tinet6 fe80::1%lo0 prefixlen 64 scopeid 0x1\n"
                "\tgroups: lo\n"
                "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>\n")
    assert ok(kernel, "ifconfig") == expected
    assert ok(kernel, "ifconfig -a") == expected
    assert ok(kernel, "ifconfig lo0") == expected
    assert ok(kernel, "ifconfig -l") == "lo0\n"


def ll_suffix(mac: bytes) -> str:
    """The interface identifier part of the EUI-64 link-local address of `mac`."""
    eui = bytes((mac[0] ^ 2,)) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return ":".join(f"{int.from_bytes(eui[i:i + 2], 'big'):x}" for i in range(0, 8, 2))


def test_configured_epair_block(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = pair
    ifp = h1.iface("epair0a")
    assert ok(h1, "ifconfig epair0a") == (
        "epair0a: flags=8863<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500\n"
        "\toptions=4060070b<RXCSUM,TXCSUM,VLAN_MTU,TSO4,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6,"
        "VXLAN_HWTSO>\n"
        f"\tether {ifp.mac.hex(':')}\n"
        "\tinet 10.0.0.1 netmask 0xffffff00 broadcast 10.0.0.255\n"
        f"\tinet6 fe80::{ll_suffix(ifp.mac)}%epair0a prefixlen 64 scopeid 0x2\n"
        "\tmedia: Ethernet 10Gbase-T (10Gbase-T <full-duplex>)\n"
        "\tstatus: active\n"
        "\tgroups: epair\n"
        "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>\n")
    assert ok(h1, "ifconfig epair0a inet").splitlines()[1:] == [
        "\tinet 10.0.0.1 netmask 0xffffff00 broadcast 10.0.0.255"]
    assert ok(h1, "ifconfig -l") == "lo0 epair0a\n"


def test_up_and_down_filters(kernel: Kernel) -> None:
    ok(kernel, "ifconfig epair create")
    ok(kernel, "ifconfig epair0a up")
    assert ok(kernel, "ifconfig -l -u") == "lo0 epair0a\n"
    assert ok(kernel, "ifconfig -l -d") == "epair0b\n"
    down = ok(kernel, "ifconfig -a -d")
    assert down.startswith("epair0b: flags=") and "epair0a" not in down


# -- addresses ---------------------------------------------------------------------------
def test_address_makes_udp_work(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    assert "inet 10.0.0.2 netmask 0xffffff00 broadcast 10.0.0.255" in ok(h2, "ifconfig epair0b")
    assert udp_delivered(kernel, h1, h2, "10.0.0.2")
    assert udp_delivered(kernel, h2, h1, "10.0.0.1")


def test_new_address_replaces_first_alias_adds_and_minus_alias_removes(
        pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    ok(h2, "ifconfig epair0b 10.0.0.3/24")
    out = ok(h2, "ifconfig epair0b")
    assert "inet 10.0.0.3 " in out and "inet 10.0.0.2 " not in out
    assert udp_delivered(kernel, h1, h2, "10.0.0.3")
    assert not udp_delivered(kernel, h1, h2, "10.0.0.2")

    ok(h2, "ifconfig epair0b inet 10.0.0.4/24 alias")
    out = ok(h2, "ifconfig epair0b")
    assert "inet 10.0.0.3 " in out and "inet 10.0.0.4 " in out
    assert udp_delivered(kernel, h1, h2, "10.0.0.4")

    ok(h2, "ifconfig epair0b 10.0.0.4 -alias")
    assert "inet 10.0.0.4 " not in ok(h2, "ifconfig epair0b")
    assert not udp_delivered(kernel, h1, h2, "10.0.0.4")
    assert udp_delivered(kernel, h1, h2, "10.0.0.3")

    ok(h2, "ifconfig epair0b inet 10.0.0.3 delete")
    assert "inet " not in ok(h2, "ifconfig epair0b")
    assert not udp_delivered(kernel, h1, h2, "10.0.0.3")


def test_delete_without_address_removes_the_first(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = pair
    ok(h1, "ifconfig epair0a 10.0.0.9/32 alias")
    ok(h1, "ifconfig epair0a delete")
    out = ok(h1, "ifconfig epair0a")
    assert "inet 10.0.0.1 " not in out and "inet 10.0.0.9 netmask 0xffffffff" in out
    ok(h1, "ifconfig epair0a -alias")
    fails(h1, "ifconfig epair0a delete", "Can't assign requested address")


@pytest.mark.parametrize(("args", "mask", "bcast"), [
    ("10.1.2.3/24", "0xffffff00", "10.1.2.255"),
    ("10.1.2.3 netmask 255.255.0.0", "0xffff0000", "10.1.255.255"),
    ("10.1.2.3 netmask 0xfffffff0", "0xfffffff0", "10.1.2.15"),
    ("10.1.2.3", "0xff000000", "10.255.255.255"),  # classful defaults
    ("172.16.5.1", "0xffff0000", "172.16.255.255"),
    ("192.168.7.1", "0xffffff00", "192.168.7.255"),
    ("10.1.2.3/24 broadcast 10.1.2.200", "0xffffff00", "10.1.2.200"),
    ("inet 10.1.2.3/30", "0xfffffffc", "10.1.2.3"),
])
def test_netmask_forms(kernel: Kernel, args: str, mask: str, bcast: str) -> None:
    ok(kernel, "ifconfig epair create")
    ok(kernel, f"ifconfig epair0a {args}")
    addr = "10.1.2.3" if "10.1.2.3" in args else args.split()[0]
    assert f"inet {addr} netmask {mask} broadcast {bcast}" in ok(kernel, "ifconfig epair0a")


def test_netmask_alone_changes_first_address(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = pair
    ok(h1, "ifconfig epair0a netmask 255.255.0.0")
    assert "inet 10.0.0.1 netmask 0xffff0000 broadcast 10.0.255.255" in ok(h1, "ifconfig epair0a")
    assert h1.rt.get(0x0A000000, 16) is not None and h1.rt.get(0x0A000000, 24) is None


def test_address_brings_interface_up_unless_down_given(kernel: Kernel) -> None:
    ok(kernel, "ifconfig epair create")
    assert not kernel.base.iface("epair0a").up
    ok(kernel, "ifconfig epair0a 10.0.0.1/24")
    assert "flags=8863<UP," in ok(kernel, "ifconfig epair0a")
    ok(kernel, "ifconfig epair0b 10.0.1.1/24 down")
    assert not kernel.base.iface("epair0b").up


def test_address_in_use_elsewhere_is_refused(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = pair
    ok(h1, "ifconfig lo create")
    fails(h1, "ifconfig lo1 10.0.0.1/32", "File exists", "epair0a")
    assert "10.0.0.1" in ok(h1, "ifconfig epair0a")


def test_down_stops_traffic_and_up_restores_it(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    ok(h2, "ifconfig epair0b down")
    assert ok(h2, "ifconfig epair0b").startswith("epair0b: flags=8822<BROADCAST,SIMPLEX,")
    assert not udp_delivered(kernel, h1, h2, "10.0.0.2")
    ok(h2, "ifconfig epair0b up")
    assert udp_delivered(kernel, h1, h2, "10.0.0.2")


# -- mtu, link address, promiscuous mode -------------------------------------------------------
def test_mtu_set_and_used(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    ok(h1, "ifconfig epair0a mtu 576")
    assert "metric 0 mtu 576" in ok(h1, "ifconfig epair0a")
    before = h1.ip.stats.fragmented
    rx = h2.socket(AF_INET, SOCK_DGRAM)
    rx.bind(("", 9))
    rx.settimeout(1)
    h1.socket(AF_INET, SOCK_DGRAM).sendto(b"x" * 1000, ("10.0.0.2", 9))
    assert rx.recv(2000) == b"x" * 1000
    assert h1.ip.stats.fragmented == before + 1


@pytest.mark.parametrize("mtu", ["67", "65536", "0", "99999999"])
def test_mtu_out_of_bounds(kernel: Kernel, mtu: str) -> None:
    ok(kernel, "ifconfig epair create")
    fails(kernel, f"ifconfig epair0a mtu {mtu}", "mtu", mtu)
    assert kernel.base.iface("epair0a").mtu == 1500


def test_mtu_bounds_accepted(kernel: Kernel) -> None:
    ok(kernel, "ifconfig epair create")
    ok(kernel, "ifconfig epair0a mtu 68")
    assert kernel.base.iface("epair0a").mtu == 68
    ok(kernel, "ifconfig epair0a mtu 65535")
    ok(kernel, "ifconfig lo0 mtu 65535")
    assert "mtu 65535" in ok(kernel, "ifconfig lo0")
    fails(kernel, "ifconfig epair0a mtu abc", "abc")
    fails(kernel, "ifconfig epair0a mtu", "mtu", "requires argument")


def test_ether_changes_the_mac_the_peer_learns(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    ok(h2, "ifconfig epair0b ether 02:00:00:00:0b:0b")
    assert "\tether 02:00:00:00:0b:0b\n" in ok(h2, "ifconfig epair0b")
    kernel.run(1)
    assert udp_delivered(kernel, h1, h2, "10.0.0.2")
    entry = h1.arp.table[0x0A000002]
    assert entry.mac == bytes.fromhex("02000000 0b0b")
    ok(h2, "ifconfig epair0b lladdr 02:00:00:00:0c:0c")  # announced: h1 updates its entry
    kernel.run(1)
    assert h1.arp.table[0x0A000002].mac == bytes.fromhex("020000000c0c")
    assert udp_delivered(kernel, h1, h2, "10.0.0.2")
    fails(h2, "ifconfig epair0b ether 01:00:5e:00:00:01", "multicast")
    fails(h2, "ifconfig epair0b ether zz:zz", "zz:zz")
    fails(h2, "ifconfig lo0 ether 02:00:00:00:00:01", "lo0")


def test_promisc_flag(kernel: Kernel) -> None:
    ok(kernel, "ifconfig epair create")
    ok(kernel, "ifconfig epair0a promisc up")
    assert "<UP,BROADCAST,RUNNING,PROMISC,SIMPLEX,MULTICAST>" in ok(kernel, "ifconfig epair0a")
    ok(kernel, "ifconfig epair0a -promisc")
    assert "PROMISC" not in ok(kernel, "ifconfig epair0a")


# -- cloning and destroying ----------------------------------------------------------------------
def test_epair_create_units(kernel: Kernel) -> None:
    assert ok(kernel, "ifconfig epair create") == "epair0a\n"
    assert ok(kernel, "ifconfig epair create") == "epair1a\n"
    assert ok(kernel, "ifconfig epair5 create") == "epair5a\n"
    assert ok(kernel, "ifconfig -l") == "lo0 epair0a epair0b epair1a epair1b epair5a epair5b\n"
    fails(kernel, "ifconfig epair5 create", "epair5", "File exists")
    fails(kernel, "ifconfig tun0 create", "tun0")


def test_create_then_configure(kernel: Kernel) -> None:
    assert ok(kernel, "ifconfig epair3 create 10.3.0.1/24 up") == "epair3a\n"
    assert "inet 10.3.0.1 netmask 0xffffff00" in ok(kernel, "ifconfig epair3a")
    assert kernel.base.iface("epair3a").up


def test_lo_create_and_destroy(kernel: Kernel) -> None:
    assert ok(kernel, "ifconfig lo create") == "lo1\n"
    assert ok(kernel, "ifconfig lo7 create") == "lo7\n"
    assert ok(kernel, "ifconfig -l") == "lo0 lo1 lo7\n"
    ok(kernel, "ifconfig lo1 destroy")
    assert ok(kernel, "ifconfig -l") == "lo0 lo7\n"
    fails(kernel, "ifconfig lo1", "interface lo1 does not exist")
    fails(kernel, "ifconfig lo0 destroy", "lo0")
    assert "lo0" in kernel.base.ifaces


def test_destroy_epair_end_removes_both(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    ok(h2, "ifconfig epair0b destroy")
    assert ok(h1, "ifconfig -l") == "lo0\n"
    assert ok(h2, "ifconfig -l") == "lo0\n"
    assert h1.rt.lookup(0x0A000002) is None
    # the unit is free again
    assert ok(kernel, "ifconfig epair0 create") == "epair0a\n"


# -- moving between vnets ---------------------------------------------------------------------
def test_vnet_moves_and_minus_vnet_brings_back(kernel: Kernel) -> None:
    lab = kernel.create("lab")
    ok(kernel, "ifconfig epair create")
    ok(kernel, "ifconfig epair0a 10.0.0.1/24")
    ok(kernel, "ifconfig epair0b vnet lab")
    assert ok(kernel, "ifconfig -l") == "lo0 epair0a\n"
    assert ok(lab, "ifconfig -l") == "lo0 epair0b\n"
    fails(kernel, "ifconfig epair0b", "interface epair0b does not exist")
    ok(lab, "ifconfig epair0b 10.0.0.2/24 up")
    assert udp_delivered(kernel, kernel.base, lab, "10.0.0.2")

    ok(kernel, "ifconfig epair0b -vnet lab")
    assert ok(lab, "ifconfig -l") == "lo0\n"
    assert ok(kernel, "ifconfig -l") == "lo0 epair0a epair0b\n"
    # if_vmove: addresses are lost and the interface comes down
    out = ok(kernel, "ifconfig epair0b")
    assert "inet " not in out and "<UP" not in out


def test_vnet_name_is_relative_to_the_current_vnet(kernel: Kernel) -> None:
    lab = kernel.create("lab")
    r1 = kernel.create("lab.r1")
    ok(lab, "ifconfig epair create")
    ok(lab, "ifconfig epair0a vnet r1")
    assert "epair0a" in r1.ifaces and "epair0a" not in lab.ifaces
    ok(lab, "ifconfig epair0a -vnet r1")
    assert "epair0a" in lab.ifaces


def test_move_errors(kernel: Kernel) -> None:
    kernel.create("lab")
    ok(kernel, "ifconfig epair create")
    fails(kernel, "ifconfig epair0a vnet nowhere", "nowhere")
    fails(kernel, "ifconfig epair0a vnet vnet0", "already")
    fails(kernel, "ifconfig lo0 vnet lab", "lo0")
    fails(kernel, "ifconfig epair0a -vnet lab", "epair0a", "lab")
    fails(kernel, "ifconfig epair0a vnet", "vnet", "requires argument")
    assert "epair0a" in kernel.base.ifaces


# -- errors ------------------------------------------------------------------------------------
def test_unknown_interface(kernel: Kernel) -> None:
    line = fails(kernel, "ifconfig epair9a")
    assert line == "ifconfig: interface epair9a does not exist"
    assert kernel.cmd("ifconfig epair9a").status == 1
    fails(kernel, "ifconfig epair9a up", "epair9a")


@pytest.mark.parametrize(("args", "word"), [
    ("frobnicate", "frobnicate"),
    ("10.0.0.300/24", "10.0.0.300"),
    ("10.0.0.1/33", "33"),
    ("10.0.0.1 netmask 255.0.255.0", "255.0.255.0"),
    ("10.0.0.1 netmask banana", "banana"),
    ("10.0.0.1 broadcast nope", "nope"),
    ("10.0.0.1 10.0.0.2", "10.0.0.2"),
    ("netmask", "netmask"),
    ("up create", "create"),
])
def test_bad_parameters(kernel: Kernel, args: str, word: str) -> None:
    ok(kernel, "ifconfig epair create")
    fails(kernel, f"ifconfig epair0a {args}", word)
    assert not kernel.base.iface("epair0a").addrs


def test_bad_options(kernel: Kernel) -> None:
    result = kernel.cmd("ifconfig -z")
    assert result.status == 64
    assert result.output == "ifconfig: illegal option -- z\n" + usage_of("ifconfig")
    fails(kernel, "ifconfig -a lo0", "lo0")
