"""Helpers shared by the tool tests."""

from __future__ import annotations

from vimage.cli import usage_of


def error_lines(output: str, tool: str) -> list[str]:
    """The lines of a failed command's output before the tool's usage block, which,
    if present, must be exactly the tool's USAGE (FreeBSD's usage() after the error);
    a usage with no message before it stands for itself by its first line."""
    usage = usage_of(tool)
    head, found, tail = output.partition(usage)
    if not found:
        return output.splitlines()
    assert tail == "", output
    return head.splitlines() or usage.splitlines()[:1]
