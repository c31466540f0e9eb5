"""ipfw for IPv6: the hooks on IPv6's in and out points, the IPv6 header walk, IPv6
addresses, me6, tables, icmp6types, ext6hdr, frag, ip4/ip6, keep-state, unreach6,
reject/reset, fwd, pipe and the log (FreeBSD ip_fw2.c, ip_fw_pfil.c, ipfw(8); the
pass_block v6 cases of tests/sys/netpfil/common)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from socket import AF_INET6

import pytest
from scapy.layers.inet6 import TCP, UDP, ICMPv6DestUnreach, ICMPv6EchoRequest, IPerror6, IPv6

from vimage.kernel import Kernel
from vimage.net import pfil
from vimage.net.ifnet import Ifnet
from vimage.netinet6 import in6
from vimage.vnet import Vnet
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6
from vimage.wire import tcp as wtcp
from vimage.wire.checksum import checksum

H1, R1, R2, H2 = "2001:db8:1::1", "2001:db8:1::ff", "2001:db8:2::ff", "2001:db8:2::2"
ND = "allow ipv6-icmp from any to any icmp6types 133,134,135,136"


@dataclass
class Net6:
    """h1 - r - h2, dual stack: 2001:db8:1::/64 + 10.0.1.0/24, 2001:db8:2::/64 +
    10.0.2.0/24; r forwards both families."""

    k: Kernel
    h1: Vnet
    r: Vnet
    h2: Vnet
    h1_if: Ifnet
    r1_if: Ifnet
    r2_if: Ifnet
    h2_if: Ifnet

    def fw(self, vnet: Vnet, *lines: str) -> None:
        for line in lines:
            res = vnet.cmd(f"ipfw -q {line}")
            assert res.ok, res.output

    def ping6(self, src: Vnet, dst: str) -> bool:
        return src.cmd(f"ping6 -c 1 {dst}").ok

    def ping(self, src: Vnet, dst: str) -> bool:
        return src.cmd(f"ping -c 1 {dst}").ok


def _link(a: Vnet, a6: str, a4: str, b: Vnet, b6: str, b4: str) -> tuple[Ifnet, Ifnet]:
    ea, eb = a.kernel.epair()
    ea.move_to(a)
    eb.move_to(b)
    for ifp, six, four in ((ea, a6, a4), (eb, b6, b4)):
        ifp.add_addr(six, family=AF_INET6)
        ifp.add_addr(four)
        ifp.set_up(True)
    return ea, eb


def _link_local(ifp: Ifnet) -> str:
    return wip6.ntoa(next(ia.addr for ia in in6.addrs(ifp) if wip6.is_link_local(ia.addr)))


@pytest.fixture
def net() -> Net6:
    k = Kernel(clock="virtual", seed=1)
    h1, r, h2 = k.create("h1"), k.create("r"), k.create("h2")
    h1_if, r1_if = _link(h1, f"{H1}/64", "10.0.1.1/24", r, f"{R1}/64", "10.0.1.2/24")
    r2_if, h2_if = _link(r, f"{R2}/64", "10.0.2.1/24", h2, f"{H2}/64", "10.0.2.2/24")
    r.sysctl("net.inet6.ip6.forwarding", 1)
    r.sysctl("net.inet.ip.forwarding", 1)
    for host, host_if, router_if, gw4 in ((h1, h1_if, r1_if, "10.0.1.2"),
                                          (h2, h2_if, r2_if, "10.0.2.1")):
        for line in (f"route add -inet6 default {_link_local(router_if)}%{host_if.name}",
                     f"route add default {gw4}"):
            res = host.cmd(line)
            assert res.ok, res.output
    k.run(1.5)  # DAD
    return Net6(k, h1, r, h2, h1_if, r1_if, r2_if, h2_if)


class Capture:
    """The IPv6 packets a vnet receives (a pfil hook ahead of any firewall)."""

    def __init__(self, vnet: Vnet) -> None:
        self.pkts: list[bytes] = []
        pfil.link(vnet.ip6, "pfil_in", self.hook, name="capture", order=0)

    def hook(self, pkt: bytes, ifp: Ifnet | None) -> bytes:
        self.pkts.append(bytes(pkt))
        return pkt

    def scapy(self, layer: type) -> list[IPv6]:
        return [p for p in (IPv6(raw) for raw in self.pkts) if p.haslayer(layer)]


def counts(vnet: Vnet, num: int) -> tuple[int, int]:
    """(packets, bytes) of rule `num`."""
    line = vnet.cmd(f"ipfw show {num}").output.splitlines()[0]
    _, pcnt, bcnt = line.split()[:3]
    return int(pcnt), int(bcnt)


# -- pass and block ---------------------------------------------------------------------------
def test_forwarded_echo_blocked_one_way(net: Net6) -> None:
    net.fw(net.r, f"add 10 {ND}",
           f"add 100 deny ipv6-icmp from {H1} to {H2} icmp6types 128",
           "add 200 allow ip6 from any to any")
    assert not net.ping6(net.h1, H2)
    assert counts(net.r, 100)[0] == 1
    assert net.ping6(net.h2, H1)  # request from h2, reply (129) from h1: both pass
    assert counts(net.r, 100)[0] == 1
    assert counts(net.r, 200)[0] >= 2


def test_forwarded_packet_seen_in_and_out(net: Net6) -> None:
    net.fw(net.r, f"add 10 {ND}",
           f"add 100 count ipv6-icmp from {H1} to {H2} in recv {net.r1_if.name}",
           f"add 110 count ipv6-icmp from {H1} to {H2} out xmit {net.r2_if.name}",
           f"add 120 count ipv6-icmp from {H1} to {H2} out recv {net.r1_if.name}",
           "add 200 allow ip6 from any to any")
    assert net.ping6(net.h1, H2)
    assert counts(net.r, 100)[0] == 1
    assert counts(net.r, 110)[0] == 1
    assert counts(net.r, 120)[0] == 1  # the out pass knows where it came in


@pytest.mark.parametrize("rule", ["deny ip6 from any to any in",
                                  "deny ipv6-icmp from any to any out",
                                  f"deny ip from {H1} to me6 in",
                                  f"deny ip from me to {H1} out",
                                  "deny ip from 2001:db8:1::/64 to any",
                                  "deny ip6 from any to any via epair1b"])
def test_pass_block_v6_on_the_host(net: Net6, rule: str) -> None:
    """FreeBSD tests/sys/netpfil/common/pass_block.sh v6: block in or out, then pass."""
    net.fw(net.h2, f"add 10 {ND}", f"add 100 {rule}", "add 200 allow ip from any to any")
    assert not net.ping6(net.h1, H2)
    assert net.ping(net.h1, "10.0.2.2")  # IPv4 is untouched by these rules
    net.fw(net.h2, "delete 100")
    assert net.ping6(net.h1, H2)


def test_ip4_and_ip6_select_the_family(net: Net6) -> None:
    net.fw(net.h2, f"add 10 {ND}", "add 100 deny ip4 from any to any",
           "add 200 allow ip from any to any")
    assert not net.ping(net.h1, "10.0.2.2")
    assert net.ping6(net.h1, H2)
    net.fw(net.h2, "delete 100", "add 100 deny ip from any to any proto ip6")
    assert net.ping(net.h1, "10.0.2.2")
    assert not net.ping6(net.h1, H2)


def test_default_deny_blocks_ipv6_too(net: Net6) -> None:
    net.fw(net.h2, "add 100 allow ip4 from any to any")
    assert net.ping(net.h1, "10.0.2.2")
    assert not net.ping6(net.h1, H2)  # even neighbour discovery dies at rule 65535


def test_me_matches_both_families(net: Net6) -> None:
    net.fw(net.h2, f"add 10 {ND}", "add 100 count ip from any to me in",
           "add 200 allow ip from any to any")
    assert net.ping(net.h1, "10.0.2.2") and net.ping6(net.h1, H2)
    assert counts(net.h2, 100)[0] == 2


# -- tables --------------------------------------------------------------------------------------
def test_table_holds_both_families(net: Net6) -> None:
    net.fw(net.h2, "table T create type addr", "table T add 10.0.1.0/24 1",
           "table T add 2001:db8:1::/64 6", "table T add 2001:db8:1::1 128",
           f"add 10 {ND}", "add 100 deny ip from table(T) to any in",
           "add 200 allow ip from any to any")
    listing = net.h2.cmd("ipfw table T list").output
    assert listing == ("--- table(T), set(0) ---\n10.0.1.0/24 1\n"
                       "2001:db8:1::/64 6\n2001:db8:1::1/128 128\n")
    assert not net.ping6(net.h1, H2)
    assert not net.ping(net.h1, "10.0.2.2")
    net.fw(net.h2, "table T delete 2001:db8:1::/64")
    assert not net.ping6(net.h1, H2)  # the /128 still holds h1
    net.fw(net.h2, "table T delete 2001:db8:1::1/128")
    assert net.ping6(net.h1, H2)
    assert not net.ping(net.h1, "10.0.2.2")


def test_table_value_and_tablearg_for_ipv6(net: Net6) -> None:
    net.fw(net.h2, "table T add 2001:db8:1::/48 300", "table T add 2001:db8:1::/64 400",
           f"add 10 {ND}", "add 20 allow ip from any to any out",
           "add 100 skipto tablearg ip6 from table(T) to any in",
           "add 300 deny ip from any to any", "add 400 allow ip from any to any")
    assert net.ping6(net.h1, H2)  # the longest prefix, /64: value 400, skip to allow
    assert counts(net.h2, 300)[0] == 0
    net.fw(net.h2, "table T delete 2001:db8:1::/64")
    assert not net.ping6(net.h1, H2)  # the /48: 300
    net.fw(net.h2, "add 50 allow ip6 from table(T,400) to any")
    assert counts(net.h2, 50)[0] == 0


# -- keep-state ----------------------------------------------------------------------------------
def test_keep_state_for_an_ipv6_flow(net: Net6) -> None:
    net.fw(net.h2, f"add 10 {ND}", "add 100 check-state",
           "add 200 allow ipv6-icmp from me6 to any out keep-state",
           "add 300 deny ip6 from any to any")
    assert net.ping6(net.h2, H1)  # out makes the state, the reply matches it in
    assert net.h2.sysctl("net.inet.ip.fw.dyn_count") == 1
    listing = net.h2.cmd("ipfw -d show").output
    assert f"STATE ipv6-icmp {H2} 0 <-> {H1} 0 :default" in listing
    net.k.run(10)  # dyn_short_lifetime
    assert net.h2.sysctl("net.inet.ip.fw.dyn_count") == 0
    # ICMPv6 has no ports: while the state lived it held both ways (as FreeBSD's);
    # without it a request coming in finds no rule to let it
    assert not net.ping6(net.h1, H2)
    assert net.h2.sysctl("net.inet.ip.fw.dyn_count") == 0


# -- unreach6, reject, reset ----------------------------------------------------------------------
@pytest.mark.parametrize(("action", "code"), [
    ("unreach6 no-route", 0), ("unreach6 admin-prohib", 1), ("unreach6 address", 3),
    ("unreach6 port", 4), ("unreach6 2", 2),
    ("reject", 0), ("unreach port", 4), ("unreach net", 0), ("unreach filter-prohib", 1)])
def test_unreach6_codes(net: Net6, action: str, code: int) -> None:
    """unreach6 CODE sends that code; reject and unreach map theirs as
    map_icmp_unreach does. Checked with scapy, quoting the echo request."""
    cap = Capture(net.h1)
    net.fw(net.r, f"add 10 {ND}", f"add 100 {action} ipv6-icmp from any to {H2} icmp6types 128",
           "add 200 allow ip from any to any")
    assert not net.ping6(net.h1, H2)
    errors = cap.scapy(ICMPv6DestUnreach)
    assert len(errors) == 1
    err = errors[0]
    assert err[IPv6].src == R1 and err[IPv6].dst == H1
    assert err[ICMPv6DestUnreach].code == code
    inner = err[IPerror6]
    assert inner.src == H1 and inner.dst == H2
    assert err.haslayer(ICMPv6EchoRequest) or bytes(inner.payload)[:1] == b"\x80"
    # scapy recomputes the checksum: ours must be the same
    chk = err[ICMPv6DestUnreach].cksum
    del err[ICMPv6DestUnreach].cksum
    assert IPv6(bytes(err))[ICMPv6DestUnreach].cksum == chk


def test_no_unreach6_for_an_icmpv6_error(net: Net6) -> None:
    """ip_fw2.c: no reject notice about an ICMPv6 error (only about queries)."""
    net.fw(net.r, f"add 10 {ND}", "add 100 unreach6 admin-prohib ipv6-icmp from any to any "
           "icmp6types 1", "add 200 allow ip from any to any")
    cap = Capture(net.h1)
    src, dst = wip6.aton(H1), wip6.aton(H2)
    msg = w6.build(w6.DST_UNREACH, 4, 0, b"\x60" + b"\x00" * 47, src, dst)
    with net.k.sched.cond:
        net.h1.ip6.output(58, src, dst, msg)
    net.k.run(1)
    assert counts(net.r, 100)[0] == 1
    assert cap.scapy(ICMPv6DestUnreach) == []


def _syn(src: int, dst: int, sport: int, dport: int, seq: int) -> bytes:
    seg = bytearray(wtcp.build(sport, dport, seq, 0, wtcp.SYN, 65535, b"", src=0, dst=0))
    seg[16:18] = b"\x00\x00"
    seg[16:18] = checksum(seg, wip6.pseudo_sum(src, dst, len(seg), 6)).to_bytes(2, "big")
    return bytes(seg)


@pytest.mark.parametrize("action", ["reset", "reset6"])
def test_reset_answers_an_ipv6_syn(net: Net6, action: str) -> None:
    net.fw(net.r, f"add 10 {ND}", f"add 100 {action} tcp from any to {H2} dst-port 80",
           "add 200 allow ip from any to any")
    assert net.r.cmd("ipfw show 100").output.split(None, 3)[3].startswith(action)
    cap = Capture(net.h1)
    src, dst = wip6.aton(H1), wip6.aton(H2)
    with net.k.sched.cond:
        net.h1.ip6.output(6, src, dst, _syn(src, dst, 40000, 80, 1000))
    net.k.run(1)
    assert counts(net.r, 100)[0] == 1
    rsts = cap.scapy(TCP)
    assert len(rsts) == 1
    rst = rsts[0]
    assert rst[IPv6].src == H2 and rst[IPv6].dst == H1  # from the address it was sent to
    assert rst[TCP].sport == 80 and rst[TCP].dport == 40000
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001 and rst[TCP].seq == 0
    chk = rst[TCP].chksum
    del rst[TCP].chksum
    assert IPv6(bytes(rst))[TCP].chksum == chk
    # never a RST about a RST
    with net.k.sched.cond:
        seg = bytearray(_syn(src, dst, 40000, 80, 5))
        seg[13] = wtcp.RST
        seg[16:18] = b"\x00\x00"
        seg[16:18] = checksum(seg, wip6.pseudo_sum(src, dst, len(seg), 6)).to_bytes(2, "big")
        net.h1.ip6.output(6, src, dst, bytes(seg))
    net.k.run(1)
    assert len(cap.scapy(TCP)) == 1


# -- the header walk ------------------------------------------------------------------------------
def test_ports_behind_extension_headers(net: Net6) -> None:
    net.fw(net.r, f"add 10 {ND}", "add 100 count udp from any to any dst-port 5353",
           "add 110 count ip6 from any to any ext6hdr dstopt",
           "add 120 count ip6 from any to any ext6hdr hopopt",
           "add 200 allow ip from any to any")
    src, dst = wip6.aton(H1), wip6.aton(H2)
    udp = bytes(UDP(sport=1000, dport=5353) / b"hi")
    dstopts = wip6.build_options_header(17, b"")
    with net.k.sched.cond:
        net.h1.ip6.output(60, src, dst, dstopts + udp)
    net.k.run(1)
    assert counts(net.r, 100)[0] == 2  # found under the destination options, in and out
    assert counts(net.r, 110)[0] == 2
    assert counts(net.r, 120)[0] == 0


def test_frag_and_ext6hdr_frag(net: Net6) -> None:
    net.fw(net.r, f"add 10 {ND}", "add 100 count ip6 from any to any frag",
           "add 110 count ip6 from any to any ext6hdr frag",
           "add 120 count ipv6-icmp from any to any icmp6types 128",
           "add 200 allow ip from any to any")
    net.r.sysctl("net.inet.ip.fw.verbose", 1)
    net.fw(net.r, "add 105 count log ip6 from any to any frag")
    src, dst = wip6.aton(H1), wip6.aton(H2)
    echo = w6.build_echo(w6.ECHO_REQUEST, 7, 1, b"x" * 40, src, dst)
    first = wip6.build_fragment(58, 0, True, 0x1234) + echo[:24]
    second = wip6.build_fragment(58, 24, False, 0x1234) + echo[24:]
    with net.k.sched.cond:
        net.h1.ip6.output(44, src, dst, first)
        net.h1.ip6.output(44, src, dst, second)
    net.k.run(1)
    assert counts(net.r, 100)[0] == 2  # the second fragment, in and out
    assert counts(net.r, 110)[0] == 4  # both, in and out
    assert counts(net.r, 120)[0] == 2  # the first carries the type
    log = net.r.cmd("ipfw log").output
    assert (f"ipfw: 105 Count ICMPv6 [{H1}] [{H2}] in via {net.r1_if.name} "
            f"(frag 00001234:24@24)") in log


# -- dummynet, fwd, nat, divert --------------------------------------------------------------------
def _rtt_ms(output: str) -> float:
    m = re.search(r"time=([0-9.]+) ms", output)
    assert m is not None, output
    return float(m.group(1))


def test_pipe_delays_ipv6_ping(net: Net6) -> None:
    assert net.r.cmd("dnctl pipe 1 config delay 100").ok
    net.fw(net.r, f"add 10 {ND}", f"add 100 pipe 1 ipv6-icmp from {H1} to {H2} icmp6types 128 in",
           "add 200 allow ip from any to any")
    res = net.h1.cmd(f"ping6 -c 1 {H2}")
    assert res.ok, res.output
    assert 100.0 <= _rtt_ms(res.output) < 110.0
    assert counts(net.r, 100)[0] == 1
    net.fw(net.r, "delete 100", f"add 100 pipe 1 ipv6-icmp from {H1} to {H2} icmp6types 128")
    res = net.h1.cmd(f"ping6 -c 1 {H2}")
    assert 200.0 <= _rtt_ms(res.output) < 210.0  # in and out: through the pipe twice
    net.fw(net.r, "delete 100", f"add 100 pipe 1 ipv6-icmp from {H1} to {H2} icmp6types 128 in")
    net.r.sysctl("net.inet.ip.fw.one_pass", 0)  # back into the rules after the pipe
    net.fw(net.r, "add 150 count ipv6-icmp from any to any icmp6types 128 in")
    res = net.h1.cmd(f"ping6 -c 1 {H2}")
    assert res.ok and 100.0 <= _rtt_ms(res.output) < 110.0
    assert counts(net.r, 150)[0] == 1


def test_pipe_on_the_out_pass(net: Net6) -> None:
    assert net.h1.cmd("dnctl pipe 2 config delay 50").ok
    net.fw(net.h1, f"add 10 {ND}", "add 100 pipe 2 ip6 from me6 to any out",
           "add 200 allow ip from any to any")
    res = net.h1.cmd(f"ping6 -c 1 {H2}")
    assert res.ok and 50.0 <= _rtt_ms(res.output) < 60.0


def test_fwd_to_an_ipv6_next_hop(net: Net6) -> None:
    """r has no route to 2001:db8:9::/64; its fwd rule sends the packets to h2, which
    holds 2001:db8:9::9."""
    net.h2.iface("lo0").add_addr("2001:db8:9::9/128", family=AF_INET6)
    net.fw(net.r, f"add 10 {ND}", f"add 100 fwd {H2} ip6 from any to 2001:db8:9::/64 in",
           "add 200 allow ip from any to any")
    assert net.r.cmd("ipfw show 100").output.split(None, 3)[3].startswith(f"fwd {H2} ip6")
    assert net.ping6(net.h1, "2001:db8:9::9")
    assert counts(net.r, 100)[0] == 1
    net.fw(net.r, "delete 100")
    assert not net.ping6(net.h1, "2001:db8:9::9")


def test_fwd_to_a_local_ipv6_address_delivers_here(net: Net6) -> None:
    net.fw(net.r, f"add 10 {ND}", f"add 100 fwd {R1} ipv6-icmp from any to 2001:db8:9::9 in",
           "add 200 allow ip from any to any")
    # r takes it in (transparent proxying) and its ICMPv6 answers the echo
    assert net.ping6(net.h1, "2001:db8:9::9")
    assert counts(net.r, 100)[0] == 1
    assert net.r.icmp6.stats.inhist[w6.ECHO_REQUEST] == 1
    assert net.r.ip6.stats.forward == 0


def test_nat_and_divert_deny_ipv6(net: Net6) -> None:
    """ip_fw2.c: NAT is IPv4 only (an IPv6 packet is denied); vimage's divert too."""
    assert net.r.cmd("ipfw nat 1 config if epair1a").ok
    net.fw(net.r, f"add 10 {ND}", "add 100 nat 1 ip from any to any",
           "add 200 allow ip from any to any")
    assert not net.ping6(net.h1, H2)
    assert net.ping(net.h1, "10.0.2.2")
    net.fw(net.r, "delete 100", "add 100 divert 8668 ip6 from any to any")
    assert not net.ping6(net.h1, H2)
    net.fw(net.r, "delete 100", "add 100 tee 8668 ip6 from any to any")
    assert net.ping6(net.h1, H2)  # tee: the original goes on


# -- the log -------------------------------------------------------------------------------------
def test_log_lines_for_ipv6(net: Net6) -> None:
    net.r.sysctl("net.inet.ip.fw.verbose", 1)
    net.fw(net.r, f"add 10 {ND}", "add 100 deny log ipv6-icmp from any to any icmp6types 128",
           "add 110 allow log udp from any to any",
           "add 120 unreach6 port log ip6 from any to any dst-port 9",
           "add 200 allow ip from any to any")
    net.ping6(net.h1, H2)
    src, dst = wip6.aton(H1), wip6.aton(H2)
    with net.k.sched.cond:
        net.h1.ip6.output(17, src, dst, bytes(UDP(sport=1000, dport=53) / b"q"))
        net.h1.ip6.output(6, src, dst, _syn(src, dst, 1001, 9, 1))
    net.k.run(1)
    log = net.r.cmd("ipfw log").output.splitlines()
    assert f"ipfw: 100 Deny ICMPv6:128.0 [{H1}] [{H2}] in via {net.r1_if.name}" in log
    assert f"ipfw: 110 Accept UDP [{H1}]:1000 [{H2}]:53 in via {net.r1_if.name}" in log
    assert f"ipfw: 110 Accept UDP [{H1}]:1000 [{H2}]:53 out via {net.r2_if.name}" in log
    assert f"ipfw: 120 Unreach 4 TCP [{H1}]:1001 [{H2}]:9 in via {net.r1_if.name}" in log


# -- the grammar -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("rule", "listed"), [
    ("allow ip from 2001:db8::/32 to me6", "allow ip from 2001:db8::/32 to me6"),
    ("deny ip6 from 2001:DB8::1,10.0.0.0/8 to any", "deny ip6 from 2001:db8::1,10.0.0.0/8 to any"),
    ("allow icmp6 from any to any icmp6types 136,135", "allow ipv6-icmp from any to any "
     "icmp6types 135,136"),
    ("count ip from any to any ext6hdr route,frag", "count ip from any to any ext6hdr frag,route"),
    ("count ip from any to any src-ip6 2001:db8::/64", "count ip from any to any src-ip6 "
     "2001:db8::/64"),
    ("count ip from any to any dst-ip6 me6", "count ip from any to any dst-ip6 me6"),
    ("unreach6 admin-prohib ip6 from any to any", "unreach6 admin-prohib ip6 from any to any"),
    ("reset6 tcp from any to any", "reset6 tcp from any to any"),
    ("fwd 2001:db8::1,8080 ip6 from any to any", "fwd 2001:db8::1,8080 ip6 from any to any"),
    ("allow ipv6 from any to any", "allow ip6 from any to any"),
    ("allow udp from any to 2001:db8::53 53", "allow udp from any to 2001:db8::53 53"),
])
def test_rules_list_back(rule: str, listed: str) -> None:
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    res = v.cmd(f"ipfw add 100 {rule}")
    assert res.ok, res.output
    assert res.output == f"00100 {listed}\n"


@pytest.mark.parametrize("rule", ["allow ip from 2001:db8::/129 to any",
                                  "allow ip from 2001:db8:::1 to any",
                                  "count ip from any to any src-ip6 10.0.0.1",
                                  "count ip from any to any ext6hdr bogus",
                                  "count ip from any to any icmp6types 256"])
def test_bad_ipv6_rules_are_refused(rule: str) -> None:
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    res = v.cmd(f"ipfw add 100 {rule}")
    assert not res.ok
    assert v.cmd("ipfw list").output == "65535 deny ip from any to any\n"


def test_ipttl_iplen_ipid_match_only_ipv4(net: Net6) -> None:
    """ipfw(8): ipttl, iplen and ipid are IPv4 options."""
    net.fw(net.h2, f"add 10 {ND}", "add 100 count ip from any to any ipttl 1-255",
           "add 110 count ip from any to any iplen 0-65535",
           "add 120 count ip from any to any ipid 0-65535",
           "add 200 allow ip from any to any")
    assert net.ping6(net.h1, H2)
    assert counts(net.h2, 100)[0] == counts(net.h2, 110)[0] == counts(net.h2, 120)[0] == 0
    assert net.ping(net.h1, "10.0.2.2")
    assert counts(net.h2, 100)[0] == 2  # the request in, the reply out


# -- destroy --------------------------------------------------------------------------------------
def test_destroy_with_ipv6_rules_and_states_leaves_nothing(net: Net6) -> None:
    net.fw(net.h2, f"add 10 {ND}", "add 100 allow ipv6-icmp from me6 to any keep-state",
           "add 300 deny ip6 from any to any")
    assert net.ping6(net.h2, H1)
    fw = net.h2.ipfw
    assert len(fw.dyn) == 1 and net.h2.ip6.pfil_in is not None
    ip6 = net.h2.ip6
    net.k.destroy("h2")
    assert net.k.sched.pending_timers(net.h2) == 0
    assert ip6.pfil_in is None and ip6.pfil_out is None
    assert fw.rules == [] and fw._dyn is not None and len(fw._dyn) == 0
    net.k.run(5)
    assert net.ping6(net.h1, R1)  # the others go on


def test_pipe_mask_src_ip6_makes_a_queue_per_prefix(net: Net6) -> None:
    """`mask src-ip6 /64`: one dynamic queue per source /64 (dummynet's flow id of an
    IPv6 packet: addresses, ports, flow label)."""
    net.h1.iface(net.h1_if.name).add_addr("2001:db8:1:0:1::5/64", family=AF_INET6)
    net.h2.iface("lo0").add_addr("2001:db8:2:1::7/128", family=AF_INET6)
    assert net.r.cmd("dnctl pipe 1 config delay 10 mask src-ip6 /64").ok
    assert net.r.cmd("dnctl pipe 2 config mask src-ip6 /128 dst-ip6 /128 flow-id 0xfffff").ok
    net.fw(net.r, f"add 10 {ND}", "add 100 pipe 1 ip6 from 2001:db8:1::/64 to any in",
           "add 200 allow ip from any to any")
    net.k.run(1.5)
    assert net.ping6(net.h1, H2)
    assert net.h1.cmd(f"ping6 -c 1 -S 2001:db8:1:0:1::5 {H2}").ok
    show = net.r.cmd("dnctl pipe show 1").output
    assert "mask: proto: 0x00, flow_id: 0x00000000,  ffff:ffff:ffff:ffff::/0x0000 -> ::/0x0000" \
        in show, show
    flows = [line for line in show.splitlines() if "2001:db8:1::" in line]
    assert len(flows) == 1 and "2 " in flows[0]  # both sources in one /64: one queue
    net.fw(net.r, "delete 100", "add 100 pipe 2 ip6 from 2001:db8:1::/64 to any in")
    assert net.ping6(net.h1, H2)
    assert net.h1.cmd(f"ping6 -c 1 -S 2001:db8:1:0:1::5 {H2}").ok
    show2 = net.r.cmd("dnctl pipe show 2").output
    assert "2001:db8:1::1" in show2 and "2001:db8:1:0:1::5" in show2  # a queue each


def test_malformed_ipv6_chains_never_raise(net: Net6) -> None:
    """Random extension-header chains and truncated headers through the rules of r (its
    kernel loop must not raise: the suite's fixture checks it)."""
    import random

    rng = random.Random(12)
    net.r.sysctl("net.inet.ip.fw.verbose", 1)
    net.fw(net.r, f"add 10 {ND}", "add 100 count log ip6 from any to any ext6hdr frag",
           "add 110 reset6 tcp from any to any dst-port 1-100",
           "add 120 unreach6 port udp from any to any dst-port 1-100",
           "add 130 count ipv6-icmp from any to any icmp6types 128",
           "add 140 allow ip6 from any 1-65535 to any frag",
           "add 200 allow ip from any to any")
    src, dst = wip6.aton(H1), wip6.aton(H2)
    nxts = (0, 6, 17, 43, 44, 50, 51, 58, 60, 59, 255)
    for i in range(400):
        if i % 2:  # noise, with plausible next-header bytes along the chain
            first = rng.choice(nxts)
            body = bytearray(rng.randbytes(rng.randrange(0, 48)))
            for at in range(0, len(body), 8):
                body[at] = rng.choice(nxts)
        else:  # a well-formed chain, then a TCP/UDP header, cut anywhere
            chain = [rng.choice((0, 43, 44, 60)) for _ in range(rng.randrange(0, 3))]
            upper = rng.choice((6, 17))
            first = (chain or [upper])[0]
            body = bytearray()
            for k, kind in enumerate(chain):
                nxt = chain[k + 1] if k + 1 < len(chain) else upper
                ext = bytearray(8)
                ext[0] = nxt
                if kind == 43:
                    ext[2] = 4  # an unknown routing type
                body += ext
            body += rng.randbytes(2) + rng.randrange(1, 101).to_bytes(2, "big")
            body += rng.randbytes(16)
            del body[rng.randrange(len(body) - 8, len(body) + 1):]
        hdr = wip6.build_header(src, dst, first, len(body), 64)
        with net.k.sched.cond:
            net.r1_if.input(net.r1_if.mac + b"\x02\x00\x00\x00\x00\x99\x86\xdd" + hdr
                            + bytes(body))
        net.k.run(0.01)
    assert counts(net.r, 200)[0] > 0
    assert counts(net.r, 110)[0] > 0 and counts(net.r, 120)[0] > 0  # ports found, answered
