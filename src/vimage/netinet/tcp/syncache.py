"""The syncache and SYN cookies (FreeBSD tcp_syncache.c).

A SYN to a listener makes an embryonic connection in SYN_RECEIVED, kept in a hash
bucket of the vnet's syncache (the Tcb itself stands for the entry); the ACK that
completes the handshake makes it a connection for accept(). When the listen queue
or a bucket overflows, SYNs are answered with a cookie instead: the ISS carries what
the connection needs, and no state is kept until the ACK brings it back.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from vimage.netinet.tcp.output import offer_mss, offer_mss6, output, respond_rst
from vimage.netinet.tcp.seq import MASK
from vimage.netinet.tcp.subr import (
    detach,
    established,
    new_iss,
    set_iss,
    set_mss,
    take_syn_options,
)
from vimage.netinet.tcp.var import (
    ACK,
    DEFAULT_MSS,
    ESTABLISHED,
    SYN,
    SYN_RECEIVED,
    SYNCACHE_HASHSIZE,
    SYNCOOKIE_LIFETIME_NS,
    Tcb,
)
from vimage.sched import NS_PER_S
from vimage.wire import tcp as wtcp
from vimage.wire.ipv4 import PROTO_TCP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.netinet.tcp.var import TcpState

MSS_TABLE = (536, 1220, 1440, 1460, 8940, 8960)  # the MSS a cookie can carry (3 bits)


def syncache_add(listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int, v6: bool = False,
                 zone: Ifnet | None = None) -> None:
    """A SYN for `listener`: a new embryonic connection that answers with a SYN-ACK, or
    a cookie when the listen queue or the bucket is full (FreeBSD syncache_add). `v6`:
    the SYN came over IPv6 (`zone`: the link of a link-local peer); a dual-stack IPv6
    listener's connections from IPv4 peers are IPv4 ones."""
    tcp = listener.tcp
    st = tcp.stats
    queued = listener.syn_q + len(listener.accept_q or ())
    if queued >= listener.backlog:
        if tcp.syncookies and len(listener.accept_q or ()) < listener.backlog:
            send_cookie(listener, seg, src, dst, v6, zone)
        else:
            st.listendrop += 1
        return
    bucket = syncache_bucket(tcp, (dst, seg.dport, src, seg.sport))
    if not syncache_admit(tcp, bucket):
        if tcp.syncookies:
            send_cookie(listener, seg, src, dst, v6, zone)
        else:
            st.sc_dropped += 1
        return
    tcb = _child(listener, dst, seg.dport, src, seg.sport, v6, zone)
    tcb.state = SYN_RECEIVED
    listener.syn_q += 1
    tcb.irs = seg.seq
    tcb.rcv_nxt = (seg.seq + 1) & MASK
    take_syn_options(tcb, seg)
    set_iss(tcb, new_iss(tcb))
    tcb.snd_wnd = seg.window  # unscaled in a SYN
    tcb.snd_wl1, tcb.snd_wl2 = seg.seq, tcb.iss
    tcp.attach(tcb)
    tcb.sc_bucket = bucket
    tcp.syncache.setdefault(bucket, []).append(tcb)
    tcp.syncache_count += 1
    st.sc_added += 1
    output(tcb)  # SYN-ACK, and the retransmission timer


def _child(listener: Tcb, laddr: int, lport: int, faddr: int, fport: int, v6: bool,
           zone: Ifnet | None) -> Tcb:
    """A connection of `listener`, with the socket options it inherits."""
    tcb = Tcb(listener.tcp, laddr, lport, faddr, fport)
    if v6:
        tcb.v6, tcb.zone = True, zone
    tcb.listener = listener
    tcb.nodelay, tcb.keepalive = listener.nodelay, listener.keepalive
    tcb.rcv_space, tcb.snd_space = listener.rcv_space, listener.snd_space
    tcb.ip_ttl, tcb.ip_tos = listener.ip_ttl, listener.ip_tos
    tcb.fib = listener.fib
    return tcb


def syncache_bucket(tcp: TcpState, key: tuple[int, int, int, int]) -> int:
    """A keyed hash: a flood cannot aim at the bucket of a connection it wants evicted."""
    return tcp.keyed_hash(repr(key).encode(), b"syncache") % SYNCACHE_HASHSIZE


def syncache_admit(tcp: TcpState, bucket: int) -> bool:
    """Room for one more embryonic connection in `bucket`? (FreeBSD syncache_add and
    syncache_insert.) A full bucket loses its oldest entry (bucket overflow); a full
    cache loses the oldest of this bucket (zone failure), and if the bucket has none
    the SYN gets no entry. After an overflow, and with syncookies on, the bucket's
    SYNs are answered with cookies only for SYNCOOKIE_LIFETIME: a flood keeps no
    state and cannot evict entries for ever."""
    now = tcp.vnet.kernel.sched.now_ns()
    last = tcp.syncache_overflow.get(bucket)
    if last is not None:
        if now - last < SYNCOOKIE_LIFETIME_NS:
            if tcp.syncookies:
                return False
        else:
            del tcp.syncache_overflow[bucket]
    entries = tcp.syncache.get(bucket, ())
    if len(entries) >= tcp.syncache_bucketlimit:
        tcp.stats.sc_bucketoverflow += 1
    elif tcp.syncache_count >= tcp.syncache_cachelimit:
        tcp.stats.sc_zonefail += 1
        if not entries:
            return False
    else:
        return True
    tcp.syncache_overflow[bucket] = now
    detach(entries[0])
    return True


def syncache_remove(tcb: Tcb) -> None:
    """The entry leaves the syncache: the connection is established, or gone."""
    tcp = tcb.tcp
    entries = tcp.syncache.get(tcb.sc_bucket)
    if entries is not None and tcb in entries:
        entries.remove(tcb)
        tcp.syncache_count -= 1
        if not entries:
            del tcp.syncache[tcb.sc_bucket]
    tcb.sc_bucket = -1


# -- SYN cookies ---------------------------------------------------------------------------------
def _cookie(tcp: TcpState, src: int, dst: int, sport: int, dport: int, irs: int,
            t: int) -> int:
    data = f"{src}:{dst}:{sport}:{dport}:{irs}:{t}".encode()
    return tcp.keyed_hash(data)


def send_cookie(listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int, v6: bool = False,
                zone: Ifnet | None = None) -> None:
    """Answer a SYN without keeping state: the ISN carries what we need back."""
    tcp = listener.tcp
    peer_mss = seg.options.mss or DEFAULT_MSS
    idx = max(i for i, m in enumerate(MSS_TABLE) if m <= peer_mss or i == 0)
    t = (tcp.vnet.kernel.sched.now_ns() // (64 * NS_PER_S)) & 0x1F
    iss = ((_cookie(tcp, src, dst, seg.sport, seg.dport, seg.seq, t) & ~0xFF)
           | (t << 3) | idx) & MASK
    segment = wtcp.build(seg.dport, seg.sport, iss, (seg.seq + 1) & MASK, SYN | ACK,
                         min(listener.rcv_space, 65535), b"", src=dst, dst=src,
                         mss=offer_mss6(tcp, src, zone) if v6 else offer_mss(tcp, src))
    tcp.stats.cookiessent += 1  # our MSS above; the cookie keeps the peer's
    tcp.stats.sndtotal += 1
    with contextlib.suppress(OSError):
        if v6:
            tcp.vnet.ip6.output(PROTO_TCP, dst, src, segment, ifp=zone)
            return
        tcp.vnet.ip.output(PROTO_TCP, dst, src, segment, df=bool(tcp.path_mtu_discovery))


def cookie_ok(tcp: TcpState, seg: wtcp.TcpRepr, src: int, dst: int) -> bool:
    """Does this ACK bring back a cookie of ours, recent enough?"""
    iss = (seg.ack - 1) & MASK
    t, idx = (iss >> 3) & 0x1F, iss & 0x7
    now_t = (tcp.vnet.kernel.sched.now_ns() // (64 * NS_PER_S)) & 0x1F
    if idx >= len(MSS_TABLE) or (now_t - t) & 0x1F > 1:
        return False
    irs = (seg.seq - 1) & MASK
    expect = _cookie(tcp, src, dst, seg.sport, seg.dport, irs, t) & ~0xFF
    return (iss & ~0xFF) == expect


def cookie_accept(listener: Tcb, seg: wtcp.TcpRepr, src: int, dst: int, v6: bool = False,
                  zone: Ifnet | None = None) -> Tcb | None:
    """A valid cookie ACK: the handshake is complete, make the connection (the caller
    processes the segment's data and FIN).

    With the listen queue still full the socket cannot be made (FreeBSD's sonewconn
    fails in syncache_socket): a listen queue overflow, answered with a reset when
    net.inet.tcp.syncache.rst_on_sock_fail is set (the default), else dropped so
    that a retransmission from the peer may find room.
    """
    tcp = listener.tcp
    tcp.stats.cookiesrcvd += 1
    if len(listener.accept_q or ()) >= listener.backlog:
        tcp.stats.listendrop += 1
        if tcp.rst_on_sock_fail:
            respond_rst(tcp, seg, src, dst, v6, zone)
        return None
    iss = (seg.ack - 1) & MASK
    tcb = _child(listener, dst, seg.dport, src, seg.sport, v6, zone)
    set_iss(tcb, iss)
    tcb.irs = (seg.seq - 1) & MASK
    tcb.rcv_nxt = seg.seq
    tcb.snd_una = tcb.snd_nxt = tcb.snd_max = seg.ack
    tcb.peer_mss = MSS_TABLE[iss & 0x7]
    set_mss(tcb)
    tcb.snd_wnd = seg.window
    tcb.snd_wl1, tcb.snd_wl2 = seg.seq, seg.ack
    tcb.state = ESTABLISHED
    tcp.attach(tcb)
    listener.syn_q += 1  # established() takes it off again
    established(tcb)
    return tcb
