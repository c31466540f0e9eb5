"""The vimage asyncio event loop: asyncio's own selector loop over a KernelSelector.

Everything asyncio does with sockets (transports, servers, `sock_*`, streams) it does
through socket objects and a selector; here the sockets are vimage sockets, created in
the current task's vnet by the stdlib dispatch of vimage.stdlib, and the selector runs
the kernel. The loop's clock is the kernel's, so in virtual time `asyncio.sleep`,
`wait_for` timeouts and every stack timer share one discrete-event clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import socket
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from vimage import netdb, stdlib
from vimage.aio.selector import KernelSelector
from vimage.context import current_vnet
from vimage.kernel import FD_BASE
from vimage.sched import NS_PER_S

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.vnet import Vnet

T = TypeVar("T")
MAX_SELECT_S = 24 * 3600  # asyncio's MAXIMUM_SELECT_TIMEOUT (a longer wait is cut there)


class _Step(asyncio.Handle):
    """A callback of the loop (a task's step, a future's callback) that charges its vnet
    (the one in its context, else the loop's) the CPU time it took (vimage.cpu: task_ns),
    read with the thread's CPU clock: wall time would charge a step for the time the
    thread was preempted, which on a busy machine doubles the figures."""

    __slots__ = ()

    def _run(self) -> None:
        loop: VimageEventLoop = self._loop  # type: ignore[attr-defined]
        t0 = time.thread_time_ns()
        super()._run()  # which reports what the callback raised to the loop's handler
        vnet = self._context.get(current_vnet) or loop.vnet  # type: ignore[attr-defined]
        cpu = vnet.cpu
        cpu.task_ns += time.thread_time_ns() - t0
        cpu.steps += 1


class VimageEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose networking acts on vnets of `kernel` and whose time is its clock.

    Code running outside every vnet (no `vnet.activate()`, not started by `vimage.run`)
    acts on `vnet`, by default the kernel's base vnet. One loop per kernel.
    """

    def __init__(self, kernel: Kernel, vnet: Vnet | None = None) -> None:
        self.kernel = kernel
        self.sched = kernel.sched
        self.vnet = vnet if vnet is not None else kernel.base
        try:
            self._kselector = KernelSelector(kernel)
        except RuntimeError:
            self._closed = True  # half-built: let BaseEventLoop.__del__ see a closed loop
            raise
        super().__init__(self._kselector)
        self._kselector.has_callbacks = self._ready.__len__  # type: ignore[attr-defined]
        self._lean = kernel.sched.virtual  # see _run_once
        self._services: dict[Vnet, list[tuple[Any, str | None]]] | None = None
        # the vnet each task was started in (3.11's C tasks do not show their context)
        self._task_vnets: weakref.WeakKeyDictionary[asyncio.Task[Any], Vnet] = \
            weakref.WeakKeyDictionary()
        stdlib.install()

    def _call_soon(self, callback: Callable[..., Any], args: Any,
                   context: contextvars.Context | None) -> asyncio.Handle:
        """asyncio's own, with a handle that charges the vnet of the callback for its CPU
        time while per-vnet accounting is on (vimage.cpu): tasks schedule each step
        through here."""
        handle = (_Step if self.sched.accounting else asyncio.Handle)(callback, args, self,
                                                                      context)
        if handle._source_traceback:  # type: ignore[attr-defined]
            del handle._source_traceback[-1]  # type: ignore[attr-defined]
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def _run_once(self) -> None:
        """asyncio's iteration, leaner in virtual time: the same steps in the same order
        (housekeeping of cancelled timers, select, due timers to the ready queue, the
        callbacks that were ready), but select(0) is skipped when the kernel has nothing
        due and no socket may have changed (it would return nothing), and the ready
        callbacks run without the debug branch. Real time, or debug mode: asyncio's own."""
        if not self._lean or self._debug:  # type: ignore[attr-defined]
            return super()._run_once()  # type: ignore[misc]
        scheduled = self._scheduled  # type: ignore[attr-defined]
        count = len(scheduled)
        if count > 100 and self._timer_cancelled_count / count > 0.5:  # type: ignore[attr-defined]
            return super()._run_once()  # type: ignore[misc]  # (its compaction)
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            heapq.heappop(scheduled)._scheduled = False
        ready = self._ready  # type: ignore[attr-defined]
        selector = self._kselector
        if ready or self._stopping:  # type: ignore[attr-defined]
            if not selector.idle_now():
                self._process_events(selector.select(0))  # type: ignore[attr-defined]
        else:
            when = scheduled[0]._when if scheduled else None
            self._process_events(selector.select(  # type: ignore[attr-defined]
                None if when is None else min(max(0.0, when - self.time()), MAX_SELECT_S)))
        if scheduled:
            end_time = self.time() + self._clock_resolution  # type: ignore[attr-defined]
            while scheduled and scheduled[0]._when < end_time:
                handle = heapq.heappop(scheduled)
                handle._scheduled = False
                ready.append(handle)
        popleft = ready.popleft
        for _ in range(len(ready)):
            handle = popleft()
            if not handle._cancelled:
                handle._run()
        handle = None  # (asyncio's: no cycle through a handle that raised)

    # -- time -----------------------------------------------------------------------------
    def time(self) -> float:
        return self.sched.now_ns() / NS_PER_S

    @property
    def virtual(self) -> bool:
        return self.kernel.sched.virtual

    # -- the loop's own real descriptors ------------------------------------------------------
    def _make_self_pipe(self) -> None:
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self._internal_fds += 1
        self._kselector.register_internal(self._ssock.fileno(), 1,
                                          (asyncio.Handle(self._read_from_self, (), self), None))

    def _write_to_self(self) -> None:
        """asyncio's wake-up byte (call_soon_threadsafe): the selector polls the self-pipe
        before virtual time moves on only after this says so (KernelSelector.real_news)."""
        self._kselector.real_news = True
        super()._write_to_self()  # type: ignore[misc]

    def run_in_executor(self, executor: Any, func: Callable[..., T],
                        *args: Any) -> asyncio.Future[T]:
        """As asyncio's; in virtual time the clock waits for the thread (its work takes no
        virtual time), so a run stays deterministic as long as the thread is."""
        future = super().run_in_executor(executor, func, *args)
        selector = self._kselector
        selector.pending_real += 1

        def done(_f: Any) -> None:
            selector.pending_real -= 1

        future.add_done_callback(done)
        return future

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        self._kselector.pending_real += 1  # its thread calls back: wait for it
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._kselector.pending_real -= 1

    # -- the current vnet -----------------------------------------------------------------
    def current_vnet(self) -> Vnet:
        """The vnet of the running code (the loop's default outside every vnet)."""
        vnet = current_vnet.get()
        return vnet if vnet is not None else self.vnet

    def create_task(self, coro: Any, *, name: str | None = None,
                    context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        if context is None and current_vnet.get() is None:
            context = contextvars.copy_context()
            context.run(current_vnet.set, self.vnet)
        task = super().create_task(coro, name=name, context=context)
        vnet = context.get(current_vnet) if context is not None else current_vnet.get()
        self._task_vnets[task] = vnet if vnet is not None else self.vnet
        return task

    def create_task_in(self, vnet: Vnet, coro: Coroutine[Any, Any, T], *,
                       name: str | None = None) -> asyncio.Task[T]:
        """Start `coro` as a task inside `vnet` (its children inherit the vnet)."""
        if vnet.kernel is not self.kernel:
            raise ValueError(f"{vnet!r} belongs to another kernel")
        context = contextvars.copy_context()
        context.run(current_vnet.set, vnet)
        return self.create_task(coro, name=name, context=context)

    # -- name resolution in the vnet (no executor, no host resolver) --------------------------
    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
        return netdb.getaddrinfo(self.current_vnet(), host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr: tuple[str, int], flags: int = 0) -> tuple[str, str]:
        return netdb.getnameinfo(self.current_vnet(), sockaddr, flags)

    async def _sock_sendfile_native(self, sock: Any, file: Any, offset: int,
                                    count: int | None) -> int:
        if sock.fileno() >= FD_BASE:
            raise asyncio.SendfileNotAvailableError(
                f"sendfile(2) cannot write to the vimage socket {sock!r}")
        return await super()._sock_sendfile_native(sock, file, offset, count)

    # -- processes of a vnet: crash and restart (vimage.fault) ----------------------------------
    def service(self, vnet: Vnet, factory: Callable[[], Coroutine[Any, Any, Any]], *,
                name: str | None = None) -> asyncio.Task[Any]:
        """Run `factory()` as a task in `vnet`, and again each time the vnet restarts
        after a crash (a daemon started at boot). Returns the current task."""
        self._watch_faults()
        self._services.setdefault(vnet, []).append((factory, name))
        return self.create_task_in(vnet, factory(), name=name)

    def _watch_faults(self) -> None:
        if self._services is None:
            from vimage.fault import Faults

            self._services = {}
            faults = Faults.of(self.kernel)
            faults.on_crash.append(self._crashed)
            faults.on_restart.append(self._restarted)

    def _crashed(self, vnet: Vnet) -> None:
        """A crashed host's processes die: cancel every task running in `vnet` or below."""
        for task, owner in list(self._task_vnets.items()):
            if task.done():
                continue
            while owner is not None and owner is not vnet:
                owner = owner.parent
            if owner is vnet:
                task.cancel(f"vnet {vnet.display_name} crashed")

    def _restarted(self, vnet: Vnet) -> None:
        for factory, name in (self._services or {}).get(vnet, ()):
            self.create_task_in(vnet, factory(), name=name)

    def __repr__(self) -> str:
        return f"<VimageEventLoop clock={self.kernel.clock} vnet={self.vnet.display_name}>"


def service(vnet: Vnet, factory: Callable[[], Coroutine[Any, Any, Any]], *,
            name: str | None = None) -> asyncio.Task[Any]:
    """On the running vimage loop: VimageEventLoop.service()."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VimageEventLoop):
        raise RuntimeError("vimage.service() needs a running vimage event loop (vimage.run)")
    return loop.service(vnet, factory, name=name)


def new_event_loop(kernel: Kernel, vnet: Vnet | None = None) -> VimageEventLoop:
    return VimageEventLoop(kernel, vnet)


def run(main: Coroutine[Any, Any, T], *, kernel: Kernel | None = None,
        vnet: Vnet | None = None, debug: bool | None = None) -> T:
    """`asyncio.run` on a vimage loop: `main` runs inside `vnet` (default: the kernel's base)."""
    if kernel is None:
        if vnet is None:
            raise TypeError("vimage.run() needs kernel= or vnet=")
        kernel = vnet.kernel
    if vnet is None:
        vnet = kernel.base
    elif vnet.kernel is not kernel:
        raise ValueError(f"{vnet!r} belongs to another kernel")
    context = contextvars.copy_context()
    context.run(current_vnet.set, vnet)
    with asyncio.Runner(debug=debug, loop_factory=lambda: VimageEventLoop(kernel, vnet)) as r:
        return r.run(main, context=context)


def spawn(vnet: Vnet, coro: Coroutine[Any, Any, T], *,
          name: str | None = None) -> asyncio.Task[T]:
    """Start `coro` as a task inside `vnet` on the running vimage loop."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VimageEventLoop):
        raise RuntimeError("vimage.spawn() needs a running vimage event loop (vimage.run)")
    return loop.create_task_in(vnet, coro, name=name)
