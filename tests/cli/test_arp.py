"""arp: listing, static entries that steer traffic, deletion and errors."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.topo import udp_delivered
from vimage.vnet import Vnet

from .conftest import error_lines

H2 = 0x0A000002


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str, expected: str | None = None) -> str:
    result = vnet.cmd(line)
    assert result.status != 0, f"{line!r} unexpectedly succeeded: {result.output}"
    lines = error_lines(result.output, "arp")
    assert len(lines) == 1, result.output
    if expected is not None:
        assert lines[0] == expected
    return lines[0]


def send(kernel: Kernel, src: Vnet, dst: Vnet, addr: str, port: int = 7000) -> bool:
    return udp_delivered(src, dst, addr, port)


@pytest.fixture
def hosts() -> tuple[Kernel, Vnet, Vnet]:
    kernel = Kernel(clock="virtual", seed=11)
    h1, h2 = kernel.create("h1"), kernel.create("h2")
    ok(kernel, "ifconfig epair create")
    ok(kernel, "ifconfig epair0a vnet h1")
    ok(kernel, "ifconfig epair0b vnet h2")
    ok(h1, "ifconfig epair0a 10.0.0.1/24")
    ok(h2, "ifconfig epair0b 10.0.0.2/24")
    kernel.run(1)
    return kernel, h1, h2


def mac(vnet: Vnet, name: str) -> str:
    return vnet.iface(name).mac.hex(":")


def test_list_after_traffic(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = hosts
    own = f"? (10.0.0.1) at {mac(h1, 'epair0a')} on epair0a permanent [ethernet]"
    assert ok(h1, "arp -a") == own + "\n"
    assert send(kernel, h1, h2, "10.0.0.2")
    peer = f"? (10.0.0.2) at {mac(h2, 'epair0b')} on epair0a expires in 1200 seconds [ethernet]"
    assert ok(h1, "arp -a") == own + "\n" + peer + "\n"
    kernel.run(100)
    assert "expires in 1100 seconds" in ok(h1, "arp -an")
    assert ok(h1, "arp 10.0.0.2") == peer.replace("1200", "1100") + "\n"
    assert ok(h1, "arp -i epair0a -a").count("\n") == 2
    kernel.run(1200)  # the entry ages out
    assert ok(h1, "arp -a") == own + "\n"


def test_incomplete_entry(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = hosts
    assert not send(kernel, h1, h2, "10.0.0.9")
    assert "? (10.0.0.9) at (incomplete) on epair0a expired [ethernet]\n" in ok(h1, "arp -a")


def test_static_entry_is_used_without_asking(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = hosts
    requests = h1.arp.stats.txrequests
    ok(h1, f"arp -s 10.0.0.2 {mac(h2, 'epair0b')}")
    assert f"? (10.0.0.2) at {mac(h2, 'epair0b')} on epair0a permanent [ethernet]" in ok(
        h1, "arp -a")
    assert send(kernel, h1, h2, "10.0.0.2")
    assert h1.arp.stats.txrequests == requests  # no ARP request went out
    kernel.run(5000)  # permanent: never ages out
    assert H2 in h1.arp.table


def test_static_entry_decides_the_destination_mac(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = hosts
    ok(h1, "arp -s 10.0.0.2 02:00:00:00:99:99")
    received = h2.iface("epair0b").ipackets
    assert not send(kernel, h1, h2, "10.0.0.2")  # sent to a MAC nobody has
    assert h2.iface("epair0b").ipackets == received + 1  # it reached the wire, and h2
    assert h1.arp.table[H2].mac == bytes.fromhex("020000009999")  # not overwritten
    ok(h1, f"arp -S 10.0.0.2 {mac(h2, 'epair0b')}")
    assert send(kernel, h1, h2, "10.0.0.2")


def test_static_temp_entry_expires(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, _ = hosts
    ok(h1, "arp -s 10.0.0.7 02:00:00:00:00:07 temp")
    assert "? (10.0.0.7) at 02:00:00:00:00:07 on epair0a expires in 1200 seconds" in ok(
        h1, "arp -a")
    kernel.run(1201)
    assert "10.0.0.7" not in ok(h1, "arp -a")


def test_static_needs_a_connected_ethernet_route(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = hosts
    fails(h1, "arp -s 10.9.9.9 02:00:00:00:00:01",
          "arp: cannot intuit interface index and type for 10.9.9.9")
    ok(h1, "route add default 10.0.0.2")
    fails(h1, "arp -s 10.9.9.9 02:00:00:00:00:01",
          "arp: cannot intuit interface index and type for 10.9.9.9")
    fails(h1, "arp -s 127.0.0.1 02:00:00:00:00:01",
          "arp: cannot intuit interface index and type for 127.0.0.1")
    assert 0x0A090909 not in h1.arp.table


def test_delete(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = hosts
    assert send(kernel, h1, h2, "10.0.0.2")
    assert ok(h1, "arp -d 10.0.0.2") == "10.0.0.2 (10.0.0.2) deleted\n"
    assert H2 not in h1.arp.table and "10.0.0.2" not in ok(h1, "arp -a")
    requests = h1.arp.stats.txrequests
    assert send(kernel, h1, h2, "10.0.0.2")
    assert h1.arp.stats.txrequests == requests + 1  # had to ask again
    # arp_netlink.c delete_nl(): the kernel answers ENOENT
    fails(h1, "arp -d 10.0.0.9", "arp: delete 10.0.0.9: No such file or directory")
    assert h1.cmd("arp -d 10.0.0.9").status == 1


def test_delete_all(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = hosts
    ok(h1, "arp -s 10.0.0.5 02:00:00:00:00:05")
    ok(h1, "arp -s 10.0.0.6 02:00:00:00:00:06")
    assert ok(h1, "arp -d -a") == "10.0.0.5 (10.0.0.5) deleted\n10.0.0.6 (10.0.0.6) deleted\n"
    assert not h1.arp.table
    assert ok(h1, "arp -a").count("\n") == 1  # our own address stays
    ok(h1, "arp -s 10.0.0.5 02:00:00:00:00:05")
    assert ok(h1, "arp -ad") == "10.0.0.5 (10.0.0.5) deleted\n"


def test_lookup_missing_host(hosts: tuple[Kernel, Vnet, Vnet]) -> None:
    _, h1, _ = hosts
    assert fails(h1, "arp 10.0.0.9") == "10.0.0.9 (10.0.0.9) -- no entry"
    assert "permanent" in ok(h1, "arp 10.0.0.1")


@pytest.mark.parametrize(("line", "word"), [
    ("arp", "usage"),
    ("arp -s 10.0.0.5", "usage"),
    ("arp -s 10.0.0.5 zz:zz", "zz:zz"),
    ("arp -s 10.0.0.5 ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff"),
    ("arp -s 10.0.0.5 02:00:00:00:00:05 pub", "pub"),
    ("arp -s 10.0.0.5 02:00:00:00:00:05 forever", "forever"),
    ("arp -s 10.0.0.999 02:00:00:00:00:05", "10.0.0.999"),
    ("arp -d", "usage"),
    ("arp -d -s 10.0.0.5", "-d"),
    ("arp -a 10.0.0.5", "10.0.0.5"),
    ("arp -i epair7a -a", "epair7a"),
    ("arp -x", "illegal option -- x"),
])
def test_errors(hosts: tuple[Kernel, Vnet, Vnet], line: str, word: str) -> None:
    _, h1, _ = hosts
    assert word in fails(h1, line)
    assert not h1.arp.table
