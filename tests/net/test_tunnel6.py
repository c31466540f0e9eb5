"""gif(4) and gre(4) over IPv6 and carrying IPv6 (RFC 2473, RFC 4213, RFC 2784):
ifconfig syntax and output, every inner/outer combination checked with scapy, the
input entries through the protocol switch, loops, and what destroying leaves."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import GRE, Ether

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire.ipv6 import aton as _aton

OUTER4 = ("192.0.2.1", "192.0.2.2")
OUTER6 = ("2001:db8::1", "2001:db8::2")
INNER4 = ("10.0.0.1", "10.0.0.2")
INNER6 = ("2001:db8:1::1", "2001:db8:1::2")


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line}: {result.output}"
    return result.output


def sites(kind: str, outer: tuple[str, str], extra: str = "") -> tuple[Kernel, Vnet, Vnet]:
    """Vnets a and b joined by an epair with IPv4 and IPv6 outer addresses, a `kind`
    tunnel between the `outer` pair carrying 10.0.0.1/.2 and 2001:db8:1::1/::2."""
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    ok(a, "ifconfig epair0a inet6 2001:db8::1/64")
    ok(b, "ifconfig epair0b inet6 2001:db8::2/64")
    kernel.run(3)  # DAD
    for vnet, (here, there), (me4, peer4), (me6, peer6) in (
            (a, outer, INNER4, INNER6), (b, outer[::-1], INNER4[::-1], INNER6[::-1])):
        ok(vnet, f"ifconfig {kind} create")
        ok(vnet, f"ifconfig {kind}0 tunnel {here} {there} {extra}")
        ok(vnet, f"ifconfig {kind}0 inet {me4} {peer4}")
        ok(vnet, f"ifconfig {kind}0 inet6 {me6} {peer6} prefixlen 128")
    kernel.run(1)
    return kernel, a, b


def _ping_both(kernel: Kernel, a: Vnet) -> list[Ether]:
    """Ping and ping6 across the tunnel; the outer frames seen on a's epair."""
    cap = open_capture(a.ifaces["epair0a"], keep=True)
    assert " 0.0% packet loss" in ok(a, f"ping -c 2 {INNER4[1]}")
    assert " 0.0% packet loss" in ok(a, f"ping6 -c 2 {INNER6[1]}")
    cap.close()
    assert kernel.sched.errors == 0
    frames = [Ether(f) for _, f in cap.packets]
    return [f for f in frames if (IP in f and f[IP].proto in (4, 41, 47))
            or (IPv6 in f and f[IPv6].nh in (4, 41, 47))]


def test_ifconfig_shows_inet6_tunnel_and_point_to_point_inet6_address():
    _, a, _ = sites("gif", OUTER6)
    assert ok(a, "ifconfig gif0").splitlines() == [
        "gif0: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> metric 0 mtu 1280",
        "\toptions=600703<RXCSUM,TXCSUM,TSO4,TSO6,LRO,RXCSUM_IPV6,TXCSUM_IPV6>",  # offloads
        "\ttunnel inet6 2001:db8::1 --> 2001:db8::2",
        "\tinet 10.0.0.1 --> 10.0.0.2 netmask 0xffffffff",
        "\tinet6 2001:db8:1::1 --> 2001:db8:1::2 prefixlen 128",
        "\tgroups: gif",
        "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>",
    ]
    routes = ok(a, "netstat -rn -f inet6").splitlines()
    assert any(line.split()[0] == "2001:db8:1::2" and line.split()[-1] == "gif0"
               for line in routes if line.strip())


def test_gif_over_ipv4_carries_ipv6_as_protocol_41():
    kernel, a, b = sites("gif", OUTER4)
    frames = _ping_both(kernel, a)
    v6 = [f for f in frames if IP in f and f[IP].proto == 41]
    v4 = [f for f in frames if IP in f and f[IP].proto == 4]
    assert len(v6) == 4 and len(v4) == 4
    inner = IPv6(bytes(v6[0][IP].payload))
    assert {inner.src, inner.dst} == set(INNER6) and ICMPv6EchoRequest in inner
    assert v6[0][IP].ttl == 30 and {v6[0][IP].src, v6[0][IP].dst} == set(OUTER4)
    assert b.ifaces["gif0"].ierrors == 0


def test_gif_over_ipv6_carries_ipv4_as_next_header_4_and_ipv6_as_41():
    kernel, a, b = sites("gif", OUTER6)
    frames = _ping_both(kernel, a)
    assert all(IPv6 in f and {f[IPv6].src, f[IPv6].dst} == set(OUTER6) for f in frames)
    v4 = [f for f in frames if f[IPv6].nh == 4]
    v6 = [f for f in frames if f[IPv6].nh == 41]
    assert len(v4) == 4 and len(v6) == 4
    assert v4[0][IPv6].hlim == 30  # net.inet.ip.gifttl is the outer hop limit
    assert ICMP in v4[0] and {v4[0][IP].src, v4[0][IP].dst} == set(INNER4)
    inner = IPv6(bytes(v6[0][IPv6].payload))
    assert {inner.src, inner.dst} == set(INNER6)
    assert b.ifaces["gif0"].ipackets == 4 and b.ifaces["gif0"].ierrors == 0


@pytest.mark.parametrize("outer", [OUTER4, OUTER6], ids=["over-ipv4", "over-ipv6"])
def test_gre_carries_both_families_by_protocol_type(outer):
    kernel, a, b = sites("gre", outer, "grekey 5")
    frames = _ping_both(kernel, a)
    assert len(frames) == 8
    types = sorted(f[GRE].proto for f in frames)
    assert types == [0x0800] * 4 + [0x86DD] * 4
    assert all(f[GRE].key == 5 for f in frames)
    outer_v6 = [f for f in frames if IPv6 in f and f[IPv6].nh == 47]
    assert len(outer_v6) == (8 if outer == OUTER6 else 0)
    assert b.ifaces["gre0"].ierrors == 0


def test_tcp_across_gif_over_ipv6():
    kernel, a, b = sites("gif", OUTER6)
    srv = b.socket(2, 1)
    srv.bind(("", 5001))
    srv.listen(1)
    cli = a.socket(2, 1)
    cli.connect((INNER4[1], 5001))
    conn, _ = srv.accept()
    data = bytes(range(256)) * 200
    cli.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        got += conn.recv(1 << 20)
    assert bytes(got) == data
    for s in (cli, conn, srv):
        s.close()
    assert kernel.sched.errors == 0


def test_unmatched_ipv6_tunnel_packet_is_counted_and_answered_with_parameter_problem():
    kernel, a, b = sites("gif", OUTER6)
    ok(b, "ifconfig gif0 -tunnel")
    assert "100.0% packet loss" in a.cmd(f"ping6 -c 1 {INNER6[1]}").output
    assert b.gif.stats.nomatch == 1
    assert b.icmp6.stats.outhist[4] == 1  # parameter problem: unrecognised next header
    assert kernel.sched.errors == 0


def test_truncated_inner_packet_is_an_input_error():
    kernel, a, b = sites("gif", OUTER6)
    with kernel.sched.cond:  # an IPv6 header cut short inside a matching outer packet
        a.ip6.output(41, _aton(OUTER6[0]), _aton(OUTER6[1]), b"\x60" + bytes(10))
    kernel.run(1)
    assert b.ifaces["gif0"].ierrors == 1 and kernel.sched.errors == 0


def test_outer_ipv6_route_through_the_tunnel_itself_is_a_loop():
    kernel, a, _ = sites("gif", OUTER6)
    ok(a, "ifconfig gif0 -tunnel")
    ok(a, f"ifconfig gif0 tunnel {OUTER6[0]} {INNER6[1]}")  # outer destination behind itself
    ok(a, "sysctl net.link.gif.max_nesting=8")
    assert "100.0% packet loss" in a.cmd(f"ping6 -c 2 {INNER6[1]}").output
    assert a.gif.stats.loops == 2 and a.ifaces["gif0"].oerrors == 2
    assert kernel.sched.errors == 0


def test_ifconfig_refuses_mixed_families_and_a_prefix_length_other_than_128():
    _, a, _ = sites("gif", OUTER6)
    ok(a, "ifconfig gif1 create")
    result = a.cmd(f"ifconfig gif1 tunnel {OUTER4[0]} {OUTER6[1]}")
    assert result.status == 1 and "families do not match" in result.output
    result = a.cmd("ifconfig gif1 inet6 2001:db8:2::1 2001:db8:2::2 prefixlen 64")
    assert result.status == 1 and "SIOCAIFADDR_IN6" in result.output
    result = a.cmd(f"ifconfig gif1 tunnel {OUTER6[0]} {OUTER6[1]}")  # gif0 has those
    assert result.status == 1 and "SIOCSIFPHYADDR_IN6" in result.output


def test_deleting_the_inet6_point_to_point_address_removes_its_peer_route():
    _, a, _ = sites("gif", OUTER6)
    ok(a, f"ifconfig gif0 inet6 {INNER6[0]} delete")
    out = ok(a, "ifconfig gif0")
    assert INNER6[0] not in out and "-->" in out  # the tunnel line stays
    assert INNER6[1] not in ok(a, "netstat -rn -f inet6")


def test_destroying_the_vnet_leaves_nothing_behind():
    kernel, a, b = sites("gre", OUTER6)
    ok(a, f"ping6 -c 1 {INNER6[1]}")
    gre = a.ifaces["gre0"]
    kernel.destroy("a")
    assert kernel.sched.pending_timers(a) == 0
    assert not a.gre.softcs and gre.dst == 0 and not gre.peers6
    assert "100.0% packet loss" in b.cmd(f"ping6 -c 1 {INNER6[0]}").output
    assert kernel.sched.errors == 0


def test_only_input_entry_points_may_share_a_state_slot():
    from socket import AF_INET6

    from vimage.net.if_gif import GifState, vnet_attach
    from vimage.protosw import Protocol

    kernel = Kernel(clock="virtual")
    extra = Protocol("gif-test", 90, "gif", domain=AF_INET6, protocol=250,
                     input=GifState.input6_6in6)
    kernel.register(extra)  # another entry point into vnet.gif: accepted
    v = kernel.create("v")
    v.ip6.unclaimed(250)  # bind the tables
    assert v.inputs[AF_INET6][250].__self__ is v.gif
    with pytest.raises(ValueError, match="already registered"):
        kernel.register(Protocol("gif-test2", 90, "gif", vnet_attach, domain=AF_INET6,
                                 protocol=251, input=GifState.input6_6in6))
