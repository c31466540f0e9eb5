"""The current vnet of running application code (FreeBSD's CURVNET_SET).

A `ContextVar`, so asyncio tasks and threads started with a copied context carry
the vnet they were started in, as a process carries its jail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vimage.vnet import Vnet

current_vnet: ContextVar[Vnet | None] = ContextVar("vimage_current_vnet", default=None)


def get_vnet() -> Vnet | None:
    """The vnet of the running code, or None outside every vnet."""
    return current_vnet.get()


@contextmanager
def activate(vnet: Vnet) -> Iterator[Vnet]:
    """Run the block inside `vnet`; the stdlib's socket API follows it (vimage.stdlib)."""
    from vimage import stdlib

    if not vnet.alive:
        raise OSError(f"vnet {vnet.display_name} is destroyed")
    stdlib.install()
    token = current_vnet.set(vnet)
    try:
        yield vnet
    finally:
        current_vnet.reset(token)
