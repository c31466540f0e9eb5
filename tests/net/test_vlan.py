"""vlan(4) interfaces in virtual time: tagging with PCP, demultiplexing by (parent, VID),
MTU, unknown VIDs, parents going away, and ifconfig's view."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.net.if_vlan import Vlan
from vimage.net.ifnet import IFF_L2
from vimage.wire import vlan as wvlan


def ok(vnet, line):
    res = vnet.cmd(line)
    assert res.status == 0, f"{line}: {res.output}"
    return res.output


@pytest.fixture
def trunk():
    """Vnets a and b joined by one epair (a: epair0a, b: epair0b) with addresses on the
    untagged link and VLAN 10 on both ends."""
    k = Kernel(clock="virtual", seed=3)
    a, b = k.create("a"), k.create("b")
    ea, eb = k.epair(a)
    eb.move_to(b)
    ok(a, "ifconfig epair0a 10.0.0.1/24 up")
    ok(b, "ifconfig epair0b 10.0.0.2/24 up")
    assert ok(a, "ifconfig vlan create vlan 10 vlandev epair0a") == "vlan0\n"
    ok(a, "ifconfig vlan0 10.10.0.1/24 up")
    assert ok(b, "ifconfig epair0b.10 create") == "epair0b.10\n"
    ok(b, "ifconfig epair0b.10 10.10.0.2/24 up")
    k.run(1)
    return k, a, b, ea, eb


def test_ping_over_a_vlan_tagged_with_its_vid(trunk):
    k, a, b, ea, eb = trunk
    with open_capture(ea) as cap:
        res = a.cmd("ping -c 2 10.10.0.2")
        assert res.status == 0 and "2 packets received" in res.output, res.output
    tagged = [wvlan.parse(f) for _, f in cap.packets if f[12:14] == b"\x81\x00"]
    assert tagged and all(t.vid == 10 and t.pcp == 0 for t in tagged)
    assert len(tagged) == len(cap.packets)  # nothing of the VLAN left untagged
    assert all(t.ethertype in (0x0800, 0x0806) for t in tagged)
    # the untagged link on the parents still works beside it
    assert a.cmd("ping -c 1 10.0.0.2").status == 0
    vlan0 = a.ifaces["vlan0"]
    assert vlan0.mac == ea.mac and vlan0.opackets >= 2 and vlan0.ipackets >= 2


def test_pcp_on_output(trunk):
    k, a, b, ea, eb = trunk
    ok(a, "ifconfig vlan0 vlanpcp 5")
    assert "vlan: 10 vlanproto: 802.1q vlanpcp: 5 parent interface: epair0a" in ok(
        a, "ifconfig vlan0")
    with open_capture(ea, direction="out") as cap:
        assert a.cmd("ping -c 1 10.10.0.2").status == 0
    assert {wvlan.parse(f).pcp for _, f in cap.packets} == {5}
    res = a.cmd("ifconfig vlan0 vlanpcp 8")
    assert res.status == 1 and "SIOCSETVLAN" in res.output


def test_vlans_are_separate_and_unknown_vid_is_counted(trunk):
    k, a, b, ea, eb = trunk
    ok(a, "ifconfig vlan create vlan 20 vlandev epair0a")
    ok(a, "ifconfig vlan1 10.20.0.1/24 up")
    drops = eb.iqdrops
    assert a.cmd("ping -c 1 -t 1 10.20.0.2").status != 0  # b has no VLAN 20
    assert eb.l2.unknown_vid > 0 and eb.iqdrops > drops
    # VLAN 10 and the untagged link are untouched
    assert a.cmd("ping -c 1 10.10.0.2").status == 0
    assert b.ifaces["epair0b.10"].ipackets > 0


def test_tagged_frame_without_vlans_is_counted_and_dropped():
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    ea, eb = k.epair(a)
    eb.move_to(b)
    ok(a, "ifconfig epair0a up")
    ok(b, "ifconfig epair0b up")
    frame = wvlan.tag(bytes(eb.mac) + bytes(ea.mac) + b"\x08\x00" + b"\x45" + bytes(40), 7)
    ea.output(frame)
    k.run(0.1)
    assert eb.iqdrops == 1  # unknown ethertype at the link layer
    ok(b, "ifconfig epair0b.9 create")
    ea.output(frame)
    ea.output(frame[:17])  # a runt tag
    k.run(0.1)
    assert eb.l2.unknown_vid == 1 and eb.iqdrops == 2 and eb.ierrors == 1
    assert k.sched.errors == 0


def test_mtu_follows_the_parent():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    k.epair(v)
    ok(v, "ifconfig epair0a mtu 9000")
    ok(v, "ifconfig epair0a.5 create")
    assert v.ifaces["epair0a.5"].mtu == 9000  # epair has VLAN_MTU, as on FreeBSD
    ok(v, "ifconfig bridge create")
    ok(v, "ifconfig vlan create vlan 3 vlandev bridge0")
    assert v.ifaces["vlan0"].mtu == 1496  # no VLAN_MTU: the tag comes off the MTU
    ok(v, "ifconfig vlan create vlan 4 vlandev vlan0")
    assert v.ifaces["vlan1"].mtu == 1492


def test_parent_destroyed_or_moved_detaches(trunk):
    k, a, b, ea, eb = trunk
    vlan0 = a.ifaces["vlan0"]
    other = k.create("other")
    ea.move_to(other)
    assert vlan0.parent is None and ea.l2 is None and not ea.flags & IFF_L2
    out = ok(a, "ifconfig vlan0")
    assert "vlan: 10 vlanproto: 802.1q vlanpcp: 0 parent interface: <none>" in out
    assert "status: no carrier" in out
    assert a.cmd("ping -c 1 -t 1 10.10.0.2").status != 0
    ok(b, "ifconfig epair0b destroy")
    dotted = b.ifaces["epair0b.10"]
    assert dotted.parent is None
    ok(b, "ifconfig epair0b.10 destroy")
    assert "epair0b.10" not in b.ifaces


def test_reconfigure_and_detach(trunk):
    k, a, b, ea, eb = trunk
    ok(a, "ifconfig vlan0 -vlandev")
    assert a.ifaces["vlan0"].parent is None and ea.l2 is None
    assert a.cmd("ping -c 1 -t 1 10.10.0.2").status != 0
    ok(a, "ifconfig vlan0 vlan 10 vlandev epair0a")
    assert a.cmd("ping -c 1 10.10.0.2").status == 0
    ok(a, "ifconfig vlan0 vlan 11")  # a new tag on the same parent
    assert ea.l2.vlans.keys() == {11}
    assert a.cmd("ping -c 1 -t 1 10.10.0.2").status != 0
    ok(b, "ifconfig epair0b.10 vlan 11")
    assert a.cmd("ping -c 1 10.10.0.2").status == 0
    ok(a, "ifconfig vlan0 destroy")
    assert ea.l2 is None and not ea.flags & IFF_L2
    assert a.cmd("ping -c 1 10.0.0.2").status == 0


def test_vlan_moved_to_another_vnet_is_detached(trunk):
    k, a, b, ea, eb = trunk
    other = k.create("other")
    vlan0 = a.ifaces["vlan0"]
    vlan0.move_to(other)
    assert vlan0.parent is None and ea.l2 is None
    assert "parent interface: <none>" in ok(other, "ifconfig vlan0")


def test_errors():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    k.epair(v)
    ok(v, "ifconfig vlan create vlan 10 vlandev epair0a")
    cases = {
        "ifconfig vlan create vlan 10 vlandev epair0a": "SIOCSETVLAN: File exists",
        "ifconfig vlan create vlan 4095 vlandev epair0a": "SIOCSETVLAN: Invalid argument",
        "ifconfig vlan create vlan 0 vlandev epair0a": "SIOCSETVLAN: Invalid argument",
        "ifconfig vlan create vlan 11 vlandev nosuch": "SIOCSETVLAN: No such file or directory",
        "ifconfig vlan create vlan 11 vlandev lo0": "SIOCSETVLAN: Invalid argument",
        "ifconfig vlan create vlanproto 802.1ad": "802.1q only",
        "ifconfig vlan create vlan x vlandev epair0a": "bad vlan",
        "ifconfig nosuch.5 create": "SIOCIFCREATE2 (nosuch.5): No such file or directory",
        "ifconfig epair0a.10 create": "SIOCIFCREATE2 (epair0a.10): File exists",
        "ifconfig epair0a.x create": "SIOCIFCREATE2 (epair0a.x): Invalid argument",
    }
    for line, message in cases.items():
        res = v.cmd(line)
        assert res.status != 0 and message in res.output, (line, res.output)
    # nothing half-made was left behind
    assert sorted(i.name for i in v.ifaces.values() if isinstance(i, Vlan)) == ["vlan0"]
    ok(v, "ifconfig bridge create addm epair0b")
    res = v.cmd("ifconfig vlan create vlan 3 vlandev epair0b")
    assert res.status == 1 and "Device busy" in res.output


def test_ifconfig_output(trunk):
    k, a, b, ea, eb = trunk
    out = ok(a, "ifconfig vlan0").splitlines()
    assert out[0] == "vlan0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,MULTICAST> metric 0 mtu 1500"
    assert f"\tether {ea.mac.hex(':')}" in out
    assert "\tinet 10.10.0.1 netmask 0xffffff00 broadcast 10.10.0.255" in out
    assert "\tvlan: 10 vlanproto: 802.1q vlanpcp: 0 parent interface: epair0a" in out
    assert "\tgroups: vlan" in out
    assert "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>" in out
    assert ok(a, "ifconfig -l").split() == ["lo0", "epair0a", "vlan0"]


def test_vnet_destroy_leaves_nothing(trunk):
    k, a, b, ea, eb = trunk
    ok(b, "ifconfig vlan create vlan 30 vlandev epair0b")
    receivers = set(b.ifaces.values())
    k.destroy("b")
    assert k.sched.pending_timers(b) == 0 and k.sched.queued_for(receivers) == 0
    # epair0b went home to a (its pair was born there), without its VLANs
    assert eb.vnet is a and eb.l2 is None and not eb.flags & IFF_L2
    assert a.cmd("ping -c 1 10.10.0.2 -t 1").status != 0
    k.run(100)


def test_junk_tagged_frames_are_survived(trunk):
    """Random tagged frames of every length (any VID, any inner type) into a parent
    with VLANs: counted and dropped, never raised; the VLAN keeps working."""
    import random

    k, a, b, ea, eb = trunk
    rng = random.Random(7)
    for _ in range(400):
        size = rng.choice((12, 14, 16, 17, 18, 19, 30, 64))
        body = bytes(rng.getrandbits(8) for _ in range(max(0, size - 14)))
        vid = rng.choice((0, 10, 11, 4095))
        frame = (bytes(eb.mac) + bytes(ea.mac) + b"\x81\x00"
                 + (rng.getrandbits(4) << 12 | vid).to_bytes(2, "big") + body)[:size]
        k.sched.queue.append((eb, frame))
    k.run(1)
    assert k.sched.errors == 0
    assert eb.l2.unknown_vid > 0 and eb.ierrors > 0
    assert a.cmd("ping -c 1 10.10.0.2").status == 0
