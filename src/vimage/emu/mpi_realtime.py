"""Real time across ranks: each cut link a VXLAN tunnel over the hosts' UDP (docs/mpi.md).

`mpirun -n N vimage topo run FILE --duration S --realtime [--bind ADDR]`: every rank
builds its partition as in virtual time (vimage.emu.mpi), in a keyed kernel on the real
clock, and each end of a cut link becomes a tunnel: its pipe (queue, bandwidth, delay,
jitter, loss) holds a frame until its arrival time as on any link, then sends it in a
VXLAN datagram (RFC 7348: flags 0x08, VNI = link index + 1) from a host UDP socket of
its own to the socket of the other end, on the other rank's host. A receiver thread per
rank hands what arrives to the end's input through the kernel queue. Ranks agree on
addresses and ports with one MPI exchange, start together, and stop together after
SECONDS; the real network adds its own latency to the link's delay.

A Linux vxlan device is a valid far end (`ip link add vx0 type vxlan id VNI remote
ADDR dstport PORT local ...`): the datagrams are standard VXLAN; `--remote NODE=ADDR:PORT`
(or `NODE=[ADDR6]:PORT`) makes each of NODE's links such a tunnel. A Linux VTEP sends to
its `dstport` and listens there, so the local ends of all the links to remote nodes on
one PORT share one socket bound to PORT, and a datagram goes to the end its VNI names,
as several vxlan devices (one VNI each) share Linux's socket on a dstport. Ends between
ranks have a socket each, on an ephemeral port. The sockets are of the `--bind`
address's family: IPv4 or IPv6 (AF_INET6), one family for a run.
"""

from __future__ import annotations

import errno
import ipaddress
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from vimage.net.pipe import LinkPipe
from vimage.wire import WireError
from vimage.wire import vxlan as wvxlan

if TYPE_CHECKING:
    from vimage.emu.mpi import Engine
    from vimage.net.ifnet import Ifnet

POLL = 0.2  # seconds the receiver thread waits between looks at its stop flag


class TunnelPipe(LinkPipe):
    """A cut link's local end in real time: at arrival time the frame leaves in VXLAN."""

    __slots__ = ("peer_addr", "sent", "sock", "vni")

    def __init__(self, ifp: Ifnet, sock: socket.socket, vni: int) -> None:
        super().__init__(ifp)
        self.sock = sock
        self.vni = vni
        self.peer_addr: tuple[str, int] | None = None
        self.sent = 0

    def schedule(self, arrive: int, frame: bytes) -> None:
        sched = self.ifp.vnet.kernel.sched
        sched.call_at(arrive, self._transmit, frame, owner=self.ifp.vnet)

    def _transmit(self, frame: bytes) -> None:
        if self.peer_addr is None:
            return
        try:
            self.sock.sendto(wvxlan.build(self.vni, frame), self.peer_addr)
        except OSError:
            self.ifp.oerrors += 1
            return
        self.delivered += 1
        self.sent += 1


def family(address: str) -> socket.AddressFamily:
    """The socket family of an IP address (ValueError if it is not one)."""
    version = ipaddress.ip_address(address).version
    return socket.AF_INET6 if version == 6 else socket.AF_INET


class Tunnels:
    """The tunnel sockets of one rank and the thread that receives on them. Each socket
    has its ends by VNI: one end (a link between ranks) or all the ends towards remote
    nodes on one port."""

    def __init__(self, engine: Engine, bind: str) -> None:
        self.engine = engine
        self.bind = bind
        self.family = family(bind)
        self.pipes: dict[tuple[int, str], TunnelPipe] = {}
        self.fixed: set[tuple[int, str]] = set()  # ends whose far end is outside vimage
        self.by_port: dict[int, socket.socket] = {}  # remote nodes' port -> shared socket
        self.ends: dict[socket.socket, dict[int, tuple[TunnelPipe, Ifnet]]] = {}  # by VNI
        self.received = 0
        self.malformed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._selector = selectors.DefaultSelector()

    def _open(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.bind, port))
        except OSError as exc:
            sock.close()
            what = "for the tunnels to remote nodes" if port else "for a tunnel"
            hint = ""
            if port and exc.errno == errno.EADDRINUSE:  # another process (a rank?) holds it
                hint = (": on one host, one rank can hold a port (pin the nodes linked to "
                        "remote nodes of that port to one partition)")
            raise OSError(exc.errno, f"cannot bind {self._where(port)} {what} "
                          f"({exc.strerror}){hint}") from None
        sock.setblocking(False)
        self.ends[sock] = {}
        self._selector.register(sock, selectors.EVENT_READ, self.ends[sock])
        return sock

    def _where(self, port: int) -> str:
        return f"[{self.bind}]:{port}" if self.family == socket.AF_INET6 else \
            f"{self.bind}:{port}"

    def attach(self, key: tuple[int, str], end: Ifnet,
               remote: tuple[str, int] | None = None) -> TunnelPipe:
        """A tunnel for the local end `key` (link index, side) of a cut link, VNI = link
        index + 1. With `remote` (ADDR, PORT) the far end is outside vimage (a Linux
        vxlan device with `dstport PORT`): it sends to PORT, so this end listens on PORT
        too (one socket for every such end of this rank, told apart by VNI), and sends
        to ADDR:PORT."""
        if remote is None:
            sock = self._open(0)
        else:
            sock = self.by_port.get(remote[1]) or self._open(remote[1])
            self.by_port[remote[1]] = sock
        pipe = TunnelPipe(end, sock, key[0] + 1)
        if remote is not None:
            pipe.peer_addr = remote
            self.fixed.add(key)
        self.pipes[key] = pipe
        self.ends[sock][pipe.vni] = (pipe, end)
        return pipe

    def addresses(self) -> dict[tuple[int, str], tuple[str, int]]:
        return {key: pipe.sock.getsockname()[:2] for key, pipe in self.pipes.items()}

    def connect(self, everyone: dict[tuple[int, str], tuple[str, int]]) -> None:
        """Point each local end at the socket of the other end of its link."""
        for (index, side), pipe in self.pipes.items():
            if (index, side) not in self.fixed:
                pipe.peer_addr = everyone[(index, "b" if side == "a" else "a")]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._receive, name="vimage-tunnels",
                                        daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(POLL):
                self._drain(key.fileobj, key.data)

    def _drain(self, sock: Any, ends: dict[int, tuple[TunnelPipe, Ifnet]]) -> None:
        """Hand each datagram waiting on `sock` to the end its VNI names. One that is
        not VXLAN, or names no end of this socket, is dropped and counted (`malformed`,
        and the `ierrors` of the socket's first end: its only one between ranks)."""
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                rep = wvxlan.parse(data)
            except WireError:
                rep = None
            target = None if rep is None else ends.get(rep.vni)
            if rep is None or target is None:
                if ends:
                    first = ends[min(ends)][1]
                    with first.vnet.kernel.sched.cond:
                        first.ierrors += 1
                self.malformed += 1
                continue
            end = target[1]
            sched = end.vnet.kernel.sched
            with sched.cond:
                sched.queue.append((end, bytes(rep.payload)))
                sched.notify()
            self.received += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._selector.get_map() is None:  # stopped already
            return
        for sock in self.ends:
            self._selector.unregister(sock)
            sock.close()
        self._selector.close()


def run_realtime(engine: Engine, duration: float) -> Any:
    """Start the tunnels and the kernel's thread together on every rank, wait `duration`
    seconds, stop together; the rank's RankStats."""
    assert engine.kernel is not None and engine.stats is not None
    kernel, comm, stats = engine.kernel, engine.comm, engine.stats
    tunnels = engine.tunnels
    assert tunnels is not None
    mine = tunnels.addresses()
    everyone: dict[tuple[int, str], tuple[str, int]] = {}
    for part in comm.alltoall([mine] * comm.size):
        everyone.update(part)
    tunnels.connect(everyone)
    tunnels.start()
    comm.alltoall([None] * comm.size)  # everyone listens before anyone sends
    started = time.perf_counter()
    events0 = kernel.sched.events
    kernel.start()
    threading.Event().wait(duration)
    kernel.stop()
    comm.alltoall([None] * comm.size)  # nobody stops receiving while others still send
    tunnels.stop()
    stats.wall = time.perf_counter() - started
    stats.work = stats.wall
    stats.events = kernel.sched.events - events0
    stats.frames_out = sum(p.sent for p in tunnels.pipes.values())
    stats.frames_in = tunnels.received
    return stats
