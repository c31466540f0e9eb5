"""In-kernel NAT (vimage.netpfil.nat) between vnets: an inside host h (10.0.0.2) behind a
router r (lan 10.0.0.1, wan 192.0.2.1) translating with `nat 1` on its wan interface,
and an outside server s (192.0.2.7) that has no route back to 10.0.0.0/8, so only
translated traffic can be answered. `vimage.testing.nat_via` adds the ipfw rules
`ipfw add 100 nat 1 ip from any to any via WAN` and `ipfw add 65000 allow ip from any to
any`."""

from __future__ import annotations

import errno
import socket

import pytest
from scapy.all import ICMP, IP, TCP, UDP, raw
from scapy.layers.inet import UDPerror

from vimage.kernel import Kernel
from vimage.netpfil.nat import command
from vimage.testing import nat_via
from vimage.topo import add_route, connect

ALIAS = "192.0.2.1"
SERVER = "192.0.2.7"
INSIDE = "10.0.0.2"


class World:
    def __init__(self, config: str = f"ip {ALIAS}", seed: int = 1) -> None:
        self.k = Kernel(clock="virtual", seed=seed)
        self.h, self.r, self.s = (self.k.create(n) for n in ("h", "r", "s"))
        connect(self.h, f"{INSIDE}/24", self.r, "10.0.0.1/24")
        self.wan, _ = connect(self.r, f"{ALIAS}/24", self.s, f"{SERVER}/24")
        add_route(self.h, "default", "10.0.0.1")
        self.r.sysctl("net.inet.ip.forwarding", 1)
        command(self.r, ["nat", "1", "config", *config.split()])
        nat_via(self.r, 1, self.wan.name)
        self.nat = self.r.ipfw_nat.instances[1]

    def udp(self, vnet, port=0):
        sock = vnet.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("", port))
        sock.settimeout(2)
        return sock


def test_udp_out_and_reply_the_server_sees_only_the_alias():
    w = World()
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"ping", (SERVER, 7000))
    data, (peer, port) = srv.recvfrom(100)
    assert data == b"ping" and peer == ALIAS and port != 5000 and 0x8000 <= port <= 0xFFFF
    srv.sendto(b"pong", (peer, port))
    assert cli.recvfrom(100) == (b"pong", (SERVER, 7000))
    assert w.nat.stats.translated_out == 1 and w.nat.stats.translated_in == 1
    # same seed, same alias port: ports come from the instance's keyed generator
    w2 = World()
    srv2, cli2 = w2.udp(w2.s, 7000), w2.udp(w2.h, 5000)
    cli2.sendto(b"ping", (SERVER, 7000))
    assert srv2.recvfrom(100)[1] == (ALIAS, port)


def test_same_ports_keeps_the_port_while_free():
    w = World(f"ip {ALIAS} same_ports")
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"x", (SERVER, 7000))
    assert srv.recvfrom(10)[1] == (ALIAS, 5000)


def test_tcp_connection_through_nat():
    w = World()
    lsn = w.s.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.bind(("", 80))
    lsn.listen(4)
    cli = w.h.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((SERVER, 80))
    conn, (peer, _) = lsn.accept()
    assert peer == ALIAS
    cli.sendall(b"GET /\r\n")
    w.k.run(0.5)
    assert conn.recv(100) == b"GET /\r\n"
    conn.sendall(b"hello")
    w.k.run(0.5)
    assert cli.recv(100) == b"hello"
    (link,) = w.nat.out.values()
    assert link.timeout == 86400  # established both ways: libalias TCP_EXPIRE_CONNECTED


def test_icmp_echo_through_nat_translates_the_id():
    w = World()
    res = w.h.cmd(f"ping -c 2 {SERVER}")
    assert res.status == 0, res.output
    assert "2 packets received" in res.output
    (link,) = w.nat.out.values()
    assert link.proto == 1 and link.aaddr == 0xC0000201 and link.aport != link.lport


def test_redirect_port_reaches_a_server_inside():
    w = World(f"ip {ALIAS} redirect_port tcp {INSIDE}:80 8080")
    lsn = w.h.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.bind(("", 80))
    lsn.listen(4)
    cli = w.s.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((ALIAS, 8080))
    conn, (peer, _) = lsn.accept()
    assert peer == SERVER and conn.getsockname() == (INSIDE, 80)
    conn.sendall(b"welcome")
    w.k.run(0.5)
    assert cli.recv(100) == b"welcome"
    assert cli.getpeername() == (ALIAS, 8080)


def test_redirect_addr_is_static_nat_both_ways():
    w = World(f"ip {ALIAS} redirect_addr {INSIDE} 192.0.2.50")
    w.wan.add_addr("192.0.2.50/32")  # r answers ARP for the public address
    srv, inside = w.udp(w.s, 7000), w.udp(w.h, 9000)
    srv.sendto(b"in", ("192.0.2.50", 9000))
    assert inside.recvfrom(10) == (b"in", (SERVER, 7000))
    inside.sendto(b"back", (SERVER, 7000))
    assert srv.recvfrom(10) == (b"back", ("192.0.2.50", 9000))
    other = w.udp(w.h, 9001)  # a new flow from the host leaves with its public address
    other.sendto(b"new", (SERVER, 7000))
    assert srv.recvfrom(10)[1][0] == "192.0.2.50"


def test_a_server_on_the_nat_host_itself_answers_from_its_own_port():
    """An unknown incoming flow gets a link to itself (libalias's FindLinkIn with create),
    so the router's reply keeps port 22 even without same_ports."""
    w = World()
    lsn = w.r.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsn.bind(("", 22))
    lsn.listen(4)
    cli = w.s.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.connect((ALIAS, 22))
    conn, (peer, _) = lsn.accept()
    assert peer == SERVER and cli.getpeername() == (ALIAS, 22)
    conn.sendall(b"SSH-2.0-x\r\n")
    w.k.run(0.5)
    assert cli.recv(100) == b"SSH-2.0-x\r\n"
    (link,) = w.nat.out.values()
    assert (link.laddr, link.lport) == (link.aaddr, link.aport) == (0xC0000201, 22)
    assert w.nat.stats.translated_in == w.nat.stats.translated_out == 0


@pytest.mark.parametrize("deny", [False, True])
def test_deny_in_drops_unknown_incoming_flows(deny):
    w = World(f"ip {ALIAS}" + (" deny_in" if deny else ""))
    local = w.udp(w.r, 4000)  # a socket on the router itself
    probe = w.udp(w.s, 7000)
    probe.sendto(b"knock", (ALIAS, 4000))
    w.k.run(1)
    local.settimeout(0)
    if deny:
        with pytest.raises(BlockingIOError):
            local.recvfrom(10)
        assert w.nat.stats.deny_in == 1
    else:
        assert local.recvfrom(10) == (b"knock", (SERVER, 7000))
        assert w.nat.stats.passed == 1


def test_icmp_port_unreachable_through_nat_reaches_the_inside_socket():
    w = World()
    cli = w.udp(w.h, 5000)
    cli.connect((SERVER, 9))  # nobody listens there: s answers port unreachable
    cli.send(b"x")
    w.k.run(1)
    with pytest.raises(ConnectionRefusedError) as err:
        cli.recv(10)
    assert err.value.errno == errno.ECONNREFUSED
    assert w.s.icmp.stats.outhist[3] == 1


def test_traceroute_through_nat_and_a_ping_of_the_nat_address():
    w = World()
    res = w.h.cmd(f"traceroute -n -q 1 -w 1 {SERVER}")
    assert res.status == 0, res.output
    assert res.output.splitlines()[1:] == [" 1  10.0.0.1  0.000 ms", f" 2  {SERVER}  0.000 ms"]
    # the port unreachable that ends it came back through the NAT, quote rewritten
    assert w.nat.stats.translated_in >= 1
    res = w.s.cmd(f"ping -c 1 {ALIAS}")  # the router answers for itself, untranslated
    assert res.status == 0 and w.nat.stats.passed == 2


def test_udp_link_expires_in_virtual_time():
    w = World()
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"x", (SERVER, 7000))
    srv.recvfrom(10)
    w.k.run(58)
    assert len(w.nat.out) == 1
    w.k.run(3)  # libalias UDP_EXPIRE_TIME: 60 s after the last packet
    assert w.nat.out == {} and w.nat.inn == {} and w.nat.stats.expired == 1
    assert w.nat.timer is None  # nothing left to expire: no timer armed


def test_expiry_follows_the_sysctl():
    w = World()
    assert w.r.sysctl("net.inet.ip.alias.udp_expire", 5) == 5
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"x", (SERVER, 7000))
    srv.recvfrom(10)
    w.k.run(6)
    assert w.nat.out == {}


def test_if_follows_the_interface_address():
    w = World("if WAN")
    command(w.r, ["nat", "1", "config", "if", w.wan.name, "reset"])
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"a", (SERVER, 7000))
    assert srv.recvfrom(10)[1][0] == ALIAS
    w.r.cmd(f"ifconfig {w.wan.name} inet {ALIAS} delete")
    w.wan.add_addr("192.0.2.9/24")
    cli.sendto(b"b", (SERVER, 7000))
    assert srv.recvfrom(10)[1][0] == "192.0.2.9"
    assert all(link.aaddr == 0xC0000209 for link in w.nat.out.values())  # reset flushed


def test_destroying_the_vnet_leaves_no_timer():
    w = World()
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"x", (SERVER, 7000))
    srv.recvfrom(10)
    assert w.nat.timer is not None
    w.k.destroy("r")
    assert w.k.sched.pending_timers(w.r) == 0 and w.nat.out == {}
    w.k.run(100)


# -- the engine on crafted packets: exact fields and checksums (scapy recomputes them) ------
def nat(config: str = f"ip {ALIAS}", seed: int = 1):
    k = Kernel(clock="virtual", seed=seed)
    v = k.create("r")
    command(v, ["nat", "1", "config", *config.split()])
    return k, v


def out(v, pkt):
    res = v.ipfw_nat.translate(1, raw(pkt), None, True)
    return None if res is None else IP(res)


def inn(v, pkt):
    res = v.ipfw_nat.translate(1, raw(pkt), None, False)
    return None if res is None else IP(res)


def assert_checksums(pkt):
    """Every checksum in `pkt` is what scapy computes from scratch."""
    fresh = pkt.copy()
    layer = fresh
    while layer:  # the outer headers; a quote's transport checksum covers bytes not quoted
        if type(layer) in (IP, TCP, UDP, ICMP):
            layer.chksum = None
        layer = layer.payload
    fresh = IP(raw(fresh))
    assert raw(fresh) == raw(pkt)


@pytest.mark.parametrize("l4", [TCP(sport=1234, dport=80, flags="S"),
                                UDP(sport=5353, dport=53) / b"query",
                                ICMP(type=8, id=777, seq=1) / b"abcd"])
def test_rewritten_checksums_match_scapy(l4):
    _, v = nat()
    o = out(v, IP(src=INSIDE, dst=SERVER, id=1) / l4)
    assert o.src == ALIAS
    assert_checksums(o)
    reply = IP(src=SERVER, dst=ALIAS) / l4.__class__(raw(l4))
    if TCP in reply:
        reply[TCP].sport, reply[TCP].dport, reply[TCP].flags = 80, o[TCP].sport, "SA"
    elif UDP in reply:
        reply[UDP].sport, reply[UDP].dport = 53, o[UDP].sport
    else:
        reply[ICMP].type, reply[ICMP].id = 0, o[ICMP].id
    reply.getlayer(1).chksum = None  # a well-formed reply: scapy computes its checksum
    i = inn(v, IP(raw(reply)))
    assert i.dst == INSIDE
    assert_checksums(i)
    if TCP in i:
        assert i[TCP].dport == 1234
    elif UDP in i:
        assert i[UDP].dport == 5353
    else:
        assert i[ICMP].id == 777


def test_udp_without_checksum_stays_without():
    _, v = nat()
    p = IP(raw(IP(src=INSIDE, dst=SERVER) / UDP(sport=1, dport=2) / b"x"))
    p[UDP].chksum = 0
    assert out(v, IP(raw(p)))[UDP].chksum == 0


def test_port_exhaustion_is_counted_and_other_remotes_still_get_ports():
    _, v = nat(f"ip {ALIAS} port_range 40000-40002")
    ports = {out(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=1000 + i, dport=53))[UDP].sport
             for i in range(3)}
    assert ports == {40000, 40001, 40002}
    assert out(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=2000, dport=53)) is None
    inst = v.ipfw_nat.instances[1]
    assert inst.stats.noport == 1
    other = out(v, IP(src=INSIDE, dst="192.0.2.8") / UDP(sport=2000, dport=53))
    assert other[UDP].sport in ports


def test_same_ports_falls_back_when_the_port_is_taken():
    _, v = nat(f"ip {ALIAS} same_ports")
    a = out(v, IP(src="10.0.0.2", dst=SERVER) / TCP(sport=5000, dport=80, flags="S"))
    b = out(v, IP(src="10.0.0.3", dst=SERVER) / TCP(sport=5000, dport=80, flags="S"))
    assert a[TCP].sport == 5000 and b[TCP].sport != 5000
    back = inn(v, IP(src=SERVER, dst=ALIAS) / TCP(sport=80, dport=b[TCP].sport, flags="SA"))
    assert back.dst == "10.0.0.3" and back[TCP].dport == 5000


def test_state_table_limit_refuses_and_counts():
    _, v = nat()
    v.sysctl("net.inet.ip.alias.max_links", 2)
    for i in range(2):
        assert out(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=i + 1, dport=53)) is not None
    assert out(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=9, dport=53)) is None
    assert v.ipfw_nat.instances[1].stats.limit == 1
    # a known flow still passes
    assert out(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=1, dport=53)) is not None


def test_icmp_error_quoting_a_translated_packet_is_rewritten():
    _, v = nat()
    sent = IP(raw(IP(src=INSIDE, dst=SERVER, ttl=1) / UDP(sport=5000, dport=33434) / b"probe"))
    o = out(v, sent)
    # a router past the NAT answers time exceeded, quoting what it got
    err = IP(src="198.51.100.1", dst=ALIAS) / ICMP(type=11, code=0) / raw(o)[:28]
    i = inn(v, IP(raw(err)))
    assert i.dst == INSIDE
    quoted = i[ICMP].payload
    assert quoted.src == INSIDE and quoted.dst == SERVER
    assert quoted[UDPerror].sport == 5000 and quoted[UDPerror].dport == 33434
    assert quoted[UDPerror].chksum == sent[UDP].chksum  # the inside host's own again
    assert_checksums(i)
    qip = IP(raw(quoted)[:20])
    qip.chksum = None
    assert raw(IP(raw(qip)))[:20] == raw(quoted)[:20]  # the quoted header's checksum too


def test_icmp_error_from_inside_about_a_redirected_flow():
    _, v = nat(f"ip {ALIAS} redirect_port udp {INSIDE}:53 53")
    i = inn(v, IP(src=SERVER, dst=ALIAS) / UDP(sport=4444, dport=53) / b"q")
    assert i.dst == INSIDE
    # the inside host refuses it: port unreachable quoting what it received
    err = IP(src=INSIDE, dst=SERVER) / ICMP(type=3, code=3) / raw(i)[:28]
    o = out(v, IP(raw(err)))
    assert o.src == ALIAS
    assert o[ICMP].payload.dst == ALIAS and o[ICMP].payload[UDPerror].dport == 53
    assert_checksums(o)


def test_tcp_link_timeouts_follow_libalias_states():
    k, v = nat()
    inst = v.ipfw_nat.instances[1]
    syn = out(v, IP(src=INSIDE, dst=SERVER) / TCP(sport=5000, dport=80, flags="S"))
    (link,) = inst.out.values()
    assert link.timeout == 300  # TCP_EXPIRE_INITIAL
    aport = syn[TCP].sport
    inn(v, IP(src=SERVER, dst=ALIAS) / TCP(sport=80, dport=aport, flags="SA"))
    assert link.timeout == 86400
    out(v, IP(src=INSIDE, dst=SERVER) / TCP(sport=5000, dport=80, flags="FA"))
    assert link.timeout == 90  # TCP_EXPIRE_SINGLEDEAD
    inn(v, IP(src=SERVER, dst=ALIAS) / TCP(sport=80, dport=aport, flags="FA"))
    assert link.timeout == 10  # TCP_EXPIRE_DEAD
    k.run(11)
    assert inst.out == {}


def test_unreg_only_leaves_public_sources_alone():
    _, v = nat(f"ip {ALIAS} unreg_only")
    assert out(v, IP(src="203.0.113.5", dst=SERVER) / UDP(sport=1, dport=2)).src == \
        "203.0.113.5"
    assert out(v, IP(src="172.16.4.4", dst=SERVER) / UDP(sport=1, dport=2)).src == ALIAS
    assert out(v, IP(src="100.64.0.9", dst=SERVER) / UDP(sport=1, dport=2)).src == \
        "100.64.0.9"
    _, cgn = nat(f"ip {ALIAS} unreg_cgn")
    assert out(cgn, IP(src="100.64.0.9", dst=SERVER) / UDP(sport=1, dport=2)).src == ALIAS


def test_reverse_swaps_the_directions():
    _, v = nat(f"ip {ALIAS} reverse")
    assert inn(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=1, dport=2)).src == ALIAS


def test_redirect_proto_and_other_protocols():
    _, v = nat(f"ip {ALIAS} redirect_proto gre {INSIDE}")
    i = inn(v, IP(src=SERVER, dst=ALIAS, proto=47) / (b"\x00" * 8))
    assert i.dst == INSIDE
    o = out(v, IP(src=INSIDE, dst=SERVER, proto=47) / (b"\x00" * 8))
    assert o.src == ALIAS
    assert_checksums(o)


def test_fragments_follow_the_first_one():
    _, v = nat()
    o = out(v, IP(src=INSIDE, dst=SERVER) / UDP(sport=5000, dport=53) / b"q")
    first = IP(src=SERVER, dst=ALIAS, id=99, flags="MF") / UDP(sport=53, dport=o[UDP].sport,
                                                               len=1000) / (b"a" * 16)
    later = IP(src=SERVER, dst=ALIAS, id=99, frag=3, proto=17) / (b"b" * 16)
    assert inn(v, IP(raw(first))).dst == INSIDE
    assert inn(v, IP(raw(later))).dst == INSIDE
    assert out(v, IP(src=INSIDE, dst=SERVER, id=7, frag=3, proto=17) / (b"c" * 8)).src == ALIAS


def test_malformed_and_unknown_instance_are_counted_drops():
    _, v = nat()
    assert v.ipfw_nat.translate(1, b"\x45\x00", None, True) is None
    assert v.ipfw_nat.translate(1, raw(IP(src=INSIDE, dst=SERVER, proto=6) / b"ab"), None,
                                True) is None
    assert v.ipfw_nat.instances[1].stats.bad == 2
    assert v.ipfw_nat.translate(7, raw(IP() / UDP()), None, True) is None
    assert v.ipfw_nat.stats.noinstance == 1


# -- hostile input: whatever the bytes, translate() returns bytes or None ------------------
SEEDS = [
    raw(IP(src=INSIDE, dst=SERVER) / TCP(sport=5000, dport=80, flags="S")),
    raw(IP(src=SERVER, dst=ALIAS) / UDP(sport=53, dport=40000) / b"x"),
    raw(IP(src=SERVER, dst=ALIAS) / ICMP(type=3, code=3) /
        IP(src=ALIAS, dst=SERVER) / UDP(sport=40000, dport=53)),
    raw(IP(src=INSIDE, dst=SERVER) / ICMP(type=11) / IP(src=SERVER, dst=INSIDE) /
        ICMP(type=8, id=9)),
    raw(IP(src=SERVER, dst="192.0.2.50", options=b"\x01\x01\x01\x00") / TCP(dport=8080)),
]


@pytest.mark.fuzz
def test_translate_survives_any_bytes():
    from hypothesis import given
    from hypothesis import strategies as st

    _, v = nat(f"ip {ALIAS} redirect_port tcp {INSIDE}:80 8080 redirect_addr 10.0.0.3 "
               "192.0.2.50 redirect_proto gre 10.0.0.4")
    translate = v.ipfw_nat.translate

    @given(st.sampled_from(SEEDS), st.integers(0, 80),
           st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), max_size=4),
           st.booleans())
    def check(seed, cut, flips, outgoing):
        pkt = bytearray(seed[:cut] if cut else seed)
        for at, value in flips:
            if at < len(pkt):
                pkt[at] = value
        result = translate(1, bytes(pkt), None, outgoing)
        assert result is None or isinstance(result, bytes)

    check()
