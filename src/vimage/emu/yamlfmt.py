"""Our YAML topology format (docs/emulator.md): read with line numbers, validated, written back.

`load(path)` / `loads(text, filename)` return a checked `Topology` or raise
`TopologyError` whose message is one line: `FILE:LINE: nodes.r1.type: unknown node type
'wlan'`. The line is found from the position of each key in the file: the text is
composed once with PyYAML's safe loader, every mapping key and sequence item is
recorded with its line, and a problem's field path is looked up there (its longest
recorded prefix). Duplicate keys, which YAML loaders silently merge, are refused.
`dump(topology)` writes the format back; loading the dump gives an equal Topology.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

import yaml

from vimage.emu.model import Path, Problem, Topology, TopologyError

# libyaml's parser when PyYAML has it (several times faster), else the pure-Python one;
# both give nodes with marks and build only plain data (SafeConstructor)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Lines:
    """Field path -> line (1-based) of every key and list item of a composed document."""

    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.duplicates: list[Problem] = []

    def walk(self, node: yaml.Node, at: Path) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                path = (*at, key)
                if key in seen:
                    self.duplicates.append(Problem(path, _duplicate_message(at, key)))
                    self.lines.setdefault(("__dup__", len(self.duplicates)),
                                          key_node.start_mark.line + 1)
                seen.add(key)
                self.lines.setdefault(path, key_node.start_mark.line + 1)
                self.walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines.setdefault((*at, i), item.start_mark.line + 1)
                self.walk(item, (*at, i))

    def line_of(self, path: Path) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


def _duplicate_message(at: Path, key: str) -> str:
    what = {"nodes": "node name", "interfaces": "interface name"}.get(
        str(at[-1]) if at else "", "key")
    return f"duplicate {what} '{key}'"


def loads(text: str, filename: str = "<string>") -> Topology:
    """Parse, validate and build a topology from YAML text."""
    loader = _LOADER(text)
    try:
        document = loader.get_single_node()  # composed once: lines from it, data from it
        data = loader.construct_document(document) if document is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise TopologyError(f"{filename}:{line}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"{filename}:1: {exc}") from None
    finally:
        loader.dispose()
    lines = _Lines()
    if document is not None:
        lines.walk(document, ())
    if lines.duplicates:
        first = lines.duplicates[0]
        line = lines.lines[("__dup__", 1)]
        raise TopologyError(f"{filename}:{line}: {first}", lines.duplicates,
                            [f"{filename}:{lines.lines[('__dup__', k + 1)]}: {p}"
                             for k, p in enumerate(lines.duplicates)])
    try:
        return Topology.from_dict(data)
    except TopologyError as exc:
        problems = sorted(exc.problems, key=lambda p: lines.line_of(p.path))
        first = problems[0] if problems else Problem((), str(exc))
        raise TopologyError(f"{filename}:{lines.line_of(first.path)}: {first}", problems,
                            [f"{filename}:{lines.line_of(p.path)}: {p}" for p in problems]
                            ) from None


def load(path: str | FsPath) -> Topology:
    path = FsPath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"{path}: {exc.strerror or exc}") from None
    return loads(text, str(path))


def dumps(topology: Topology) -> str:
    """The topology as YAML in our format (version 1)."""
    return yaml.dump(topology.to_dict(), Dumper=_DUMPER, sort_keys=False,
                     default_flow_style=None, allow_unicode=True, width=100)


def dump(topology: Topology, path: str | FsPath) -> None:
    FsPath(path).write_text(dumps(topology), encoding="utf-8")
