"""dummynet's configuration and listings (dnctl(8), `ipfw pipe|queue|sched`), its
counters and sysctls, and what destroying a vnet leaves (nothing)."""

from __future__ import annotations

import re

import pytest

from vimage.kernel import Kernel
from vimage.netpfil.dummynet import DN_MAX_ID, command
from vimage.topo import connect
from vimage.vnet import Vnet

from .shaping import shape


@pytest.fixture
def vnet() -> Vnet:
    return Kernel(clock="virtual", seed=1).create("a")


def test_pipe_show_prints_as_freebsd(vnet: Vnet) -> None:
    assert vnet.cmd("dnctl pipe 1 config bw 1Mbit/s delay 10").output == ""
    assert vnet.cmd("dnctl pipe show").output == (
        "00001:   1.000 Mbit/s   10 ms burst 0\n"
        "q131073  50 sl. 0 flows (1 buckets) sched 65537 weight 0 lmax 0 pri 0 droptail\n"
        " sched 65537 type FIFO flags 0x0 0 buckets 1 active\n"
        "  0 ip           0.0.0.0/0             0.0.0.0/0        0        0  0    0   0\n")


def test_units_queue_in_bytes_plr_and_masks(vnet: Vnet) -> None:
    vnet.cmd("dnctl pipe 2 config bw 100KByte/s queue 20KB plr 0.1 mask dst-ip 0xffffffff")
    vnet.cmd("dnctl pipe 3 config bw 64k queue 4000B")
    vnet.cmd("dnctl pipe 4 config")
    out = vnet.cmd("dnctl pipe show").output.splitlines()
    assert out[:5] == [
        "00002: 800.000 Kbit/s    0 ms burst 0",
        "q131074 20 KBplr 0.100000 0 flows (1 buckets) sched 65538 weight 0 lmax 0 pri 0 "
        "droptail",  # FreeBSD prints plr straight after the queue size
        " sched 65538 type FIFO flags 0x1 64 buckets 0 active",
        "    mask:  0x00 0x00000000/0x0000 -> 0xffffffff/0x0000",
        "BKT Prot ___Source IP/port____ ____Dest. IP/port____ Tot_pkt/bytes Pkt/Byte Drp",
    ]
    assert out[5:7] == ["00003:  64.000 Kbit/s    0 ms burst 0",
                        "q131075 4000 B 0 flows (1 buckets) sched 65539 weight 0 lmax 0 pri 0 "
                        "droptail"]
    assert out[9] == "00004: unlimited         0 ms burst 0"


def test_queues_and_schedulers_show(vnet: Vnet) -> None:
    vnet.cmd("dnctl pipe 1 config bw 10Mbit/s")
    vnet.cmd("dnctl sched 1 config type rr")
    assert vnet.cmd("dnctl queue 5 config pipe 1 weight 3 mask src-port 0xffff "
                    "red 0.002/5/15/0.1").ok
    vnet.cmd("dnctl queue 6 config sched 1 gred 0.5/10/30/0.2 queue 60")
    assert vnet.cmd("dnctl queue show").output == (
        "q00005  50 sl. 0 flows (64 buckets) sched 1 weight 3 lmax 0 pri 0\n"
        "\t  RED w_q 0.002000 min_th 5 max_th 15 max_p 0.100000\n"
        "    mask:  0x00 0x00000000/0xffff -> 0x00000000/0x0000\n"
        "BKT Prot ___Source IP/port____ ____Dest. IP/port____ Tot_pkt/bytes Pkt/Byte Drp\n"
        "q00006  60 sl. 0 flows (1 buckets) sched 1 weight 1 lmax 0 pri 0\n"
        "\t GRED w_q 0.500000 min_th 10 max_th 30 max_p 0.200000\n")
    assert vnet.cmd("dnctl sched show").output == (
        "00001:  10.000 Mbit/s    0 ms burst 0\n"
        " sched 1 type RR flags 0x0 0 buckets 1 active\n"
        "  0 ip           0.0.0.0/0             0.0.0.0/0        0        0  0    0   0\n"
        "   Children flowsets: 6 5\n")  # (FreeBSD's trailing space trimmed, as every tool)
    assert vnet.cmd("dnctl queue show 6").output.startswith("q00006 ")
    assert vnet.cmd("dnctl queue 5 show").output.startswith("q00005 ")


def test_pipe_numbers_ranges_delete_and_flush(vnet: Vnet) -> None:
    for n in (1, 2, 3, 7):
        vnet.cmd(f"dnctl pipe {n} config bw {n}Mbit/s")
    shown = [line[:5] for line in vnet.cmd("dnctl pipe show 2-3,7").output.splitlines()
             if line[:1].isdigit()]
    assert shown == ["00002", "00003", "00007"]
    assert vnet.cmd("dnctl pipe 2 delete").ok
    assert vnet.cmd("dnctl pipe delete 3 7").ok
    assert sorted(vnet.dummynet.links) == [1]
    assert sorted(vnet.dummynet.schedulers) == [1, 1 + DN_MAX_ID]
    assert tuple(vnet.cmd("dnctl pipe delete 9")) == (65, "dnctl: pipe 9 does not exist\n")
    assert vnet.cmd("dnctl pipe flush").ok
    assert vnet.cmd("dnctl pipe show").output == ""
    assert not vnet.dummynet.schedulers and not vnet.dummynet.flowsets


@pytest.mark.parametrize(("line", "message"), [
    ("pipe 1 config bogus 3", "unrecognised option ``bogus''"),
    ("pipe 1 config delay 20000", "delay must be < 10000"),
    ("pipe 1 config queue 500", "2 <= queue size <= 100"),
    ("pipe 1 config queue 2000KB", "queue size must be < 1048576B"),
    ("pipe 1 config bw", "bw needs bandwidth or interface"),
    ("pipe 1 config bw 3Gbit/s", "bandwidth too large"),
    ("pipe 1 config weight 2", "weight is only for flowsets"),
    ("queue 1 config bw 1M", "bw is only for links"),
    ("queue 1 config weight 1", "queue 1: needs `pipe N' or `sched N'"),
    ("pipe 1 config red 2/1/2/0.1", "0 < w_q <= 1"),
    ("pipe 1 config red 0.1/9/3/0.1", "min_th 9 must be < than max_th 3"),
    ("pipe 1 config mask src-port 0x10000", "port mask must be 16 bit"),
    ("sched 1 config type cbq", "invalid scheduler type cbq"),
    ("pipe 0 config", "pipe number must be between 1 and 65535: 0"),
])
def test_bad_input_is_one_line_naming_the_token(vnet: Vnet, line: str, message: str) -> None:
    assert tuple(vnet.cmd(f"dnctl {line}")) == (65, f"dnctl: {message}\n")
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        command(vnet, line.split(), "ipfw")


def test_a_refused_config_changes_nothing(vnet: Vnet) -> None:
    vnet.cmd("dnctl pipe 1 config bw 1Mbit/s delay 5")
    before = vnet.cmd("dnctl pipe show").output
    assert not vnet.cmd("dnctl pipe 1 config bw 2Mbit/s delay 99999").ok
    assert vnet.cmd("dnctl pipe show").output == before


def test_usage(vnet: Vnet) -> None:
    assert vnet.cmd("dnctl").status == 64
    result = vnet.cmd("dnctl nat 1 config")
    assert result.status == 64 and result.output.startswith("dnctl: bad command `nat'\n")


def test_sysctls(vnet: Vnet) -> None:
    assert vnet.sysctl("net.inet.ip.dummynet.hash_size") == 64
    vnet.sysctl("net.inet.ip.dummynet.hash_size", 256)
    vnet.cmd("dnctl pipe 1 config mask all")
    assert " sched 65537 type FIFO flags 0x1 256 buckets 0 active" in vnet.cmd(
        "dnctl pipe show").output
    out = vnet.cmd("sysctl net.inet.ip.dummynet").output
    for name in ("io_pkt", "io_pkt_drop", "queue_count", "expire", "red_avg_pkt_size",
                 "pipe_slot_limit", "max_chain_len", "si_count"):
        assert f"net.inet.ip.dummynet.{name}: " in out


def test_per_flow_counters_in_pipe_show() -> None:
    """A masked pipe: one instance per destination, each listed with its counters."""
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    b.iface("epair0b").add_addr("10.0.0.3/24")  # a second destination
    a.cmd("dnctl pipe 1 config bw 1Mbit/s mask dst-ip 0xffffffff")
    shape(a)
    k.run(0.01)
    s = a.socket(2, 2)
    for _ in range(3):
        s.sendto(b"x" * 100, ("10.0.0.2", 9))
    s.sendto(b"y" * 200, ("10.0.0.3", 9))
    k.run(1)
    lines = a.cmd("dnctl pipe show").output.splitlines()
    assert lines[2] == " sched 65537 type FIFO flags 0x1 64 buckets 2 active"
    assert lines[5:] == [  # BKT is the flow's hash bucket
        "  2 ip           0.0.0.0/0            10.0.0.2/0        3      384  0    0   0",
        "  3 ip           0.0.0.0/0            10.0.0.3/0        1      228  0    0   0"]


def test_destroying_a_vnet_cancels_timers_and_frees_queued_packets() -> None:
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    a.cmd("dnctl pipe 1 config bw 64k delay 500 mask dst-port 0xffff")
    shape(a)
    k.run(0.01)
    s = a.socket(2, 2)
    for port in range(1, 21):
        s.sendto(b"z" * 1000, ("10.0.0.2", port))
    k.run(0.05)
    dn = a.dummynet
    assert k.sched.pending_timers(a) > 0 and dn.si_count == 20
    k.destroy(a)
    assert k.sched.pending_timers(a) == 0
    assert not dn.schedulers and not dn.flowsets and dn.si_count == 0
    k.run(5)
    assert b.ip.stats.total == 0  # nothing got through, nothing comes later


def test_deleting_a_busy_pipe_drops_what_it_holds() -> None:
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    a.cmd("dnctl pipe 1 config bw 64k")
    shape(a)
    k.run(5)  # IPv6 duplicate address detection and MLD reports are over: no timer of theirs
    s = a.socket(2, 2)
    for _ in range(10):
        s.sendto(b"z" * 1000, ("10.0.0.2", 9))
    k.run(0.05)
    delivered = b.ip.stats.total
    assert k.sched.pending_timers(a) == 1  # one timer for the busy pipe, not per packet
    a.cmd("dnctl pipe 1 delete")
    assert k.sched.pending_timers(a) == 0
    assert a.dummynet.io_pkt_drop == 10 - delivered
    k.run(2)
    assert b.ip.stats.total == delivered


def test_a_flood_of_flows_is_bounded_and_counted() -> None:
    """A masked pipe keeps at most buckets x max_chain_len instances: idle ones expire to
    make room; when all are busy a packet of a new flow is dropped and counted."""
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    a.cmd("dnctl pipe 1 config bw 64k mask dst-port 0xffff buckets 4")
    a.sysctl("net.inet.ip.dummynet.max_chain_len", 8)
    shape(a)
    k.run(0.01)
    s = a.socket(2, 2)
    for port in range(1000, 1100):
        s.sendto(b"f" * 500, ("10.0.0.2", port))
    dn = a.dummynet
    assert dn.si_count == 32 and dn.io_pkt_drop == 100 - 32
    k.run(2)  # all delivered: the instances are idle now
    s.sendto(b"f" * 500, ("10.0.0.2", 2000))
    assert dn.si_count == 1 and dn.io_pkt_drop == 68  # the idle ones expired


def test_changing_a_busy_queue_weight() -> None:
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    a.cmd("dnctl pipe 1 config bw 64k")
    a.cmd("dnctl queue 1 config pipe 1 weight 2")
    shape(a, "queue 1 ip from any to any out")
    k.run(0.01)
    s = a.socket(2, 2)
    for _ in range(5):
        s.sendto(b"w" * 500, ("10.0.0.2", 9))
    a.cmd("dnctl queue 1 config weight 5")
    alg = a.dummynet.schedulers[1].instances[(0, 0, 0, 0, 0)].alg
    assert alg.wsum == 5
    k.run(2)
    assert alg.wsum == 0 and b.udp.stats.ipackets == 5
