"""vimage: a clonable network stack — many independent FreeBSD-style stacks in one process."""

from vimage.aio import VimageEventLoop, run, service, spawn
from vimage.context import get_vnet
from vimage.kernel import Kernel
from vimage.vnet import Vnet

__all__ = ["Kernel", "VimageEventLoop", "Vnet", "get_vnet", "run", "service", "spawn"]
__version__ = "0.1.0"
