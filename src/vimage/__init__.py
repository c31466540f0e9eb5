"""vimage: a clonable network stack — many independent FreeBSD-style stacks in one process."""

from vimage.kernel import Kernel
from vimage.vnet import Vnet

__all__ = ["Kernel", "Vnet"]
__version__ = "0.1.0"
