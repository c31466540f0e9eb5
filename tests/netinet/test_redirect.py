"""ICMP redirects: FreeBSD's tests/sys/netinet/redirect.sh ported (a scapy-built redirect
installs a host route that `route get` shows), the RFC 1122 checks a host makes, and a
router sending them (net.inet.ip.redirect) as FreeBSD's ip_forward does."""

from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, UDP, Ether, raw

from vimage.kernel import Kernel
from vimage.net.route import RTF_DYNAMIC, RTF_MODIFIED
from vimage.vnet import Vnet

LOCAL = "192.0.2.2"
REMOTE_RTR = "192.0.2.3"
REMOTE_RTR_MAC = "00:00:5e:00:53:42"
NEW_RTR = "192.0.2.4"
DST = "198.51.100.42"


def ok(vnet: Vnet | Kernel, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line!r} failed: {result.output}"
    return result.output


@pytest.fixture
def host() -> tuple[Kernel, Vnet]:
    """redirect.sh's jail: 192.0.2.2/24, 198.51.100.0/24 via the remote router."""
    k = Kernel(clock="virtual", seed=4)
    j = k.create("j")
    ok(k, "ifconfig epair create")
    ok(k, "ifconfig epair0b vnet j")
    ok(j, "ifconfig epair0b up")
    ok(j, f"ifconfig epair0b inet {LOCAL}/24")
    ok(j, f"arp -s {REMOTE_RTR} {REMOTE_RTR_MAC}")
    ok(j, f"route add -4 -net 198.51.100.0/24 {REMOTE_RTR}")
    return k, j


def redirect(j: Vnet, *, sip: str = REMOTE_RTR, gw: str = NEW_RTR, route: str = DST,
             code: int = 1) -> None:
    """What redirect.py sends: from the router, about a datagram of ours to `route`."""
    ifp = j.ifaces["epair0b"]
    frame = (Ether(src=REMOTE_RTR_MAC, dst=ifp.mac.hex(":"))
             / IP(src=sip, dst=LOCAL) / ICMP(type=5, code=code, gw=gw)
             / IP(src=LOCAL, dst=route) / UDP(sport=12345, dport=53))
    ifp.input(raw(frame))
    j.kernel.run(0.01)


def route_line(j: Vnet, dest: str) -> list[str]:
    for line in ok(j, "netstat -rn -f inet").splitlines():
        if line.split()[:1] == [dest]:
            return line.split()
    return []


def test_valid_redirect(host: tuple[Kernel, Vnet]) -> None:
    """redirect.sh valid_redirect: `route -n get -4 DST` names DST as its destination."""
    _k, j = host
    redirect(j)
    out = ok(j, f"route -n get -4 {DST}")
    assert sum(1 for line in out.splitlines()
               if "destination" in line and DST in line) == 1
    assert f"gateway: {NEW_RTR}" in out
    assert "flags: <UP,GATEWAY,HOST,DYNAMIC,DONE>" in out
    assert route_line(j, DST)[1:3] == [NEW_RTR, "UGHD"]


def test_redirect_route_expires(host: tuple[Kernel, Vnet]) -> None:
    k, j = host
    ok(j, "sysctl net.inet.icmp.redirtimeout=30")
    redirect(j)
    route = j.rt.get(0xC6336400 | 42, 32)
    assert route is not None and route.expire
    assert route_line(j, DST)[-1] == "29"  # netstat's Expire column, 10 ms later
    k.run(29)
    assert j.rt.get(0xC633642A, 32) is not None
    k.run(2)
    assert j.rt.get(0xC633642A, 32) is None
    assert route_line(j, DST) == []
    assert k.sched.pending_timers(j) == 0 or all(
        e.timer is not None for e in j.arp.table.values())


def test_second_redirect_modifies_the_dynamic_route(host: tuple[Kernel, Vnet]) -> None:
    _k, j = host
    redirect(j)
    redirect(j, sip=NEW_RTR, gw="192.0.2.5")  # from the gateway now in use
    route = j.rt.get(0xC633642A, 32)
    assert route is not None and route.gateway == 0xC0000205
    assert route.flags & (RTF_DYNAMIC | RTF_MODIFIED) == RTF_DYNAMIC | RTF_MODIFIED
    assert route_line(j, DST)[1:3] == ["192.0.2.5", "UGHDM"]


@pytest.mark.parametrize("case", ["not_first_hop", "gateway_off_link", "gateway_is_us",
                                  "directly_connected", "static_host_route", "bad_code",
                                  "drop_redirect", "router"])
def test_redirect_ignored(host: tuple[Kernel, Vnet], case: str) -> None:
    """RFC 1122 3.2.2.2 as FreeBSD's icmp_verify_redirect_gateway: each of these leaves
    the routing table alone."""
    _k, j = host
    route = DST
    kwargs: dict[str, object] = {}
    if case == "not_first_hop":
        kwargs["sip"] = "192.0.2.9"  # not our gateway for DST
    elif case == "gateway_off_link":
        kwargs["gw"] = "203.0.113.1"
    elif case == "gateway_is_us":
        kwargs["gw"] = LOCAL
    elif case == "directly_connected":
        route = "192.0.2.77"  # on our own subnet: no gateway to be redirected from
    elif case == "static_host_route":
        ok(j, f"route add -host {DST} {REMOTE_RTR}")
    elif case == "bad_code":
        kwargs["code"] = 4
    elif case == "drop_redirect":
        ok(j, "sysctl net.inet.icmp.drop_redirect=1")
    elif case == "router":
        ok(j, "sysctl net.inet.ip.forwarding=1")  # RFC 1812 5.2.7.2
    before = sorted((r.dst, r.plen, r.gateway, r.flags) for r in j.rt.routes())
    redirect(j, route=route, **kwargs)  # type: ignore[arg-type]
    assert sorted((r.dst, r.plen, r.gateway, r.flags) for r in j.rt.routes()) == before
    if case == "bad_code":
        assert j.icmp.stats.badcode == 1


@pytest.fixture
def lan() -> tuple[Kernel, Vnet, Vnet]:
    """h (10.0.1.1) -- r (10.0.1.2); r reaches 10.0.9.0/24 via 10.0.1.3 on the same link,
    h's default route is r."""
    k = Kernel(clock="virtual", seed=6)
    h, r = k.create("h"), k.create("r")
    for line in ("ifconfig epair create", "ifconfig epair0a vnet h",
                 "ifconfig epair0b vnet r"):
        ok(k, line)
    ok(h, "ifconfig epair0a 10.0.1.1/24")
    ok(r, "ifconfig epair0b 10.0.1.2/24")
    ok(r, "sysctl net.inet.ip.forwarding=1")
    ok(r, "route add -net 10.0.9.0/24 10.0.1.3")
    ok(h, "route add default 10.0.1.2")
    k.run(1)
    return k, h, r


def _send(k: Kernel, h: Vnet, dst: str = "10.0.9.9") -> None:
    h.socket(2, 2).sendto(b"x", (dst, 9))
    k.run(0.5)


def test_router_sends_host_redirect_and_host_takes_it(lan: tuple[Kernel, Vnet, Vnet]) -> None:
    k, h, r = lan
    icmp = h.socket(2, 3, 1)
    icmp.setblocking(False)
    _send(k, h)
    assert r.ip.stats.redirectsent == 1 and r.icmp.stats.outhist[5] == 1
    pkt = icmp.recv(200)
    assert pkt[20:22] == b"\x05\x01"  # redirect, for the host
    assert pkt[24:28] == bytes([10, 0, 1, 3])
    assert route_line(h, "10.0.9.9")[1:3] == ["10.0.1.3", "UGHD"]
    assert "\t1 redirect sent\n" in ok(r, "netstat -s -p ip")  # inet.c's singular
    # the packet was forwarded all the same
    assert r.ip.stats.forward == 1


def test_every_packet_that_would_earn_a_redirect_gets_one(lan: tuple[Kernel, Vnet, Vnet]) -> None:
    """Once the route and next hop are cached the forwarding fast path (ip_tryforward)
    would take the packet; it leaves packets that earn a redirect to ip_forward, as
    FreeBSD does, so each of them gets one (the host here ignores redirects)."""
    k, h, r = lan
    ok(h, "sysctl net.inet.icmp.drop_redirect=1")
    ok(r, "arp -s 10.0.1.3 02:00:00:00:01:03")  # the next hop resolved: fast path material
    for n in range(1, 4):
        _send(k, h)
        assert (r.ip.stats.redirectsent, r.ip.stats.forward) == (n, n)


def test_router_sends_no_redirect_when_disabled(lan: tuple[Kernel, Vnet, Vnet]) -> None:
    k, h, r = lan
    assert ok(r, "sysctl -n net.inet.ip.redirect").strip() == "1"  # FreeBSD's default
    ok(r, "sysctl net.inet.ip.redirect=0")
    _send(k, h)
    assert r.ip.stats.redirectsent == 0 and route_line(h, "10.0.9.9") == []


def test_no_redirect_for_a_default_route(lan: tuple[Kernel, Vnet, Vnet]) -> None:
    k, h, r = lan
    ok(r, "route add default 10.0.1.3")
    _send(k, h, "203.0.113.5")
    assert r.ip.stats.redirectsent == 0 and r.ip.stats.forward == 1


def test_no_redirect_when_leaving_by_another_interface(lan: tuple[Kernel, Vnet, Vnet]) -> None:
    k, h, r = lan
    ok(k, "ifconfig epair create")
    ok(k, "ifconfig epair1a vnet r")
    ok(r, "ifconfig epair1a 10.0.2.1/24")
    ok(r, "route add -net 10.0.8.0/24 10.0.2.9")
    _send(k, h, "10.0.8.8")
    assert r.ip.stats.redirectsent == 0


def test_destroying_a_host_with_a_redirect_route_leaves_no_timer(
        host: tuple[Kernel, Vnet]) -> None:
    k, j = host
    redirect(j)
    assert j.rt.get(0xC633642A, 32) is not None and k.sched.pending_timers(j) > 0
    k.destroy("j")
    assert k.sched.pending_timers(j) == 0


def test_log_redirect(host: tuple[Kernel, Vnet], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    _k, j = host
    ok(j, "sysctl net.inet.icmp.log_redirect=1")
    with caplog.at_level(logging.INFO, logger="vimage.icmp"):
        redirect(j)
    assert [r.getMessage() for r in caplog.records] == [
        f"icmp redirect from {REMOTE_RTR}: {DST} => {NEW_RTR} (vnet j)"]
