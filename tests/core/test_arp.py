"""ARP: resolution, hold queue, failure -> EHOSTDOWN, expiry, gratuitous, static."""

import errno

import pytest
from scapy.all import ARP, Ether

from vimage.kernel import Kernel
from vimage.netinet.arp import DOWN, INCOMPLETE, REACHABLE, STATIC
from vimage.topo import connect
from vimage.wire import ipv4


def _setup(seed=1):
    k = Kernel(clock="virtual", seed=seed)
    a = k.create("a")
    b = k.create("b")
    ea, eb = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    k.run(1)
    return k, a, b, ea, eb


def test_resolution_and_hold_queue():
    k, a, b, ea, eb = _setup()
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    tx = a.socket(2, 2)
    for i in range(3):  # all three wait in the hold queue while ARP resolves
        tx.sendto(bytes([i]), ("10.0.0.2", 9))
    entry = a.arp.table[ipv4.aton("10.0.0.2")]
    assert entry.state == INCOMPLETE and len(entry.hold) == 3
    assert [rx.recv(1) for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]
    assert entry.state == REACHABLE and entry.mac == eb.mac
    assert a.arp.stats.txrequests >= 1 and b.arp.stats.txreplies == 1
    # b learned a from the request aimed at it
    assert b.arp.table[ipv4.aton("10.0.0.1")].mac == ea.mac


def test_failure_gives_ehostdown_then_recovers():
    k, a, b, ea, eb = _setup()
    tx = a.socket(2, 2)
    tx.sendto(b"lost", ("10.0.0.99", 9))  # accepted: waits for ARP
    k.run(4.5)
    assert a.arp.stats.txrequests >= 5
    k.run(1)
    entry = a.arp.table[ipv4.aton("10.0.0.99")]
    assert entry.state == DOWN
    assert a.arp.stats.dropped == 1
    with pytest.raises(OSError) as exc:
        tx.sendto(b"again", ("10.0.0.99", 9))
    assert exc.value.errno == errno.EHOSTDOWN
    k.run(21)  # host_down_time passes: the next send tries again
    tx.sendto(b"retry", ("10.0.0.99", 9))
    assert a.arp.table[ipv4.aton("10.0.0.99")].state == INCOMPLETE


def test_hold_queue_limit():
    k, a, b, ea, eb = _setup()
    a.sysctl("net.link.ether.inet.maxhold", 4)
    tx = a.socket(2, 2)
    for _ in range(10):
        tx.sendto(b"x", ("10.0.0.50", 9))
    assert len(a.arp.table[ipv4.aton("10.0.0.50")].hold) == 4
    assert a.arp.stats.dropped == 6


def test_entries_expire_after_max_age():
    k, a, b, ea, eb = _setup()
    a.sysctl("net.link.ether.inet.max_age", 60)
    a.socket(2, 2).sendto(b"x", ("10.0.0.2", 9))
    k.run(1)
    assert ipv4.aton("10.0.0.2") in a.arp.table
    k.run(59.5)
    assert ipv4.aton("10.0.0.2") not in a.arp.table
    assert a.arp.stats.timeouts == 1


def test_gratuitous_arp_on_address_add_updates_peers():
    k, a, b, ea, eb = _setup()
    a.socket(2, 2).sendto(b"x", ("10.0.0.2", 9))
    k.run(1)
    before = a.arp.stats.txrequests
    ea.add_addr("10.0.0.3/24")  # an alias: announced
    assert a.arp.stats.txrequests == before + 1
    requests = b.arp.stats.rxrequests
    k.run(1)
    assert b.arp.stats.rxrequests == requests + 1


def test_gratuitous_arp_wire_format_checked_by_scapy():
    k = Kernel(clock="virtual", seed=5)
    a = k.create("a")
    x, y = k.epair()
    x.move_to(a)
    x.set_up(True)
    captured = []
    y.set_up(True)

    class Sink:
        def input(self, frame):
            captured.append(frame)

    x.peer = Sink()
    x.add_addr("192.168.5.1/24")
    k.run(0.1)
    garp = Ether(captured[-1])
    assert garp.dst == "ff:ff:ff:ff:ff:ff" and garp.type == 0x0806
    assert garp[ARP].op == 1 and garp[ARP].psrc == garp[ARP].pdst == "192.168.5.1"
    assert garp[ARP].hwsrc == ":".join(f"{c:02x}" for c in x.mac)


def test_static_entry_is_used_and_not_overwritten():
    k, a, b, ea, eb = _setup()
    fake = bytes.fromhex("02aabbccddee")
    a.arp.set_static(ea, ipv4.aton("10.0.0.2"), fake)
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    rx.settimeout(1)
    a.socket(2, 2).sendto(b"x", ("10.0.0.2", 9))
    with pytest.raises(TimeoutError):
        rx.recv(10)  # went to a MAC nobody has
    b.socket(2, 2).sendto(b"y", ("10.0.0.1", 9))  # b's ARP request must not replace it
    k.run(1)
    entry = a.arp.table[ipv4.aton("10.0.0.2")]
    assert entry.state == STATIC and entry.mac == fake
    a.arp.delete(ipv4.aton("10.0.0.2"))
    a.socket(2, 2).sendto(b"z", ("10.0.0.2", 9))
    assert rx.recv(10) == b"z"
