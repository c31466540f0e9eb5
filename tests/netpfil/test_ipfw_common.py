"""FreeBSD tests/sys/netpfil/common scenarios, for ipfw, reproduced with vnets.

Each test names the script and test case it follows (FreeBSD runs them for pf, ipf and
ipfw alike; these are the ipfw runs). The topology is FreeBSD's: the host (alcatraz's
peer) and a firewall vnet (alcatraz) on an epair, or a client, router and server.
"""

from __future__ import annotations

from .conftest import RA, A, B, Trio


def test_pass_block_v4(trio: Trio):
    """pass_block.sh:v4 — ping through the firewall, then block ICMP: ping fails; the
    firewall's own address too."""
    t = trio
    t.fw(t.r, "add 65000 allow ip from any to any")
    assert t.ping(t.a, RA) and t.ping(t.a, B)
    t.fw(t.r, "add 100 deny icmp from any to any")
    assert not t.ping(t.a, RA) and not t.ping(t.a, B)
    t.fw(t.r, "delete 100")
    assert t.ping(t.a, B)


def test_pass_block_tcp_v4(trio: Trio):
    """pass_block.sh's TCP variant (as FreeBSD's ipfw pass/block of a port): the
    connection works, then a deny on the port stops it, other ports still work."""
    t = trio
    t.fw(t.r, "add 65000 allow ip from any to any")
    assert t.tcp(t.a, t.b, B, 80) == "ok"
    t.fw(t.r, "add 100 deny tcp from any to any 80")
    assert t.tcp(t.a, t.b, B, 80, seconds=1) == "timeout"
    assert t.tcp(t.a, t.b, B, 8080) == "ok"


def test_pass_block_noalias(trio: Trio):
    """pass_block.sh:noalias — a rule naming an address blocks that address only, not the
    interface's other one (`me` would match both)."""
    t = trio
    t.r.cmd("ifconfig epair0b alias 10.0.0.3/32")
    t.fw(t.r, "add 100 deny icmp from any to 10.0.0.3", "add 65000 allow ip from any to any")
    assert not t.ping(t.a, "10.0.0.3")
    assert t.ping(t.a, RA)


def test_forward_v4(trio: Trio):
    """forward.sh:v4 — `fwd` sends matching packets to another next hop: the echo for an
    address of b's network reaches c instead."""
    t = trio
    from vimage.topo import connect

    c = t.k.create("c")
    connect(t.r, "10.0.2.1/24", c, "10.0.2.2/24")
    c.cmd("route add default 10.0.2.1")
    c.cmd("ifconfig lo0 alias 10.0.1.99/32")
    t.fw(t.r, "add 100 fwd 10.0.2.2 ip from any to 10.0.1.99 in",
         "add 65000 allow ip from any to any")
    assert t.ping(t.a, "10.0.1.99")
    assert c.icmp.stats.inhist[8] == 1


def test_fragments_v4(trio: Trio):
    """fragments.sh:v4 — a fragmented echo (6000 bytes, 5 fragments) passes a stateless
    pass-all ruleset and is reassembled at the far end; denying `frag` stops it while
    unfragmented echoes still pass."""
    t = trio
    t.fw(t.r, "add 65000 allow ip from any to any")
    assert t.ping(t.a, B, size=6000)
    assert t.b.ip.stats.reassembled == 1
    t.fw(t.r, "add 100 deny ip from any to any frag")
    assert not t.ping(t.a, B, size=6000, seq=2)
    assert t.ping(t.a, B, seq=3)
    assert t.r.ipfw.rules[0].pcnt == 4  # 4 non-first fragments of the second echo, at in


def test_fragments_keep_state(trio: Trio):
    """fragments.sh with a stateful ruleset: the state made by a datagram's first
    fragment (which has the ports) does not cover its later fragments (no ports), and a
    rule naming a port cannot match them: they need a rule of their own, as on FreeBSD."""
    t = trio
    t.fw(t.r, "add 100 check-state",
         "add 200 allow udp from 10.0.0.0/24 to any 7000 keep-state",
         "add 400 deny ip from any to any")
    rx = t.b.socket(2, 2)
    rx.bind(("", 7000))
    rx.settimeout(1)
    tx = t.a.socket(2, 2)
    tx.sendto(b"u" * 4000, (B, 7000))
    t.k.run(1)
    assert t.b.ip.stats.reassembled == 0  # the later fragments were denied
    t.fw(t.r, "add 300 allow ip from any to any frag")
    tx.sendto(b"v" * 4000, (B, 7000))
    assert rx.recv(5000) == b"v" * 4000


def test_icmp_errors_through_the_firewall(trio: Trio):
    """ICMP errors about a flow pass back through a stateful firewall as FreeBSD's do
    when the ruleset allows them (`icmptypes 3,11`)."""
    t = trio
    t.fw(t.r, "add 100 check-state", "add 200 allow udp from 10.0.0.0/24 to any keep-state",
         "add 300 allow icmp from any to any icmptypes 3,11", "add 400 deny ip from any to any")
    s = t.a.socket(2, 2)
    s.settimeout(1)
    s.sendto(b"x", (B, 9))  # nothing listens on b: port unreachable comes back
    t.k.run(1)
    assert t.a.icmp.stats.inhist[3] == 1
    _ = A
