"""The TCP package's modules import only the ones below them at module level (the
order of netinet/tcp/__init__.py's docstring); an import inside a function may reach
up (the timeouts call output), which is what keeps the package free of import
cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import vimage.netinet.tcp as tcp_pkg

ORDER = ("seq", "cc", "var", "reass", "sack", "timer", "output", "subr", "syncache",
         "input", "usrreq")
PKG = "vimage.netinet.tcp"


def module_level_imports(path: Path) -> set[str]:
    """The package's modules that `path` imports outside functions and TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:  # top level only: function bodies are not visited
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(PKG + "."):
                found.add(node.module[len(PKG) + 1:].split(".")[0])
            elif node.module == PKG:
                found.update(alias.name for alias in node.names)
    return found


def test_every_module_is_in_the_order():
    here = Path(tcp_pkg.__file__).parent
    assert {p.stem for p in here.glob("*.py")} - {"__init__"} == set(ORDER)


def test_modules_import_only_downwards():
    here = Path(tcp_pkg.__file__).parent
    for rank, name in enumerate(ORDER):
        imported = module_level_imports(here / f"{name}.py")
        above = {m for m in imported if m in ORDER and ORDER.index(m) >= rank}
        assert not above, f"{name} imports {sorted(above)} at module level"


def test_a_vnets_input_is_tcp_input_bound_to_its_state():
    """The protocol switch binds tcp_input itself to the vnet's state: no layer between."""
    from vimage.kernel import Kernel
    from vimage.netinet.tcp.input import tcp_input
    from vimage.netinet.tcp.subr import tcp_ctlinput_quoted
    from vimage.protosw import bind

    vnet = Kernel(clock="virtual", seed=1).create("a")
    bind(vnet)
    handler = vnet.inputs[2][6]
    assert handler.__func__ is tcp_input and handler.__self__ is vnet.tcp
    ctl = vnet.ctlinputs[2][6]
    assert ctl.__func__ is tcp_ctlinput_quoted and ctl.__self__ is vnet.tcp
