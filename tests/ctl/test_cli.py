"""The vimage command line: the vimage(8) option forms, the subcommands, and their errors."""

from __future__ import annotations

import re

import pytest

from vimage.cli import usage_of
from vimage.cli import vimage as cli

from .conftest import names


@pytest.fixture
def vd(shared_vimaged):
    """The shared daemon, emptied of vnets after each test."""
    yield shared_vimaged
    for name in names(shared_vimaged.ok("-l")):
        shared_vimaged.ok("-d", name)
    for line in shared_vimaged.ok("ifconfig", "-l").split():
        if line.startswith("epair"):
            shared_vimaged.cli("ifconfig", line, "destroy")


def test_create_list_destroy(vd):
    assert vd.cli("-c", "a") == (0, "", "")
    vd.ok("-c", "b")
    vd.ok("-c", "a.x")
    vd.ok("-c", "a.x.deep")
    assert names(vd.ok("-l")) == ["a", "b"]
    assert names(vd.ok("-lr")) == ["a", "a.x", "a.x.deep", "b"]
    assert names(vd.ok("-l", "a")) == ["a"]
    assert names(vd.ok("-l", "-r", "a")) == ["a", "a.x", "a.x.deep"]
    assert names(vd.ok("-l", "a.x")) == ["a.x"]
    assert vd.cli("-d", "a") == (0, "", "")  # children go first
    assert names(vd.ok("-lr")) == ["b"]


def test_list_verbose_layouts(vd):
    vd.ok("-c", "web", "host.hostname=www", "host.domainname=example.org", "children.max=3")
    vd.ok("-c", "web.app")
    vd.ok("ifconfig", "epair", "create")
    vd.ok("-i", "web", "epair0a")
    out = vd.ok("-lv", "web")
    assert out.startswith(
        "web:\n    Path: /\n    Hostname: www\n    Domainname: example.org\n"
        "    Children: 1\n    Interfaces: lo0 epair0a\n")
    assert re.fullmatch(  # then its CPU use and load (docs/vimage.md, "CPU accounting")
        r"    CPU usage: \d+\.\d{3} s \(\d+\.\d\d%\): loop \d+\.\d{3} s \(\d+ units?\), "
        r"tasks \d+\.\d{3} s \(\d+ steps?\), processes \d+\.\d{3} s\n"
        r"    Load average: \d+\.\d\d, \d+\.\d\d, \d+\.\d\d\n    CPU weight: 100\n",
        out.split("Interfaces: lo0 epair0a\n")[1])
    out = vd.ok("-lvv", "web")
    assert "    Children limit: 3\n" in out and "    PJID: 0\n" in out
    jid = int(out.split("    JID: ")[1].split("\n")[0])
    assert f"    PJID: {jid}\n" in vd.ok("-lvv", "web.app")
    assert "    Domainname: example.org\n" in vd.ok("-lv", "web.app")  # inherited


def test_list_is_a_table_under_a_header_even_when_empty(vd):
    """As jls(8) prints its header with no jails, vimage -l prints its own."""
    assert vd.ok("-l") == "Name  Hostname  Interfaces\n"
    assert vd.ok("list", "-r") == "Name  Hostname  Interfaces\n"
    vd.ok("-c", "web", "host.hostname=www")
    vd.ok("-c", "web.application")
    vd.ok("ifconfig", "epair", "create")
    vd.ok("-i", "web", "epair0a")
    assert vd.ok("-lr") == ("Name             Hostname     Interfaces\n"
                            "web              www          lo0 epair0a\n"
                            "web.application  application  lo0\n")


def test_no_listing_line_ends_in_a_space(vd):
    vd.ok("-c", "bare")  # no domain name: an empty field
    vd.ok("-c", "bare.kid")
    for args in (("-l",), ("-lr",), ("-lv",), ("-lrv",), ("-lj",), ("list", "-r", "-v")):
        out = vd.ok(*args)
        assert out.endswith("\n") and all(line == line.rstrip() for line in out.splitlines())
    assert "    Domainname:\n" in vd.ok("-lv", "bare")


def test_counts_agree_with_their_nouns():
    assert [cli.plural(n, "vnet") for n in (0, 1, 2)] == ["0 vnets", "1 vnet", "2 vnets"]


def test_daemon_status_says_1_vnet(vd):
    vd.ok("-c", "only")
    out = vd.ok("daemon", "status")
    assert ", 1 vnet, " in out or out.endswith(", 1 vnet)\n"), out
    assert " 1 connections" not in out and " 1 vnets" not in out


def test_create_with_a_sysctl_and_modify(vd):
    vd.ok("-c", "r1", "net.inet.ip.forwarding=1")
    assert vd.ok("r1", "sysctl", "-n", "net.inet.ip.forwarding") == "1\n"
    assert vd.ok("sysctl", "-n", "net.inet.ip.forwarding") == "0\n"  # the base vnet's own
    vd.ok("-m", "r1", "net.inet.ip.forwarding=0", "host.hostname=router")
    assert vd.ok("r1", "sysctl", "-n", "net.inet.ip.forwarding") == "0\n"
    assert "Hostname: router" in vd.ok("-lv", "r1")


@pytest.mark.parametrize(("args", "status", "message"), [
    (("-c", "dup"), 1, "vimage: vnet dup already exists\n"),
    (("-c", "nope.child"), 1, "vimage: vnet nope does not exist\n"),
    (("-c", "a..b"), 1, "bad vnet name 'a..b'"),
    (("-c", "vnet0"), 1, "vimage: vnet0 is the base vnet's name\n"),
    (("-c", "p", "bogus=1"), 1, "vimage: unknown parameter 'bogus'\n"),
    (("-c", "p", "net.inet.ip.forwarding=7"), 1, "out of range"),
    (("-c", "p", "children.max=lots"), 1, "children.max: 'lots' is not a count"),
    (("-c", "p", "noequals"), 64, "vimage: bad parameter 'noequals' (use param=value)\n"),
    (("-d", "ghost"), 1, "vimage: vnet ghost does not exist\n"),
    (("-d", "0"), 77, "vimage: the base vnet cannot be destroyed\n"),
    (("-i", "ghost", "lo0"), 1, "vimage: vnet ghost does not exist\n"),
    (("-i", "dup", "lo0"), 77, "lo0: loopback interfaces cannot be moved"),
    (("-i", "dup", "nothere0"), 1, "vimage: interface nothere0 does not exist\n"),
    (("-l", "ghost"), 1, "vimage: vnet ghost does not exist\n"),
    (("-c",), 64, "vimage: -c needs a vnet name\n"),
    (("-d",), 64, "vimage: -d takes one vnet name\n"),
    (("-cd", "x"), 64, "vimage: -c and -d do not go together\n"),
    (("-r", "x"), 64, "vimage: -r, -v and -j go with -l\n"),
    (("-x",), 64, "vimage: illegal option -- x\n"),
    (("-i", "dup"), 64, "vimage: -i takes a vnet name, an interface and maybe a new name\n"),
    (("ghost",), 1, "vimage: vnet ghost does not exist\n"),
    (("ghost", "ifconfig"), 1, "vimage: vnet ghost does not exist\n"),
    ((), 64, "usage: vimage"),
])
def test_errors_are_one_line_and_nonzero(vd, args, status, message):
    vd.ok("-c", "dup")
    got, out, err = vd.cli(*args)
    assert (got, out) == (status, "")
    first, _, rest = err.partition("\n")
    assert message in err
    assert rest == "" or rest.startswith("usage: vimage") or first.startswith("usage:")
    assert names(vd.ok("-l")) == ["dup"]  # nothing else happened


def test_ifmove_prints_where_the_interface_went_and_can_rename(vd):
    vd.ok("-c", "left")
    vd.ok("-c", "right")
    assert vd.ok("ifconfig", "epair", "create") == "epair0a\n"
    assert vd.ok("-i", "left", "epair0a") == "epair0a@left\n"
    assert vd.ok("-i", "right", "epair0b", "eth0") == "eth0@right\n"
    assert vd.ok("right", "ifconfig", "-l") == "lo0 eth0\n"
    assert vd.ok("ifconfig", "-l") == "lo0\n"
    assert vd.cli("-i", "left", "lo0", "x")[0] == 77
    # a renamed interface goes home under its own name when its vnet goes
    vd.ok("-d", "right")
    assert vd.ok("ifconfig", "-l") == "lo0 epair0b\n"
    vd.ok("-c", "right")
    assert vd.ok("-i", "right", "epair0b", "eth0") == "eth0@right\n"
    status, _, err = vd.cli("-i", "right", "epair0a", "eth0")  # from the base: not there
    assert status == 1 and "epair0a does not exist" in err
    assert vd.cli("-i", "left", "epair0a", "bad name")[0] == 1


def test_subcommands_do_what_the_options_do(vd):
    assert vd.cli("create", "s1", "children.max=2") == (0, "", "")
    vd.ok("create", "s1.k")
    assert names(vd.ok("list")) == ["s1"]
    assert names(vd.ok("list", "-r")) == ["s1", "s1.k"]
    assert vd.ok("list", "-v", "s1").startswith("s1:\n    Path: /\n")
    assert "Children limit: 2" in vd.ok("list", "-vv", "s1")
    vd.ok("modify", "s1", "host.hostname=h")
    assert "Hostname: h" in vd.ok("list", "-v", "s1")
    vd.ok("ifconfig", "epair", "create")
    assert vd.ok("ifmove", "s1", "epair0a") == "epair0a@s1\n"
    done = vd.run("exec", "s1", "--", "sh", "-c", "echo $VIMAGE; ifconfig -l")
    assert (done.returncode, done.stdout) == (0, "s1\nlo0 epair0a\n")
    assert vd.cli("destroy", "s1") == (0, "", "")
    assert names(vd.ok("list")) == []


@pytest.mark.parametrize("sub", ["create", "destroy", "list", "ifmove", "exec", "daemon",
                                 "modify"])
def test_every_subcommand_has_help(vd, sub):
    status, out, err = vd.cli(sub, "--help")
    assert status == 0 and out.startswith(f"usage: vimage {sub}") and err == ""


def test_help_and_usage(vd):
    status, out, _ = vd.cli("--help")
    assert status == 0 and "vimage -l[rvj] [NAME]" in out and "vimage NAME [command ...]" in out
    status, _, err = vd.cli("list", "--bogus")
    assert status == 64 and err.startswith("vimage: list: unrecognized arguments: --bogus\n")


def test_a_bad_option_shows_the_error_and_the_usage(vd):
    """vimage and the tools it runs print usage as FreeBSD's do; --help/-h succeed."""
    assert vd.cli("-Z") == (64, "", "vimage: illegal option -- Z\n" + cli.USAGE)
    assert vd.cli("-h") == (0, cli.USAGE, "")
    assert vd.cli("ping", "--help") == (0, usage_of("ping"), "")
    assert vd.cli("ping", "-Z") == (64, "ping: illegal option -- Z\n" + usage_of("ping"), "")
    vd.ok("-c", "u1")
    assert vd.cli("u1", "netstat", "-h") == (0, usage_of("netstat"), "")


def test_tools_without_a_name_act_on_the_base_vnet_and_dash_dash_forces_a_name(vd):
    vd.ok("-c", "ifconfig")  # a vnet that shares a tool's name
    vd.ok("ifconfig", "epair", "create")
    assert vd.ok("ifconfig", "-l") == "lo0 epair0a epair0b\n"
    assert vd.ok("--", "ifconfig", "ifconfig", "-l") == "lo0\n"
    assert vd.ok("-i", "ifconfig", "epair0a") == "epair0a@ifconfig\n"
    done = vd.run("exec", "ifconfig", "ifconfig", "-l")  # a process, through its shim
    assert (done.returncode, done.stdout) == (0, "lo0 epair0a\n")
