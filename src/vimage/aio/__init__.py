"""asyncio inside vnets: `vimage.run(main(), kernel=k)` and the vimage event loop."""

from vimage.aio.loop import VimageEventLoop, new_event_loop, run, service, spawn
from vimage.aio.selector import KernelSelector

__all__ = ["KernelSelector", "VimageEventLoop", "new_event_loop", "run", "service", "spawn"]
