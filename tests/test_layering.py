"""Imports only go down the layers: the core depends on nothing above it.

The import graph of `src/vimage` is read with `ast` (every `import` and `from ... import`
anywhere in a module, inside functions and methods too; relative imports resolved).
Imports under `if TYPE_CHECKING:` are for annotations only and may point anywhere.
Each module belongs to one layer; an import of a module of a higher layer fails the test,
printed as `module -> imported (layer X -> layer Y)`. Imports inside one layer are fine,
and the package's `__init__` (the top, which assembles the standard stack as a kernel
config does) may import anything; it is in the top layer.

Layers, lowest first (a module belongs to the layer of its longest listed prefix):

    wire      vimage.wire                formats: parse/emit/checksum, no state
              vimage.compiled            which modules the compiled build compiles
    sched     vimage.sched               clocks, timers, the packet queue
    kernel    vimage.kernel, .vnet, .protosw, .sysctl, .subsystems, .stats, .context, .cpu,
              .gcpolicy
                                         Kernel, Vnet, the protocol switch, sysctl tree,
                                         counters, the current vnet (a ContextVar),
                                         the garbage collector policy
    net       vimage.net                 interfaces, link layer, routes, pfil, capture
    netinet   vimage.netinet, .netinet6, .netpfil, .netipsec, .fault
                                         protocols; fault injection is a packet filter
                                         (pfil) and link service, so it sits with netpfil
    socket    vimage.socket, .netdb, .stdlib
                                         the socket API, the resolver, and the stdlib
                                         `socket` module dispatch built on both
    aio       vimage.aio, vimage.apps    the asyncio loop; applications on the kernel
    top       vimage.ctl, .cli, .emu, .web, .demo, .testing, .topo, .pytest_plugin
                                         daemon, tools, topologies, test toolkit, GUI

A new module must be given a layer here (the test fails on an unassigned module).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

import vimage

PACKAGE = "vimage"
SRC = Path(vimage.__file__).resolve().parent

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wire", ("vimage.wire", "vimage.compiled")),
    ("sched", ("vimage.sched",)),
    ("kernel", ("vimage.kernel", "vimage.vnet", "vimage.protosw", "vimage.sysctl",
                "vimage.subsystems", "vimage.stats", "vimage.context", "vimage.cpu",
                "vimage.gcpolicy")),
    ("net", ("vimage.net",)),
    ("netinet", ("vimage.netinet", "vimage.netinet6", "vimage.netpfil", "vimage.netipsec",
                 "vimage.fault")),
    ("socket", ("vimage.socket", "vimage.netdb", "vimage.stdlib")),
    ("aio", ("vimage.aio", "vimage.apps")),
    ("top", ("vimage.ctl", "vimage.cli", "vimage.emu", "vimage.web", "vimage.demo",
             "vimage.testing", "vimage.topo", "vimage.pytest_plugin")),
)


class Edge(NamedTuple):
    module: str
    imported: str
    line: int


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, name) of the layer `module` belongs to: the longest listed prefix wins."""
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank, name)
    return None if best is None else (best[1], best[2])


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package directory `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dynamic_target(node: ast.AST) -> str | None:
    """The module named by `import_module("...")` / `__import__("...")`, or, for an
    f-string such as `f"vimage.cli.{name}"`, its constant head (`vimage.cli`)."""
    if not (isinstance(node, ast.Call) and node.args):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__"):
        return None
    arg = node.args[0]
    if isinstance(arg, ast.JoinedStr) and arg.values:
        arg = arg.values[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value.rstrip(".")
    return None


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import not inside an `if TYPE_CHECKING:` body, at any depth; an
    `import_module("x")` call counts as `import x`."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif (target := _dynamic_target(node)) is not None:
            found.append(ast.copy_location(ast.Import(names=[ast.alias(name=target)]), node))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _base_of(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts.pop()  # a module's relative imports start from its package
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def imports_of(module: str, path: Path, known: set[str], package: str) -> list[Edge]:
    """The package-internal modules `module` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    edges = []
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _base_of(module, is_package, node)
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        edges.extend(Edge(module, target, node.lineno) for target in targets
                     if target == package or target.startswith(package + "."))
    return edges


def import_graph(root: Path, package: str) -> list[Edge]:
    modules = modules_of(root, package)
    known = set(modules)
    edges: list[Edge] = []
    for module, path in modules.items():
        edges.extend(imports_of(module, path, known, package))
    return edges


def upward_edges(edges: list[Edge], package: str = PACKAGE) -> list[str]:
    """Each edge from a lower layer to a higher one, as `module -> imported (layer X -> Y)`."""
    bad = []
    for edge in edges:
        if edge.module == package:
            continue  # the package's __init__ assembles the stack: it may import anything
        src, dst = layer_of(edge.module), layer_of(edge.imported)
        if edge.imported == package:
            dst = (len(LAYERS) - 1, "top")  # the package __init__ is the top
        if src is None or dst is None or dst[0] <= src[0]:
            continue
        bad.append(f"{edge.module} -> {edge.imported} (layer {src[1]} -> layer {dst[1]}), "
                   f"line {edge.line}")
    return bad


EDGES = import_graph(SRC, PACKAGE)


# -- the package ---------------------------------------------------------------------------
def test_graph_is_read():
    pairs = {(e.module, e.imported) for e in EDGES}
    assert ("vimage.netinet.ip", "vimage.netinet.reass") in pairs  # a top-level import
    assert ("vimage.net.pipe", "vimage.sched") in pairs
    assert len(modules_of(SRC, PACKAGE)) > 50


def test_every_module_has_a_layer():
    unassigned = [m for m in modules_of(SRC, PACKAGE) if m != PACKAGE and layer_of(m) is None]
    assert unassigned == [], "give these modules a layer in LAYERS"


def test_imports_only_go_down():
    bad = upward_edges(EDGES)
    assert bad == [], "upward imports:\n" + "\n".join(bad)


def test_core_imports_no_asyncio_or_tools():
    """The kernel/vnet layer and the protocols work without the event loop and the tools."""
    netinet = [name for name, _ in LAYERS].index("netinet")
    for module, path in modules_of(SRC, PACKAGE).items():
        layer = layer_of(module)
        if layer is None or layer[0] > netinet:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {alias.name.split(".")[0] for node in _runtime_imports(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in _runtime_imports(tree)
                  if isinstance(node, ast.ImportFrom) and not node.level}
        assert "asyncio" not in names, module


# -- the checker itself must be able to fail -------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_an_upward_edge(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "from vimage import cli\n",
        "kernel.py": ("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from vimage.cli import tool\n"
                      "def f():\n    from vimage.cli import tool\n"),
        "wire/__init__.py": "",
        "wire/ipv4.py": "from . import checksum\nfrom .. import sched\n",
        "wire/checksum.py": "",
        "sched.py": "from vimage.wire import ipv4\n",
        "net/__init__.py": "",
        "net/ifnet.py": ("import vimage.netinet.ip\n"
                         "class I:\n    def up(self):\n"
                         "        if self:\n            from ..netinet import arp\n"),
        "netinet/__init__.py": "",
        "netinet/ip.py": "",
        "netinet/arp.py": ("from vimage.net import ifnet\nimport vimage\n"
                           "from importlib import import_module\n"
                           "def tool(n):\n    return import_module(f'vimage.cli.{n}')\n"),
        "cli/__init__.py": "from vimage.kernel import f\ntool = 1\n",
    })
    edges = import_graph(root, PACKAGE)
    assert ("vimage.wire.ipv4", "vimage.wire.checksum") in {(e.module, e.imported)
                                                           for e in edges}
    assert sorted(upward_edges(edges)) == [
        "vimage.kernel -> vimage.cli (layer kernel -> layer top), line 5",
        "vimage.net.ifnet -> vimage.netinet.arp (layer net -> layer netinet), line 5",
        "vimage.net.ifnet -> vimage.netinet.ip (layer net -> layer netinet), line 1",
        "vimage.netinet.arp -> vimage (layer netinet -> layer top), line 2",
        "vimage.netinet.arp -> vimage.cli (layer netinet -> layer top), line 5",
        "vimage.wire.ipv4 -> vimage.sched (layer wire -> layer sched), line 2",
    ]


def test_type_checking_else_branch_counts(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "wire/__init__.py": ("import typing\nif typing.TYPE_CHECKING:\n    import vimage.net\n"
                             "else:\n    import vimage.sched\n"),
        "sched.py": "", "net/__init__.py": "",
    })
    assert upward_edges(import_graph(root, PACKAGE)) == [
        "vimage.wire -> vimage.sched (layer wire -> layer sched), line 5"]


def test_layer_of_uses_the_longest_prefix():
    assert layer_of("vimage.net.ifnet")[1] == "net"
    assert layer_of("vimage.netinet.tcp.input")[1] == "netinet"
    assert layer_of("vimage.netdb")[1] == "socket"
    assert layer_of("vimage.network") is None


# -- the hooks that replace the core's upward imports ------------------------------------------
def test_userland_hooks_are_installed_by_the_layers_above():
    from vimage import cli, stdlib
    from vimage.context import Userland

    assert Userland.cmd is cli.run_command
    assert Userland.activate is stdlib.activate
    kernel = vimage.Kernel(clock="virtual", seed=1)
    assert kernel.base.cmd("sysctl -n net.inet.ip.forwarding").output.strip() == "0"
    with kernel.base.activate() as vnet:
        assert vimage.get_vnet() is vnet and stdlib.installed()
    assert vimage.get_vnet() is None


def test_userland_refuses_an_unknown_hook():
    from vimage.context import Userland

    with pytest.raises(TypeError, match="no userland hook"):
        Userland.install(cmdd=print)
