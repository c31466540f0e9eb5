"""Kernel, vnet registry, hierarchy, lo0, scheduler basics."""

import pytest

from vimage.kernel import Kernel
from vimage.net.ifnet import IFF_LOOPBACK, IFF_UP


def test_create_lookup_list_destroy():
    k = Kernel(clock="virtual", seed=1)
    a = k.create("lab")
    r1 = k.create("lab.r1")
    assert k.get("lab") is a and k.get("lab.r1") is r1
    assert [v.name for v in k.vnets()] == ["lab", "lab.r1"]
    assert r1.parent is a and a.parent is k.base
    k.destroy("lab")
    assert k.vnets() == []
    assert not a.alive and not r1.alive
    with pytest.raises(LookupError):
        k.get("lab.r1")


def test_bad_names_and_duplicates():
    k = Kernel(clock="virtual")
    k.create("x")
    with pytest.raises(FileExistsError):
        k.create("x")
    with pytest.raises(LookupError):
        k.create("nope.child")
    for bad in ("", "a..b", ".a", "a b", "a/b"):
        with pytest.raises(ValueError):
            k.create(bad)
    with pytest.raises(PermissionError):
        k.destroy(k.base)


def test_children_destroyed_first():
    k = Kernel(clock="virtual")
    p = k.create("p")
    c = k.create("p.c")
    g = k.create("p.c.g")
    x, y = k.epair()
    x.move_to(g)  # an interface moved into the grandchild returns home to the base
    k.destroy("p")
    assert not (p.alive or c.alive or g.alive)
    assert "p.c.g" not in k and "p.c" not in k
    assert k.base.ifaces[x.name] is x and x.vnet is k.base


def test_every_vnet_has_lo0():
    k = Kernel(clock="virtual")
    for v in (k.base, k.create("a"), k.create("b")):
        lo = v.ifaces["lo0"]
        assert lo.flags & IFF_UP and lo.flags & IFF_LOOPBACK
        assert [(ia.addr, ia.plen) for ia in lo.addrs] == [(0x7F000001, 8)]
        # and it works: a datagram to 127.0.0.1 comes back
        r = v.socket(2, 2)
        r.bind(("127.0.0.1", 7))
        s = v.socket(2, 2)
        s.sendto(b"ping", ("127.0.0.1", 7))
        assert r.recvfrom(10)[0] == b"ping"


def test_virtual_run_jumps_through_timers():
    k = Kernel(clock="virtual")
    fired = []
    k.call_later(5.0, fired.append, "a")
    k.call_later(2.5, fired.append, "b")
    t = k.call_later(3.0, fired.append, "cancelled")
    t.cancel()
    k.run(10)
    assert fired == ["b", "a"]
    assert k.now == 10.0


def test_real_clock_run_advances_real_time():
    import time

    k = Kernel(clock="real")
    fired = []
    k.call_later(0.02, fired.append, 1)
    t0 = time.monotonic()
    k.run(0.05)
    assert fired == [1]
    assert time.monotonic() - t0 >= 0.045


def test_virtual_block_forever_is_an_error():
    k = Kernel(clock="virtual")
    s = k.create("a").socket(2, 2)
    s.bind(("", 9))
    with pytest.raises(RuntimeError, match="forever"):
        s.recv(10)


def test_bad_clock():
    with pytest.raises(ValueError):
        Kernel(clock="sundial")


@pytest.mark.loop_errors
def test_a_fault_in_one_frame_is_counted_and_the_loop_goes_on():
    k = Kernel(clock="virtual")
    delivered = []

    class Broken:
        def input(self, frame):
            raise ZeroDivisionError("bug")

    class Fine:
        def input(self, frame):
            delivered.append(frame)

    k.sched.queue.append((Broken(), b"a"))
    k.sched.queue.append((Fine(), b"b"))
    k.call_later(1, lambda: 1 / 0)
    k.call_later(2, delivered.append, b"timer")
    k.run(3)
    assert delivered == [b"b", b"timer"]
    assert k.sched.errors == 2 and isinstance(k.sched.last_error, ZeroDivisionError)


def test_kernel_timers_survive_interface_and_vnet_destruction():
    k = Kernel(clock="virtual")
    fired = []
    k.call_later(5, fired.append, "kernel timer")  # owned by nobody
    v = k.create("v")
    x, y = k.epair(v)
    x.destroy()
    k.destroy(v)
    k.run(6)
    assert fired == ["kernel timer"]


def test_interface_indexes_are_not_reused():
    k = Kernel(clock="virtual")
    v = k.create("v")
    x, y = k.epair(v)
    assert (v.ifaces["lo0"].index, x.index, y.index) == (1, 2, 3)
    x.destroy()
    z, w = k.epair(v)
    assert (z.index, w.index) == (4, 5)
