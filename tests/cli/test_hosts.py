"""The hosts tool and the resolver that answers from the vnet's hosts table."""

from __future__ import annotations

import socket

import pytest

from vimage import netdb
from vimage.cli import usage_of
from vimage.kernel import Kernel


@pytest.fixture
def vnet():
    return Kernel(clock="virtual", seed=1).create("h")


def test_add_list_lookup_delete(vnet):
    assert vnet.cmd("hosts add 10.0.0.5 db db.example").ok
    assert vnet.cmd("hosts add 10.0.0.6 db").ok  # a second address for the name
    out = vnet.cmd("hosts").output.splitlines()
    assert out == ["127.0.0.1\tlocalhost", "10.0.0.5\tdb db.example", "10.0.0.6\tdb"]
    assert vnet.cmd("hosts lookup DB.").output.split() == ["10.0.0.5", "10.0.0.6"]
    assert vnet.cmd("hosts delete db").ok
    res = vnet.cmd("hosts lookup db")
    assert (res.status, res.output) == (1, "hosts: db: unknown host\n")


@pytest.mark.parametrize("line, message", [
    ("hosts add 10.0.0.300 x",
     "hosts: bad address '10.0.0.300': an IPv4 or IPv6 address is needed"),
    ("hosts add 10.0.0.1 bad_name!", "hosts: bad host name 'bad_name!'"),
    ("hosts add 10.0.0.1", ""),
    ("hosts delete nosuch", "hosts: nosuch: no such host in the hosts table"),
    ("hosts frob", "hosts: unknown command 'frob'"),
])
def test_errors_are_one_line(vnet, line, message):
    """One line, and the usage after it where the words were wrong (none: only the usage)."""
    res = vnet.cmd(line)
    assert res.status != 0
    if res.status == 64:
        assert res.output == (message + "\n" if message else "") + usage_of("hosts")
    else:
        assert res.output == message + "\n"


def test_each_vnet_has_its_own_table():
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    a.cmd("hosts add 10.1.1.1 svc")
    assert netdb.gethostbyname(a, "svc") == "10.1.1.1"
    with pytest.raises(socket.gaierror):
        netdb.gethostbyname(b, "svc")
    b.cmd("hosts flush")
    with pytest.raises(socket.gaierror):
        netdb.getaddrinfo(b, "localhost", 80)
    assert netdb.getaddrinfo(a, "localhost", 80, type=socket.SOCK_DGRAM) == [
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", 80))]


def test_getaddrinfo_matches_the_stdlib_for_numeric_hosts(vnet):
    for host, port, kw in [("127.0.0.1", 80, {}), ("10.2.3.4", "443", {"type": 1}),
                           (None, 53, {"flags": socket.AI_PASSIVE, "type": 2}),
                           ("10.2.3.4", "http", {"proto": 6})]:
        kw["family"] = socket.AF_INET  # we have no IPv6 yet; the host would add its answers
        assert netdb.getaddrinfo(vnet, host, port, **kw) == socket.getaddrinfo(host, port, **kw)


def test_getaddrinfo_errors_like_the_stdlib(vnet):
    with pytest.raises(socket.gaierror) as err:
        netdb.getaddrinfo(vnet, "10.0.0.1", 80, family=socket.AF_INET6)
    assert err.value.errno == socket.EAI_ADDRFAMILY  # glibc's answer since IPv6 is known
    with pytest.raises(socket.gaierror) as err:
        netdb.getaddrinfo(vnet, "10.0.0.1", 80, family=socket.AF_UNIX)
    assert err.value.errno == socket.EAI_FAMILY
    with pytest.raises(socket.gaierror) as err:
        netdb.getaddrinfo(vnet, "10.0.0.1", "no-such-service")
    assert err.value.errno == socket.EAI_SERVICE
    with pytest.raises(socket.gaierror) as err:
        netdb.getaddrinfo(vnet, "localhost", 80, flags=socket.AI_NUMERICHOST)
    assert err.value.errno == socket.EAI_NONAME


def test_reverse_lookups(vnet):
    vnet.hosts.add("10.0.0.9", "nine", "neuf")
    assert netdb.gethostbyaddr(vnet, "10.0.0.9") == ("nine", ["neuf"], ["10.0.0.9"])
    assert netdb.getnameinfo(vnet, ("10.0.0.9", 80)) == ("nine", "http")
    assert netdb.getnameinfo(vnet, ("10.0.0.8", 80), socket.NI_NUMERICSERV) == ("10.0.0.8", "80")
    with pytest.raises(socket.herror):
        netdb.gethostbyaddr(vnet, "10.0.0.8")
