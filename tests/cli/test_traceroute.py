"""traceroute(8) in virtual time over a chain of routers built with the Python API."""

from __future__ import annotations

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


def warm_arp(vnets: list[Vnet]) -> None:
    """Resolve every next hop on the path so round trips are pure link delay."""
    assert vnets[0].cmd(f"ping -c 1 10.0.{len(vnets) - 2}.2").status == 0


def test_traceroute_lists_each_router_then_the_destination() -> None:
    _kernel, vnets, _links = build_chain()
    warm_arp(vnets)
    res = vnets[0].cmd("traceroute 10.0.3.2")
    assert res.status == 0, res.output
    assert res.output.splitlines() == [
        "traceroute to 10.0.3.2 (10.0.3.2), 64 hops max, 40 byte packets",
        " 1  10.0.0.2 (10.0.0.2)  20.000 ms  20.000 ms  20.000 ms",
        " 2  10.0.1.2 (10.0.1.2)  40.000 ms  40.000 ms  40.000 ms",
        " 3  10.0.2.2 (10.0.2.2)  60.000 ms  60.000 ms  60.000 ms",
        " 4  10.0.3.2 (10.0.3.2)  80.000 ms  80.000 ms  80.000 ms",
    ]


def test_traceroute_numeric_one_query_first_and_max_ttl() -> None:
    kernel, vnets, _links = build_chain()
    warm_arp(vnets)
    start = kernel.now
    res = vnets[0].cmd("traceroute -n -q 1 10.0.3.2")
    assert res.output.splitlines()[1:] == [
        " 1  10.0.0.2  20.000 ms", " 2  10.0.1.2  40.000 ms",
        " 3  10.0.2.2  60.000 ms", " 4  10.0.3.2  80.000 ms"]
    assert round(kernel.now - start, 9) == 0.2  # no waiting beyond the answers
    res = vnets[0].cmd("traceroute -n -m 2 10.0.3.2")
    assert res.output.splitlines()[0] == \
        "traceroute to 10.0.3.2 (10.0.3.2), 2 hops max, 40 byte packets"
    assert res.output.splitlines()[-1].startswith(" 2  10.0.1.2  ")
    assert len(res.output.splitlines()) == 3
    res = vnets[0].cmd("traceroute -n -f 3 10.0.3.2 100")
    assert res.output.splitlines()[0].endswith("100 byte packets")
    assert [line[:12] for line in res.output.splitlines()[1:]] == [" 3  10.0.2.2", " 4  10.0.3.2"]


def test_traceroute_probe_ports_and_ttls_on_the_wire() -> None:
    _kernel, vnets, _links = build_chain(nrouters=1, delay=None)
    sink = vnets[-1].socket(2, 2)
    sink.bind(("10.0.1.2", 33436))  # the second probe's port: it is taken, no unreachable
    res = vnets[0].cmd("traceroute -n -w 1 -f 2 -m 2 10.0.1.2")
    sink.settimeout(0)
    data = sink.recv(100)
    assert len(data) == 12  # 40 byte packets: 20 IP + 8 UDP + 12 data
    assert data[:2] == bytes((2, 2))  # probe number, TTL
    assert res.output.splitlines()[1] == " 2  10.0.1.2  0.000 ms *  0.000 ms"
    sink.close()


def test_traceroute_unanswered_probes_are_stars() -> None:
    kernel, vnets, links = build_chain()
    warm_arp(vnets)
    links[0][1].impair(loss=1.0)  # nothing comes back to h1
    start = kernel.now
    res = vnets[0].cmd("traceroute -n -w 1 -m 2 10.0.3.2")
    assert res.output.splitlines()[1:] == [" 1  * * *", " 2  * * *"]
    assert round(kernel.now - start, 9) == 6.0


def test_traceroute_host_unreachable_from_a_router() -> None:
    _kernel, vnets, _links = build_chain(delay=None)
    res = vnets[0].cmd("traceroute -n 10.0.1.9")  # nobody has that address on r1-r2
    lines = res.output.splitlines()
    assert lines[1].startswith(" 1  10.0.0.2  ")
    assert lines[2].startswith(" 2  *")  # held while r1's ARP still asks
    assert lines[2].count(" !H") == 2
    assert len(lines) == 3  # unreachable: traceroute stops


def test_traceroute_needs_frag_annotation() -> None:
    _kernel, vnets, links = build_chain()
    warm_arp(vnets)
    for ifp in links[1]:
        ifp.mtu = 1400
    res = vnets[0].cmd("traceroute -n -F 10.0.3.2 1500")
    assert res.output.splitlines()[1:] == [
        " 1  10.0.0.2  20.000 ms  20.000 ms  20.000 ms",
        " 2  10.0.0.2  20.000 ms !F-1400  20.000 ms !F-1400  20.000 ms !F-1400"]


def test_traceroute_errors() -> None:
    kernel = Kernel(clock="virtual", seed=3)
    vnet = kernel.create("v")
    res = vnet.cmd("traceroute nosuchhost")
    assert (res.status, res.output) == (1, "traceroute: unknown host nosuchhost\n")
    res = vnet.cmd("traceroute -f 9 -m 3 127.0.0.1")
    assert res.status == 64
    assert "first ttl (9) may not be greater than max ttl (3)" in res.output
    assert vnet.cmd("traceroute -z 127.0.0.1").status == 64
    assert vnet.cmd("traceroute 127.0.0.1 10").status == 64
    res = vnet.cmd("traceroute 10.9.9.9")
    assert (res.status, res.output) == (1, "traceroute: findsaddr: Network is unreachable\n")
    res = vnet.cmd("traceroute -n 127.0.0.1")
    assert res.status == 0
    assert res.output.splitlines()[1].startswith(" 1  127.0.0.1  0.000 ms")


def test_traceroute_whose_vnet_is_destroyed_says_so() -> None:
    """The probes of the current hop so far, then the reason (not `Bad file descriptor`)."""
    kernel = Kernel(clock="virtual", seed=3)
    vnet = kernel.create("v")
    vnet.cmd("ifconfig epair create")
    vnet.cmd("ifconfig epair0a 10.0.0.1/24 up")
    kernel.call_later(2.5, kernel.destroy, vnet)  # two 1-second probes unanswered by then
    res = vnet.cmd("traceroute -n -w 1 10.0.0.99")
    assert (res.status, res.output.splitlines()[1:]) == (1, [" 1  * *",
                                                             "traceroute: vnet v was destroyed"])
