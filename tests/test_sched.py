"""The scheduler's public clock API, which the asyncio selector drives the kernel with."""

import pytest

from vimage.kernel import Kernel
from vimage.sched import NS_PER_S, PpsLimit, Scheduler


def test_next_event_is_the_sooner_of_timer_and_deadline():
    sched = Scheduler(virtual=True)
    assert sched.next_event() is None and sched.next_event(500) == 500
    timer = sched.call_later(1000, lambda: None)
    assert sched.next_event() == 1000
    assert sched.next_event(500) == 500 and sched.next_event(2000) == 1000
    timer.cancel()
    assert sched.next_event() is None and sched.next_event(2000) == 2000


def test_jump_to_moves_virtual_time_forward_only():
    sched = Scheduler(virtual=True)
    sched.jump_to(3 * NS_PER_S)
    assert sched.now_ns() == 3 * NS_PER_S
    sched.jump_to(NS_PER_S)  # never back
    assert sched.now_ns() == 3 * NS_PER_S


def test_jump_to_does_not_run_timers():
    sched = Scheduler(virtual=True)
    fired = []
    sched.call_later(10, fired.append, 1)
    sched.jump_to(20)
    assert fired == []
    assert sched.run_ready() and fired == [1]


def test_real_clock_cannot_jump():
    with pytest.raises(RuntimeError, match="real clock"):
        Scheduler(virtual=False).jump_to(10)


def test_kernel_run_moves_the_clock_through_jump_to(monkeypatch):
    kernel = Kernel(clock="virtual", seed=1)
    jumps = []
    real_jump = kernel.sched.jump_to
    monkeypatch.setattr(kernel.sched, "jump_to", lambda t: (jumps.append(t), real_jump(t)))
    kernel.sched.call_later(NS_PER_S, lambda: None)
    kernel.run(2)
    assert jumps == [NS_PER_S, 2 * NS_PER_S] and kernel.now_ns() == 2 * NS_PER_S


def test_no_module_reaches_into_the_scheduler():
    """Only sched.py touches the scheduler's private fields (`sched._heap`, `_virtual_now`)."""
    import ast
    from pathlib import Path

    import vimage

    root = Path(vimage.__file__).resolve().parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "sched.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("sched", "_sched", "scheduler") or node.attr == "_virtual_now":
                bad.append(f"{path.relative_to(root)}:{node.lineno}: .{node.attr}")
    assert bad == []


def test_pps_limit_allows_limit_events_per_clock_second_and_none_means_unlimited():
    lim = PpsLimit()
    assert [lim.check(5 * NS_PER_S + i, 2) for i in range(3)] == [True, True, False]
    assert lim.check(6 * NS_PER_S, 2)  # a new second starts a new count
    unlimited = PpsLimit()
    assert all(unlimited.check(0, 0) for _ in range(1000))


def test_a_lazy_timer_cancelled_in_its_instant_never_enters_the_heap():
    sched = Scheduler(virtual=True)
    timer = sched.call_later_lazy(1000, lambda: None)
    assert sched.withdraw(timer) and timer.cancelled
    assert sched.next_event() is None and sched.pending_timers() == 0
    assert sched._heap == []


def test_lazy_timers_keep_the_order_they_were_armed_in():
    """A lazy timer enters the heap when the clock is about to move, with the key it got
    when armed: timers due at one instant fire in the order they were armed, lazy or not."""
    sched = Scheduler(virtual=True)
    fired: list[str] = []
    sched.call_later_lazy(1000, fired.append, "lazy 1")
    sched.call_later(1000, fired.append, "eager 2")
    late = sched.call_later_lazy(1000, fired.append, "lazy 3")
    assert sched.pending_timers() == 3 and sched.next_event() == 1000
    assert not sched.withdraw(late)  # in the heap now: left alone
    sched.jump_to(1000)
    assert sched.run_ready() and fired == ["lazy 1", "eager 2", "lazy 3"]


def test_a_destroyed_owner_takes_its_lazy_timers_with_it():
    sched = Scheduler(virtual=True)
    owner = type("Owner", (), {})()
    sched.call_later_lazy(1000, lambda: None, owner=owner)
    sched.purge_timers(owner)
    assert sched.pending_timers() == 0 and sched.next_event() is None


def test_passed_says_whether_a_withdrawn_timer_would_have_fired():
    """Timers due at one instant fire in key order: a withdrawn timer's key is passed
    once the loop fired a later key at that instant, or every timer due then."""
    sched = Scheduler(virtual=True)
    seen: list[bool] = []
    ghost = sched.call_later_lazy(10, lambda: None)
    sched.call_later(10, lambda: seen.append(sched.passed(ghost.when, ghost.seq)))
    assert sched.withdraw(ghost)
    earlier = Scheduler(virtual=True)
    first = earlier.call_later(10, lambda: seen.append(earlier.passed(ghost2.when, ghost2.seq)))
    ghost2 = earlier.call_later_lazy(10, lambda: None)
    assert earlier.withdraw(ghost2) and first.seq < ghost2.seq
    assert not sched.passed(ghost.when, ghost.seq)  # not due yet
    sched.jump_to(10)
    assert not sched.passed(ghost.when, ghost.seq)  # due, the loop has not run yet
    sched.run_ready()
    earlier.jump_to(10)
    earlier.run_ready()
    assert seen == [True, False]  # a later key fired: passed; an earlier one: not yet
    assert sched.passed(ghost.when, ghost.seq) and earlier.passed(ghost2.when, ghost2.seq)
    sched.jump_to(20)
    assert sched.passed(ghost.when, ghost.seq)
