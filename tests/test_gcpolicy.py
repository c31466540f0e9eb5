"""The kernel's garbage collector policy (vimage.gcpolicy, issue 16): vnets made one by one
are frozen in batches so full collections stop rescanning them; destroying them thaws, and
the collector's state is as it was once they are gone. Structure only, never timing."""

import gc
import weakref

import pytest

from vimage.gcpolicy import DEFAULT_BATCH, CollectorPolicy, collector_paused
from vimage.kernel import Kernel
from vimage.topo import Net


@pytest.fixture
def clean_collector():
    """The collector on with nothing frozen (else the policy stays off by design), and
    left so whatever a test does."""
    if gc.get_freeze_count():
        pytest.skip("objects are frozen already in this process: the policy stays off")
    was_on = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if not was_on:
        gc.disable()


def _kernel(batch):
    k = Kernel(clock="virtual", seed=1)
    k.collector.batch = batch
    return k


def test_the_default_batch_leaves_small_topologies_alone(clean_collector):
    k = Kernel(clock="virtual", seed=1)
    assert k.collector.batch == DEFAULT_BATCH >= 1024
    for i in range(200):
        k.create(f"v{i}")
    assert k.collector.freezes == 0 and gc.get_freeze_count() == 0


def test_vnets_made_one_by_one_are_frozen_in_batches(clean_collector):
    k = _kernel(100)
    for i in range(250):
        k.create(f"v{i}")
    assert k.collector.freezes == 2 and k.collector.engaged
    frozen = gc.get_freeze_count()
    assert frozen > 200 * 10  # the vnets of both batches are out of the collector's walk
    for i in range(250, 290):  # 90 since the last freeze: not a batch yet
        k.create(f"v{i}")
    gc.collect()
    # a full collection walks the 40 vnets made since, not the 250 frozen ones (whose
    # objects alone are over 4,000, with the whole process's besides)
    assert len(gc.get_objects()) < 40 * 17 + 2000
    assert gc.get_freeze_count() == frozen


class _Cycle:
    def __init__(self):
        self.me = self


def test_garbage_at_a_freeze_is_collected_not_frozen(clean_collector):
    k = _kernel(50)
    for i in range(49):
        k.create(f"v{i}")
    old = weakref.ref(_Cycle())  # cyclic garbage, collected only by the collector
    k.create("v49")  # the first freeze: a full collection before it
    assert k.collector.freezes == 1 and old() is None
    for i in range(50, 99):
        k.create(f"v{i}")
    young = weakref.ref(_Cycle())
    k.create("v99")  # later ones collect the young generations first
    assert k.collector.freezes == 2 and young() is None


def test_a_later_freeze_collects_only_the_young_generations(clean_collector):
    k = _kernel(20)
    for i in range(39):
        k.create(f"v{i}")
    assert k.collector.freezes == 1
    collected = []

    def record(phase, info):
        if phase == "start":
            collected.append(info["generation"])

    gc.callbacks.append(record)
    try:
        collected.clear()
        k.create("v39")  # the second batch: what is older was collected at the first
        assert k.collector.freezes == 2 and 1 in collected and 2 not in collected
    finally:
        gc.callbacks.remove(record)


def test_destroying_the_vnets_thaws_and_frees_them(clean_collector):
    k = _kernel(100)
    vnets = [k.create(f"v{i}") for i in range(300)]
    refs = [weakref.ref(v) for v in vnets]
    del vnets
    assert k.collector.freezes == 3
    for i in range(300):
        k.destroy(f"v{i}")
    assert k.collector.thaws == 1 and not k.collector.engaged
    assert gc.get_freeze_count() == 0  # the collector's state as before the kernel froze
    gc.collect()
    assert not any(ref() for ref in refs), "a destroyed vnet outlived the thaw"


def test_half_destroyed_thaws_and_the_rest_is_frozen_again(clean_collector):
    k = _kernel(100)
    for i in range(400):
        k.create(f"v{i}")
    for i in range(199):
        k.destroy(f"v{i}")
    assert k.collector.engaged and k.collector.thaws == 0
    k.destroy("v199")  # half of the 400 frozen ones are gone
    assert k.collector.thaws == 1 and gc.get_freeze_count() == 0
    assert k.collector.unfrozen == 200  # the live ones, frozen again by the next create
    k.create("again")
    assert k.collector.engaged and gc.get_freeze_count() > 0


def test_nothing_is_frozen_while_the_collector_is_off(clean_collector):
    k = _kernel(10)
    with collector_paused() as was_on:
        assert was_on
        for i in range(50):
            k.create(f"v{i}")
        assert gc.get_freeze_count() == 0
        k.collector.settle()  # the collector is off here: still nothing
        assert gc.get_freeze_count() == 0
        # what create_many and the emulator's build do at the end of their paused block
        k.collector.settle(was_on)
    assert k.collector.freezes == 1 and gc.get_freeze_count() > 0
    gc.disable()
    try:
        with collector_paused() as was_on:  # the program turned it off: left alone
            assert not was_on
            for i in range(50, 70):
                k.create(f"v{i}")
            k.collector.settle(was_on)
        assert k.collector.freezes == 1
    finally:
        gc.enable()


def test_create_many_freezes_a_due_batch_after(clean_collector):
    k = _kernel(40)
    k.create_many([f"v{i}" for i in range(30)])
    assert gc.get_freeze_count() == 0  # not a batch yet
    k.create_many([f"w{i}" for i in range(30)])
    assert k.collector.freezes == 1 and gc.get_freeze_count() > 0


def test_topology_builders_get_the_policy(clean_collector):
    net = Net(_kernel(20))
    net.hosts(25)
    assert net.kernel.collector.freezes == 1


def test_the_policy_never_thaws_what_it_did_not_freeze(clean_collector):
    k = _kernel(10)
    gc.freeze()  # the program's own frozen objects (as before a fork)
    theirs = gc.get_freeze_count()
    for i in range(30):
        k.create(f"v{i}")
    assert k.collector.freezes == 0 and gc.get_freeze_count() == theirs
    # it looked at 10 vnets, then at 20 (not at every create: counting the frozen
    # objects walks them all)
    assert k.collector.refused == 20
    for i in range(30):
        k.destroy(f"v{i}")
    assert k.collector.thaws == 0 and gc.get_freeze_count() == theirs


def test_a_second_kernel_stays_off_while_the_first_holds_frozen_vnets(clean_collector):
    first, second = _kernel(10), _kernel(10)
    for i in range(10):
        first.create(f"v{i}")
    assert first.collector.engaged
    for i in range(20):
        second.create(f"v{i}")
    assert second.collector.freezes == 0
    for i in range(10):
        first.destroy(f"v{i}")
    assert gc.get_freeze_count() == 0


def test_batch_zero_turns_it_off(clean_collector):
    k = _kernel(0)
    for i in range(50):
        k.create(f"v{i}")
    k.collector.settle()
    assert k.collector.freezes == 0 and gc.get_freeze_count() == 0


def test_the_policy_counts_net_of_destroyed_vnets():
    policy = CollectorPolicy(batch=1000)
    for _ in range(5):
        policy.created()
    for _ in range(7):
        policy.destroyed()  # more destroyed than counted: never below zero
    assert policy.unfrozen == 0 and not policy.engaged


def test_children_keep_creation_order_and_leave_in_constant_time():
    k = Kernel(clock="virtual", seed=1)
    for name in ("a", "b", "c", "b.x", "b.y"):
        k.create(name)
    assert [v.name for v in k.base.children] == ["a", "b", "c"]
    k.destroy("b")  # and its children first
    assert [v.name for v in k.base.children] == ["a", "c"]
    k.destroy("a")
    k.destroy("c")
    assert k.base.children is None
