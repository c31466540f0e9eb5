"""The current vnet of running application code (FreeBSD's CURVNET_SET).

A `ContextVar`, so asyncio tasks and threads started with a copied context carry
the vnet they were started in, as a process carries its jail.

`Userland` holds what `vnet.cmd()` and `vnet.activate()` reach above the core: the
layers above install themselves there when imported (the package's `__init__` imports
them), so the core imports none of them (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from vimage.cli import CmdResult
    from vimage.vnet import Vnet

current_vnet: ContextVar[Vnet | None] = ContextVar("vimage_current_vnet", default=None)


def get_vnet() -> Vnet | None:
    """The vnet of the running code, or None outside every vnet."""
    return current_vnet.get()


@contextmanager
def activate(vnet: Vnet) -> Iterator[Vnet]:
    """Run the block inside `vnet` (only the current vnet: see `Userland.activate`)."""
    if not vnet.alive:
        raise OSError(f"vnet {vnet.display_name} is destroyed")
    token = current_vnet.set(vnet)
    try:
        yield vnet
    finally:
        current_vnet.reset(token)


class Userland:
    """Hooks from the core up to the layers above it, set once when those are imported.

    `cmd(vnet, line, stdin)` runs a tool inside `vnet` (vimage.cli installs it);
    `activate(vnet)` is the context manager behind `vnet.activate()`: by default only the
    current vnet, vimage.stdlib's also makes the stdlib's socket module follow it.
    """

    cmd: ClassVar[Callable[[Vnet, str | list[str], bytes | None], CmdResult] | None] = None
    activate: ClassVar[Callable[[Vnet], AbstractContextManager[Vnet]]] = activate

    @classmethod
    def install(cls, **hooks: Callable[..., Any]) -> None:
        """Set hooks by name (`Userland.install(cmd=run_command)`)."""
        for name, hook in hooks.items():
            if name not in ("cmd", "activate"):
                raise TypeError(f"no userland hook {name!r}")
            setattr(cls, name, hook)


current_fib: ContextVar[int] = ContextVar("vimage_current_fib", default=0)
"""The fib of the running code (FreeBSD's per-process p_fibnum, set by setfib(1)): new
sockets start in it, and `net.my_fibnum` reads it."""
