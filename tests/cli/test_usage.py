"""Every tool's usage: on --help (status 0) and after a bad option (status 64), as
FreeBSD's tools print theirs; and the synopsis advertises only options that exist."""

from __future__ import annotations

import re

import pytest

from vimage.cli import TOOLS, usage_of
from vimage.kernel import Kernel

GETOPT_TOOLS = tuple(t for t in TOOLS if t not in ("fault", "hosts", "vlink"))
# single-letter options in a synopsis: `[-Dnoq]` clusters and `-c count` words
_CLUSTER = re.compile(r"\[-([A-Za-z0-9]{2,})\]")
_SINGLE = re.compile(r"(?<![\w-])-([A-Za-z0-9])(?![\w-])")


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    return Kernel(clock="virtual", seed=1)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_prints_the_usage_and_succeeds(kernel: Kernel, tool: str) -> None:
    usage = usage_of(tool)
    assert re.match(rf"usage: {tool}\b", usage)
    for line in usage.splitlines():
        assert len(line) <= 80 and line == line.rstrip(), line
    assert tuple(kernel.cmd([tool, "--help"])) == (0, usage)


@pytest.mark.parametrize("tool", TOOLS)
def test_dash_h_is_help_unless_the_tool_has_its_own(kernel: Kernel, tool: str) -> None:
    result = kernel.cmd([tool, "-h"])
    if tool == "sysctl":  # sysctl -h: human-readable numbers; alone it names nothing
        assert tuple(result) == (64, usage_of(tool))
    else:
        assert tuple(result) == (0, usage_of(tool))


@pytest.mark.parametrize("tool", TOOLS)
def test_a_bad_option_prints_the_error_then_the_usage(kernel: Kernel, tool: str) -> None:
    result = kernel.cmd([tool, "-Z"])
    assert result.status == 64
    assert result.output == f"{tool}: illegal option -- Z\n" + usage_of(tool)


@pytest.mark.parametrize("tool", ["ping", "traceroute", "tcpdump", "sysctl", "iperf3"])
def test_a_missing_option_argument_is_named(kernel: Kernel, tool: str) -> None:
    letter = {"ping": "c", "traceroute": "m", "tcpdump": "c", "sysctl": "Z", "iperf3": "p"}[tool]
    result = kernel.cmd([tool, f"-{letter}"])
    assert result.status == 64
    first = result.output.partition("\n")[0]
    if tool == "sysctl":
        assert first == "sysctl: illegal option -- Z"
    else:
        assert first == f"{tool}: option requires an argument -- {letter}"


def test_a_bad_value_is_one_line_without_the_usage(kernel: Kernel) -> None:
    """FreeBSD's errx(EX_USAGE, ...): the message alone, status 64."""
    assert tuple(kernel.cmd("ping -c 0 127.0.0.1")) == (
        64, "ping: invalid count of packets to transmit: `0'\n")


def test_long_options_get_getopt_long_messages(kernel: Kernel) -> None:
    out = kernel.cmd("tcpdump --nosuch").output
    assert out.startswith("tcpdump: unrecognized option `--nosuch'\nusage: tcpdump ")
    out = kernel.cmd("iperf3 --json=1").output
    assert out.startswith("iperf3: option `--json' doesn't allow an argument\n")


@pytest.mark.parametrize("tool", GETOPT_TOOLS)
def test_the_synopsis_advertises_only_options_the_tool_accepts(kernel: Kernel,
                                                                tool: str) -> None:
    """Each option letter in the usage parses: `tool -x -Z` complains about Z, not x
    (an option taking an argument swallows -Z, and then fails on its value or later)."""
    usage = usage_of(tool)
    letters = set(_SINGLE.findall(usage))
    for cluster in _CLUSTER.findall(usage):
        letters.update(cluster)
    assert letters, usage
    for letter in sorted(letters):
        result = kernel.cmd([tool, f"-{letter}", "-Z"])
        assert f"illegal option -- {letter}" not in result.output, (letter, result.output)
