"""netstat -s word for word as FreeBSD's usr.bin/netstat/inet.c prints it.

The expected lines are built here from inet.c's printf formats (its `p()`, `p1a()`,
`p2()`, `p2a()`, `p3()` macros and main.c's plural(), plurales(), pluralies()), filled
with counter values the test sets: never from what the code under test prints.
"""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.vnet import Vnet


def plural(n: int) -> str:
    return "" if n == 1 else "s"


def plurales(n: int) -> str:
    return "" if n == 1 else "es"


def pluralies(n: int) -> str:
    return "y" if n == 1 else "ies"


def render(table: list[tuple[str, tuple[str, ...], str]], values: dict[str, int],
           sflag: int = 1) -> list[str]:
    """inet.c's lines for `values`: `p` (value, plural), `p1a` (value), `p2` (two values,
    two plurals), `p2a` (two values, the first's plural), `p3` (pluralies), `pes`
    (plurales); with sflag > 1, a line whose counters are all zero is left out."""
    out = ""
    for kind, fields, fmt in table:
        vals = [values[f] for f in fields]
        if sflag > 1 and not any(vals):
            continue
        if kind == "p":
            out += fmt % (vals[0], plural(vals[0]))
        elif kind == "p1a":
            out += fmt % vals[0]
        elif kind == "p2":
            out += fmt % (vals[0], plural(vals[0]), vals[1], plural(vals[1]))
        elif kind == "p2a":
            out += fmt % (vals[0], plural(vals[0]), vals[1])
        elif kind == "p3":
            out += fmt % (vals[0], pluralies(vals[0]))
        elif kind == "pes":
            out += fmt % (vals[0], plurales(vals[0]))
        else:  # "raw": the text itself when the first counter is shown
            out += fmt
    return out.splitlines()


# inet.c ip_stats(), its printf formats in its order
IP = [
    ("p", ("total",), "\t%d total packet%s received\n"),
    ("p", ("badsum",), "\t%d bad header checksum%s\n"),
    ("p1a", ("toosmall",), "\t%d with size smaller than minimum\n"),
    ("p1a", ("tooshort",), "\t%d with data size < data length\n"),
    ("p1a", ("toolong",), "\t%d with ip length > max ip packet size\n"),
    ("p1a", ("badhlen",), "\t%d with header length < data size\n"),
    ("p1a", ("badlen",), "\t%d with data length < header length\n"),
    ("p1a", ("badoptions",), "\t%d with bad options\n"),
    ("p1a", ("badvers",), "\t%d with incorrect version number\n"),
    ("p", ("fragments",), "\t%d fragment%s received\n"),
    ("p", ("fragdropped",), "\t%d fragment%s dropped (dup or out of space)\n"),
    ("p", ("fragtimeout",), "\t%d fragment%s dropped after timeout\n"),
    ("p", ("reassembled",), "\t%d packet%s reassembled ok\n"),
    ("p", ("delivered",), "\t%d packet%s for this host\n"),
    ("p", ("noproto",), "\t%d packet%s for unknown/unsupported protocol\n"),
    ("p", ("forward",), "\t%d packet%s forwarded"),
    ("p", ("fastforward",), " (%d packet%s fast forwarded)"),
    ("raw", ("forward",), "\n"),
    ("p", ("cantforward",), "\t%d packet%s not forwardable\n"),
    ("p", ("notmember",), "\t%d packet%s received for unknown multicast group\n"),
    ("p", ("redirectsent",), "\t%d redirect%s sent\n"),
    ("p", ("localout",), "\t%d packet%s sent from this host\n"),
    ("p", ("rawout",), "\t%d packet%s sent with fabricated ip header\n"),
    ("p", ("odropped",), "\t%d output packet%s dropped due to no bufs, etc.\n"),
    ("p", ("noroute",), "\t%d output packet%s discarded due to no route\n"),
    ("p", ("fragmented",), "\t%d output datagram%s fragmented\n"),
    ("p", ("ofragments",), "\t%d fragment%s created\n"),
    ("p", ("cantfrag",), "\t%d datagram%s that can't be fragmented\n"),
    ("p", ("nogif",), "\t%d tunneling packet%s that can't find gif\n"),
    ("p", ("badaddr",), "\t%d datagram%s with bad address in header\n"),
]

# inet.c udp_stats(); `delivered` is computed by netstat, not read
UDP = [
    ("p", ("ipackets",), "\t%d datagram%s received\n"),
    ("p1a", ("hdrops",), "\t%d with incomplete header\n"),
    ("p1a", ("badlen",), "\t%d with bad data length field\n"),
    ("p1a", ("badsum",), "\t%d with bad checksum\n"),
    ("p1a", ("nosum",), "\t%d with no checksum\n"),
    ("p1a", ("noport",), "\t%d dropped due to no socket\n"),
    ("p", ("noportbcast",), "\t%d broadcast/multicast datagram%s undelivered\n"),
    ("p1a", ("fullsock",), "\t%d dropped due to full socket buffers\n"),
    ("p1a", ("pcbhashmiss",), "\t%d not for hashed pcb\n"),
    ("p1a", ("computed_delivered",), "\t%d delivered\n"),
    ("p", ("opackets",), "\t%d datagram%s output\n"),
    ("p", ("filtermcast",), "\t%d time%s multicast source filter matched\n"),
]

# inet.c arp_stats()
ARP = [
    ("p", ("txrequests",), "\t%d ARP request%s sent\n"),
    ("p", ("txerrors",), "\t%d ARP request%s failed to sent\n"),
    ("p3", ("txreplies",), "\t%d ARP repl%s sent\n"),
    ("p", ("rxrequests",), "\t%d ARP request%s received\n"),
    ("p3", ("rxreplies",), "\t%d ARP repl%s received\n"),
    ("p", ("received",), "\t%d ARP packet%s received\n"),
    ("p", ("dropped",), "\t%d total packet%s dropped due to no ARP entry\n"),
    ("p", ("timeouts",), "\t%d ARP entry%s timed out\n"),
    ("p", ("dupips",), "\t%d Duplicate IP%s seen\n"),
]

# inet.c tcp_stats(), its first lines (the sent and received packet groups)
TCP_HEAD = [
    ("p", ("sndtotal",), "\t%d packet%s sent\n"),
    ("p2", ("sndpack", "sndbyte"), "\t\t%d data packet%s (%d byte%s)\n"),
    ("p2", ("sndrexmitpack", "sndrexmitbyte"),
     "\t\t%d data packet%s (%d byte%s) retransmitted\n"),
    ("p", ("sndrexmitbad",), "\t\t%d data packet%s unnecessarily retransmitted\n"),
    ("p", ("mturesent",), "\t\t%d resend%s initiated by MTU discovery\n"),
    ("p2a", ("sndacks", "delack"), "\t\t%d ack-only packet%s (%d delayed)\n"),
    ("p", ("sndurg",), "\t\t%d URG only packet%s\n"),
    ("p", ("sndprobe",), "\t\t%d window probe packet%s\n"),
    ("p", ("sndwinup",), "\t\t%d window update packet%s\n"),
    ("p", ("sndctrl",), "\t\t%d control packet%s\n"),
    ("p", ("rcvtotal",), "\t%d packet%s received\n"),
    ("p2", ("rcvackpack", "rcvackbyte"), "\t\t%d ack%s (for %d byte%s)\n"),
    ("p", ("rcvdupack",), "\t\t%d duplicate ack%s\n"),
    ("p", ("rcvacktoomuch",), "\t\t%d ack%s for unsent data\n"),
    ("p2", ("rcvpack", "rcvbyte"), "\t\t%d packet%s (%d byte%s) received in-sequence\n"),
    ("p2", ("rcvduppack", "rcvdupbyte"), "\t\t%d completely duplicate packet%s (%d byte%s)\n"),
    ("p", ("pawsdrop",), "\t\t%d old duplicate packet%s\n"),
    ("p2", ("rcvpartduppack", "rcvpartdupbyte"),
     "\t\t%d packet%s with some dup. data (%d byte%s duped)\n"),
    ("p2", ("rcvoopack", "rcvoobyte"), "\t\t%d out-of-order packet%s (%d byte%s)\n"),
    ("p2", ("rcvpackafterwin", "rcvbyteafterwin"),
     "\t\t%d packet%s (%d byte%s) of data after window\n"),
    ("p", ("rcvwinprobe",), "\t\t%d window probe%s\n"),
    ("p", ("rcvwinupd",), "\t\t%d window update packet%s\n"),
    ("p", ("rcvafterclose",), "\t\t%d packet%s received after close\n"),
    ("p", ("rcvbadsum",), "\t\t%d discarded for bad checksum%s\n"),
    ("p", ("rcvbadoff",), "\t\t%d discarded for bad header offset field%s\n"),
    ("p1a", ("rcvshort",), "\t\t%d discarded because packet too short\n"),
    ("p1a", ("rcvmemdrop",), "\t\t%d discarded due to memory problems\n"),
    ("p1a", ("rcvreassfull",), "\t\t%d discarded due to full reassembly queue\n"),
    ("p", ("connattempt",), "\t%d connection request%s\n"),
    ("p", ("accepts",), "\t%d connection accept%s\n"),
    ("p", ("badsyn",), "\t%d bad connection attempt%s\n"),
    ("p", ("listendrop",), "\t%d listen queue overflow%s\n"),
    ("p", ("badrst",), "\t%d ignored RSTs in the window%s\n"),
    ("p", ("connects",), "\t%d connection%s established (including accepts)\n"),
]

# inet.c tcp_stats(), the syncache group
TCP_SYNCACHE = [
    ("p3", ("sc_added",), "\t%d syncache entr%s added\n"),
    ("p1a", ("sc_retransmitted",), "\t\t%d retransmitted\n"),
    ("p1a", ("sc_dupsyn",), "\t\t%d dupsyn\n"),
    ("p1a", ("sc_dropped",), "\t\t%d dropped\n"),
    ("p1a", ("sc_completed",), "\t\t%d completed\n"),
    ("p1a", ("sc_bucketoverflow",), "\t\t%d bucket overflow\n"),
    ("p1a", ("sc_cacheoverflow",), "\t\t%d cache overflow\n"),
    ("p1a", ("sc_reset",), "\t\t%d reset\n"),
    ("p1a", ("sc_stale",), "\t\t%d stale\n"),
    ("p1a", ("sc_aborted",), "\t\t%d aborted\n"),
    ("p1a", ("sc_badack",), "\t\t%d badack\n"),
    ("p1a", ("sc_unreach",), "\t\t%d unreach\n"),
    ("p", ("sc_zonefail",), "\t\t%d zone failure%s\n"),
    ("p", ("cookiessent",), "\t%d cookie%s sent\n"),
    ("p", ("cookiesrcvd",), "\t%d cookie%s received\n"),
]


def fields(table: list[tuple[str, tuple[str, ...], str]]) -> list[str]:
    return list(dict.fromkeys(f for _, names, _ in table for f in names))


def set_counters(stats: object, names: list[str], values: list[int]) -> dict[str, int]:
    for name, value in zip(names, values, strict=True):
        setattr(stats, name, value)
    return dict(zip(names, values, strict=True))


@pytest.fixture
def vnet() -> Vnet:
    kernel = Kernel(clock="virtual", seed=3)
    return kernel.create("v")


def block(vnet: Vnet, proto: str, flags: str = "-s") -> list[str]:
    res = vnet.cmd(f"netstat {flags} -p {proto}")
    assert res.status == 0, res.output
    return res.output.splitlines()


def test_ip_block_word_for_word(vnet: Vnet) -> None:
    names = fields(IP)
    # 1 for the singular forms, 0 for -ss, other numbers for the plurals
    values = [(1, 0, 7, 12)[i % 4] for i in range(len(names))]
    got = set_counters(vnet.ip.stats, names, values)
    vnet.ip.stats.forward, vnet.ip.stats.fastforward = got["forward"], got["fastforward"] = 7, 1
    lines = block(vnet, "ip")
    want = render(IP, got)
    assert lines[0] == "ip:"
    assert lines[1:1 + len(want)] == want
    assert "\t7 packets forwarded (1 packet fast forwarded)" in lines
    terse = block(vnet, "ip", "-ss")
    assert terse[1:1 + len(render(IP, got, 2))] == render(IP, got, 2)
    assert all(" 0 " not in line and not line.startswith("\t0 ") for line in terse)


def test_ip_forwarded_line_with_no_fast_forwarding(vnet: Vnet) -> None:
    vnet.ip.stats.forward = 1
    assert "\t1 packet forwarded (0 packets fast forwarded)" in block(vnet, "ip")
    assert "\t1 packet forwarded" in block(vnet, "ip", "-ss")


def test_udp_block_and_computed_delivered(vnet: Vnet) -> None:
    names = [n for n in fields(UDP) if n != "computed_delivered"]
    values = [100, 1, 2, 3, 4, 5, 6, 7, 0, 40, 1]
    got = set_counters(vnet.udp.stats, names, values)
    # udp_stats(): delivered = ipackets - hdrops - badlen - badsum - noport - noportbcast
    # - fullsock (nosum and pcbhashmiss are not subtracted)
    got["computed_delivered"] = 100 - 1 - 2 - 3 - 5 - 6 - 7
    vnet.udp.stats.delivered = 9999  # vimage's own counter is not what netstat shows
    assert block(vnet, "udp")[1:] == render(UDP, got)


def test_arp_block_pluralies(vnet: Vnet) -> None:
    names = fields(ARP)
    for values in ([1] * len(names), [2] * len(names)):
        got = set_counters(vnet.arp.stats, names, values)
        lines = block(vnet, "arp")
        assert lines[1:1 + len(ARP)] == render(ARP, got)
    assert "\t2 ARP replies sent" in lines and "\t2 ARP entrys timed out" in lines


def test_icmp_block_histograms_and_plurales(vnet: Vnet) -> None:
    st = vnet.icmp.stats
    st.error, st.oldicmp, st.badcode, st.tooshort, st.checksum, st.badlen = 1, 2, 3, 4, 5, 6
    st.bmcastecho, st.bmcasttstamp, st.reflect, st.badaddr, st.noroute = 7, 8, 1, 1, 9
    st.outhist[0], st.outhist[3] = 4, 2
    st.inhist[8] = 4
    expected = [
        "icmp:",
        "\t1 call to icmp_error",
        "\t2 errors not generated in response to an icmp message",
        "\tOutput histogram:",
        "\t\techo reply: 4",
        "\t\tdestination unreachable: 2",
        "\t3 messages with bad code fields",
        "\t4 messages less than the minimum length",
        "\t5 messages with bad checksum",
        "\t6 messages with bad length",
        "\t7 multicast echo requests ignored",
        "\t8 multicast timestamp requests ignored",
        "\tInput histogram:",
        "\t\techo: 4",
        "\t1 message response generated",
        "\t1 invalid return address",
        "\t9 no return routes",
    ]
    lines = block(vnet, "icmp")
    assert lines[:len(expected)] == expected
    assert lines[-1] == "\tICMP address mask responses are disabled"
    st.badaddr = 2
    assert "\t2 invalid return addresses" in block(vnet, "icmp")


def test_tcp_block_head_and_syncache(vnet: Vnet) -> None:
    st = vnet.tcp.stats
    for table in (TCP_HEAD, TCP_SYNCACHE):
        names = fields(table)
        for base in (1, 3):
            got = set_counters(st, names, [base + (i % 2) * 10 for i in range(len(names))])
            lines = block(vnet, "tcp")
            want = render(table, got)
            start = lines.index(want[0])
            assert lines[start:start + len(want)] == want
    st.sc_added = 1
    assert "\t1 syncache entry added" in block(vnet, "tcp")


def test_tcp_connection_count_by_state(vnet: Vnet) -> None:
    lines = block(vnet, "tcp")
    at = lines.index("TCP connection count by state:")
    states = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
              "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT")
    assert lines[at + 1:at + 12] == [f"\t0 connections in {s} state" for s in states]
    assert "TCP connection count by state:" in block(vnet, "tcp", "-ss")
    assert not any("connections in" in line for line in block(vnet, "tcp", "-ss"))


def test_zero_flag_resets_after_printing(vnet: Vnet) -> None:
    vnet.ip.stats.total = 5
    vnet.icmp.stats.inhist[8] = 2
    first = block(vnet, "ip", "-s -z")
    assert "\t5 total packets received" in first  # printed, then zeroed
    assert vnet.ip.stats.total == 0
    assert "\t0 total packets received" in block(vnet, "ip")
    block(vnet, "icmp", "-s -z")
    assert vnet.icmp.stats.inhist[8] == 0


# inet6.c ip6_stats() up to its mbuf statistics
IP6 = [
    ("p", ("total",), "\t%d total packet%s received\n"),
    ("p1a", ("toosmall",), "\t%d with size smaller than minimum\n"),
    ("p1a", ("tooshort",), "\t%d with data size < data length\n"),
    ("p1a", ("badoptions",), "\t%d with bad options\n"),
    ("p1a", ("badvers",), "\t%d with incorrect version number\n"),
    ("p", ("fragments",), "\t%d fragment%s received\n"),
    ("p", ("fragdropped",), "\t%d fragment%s dropped (dup or out of space)\n"),
    ("p", ("fragtimeout",), "\t%d fragment%s dropped after timeout\n"),
    ("p", ("fragoverflow",), "\t%d fragment%s that exceeded limit\n"),
    ("p", ("atomicfrags",), "\t%d atomic fragment%s\n"),
    ("p", ("reassembled",), "\t%d packet%s reassembled ok\n"),
    ("p", ("delivered",), "\t%d packet%s for this host\n"),
    ("p", ("forward",), "\t%d packet%s forwarded\n"),
    ("p", ("cantforward",), "\t%d packet%s not forwardable\n"),
    ("p", ("redirectsent",), "\t%d redirect%s sent\n"),
    ("p", ("localout",), "\t%d packet%s sent from this host\n"),
    ("p", ("rawout",), "\t%d packet%s sent with fabricated ip header\n"),
    ("p", ("odropped",), "\t%d output packet%s dropped due to no bufs, etc.\n"),
    ("p", ("noroute",), "\t%d output packet%s discarded due to no route\n"),
    ("p", ("fragmented",), "\t%d output datagram%s fragmented\n"),
    ("p", ("ofragments",), "\t%d fragment%s created\n"),
    ("p", ("cantfrag",), "\t%d datagram%s that can't be fragmented\n"),
    ("p", ("badscope",), "\t%d packet%s that violated scope rules\n"),
    ("p", ("notmember",), "\t%d multicast packet%s which we don't join\n"),
]


def test_ip6_block_word_for_word(vnet: Vnet) -> None:
    names = fields(IP6)
    got = set_counters(vnet.ip6.stats, names, [(1, 0, 7, 12)[i % 4] for i in range(len(names))])
    mbufs = ["\tMbuf statistics:", "\t\t0 one mbuf", "\t\t0 one ext mbuf",
             "\t\t0 two or more ext mbuf"]
    want = [*render(IP6, got), *mbufs]
    lines = block(vnet, "ip6")
    assert lines[1:1 + len(want)] == want
    terse = block(vnet, "ip6", "-ss")
    assert terse[1:] == [*render(IP6, got, 2), *mbufs]  # the mbuf lines are always there


def test_icmp6_error_histogram_counts_what_icmp6_error_is_asked(vnet: Vnet) -> None:
    """icmp6_errcount(): a datagram to a closed port is a `port unreachable` to generate."""
    from vimage.socket.socket import AF_INET6, SOCK_DGRAM

    assert vnet.cmd("ifconfig lo0 up").ok
    s = vnet.socket(AF_INET6, SOCK_DGRAM)
    s.sendto(b"x", ("::1", 9))
    vnet.kernel.run(1)
    lines = block(vnet, "icmp6")
    at = lines.index("\tHistogram of error messages to be generated:")
    assert lines[at + 1:at + 14] == [
        "\t\t0 no route", "\t\t0 administratively prohibited", "\t\t0 beyond scope",
        "\t\t0 address unreachable", "\t\t1 port unreachable", "\t\t0 packet too big",
        "\t\t0 time exceed transit", "\t\t0 time exceed reassembly",
        "\t\t0 erroneous header field", "\t\t0 unrecognized next header",
        "\t\t0 unrecognized option", "\t\t0 redirect", "\t\t0 unknown"]
    assert "\t1 call to icmp6_error" in lines
    out = lines.index("\tOutput histogram:")
    assert lines[out + 1] == "\t\tdestination unreachable: 1"
    s.close()


def test_every_table_field_is_a_counter_and_containers_balance(vnet: Vnet) -> None:
    from vimage.cli.netstat_stats import TABLES

    slots = {"tcp": vnet.tcp, "udp": vnet.udp, "ip": vnet.ip, "arp": vnet.arp,
             "icmp": vnet.icmp, "ip6": vnet.ip6, "icmp6": vnet.icmp6}
    for name, table in TABLES.items():
        stats = slots[name].stats
        depth = 0
        for kind, fields_, _fmt in table:
            depth += {"open": 1, "close": -1}.get(kind, 0)
            assert depth >= 0, name
            for field in fields_ if kind != "open" else ():
                assert field in type(stats).names or field in ("outhist", "inhist"), field
        assert depth == 0, name
