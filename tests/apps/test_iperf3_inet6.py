"""iperf3 -6 and -B with an IPv6 address (client and server)."""

from __future__ import annotations

from vimage.apps import iperf3
from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET6


def _pair() -> tuple[Kernel, object, object]:
    k = Kernel(clock="virtual", seed=3)
    a, b = k.create("a"), k.create("b")
    ea, eb = k.epair()
    ea.move_to(a)
    eb.move_to(b)
    for ifp, v4, v6 in ((ea, "10.0.0.1/24", "2001:db8::1/64"),
                        (eb, "10.0.0.2/24", "2001:db8::2/64")):
        ifp.add_addr(v4)
        ifp.add_addr(v6, family=AF_INET6)
        ifp.set_up(True)
    k.run(2)
    return k, a, b


def test_iperf3_dash6_client_against_a_dash6_server() -> None:
    k, a, b = _pair()
    server = iperf3.serve(b, family=AF_INET6)
    assert server.lsock.family == AF_INET6 and server.lsock.v6only
    res = a.cmd("iperf3 -6 -c 2001:db8::2 -n 2M -J")
    assert res.ok, res.output
    assert '"remote_host": "2001:db8::2"' in res.output
    assert server.results[0]["start"]["accepted_connection"]["host"] == "2001:db8::1"
    assert server.results[0]["end"]["sum_received"]["bytes"] == 2 << 20
    server.close()


def test_iperf3_server_bound_to_an_ipv6_address() -> None:
    k, a, b = _pair()
    server = iperf3.serve(b, bind="2001:db8::2", port=5202)
    assert server.lsock.getsockname() == ("2001:db8::2", 5202, 0, 0)
    report = iperf3.client(a, "2001:db8::2", port=5202, nbytes=1 << 20)
    assert report["start"]["connected"][0]["local_host"] == "2001:db8::1"
    res = a.cmd("iperf3 -4 -c 10.0.0.2 -p 5202 -n 1M")  # IPv4 finds no listener there
    assert not res.ok and "unable to connect" in res.output
    server.close()
