"""`nat N config|show|delete` (vimage.netpfil.nat.command): ipfw(8)'s grammar, the text
`ipfw nat N show config` prints (sbin/ipfw/nat.c nat_show_cfg), ipfw's error messages,
`nat show` (libalias's log line for instances configured with `log`), and the
net.inet.ip.alias.* sysctls."""

from __future__ import annotations

import pytest
from scapy.all import IP, UDP, raw

from vimage.kernel import Kernel
from vimage.netpfil.nat import command


@pytest.fixture
def vnet():
    return Kernel(clock="virtual", seed=1).create("r")


def nat(vnet, line: str) -> str:
    return command(vnet, line.split())


@pytest.mark.parametrize("config, shown", [
    ("ip 192.0.2.1", "ip 192.0.2.1"),
    ("if em0 reset", "if em0 reset"),
    # modes print in nat.c's order whatever order they were given in
    ("reverse same_ports ip 192.0.2.1 deny_in log unreg_only",
     "ip 192.0.2.1 log deny_in same_ports unreg_only reverse"),
    ("ip 192.0.2.1 redirect_port tcp 10.0.0.2:80 8080",
     "ip 192.0.2.1 redirect_port tcp 10.0.0.2:80 8080"),
    ("ip 192.0.2.1 redirect_port udp 10.0.0.2:5000-5009 192.0.2.9:6000-6009 198.51.100.1:53",
     "ip 192.0.2.1 redirect_port udp 10.0.0.2:5000-5009 192.0.2.9:6000-6009 "
     "198.51.100.1:53"),
    ("ip 192.0.2.1 redirect_addr 10.0.0.2 192.0.2.50 redirect_proto gre 10.0.0.3",
     "ip 192.0.2.1 redirect_addr 10.0.0.2 192.0.2.50 redirect_proto gre 10.0.0.3"),
    ("ip 192.0.2.1 redirect_proto esp 10.0.0.3 192.0.2.51 198.51.100.2 port_range 20000-29999",
     "ip 192.0.2.1 redirect_proto esp 10.0.0.3 192.0.2.51 198.51.100.2 "
     "port_range 20000-29999"),
])
def test_config_is_printed_back_as_ipfw_shows_it(vnet, config, shown):
    assert nat(vnet, f"nat 5 config {config}") == f"ipfw nat 5 config {shown}\n"
    assert nat(vnet, "nat 5 show config") == f"ipfw nat 5 config {shown}\n"
    # what show config prints configures the same instance again
    again = Kernel(clock="virtual", seed=1).create("x")
    assert nat(again, nat(vnet, "nat 5 show config").removeprefix("ipfw ")) == \
        f"ipfw nat 5 config {shown}\n"


@pytest.mark.parametrize("line, message", [
    ("nat", "missing nat id"),
    ("nat 0 config ip 1.2.3.4", "illegal nat id: 0"),
    ("nat x config", "illegal nat id: x"),
    ("nat 1", "missing option"),
    ("nat 1 config", "missing option"),
    ("nat 1 config ip", "missing option"),
    ("nat 1 config ip 300.1.1.1", "bad ip address ``300.1.1.1''"),
    ("nat 1 config ip 1.2.3.4 bogus", "unrecognised option ``bogus''"),
    ("nat 1 config redirect_addr 10.0.0.1", "redirect_addr: not enough arguments"),
    ("nat 1 config redirect_port tcp 10.0.0.1:80", "redirect_port: not enough arguments"),
    ("nat 1 config redirect_port icmp 10.0.0.1:80 80", "redirect_port: unknown protocol icmp"),
    ("nat 1 config redirect_port tcp 10.0.0.1 80", "redirect_port: invalid local port range"),
    ("nat 1 config redirect_port tcp 10.0.0.1:80 0", "redirect_port: invalid public port range"),
    ("nat 1 config redirect_port tcp 10.0.0.1:80-81 80",
     "redirect_port: port ranges must be equal in size"),
    ("nat 1 config redirect_proto nosuch 10.0.0.1", "redirect_proto: unknown protocol nosuch"),
    ("nat 1 config port_range 100-200", "invalid port_range ``100-200''"),
    ("nat 1 show bogus", "Please specify action. Available: config,log"),
    ("nat 9 show config", "Error getting nat 9 instance info"),
    ("nat 9 delete", "nat 9 not found"),
])
def test_bad_input_is_refused_with_ipfw_message(vnet, line, message):
    with pytest.raises(ValueError) as err:
        nat(vnet, line)
    assert str(err.value) == message
    assert vnet.ipfw_nat.instances == {}  # nothing half-configured


def test_reconfiguring_keeps_the_links_delete_drops_them(vnet):
    nat(vnet, "nat 1 config ip 192.0.2.1")
    pkt = raw(IP(src="10.0.0.2", dst="192.0.2.7") / UDP(sport=1, dport=2))
    vnet.ipfw_nat.translate(1, pkt, None, True)
    inst = vnet.ipfw_nat.instances[1]
    nat(vnet, "nat 1 config ip 192.0.2.1 same_ports")
    assert vnet.ipfw_nat.instances[1] is inst and len(inst.out) == 1
    nat(vnet, "nat 1 delete")
    assert vnet.ipfw_nat.instances == {} and inst.out == {} and inst.timer is None
    assert vnet.ipfw_nat.translate(1, pkt, None, True) is None


def test_show_prints_the_log_of_instances_with_log(vnet):
    nat(vnet, "nat 1 config ip 192.0.2.1 log")
    nat(vnet, "nat 2 config ip 192.0.2.2")
    for sport in (1, 2):
        pkt = raw(IP(src="10.0.0.2", dst="192.0.2.7") / UDP(sport=sport, dport=2))
        vnet.ipfw_nat.translate(1, pkt, None, True)
    assert nat(vnet, "nat show") == nat(vnet, "nat show log") == nat(vnet, "nat 1 show") == (
        "nat 1: icmp=0, udp=2, tcp=0, sctp=0, pptp=0, proto=0, frag_id=0 frag_ptr=0 / tot=2\n"
        "nat 1: translated out 2, in 0, passed 0; links made 2, expired 0; dropped: "
        "deny_in 0, table full 0, no free port 0, malformed 0\n")
    assert nat(vnet, "nat 2 show") == ""
    assert nat(vnet, "nat show config") == (
        "ipfw nat 1 config ip 192.0.2.1 log\nipfw nat 2 config ip 192.0.2.2\n")


def test_timeouts_are_sysctls(vnet):
    names = {"tcp_initial": 300, "tcp_connected": 86400, "tcp_singledead": 90, "tcp_dead": 10,
             "udp_expire": 60, "icmp_expire": 60, "proto_expire": 60, "max_links": 65536}
    for name, value in names.items():
        assert vnet.sysctl(f"net.inet.ip.alias.{name}") == value
    res = vnet.cmd("sysctl net.inet.ip.alias.udp_expire=30")
    assert res.status == 0 and vnet.ipfw_nat.udp_expire == 30
    assert vnet.cmd("sysctl net.inet.ip.alias.max_links=0").status != 0
