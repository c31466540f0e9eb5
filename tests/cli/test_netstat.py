"""netstat(1): routes, protocol statistics, interfaces and sockets."""

from __future__ import annotations

import re

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.net.route import RTF_GATEWAY, RTF_STATIC, Route
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW
from vimage.vnet import Vnet
from vimage.wire.ipv4 import aton


def build_pair(seed: int = 5) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet]:
    """Vnet a (10.0.0.1/24, default via 10.0.0.2) and vnet b (10.0.0.2/24) on epair0."""
    kernel = Kernel(clock="virtual", seed=seed)
    a = kernel.create("a")
    b = kernel.create("b")
    ifa, ifb = kernel.epair()
    ifa.move_to(a)
    ifb.move_to(b)
    ifa.add_addr("10.0.0.1/24")
    ifb.add_addr("10.0.0.2/24")
    ifa.set_up(True)
    ifb.set_up(True)
    a.rt.add(Route(0, 0, ifa, RTF_GATEWAY | RTF_STATIC, gateway=aton("10.0.0.2")))
    kernel.run(1)
    return kernel, a, b, ifa, ifb


def build_router() -> tuple[Kernel, Vnet, Vnet, Vnet]:
    """h1 (10.0.0.1) - r (10.0.0.2 | 10.0.1.1) - h2 (10.0.1.2), r forwards."""
    kernel = Kernel(clock="virtual", seed=9)
    h1, r, h2 = (kernel.create(n) for n in ("h1", "r", "h2"))
    a, ra = kernel.epair()
    rb, b = kernel.epair()
    for ifp, vnet, addr in ((a, h1, "10.0.0.1/24"), (ra, r, "10.0.0.2/24"),
                            (rb, r, "10.0.1.1/24"), (b, h2, "10.0.1.2/24")):
        ifp.move_to(vnet)
        ifp.add_addr(addr)
        ifp.set_up(True)
    r.sysctl("net.inet.ip.forwarding", 1)
    h1.rt.add(Route(0, 0, a, RTF_GATEWAY | RTF_STATIC, gateway=aton("10.0.0.2")))
    h2.rt.add(Route(0, 0, b, RTF_GATEWAY | RTF_STATIC, gateway=aton("10.0.1.1")))
    kernel.run(1)
    return kernel, h1, r, h2


def stat(output: str, label: str) -> int:
    """The number on the `netstat -s` line ending with `label`."""
    match = re.search(rf"^\t(\d+) {re.escape(label)}$", output, re.M)
    assert match, f"no line {label!r} in:\n{output}"
    return int(match.group(1))


def test_netstat_rn_lists_exactly_the_routes() -> None:
    _kernel, a, _b, _ifa, _ifb = build_pair()
    res = a.cmd("netstat -rn")
    assert res.status == 0
    assert res.output.splitlines() == [
        "Routing tables",
        "",
        "Internet:",
        "Destination        Gateway            Flags     Netif Expire",
        "default            10.0.0.2           UGS     epair0a",
        "10.0.0.0/24        link#2             U       epair0a",
        "10.0.0.1           link#2             UHS         lo0",
        "127.0.0.1          link#1             UH          lo0",
    ]
    assert a.cmd("netstat -r").output == res.output
    assert a.cmd("netstat -rn -f inet").output == res.output
    a.rt.add(Route(aton("192.168.7.0"), 24, a.iface("epair0a"), RTF_GATEWAY | RTF_STATIC,
                   gateway=aton("10.0.0.3")))
    assert "192.168.7.0/24     10.0.0.3           UGS     epair0a" in a.cmd("netstat -rn").output


def test_netstat_s_counters_move_on_a_router() -> None:
    _kernel, h1, r, h2 = build_router()
    before = stat(r.cmd("netstat -s -p ip").output, "packets forwarded")
    assert h1.cmd("ping -c 3 10.0.1.2").status == 0
    out = r.cmd("netstat -s -p ip").output
    assert out.startswith("ip:\n\t")
    assert "udp:" not in out and "icmp:" not in out
    assert stat(out, "packets forwarded") == before + 6  # 3 requests + 3 replies
    icmp_out = h2.cmd("netstat -s -p icmp").output
    assert "\tOutput histogram:\n\t\techo reply: 3\n" in icmp_out
    assert "\tInput histogram:\n\t\techo: 3\n" in icmp_out
    assert stat(icmp_out, "message responses generated") == 3
    # the histograms sit where FreeBSD prints them
    lines = icmp_out.splitlines()
    assert lines.index("\tOutput histogram:") < lines.index("\t0 messages with bad code fields")
    assert lines.index("\tInput histogram:") < lines.index("\t3 message responses generated")
    assert "\t\techo reply: 3" in h1.cmd("netstat -s -p icmp").output.split("Input")[1]


def test_netstat_s_all_protocols_zero_suppression_and_reset() -> None:
    _kernel, h1, _r, _h2 = build_router()
    h1.cmd("ping -c 1 10.0.1.2")
    out = h1.cmd("netstat -s").output
    headers = [line for line in out.splitlines() if not line.startswith("\t")]
    assert headers == ["udp:", "ip:", "icmp:", "arp:"]
    assert "\t0 bad header checksums" in out
    assert stat(out, "ARP requests sent") >= 1
    terse = h1.cmd("netstat -ss").output
    assert "\t0 " not in terse
    assert "packets sent from this host" in terse
    h1.cmd("netstat -s -z -p arp")
    assert stat(h1.cmd("netstat -s -p arp").output, "ARP requests sent") == 0
    assert h1.cmd("netstat -s -p ip").output != h1.cmd("netstat -ss -p ip").output


def test_netstat_i_counts_grow_with_traffic() -> None:
    _kernel, a, _b, ifa, _ifb = build_pair()
    res = a.cmd("netstat -i")
    lines = res.output.splitlines()
    assert lines[0] == ("Name      Mtu Network            Address                   Ipkts Ierrs "
                        "Idrop     Opkts Oerrs  Coll")
    assert lines[1].split() == ["lo0", "16384", "<Link#1>", "lo0", "0", "0", "0", "0", "0", "0"]
    assert lines[2].split() == ["lo0", "-", "127.0.0.0/8", "127.0.0.1", "-", "-", "-", "-",
                                "-", "-"]
    mac = ":".join(f"{x:02x}" for x in ifa.mac)
    link = lines[3].split()
    assert link[:4] == ["epair0a", "1500", "<Link#2>", mac]
    assert lines[4].split()[:4] == ["epair0a", "-", "10.0.0.0/24", "10.0.0.1"]
    ipkts, opkts = int(link[4]), int(link[7])
    assert a.cmd("ping -c 4 10.0.0.2").status == 0
    link = a.cmd("netstat -in").output.splitlines()[3].split()
    assert int(link[4]) >= ipkts + 4 and int(link[7]) >= opkts + 4
    assert (int(link[4]), int(link[7])) == (ifa.ipackets, ifa.opackets)


def test_netstat_ib_and_down_interfaces() -> None:
    _kernel, a, _b, ifa, _ifb = build_pair()
    a.cmd("ping -c 1 10.0.0.2")
    out = a.cmd("netstat -ib").output.splitlines()
    assert out[0].split() == ["Name", "Mtu", "Network", "Address", "Ipkts", "Ierrs", "Idrop",
                              "Ibytes", "Opkts", "Oerrs", "Obytes", "Coll"]
    row = out[3].split()
    assert (int(row[7]), int(row[10])) == (ifa.ibytes, ifa.obytes)
    assert ifa.obytes > 0
    ifa.set_up(False)
    out = a.cmd("netstat -i -I epair0a").output.splitlines()
    assert len(out) == 3
    assert out[1].split()[:3] == ["epair0a*", "1500", "<Link#2>"]
    assert a.cmd("netstat -I nosuch0").status == 1


def test_netstat_an_lists_sockets() -> None:
    _kernel, a, b, _ifa, _ifb = build_pair()
    bound = a.socket(AF_INET, SOCK_DGRAM)
    bound.bind(("10.0.0.1", 5000))
    server = a.socket(AF_INET, SOCK_DGRAM)
    server.bind(("", 53))
    conn = a.socket(AF_INET, SOCK_DGRAM)
    conn.connect(("10.0.0.2", 53))
    raw = a.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
    peer = b.socket(AF_INET, SOCK_DGRAM)
    peer.sendto(b"x" * 17, ("10.0.0.1", 5000))
    a.kernel.run(1)
    lport = conn.getsockname()[1]
    res = a.cmd("netstat -an")
    assert res.status == 0
    assert res.output.splitlines() == [
        "Active Internet connections (including servers)",
        "Proto Recv-Q Send-Q Local Address          Foreign Address        (state)",
        "udp4      17      0 10.0.0.1.5000          *.*                    ",
        "udp4       0      0 *.53                   *.*                    ",
        f"udp4       0      0 {'10.0.0.1.' + str(lport):<22} 10.0.0.2.53            ",
        "icm4       0      0 *.*                    *.*                    ",
    ]
    plain = a.cmd("netstat -n").output.splitlines()
    assert plain[0] == "Active Internet connections"
    assert len(plain) == 4  # the wildcard-address sockets are servers: -a only
    assert all("*.53" not in line for line in plain)
    only_icmp = a.cmd("netstat -a -p icmp").output.splitlines()
    assert [line.split()[0] for line in only_icmp[2:]] == ["icm4"]
    for s in (bound, server, conn, raw, peer):
        s.close()
    assert len(a.cmd("netstat -a").output.splitlines()) == 2


def test_netstat_usage_errors() -> None:
    _kernel, a, _b, _ifa, _ifb = build_pair()
    for line in ("netstat -x", "netstat -s -p tcp", "netstat -rn -f inet6", "netstat -r foo",
                 "netstat -p arp"):
        res = a.cmd(line)
        assert res.status == 64, line
        assert len(res.output.splitlines()) == 1
        assert res.output.startswith("netstat: ")
