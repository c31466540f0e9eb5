"""The ARP and IP sysctls FreeBSD's tests set (net.link.ether.inet.*, if_ether.c;
net.inet.ip.portrange.randomized, in_pcb.c), each doing what FreeBSD's does."""

from __future__ import annotations

import logging

import pytest
from scapy.all import ARP, Ether, raw

from vimage.kernel import Kernel
from vimage.netinet.arp import STATIC
from vimage.topo import connect
from vimage.wire import ipv4

OTHER_MAC = "02:00:00:00:00:77"


def _pair(seed: int = 1):
    k = Kernel(clock="virtual", seed=seed)
    a, b = k.create("a"), k.create("b")
    ea, eb = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    k.run(1)
    return k, a, b, ea, eb


def _arp(ifp, *, op: int, sha: str, spa: str, tpa: str, tha: str = "00:00:00:00:00:00",
         src: str | None = None):
    frame = Ether(dst="ff:ff:ff:ff:ff:ff", src=src or sha) / ARP(
        op=op, hwsrc=sha, psrc=spa, pdst=tpa, hwdst=tha)
    ifp.input(raw(frame))


def _messages(caplog) -> list[str]:
    return [r.getMessage().split(" (vnet")[0] for r in caplog.records]


def test_garp_rexmit_count_retransmits_with_backoff():
    k, a, _b, ea, _eb = _pair()
    assert a.cmd("sysctl -n net.link.ether.inet.garp_rexmit_count").output == "0\n"
    a.cmd("sysctl net.link.ether.inet.garp_rexmit_count=3")
    before = a.arp.stats.txrequests
    assert a.cmd("ifconfig epair0a inet 10.0.5.1/24 alias").status == 0
    sent = [a.arp.stats.txrequests - before]
    for step in (1.001, 2, 4, 30):  # retransmissions at 1, 3 and 7 seconds
        k.run(step)
        sent.append(a.arp.stats.txrequests - before)
    assert sent == [1, 2, 3, 4, 4]
    assert a.arp.garp == {} and k.sched.pending_timers(a) == len(
        [e for e in a.arp.table.values() if e.timer is not None])


def test_garp_rexmit_stops_when_the_address_goes():
    k, a, _b, _ea, _eb = _pair()
    a.cmd("sysctl net.link.ether.inet.garp_rexmit_count=5")
    a.cmd("ifconfig epair0a inet 10.0.5.1/24 alias")
    before = a.arp.stats.txrequests
    a.cmd("ifconfig epair0a inet 10.0.5.1 -alias")
    k.run(60)
    assert a.arp.stats.txrequests == before and a.arp.garp == {}


def test_garp_rexmit_leaves_no_timer_after_destroy():
    k, a, _b, _ea, _eb = _pair()
    a.cmd("sysctl net.link.ether.inet.garp_rexmit_count=16")
    a.cmd("ifconfig epair0a inet 10.0.5.1/24 alias")
    assert a.arp.garp
    k.destroy("a")
    assert k.sched.pending_timers(a) == 0


@pytest.mark.parametrize("log", [1, 0])
def test_log_arp_permanent_modify(caplog, log):
    k, a, _b, ea, eb = _pair()
    a.cmd("arp -s 10.0.0.2 " + eb.mac.hex(":"))
    a.cmd(f"sysctl net.link.ether.inet.log_arp_permanent_modify={log}")
    with caplog.at_level(logging.INFO, logger="vimage.arp"):
        _arp(ea, op=2, sha=OTHER_MAC, spa="10.0.0.2", tpa="10.0.0.1",
             tha=ea.mac.hex(":"))
    entry = a.arp.table[ipv4.aton("10.0.0.2")]
    assert entry.state == STATIC and entry.mac == eb.mac  # unchanged either way
    expected = [f"arp: {OTHER_MAC} attempts to modify permanent entry for 10.0.0.2 on "
                "epair0a"]
    assert _messages(caplog) == (expected if log else [])


@pytest.mark.parametrize("log", [1, 0])
def test_log_arp_movements(caplog, log):
    k, a, b, ea, eb = _pair()
    a.socket(2, 2).sendto(b"x", ("10.0.0.2", 9))  # a learns b
    k.run(0.1)
    a.cmd(f"sysctl net.link.ether.inet.log_arp_movements={log}")
    with caplog.at_level(logging.INFO, logger="vimage.arp"):
        _arp(ea, op=2, sha=OTHER_MAC, spa="10.0.0.2", tpa="10.0.0.1",
             tha=ea.mac.hex(":"))
    assert a.arp.table[ipv4.aton("10.0.0.2")].mac == bytes.fromhex(OTHER_MAC.replace(":", ""))
    expected = [f"arp: 10.0.0.2 moved from {eb.mac.hex(':')} to {OTHER_MAC} on epair0a"]
    assert _messages(caplog) == (expected if log else [])


@pytest.mark.parametrize("allow", [0, 1])
def test_allow_multicast(allow):
    _k, a, _b, ea, _eb = _pair()
    a.cmd(f"sysctl net.link.ether.inet.allow_multicast={allow}")
    replies = a.arp.stats.txreplies
    _arp(ea, op=1, sha="01:00:5e:00:00:09", spa="10.0.0.9", tpa="10.0.0.1", src=OTHER_MAC)
    assert a.arp.stats.txreplies - replies == allow
    assert (ipv4.aton("10.0.0.9") in a.arp.table) == bool(allow)
    # a broadcast sender address is refused whatever the setting
    _arp(ea, op=1, sha="ff:ff:ff:ff:ff:ff", spa="10.0.0.8", tpa="10.0.0.1", src=OTHER_MAC)
    assert a.arp.stats.txreplies - replies == allow


def test_proxyall():
    """r answers for an address it routes out another interface, with its own MAC."""
    k = Kernel(clock="virtual", seed=2)
    h, r, far = k.create("h"), k.create("r"), k.create("far")
    eh, er = connect(h, "10.0.0.1/24", r, "10.0.0.2/24")
    connect(r, "10.0.1.1/24", far, "10.0.1.2/24")
    k.run(1)

    def ask(tpa: str) -> None:
        _arp(er, op=1, sha=eh.mac.hex(":"), spa="10.0.0.1", tpa=tpa)

    ask("10.0.1.2")
    assert r.arp.stats.txreplies == 0  # proxyall is 0 by default
    assert r.cmd("sysctl net.link.ether.inet.proxyall=1").status == 0
    sent: list[bytes] = []

    class Wire:  # stands in for h's end of the cable: what r sends towards h
        def input(self, frame: bytes) -> None:
            sent.append(frame[14:])

    er.peer = Wire()
    ask("10.0.1.2")
    k.run(0.1)
    er.peer = eh
    assert r.arp.stats.txreplies == 1
    reply = ARP(sent[-1])
    assert reply.op == 2 and reply.psrc == "10.0.1.2" and reply.pdst == "10.0.0.1"
    assert reply.hwsrc == er.mac.hex(":")
    ask("10.0.0.77")  # on the interface the request came in on: no proxy
    ask("192.0.2.1")  # no route at all
    assert r.arp.stats.txreplies == 1


def test_portrange_randomized_zero_gives_sequential_ports():
    k = Kernel(clock="virtual", seed=3)
    v = k.create("v")
    assert v.cmd("sysctl -n net.inet.ip.portrange.randomized").output == "1\n"

    def ports(n: int) -> list[int]:
        out = []
        for _ in range(n):
            s = v.socket(2, 2)
            s.bind(("", 0))
            out.append(s.getsockname()[1])
        return out

    randomized = ports(3)
    assert sorted(randomized) != list(range(randomized[0], randomized[0] + 3))
    v.cmd("sysctl net.inet.ip.portrange.randomized=0")
    v.cmd("sysctl net.inet.ip.portrange.first=20000")
    v.cmd("sysctl net.inet.ip.portrange.last=20002")
    assert ports(3) == [20000, 20001, 20002]  # the last one left the range: from first
    v.cmd("sysctl net.inet.ip.portrange.last=20010")
    assert ports(2) == [20003, 20004]  # then on from the last one
    # TCP keeps its own sequence (FreeBSD: one ipi_lastport per pcbinfo)
    t = v.socket(2, 1)
    t.bind(("", 0))
    assert t.getsockname()[1] == 20000


def test_arp_sh_static_permanent_modify_message(caplog):
    """arp.sh `static`: a permanent entry for B's address, then B configures it (its
    gratuitous ARP): the entry stays and the last kernel message is FreeBSD's."""
    k = Kernel(clock="virtual", seed=4)
    a, b = k.create("a"), k.create("b")
    for line in ("ifconfig epair create", "ifconfig epair0a vnet a", "ifconfig epair0b vnet b"):
        assert k.cmd(line).status == 0
    assert a.cmd("ifconfig epair0a inet 198.51.100.1/24").status == 0
    assert a.cmd("arp -s 198.51.100.2 0:0:0:0:0:0").status == 0
    with caplog.at_level(logging.INFO, logger="vimage.arp"):
        assert b.cmd("ifconfig epair0b inet 198.51.100.2/24").status == 0
        k.run(1)
    eth = b.ifaces["epair0b"].mac.hex(":")
    assert _messages(caplog)[-1] == (
        f"arp: {eth} attempts to modify permanent entry for 198.51.100.2 on epair0a")
    assert a.arp.table[ipv4.aton("198.51.100.2")].mac == bytes(6)
