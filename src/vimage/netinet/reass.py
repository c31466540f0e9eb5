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
ECN_MASK = 0x03  # the ECN bits of the TOS byte (RFC 3168)
ECN_NOTECT = 0x00
ECN_CE = 0x03


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
    """One datagram's fragments (FreeBSD struct ipq): [offset, data, more] sorted by offset,
    trimmed so that none overlap; `maxoff` is the end the last fragment gave (-1 before)."""

    __slots__ = ("first_header", "frags", "maxoff", "timer")

    def __init__(self) -> None:
        self.frags: list[list] = []  # [offset, data, MF set, ECN bits]
        self.maxoff = -1
        self.first_header: bytes | None = None
        self.timer: Timer | None = None


class Reassembler:
    """Queues of fragments keyed by (src, dst, proto, id), each with a timer.

    The checks, the counters and the overlap rules are those of FreeBSD's ip_reass()
    (sys/netinet/ip_reass.c): a bad fragment is dropped alone and counted in
    `fragdropped`; a whole queue goes only past maxfragsperpacket (fragdropped, one per
    fragment held), at its timeout (fragtimeout) or when evicted to make room for a new
    one at maxfragpackets (ipq_reuse: fragtimeout).
    """

    __slots__ = ("ip", "queues")

    def __init__(self, ip: IpState) -> None:
        self.ip = ip
        self.queues: dict[tuple[int, int, int, int], _Queue] = {}

    def insert(self, pkt: bytes, hlen: int, src: int, dst: int) -> bytes | None:
        """Take one fragment (counted in `fragments` here, as ip_reass counts it);
        the whole datagram once complete, else None."""
        ip = self.ip
        st = ip.stats
        if ip.maxfragpackets == 0:  # net.inet.ip.maxfragpackets=0: no reassembly at all
            st.fragments += 1
            st.fragdropped += 1
            return None
        field = (pkt[6] << 8) | pkt[7]
        more = bool(field & MF)
        data = pkt[hlen:]
        if not data or (more and len(data) & 7):
            st.toosmall += 1  # empty, or an inner fragment not a multiple of 8 bytes
            st.fragdropped += 1
            return None
        off = (field & OFFMASK) << 3
        end = off + len(data)
        if end > MAX_DATAGRAM:
            st.toolong += 1
            st.fragdropped += 1
            return None
        st.fragments += 1
        key = (src, dst, pkt[9], (pkt[4] << 8) | pkt[5])
        q = self.queues.get(key)
        if q is None:
            q = self._new_queue(key)
            if not more:
                q.maxoff = end
        elif q.maxoff > 0:
            # the last fragment is known: nothing may reach it with MF set, and another
            # last fragment must end where it did
            if (more and end >= q.maxoff) or (not more and end != q.maxoff):
                st.fragdropped += 1
                return None
        elif not more:
            q.maxoff = end
        ecn = pkt[1] & ECN_MASK
        if q.frags and not self._ecn_ok(q, ecn):
            st.fragdropped += 1
            return None
        if not self._place(q, off, data, more, ecn):
            st.fragdropped += 1
            return None
        if off == 0 and q.first_header is None:  # the header the datagram will carry
            q.first_header = pkt[:hlen]
        return self._complete(key, q)

    def _new_queue(self, key: tuple[int, int, int, int]) -> _Queue:
        ip = self.ip
        if len(self.queues) >= ip.maxfragpackets:
            self._evict_oldest()
        q = self.queues[key] = _Queue()
        q.timer = ip.vnet.kernel.sched.call_later(ip.fragttl * NS_PER_S, self._timeout, key,
                                                  owner=ip.vnet)
        return q

    def _evict_oldest(self) -> None:
        """ipq_reuse: the oldest queue makes room, its fragments counted as timed out."""
        key = next(iter(self.queues))
        self.ip.stats.fragtimeout += len(self.queues[key].frags)
        self._drop(key)

    @staticmethod
    def _ecn_ok(q: _Queue, ecn: int) -> bool:
        """RFC 3168 5.3 as ip_reass: CE mixed with not-ECT drops the fragment; CE on any
        fragment is kept on the first one (the reassembled header)."""
        first = q.frags[0]
        if ecn == ECN_CE:
            if first[3] == ECN_NOTECT:
                return False
            first[3] = ECN_CE
        return not (ecn == ECN_NOTECT and first[3] != ECN_NOTECT)

    def _place(self, q: _Queue, off: int, data: bytes, more: bool, ecn: int) -> bool:
        """Insert in offset order, as ip_reass: a fragment that starts at or after a held
        one loses what that one already gives (all of it: False, dropped); held fragments
        after it lose what it covers, and those covered entirely are dropped (counted)."""
        frags = q.frags
        at = 0
        while at < len(frags) and frags[at][0] <= off:
            at += 1
        if at:
            prev_off, prev_data = frags[at - 1][0], frags[at - 1][1]
            cut = prev_off + len(prev_data) - off
            if cut > 0:
                if cut >= len(data):
                    return False
                data = data[cut:]
                off += cut
        frags.insert(at, [off, data, more, ecn])
        end = off + len(data)
        nxt = at + 1
        while nxt < len(frags) and end > frags[nxt][0]:
            cut = end - frags[nxt][0]
            if cut < len(frags[nxt][1]):
                frags[nxt][0] += cut
                frags[nxt][1] = frags[nxt][1][cut:]
                break
            del frags[nxt]
            self.ip.stats.fragdropped += 1
        return True

    def _complete(self, key: tuple[int, int, int, int], q: _Queue) -> bytes | None:
        """The datagram if the fragments cover it without a hole and the last has no MF;
        past maxfragsperpacket fragments held, an incomplete queue is dropped."""
        ip = self.ip
        st = ip.stats
        covered = 0
        for o, d, _, _ in q.frags:
            if o != covered:
                break
            covered += len(d)
        else:
            if not q.frags[-1][2] and q.first_header is not None:
                return self._join(key, q, covered)
        if len(q.frags) > ip.maxfragsperpacket:
            st.fragdropped += len(q.frags)
            self._drop(key)
        return None

    def _join(self, key: tuple[int, int, int, int], q: _Queue, total: int) -> bytes | None:
        st = self.ip.stats
        assert q.first_header is not None
        self._drop(key)
        if len(q.first_header) + total > MAX_DATAGRAM:
            st.toolong += 1  # a long first header pushed it past 64 KiB
            st.fragdropped += len(q.frags)
            return None
        header = bytearray(q.first_header)
        header[1] |= q.frags[0][3] & ECN_CE  # a CE mark any fragment carried
        header[2:4] = (len(header) + total).to_bytes(2, "big")
        header[6:8] = (((header[6] << 8) | header[7]) & 0x4000).to_bytes(2, "big")
        return _checksummed(header) + b"".join(f[1] for f in q.frags)

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
            first = q.frags[0][1]
            icmp_mod.error(self.ip.vnet, q.first_header + first, wicmp.TIMXCEED,
                           wicmp.TIMXCEED_REASS)

    def __len__(self) -> int:
        return len(self.queues)

    def clear(self) -> None:
        for key in list(self.queues):
            self._drop(key)
