"""ipfw's contract with dummynet, NAT and divert (tested with small fakes installed on the
vnet, as the contract allows), reinjection, one_pass, and vnet destruction."""

from __future__ import annotations

import gc
import weakref

from vimage.netpfil.ipfw import reinject

from .conftest import A, B, Trio


class FakeDummynet:
    """Holds each packet `delay` seconds, then calls resume (a pipe with only a delay)."""

    def __init__(self, t: Trio, delay: float) -> None:
        self.t, self.delay, self.calls = t, delay, []

    def enqueue(self, number, is_queue, pkt, ifp, outgoing, resume):
        self.calls.append((number, is_queue, outgoing, ifp.name if ifp else None))
        self.t.k.call_later(self.delay, resume, pkt, owner=self.t.r)


class FakeNat:
    """Rewrites the destination of echoes to b's address (no checksum needed: the IP
    header sum is fixed by hand, ICMP's does not cover addresses)."""

    def __init__(self) -> None:
        self.calls = []

    def translate(self, number, pkt, ifp, outgoing):
        self.calls.append((number, outgoing))
        if number == 9:
            return None
        return pkt


class FakeDivert:
    def __init__(self) -> None:
        self.got = []

    def deliver(self, port, pkt, ifp, outgoing, rule, tee=False):
        if port != 8668:
            return False
        self.got.append((port, pkt, ifp.name if ifp else None, outgoing, rule))
        self.tee = tee
        return True


def test_pipe_delays_and_one_pass_skips_the_rest(trio: Trio):
    t = trio
    dn = t.r.dummynet = FakeDummynet(t, 0.25)
    t.fw(t.r, "add 1 allow ip6 from any to any",  # the links' IPv6 chatter: not counted
         "add 100 pipe 1 icmp from any to any icmptypes 8 in",
         "add 200 count ip from any to any", "add 300 allow ip from any to any")
    sock = t.a.socket(2, 3, 1)
    from vimage.wire import icmp as wicmp

    sock.sendto(wicmp.build_echo(wicmp.ECHO, 1, 1, b"x"), (B, 0))
    t.k.run(0.2)
    assert t.b.icmp.stats.inhist[8] == 0  # held by the pipe
    t.k.run(0.1)
    assert t.b.icmp.stats.inhist[8] == 1
    assert dn.calls == [(1, False, False, "epair0b")]
    counts = {r.num: r.pcnt for r in t.r.ipfw.rules}
    # one_pass=1: the released echo skipped ipfw at in; its out pass counted it (200)
    assert counts[200] == 3  # echo out, reply in, reply out


def test_pipe_without_one_pass_continues_after_the_rule(trio: Trio):
    t = trio
    t.r.dummynet = FakeDummynet(t, 0.01)
    t.r.cmd("sysctl net.inet.ip.fw.one_pass=0")
    t.fw(t.r, "add 100 queue 3 icmp from any to any icmptypes 8 in",
         "add 200 count ip4 from any to any", "add 300 allow ip from any to any")
    assert t.ping(t.a, B)
    assert t.r.dummynet.calls == [(3, True, False, "epair0b")]
    assert {r.num: r.pcnt for r in t.r.ipfw.rules}[200] == 4


def test_pipe_without_dummynet_drops(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 pipe 1 ip from any to any", "add 200 allow ip from any to any")
    assert not t.ping(t.a, B)


def test_pipe_on_output_of_a_host(trio: Trio):
    t = trio
    dn = t.a.dummynet = FakeDummynet(t, 0.01)
    dn.t = t  # timers owned by r in the fake; fine for the test
    t.fw(t.a, "add 100 pipe 2 icmp from me to any out", "add 200 allow ip from any to any")
    assert t.ping(t.a, B)
    assert dn.calls == [(2, False, True, "epair0a")]


def test_nat_action_calls_translate(trio: Trio):
    t = trio
    nat = t.r.ipfw_nat = FakeNat()
    t.fw(t.r, "add 100 nat 5 icmp from any to any in recv epair0b",
         "add 110 nat 9 udp from any to any", "add 200 allow ip from any to any")
    assert t.ping(t.a, B)
    assert nat.calls == [(5, False)]
    assert not t.udp(t.a, t.b, B)  # translate returned None: dropped
    res = t.r.cmd("ipfw list 100")
    assert res.output == "00100 nat 5 icmp from any to any in recv epair0b\n"


def test_nat_without_nat_module_drops(trio: Trio):
    t = trio
    t.fw(t.r, "add 100 nat 1 ip from any to any", "add 200 allow ip from any to any")
    assert not t.ping(t.a, B)


def test_divert_delivers_and_reinjection_continues_after_the_rule(trio: Trio):
    t = trio
    dv = t.r.divert = FakeDivert()
    t.fw(t.r, "add 100 divert 8668 icmp from any to any icmptypes 8 in",
         "add 200 count icmp from any to any", "add 300 allow ip from any to any")
    s = t.a.socket(2, 3, 1)
    s.settimeout(1)
    from vimage.wire import icmp as wicmp

    s.sendto(wicmp.build_echo(wicmp.ECHO, 1, 1, b"x"), (B, 0))
    t.k.run(0.1)
    assert len(dv.got) == 1 and t.b.icmp.stats.inhist[8] == 0
    port, pkt, ifname, outgoing, rule = dv.got[0]
    assert (port, ifname, outgoing, rule) == (8668, "epair0b", False, 100)
    reinject(t.r, pkt, False, ifname, rule)  # what a divert socket's sendto does
    t.k.run(0.1)
    assert t.b.icmp.stats.inhist[8] == 1
    assert s.recv(2000)  # the reply came back
    counts = {r.num: r.pcnt for r in t.r.ipfw.rules}
    assert counts[100] == 1 and counts[200] == 4  # rule 200 saw the reinjected echo


def test_divert_to_a_port_nobody_listens_on_drops(trio: Trio):
    t = trio
    t.r.divert = FakeDivert()
    t.fw(t.r, "add 100 divert 9999 icmp from any to any", "add 300 allow ip from any to any")
    assert not t.ping(t.a, B)


def test_tee_copies_and_accepts(trio: Trio):
    t = trio
    dv = t.r.divert = FakeDivert()
    t.fw(t.r, "add 100 tee 8668 icmp from any to any icmptypes 8 in",
         "add 300 allow ip from any to any")
    assert t.ping(t.a, B)
    assert len(dv.got) == 1 and dv.got[0][4] == 100 and dv.tee is True


def test_reinject_outgoing_goes_to_output(trio: Trio):
    t = trio
    from vimage.wire import icmp as wicmp
    from vimage.wire.checksum import checksum
    from vimage.wire.ipv4 import HEADER, aton

    msg = wicmp.build_echo(wicmp.ECHO, 5, 1, b"hi")
    hdr = HEADER.pack(0x45, 0, 20 + len(msg), 1, 0, 64, 1, 0, aton(A), aton(B))
    pkt = hdr[:10] + checksum(hdr).to_bytes(2, "big") + hdr[12:] + msg
    reinject(t.a, pkt, True, None, 0)  # no ipfw rules in a: straight to output
    t.k.run(0.1)
    assert t.b.icmp.stats.inhist[8] == 1


def test_destroying_a_vnet_frees_its_ipfw():
    from vimage.kernel import Kernel
    from vimage.topo import router_chain

    k = Kernel(clock="virtual", seed=3)
    a, r, b = router_chain(k, 1, name="x")
    t = Trio(k, a, r, b)
    t.fw(r, "table t add 10.0.0.0/8", "add 100 allow icmp from table(t) to any keep-state",
         "add 200 deny log ip from any to any")
    r.cmd("sysctl net.inet.ip.fw.verbose=1")
    assert t.ping(a, B)
    fw = r.ipfw
    assert k.sched.pending_timers(r) >= 1 and fw.dyn_count == 1
    ref = weakref.ref(fw)
    k.destroy(r)
    assert k.sched.pending_timers(r) == 0
    assert fw.rules == [] and fw.tables == {} and len(fw.dyn) == 0 and not fw.log
    assert r.ip.pfil_in is None and r.ip.pfil_out is None
    del fw
    r.__dict__.pop("ipfw", None)
    gc.collect()
    assert ref() is None
    k.run(10)
    assert k.sched.pending_timers(r) == 0


def test_reinject_refuses_malformed_datagrams_and_counts_them(trio: Trio):
    t = trio
    from vimage.wire import icmp as wicmp
    from vimage.wire.checksum import checksum
    from vimage.wire.ipv4 import HEADER, aton

    msg = wicmp.build_echo(wicmp.ECHO, 5, 1, b"hi")
    hdr = HEADER.pack(0x45, 0, 20 + len(msg), 1, 0, 64, 1, 0, aton(A), aton(B))
    good = hdr[:10] + checksum(hdr).to_bytes(2, "big") + hdr[12:] + msg
    st = t.b.ip.stats
    reinject(t.b, good[:10], False, "epair1b", 0)
    reinject(t.b, b"\x65" + good[1:], False, "epair1b", 0)
    reinject(t.b, b"\x4f" + good[1:], False, "epair1b", 0)
    reinject(t.b, good[:2] + b"\x00\x10" + good[4:], False, "epair1b", 0)
    reinject(t.b, good[:2] + b"\x05\x00" + good[4:], False, "epair1b", 0)
    reinject(t.b, good[:10] + b"\x00\x00" + good[12:], False, "epair1b", 0)
    assert (st.toosmall, st.badvers, st.badhlen, st.badlen, st.tooshort, st.badsum) == (
        1, 1, 1, 1, 1, 1)
    reinject(t.a, hdr + msg, True, None, 0)  # going out, the checksum is made
    reinject(t.b, good + b"pad", False, "epair1b", 0)  # trailing bytes are trimmed
    t.k.run(0.1)
    assert t.b.icmp.stats.inhist[8] == 2
