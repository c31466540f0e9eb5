"""A `selectors` selector for vimage sockets (and real descriptors) that drives a kernel.

asyncio's selector event loop asks its selector "what is ready, waiting at most T
seconds?". This one answers for vimage sockets by running the kernel's packet queue
and timers: in virtual time it jumps the clock to the next kernel timer or to the
deadline, whichever comes first, so `asyncio.sleep(3600)` takes no wall time; in real
time it sleeps in the OS selector (real descriptors plus a wake-up socket) until the
next kernel timer, a real descriptor, or another thread's packet (a TAP reader, a
thread using a blocking vimage socket) needs it.

Readiness is level-triggered, as epoll's default: a socket is re-checked when the
stack says its state changed (`touch`, from `Tcb.notify` and datagram enqueue) and
for as long as it stays ready, so an idle socket costs nothing per iteration.
"""

from __future__ import annotations

import contextlib
import math
import select
import selectors
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vimage.kernel import FD_BASE
from vimage.sched import NS_PER_S

if TYPE_CHECKING:
    from vimage.kernel import Kernel

REAL_POLL_EVERY = 64
"""In virtual time, the loop's own descriptors are polled at least every this many moves
of the clock (see KernelSelector.real_news)."""
EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


def _fd_of(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _Map(Mapping[Any, selectors.SelectorKey]):
    __slots__ = ("_keys",)

    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[_fd_of(fileobj)]
        except (KeyError, ValueError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Any:
        return iter(self._keys)


class KernelSelector(selectors.BaseSelector):
    """Selects over one kernel's sockets and real descriptors; see the module docstring."""

    def __init__(self, kernel: Kernel) -> None:
        if kernel.sched.waker is not None:
            raise RuntimeError("this kernel already has an event loop or selector")
        self.kernel = kernel
        self._sched = kernel.sched
        self._virtual = self._sched.virtual
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._socks: dict[int, Any] = {}  # our descriptors -> sockets (kept alive while registered)
        self._candidates: set[int] = set()
        # the OS's selector for real descriptors (not `_real`: mypyc names a C field after
        # the attribute, and `__real` is a C keyword of GCC's)
        self._os_sel = selectors.DefaultSelector()
        self._internal: set[int] = set()  # real descriptors of the loop itself (self-pipe)
        self._nreal = 0  # real descriptors registered besides those (real time only)
        # in virtual time the loop's own descriptors are polled before the clock moves only
        # when the loop says it wrote to them (`real_news`, its _write_to_self), and every
        # REAL_POLL_EVERY moves for what nobody announces (a signal's wake-up byte): a
        # system call per move of the clock cost 3% of a busy run
        self.real_news = False
        self._quiet_moves = 0
        self._waiting = False
        self.pending_real = 0  # executor jobs under way: virtual time waits for them
        # set by the loop: true when asyncio has callbacks ready (so time must not move on);
        # the loop gives its ready queue's __len__
        self.has_callbacks: Callable[[], object] = lambda: False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._os_sel.register(self._wake_r, EVENT_READ, None)
        self._sched.waker = self._wake

    # -- the stack's side -----------------------------------------------------------------
    def touch(self, sock: Any) -> None:
        """The socket's readiness may have changed (called by the stack, lock held)."""
        self._candidates.add(sock._fd)
        if self._waiting:
            self._wake()

    def _wake(self) -> None:
        if self._waiting:
            self._waiting = False
            with contextlib.suppress(OSError):  # already full of wake-ups, or closing
                self._wake_w.send(b"\0")

    # -- registration ---------------------------------------------------------------------
    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _fd_of(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        if fd >= FD_BASE:
            sock = self.kernel.fds.get(fd)
            if sock is None or sock.closed:
                raise ValueError(f"{fileobj!r}: no open vimage socket with descriptor {fd}")
            if sock._poll is not None and sock._poll is not self:
                raise ValueError(f"{sock!r} is registered with another selector")
            with self._sched.lock:
                sock._poll = self
                self._socks[fd] = sock
                self._candidates.add(fd)
        else:
            if self._virtual and fd not in self._internal:
                raise RuntimeError(
                    f"real file descriptor {fd} cannot be watched by a loop in virtual "
                    "time: real I/O does not happen in virtual time (use clock='real')")
            self._os_sel.register(fd, events, data)
            if fd not in self._internal:
                self._nreal += 1
        self._keys[fd] = key
        return key

    def register_internal(self, fileobj: Any, events: int, data: Any = None) -> Any:
        """Register one of the loop's own real descriptors (its self-pipe)."""
        self._internal.add(_fd_of(fileobj))
        return self.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else _fd_of(fileobj)
        key = self._keys.pop(fd, None)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if fd >= FD_BASE:
            with self._sched.lock:
                sock = self._socks.pop(fd, None)
                if sock is not None and sock._poll is self:
                    sock._poll = None
                self._candidates.discard(fd)
        else:
            if fd in self._internal:
                self._internal.discard(fd)
            else:
                self._nreal -= 1
            with contextlib.suppress(KeyError, ValueError):
                self._os_sel.unregister(fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fd_of(fileobj)
        key = self._keys.get(fd)
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if fd < FD_BASE:
            self._os_sel.modify(fd, events, data)
        key = key._replace(events=events, data=data)
        self._keys[fd] = key
        if fd >= FD_BASE:
            self._candidates.add(fd)
        return key

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return _Map(self._keys)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self.get_map()[fileobj]

    # -- selecting ------------------------------------------------------------------------
    def _collect(self) -> list[tuple[selectors.SelectorKey, int]]:
        ready: list[tuple[selectors.SelectorKey, int]] = []
        if not self._candidates:
            return ready
        keys, socks = self._keys, self._socks
        still: set[int] = set()
        for fd in self._candidates:
            key = keys.get(fd)
            sock = socks.get(fd)
            if key is None or sock is None or sock.closed:
                continue  # closed under the loop (a crash, a destroyed vnet): like epoll,
                # which forgets a closed descriptor, report nothing more
            events = sock._events() & key.events
            if events:
                ready.append((key, events))
                still.add(fd)
        self._candidates = still
        return ready

    def _real_ready(self, timeout: float | None) -> list[tuple[selectors.SelectorKey, int]]:
        out = []
        for rkey, events in self._os_sel.select(timeout):
            if rkey.fileobj is self._wake_r:
                self._drain_wake()
                continue
            key = self._keys.get(rkey.fd)
            if key is not None:
                out.append((key, events & key.events))
        return out

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def idle_now(self) -> bool:
        """True if select(0) would find nothing to do or report: no frame queued, no kernel
        timer due, no socket whose readiness may have changed, no real descriptor besides
        the loop's own (the loop then skips the call; see VimageEventLoop._run_once)."""
        return not (self._candidates or self._nreal or self._sched.runnable())

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        sched = self._sched
        has_real = self._nreal > 0  # real descriptors besides the wake-up socket and the
        # loop's own self-pipe
        # Round up: asyncio asks for the float gap to its next timer, and a gap rounded down
        # to 0 ns would leave that timer forever "not yet due" in virtual time.
        deadline = None if timeout is None else sched.now_ns() + max(
            0, math.ceil(timeout * NS_PER_S))
        while True:
            # (no break or continue inside `with`: mypyc cannot compile those in try/finally)
            moved = False
            with sched.lock:
                sched.run_ready()
                ready = self._collect() if self._candidates else []
                now = sched.now_ns()
                # (a kernel timer may have scheduled asyncio work: go run it)
                done = bool(ready) or (deadline is not None and now >= deadline) \
                    or bool(self.has_callbacks())
                if not done:
                    target = sched.next_event(deadline)
                    if self._virtual and not self.pending_real:
                        if has_real or self._real_news():  # before the clock moves
                            real = self._real_ready(0)
                            if real:
                                return real
                        if target is None:
                            raise RuntimeError(
                                "would block forever: nothing can happen in virtual time "
                                "(no timer is armed and no socket can become ready)")
                        sched.jump_to(target)
                        moved = True
                    else:
                        self._waiting = True
            if done:
                break
            if moved:
                continue
            if self._virtual:
                wait = None  # a thread is working: its work takes no virtual time
            else:
                wait = None if target is None else max(0.0, (target - now) / NS_PER_S)
            try:
                real = self._real_ready(wait)
            finally:
                with sched.lock:
                    self._waiting = False
            if real:
                with sched.lock:
                    sched.run_ready()
                    return real + self._collect()
        if has_real:
            ready.extend(self._real_ready(0))
        return ready

    def _real_news(self) -> bool:
        """Should the loop's own descriptors be polled before virtual time moves on?"""
        if not self._internal:
            return False
        if self.real_news or self._quiet_moves >= REAL_POLL_EVERY:
            self.real_news = False
            self._quiet_moves = 0
            return True
        self._quiet_moves += 1
        return False

    def close(self) -> None:
        with self._sched.lock:
            for sock in self._socks.values():
                if sock._poll is self:
                    sock._poll = None
            self._socks.clear()
            self._keys.clear()
            self._candidates.clear()
            if self._sched.waker == self._wake:
                self._sched.waker = None
        self._os_sel.close()
        self._wake_r.close()
        self._wake_w.close()


# KernelPoll's masks (module constants: mypyc does not take a class attribute as an
# argument's default)
_POLL_ALWAYS = select.POLLERR | select.POLLHUP | select.POLLNVAL
_POLL_DEFAULT = select.POLLIN | select.POLLPRI | select.POLLOUT


class KernelPoll:
    """`select.poll()`'s interface over one kernel's vimage sockets.

    register/modify/unregister take a vimage socket or its descriptor and a POLL* mask;
    poll(timeout_ms) drives the kernel (in virtual time the clock jumps) until a socket
    is ready or the time is up, and returns [(fd, revents)] as poll(2) does: revents
    from the socket's `_pollmask()` (Linux's tcp_poll and datagram_poll, POLLRDHUP on a
    stream whose peer half-closed), POLLERR, POLLHUP and POLLNVAL whether asked for or not.
    """

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._masks: dict[int, int] = {}

    def register(self, fd: Any, eventmask: int = _POLL_DEFAULT) -> None:
        self._masks[_fd_of(fd)] = eventmask

    def modify(self, fd: Any, eventmask: int) -> None:
        key = _fd_of(fd)
        if key not in self._masks:
            raise FileNotFoundError(2, "No such file or directory")
        self._masks[key] = eventmask

    def unregister(self, fd: Any) -> None:
        del self._masks[_fd_of(fd)]

    def _ready(self) -> list[tuple[int, int]]:
        out = []
        fds = self.kernel.fds
        for fd, mask in self._masks.items():
            sock = fds.get(fd)
            revents = sock._pollmask() if sock is not None else select.POLLNVAL
            revents &= mask | _POLL_ALWAYS
            if revents:
                out.append((fd, revents))
        return out

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        """Ready descriptors; `timeout` in milliseconds (None or negative: no limit)."""
        seconds = None if timeout is None or timeout < 0 else timeout / 1000
        result: list[tuple[int, int]] = []

        def ready() -> bool:
            result[:] = self._ready()
            return bool(result)

        with self.kernel.sched.cond:
            if not ready() and seconds != 0:
                self.kernel.wait(ready, seconds)
        return result
