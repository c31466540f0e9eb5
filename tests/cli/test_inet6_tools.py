"""The tools' IPv6 parts: ifconfig inet6, ping6 / ping -6, route -6, netstat -f inet6,
netstat -s -p ip6|icmp6, sysctl net.inet6 (ndp is tested with ND in tests/netinet6)."""

from __future__ import annotations

from vimage.kernel import Kernel
from vimage.netinet6 import in6
from vimage.wire import ipv6 as wip6


def two_hosts() -> tuple[Kernel, object, object]:
    k = Kernel(clock="virtual", seed=2)
    a, b = k.create("a"), k.create("b")
    assert k.base.cmd("ifconfig epair0 create").ok
    k.base.cmd("ifconfig epair0a vnet a")
    k.base.cmd("ifconfig epair0b vnet b")
    for vnet, end, addr in ((a, "epair0a", "2001:db8::1"), (b, "epair0b", "2001:db8::2")):
        res = vnet.cmd(f"ifconfig {end} inet6 {addr}/64 up")
        assert res.ok, res.output
    k.run(1.5)
    return k, a, b


def test_ifconfig_inet6_add_alias_delete_and_output():
    k, a, _ = two_hosts()
    ifp = a.iface("epair0a")
    assert a.cmd("ifconfig epair0a inet6 2001:db8:5::1 prefixlen 48 alias").ok
    out = a.cmd("ifconfig epair0a inet6").output.splitlines()
    eui = wip6.ntoa(wip6.LINK_LOCAL_PREFIX | wip6.eui64(ifp.mac))
    assert out[1:] == [
        "\tinet6 2001:db8::1 prefixlen 64",
        f"\tinet6 {eui}%epair0a prefixlen 64 scopeid 0x2",
        "\tinet6 2001:db8:5::1 prefixlen 48 tentative",
    ]
    k.run(1.5)
    assert "2001:db8:5::1 prefixlen 48\n" in a.cmd("ifconfig epair0a").output
    assert a.cmd("ifconfig epair0a inet6 2001:db8:5::1 -alias").ok
    assert "2001:db8:5::" not in a.cmd("ifconfig epair0a").output
    res = a.cmd("ifconfig epair0a inet6 2001:db8:5::1 delete")
    assert res.status == 1 and "SIOCDIFADDR_IN6" in res.output
    assert a.cmd("ifconfig epair0a inet6 fe80::99%epair0a/64 alias").ok
    assert "\tinet6 fe80::99%epair0a prefixlen 64 tentative scopeid 0x2" in (
        a.cmd("ifconfig epair0a").output)
    assert a.cmd("ifconfig epair0a inet6 ff02::1").status == 1
    assert a.cmd("ifconfig epair0a inet6 -auto_linklocal").ok
    assert "nd6 options=1<PERFORMNUD>" in a.cmd("ifconfig epair0a").output
    assert "\tnd6 options=21<PERFORMNUD,AUTO_LINKLOCAL>" in a.cmd("ifconfig lo0").output


def test_auto_linklocal_off_gives_no_link_local_address():
    k = Kernel(clock="virtual", seed=3)
    v = k.create("v")
    v.cmd("ifconfig epair0 create")
    assert v.cmd("ifconfig epair0a inet6 -auto_linklocal up").ok
    assert in6.addrs(v.iface("epair0a")) == []
    assert v.cmd("ifconfig epair0b up").ok
    assert len(in6.addrs(v.iface("epair0b"))) == 1


def test_ping6_global_link_local_and_ping_dash_6():
    _, a, b = two_hosts()
    res = a.cmd("ping6 -c 2 2001:db8::2")
    assert res.ok and "2 packets transmitted, 2 packets received, 0.0% packet loss" in res.output
    ll = wip6.ntoa(wip6.LINK_LOCAL_PREFIX | wip6.eui64(b.iface("epair0b").mac))
    res = a.cmd(f"ping6 -c 1 {ll}%epair0a")
    assert res.ok, res.output
    assert f"64 bytes from {ll}%epair0a, icmp_seq=0 hlim=64 time=" in res.output
    res = a.cmd(f"ping -6 -c 1 -I epair0a {ll}")
    assert res.ok and f"--- {ll} ping6 statistics ---" in res.output
    res = a.cmd(f"ping6 -c 1 {ll}")
    assert res.status == 1 and "needs a zone" in res.output
    assert a.cmd("ping6 -c 1 ::1").ok
    res = a.cmd("ping6 -c 1 -W 100 2001:db8::77")
    assert res.status == 2 and "1 packets transmitted, 0 packets received" in res.output
    assert a.cmd("ping6 2001:db8::2").status == 64


def test_route_6_add_get_delete_and_netstat():
    _, a, b = two_hosts()
    ll = wip6.ntoa(wip6.LINK_LOCAL_PREFIX | wip6.eui64(b.iface("epair0b").mac))
    res = a.cmd(f"route add -inet6 default {ll}%epair0a")
    assert res.output == f"add net default: gateway {ll}%epair0a\n"
    res = a.cmd("route -6 add 2001:db8:9::/48 2001:db8::2")
    assert res.output == "add net 2001:db8:9::: gateway 2001:db8::2\n"
    get = a.cmd("route -6 get 2001:db8:9::1").output.splitlines()
    assert get[:5] == ["   route to: 2001:db8:9::1", "destination: 2001:db8:9::",
                       "       mask: ffff:ffff:ffff::", "    gateway: 2001:db8::2",
                       "        fib: 0"]
    assert get[5:7] == ["  interface: epair0a", "      flags: <UP,GATEWAY,DONE,STATIC>"]
    assert "gateway: " + ll in a.cmd("route -6 get 2001:db8:77::1").output
    res = a.cmd("route -6 add 2001:db8:9::/48 2001:db8::2")
    assert res.status == 1 and "File exists" in res.output
    assert a.cmd("route -6 add 2001:db8:a::/48 2001:db8:33::1").status == 1  # unreachable
    rn = a.cmd("netstat -rn -f inet6").output.splitlines()
    assert rn[:4] == ["Routing tables", "", "Internet6:",
                      "Destination                       Gateway                       "
                      "Flags     Netif Expire"]
    rows = {line.split()[0]: line.split()[1:] for line in rn[4:]}
    assert rows["default"] == [f"{ll}%epair0a", "UGS", "epair0a"]
    assert rows["2001:db8:9::/48"] == ["2001:db8::2", "UGS", "epair0a"]
    assert rows["2001:db8::/64"] == ["link#2", "U", "epair0a"]
    assert rows["2001:db8::1"] == ["link#2", "UHS", "lo0"]
    assert rows["::1"] == ["link#1", "UHS", "lo0"]
    assert rows["fe80::%lo0/64"] == ["link#1", "U", "lo0"]
    assert rows["fe80::%epair0a/64"] == ["link#2", "U", "epair0a"]
    assert a.cmd("netstat -6 -rn").output == a.cmd("netstat -rn -f inet6").output
    assert a.cmd("route -6 delete 2001:db8:9::/48").ok
    assert a.cmd("route -6 delete 2001:db8:9::/48").status == 1
    assert a.cmd("ping6 -c 1 2001:db8:77::1").status == 2  # out the default route
    assert a.nd6.lookup(a.iface("epair0a"), wip6.aton(ll)) is not None


def test_netstat_s_ip6_and_icmp6():
    _, a, b = two_hosts()
    assert a.cmd("ping6 -c 3 2001:db8::2").ok
    out = b.cmd("netstat -s -p ip6").output
    assert out.startswith("ip6:\n\t")
    assert "\t0 with size smaller than minimum\n" in out
    assert "\t0 packets not forwardable\n" in out
    icmp6 = b.cmd("netstat -s -p icmp6").output
    assert "\tOutput histogram:\n" in icmp6 and "\t\techo reply: 3\n" in icmp6
    assert "\tInput histogram:\n" in icmp6 and "\t\techo: 3\n" in icmp6
    assert "\t\tneighbor solicitation: " in icmp6
    assert "\t3 message responses generated\n" in icmp6
    assert "\t0 path MTU changes\n" in icmp6
    b.cmd("netstat -s -z -p icmp6")
    assert "echo reply" not in b.cmd("netstat -s -p icmp6").output


def test_sysctl_net_inet6():
    _, a, _ = two_hosts()
    out = a.cmd("sysctl net.inet6").output
    for line in ("net.inet6.ip6.forwarding: 0", "net.inet6.ip6.hlim: 64",
                 "net.inet6.ip6.maxfragpackets: 1024", "net.inet6.ip6.maxfrags: 4096",
                 "net.inet6.ip6.maxfragsperpacket: 64", "net.inet6.ip6.dad_count: 1",
                 "net.inet6.icmp6.errppslimit: 100", "net.inet6.icmp6.nd6_delay: 5",
                 "net.inet6.icmp6.nd6_umaxtries: 3", "net.inet6.icmp6.nd6_mmaxtries: 3"):
        assert line in out.splitlines(), line
    assert a.cmd("sysctl net.inet6.ip6.hlim=7").ok
    assert " icmp_seq=0 hlim=7 " in a.cmd("ping6 -c 1 ::1").output  # the reply's hop limit
    assert a.cmd("sysctl net.inet6.ip6.hlim=0").status == 1


def test_route_6_change_and_flush_and_ping6_from_a_chosen_source():
    _, a, _ = two_hosts()
    assert a.cmd("ifconfig epair0a inet6 2001:db8::7/64 alias").ok
    a.kernel.run(1.5)
    assert a.cmd("route -6 add 2001:db8:9::/48 2001:db8::2").ok
    assert a.cmd("route -6 change 2001:db8:9::/48 2001:db8::3").ok
    assert "    gateway: 2001:db8::3" in a.cmd("route -6 get 2001:db8:9::1").output
    res = a.cmd("route -6 flush")
    assert res.output.split() == ["2001:db8:9::/48", "2001:db8::3", "done"]
    assert a.cmd("route -6 get 2001:db8:9::1").status == 1
    res = a.cmd("ping6 -c 1 -S 2001:db8::7 2001:db8::2")
    assert res.ok and res.output.startswith("PING6(104=40+8+56 bytes) 2001:db8::7 --> ")
