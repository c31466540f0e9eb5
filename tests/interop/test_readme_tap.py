"""The README's TAP example runs as written (as root, with /dev/net/tun; the
directory's fixtures skip it, with the reason, elsewhere).

The block is taken from README.md as it stands, with its namespace renamed to one
of ours so the session check would see it left behind; whatever it creates is
removed even when it fails half-way.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

from vimage.kernel import Kernel

from .conftest import NS_PREFIX, RUN_TIMEOUT, netns_list

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Joining real Linux namespaces (TAP)"


def tap_example() -> str:
    """The first Python block of the README's TAP section."""
    text = README.read_text()
    section = text[text.index(HEADING):]
    section = section[:section.find("\n## ", 1)]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's TAP section has no Python block"
    return match.group(1)


def cleanup(scope: dict[str, object], ns: str) -> None:
    """Stop and destroy what the example made, then delete its namespace."""
    for value in list(scope.values()):
        if isinstance(value, Kernel):
            value.stop()
            for vnet in reversed(value.vnets()):
                if vnet.alive and vnet.parent is value.base:
                    value.destroy(vnet)
    if ns in netns_list():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=RUN_TIMEOUT)


def test_the_readme_tap_example_runs_as_written() -> None:
    code = tap_example()
    assert '"netns", "add", "peer"' in code and '"netns", "del", "peer"' in code
    ns = f"{NS_PREFIX}readme"
    code = re.sub(r"\bpeer\b", ns, code)
    scope: dict[str, object] = {"__name__": "readme_tap"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), scope)
    finally:
        cleanup(scope, ns)
    text = out.getvalue()
    assert text.startswith("tap0\n"), text
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in text, text
    assert ns not in netns_list()  # the example deleted its namespace itself
