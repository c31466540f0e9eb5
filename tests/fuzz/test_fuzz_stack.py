"""Structured fuzzing of every input path of a vnet, one hypothesis test per path.

An example is one to three batches of generated inputs fed to a fresh Harness (see
conftest.py); after each batch every invariant of issue 19 is checked. Inputs are
recipes (named tuples) turned into frames against the harness's current state, so a
TCP segment can be "RCV.NXT + 3 with an ACK 5 past SND.MAX" of a connection in
FIN_WAIT_1, and an ICMP error can quote that connection's sequence number in flight.
Checksums are right most of the time (else everything dies at verification) and
deliberately wrong sometimes (`bad`).
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vimage.wire import checksum, ipv4
from vimage.wire import icmp as wicmp

from .conftest import (
    BCAST,
    ETH_ARP,
    ETH_IP,
    FAR,
    GHOST_MAC,
    GHOSTS,
    LISTEN_PORT,
    PEER,
    UDP_PORT,
    VICTIM,
    VICTIM2,
    Harness,
    WorkBoundExceeded,
    corrupt,
    eth,
    fix_ip_checksum,
    fuzz_settings,
)

pytestmark = pytest.mark.fuzz

MIN_MSS = 216  # FreeBSD net.inet.tcp.minmss: what an ICMP "needs fragmentation" may lower to
A_VICTIM, A_PEER = ipv4.aton(VICTIM), ipv4.aton(PEER)

# -- shared bits of strategy -------------------------------------------------------------------
u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
# deltas around a sequence number: the edges a TCP gets wrong
DELTAS = st.one_of(st.just(0), st.just(0),
                   st.sampled_from((1, -1, 2, -2, 5, 100, 1460, -1460, 65535, 65536, -65536,
                                    1 << 30, 1 << 31, -(1 << 31), (1 << 31) - 1)),
                   st.integers(-70000, 70000))
BAD = st.one_of(st.none(), st.none(), st.none(), st.none(), st.integers(0, 1500))
ADDR_KINDS = ("victim", "victim2", "peer", "far", "ghost", "subnet", "bcast", "net_bcast",
              "zero", "loop", "mcast", "offnet")


def addr_of(h: Harness, kind: str, salt: int) -> int:
    """An address of a kind, with `salt` choosing among the many of a kind."""
    return {
        "victim": A_VICTIM, "victim2": ipv4.aton(VICTIM2), "peer": A_PEER,
        "far": ipv4.aton(FAR), "ghost": h.ghosts[salt % len(h.ghosts)].addr,
        "subnet": (A_VICTIM & 0xFFFFFF00) | (100 + salt % 8),  # a few unknown neighbours
        "bcast": 0xFFFFFFFF, "net_bcast": (A_VICTIM & 0xFFFFFF00) | 0xFF, "zero": 0,
        "loop": 0x7F000001, "mcast": 0xE0000001, "offnet": salt & 0xFFFFFFFF,
    }[kind]


def src_mac(h: Harness, addr: int) -> bytes:
    return GHOST_MAC if any(g.addr == addr for g in h.ghosts) else h.ifp.mac


def finish(frames: list[bytes], bad: int | None) -> list[bytes]:
    if bad is not None and frames:
        frames[0] = corrupt(frames[0], bad)
    return frames


def l4_checksum(src: int, dst: int, proto: int, segment: bytes, offset: int) -> bytes:
    """`segment` with its checksum (at `offset`) computed over the pseudo-header."""
    seg = bytearray(segment)
    if len(seg) < offset + 2:
        return bytes(seg)
    seg[offset:offset + 2] = b"\0\0"
    total = checksum.pseudo_sum_v4(src, dst, proto, len(seg))
    seg[offset:offset + 2] = checksum.checksum(bytes(seg), total).to_bytes(2, "big")
    return bytes(seg)


# -- Ethernet and raw bytes --------------------------------------------------------------------
class RawFrame(NamedTuple):
    data: bytes

    def frames(self, h: Harness) -> list[bytes]:
        return [self.data]


class EthFrame(NamedTuple):
    dst: str
    src: bytes
    etype: bytes
    body: bytes

    def frames(self, h: Harness) -> list[bytes]:
        dst = {"victim": h.ifv.mac, "bcast": BCAST, "mcast": b"\x01\x00\x5e\0\0\x01",
               "other": b"\x02\x11\x22\x33\x44\x55"}[self.dst]
        return [dst + self.src + self.etype + self.body]


raw_frames = st.builds(RawFrame, st.binary(max_size=200))
eth_frames = st.builds(
    EthFrame, st.sampled_from(("victim", "bcast", "mcast", "other")),
    st.sampled_from((GHOST_MAC, b"\x01\0\0\0\0\x01", BCAST, b"\0" * 6)),
    st.sampled_from((ETH_IP, ETH_ARP, b"\x86\xdd", b"\x81\x00", b"\0\0", b"\xff\xff")),
    st.binary(max_size=120))


# -- ARP ---------------------------------------------------------------------------------------
class ArpMsg(NamedTuple):
    op: int
    head: tuple[int, int, int, int]  # htype, ptype, hlen, plen
    sha: bytes
    spa: str
    tpa: str
    salt: int
    dst_bcast: bool
    cut: int | None
    tail: bytes

    def frames(self, h: Harness) -> list[bytes]:
        spa, tpa = addr_of(h, self.spa, self.salt), addr_of(h, self.tpa, self.salt >> 8)
        payload = struct.pack("!HHBBH6sI6sI", *self.head, self.op, self.sha, spa, b"\0" * 6,
                              tpa) + self.tail
        if self.cut is not None:
            payload = payload[:self.cut]
        return [eth(BCAST if self.dst_bcast else h.ifv.mac, self.sha, payload, ETH_ARP)]


arp_msgs = st.builds(
    ArpMsg, st.sampled_from((1, 2, 1, 2, 0, 3, 0xFFFF)),
    st.one_of(st.just((1, 0x800, 6, 4)), st.just((1, 0x800, 6, 4)),
              st.tuples(st.sampled_from((1, 6, 0)), st.sampled_from((0x800, 0x86DD)),
                        st.sampled_from((6, 0, 255)), st.sampled_from((4, 16, 0)))),
    st.sampled_from((b"\x02\0\0\0\0\x07", GHOST_MAC, b"\x01\0\0\0\0\x02", b"\0" * 6, BCAST)),
    st.sampled_from(ADDR_KINDS), st.sampled_from(ADDR_KINDS), u32, st.booleans(),
    st.one_of(st.none(), st.none(), st.integers(0, 40)), st.binary(max_size=12))


# -- IPv4 with options -------------------------------------------------------------------------
@st.composite
def ip_options(draw: st.DrawFn) -> bytes:
    """Options as a fuzzer that knows the formats writes them: plausible, often wrong
    (lengths that lie, pointers out of range, an option cut by the end of the header)."""
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from((0, 1, 7, 7, 68, 68, 131, 137, 148, 130, 0x19, 255)))
        if kind in (0, 1):
            out += bytes([kind])
            continue
        body = bytearray(draw(st.binary(max_size=38)))
        if kind in (7, 68, 131, 137) and body and draw(st.booleans()):
            # the pointer: 4 is the first slot (5 for timestamps); the edges around the end
            body[0] = draw(st.one_of(st.sampled_from((4, 5, 8, 9, 12, 13, len(body) + 1,
                                                      len(body) + 2, len(body) + 3)), u8))
            if kind == 68 and len(body) > 1:
                body[1] = draw(st.sampled_from((0, 1, 3, 2, 0xF1, 0xF0, 0xF3)))
        length = draw(st.one_of(st.just(len(body) + 2), st.just(len(body) + 2),
                                st.integers(0, 45)))
        out += bytes([kind, length & 0xFF]) + bytes(body)
    if draw(st.booleans()):  # NOPs in front, so the last option ends with the header
        out = b"\x01" * (-len(out) % 4) + out
    return out[:40]


class Ipv4Pkt(NamedTuple):
    options: bytes
    dst: str
    src: str
    salt: int
    proto: int
    ttl: int
    flags: int  # DF / MF and offset bits
    payload: bytes
    hl_fuzz: int | None  # a wrong header length
    bad: int | None

    def frames(self, h: Harness) -> list[bytes]:
        src, dst = addr_of(h, self.src, self.salt), addr_of(h, self.dst, self.salt >> 8)
        body = self.payload
        if self.proto == 17:
            body = l4_checksum(src, dst, 17, struct.pack("!HHHH", 5000, UDP_PORT,
                                                         8 + len(body), 0) + body, 6)
        elif self.proto == 1:
            body = wicmp.build_echo(wicmp.ECHO, 7, 1, body)
        pkt = bytearray(ipv4.build(src, dst, self.proto, body, ttl=self.ttl,
                                   flags_frag=self.flags, options=self.options))
        if self.hl_fuzz is not None:
            pkt[0] = 0x40 | self.hl_fuzz
            fix_ip_checksum(pkt)
        return finish([eth(h.ifv.mac, src_mac(h, src), bytes(pkt))], self.bad)


ipv4_packets = st.builds(
    Ipv4Pkt, ip_options(), st.sampled_from(("victim", "far", "far", "net_bcast", "bcast",
                                            "ghost", "offnet", "victim2", "mcast")),
    st.sampled_from(("peer", "peer", "ghost", "far", "zero", "bcast", "loop", "offnet")),
    u32, st.sampled_from((17, 1, 253, 6, 99)), st.sampled_from((64, 1, 2, 0, 255)),
    st.sampled_from((0, 0, 0x4000, 0x2000, 0x2001, 0x1FFF)), st.binary(max_size=64),
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 15)), BAD)


# -- fragments ---------------------------------------------------------------------------------
class Fragments(NamedTuple):
    dst: str
    proto: int
    ident: int
    pieces: tuple[tuple[int, int, bool, int], ...]  # offset (8-byte units), length, MF, ident+
    options: bytes
    bad: int | None

    def frames(self, h: Harness) -> list[bytes]:
        dst = addr_of(h, self.dst, 0)
        whole = l4_checksum(A_PEER, dst, 17, struct.pack("!HHHH", 5001, UDP_PORT, 3000, 0)
                            + bytes(range(256)) * 12, 6)
        out = []
        for units, length, more, bump in self.pieces:
            off = units * 8
            data = (whole[off:off + length] if off < len(whole) else b"") or b"\xAA" * length
            flags = (0x2000 if more else 0) | (units & 0x1FFF)
            pkt = ipv4.build(A_PEER, dst, self.proto, data, ident=(self.ident + bump) & 0xFFFF,
                             flags_frag=flags, options=self.options if not units else b"")
            out.append(eth(h.ifv.mac, h.ifp.mac, pkt))
        return finish(out, self.bad)


fragments = st.builds(
    Fragments, st.sampled_from(("victim", "victim", "far", "net_bcast")),
    st.sampled_from((17, 17, 1, 6, 253)), u16,
    st.lists(st.tuples(st.one_of(st.integers(0, 400), st.sampled_from((0x1FFF, 0x1FFE, 8189))),
                       st.one_of(st.sampled_from((0, 1, 7, 8, 16, 1480)),
                                 st.integers(0, 2000)),
                       st.booleans(), st.sampled_from((0, 0, 0, 1))),
             min_size=1, max_size=20).map(tuple),
    st.one_of(st.just(b""), st.just(b""), st.just(b"\x07\x07\x04" + b"\0" * 4), ip_options()),
    BAD)


# -- ICMP --------------------------------------------------------------------------------------
class IcmpMsg(NamedTuple):
    type: int
    code: int
    rest: int  # the MTU of "needs fragmentation", the pointer of a parameter problem
    target: int  # which conversation is quoted: ghost i, len(ghosts) = live, + 1 = UDP
    seq_delta: int
    quote_len: int
    src: str
    payload: bytes
    bad: int | None

    def frames(self, h: Harness) -> list[bytes]:
        src = addr_of(h, self.src, self.target)
        if self.type not in wicmp.ERROR_TYPES:
            msg = wicmp.build(self.type, self.code, self.rest, self.payload)
        else:
            msg = wicmp.build(self.type, self.code, self.rest, self._quote(h))
        pkt = ipv4.build(src, A_VICTIM, 1, msg)
        return finish([eth(h.ifv.mac, src_mac(h, src), pkt)], self.bad)

    def _quote(self, h: Harness) -> bytes:
        """The packet the victim sent (IP header + start of TCP/UDP), as a router quotes it."""
        ghosts = h.ghosts
        if self.target < len(ghosts) or self.target == len(ghosts):
            tcb = ghosts[self.target].tcb if self.target < len(ghosts) else h.live_v.tcb
            if tcb is None:
                return self.payload
            l4 = struct.pack("!HHII", tcb.lport, tcb.fport,
                             (tcb.snd_una + self.seq_delta) & 0xFFFFFFFF, tcb.rcv_nxt)
            quoted = ipv4.build(tcb.laddr, tcb.faddr, 6, l4 + b"\x50\x10\xff\xff\0\0\0\0")
        else:
            quoted = ipv4.build(A_VICTIM, A_PEER, 17, struct.pack("!HHHH", 9, 9, 8, 0))
        return quoted[:self.quote_len] + self.payload


icmp_msgs = st.builds(
    IcmpMsg, st.sampled_from((3, 3, 3, 11, 12, 4, 5, 8, 13, 0, 14, 17, 255)),
    st.one_of(st.sampled_from((0, 1, 2, 3, 4, 4, 13)), u8),
    st.one_of(st.sampled_from((0, 68, 100, 116, 200, 255, 296, 576, 1000, 1500, 1 << 16)),
              u32),
    st.integers(0, len(GHOSTS) + 1), DELTAS,
    st.one_of(st.sampled_from((28, 28, 40, 48)), st.integers(0, 60)),
    st.sampled_from(("peer", "far", "ghost", "subnet", "offnet", "victim")),
    st.binary(max_size=16), BAD)


# -- UDP ---------------------------------------------------------------------------------------
class UdpDgram(NamedTuple):
    dport: int
    sport: int
    length: int | None  # a UDP length field that lies
    payload: bytes
    dst: str
    src: str
    csum: str  # right, zero (none) or wrong

    def frames(self, h: Harness) -> list[bytes]:
        src, dst = addr_of(h, self.src, self.sport), addr_of(h, self.dst, self.dport)
        ulen = 8 + len(self.payload) if self.length is None else self.length
        seg = struct.pack("!HHHH", self.sport, self.dport, ulen, 0) + self.payload
        if self.csum != "zero":
            seg = l4_checksum(src, dst, 17, seg, 6)
        pkt = ipv4.build(src, dst, 17, seg)
        frame = eth(h.ifv.mac, src_mac(h, src), pkt)
        return [corrupt(frame, 27) if self.csum == "wrong" else frame]


udp_dgrams = st.builds(
    UdpDgram, st.sampled_from((UDP_PORT, UDP_PORT, 9, 0, 4444, 65535)),
    st.sampled_from((9, 5000, 0, 65535)),
    st.one_of(st.none(), st.none(), st.sampled_from((0, 7, 8, 9, 65535)), u16),
    st.binary(max_size=100), st.sampled_from(("victim", "victim", "net_bcast", "bcast", "far")),
    st.sampled_from(("peer", "ghost", "zero", "bcast", "far")),
    st.sampled_from(("right", "right", "right", "zero", "wrong")))


# -- TCP ---------------------------------------------------------------------------------------
TCP_OPTION = st.one_of(
    st.tuples(st.just("mss"), u16), st.tuples(st.just("ws"), u8), st.just(("sackok", 0)),
    st.tuples(st.just("sack"), st.lists(st.tuples(DELTAS, DELTAS), max_size=4)),
    st.tuples(st.just("ts"), st.tuples(u32, u32)), st.just(("nop", 0)), st.just(("eol", 0)),
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=10)))


class TcpSeg(NamedTuple):
    """A segment to one of the victim's connections; `target` picks which: ghost i
    or (len(GHOSTS)) the duel connection with `fp`, sequence numbers near the real
    ones; len(GHOSTS) + 1 the live connection, blind (absolute numbers); above, a
    new peer at the listener."""

    target: int
    seq: int  # a delta from RCV.NXT (known connections), or absolute (blind, new)
    ack_anchor: str
    ack: int
    flags: int
    window: int
    options: tuple[Any, ...]
    payload: int
    urgent: int
    doff_fuzz: int | None
    bad: int | None

    def frames(self, h: Harness) -> list[bytes]:
        ghosts = h.ghosts
        n = len(ghosts)
        if self.target <= n:
            if self.target < n:
                g = ghosts[self.target]
                tcb, src, sport, iss, viss = g.tcb, g.addr, g.port, g.iss, g.viss
            else:
                tcb = h.duel_v.tcb
                src, sport, iss, viss = tcb.faddr, tcb.fport, tcb.irs, tcb.iss
            dport = tcb.lport if tcb is not None else LISTEN_PORT
            if tcb is not None and tcb.state >= 3:  # SYN_RCVD and later: we know RCV.NXT
                seq = tcb.rcv_nxt + self.seq
                anchor = {"una": tcb.snd_una, "nxt": tcb.snd_nxt, "max": tcb.snd_max,
                          "iss": tcb.iss}[self.ack_anchor]
            else:  # SYN_SENT, a syncache entry, or dropped: from the initial numbers
                seq, anchor = iss + 1 + self.seq, viss + 1
            ack, sack_base = anchor + self.ack, anchor
        elif self.target == n + 1:  # blind: the fuzzer does not know the numbers
            tcb = h.live_v.tcb
            src, sport, dport = tcb.faddr, tcb.fport, tcb.lport
            seq, ack, sack_base = self.seq, self.ack, 0
        else:  # a new connection attempt from one of a few unknown neighbours
            src = (A_VICTIM & 0xFFFFFF00) | (100 + self.target % 8)
            sport, dport = 30000 + self.target, LISTEN_PORT
            seq, ack, sack_base = self.seq, self.ack, 0
        opts = self._options(sack_base)
        doff = (20 + len(opts)) // 4 if self.doff_fuzz is None else self.doff_fuzz
        seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                          doff << 4, self.flags, self.window, 0, self.urgent)
        seg = l4_checksum(src, A_VICTIM, 6, seg + opts + b"f" * self.payload, 16)
        frame = eth(h.ifv.mac, src_mac(h, src), ipv4.build(src, A_VICTIM, 6, seg))
        return finish([frame], self.bad)

    def _options(self, base: int) -> bytes:
        out = b""
        for kind, val in self.options:
            if kind == "mss":
                out += struct.pack("!BBH", 2, 4, val)
            elif kind == "ws":
                out += bytes([3, 3, val])
            elif kind == "sackok":
                out += b"\x04\x02"
            elif kind == "sack":
                edges = b"".join(struct.pack("!II", (base + a) & 0xFFFFFFFF,
                                             (base + b) & 0xFFFFFFFF) for a, b in val)
                out += bytes([5, 2 + len(edges)]) + edges
            elif kind == "ts":
                out += struct.pack("!BBII", 8, 10, *val)
            elif kind == "nop":
                out += b"\x01"
            elif kind == "eol":
                out += b"\x00"
            else:
                out += val
        out = out[:40]
        return out + b"\0" * (-len(out) % 4)


FLAGS = st.one_of(st.sampled_from((0x10, 0x10, 0x18, 0x11, 0x02, 0x12, 0x04, 0x14, 0x01, 0x19,
                                   0x03, 0x06, 0x00, 0x3F, 0xFF, 0x30, 0x50, 0x90)), u8)
tcp_segments = st.builds(
    TcpSeg, st.one_of(st.just(len(GHOSTS)), st.integers(0, len(GHOSTS) + 9)),
    st.one_of(DELTAS, u32), st.sampled_from(("una", "nxt", "max", "iss")),
    st.one_of(DELTAS, u32), FLAGS,
    st.one_of(st.sampled_from((0, 1, 65535, 512)), u16),
    st.lists(TCP_OPTION, max_size=5).map(tuple),
    st.one_of(st.sampled_from((0, 0, 1, 100, 1460)), st.integers(0, 3000)),
    st.one_of(st.just(0), st.just(0), u16),
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 15)), BAD)


# -- the tests ---------------------------------------------------------------------------------
def batches(item: st.SearchStrategy[Any], size: int = 8) -> st.SearchStrategy[Any]:
    return st.lists(st.lists(item, min_size=1, max_size=size), min_size=1, max_size=3)


def run(batch_list: list[list[Any]], extra_check: Any = None) -> Harness:
    h = Harness()
    for batch in batch_list:
        frames = [f for item in batch for f in item.frames(h)]
        h.run_batch(frames)
        if extra_check is not None:
            extra_check(h)
    return h


# the shortest known input for each defect of issue 19 (all fixed): the suite always
# tries them first, as regression examples
SPOOFED_FIN = TcpSeg(len(GHOSTS), 0, "una", 0, 0x11, 0, (), 0, 0, None, None)  # on the duel
RR_AT_HEADER_END = Ipv4Pkt(b"\x01\x01\x07\x02", "far", "peer", 0, 17, 64, 0, b"", None, None)
NEEDFRAG_116 = IcmpMsg(3, 4, 116, GHOSTS.index("ESTABLISHED"), 0, 28, "far", b"", None)
OFFNET_ARP = ArpMsg(1, (1, 0x800, 6, 4), b"\x02\0\0\0\0\x07", "far", "victim", 0, True, None,
                    b"")


@fuzz_settings()
@given(batches(st.one_of(raw_frames, eth_frames)))
def test_fuzz_ethernet(batch_list):
    run(batch_list)


@fuzz_settings()
@given(batches(arp_msgs))
@example([[OFFNET_ARP]])
def test_fuzz_arp(batch_list):
    run(batch_list)


@fuzz_settings()
@given(batches(ipv4_packets))
@example([[RR_AT_HEADER_END]])
def test_fuzz_ipv4_options(batch_list):
    run(batch_list)


@fuzz_settings()
@given(batches(fragments, 4))
def test_fuzz_fragments(batch_list):
    run(batch_list)


def mss_floor(h: Harness) -> None:
    """An ICMP error may lower a connection's MSS, never below the minimum."""
    for tcb in [g.tcb for g in h.ghosts] + [h.live_v.tcb]:
        if tcb is not None:
            assert tcb.mss >= MIN_MSS, f"{tcb.state_name}: MSS {tcb.mss}"


@fuzz_settings()
@given(batches(icmp_msgs))
@example([[NEEDFRAG_116]])
def test_fuzz_icmp(batch_list):
    run(batch_list, mss_floor)


@fuzz_settings()
@given(batches(udp_dgrams))
def test_fuzz_udp(batch_list):
    run(batch_list)


@fuzz_settings()
@given(batches(tcp_segments, 12))
@example([[SPOOFED_FIN]])
def test_fuzz_tcp(batch_list):
    run(batch_list)


@fuzz_settings()
@given(batches(st.one_of(raw_frames, eth_frames, arp_msgs, ipv4_packets, fragments,
                         icmp_msgs, udp_dgrams, tcp_segments), 12))
def test_fuzz_everything(batch_list):
    run(batch_list)


@fuzz_settings(6)
@given(count=st.integers(300, 2000), stride=st.integers(2, 5), size=st.integers(1, 3),
       target=st.sampled_from(("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2")),
       reverse=st.booleans())
def test_fuzz_tcp_out_of_order_flood(count, stride, size, target, reverse):
    """Many small segments, each leaving a hole: the queue stays within FreeBSD-like
    bounds (net.inet.tcp.reass.maxqueuelen) and the kernel within its work bound."""
    h = Harness()
    g = h.ghosts[GHOSTS.index(target)]
    tcb = g.tcb
    offsets = [1 + stride * i for i in range(count)]
    if reverse:
        offsets.reverse()
    frames = [h.ghost_frame(g.addr, g.port, tcb.rcv_nxt + off, tcb.snd_una, 0x10,
                            payload=b"o" * size) for off in offsets]
    for start in range(0, len(frames), 500):
        h.run_batch(frames[start:start + 500])


EMBRYO_LIFETIME = 75  # s: FreeBSD's keepinit, the longest an embryonic connection may live


@fuzz_settings(6)
@given(count=st.integers(20, 400), onlink=st.booleans(), seed=st.integers(0, 2**16))
def test_fuzz_syn_flood(count, onlink, seed):
    """A SYN flood: bounded state during, nothing left after the embryonic lifetime, and
    a real client still gets in during the flood."""
    h = Harness()
    frames = []
    for i in range(count):
        src = (A_VICTIM & 0xFFFFFF00) | (100 + i % 8) if onlink else 0xC0A80000 + seed + i
        frames.append(h.ghost_frame(src & 0xFFFFFFFF, 1024 + i % 60000, seed * 7919 + i,
                                    0, 0x02, mss=1460))
    for start in range(0, len(frames), 100):
        h.run_batch(frames[start:start + 100])
    client = h.peer.socket(2, 1)
    client.settimeout(5)
    client.connect((VICTIM, LISTEN_PORT))  # accepted despite the flood (SYN cookies)
    client.close()
    h.k.run(EMBRYO_LIFETIME)
    ghost = h.ghosts[GHOSTS.index("SYN_RCVD")].addr
    left = [t for t in h.victim.tcp.conns.values() if t.state == 3 and t.faddr != ghost]
    assert left == [], f"{len(left)} embryonic connections after {EMBRYO_LIFETIME} s"


def test_harness_reaches_every_state():
    """The harness itself: every ghost in its state, and the checks pass on quiet input."""
    h = Harness()
    for _ in range(3):
        # SYN_RCVD may be a syncache entry without a control block
        assert [g.tcb.state_name if g.tcb else "SYN_RCVD" for g in h.ghosts] == list(GHOSTS)
        h.run_batch([])


def test_harness_bounds_an_endless_exchange():
    """The work bound itself: two interfaces bouncing one frame forever end the run."""
    h = Harness()

    class Mirror:
        def input(self, frame: bytes) -> None:
            h.queue.append((self, frame))

    h.queue.append((Mirror(), b"ping-pong"))
    with pytest.raises(WorkBoundExceeded):
        h.settle(1)
    h.queue.clear()
