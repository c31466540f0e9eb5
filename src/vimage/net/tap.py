"""tap: a vnet interface whose wire is a Linux TAP device.

What the vnet transmits is written to the TAP file descriptor, so the Linux kernel
receives it on the device's Linux side; what Linux sends there is read by a small
reader thread and queued to the kernel loop like any other received frame. The
Linux side can be created straight inside a Linux network namespace (the device
is opened from a thread that has entered it), so the host's own namespace is
never touched. Needs root (CAP_NET_ADMIN), `/dev/net/tun`, and the real clock:
real packets cannot wait for virtual time.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from vimage.net.ifnet import (
    ETHER_MTU,
    IFF_BROADCAST,
    IFF_MULTICAST,
    IFF_RUNNING,
    IFF_SIMPLEX,
    EtherIfnet,
    Ifnet,
)

if TYPE_CHECKING:
    from vimage.vnet import Vnet

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
SIOCSIFMTU = 0x8922
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
LINUX_NAME_PATTERN = "vimg%d"  # the Linux kernel picks the first free number
MAX_FRAME = 65536 + 14


T = TypeVar("T")
_MTU_SLOT = Ifnet.mtu  # the slot a Tap's mtu property stores into


class TapError(OSError):
    """Creating a TAP interface failed; the message names the cause in one line."""


class Tap(EtherIfnet):
    """An Ethernet interface of a vnet backed by a Linux TAP device."""

    __slots__ = ("_fd", "_reader", "_wake", "linux_name", "netns")

    # The MTU is honoured on both sides: setting ours sets the Linux side's too.
    @property  # type: ignore[override]
    def mtu(self) -> int:
        return _MTU_SLOT.__get__(self)

    @mtu.setter
    def mtu(self, value: int) -> None:
        if getattr(self, "_fd", -1) >= 0 and value != _MTU_SLOT.__get__(self):
            _in_netns(self.netns, lambda: _set_linux_mtu(self.linux_name, value))
        _MTU_SLOT.__set__(self, value)

    def transmit(self, frame: bytes) -> bool:
        if self._fd < 0:  # the device is closed
            self.oerrors += 1
            return False
        try:
            os.write(self._fd, frame)
        except OSError as exc:
            self.oerrors += 1
            if exc.errno == errno.EIO:  # the Linux side is down: no carrier
                self.flags &= ~IFF_RUNNING
            return False
        self.flags |= IFF_RUNNING  # carrier follows the Linux side
        return True

    def _read_loop(self, fd: int, wake: int) -> None:
        """Reader thread: queue every frame Linux sends to the kernel loop."""
        sched = self.vnet.kernel.sched
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            sel.register(wake, selectors.EVENT_READ)
            while True:
                ready = {key.fd for key, _ in sel.select()}
                if wake in ready:
                    return
                try:
                    frame = os.read(fd, MAX_FRAME)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not frame:
                    return
                # close_device() joins this thread while holding the kernel lock (destroy
                # runs under it): never block on the lock past the device's closing.
                while not sched.cond.acquire(timeout=0.05):
                    if self._fd != fd:
                        return
                try:
                    if self._fd != fd:  # closed while we waited: drop the frame
                        return
                    self.flags |= IFF_RUNNING  # Linux is sending: the carrier is there
                    sched.queue.append((self, frame))
                    sched.notify()
                finally:
                    sched.cond.release()

    def close_device(self) -> None:
        """Stop the reader and close the TAP file descriptor (the Linux side disappears)."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        os.write(self._wake[1], b"x")
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)
        os.close(fd)
        for end in self._wake:
            os.close(end)


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _set_linux_mtu(name: str, mtu: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCSIFMTU, struct.pack("16si20x", name.encode(), mtu))


def _open_tap(mtu: int) -> tuple[int, str]:
    """Open a TAP device in the calling thread's network namespace."""
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TapError(errno.ENOENT, f"tap: {TUN_PATH} does not exist (no TUN/TAP driver)") \
            from None
    except PermissionError:
        raise TapError(errno.EPERM, f"tap: cannot open {TUN_PATH}: permission denied "
                                    "(needs root or CAP_NET_ADMIN)") from None
    try:
        ifr = struct.pack("16sH22x", LINUX_NAME_PATTERN.encode(), IFF_TAP | IFF_NO_PI)
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except PermissionError:
            raise TapError(errno.EPERM, "tap: creating a TAP device needs root or "
                                        "CAP_NET_ADMIN") from None
        name = ifr[:16].split(b"\0", 1)[0].decode()
        _set_linux_mtu(name, mtu)
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _in_netns(netns: str | None, work: Callable[[], T]) -> T:
    """Run `work` in Linux network namespace `netns` (None: here), from a thread of its own."""
    if netns is None:
        return work()
    path = netns if netns.startswith("/") else os.path.join(NETNS_DIR, netns)
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TapError(errno.ENOENT, f"tap: no Linux network namespace {netns!r}") from None
    result: list[T] = []
    failure: list[BaseException] = []

    def inside() -> None:  # only this thread enters the namespace
        try:
            _libc_setns(ns_fd)
            result.append(work())
        except BaseException as exc:
            failure.append(exc)

    try:
        worker = threading.Thread(target=inside, name="vimage-tap-netns")
        worker.start()
        worker.join()
    finally:
        os.close(ns_fd)
    if failure:
        exc = failure[0]
        if isinstance(exc, TapError):
            raise exc
        raise TapError(getattr(exc, "errno", None) or errno.EIO,
                       f"tap: failed in namespace {netns!r}: {exc}")
    return result[0]


def create_tap(vnet: Vnet, unit: int | None = None, netns: str | None = None,
               mtu: int = ETHER_MTU) -> Tap:
    """Create `tapN` in `vnet`; its Linux side (`.linux_name`) appears in `netns` if given."""
    kernel = vnet.kernel
    if kernel.clock != "real":
        raise TapError(errno.EINVAL, "tap: TAP interfaces need the real clock "
                                     "(Linux will not wait for virtual time)")
    used = {i.unit for i in kernel.interfaces() if i.kind == "tap"}
    if unit is None:
        unit = 0
        while unit in used:
            unit += 1
    elif unit in used:
        raise FileExistsError(f"interface tap{unit} already exists")
    fd, linux_name = _in_netns(netns, lambda: _open_tap(mtu))
    try:
        ifp = Tap(vnet, "tap", unit, f"tap{unit}", IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST,
                  mtu, kernel.random_mac(vnet))
    except BaseException:
        os.close(fd)
        raise
    ifp._fd = fd
    ifp.linux_name = linux_name
    ifp.netns = netns
    ifp._wake = os.pipe()
    ifp.flags |= IFF_RUNNING
    ifp._reader = threading.Thread(target=ifp._read_loop, args=(fd, ifp._wake[0]),
                                   name=f"vimage-{ifp.name}", daemon=True)
    ifp._reader.start()
    return ifp
