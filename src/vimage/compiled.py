"""The optional compiled build (issue 16; docs/internals.md, "Compiled builds").

`VIMAGE_COMPILE=1 pip install --no-build-isolation .` (with mypy installed) compiles the
modules named in `MODULES` with mypyc (setup.py reads the list from this file); a plain
install, an editable one, or a tree on PYTHONPATH is pure Python. There is no switch at
run time: Python imports a module's extension when it sits beside the source, else the
source, so a missing or unloadable extension falls back to pure Python by itself.
`active()` says which modules this process runs compiled.

`mypyc_attr` is mypy_extensions' class decorator when that package is installed (mypyc
recognises it by that name) and a no-op otherwise, so the pure package does not depend
on it. The classes that carry it are those that a compiled build would otherwise make
too strict for the rest of the code: interface classes subclassed outside the compiled
set, and the scheduler and its timers, which are weakly referenced and patched by tests,
and TCP sockets, which are weakly referenced and derive from a pure base (SocketBase).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

_T = TypeVar("_T")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover - mypy_extensions is usually present

    def mypyc_attr(*attrs: str, **kwattrs: Any) -> Callable[[_T], _T]:  # type: ignore[misc]
        return lambda cls: cls


# The hot paths of forwarding, UDP and TCP over IPv4 and IPv6 (found with cProfile of
# bench_forward and bench_tcp), the modules whose classes those paths read on every
# packet, and the TCP socket and asyncio selector that bench_aio's hosts run through.
# Paths relative to src/.
MODULES: tuple[str, ...] = (
    "vimage/sched.py",
    "vimage/wire/checksum.py",
    "vimage/wire/ipv4.py",
    "vimage/wire/tcp.py",
    "vimage/wire/udp.py",
    "vimage/net/ether.py",
    "vimage/net/ifnet.py",
    "vimage/net/offload.py",
    "vimage/net/route.py",
    "vimage/netinet/arp.py",
    "vimage/netinet/in_pcb.py",
    "vimage/netinet/ip.py",
    "vimage/netinet/udp.py",
    "vimage/netinet/tcp/cc.py",
    "vimage/netinet/tcp/input.py",
    "vimage/netinet/tcp/output.py",
    "vimage/netinet/tcp/reass.py",
    "vimage/netinet/tcp/sack.py",
    "vimage/netinet/tcp/seq.py",
    "vimage/netinet/tcp/timer.py",
    "vimage/netinet/tcp/usrreq.py",
    "vimage/netinet/tcp/var.py",
    "vimage/wire/ipv6.py",
    "vimage/netinet6/ip6.py",
    "vimage/netinet6/nd6.py",
    "vimage/netinet6/in6.py",
    "vimage/socket/inet6.py",
    "vimage/socket/tcp_socket.py",
    "vimage/aio/selector.py",
)


def module_name(path: str) -> str:
    """"vimage/net/ifnet.py" -> "vimage.net.ifnet"."""
    return path.removesuffix(".py").replace("/", ".")


def is_compiled(module: ModuleType) -> bool:
    """Whether `module` was loaded from an extension rather than its .py source. Code that
    patches a module's functions needs to know: compiled callers call them directly."""
    return not str(getattr(module, "__file__", "")).endswith(".py")


def active() -> dict[str, bool]:
    """Each module of `MODULES` that is imported, and whether it runs compiled."""
    found = {}
    for path in MODULES:
        module = sys.modules.get(module_name(path))
        if module is not None:
            found[module.__name__] = is_compiled(module)
    return found
