"""Packet capture (FreeBSD bpf(4)): capture sessions on an interface.

An interface's `bpf` slot is None while nobody captures, so the data path pays one
attribute test. `open_capture(ifp, ...)` puts a `BpfIf` dispatcher there; the
interface hands it every frame it sends or receives (`tap(frame, outbound)`), and
the dispatcher gives each open `Session` a copy stamped with the kernel clock. When
the last session closes, `ifp.bpf` is None again. Destroying the interface ends
every session on it (`Session.error` then says why).

Link types: Ethernet interfaces capture whole frames (LINKTYPE_ETHERNET); loopback
carries bare IPv4 packets and captures them as BSD lo0 does, behind a 4-byte
address family header (LINKTYPE_NULL, AF_INET = 2 in the file's byte order).

A session writes what it captures to a classic pcap file (`vimage.wire.pcap`) and
matches frames with a compiled pcap-filter(7) expression (`vimage.net.bpf_filter`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from vimage.net.bpf_filter import Matcher, compile_filter
from vimage.wire.pcap import (
    DEFAULT_SNAPLEN,
    LINKTYPE_ETHERNET,
    LINKTYPE_NULL,
    MAX_SNAPLEN,
    NULL_HEADER_INET,
    PcapWriter,
)

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

DIRECTIONS = ("inout", "in", "out")

PacketCallback = Callable[[int, bytes, int], None]


def linktype_of(ifp: Ifnet) -> int:
    """The link type a capture on `ifp` records: Ethernet, or NULL for loopback."""
    return LINKTYPE_NULL if ifp.mac is None else LINKTYPE_ETHERNET


# -- sessions ----------------------------------------------------------------------------
class Session:
    """One capture on one interface (one open /dev/bpf descriptor).

    Counters as bpf(4) keeps them: `received` counts every packet that reached this
    session (in the chosen direction), `captured` those that passed the filter and were
    stored, `dropped` those that passed but found the in-memory buffer full. The
    session closes itself after `count` captured packets, and when the interface is
    destroyed (then `error` is "The interface disappeared").
    """

    __slots__ = ("__weakref__", "buffer", "callback", "captured", "closed", "count",
                 "direction", "dispatcher", "dropped", "error", "filter", "ifp", "linktype",
                 "match", "packets", "path", "received", "snaplen", "writer")

    def __init__(self, ifp: Ifnet, dispatcher: BpfIf, match: Matcher | None, filter_text: str,
                 snaplen: int, writer: PcapWriter | None, keep: bool,
                 callback: PacketCallback | None, count: int | None, direction: str,
                 buffer: int | None) -> None:
        self.ifp = ifp
        self.dispatcher = dispatcher
        self.linktype = dispatcher.linktype
        self.match = match
        self.filter = filter_text
        self.snaplen = snaplen
        self.writer = writer
        self.path = writer.path if writer is not None else None
        self.packets: list[tuple[int, bytes]] | None = [] if keep else None
        self.callback = callback
        self.count = count
        self.direction = direction
        self.buffer = buffer
        self.received = self.captured = self.dropped = 0
        self.closed = False
        self.error: str | None = None

    def _deliver(self, now: int, frame: bytes, outbound: bool) -> None:
        direction = self.direction
        if direction != "inout" and outbound != (direction == "out"):
            return
        self.received += 1
        match = self.match
        if match is not None and not match(frame):
            return
        packets = self.packets
        if packets is not None and self.buffer is not None and len(packets) >= self.buffer:
            self.dropped += 1
            return
        wirelen = len(frame)
        data = frame if wirelen <= self.snaplen else frame[:self.snaplen]
        self.captured += 1
        if self.writer is not None:
            try:
                self.writer.write(now, data, wirelen)
            except OSError as exc:
                self.captured -= 1
                self.dropped += 1
                self.error = exc.strerror or str(exc)
        if packets is not None:
            packets.append((now, data))
        if self.callback is not None:
            self.callback(now, data, wirelen)
        if self.count is not None and self.captured >= self.count:
            self.close()

    def close(self) -> None:
        """Stop capturing; the file (if any) is complete once this returns."""
        if self.closed:
            return
        with self.ifp.vnet.kernel.sched.cond:
            self.closed = True
            self.dispatcher.remove(self)
            if self.writer is not None:
                self.writer.close()

    def _detached(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.error = reason
            if self.writer is not None:
                self.writer.close()

    def stats(self) -> tuple[int, int, int]:
        """(captured, received by filter, dropped), tcpdump's closing numbers."""
        return self.captured, self.received, self.dropped

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"<Session {self.ifp.name} {state} filter={self.filter!r} "
                f"captured={self.captured}>")


class BpfIf:
    """The dispatcher in `ifp.bpf` (FreeBSD's bpf_if): the open sessions of one interface."""

    __slots__ = ("__weakref__", "clock", "ifp", "linktype", "sessions")

    def __init__(self, ifp: Ifnet) -> None:
        self.ifp = ifp
        self.linktype = linktype_of(ifp)
        self.clock = ifp.vnet.kernel.sched.now_ns
        self.sessions: tuple[Session, ...] = ()

    def tap(self, frame: bytes, outbound: bool) -> None:
        """Called by the interface for every frame it sends or receives."""
        if self.linktype == LINKTYPE_NULL:
            frame = NULL_HEADER_INET + frame
        now = self.clock()
        for session in self.sessions:  # a tuple: a session may close itself meanwhile
            session._deliver(now, frame, outbound)

    def remove(self, session: Session) -> None:
        self.sessions = tuple(s for s in self.sessions if s is not session)
        if not self.sessions and self.ifp.bpf is self:
            self.ifp.bpf = None

    def close(self) -> None:
        """The interface is being destroyed: every session on it ends."""
        sessions, self.sessions = self.sessions, ()
        for session in sessions:
            session._detached("The interface disappeared")
        if self.ifp.bpf is self:
            self.ifp.bpf = None


def _alive(ifp: Ifnet) -> bool:
    return ifp.flags != 0 and ifp.vnet.ifaces.get(ifp.name) is ifp


def open_capture(ifp: Ifnet, path: str | IO[bytes] | None = None, filter: str | None = None,
                 snaplen: int = DEFAULT_SNAPLEN, *, count: int | None = None,
                 keep: bool | None = None, callback: PacketCallback | None = None,
                 direction: str = "inout", precision: str = "nano",
                 buffer: int | None = None, netmask: int | None = None,
                 flush_each: bool = False) -> Session:
    """Start capturing on `ifp`; returns the Session (also a context manager).

    `path` (a file name or a binary file object) receives a pcap file; `keep` (default:
    when there is neither `path` nor `callback`) collects `(time_ns, frame)` pairs in
    `session.packets`; `callback(time_ns, data, wirelen)` is called for each captured
    packet. `filter` is a pcap-filter(7) expression (ValueError if bad), `snaplen`
    truncates what is stored (0 means the default 262144), `count` closes the session
    after that many packets, `direction` is "inout", "in" or "out" (tcpdump -Q),
    `buffer` bounds `packets` (the rest is counted as dropped). `netmask` serves
    `ip broadcast`; by default it is that of the interface's first address.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if snaplen == 0:
        snaplen = DEFAULT_SNAPLEN
    if not 0 < snaplen <= MAX_SNAPLEN:
        raise ValueError(f"invalid snaplen {snaplen}")
    if count is not None and count <= 0:
        raise ValueError(f"invalid packet count {count}")
    if buffer is not None and buffer < 0:
        raise ValueError(f"invalid buffer size {buffer}")
    kernel = ifp.vnet.kernel
    with kernel.sched.cond:
        if not _alive(ifp):
            raise OSError(errno.ENXIO, f"{ifp.name}: Device not configured")
        linktype = linktype_of(ifp)
        if netmask is None and ifp.addrs:
            netmask = ifp.addrs[0].mask
        match = compile_filter(filter, linktype, netmask) if (filter or "").strip() else None
        writer = None
        if path is not None:
            writer = PcapWriter(path, linktype, snaplen, precision, flush_each)
        dispatcher = ifp.bpf
        if dispatcher is None:
            dispatcher = BpfIf(ifp)
        if keep is None:
            keep = path is None and callback is None
        session = Session(ifp, dispatcher, match, filter or "", snaplen, writer, keep, callback,
                          count, direction, buffer)
        dispatcher.sessions = (*dispatcher.sessions, session)
        ifp.bpf = dispatcher
        return session


def sessions_of(ifp: Ifnet) -> tuple[Session, ...]:
    """The open capture sessions on `ifp` (empty when nobody captures)."""
    bpf: Any = ifp.bpf
    return bpf.sessions if bpf is not None else ()
