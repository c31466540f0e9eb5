"""if_bridge(4) learning bridges and hubs in virtual time: learning, ageing, flooding,
member flags, an address on the bridge, loops, and members leaving cleanly."""

from __future__ import annotations

import re

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.net.if_bridge import Bridge
from vimage.net.ifnet import IFF_L2, IFF_PROMISC
from vimage.wire.ethernet import BROADCAST, ETHERTYPE_ARP_BYTES


def ok(vnet, line):
    res = vnet.cmd(line)
    assert res.status == 0, f"{line}: {res.output}"
    return res.output


class Lan:
    """A switch vnet `sw` with `kind`0 and one host vnet per port, 10.0.0.N/24."""

    def __init__(self, n=3, kind="bridge", seed=1):
        self.k = Kernel(clock="virtual", seed=seed)
        self.sw = self.k.create("sw")
        self.hosts = []
        self.ports = []  # the switch-side ends, epairNa
        ok(self.sw, f"ifconfig {kind} create")
        self.br: Bridge = self.sw.ifaces[f"{kind}0"]
        for i in range(n):
            host = self.k.create(f"h{i + 1}")
            a, b = self.k.epair(self.sw)
            b.move_to(host)
            ok(host, f"ifconfig {b.name} 10.0.0.{i + 1}/24 up")
            ok(self.sw, f"ifconfig {a.name} up")
            ok(self.sw, f"ifconfig {self.br.name} addm {a.name}")
            self.hosts.append(host)
            self.ports.append(a)
        ok(self.sw, f"ifconfig {self.br.name} up")
        self.k.run(1)  # gratuitous ARP floods; the bridge learns every host

    def mac(self, i):
        return self.hosts[i].ifaces[self.ports[i].peer.name].mac

    def udp(self, src, dst, port=9000, payload=b"hello"):
        """Send one datagram from host `src` to host `dst`; True if it arrived."""
        rx = self.hosts[dst].socket(2, 2)
        rx.bind(("", port))
        rx.setblocking(False)
        tx = self.hosts[src].socket(2, 2)
        tx.sendto(payload, (f"10.0.0.{dst + 1}", port))
        self.k.run(0.5)
        try:
            return rx.recv(100) == payload
        except BlockingIOError:
            return False
        finally:
            rx.close()
            tx.close()


def frames_to(session, mac):
    return [f for _, f in session.packets if f[:6] == mac]


def test_learnt_unicast_leaves_by_exactly_one_port():
    lan = Lan(3)
    assert lan.udp(0, 1)  # ARP resolved both ways; both stations learnt
    cache = {mac for mac, *_ in lan.br.addresses()}
    assert {lan.mac(0), lan.mac(1), lan.mac(2)} <= cache
    with open_capture(lan.ports[2]) as third, open_capture(lan.ports[1]) as second:
        assert lan.udp(0, 1, payload=b"unicast")
        assert frames_to(third, lan.mac(1)) == []  # not seen on the third port
        assert any(b"unicast" in f for f in frames_to(second, lan.mac(1)))
    assert lan.k.sched.errors == 0


def test_unknown_unicast_and_broadcast_are_flooded():
    lan = Lan(3)
    assert lan.udp(0, 1)
    ok(lan.sw, "ifconfig bridge0 flush")
    assert lan.br.addresses() == []
    with open_capture(lan.ports[2]) as third:
        assert lan.udp(0, 1, payload=b"unknown")  # h2 unknown again: flooded
        assert any(b"unknown" in f for f in frames_to(third, lan.mac(1)))
    with open_capture(lan.ports[2]) as third, open_capture(lan.ports[0]) as first:
        lan.hosts[1].cmd("ping -c 1 -t 1 10.0.0.77")  # an ARP request: broadcast
        lan.k.run(1)
        assert any(f[12:14] == ETHERTYPE_ARP_BYTES for f in frames_to(third, BROADCAST))
        assert any(f[12:14] == ETHERTYPE_ARP_BYTES for f in frames_to(first, BROADCAST))


def test_ageing_in_virtual_time():
    lan = Lan(2)
    ok(lan.sw, "ifconfig bridge0 timeout 30")
    assert "timeout 30" in ok(lan.sw, "ifconfig bridge0")
    assert lan.udp(0, 1)
    lan.k.run(10)
    lines = ok(lan.sw, "ifconfig bridge0 addr").splitlines()
    assert len(lines) == 2
    for line in lines:  # FreeBSD's format: MAC Vlan1 MEMBER SECONDS-LEFT flags=0<>
        m = re.fullmatch(r"([0-9a-f]{2}(:[0-9a-f]{2}){5}) Vlan1 (epair\d+a) (\d+) flags=0<>",
                         line)
        assert m is not None, line
        assert 19 <= int(m.group(4)) <= 20
    assert lan.k.sched.pending_timers(lan.sw) >= 1
    lan.k.run(21)
    assert lan.br.addresses() == []
    assert ok(lan.sw, "ifconfig bridge0 addr") == ""
    assert lan.br.ageing is None  # idle: no timer armed


def test_refresh_keeps_an_entry_alive():
    lan = Lan(2)
    ok(lan.sw, "ifconfig bridge0 timeout 20")
    for _ in range(4):
        assert lan.udp(0, 1) and lan.udp(1, 0)  # both stations send: both refreshed
        lan.k.run(10)
    assert {lan.mac(0), lan.mac(1)} <= {mac for mac, *_ in lan.br.addresses()}


def test_static_deladdr_maxaddr():
    lan = Lan(3)
    ok(lan.sw, "ifconfig bridge0 flush")
    mac = "02:00:00:00:00:99"
    ok(lan.sw, f"ifconfig bridge0 static {lan.ports[2].name} {mac}")
    out = ok(lan.sw, "ifconfig bridge0 addr")
    assert f"{mac} Vlan1 {lan.ports[2].name} 0 flags=1<STATIC>" in out
    lan.k.run(5000)
    assert mac in ok(lan.sw, "ifconfig bridge0 addr")  # a static entry never ages
    ok(lan.sw, "ifconfig bridge0 flush")
    assert mac in ok(lan.sw, "ifconfig bridge0 addr")  # flush keeps static entries
    ok(lan.sw, f"ifconfig bridge0 deladdr {mac}")
    assert mac not in ok(lan.sw, "ifconfig bridge0 addr")
    ok(lan.sw, "ifconfig bridge0 maxaddr 1")
    assert lan.udp(0, 1)
    assert len(lan.br.addresses()) == 1 and lan.br.exceeded > 0
    assert "maxaddr 1 " in ok(lan.sw, "ifconfig bridge0")
    res = lan.sw.cmd(f"ifconfig bridge0 static nosuch0 {mac}")
    assert res.status == 1 and "BRDGSADDR nosuch0: No such file or directory" in res.output


def test_private_ports_do_not_talk():
    lan = Lan(3)
    ok(lan.sw, f"ifconfig bridge0 private {lan.ports[0].name} private {lan.ports[1].name}")
    assert "flags=943<LEARNING,DISCOVER,PRIVATE,AUTOEDGE,AUTOPTP>" in ok(lan.sw,
                                                                          "ifconfig bridge0")
    assert not lan.udp(0, 1)
    assert lan.udp(0, 2) and lan.udp(2, 1)
    ok(lan.sw, f"ifconfig bridge0 -private {lan.ports[0].name}")
    assert lan.udp(0, 1)


def test_span_port_sees_everything():
    lan = Lan(3)
    a, b = lan.k.epair(lan.sw)
    ok(lan.sw, f"ifconfig {a.name} up")
    ok(lan.sw, f"ifconfig bridge0 span {a.name}")
    assert f"member: {a.name} flags=8<SPAN>" in ok(lan.sw, "ifconfig bridge0")
    with open_capture(a) as span:
        assert lan.udp(0, 1, payload=b"spanned")
        assert any(b"spanned" in f for _, f in span.packets)
    ok(lan.sw, f"ifconfig bridge0 -span {a.name}")
    assert a.name not in ok(lan.sw, "ifconfig bridge0")


def test_learn_and_discover_flags():
    lan = Lan(3)
    ok(lan.sw, "ifconfig bridge0 flush")
    ok(lan.sw, f"ifconfig bridge0 -learn {lan.ports[0].name}")
    assert lan.udp(0, 1)
    assert lan.mac(0) not in {mac for mac, *_ in lan.br.addresses()}
    assert f"member: {lan.ports[0].name} flags=142<DISCOVER,AUTOEDGE,AUTOPTP>" in ok(
        lan.sw, "ifconfig bridge0")
    ok(lan.sw, f"ifconfig bridge0 learn {lan.ports[0].name} -discover {lan.ports[2].name}")
    ok(lan.sw, "ifconfig bridge0 flush")
    with open_capture(lan.ports[2]) as third:
        lan.udp(0, 1, payload=b"nodiscover")  # unknown unicast: not to a -discover port
        assert not any(b"nodiscover" in f for _, f in third.packets)


def test_address_on_the_bridge():
    lan = Lan(2)
    ok(lan.sw, "ifconfig bridge0 inet 10.0.0.254/24")
    res = lan.hosts[0].cmd("ping -c 2 10.0.0.254")
    assert res.status == 0 and "2 packets received" in res.output, res.output
    res = lan.sw.cmd("ping -c 1 10.0.0.2")
    assert res.status == 0, res.output
    arp = ok(lan.sw, "arp -an")
    assert "on bridge0" in arp


def test_loop_between_two_ports_is_bounded():
    lan = Lan(1)
    a, b = lan.k.epair(lan.sw)  # both ends of one cable in the bridge: a loop
    ok(lan.sw, f"ifconfig {a.name} up")
    ok(lan.sw, f"ifconfig {b.name} up")
    ok(lan.sw, f"ifconfig bridge0 addm {a.name} addm {b.name}")
    lan.br.max_per_tick = 500
    lan.hosts[0].cmd("ping -c 1 -t 1 10.0.0.99")  # a broadcast ARP request enters the loop
    lan.k.run(2)  # returns: the storm is bounded
    assert lan.br.storm_drops > 0
    assert lan.br.iqdrops >= lan.br.storm_drops
    assert not lan.k.sched.queue
    assert lan.k.sched.errors == 0


def test_three_port_loop_storm_terminates():
    lan = Lan(1)
    ends = [lan.k.epair(lan.sw) for _ in range(2)]
    for a, b in ends:
        ok(lan.sw, f"ifconfig {a.name} up")
        ok(lan.sw, f"ifconfig {b.name} up")
        ok(lan.sw, f"ifconfig bridge0 addm {a.name} addm {b.name}")
    lan.br.max_per_tick = 300
    lan.hosts[0].cmd("ping -c 1 -t 1 10.0.0.99")
    lan.k.run(2)
    assert lan.br.storm_drops > 0 and not lan.k.sched.queue


def test_members_leave_cleanly():
    lan = Lan(3)
    p0, p1, p2 = lan.ports
    assert all(p.flags & IFF_PROMISC and p.flags & IFF_L2 and p.l2 is lan.br for p in lan.ports)
    assert "PROMISC" in ok(lan.sw, f"ifconfig {p0.name}")
    ok(lan.sw, f"ifconfig bridge0 deletem {p0.name}")
    assert p0.l2 is None and not p0.flags & (IFF_PROMISC | IFF_L2)
    assert lan.mac(0) not in {mac for mac, *_ in lan.br.addresses()}
    assert p0.name not in ok(lan.sw, "ifconfig bridge0")
    res = lan.sw.cmd(f"ifconfig bridge0 deletem {p0.name}")
    assert res.status == 1 and f"BRDGDEL {p0.name}" in res.output
    other = lan.k.create("other")
    p1.move_to(other)  # a member moved away leaves the bridge
    assert p1 not in lan.br.members and p1.l2 is None and not p1.flags & IFF_L2
    ok(lan.sw, f"ifconfig {p2.name} destroy")
    assert lan.br.members == {}
    assert lan.br.addresses() == []


def test_destroying_the_bridge_releases_members():
    lan = Lan(2)
    ok(lan.sw, "ifconfig bridge0 destroy")
    assert all(p.l2 is None and not p.flags & (IFF_PROMISC | IFF_L2) for p in lan.ports)
    assert lan.br.ageing is None and lan.br.members == {}
    ok(lan.sw, f"ifconfig {lan.ports[0].name} 10.0.0.100/24")  # back to a plain interface
    res = lan.sw.cmd("ping -c 1 10.0.0.1")
    assert res.status == 0, res.output


def test_vnet_destroy_leaves_nothing():
    lan = Lan(2)
    assert lan.br.ageing is not None
    receivers = {lan.br, *lan.ports}
    lan.k.destroy("sw")
    assert lan.k.sched.pending_timers(lan.sw) == 0
    assert lan.k.sched.queued_for(receivers) == 0
    assert lan.br.members == {} and lan.br.ageing is None
    # the host ends (born in sw, moved away) died with sw
    assert all(not h.ifaces.keys() - {"lo0"} for h in lan.hosts)
    lan.k.run(2000)


def test_addm_errors():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    ok(v, "ifconfig bridge create")
    ok(v, "ifconfig bridge create")
    a, _ = k.epair(v)
    ok(v, f"ifconfig bridge0 addm {a.name}")
    cases = {
        f"ifconfig bridge0 addm {a.name}": f"BRDGADD {a.name}: File exists",
        f"ifconfig bridge1 addm {a.name}": f"BRDGADD {a.name}: Device busy",
        "ifconfig bridge0 addm nosuch": "BRDGADD nosuch: No such file or directory",
        "ifconfig bridge0 addm lo0": "BRDGADD lo0: Invalid argument",
        "ifconfig bridge0 addm bridge1": "BRDGADD bridge1: Invalid argument",
        "ifconfig bridge0 addm": "'addm' requires argument",
    }
    for line, message in cases.items():
        res = v.cmd(line)
        assert res.status != 0 and message in res.output, (line, res.output)
    ok(v, "ifconfig bridge7 create")
    assert "bridge7" in ok(v, "ifconfig -l")


def test_member_mtu_follows_the_bridge():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    a, _ = k.epair(v)
    c, _ = k.epair(v)
    ok(v, f"ifconfig {a.name} mtu 9000")
    ok(v, f"ifconfig bridge create addm {a.name} addm {c.name}")
    assert v.ifaces["bridge0"].mtu == 9000 and c.mtu == 9000


def test_hub_floods_every_frame():
    lan = Lan(3, kind="hub")
    assert lan.udp(0, 1)
    assert lan.udp(0, 1)  # ARP is resolved: a plain unicast frame now
    with open_capture(lan.ports[2]) as third:
        assert lan.udp(0, 1, payload=b"hubbed")
        assert any(b"hubbed" in f for f in frames_to(third, lan.mac(1)))
    assert lan.br.addresses() == []  # a hub learns nothing
    out = ok(lan.sw, "ifconfig hub0")
    assert "groups: hub" in out and f"member: {lan.ports[0].name} flags=0<>" in out
    assert "proto rstp" not in out


@pytest.mark.parametrize("kind", ["bridge", "hub"])
def test_bridge_down_passes_frames_to_members(kind):
    lan = Lan(2, kind=kind)
    ok(lan.sw, f"ifconfig {kind}0 down")
    assert not lan.udp(0, 1)
    ok(lan.sw, f"ifconfig {kind}0 up")
    assert lan.udp(0, 1)


def test_ifconfig_bridge_shows_members_newest_first():
    lan = Lan(2)
    out = ok(lan.sw, "ifconfig bridge0")
    assert out.splitlines()[0].startswith("bridge0: flags=8843<UP,BROADCAST,RUNNING,SIMPLEX,"
                                          "MULTICAST> metric 0 mtu 1500")
    members = re.findall(r"member: (\S+) flags=143<LEARNING,DISCOVER,AUTOEDGE,AUTOPTP>", out)
    assert members == [lan.ports[1].name, lan.ports[0].name]
    assert f"ifmaxaddr 0 port {lan.ports[0].index} priority 128 path cost 2000" in out
    assert "\tgroups: bridge" in out and "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>" in out
    assert "maxaddr 2000 timeout 1200" in out


def test_sticky_entries_neither_age_nor_move():
    lan = Lan(3)
    ok(lan.sw, "ifconfig bridge0 flushall")
    ok(lan.sw, f"ifconfig bridge0 sticky {lan.ports[0].name} timeout 10")
    assert "flags=153<LEARNING,DISCOVER,STICKY,AUTOEDGE,AUTOPTP>" in ok(lan.sw,
                                                                         "ifconfig bridge0")
    assert lan.udp(0, 1)
    line = f"{lan.mac(0).hex(':')} Vlan1 {lan.ports[0].name} 0 flags=2<STICKY>"
    assert line in ok(lan.sw, "ifconfig bridge0 addr")
    lan.k.run(60)
    ok(lan.sw, "ifconfig bridge0 flush")  # flush takes dynamic entries only
    assert line in ok(lan.sw, "ifconfig bridge0 addr")
    ok(lan.sw, "ifconfig bridge0 flushall")
    assert ok(lan.sw, "ifconfig bridge0 addr") == ""


def test_junk_frames_into_bridge_and_hub_members_are_survived():
    """Malformed frames (runts, multicast sources, random bytes) are counted and
    dropped; the kernel loop never raises and the LAN keeps working."""
    import random

    for kind in ("bridge", "hub"):
        lan = Lan(3, kind=kind)
        rng = random.Random(5)
        for n in range(400):
            size = rng.choice((0, 1, 6, 13, 14, 17, 18, 60, 200))
            frame = bytes(rng.getrandbits(8) for _ in range(size))
            if n % 3 == 0 and size >= 14:  # a multicast source address
                frame = frame[:6] + b"\x01" + frame[7:]
            lan.k.sched.queue.append((lan.ports[n % 3], frame))
        lan.k.run(1)
        assert lan.k.sched.errors == 0
        assert sum(p.ierrors for p in lan.ports) > 0
        assert lan.udp(0, 1) and lan.udp(2, 0)


def test_kernel_cloners():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    with k.sched.cond:
        hub = k.cloner("hub").create(v)
        br = k.cloner("bridge").create(v)
        vlan = k.cloner("vlan").create(v)
    assert (hub.name, hub.kind, br.name, br.kind, vlan.name) == (
        "hub0", "hub", "bridge0", "bridge", "vlan0")


def test_bridge_mtu_sets_every_member():
    lan = Lan(2)
    ok(lan.sw, "ifconfig bridge0 mtu 9000")
    assert lan.br.mtu == 9000 and all(p.mtu == 9000 for p in lan.ports)
    res = lan.sw.cmd("ifconfig bridge0 mtu 20")
    assert res.status == 1 and "SIOCSIFMTU" in res.output and lan.br.mtu == 9000
