"""vimage.wire.ipv6 and vimage.wire.icmp6, cross-checked against scapy."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import raw
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRedirectedHdr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)

from vimage.wire import WireError
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

SRC = wip6.aton("2001:db8::1")
DST = wip6.aton("2001:db8::2")
LL = wip6.aton("fe80::1")
MAC = bytes.fromhex("020000000001")
addrs = st.integers(0, 2**128 - 1)


def checked(data: bytes, src: int = SRC, dst: int = DST) -> bytes:
    """`data` as an IPv6 packet, re-dissected by scapy (checksums recomputed if deleted)."""
    return raw(IPv6(wip6.build(src, dst, wip6.NXT_ICMPV6, data)))


@given(addrs, addrs, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFF),
       st.integers(0, 0xFFFFF), st.binary(max_size=64))
def test_header_matches_scapy(src, dst, nxt, hlim, tc, flow, payload):
    pkt = wip6.build(src, dst, nxt, payload, hlim=hlim, tclass=tc, flow=flow)
    ref = IPv6(src=wip6.ntoa(src), dst=wip6.ntoa(dst), nh=nxt, hlim=hlim, tc=tc, fl=flow)
    assert pkt == raw(ref / payload) if payload else raw(ref)
    hdr, body = wip6.parse(pkt)
    assert (hdr.src, hdr.dst, hdr.nxt, hdr.hlim, hdr.tclass, hdr.flow) == (
        src, dst, nxt, hlim, tc, flow)
    assert bytes(body) == payload


def test_parse_refuses_bad_headers():
    with pytest.raises(WireError) as exc:
        wip6.parse(b"\x60" + b"\0" * 30)
    assert exc.value.reason == "toosmall"
    with pytest.raises(WireError) as exc:
        wip6.parse(b"\x40" + b"\0" * 39)
    assert exc.value.reason == "badvers"
    with pytest.raises(WireError) as exc:
        wip6.parse(wip6.build_header(SRC, DST, 59, 10))
    assert exc.value.reason == "tooshort"


@given(addrs)
def test_text_forms_and_address_helpers(addr):
    assert wip6.aton(wip6.ntoa(addr)) == addr
    assert wip6.ntoa(wip6.aton("2001:DB8:0:0:0:0:0:1")) == "2001:db8::1"  # RFC 5952
    assert wip6.split_scope("fe80::1%epair0a") == (LL, "epair0a")
    assert wip6.solicited_node(wip6.aton("2001:db8::12:3456")) == wip6.aton("ff02::1:ff12:3456")
    assert wip6.multicast_mac(wip6.aton("ff02::1:ff12:3456")) == bytes.fromhex("3333ff123456")
    assert wip6.eui64(bytes.fromhex("001122334455")) == 0x021122FFFE334455
    assert wip6.scope(LL) == wip6.SCOPE_LINK == wip6.scope(1)
    assert wip6.scope(SRC) == wip6.SCOPE_GLOBAL
    assert wip6.scope(wip6.aton("ff05::2")) == wip6.SCOPE_SITE
    assert wip6.needs_zone(LL) and wip6.needs_zone(wip6.ALL_NODES)
    assert not wip6.needs_zone(SRC) and not wip6.needs_zone(wip6.aton("ff0e::1"))
    with pytest.raises(WireError):
        wip6.aton("2001:db8::g")


def test_extension_headers_match_scapy():
    hbh = wip6.build_options_header(wip6.NXT_ICMPV6, wip6.ROUTER_ALERT_MLD)
    assert hbh == raw(IPv6ExtHdrHopByHop(nh=58, options=[RouterAlert()]))
    dst_opts = wip6.build_options_header(wip6.NXT_UDP, wip6.option(0x1E, b"abc"))
    parsed = IPv6ExtHdrDestOpt(dst_opts)
    assert parsed.nh == 17 and len(dst_opts) == 8 and parsed.options[0].otype == 0x1E
    assert bytes(parsed.options[0].optdata) == b"abc"
    rh = wip6.build_routing(wip6.NXT_ICMPV6, 0, 1, b"\0" * 4 + SRC.to_bytes(16, "big"))
    assert rh == raw(IPv6ExtHdrRouting(nh=58, type=0, segleft=1, addresses=["2001:db8::1"]))
    frag = wip6.build_fragment(wip6.NXT_ICMPV6, 1448, True, 0x12345678)
    assert frag == raw(IPv6ExtHdrFragment(nh=58, offset=1448 // 8, m=1, id=0x12345678))
    assert wip6.walk_options(hbh, 2, len(hbh)) == [(2, 5, 2), (6, wip6.OPT_PADN, 0)]
    with pytest.raises(WireError):
        wip6.walk_options(bytes((0, 0, 0x1E, 9, 0, 0, 0, 0)), 2, 8)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=80))
def test_echo_checksums_match_scapy(ident, seq, data):
    for type_, cls in ((w6.ECHO_REQUEST, ICMPv6EchoRequest), (w6.ECHO_REPLY, ICMPv6EchoReply)):
        msg = w6.build_echo(type_, ident, seq, data, SRC, DST)
        ref = raw(IPv6(src="2001:db8::1", dst="2001:db8::2") / cls(id=ident, seq=seq, data=data))
        assert msg == ref[40:]
        parsed = w6.parse(msg, SRC, DST)
        assert (parsed.type, parsed.ident, parsed.seq, bytes(parsed.payload)) == (
            type_, ident, seq, data)
    with pytest.raises(WireError) as exc:
        w6.parse(msg, SRC, DST + 1)  # the pseudo-header is covered
    assert exc.value.reason == "badsum"


def test_errors_match_scapy():
    quoted = wip6.build(SRC, DST, 58, b"x" * 8)
    cases = (
        (w6.DST_UNREACH, 3, 0, ICMPv6DestUnreach(code=3)),
        (w6.PACKET_TOO_BIG, 0, 1280, ICMPv6PacketTooBig(mtu=1280)),
        (w6.TIME_EXCEEDED, 1, 0, ICMPv6TimeExceeded(code=1)),
        (w6.PARAM_PROB, 1, 6, ICMPv6ParamProblem(code=1, ptr=6)),
    )
    for type_, code, rest, ref in cases:
        msg = w6.build(type_, code, rest, quoted, DST, SRC)
        assert msg == raw(IPv6(src="2001:db8::2", dst="2001:db8::1") / ref / quoted)[40:]


def test_nd_messages_and_options_match_scapy():
    base = IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255)
    ns = w6.build_ns(DST, w6.opt_lladdr(w6.ND_OPT_SOURCE_LINKADDR, MAC), LL,
                     wip6.solicited_node(DST))
    assert ns == raw(base / ICMPv6ND_NS(tgt="2001:db8::2")
                     / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"))[40:]
    na = w6.build_na(w6.NA_SOLICITED | w6.NA_OVERRIDE, DST,
                     w6.opt_lladdr(w6.ND_OPT_TARGET_LINKADDR, MAC), DST, LL)
    ref = raw(IPv6(src="2001:db8::2", dst="fe80::1") / ICMPv6ND_NA(
        tgt="2001:db8::2", R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:00:01"))
    assert na == ref[40:]
    rs = w6.build_rs(w6.opt_lladdr(w6.ND_OPT_SOURCE_LINKADDR, MAC), LL, wip6.ALL_ROUTERS)
    assert rs == raw(IPv6(src="fe80::1", dst="ff02::2") / ICMPv6ND_RS()
                     / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01"))[40:]
    opts = (w6.opt_lladdr(w6.ND_OPT_SOURCE_LINKADDR, MAC) + w6.opt_mtu(1500)
            + w6.opt_prefix(wip6.aton("2001:db8::"), 64, w6.PREFIX_ONLINK | w6.PREFIX_AUTO,
                            86400, 14400))
    ra = w6.build_ra(64, w6.RA_OTHER, 1800, 0, 0, opts, LL, wip6.ALL_NODES)
    ref = raw(IPv6(src="fe80::1", dst="ff02::1")
              / ICMPv6ND_RA(chlim=64, O=1, prf=0, routerlifetime=1800)
              / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:01") / ICMPv6NDOptMTU(mtu=1500)
              / ICMPv6NDOptPrefixInfo(prefix="2001:db8::", prefixlen=64, L=1, A=1,
                                      validlifetime=86400, preferredlifetime=14400))
    assert ra == ref[40:]
    parsed = w6.parse_options(w6.parse(ra, LL, wip6.ALL_NODES).payload[8:])
    assert [k for k, _ in parsed] == [1, 5, 3]
    assert w6.find_lladdr(parsed, w6.ND_OPT_SOURCE_LINKADDR) == MAC
    assert w6.parse_prefix(parsed[2][1]) == (wip6.aton("2001:db8::"), 64, 0xC0, 86400, 14400)
    inner = wip6.build(SRC, DST, 59, b"")
    rd = w6.build_redirect(LL, DST, w6.opt_redirected(inner), LL, SRC)
    ref = raw(IPv6(src="fe80::1", dst="2001:db8::1") / ICMPv6ND_Redirect(
        tgt="fe80::1", dst="2001:db8::2") / ICMPv6NDOptRedirectedHdr(pkt=inner))
    assert rd == ref[40:]


def test_nd_options_refuse_zero_length_and_overruns():
    for bad in (b"\x01\x00" + b"\0" * 6, b"\x01\x02" + b"\0" * 6, b"\x01"):
        with pytest.raises(WireError) as exc:
            w6.parse_options(bad)
        assert exc.value.reason == "badopt"


def test_mldv2_report_matches_scapy():
    group = wip6.solicited_node(SRC)
    msg = w6.build_mldv2_report([(w6.CHANGE_TO_EXCLUDE, group, [])], LL, wip6.ALL_MLDV2_ROUTERS)
    parsed = ICMPv6MLReport2(raw(IPv6(src="fe80::1", dst="ff02::16") / ICMPv6MLReport2(msg))[40:])
    assert parsed.records_number == 1
    record = parsed.records[0]
    assert (record.rtype, record.dst, record.sources_number) == (4, "ff02::1:ff00:1", 0)
    # the checksum is right: scapy's recomputation gives the same bytes
    ref = ICMPv6MLReport2(msg)
    del ref.cksum
    assert raw(IPv6(src="fe80::1", dst="ff02::16") / ref)[40:] == msg
