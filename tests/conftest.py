"""Suite-wide settings: property tests draw the same examples on every run.

A random search that finds a new case only sometimes would make the suite flaky;
`VIMAGE_HYPOTHESIS=explore` turns the randomness back on for a bug hunt, and
`--hypothesis-profile long` (which overrides both) runs the fuzz tests without end.
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None)
# `pytest -m fuzz --hypothesis-profile long`: the fuzz tests run for hours (docs/testing.md);
# random, with the example database on so a failure found is replayed first next time
settings.register_profile("long", max_examples=1_000_000, deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("VIMAGE_HYPOTHESIS") == "explore"
                      else "repeatable")


@pytest.fixture(autouse=True)
def _no_loop_errors(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """An exception caught in a kernel loop (Scheduler.record_error) is a bug unless the
    test provokes it on purpose (`@pytest.mark.loop_errors`): the loop survives such an
    exception by design, so without this check a broken path can pass unnoticed."""
    from vimage.sched import Scheduler

    caught: list[tuple[object, Exception]] = []
    original = Scheduler.record_error

    def record(self: Scheduler, where: object, exc: Exception) -> None:
        caught.append((where, exc))
        original(self, where, exc)

    monkeypatch.setattr(Scheduler, "record_error", record)
    yield
    if caught and request.node.get_closest_marker("loop_errors") is None:
        where, exc = caught[-1]
        pytest.fail(f"{len(caught)} exception(s) in a kernel loop, the last in {where!r}: "
                    f"{exc!r}", pytrace=False)
