"""pcapng traces of many interfaces at once (one Interface Description Block each).

Classic pcap (wire.pcap.PcapWriter) holds one link type; a trace of a whole topology mixes
Ethernet interfaces and loopbacks, and should say which interface saw each frame, so
it is written as pcapng (draft-ietf-opsawg-pcapng): a Section Header Block, an IDB per
interface with its name ("vnet:ifname") and nanosecond resolution, then an Enhanced
Packet Block per frame. Wireshark, tshark and scapy read it.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import IO, TYPE_CHECKING

from vimage.net.bpf import linktype_of, open_capture

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.bpf import Session
    from vimage.net.ifnet import Ifnet

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 0x00000001
EPB_TYPE = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_ENDOFOPT = 0
IF_NAME = 2
IF_TSRESOL = 9
SNAPLEN = 262144


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def section_header() -> bytes:
    return _block(SHB_TYPE, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1))


def interface_description(linktype: int, name: str) -> bytes:
    options = (_option(IF_NAME, name.encode()) + _option(IF_TSRESOL, bytes([9]))
               + struct.pack("<HH", OPT_ENDOFOPT, 0))
    return _block(IDB_TYPE, struct.pack("<HHI", linktype, 0, SNAPLEN) + options)


def enhanced_packet(interface: int, time_ns: int, data: bytes, wirelen: int) -> bytes:
    head = struct.pack("<IIIII", interface, time_ns >> 32, time_ns & 0xFFFFFFFF, len(data),
                       wirelen)
    return _block(EPB_TYPE, head + _pad(data))


class TraceRecorder:
    """Records every frame of the attached interfaces (both directions) in memory.

    At most `limit` frames are kept (the newest); `write()` produces a pcapng file.
    """

    def __init__(self, kernel: Kernel, limit: int = 200_000) -> None:
        self.kernel = kernel
        self.names: list[tuple[int, str]] = []  # (linktype, "vnet:ifname") per interface id
        self.frames: deque[tuple[int, int, bytes, int]] = deque(maxlen=limit)
        self.sessions: dict[Ifnet, Session] = {}
        self.seen = 0
        self.following = False
        self.written_interfaces = 0

    def attach(self, ifp: Ifnet) -> None:
        """Record `ifp` (again, under its new name, if it moved to another vnet)."""
        old = self.sessions.pop(ifp, None)
        if old is not None:
            old.close()
        index = len(self.names)
        self.names.append((linktype_of(ifp), f"{ifp.vnet.display_name}:{ifp.name}"))
        frames = self.frames

        def record(time_ns: int, data: bytes, wirelen: int) -> None:
            frames.append((index, time_ns, bytes(data), wirelen))
            self.seen += 1

        self.sessions[ifp] = open_capture(ifp, callback=record, keep=False)

    def follow(self) -> None:
        """Record every interface of the kernel, now and as they are created or moved."""
        for ifp in self.kernel.interfaces():
            self.attach(ifp)
        if not self.following:
            self.kernel.subscribe(self)  # its ifattach: the kernel's interface arrivals
            self.following = True

    def ifattach(self, ifp: Ifnet) -> None:
        self.attach(ifp)

    def close(self) -> None:
        if self.following:
            self.kernel.unsubscribe(self)
            self.following = False
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()

    def write(self, dest: str | IO[bytes]) -> int:
        """Write the trace; returns the number of frames written."""
        # only interfaces that saw a frame (an epair is recorded first in the vnet that
        # created it, then again where it was moved), renumbered in order
        used = sorted({frame[0] for frame in self.frames})
        number = {index: n for n, index in enumerate(used)}
        chunks = [section_header()]
        chunks += [interface_description(*self.names[index]) for index in used]
        chunks += [enhanced_packet(number[index], *rest) for index, *rest in self.frames]
        blob = b"".join(chunks)
        if isinstance(dest, str):
            with open(dest, "wb") as fh:
                fh.write(blob)
        else:
            dest.write(blob)
        self.written_interfaces = len(used)
        return len(self.frames)
