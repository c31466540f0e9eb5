"""Malformed topology files: always one TopologyError line, never another exception."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from vimage.emu import imn, yamlfmt
from vimage.emu.model import TopologyError

DATA = Path(__file__).parent / "data"
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
ODD_VALUES: tuple[Any, ...] = (None, 1, -5, 1.5, "", "x y", [], {}, [1, "a"], {"a": 1}, True,
                               "n0", "ifc1", "l0", "-1", "nan", "1e400", "a\nb")


def _paths(data: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    items = data.items() if isinstance(data, dict) else (
        enumerate(data) if isinstance(data, list) else ())
    for key, value in items:
        found.extend(_paths(value, (*at, key)))
    return found


def _mutated(data: Any, rng: random.Random) -> Any:
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice([p for p in _paths(data) if p])
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = rng.choice(ODD_VALUES)
    return data


def _refused_in_one_line(load: Any, text: str) -> None:
    try:
        load(text)
    except TopologyError as exc:
        assert "\n" not in str(exc) and all("\n" not in line for line in exc.lines)


@pytest.mark.parametrize("name", ["static-v2.imn", "crosscanvas-v1.imn", "switched.imn"])
def test_json_imn_with_values_of_the_wrong_shape(name):
    rng = random.Random(name)
    original = json.loads((DATA / name).read_text())
    for _ in range(100):
        _refused_in_one_line(lambda t: imn.loads(t, "x.imn", skip_unsupported=True),
                             json.dumps(_mutated(original, rng)))


def test_yaml_with_values_of_the_wrong_shape():
    rng = random.Random(3)
    original = yaml.safe_load(yamlfmt.dumps(imn.load(DATA / "static-v2.imn")))
    for _ in range(200):
        _refused_in_one_line(lambda t: yamlfmt.loads(t, "x.yaml"),
                             yaml.dump(_mutated(original, rng), Dumper=DUMPER))


def test_cut_and_garbled_text():
    rng = random.Random(4)
    for name in ("static-v2.imn", "static-legacy.imn"):
        text = (DATA / name).read_text()
        for _ in range(100):
            i = rng.randrange(len(text))
            garbled = text[:i] + rng.choice('{}[]":\n\t!x') + text[i + rng.randint(0, 40):]
            _refused_in_one_line(lambda t: imn.loads(t, "x.imn"), garbled)


def test_a_quoted_newline_is_escaped():
    with pytest.raises(TopologyError) as info:
        yamlfmt.loads('version: 1\nnodes:\n  a: {type: "pc\\nx"}\n', "x.yaml")
    assert str(info.value) == "x.yaml:3: nodes.a.type: unknown node type 'pc\\nx'"
