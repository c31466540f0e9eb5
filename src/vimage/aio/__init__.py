"""asyncio inside vnets: `vimage.run(main(), kernel=k)` and the vimage event loop."""

from vimage.aio.loop import VimageEventLoop, new_event_loop, run, service, spawn
from vimage.aio.selector import KernelPoll, KernelSelector

__all__ = ["KernelPoll", "KernelSelector", "VimageEventLoop", "new_event_loop", "run", "service",
           "spawn"]
