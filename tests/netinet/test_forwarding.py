"""Forwarding through a chain of router vnets, TTL, ICMP errors and their rate limit."""

import pytest
from scapy.all import ICMP, IP
from scapy.layers.inet import UDPerror

from vimage.kernel import Kernel
from vimage.topo import router_chain
from vimage.wire import icmp as wicmp


def _echo(sock, dst, seq=1, ttl=None):
    from vimage.socket.socket import IP_TTL, IPPROTO_IP

    if ttl is not None:
        sock.setsockopt(IPPROTO_IP, IP_TTL, ttl)
    sock.sendto(wicmp.build_echo(wicmp.ECHO, 0x1234, seq, b"payload"), (dst, 0))


def test_echo_through_chain_of_routers():
    k = Kernel(clock="virtual", seed=4)
    nodes = router_chain(k, 5)
    a = nodes[0]
    s = a.socket(2, 3, 1)
    s.settimeout(5)
    _echo(s, "10.0.5.2")
    reply = IP(s.recv(2000))
    assert reply.src == "10.0.5.2" and reply[ICMP].type == 0
    assert reply[ICMP].id == 0x1234 and bytes(reply[ICMP].payload) == b"payload"
    assert reply.ttl == 64 - 5  # five routers on the way back
    assert all(r.ip.stats.forward == 2 for r in nodes[1:-1])


def test_ttl_exceeded_names_each_router():
    k = Kernel(clock="virtual", seed=4)
    nodes = router_chain(k, 3)
    a = nodes[0]
    s = a.socket(2, 3, 1)
    s.settimeout(5)
    hops = []
    for ttl in (1, 2, 3):
        _echo(s, "10.0.3.2", seq=ttl, ttl=ttl)
        err = IP(s.recv(2000))
        assert err[ICMP].type == 11 and err[ICMP].code == 0
        # the quoted header is ours: same destination, id and the sequence we sent
        quoted = err[ICMP].payload
        assert quoted.dst == "10.0.3.2"
        hops.append(err.src)
    assert hops == ["10.0.0.2", "10.0.1.2", "10.0.2.2"]


def test_forwarding_is_off_by_default():
    k = Kernel(clock="virtual", seed=4)
    a, r, b = router_chain(k, 1)
    r.sysctl("net.inet.ip.forwarding", 0)
    rx = b.socket(2, 2)
    rx.bind(("", 9))
    rx.settimeout(3)
    a.socket(2, 2).sendto(b"x", ("10.0.1.2", 9))
    with pytest.raises(TimeoutError):
        rx.recv(10)
    assert r.ip.stats.cantforward == 1
    assert k.create("fresh").sysctl("net.inet.ip.forwarding") == 0


def test_port_unreachable_wire_format():
    k = Kernel(clock="virtual", seed=4)
    a, b = router_chain(k, 0)
    icmp = a.socket(2, 3, 1)
    icmp.settimeout(2)
    a.socket(2, 2).sendto(b"nobody", ("10.0.0.2", 4321))
    err = IP(icmp.recv(2000))
    assert err[ICMP].type == 3 and err[ICMP].code == 3
    inner = err[ICMP].payload
    assert inner.dst == "10.0.0.2" and inner[UDPerror].dport == 4321
    # scapy agrees with our checksums
    raw_bytes = bytes(err)
    again = IP(raw_bytes)
    del again.chksum
    del again[ICMP].chksum
    assert IP(bytes(again)).chksum == err.chksum
    assert IP(bytes(again))[ICMP].chksum == err[ICMP].chksum


def test_icmp_error_rate_limit():
    k = Kernel(clock="virtual", seed=4)
    a, b = router_chain(k, 0)
    b.sysctl("net.inet.icmp.icmplim", 10)
    tx = a.socket(2, 2)
    tx.sendto(b"x", ("10.0.0.2", 4321))  # resolve ARP first (its hold queue is 16)
    k.run(1.5)
    b.icmp.stats.outhist[3] = 0
    for _ in range(50):
        tx.sendto(b"x", ("10.0.0.2", 4321))
    k.run(0.5)
    assert b.icmp.stats.outhist[3] == 10
    assert b.icmp.stats.ratelimited == 40
    k.run(1)  # a new second: the budget is back
    tx.sendto(b"x", ("10.0.0.2", 4321))
    k.run(0.1)
    assert b.icmp.stats.outhist[3] == 11


def test_no_icmp_error_about_icmp_error():
    from vimage.netinet import icmp as icmp_mod

    k = Kernel(clock="virtual", seed=4)
    a, b = router_chain(k, 0)
    err = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=3, code=3) / (b"x" * 28))
    icmp_mod.error(b, err, wicmp.UNREACH, wicmp.UNREACH_PROTOCOL)
    assert b.icmp.stats.oldicmp == 1


def _unreach_code(a, dst):
    icmp = a.socket(2, 3, 1)
    icmp.settimeout(2)
    a.socket(2, 2).sendto(b"x", (dst, 9))
    pkt = icmp.recv(2000)
    hl = (pkt[0] & 15) * 4
    assert pkt[hl] == wicmp.UNREACH
    return pkt[hl + 1]


def test_router_answers_net_and_host_unreachable():
    from vimage.net.route import RTF_BLACKHOLE, RTF_REJECT, RTF_STATIC, Route
    from vimage.wire import ipv4

    k = Kernel(clock="virtual", seed=4)
    a, r, b = router_chain(k, 1)
    r.rt.delete(0, 0)  # r loses its default route: 192.0.2.1 is nowhere
    lo = r.ifaces["lo0"]
    r.rt.add(Route(ipv4.aton("198.51.100.0"), 24, lo, RTF_REJECT | RTF_STATIC,
                   gateway=ipv4.aton("127.0.0.1")))
    r.rt.add(Route(ipv4.aton("203.0.113.0"), 24, lo, RTF_BLACKHOLE | RTF_STATIC,
                   gateway=ipv4.aton("127.0.0.1")))
    assert _unreach_code(a, "192.0.2.1") == wicmp.UNREACH_NET
    assert _unreach_code(a, "198.51.100.1") == wicmp.UNREACH_HOST
    icmp = a.socket(2, 3, 1)
    icmp.settimeout(2)
    a.socket(2, 2).sendto(b"x", ("203.0.113.1", 9))
    with pytest.raises(TimeoutError):
        icmp.recv(2000)  # blackholed: silently dropped
    assert r.ip.stats.noroute == 1 and r.ip.stats.cantforward == 3


def _through_chain(options, routers=2):
    """Send an ICMP echo with IP `options` across a chain; what reaches b (or a) is returned."""
    from scapy.all import IP as SIP
    from scapy.all import raw

    k = Kernel(clock="virtual", seed=8)
    nodes = router_chain(k, routers)
    a, b = nodes[0], nodes[-1]
    at_b = b.socket(2, 3, 1)
    at_b.settimeout(2)
    at_a = a.socket(2, 3, 1)
    at_a.settimeout(2)
    pkt = SIP(src="10.0.0.1", dst=f"10.0.{routers}.2", options=options) / ICMP(id=1, seq=1)
    tx = a.socket(2, 3, 255)  # IPPROTO_RAW: we give the header
    tx.sendto(raw(pkt), (f"10.0.{routers}.2", 0))
    return k, at_a, at_b


def test_routers_fill_in_record_route():
    from scapy.layers.inet import IPOption_RR

    k, at_a, at_b = _through_chain([IPOption_RR(routers=["0.0.0.0"] * 4)])
    got = IP(at_b.recv(2000))
    rr = got.options[0]
    # each router records the address of the interface it sends on, then moves the pointer;
    # the destination records the address it was sent to (ip_dooptions before delivery)
    assert rr.routers[:3] == ["10.0.1.1", "10.0.2.1", "10.0.2.2"] and rr.pointer == 16
    assert got.ttl == 62 and IP(bytes(got)).chksum == got.chksum


def test_routers_fill_in_timestamps_and_count_overflow():
    from scapy.layers.inet import IPOption_Timestamp

    opt = IPOption_Timestamp(flg=1, pointer=5, length=12, timestamp=0)  # room for one pair
    k, at_a, at_b = _through_chain([opt])
    raw_pkt = at_b.recv(2000)
    hl = (raw_pkt[0] & 15) * 4
    ts = raw_pkt[20:hl]
    assert ts[0] == 68 and ts[2] == 13  # one address/time pair written
    assert ts[4:8] == bytes((10, 0, 1, 1))
    # the second router found no room, nor did the destination: overflow counted twice
    assert ts[3] >> 4 == 2


def test_malformed_record_route_gets_parameter_problem():
    from scapy.layers.inet import IPOption_RR

    k, at_a, at_b = _through_chain([IPOption_RR(pointer=2, routers=["0.0.0.0"])])
    err = IP(at_a.recv(2000))
    assert err[ICMP].type == 12 and err[ICMP].ptr == 22  # points at the bad pointer byte


def test_forwarded_checksum_equals_full_recomputation_at_the_wrap():
    """A header whose checksum is 0xFEFF: after TTL - 1 the sum is exactly zero. RFC 1624
    eqn. 3 (and a full recomputation) give 0x0000 there; RFC 1141's update gave 0xFFFF."""
    from vimage.net.bpf import open_capture
    from vimage.wire.checksum import checksum, update16
    from vimage.wire.ipv4 import HEADER, aton

    k = Kernel(clock="virtual", seed=3)
    a, _r, b = router_chain(k, 1)
    src, dst = aton("10.0.0.1"), aton("10.0.1.2")
    ident = next(i for i in range(1, 0x10000)
                 if checksum(HEADER.pack(0x45, 0, 21, i, 0, 64, 253, 0, src, dst)) == 0xFEFF)
    seen = open_capture(b.ifaces["epair1b"], filter="ip proto 253")
    a.socket(2, 3, 255).sendto(HEADER.pack(0x45, 0, 21, ident, 0, 64, 253, 0, src, dst) + b"x",
                               ("10.0.1.2", 0))
    k.run(1)
    (_, frame), = seen.packets
    header = frame[14:34]
    assert header[8] == 63 and header[10:12] == b"\x00\x00"
    assert checksum(header[:10] + b"\x00\x00" + header[12:]) == 0
    assert update16(0xFEFF, 64 << 8 | 253, 63 << 8 | 253) == 0
