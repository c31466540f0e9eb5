"""ping(8) in virtual time: exact round trips, ICMP errors, send errors, timing rules."""

from __future__ import annotations

import re

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.topo import chain_links, router_chain
from vimage.vnet import Vnet


def build_chain(nrouters: int = 3, delay: str | None = "10ms",
                seed: int = 7) -> tuple[Kernel, list[Vnet], list[tuple[Ifnet, Ifnet]]]:
    """h1 - r1 - ... - rN - h2; link i is 10.0.i.0/24 (.1 on the left, .2 on the right)."""
    kernel = Kernel(clock="virtual", seed=seed)
    vnets = router_chain(kernel, nrouters, delay=delay)
    kernel.run(1)  # let the gratuitous ARPs land
    return kernel, vnets, chain_links(vnets)


def times(output: str) -> list[str]:
    return re.findall(r"time=([0-9.]+) ms", output)


def test_ping_across_three_routers_exact_rtt_and_ttl() -> None:
    kernel, vnets, _links = build_chain()
    start = kernel.now
    res = vnets[0].cmd("ping -c 3 10.0.3.2")
    assert res.status == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "PING 10.0.3.2 (10.0.3.2): 56 data bytes"
    # 4 links of 10 ms each way; the first request also waits for ARP on each of the
    # 4 links on the way out (request + reply: 20 ms each).
    assert lines[1] == "64 bytes from 10.0.3.2: icmp_seq=0 ttl=61 time=160.000 ms"
    assert lines[2] == "64 bytes from 10.0.3.2: icmp_seq=1 ttl=61 time=80.000 ms"
    assert lines[3] == "64 bytes from 10.0.3.2: icmp_seq=2 ttl=61 time=80.000 ms"
    assert lines[4:7] == ["", "--- 10.0.3.2 ping statistics ---",
                          "3 packets transmitted, 3 packets received, 0.0% packet loss"]
    assert lines[7].startswith("round-trip min/avg/max/stddev = 80.000/106.667/160.000/")
    # one request a second; done as soon as the last reply is in
    assert round(kernel.now - start, 9) == 2.080


def test_ping_ttl_exceeded_names_the_router() -> None:
    _kernel, vnets, _links = build_chain()
    res = vnets[0].cmd("ping -c 1 -m 1 10.0.3.2")
    assert res.status == 2
    assert "36 bytes from 10.0.0.2: Time to live exceeded" in res.output
    assert "Vr HL TOS  Len   ID Flg  off TTL Pro  cks      Src      Dst" in res.output
    assert re.search(r" 4  5  00 0054 [0-9a-f]{4}   0 0000  01  01 [0-9a-f]{4} "
                     r"10\.0\.0\.1  10\.0\.3\.2", res.output)
    assert "1 packets transmitted, 0 packets received, 100.0% packet loss" in res.output
    res = vnets[0].cmd("ping -c 1 -m 2 10.0.3.2")
    assert "bytes from 10.0.1.2: Time to live exceeded" in res.output


def test_ping_missing_host_reports_host_down_after_arp_gives_up() -> None:
    kernel, vnets, _links = build_chain(nrouters=1, delay=None)
    start = kernel.now
    res = vnets[0].cmd("ping -c 7 10.0.0.9")
    assert res.status == 2
    # ARP asks 5 times a second apart: the requests sent at t=5 s and t=6 s fail at once
    assert res.output.count("ping: sendto: Host is down") == 2
    assert "7 packets transmitted, 0 packets received, 100.0% packet loss" in res.output
    assert "round-trip" not in res.output
    # no reply: one interval after the last request, then 10 s more (the default -W)
    assert round(kernel.now - start, 9) == 17.0


def test_ping_dont_fragment_too_big_for_the_local_link() -> None:
    _kernel, vnets, _links = build_chain(nrouters=1)
    res = vnets[0].cmd("ping -c 1 -D -s 2000 10.0.0.2")
    assert res.status == 2
    assert "ping: sendto: Message too long" in res.output
    res = vnets[0].cmd("ping -c 1 -s 2000 10.0.0.2")  # without -D it is fragmented
    assert res.status == 0
    assert "2008 bytes from 10.0.0.2: icmp_seq=0 ttl=64" in res.output


def test_ping_needs_frag_from_a_router_with_a_small_mtu() -> None:
    _kernel, vnets, links = build_chain()
    for ifp in links[1]:
        ifp.mtu = 1400
    res = vnets[0].cmd("ping -c 1 -D -s 1400 10.0.3.2")
    assert res.status == 2
    assert "36 bytes from 10.0.0.2: frag needed and DF set (MTU 1400)" in res.output
    res = vnets[0].cmd("ping -c 1 -D -s 1372 10.0.3.2")  # 1400 bytes of IP: fits
    assert res.status == 0
    assert "1380 bytes from 10.0.3.2" in res.output


def test_ping_duplicates_are_flagged() -> None:
    _kernel, vnets, links = build_chain(nrouters=0, delay=None)
    links[0][0].impair(dup=1.0)  # every request arrives twice
    res = vnets[0].cmd("ping -c 3 10.0.0.2")
    assert res.status == 0
    # ping stops at the third reply, before the copy of that one comes in
    assert res.output.count("(DUP!)") == 2
    assert "icmp_seq=1 ttl=64 time=0.000 ms (DUP!)" in res.output
    assert "3 packets transmitted, 3 packets received, +2 duplicates, 0.0% packet loss" \
        in res.output


def test_ping_timeout_and_wait_rules() -> None:
    kernel, vnets, links = build_chain(nrouters=0)
    start = kernel.now
    res = vnets[0].cmd("ping -t 3 10.0.0.2")
    assert res.status == 0
    assert "3 packets transmitted, 3 packets received" in res.output
    assert round(kernel.now - start, 9) == 3.0
    links[0][0].impair(loss=1.0)
    start = kernel.now
    res = vnets[0].cmd("ping -c 2 -W 2000 10.0.0.2")
    assert res.status == 2
    assert round(kernel.now - start, 9) == 4.0  # 2 x 1 s interval, then -W 2000 ms
    assert "2 packets transmitted, 0 packets received, 100.0% packet loss" in res.output


def test_ping_late_replies_are_out_of_wait_time() -> None:
    _kernel, vnets, _links = build_chain(nrouters=0, delay="300ms")
    vnets[0].cmd("ping -c 1 10.0.0.2")  # resolve ARP first
    res = vnets[0].cmd("ping -c 2 -W 100 10.0.0.2")
    assert "bytes from" not in res.output
    assert "2 packets received, 0.0% packet loss, 2 packets out of wait time" in res.output


def test_ping_quiet_source_interval_and_loopback() -> None:
    kernel, vnets, _links = build_chain(nrouters=0, delay="5ms")
    res = vnets[0].cmd("ping -q -c 2 10.0.0.2")
    assert res.status == 0
    assert "bytes from" not in res.output
    assert "2 packets transmitted, 2 packets received, 0.0% packet loss" in res.output
    res = vnets[0].cmd("ping -c 1 -S 10.0.0.1 10.0.0.2")
    assert res.output.startswith("PING 10.0.0.2 (10.0.0.2) from 10.0.0.1: 56 data bytes\n")
    assert times(res.output) == ["10.000"]
    start = kernel.now
    res = vnets[0].cmd("ping -c 3 -i 0.25 10.0.0.2")
    assert res.status == 0
    assert round(kernel.now - start, 9) == 0.51
    res = vnets[0].cmd("ping -c 1 localhost")
    assert res.output.splitlines()[:2] == [
        "PING localhost (127.0.0.1): 56 data bytes",
        "64 bytes from 127.0.0.1: icmp_seq=0 ttl=64 time=0.000 ms"]
    assert "--- localhost ping statistics ---" in res.output


def test_ping_usage_errors() -> None:
    kernel = Kernel(clock="virtual", seed=1)
    vnet = kernel.create("v")
    res = vnet.cmd("ping 10.0.0.1")
    assert res.status == 64
    assert "-c count or -t timeout" in res.output
    assert len(res.output.splitlines()) == 1
    assert vnet.cmd("ping -c 1 no.such.host").status == 68
    assert vnet.cmd("ping -x -c 1 10.0.0.1").status == 64
    assert vnet.cmd("ping -c 0 10.0.0.1").status == 64
    assert vnet.cmd("ping -c 1 -s 70000 10.0.0.1").status == 64
    assert vnet.cmd("ping -c 1 -S 10.9.9.9 127.0.0.1").output == \
        "ping: bind: Can't assign requested address\n"
    res = vnet.cmd("ping -c 1 10.1.2.3")  # no route at all
    assert res.status == 2
    assert "ping: sendto: Network is unreachable" in res.output


def test_ping_whose_vnet_is_destroyed_prints_its_statistics_and_why() -> None:
    """The destroy closes ping's socket mid-wait: statistics so far, then the reason."""
    kernel, vnets, _links = build_chain(nrouters=1)
    kernel.call_later(2.5, kernel.destroy, vnets[0])  # after the third reply, before the 4th
    res = vnets[0].cmd("ping -c 10 10.0.1.2")
    lines = res.output.splitlines()
    assert res.status == 1, res.output
    assert [line.split(":")[1] for line in lines[1:4]] == [" icmp_seq=0 ttl=63 time=80.000 ms",
                                                          " icmp_seq=1 ttl=63 time=40.000 ms",
                                                          " icmp_seq=2 ttl=63 time=40.000 ms"]
    assert lines[4:] == [
        "", "--- 10.0.1.2 ping statistics ---",
        "3 packets transmitted, 3 packets received, 0.0% packet loss",
        "round-trip min/avg/max/stddev = 40.000/53.333/80.000/18.856 ms",
        f"ping: vnet {vnets[0].display_name} was destroyed"]
    assert "Bad file descriptor" not in res.output


def test_ping_of_a_destroyed_vnet_and_of_a_survivor() -> None:
    kernel, vnets, _links = build_chain(nrouters=1)
    kernel.call_later(2.5, kernel.destroy, vnets[2])  # the far end goes: ping just loses
    res = vnets[0].cmd("ping -c 4 10.0.1.2")
    assert res.status == 0 and "was destroyed" not in res.output  # some replies came
    assert "4 packets transmitted, 3 packets received, 25.0% packet loss" in res.output
    res = vnets[2].cmd("ping -c 1 10.0.0.1")
    assert res.status == 1 and res.output.endswith("is destroyed\n")
