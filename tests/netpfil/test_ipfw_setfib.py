"""ipfw `setfib N`: the FIB a packet's route comes from (FreeBSD M_SETFIB; ip_input /
ip_forward use the packet's fib, ip_output routes again when a hook changed it)."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.topo import connect
from vimage.vnet import Vnet


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


class Fork:
    """a - r - {b1, b2}: 198.51.100.1 lives on both b1 and b2; r's fib 0 routes it to
    b1, fib 1 to b2."""

    def __init__(self) -> None:
        self.k = k = Kernel(clock="virtual", seed=3)
        self.a, self.r, self.b1, self.b2 = (
            k.create(n, fibs=2 if n == "r" else 1) for n in ("a", "r", "b1", "b2"))
        a, r, b1, b2 = self.a, self.r, self.b1, self.b2
        connect(a, "10.0.0.1/24", r, "10.0.0.2/24")
        connect(r, "10.1.0.1/24", b1, "10.1.0.2/24")
        connect(r, "10.2.0.1/24", b2, "10.2.0.2/24")
        for b, gw in ((b1, "10.1.0.1"), (b2, "10.2.0.1")):
            b.iface("lo0").add_addr("198.51.100.1/32")
            ok(b, f"route add default {gw}")
        ok(r, "sysctl net.inet.ip.forwarding=1")
        ok(a, "route add default 10.0.0.2")
        ok(r, "route add 198.51.100.0/24 10.1.0.2")
        ok(r, "sysctl net.add_addr_allfibs=1")
        r.iface("epair2a").add_addr("10.2.0.1/24")  # again, now into fib 1 too
        ok(r, "route -F 1 add 198.51.100.0/24 10.2.0.2")

    def received(self, payload: bytes) -> tuple[bool, bool]:
        """Send `payload` from a to 198.51.100.1:9: (b1 got it, b2 got it)."""
        rx1, rx2 = self.b1.socket(2, 2), self.b2.socket(2, 2)
        rx1.bind(("", 9))
        rx2.bind(("", 9))
        tx = self.a.socket(2, 2)
        try:
            tx.sendto(payload, ("198.51.100.1", 9))
            self.k.run(1)
            return got(rx1, payload), got(rx2, payload)
        finally:
            for s in (rx1, rx2, tx):
                s.close()


def got(sock: object, payload: bytes) -> bool:
    sock.settimeout(0)  # type: ignore[attr-defined]
    try:
        return bool(sock.recv(100) == payload)  # type: ignore[attr-defined]
    except BlockingIOError:
        return False


@pytest.fixture
def fork() -> Fork:
    return Fork()


def test_setfib_rule_chooses_the_forwarding_table(fork: Fork) -> None:
    assert fork.received(b"plain") == (True, False)  # fib 0: to b1
    ok(fork.r, "ipfw add 100 setfib 1 udp from 10.0.0.1 to any dst-port 9 in")
    ok(fork.r, "ipfw add 200 allow ip from any to any")
    assert fork.received(b"set") == (False, True)  # the rule's fib 1: to b2
    out = ok(fork.r, "ipfw show 100")
    assert out.startswith("00100 1 ") and "setfib 1 udp from 10.0.0.1" in out
    ok(fork.r, "ipfw delete 100")
    assert fork.received(b"again") == (True, False)  # back to fib 0
    # a rule that does not match leaves the interface's fib
    ok(fork.r, "ipfw add 100 setfib 1 udp from 10.0.0.99 to any in")
    assert fork.received(b"other") == (True, False)


def test_setfib_by_tablearg(fork: Fork) -> None:
    ok(fork.r, "ipfw table T add 10.0.0.0/24 1")
    ok(fork.r, "ipfw add 100 setfib tablearg ip from table(T) to any in")
    ok(fork.r, "ipfw add 200 allow ip from any to any")
    assert fork.received(b"tablearg") == (False, True)


def test_setfib_on_output_routes_again() -> None:
    """A host with two ways to 198.51.100.1: its out rule's setfib 1 makes ip_output look
    the route up again in fib 1 (and leave by the other interface)."""
    k = Kernel(clock="virtual", seed=4)
    h = k.create("h", fibs=2)
    b1, b2 = k.create("b1"), k.create("b2")
    ok(h, "sysctl net.add_addr_allfibs=1")  # the connected routes in both fibs
    connect(h, "10.1.0.1/24", b1, "10.1.0.2/24")
    connect(h, "10.2.0.1/24", b2, "10.2.0.2/24")
    for b, gw in ((b1, "10.1.0.1"), (b2, "10.2.0.1")):
        b.iface("lo0").add_addr("198.51.100.1/32")
        ok(b, f"route add default {gw}")
    ok(h, "route add 198.51.100.0/24 10.1.0.2")
    ok(h, "route -F 1 add 198.51.100.0/24 10.2.0.2")
    ok(h, "ipfw add 100 setfib 1 udp from any to 198.51.100.1 dst-port 9 out")
    ok(h, "ipfw add 200 allow ip from any to any")
    rx1, rx2 = b1.socket(2, 2), b2.socket(2, 2)
    rx1.bind(("", 9))
    rx2.bind(("", 9))
    out1, out2 = h.iface("epair0a").opackets, h.iface("epair1a").opackets
    tx = h.socket(2, 2)
    tx.sendto(b"out", ("198.51.100.1", 9))
    k.run(1)
    assert got(rx2, b"out") and not got(rx1, b"out")
    assert h.iface("epair1a").opackets > out2  # ARP for 10.2.0.2, then the datagram
    assert h.iface("epair0a").opackets == out1
    assert h.ip.mfib is None  # nothing left held


def test_setfib_beyond_net_fibs_is_refused(fork: Fork) -> None:
    res = fork.r.cmd("ipfw add 100 setfib 2 ip from any to any")
    assert res.status != 0 and "invalid fib number 2" in res.output
    res = fork.a.cmd("ipfw add 100 setfib 1 ip from any to any")  # a has one fib
    assert res.status != 0
