"""examples/kvstore: its tests pass against the store, and catch the broken variant.

The example's three files are copied into a pytester directory and its tests run in
a subprocess, as a user would run them, once per variant.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from scapy.layers import inet, l2  # noqa: F401 (registers Ethernet, IP, TCP for rdpcap)
from scapy.utils import rdpcap

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kvstore"
FILES = ("kvstore.py", "test_kvstore.py", "conftest.py")
TESTS = 6
# plugins of our own test setup that the example does not use: importing them
# (hypothesis above all) would double the start-up time of each run
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark",
         "-p", "no:xdist")


@pytest.fixture
def example(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in FILES:
        shutil.copy(EXAMPLE / name, pytester.path / name)
    return pytester


def test_the_store_passes_its_tests(example: pytest.Pytester):
    result = example.runpytest_subprocess("-q", *QUIET)
    result.assert_outcomes(passed=TESTS)


def test_the_broken_variant_is_caught_with_a_trace(example: pytest.Pytester,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KVSTORE_VARIANT", "broken")
    traces = example.path / "traces"
    result = example.runpytest_subprocess("-rf", *QUIET, f"--vimage-trace-dir={traces}")
    result.stdout.fnmatch_lines(["kvstore variant: broken"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1
    assert outcomes.get("failed", 0) + outcomes.get("passed", 0) == TESTS
    # the consistency test fails on stale reads, and its report names a trace file
    result.stdout.fnmatch_lines([
        "*stale reads:*",
        "*GET *, but * was acknowledged*",
        "*vimage packet trace*",
        "*frames on * interfaces: *test_no_acknowledged_write_is_lost.pcapng",
        "FAILED test_kvstore.py::test_no_acknowledged_write_is_lost*",
    ])
    named = re.search(r"frames on \d+ interfaces: (\S+test_no_acknowledged_write_is_lost"
                      r"\.pcapng)", result.stdout.str())
    assert named is not None
    path = Path(named.group(1))
    assert path.exists() and path.parent == traces
    packets = rdpcap(str(path), count=4000)
    store = [bytes(p["TCP"].payload) for p in packets
             if p.haslayer("TCP") and 7000 in (p["TCP"].sport, p["TCP"].dport)]
    payloads = b"".join(store)
    # the clients' requests and the replicas' own protocol are all in the trace
    for verb in (b"SET h", b"GET h", b"OK\n", b"VALUE ", b"PUT h"):
        assert verb in payloads, verb
    # replication between replicas crosses the router, whose interfaces are in the trace too
    assert any(p.sniffed_on.startswith("r:") and bytes(p["TCP"].payload).startswith(b"PUT ")
               for p in packets if p.haslayer("TCP"))
