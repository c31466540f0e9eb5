"""Every tool's argument parser, fuzzed with argv lists from a vocabulary of its options,
addresses, numbers, junk and unicode, in virtual time.

Whatever the words, `vnet.cmd` returns: the status is an int, the output is text that ends
in a newline, a usage error (64) starts with a line naming the tool, nothing leaks a
traceback, and the kernel has no fault. Commands that would run for ever by design are
kept out: ping and tcpdump always get a time limit, `iperf3 -s` (a server waits for
clients) is left out, and tcpdump's -r/-w (files on the host) too.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vimage import topo
from vimage.cli import TOOLS

from .conftest import BoundedQueue, bounded_kernel, fuzz_settings

pytestmark = pytest.mark.fuzz

ADDRS = ("10.0.0.1", "10.0.0.2", "10.0.0.9", "127.0.0.1", "0.0.0.0", "255.255.255.255",
         "10.0.0.0/24", "10.0.0.0/33", "10.1.0.0/16", "default", "1.2.3", "999.1.1.1", "::1",
         "localhost", "b", "224.0.0.1", "10.0.0.2/32", "0x0a000001")
NUMBERS = ("0", "1", "-1", "2", "3", "64", "255", "256", "1500", "65535", "65536",
           "2147483648", "99999999999999999999", "1e3", "0x10", "nan", "inf", "-inf", "1.5",
           "0.001", "", "08")
IFACES = ("epair0a", "epair0b", "lo0", "epair9b", "eth0", "epair0a.5", "lo")
MACS = ("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "zz:zz", "0:0:0:0:0:0")
JUNK = ("", "-", "--", "---", "-" + "x" * 300, " ", "\t", "%s%n", "{}", "a=b", "=", "\x00",
        "é", "日本語", "\u202e", "\udcff", "😀", "\n", "'", '"', "\\", "$(reboot)", "--help",
        "-h", "-?", "-Z", "--bogus")

OPTIONS: dict[str, tuple[str, ...]] = {
    "arp": ("-a", "-d", "-i", "-n", "-S", "-s", "-an", "delete", *MACS, "temp", "pub"),
    "dnctl": ("pipe", "queue", "sched", "config", "show", "list", "delete", "flush", "bw",
              "delay", "plr", "queue", "mask", "all", "dst-ip", "src-port", "0xffffffff",
              "buckets", "red", "gred", "0.002/5/15/0.1", "type", "wf2q+", "rr", "fifo", "qfq",
              "weight", "pipe", "1Mbit/s", "64KByte/s", "10KB", "noerror", "-q"),
    "fault": ("list", "log", "partition", "heal", "cut", "restore", "impair", "crash",
              "restart", "at", "in", "a", "b", "1s", "10ms", "loss", "delay", "-b", "50%"),
    "hosts": ("add", "delete", "flush", "lookup", "a", "b", "host.example"),
    "ifconfig": ("-a", "-d", "-l", "-m", "-u", "-v", "inet", "netmask", "up", "down", "mtu",
                 "broadcast", "alias", "-alias", "delete", "create", "destroy", "vnet",
                 "-vnet", "name", "ether", "lladdr", "promisc", "-promisc", "epair", "epair0",
                 "255.255.255.0", "0xffffff00", *MACS),
    "ipfw": ("-q", "-a", "-d", "-e", "-N", "-n", "-S", "-t", "-T", "add", "delete", "flush",
             "list", "show", "zero", "resetlog", "set", "table", "log", "enable", "disable",
             "firewall", "allow", "deny", "count", "reset", "reject", "unreach", "skipto",
             "call", "return", "check-state", "pipe", "nat", "divert", "tee", "fwd", "setfib",
             "tablearg", "from", "to", "any", "me", "ip", "tcp", "udp", "icmp", "ip6",
             "keep-state", "record-state", "limit", "src-addr", "in", "out", "via", "recv",
             "setup", "established", "frag", "tcpflags", "syn,!ack", "icmptypes", "8,0",
             "iplen", "table(t)", "table(t,1)", "create", "type", "addr", "info", "not", "!",
             "{", "}", "or", "log", "logamount", "prob", "0.5", "tag", "tagged", "80,443",
             "1024-65535", "dst-port", "move", "swap", "show"),
    "iperf3": ("-c", "-p", "-t", "-n", "-k", "-i", "-f", "-J", "-V", "-l", "-w", "-P", "-R",
               "-u", "-O", "-B", "-1", "--bidir", "--json", "--client", "--port", "--time",
               "--bytes", "--format", "k", "M", "x"),
    "ndp": ("-a", "-c", "-d", "-n", "-s", "-t", "-an", "temp", "fe80::1%epair0a", "2001:db8::1",
            "fe80::1%nope", "-r", "-p", "-i", "accept_rtadv", "-nud", *MACS),
    "netstat": ("-4", "-6", "-a", "-b", "-d", "-f", "-I", "-i", "-L", "-n", "-p", "-r", "-s",
                "-W", "-z", "inet", "inet6", "link", "tcp", "udp", "icmp", "ip", "arp", "-rn",
                "-sp"),
    "ping": ("-c", "-D", "-i", "-m", "-n", "-o", "-q", "-S", "-s", "-W", "-c1", "-Dq"),
    "ping6": ("-c", "-D", "-h", "-I", "-i", "-m", "-n", "-q", "-S", "-s", "-W", "-c1",
              "fe80::1%lo0", "2001:db8::1", "ff02::1%epair0a", "fe80::1"),
    "route": ("-4", "-6", "-d", "-n", "-q", "-t", "-v", "add", "change", "delete", "flush",
              "get", "show", "-net", "-host", "-netmask", "-interface", "-iface", "-reject",
              "-blackhole", "-mtu", "-static", "-gateway", "-F", "-fib", "-ifp", "-ifa",
              "-prefsrc", "-proto1", "-proto2", "-nostatic", "-expire", "+5", "-hopcount",
              "-weight", "default"),
    "route6d": ("-s", "-q", "-d", "-k", "-S", "-P", "update=1", "timeout=0", "garbage=-1",
                "damping=0/0", "damping=5/1", "max_routes=3", "ripv1", "update=1,timeout=3"),
    "routed": ("-s", "-q", "-d", "-k", "-S", "-P", "-T", "ripv1", "ripv2", "passwd=x",
               "md5_passwd=x|1", "md5_passwd=x|999", "update=1", "timeout=0", "garbage=-1",
               "damping=0/0", "damping=5/1", "max_routes=3", "no_ag", "ripv1,passwd=y"),
    "rtquery": ("-1", "-n", "-r", "-w", "-a", "passwd=x", "md5_passwd=k|3", "md5_passwd=k|x"),
    "setkey": ("-c", "-D", "-P", "-F", "-DP", "-FP", "-v", "-n", "-x", "-4", "-6", "add",
               "spdadd", "esp"),
    "setfib": ("-F", "-F1", "0", "1", "16", "route", "get", "netstat", "-rn", "sysctl",
               "net.my_fibnum", "ifconfig", "setfib"),
    "sysctl": ("-a", "-d", "-e", "-h", "-i", "-N", "-n", "-q", "net", "net.inet",
               "net.inet.ip.forwarding", "net.inet.ip.forwarding=1",
               "net.inet.ip.forwarding=2", "net.inet.tcp.msl=0", "net.inet.ip.ttl=999",
               "net.inet.tcp.cc.algorithm=bbr", "net.inet.tcp.mssdflt=1", "kern.hostname",
               "net.inet.ip.fragttl=", "net.link.ether.inet.max_age=-5"),
    "tcpdump": ("-c", "-e", "-i", "-n", "-p", "-q", "-Q", "-s", "-S", "-t", "-U", "-v", "-x",
                "-tt", "-vvv", "in", "out", "inout", "--time-stamp-precision", "micro",
                "nano", "icmp", "tcp", "udp", "arp", "host", "port", "and", "or", "not", "(",
                ")", "src", "dst", "net", "greater", "less", "ip[0]", "len", ">", "80"),
    "rtadvd": ("-c", "-k", "-s", "epair0a", "epair0b", "lo0"),
    "traceroute": ("-f", "-F", "-m", "-n", "-p", "-q", "-s", "-w"),
    "traceroute6": ("-f", "-m", "-n", "-p", "-q", "-s", "-w", "2001:db8::1", "fe80::1%epair0a",
                    "fe80::1"),
    "ngctl": ("mkpeer", "connect", "name", "rmhook", "msg", "shutdown", "list", "ls", "show",
              ".", ".:", ".:tmp", "tmp", "lan:", "[1]:", "[2]:", "ngeth0:", "ngeth0:ether",
              "eiface", "hub", "bridge", "pipe", "ether", "upper", "lower", "link0", "link1",
              "setcfg", "getcfg", "getifname", "setpersistent", "{ delay=1 }",
              "{ upstream={ BER=9 } }", "{", "}", "-f"),
    "vlink": ("delay", "dly", "bandwidth", "bw", "loss", "plr", "ber", "dup", "duplicate",
              "queue", "qlen", "clear", "10ms", "1Mbit", "50%", "100%", "1e-5", "-5"),
}
# fixed words in front: a time limit for tools that would otherwise run until stopped
PREFIX: dict[str, tuple[str, ...]] = {"ping": ("-t", "2"), "ping6": ("-t", "2"),
                                      "tcpdump": ("--duration", "1")}
# words never generated for a tool: they would run for ever by design, or touch host files
BANNED: dict[str, tuple[str, ...]] = {
    "ipfw": ("-q", "-a", "-d", "-e", "-N", "-n", "-S", "-t", "-T", "add", "delete", "flush",
             "list", "show", "zero", "resetlog", "set", "table", "log", "enable", "disable",
             "firewall", "allow", "deny", "count", "reset", "reject", "unreach", "skipto",
             "call", "return", "check-state", "pipe", "nat", "divert", "tee", "fwd", "setfib",
             "tablearg", "from", "to", "any", "me", "ip", "tcp", "udp", "icmp", "ip6",
             "keep-state", "record-state", "limit", "src-addr", "in", "out", "via", "recv",
             "setup", "established", "frag", "tcpflags", "syn,!ack", "icmptypes", "8,0",
             "iplen", "table(t)", "table(t,1)", "create", "type", "addr", "info", "not", "!",
             "{", "}", "or", "log", "logamount", "prob", "0.5", "tag", "tagged", "80,443",
             "1024-65535", "dst-port", "move", "swap", "show"),
    "iperf3": ("-s", "--server", "-D", "--daemon"),
    "tcpdump": ("-r", "-w", "--duration"),
    "ping": ("-t",),
    "route": ("monitor",),  # it waits for messages until stopped
    "routed": ("-G",),  # reads a host file
    "rtquery": ("-w",),  # a huge wait with a daemon's timers running would never end
    "setkey": ("-f",),  # it reads a host file
    "setfib": ("monitor", "ping", "tcpdump", "iperf3", "traceroute"),
    "ping6": ("-t",),
    "rtadvd": ("-c",),  # reads a host file
    "ngctl": ("-f",),  # reads a host file
}
# traceroute sends -m x -q probes, each waiting -w: keep its numbers small
SMALL_NUMBERS = ("0", "1", "-1", "2", "3", "256", "x", "1.5", "")

assert set(OPTIONS) == set(TOOLS), "a new tool needs a vocabulary here"


def words(tool: str) -> st.SearchStrategy[str]:
    numbers = SMALL_NUMBERS if tool in ("traceroute", "traceroute6") else NUMBERS
    vocab = tuple(w for w in (*OPTIONS[tool], *ADDRS, *numbers, *IFACES, *JUNK)
                  if w not in BANNED.get(tool, ()))
    return st.one_of(st.sampled_from(vocab), st.sampled_from(vocab), st.text(max_size=8))


def argvs(tool: str) -> st.SearchStrategy[list[str]]:
    return st.lists(words(tool), max_size=7).map(
        lambda ws: [w for w in ws if w not in BANNED.get(tool, ())])


def world() -> tuple[Any, Any, BoundedQueue]:
    k, queue = bounded_kernel(seed=3)
    a, b = k.create("a"), k.create("b")
    topo.connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    k.run(0)
    return k, a, queue


def check_result(tool: str, argv: list[str], res: Any) -> None:
    where = f"{tool} {argv!r}"
    assert isinstance(res.status, int) and 0 <= res.status <= 255, where
    assert isinstance(res.output, str), where
    assert res.output == "" or res.output.endswith("\n"), f"{where}: {res.output!r}"
    assert "Traceback" not in res.output, f"{where}: {res.output}"
    if res.status == 64:  # a usage error: first a line that names the tool
        first = res.output.split("\n", 1)[0]
        assert first.startswith((f"{tool}:", "usage:", f"{tool} ")), f"{where}: {res.output!r}"


@pytest.mark.parametrize("tool", TOOLS)
@fuzz_settings(50)
@given(data=st.data())
def test_fuzz_tool_arguments(tool, data):
    k, a, queue = world()
    for _ in range(data.draw(st.integers(1, 3), label="commands")):
        argv = [*PREFIX.get(tool, ()), *data.draw(argvs(tool), label="argv")]
        queue.popped, queue.limit = 0, 200_000  # a hang is a failure, not a hung suite
        try:
            res = a.cmd([tool, *argv])
        finally:
            queue.limit = None
        check_result(tool, argv, res)
        assert k.sched.errors == 0, f"{tool} {argv!r}: {k.sched.last_error!r}"


@fuzz_settings(100)
@given(line=st.text(max_size=40))
def test_fuzz_command_lines(line):
    """`vnet.cmd` with a whole line: quoting errors and unknown tools are answered too."""
    k, a, _ = world()
    try:
        first = (shlex.split(line) or [""])[0]
    except ValueError:
        first = ""
    if first in ("ping", "tcpdump", "iperf3", "traceroute"):
        return  # their arguments are fuzzed above, with a time limit
    res = a.cmd(line)
    assert isinstance(res.status, int)
    assert res.output == "" or res.output.endswith("\n")
    assert k.sched.errors == 0
