"""IPv4 fragmentation (output) and reassembly (input) with timeout and limits."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.sched import NS_PER_S, Timer
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import walk_options

if TYPE_CHECKING:
    from vimage.netinet.ip import IpState

MF = 0x2000
OFFMASK = 0x1FFF
MAX_DATAGRAM = 65535


def _checksummed(header: bytearray) -> bytes:
    header[10:12] = b"\x00\x00"
    header[10:12] = checksum(header).to_bytes(2, "big")
    return bytes(header)


def _copied_options(pkt: bytes, hlen: int) -> bytes:
    """Options with the 'copied' bit, which every fragment carries (RFC 791)."""
    # a malformed length (only a raw IP_HDRINCL sender can get here) comes as 0 and ends
    # the walk: nothing more is copied
    out = b"".join(pkt[i:i + length] for i, kind, length in walk_options(pkt, 20, hlen)
                   if kind & 0x80)
    return out + b"\x00" * (-len(out) % 4)


def fragment(pkt: bytes, mtu: int) -> list[bytes]:
    """Split an IPv4 packet into fragments no longer than `mtu`."""
    hlen = (pkt[0] & 0x0F) << 2
    field = (pkt[6] << 8) | pkt[7]
    base_off = (field & OFFMASK) * 8
    last_mf = field & MF
    data = memoryview(pkt)[hlen:]
    first_header = bytearray(pkt[:hlen])
    later_opts = _copied_options(pkt, hlen)
    later_header = bytearray(pkt[:20]) + later_opts
    later_header[0] = 0x40 | (len(later_header) >> 2)
    out: list[bytes] = []
    off = 0
    total = len(data)
    while off < total:
        header = first_header if off == 0 else later_header
        room = (mtu - len(header)) & ~7
        if room <= 0:
            raise OSError(errno.EMSGSIZE, "Message too long")  # MTU below header size
        chunk = data[off:off + room]
        more = off + len(chunk) < total
        hdr = bytearray(header)
        flags = (field & 0x4000) | (MF if more or last_mf else 0)
        frag_field = flags | ((base_off + off) >> 3)
        hdr[6:8] = frag_field.to_bytes(2, "big")
        hdr[2:4] = (len(hdr) + len(chunk)).to_bytes(2, "big")
        out.append(_checksummed(hdr) + bytes(chunk))
        off += len(chunk)
    return out


class _Queue:
    __slots__ = ("first_header", "frags", "nbytes", "timer", "total")

    def __init__(self) -> None:
        self.frags: list[tuple[int, bytes]] = []
        self.total = -1  # payload length, known once the last fragment arrived
        self.first_header: bytes | None = None
        self.timer: Timer | None = None
        self.nbytes = 0


class Reassembler:
    """Queues of fragments keyed by (src, dst, proto, id), each with a timer."""

    __slots__ = ("ip", "queues")

    def __init__(self, ip: IpState) -> None:
        self.ip = ip
        self.queues: dict[tuple[int, int, int, int], _Queue] = {}

    def insert(self, pkt: bytes, hlen: int, src: int, dst: int) -> bytes | None:
        ip = self.ip
        st = ip.stats
        field = (pkt[6] << 8) | pkt[7]
        off = (field & OFFMASK) * 8
        more = bool(field & MF)
        data = pkt[hlen:]
        end = off + len(data)
        if (more and (not data or len(data) % 8)) or end > MAX_DATAGRAM - hlen:
            st.fragdropped += 1  # inner fragments are multiples of 8; nothing past 64 KiB
            return None
        key = (src, dst, pkt[9], (pkt[4] << 8) | pkt[5])
        q = self.queues.get(key)
        if q is None:
            if len(self.queues) >= ip.maxfragpackets:
                st.fragdropped += 1
                return None
            q = self.queues[key] = _Queue()
            sched = ip.vnet.kernel.sched
            q.timer = sched.call_later(ip.fragttl * NS_PER_S, self._timeout, key,
                                       owner=ip.vnet)
        if len(q.frags) >= ip.maxfragsperpacket:
            st.fragdropped += len(q.frags) + 1
            self._drop(key)
            return None
        if not more:
            if (q.total >= 0 and q.total != end) or any(o + len(d) > end for o, d in q.frags):
                st.fragdropped += len(q.frags) + 1  # a second end, or data past the end
                self._drop(key)
                return None
            q.total = end
        elif q.total >= 0 and end > q.total:
            st.fragdropped += len(q.frags) + 1
            self._drop(key)
            return None
        for o, d in q.frags:
            if o == off and len(d) == len(data):
                st.fragdropped += 1  # duplicate
                return None
        if off == 0:
            q.first_header = pkt[:hlen]
        q.frags.append((off, data))
        q.nbytes += len(data)
        if q.total < 0 or q.first_header is None:
            return None
        # complete when the fragments cover [0, total) without holes
        covered = 0
        for o, d in sorted(q.frags):
            if o > covered:
                return None
            covered = max(covered, o + len(d))
        if covered < q.total:
            return None
        if len(q.first_header) + q.total > MAX_DATAGRAM:
            st.fragdropped += len(q.frags)  # a long first header pushed it past 64 KiB
            self._drop(key)
            return None
        buf = bytearray(q.total)
        for o, d in reversed(q.frags):  # the earliest arrival wins where they overlap
            buf[o:o + len(d)] = d
        header = bytearray(q.first_header)
        self._drop(key)
        header[2:4] = (len(header) + q.total).to_bytes(2, "big")
        header[6:8] = (((header[6] << 8) | header[7]) & 0x4000).to_bytes(2, "big")
        return _checksummed(header) + bytes(buf)

    def _drop(self, key: tuple[int, int, int, int]) -> None:
        q = self.queues.pop(key, None)
        if q is not None and q.timer is not None:
            q.timer.cancel()

    def _timeout(self, key: tuple[int, int, int, int]) -> None:
        from vimage.netinet import icmp as icmp_mod
        from vimage.wire import icmp as wicmp

        q = self.queues.pop(key, None)
        if q is None:
            return
        self.ip.stats.fragtimeout += len(q.frags)
        if q.first_header is not None:
            # RFC 792: time exceeded (reassembly) only when fragment zero arrived
            first = next(d for o, d in q.frags if o == 0)
            icmp_mod.error(self.ip.vnet, q.first_header + first, wicmp.TIMXCEED,
                           wicmp.TIMXCEED_REASS)

    def __len__(self) -> int:
        return len(self.queues)

    def clear(self) -> None:
        for key in list(self.queues):
            self._drop(key)
