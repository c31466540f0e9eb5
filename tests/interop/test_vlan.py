"""802.1Q and bridging against Linux through TAP: a vimage VLAN talking to a Linux VLAN
interface (`ip link add link X name X.10 type vlan id 10`) on the same wire, and a Linux
namespace that joins a vimage bridge through a TAP member and reaches a vnet behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vimage.net.tap import create_tap

if TYPE_CHECKING:
    from conftest import Lab, Pair

PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")


def test_vlan_to_a_linux_vlan_interface(pair: Pair) -> None:
    """VLAN 10 on both ends of the TAP link: pings both ways, tagged on the wire."""
    lab, link, vnet = pair.lab, pair.link, pair.vnet
    try:
        lab.ip(link.ns, "link", "add", "link", link.dev, "name", "lvl10", "type", "vlan",
               "id", "10")
    except AssertionError as exc:
        if "Unknown device type" in str(exc):
            pytest.skip("the Linux kernel has no 802.1Q VLAN devices (module 8021q not "
                        "loaded); test_tagged_echo_through_linux_packet_socket covers the "
                        "wire format against Linux")
        raise
    lab.ip(link.ns, "addr", "add", "10.9.10.2/24", "dev", "lvl10")
    lab.ip(link.ns, "link", "set", "lvl10", "up")
    for line in (f"ifconfig vlan create vlan 10 vlandev {link.tap.name}",
                 "ifconfig vlan0 10.9.10.1/24 vlanpcp 3 up"):
        res = vnet.cmd(line)
        assert res.status == 0, res.output
    res = vnet.cmd("ping -c 3 -i 0.2 10.9.10.2")
    assert res.status == 0 and "3 packets received" in res.output, res.output
    res = lab.run(link.ns, lab.need("ping"), "-c", "3", *PING_FAST, "10.9.10.1")
    assert res.returncode == 0 and "3 received" in res.stdout, res.stdout + res.stderr
    vlan0 = vnet.ifaces["vlan0"]
    assert vlan0.ipackets >= 3 and vlan0.opackets >= 3
    # Linux received our frames on its VLAN interface, not on the untagged device
    stats = lab.ip(link.ns, "-s", "link", "show", "lvl10")
    assert "RX:" in stats
    # the untagged link still works beside it
    res = vnet.cmd(f"ping -c 1 {link.linux_addr}")
    assert res.status == 0, res.output


# Runs in the Linux namespace: send a tagged ICMP echo request (built by scapy) to our
# VLAN through a packet socket, and wait for the reply; Linux strips the tag from what it
# receives into PACKET_AUXDATA (as its own VLAN code does), which we print with the reply.
_LINUX_ECHO = r"""
import socket, struct, sys, time
from scapy.all import ICMP, IP, Dot1Q, Ether, raw
dev, our_mac, linux_mac = sys.argv[1:4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((dev, 0))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
req = (Ether(dst=our_mac, src=linux_mac) / Dot1Q(vlan=10, prio=4)
       / IP(src="10.9.10.2", dst="10.9.10.1") / ICMP(id=77, seq=1) / b"vimage-vlan")
s.send(raw(req))
s.settimeout(1.0)
end = time.monotonic() + 8
while time.monotonic() < end:
    try:
        data, anc, _flags, _addr = s.recvmsg(4096, 1024)
    except TimeoutError:
        continue
    tci = None
    for level, kind, value in anc:
        if level == 263 and kind == 8:
            status, _len, _snap, _mac, _net, vtci, _tpid = struct.unpack("IIIHHHH", value[:20])
            if status & 0x10:  # TP_STATUS_VLAN_VALID
                tci = vtci
    pkt = Ether(data)
    if ICMP in pkt and pkt[ICMP].type == 0 and pkt[ICMP].id == 77:
        print("reply", tci, pkt[IP].src, bytes(pkt[ICMP].payload).decode())
        sys.exit(0)
print("no reply")
sys.exit(1)
"""


def test_tagged_echo_through_linux_packet_socket(pair: Pair) -> None:
    """Linux sends a scapy-built Dot1Q(vlan=10, prio=4) echo request; our vlan0 answers
    tagged with VID 10 and its PCP 3, which Linux's receive path parses."""
    lab, link, vnet = pair.lab, pair.link, pair.vnet
    for line in (f"ifconfig vlan create vlan 10 vlandev {link.tap.name}",
                 "ifconfig vlan0 10.9.10.1/24 vlanpcp 3 up",
                 f"arp -s 10.9.10.2 {link.linux_mac}"):
        res = vnet.cmd(line)
        assert res.status == 0, (line, res.output)
    res = lab.python(link.ns, _LINUX_ECHO, link.dev, link.our_mac, link.linux_mac)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == ["reply", str((3 << 13) | 10), "10.9.10.1", "vimage-vlan"]
    assert vnet.ifaces["vlan0"].ipackets == 1


def test_linux_namespace_on_a_vimage_bridge(lab: Lab) -> None:
    """Linux (10.9.0.2) - TAP - [bridge0 in vnet sw] - epair - vnet h (10.9.0.1)."""
    sw = lab.vnet("sw")
    host = lab.vnet("h")
    ns = lab.netns()
    tap = create_tap(sw, netns=ns)
    lab.taps.append(tap)
    a, b = lab.kernel.epair(sw)
    b.move_to(host)
    for vnet, line in ((host, f"ifconfig {b.name} 10.9.0.1/24 up"),
                       (sw, f"ifconfig {a.name} up"), (sw, f"ifconfig {tap.name} up"),
                       (sw, f"ifconfig bridge create addm {tap.name} addm {a.name} up"),
                       (sw, "ifconfig bridge0 10.9.0.3/24")):
        res = vnet.cmd(line)
        assert res.status == 0, (line, res.output)
    lab.ip(ns, "addr", "add", "10.9.0.2/24", "dev", tap.linux_name)
    lab.ip(ns, "link", "set", tap.linux_name, "up")
    lab.start()
    res = lab.run(ns, lab.need("ping"), "-c", "3", *PING_FAST, "10.9.0.1")
    assert res.returncode == 0 and "3 received" in res.stdout, res.stdout + res.stderr
    res = host.cmd("ping -c 2 -i 0.2 10.9.0.2")
    assert res.status == 0 and "2 packets received" in res.output, res.output
    res = lab.run(ns, lab.need("ping"), "-c", "1", *PING_FAST, "10.9.0.3")  # the bridge
    assert res.returncode == 0, res.stdout + res.stderr
    addr = sw.cmd("ifconfig bridge0 addr").output
    assert f" Vlan1 {tap.name} " in addr and f" Vlan1 {a.name} " in addr, addr
