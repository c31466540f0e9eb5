"""`vimage topo check` and `vimage topo convert`: local work on files, no daemon."""

from __future__ import annotations

from pathlib import Path

from vimage.cli.vimage import main
from vimage.emu import imn, load

DATA = Path(__file__).parent / "data"


def test_check_a_good_file(capsys):
    assert main(["topo", "check", str(DATA / "static-v2.imn")]) == 0
    assert capsys.readouterr().out == f"{DATA / 'static-v2.imn'}: 4 nodes, 4 links\n"


def test_check_prints_every_problem_on_its_own_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnodes:\n  a: {type: wlan}\nlinks:\n  - [a, b]\n")
    assert main(["topo", "check", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"vimage topo: {bad}:3: nodes.a.type: unknown node type 'wlan'",
        f"vimage topo: {bad}:5: links.0.b: link to a missing node 'b'"]


def test_convert_imn_to_yaml(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    assert main(["topo", "convert", str(DATA / "static-legacy.imn"), "-o", str(out)]) == 0
    assert load(out) == imn.load(DATA / "static-legacy.imn")
    assert main(["topo", "convert", str(DATA / "switched.imn")]) == 0
    assert capsys.readouterr().out.startswith("version: 1\nname: switched\n")


def test_convert_unsupported_and_skip(tmp_path, capsys):
    src = tmp_path / "w.imn"
    src.write_text("node n0 {\n    type wlan\n}\n")
    assert main(["topo", "convert", str(src)]) == 1
    assert "unsupported node types wlan: n0 (wlan)" in capsys.readouterr().err
    assert main(["topo", "convert", "--skip-unsupported", str(src)]) == 0
    captured = capsys.readouterr()
    assert "warning: node n0: type wlan left out" in captured.err
    assert "nodes: {}" in captured.out


def test_usage_errors(capsys):
    assert main(["topo", "frob", "x"]) == 64
    assert main(["topo", "check", "/nonexistent.yaml"]) == 1
    assert "No such file or directory" in capsys.readouterr().err
