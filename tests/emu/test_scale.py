"""The kernel fixes that let a 10,000-node experiment come up and go down quickly
(bench/bench_topo.py measures them): unit numbers from a hint, timers indexed by vnet."""

from vimage import Kernel
from vimage.kernel import UnitSet
from vimage.net.ifnet import destroy


def test_epair_units_are_the_lowest_free_and_reused_after_destroy():
    kernel = Kernel(clock="virtual", seed=1)
    pairs = [kernel.epair() for _ in range(5)]
    assert [a.name for a, _ in pairs] == [f"epair{i}a" for i in range(5)]
    destroy(pairs[3][0])
    destroy(pairs[1][1])
    assert [kernel.epair()[0].name for _ in range(3)] == ["epair1a", "epair3a", "epair5a"]


def test_a_wanted_unit_leaves_the_hint_right():
    kernel = Kernel(clock="virtual", seed=1)
    units = UnitSet()
    assert kernel.alloc_unit(units, 2) == 2
    assert [kernel.alloc_unit(units) for _ in range(3)] == [0, 1, 3]
    units.discard(0)
    units.discard(7)  # not in use: nothing changes
    assert kernel.alloc_unit(units) == 0
    assert kernel.alloc_unit(units) == 4


def test_many_epairs_in_a_row_do_not_rescan_from_zero():
    kernel = Kernel(clock="virtual", seed=1)
    cloner = kernel.cloner("epair")
    for _ in range(300):
        kernel.epair()
    assert cloner.units.hint == 300


def test_destroying_a_vnet_cancels_its_timers_only():
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    fired = []
    sched = kernel.sched
    for i in range(5):
        sched.call_later((i + 1) * 1000, fired.append, f"a{i}", owner=a)
        sched.call_later((i + 1) * 1000, fired.append, f"b{i}", owner=b)
    sched.call_later(500, fired.append, "kernel")
    kernel.destroy(a)
    assert sched.pending_timers(b) == 5 and sched.pending_timers() == 6
    kernel.run(1)
    assert fired == ["kernel", "b0", "b1", "b2", "b3", "b4"]


def test_the_heap_is_compacted_once_most_of_it_is_dead():
    kernel = Kernel(clock="virtual", seed=1)
    vnets = [kernel.create(f"v{i}") for i in range(200)]
    keep = kernel.create("keep")
    sched = kernel.sched
    for vnet in vnets:
        for t in range(3):
            sched.call_later(10**9 * (t + 1), lambda: None, owner=vnet)
    sched.call_later(10**9, lambda: None, owner=keep)
    for vnet in vnets:
        kernel.destroy(vnet)
    assert sched.pending_timers() == 1
    assert len(sched._heap) < 2 * 3 * 20  # compacted as it went, not left at 601


def test_a_long_lived_vnets_timer_index_stays_small():
    kernel = Kernel(clock="virtual", seed=1)
    vnet = kernel.create("busy")
    sched = kernel.sched
    for i in range(2000):
        sched.call_later(1000 * (i + 1), lambda: None, owner=vnet)
        if i % 10 == 0:
            kernel.run(0.001)  # most fire along the way
    kernel.run(10)
    sched.call_later(1000, lambda: None, owner=vnet)
    assert len(sched._owned[vnet]) < 64
    kernel.destroy(vnet)
    assert vnet not in sched._owned
