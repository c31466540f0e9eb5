"""IPv4 options on input: every malformed option is dropped, counted and answered with
a parameter problem pointing at the byte FreeBSD's ip_dooptions (ip_options.c) names;
source routes are refused as FreeBSD's defaults do; nothing raises."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scapy.all import ICMP, IP, raw

from vimage.kernel import Kernel
from vimage.topo import router_chain
from vimage.wire import ipv4

A, R, R_OUT, B = "10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"


class Chain:
    """a - r - b (router_chain with one router), a raw ICMP socket on a and on b."""

    def __init__(self, seed: int = 1) -> None:
        self.k = Kernel(clock="virtual", seed=seed)
        self.a, self.r, self.b = router_chain(self.k, 1)
        self.r.sysctl("net.inet.icmp.icmplim", 0)  # every error is sent (fuzz: many)
        self.at_a = self.a.socket(2, 3, 1)
        self.at_a.settimeout(1)
        self.at_b = self.b.socket(2, 3, 1)
        self.at_b.settimeout(1)
        self.r_in = self.r.ifaces["epair0b"]
        self.a_mac = self.a.ifaces["epair0a"].mac
        self.k.run(1)

    def packet(self, dst: str, options: bytes, proto: int = 1) -> bytes:
        """An echo request (or, with proto 17, a datagram to the discard port)."""
        if proto == 1:
            body = raw(ICMP(type=8, id=7, seq=1) / b"opts")
        else:
            body = b"\x30\x39\x00\x09\x00\x0c\x00\x00opts"  # no checksum
        return ipv4.build(ipv4.aton(A), ipv4.aton(dst), proto, body, ident=99,
                          options=options)

    def inject(self, pkt: bytes, into=None, wait: float = 0.5) -> None:
        """`pkt` arrives at r from a, as a frame on r's epair0b (or `into`)."""
        ifp = into or self.r_in
        self.k.sched.queue.append((ifp, ifp.mac + self.a_mac + b"\x08\x00" + pkt))
        self.k.run(wait)

    def icmp_at_a(self) -> IP | None:
        try:
            return IP(self.at_a.recv(2000))
        except TimeoutError:
            return None


# (name, option bytes, offending byte's offset) -- the offsets are ip_dooptions' `code`
MALFORMED = [
    ("rr-len-2", b"\x01\x01\x07\x02", 24),  # NOP NOP RR len 2: names cp[IPOPT_OFFSET]
    ("rr-ptr-3", b"\x07\x07\x03" + bytes(4), 22),
    ("rr-ptr-0", b"\x07\x07\x00" + bytes(4), 22),
    ("rr-len-past-end", b"\x07\x08\x04\x00", 21),
    ("len-1", b"\x07\x01\x04\x00", 21),
    ("unknown-len-0", b"\x99\x00\x00\x00", 21),
    ("unknown-len-past-end", b"\x01\x94\x09\x00", 22),
    ("no-length-byte", b"\x01\x01\x01\x07", 24),
    ("ts-len-2", b"\x01\x01\x44\x02", 23),
    ("ts-len-3", b"\x44\x03\x05\x00", 21),
    ("ts-ptr-4", b"\x44\x08\x04\x00" + bytes(4), 21),  # FreeBSD names the length byte
    ("ts-flag-2", b"\x44\x08\x05\x02" + bytes(4), 23),
    ("ts-flag-15", b"\x44\x08\x05\x0f" + bytes(4), 23),
    ("ts-addr-no-room", b"\x44\x08\x05\x01" + bytes(4), 22),
    ("ts-prespec-no-room", b"\x44\x0c\x09\x03" + bytes(8), 22),
    ("ts-overflow-wraps", b"\x44\x08\x09\xf0" + bytes(4), 22),
    ("lsrr-len-2", b"\x01\x01\x83\x02", 23),
    ("ssrr-ptr-3", b"\x89\x07\x03" + bytes(4), 22),
    ("good-then-bad", b"\x94\x04\x00\x00\x07\x07\x03" + bytes(4), 26),  # alert, bad RR
]


@pytest.mark.parametrize("where", ["local", "forwarded"])
@pytest.mark.parametrize(("options", "pointer"), [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_option_gets_parameter_problem(options, pointer, where):
    c = Chain()
    pkt = c.packet(R if where == "local" else B, options)
    st = c.r.ip.stats
    before = (st.badoptions, st.forward, st.delivered)
    c.inject(pkt)
    assert (st.badoptions, st.forward, st.delivered) == (before[0] + 1, *before[1:])
    assert c.k.sched.errors == 0
    err = c.icmp_at_a()
    assert err is not None and err.src == R
    assert err[ICMP].type == 12 and err[ICMP].code == 0 and err[ICMP].ptr == pointer
    hlen = (pkt[0] & 0x0F) * 4
    assert raw(err[ICMP])[8:] == pkt[:hlen + 8]  # the offending header, quoted whole
    with pytest.raises(TimeoutError):
        c.at_b.recv(2000)


def test_netstat_counts_bad_options():
    from vimage.netinet.ip import STAT_LINES

    assert dict(STAT_LINES)["badoptions"] == "{} with bad options"


@pytest.mark.parametrize(("dst", "options"), [
    (B, b"\x83\x07\x04" + ipv4.aton("10.0.1.2").to_bytes(4, "big")),  # LSRR, not for r
    (B, b"\x89\x07\x04" + ipv4.aton("10.0.1.2").to_bytes(4, "big")),  # SSRR, not for r
    (R, b"\x83\x07\x04" + ipv4.aton("10.0.1.2").to_bytes(4, "big")),  # for r, hops left
    (R, b"\x83\x07\x08" + ipv4.aton("10.0.1.2").to_bytes(4, "big")),  # for r, used up
], ids=["lsrr-through", "ssrr-through", "lsrr-to-router", "lsrr-used-up"])
def test_router_refuses_source_routes(dst, options):
    """net.inet.ip.sourceroute=0: a router answers source route failed (ip_dooptions)."""
    c = Chain()
    c.inject(c.packet(dst, options))
    err = c.icmp_at_a()
    assert err is not None and err[ICMP].type == 3 and err[ICMP].code == 5
    assert c.r.ip.stats.badoptions == 1 and c.r.ip.stats.forward == 0


def test_host_drops_source_route_silently_unless_used_up():
    """Not a router: a source route with hops left is dropped as not forwardable, one
    whose route is used up (accept_sourceroute=0) is refused with source route failed."""
    c = Chain()
    b_in = c.b.ifaces["epair1b"]
    hop = ipv4.aton("10.0.9.9").to_bytes(4, "big")
    c.inject(c.packet(B, b"\x83\x07\x04" + hop), into=b_in)
    assert c.b.ip.stats.cantforward == 1 and c.b.ip.stats.badoptions == 0
    assert c.icmp_at_a() is None
    c.inject(c.packet(B, b"\x83\x07\x08" + hop), into=b_in)
    assert c.b.ip.stats.badoptions == 1
    err = c.icmp_at_a()
    assert err is not None and err.src == B and err[ICMP].type == 3 and err[ICMP].code == 5


def test_prespecified_timestamp_is_stamped_only_for_our_address():
    c = Chain()
    slots = ipv4.aton(R).to_bytes(4, "big") + bytes(4) + ipv4.aton(B).to_bytes(4, "big")
    c.inject(c.packet(B, b"\x44\x14\x05\x03" + slots + bytes(4)))
    got = c.at_b.recv(2000)
    ts = got[20:40]
    assert ts[4:8] == ipv4.aton(R).to_bytes(4, "big")
    assert ts[8:12] != bytes(4)  # r's time
    # b's turn: r did not stamp it, b did as it took the packet (ip_dooptions on input)
    assert ts[2] == 21 and ts[16:20] != bytes(4)
    assert IP(got).chksum == IP(raw(IP(got))).chksum


def test_unknown_and_full_options_are_forwarded():
    c = Chain()
    full_rr = b"\x07\x07\x08" + bytes(4) + b"\x00"  # no room left: passed on unchanged
    alert = b"\x94\x04\x00\x00"
    c.inject(c.packet(B, alert + full_rr))
    got = c.at_b.recv(2000)
    assert got[20:32] == alert + full_rr and got[8] == 63
    assert c.r.ip.stats.badoptions == 0


# -- fuzzing the option walk on the forwarding path ------------------------------------------
_KINDS = st.sampled_from([0, 1, 7, 68, 131, 137, 0x94, 0x82, 0x99, 255])


@st.composite
def _options(draw) -> bytes:
    """Option lists near the edges: known kinds with any length, pointer and flag bytes,
    each possibly cut short (what follows the last one is EOL padding)."""
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(_KINDS)
        if kind in (0, 1):
            out += bytes((kind,))
            continue
        length = draw(st.one_of(st.integers(0, 12), st.integers(0, 255)))  # nearly any
        ptr = draw(st.one_of(st.integers(0, 13), st.integers(0, 255)))
        flags = draw(st.integers(0, 255))
        option = bytes((kind, length, ptr, flags)) + draw(st.binary(max_size=10))
        out += option[:draw(st.integers(1, len(option)))]  # cut anywhere, even to 1 byte
    return out[:40]


_KNOWN_BAD = st.sampled_from([case[1] for case in MALFORMED])


@settings(max_examples=500)
@given(options=st.one_of(_options(), st.binary(max_size=40),
                         st.tuples(_options(), _KNOWN_BAD).map(lambda t: (t[0] + t[1])[-40:])),
       dst=st.sampled_from([B, R, R_OUT]))
@example(options=b"\x01\x01\x07\x02", dst=B)  # raised IndexError while stamping
@example(options=b"\x44\x02", dst=B)
def test_fuzzed_options_never_raise_and_are_always_accounted(fuzz_chain, options, dst):
    c = fuzz_chain
    st_ = c.r.ip.stats
    before = (st_.forward, st_.badoptions + st_.cantforward + st_.delivered)
    b_in = (c.b.ip.stats.total, c.b.ip.stats.badsum + c.b.ip.stats.badhlen)
    c.inject(c.packet(dst, options, proto=17), wait=0)
    assert c.k.sched.errors == 0
    # each packet is forwarded, delivered, or counted as dropped, exactly once
    forwarded = st_.forward - before[0]
    assert forwarded + st_.badoptions + st_.cantforward + st_.delivered == before[1] + 1
    # what r forwards reaches b whole: header checksum and lengths intact
    assert c.b.ip.stats.total - b_in[0] == forwarded
    assert c.b.ip.stats.badsum + c.b.ip.stats.badhlen == b_in[1]


@pytest.fixture(scope="module")
def fuzz_chain() -> Chain:
    """One chain for the whole property run (building one per example is the slow part);
    b drops datagrams to closed ports silently, so nothing comes back through r."""
    chain = Chain(seed=5)
    chain.b.sysctl("net.inet.udp.blackhole", 1)
    return chain
