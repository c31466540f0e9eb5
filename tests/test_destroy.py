"""Destroying a vnet leaves nothing behind."""

import gc
import weakref

from vimage.kernel import Kernel
from vimage.net.ifnet import EpairCloner
from vimage.topo import connect


def test_destroy_cleans_up_everything():
    k = Kernel(clock="virtual", seed=7)
    home = k.base
    a = k.create("a")
    b = k.create("b")
    ea, eb = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    # an epair born in the base vnet, one end moved into a: it must come back
    x, y = k.epair()
    x.move_to(a)
    # an epair born inside a: both ends die with a, even the one moved into b
    p, q = k.epair(a)
    q.move_to(b)
    ea.impair(delay="100ms")  # frames in flight on a's link
    # state that arms timers: ARP entries, reassembly queues, pending ARP, sockets
    s = a.socket(2, 2)
    s.bind(("", 5000))
    r = b.socket(2, 2)
    r.bind(("", 6000))
    s.sendto(b"x" * 4000, ("10.0.0.2", 6000))  # fragments sitting in the pipe
    s.sendto(b"y", ("10.0.0.77", 6000))  # unresolved: an ARP entry with a hold queue
    k.run(0.01)
    raw = a.socket(2, 3, 1)
    assert k.sched.pending_timers(a) > 0
    ref = weakref.ref(a)
    receivers = set(a.ifaces.values())

    k.destroy("a")

    assert k.sched.pending_timers(a) == 0
    assert k.sched.queued_for(receivers) == 0
    assert s.closed and raw.closed
    assert x.vnet is home and home.ifaces[x.name] is x and x.addrs == []
    # connect() made its epair in the base vnet: a's end went home, b's end stays
    assert ea.vnet is home and home.ifaces[ea.name] is ea and ea.addrs == []
    assert b.ifaces[eb.name] is eb
    assert ea.pipe is not None and ea.pipe.in_flight == 0  # its frames were dropped
    # the epair born in a is gone, with its end that lived in b
    assert q.name not in b.ifaces and p.name not in home.ifaces and q.peer is None
    # b keeps working and holds no reference to a
    assert all(route.ifp.vnet is b for route in b.rt.routes())
    assert all(e.ifp.vnet is b for e in b.arp.table.values())
    k.run(5)
    assert k.sched.pending_timers(a) == 0
    assert ref() is a


def test_no_timers_or_queue_after_many_create_destroy():
    k = Kernel(clock="virtual", seed=1)
    for i in range(50):
        v = k.create(f"v{i}")
        w = k.create(f"w{i}")
        connect(v, "10.1.1.1/24", w, "10.1.1.2/24")
        sock = v.socket(2, 2)
        sock.sendto(b"hi", ("10.1.1.2", 7))
        k.run(0.001)
        k.destroy(v)
        k.destroy(w)
    assert k.sched.pending_timers() == 0
    assert len(k.sched.queue) == 0
    assert k.vnets() == []
    # the epairs were born in the base vnet: their ends came home, addresses gone
    assert len(k.base.ifaces) == 1 + 2 * 50
    assert all(not i.addrs for n, i in k.base.ifaces.items() if n != "lo0")
    epairs = k.service(EpairCloner)
    for unit in list(epairs.pairs):
        epairs.pairs[unit][0].destroy()
    assert list(k.base.ifaces) == ["lo0"]
    assert epairs.pairs == {} and epairs.units == set() and not any(epairs.born.values())


def test_destroyed_vnet_is_released():
    k = Kernel(clock="virtual", seed=2)
    a = k.create("a")
    b = k.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    a.socket(2, 2).sendto(b"z", ("10.0.0.2", 9))
    k.run(1)
    ref = weakref.ref(a)
    k.destroy(a)
    del a
    gc.collect()
    assert ref() is None, "something still holds the destroyed vnet"


def test_sockets_left_behind_by_a_destroyed_vnet_refuse_every_call():
    """A socket whose vnet is gone, even one never bound, cannot bind, connect or send
    into the dead vnet's tables: ENETDOWN, as for a socket made after the destruction."""
    import errno
    import socket as std

    import pytest

    k = Kernel(clock="virtual")
    a = k.create("a")
    socks = [a.socket(std.AF_INET, std.SOCK_STREAM), a.socket(std.AF_INET, std.SOCK_DGRAM),
             a.socket(std.AF_INET6, std.SOCK_STREAM), a.socket(std.AF_INET6, std.SOCK_DGRAM)]
    raw = a.socket(std.AF_INET, std.SOCK_RAW, 1)  # on the vnet's list: closed with it
    k.destroy(a)
    with pytest.raises(OSError) as info:
        raw.sendto(b"x", ("10.0.0.1", 0))
    assert info.value.errno == errno.EBADF
    for sock in socks:
        any_addr = ("::", 5000) if sock.family == std.AF_INET6 else ("0.0.0.0", 5000)
        for call, args in ((sock.bind, ()), (sock.connect, ()), (sock.sendto, (b"x",))):
            with pytest.raises(OSError) as info:
                call(*args, any_addr)
            assert info.value.errno == errno.ENETDOWN, (sock, info.value)
        sock.close()  # closing still works, and twice
        sock.close()


def test_a_keyed_kernel_forgets_a_destroyed_vnets_mac_count():
    k = Kernel(clock="virtual", keyed=True)
    a = k.create("a")
    first = k.random_mac(a)
    k.destroy(a)
    assert "a" not in k._mac_counts
    assert k.random_mac(k.create("a")) == first  # by name, as a fresh run would give
