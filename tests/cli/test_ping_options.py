"""ping(8)'s options as FreeBSD's sbin/ping/ping.c has them: -R (record route, which the
routers and the destination fill in and the echo reply reflects), -f (flood), -p, -a,
-Q, -z, -L/-T, and their output word for word."""

from __future__ import annotations

from vimage.kernel import Kernel
from vimage.topo import router_chain
from vimage.vnet import Vnet


def chain(routers: int = 2, delay: str | None = "10ms", seed: int = 7) -> list[Vnet]:
    k = Kernel(clock="virtual", seed=seed)
    vnets = router_chain(k, routers, delay=delay)
    k.run(1)
    return vnets


def test_record_route_lines_as_freebsd() -> None:
    """Out through r1 (10.0.1.1) and r2 (10.0.2.1) to h2 (10.0.2.2), which records itself;
    back through r2 (10.0.1.2) and r1 (10.0.0.2) to us (10.0.0.1), recorded on input."""
    h1 = chain()[0]
    res = h1.cmd("ping -c 2 -R 10.0.2.2")
    assert res.status == 0
    assert res.output.splitlines() == [
        "PING 10.0.2.2 (10.0.2.2): 56 data bytes",
        "64 bytes from 10.0.2.2: icmp_seq=0 ttl=62 time=120.000 ms",
        "RR: \t10.0.1.1",
        "\t10.0.2.1",
        "\t10.0.2.2",
        "\t10.0.1.2",
        "\t10.0.0.2",
        "\t10.0.0.1",
        "64 bytes from 10.0.2.2: icmp_seq=1 ttl=62 time=60.000 ms\t(same route)",
        "",
        "--- 10.0.2.2 ping statistics ---",
        "2 packets transmitted, 2 packets received, 0.0% packet loss",
        "round-trip min/avg/max/stddev = 60.000/90.000/120.000/30.000 ms",
    ]


def test_record_route_full_after_nine_hops() -> None:
    """Nine slots: a longer way round fills them and the rest pass unrecorded."""
    h1 = chain(routers=5, delay=None)[0]
    out = h1.cmd("ping -c 1 -R 10.0.5.2").output.splitlines()
    start = out.index(next(line for line in out if line.startswith("RR: ")))
    recorded = [line.split("\t")[1] for line in out[start:start + 9]]
    assert recorded == ["10.0.1.1", "10.0.2.1", "10.0.3.1", "10.0.4.1", "10.0.5.1",
                        "10.0.5.2", "10.0.4.2", "10.0.3.2", "10.0.2.2"]
    assert out[start + 9] == ""  # no tenth: the option was full


def test_record_route_limits_the_packet_size() -> None:
    h1 = chain(routers=0, delay=None)[0]
    res = h1.cmd("ping -c 1 -R -s 65468 10.0.0.2")
    assert (res.status, res.output) == (64, "ping: packet size too large: 65468 > 65467\n")


def test_flood_prints_a_dot_per_request_and_a_backspace_per_reply() -> None:
    h1 = chain(routers=1, delay=None)[0]
    k = h1.kernel
    start = k.now
    res = h1.cmd("ping -f -c 20 10.0.1.2")
    assert res.status == 0
    head, dots, tail = res.output.partition("\n.")
    assert head == "PING 10.0.1.2 (10.0.1.2): 56 data bytes"
    body = "." + tail.split("\n", 1)[0]
    assert body == ".\b" * 20  # every reply came before the next request left
    assert "20 packets transmitted, 20 packets received, 0.0% packet loss" in res.output
    assert k.now - start < 0.01  # as fast as the replies came back


def test_flood_sends_a_hundred_a_second_without_replies() -> None:
    h1 = chain(routers=1, delay=None)[0]
    h1.cmd("route add -host 10.0.1.99 10.0.0.2 -blackhole")
    k = h1.kernel
    start = k.now
    res = h1.cmd("ping -f -c 5 -W 50 10.0.1.99")
    assert res.status == 2
    assert res.output.splitlines()[1] == "....."
    assert "5 packets transmitted, 0 packets received, 100.0% packet loss" in res.output
    # 5 requests 10 ms apart, a last 10 ms, then -W 50 ms for a reply
    assert round(k.now - start, 6) == 0.1


def test_quiet_flood_prints_no_dots() -> None:
    h1 = chain(routers=0, delay=None)[0]
    res = h1.cmd("ping -q -f -c 3 10.0.0.2")
    assert res.output.splitlines()[:3] == [
        "PING 10.0.0.2 (10.0.0.2): 56 data bytes", "",
        "--- 10.0.0.2 ping statistics ---"]


def test_pattern_fills_the_data_after_the_timestamp() -> None:
    h1, h2 = chain(routers=0, delay=None)
    seen = h2.socket(2, 3, 1)
    seen.setblocking(False)
    res = h1.cmd("ping -c 1 -s 20 -p abc1 10.0.0.2")
    assert res.output.splitlines()[:2] == ["PATTERN: 0xabc1",
                                           "PING 10.0.0.2 (10.0.0.2): 20 data bytes"]
    request = seen.recv(200)
    assert request[20] == 8 and request[28 + 8:] == bytes.fromhex("abc1") * 6
    assert h1.cmd("ping -q -c 1 -p 0a 10.0.0.2").output.startswith("PING")  # -q: no line
    res = h1.cmd("ping -c 1 -p 0xg 10.0.0.2")
    assert (res.status, res.output) == (64, "ping: patterns must be specified as hex digits\n")


def test_audible_tos_and_ttl_in_the_header() -> None:
    h1, h2 = chain(routers=0, delay=None)
    seen = h2.socket(2, 3, 1)
    seen.setblocking(False)
    back = h1.socket(2, 3, 1)
    back.setblocking(False)
    res = h1.cmd("ping -c 1 -a -z 0x10 -m 7 10.0.0.2")
    line = res.output.splitlines()[1]
    assert line == "64 bytes from 10.0.0.2: icmp_seq=0 ttl=64 time=0.000 ms\a"
    request = seen.recv(200)
    assert request[1] == 0x10 and request[8] == 7  # -z TOS, -m TTL
    reply = back.recv(200)
    assert reply[20] == 0 and reply[1] == 0x10  # icmp_reflect keeps the TOS
    res = h1.cmd("ping -c 1 -z 256 10.0.0.2")
    assert (res.status, res.output) == (64, "ping: invalid TOS: `256'\n")


def test_quiet2_hides_errors_about_our_requests() -> None:
    h1 = chain(routers=2, delay=None)[0]
    assert "Time to live exceeded" in h1.cmd("ping -c 1 -m 1 10.0.2.2").output
    res = h1.cmd("ping -c 1 -Q -m 1 10.0.2.2")
    assert "Time to live exceeded" not in res.output and "bytes from" not in res.output
    assert "1 packets transmitted, 0 packets received, 100.0% packet loss" in res.output


def test_multicast_only_flags_and_incompatible_ones() -> None:
    h1 = chain(routers=0, delay=None)[0]
    for cmd in ("ping -c 1 -T 3 10.0.0.2", "ping -c 1 -L 10.0.0.2"):
        res = h1.cmd(cmd)
        assert (res.status, res.output) == (
            64, "ping: -I, -L, -T flags cannot be used with unicast destination\n")
    res = h1.cmd("ping -c 1 -f -i 0.5 10.0.0.2")
    assert (res.status, res.output) == (64, "ping: -f and -i: incompatible options\n")
    res = h1.cmd("ping -c 1 -f 224.0.0.1")
    assert (res.status, res.output) == (
        64, "ping: -f flag cannot be used with multicast destination\n")
    res = h1.cmd("ping -c 1 -T 300 224.0.0.1")
    assert (res.status, res.output) == (64, "ping: invalid multicast TTL: `300'\n")
    res = h1.cmd("ping -c 1 -W 10 -L -T 2 224.0.0.1")  # accepted for a group
    assert res.status == 2 and res.output.startswith("PING 224.0.0.1 (224.0.0.1)")


def test_interval_below_a_second() -> None:
    h1 = chain(routers=0, delay=None)[0]
    k = h1.kernel
    start = k.now
    res = h1.cmd("ping -c 5 -i 0.05 10.0.0.2")
    assert res.status == 0 and res.output.count("bytes from") == 5
    assert round(k.now - start, 6) == 0.2


def test_redirect_line_as_pr_icmph() -> None:
    k = Kernel(clock="virtual", seed=6)
    h, r = k.create("h"), k.create("r")
    for line in ("ifconfig epair create", "ifconfig epair0a vnet h", "ifconfig epair0b vnet r"):
        assert k.cmd(line).status == 0
    h.cmd("ifconfig epair0a 10.0.1.1/24")
    r.cmd("ifconfig epair0b 10.0.1.2/24")
    r.cmd("sysctl net.inet.ip.forwarding=1")
    r.cmd("route add -net 10.0.9.0/24 10.0.1.3")
    h.cmd("route add default 10.0.1.2")
    k.run(1)
    out = h.cmd("ping -c 1 -W 100 10.0.9.9").output.splitlines()
    assert out[1] == "36 bytes from 10.0.1.2: Redirect Host(New addr: 10.0.1.3)"
    assert out[2] == "Vr HL TOS  Len   ID Flg  off TTL Pro  cks      Src      Dst"
