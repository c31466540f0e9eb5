"""Suite-wide settings: property tests draw the same examples on every run.

A random search that finds a new case only sometimes would make the suite flaky;
`VIMAGE_HYPOTHESIS=explore` turns the randomness back on for a bug hunt, and
`--hypothesis-profile long` (which overrides both) runs the fuzz tests without end.
"""

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None)
# `pytest -m fuzz --hypothesis-profile long`: the fuzz tests run for hours (docs/testing.md);
# random, with the example database on so a failure found is replayed first next time
settings.register_profile("long", max_examples=1_000_000, deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("VIMAGE_HYPOTHESIS") == "explore"
                      else "repeatable")
