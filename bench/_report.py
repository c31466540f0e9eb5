"""How every benchmark reports: JSON on stdout and, if asked, in a file."""

from __future__ import annotations

import json
import platform
import sys


def report(result: dict[str, object], out: str | None) -> None:
    result.setdefault("python", sys.version.split()[0])
    result.setdefault("machine", platform.machine())
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as fh:
            fh.write(text + "\n")
