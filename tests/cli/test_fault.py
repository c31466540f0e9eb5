"""The fault tool: its commands, names relative to the vnet it runs in, output and errors."""

from __future__ import annotations

import re

import pytest

from vimage.fault import Faults
from vimage.kernel import Kernel
from vimage.topo import add_route, connect, udp_delivered
from vimage.vnet import Vnet

from .conftest import error_lines


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


def fails(vnet: Vnet | Kernel, line: str, status: int = 1) -> str:
    result = vnet.cmd(line)
    assert result.status == status, f"{line!r}: status {result.status}: {result.output}"
    lines = error_lines(result.output, "fault")
    assert len(lines) == 1 and lines[0].startswith(("fault: ", "usage: fault")), result.output
    return lines[0]


class Lab:
    """vnet `lab` holding router r and hosts h1, h2, h3 (10.0.N.1, r is 10.0.N.2)."""

    def __init__(self, seed: int = 3) -> None:
        self.k = k = Kernel(clock="virtual", seed=seed)
        self.lab = k.create("lab")
        self.r = k.create("lab.r")
        self.r.ip.forwarding = 1
        self.h = {}
        for n in (1, 2, 3):
            h = self.h[n] = k.create(f"lab.h{n}")
            connect(h, f"10.0.{n}.1/24", self.r, f"10.0.{n}.2/24")
            add_route(h, "default", f"10.0.{n}.2")
        k.run(1)

    def udp(self, a: int, b: int) -> bool:
        return udp_delivered(self.h[a], self.h[b], f"10.0.{b}.1", timeout=0.5)


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_partition_list_heal_and_log(lab):
    out = ok(lab.lab, "fault partition h1,h2 h3")
    assert out == "partition 1: h1,h2 | h3\n"
    assert lab.udp(1, 2) and not lab.udp(1, 3) and not lab.udp(3, 2)
    listing = ok(lab.lab, "fault list")
    assert "Partitions:" in listing
    row = next(line for line in listing.splitlines() if line.strip().startswith("1 "))
    assert row.split()[:5] == ["1", "active", "1.000000", "-", "2"]
    assert row.endswith("h1,h2 | h3")
    # from the base vnet the names are full
    assert ok(lab.k, "fault list").splitlines()[2].endswith("lab.h1,lab.h2 | lab.h3")
    ok(lab.lab, "fault heal 1")
    assert lab.udp(1, 3)
    assert ok(lab.lab, "fault list") == "no faults\n"
    past = ok(lab.lab, "fault list -a")
    assert re.search(r"\b1 healed +1\.000000 +\d+\.\d{6} +2 +h1,h2 \| h3", past)
    log = ok(lab.lab, "fault log").splitlines()
    assert log[0] == "    1.000000  partition 1: lab.h1,lab.h2 | lab.h3"
    assert log[1].split()[1:] == ["heal", "1"]


def test_partition_counter_in_netstat(lab):
    ok(lab.lab, "fault partition h1 h3")
    assert not lab.udp(1, 3)
    out = lab.h[3].cmd("netstat -s -p ip").output
    assert "\t1 packet dropped by fault injection\n" in out


def test_scheduled_faults_with_at_and_in(lab):
    ok(lab.lab, "fault partition h1 h2 at 3")
    ok(lab.lab, "fault heal at 4500ms")
    ok(lab.lab, "fault crash h3 in 2s")
    assert ok(lab.lab, "fault list").splitlines() == [
        "Scheduled:", "          At  Fault",
        "    3.000000  partition 1: lab.h1 | lab.h2",
        "    3.000000  crash lab.h3",
        "    4.500000  heal 1",  # from a subtree: the partitions of the subtree, one by one
    ]
    lab.k.run(5)
    times = [(e.time, e.action) for e in Faults.of(lab.k).events]
    assert times == [(3.0, "partition"), (3.0, "crash"), (4.5, "heal")]


def test_heal_all_from_a_subtree_heals_only_its_partitions():
    lab = Lab()
    other = lab.k.create("other")
    o1, o2 = lab.k.create("other.a"), lab.k.create("other.b")
    ok(lab.k, "fault partition other.a other.b")
    ok(lab.lab, "fault partition h1 h2")
    ok(lab.lab, "fault heal")
    faults = Faults.of(lab.k)
    assert [p.state for p in faults.partitions] == ["active", "healed"]
    fails(lab.lab, "fault heal 1")  # not this subtree's: "no such partition"
    fails(other, "fault heal 2")  # already healed, and not other's either
    ok(other, "fault heal")
    assert [p.state for p in faults.partitions] == ["healed", "healed"]
    assert o1.ip.pfil_in is None and o2.ip.pfil_in is None


def test_cut_and_restore_with_vnet_prefixed_interface(lab):
    ok(lab.lab, "fault cut h1:epair0a")
    assert not lab.udp(1, 2) and lab.udp(2, 3)
    out = ok(lab.lab, "fault list")
    assert "Cut links:" in out
    row = out.splitlines()[-1].split()
    assert row[0] == "active" and row[-3:] == ["h1:epair0a", "-", "r:epair0b"]
    assert int(row[3]) >= 1
    ok(lab.r, "fault restore epair0b")  # the other end, from the router itself
    assert lab.udp(1, 2)


def test_impair_now_and_later(lab):
    ok(lab.lab, "fault impair -b h1:epair0a delay 40ms loss 0% at 2")
    h1_if = lab.h[1].ifaces["epair0a"]
    assert h1_if.pipe is None
    lab.k.run(1)
    assert h1_if.pipe.delay_ns == 40_000_000 and h1_if.peer.pipe.delay_ns == 40_000_000
    ok(lab.h[1], "fault impair epair0a clear")
    assert h1_if.pipe is None and h1_if.peer.pipe is not None
    assert "impair lab.h1:epair0a (both ends) delay 40ms loss 0%" in ok(lab.lab, "fault log")


def test_crash_and_restart(lab):
    ok(lab.lab, "fault crash h2")
    assert not lab.udp(1, 2)
    out = ok(lab.lab, "fault list")
    assert "Crashed vnets:" in out
    row = out.splitlines()[-1]
    assert row.split()[0] == "crashed" and row.endswith("h2 (0 tcp, 0 listen, 0 udp/raw)")
    assert int(row.split()[3]) >= 1  # the datagram (or ARP) reached a dead interface
    fails(lab.lab, "fault crash h2")
    ok(lab.lab, "fault restart h2")
    fails(lab.lab, "fault restart h2")
    assert lab.udp(1, 2)


@pytest.mark.parametrize(("line", "status", "message"), [
    ("fault frobnicate", 64, "unknown command 'frobnicate'"),
    ("fault partition h1", 64, "usage: fault "),
    ("fault partition h1, h2", 64, "bad group 'h1,'"),
    ("fault partition h1 h1", 1, "on both sides"),
    ("fault partition h1 nosuch", 1, "no such vnet: nosuch"),
    ("fault partition h1 h2 at", 64, "'at' requires a time"),
    ("fault partition h1 h2 in -1", 1, "bad time '-1'"),
    ("fault crash h1 at", 64, "'at' requires a time"),
    ("fault crash h1 at soon", 1, "bad time 'soon'"),
    ("fault crash h1 at 0.5", 1, "in the past"),
    ("fault crash h1 h2", 64, "expected one vnet name"),
    ("fault heal", 1, "no partition to heal"),
    ("fault heal x", 1, "bad partition id 'x'"),
    ("fault heal 7", 1, "no such partition: 7"),
    ("fault cut h1:lo0", 1, "not an epair link"),
    ("fault cut h1:epair9a", 1, "interface h1:epair9a does not exist"),
    ("fault restore h1:epair0a", 1, "is not cut"),
    ("fault impair h1:epair0a", 64, "no settings given"),
    ("fault impair h1:epair0a delay", 64, "'delay' requires a value"),
    ("fault impair h1:epair0a colour red", 64, "unknown setting 'colour'"),
    ("fault impair h1:epair0a loss 200%", 1, "not between 0 and 1"),
    ("fault list -x", 64, "usage: fault "),
    ("fault log now", 64, "usage: fault "),
])
def test_bad_input_is_one_line(lab, line, status, message):
    assert message in fails(lab.lab, line, status)
    assert Faults.of(lab.k).scheduled() == [] and Faults.of(lab.k).events == []


def test_names_are_relative_and_confined_to_the_subtree(lab):
    lab.k.create("outside")
    assert "no such vnet: outside" in fails(lab.lab, "fault crash outside")
    assert "no such vnet: lab" in fails(lab.r, "fault crash lab")
    ok(lab.k, "fault crash outside")  # the base vnet reaches every vnet
    assert ok(lab.lab, "fault list") == "no faults\n"  # not this subtree's fault
    assert "outside" in ok(lab.k, "fault list")
