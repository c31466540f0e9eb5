"""Random and mutated frames on every input path: counted and dropped, never raised.

The fuzzed vnet `fb` sits between `fa` (10.0.0.1/24) and `fc` (10.0.1.2/24) and
forwards; a bystander trio `ya`, `yb`, `yc` with the identical configuration lives in
the same kernel and must not notice anything.
"""

from __future__ import annotations

import errno
import os
import random
import struct
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.compat import raw
from scapy.layers.inet import (
    ICMP,
    IP,
    UDP,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    fragment,
)
from scapy.layers.l2 import ARP

from vimage import topo
from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.netinet.arp import STATIC
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SO_RCVBUF, SOCK_DGRAM, SOCK_RAW, SOL_SOCKET
from vimage.vnet import Vnet
from vimage.wire import ipv4

SEED = 4242
STORM = 8000  # frames per seeded storm
A, B, B2, C = "10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"
ETH_IP = b"\x08\x00"
ETH_ARP = b"\x08\x06"
BCAST = b"\xff" * 6

pytestmark = pytest.mark.fuzz

# VIMAGE_FUZZ_EXAMPLES=5000 (or --hypothesis-profile long) makes a deeper, randomised run;
# by default it is fixed and quick
_DEEP = int(os.environ.get("VIMAGE_FUZZ_EXAMPLES", "0")) or (
    settings.default.max_examples if settings.default.max_examples > 100 else 0)
FUZZ_SETTINGS = settings(max_examples=_DEEP or 150, deadline=None, derandomize=not _DEEP,
                         database=None, suppress_health_check=[HealthCheck.too_slow])


# -- the world ----------------------------------------------------------------------------
class Side(NamedTuple):
    a: Vnet
    b: Vnet
    c: Vnet
    ifa: Ifnet  # a's end of the a-b link
    ifb: Ifnet  # b's end of the a-b link (the fuzz target)
    sockets: tuple[Any, ...] = ()  # held open for the whole test


class World(NamedTuple):
    k: Kernel
    f: Side  # fuzzed
    y: Side | None  # bystander


def _side(k: Kernel, prefix: str) -> Side:
    a, b, c = (k.create(f"{prefix}{n}") for n in "abc")
    ifa, ifb = topo.connect(a, f"{A}/24", b, f"{B}/24")
    topo.connect(b, f"{B2}/24", c, f"{C}/24")
    b.sysctl("net.inet.ip.forwarding", 1)
    topo.add_route(a, "default", B)
    topo.add_route(c, "default", B2)
    socks = []
    for v in (b, c):
        s = v.socket(AF_INET, SOCK_DGRAM)
        s.bind(("", 7))
        socks.append(s)
    conn = b.socket(AF_INET, SOCK_DGRAM)  # gets ICMP errors quoting 10.0.0.2:9 -> 10.0.0.1:9
    conn.bind((B, 9))
    conn.connect((A, 9))
    socks += [conn, b.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), b.socket(AF_INET, SOCK_RAW, 253)]
    return Side(a, b, c, ifa, ifb, tuple(socks))


def build_world(seed: int = SEED, bystander: bool = True) -> World:
    k = Kernel(clock="virtual", seed=seed)
    f = _side(k, "f")
    y = _side(k, "y") if bystander else None
    k.run(1)
    return World(k, f, y)


def side_state(side: Side, stack: Any) -> dict[str, Any]:
    k = side.a.kernel
    out = {v.name: stack.counters(v) for v in side[:3]}
    out["timers"] = tuple(k.sched.pending_timers(v) for v in side[:3])
    return out


def flush_arp(*vnets: Vnet) -> None:
    """`arp -d -a`: forget what the fuzzer may legitimately have taught (ARP spoofing)."""
    for v in vnets:
        for e in v.arp.entries():
            if e.state != STATIC:
                v.arp.delete(e.addr)


def ip_invariant(v: Vnet) -> None:
    """Every packet IP input counted lands in exactly one outcome counter, except those
    whose TTL ran out in forwarding, which (as in FreeBSD) only cause an ICMP error."""
    s = v.ip.stats
    # (a fragment too short or reaching past 64 KiB counts toosmall or toolong, not
    # fragments, as FreeBSD's ip_reass; a reassembled datagram too long counts toolong
    # besides its fragments: hence the slack of toolong below)
    outcomes = (s.toosmall + s.toolong + s.badvers + s.badhlen + s.badsum + s.badlen
                + s.tooshort + s.badaddr + s.badoptions + s.notmember + s.forward
                + s.cantforward + s.fragments + s.delivered + s.noproto - s.reassembled)
    assert -s.toolong <= s.total - outcomes <= v.icmp.stats.error, {
        n: getattr(s, n) for n in s.__slots__ if getattr(s, n)}


def udp_invariant(v: Vnet) -> None:
    s = v.udp.stats
    assert s.ipackets == (s.hdrops + s.badlen + s.badsum + s.noport + s.noportbcast
                          + s.fullsock + s.delivered)


def no_stray_timers(v: Vnet) -> None:
    """Only ARP entries may own timers once reassembly is done."""
    arp_timers = sum(1 for e in v.arp.table.values() if e.timer is not None
                     and not e.timer.cancelled)
    assert v.kernel.sched.pending_timers(v) == arp_timers
    assert len(v.ip.reass or ()) == 0


def still_works(world: World, stack: Any) -> None:
    side = world.f
    flush_arp(side.a, side.b, side.c)
    assert stack.ping(side.a, B) is not None
    assert stack.ping(side.a, C) is not None  # forwarded by the fuzzed vnet
    assert stack.udp_exchange(side.a, side.b, B, 31000, b"after the storm")
    assert stack.udp_exchange(side.a, side.c, C, 31001, b"through the storm" * 100)


# -- checksums and frame surgery (independent of vimage.wire) ------------------------------
def inet_csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_ip_sum(pkt: bytearray) -> None:
    """Recompute the header checksum of an IPv4 packet if its header length allows."""
    if len(pkt) < 20:
        return
    hl = (pkt[0] & 0x0F) * 4
    if hl < 20 or hl > len(pkt):
        return
    pkt[10:12] = b"\0\0"
    pkt[10:12] = inet_csum(bytes(pkt[:hl])).to_bytes(2, "big")


def fix_udp_sum(pkt: bytearray) -> None:
    """Recompute the UDP checksum over the length the UDP header claims, if it fits."""
    if len(pkt) < 20 or pkt[9] != 17:
        return
    hl = (pkt[0] & 0x0F) * 4
    if hl < 20 or len(pkt) < hl + 8:
        return
    ulen = int.from_bytes(pkt[hl + 4:hl + 6], "big")
    if not 8 <= ulen <= len(pkt) - hl:
        return
    pkt[hl + 6:hl + 8] = b"\0\0"
    pseudo = bytes(pkt[12:20]) + struct.pack("!BBH", 0, 17, ulen)
    pkt[hl + 6:hl + 8] = (inet_csum(pseudo + bytes(pkt[hl:hl + ulen])) or 0xFFFF).to_bytes(
        2, "big")


def eth(dst: bytes, src: bytes, ip_pkt: bytes, etype: bytes = ETH_IP) -> bytes:
    return dst + src + etype + ip_pkt


# -- valid traffic, built by scapy -----------------------------------------------------------
class Templates(NamedTuple):
    ip: tuple[bytes, ...]  # IPv4 packets fa -> fb (or through it)
    arp: tuple[bytes, ...]  # ARP payloads (no Ethernet header)
    a_mac: bytes
    b_mac: bytes

    def __repr__(self) -> str:  # keep hypothesis reports readable
        return f"<Templates: {len(self.ip)} IPv4, {len(self.arp)} ARP>"


def build_templates(world: World) -> Templates:
    a_mac, b_mac = world.f.ifa.mac, world.f.ifb.mac
    assert a_mac is not None and b_mac is not None
    am = ":".join(f"{x:02x}" for x in a_mac)
    bm = ":".join(f"{x:02x}" for x in b_mac)
    data = bytes(range(64))
    pkts = [
        IP(src=A, dst=B) / UDP(sport=1234, dport=7) / data,
        IP(src=A, dst=B) / UDP(sport=1234, dport=4444) / data,  # port unreachable
        IP(src=A, dst="10.0.0.255") / UDP(sport=1234, dport=7) / data,
        IP(src=A, dst="255.255.255.255") / UDP(sport=68, dport=7) / data,
        IP(src=A, dst=C) / UDP(sport=1234, dport=7) / data,  # forwarded
        IP(src=A, dst="10.77.0.1") / UDP(sport=1234, dport=7) / data,  # no route
        IP(src=A, dst=B, ttl=1) / UDP(sport=1, dport=7),
        IP(src=A, dst=C, ttl=1) / UDP(sport=1, dport=7),  # time exceeded
        IP(src=A, dst=C, flags="DF") / UDP(sport=1, dport=7) / (b"D" * 1600),  # needfrag
        IP(src=A, dst=B) / ICMP(type=8, id=7, seq=1) / data,
        IP(src=A, dst="10.0.0.255") / ICMP(type=8, id=7, seq=2),
        IP(src=A, dst=C) / ICMP(type=8, id=7, seq=3) / data,
        IP(src=A, dst=B) / ICMP(type=13) / (b"\0" * 12),
        IP(src=A, dst=B) / ICMP(type=3, code=3) / IP(src=B, dst=A) / UDP(sport=9, dport=9),
        IP(src=A, dst=B) / ICMP(type=11, code=0) / IP(src=B, dst=A, proto=1) / (b"\0" * 8),
        IP(src=A, dst=B, proto=253) / data,
        IP(src=A, dst=B, proto=99) / data,  # protocol unreachable
        IP(src=A, dst=B, options=[IPOption_NOP(), IPOption_Router_Alert()])
        / UDP(sport=5, dport=7) / data,
        IP(src=A, dst=C, options=[IPOption_RR(routers=["0.0.0.0"] * 3)])
        / UDP(sport=5, dport=7) / data,
    ]
    big = IP(src=A, dst=B, id=4321) / UDP(sport=77, dport=7) / (b"F" * 3000)
    frags = fragment(big, 1000)
    big_c = IP(src=A, dst=C, id=4322) / UDP(sport=77, dport=7) / (b"G" * 2000)
    frags += fragment(big_c, 800)
    arps = [
        ARP(op=1, hwsrc=am, psrc=A, pdst=B),
        ARP(op=2, hwsrc=am, psrc=A, hwdst=bm, pdst=B),
        ARP(op=1, hwsrc=am, psrc=A, pdst=A),  # gratuitous
        ARP(op=1, hwsrc=am, psrc=A, pdst=B2),  # an address on the other interface
        ARP(op=1, hwsrc=am, psrc=B, pdst=B),  # someone claims our address
    ]
    return Templates(tuple(raw(p) for p in [*pkts, *frags]), tuple(raw(p) for p in arps),
                     a_mac, b_mac)


@pytest.fixture(scope="module")
def templates() -> Templates:
    return build_templates(build_world(bystander=False))


# -- the mutator ----------------------------------------------------------------------------
IP_FIELDS = ((0, 1), (1, 1), (2, 2), (4, 2), (6, 2), (8, 1), (9, 1), (10, 2), (12, 4), (16, 4))
INTERESTING = (0, 1, 2, 4, 7, 8, 19, 20, 21, 0x3F, 0x40, 0x44, 0x45, 0x46, 0x4F, 0x5F, 0x7F,
               0x80, 0xFF, 0x100, 0x1FFF, 0x2000, 0x2001, 0x3FFF, 0x4000, 0x7FFF, 0x8000,
               0xFFFF, 0x7F000001, 0xE0000001, 0xFFFFFFFF, 0x0A0000FF, 0x0A000002,
               0x0A000102, 0x0A000001)


def mutate_ip(rng: random.Random, pkt: bytes) -> bytes:
    out = bytearray(pkt)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.25 and out:  # bit flips
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(min(len(out), 64) if rng.random() < 0.7 else len(out))
                out[i] ^= 1 << rng.randrange(8)
        elif op < 0.6 and len(out) >= 20:  # overwrite an IP header field
            off, size = rng.choice(IP_FIELDS)
            value = rng.choice(INTERESTING) if rng.random() < 0.6 else rng.getrandbits(8 * size)
            out[off:off + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "big")
        elif op < 0.7 and len(out) >= 28:  # overwrite a transport header field
            hl = max(20, (out[0] & 0x0F) * 4)
            off = hl + rng.randrange(8)
            if off < len(out):
                out[off] = rng.choice((0, 1, 3, 8, 0x80, 0xFF, rng.getrandbits(8)))
        elif op < 0.8:  # make it a fragment
            if len(out) >= 20:
                field = rng.choice((0x2000, 0)) | rng.choice((0, 1, 2, 3, 185, 0x1FFF,
                                                              rng.getrandbits(13)))
                out[6:8] = field.to_bytes(2, "big")
        elif op < 0.9:  # truncate, and maybe make the length field agree
            del out[rng.randrange(len(out) + 1):]
            if len(out) >= 20 and rng.random() < 0.5:
                out[2:4] = len(out).to_bytes(2, "big")
        else:  # extend
            n = rng.choice((1, 3, 8, 40, rng.randrange(1, 1600)))
            out += rng.randbytes(n)
    if rng.random() < 0.3:
        fix_udp_sum(out)
    if rng.random() < 0.6:
        fix_ip_sum(out)
    return bytes(out)


def mutate_arp(rng: random.Random, payload: bytes) -> bytes:
    out = bytearray(payload)
    for _ in range(rng.randint(1, 2)):
        op = rng.random()
        if op < 0.3 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op < 0.6 and len(out) >= 28:
            off = rng.choice((0, 2, 4, 5, 6, 8, 14, 24))
            size = {0: 2, 2: 2, 4: 1, 5: 1, 6: 2, 8: 6, 14: 4, 24: 4}[off]
            out[off:off + size] = rng.randbytes(size)
        elif op < 0.85:
            del out[rng.randrange(len(out) + 1):]
        else:
            out += rng.randbytes(rng.randrange(1, 40))
    return bytes(out)


def random_frame(rng: random.Random, t: Templates) -> tuple[str, bytes]:
    """(path, bytes): path is 'epair' (Ethernet frame), 'lo' or 'ip' (IPv4) or 'arp'."""
    r = rng.random()
    if r < 0.08:
        return "epair", rng.randbytes(rng.randrange(0, 80))
    if r < 0.12:
        dst = rng.choice((t.b_mac, BCAST, b"\x01\x00\x5e\x00\x00\x01", rng.randbytes(6)))
        src = rng.choice((t.a_mac, b"\x01" + rng.randbytes(5), rng.randbytes(6)))
        etype = rng.choice((ETH_IP, ETH_ARP, b"\x86\xdd", rng.randbytes(2)))
        return "epair", (dst + src + etype + rng.randbytes(rng.randrange(0, 80)))[
            :rng.randrange(0, 100)]
    if r < 0.27:
        payload = rng.choice(t.arp)
        if rng.random() < 0.8:
            payload = mutate_arp(rng, payload)
        if rng.random() < 0.5:
            return "arp", payload
        return "epair", eth(rng.choice((BCAST, t.b_mac)), t.a_mac, payload, ETH_ARP)
    pkt = rng.choice(t.ip)
    if rng.random() < 0.85:
        pkt = mutate_ip(rng, pkt)
    r = rng.random()
    if r < 0.7:
        return "epair", eth(t.b_mac, t.a_mac, pkt)
    if r < 0.85:
        return "ip", pkt
    if len(pkt) >= 20:  # the same packet as if this host had sent it to itself
        lo = bytearray(pkt)
        lo[12:16] = rng.choice((lo[12:16], b"\x7f\0\0\x01", b"\x0a\0\0\x02"))
        lo[16:20] = rng.choice((b"\x7f\0\0\x01", b"\x0a\0\0\x02", b"\x0a\0\0\xff"))
        if rng.random() < 0.7:
            fix_udp_sum(lo)
            fix_ip_sum(lo)
        pkt = bytes(lo)
    return "lo", pkt


def inject(world: World, path: str, data: bytes) -> None:
    side = world.f
    try:
        if path == "epair":
            side.ifb.input(data)
        elif path == "lo":
            side.b.ifaces["lo0"].input(data)
        elif path == "ip":
            side.b.ip.input(side.ifb, data)
        else:
            side.b.arp.input(side.ifb, data)
    except Exception as exc:  # pragma: no cover - the report is the point
        shown = data.hex() if len(data) <= 256 else f"{data[:256].hex()}... ({len(data)} bytes)"
        raise AssertionError(f"{path} input raised {exc!r} on {shown}") from exc


# -- the big seeded storm --------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2])
def test_random_storm(seed, templates, stack):
    world = build_world()
    f, y = world.f, world.y
    assert y is not None
    assert f.ifb.mac == templates.b_mac
    k = world.k
    # both trios work before, and the bystander's state is recorded
    assert stack.udp_exchange(y.a, y.c, C, 30000, b"bystander")
    assert stack.udp_exchange(f.a, f.c, C, 30000, b"fuzzed")
    k.run(1)
    before = side_state(y, stack)
    rng = random.Random(seed)
    paths = {"epair": 0, "lo": 0, "ip": 0, "arp": 0}
    for i in range(STORM):
        path, data = random_frame(rng, templates)
        paths[path] += 1
        inject(world, path, data)
        if i % 16 == 0:
            k.run(0.01 if i % 256 else 0.5)
    assert min(paths.values()) > 100
    k.run(0)
    s, u, a, ic = f.b.ip.stats, f.b.udp.stats, f.b.arp.stats, f.b.icmp.stats
    moved = {
        "ip.toosmall": s.toosmall, "ip.badvers": s.badvers, "ip.badhlen": s.badhlen,
        "ip.badsum": s.badsum, "ip.badlen": s.badlen, "ip.tooshort": s.tooshort,
        "ip.badoptions": s.badoptions, "ip.badaddr": s.badaddr, "ip.fragments": s.fragments,
        "ip.fragdropped": s.fragdropped, "ip.forward": s.forward,
        "ip.cantforward": s.cantforward, "ip.delivered": s.delivered, "ip.noproto": s.noproto,
        "udp.badsum": u.badsum, "udp.badlen": u.badlen, "udp.hdrops": u.hdrops,
        "udp.noport": u.noport, "udp.delivered": u.delivered, "arp.rxbad": a.rxbad,
        "arp.rxrequests": a.rxrequests, "arp.txreplies": a.txreplies,
        "icmp.checksum": ic.checksum, "icmp.tooshort": ic.tooshort, "icmp.error": ic.error,
        "ierrors": f.ifb.ierrors, "iqdrops": f.ifb.iqdrops,
    }
    assert [name for name, value in moved.items() if not value] == []
    for v in (f.a, f.b, f.c):
        ip_invariant(v)
        udp_invariant(v)
    # reassembly queues left behind time out; nothing raises while the kernel runs on
    k.run(30)
    k.run(5)
    assert k.sched.errors == 0, k.sched.last_error  # nothing raised inside the loop either
    assert f.b.ip.stats.fragtimeout > 0
    for v in (f.a, f.b, f.c):
        no_stray_timers(v)
    # the bystander saw nothing and still works
    assert side_state(y, stack) == before
    assert stack.udp_exchange(y.a, y.c, C, 30002, b"bystander again")
    assert stack.ping(y.a, B) is not None
    # and so does the fuzzed trio once its ARP caches are flushed
    still_works(world, stack)


# -- hypothesis: each input path with generated input -----------------------------------------
@FUZZ_SETTINGS
@given(frame=st.one_of(
    st.binary(max_size=120),
    st.tuples(st.sampled_from((ETH_IP, ETH_ARP, b"\x86\xdd", b"\x00\x00")),
              st.binary(max_size=120), st.booleans()),
))
def test_hypothesis_epair_input(frame):
    world = build_world(bystander=False)
    ifb = world.f.ifb
    if isinstance(frame, tuple):
        etype, body, bcast = frame
        frame = (BCAST if bcast else ifb.mac) + world.f.ifa.mac + etype + body
    before = (ifb.ipackets, ifb.ibytes, ifb.ierrors)
    inject(world, "epair", frame)
    world.k.run(40)
    assert (ifb.ipackets, ifb.ibytes) == (before[0] + 1, before[1] + len(frame))
    if len(frame) < 14:
        assert ifb.ierrors == before[2] + 1
    ip_invariant(world.f.b)
    udp_invariant(world.f.b)
    no_stray_timers(world.f.b)


@st.composite
def ipv4_packets(draw: st.DrawFn) -> bytes:
    opts = draw(st.binary(max_size=40))
    hl_words = draw(st.one_of(st.just(5 + (len(opts) + 3) // 4), st.integers(0, 15)))
    version = draw(st.sampled_from((4, 4, 4, 4, 0, 6, 15)))
    proto = draw(st.sampled_from((1, 17, 253, 6, 0, 99)))
    payload = draw(st.binary(max_size=64))
    if proto == 17 and draw(st.booleans()):
        ulen = draw(st.one_of(st.just(8 + len(payload)), st.integers(0, 0xFFFF)))
        payload = struct.pack("!HHHH", draw(st.sampled_from((1, 7, 9))),
                              draw(st.sampled_from((7, 9, 4444))), ulen, 0) + payload
    body = opts + b"\0" * (-len(opts) % 4) + payload
    total = draw(st.one_of(st.just(20 + len(body)), st.integers(0, 0xFFFF)))
    frag = draw(st.one_of(st.just(0), st.just(0x4000), st.integers(0, 0xFFFF)))
    src = draw(st.sampled_from((A, B, C, "127.0.0.1", "0.0.0.0", "224.0.0.1",
                                "255.255.255.255", "10.0.0.255")))
    dst = draw(st.sampled_from((B, B2, C, "10.0.0.255", "255.255.255.255", "127.0.0.1",
                                "224.0.0.1", "10.9.9.9", A)))
    ttl = draw(st.sampled_from((0, 1, 2, 64, 255)))
    header = struct.pack("!BBHHHBBHII", (version << 4) | hl_words, 0, total & 0xFFFF,
                         draw(st.integers(0, 0xFFFF)), frag, ttl, proto, 0,
                         ipv4.aton(src), ipv4.aton(dst))
    pkt = bytearray(header + body)
    if draw(st.booleans()):
        fix_udp_sum(pkt)
    if draw(st.integers(0, 3)):
        fix_ip_sum(pkt)
    return bytes(pkt[:draw(st.one_of(st.just(len(pkt)), st.integers(0, len(pkt))))])


@FUZZ_SETTINGS
@given(pkt=ipv4_packets(), path=st.sampled_from(("ip", "lo", "epair")))
def test_hypothesis_ip_input(pkt, path):
    world = build_world(bystander=False)
    if path == "epair":
        pkt = eth(world.f.ifb.mac, world.f.ifa.mac, pkt)
    inject(world, path, pkt)
    world.k.run(40)
    for v in (world.f.a, world.f.b, world.f.c):
        ip_invariant(v)
        udp_invariant(v)
        no_stray_timers(v)
    if path == "lo" and pkt[:1] and pkt[0] >> 4 == 6:
        return  # lo0 hands a packet to the input of its version's family: IPv6's
    assert world.f.b.ip.stats.total >= 1


@FUZZ_SETTINGS
@given(htype=st.sampled_from((1, 1, 1, 6, 0)), ptype=st.sampled_from((0x800, 0x800, 0x86DD)),
       hlen=st.sampled_from((6, 6, 0, 255)), plen=st.sampled_from((4, 4, 16)),
       op=st.sampled_from((1, 2, 0, 3, 0xFFFF)),
       sha=st.sampled_from((b"\x02\0\0\0\0\x01", b"\xff" * 6, b"\x01\0\0\0\0\x02", b"\0" * 6)),
       spa=st.sampled_from((A, B, B2, "0.0.0.0", "10.0.0.3", "255.255.255.255")),
       tpa=st.sampled_from((B, B2, A, "10.0.0.3")), cut=st.integers(0, 40),
       tail=st.binary(max_size=20))
def test_hypothesis_arp_input(htype, ptype, hlen, plen, op, sha, spa, tpa, cut, tail):
    world = build_world(bystander=False)
    payload = struct.pack("!HHBBH6sI6sI", htype, ptype, hlen, plen, op, sha, ipv4.aton(spa),
                          b"\0" * 6, ipv4.aton(tpa)) + tail
    payload = payload[:cut] if cut < 28 else payload
    b = world.f.b
    assert not b.arp.table
    st_ = b.arp.stats
    received, requests, replies, rxbad = st_.received, st_.rxrequests, st_.rxreplies, st_.rxbad
    ierrors = world.f.ifb.ierrors
    inject(world, "arp", payload)
    world.k.run(30)
    assert world.k.sched.errors == 0, world.k.sched.last_error
    assert st_.received == received + 1
    parsed = st_.rxrequests + st_.rxreplies - requests - replies
    assert parsed <= 1 <= parsed + st_.rxbad - rxbad
    if len(payload) < 28 or (htype, ptype, hlen, plen) != (1, 0x800, 6, 4) or op not in (1, 2):
        assert st_.rxbad == rxbad + 1 and world.f.ifb.ierrors == ierrors + 1
        assert not b.arp.table
    if op in (1, 2) and sha[0] & 1 and len(payload) >= 28 and htype == 1 and ptype == 0x800 \
            and (hlen, plen) == (6, 4):
        assert not b.arp.table  # never learn a multicast MAC
    no_stray_timers(b)


@FUZZ_SETTINGS
@given(data=st.data())
def test_hypothesis_mutated_templates(data, templates):
    world = build_world(bystander=False)
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    for _ in range(data.draw(st.integers(1, 12))):
        inject(world, *random_frame(rng, templates))
    world.k.run(40)
    for v in (world.f.a, world.f.b, world.f.c):
        ip_invariant(v)
        udp_invariant(v)
        no_stray_timers(v)


# -- targeted malformations, each in its own counter ----------------------------------------------
@pytest.fixture
def w():
    return build_world(bystander=False)


def _udp_pkt(dst: str = B, dport: int = 7, payload: bytes = b"payload!", **ip: Any) -> bytes:
    return raw(IP(src=A, dst=dst, **ip) / UDP(sport=1000, dport=dport) / payload)


def _send(w: World, pkt: bytes | bytearray) -> None:
    inject(w, "epair", eth(w.f.ifb.mac, w.f.ifa.mac, bytes(pkt)))
    w.k.run(0)


def _edit(pkt: bytes, off: int, value: bytes, fix: bool = True) -> bytearray:
    out = bytearray(pkt)
    out[off:off + len(value)] = value
    if fix:
        fix_ip_sum(out)
    return out


def _bad_option(pkt: bytes) -> bytearray:
    out = bytearray(pkt[:20] + b"\x07\x09\x04\x00" + pkt[20:])  # RR claiming 9 bytes of 4
    out[0] = 0x46
    out[2:4] = (len(out)).to_bytes(2, "big")
    fix_ip_sum(out)
    return out


@pytest.mark.parametrize(("name", "make", "counter"), [
    ("version 6", lambda p: _edit(p, 0, b"\x65"), "badvers"),
    ("version 0", lambda p: _edit(p, 0, b"\x05"), "badvers"),
    ("bad checksum", lambda p: _edit(p, 10, bytes([p[10] ^ 0x55, p[11]]), fix=False), "badsum"),
    ("ihl 4", lambda p: _edit(p, 0, b"\x44"), "badhlen"),
    ("ihl 0", lambda p: _edit(p, 0, b"\x40"), "badhlen"),
    ("ihl past the end", lambda p: _edit(p[:24], 0, b"\x4f"), "badhlen"),
    ("total > frame", lambda p: _edit(p, 2, (len(p) + 1).to_bytes(2, "big")), "tooshort"),
    ("total 65535", lambda p: _edit(p, 2, b"\xff\xff"), "tooshort"),
    ("total < header", lambda p: _edit(p, 2, (19).to_bytes(2, "big")), "badlen"),
    ("total 0", lambda p: _edit(p, 2, b"\0\0"), "badlen"),
    ("19 bytes", lambda p: bytearray(p[:19]), "toosmall"),
    ("bad option length", _bad_option, "badoptions"),
    ("multicast source", lambda p: _edit(p, 12, bytes([224, 0, 0, 1])), "badaddr"),
    ("loopback source on the wire", lambda p: _edit(p, 12, bytes([127, 0, 0, 1])), "badaddr"),
])
def test_ip_malformations_are_counted(w, name, make, counter):
    good = _udp_pkt()
    ip_before = {n: getattr(w.f.b.ip.stats, n) for n in w.f.b.ip.stats.__slots__}
    _send(w, make(good))
    s = w.f.b.ip.stats
    assert getattr(s, counter) == ip_before[counter] + 1, name
    assert s.delivered == ip_before["delivered"] and w.f.b.udp.stats.ipackets == 0
    ip_invariant(w.f.b)
    # the good packet still goes through afterwards
    _send(w, good)
    assert w.f.b.udp.stats.delivered == 1


def test_ethernet_runts_and_unknown_types(w):
    ifb = w.f.ifb
    packets, errors, drops = ifb.ipackets, ifb.ierrors, ifb.iqdrops
    for n in range(14):
        inject(w, "epair", bytes(ifb.mac + w.f.ifa.mac)[:n])
    assert ifb.ierrors == errors + 14 and ifb.ipackets == packets + 14
    inject(w, "epair", eth(ifb.mac, w.f.ifa.mac, b"\0" * 40, b"\x88\xb5"))  # local experimental
    assert ifb.iqdrops == drops + 1
    inject(w, "epair", eth(ifb.mac, b"\x01" + w.f.ifa.mac[1:], _udp_pkt()))  # group source
    assert ifb.ierrors == errors + 15
    other = b"\x02\xee\xee\xee\xee\xee"  # not for us: silently ignored
    inject(w, "epair", eth(other, w.f.ifa.mac, _udp_pkt()))
    assert w.f.b.ip.stats.total == 0 and ifb.ierrors == errors + 15
    ifb.set_up(False)
    inject(w, "epair", eth(ifb.mac, w.f.ifa.mac, _udp_pkt()))
    assert ifb.iqdrops == drops + 2 and w.f.b.ip.stats.total == 0


def test_udp_malformations_are_counted(w):
    u = w.f.b.udp.stats
    good = bytearray(_udp_pkt())
    bad = bytearray(good)
    bad[26] ^= 0xFF  # UDP checksum
    _send(w, bad)
    assert u.badsum == 1
    long_len = bytearray(good)
    long_len[24:26] = (len(good) - 20 + 1).to_bytes(2, "big")  # UDP length > payload
    _send(w, long_len)
    assert u.badlen == 1
    short_len = bytearray(good)
    short_len[24:26] = (7).to_bytes(2, "big")
    _send(w, short_len)
    assert u.badlen == 2
    stub = bytearray(good[:20] + good[20:26])  # 6 bytes of UDP header
    stub[2:4] = (26).to_bytes(2, "big")
    fix_ip_sum(stub)
    _send(w, stub)
    assert u.hdrops == 1
    nosum = bytearray(good)
    nosum[26:28] = b"\0\0"
    _send(w, nosum)
    assert u.nosum == 1 and u.delivered == 1
    assert u.ipackets == 5
    udp_invariant(w.f.b)


def test_icmp_malformations_are_counted(w):
    ic = w.f.b.icmp.stats
    echo = bytearray(raw(IP(src=A, dst=B) / ICMP(type=8) / b"abc"))
    bad = bytearray(echo)
    bad[22] ^= 1
    _send(w, bad)
    assert ic.checksum == 1
    short = bytearray(echo[:24])
    short[2:4] = (24).to_bytes(2, "big")
    fix_ip_sum(short)
    _send(w, short)
    assert ic.tooshort == 1
    assert ic.reflect == 0 and ic.outhist[0] == 0 and sum(ic.inhist) == 0
    _send(w, echo)
    assert ic.reflect == 1 and ic.inhist[8] == 1


def test_arp_malformations_are_counted(w):
    a = w.f.b.arp.stats
    req = raw(ARP(op=1, hwsrc=":".join(f"{x:02x}" for x in w.f.ifa.mac), psrc=A, pdst=B))
    received, requests, replies, ierrors = a.received, a.rxrequests, a.txreplies, \
        w.f.ifb.ierrors
    assert a.rxbad == 0
    for n in (0, 1, 8, 27):
        inject(w, "epair", eth(BCAST, w.f.ifa.mac, req[:n], ETH_ARP))
    assert a.rxbad == 4 and a.received == received + 4 and w.f.ifb.ierrors == ierrors + 4
    inject(w, "arp", b"\0\x02" + req[2:])  # htype 2
    inject(w, "arp", req[:6] + b"\0\x09" + req[8:])  # op 9
    assert a.rxbad == 6 and a.rxrequests == requests and not w.f.b.arp.table
    inject(w, "epair", eth(BCAST, w.f.ifa.mac, req, ETH_ARP))
    assert a.rxrequests == requests + 1 and a.txreplies == replies + 1


def test_arp_spoof_from_another_interface_leaves_no_timer(w, stack):
    b = w.f.b
    c_addr = ipv4.aton(C)
    assert stack.ping(b, C) is not None  # b learns C on its b-c link, with an expiry timer
    old = b.arp.table[c_addr]
    assert old.ifp is not w.f.ifb and old.timer is not None
    spoof = raw(ARP(op=1, hwsrc="02:00:00:00:0c:0c", psrc=C, pdst=B))
    inject(w, "epair", eth(BCAST, w.f.ifa.mac, spoof, ETH_ARP))
    # C is not on the a-b link: FreeBSD keeps the entry where it is (log_arp_wrong_iface)
    assert b.arp.table[c_addr] is old and old.mac == w.f.c.ifaces["epair1b"].mac
    assert b.arp.stats.notlocal == 1
    no_stray_timers(b)
    # a static entry is not for the wire to change
    b.arp.set_static(old.ifp, c_addr, w.f.c.ifaces["epair1b"].mac)
    inject(w, "epair", eth(BCAST, w.f.ifa.mac, spoof, ETH_ARP))
    assert b.arp.table[c_addr].state == STATIC and b.arp.table[c_addr].ifp is old.ifp
    assert stack.ping(b, C) is not None
    no_stray_timers(b)


def test_raw_hdrincl_output_with_garbage_options(w):
    """What a raw IP_HDRINCL socket sends is input too: odd options in a packet that must
    be fragmented used to make the option copier loop forever. Malformed options are now
    refused with EINVAL (as FreeBSD's rip_output does); well-formed odd ones go out."""
    a, b = w.f.a, w.f.b
    s = a.socket(AF_INET, SOCK_RAW, 255)
    rng = random.Random(9)
    sent = refused = 0
    for i in range(300):
        size = rng.choice((4, 8, 20, 40))
        if i == 0:
            opts = bytes([0x83, 0, 0, 0])  # loose source route claiming length 0
        elif i % 2:
            opts = b"\x01" * (size - 4) + bytes([0x94, 4, 0, 0])  # NOPs, router alert
        else:
            opts = rng.randbytes(size)
        body = rng.randbytes(rng.choice((10, 1600, 3100)))
        total = 20 + len(opts) + len(body)  # rip_output wants ip_len right
        hdr = struct.pack("!BBHHHBBHII", 0x45 + len(opts) // 4, 0, total, 0, 0, 64, 253, 0,
                          0, ipv4.aton(B))
        try:
            s.sendto(hdr + opts + body, (B, 0))
            sent += 1
        except OSError as exc:
            assert exc.errno == errno.EINVAL
            refused += 1
        w.k.run(0.001)
    assert sent > 100 and refused > 50
    assert a.ip.stats.fragmented > 0
    assert b.ip.stats.badoptions == 0  # nothing malformed left the sender
    ip_invariant(b)
    w.k.run(31)
    no_stray_timers(b)


# -- fragments ---------------------------------------------------------------------------------
def _frag(payload: bytes, off: int, more: bool, ident: int = 500, proto: int = 17,
          options: bytes = b"", dst: str = B) -> bytes:
    return ipv4.build(ipv4.aton(A), ipv4.aton(dst), proto, payload, ident=ident,
                      flags_frag=(0x2000 if more else 0) | (off // 8), options=options)


def _udp_body(data: bytes, dport: int = 7) -> bytes:
    """A UDP header and `data`, with the checksum for A -> B (scapy computes it)."""
    return raw(IP(src=A, dst=B) / UDP(sport=1000, dport=dport) / data)[20:]


def _rx(w: World, port: int, rcvbuf: int = 2**17):
    s = w.f.b.socket(AF_INET, SOCK_DGRAM)
    s.setsockopt(SOL_SOCKET, SO_RCVBUF, rcvbuf)
    s.bind(("", port))
    s.setblocking(False)
    return s


def test_overlapping_fragments_reassemble_consistently(w):
    rx = _rx(w, 700)
    body = _udp_body(bytes(range(200)) * 2, 700)  # 408 bytes
    for off, end, more in ((0, 160, True), (80, 240, True), (160, 408, False),
                           (240, 320, True)):  # overlaps, and a repeat from the middle
        _send(w, _frag(body[off:end], off, more))
    assert rx.recv(1000) == bytes(range(200)) * 2
    s = w.f.b.ip.stats
    assert s.reassembled == 1 and s.fragments == 4
    assert len(w.f.b.ip.reass) <= 1  # the late middle piece opened a queue that times out
    w.k.run(31)
    no_stray_timers(w.f.b)


def test_fragment_past_the_end_of_the_datagram_is_dropped(w):
    rx = _rx(w, 701)
    body = _udp_body(b"x" * 64, 701)  # 72 bytes
    _send(w, _frag(body[:16], 0, True, ident=9))
    _send(w, _frag(b"y" * 48, 8, True, ident=9))  # ends at 56
    _send(w, _frag(body[16:24], 16, False, ident=9))  # "last" ends at 24: contradiction
    with pytest.raises(BlockingIOError):
        rx.recv(1000)
    s = w.f.b.ip.stats
    # ip_reass: the "last" fragment, which data already held covers, is dropped alone;
    # the queue waits for its timeout
    assert s.reassembled == 0 and s.fragdropped == 1 and len(w.f.b.ip.reass) == 1
    w.k.run(31)
    assert s.fragtimeout == 2 and len(w.f.b.ip.reass) == 0
    no_stray_timers(w.f.b)


def test_duplicate_fragments_are_dropped_and_counted(w):
    rx = _rx(w, 702)
    body = _udp_body(b"dup" * 100, 702)
    pieces = [(body[o:o + 96], o, o + 96 < len(body)) for o in range(0, len(body), 96)]
    for p in pieces:
        _send(w, _frag(*p, ident=77))
        _send(w, _frag(*p, ident=77))
    assert rx.recv(1000) == b"dup" * 100
    with pytest.raises(BlockingIOError):
        rx.recv(1000)
    s = w.f.b.ip.stats
    # duplicates of pieces that came before the datagram completed are dropped; the
    # last duplicate starts a new queue (the old one is gone), which then times out
    assert s.fragdropped == len(pieces) - 1 and s.reassembled == 1
    w.k.run(31)
    assert s.fragtimeout == 1
    no_stray_timers(w.f.b)


def test_largest_datagram_reassembles(w):
    rx = _rx(w, 703, rcvbuf=2**17)
    data = bytes(range(256)) * 255 + b"z" * 227  # 65507 bytes: UDP + IP = 65535
    body = _udp_body(data, 703)
    assert len(body) + 20 == 65535
    step = 8192
    for off in range(0, len(body), step):
        _send(w, _frag(body[off:off + step], off, off + step < len(body), ident=1))
    assert rx.recv(70000) == data
    assert w.f.b.ip.stats.reassembled == 1


def test_oversize_reassembly_is_dropped(w):
    s = w.f.b.ip.stats
    raw_sock = w.f.b.socket(AF_INET, SOCK_RAW, 254)
    raw_sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 2**20)
    raw_sock.setblocking(False)
    # a fragment ending past 65535 - 20 bytes of payload
    _send(w, _frag(b"\0" * 16, 65520, False, ident=2, proto=254))
    assert s.fragdropped == 1 and len(w.f.b.ip.reass or ()) == 0
    # every fragment fits, but the first one's 60-byte header makes the whole 65572 bytes
    opts = b"\x94\x04\0\0" * 10  # router alert, ten times
    _send(w, _frag(b"\1" * 32768, 0, True, ident=3, proto=254, options=opts))
    _send(w, _frag(b"\2" * 32744, 32768, False, ident=3, proto=254))
    assert s.fragdropped == 3 and s.reassembled == 0
    assert len(w.f.b.ip.reass) == 0
    # the same sizes in the other order, and with the tail overlapping the head
    _send(w, _frag(b"\2" * 32744, 32768, False, ident=4, proto=254))
    _send(w, _frag(b"\1" * 32800, 0, True, ident=4, proto=254, options=opts))
    assert s.fragdropped == 5 and s.reassembled == 0
    with pytest.raises(BlockingIOError):
        raw_sock.recv(100000)
    ip_invariant(w.f.b)
    no_stray_timers(w.f.b)
    assert w.k.sched.pending_timers(w.f.b) == 0


@pytest.mark.parametrize("with_first", [False, True])
def test_incomplete_fragments_time_out(w, with_first):
    b = w.f.b
    k = w.k
    # a static ARP entry, so the time-exceeded error needs no resolution timers
    b.arp.set_static(w.f.ifb, ipv4.aton(A), w.f.ifa.mac)
    assert k.sched.pending_timers(b) == 0
    b.sysctl("net.inet.ip.fragttl", 5)
    body = _udp_body(b"t" * 300, 7)
    start = 0 if with_first else 8
    sent = 0
    for ident in (10, 11, 12):
        for off in range(start, 200, 96):  # never the last piece
            _send(w, _frag(body[off:off + 96], off, True, ident=ident))
            sent += 1
    assert len(b.ip.reass) == 3 and k.sched.pending_timers(b) == 3
    k.run(4.9)
    assert b.ip.stats.fragtimeout == 0 and len(b.ip.reass) == 3
    k.run(0.2)
    assert b.ip.stats.fragtimeout == sent
    assert len(b.ip.reass) == 0
    assert k.sched.pending_timers(b) == 0
    # time exceeded (reassembly) only when fragment zero had arrived
    assert b.icmp.stats.outhist[11] == (3 if with_first else 0)
    k.run(60)
    assert b.ip.stats.fragtimeout == sent


def test_fragment_flood_is_bounded(w):
    b = w.f.b
    rng = random.Random(5)
    for _ in range(3000):
        off = rng.randrange(0, 8192) * 8
        _send(w, _frag(rng.randbytes(rng.choice((8, 16, 24, 7, 0))), off,
                       rng.random() < 0.8, ident=rng.randrange(64),
                       proto=rng.choice((17, 1, 254))))
    assert len(b.ip.reass) <= 64 * 3
    assert all(len(q.frags) <= b.ip.maxfragsperpacket for q in b.ip.reass.queues.values())
    ip_invariant(b)
    w.k.run(31)
    no_stray_timers(b)
