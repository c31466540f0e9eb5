"""Applications as generators that the kernel loop steps: they run in virtual time too.

A blocking socket call drives the kernel loop until *its* socket is ready, so two
blocking programs cannot share a thread (the first to block starves the other), and
in virtual time there is only one thread. An application here is instead a generator
over non-blocking sockets: when it can do nothing more, it yields the kernel time (in
ns) at which it wants to be woken, or None. A `Task` steps it from the kernel loop:
the sockets' readiness hook (`_poll.touch`, the one a selector uses) and a timer each
schedule the next step. Any number of tasks, in any vnets, then progress together in
the one loop, however that loop is driven: `kernel.run()`, some blocking call, or the
background thread of a real-time kernel. `Task.wait()` blocks the calling thread (and
so drives the loop) until the task has finished.

A step may be spurious (a socket changed in a way the task does not care about), so
generators always retry their non-blocking call and yield again if it would block;
the helpers below (`connect`, `accept`, `recv_exact`, `send_all`) do exactly that.
"""

from __future__ import annotations

import errno
import os
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from vimage.sched import NS_PER_S
from vimage.socket.socket import AF_INET, SOCK_STREAM

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.sched import Timer
    from vimage.socket.tcp_socket import TcpSocket
    from vimage.vnet import Vnet

T = TypeVar("T")
Steps = Generator[int | None, None, T]
"""What a task runs: yields wake-up times (kernel ns, or None: only a socket wakes it)."""


class TaskCancelled(Exception):
    """The task was cancelled before it finished."""


class _Hook:
    """The `_poll` object of a task's sockets: a touch schedules a step of the task.

    It holds the task weakly, so sockets do not keep a task alive: one nobody keeps is
    freed by the garbage collector, which closes its generator (and, through the
    generator's `finally`, its sockets).
    """

    __slots__ = ("task",)

    def __init__(self, task: Task[Any]) -> None:
        self.task = weakref.ref(task)

    def touch(self, _sock: object) -> None:
        task = self.task()
        if task is not None:
            task.wake()


class Task(Generic[T]):
    """One generator of one vnet, stepped by the kernel loop until it returns or raises."""

    __slots__ = ("__weakref__", "_gen", "_hook", "_step_timer", "_wake_timer", "done", "error",
                 "kernel", "name", "result", "vnet")

    def __init__(self, vnet: Vnet, name: str = "task") -> None:
        self.vnet = vnet
        self.kernel: Kernel = vnet.kernel
        self.name = name
        self._gen: Steps[T] | None = None
        self._hook = _Hook(self)
        self._step_timer: Timer | None = None
        self._wake_timer: Timer | None = None
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None

    # -- sockets --------------------------------------------------------------------------------
    def socket(self, family: int = AF_INET) -> TcpSocket:
        """A new non-blocking TCP socket of the task's vnet whose changes wake the task."""
        sock = self.vnet.socket(family, SOCK_STREAM)
        return self.adopt(sock)  # type: ignore[arg-type]

    def adopt(self, sock: TcpSocket) -> TcpSocket:
        """Make `sock` (an accepted one, say) non-blocking and let its changes wake the task."""
        sock.setblocking(False)
        sock._poll = self._hook
        return sock

    # -- running ----------------------------------------------------------------------------------
    def start(self, gen: Steps[T]) -> Task[T]:
        """Run `gen` from the kernel loop, from its next pass on."""
        if self._gen is not None:
            raise RuntimeError(f"task {self.name} is already started")
        self._gen = gen
        self.wake()
        return self

    def wake(self) -> None:
        """Schedule a step (at most one is pending)."""
        if self._step_timer is None and not self.done and self._gen is not None:
            self._step_timer = self.kernel.sched.call_later(0, self._step, owner=self.vnet)

    def _on_timer(self) -> None:
        self._wake_timer = None
        self.wake()

    def _step(self) -> None:
        self._step_timer = None
        if self.done or self._gen is None:
            return
        if self._wake_timer is not None:
            self._wake_timer.cancel()
            self._wake_timer = None
        try:
            when = next(self._gen)
        except StopIteration as stop:
            self._finish(stop.value, None)
            return
        except Exception as exc:  # the task's failure is its result, never the loop's
            self._finish(None, exc)
            return
        if when is not None:
            delay = max(0, when - self.kernel.now_ns())
            self._wake_timer = self.kernel.sched.call_later(delay, self._on_timer,
                                                            owner=self.vnet)

    def _finish(self, result: T | None, error: BaseException | None) -> None:
        self.done = True
        self.result, self.error = result, error
        for timer in (self._step_timer, self._wake_timer):
            if timer is not None:
                timer.cancel()
        self._step_timer = self._wake_timer = None
        self._gen = None
        with self.kernel.sched.cond:
            self.kernel.sched.notify()  # threads blocked in wait() look again

    def cancel(self) -> None:
        """Stop the task: its generator is closed (its `finally` blocks close its sockets)."""
        if self.done:
            return
        with self.kernel.sched.cond:
            gen = self._gen
            if gen is not None:
                gen.close()
            self._finish(None, TaskCancelled(f"{self.name} cancelled"))

    def wait(self, timeout: float | None = None) -> T:
        """Block until the task has finished (driving the loop); its result, or its error.

        TimeoutError if `timeout` seconds of kernel time pass first; OSError(ENETDOWN)
        if the task's vnet is destroyed meanwhile.
        """
        vnet = self.vnet
        ok = self.kernel.wait(lambda: self.done or not vnet.alive, timeout)
        if not self.done:
            if not vnet.alive:
                raise OSError(errno.ENETDOWN, f"vnet {vnet.display_name} was destroyed")
            if not ok:
                raise TimeoutError(f"{self.name}: timed out")
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]

    def __repr__(self) -> str:
        state = "done" if self.done else "running" if self._gen is not None else "new"
        return f"<Task {self.name} {state} vnet={self.vnet.display_name}>"


# -- helpers for generators ---------------------------------------------------------------------
def deadline_in(kernel: Kernel, seconds: float | None) -> int | None:
    """The kernel time `seconds` from now, or None for no deadline."""
    return None if seconds is None else kernel.now_ns() + int(seconds * NS_PER_S)


def _expired(kernel: Kernel, deadline: int | None) -> bool:
    return deadline is not None and kernel.now_ns() >= deadline


def connect(sock: TcpSocket, address: tuple[str, int], deadline: int | None) -> Steps[None]:
    """Connect a non-blocking socket; OSError as connect() raises it, TimeoutError."""
    kernel = sock.vnet.kernel
    err = sock.connect_ex(address)
    while True:
        if err in (0, errno.EISCONN):
            return
        if err not in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            raise OSError(err, os.strerror(err))
        if _expired(kernel, deadline):
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")
        yield deadline
        err = sock.connect_ex(address)


def accept(sock: TcpSocket, deadline: int | None) -> Steps[tuple[TcpSocket, tuple[str, int]]]:
    """Accept a connection on a non-blocking listening socket."""
    kernel = sock.vnet.kernel
    while True:
        try:
            return sock.accept()
        except BlockingIOError:
            pass
        if _expired(kernel, deadline):
            raise TimeoutError(errno.ETIMEDOUT, "accept timed out")
        yield deadline


def recv_exact(sock: TcpSocket, size: int, deadline: int | None) -> Steps[bytes]:
    """Exactly `size` bytes; EOFError if the peer closes first."""
    kernel = sock.vnet.kernel
    buf = bytearray()
    while len(buf) < size:
        try:
            chunk = sock.recv(size - len(buf))
        except BlockingIOError:
            if _expired(kernel, deadline):
                raise TimeoutError(errno.ETIMEDOUT, "receive timed out") from None
            yield deadline
            continue
        if not chunk:
            raise EOFError(f"connection closed after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def send_all(sock: TcpSocket, data: bytes, deadline: int | None) -> Steps[None]:
    """Send all of `data`."""
    kernel = sock.vnet.kernel
    view = memoryview(data)
    while len(view):
        try:
            view = view[sock.send(view):]
            continue
        except BlockingIOError:
            pass
        if _expired(kernel, deadline):
            raise TimeoutError(errno.ETIMEDOUT, "send timed out")
        yield deadline
