"""netstat(1): routes, protocol statistics, interfaces and sockets."""

from __future__ import annotations

import re

from vimage.cli.netstat import counted
from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.net.route import RTF_GATEWAY, RTF_STATIC, Route
from vimage.socket.socket import (
    AF_INET,
    IPPROTO_ICMP,
    SO_RCVBUF,
    SOCK_DGRAM,
    SOCK_RAW,
    SOCK_STREAM,
    SOL_SOCKET,
)
from vimage.socket.tcp_socket import TcpSocket
from vimage.vnet import Vnet
from vimage.wire.ipv4 import aton

from .conftest import error_lines


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


def stat(output: str, label: str, indent: str = "\t") -> int:
    """The number on the `netstat -s` line ending with `label` (plural as given; in the
    singular when the number is 1, as netstat prints it)."""
    for number, rest in re.findall(rf"^{indent}(\d+) (.*)$", output, re.M):
        line = f"{number} {rest}"
        want = counted("{} " + label, int(number))
        if line == want or line.startswith(want + " ("):  # `(N packets fast forwarded)`
            return int(number)
    raise AssertionError(f"no line {label!r} in:\n{output}")


def test_netstat_rn_lists_exactly_the_routes() -> None:
    _kernel, a, _b, _ifa, _ifb = build_pair()
    res = a.cmd("netstat -rn -f inet")
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
    both = a.cmd("netstat -r").output
    assert both.startswith(res.output + "\nInternet6:\n")  # without -f, IPv6 follows
    assert a.cmd("netstat -rn -4").output == res.output
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
    assert headers == ["tcp:", "TCP connection count by state:", "udp:", "ip:", "icmp:",
                       "esp:", "arp:", "ip6:", "icmp6:"]
    assert "\t0 bad header checksums" in out
    assert stat(out, "ARP requests sent") >= 1
    terse = h1.cmd("netstat -ss").output
    # inet6.c prints its `Mbuf statistics` whatever -s -s says
    zeros = [line for line in terse.splitlines() if line.lstrip("\t").startswith("0 ")]
    assert zeros == ["\t\t0 one mbuf", "\t\t0 one ext mbuf", "\t\t0 two or more ext mbuf"]
    assert stat(terse, "packets sent from this host") == 1
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
        "udp4      17      0 10.0.0.1.5000          *.*",
        "udp4       0      0 *.53                   *.*",
        f"udp4       0      0 {'10.0.0.1.' + str(lport):<22} 10.0.0.2.53",
        "icm4       0      0 *.*                    *.*",
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
    for line in ("netstat -x", "netstat -s -p sctp", "netstat -rn -f ipx", "netstat -r foo",
                 "netstat -p arp", "netstat -an -p sctp"):
        res = a.cmd(line)
        assert res.status == 64, line
        assert len(error_lines(res.output, "netstat")) == 1
        assert res.output.startswith("netstat: ")


# -- TCP ------------------------------------------------------------------------------
def tcp_stat(output: str, label: str) -> int:
    """The number on a `netstat -s -p tcp` line (any indentation) ending with `label`."""
    return stat(output, label, "\t+")


def pair(output: str, pattern: str) -> tuple[int, int]:
    """The two numbers of the one line of `output` matching `pattern`."""
    found = re.findall(pattern, output)
    assert len(found) == 1, (pattern, output)
    return int(found[0][0]), int(found[0][1])


def tcp_rows(vnet: Vnet, flags: str = "-an") -> list[str]:
    """The tcp4 rows of `netstat FLAGS` in `vnet`."""
    res = vnet.cmd(f"netstat {flags}")
    assert res.status == 0, res.output
    return [line for line in res.output.splitlines() if line.startswith("tcp4")]


def row(recvq: int, sendq: int, local: str, foreign: str, state: str) -> str:
    return f"tcp4  {recvq:>6} {sendq:>6} {local:<22} {foreign:<22} {state}"


def tcp_connect(a: Vnet, b: Vnet, port: int = 80, rcvbuf: int | None = None,
                backlog: int = 5) -> tuple[TcpSocket, TcpSocket, TcpSocket, str]:
    """A listener on b's *.port, a connection from a accepted: (listener, client,
    server side, client's local address as netstat prints it)."""
    listener = b.socket(AF_INET, SOCK_STREAM)
    if rcvbuf is not None:
        listener.setsockopt(SOL_SOCKET, SO_RCVBUF, rcvbuf)  # inherited by accepted sockets
    listener.bind(("0.0.0.0", port))
    listener.listen(backlog)
    client = a.socket(AF_INET, SOCK_STREAM)
    client.connect(("10.0.0.2", port))
    server, _peer = listener.accept()
    addr, cport = client.getsockname()
    return listener, client, server, f"{addr}.{cport}"


def test_netstat_an_tcp_states_through_a_connection_life() -> None:
    kernel, a, b, _ifa, _ifb = build_pair()
    listener, client, server, cli = tcp_connect(a, b)
    udp = b.socket(AF_INET, SOCK_DGRAM)
    udp.bind(("10.0.0.2", 53))
    kernel.run(1)
    assert tcp_rows(a) == [row(0, 0, cli, "10.0.0.2.80", "ESTABLISHED")]
    assert tcp_rows(b) == [row(0, 0, "*.80", "*.*", "LISTEN"),
                           row(0, 0, "10.0.0.2.80", cli, "ESTABLISHED")]
    # tcp comes before udp, as in FreeBSD; the listener is a server: -a only
    lines = b.cmd("netstat -n").output.splitlines()
    assert lines[2:] == [row(0, 0, "10.0.0.2.80", cli, "ESTABLISHED"),
                         "udp4       0      0 10.0.0.2.53            *.*"]
    # -p tcp / -p udp filter the list
    assert [line.split()[0] for line in b.cmd("netstat -an -p tcp").output.splitlines()[2:]] \
        == ["tcp4", "tcp4"]
    assert [line.split()[0] for line in b.cmd("netstat -an -p udp").output.splitlines()[2:]] \
        == ["udp4"]
    # the client closes first: FIN_WAIT_2 on its side, CLOSE_WAIT on the server's
    client.close()
    kernel.run(1)
    assert tcp_rows(a) == [row(0, 0, cli, "10.0.0.2.80", "FIN_WAIT_2")]
    assert tcp_rows(b, "-n") == [row(0, 0, "10.0.0.2.80", cli, "CLOSE_WAIT")]
    # the server closes: the client waits 2*MSL in TIME_WAIT, the server's row is gone
    server.close()
    kernel.run(1)
    assert tcp_rows(a) == [row(0, 0, cli, "10.0.0.2.80", "TIME_WAIT")]
    assert tcp_rows(a, "-n") == tcp_rows(a)  # a connection, not a server: shown without -a
    assert tcp_rows(b) == [row(0, 0, "*.80", "*.*", "LISTEN")]
    kernel.run(2 * a.tcp.msl / 1000 + 1)
    assert tcp_rows(a) == []
    listener.close()
    udp.close()
    assert tcp_rows(b) == []


def test_netstat_an_tcp_queues_hold_what_nobody_read() -> None:
    """Recv-Q is what the reader has not read, Send-Q what the peer has not taken."""
    kernel, a, b, _ifa, _ifb = build_pair()
    listener, client, server, cli = tcp_connect(a, b, rcvbuf=4096)
    assert client.send(b"x" * 20000) == 20000  # far more than the server's window
    kernel.run(1)
    server_tcb, client_tcb = server.tcb, client.tcb
    assert server_tcb is not None and client_tcb is not None
    recvq, sendq = len(server_tcb.rcv_buf), len(client_tcb.snd_buf)
    assert recvq > 0 and sendq > 0
    assert recvq + sendq == 20000
    assert tcp_rows(a) == [row(0, sendq, cli, "10.0.0.2.80", "ESTABLISHED")]
    assert tcp_rows(b, "-n") == [row(recvq, 0, "10.0.0.2.80", cli, "ESTABLISHED")]
    # the server reads: both queues drain
    got = b""
    while len(got) < 20000:
        got += server.recv(65536)
    kernel.run(1)
    assert tcp_rows(a) == [row(0, 0, cli, "10.0.0.2.80", "ESTABLISHED")]
    assert tcp_rows(b, "-n") == [row(0, 0, "10.0.0.2.80", cli, "ESTABLISHED")]
    # and the other way round: the client does not read the server's answer
    server.sendall(b"y" * 1000)
    kernel.run(1)
    assert tcp_rows(a) == [row(1000, 0, cli, "10.0.0.2.80", "ESTABLISHED")]
    for s in (client, server, listener):
        s.close()


def test_netstat_L_shows_listen_queues() -> None:
    kernel, a, b, _ifa, _ifb = build_pair()
    listener = b.socket(AF_INET, SOCK_STREAM)
    listener.bind(("0.0.0.0", 8080))
    listener.listen(5)
    clients = []
    for _ in range(2):
        c = a.socket(AF_INET, SOCK_STREAM)
        c.connect(("10.0.0.2", 8080))
        clients.append(c)
    kernel.run(1)
    assert b.cmd("netstat -Lan").output.splitlines() == [
        "Current listen queue sizes (qlen/incqlen/maxqlen)",
        "Proto Listen                           Local Address",
        f"tcp4  {'2/0/5':<32} *.8080",
    ]
    listener.accept()[0].close()
    kernel.run(1)
    assert b.cmd("netstat -L").output.splitlines()[2].split() == ["tcp4", "1/0/5", "*.8080"]
    assert len(b.cmd("netstat -L -p udp").output.splitlines()) == 2
    for s in (*clients, listener):
        s.close()


def test_netstat_s_tcp_counters_move() -> None:
    kernel, a, b, _ifa, _ifb = build_pair()
    before = a.cmd("netstat -s -p tcp").output
    assert before.startswith("tcp:\n\t0 packets sent\n\t\t0 data packets (0 bytes)\n")
    assert "udp:" not in before
    listener, client, server, _cli = tcp_connect(a, b)
    client.sendall(b"z" * 5000)
    got = b""
    while len(got) < 5000:
        got += server.recv(65536)
    kernel.run(1)
    out = a.cmd("netstat -s -p tcp").output
    assert tcp_stat(out, "connection requests") == 1
    assert tcp_stat(out, "connections established (including accepts)") == 1
    packets, nbytes = pair(out, r"\t\t(\d+) data packets? \((\d+) bytes?\)\n")
    assert nbytes >= 5000  # (plus any retransmission)
    assert packets >= 4  # 5000 bytes in segments of at most 1460
    assert tcp_stat(out, "packets sent") > packets
    assert pair(out, r"\t\t(\d+) acks? \(for (\d+) bytes?\)\n")[1] >= 5000
    # inet.c's `segments updated rtt (of N attempts)`: the SYN was timed at least
    updated, attempts = pair(out, r"\t(\d+) segments? updated rtt \(of (\d+) attempts?\)\n")
    assert attempts >= 1 and updated >= 1
    srv = b.cmd("netstat -s -p tcp").output
    assert tcp_stat(srv, "connection accepts") == 1
    # FreeBSD's indentation and wording (inet.c: tcps_rcvpack, tcps_rcvbyte)
    assert pair(srv, r"\t\t(\d+) packets? \((\d+) bytes?\) received in-sequence\n")[1] == 5000
    # a SYN to a closed port is answered with a reset
    refused = a.socket(AF_INET, SOCK_STREAM)
    assert refused.connect_ex(("10.0.0.2", 81)) != 0
    assert tcp_stat(b.cmd("netstat -s -p tcp").output, "resets sent") == 1
    assert tcp_stat(a.cmd("netstat -s -p tcp").output, "resets received") == 1
    # tcp comes first in `netstat -s`; -ss hides the zeros; -z resets
    whole = a.cmd("netstat -s").output
    assert whole.startswith("tcp:\n") and whole.index("tcp:") < whole.index("udp:")
    assert "\t0 " not in a.cmd("netstat -ss -p tcp").output
    a.cmd("netstat -s -z -p tcp")
    assert "\t\t0 data packets (0 bytes)\n" in a.cmd("netstat -s -p tcp").output
    for s in (client, server, listener, refused):
        s.close()


def test_statistics_count_in_the_singular_for_one() -> None:
    """netstat's plural(): `1 packet sent`, `2 packets sent` (FreeBSD usr.bin/netstat)."""
    assert counted("{} packets sent", 1) == "1 packet sent"
    assert counted("{} packets sent", 2) == "2 packets sent"
    assert counted("\t{} data packets", 1) == "\t1 data packet"
    assert counted("{} connections established (including accepts)", 1) == (
        "1 connection established (including accepts)")
    assert counted("{} ARP entrys timed out", 1) == "1 ARP entry timed out"
    assert counted("{} with bad checksum", 1) == "1 with bad checksum"
    kernel = Kernel(clock="virtual", seed=1)
    kernel.cmd("ifconfig lo0 up")
    assert kernel.cmd("ping -c 1 127.0.0.1").ok
    out = kernel.cmd("netstat -s -p icmp").output
    assert "\t1 message response generated\n" in out
    assert "\t0 message responses generated\n" not in out
    out = kernel.cmd("netstat -s -p ip").output
    assert "\t2 total packets received\n" in out and "\t0 bad header checksums\n" in out


def test_no_socket_row_ends_in_spaces() -> None:
    """FreeBSD pads the last column (`%-22s`); vimage's output lines never end in a space."""
    _kernel, a, _b, _ifa, _ifb = build_pair()
    udp = a.socket(AF_INET, SOCK_DGRAM)
    udp.bind(("", 53))
    tcp = a.socket(AF_INET, SOCK_STREAM)
    tcp.bind(("", 80))
    tcp.listen(5)
    for line in ("netstat -a", "netstat -an", "netstat -L", "netstat -i", "netstat -rn"):
        out = a.cmd(line).output
        assert out.endswith("\n") and all(row == row.rstrip() for row in out.splitlines()), out
    rows = a.cmd("netstat -a").output.splitlines()
    assert rows[-1].startswith("udp4") and rows[-1].endswith("*.53                   *.*")
