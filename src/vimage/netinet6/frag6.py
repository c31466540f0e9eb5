"""IPv6 fragment reassembly and source fragmentation (FreeBSD frag6.c, ip6_output.c's
ip6_fragment; RFC 8200 section 4.5, RFC 5722).

Overlapping fragments drop the whole queue (RFC 5722). Queues are bounded by
net.inet6.ip6.maxfragpackets, fragments in all queues by net.inet6.ip6.maxfrags and
per queue by net.inet6.ip6.maxfragsperpacket; a queue lives net.inet6.ip6.fragttl
seconds, after which its fragments are counted as timed out and, if the first one
came, the source gets a time exceeded (reassembly) error.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.sched import NS_PER_S
from vimage.wire import icmp6 as wicmp6
from vimage.wire.ipv6 import FRAG_HEADER, FRAG_LEN, HEADER_LEN, NXT_FRAGMENT

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet6.ip6 import Ip6State
    from vimage.sched import Timer

MAX_DATAGRAM = 65535


class FragQueue:
    """The fragments of one datagram so far (struct ip6q)."""

    __slots__ = ("first", "frags", "ifp", "key", "nxt", "timer", "total")

    def __init__(self, key: tuple[int, int, int], ifp: Ifnet) -> None:
        self.key = key
        self.ifp = ifp
        self.frags: list[tuple[int, int, bytes]] = []  # (offset, end, data)
        self.first: bytes | None = None  # the unfragmentable part of the offset-0 fragment
        self.nxt = 0
        self.total = -1  # known when the last fragment (M clear) comes
        self.timer: Timer | None = None


class Reassembler:
    """A vnet's IPv6 reassembly queues, keyed by (source, destination, identification)."""

    __slots__ = ("ip6", "nfrags", "queues")

    def __init__(self, ip6: Ip6State) -> None:
        self.ip6 = ip6
        self.queues: dict[tuple[int, int, int], FragQueue] = {}
        self.nfrags = 0

    def insert(self, ifp: Ifnet, pkt: bytes, off: int, prev: int, src: int,
               dst: int) -> bytes | None:
        """Take the fragment whose fragment header is at `off` (the byte naming it at
        `prev`); the reassembled packet, without fragment header, when complete."""
        ip6 = self.ip6
        st = ip6.stats
        nxt, _, offlg, ident = FRAG_HEADER.unpack_from(pkt, off)
        start = offlg & 0xFFF8
        more = offlg & 1
        data = pkt[off + FRAG_LEN:]
        if not start and not more:  # an atomic fragment (RFC 6946): no queue
            st.atomicfrags += 1
            whole = bytearray(pkt[:prev] + bytes((nxt,)) + pkt[prev + 1:off] + data)
            whole[4:6] = (len(whole) - HEADER_LEN).to_bytes(2, "big")
            return bytes(whole)
        st.fragments += 1
        if more and (not data or len(data) % 8):
            # RFC 8200: not a multiple of 8 -> parameter problem at the payload length
            st.fragdropped += 1
            ip6.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB, wicmp6.PARAMPROB_HEADER, 4)
            return None
        if start + len(data) > MAX_DATAGRAM - (off - HEADER_LEN):
            st.fragdropped += 1
            ip6.vnet.icmp6.error(ifp, pkt, wicmp6.PARAM_PROB, wicmp6.PARAMPROB_HEADER, off + 2)
            return None
        key = (src, dst, ident)
        q = self.queues.get(key)
        if q is None:
            if len(self.queues) >= ip6.maxfragpackets or self.nfrags >= ip6.maxfrags:
                st.fragoverflow += 1
                return None
            q = self.queues[key] = FragQueue(key, ifp)
            q.timer = ip6.vnet.kernel.sched.call_later(
                ip6.fragttl * NS_PER_S, self._timeout, q, owner=ip6.vnet)
        if len(q.frags) >= ip6.maxfragsperpacket or self.nfrags >= ip6.maxfrags:
            st.fragoverflow += 1
            self._drop(q)
            return None
        end = start + len(data)
        if (not more and q.total >= 0 and end != q.total) or (0 <= q.total < end):
            st.fragdropped += 1 + len(q.frags)  # a second, different, end: bogus
            self._drop(q)
            return None
        for f_start, f_end, _ in q.frags:
            if start < f_end and f_start < end:  # RFC 5722: an overlap drops them all
                st.fragdropped += 1 + len(q.frags)
                self._drop(q)
                return None
        if not more:
            q.total = end
        if start == 0:
            q.first = pkt[:prev] + bytes((nxt,)) + pkt[prev + 1:off]
            q.nxt = nxt
        q.frags.append((start, end, data))
        self.nfrags += 1
        if q.first is None or q.total < 0 or sum(e - s for s, e, _ in q.frags) != q.total:
            return None
        q.frags.sort()
        whole = bytearray(q.first + b"".join(d for _, _, d in q.frags))
        whole[4:6] = (len(whole) - HEADER_LEN).to_bytes(2, "big")
        self._forget(q)
        return bytes(whole)

    def _timeout(self, q: FragQueue) -> None:
        """frag6_slowtimo: time exceeded (reassembly) if the first fragment came."""
        q.timer = None
        if self.queues.get(q.key) is not q:
            return
        st = self.ip6.stats
        st.fragtimeout += len(q.frags)
        if q.first is not None:
            self.ip6.vnet.icmp6.error(q.ifp, q.first + q.frags[0][2] if q.frags else q.first,
                                      wicmp6.TIME_EXCEEDED, wicmp6.TIME_EXCEED_REASSEMBLY, 0)
        self._forget(q)

    def _forget(self, q: FragQueue) -> None:
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        self.nfrags -= len(q.frags)
        self.queues.pop(q.key, None)

    def _drop(self, q: FragQueue) -> None:
        self._forget(q)

    def purge_ifp(self, ifp: Ifnet) -> None:
        for q in [q for q in self.queues.values() if q.ifp is ifp]:
            self._forget(q)

    def clear(self) -> None:
        for q in list(self.queues.values()):
            self._forget(q)


def fragment(pkt: bytes, mtu: int, ident: int) -> list[bytes]:
    """Cut a packet built here (a bare IPv6 header, then the payload) into fragments
    of at most `mtu` bytes (ip6_fragment: every fragment but the last a multiple of 8)."""
    nxt = pkt[6]
    data = memoryview(pkt)[HEADER_LEN:]
    room = (mtu - HEADER_LEN - FRAG_LEN) & ~7
    if room <= 0:
        raise OSError(errno.EMSGSIZE, "Message too long")
    head = bytearray(pkt[:HEADER_LEN])
    head[6] = NXT_FRAGMENT
    out = []
    total = len(data)
    for start in range(0, total, room):
        chunk = data[start:start + room]
        more = start + len(chunk) < total
        head[4:6] = (FRAG_LEN + len(chunk)).to_bytes(2, "big")
        out.append(bytes(head) + FRAG_HEADER.pack(nxt, 0, start | int(more), ident)
                   + bytes(chunk))
    return out
