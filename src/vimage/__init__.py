"""vimage: a clonable network stack — many independent FreeBSD-style stacks in one process."""

# cli and stdlib install the userland the core reaches through vimage.context.Userland when
# imported: vnet.cmd() (the tools) and the stdlib's socket API under vnet.activate()
from vimage import cli, stdlib  # noqa: F401
from vimage.aio import VimageEventLoop, run, service, spawn
from vimage.context import get_vnet
from vimage.kernel import Kernel
from vimage.vnet import Vnet

__all__ = ["Kernel", "VimageEventLoop", "Vnet", "get_vnet", "run", "service", "spawn"]
__version__ = "0.1.0"
